//! What every consumer of engine events sees: bodies decoded for the stored copy, then secrets
//! redacted (or, with `--keep-secrets`, noted and kept). The CLI runs this once per event, before
//! the journal, the live view and the analyzer.

use crate::decode::decode_body;
use mcptap_flow::redact::{self, Redactor};
use mcptap_flow::{Flow, FlowEvent};

pub use mcptap_flow::DEFAULT_BODY_LIMIT;

/// What the CLI prints when `--keep-secrets` is on.
pub const KEEP_SECRETS_WARNING: &str = "warning: --keep-secrets: tokens, codes, cookies and \
session ids are stored in clear in this session; do not share it";

/// How flows are prepared for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Keep secrets in clear (`--keep-secrets`): they are still noted with fingerprints, and the
    /// flows are marked `raw_secrets`.
    pub keep_secrets: bool,
    /// At most this many decoded bytes of each body are kept.
    pub body_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_secrets: false,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Decodes both bodies of `flow` from their `Content-Encoding` (bounded by
/// `options.body_limit`), then redacts its secrets unless `options.keep_secrets`, noting each
/// in `flow.secrets`. Idempotent.
pub fn prepare(flow: &mut Flow, options: &Options) {
    decode_body(
        &mut flow.request.body,
        &flow.request.headers,
        options.body_limit,
    );
    if let Some(resp) = flow.response.as_mut() {
        decode_body(&mut resp.body, &resp.headers, options.body_limit);
    }
    if options.keep_secrets {
        redact::note_secrets(flow);
        flow.raw_secrets = true;
    } else {
        redact::redact_flow(flow);
        flow.raw_secrets = false;
    }
}

/// [`prepare`] for one engine event: the flow of `RequestStarted`, `Completed` and `Failed`;
/// the headers of `ResponseHead` (an `Mcp-Session-Id` is certain to be there); the data of `Sse`.
pub fn prepare_event(event: &mut FlowEvent, options: &Options) {
    match event {
        FlowEvent::RequestStarted { flow }
        | FlowEvent::Completed { flow }
        | FlowEvent::Failed { flow } => prepare(flow, options),
        FlowEvent::ResponseHead { .. } | FlowEvent::Sse { .. } => {
            if !options.keep_secrets {
                Redactor::new().event(event);
            }
        }
        FlowEvent::Body { .. } => {}
    }
}

/// [`prepare_event`] for a consumer that follows each flow's events: `known` holds the raw
/// secret values met so far in the event's flow (in memory only, never written). A request
/// head or response head adds the ones it carries; a response head and an SSE event are
/// scrubbed of them — a token from the request's `Authorization` echoed in an event's text
/// must not reach the journal's `sse` line. A final flow is prepared whole as before (its own
/// redaction scrubs it).
pub fn prepare_event_known(event: &mut FlowEvent, options: &Options, known: &mut Vec<String>) {
    if options.keep_secrets {
        return prepare_event(event, options);
    }
    match event {
        FlowEvent::RequestStarted { flow } => {
            decode_body(
                &mut flow.request.body,
                &flow.request.headers,
                options.body_limit,
            );
            let mut r = Redactor::new();
            r.flow(flow);
            known.extend(r.take_raw());
            r.merge_into(&mut flow.secrets);
            flow.raw_secrets = false;
        }
        FlowEvent::ResponseHead { .. } | FlowEvent::Sse { .. } => {
            let mut r = Redactor::knowing(std::mem::take(known));
            r.event(event);
            *known = r.take_raw();
        }
        _ => prepare_event(event, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::{CapturedBody, FlowId, Request, Response, SseEvent};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_then_redacts() {
        let body = br#"{"access_token":"tok","token_type":"Bearer"}"#;
        let mut flow = Flow {
            request: Request {
                url: "https://as/token".into(),
                ..Request::default()
            },
            response: Some(Response {
                status: 200,
                headers: [("content-encoding", "gzip")].into_iter().collect(),
                body: CapturedBody::complete(gzip(body)),
                ..Response::default()
            }),
            ..Flow::default()
        };
        let wire = flow.response.as_ref().unwrap().body.total_len;
        prepare(&mut flow, &Options::default());
        let resp = flow.response.as_ref().unwrap();
        assert_eq!(resp.body.encoding.as_deref(), Some("gzip"));
        assert_eq!(resp.body.total_len, wire, "total_len stays the wire length");
        let v: serde_json::Value = serde_json::from_slice(&resp.body.bytes).unwrap();
        assert_eq!(v["access_token"], redact::redacted("tok"));
        assert_eq!(flow.secrets[0].place, "response.json.access_token");
        let again = flow.clone();
        prepare(&mut flow, &Options::default());
        assert_eq!(flow, again, "idempotent");
    }

    #[test]
    fn keep_secrets_keeps_and_marks() {
        let mut flow = Flow {
            request: Request {
                url: "https://rs/mcp".into(),
                headers: [("authorization", "Bearer raw-token")]
                    .into_iter()
                    .collect(),
                ..Request::default()
            },
            ..Flow::default()
        };
        let opts = Options {
            keep_secrets: true,
            ..Options::default()
        };
        prepare(&mut flow, &opts);
        assert_eq!(
            flow.request.headers.get("authorization"),
            Some("Bearer raw-token")
        );
        assert!(flow.raw_secrets);
        assert_eq!(
            flow.secrets[0].fingerprint,
            redact::fingerprint("raw-token")
        );
        let mut ev = FlowEvent::Sse {
            id: FlowId(1),
            event: SseEvent {
                data: r#"{"access_token":"x"}"#.into(),
                ..SseEvent::default()
            },
        };
        prepare_event(&mut ev, &opts);
        let FlowEvent::Sse { event, .. } = &ev else {
            unreachable!()
        };
        assert_eq!(event.data, r#"{"access_token":"x"}"#);
        prepare_event(&mut ev, &Options::default());
        let FlowEvent::Sse { event, .. } = &ev else {
            unreachable!()
        };
        assert_eq!(
            event.data,
            format!(r#"{{"access_token":"{}"}}"#, redact::redacted("x"))
        );
    }
}
