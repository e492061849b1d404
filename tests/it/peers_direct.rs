//! The Python SDK peers against each other with no proxy in between: proves the peers work
//! (and pins down how the SDK client behaves) before mcptap is put in the middle.
//!
//! Every test starts its own `oauth_server.py` (TLS, 127.0.0.1, kernel-chosen port) and runs
//! `oauth_client.py` once against it, trusting only the test PKI's CA.

use crate::common::peers::{
    run_client, ClientMode, ClientOpts, ClientOutcome, McpServer, ServerOpts, ServerRequest,
};
use crate::common::pki::TestPki;

const PRM_PATH: &str = "/.well-known/oauth-protected-resource/mcp";
const ASM_PATH: &str = "/.well-known/oauth-authorization-server";

fn client_opts(pki: &TestPki, mode: ClientMode) -> ClientOpts {
    ClientOpts {
        mode,
        ..ClientOpts::new(pki.ca_path())
    }
}

fn context(server: &McpServer, outcome: &ClientOutcome) -> String {
    format!(
        "{}\n--- server requests\n{}\n--- server output\n{}",
        outcome.dump(),
        server.requests_summary(),
        server.output()
    )
}

/// Index of the first logged request matching `pred`, or a panic naming `what`.
fn position(
    log: &[ServerRequest],
    what: &str,
    ctx: &str,
    pred: impl Fn(&ServerRequest) -> bool,
) -> usize {
    log.iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no {what} in the server log\n{ctx}"))
}

/// The OAuth dance as the server saw it, in order: unauthenticated MCP request → 401 with a
/// challenge naming the PRM, PRM, AS metadata, registration, authorization, code exchange.
/// Returns the index of the successful `/token` response.
fn assert_dance(log: &[ServerRequest], ctx: &str) -> usize {
    let first = &log[0];
    assert!(
        first.is_mcp() && first.method == "POST" && first.status == 401 && !first.has_authorization,
        "the first request should be an unauthenticated POST /mcp answered 401\n{ctx}"
    );
    let prm = position(log, "PRM fetch", ctx, |r| {
        r.method == "GET" && r.path == PRM_PATH && r.status == 200
    });
    let asm = position(log, "AS metadata fetch", ctx, |r| {
        r.method == "GET" && r.path == ASM_PATH && r.status == 200
    });
    let register = position(log, "registration", ctx, |r| {
        r.method == "POST" && r.path == "/register" && r.status == 201
    });
    let authorize = position(log, "authorization", ctx, |r| {
        r.method == "GET" && r.path == "/authorize" && r.status == 302
    });
    let token = position(log, "code exchange", ctx, |r| {
        r.method == "POST"
            && r.path == "/token"
            && r.status == 200
            && r.grant_type.as_deref() == Some("authorization_code")
    });
    assert!(
        0 < prm && prm < asm && asm < register && register < authorize && authorize < token,
        "dance out of order (prm {prm}, asm {asm}, register {register}, authorize {authorize}, token {token})\n{ctx}"
    );
    // The authorize request carried the PKCE challenge and the resource indicator.
    for key in [
        "code_challenge",
        "code_challenge_method",
        "resource",
        "state",
        "scope",
    ] {
        assert!(
            log[authorize].query_keys.iter().any(|k| k == key),
            "/authorize lacked {key}\n{ctx}"
        );
    }
    // SDK quirk worth knowing in the proxy: the auth flow's own requests (metadata, DCR,
    // token) are built outside the HTTP client and carry no User-Agent at all.
    for r in [&log[prm], &log[asm], &log[register], &log[token]] {
        assert_eq!(
            r.user_agent, None,
            "expected no User-Agent on {}\n{ctx}",
            r.path
        );
    }
    token
}

/// After the token: every MCP request carried `Authorization: Bearer` and succeeded.
fn assert_authorized_after(log: &[ServerRequest], token: usize, ctx: &str) -> Vec<ServerRequest> {
    let mcp: Vec<ServerRequest> = log[token + 1..]
        .iter()
        .filter(|r| r.is_mcp())
        .cloned()
        .collect();
    assert!(!mcp.is_empty(), "no MCP request after /token\n{ctx}");
    for r in &mcp {
        assert!(
            r.has_authorization && r.authorization_scheme.as_deref() == Some("Bearer"),
            "MCP request after /token without a bearer token: {}\n{ctx}",
            r.summary()
        );
        assert!(
            (200..300).contains(&r.status),
            "MCP request failed: {}\n{ctx}",
            r.summary()
        );
    }
    mcp
}

fn assert_tools_ok(outcome: &ClientOutcome, ctx: &str) {
    assert!(outcome.ok, "client failed\n{ctx}");
    let tools: Vec<&str> = outcome.json["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(tools, ["add", "echo"], "{ctx}");
    let echo = outcome.json["echo"].as_str().expect("echo");
    assert!(echo.starts_with("mcptap-") && echo.len() > 20, "{ctx}");
}

#[test]
fn stateless_client_completes_oauth_and_tools_directly() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let outcome = run_client(&server.url(), client_opts(&pki, ClientMode::Stateless));
    let ctx = context(&server, &outcome);
    assert_tools_ok(&outcome, &ctx);
    assert_eq!(outcome.json["protocol_version"], "2026-07-28", "{ctx}");

    let log = server.requests();
    let token = assert_dance(&log, &ctx);
    let mcp = assert_authorized_after(&log, token, &ctx);
    let methods: Vec<&str> = mcp.iter().filter_map(ServerRequest::rpc).collect();
    assert_eq!(
        methods,
        ["server/discover", "tools/list", "tools/call"],
        "{ctx}"
    );
    // Stateless: no session, no GET stream, no DELETE; every POST names the protocol version.
    for r in &mcp {
        assert!(
            r.method == "POST" && !r.session_id,
            "{}\n{ctx}",
            r.summary()
        );
        assert_eq!(r.protocol_version.as_deref(), Some("2026-07-28"), "{ctx}");
    }
    // The client's own view agrees: one token, then only authorized requests.
    let sent = outcome.requests();
    assert!(sent.iter().all(|r| !r.auth_dropped), "{ctx}");
    assert_eq!(
        sent.iter()
            .filter(|r| r.url.ends_with("/token") && r.status == Some(200))
            .count(),
        1,
        "{ctx}"
    );
}

#[test]
fn legacy_client_completes_oauth_and_tools_directly() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let outcome = run_client(&server.url(), client_opts(&pki, ClientMode::Legacy));
    let ctx = context(&server, &outcome);
    assert_tools_ok(&outcome, &ctx);
    assert_eq!(outcome.json["protocol_version"], "2025-11-25", "{ctx}");

    let log = server.requests();
    let token = assert_dance(&log, &ctx);
    let mcp = assert_authorized_after(&log, token, &ctx);

    // initialize (no session yet) → session id on everything after it.
    let init = &mcp[0];
    assert_eq!(init.rpc(), Some("initialize"), "{ctx}");
    assert!(!init.session_id, "{ctx}");
    assert!(mcp[1..].iter().all(|r| r.session_id), "{ctx}");
    let has = |method: &str, rpc: Option<&str>, status: u16| {
        mcp.iter()
            .any(|r| r.method == method && r.rpc() == rpc && r.status == status)
    };
    assert!(has("POST", Some("notifications/initialized"), 202), "{ctx}");
    assert!(has("POST", Some("tools/list"), 200), "{ctx}");
    assert!(has("POST", Some("tools/call"), 200), "{ctx}");
    // The standalone GET SSE stream, and the closing DELETE.
    assert!(
        mcp.iter().any(|r| r.method == "GET"
            && r.status == 200
            && r.content_type.as_deref() == Some("text/event-stream")),
        "no GET SSE stream\n{ctx}"
    );
    assert_eq!(
        mcp.last().map(|r| r.method.as_str()),
        Some("DELETE"),
        "{ctx}"
    );
    // After initialize the negotiated version rides on every request.
    assert!(
        mcp[1..]
            .iter()
            .all(|r| r.protocol_version.as_deref() == Some("2025-11-25")),
        "{ctx}"
    );
}

#[test]
fn dropping_the_token_after_issuance_fails_with_401s() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let opts = ClientOpts {
        drop_auth_after_token: true,
        ..client_opts(&pki, ClientMode::Stateless)
    };
    let outcome = run_client(&server.url(), opts);
    let ctx = context(&server, &outcome);
    assert!(!outcome.ok, "client should fail\n{ctx}");
    assert_eq!(outcome.json["ok"], false, "{ctx}");
    assert_eq!(outcome.json["token_obtained"], true, "{ctx}");
    assert!(outcome.error().is_some(), "{ctx}");

    let log = server.requests();
    let token = assert_dance(&log, &ctx);
    // Every MCP request after the first token: no Authorization, answered 401 with a challenge.
    let after: Vec<&ServerRequest> = log[token + 1..].iter().filter(|r| r.is_mcp()).collect();
    assert!(!after.is_empty(), "{ctx}");
    for r in &after {
        assert!(
            !r.has_authorization && r.status == 401,
            "{}\n{ctx}",
            r.summary()
        );
        assert!(
            r.www_authenticate
                .as_deref()
                .is_some_and(|w| w.contains("resource_metadata=")),
            "{ctx}"
        );
    }
    // The client did attach the token; the hook took it off.
    assert!(
        outcome
            .requests()
            .iter()
            .any(|r| r.auth_dropped && r.status == Some(401)),
        "{ctx}"
    );
    // SDK behaviour: a 401 on the server/discover probe surfaces as a generic JSON-RPC error,
    // which `mode="auto"` reads as "legacy server" and falls back to initialize, which runs the
    // OAuth flow again (same registration, a second code exchange) and fails the same way.
    assert_eq!(after[0].rpc(), Some("server/discover"), "{ctx}");
    assert!(after.iter().any(|r| r.rpc() == Some("initialize")), "{ctx}");
    assert_eq!(
        log.iter()
            .filter(|r| r.path == "/register" && r.status == 201)
            .count(),
        1,
        "{ctx}"
    );
    assert_eq!(
        log.iter()
            .filter(|r| r.path == "/token" && r.status == 200)
            .count(),
        2,
        "{ctx}"
    );
}

#[test]
fn server_rejecting_its_own_tokens_fails_the_client() {
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            reject_own_tokens: true,
            ..ServerOpts::default()
        },
    );
    let outcome = run_client(&server.url(), client_opts(&pki, ClientMode::Legacy));
    let ctx = context(&server, &outcome);
    assert!(!outcome.ok, "client should fail\n{ctx}");
    assert_eq!(outcome.json["token_obtained"], true, "{ctx}");

    let log = server.requests();
    let token = assert_dance(&log, &ctx);
    // The fresh token was presented and refused with invalid_token.
    let rejected = log[token + 1..]
        .iter()
        .find(|r| r.is_mcp())
        .unwrap_or_else(|| panic!("no MCP request after /token\n{ctx}"));
    assert!(
        rejected.has_authorization && rejected.status == 401,
        "{ctx}"
    );
    let challenge = rejected.www_authenticate.as_deref().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(r#"error="invalid_token""#)
            && challenge.contains("--reject-own-tokens"),
        "{ctx}"
    );
    // No MCP request ever succeeded.
    assert!(
        log.iter().filter(|r| r.is_mcp()).all(|r| r.status == 401),
        "{ctx}"
    );
}

#[test]
fn without_www_authenticate_the_sdk_falls_back_to_well_known_prm() {
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            no_www_authenticate: true,
            ..ServerOpts::default()
        },
    );
    let outcome = run_client(&server.url(), client_opts(&pki, ClientMode::Stateless));
    let ctx = context(&server, &outcome);
    // What really happens: the SDK client is not bothered. With no challenge it tries the
    // path-inserted well-known URL (RFC 9728 / SEP-985 order), takes the scope from the PRM's
    // scopes_supported, and completes the dance.
    assert_tools_ok(&outcome, &ctx);
    let log = server.requests();
    assert!(
        log.iter()
            .filter(|r| r.status == 401)
            .all(|r| r.www_authenticate.is_none()),
        "a 401 carried WWW-Authenticate\n{ctx}"
    );
    let token = assert_dance(&log, &ctx);
    assert_authorized_after(&log, token, &ctx);
    // It never needed the root PRM URL.
    assert!(
        !log.iter()
            .any(|r| r.path == "/.well-known/oauth-protected-resource"),
        "{ctx}"
    );
}

#[test]
fn foreign_prm_resource_stops_the_client_before_registration() {
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            prm_resource: Some("https://elsewhere.example/mcp".into()),
            ..ServerOpts::default()
        },
    );
    let outcome = run_client(&server.url(), client_opts(&pki, ClientMode::Stateless));
    let ctx = context(&server, &outcome);
    assert!(!outcome.ok, "{ctx}");
    let error = outcome.error().unwrap_or_default();
    assert!(
        error.contains("https://elsewhere.example/mcp") && error.contains("does not match"),
        "{ctx}"
    );
    let log = server.requests();
    assert!(
        log.iter().any(|r| r.path == PRM_PATH && r.status == 200),
        "{ctx}"
    );
    assert!(
        !log.iter()
            .any(|r| r.path == "/register" || r.path == "/token" || r.path == ASM_PATH),
        "the client went on after the PRM mismatch\n{ctx}"
    );
}

/// A bare CONNECT tunnel (not mcptap): records each CONNECT target and splices bytes.
/// Proves the `proxy` option reaches every HTTP client in `oauth_client.py`.
struct ConnectTunnel {
    port: u16,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ConnectTunnel {
    fn start() -> ConnectTunnel {
        use std::io::{BufRead, BufReader, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopping) = (targets.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    client.set_nonblocking(false).unwrap();
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    seen.lock().unwrap().push(line.trim_end().to_owned());
                    let Ok(upstream) = TcpStream::connect(&target) else {
                        return;
                    };
                    let mut client = client;
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    // Bytes the reader buffered past the header belong to the tunnel.
                    let buffered = reader.buffer().to_vec();
                    let mut up_w = upstream.try_clone().unwrap();
                    up_w.write_all(&buffered).unwrap();
                    let mut up_r = upstream;
                    let mut down_w = client.try_clone().unwrap();
                    let mut down_r = reader.into_inner();
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut down_r, &mut up_w);
                        let _ = up_w.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut up_r, &mut down_w);
                    let _ = down_w.shutdown(std::net::Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
        ConnectTunnel {
            port,
            targets,
            stop,
        }
    }
}

impl Drop for ConnectTunnel {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn client_sends_everything_through_https_proxy_even_for_localhost() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let tunnel = ConnectTunnel::start();
    let opts = ClientOpts {
        proxy: Some(format!("http://127.0.0.1:{}", tunnel.port)),
        ..client_opts(&pki, ClientMode::Legacy)
    };
    let outcome = run_client(&server.url(), opts);
    let ctx = context(&server, &outcome);
    assert_tools_ok(&outcome, &ctx);
    let targets = tunnel.targets.lock().unwrap().clone();
    // Every connection the client opened (MCP client, OAuth requests, the headless browser's
    // GET /authorize, the GET SSE stream) went through the tunnel: none bypassed it for
    // localhost. httpx pools connections, so there are fewer CONNECTs than requests.
    let expected = format!("CONNECT localhost:{} HTTP/1.1", server.port);
    assert!(
        targets.len() >= 2 && targets.iter().all(|t| *t == expected),
        "CONNECTs: {targets:?}\n{ctx}"
    );
    let log = server.requests();
    let token = assert_dance(&log, &ctx);
    assert_authorized_after(&log, token, &ctx);
}
