//! The compact row kept for every flow: what the flow list shows and what filters test.
//! A row never holds a body, so 100k of them stay small; details live in [`crate::store`].

use mcptap_analyze::{FlowSummary, Role, RpcDirection, RpcKind};
use mcptap_flow::{redact, Flow, FlowId, FlowKind, FlowState, Micros};

/// How a request authenticated itself, as the `auth` column shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: <scheme> <credential>`: the scheme and the credential's fingerprint.
    Sent {
        /// `Bearer`, `Basic`, …
        scheme: String,
        /// [`redact::fingerprint_of`] the credential.
        fingerprint: String,
    },
    /// mcptap added a Bearer token (inject mode); the client sent none.
    Injected {
        /// Fingerprint of the injected token.
        fingerprint: String,
    },
}

impl Auth {
    /// Reads the request's credentials.
    pub fn of(flow: &Flow) -> Auth {
        if let Some(inj) = &flow.injected {
            return Auth::Injected {
                fingerprint: inj.fingerprint.clone(),
            };
        }
        match flow.request.headers.get("authorization") {
            None => Auth::None,
            Some(v) => {
                let mut it = v.trim().splitn(2, ' ');
                let scheme = it.next().unwrap_or("").to_owned();
                let cred = it.next().unwrap_or("").trim();
                Auth::Sent {
                    scheme,
                    fingerprint: redact::fingerprint_of(cred),
                }
            }
        }
    }

    /// The column text: `Bearer 1a2b3c`, `none`, `INJ 1a2b3c`.
    pub fn label(&self) -> String {
        match self {
            Auth::None => "none".to_owned(),
            Auth::Sent {
                scheme,
                fingerprint,
            } => format!("{scheme} {}", short(fingerprint, 6)),
            Auth::Injected { fingerprint } => format!("INJ {}", short(fingerprint, 6)),
        }
    }
}

/// The OAuth/MCP phase column for a role: `PRM`, `AS meta`, `register`, `authorize`, `token`,
/// `refresh`, `MCP`; empty for anything else.
pub fn phase_label(role: Role) -> &'static str {
    match role {
        Role::PrmDiscovery => "PRM",
        Role::AsMetadata => "AS meta",
        Role::Registration => "register",
        Role::Authorize => "authorize",
        Role::Callback => "callback",
        Role::TokenCode | Role::TokenOther => "token",
        Role::TokenRefresh => "refresh",
        Role::Mcp => "MCP",
        Role::McpPreflight => "MCP CORS",
        Role::Jwks => "JWKS",
        Role::Revocation => "revoke",
        Role::Other => "",
        Role::Tunnel => "tunnel",
    }
}

/// The first `n` characters of `s`.
pub fn short(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One flow in the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The flow id.
    pub id: FlowId,
    /// When the request started.
    pub started: Micros,
    /// HTTP method (`CONNECT` for a tunnel).
    pub method: String,
    /// Target host (with `:port` when not the scheme's default).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Response status, if a response arrived.
    pub status: Option<u16>,
    /// True when mcptap made the response itself (upstream failure).
    pub synthetic: bool,
    /// Duration in µs, once finished.
    pub duration: Option<i64>,
    /// Request body bytes so far.
    pub req_size: u64,
    /// Response body bytes so far.
    pub resp_size: u64,
    /// The analyzer's role, once the flow is classified (when it completes).
    pub role: Option<Role>,
    /// The MCP method (`tools/call echo`), for MCP flows.
    pub mcp: Option<String>,
    /// Credentials.
    pub auth: Auth,
    /// Short fingerprint of the `Mcp-Session-Id` sent (or assigned).
    pub session: Option<String>,
    /// How far the flow got.
    pub state: FlowState,
    /// HTTP or tunnel.
    pub kind: FlowKind,
    /// Server-sent events seen so far.
    pub sse_events: u32,
    /// The error kind of a failed or aborted flow.
    pub error: Option<&'static str>,
    /// Short fingerprint of the access token this (token) flow issued, once classified.
    pub issued: Option<String>,
    /// The response carried a JSON-RPC answer (a result or an error), once classified: a
    /// client that closes the stream after it is done, not cut off.
    pub answered: bool,
}

impl Row {
    /// The row for a flow as far as it is known (a `RequestStarted` flow or a whole one).
    pub fn of(flow: &Flow) -> Row {
        let (host, path) = split_url(flow);
        let session = flow
            .request
            .headers
            .get("mcp-session-id")
            .or_else(|| {
                flow.response
                    .as_ref()
                    .and_then(|r| r.headers.get("mcp-session-id"))
            })
            .map(|v| short(&redact::fingerprint_of(v.trim()), 6).to_owned());
        let (req_size, resp_size) = match (&flow.kind, &flow.tunnel) {
            (FlowKind::Tunnel, Some(t)) => (t.bytes_up, t.bytes_down),
            _ => (
                flow.request.body.total_len,
                flow.response.as_ref().map_or(0, |r| r.body.total_len),
            ),
        };
        Row {
            id: flow.id,
            started: flow.timings.started,
            method: flow.request.method.clone(),
            host,
            path,
            status: flow.status(),
            synthetic: flow.response.as_ref().is_some_and(|r| r.synthetic),
            duration: flow.timings.duration(),
            req_size,
            resp_size,
            role: (flow.kind == FlowKind::Tunnel).then_some(Role::Tunnel),
            mcp: None,
            auth: Auth::of(flow),
            session,
            state: flow.state,
            kind: flow.kind,
            sse_events: flow
                .response
                .as_ref()
                .map_or(0, |r| u32::try_from(r.sse_count()).unwrap_or(u32::MAX)),
            error: flow.error.as_ref().map(|e| e.kind.as_str()),
            issued: None,
            answered: false,
        }
    }

    /// True when the client closed the stream after it had what it asked for: an SSE answer
    /// (or a GET stream, which a client may leave at any time). Normal Streamable HTTP, not a
    /// cut; shown dim.
    pub fn closed_by_client(&self) -> bool {
        self.state == FlowState::Aborted
            && self.error == Some("client_disconnected")
            && self.status.is_some_and(|s| (200..300).contains(&s))
            && (self.answered || self.method.eq_ignore_ascii_case("GET"))
    }

    /// Adds the analyzer's classification; `flow`, when still at hand, names the tool of a
    /// `tools/call` (the summary keeps methods only).
    pub fn classify(&mut self, summary: &FlowSummary, flow: Option<&Flow>) {
        self.role = Some(summary.role);
        self.issued = summary
            .issued_token
            .as_deref()
            .map(|t| short(t, 6).to_owned());
        self.answered = summary.mcp.as_ref().is_some_and(|m| {
            m.messages.iter().any(|r| {
                r.dir == RpcDirection::ServerToClient
                    && matches!(r.kind, RpcKind::Response | RpcKind::Error)
            })
        });
        self.mcp = summary.mcp.as_ref().and_then(|m| {
            let mut methods = m
                .messages
                .iter()
                .filter(|r| r.dir == RpcDirection::ClientToServer)
                .filter_map(|r| r.method.as_deref());
            let first = methods.next();
            let more = methods.count();
            let mut label = match first {
                Some(method) => {
                    let target = flow.and_then(|f| call_target(f, method));
                    match target {
                        Some(t) => format!("{method} {t}"),
                        None => method.to_owned(),
                    }
                }
                None if summary.method.eq_ignore_ascii_case("GET") => "GET stream".to_owned(),
                None if summary.method.eq_ignore_ascii_case("DELETE") => "end session".to_owned(),
                None if m
                    .messages
                    .iter()
                    .any(|r| r.dir == RpcDirection::ClientToServer) =>
                {
                    "response".to_owned()
                }
                None => return None,
            };
            if more > 0 {
                label.push_str(&format!(" +{more}"));
            }
            Some(label)
        });
        if self.session.is_none() {
            if let Some(s) = summary
                .mcp
                .as_ref()
                .and_then(|m| m.session.as_ref().or(m.new_session.as_ref()))
            {
                self.session = Some(short(s, 6).to_owned());
            }
        }
    }

    /// The phase column (empty until classified).
    pub fn phase(&self) -> &'static str {
        self.role.map_or("", phase_label)
    }

    /// `host` + `path`, as the list shows it.
    pub fn target(&self) -> String {
        format!("{}{}", self.host, self.path)
    }
}

/// What a `tools/call`, `prompts/get` or `resources/read` is about: `params.name` or
/// `params.uri` of the request body.
fn call_target(flow: &Flow, method: &str) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" => "uri",
        _ => return None,
    };
    let v: serde_json::Value = serde_json::from_slice(&flow.request.body.bytes).ok()?;
    let msg = match &v {
        serde_json::Value::Array(a) => a
            .iter()
            .find(|m| m.get("method").and_then(|x| x.as_str()) == Some(method))?,
        m => m,
    };
    msg.get("params")?
        .get(key)?
        .as_str()
        .map(|s| short(s, 40).to_owned())
}

fn split_url(flow: &Flow) -> (String, String) {
    if flow.kind == FlowKind::Tunnel {
        return (format!("{}:{}", flow.host, flow.port), String::new());
    }
    let url = flow.request.url.as_str();
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => {
            // A path only (some HAR imports): the host comes from the flow.
            let default = matches!(flow.port, 80 | 443);
            let host = if default || flow.port == 0 {
                flow.host.clone()
            } else {
                format!("{}:{}", flow.host, flow.port)
            };
            return (host, url.to_owned());
        }
    };
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}
