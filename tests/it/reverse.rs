//! Reverse mode: mcptap in front of a server, for clients whose proxy cannot be set.

use crate::common::peers::{run_client_async, write_ca_bundle, ClientOpts, McpServer, ServerOpts};
use crate::common::pki::TestPki;
use crate::common::proxy::TestProxy;
use crate::common::upstream::Upstream;
use mcptap_proxy::reverse::{parse_route, parse_upstream, ReverseConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn reverse(upstream: &str, routes: &[&str], rewrite: bool) -> ReverseConfig {
    ReverseConfig {
        upstream: parse_upstream(upstream).unwrap(),
        routes: routes.iter().map(|r| parse_route(r).unwrap()).collect(),
        rewrite_metadata: rewrite,
    }
}

async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: public.example:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_by_prefix_with_forwarded_headers() {
    let pki = TestPki::new();
    let a = Upstream::http().await;
    let b = Upstream::https(&pki, &[b"http/1.1"]).await;
    let rev = reverse(
        &format!("http://127.0.0.1:{}", a.port()),
        &[&format!("/status=https://localhost:{}", b.port())],
        false,
    );
    let proxy = TestProxy::start(&pki, |c| c.reverse = Some(rev)).await;

    let out = plain_get(proxy.addr, "/headers").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains(&format!("host: 127.0.0.1:{}", a.port())),
        "Host rewritten to the upstream: {out}"
    );
    assert!(out.contains("x-forwarded-for: 127.0.0.1"), "{out}");
    assert!(out.contains("x-forwarded-proto: http"), "{out}");
    assert!(
        out.contains(&format!(
            "x-forwarded-host: public.example:{}",
            proxy.addr.port()
        )),
        "{out}"
    );
    assert!(
        out.contains("forwarded: for=127.0.0.1;proto=http;host="),
        "{out}"
    );

    let out = plain_get(proxy.addr, "/status/418").await;
    assert!(
        out.starts_with("HTTP/1.1 418"),
        "routed to the TLS upstream B: {out}"
    );
    let flow = proxy.flow(|f| f.request.url.ends_with("/status/418")).await;
    assert_eq!(
        flow.request.url,
        format!("http://public.example:{}/status/418", proxy.addr.port())
    );
    assert_eq!(flow.port, b.port());
    assert!(flow.upstream_tls.is_some());
}

/// A port that was free a moment ago (the reverse listener must be known before the server
/// starts, because the server advertises it as its public URL).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(pki: &TestPki, opts: ServerOpts) -> McpServer {
    let (cert, key) = (pki.leaf_path(), pki.key_path());
    tokio::task::spawn_blocking(move || McpServer::start_with_files(&cert, &key, opts))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_completes_the_oauth_dance_through_the_reverse_listener() {
    let pki = TestPki::new();
    let rport = free_port();
    let server = start_server(
        &pki,
        ServerOpts {
            public_url: Some(format!("https://localhost:{rport}")),
            ..Default::default()
        },
    )
    .await;
    let proxy = TestProxy::start(&pki, |c| {
        c.listen = format!("127.0.0.1:{rport}").parse().unwrap();
        c.reverse = Some(reverse(&server.origin(), &[], false));
    })
    .await;
    let ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
    let bundle = write_ca_bundle(pki.dir.path(), "rev-bundle.pem", &[&ca]);
    let out = run_client_async(
        format!("https://localhost:{rport}/mcp"),
        ClientOpts::new(bundle),
    )
    .await;
    assert!(out.ok, "{}\nserver:\n{}", out.dump(), server.output());
    let token = proxy
        .flow(|f| f.request.url == format!("https://localhost:{rport}/token"))
        .await;
    assert_eq!(token.status(), Some(200));
    assert_eq!(token.port, server.port, "forwarded to the upstream");
    let call = proxy
        .flow(|f| {
            f.request.url.ends_with("/mcp")
                && String::from_utf8_lossy(&f.request.body.bytes).contains("tools/call")
        })
        .await;
    assert!(call.has_bearer());
    assert_eq!(call.status(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_naming_the_upstream_breaks_the_client_unless_rewritten() {
    let pki = TestPki::new();
    // The server advertises its own (internal) origin, not the public one mcptap listens on.
    let server = start_server(&pki, ServerOpts::default()).await;
    let upstream_origin = server.origin();
    for rewrite in [false, true] {
        let proxy = TestProxy::start(&pki, |c| {
            c.reverse = Some(reverse(&upstream_origin, &[], rewrite))
        })
        .await;
        let rport = proxy.addr.port();
        let ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
        let bundle = write_ca_bundle(pki.dir.path(), "rev-bundle2.pem", &[&ca]);
        let out = run_client_async(
            format!("https://localhost:{rport}/mcp"),
            ClientOpts::new(bundle),
        )
        .await;
        let challenge = proxy.flow(|f| f.status() == Some(401)).await;
        let www = challenge
            .response
            .as_ref()
            .unwrap()
            .headers
            .get("www-authenticate")
            .unwrap_or("")
            .to_owned();
        if rewrite {
            assert!(
                www.contains(&format!("https://localhost:{rport}/.well-known/")),
                "{www}"
            );
            let prm = proxy
                .flow(|f| {
                    f.request
                        .url
                        .contains("/.well-known/oauth-protected-resource")
                })
                .await;
            let body =
                String::from_utf8_lossy(&prm.response.as_ref().unwrap().body.bytes).into_owned();
            assert!(
                body.contains(&format!("https://localhost:{rport}/mcp")),
                "{body}"
            );
            assert!(!body.contains(&upstream_origin), "{body}");
            assert_eq!(
                prm.response
                    .as_ref()
                    .unwrap()
                    .headers
                    .get("x-mcptap-rewritten"),
                Some("metadata")
            );
            // With consistent metadata the client registers, authorizes and gets a token for
            // the public resource, which mcptap names to the upstream by the upstream's own
            // origin (the server binds tokens to the resource it is told and checks them).
            assert!(out.ok, "{}", out.dump());
            let token = proxy
                .flow(|f| f.request.url.ends_with("/token") && f.status() == Some(200))
                .await;
            let sent = String::from_utf8_lossy(&token.request.body.bytes).into_owned();
            assert!(
                sent.contains(&format!(
                    "resource={}",
                    mcptap_flow::redact::percent_encode(&format!("https://localhost:{rport}/mcp"))
                )),
                "the flow keeps what the client sent: {sent}"
            );
            assert_eq!(
                token.request.headers.get("x-mcptap-rewritten"),
                Some("resource")
            );
            let authorize = proxy.flow(|f| f.request.url.contains("/authorize?")).await;
            assert_eq!(
                authorize.request.headers.get("x-mcptap-rewritten"),
                Some("resource")
            );
            proxy
                .flow(|f| {
                    f.request.url.ends_with("/mcp")
                        && f.status() == Some(200)
                        && f.request.headers.get("authorization").is_some()
                })
                .await;
        } else {
            // The challenge sends the client to the upstream's own origin, which it cannot use.
            assert!(
                www.contains(&format!("{upstream_origin}/.well-known/")),
                "{www}"
            );
            assert!(!out.ok, "{}", out.dump());
            // mcptap says so at once, naming the option (the CLI's sink runs this watch on
            // each finished flow in reverse mode without --rewrite-metadata).
            let warning = mcptap::bypass::BypassWatch::default()
                .check(&challenge)
                .expect("the bypass is said");
            assert!(
                warning.contains(&format!("sends the client to {upstream_origin}"))
                    && warning.contains("--rewrite-metadata"),
                "{warning}"
            );
            assert!(!proxy.events.lock().unwrap().iter().any(|e| matches!(e, mcptap_flow::FlowEvent::Completed { flow } if flow.request.url.ends_with("/register"))),
                "the client stops before registering");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_refresh_in_reverse_mode_goes_where_the_clients_token_request_went() {
    let pki = TestPki::new();
    let rport = free_port();
    let server = start_server(
        &pki,
        ServerOpts {
            public_url: Some(format!("https://localhost:{rport}")),
            // Inside mcptap's 60 s margin: expired to mcptap, still valid to the server.
            token_ttl: Some(30),
            ..Default::default()
        },
    )
    .await;
    let proxy = TestProxy::start(&pki, |c| {
        c.listen = format!("127.0.0.1:{rport}").parse().unwrap();
        c.reverse = Some(reverse(&server.origin(), &[], false));
        c.inject_token = true;
        c.inject_refresh = true;
    })
    .await;
    let ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
    let bundle = write_ca_bundle(pki.dir.path(), "rev-bundle.pem", &[&ca]);
    let mut opts = ClientOpts::new(bundle);
    opts.drop_auth_after_token = true;
    let out = run_client_async(format!("https://localhost:{rport}/mcp"), opts).await;
    assert!(out.ok, "{}\nserver:\n{}", out.dump(), server.output());
    let refresh = proxy
        .flow(|f| f.by_mcptap.as_deref() == Some("inject-refresh"))
        .await;
    assert_eq!(
        refresh.request.url,
        format!("https://localhost:{rport}/token")
    );
    assert_eq!(
        refresh.port, server.port,
        "sent to the upstream, not to mcptap"
    );
    assert_eq!(refresh.status(), Some(200));
    assert!(server
        .requests()
        .iter()
        .any(|r| r.grant_type.as_deref() == Some("refresh_token")));
    let call = proxy
        .flow(|f| {
            f.request.url.ends_with("/mcp")
                && String::from_utf8_lossy(&f.request.body.bytes).contains("tools/call")
        })
        .await;
    assert_eq!(call.status(), Some(200));
    assert_eq!(
        call.injected.as_ref().and_then(|i| i.token_flow),
        Some(refresh.id)
    );
}
