//! Timestamps as HAR and session directories spell them, and the many spellings other tools use.

use mcptap_flow::Micros;
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

fn datetime(micros: Micros) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-05-01T12:30:05.123Z`: ISO 8601, UTC, milliseconds (what HAR writers use).
pub(crate) fn iso_millis(micros: Micros) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    datetime(micros)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// `2026-05-01T12-30-05Z`: a session directory name (no `:`, which some systems refuse).
pub(crate) fn dir_stamp(micros: Micros) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z");
    datetime(micros)
        .format(&fmt)
        .unwrap_or_else(|_| "session".to_owned())
}

/// Parses the timestamps HAR writers produce: RFC 3339 with `Z` or an offset, with or without
/// fractional seconds (any number of digits), ISO 8601 variants (`+0200`), and, assumed UTC, no
/// offset at all.
pub(crate) fn parse_iso(s: &str) -> Option<Micros> {
    let s = s.trim();
    let dt = OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(s, &Iso8601::DEFAULT))
        .ok()
        .or_else(|| {
            PrimitiveDateTime::parse(s, &Iso8601::DEFAULT)
                .ok()
                .map(|p| p.assume_offset(UtcOffset::UTC))
        })?;
    i64::try_from(dt.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let base = parse_iso("2024-03-01T10:05:23.123Z").unwrap();
        assert_eq!(iso_millis(base), "2024-03-01T10:05:23.123Z");
        assert_eq!(parse_iso("2024-03-01T11:05:23.123+01:00"), Some(base));
        assert_eq!(parse_iso("2024-03-01T11:05:23.123+0100"), Some(base));
        assert_eq!(parse_iso("2024-03-01T10:05:23.123000+00:00"), Some(base));
        assert_eq!(parse_iso("2024-03-01T10:05:23.123"), Some(base));
        assert_eq!(parse_iso("2024-03-01T10:05:23Z"), Some(base - 123_000));
        assert_eq!(parse_iso("2024-03-01T10:05:23.123456Z"), Some(base + 456));
        assert_eq!(parse_iso("yesterday"), None);
        assert_eq!(dir_stamp(base), "2024-03-01T10-05-23Z");
    }
}
