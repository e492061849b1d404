//! End to end with real third-party peers: the Python `mcp` SDK's OAuth client goes through
//! mcptap (HTTPS_PROXY + mcptap's CA) to the SDK's OAuth-protected server over TLS, and the whole
//! dance is observed.

use crate::common::peers::{
    run_client_async, write_ca_bundle, ClientMode, ClientOpts, McpServer, ServerOpts,
};
use crate::common::pki::TestPki;
use crate::common::proxy::TestProxy;
use mcptap_flow::{Flow, FlowEvent, FlowState};
use std::time::Duration;

/// JSON-RPC method of a request body, if it is one.
fn rpc_method(f: &Flow) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&f.request.body.bytes).ok()?;
    v.get("method")?.as_str().map(str::to_owned)
}

fn path(f: &Flow) -> &str {
    let u = &f.request.url;
    let after_scheme = u.find("://").map(|i| i + 3).unwrap_or(0);
    let p = u[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(u.len());
    let end = u.find('?').unwrap_or(u.len());
    &u[p..end.max(p)]
}

async fn finished_flows(proxy: &TestProxy) -> Vec<Flow> {
    // Give the last exchanges (e.g. the closing DELETE) a moment to report.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut flows: Vec<Flow> = proxy
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => Some((**flow).clone()),
            _ => None,
        })
        .collect();
    flows.sort_by_key(|f| (f.timings.started, f.id));
    flows
}

async fn oauth_dance_through_mcptap(mode: ClientMode) {
    let pki = TestPki::new();
    let server = tokio::task::spawn_blocking({
        let (cert, key) = (pki.leaf_path(), pki.key_path());
        move || McpServer::start_with_files(&cert, &key, ServerOpts::default())
    })
    .await
    .unwrap();
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let mcptap_ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
    let bundle = write_ca_bundle(pki.dir.path(), "bundle.pem", &[&mcptap_ca]);
    let mut opts = ClientOpts::new(bundle);
    opts.mode = mode;
    opts.proxy = Some(format!("http://{}", proxy.addr));
    let out = run_client_async(server.url(), opts).await;
    assert!(
        out.ok,
        "client failed through mcptap:\n{}\nserver:\n{}",
        out.dump(),
        server.output()
    );
    assert!(
        out.json["echo"].as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        out.dump()
    );

    let flows = finished_flows(&proxy).await;
    let report = mcptap_analyze::analyze(&flows);
    // What the live analyzer and saved sessions see: decoded and redacted flows.
    let prepared: Vec<Flow> = flows
        .iter()
        .cloned()
        .map(|mut f| {
            mcptap_store::prepare(&mut f, &mcptap_store::Options::default());
            f
        })
        .collect();
    let redacted_report = mcptap_analyze::analyze(&prepared);
    assert!(
        redacted_report.findings.is_empty(),
        "a healthy session, redacted, has no findings:\n{}",
        mcptap_analyze::render_text(&redacted_report)
    );
    assert!(
        report.findings.is_empty(),
        "a healthy session has no findings:\n{}",
        mcptap_analyze::render_text(&report)
    );
    let summary: Vec<String> = flows
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {:?} {:?} bearer={}",
                f.id,
                f.request.method,
                path(f),
                f.status(),
                rpc_method(f),
                f.has_bearer()
            )
        })
        .collect();
    let summary = summary.join("\n");
    let find = |method: &str, p: &str| {
        flows
            .iter()
            .find(|f| f.request.method == method && path(f) == p)
    };

    // Discovery, registration, authorization and the token exchange all went through mcptap.
    for (m, p) in [
        ("GET", "/.well-known/oauth-protected-resource/mcp"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("POST", "/register"),
        ("GET", "/authorize"),
        ("POST", "/token"),
    ] {
        let f = find(m, p).unwrap_or_else(|| panic!("no {m} {p} seen:\n{summary}"));
        assert!(
            f.status().is_some_and(|s| s < 400),
            "{m} {p} failed:\n{summary}"
        );
        assert_eq!(f.state, FlowState::Completed, "{summary}");
    }
    let token = find("POST", "/token").unwrap();
    let token_body: serde_json::Value =
        serde_json::from_slice(&token.response.as_ref().unwrap().body.bytes).unwrap();
    assert!(token_body["access_token"].is_string(), "{token_body}");

    // The first MCP request was challenged, then every MCP request after the token carried it.
    let mcp: Vec<&Flow> = flows.iter().filter(|f| path(f) == "/mcp").collect();
    assert!(
        mcp.iter()
            .any(|f| f.status() == Some(401) && !f.has_bearer()),
        "{summary}"
    );
    let after: Vec<&&Flow> = mcp
        .iter()
        .filter(|f| f.timings.started > token.timings.started)
        .collect();
    assert!(
        after.iter().all(|f| f.has_bearer()),
        "MCP request without bearer after /token:\n{summary}"
    );
    let methods: Vec<String> = after.iter().filter_map(|f| rpc_method(f)).collect();
    let first = if mode == ClientMode::Legacy {
        "initialize"
    } else {
        "server/discover"
    };
    for m in [first, "tools/list", "tools/call"] {
        assert!(
            methods.iter().any(|x| x == m),
            "no {m} after the token:\n{summary}"
        );
    }
    let call = after
        .iter()
        .find(|f| rpc_method(f).as_deref() == Some("tools/call"))
        .unwrap();
    assert_eq!(call.status(), Some(200), "{summary}");
    let call_resp = call.response.as_ref().unwrap();
    let text = String::from_utf8_lossy(&call_resp.body.bytes);
    let echo = out.json["echo"].as_str().unwrap();
    assert!(
        text.contains(echo) || call_resp.sse.iter().any(|e| e.data.contains(echo)),
        "the tools/call result was recorded: {text}"
    );
    if mode == ClientMode::Legacy {
        assert!(
            after
                .iter()
                .any(|f| f.request.method == "GET" && f.request.headers.contains("mcp-session-id")),
            "legacy mode opens a GET SSE stream:\n{summary}"
        );
        assert!(
            after.iter().any(|f| f.request.method == "DELETE"),
            "legacy mode closes with DELETE:\n{summary}"
        );
        assert!(call.request.headers.contains("mcp-session-id"), "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_python_sdk_oauth_dance_through_mcptap_stateless() {
    oauth_dance_through_mcptap(ClientMode::Stateless).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_python_sdk_oauth_dance_through_mcptap_legacy() {
    oauth_dance_through_mcptap(ClientMode::Legacy).await;
}

/// Runs the SDK client through mcptap against a server with `server_opts`; returns the
/// client's outcome, the finished flows and the analysis.
async fn through_mcptap(server_opts: ServerOpts, tweak: impl FnOnce(&mut ClientOpts)) -> Outcome {
    through_mcptap_with(server_opts, tweak, |_| {}).await
}

type Outcome = (
    crate::common::peers::ClientOutcome,
    Vec<Flow>,
    mcptap_analyze::Report,
);

async fn through_mcptap_with(
    server_opts: ServerOpts,
    tweak: impl FnOnce(&mut ClientOpts),
    proxy_tweak: impl FnOnce(&mut mcptap_proxy::ProxyConfig),
) -> Outcome {
    let pki = TestPki::new();
    let server = tokio::task::spawn_blocking({
        let (cert, key) = (pki.leaf_path(), pki.key_path());
        move || McpServer::start_with_files(&cert, &key, server_opts)
    })
    .await
    .unwrap();
    let proxy = TestProxy::start(&pki, proxy_tweak).await;
    let mcptap_ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
    let bundle = write_ca_bundle(pki.dir.path(), "bundle.pem", &[&mcptap_ca]);
    let mut opts = ClientOpts::new(bundle);
    opts.proxy = Some(format!("http://{}", proxy.addr));
    opts.timeout = Duration::from_secs(20);
    tweak(&mut opts);
    let out = run_client_async(server.url(), opts).await;
    let flows = finished_flows(&proxy).await;
    let report = mcptap_analyze::analyze(&flows);
    (out, flows, report)
}

fn ids(report: &mcptap_analyze::Report) -> Vec<&'static str> {
    report.findings.iter().map(|f| f.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_client_that_drops_the_token_is_named_token_not_sent() {
    let (out, flows, report) = through_mcptap(ServerOpts::default(), |o| {
        o.drop_auth_after_token = true;
        o.mode = ClientMode::Legacy;
    })
    .await;
    assert!(!out.ok, "{}", out.dump());
    let text = mcptap_analyze::render_text(&report);
    let f = report
        .findings_with_id("token-not-sent")
        .next()
        .unwrap_or_else(|| panic!("no token-not-sent:\n{text}"));
    assert_eq!(f.culprit.as_str(), "client");
    let token = flows
        .iter()
        .find(|f| path(f) == "/token" && f.status() == Some(200))
        .expect("a token flow");
    let first_bare = flows
        .iter()
        .find(|f| path(f) == "/mcp" && f.timings.started > token.timings.started && !f.has_bearer())
        .expect("a bare MCP request after the token");
    assert!(
        f.evidence.contains(&token.id),
        "evidence names the token flow {}: {text}",
        token.id
    );
    assert!(
        f.evidence.contains(&first_bare.id),
        "evidence names the first bare request {}: {text}",
        first_bare.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_401_without_www_authenticate_is_challenge_missing() {
    let (_out, flows, report) = through_mcptap(
        ServerOpts {
            no_www_authenticate: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let text = mcptap_analyze::render_text(&report);
    let f = report
        .findings_with_id("challenge-missing")
        .next()
        .unwrap_or_else(|| panic!("no challenge-missing:\n{text}"));
    assert_eq!(f.culprit.as_str(), "server");
    let challenge = flows.iter().find(|f| f.status() == Some(401)).unwrap();
    assert!(f.evidence.contains(&challenge.id), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_metadata_naming_another_resource_is_prm_resource_mismatch() {
    let (out, flows, report) = through_mcptap(
        ServerOpts {
            prm_resource: Some("https://elsewhere.example/mcp".into()),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    assert!(!out.ok);
    let text = mcptap_analyze::render_text(&report);
    let f = report
        .findings_with_id("prm-resource-mismatch")
        .next()
        .unwrap_or_else(|| panic!("no prm-resource-mismatch:\n{text}"));
    assert_eq!(f.culprit.as_str(), "server");
    let prm = flows
        .iter()
        .find(|f| path(f).starts_with("/.well-known/oauth-protected-resource"))
        .unwrap();
    assert!(f.evidence.contains(&prm.id), "{text}");
    assert_eq!(
        ids(&report)
            .iter()
            .filter(|i| **i == "token-not-sent")
            .count(),
        0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_host_guard_for_another_name_is_host_origin_rejected() {
    // The SDK's DNS-rebinding guard, configured for a public name the client does not use (as
    // behind a tunnel that rewrites Host): the OAuth dance works, every authorized /mcp request
    // is answered 421.
    let (out, flows, report) = through_mcptap(
        ServerOpts {
            extra_args: vec!["--allowed-hosts".into(), "mcp.public.example:*".into()],
            ..Default::default()
        },
        |_| {},
    )
    .await;
    assert!(!out.ok, "{}", out.dump());
    let text = mcptap_analyze::render_text(&report);
    let f = report
        .findings_with_id("host-origin-rejected")
        .next()
        .unwrap_or_else(|| panic!("no host-origin-rejected:\n{text}"));
    assert_eq!(f.culprit.as_str(), "server");
    assert_eq!(f.subcase, Some("host"));
    let refused = flows
        .iter()
        .find(|f| path(f) == "/mcp" && f.status() == Some(421))
        .unwrap_or_else(|| panic!("no 421 from /mcp:\n{text}"));
    assert!(f.evidence.contains(&refused.id), "{text}");
    // The client held a good token and sent it: nothing else is to blame.
    assert!(refused.has_bearer(), "{text}");
    assert_eq!(ids(&report).len(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_server_that_rejects_its_own_tokens_is_fresh_token_rejected() {
    let (out, _flows, report) = through_mcptap(
        ServerOpts {
            reject_own_tokens: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    assert!(!out.ok);
    let text = mcptap_analyze::render_text(&report);
    let f = report
        .findings_with_id("fresh-token-rejected")
        .next()
        .unwrap_or_else(|| panic!("no fresh-token-rejected:\n{text}"));
    assert_eq!(f.culprit.as_str(), "server");
    assert!(!ids(&report).contains(&"token-not-sent"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_inject_mode_proves_the_client_omits_the_token() {
    let (out, flows, report) = through_mcptap_with(
        ServerOpts::default(),
        |o| o.drop_auth_after_token = true,
        |c| c.inject_token = true,
    )
    .await;
    assert!(
        out.ok,
        "with --inject-token the client's calls succeed: {}",
        out.dump()
    );
    let text = mcptap_analyze::render_text(&report);
    let injected: Vec<&Flow> = flows.iter().filter(|f| f.injected.is_some()).collect();
    assert!(!injected.is_empty(), "{text}");
    let token = flows
        .iter()
        .find(|f| path(f) == "/token" && f.status() == Some(200))
        .unwrap();
    for f in &injected {
        assert_eq!(path(f), "/mcp", "only the MCP endpoint gets a token");
        assert!(
            !f.has_bearer(),
            "the recorded request is what the client sent"
        );
        let inj = f.injected.as_ref().unwrap();
        assert_eq!(inj.token_flow, Some(token.id));
        let issued: serde_json::Value =
            serde_json::from_slice(&token.response.as_ref().unwrap().body.bytes).unwrap();
        assert_eq!(
            inj.fingerprint,
            mcptap_flow::redact::fingerprint(issued["access_token"].as_str().unwrap())
        );
    }
    let v = report
        .findings_with_id("client-omits-token-confirmed")
        .next()
        .unwrap_or_else(|| panic!("no verdict:\n{text}"));
    assert_eq!(v.culprit.as_str(), "client");
    assert!(
        v.evidence.contains(&token.id)
            && v.evidence
                .iter()
                .any(|id| injected.iter().any(|f| f.id == *id)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_inject_mode_proves_the_server_rejects_its_own_token() {
    let (out, flows, report) = through_mcptap_with(
        ServerOpts {
            reject_own_tokens: true,
            ..Default::default()
        },
        |o| o.drop_auth_after_token = true,
        |c| c.inject_token = true,
    )
    .await;
    assert!(!out.ok);
    let text = mcptap_analyze::render_text(&report);
    assert!(
        flows
            .iter()
            .any(|f| f.injected.is_some() && f.status() == Some(401)),
        "{text}"
    );
    let v = report
        .findings_with_id("server-rejects-token")
        .next()
        .unwrap_or_else(|| panic!("no verdict:\n{text}"));
    assert_eq!(v.culprit.as_str(), "server");
    assert!(
        report
            .findings_with_id("client-omits-token-confirmed")
            .next()
            .is_none(),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_without_the_flag_nothing_is_injected() {
    let (out, flows, _report) =
        through_mcptap(ServerOpts::default(), |o| o.drop_auth_after_token = true).await;
    assert!(!out.ok);
    assert!(flows.iter().all(|f| f.injected.is_none()));
}

/// Every secret value in the raw flows: tokens, codes, verifiers, client secrets, session ids.
fn raw_secrets(flows: &[Flow]) -> Vec<String> {
    let mut out = Vec::new();
    let keys = [
        "access_token",
        "refresh_token",
        "code",
        "code_verifier",
        "client_secret",
    ];
    for f in flows {
        let mut bodies = vec![f.request.body.bytes.clone()];
        if let Some(r) = &f.response {
            bodies.push(r.body.bytes.clone());
        }
        for b in bodies {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                for k in keys {
                    if let Some(s) = v.get(k).and_then(|x| x.as_str()) {
                        out.push(s.to_owned());
                    }
                }
            }
            let text = String::from_utf8_lossy(&b);
            for pair in text.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if keys.contains(&k) && !v.is_empty() {
                        out.push(v.to_owned());
                    }
                }
            }
        }
        if let Some(q) = f.request.url.split_once('?').map(|(_, q)| q) {
            for pair in q.split('&') {
                if let Some(("code", v)) = pair.split_once('=') {
                    out.push(v.to_owned());
                }
            }
        }
        if let Some(a) = f.request.headers.get("authorization") {
            out.push(a.trim_start_matches("Bearer ").to_owned());
        }
        for h in ["mcp-session-id"] {
            if let Some(v) = f.request.headers.get(h) {
                out.push(v.to_owned());
            }
        }
    }
    out.retain(|s| s.len() >= 8);
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_the_recorded_session_has_the_whole_dance_and_no_raw_secret() {
    let (out, flows, _report) =
        through_mcptap(ServerOpts::default(), |o| o.mode = ClientMode::Legacy).await;
    assert!(out.ok, "{}", out.dump());
    let secrets = raw_secrets(&flows);
    assert!(
        secrets.len() >= 4,
        "the test knows the raw token, refresh token, code, verifier: {secrets:?}"
    );

    // The CLI's own pipeline (prepare → journal → HAR), fed the engine's events.
    let dir = tempfile::tempdir().unwrap();
    let session = record_session(dir.path(), &flows);

    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session.join("session.har")).unwrap()).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    let urls: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["request"]["url"].as_str())
        .collect();
    for p in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/register",
        "/authorize",
        "/token",
        "/mcp",
    ] {
        assert!(
            urls.iter().any(|u| u.contains(p)),
            "no {p} in the HAR: {urls:?}"
        );
    }
    for entry in std::fs::read_dir(&session).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "raw secret {}… in {}",
                &s[..6],
                path.display()
            );
        }
        assert!(
            text.contains("[redacted sha256:"),
            "{} has fingerprints",
            path.display()
        );
    }
}

/// `grant_type` of a form body, if any.
fn grant_type(f: &Flow) -> Option<String> {
    String::from_utf8_lossy(&f.request.body.bytes)
        .split('&')
        .find_map(|p| p.strip_prefix("grant_type=").map(str::to_owned))
}

/// Server with 30 s tokens (inside mcptap's 60 s margin: as good as expired to mcptap, still
/// valid to the server) and a client that drops its token; mcptap with `--inject-token` and,
/// when `refresh`, `--inject-refresh`. Returns the client's outcome, the flows and the server's
/// request log.
async fn expired_token_run(
    refresh: bool,
) -> (
    crate::common::peers::ClientOutcome,
    Vec<Flow>,
    Vec<crate::common::peers::ServerRequest>,
) {
    let pki = TestPki::new();
    let server = tokio::task::spawn_blocking({
        let (cert, key) = (pki.leaf_path(), pki.key_path());
        move || {
            McpServer::start_with_files(
                &cert,
                &key,
                ServerOpts {
                    token_ttl: Some(30),
                    ..Default::default()
                },
            )
        }
    })
    .await
    .unwrap();
    let proxy = TestProxy::start(&pki, |c| {
        c.inject_token = true;
        c.inject_refresh = refresh;
    })
    .await;
    let mcptap_ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
    let bundle = write_ca_bundle(pki.dir.path(), "bundle.pem", &[&mcptap_ca]);
    let mut opts = ClientOpts::new(bundle);
    opts.proxy = Some(format!("http://{}", proxy.addr));
    opts.timeout = Duration::from_secs(20);
    opts.drop_auth_after_token = true;
    let out = run_client_async(server.url(), opts).await;
    let flows = finished_flows(&proxy).await;
    (out, flows, server.requests())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_inject_token_alone_never_refreshes_an_expired_token() {
    let (out, flows, requests) = expired_token_run(false).await;
    assert!(
        !out.ok,
        "nothing injected, the bare calls fail: {}",
        out.dump()
    );
    assert!(
        flows
            .iter()
            .any(|f| path(f) == "/mcp" && !f.has_bearer() && f.status() == Some(401)),
        "the client's bare request reached the server"
    );
    assert!(flows
        .iter()
        .all(|f| f.injected.is_none() && f.by_mcptap.is_none()));
    assert!(
        requests
            .iter()
            .all(|r| r.grant_type.as_deref() != Some("refresh_token")),
        "no refresh reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_inject_refresh_refreshes_an_expired_token_and_injects_the_new_one() {
    let (out, flows, requests) = expired_token_run(true).await;
    assert!(
        out.ok,
        "with --inject-refresh the bare calls succeed: {}",
        out.dump()
    );
    let access = |f: &Flow| -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&f.response.as_ref().unwrap().body.bytes).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    // The client's own token exchange, and mcptap's refresh: a flow of its own, marked.
    let client_token = flows
        .iter()
        .find(|f| path(f) == "/token" && f.by_mcptap.is_none() && f.status() == Some(200))
        .expect("the client's token flow");
    let refreshes: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.by_mcptap.as_deref() == Some("inject-refresh"))
        .collect();
    assert!(!refreshes.is_empty(), "a refresh flow is recorded");
    for r in &refreshes {
        assert_eq!(path(r), "/token");
        assert_eq!(
            r.request.url, client_token.request.url,
            "the client's endpoint"
        );
        assert_eq!(grant_type(r).as_deref(), Some("refresh_token"));
        assert_eq!(r.status(), Some(200), "{:?}", r.response);
        assert!(
            mcptap::lineview::line(r).contains("[BY MCPTAP: inject-refresh]"),
            "{}",
            mcptap::lineview::line(r)
        );
    }
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.grant_type.as_deref() == Some("refresh_token"))
            .count(),
        refreshes.len(),
        "the server saw exactly the refreshes mcptap recorded:\n{}",
        requests
            .iter()
            .map(|r| r.summary())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The bare MCP calls were served with the NEW token, named by the refresh that got it.
    let injected: Vec<&Flow> = flows.iter().filter(|f| f.injected.is_some()).collect();
    assert!(
        injected.iter().any(|f| f.status() == Some(200)),
        "an injected call was served"
    );
    let old = mcptap_flow::redact::fingerprint(&access(client_token));
    for f in &injected {
        assert_eq!(path(f), "/mcp");
        assert!(!f.has_bearer(), "the recorded request is the client's own");
        let inj = f.injected.as_ref().unwrap();
        assert_ne!(inj.fingerprint, old, "the expired token is never injected");
        let by = refreshes
            .iter()
            .find(|r| Some(r.id) == inj.token_flow)
            .expect("injected token comes from a refresh flow");
        assert_eq!(
            inj.fingerprint,
            mcptap_flow::redact::fingerprint(&access(by))
        );
    }

    // The analysis still proves the client at fault, with the refreshed token as evidence.
    let report = mcptap_analyze::analyze(&flows);
    let text = mcptap_analyze::render_text(&report);
    let v = report
        .findings_with_id("client-omits-token-confirmed")
        .next()
        .unwrap_or_else(|| panic!("no verdict:\n{text}"));
    assert!(
        refreshes.iter().any(|r| v.evidence.contains(&r.id)),
        "{text}"
    );

    // The recorded session keeps none of the raw values: the client's tokens and secret, and
    // the refresh tokens and access tokens of mcptap's own exchange.
    let secrets = raw_secrets(&flows);
    for r in &refreshes {
        assert!(secrets.contains(&access(r)), "the test knows the new token");
    }
    assert!(
        secrets.iter().any(|s| s.starts_with("rt_")),
        "the test knows the refresh tokens: {secrets:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let session = record_session(dir.path(), &flows);
    let mut marked = false;
    for entry in std::fs::read_dir(&session).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "raw secret {}… in {}",
                &s[..6],
                path.display()
            );
        }
        marked |= text.contains(r#""by_mcptap":"inject-refresh""#);
    }
    assert!(marked, "the session records which flow mcptap made");
}

/// Replays `flows` through the CLI's own pipeline (prepare → journal → HAR) as the engine's
/// events, into `<dir>/session`, which it returns.
fn record_session(dir: &std::path::Path, flows: &[mcptap_flow::Flow]) -> std::path::PathBuf {
    let session = dir.join("session");
    let journal =
        mcptap_store::Journal::create(&session, mcptap_store::SessionMeta::new("test")).unwrap();
    let mut sink =
        mcptap::sink::Sink::new(true, false, Some(journal), mcptap_store::Options::default());
    for f in flows {
        sink.feed(FlowEvent::RequestStarted {
            flow: Box::new(f.clone()),
        });
        sink.feed(FlowEvent::Completed {
            flow: Box::new(f.clone()),
        });
    }
    sink.finish();
    session
}
