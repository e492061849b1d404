//! mcptap's flow model.
//!
//! A [`Flow`] is one recorded exchange: an HTTP request and its response as they crossed the
//! proxy, or a tunnel that was passed through without decryption. The engine (`mcptap-proxy`)
//! builds flows while traffic streams and reports them as [`FlowEvent`]s; the journal, the live
//! views and the analyzer consume them. This crate does no I/O and knows nothing of tokio, so every
//! consumer (including the pure analyzer) can depend on it.
#![deny(missing_docs)]

mod body;
mod headers;
pub mod human;
pub mod oauth;
pub mod redact;
pub mod sse;

pub use body::{BodyState, CapturedBody, DEFAULT_BODY_LIMIT};
pub use headers::{Header, Headers};

/// A value ordered by its key alone: an entry of a heap of flows that wait for their turn (in
/// start order for a HAR, in completion order for the analyzer).
#[derive(Debug)]
pub struct ByKey<K, T> {
    /// What orders it.
    pub key: K,
    /// What waits.
    pub value: T,
}

impl<K: Ord, T> PartialEq for ByKey<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<K: Ord, T> Eq for ByKey<K, T> {}
impl<K: Ord, T> PartialOrd for ByKey<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, T> Ord for ByKey<K, T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (UTC). Every timestamp in a flow uses this unit.
pub type Micros = i64;

/// True if the `Content-Type` value `ct` names the media type `mime` (compared without regard to
/// case; parameters such as `; charset=utf-8` may follow, a longer type such as
/// `text/event-streams` does not match).
pub fn media_type_is(ct: &str, mime: &str) -> bool {
    let ct = ct.trim_start();
    ct.get(..mime.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(mime))
        && ct[mime.len()..]
            .bytes()
            .next()
            .is_none_or(|b| b == b';' || b.is_ascii_whitespace())
}

/// The current wall-clock time in [`Micros`].
pub fn now_micros() -> Micros {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// A flow's identity within one session: assigned in order of arrival, starting at 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What kind of exchange a flow records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// An HTTP request and its response (decrypted if it was HTTPS).
    #[default]
    Http,
    /// A CONNECT tunnel passed through without decryption (`--ignore-hosts`, or not TLS nor
    /// HTTP). Only the target, byte counts and duration are known.
    Tunnel,
}

/// How far a flow got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Still in progress (only ever seen in live events and in a journal cut by a crash).
    #[default]
    Pending,
    /// Request and response went through completely.
    Completed,
    /// A response head was seen, but one side disconnected before the bodies ended.
    Aborted,
    /// No usable response: the proxy answered with an error itself, or the handshake failed.
    Failed,
}

/// The HTTP version spoken on one side of the proxy, as HAR spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HttpVersion {
    /// HTTP/1.0
    #[serde(rename = "HTTP/1.0")]
    Http10,
    /// HTTP/1.1
    #[default]
    #[serde(rename = "HTTP/1.1")]
    Http11,
    /// HTTP/2
    #[serde(rename = "HTTP/2.0")]
    Http2,
    /// HTTP/3
    #[serde(rename = "HTTP/3.0")]
    Http3,
}

impl HttpVersion {
    /// The version as HAR writes it (`HTTP/1.1`, `HTTP/2.0`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2.0",
            HttpVersion::Http3 => "HTTP/3.0",
        }
    }

    /// Parses the spellings used by HAR writers (`HTTP/1.1`, `http/2.0`, `h2`, `HTTP/2`).
    pub fn parse(s: &str) -> Option<HttpVersion> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http/1.0" => Some(HttpVersion::Http10),
            "http/1.1" => Some(HttpVersion::Http11),
            "http/2" | "http/2.0" | "h2" | "h2c" => Some(HttpVersion::Http2),
            "http/3" | "http/3.0" | "h3" => Some(HttpVersion::Http3),
            _ => None,
        }
    }
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS parameters negotiated on one side of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI), if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The negotiated application protocol (`h2`, `http/1.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The negotiated protocol version (`TLSv1.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The negotiated cipher suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// True when the peer's certificate was not verified (`-k/--ssl-insecure`): anyone on the
    /// path could have been the server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

/// The request as the client sent it (after the proxy received it, before anything was added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Request {
    /// Method, upper case as sent (`GET`, `POST`).
    pub method: String,
    /// The absolute URL (`https://host:port/path?query`); the default port is omitted.
    pub url: String,
    /// The HTTP version between client and proxy.
    pub version: HttpVersion,
    /// Header fields in the order received.
    pub headers: Headers,
    /// The captured body.
    #[serde(default)]
    pub body: CapturedBody,
}

/// The response as the upstream sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The HTTP version between proxy and upstream.
    pub version: HttpVersion,
    /// Header fields in the order received.
    pub headers: Headers,
    /// The captured body.
    #[serde(default)]
    pub body: CapturedBody,
    /// Server-sent events, for `text/event-stream` bodies, each with its arrival time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sse: Vec<SseEvent>,
    /// Server-sent events the stream had that [`Response::sse`] leaves out: a long stream
    /// keeps its first events and its JSON-RPC responses in memory and counts the rest (a
    /// journal holds every event, and reading it back puts them all here again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sse_elided: u64,
    /// True when the proxy made this response itself (for example a 502 after an upstream
    /// failure) instead of relaying one from the upstream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
}

impl Response {
    /// The server-sent events the stream had: those kept in [`Response::sse`] and those it
    /// left out ([`Response::sse_elided`]).
    pub fn sse_count(&self) -> u64 {
        self.sse.len() as u64 + self.sse_elided
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One server-sent event, parsed from a `text/event-stream` body as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SseEvent {
    /// When the event's terminating blank line arrived at the proxy.
    pub at: Micros,
    /// The `event:` field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The `id:` field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `retry:` field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

/// Points in time during a flow. `None` means the point was never reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Timings {
    /// The request head arrived from the client (or the CONNECT for a tunnel).
    pub started: Micros,
    /// The upstream connection was ready (connected, TLS done) or reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<Micros>,
    /// The whole request body was read from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_done: Option<Micros>,
    /// The response head arrived from the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_head: Option<Micros>,
    /// The flow ended (response body finished, failed or was cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Micros>,
}

impl Timings {
    /// Total duration in microseconds, if the flow has finished.
    pub fn duration(&self) -> Option<i64> {
        self.finished.map(|f| (f - self.started).max(0))
    }
}

/// Why a flow failed or was aborted. Classified by type in the engine, never by message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The upstream host name did not resolve.
    UpstreamDns,
    /// The upstream refused or did not answer the TCP connection.
    UpstreamConnect,
    /// The TLS handshake with the upstream failed (including certificate verification).
    UpstreamTls,
    /// The upstream took too long.
    UpstreamTimeout,
    /// The upstream broke the HTTP protocol or closed the connection mid-exchange.
    UpstreamProtocol,
    /// The client refused mcptap's certificate (it does not trust the mcptap CA).
    ClientTls,
    /// The client sent something that is not valid HTTP.
    ClientProtocol,
    /// The client went away before the exchange ended.
    ClientDisconnected,
    /// The client took longer than a limit: no TLS handshake after CONNECT, or a request body
    /// that stalled.
    ClientTimeout,
    /// The upstream went away before the exchange ended.
    UpstreamDisconnected,
    /// mcptap was shut down while the exchange was in flight (it was dropped at the shutdown
    /// deadline).
    Shutdown,
    /// Anything else: a bug in mcptap.
    Internal,
}

impl ErrorKind {
    /// A stable short name (`upstream_connect`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UpstreamDns => "upstream_dns",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTls => "upstream_tls",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::ClientTls => "client_tls",
            ErrorKind::ClientProtocol => "client_protocol",
            ErrorKind::ClientDisconnected => "client_disconnected",
            ErrorKind::ClientTimeout => "client_timeout",
            ErrorKind::UpstreamDisconnected => "upstream_disconnected",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error attached to a failed or aborted flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowError {
    /// What went wrong, by kind.
    pub kind: ErrorKind,
    /// What went wrong, in words (the error chain).
    pub message: String,
    /// What the user can do about it, when mcptap knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Set when a time limit ended the flow: which one, and how long it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<TimeLimit>,
}

impl FlowError {
    /// An error of `kind` with `message`, without hint or limit.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> FlowError {
        FlowError {
            kind,
            message: message.into(),
            hint: None,
            limit: None,
        }
    }
}

/// A time limit that ended a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeLimit {
    /// What was being waited for.
    pub phase: Phase,
    /// The limit, in milliseconds.
    pub after_ms: u64,
}

/// What a flow was waiting for when a time limit ended it (`--*-timeout` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// DNS, TCP and TLS to the upstream (`--connect-timeout`).
    UpstreamConnect,
    /// The client's TLS handshake after CONNECT (`--tls-handshake-timeout`).
    ClientTlsHandshake,
    /// The upstream's response head after the request was sent (`--response-timeout`).
    ResponseHead,
    /// The next bytes of a body that had started (`--idle-body-timeout`).
    IdleBody,
}

impl Phase {
    /// A stable short name (`response_head`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::UpstreamConnect => "upstream_connect",
            Phase::ClientTlsHandshake => "client_tls_handshake",
            Phase::ResponseHead => "response_head",
            Phase::IdleBody => "idle_body",
        }
    }
}

/// Bytes that crossed a tunnel or an upgraded connection (WebSocket) without being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TunnelStats {
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
}

/// Marks a request to which mcptap added an `Authorization` header (inject mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    /// Fingerprint of the injected token (see [`redact::fingerprint`]).
    pub fingerprint: String,
    /// The flow in which the token was issued, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_flow: Option<FlowId>,
}

/// One recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Flow {
    /// Identity within the session.
    pub id: FlowId,
    /// HTTP exchange or opaque tunnel.
    #[serde(default)]
    pub kind: FlowKind,
    /// How far it got.
    #[serde(default)]
    pub state: FlowState,
    /// The client's address (`127.0.0.1:53412`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// The target host (name or IP literal, without brackets) and port.
    pub host: String,
    /// The target port.
    pub port: u16,
    /// TLS between the client and mcptap, if the client spoke TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<Arc<TlsInfo>>,
    /// TLS between mcptap and the upstream, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<Arc<TlsInfo>>,
    /// The request. For a tunnel: `CONNECT host:port`.
    pub request: Request,
    /// The response, if one arrived (or was made by the proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// Points in time.
    pub timings: Timings,
    /// Why it failed or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FlowError>,
    /// Bytes after a `101 Switching Protocols`, or through an opaque tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelStats>,
    /// Set when mcptap added the `Authorization` header (inject mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<Injection>,
    /// Inject mode: why mcptap did *not* add a token to this request that had none (`the path
    /// leaves the MCP endpoint …`, `the Host header names …`). Forwarded untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_injected: Option<String>,
    /// Set when mcptap itself made this request (the client did not send it); says why, e.g.
    /// `inject-refresh` for a token refresh made under `--inject-refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_mcptap: Option<String>,
    /// Secrets that were redacted from this flow, where, and what a JWT among them said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<redact::SecretNote>,
    /// True when the flow holds raw secrets (`--keep-secrets`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_secrets: bool,
}

impl Flow {
    /// The flow as its start reports it ([`FlowEvent::RequestStarted`]): pending, the request
    /// head only (no body), no response, no error, no tunnel counts, no timing past the start.
    pub fn head(&self) -> Flow {
        Flow {
            state: FlowState::Pending,
            request: Request {
                body: CapturedBody::default(),
                ..self.request.clone()
            },
            response: None,
            error: None,
            tunnel: None,
            timings: Timings {
                started: self.timings.started,
                ..Timings::default()
            },
            ..self.clone()
        }
    }

    /// The response status, if any.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// True if the request carried an `Authorization` header with the `Bearer` scheme.
    pub fn has_bearer(&self) -> bool {
        self.request.headers.get("authorization").is_some_and(|v| {
            v.len() > 6 && v[..6].eq_ignore_ascii_case("bearer") && v.as_bytes()[6] == b' '
        })
    }

    /// True if the response is a server-sent event stream.
    pub fn is_sse(&self) -> bool {
        self.response.as_ref().is_some_and(|r| {
            r.headers
                .get("content-type")
                .is_some_and(|ct| media_type_is(ct, "text/event-stream"))
        })
    }
}

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

/// What the engine reports, in order, for every flow.
///
/// `RequestStarted` comes first; `Completed` or `Failed` comes last, exactly once, and carries the
/// whole flow. Between them, `ResponseHead`, `Body` and `Sse` report progress so that a live view
/// or a journal can show a stream that has not ended (and may never end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FlowEvent {
    /// The request head arrived; the flow's bodies are still empty.
    RequestStarted {
        /// The flow as known so far.
        flow: Box<Flow>,
    },
    /// The response head arrived from the upstream.
    ResponseHead {
        /// Which flow.
        id: FlowId,
        /// When.
        at: Micros,
        /// Status code.
        status: u16,
        /// Version between proxy and upstream.
        version: HttpVersion,
        /// Header fields.
        headers: Headers,
    },
    /// Body bytes went through (a summary: sent at most every few hundred KiB per flow).
    Body {
        /// Which flow.
        id: FlowId,
        /// Which body.
        direction: Direction,
        /// Bytes so far.
        total: u64,
    },
    /// A server-sent event went through to the client.
    Sse {
        /// Which flow.
        id: FlowId,
        /// The event.
        event: SseEvent,
    },
    /// The flow ended normally, or was aborted after the response head.
    Completed {
        /// The whole flow.
        flow: Box<Flow>,
    },
    /// The flow failed (no usable response).
    Failed {
        /// The whole flow.
        flow: Box<Flow>,
    },
}

impl FlowEvent {
    /// The flow this event is about.
    pub fn flow_id(&self) -> FlowId {
        match self {
            FlowEvent::RequestStarted { flow }
            | FlowEvent::Completed { flow }
            | FlowEvent::Failed { flow } => flow.id,
            FlowEvent::ResponseHead { id, .. }
            | FlowEvent::Body { id, .. }
            | FlowEvent::Sse { id, .. } => *id,
        }
    }

    /// True for the final event of a flow.
    pub fn is_final(&self) -> bool {
        matches!(self, FlowEvent::Completed { .. } | FlowEvent::Failed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_the_flow_as_its_start_reports_it() {
        let flow = Flow {
            id: FlowId(7),
            state: FlowState::Completed,
            request: Request {
                method: "POST".into(),
                url: "https://mcp.example/mcp".into(),
                body: CapturedBody::complete(b"{}".to_vec()),
                ..Default::default()
            },
            response: Some(Response::default()),
            timings: Timings {
                started: 10,
                finished: Some(20),
                ..Default::default()
            },
            ..Default::default()
        };
        let head = flow.head();
        assert_eq!((head.id, head.state), (FlowId(7), FlowState::Pending));
        assert_eq!(head.request.url, flow.request.url);
        assert!(head.request.body.is_empty() && head.response.is_none());
        assert_eq!(
            head.timings,
            Timings {
                started: 10,
                ..Default::default()
            }
        );
    }

    #[test]
    fn media_type_is_matches_the_type_with_or_without_parameters() {
        for ct in [
            "text/event-stream",
            " Text/Event-Stream",
            "text/event-stream; charset=utf-8",
            "text/event-stream ;charset=utf-8",
        ] {
            assert!(media_type_is(ct, "text/event-stream"), "{ct:?}");
        }
        for ct in ["text/event-streams", "text/event", "", "application/json"] {
            assert!(!media_type_is(ct, "text/event-stream"), "{ct:?}");
        }
    }
}
