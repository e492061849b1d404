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
//! {"type":"completed","flow":{…},"sse":{"lines":[…],"body":"crlf"}}   a stream's end (below)
//! {"type":"failed","flow":{…}}
//! {"type":"end","at":…,"flows":12}                clean shutdown only
//! ```
//!
//! Event lines are exactly [`FlowEvent`]'s serde form (`body` progress events are never
//! written); the first and last lines are [`SessionLine`] and [`EndLine`]. A stream's events are
//! journalled once: when every event of a flow went out as its own `sse` line, the final line
//! leaves them out and says where they are ([`SseRef`]: the offsets of those lines), and leaves
//! out the response body too when it is exactly those events written back ([`sse_text`]). A header is
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
/// The journal format version written in the session line (2: a stream's final line may
/// point at its `sse` lines instead of repeating them, [`SseRef`]).
pub const JOURNAL_VERSION: u32 = 2;

/// Where the events of a streamed flow are, when its final line leaves them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SseRef {
    /// The byte offsets of the flow's `sse` lines, in order.
    pub lines: Vec<u64>,
    /// The response body was exactly [`sse_text`] of the events with these line ends, and is
    /// left out too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<LineEnd>,
}

/// The line ends a stream's body used (`text/event-stream` allows LF, CRLF or CR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LineEnd {
    /// `\n`
    Lf,
    /// `\r\n` (Starlette's `sse-starlette`, the Python SDK's server)
    Crlf,
}

impl LineEnd {
    pub(crate) const ALL: [LineEnd; 2] = [LineEnd::Lf, LineEnd::Crlf];

    fn as_str(self) -> &'static str {
        match self {
            LineEnd::Lf => "\n",
            LineEnd::Crlf => "\r\n",
        }
    }
}

/// How a final line that leaves out its events marks it: the last member it has.
const SSE_REF_KEY: &[u8] = br#","sse":{"lines":["#;

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
    /// A streamed flow's end whose events (and perhaps body) are in its `sse` lines.
    Streamed(FlowEvent, SseRef),
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
            "completed" | "failed" if has_sse_ref(text) => {
                #[derive(Deserialize)]
                struct Ref {
                    sse: SseRef,
                }
                let Ref { sse } = serde_json::from_slice(text)?;
                Line::Streamed(serde_json::from_slice(text)?, sse)
            }
            _ => Line::Event(serde_json::from_slice(text)?),
        })
    }
}

/// True when a final line ends with an [`SseRef`], as [`write_streamed`] writes it (read from
/// the end: `…,"sse":{"lines":[1,2],"body":"lf"}}`).
fn has_sse_ref(text: &[u8]) -> bool {
    let Some(t) = text.strip_suffix(b"}}") else {
        return false;
    };
    let t = [&br#","body":"lf""#[..], br#","body":"crlf""#]
        .into_iter()
        .find_map(|end| t.strip_suffix(end))
        .unwrap_or(t);
    let Some(t) = t.strip_suffix(b"]") else {
        return false;
    };
    let numbers = t
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_digit() || **c == b',')
        .count();
    t[..t.len() - numbers].ends_with(SSE_REF_KEY)
}

/// Events written back as a `text/event-stream` body: how a stream's body is rebuilt when its
/// final line left it out, or when the stream never ended.
pub(crate) fn sse_text(events: &[mcptap_flow::SseEvent], end: LineEnd) -> String {
    let nl = end.as_str();
    let line = |out: &mut String, field: &str, value: &str| {
        out.push_str(field);
        out.push_str(": ");
        out.push_str(value);
        out.push_str(nl);
    };
    let mut out = String::new();
    for ev in events {
        if let Some(e) = &ev.event {
            line(&mut out, "event", e);
        }
        if let Some(id) = &ev.id {
            line(&mut out, "id", id);
        }
        if let Some(r) = ev.retry {
            line(&mut out, "retry", &r.to_string());
        }
        for l in ev.data.split('\n') {
            line(&mut out, "data", l);
        }
        out.push_str(nl);
    }
    out
}

/// Appends a final line that points at its `sse` lines instead of repeating their events:
/// `flow` must be the final event with the events (and, when `sse.body`, the body) taken out.
pub(crate) fn write_streamed(
    buf: &mut Vec<u8>,
    event: &FlowEvent,
    sse: &SseRef,
) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *buf, event)?;
    // The event is an object: its closing brace makes room for one more member.
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    buf.extend_from_slice(&SSE_REF_KEY[..7]); // `,"sse":`
    serde_json::to_writer(&mut *buf, sse)?;
    buf.push(b'}');
    Ok(())
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
        assert!(buf.starts_with(br#"{"type":"session","version":2,"created":"#));
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
