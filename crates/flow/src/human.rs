//! Times, sizes and durations as people read them, the same in the line view, the terminal
//! view and its detail pane.

use crate::Micros;

/// `HH:MM:SS.mmm` UTC for a time in µs since the epoch.
pub fn clock(at: Micros) -> String {
    let secs = at.div_euclid(1_000_000);
    let ms = at.rem_euclid(1_000_000) / 1000;
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        ms
    )
}

/// `512b`, `1.2k`, `3.4M`, `1.1G`: a short byte count.
pub fn size(n: u64) -> String {
    match n {
        0..=999 => format!("{n}b"),
        1000..=999_999 => format!("{:.1}k", n as f64 / 1024.0),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / (1024.0 * 1024.0)),
        _ => format!("{:.1}G", n as f64 / (1024.0 * 1024.0 * 1024.0)),
    }
}

/// `3.4ms`, `41ms`, `12.5s`: a duration in µs, with as many digits as matter.
pub fn duration(us: i64) -> String {
    if us < 10_000 {
        millis(us)
    } else if us < 10_000_000 {
        format!("{}ms", us / 1000)
    } else {
        format!("{:.1}s", us as f64 / 1_000_000.0)
    }
}

/// `3.4ms`, `1041.0ms`: a duration in µs, always in milliseconds to a tenth.
pub fn millis(us: i64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sizes_and_durations_read_short() {
        assert_eq!(clock(1_714_566_605_123_456), "12:30:05.123");
        assert_eq!(clock(-1), "23:59:59.999");
        assert_eq!(
            [0, 999, 1000, 1_200_000, 2_000_000_000].map(size),
            ["0b", "999b", "1.0k", "1.1M", "1.9G"]
        );
        assert_eq!(
            [3_400, 41_000, 12_500_000].map(duration),
            ["3.4ms", "41ms", "12.5s"]
        );
        assert_eq!(millis(1_041_000), "1041.0ms");
    }
}
