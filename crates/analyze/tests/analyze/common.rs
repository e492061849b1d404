//! Fixture DSL: `Scenario` hands out flow ids and a clock; `FlowBuilder` reads like the wire
//! (`FlowBuilder::post(RS_MCP).bearer("t").rpc("tools/list", 2).status(200)`); `steps` builds
//! the usual pieces of an OAuth + MCP session so that tables stay readable.

#![allow(dead_code)]

use base64::Engine as _;
use mcptap_analyze::{Culprit, Report};
use mcptap_flow::{
    redact, BodyState, CapturedBody, ErrorKind, Flow, FlowError, FlowId, FlowState, Headers,
    Injection, Request, Response, SseEvent, Timings,
};
use serde_json::{json, Value};
use sha2::Digest as _;

pub const BASE: i64 = 1_750_000_000_000_000;
pub const RS: &str = "https://rs.example";
pub const RS_MCP: &str = "https://rs.example/mcp";
pub const PRM_URL: &str = "https://rs.example/.well-known/oauth-protected-resource/mcp";
pub const AS: &str = "https://auth.example";
pub const REDIRECT: &str = "http://127.0.0.1:33418/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const UA: &str = "test-client/1.0";

/// `BASE64URL(SHA256(v))`.
pub fn s256(v: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(v.as_bytes()))
}

/// An unsigned JWT with `claims`.
pub fn jwt(claims: Value) -> String {
    let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2ln",
        e(&json!({"alg":"RS256","kid":"k1","typ":"at+jwt"})),
        e(&claims)
    )
}

pub fn fp(secret: &str) -> String {
    redact::fingerprint(secret)
}

pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A flow under construction.
#[derive(Clone)]
pub struct FlowBuilder {
    flow: Flow,
    dur_ms: i64,
    sse: Vec<Value>,
}

impl FlowBuilder {
    pub fn new(method: &str, url: &str) -> FlowBuilder {
        let host = url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split(['/', ':', '?'])
            .next()
            .unwrap_or("")
            .to_owned();
        let mut headers = Headers::new();
        headers.push("user-agent", UA);
        FlowBuilder {
            flow: Flow {
                host,
                port: if url.starts_with("https") { 443 } else { 80 },
                state: FlowState::Completed,
                request: Request {
                    method: method.into(),
                    url: url.into(),
                    headers,
                    ..Default::default()
                },
                ..Default::default()
            },
            dur_ms: 5,
            sse: Vec::new(),
        }
    }
    pub fn get(url: &str) -> FlowBuilder {
        FlowBuilder::new("GET", url)
    }
    pub fn post(url: &str) -> FlowBuilder {
        FlowBuilder::new("POST", url)
    }
    pub fn delete(url: &str) -> FlowBuilder {
        FlowBuilder::new("DELETE", url)
    }
    pub fn options(url: &str) -> FlowBuilder {
        FlowBuilder::new("OPTIONS", url)
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.flow.request.headers.push(n, v);
        self
    }
    pub fn no_header(mut self, n: &str) -> Self {
        self.flow
            .request
            .headers
            .retain(|h| !h.name.eq_ignore_ascii_case(n));
        self
    }
    pub fn ua(self, ua: &str) -> Self {
        self.no_header("user-agent").header("user-agent", ua)
    }
    pub fn bearer(self, tok: &str) -> Self {
        self.header("authorization", &format!("Bearer {tok}"))
    }
    pub fn session(self, s: &str) -> Self {
        self.header("mcp-session-id", s)
    }
    pub fn pv(self, v: &str) -> Self {
        self.header("mcp-protocol-version", v)
    }
    pub fn body(mut self, ct: &str, body: &str) -> Self {
        self.flow.request.headers.push("content-type", ct);
        self.flow.request.body = CapturedBody::complete(body.to_owned());
        self
    }
    pub fn json(self, v: Value) -> Self {
        self.body("application/json", &v.to_string())
    }
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let s = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.body("application/x-www-form-urlencoded", &s)
    }
    /// A JSON-RPC request (MCP POST headers included).
    pub fn rpc(self, method: &str, id: i64) -> Self {
        self.rpc_params(method, id, json!({}))
    }
    pub fn rpc_params(self, method: &str, id: i64, params: Value) -> Self {
        self.header("accept", "application/json, text/event-stream")
            .json(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
    }
    pub fn notify(self, method: &str) -> Self {
        self.header("accept", "application/json, text/event-stream")
            .json(json!({"jsonrpc":"2.0","method":method}))
    }
    pub fn status(mut self, s: u16) -> Self {
        self.flow
            .response
            .get_or_insert_with(Response::default)
            .status = s;
        self
    }
    pub fn resp_header(mut self, n: &str, v: &str) -> Self {
        self.flow
            .response
            .get_or_insert_with(Response::default)
            .headers
            .push(n, v);
        self
    }
    pub fn resp_body(mut self, ct: &str, body: &str) -> Self {
        let r = self.flow.response.get_or_insert_with(Response::default);
        r.headers.push("content-type", ct);
        r.body = CapturedBody::complete(body.to_owned());
        self
    }
    pub fn resp_json(self, v: Value) -> Self {
        self.resp_body("application/json", &v.to_string())
    }
    /// A JSON-RPC result for request `id`.
    pub fn result(self, id: i64, result: Value) -> Self {
        self.resp_json(json!({"jsonrpc":"2.0","id":id,"result":result}))
    }
    /// SSE response events (JSON-RPC messages).
    pub fn sse(mut self, events: Vec<Value>) -> Self {
        let r = self.flow.response.get_or_insert_with(Response::default);
        r.headers.push("content-type", "text/event-stream");
        self.sse = events;
        self
    }
    pub fn challenge(self, v: &str) -> Self {
        self.status(401).resp_header("www-authenticate", v)
    }
    pub fn dur(mut self, ms: i64) -> Self {
        self.dur_ms = ms;
        self
    }
    /// The proxy could not reach the upstream: a synthetic 502.
    pub fn failed(mut self, kind: ErrorKind) -> Self {
        self.flow.state = FlowState::Failed;
        self.flow.response = Some(Response {
            status: 502,
            synthetic: true,
            ..Default::default()
        });
        self.flow.error = Some(FlowError {
            kind,
            message: "test".into(),
            hint: None,
            limit: None,
        });
        self
    }
    /// Made by mcptap itself (`--inject-refresh`), not by the client.
    pub fn by_mcptap(mut self) -> Self {
        self.flow.by_mcptap = Some("inject-refresh".into());
        self
    }
    pub fn injected(mut self, tok: &str, token_flow: Option<FlowId>) -> Self {
        self.flow.injected = Some(Injection {
            fingerprint: fp(tok),
            token_flow,
        });
        self
    }
    /// Inject mode turned it away: forwarded bare, `why` recorded.
    pub fn not_injected(mut self, why: &str) -> Self {
        self.flow.not_injected = Some(why.into());
        self
    }
    /// Replaces every secret the engine's redaction would, with its marker.
    pub fn redacted(mut self) -> Self {
        let f = &mut self.flow;
        for h in f.request.headers.iter_mut() {
            if h.name.eq_ignore_ascii_case("authorization")
                || h.name.eq_ignore_ascii_case("mcp-session-id")
            {
                h.value = match h.value.split_once(' ') {
                    Some((s, c)) if h.name.eq_ignore_ascii_case("authorization") => {
                        format!("{s} {}", redact::redacted(c))
                    }
                    _ => redact::redacted(&h.value),
                };
            }
        }
        if let Some(b) = f.request.body.as_str().map(str::to_owned) {
            if !b.starts_with('{') && b.contains('=') {
                let red = b
                    .split('&')
                    .map(|p| match p.split_once('=') {
                        Some((k, v))
                            if ["code", "code_verifier", "refresh_token", "client_secret"]
                                .contains(&k) =>
                        {
                            format!("{k}={}", enc(&redact::redacted(&percent(v))))
                        }
                        _ => p.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                f.request.body = CapturedBody::complete(red);
            }
        }
        if let Some(r) = &mut f.response {
            if let Some(mut v) = r
                .body
                .as_str()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
            {
                for k in ["access_token", "refresh_token", "client_secret"] {
                    if let Some(Value::String(s)) = v.get(k).cloned() {
                        if let Some(j) = redact::decode_jwt(&s) {
                            f.secrets.push(redact::SecretNote {
                                fingerprint: fp(&s),
                                len: s.len(),
                                place: format!("response.json.{k}"),
                                jwt: Some(j),
                            });
                        }
                        v[k] = Value::String(redact::redacted(&s));
                    }
                }
                r.body = CapturedBody::complete(v.to_string());
            }
            for h in r.headers.iter_mut() {
                if h.name.eq_ignore_ascii_case("mcp-session-id") {
                    h.value = redact::redacted(&h.value);
                }
                if h.name.eq_ignore_ascii_case("location") {
                    if let Some((base, q)) = h.value.clone().split_once('?') {
                        let q = q
                            .split('&')
                            .map(|p| match p.split_once('=') {
                                Some(("code", v)) => {
                                    format!("code={}", enc(&redact::redacted(&percent(v))))
                                }
                                _ => p.to_owned(),
                            })
                            .collect::<Vec<_>>()
                            .join("&");
                        h.value = format!("{base}?{q}");
                    }
                }
            }
        }
        self
    }
}

fn percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A session under construction: ids in order, a clock in milliseconds.
pub struct Scenario {
    pub flows: Vec<Flow>,
    pub clock_ms: i64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new()
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario {
            flows: Vec::new(),
            clock_ms: 0,
        }
    }
    /// Moves the clock to `ms` after the start.
    pub fn at(&mut self, ms: i64) -> &mut Self {
        self.clock_ms = ms;
        self
    }
    /// Lets `ms` pass.
    pub fn wait(&mut self, ms: i64) -> &mut Self {
        self.clock_ms += ms;
        self
    }
    /// Adds a flow starting now; the clock moves past its end.
    pub fn add(&mut self, b: FlowBuilder) -> FlowId {
        let id = FlowId(self.flows.len() as u64 + 1);
        let mut f = b.flow;
        f.id = id;
        let started = BASE + self.clock_ms * 1000;
        let finished = started + b.dur_ms * 1000;
        f.timings = Timings {
            started,
            connected: Some(started),
            request_done: Some(started),
            response_head: f.response.as_ref().map(|_| started + 1000),
            finished: Some(finished),
        };
        if let Some(r) = &mut f.response {
            if r.status == 0 {
                r.status = 200;
            }
            if !b.sse.is_empty() {
                let n = b.sse.len() as i64;
                r.sse = b
                    .sse
                    .iter()
                    .enumerate()
                    .map(|(i, v)| SseEvent {
                        at: started + (i as i64 + 1) * (finished - started) / (n + 1),
                        event: Some("message".into()),
                        id: None,
                        data: v.to_string(),
                        retry: None,
                    })
                    .collect();
                let text: String = r
                    .sse
                    .iter()
                    .map(|e| format!("event: message\ndata: {}\n\n", e.data))
                    .collect();
                r.body = CapturedBody {
                    state: BodyState::Complete,
                    ..CapturedBody::complete(text)
                };
            }
        }
        self.flows.push(f);
        self.clock_ms += (b.dur_ms + 5).min(1000);
        id
    }
    /// Adds a flow that starts now and ends `ms` later without moving the clock past it (a
    /// long SSE stream).
    pub fn add_long(&mut self, b: FlowBuilder, ms: i64) -> FlowId {
        let before = self.clock_ms;
        let id = self.add(b.dur(ms));
        self.clock_ms = before + 5;
        id
    }
}

/// The usual pieces of a session, each a builder the test may tweak before adding.
pub mod steps {
    use super::*;

    pub fn init_401() -> FlowBuilder {
        FlowBuilder::post(RS_MCP)
            .rpc_params("initialize", 0, json!({"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}))
            .challenge(&format!(r#"Bearer resource_metadata="{PRM_URL}", scope="mcp""#))
            .resp_json(json!({"error":"invalid_token","error_description":"Authentication required"}))
    }
    pub fn prm(resource: &str, as_: &str) -> FlowBuilder {
        FlowBuilder::get(PRM_URL).status(200).resp_json(
            json!({"resource":resource,"authorization_servers":[as_],"scopes_supported":["mcp"]}),
        )
    }
    pub fn as_doc(issuer: &str) -> Value {
        let i = issuer.trim_end_matches('/');
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "registration_endpoint": format!("{i}/register"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code","refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post","client_secret_basic","none"]
        })
    }
    pub fn as_meta(issuer: &str) -> FlowBuilder {
        let i = issuer.trim_end_matches('/');
        FlowBuilder::get(&format!("{i}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(as_doc(issuer))
    }
    pub fn register(as_: &str) -> FlowBuilder {
        let i = as_.trim_end_matches('/');
        FlowBuilder::post(&format!("{i}/register"))
            .json(json!({"redirect_uris":[REDIRECT],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"t"}))
            .status(201)
            .resp_json(json!({"client_id":"client-1","client_secret":"secret-1","redirect_uris":[REDIRECT],"token_endpoint_auth_method":"client_secret_post"}))
    }
    pub fn authorize(as_: &str, code: &str) -> FlowBuilder {
        authorize_with(as_, code, REDIRECT, &s256(VERIFIER), RS_MCP)
    }
    pub fn authorize_with(
        as_: &str,
        code: &str,
        redirect: &str,
        challenge: &str,
        resource: &str,
    ) -> FlowBuilder {
        let i = as_.trim_end_matches('/');
        FlowBuilder::get(&format!(
            "{i}/authorize?response_type=code&client_id=client-1&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state=st8&scope=mcp&resource={}",
            enc(redirect),
            enc(resource)
        ))
        .ua("Mozilla/5.0")
        .status(302)
        .resp_header("location", &format!("{redirect}?code={code}&state=st8"))
    }
    pub fn token_code(as_: &str, code: &str) -> FlowBuilder {
        let i = as_.trim_end_matches('/');
        FlowBuilder::post(&format!("{i}/token")).form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("code_verifier", VERIFIER),
            ("resource", RS_MCP),
        ])
    }
    pub fn token_refresh(as_: &str, rt: &str) -> FlowBuilder {
        let i = as_.trim_end_matches('/');
        FlowBuilder::post(&format!("{i}/token")).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("resource", RS_MCP),
        ])
    }
    /// 200 with a Bearer token.
    pub fn issued(b: FlowBuilder, access: &str, refresh: Option<&str>) -> FlowBuilder {
        let mut v =
            json!({"access_token":access,"token_type":"Bearer","expires_in":3600,"scope":"mcp"});
        if let Some(r) = refresh {
            v["refresh_token"] = json!(r);
        }
        b.status(200)
            .resp_header("cache-control", "no-store")
            .resp_json(v)
    }
    pub fn init_ok(tok: &str, session: Option<&str>) -> FlowBuilder {
        let b = FlowBuilder::post(RS_MCP)
            .bearer(tok)
            .rpc_params("initialize", 1, json!({"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}))
            .status(200)
            .result(1, json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}));
        match session {
            Some(s) => b.resp_header("mcp-session-id", s),
            None => b,
        }
    }
    /// A legacy-mode request: bearer, session, protocol version.
    pub fn call(tok: &str, session: &str, method: &str, id: i64) -> FlowBuilder {
        FlowBuilder::post(RS_MCP)
            .bearer(tok)
            .session(session)
            .pv("2025-06-18")
            .rpc(method, id)
            .status(200)
            .result(id, json!({}))
    }
    pub fn tools_list_ok(tok: &str, session: &str, id: i64) -> FlowBuilder {
        FlowBuilder::post(RS_MCP)
            .bearer(tok)
            .session(session)
            .pv("2025-06-18")
            .rpc("tools/list", id)
            .status(200)
            .sse(vec![json!({"jsonrpc":"2.0","id":id,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}}]}})])
    }
}

/// The one finding with `id`, asserted to exist.
pub fn the<'a>(r: &'a Report, id: &'a str) -> &'a mcptap_analyze::Finding {
    let all: Vec<_> = r.findings_with_id(id).collect();
    assert_eq!(
        all.len(),
        1,
        "expected exactly one {id}, got {:#?}\nall: {:#?}",
        all,
        r.findings
    );
    all[0]
}

/// Asserts the finding's culprit, evidence and sub-case.
pub fn check(r: &Report, id: &str, culprit: Culprit, evidence: &[u64], subcase: Option<&str>) {
    let all: Vec<_> = r
        .findings_with_id(id)
        .filter(|f| f.subcase == subcase)
        .collect();
    assert_eq!(
        all.len(),
        1,
        "expected one {id} ({subcase:?}), got {:#?}",
        r.findings
    );
    let f = all[0];
    assert_eq!(f.culprit, culprit, "{id} culprit: {f:#?}");
    let ev: Vec<u64> = f.evidence.iter().map(|i| i.0).collect();
    assert_eq!(ev, evidence, "{id} evidence: {f:#?}");
    assert_eq!(f.subcase, subcase, "{id} subcase: {f:#?}");
    assert!(!f.summary.is_empty() && !f.hint.is_empty());
}

/// Asserts no finding that counts has `id` (a suspicion that later flows cleared may be
/// there: it shows the rule was reached).
pub fn absent(r: &Report, id: &str) {
    let got: Vec<_> = r.findings_with_id(id).filter(|f| f.counts()).collect();
    assert!(got.is_empty(), "unexpected {id}: {got:#?}");
}

/// Asserts the one finding with `id` is a suspicion that later flows cleared, and returns it.
pub fn cleared<'a>(r: &'a Report, id: &'a str) -> &'a mcptap_analyze::Finding {
    let f = the(r, id);
    assert_eq!(f.status, mcptap_analyze::Status::Cleared, "{f:#?}");
    assert_eq!(f.severity, mcptap_analyze::Severity::Info, "{f:#?}");
    assert!(
        f.amendments.iter().any(|a| a.starts_with("cleared: ")),
        "{f:#?}"
    );
    f
}
