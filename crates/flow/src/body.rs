//! Captured bodies: the first bytes of a body (up to the body limit) plus how it ended.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of each body captured by default (`--body-limit`), and kept decoded in a stored flow;
/// the rest still streams through.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// How a body stream ended, as the tap saw it (linkerd's end-of-stream, named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BodyState {
    /// Still streaming.
    #[default]
    Streaming,
    /// Ended normally.
    Complete,
    /// The stream failed (peer reset, protocol error).
    Error,
    /// Dropped before the end (the other side went away).
    Cancelled,
}

/// The first `limit` bytes of a body, with its total length and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapturedBody {
    /// The captured bytes (at most the body limit).
    pub bytes: Bytes,
    /// Bytes that went through in all (may exceed `bytes.len()`).
    pub total_len: u64,
    /// True when more bytes went through than were captured.
    pub truncated: bool,
    /// How the stream ended.
    pub state: BodyState,
    /// The `Content-Encoding` the bytes are stored in (`None` when identity or decoded).
    pub encoding: Option<String>,
}

impl CapturedBody {
    /// A complete body holding `bytes` entirely.
    pub fn complete(bytes: impl Into<Bytes>) -> CapturedBody {
        let bytes = bytes.into();
        CapturedBody {
            total_len: bytes.len() as u64,
            bytes,
            truncated: false,
            state: BodyState::Complete,
            encoding: None,
        }
    }

    /// True when nothing went through.
    pub fn is_empty(&self) -> bool {
        self.total_len == 0 && self.bytes.is_empty()
    }

    /// The captured bytes as UTF-8, if they are.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// On disk a body is `{"text": …}` when it is UTF-8 and no larger written as JSON text than as
/// base64, and `{"base64": …}` otherwise.
#[derive(Deserialize)]
struct BodyRepr {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    total_len: u64,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    state: BodyState,
    #[serde(default)]
    encoding: Option<String>,
}

/// [`BodyRepr`] borrowing the body, for writing (no copy of UTF-8 bodies).
#[derive(Serialize)]
struct BodyReprRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    total_len: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    state: BodyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'a str>,
}

impl Serialize for CapturedBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (text, base64) = match std::str::from_utf8(&self.bytes) {
            Ok(t) if text_is_compact(t) => (Some(t), None),
            _ => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&self.bytes)),
            ),
        };
        BodyReprRef {
            text,
            base64,
            total_len: self.total_len,
            truncated: self.truncated,
            state: self.state,
            encoding: self.encoding.as_deref(),
        }
        .serialize(s)
    }
}

/// True when `t` written as a JSON string is no larger than its base64: JSON escapes control
/// characters, six bytes for most (`\u0000`), so a body made of them (NUL padding, a binary
/// format that happens to be valid UTF-8) is four times smaller as base64.
fn text_is_compact(t: &str) -> bool {
    let extra: usize = t
        .bytes()
        .map(|c| match c {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    t.len() + extra <= t.len().div_ceil(3) * 4
}

impl<'de> Deserialize<'de> for CapturedBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = BodyRepr::deserialize(d)?;
        let bytes = match (r.text, r.base64) {
            (Some(t), _) => Bytes::from(t),
            (None, Some(b)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(serde::de::Error::custom)?,
            ),
            (None, None) => Bytes::new(),
        };
        Ok(CapturedBody {
            bytes,
            total_len: r.total_len,
            truncated: r.truncated,
            state: r.state,
            encoding: r.encoding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_control_characters_are_written_as_base64_and_round_trip() {
        // Four KiB of NUL: as text each would be a six-byte escape.
        let nul = CapturedBody::complete(vec![0u8; 4096]);
        let json = serde_json::to_string(&nul).unwrap();
        assert!(json.contains("\"base64\":\"AAAA"), "{}", &json[..80]);
        assert!(json.len() < 4096 * 4 / 3 + 100, "{} bytes", json.len());
        assert_eq!(serde_json::from_str::<CapturedBody>(&json).unwrap(), nul);
        // Text with a few escapes stays text.
        let text = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"text\":\"{}\\n\"}}}}\n\t\u{1}",
            "lorem ipsum ".repeat(8)
        );
        let text = CapturedBody::complete(text.into_bytes());
        let json = serde_json::to_string(&text).unwrap();
        assert!(json.contains("\"text\":"), "{json}");
        assert_eq!(serde_json::from_str::<CapturedBody>(&json).unwrap(), text);
        // The limit: each control character costs five bytes more as text, each three bytes
        // cost one more as base64.
        assert!(text_is_compact(&format!("{}{}", "a".repeat(15), "\u{1}")));
        assert!(!text_is_compact(&format!(
            "{}{}",
            "a".repeat(14),
            "\u{1}\u{1}"
        )));
    }

    #[test]
    fn binary_bodies_round_trip_as_base64() {
        let body = CapturedBody {
            bytes: Bytes::from_static(&[0xff, 0x00, 0x80]),
            total_len: 10,
            truncated: true,
            state: BodyState::Cancelled,
            encoding: Some("gzip".into()),
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains("\"base64\":\"/wCA\""), "{json}");
        let back: CapturedBody = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn text_bodies_are_stored_as_text() {
        let body = CapturedBody::complete("{\"a\":1}");
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains("\"text\":\"{\\\"a\\\":1}\""), "{json}");
        assert_eq!(serde_json::from_str::<CapturedBody>(&json).unwrap(), body);
    }
}
