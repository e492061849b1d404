//! The journal's format, declared once: what [`crate::Journal`] writes and what
//! [`crate::JournalReader`] (and a live view reading one flow back) reads.
//!
//! JSON Lines, one object per line, `type` first:
//!
//! ```text
//! {"type":"session","version":4,"created":1714566605123456,"mcptap":"0.1.0","raw_secrets":false,"argv":[…]}
//! {"type":"request_started","flow":{…}}          the flow head, bodies empty
//! {"type":"response_head","id":3,"at":…,"status":200,"version":"HTTP/1.1","headers":[…]}
//! {"type":"sse","id":3,"event":{"at":…,"event":"message","data":"…"}}   one per event, at once
//! {"type":"completed","flow":{…}}                 the whole flow (bodies, SSE events, timings)
//! {"type":"completed","flow":{…},"sse":{"lines":[…],"body":"crlf"}}   a stream's end (below)
//! {"type":"completed","flow":{…},"bodies":{"response":[4096,1048576]}}  a body in bodies.bin
//! {"type":"completed","head":[812,1336],"flow":{…}}   its head in earlier lines (below)
//! {"type":"failed","flow":{…}}
//! {"type":"end","at":…,"flows":12}                clean shutdown only
//! ```
//!
//! Event lines are exactly [`FlowEvent`]'s serde form (`body` progress events are never
//! written); the first and last lines are [`SessionLine`] and [`EndLine`]. A stream's events are
//! journalled once: when every event of a flow went out as its own `sse` line, the final line
//! leaves them out and says where they are ([`SseRef`]: the offsets of those lines), and leaves
//! out the response body too when it is exactly those events written back ([`sse_text`]: LF or
//! CRLF line ends, each event's fields in the order `event`, `id`, `retry`, `data`, or since
//! version 4 `id`, `event`, `data`, `retry`, `"body":"lf-id"`), or
//! those events with keep-alive comments and blank lines between them, noted where they go
//! (`"sse":{"extra":[[offset,": ping\n\n"]],"lines":[…],"body":"lf"}`, [`sse_body`]). A long
//! stream whose flow kept only some of its events (`sse_elided`) points at all its lines the
//! same way, when every event it counted went out as a line. A header is
//! `{"name":…,"value":…}`; a value that was not UTF-8 adds `"base64"` with its exact bytes (see
//! [`mcptap_flow::Header`]).
//!
//! Since version 3, bodies of [`SIDE_MIN`] bytes or more, bodies that are not UTF-8 (base64 in a
//! line, a third larger than raw) and the body of a stream its events do not rebuild are not in
//! the line: their exact bytes (decoded and redacted like any body) are appended raw to
//! [`BODIES_FILE`] next to the journal before the line is written, and the line ends with
//! [`BodiesRef`], the offset and length of each; the body in the line is empty (`"text":""`)
//! with its other fields as usual. A line never points at bytes written after it, so a crash
//! leaves at most unreferenced bytes at the end of [`BODIES_FILE`]. Bodies need not be
//! adjacent: a large one written with direct I/O starts at a multiple of 4096, after a gap of
//! zeros (or a hole), and its last block is padded; only offsets and lengths say where bodies
//! are. The reader puts the bytes
//! back ([`crate::JournalReader`] given the journal's path, [`crate::read_flow_at`]); bytes it
//! cannot find are a warning and an empty body, never a failure.
//!
//! Since version 4, a final line whose flow's head already went out — the `request_started`
//! line of a flow that spanned a batch of the recorder, and its `response_head` line — does not
//! say it again: it starts with [`HeadRef`] (`"head":[812]`, or `"head":[812,1336]`, the
//! offsets of those lines, always before it) and its flow is [`FlowRest`]: without what
//! [`StartHead`] holds (kind, client address, host, port, client TLS, the request's method,
//! URL, version and headers), and, when the `response_head` line is pointed at, without the
//! response's status, version and headers; everything else (state, timings, bodies or their
//! [`BodiesRef`], SSE events or their [`SseRef`], the error, the secrets' notes…) is there as
//! in a whole flow. The writer leaves a part out only when it is the same, value for value, as
//! the line pointed at says (both redacted alike: nothing comes back that the final flow's own
//! redaction would have taken out); otherwise the line says the whole flow, as before. A reader
//! that finds no such line where one is pointed at (damage) warns and gives the flow with what
//! the final line says.

use crate::journal::SessionMeta;
use mcptap_flow::redact::SecretNote;
use mcptap_flow::{
    CapturedBody, Flow, FlowError, FlowEvent, FlowId, FlowKind, FlowState, Headers, HttpVersion,
    Injection, Micros, Request, Response, SseEvent, Timings, TlsInfo, TunnelStats,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// The journal file inside a session directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The HAR file written inside a session directory on clean shutdown.
pub const HAR_FILE: &str = "session.har";
/// The side file of a session's large bodies, raw, next to the journal.
pub const BODIES_FILE: &str = "bodies.bin";
/// The journal format version written in the session line (2: a stream's final line may
/// point at its `sse` lines instead of repeating them, [`SseRef`]; 3: large bodies are in
/// [`BODIES_FILE`], [`BodiesRef`]; 4: a final line may point at the lines that said its head,
/// [`HeadRef`]).
pub const JOURNAL_VERSION: u32 = 4;
/// Bodies at least this long go to [`BODIES_FILE`] (smaller ones, which MCP and OAuth bodies
/// are, stay readable in the journal line).
pub(crate) const SIDE_MIN: usize = 16 * 1024;

/// Where a final line's bodies are in [`BODIES_FILE`]: `[offset, length]` of each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BodiesRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<[u64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<[u64; 2]>,
}

impl BodiesRef {
    pub(crate) fn is_empty(&self) -> bool {
        self.request.is_none() && self.response.is_none()
    }
}

/// Where a final line's flow head is, when earlier lines said it ([`FlowRest`]): the offset of
/// the flow's `request_started` line and, when the response head is left out too, of its
/// `response_head` line. Written `[request]` or `[request,response]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadRef {
    pub request: u64,
    pub response: Option<u64>,
}

impl Serialize for HeadRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.response {
            Some(r) => [self.request, r].serialize(s),
            None => [self.request].serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for HeadRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let at = <Vec<u64>>::deserialize(d)?;
        match at[..] {
            [request] => Ok(HeadRef {
                request,
                response: None,
            }),
            [request, response] => Ok(HeadRef {
                request,
                response: Some(response),
            }),
            _ => Err(serde::de::Error::invalid_length(
                at.len(),
                &"the offsets of one or two lines",
            )),
        }
    }
}

/// What a flow's `request_started` line says that its final line, pointing at it
/// ([`HeadRef`]), leaves out. The writer keeps one per flow whose start line went out, to see
/// whether the final flow still says the same; the reader takes one out of the start line it
/// finds and puts it into the final flow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StartHead {
    kind: FlowKind,
    client_addr: Option<String>,
    host: String,
    port: u16,
    client_tls: Option<Arc<TlsInfo>>,
    method: String,
    url: String,
    version: HttpVersion,
    headers: Headers,
}

impl StartHead {
    /// The head of `flow`, as its start line says it (a copy: headers and TLS are shared).
    pub(crate) fn of(flow: &Flow) -> StartHead {
        StartHead {
            kind: flow.kind,
            client_addr: flow.client_addr.clone(),
            host: flow.host.clone(),
            port: flow.port,
            client_tls: flow.client_tls.clone(),
            method: flow.request.method.clone(),
            url: flow.request.url.clone(),
            version: flow.request.version,
            headers: flow.request.headers.clone(),
        }
    }

    /// The head of a flow read from its start line, taken out of it.
    pub(crate) fn taken(flow: Flow) -> StartHead {
        let Flow {
            kind,
            client_addr,
            host,
            port,
            client_tls,
            request,
            ..
        } = flow;
        let Request {
            method,
            url,
            version,
            headers,
            body: _,
        } = request;
        StartHead {
            kind,
            client_addr,
            host,
            port,
            client_tls,
            method,
            url,
            version,
            headers,
        }
    }

    /// True when `flow` says the same head (its final line may leave it out).
    pub(crate) fn same(&self, flow: &Flow) -> bool {
        self.port == flow.port
            && self.kind == flow.kind
            && self.version == flow.request.version
            && self.method == flow.request.method
            && self.url == flow.request.url
            && self.host == flow.host
            && self.client_addr == flow.client_addr
            && self.headers == flow.request.headers
            && self.client_tls == flow.client_tls
    }

    /// Puts this head into a flow read from a final line that left it out.
    pub(crate) fn put_into(self, flow: &mut Flow) {
        flow.kind = self.kind;
        flow.client_addr = self.client_addr;
        flow.host = self.host;
        flow.port = self.port;
        flow.client_tls = self.client_tls;
        flow.request.method = self.method;
        flow.request.url = self.url;
        flow.request.version = self.version;
        flow.request.headers = self.headers;
    }
}

/// What a `response_head` line says that a final line pointing at it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub version: HttpVersion,
    pub headers: Headers,
}

impl ResponseHead {
    /// True when `resp` has this status, version and headers.
    pub(crate) fn same(&self, resp: &Response) -> bool {
        self.status == resp.status && self.version == resp.version && self.headers == resp.headers
    }

    /// Puts this head into a response read from a final line that left it out.
    pub(crate) fn put_into(self, resp: &mut Response) {
        resp.status = self.status;
        resp.version = self.version;
        resp.headers = self.headers;
    }
}

/// A final line's flow without what the lines its [`HeadRef`] points at say: [`Flow`]'s
/// members (same names, same forms), but for [`StartHead`]'s, and the response's status,
/// version and headers when `response_head` (they are in that line).
struct FlowRest<'a> {
    flow: &'a Flow,
    response_head: bool,
}

impl Serialize for FlowRest<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Every member named: a member added to `Flow` does not compile until it is here.
        let Flow {
            id,
            kind: _,
            state,
            client_addr: _,
            host: _,
            port: _,
            client_tls: _,
            upstream_tls,
            request,
            response,
            timings,
            error,
            tunnel,
            injected,
            not_injected,
            by_mcptap,
            secrets,
            raw_secrets,
        } = self.flow;
        #[derive(Serialize)]
        struct Out<'a> {
            id: FlowId,
            state: FlowState,
            #[serde(skip_serializing_if = "Option::is_none")]
            upstream_tls: Option<&'a TlsInfo>,
            request: RequestRest<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            response: Option<ResponseRest<'a>>,
            timings: &'a Timings,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a FlowError>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tunnel: Option<&'a TunnelStats>,
            #[serde(skip_serializing_if = "Option::is_none")]
            injected: Option<&'a Injection>,
            #[serde(skip_serializing_if = "Option::is_none")]
            not_injected: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            by_mcptap: Option<&'a str>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            secrets: &'a [SecretNote],
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            raw_secrets: bool,
        }
        #[derive(Serialize)]
        struct RequestRest<'a> {
            body: &'a CapturedBody,
        }
        #[derive(Serialize)]
        struct ResponseRest<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            version: Option<HttpVersion>,
            #[serde(skip_serializing_if = "Option::is_none")]
            headers: Option<&'a Headers>,
            body: &'a CapturedBody,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            sse: &'a [SseEvent],
            #[serde(skip_serializing_if = "is_zero")]
            sse_elided: u64,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            synthetic: bool,
        }
        let response = response.as_ref().map(|r| {
            let Response {
                status,
                version,
                headers,
                body,
                sse,
                sse_elided,
                synthetic,
            } = r;
            let head = !self.response_head;
            ResponseRest {
                status: head.then_some(*status),
                version: head.then_some(*version),
                headers: head.then_some(headers),
                body,
                sse,
                sse_elided: *sse_elided,
                synthetic: *synthetic,
            }
        });
        Out {
            id: *id,
            state: *state,
            upstream_tls: upstream_tls.as_deref(),
            request: RequestRest {
                body: &request.body,
            },
            response,
            timings,
            error: error.as_ref(),
            tunnel: tunnel.as_ref(),
            injected: injected.as_ref(),
            not_injected: not_injected.as_deref(),
            by_mcptap: by_mcptap.as_deref(),
            secrets,
            raw_secrets: *raw_secrets,
        }
        .serialize(s)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// [`FlowRest`] as read: a [`Flow`] whose head is empty until the lines pointed at put it in.
#[derive(Deserialize)]
struct FlowRestIn {
    id: FlowId,
    #[serde(default)]
    state: FlowState,
    #[serde(default)]
    upstream_tls: Option<Arc<TlsInfo>>,
    request: RequestRestIn,
    #[serde(default)]
    response: Option<ResponseRestIn>,
    timings: Timings,
    #[serde(default)]
    error: Option<FlowError>,
    #[serde(default)]
    tunnel: Option<TunnelStats>,
    #[serde(default)]
    injected: Option<Injection>,
    #[serde(default)]
    not_injected: Option<String>,
    #[serde(default)]
    by_mcptap: Option<String>,
    #[serde(default)]
    secrets: Vec<SecretNote>,
    #[serde(default)]
    raw_secrets: bool,
}

#[derive(Deserialize)]
struct RequestRestIn {
    #[serde(default)]
    body: CapturedBody,
}

#[derive(Deserialize)]
struct ResponseRestIn {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    version: HttpVersion,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: CapturedBody,
    #[serde(default)]
    sse: Vec<SseEvent>,
    #[serde(default)]
    sse_elided: u64,
    #[serde(default)]
    synthetic: bool,
}

impl FlowRestIn {
    fn into_flow(self) -> Flow {
        let FlowRestIn {
            id,
            state,
            upstream_tls,
            request,
            response,
            timings,
            error,
            tunnel,
            injected,
            not_injected,
            by_mcptap,
            secrets,
            raw_secrets,
        } = self;
        // Every member named: a member added to `Flow` does not compile until it is here.
        Flow {
            id,
            kind: FlowKind::default(),
            state,
            client_addr: None,
            host: String::new(),
            port: 0,
            client_tls: None,
            upstream_tls,
            request: Request {
                method: String::new(),
                url: String::new(),
                version: HttpVersion::default(),
                headers: Headers::default(),
                body: request.body,
            },
            response: response.map(|r| Response {
                status: r.status,
                version: r.version,
                headers: r.headers,
                body: r.body,
                sse: r.sse,
                sse_elided: r.sse_elided,
                synthetic: r.synthetic,
            }),
            timings,
            error,
            tunnel,
            injected,
            not_injected,
            by_mcptap,
            secrets,
            raw_secrets,
        }
    }
}

/// A final line whose flow's head is in earlier lines: `type`, [`HeadRef`] and [`FlowRest`].
#[derive(Serialize)]
struct RestLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    head: HeadRef,
    flow: FlowRest<'a>,
}

/// Appends a final line to `buf` (no newline) that leaves out what the lines `head` points at
/// say ([`FlowRest`]); members saying where its events and bodies are may follow.
pub(crate) fn write_rest(
    buf: &mut Vec<u8>,
    event: &FlowEvent,
    head: HeadRef,
) -> serde_json::Result<()> {
    let (kind, flow) = match event {
        FlowEvent::Completed { flow } => ("completed", flow),
        FlowEvent::Failed { flow } => ("failed", flow),
        _ => return write_event(buf, event),
    };
    serde_json::to_writer(
        buf,
        &RestLine {
            kind,
            head,
            flow: FlowRest {
                flow,
                response_head: head.response.is_some(),
            },
        },
    )
}

/// How a final line that has bodies in [`BODIES_FILE`] marks it: its last member.
const BODIES_KEY: &[u8] = br#","bodies":{"#;

/// Where the events of a streamed flow are, when its final line leaves them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SseRef {
    /// Lines of the body that are not in its events (keep-alive comments, blank lines), each
    /// with the offset in [`sse_text`] of the events where they go: the body is that text with
    /// these put back ([`sse_body`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(u64, String)>,
    /// The byte offsets of the flow's `sse` lines, in order.
    pub lines: Vec<u64>,
    /// The response body was exactly [`sse_text`] of the events with these line ends, and is
    /// left out too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<LineEnd>,
}

/// A stream's body rebuilt from its events: [`sse_text`] with `extra`'s lines put back.
pub(crate) fn sse_body(
    events: &[mcptap_flow::SseEvent],
    end: LineEnd,
    extra: &[(u64, String)],
) -> String {
    let text = sse_text(events, end);
    if extra.is_empty() {
        return text;
    }
    let mut out =
        String::with_capacity(text.len() + extra.iter().map(|e| e.1.len()).sum::<usize>());
    let mut from = 0;
    for (at, lines) in extra {
        // Offsets come from a file: never past the text, never inside a character.
        let at = usize::try_from(*at)
            .unwrap_or(usize::MAX)
            .clamp(from, text.len());
        let Some(part) = text.get(from..at) else {
            continue;
        };
        out.push_str(part);
        out.push_str(lines);
        from = at;
    }
    out.push_str(&text[from..]);
    out
}

/// How `body` is the events' [`sse_text`] with lines put in, if it is (with few enough of
/// them): the line ends and the lines, for [`SseRef`].
pub(crate) fn sse_extra(
    body: &[u8],
    events: &[mcptap_flow::SseEvent],
) -> Option<(LineEnd, Vec<(u64, String)>)> {
    let body = std::str::from_utf8(body).ok()?;
    LineEnd::ALL.into_iter().find_map(|end| {
        let text = sse_text(events, end);
        if text.len() > body.len() {
            return None;
        }
        let mut extra: Vec<(u64, String)> = Vec::new();
        let mut at = 0; // in `text`
        for line in body.split_inclusive('\n') {
            if text[at..].starts_with(line) {
                at += line.len();
                continue;
            }
            // Only whole lines that an event never holds: comments and blank lines.
            let bare = line.trim_end_matches(['\r', '\n']);
            if !(bare.is_empty() || bare.starts_with(':')) {
                return None;
            }
            match extra.last_mut() {
                Some((p, l)) if *p == at as u64 => l.push_str(line),
                _ => extra.push((at as u64, line.to_owned())),
            }
        }
        (at == text.len() && sse_body(events, end, &extra) == body).then_some((end, extra))
    })
}

/// The line ends a stream's body used (`text/event-stream` allows LF, CRLF or CR), and the
/// order of an event's fields: `event`, `id`, `retry`, `data` (the TypeScript SDK's server),
/// or since version 4 `id`, `event`, `data`, `retry` (`-id`: Starlette's `sse-starlette`, the
/// Python SDK's server, when its events have ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LineEnd {
    /// `\n`
    Lf,
    /// `\r\n` (Starlette's `sse-starlette`, the Python SDK's server)
    Crlf,
    /// `\n`, `id` first.
    LfId,
    /// `\r\n`, `id` first.
    CrlfId,
}

impl LineEnd {
    pub(crate) const ALL: [LineEnd; 4] =
        [LineEnd::Lf, LineEnd::Crlf, LineEnd::LfId, LineEnd::CrlfId];

    fn as_str(self) -> &'static str {
        match self {
            LineEnd::Lf | LineEnd::LfId => "\n",
            LineEnd::Crlf | LineEnd::CrlfId => "\r\n",
        }
    }

    fn id_first(self) -> bool {
        matches!(self, LineEnd::LfId | LineEnd::CrlfId)
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
    /// A flow's end whose head is in earlier lines ([`HeadRef`]; the flow's head is empty
    /// until they put it in), and whose events may be in its `sse` lines.
    Rest(FlowEvent, HeadRef, Option<SseRef>),
    /// The last line, after a clean shutdown.
    End(EndLine),
}

/// Only the `type` of a line, and whether it has a [`HeadRef`] (the rest is skipped without
/// being held).
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    head: Option<serde::de::IgnoredAny>,
}

impl Line {
    /// Parses one line (without its newline). A final line's [`BodiesRef`], if any, comes
    /// back too: its bodies are empty until their bytes are read from [`BODIES_FILE`].
    pub fn parse_with_bodies(text: &[u8]) -> Result<(Line, Option<BodiesRef>), serde_json::Error> {
        match split_bodies_ref(text) {
            Some((rest, bodies)) => {
                let mut owned = Vec::with_capacity(rest.len() + 1);
                owned.extend_from_slice(rest);
                owned.push(b'}');
                let line = Line::parse(&owned)?;
                let bodies = matches!(
                    &line,
                    Line::Event(FlowEvent::Completed { .. } | FlowEvent::Failed { .. })
                        | Line::Streamed(..)
                        | Line::Rest(..)
                )
                .then_some(bodies);
                Ok((line, bodies))
            }
            None => Ok((Line::parse(text)?, None)),
        }
    }

    /// Parses one line (without its newline), without its [`BodiesRef`] if it has one.
    pub fn parse(text: &[u8]) -> Result<Line, serde_json::Error> {
        let Kind { kind, head } = serde_json::from_slice(text)?;
        Ok(match kind.as_ref() {
            "session" => Line::Session(tagged(text)?),
            "end" => Line::End(tagged(text)?),
            "completed" | "failed" if head.is_some() => {
                #[derive(Deserialize)]
                struct Rest {
                    head: HeadRef,
                    flow: FlowRestIn,
                    #[serde(default)]
                    sse: Option<SseRef>,
                }
                let Rest { head, flow, sse } = serde_json::from_slice(text)?;
                let flow = Box::new(flow.into_flow());
                let event = if kind == "completed" {
                    FlowEvent::Completed { flow }
                } else {
                    FlowEvent::Failed { flow }
                };
                Line::Rest(event, head, sse)
            }
            "completed" | "failed" if has_sse_ref(text) => {
                #[derive(Deserialize)]
                struct Ref {
                    sse: SseRef,
                }
                let Ref { sse } = serde_json::from_slice(text)?;
                Line::Streamed(final_event(&kind, text)?, sse)
            }
            "completed" | "failed" => Line::Event(final_event(&kind, text)?),
            _ => Line::Event(serde_json::from_slice(text)?),
        })
    }
}

/// A `completed` or `failed` line's event, its flow parsed straight from the text: an
/// internally tagged enum would first copy the whole line into serde's own tree of its values
/// (every body once more). A line this does not read is parsed as the enum, for its error.
fn final_event(kind: &str, text: &[u8]) -> Result<FlowEvent, serde_json::Error> {
    #[derive(Deserialize)]
    struct Final {
        flow: Box<mcptap_flow::Flow>,
    }
    match serde_json::from_slice::<Final>(text) {
        Ok(Final { flow }) if kind == "completed" => Ok(FlowEvent::Completed { flow }),
        Ok(Final { flow }) => Ok(FlowEvent::Failed { flow }),
        Err(_) => serde_json::from_slice(text),
    }
}

/// A line that ends with a [`BodiesRef`] as [`write_bodies_ref`] writes it (`…,"bodies":{…}}`):
/// the line without it (and without its own closing brace), and the reference.
fn split_bodies_ref(text: &[u8]) -> Option<(&[u8], BodiesRef)> {
    let t = text.strip_suffix(b"}}")?;
    // The member is short: look for its key near the end only. Inside a JSON string the key's
    // quotes would be escaped, so it cannot be met there.
    let from = t.len().saturating_sub(96);
    let at = from
        + t[from..]
            .windows(BODIES_KEY.len())
            .rposition(|w| w == BODIES_KEY)?;
    let value = &text[at + BODIES_KEY.len() - 1..text.len() - 1];
    let bodies: BodiesRef = serde_json::from_slice(value).ok()?;
    Some((&text[..at], bodies))
}

/// Appends `,"bodies":{…}` to a final line written into `buf` (an object: its closing brace is
/// moved after the new member).
pub(crate) fn write_bodies_ref(buf: &mut Vec<u8>, bodies: &BodiesRef) -> serde_json::Result<()> {
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    buf.extend_from_slice(&BODIES_KEY[..BODIES_KEY.len() - 1]);
    serde_json::to_writer(&mut *buf, bodies)?;
    buf.push(b'}');
    Ok(())
}

/// True when a final line ends with an [`SseRef`], as [`write_streamed_ref`] writes it (read from
/// the end: `…,"sse":{"lines":[1,2],"body":"lf"}}`).
fn has_sse_ref(text: &[u8]) -> bool {
    let Some(t) = text.strip_suffix(b"}}") else {
        return false;
    };
    let t = [
        &br#","body":"lf""#[..],
        br#","body":"crlf""#,
        br#","body":"lf-id""#,
        br#","body":"crlf-id""#,
    ]
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
    let t = &t[..t.len() - numbers];
    // With keep-alive lines, `"sse":{"extra":[[at,"…"],…],"lines":[…]…}` (checked by parsing).
    t.ends_with(SSE_REF_KEY) || t.ends_with(br#""]],"lines":["#)
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
        if end.id_first() {
            if let Some(id) = &ev.id {
                line(&mut out, "id", id);
            }
            if let Some(e) = &ev.event {
                line(&mut out, "event", e);
            }
            for l in ev.data.split('\n') {
                line(&mut out, "data", l);
            }
            if let Some(r) = ev.retry {
                line(&mut out, "retry", &r.to_string());
            }
        } else {
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
        }
        out.push_str(nl);
    }
    out
}

/// Appends `,"sse":{…}` to a final line written into `buf` (an object: its closing brace is
/// moved after the new member). The flow must be the final event with the events (and, when
/// `sse.body`, the body) taken out.
pub(crate) fn write_streamed_ref(buf: &mut Vec<u8>, sse: &SseRef) -> serde_json::Result<()> {
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
        assert!(buf.starts_with(br#"{"type":"session","version":4,"created":"#));
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
