//! Header lists that keep order, duplicates and the original spelling of names.
//!
//! HTTP/1.1 allows bytes 0x80–0xFF in field values (obs-text, often Latin-1). Such a value is
//! kept twice: as text with U+FFFD in `value`, which is what the redactor, the analyzer and the
//! views read, and byte-exact in [`Header::raw`]. On disk the exact bytes are a `base64` member
//! next to `value` (`{"name":…,"value":"caf\ufffd","base64":"Y2Fm6Q=="}`); UTF-8 values, nearly
//! all, are written as before and cost nothing more.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// One header field. Values that are not UTF-8 are kept lossily (U+FFFD) in `value` and
/// byte-exact in [`Header::raw`].
#[derive(Debug, Clone)]
pub struct Header {
    /// Field name as received (HTTP/2 names are lower case).
    pub name: String,
    /// Field value, as text (U+FFFD where the bytes were not UTF-8).
    pub value: String,
    /// The exact bytes, only when they are not UTF-8 (see [`Header::raw`]).
    raw: Option<Box<[u8]>>,
}

impl Header {
    /// A field with a text value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
            raw: None,
        }
    }

    /// A field from the bytes on the wire: text when they are UTF-8 (one allocation, as a
    /// lossy copy would be), else the lossy text plus the exact bytes.
    pub fn from_bytes(name: impl Into<String>, value: &[u8]) -> Header {
        let name = name.into();
        match std::str::from_utf8(value) {
            Ok(text) => Header::new(name, text),
            Err(_) => Header {
                name,
                value: String::from_utf8_lossy(value).into_owned(),
                raw: Some(value.into()),
            },
        }
    }

    /// A field read back from a file: `raw` is kept only when it is not UTF-8 and `value` is
    /// its lossy text. A value that differs (edited, or redacted, after the bytes were written)
    /// wins, and the bytes are dropped: they could hold what the edit removed.
    pub fn with_raw(name: impl Into<String>, value: impl Into<String>, raw: Vec<u8>) -> Header {
        let mut h = Header::new(name, value);
        if std::str::from_utf8(&raw).is_err() && is_lossy_text_of(&raw, &h.value) {
            h.raw = Some(raw.into());
        }
        h
    }

    /// The exact bytes of a value that was not UTF-8, while `value` is still their text.
    ///
    /// `None` for UTF-8 values (`value` is exact), and once `value` was replaced (redacted): the
    /// bytes are then dropped, never written, as they may hold the secret the text no longer
    /// does.
    pub fn raw(&self) -> Option<&[u8]> {
        self.raw
            .as_deref()
            .filter(|raw| is_lossy_text_of(raw, &self.value))
    }

    /// True when the value on the wire was not UTF-8 (`value` shows U+FFFD for some bytes).
    pub fn is_lossy(&self) -> bool {
        self.raw().is_some()
    }

    /// The value as it was on the wire: the exact bytes, or the text's.
    pub fn value_bytes(&self) -> &[u8] {
        self.raw().unwrap_or(self.value.as_bytes())
    }

    /// Replaces the value (a redaction): the exact bytes of the old one are dropped.
    pub fn set_value(&mut self, value: String) {
        self.value = value;
        self.raw = None;
    }
}

/// True when `text` is `String::from_utf8_lossy(raw)`, compared without building it (the views
/// ask for every frame): one U+FFFD for each invalid sequence, as `from_utf8_lossy` writes.
fn is_lossy_text_of(raw: &[u8], text: &str) -> bool {
    let mut rest = text;
    for chunk in raw.utf8_chunks() {
        let Some(r) = rest.strip_prefix(chunk.valid()) else {
            return false;
        };
        rest = r;
        if !chunk.invalid().is_empty() {
            let Some(r) = rest.strip_prefix(char::REPLACEMENT_CHARACTER) else {
                return false;
            };
            rest = r;
        }
    }
    rest.is_empty()
}

/// Equal when name, text and exact bytes (as [`Header::raw`] gives them) are.
impl PartialEq for Header {
    fn eq(&self, other: &Header) -> bool {
        self.name == other.name && self.value == other.value && self.raw() == other.raw()
    }
}

impl Eq for Header {}

/// A header on disk: `{name, value}`, plus `base64` with the exact bytes when they are not
/// UTF-8.
#[derive(Deserialize)]
struct HeaderRepr {
    name: String,
    value: String,
    #[serde(default)]
    base64: Option<String>,
}

/// [`HeaderRepr`] borrowing the header, for writing.
#[derive(Serialize)]
struct HeaderReprRef<'a> {
    name: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HeaderReprRef {
            name: &self.name,
            value: &self.value,
            base64: self
                .raw()
                .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw)),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = HeaderRepr::deserialize(d)?;
        Ok(match r.base64 {
            None => Header::new(r.name, r.value),
            Some(b) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(serde::de::Error::custom)?;
                Header::with_raw(r.name, r.value, raw)
            }
        })
    }
}

/// Header fields in the order they were received.
///
/// The list is shared: cloning a flow's headers (the engine announces a request, then finishes
/// it) costs a reference count, and changing a shared list copies it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Headers(Arc<Vec<Header>>);

impl Headers {
    /// An empty list.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Appends a field.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        Arc::make_mut(&mut self.0).push(Header::new(name, value));
    }

    /// Appends a field as it came off the wire (see [`Header::from_bytes`]).
    pub fn push_bytes(&mut self, name: impl Into<String>, value: &[u8]) {
        Arc::make_mut(&mut self.0).push(Header::from_bytes(name, value));
    }

    /// Appends a field.
    pub fn push_header(&mut self, header: Header) {
        Arc::make_mut(&mut self.0).push(header);
    }

    /// Iterates over the fields, mutably (copies a shared list first).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Header> {
        Arc::make_mut(&mut self.0).iter_mut()
    }

    /// The fields as a slice.
    pub fn as_slice(&self) -> &[Header] {
        &self.0
    }

    /// Replaces the value of the field at `index` (copies a shared list first); the exact bytes
    /// of the old value, if it was not UTF-8, are dropped with it.
    pub fn set_value(&mut self, index: usize, value: String) {
        if let Some(h) = Arc::make_mut(&mut self.0).get_mut(index) {
            h.set_value(value);
        }
    }

    /// Keeps the fields for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        Arc::make_mut(&mut self.0).retain(keep);
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// True if `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Iterates over the fields.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(Arc::new(
            iter.into_iter().map(|(n, v)| Header::new(n, v)).collect(),
        ))
    }
}

impl From<Vec<Header>> for Headers {
    fn from(v: Vec<Header>) -> Self {
        Headers(Arc::new(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATIN1: &[u8] = b"caf\xe9 \xff";

    #[test]
    fn the_text_check_agrees_with_from_utf8_lossy() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain",
            b"\xff",
            b"\xe9\xff\x80",
            b"a\xf0\x9f\x98",
            b"\xf0\x9f\x98\x80 ok \xc3",
            b"\xed\xa0\x80x",
        ];
        for raw in cases {
            let lossy = String::from_utf8_lossy(raw);
            assert!(is_lossy_text_of(raw, &lossy), "{raw:?}");
            assert!(!is_lossy_text_of(raw, &format!("{lossy}x")), "{raw:?}");
            assert!(
                !is_lossy_text_of(raw, &format!("\u{fffd}{lossy}")),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn utf8_values_are_text_only() {
        let h = Header::from_bytes("x-name", "café".as_bytes());
        assert_eq!(h.value, "café");
        assert_eq!(h.raw(), None);
        assert!(!h.is_lossy());
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"name":"x-name","value":"café"}"#
        );
    }

    #[test]
    fn other_values_keep_their_bytes() {
        let h = Header::from_bytes("x-name", LATIN1);
        assert_eq!(h.value, "caf\u{fffd} \u{fffd}");
        assert_eq!(h.raw(), Some(LATIN1));
        assert_eq!(h.value_bytes(), LATIN1);
        assert!(h.is_lossy());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(
            json,
            "{\"name\":\"x-name\",\"value\":\"caf\u{fffd} \u{fffd}\",\"base64\":\"Y2Fm6SD/\"}"
        );
        let back: Header = serde_json::from_str(&json).unwrap();
        assert_eq!(back.raw(), Some(LATIN1));
        assert_eq!(back, h);
    }

    #[test]
    fn a_replaced_value_drops_the_bytes() {
        let mut h = Header::from_bytes("authorization", LATIN1);
        h.set_value("[redacted]".into());
        assert_eq!(h.raw(), None);
        // Also when the text is assigned directly: the bytes no longer match it.
        let mut h = Header::from_bytes("authorization", LATIN1);
        h.value = "[redacted]".into();
        assert_eq!(h.raw(), None);
        assert!(!serde_json::to_string(&h).unwrap().contains("base64"));
        let mut list = Headers::new();
        list.push_bytes("authorization", LATIN1);
        list.set_value(0, "[redacted]".into());
        assert_eq!(list.as_slice()[0].raw(), None);
    }

    #[test]
    fn bytes_read_back_only_while_they_match_the_text() {
        // Edited (or redacted) by hand after it was written: the text wins.
        let edited = r#"{"name":"x","value":"other","base64":"Y2Fm6SD/"}"#;
        let h: Header = serde_json::from_str(edited).unwrap();
        assert_eq!((h.value.as_str(), h.raw()), ("other", None));
        // UTF-8 bytes add nothing to the text.
        let h = Header::with_raw("x", "caf", b"caf".to_vec());
        assert_eq!(h.raw(), None);
        assert!(serde_json::from_str::<Header>(r#"{"name":"x","value":"","base64":"!"}"#).is_err());
    }
}
