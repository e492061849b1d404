//! The journal's format, declared once: what [`crate::Journal`] writes and what
//! [`crate::JournalReader`] (and a live view reading one flow back) reads.
//!
//! JSON Lines, one object per line, `type` first:
//!
//! ```text
//! {"type":"session","version":1,"created":1714566605123456,"mcptap":"0.1.0","raw_secrets":false,"argv":[…]}
//! {"type":"request_started","flow":{…}}          the flow head, bodies empty
//! {"type":"response_head","id":3,"at":…,"status":200,"version":"HTTP/1.1","headers":[…]}
//! {"type":"sse","id":3,"event":{"at":…,"event":"message","data":"…"}}   one per event, at once
//! {"type":"completed","flow":{…}}                 the whole flow (bodies, SSE events, timings)
//! {"type":"failed","flow":{…}}
//! {"type":"end","at":…,"flows":12}                clean shutdown only
//! ```
//!
//! Event lines are exactly [`FlowEvent`]'s serde form (`body` progress events are never
//! written); the first and last lines are [`SessionLine`] and [`EndLine`]. A header is
//! `{"name":…,"value":…}`; a value that was not UTF-8 adds `"base64"` with its exact bytes (see
//! [`mcptap_flow::Header`]).

use crate::journal::SessionMeta;
use mcptap_flow::{FlowEvent, Micros};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The journal file inside a session directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The HAR file written inside a session directory on clean shutdown.
pub const HAR_FILE: &str = "session.har";
/// The journal format version written in the session line.
pub const JOURNAL_VERSION: u32 = 1;

/// The journal's first line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionLine<'a> {
    /// [`JOURNAL_VERSION`] when written.
    pub version: u32,
    /// What the session says about itself.
    #[serde(flatten)]
    pub meta: Cow<'a, SessionMeta>,
}

/// The last line of a cleanly closed journal.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EndLine {
    /// When recording stopped (absent in journals written before it was recorded).
    #[serde(default)]
    pub at: Option<Micros>,
    /// Flows recorded as completed or failed.
    #[serde(default)]
    pub flows: u64,
}

/// One line of a journal.
#[derive(Debug)]
pub(crate) enum Line {
    /// The first line.
    Session(SessionLine<'static>),
    /// A flow's progress or end.
    Event(FlowEvent),
    /// The last line, after a clean shutdown.
    End(EndLine),
}

/// Only the `type` of a line (the rest is skipped without being held).
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

impl Line {
    /// Parses one line (without its newline).
    pub fn parse(text: &[u8]) -> Result<Line, serde_json::Error> {
        let Kind { kind } = serde_json::from_slice(text)?;
        Ok(match kind.as_ref() {
            "session" => Line::Session(tagged(text)?),
            "end" => Line::End(tagged(text)?),
            _ => Line::Event(serde_json::from_slice(text)?),
        })
    }
}

/// A session or end line: its fields next to `type`.
fn tagged<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, serde_json::Error> {
    #[derive(Deserialize)]
    struct WithType<T> {
        #[serde(rename = "type")]
        _type: serde::de::IgnoredAny,
        #[serde(flatten)]
        inner: T,
    }
    serde_json::from_slice::<WithType<T>>(text).map(|w| w.inner)
}

/// Appends the session line for `meta` to `buf` (no newline).
pub(crate) fn write_session(buf: &mut Vec<u8>, meta: &SessionMeta) -> serde_json::Result<()> {
    write_tagged(
        buf,
        "session",
        &SessionLine {
            version: JOURNAL_VERSION,
            meta: Cow::Borrowed(meta),
        },
    )
}

/// Appends the end line to `buf` (no newline).
pub(crate) fn write_end(buf: &mut Vec<u8>, at: Micros, flows: u64) -> serde_json::Result<()> {
    write_tagged(
        buf,
        "end",
        &EndLine {
            at: Some(at),
            flows,
        },
    )
}

/// Appends an event line to `buf` (no newline): the event's own serde form.
pub(crate) fn write_event(buf: &mut Vec<u8>, event: &FlowEvent) -> serde_json::Result<()> {
    serde_json::to_writer(buf, event)
}

fn write_tagged(buf: &mut Vec<u8>, kind: &str, line: &impl Serialize) -> serde_json::Result<()> {
    #[derive(Serialize)]
    struct WithType<'a, T> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(flatten)]
        inner: &'a T,
    }
    serde_json::to_writer(buf, &WithType { kind, inner: line })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_reads_back_as_it_was_written_type_first() {
        let mut meta = SessionMeta::new("9.9.9");
        meta.mode = Some("regular".into());
        let mut buf = Vec::new();
        write_session(&mut buf, &meta).unwrap();
        assert!(buf.starts_with(br#"{"type":"session","version":1,"created":"#));
        match Line::parse(&buf).unwrap() {
            Line::Session(s) => {
                assert_eq!(s.version, JOURNAL_VERSION);
                assert_eq!(s.meta.as_ref(), &meta);
            }
            other => panic!("{other:?}"),
        }
        buf.clear();
        write_end(&mut buf, 42, 7).unwrap();
        assert_eq!(buf, br#"{"type":"end","at":42,"flows":7}"#);
        assert!(matches!(
            Line::parse(&buf).unwrap(),
            Line::End(EndLine {
                at: Some(42),
                flows: 7
            })
        ));
        assert!(matches!(
            Line::parse(br#"{"type":"end"}"#).unwrap(),
            Line::End(EndLine { at: None, .. })
        ));
        buf.clear();
        let ev = FlowEvent::Sse {
            id: mcptap_flow::FlowId(3),
            event: mcptap_flow::SseEvent {
                at: 5,
                data: "{}".into(),
                ..Default::default()
            },
        };
        write_event(&mut buf, &ev).unwrap();
        assert!(buf.starts_with(br#"{"type":"sse","id":3,"#));
        assert!(matches!(
            Line::parse(&buf).unwrap(),
            Line::Event(FlowEvent::Sse { .. })
        ));
        // A damaged line says what is wrong in it.
        let err = Line::parse(br#"{"type":"sse","id":3}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `event`"), "{err}");
        assert!(Line::parse(br#"{"type":"bogus"}"#).is_err());
        assert!(Line::parse(b"[1]").is_err());
    }
}
