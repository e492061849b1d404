//! Sample flows (an OAuth-protected MCP session, with every kind of flow the engine reports)
//! and the events the engine would emit for them.

#![allow(dead_code)]

#[path = "../../../../../tests/it/common/python.rs"]
pub mod python;
pub mod venv;

use base64::Engine as _;
use mcptap_flow::redact::SecretNote;
use mcptap_flow::{
    BodyState, CapturedBody, Direction, ErrorKind, Flow, FlowError, FlowEvent, FlowId, FlowKind,
    FlowState, Headers, HttpVersion, Injection, Request, Response, SseEvent, Timings, TlsInfo,
    TunnelStats,
};
use std::io::Write;
use std::path::PathBuf;

pub const T0: i64 = 1_767_225_600_123_456; // 2026-01-01T00:00:00.123456Z

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

pub fn jwt(claims: &str) -> String {
    let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.{}",
        enc(r#"{"alg":"RS256","kid":"key-1","typ":"at+jwt"}"#),
        enc(claims),
        enc("not-a-real-signature")
    )
}

pub fn access_token() -> String {
    jwt(
        r#"{"iss":"https://as.example","aud":"https://mcp.example/mcp","exp":1767229200,"iat":1767225600,"scope":"mcp:tools","client_id":"client-1","sub":"user-1"}"#,
    )
}

/// Every raw secret in [`session`], to look for in files that must not hold them.
pub fn raw_secrets() -> Vec<String> {
    vec![
        access_token(),
        "refresh-secret-7f3a".into(),
        "authcode-93b1".into(),
        "verifier-00aa-bb11".into(),
        "client-secret-zz".into(),
        "session-id-4242".into(),
        "cookie-value-9".into(),
        "stale-token-1".into(),
    ]
}

fn headers(h: &[(&str, &str)]) -> Headers {
    h.iter().map(|(n, v)| (*n, *v)).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tls(sni: &str, alpn: &str) -> std::sync::Arc<TlsInfo> {
    std::sync::Arc::new(TlsInfo {
        sni: Some(sni.into()),
        alpn: Some(alpn.into()),
        version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
        unverified: false,
    })
}

fn timings(start_ms: i64, dur_us: [i64; 4]) -> Timings {
    let s = T0 + start_ms * 1000;
    Timings {
        started: s,
        connected: Some(s + dur_us[0]),
        request_done: Some(s + dur_us[0] + dur_us[1]),
        response_head: Some(s + dur_us[0] + dur_us[1] + dur_us[2]),
        finished: Some(s + dur_us[0] + dur_us[1] + dur_us[2] + dur_us[3]),
    }
}

fn http(id: u64, method: &str, url: &str, req_h: &[(&str, &str)], req_body: &[u8]) -> Flow {
    let (host, port) = if url.contains("as.example") {
        ("as.example", 443)
    } else {
        ("mcp.example", 443)
    };
    Flow {
        id: FlowId(id),
        kind: FlowKind::Http,
        state: FlowState::Completed,
        client_addr: Some("127.0.0.1:50000".into()),
        host: host.into(),
        port,
        client_tls: Some(tls(host, "http/1.1")),
        upstream_tls: Some(tls(host, "http/1.1")),
        request: Request {
            method: method.into(),
            url: url.into(),
            version: HttpVersion::Http11,
            headers: headers(req_h),
            body: CapturedBody::complete(req_body.to_vec()),
        },
        response: None,
        timings: timings(id as i64 * 100, [800, 150, 20_000, 1_500]),
        error: None,
        tunnel: None,
        injected: None,
        not_injected: None,
        by_mcptap: None,
        secrets: Vec::<SecretNote>::new(),
        raw_secrets: false,
    }
}

fn response(status: u16, h: &[(&str, &str)], body: &[u8]) -> Option<Response> {
    Some(Response {
        status,
        version: HttpVersion::Http11,
        headers: headers(h),
        body: CapturedBody::complete(body.to_vec()),
        sse: Vec::new(),
        synthetic: false,
        ..Response::default()
    })
}

/// An OAuth-protected MCP session as the engine reports it (raw: not prepared).
pub fn session() -> Vec<Flow> {
    let at = access_token();
    let mut flows = Vec::new();

    // 1. MCP call with a stale token: 401 + WWW-Authenticate.
    let mut f = http(
        1,
        "POST",
        "https://mcp.example/mcp",
        &[
            ("host", "mcp.example"),
            ("authorization", "Bearer stale-token-1"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#,
    );
    f.response = response(
        401,
        &[
            ("content-type", "application/json"),
            (
                "www-authenticate",
                r#"Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp""#,
            ),
        ],
        br#"{"error":"invalid_token"}"#,
    );
    flows.push(f);

    // 2. Protected resource metadata.
    let mut f = http(
        2,
        "GET",
        "https://mcp.example/.well-known/oauth-protected-resource/mcp",
        &[("host", "mcp.example"), ("accept", "application/json")],
        b"",
    );
    f.response = response(
        200,
        &[("content-type", "application/json")],
        br#"{"resource":"https://mcp.example/mcp","authorization_servers":["https://as.example"]}"#,
    );
    flows.push(f);

    // 3. Authorization redirect carrying the code (Location query).
    let mut f = http(
        3,
        "GET",
        "https://as.example/authorize?response_type=code&client_id=client-1&code_challenge=abc&code_challenge_method=S256&state=st-1",
        &[("host", "as.example"), ("cookie", "as_session=cookie-value-9; theme=dark")],
        b"",
    );
    f.response = response(
        302,
        &[(
            "location",
            "http://127.0.0.1:33418/callback?code=authcode-93b1&state=st-1",
        )],
        b"",
    );
    flows.push(f);

    // 4. Token request (form) and a gzip'd JSON response with a JWT access token.
    let mut f = http(
        4,
        "POST",
        "https://as.example/token",
        &[
            ("host", "as.example"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", "Basic Y2xpZW50LTE6Y2xpZW50LXNlY3JldC16eg=="),
        ],
        b"grant_type=authorization_code&code=authcode-93b1&code_verifier=verifier-00aa-bb11&client_secret=client-secret-zz&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Fcallback",
    );
    let token_body = format!(
        r#"{{"access_token":"{at}","token_type":"Bearer","expires_in":3600,"refresh_token":"refresh-secret-7f3a","scope":"mcp:tools"}}"#
    );
    let gz = gzip(token_body.as_bytes());
    f.response = response(
        200,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "as_session=cookie-value-9; Path=/; Secure; HttpOnly; SameSite=Lax",
            ),
            ("cache-control", "no-store"),
        ],
        &gz,
    );
    flows.push(f);

    // 5. The MCP call that works: HTTP/2 both sides, an SSE response with three events.
    let mut f = http(
        5,
        "POST",
        "https://mcp.example/mcp",
        &[
            ("authorization", &format!("Bearer {at}")),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", "session-id-4242"),
        ],
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    f.request.version = HttpVersion::Http2;
    f.client_tls = Some(tls("mcp.example", "h2"));
    f.upstream_tls = Some(tls("mcp.example", "h2"));
    let head = f.timings.response_head.unwrap();
    let events = vec![
        SseEvent {
            at: head + 10,
            event: Some("message".into()),
            id: Some("1".into()),
            data: r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#
                .into(),
            retry: None,
        },
        SseEvent {
            at: head + 900,
            event: Some("message".into()),
            id: Some("2".into()),
            data: r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"}]}}"#.into(),
            retry: Some(3000),
        },
        SseEvent {
            at: head + 1400,
            event: None,
            // The last event id persists (WHATWG), as the engine's parser reports it.
            id: Some("2".into()),
            data: "multi\nline".into(),
            retry: None,
        },
    ];
    let mut text = String::new();
    for e in &events {
        if let Some(ev) = &e.event {
            text.push_str(&format!("event: {ev}\n"));
        }
        if let Some(id) = &e.id {
            text.push_str(&format!("id: {id}\n"));
        }
        if let Some(r) = e.retry {
            text.push_str(&format!("retry: {r}\n"));
        }
        for l in e.data.split('\n') {
            text.push_str(&format!("data: {l}\n"));
        }
        text.push('\n');
    }
    let mut r = response(
        200,
        &[
            ("content-type", "text/event-stream"),
            ("mcp-session-id", "session-id-4242"),
        ],
        text.as_bytes(),
    )
    .unwrap();
    r.version = HttpVersion::Http2;
    r.sse = events;
    f.response = Some(r);
    f.timings.finished = Some(head + 2000);
    flows.push(f);

    // 6. Binary bodies both ways.
    let mut f = http(
        6,
        "PUT",
        "https://mcp.example/upload?name=a%20b&empty=",
        &[("content-type", "application/octet-stream")],
        &[0xff, 0x00, 0x80, 0x7f, 0xfe],
    );
    let png: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    f.response = response(200, &[("content-type", "image/png")], &png);
    flows.push(f);

    // 7. Failed: the upstream refused the connection; no response.
    let mut f = http(7, "GET", "https://mcp.example/down", &[], b"");
    f.state = FlowState::Failed;
    f.upstream_tls = None;
    f.timings.connected = None;
    f.timings.request_done = None;
    f.timings.response_head = None;
    f.error = Some(FlowError {
        kind: ErrorKind::UpstreamConnect,
        message: "connecting to mcp.example:443: connection refused".into(),
        hint: Some("is the server running?".into()),
        limit: None,
    });
    flows.push(f);

    // 8. Failed with a synthetic 502 made by the proxy.
    let mut f = http(8, "GET", "https://mcp.example/bad-tls", &[], b"");
    f.state = FlowState::Failed;
    f.upstream_tls = None;
    f.response = response(
        502,
        &[("content-type", "text/plain")],
        b"mcptap: upstream TLS failed",
    );
    f.response.as_mut().unwrap().synthetic = true;
    f.error = Some(FlowError {
        kind: ErrorKind::UpstreamTls,
        message: "invalid peer certificate: UnknownIssuer".into(),
        hint: None,
        limit: None,
    });
    flows.push(f);

    // 9. A tunnel passed through without decryption.
    let mut f = http(
        9,
        "CONNECT",
        "ignored.example:443",
        &[("host", "ignored.example:443")],
        b"",
    );
    f.kind = FlowKind::Tunnel;
    f.host = "ignored.example".into();
    f.client_tls = None;
    f.upstream_tls = None;
    f.response = response(200, &[], b"");
    f.tunnel = Some(TunnelStats {
        bytes_up: 5120,
        bytes_down: 88_000,
    });
    flows.push(f);

    // 10. Aborted: the response body was cut after the head, past the capture limit.
    let mut f = http(10, "GET", "https://mcp.example/big", &[], b"");
    f.state = FlowState::Aborted;
    f.response = response(200, &[("content-type", "text/plain")], &[b'x'; 64]);
    let body = &mut f.response.as_mut().unwrap().body;
    body.total_len = 1_000_000;
    body.truncated = true;
    body.state = BodyState::Cancelled;
    f.error = Some(FlowError {
        kind: ErrorKind::ClientDisconnected,
        message: "the response body was cut after 1000000 bytes (the client went away)".into(),
        hint: None,
        limit: None,
    });
    flows.push(f);

    // 11. Inject mode: mcptap added the token; reverse-proxied over plain HTTP to an IP literal.
    let mut f = http(
        11,
        "POST",
        "http://127.0.0.1:8931/mcp",
        &[
            ("authorization", &format!("Bearer {at}")),
            ("content-type", "application/json"),
        ],
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"code":"print(1)"}}}"#,
    );
    f.host = "127.0.0.1".into();
    f.port = 8931;
    f.client_tls = None;
    f.upstream_tls = None;
    f.request.version = HttpVersion::Http10;
    f.injected = Some(Injection {
        fingerprint: mcptap_flow::redact::fingerprint(&at),
        token_flow: Some(FlowId(4)),
    });
    f.response = response(
        200,
        &[("content-type", "application/json")],
        br#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"1"}]}}"#,
    );
    flows.push(f);
    flows
}

/// What the engine emits for `flow`: start (head only), response head, body progress, each
/// SSE event, end.
pub fn events(flow: &Flow) -> Vec<FlowEvent> {
    let mut out = vec![FlowEvent::RequestStarted {
        flow: Box::new(flow.head()),
    }];
    if let Some(r) = &flow.response {
        out.push(FlowEvent::ResponseHead {
            id: flow.id,
            at: flow.timings.response_head.unwrap_or(flow.timings.started),
            status: r.status,
            version: r.version,
            headers: r.headers.clone(),
        });
        out.push(FlowEvent::Body {
            id: flow.id,
            direction: Direction::Response,
            total: r.body.total_len,
        });
        for e in &r.sse {
            out.push(FlowEvent::Sse {
                id: flow.id,
                event: e.clone(),
            });
        }
    }
    let done = Box::new(flow.clone());
    out.push(if flow.state == FlowState::Failed {
        FlowEvent::Failed { flow: done }
    } else {
        FlowEvent::Completed { flow: done }
    });
    out
}

/// The events of `flows` interleaved the way a busy proxy reports them: every flow starts,
/// then they finish in reverse order (so the journal is not in start order).
pub fn interleaved(flows: &[Flow]) -> Vec<FlowEvent> {
    let per: Vec<Vec<FlowEvent>> = flows.iter().map(events).collect();
    let mut out = Vec::new();
    for evs in &per {
        out.push(evs[0].clone());
    }
    for evs in per.iter().rev() {
        out.extend(evs[1..].iter().cloned());
    }
    out
}

/// A scratch directory, removed afterwards unless `MCPTAP_STORE_KEEP_TEMP` is set (to look at
/// the files a test wrote).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mcptap-store-test-")
        .disable_cleanup(std::env::var_os("MCPTAP_STORE_KEEP_TEMP").is_some())
        .tempdir()
        .unwrap()
}
