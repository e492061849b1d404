//! Per-flow facts: the role of a flow, its JSON-RPC messages (including those carried in SSE
//! events), its credentials and MCP headers. Computed once per flow; the rules read these
//! instead of re-parsing the flow.
//!
//! MCP endpoints are recognised by what crosses them (JSON-RPC bodies, `Mcp-Session-Id` and
//! `MCP-Protocol-Version` headers, Bearer challenges) and by what the analyzer has learned
//! (protected-resource `resource` values, endpoints seen before), never by the path `/mcp`.

use crate::model::{Role, RpcDirection, RpcKind};
use crate::util::{self, Url};
use mcptap_flow::oauth::WellKnown;
use mcptap_flow::{redact, sse, Flow, FlowId, FlowState, Micros};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;

/// One JSON-RPC message: its envelope, with `params` and `result` kept as JSON text and parsed
/// only when a rule asks (most messages are classified from the envelope alone). The text is
/// borrowed from the flow (a tool's result can be megabytes), copied only when it was read
/// from events the flow does not hold.
#[derive(Debug, Clone)]
pub(crate) struct Rpc<'a> {
    pub dir: RpcDirection,
    pub kind: RpcKind,
    pub method: Option<String>,
    pub id: Option<String>,
    pub sse: bool,
    params: Option<Raw<'a>>,
    result: Option<Raw<'a>>,
    parsed_params: OnceCell<Option<Value>>,
    parsed_result: OnceCell<Option<Value>>,
}

/// JSON text of a member: borrowed from the flow, or a copy.
#[derive(Debug, Clone)]
enum Raw<'a> {
    Borrowed(&'a RawValue),
    Owned(Box<RawValue>),
}

impl std::ops::Deref for Raw<'_> {
    type Target = RawValue;

    fn deref(&self) -> &RawValue {
        match self {
            Raw::Borrowed(r) => r,
            Raw::Owned(r) => r,
        }
    }
}

impl Rpc<'_> {
    /// `result` of a response.
    pub fn result(&self) -> Option<&Value> {
        self.parsed_result
            .get_or_init(|| parse_raw(self.result.as_deref()))
            .as_ref()
    }

    /// `result` of a response as JSON text.
    pub fn result_text(&self) -> Option<&str> {
        self.result.as_deref().map(RawValue::get)
    }

    /// `params` of a request or notification.
    pub fn params(&self) -> Option<&Value> {
        self.parsed_params
            .get_or_init(|| parse_raw(self.params.as_deref()))
            .as_ref()
    }
}

fn parse_raw(raw: Option<&RawValue>) -> Option<Value> {
    serde_json::from_str(raw?.get()).ok()
}

/// The envelope of a JSON-RPC message, borrowed from the text it was read from.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Member<'a>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Member<'a>,
    #[serde(default, borrow)]
    result: Member<'a>,
    #[serde(default, borrow)]
    error: Member<'a>,
}

/// A member that may be absent; present (even as `null`) it keeps its JSON text.
#[derive(Default)]
struct Member<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| Member(Some(r)))
    }
}

/// What the analyzer already knows that helps classify a flow.
#[derive(Debug, Default)]
pub(crate) struct Known {
    pub mcp_endpoints: HashSet<String>,
    pub token_endpoints: HashSet<String>,
    pub authorization_endpoints: HashSet<String>,
    pub registration_endpoints: HashSet<String>,
    pub jwks_uris: HashSet<String>,
    pub revocation_endpoints: HashSet<String>,
    pub prm_urls: HashSet<String>,
    pub redirect_uris: HashSet<String>,
}

/// The facts of one flow.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub flow: &'a Flow,
    pub id: FlowId,
    pub url: Option<Url>,
    pub started: Micros,
    pub done: Micros,
    /// Status of a real (not synthetic) response.
    pub status: Option<u16>,
    pub synthetic: bool,
    pub failed: bool,
    /// Fingerprint of the Bearer token the client sent (not an injected one).
    pub bearer: Option<String>,
    pub ua: Option<String>,
    pub role: Role,
    pub rpc: Vec<Rpc<'a>>,
    /// What is wrong with the server's JSON-RPC messages in this flow, one line each (a
    /// response without `"jsonrpc": "2.0"`, with both or neither of result and error, an error
    /// without code or message).
    pub rpc_faults: Vec<String>,
    pub session: Option<String>,
    pub new_session: Option<String>,
    pub protocol_version: Option<String>,
    pub negotiated: Option<String>,
}

impl Ctx<'_> {
    /// Origin and path of the request.
    pub fn endpoint(&self) -> Option<String> {
        self.url.as_ref().map(Url::endpoint)
    }

    /// True for a 2xx from the upstream.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The client's JSON-RPC requests and notifications.
    pub fn client_methods(&self) -> impl Iterator<Item = &str> {
        self.rpc
            .iter()
            .filter(|r| r.dir == RpcDirection::ClientToServer)
            .filter_map(|r| r.method.as_deref())
    }

    /// True when the client's message is one of `methods`.
    pub fn has_method(&self, methods: &[&str]) -> bool {
        self.client_methods().any(|m| methods.contains(&m))
    }

    /// A short label for what this request was: the JSON-RPC method, else the HTTP method.
    pub fn kind_label(&self) -> String {
        let m = &self.flow.request.method;
        match self.client_methods().next() {
            Some(rpc) if m.eq_ignore_ascii_case("POST") => rpc.to_owned(),
            _ if m.eq_ignore_ascii_case("GET") => "GET stream".to_owned(),
            _ if self
                .rpc
                .iter()
                .any(|r| r.dir == RpcDirection::ClientToServer && r.method.is_none()) =>
            {
                "POST response".to_owned()
            }
            _ => m.to_ascii_uppercase(),
        }
    }

    /// True for a request that starts a session or probes the server (no session expected).
    pub fn is_session_start(&self) -> bool {
        self.has_method(&["initialize", "server/discover"])
    }
}

/// Builds the facts of `flow` with what is known so far.
pub(crate) fn facts<'a>(flow: &'a Flow, known: &Known) -> Ctx<'a> {
    let url = Url::parse(&flow.request.url).or_else(|| {
        // HAR imports and CONNECT-less records may carry a path only.
        let scheme = if flow.client_tls.is_some() || flow.port == 443 {
            "https"
        } else {
            "http"
        };
        Url::parse(&format!(
            "{scheme}://{}:{}{}",
            flow.host, flow.port, flow.request.url
        ))
    });
    let started = flow.timings.started;
    let done = flow
        .timings
        .finished
        .or(flow.timings.response_head)
        .unwrap_or(started)
        .max(started);
    let synthetic = flow.response.as_ref().is_some_and(|r| r.synthetic);
    let status = flow
        .response
        .as_ref()
        .filter(|r| !r.synthetic)
        .map(|r| r.status);
    let failed = flow.state == FlowState::Failed || synthetic;
    let bearer = util::bearer_fp(flow);
    let ua = flow
        .request
        .headers
        .get("user-agent")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let (rpc, rpc_faults) = rpc_messages(flow);
    let session = flow
        .request
        .headers
        .get("mcp-session-id")
        .map(|v| redact::fingerprint_of(v.trim()));
    let new_session =
        util::response_header(flow, "mcp-session-id").map(|v| redact::fingerprint_of(v.trim()));
    let protocol_version = flow
        .request
        .headers
        .get("mcp-protocol-version")
        .map(|v| v.trim().to_owned());
    let negotiated = negotiated_version(&rpc);
    let mut ctx = Ctx {
        flow,
        id: flow.id,
        url,
        started,
        done,
        status,
        synthetic,
        failed,
        bearer,
        ua,
        role: Role::Other,
        rpc,
        rpc_faults,
        session,
        new_session,
        protocol_version,
        negotiated,
    };
    ctx.role = role(&ctx, known);
    ctx
}

fn role(ctx: &Ctx<'_>, known: &Known) -> Role {
    let flow = ctx.flow;
    if flow.kind == mcptap_flow::FlowKind::Tunnel {
        return Role::Tunnel;
    }
    let Some(url) = &ctx.url else {
        return Role::Other;
    };
    let method = flow.request.method.to_ascii_uppercase();
    let endpoint = url.endpoint();
    let path = url.path.to_ascii_lowercase();
    let req_headers = &flow.request.headers;
    let mcp_headers =
        req_headers.contains("mcp-session-id") || req_headers.contains("mcp-protocol-version");

    if method == "OPTIONS" {
        let acrh = req_headers
            .get("access-control-request-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        if req_headers.contains("access-control-request-method")
            && (known.mcp_endpoints.contains(&endpoint) || acrh.contains("mcp-"))
        {
            return Role::McpPreflight;
        }
        return Role::Other;
    }
    let well_known = WellKnown::of_path(&path);
    if well_known == Some(WellKnown::ProtectedResource) || known.prm_urls.contains(&endpoint) {
        return Role::PrmDiscovery;
    }
    if well_known.is_some_and(WellKnown::is_server_metadata) {
        return Role::AsMetadata;
    }
    if method == "POST" {
        if let Some(form) = util::request_form(flow) {
            if let Some(grant) = util::form_get(&form, "grant_type") {
                return match grant {
                    "authorization_code" => Role::TokenCode,
                    "refresh_token" => Role::TokenRefresh,
                    _ => Role::TokenOther,
                };
            }
        }
        let revocation = known.revocation_endpoints.contains(&endpoint)
            || path.ends_with("/revoke")
            || path.ends_with("/revocation");
        if revocation
            && ctx.rpc.is_empty()
            && util::request_form(flow).is_some_and(|f| util::form_get(&f, "token").is_some())
        {
            return Role::Revocation;
        }
        if known.token_endpoints.contains(&endpoint) && ctx.rpc.is_empty() {
            return Role::TokenOther;
        }
    }
    if method == "GET" {
        let q = url.query_pairs();
        let has = |k: &str| q.iter().any(|(n, _)| n == k);
        if (has("response_type") && has("client_id"))
            || (known.authorization_endpoints.contains(&endpoint) && has("client_id"))
        {
            return Role::Authorize;
        }
        if (has("code") || has("error")) && has("state") && known_redirect(known, url) {
            return Role::Callback;
        }
        if known.jwks_uris.contains(&endpoint) {
            return Role::Jwks;
        }
    }
    if method == "POST" && ctx.rpc.is_empty() {
        let is_reg_body = util::request_json(flow)
            .is_some_and(|v| v.get("redirect_uris").is_some_and(Value::is_array));
        if is_reg_body || known.registration_endpoints.contains(&endpoint) {
            return Role::Registration;
        }
    }
    let client_rpc = ctx
        .rpc
        .iter()
        .any(|r| r.dir == RpcDirection::ClientToServer);
    let server_rpc = ctx
        .rpc
        .iter()
        .any(|r| r.dir == RpcDirection::ServerToClient);
    let bearer_challenge = util::challenges(flow)
        .iter()
        .any(|c| c.is_bearer() && c.param("resource_metadata").is_some());
    if client_rpc
        || mcp_headers
        || known.mcp_endpoints.contains(&endpoint)
        || (server_rpc && flow.is_sse())
        || bearer_challenge
    {
        return Role::Mcp;
    }
    Role::Other
}

fn known_redirect(known: &Known, url: &Url) -> bool {
    known.redirect_uris.contains(&url.endpoint())
        || (util::host_is_loopback(&url.host)
            && known
                .redirect_uris
                .iter()
                .filter_map(|r| Url::parse(r))
                .any(|r| util::host_is_loopback(&r.host) && r.path == url.path))
}

/// The word every JSON-RPC 2.0 message names (a searcher built once: `memmem::find` builds
/// one per call, which showed in the recorder's profile).
static JSONRPC: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"jsonrpc"));

/// Every JSON-RPC message in the request body and the response (JSON body or SSE events).
fn rpc_messages(flow: &Flow) -> (Vec<Rpc<'_>>, Vec<String>) {
    let mut out = Vec::new();
    let mut faults = Vec::new();
    // A JSON-RPC body is a JSON object or batch array, and every JSON-RPC 2.0 message names
    // `"jsonrpc"`: other bodies are not parsed (most traffic through a proxy is not MCP, and a
    // download is looked at for its first byte only).
    let mentions = |b: &mcptap_flow::CapturedBody| {
        let start = b.bytes.iter().position(|c| !c.is_ascii_whitespace());
        start.is_some_and(|i| matches!(b.bytes[i], b'{' | b'[')) && JSONRPC.find(&b.bytes).is_some()
    };
    if mentions(&flow.request.body) {
        if let Some(text) = flow.request.body.as_str() {
            push_messages(
                &mut out,
                &mut faults,
                text,
                RpcDirection::ClientToServer,
                false,
                Raw::Borrowed,
            );
        }
    }
    // The answer to a JSON-RPC request is read even when it fails to name "jsonrpc" (an
    // envelope fault the server owns, failure-modes.md 48).
    let asked = out.iter().any(|m| m.kind == RpcKind::Request);
    let object = |b: &mcptap_flow::CapturedBody| {
        let start = b.bytes.iter().position(|c| !c.is_ascii_whitespace());
        start.is_some_and(|i| matches!(b.bytes[i], b'{' | b'['))
    };
    if let Some(resp) = &flow.response {
        if flow.is_sse() {
            let wanted = |data: &str| data.contains("jsonrpc") || (asked && data.starts_with('{'));
            if resp.sse.is_empty() && !resp.body.bytes.is_empty() {
                // Events read from the body here: what they carry is copied.
                let parsed = sse::parse_all(&resp.body.bytes, flow.timings.started);
                for data in parsed.iter().map(|e| e.data.trim()).filter(|d| wanted(d)) {
                    let own = |r: &RawValue| Raw::Owned(r.to_owned());
                    push_messages(&mut out, &mut faults, data, SERVER, true, own);
                }
            } else {
                for data in resp.sse.iter().map(|e| e.data.trim()).filter(|d| wanted(d)) {
                    push_messages(&mut out, &mut faults, data, SERVER, true, Raw::Borrowed);
                }
            }
        } else if mentions(&resp.body) || (asked && object(&resp.body)) {
            if let Some(text) = resp.body.as_str() {
                push_messages(&mut out, &mut faults, text, SERVER, false, Raw::Borrowed);
            }
        }
    }
    // Name responses after the request with the same id in this flow.
    let requests: Vec<(String, String)> = out
        .iter()
        .filter(|m| m.dir == RpcDirection::ClientToServer && m.kind == RpcKind::Request)
        .filter_map(|m| Some((m.id.clone()?, m.method.clone()?)))
        .collect();
    for m in &mut out {
        if m.dir == RpcDirection::ServerToClient && m.method.is_none() {
            if let Some(id) = &m.id {
                m.method = requests
                    .iter()
                    .find(|(rid, _)| rid == id)
                    .map(|(_, meth)| meth.clone());
            }
        }
    }
    (out, faults)
}

const SERVER: RpcDirection = RpcDirection::ServerToClient;

/// The JSON-RPC messages in `text`: one message or a batch. `keep` keeps a member's text
/// (borrowed when `text` lives as long as the messages, copied otherwise).
fn push_messages<'t, 'a>(
    out: &mut Vec<Rpc<'a>>,
    faults: &mut Vec<String>,
    text: &'t str,
    dir: RpcDirection,
    sse: bool,
    keep: impl Fn(&'t RawValue) -> Raw<'a> + Copy,
) {
    let text = text.trim();
    if text.starts_with('[') {
        // Each member on its own: one malformed message does not hide the others.
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) {
            for item in items {
                push_one(out, faults, item.get(), dir, sse, keep);
            }
        }
    } else if text.starts_with('{') {
        push_one(out, faults, text, dir, sse, keep);
    }
}

fn push_one<'t, 'a>(
    out: &mut Vec<Rpc<'a>>,
    faults: &mut Vec<String>,
    text: &'t str,
    dir: RpcDirection,
    sse: bool,
    keep: impl Fn(&'t RawValue) -> Raw<'a>,
) {
    let Ok(env) = serde_json::from_str::<Envelope<'_>>(text) else {
        return;
    };
    // The server's envelope faults (failure-modes.md 48), for the answers of a request.
    if dir == RpcDirection::ServerToClient && env.method.is_none() && faults.len() < 8 {
        let (res, err) = (env.result.0.is_some(), env.error.0.is_some());
        if (res || err) && env.jsonrpc.as_deref() != Some("2.0") {
            faults.push(format!(
                "a response without \"jsonrpc\": \"2.0\" ({})",
                env.jsonrpc
                    .as_deref()
                    .map_or("none".to_owned(), |v| format!("{v:?}"))
            ));
        }
        if res && err {
            faults.push("a response with both result and error".to_owned());
        }
        if let Some(e) = env.error.0 {
            let ok = serde_json::from_str::<Value>(e.get()).is_ok_and(|v| {
                v.get("code").is_some_and(Value::is_i64)
                    && v.get("message").is_some_and(Value::is_string)
            });
            if !ok {
                faults.push(format!(
                    "an error without an integer code and a message: {}",
                    e.get()
                ));
            }
        }
    }
    if env.jsonrpc.as_deref() != Some("2.0") {
        return;
    }
    let id = env.id.0.filter(|i| i.get() != "null").map(rpc_id);
    let method = env.method.map(Cow::into_owned);
    let kind = match (&method, &id) {
        (Some(_), Some(_)) => RpcKind::Request,
        (Some(_), None) => RpcKind::Notification,
        (None, _) if env.error.0.is_some() => RpcKind::Error,
        (None, _) if env.result.0.is_some() => RpcKind::Response,
        _ => return,
    };
    out.push(Rpc {
        dir,
        kind,
        method,
        id,
        sse,
        params: env.params.0.map(&keep),
        result: env.result.0.map(&keep),
        parsed_params: OnceCell::new(),
        parsed_result: OnceCell::new(),
    });
}

/// An id as compact JSON (`7`, `"abc"`), the same however the peer spelled it.
fn rpc_id(raw: &RawValue) -> String {
    let text = raw.get();
    let plain_int = text
        .strip_prefix('-')
        .unwrap_or(text)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if plain_int || (text.starts_with('"') && !text.contains('\\')) {
        return text.to_owned();
    }
    serde_json::from_str::<Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_owned())
}

/// The protocol version in an initialize result carried by this flow.
fn negotiated_version(rpc: &[Rpc<'_>]) -> Option<String> {
    rpc.iter()
        .filter(|r| r.dir == RpcDirection::ServerToClient && r.kind == RpcKind::Response)
        .filter(|r| r.method.as_deref().is_none_or(|m| m == "initialize"))
        // Parse only what could be an InitializeResult.
        .filter(|r| {
            r.result_text()
                .is_some_and(|t| t.contains("protocolVersion"))
        })
        .find_map(|r| {
            let res = r.result()?;
            // An InitializeResult has protocolVersion next to serverInfo/capabilities.
            if res.get("serverInfo").is_some() || res.get("capabilities").is_some() {
                res.get("protocolVersion")?.as_str().map(str::to_owned)
            } else {
                None
            }
        })
}

/// The protocol version a stateless (2026-07-28) request states in its `_meta` envelope.
pub(crate) fn meta_protocol_version<'r>(rpc: &'r Rpc<'_>) -> Option<&'r str> {
    // Parsed only when the text names it (a tool call's arguments can be large); the name's
    // `/` may be written `\/`, so only its tail is looked for.
    let raw = rpc.params.as_deref()?.get();
    if !raw.contains("protocolVersion") {
        return None;
    }
    rpc.params()?
        .get("_meta")?
        .get("io.modelcontextprotocol/protocolVersion")?
        .as_str()
}
