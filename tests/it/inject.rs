//! Inject mode's leak rules on real traffic through the engine.

use crate::common::client::{body_bytes, request, tls_client, Alpn, Sender};
use crate::common::pki::TestPki;
use crate::common::proxy::TestProxy;
use crate::common::upstream::Upstream;

async fn send(
    s: &mut Sender,
    method: &str,
    target: &str,
    path: &str,
    body: &str,
    auth: Option<&str>,
) -> String {
    let mut req = request(method, target, path, body.to_owned());
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    if method == "POST" {
        req.headers_mut().insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
    }
    let resp = s.send(req).await.unwrap();
    String::from_utf8(body_bytes(resp).await.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_bare_requests_to_the_resource_get_the_token_issued_for_it() {
    let pki = TestPki::new();
    let a = Upstream::https(&pki, &[b"http/1.1"]).await;
    let b = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |c| c.inject_token = true).await;
    let ta = format!("localhost:{}", a.port());
    let tb = format!("localhost:{}", b.port());
    let ca = std::slice::from_ref(&proxy.ca_der);
    let (mut sa, _) = tls_client(proxy.addr, &ta, "localhost", ca, Alpn::H1)
        .await
        .unwrap();
    let (mut sb, _) = tls_client(proxy.addr, &tb, "localhost", ca, Alpn::H1)
        .await
        .unwrap();

    // Before any token: nothing to inject.
    assert_eq!(
        send(&mut sa, "POST", &ta, "/mcp", "{}", None).await,
        r#"{"seen":"none"}"#
    );
    // Discovery and a token for A's resource.
    send(
        &mut sa,
        "GET",
        &ta,
        "/.well-known/oauth-protected-resource/mcp",
        "",
        None,
    )
    .await;
    let resource = format!("https%3A%2F%2Flocalhost%3A{}%2Fmcp", a.port());
    send(
        &mut sa,
        "POST",
        &ta,
        "/token",
        &format!("grant_type=authorization_code&code=c&resource={resource}"),
        None,
    )
    .await;

    // A bare request to A's MCP endpoint gets it, and the flow says so (by fingerprint).
    let seen = send(&mut sa, "POST", &ta, "/mcp", "{}", None).await;
    assert_eq!(seen, r#"{"seen":"Bearer tok-from-upstream-3600"}"#);
    let injected = proxy.flow(|f| f.injected.is_some()).await;
    assert_eq!(
        injected.injected.as_ref().unwrap().fingerprint,
        mcptap_flow::redact::fingerprint("tok-from-upstream-3600")
    );
    assert!(
        !injected.has_bearer(),
        "the recorded request is the client's own"
    );

    // An existing header, even a wrong one, is never replaced.
    assert_eq!(
        send(&mut sa, "POST", &ta, "/mcp", "{}", Some("Bearer wrong")).await,
        r#"{"seen":"Bearer wrong"}"#
    );
    // Another path on the same origin, the token endpoint, another origin: nothing.
    assert_eq!(
        send(&mut sa, "POST", &ta, "/other", "{}", None).await,
        r#"{"seen":"none"}"#
    );
    assert_eq!(
        send(&mut sb, "POST", &tb, "/mcp", "{}", None).await,
        r#"{"seen":"none"}"#
    );
    let injected_count = proxy
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(
            |e| matches!(e, mcptap_flow::FlowEvent::Completed { flow } if flow.injected.is_some()),
        )
        .count();
    assert_eq!(injected_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_never_injected_and_nothing_without_the_flag() {
    let pki = TestPki::new();
    let a = Upstream::https(&pki, &[b"http/1.1"]).await;
    for inject in [true, false] {
        let proxy = TestProxy::start(&pki, |c| c.inject_token = inject).await;
        let ta = format!("localhost:{}", a.port());
        let (mut s, _) = tls_client(
            proxy.addr,
            &ta,
            "localhost",
            std::slice::from_ref(&proxy.ca_der),
            Alpn::H1,
        )
        .await
        .unwrap();
        send(
            &mut s,
            "GET",
            &ta,
            "/.well-known/oauth-protected-resource/mcp",
            "",
            None,
        )
        .await;
        let resource = format!("https%3A%2F%2Flocalhost%3A{}%2Fmcp", a.port());
        // ttl=30: inside the 60 s safety margin, so as good as expired.
        let ttl = if inject { 30 } else { 3600 };
        send(
            &mut s,
            "POST",
            &ta,
            &format!("/token?ttl={ttl}"),
            &format!("grant_type=authorization_code&resource={resource}"),
            None,
        )
        .await;
        assert_eq!(
            send(&mut s, "POST", &ta, "/mcp", "{}", None).await,
            r#"{"seen":"none"}"#,
            "inject={inject}"
        );
    }
}

/// Discovery and a token for `t`'s `/mcp` (a tunnel to the test upstream on `port`).
async fn learn_token(s: &mut Sender, t: &str, port: u16) {
    send(
        s,
        "GET",
        t,
        "/.well-known/oauth-protected-resource/mcp",
        "",
        None,
    )
    .await;
    let resource = format!("https%3A%2F%2Flocalhost%3A{port}%2Fmcp");
    send(
        s,
        "POST",
        t,
        "/token",
        &format!("grant_type=authorization_code&code=c&resource={resource}"),
        None,
    )
    .await;
}

/// A bare request with its own `authority` (the h1 `Host`, the h2 `:authority`) to `path`.
async fn send_named(s: &mut Sender, authority: &str, path: &str) {
    let resp = s
        .send(request("POST", authority, path, "{}"))
        .await
        .unwrap();
    body_bytes(resp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_leaves_the_endpoint_by_dot_segments_or_another_host() {
    let pki = TestPki::new();
    let a = Upstream::https(&pki, &[b"h2", b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |c| c.inject_token = true).await;
    let ta = format!("localhost:{}", a.port());
    let ca = std::slice::from_ref(&proxy.ca_der);
    let (mut s, _) = tls_client(proxy.addr, &ta, "localhost", ca, Alpn::H1)
        .await
        .unwrap();
    learn_token(&mut s, &ta, a.port()).await;
    // The endpoint itself gets the token: the rules below are what stops it.
    assert_eq!(
        send(&mut s, "POST", &ta, "/mcp", "{}", None).await,
        r#"{"seen":"Bearer tok-from-upstream-3600"}"#
    );

    let turned_away = [
        (
            "/mcp/../other",
            "the path is /other once dot-segments are removed",
        ),
        (
            "/mcp/%2e%2e/other",
            "the path is /other once dot-segments are removed",
        ),
        (
            "/mcp/%2E%2e/other",
            "the path is /other once dot-segments are removed",
        ),
        (
            "/other/../mcp",
            "the path is /mcp once dot-segments are removed",
        ),
        ("/mcp%2f..%2fother", "encoded slash"),
    ];
    for (path, _) in turned_away {
        send(&mut s, "POST", &ta, path, "{}", None).await;
    }
    // Inside the tunnel to the MCP host: another Host (HTTP/1.1), another :authority (HTTP/2).
    send_named(&mut s, "evil.example", "/mcp").await;
    let (mut s2, alpn) = tls_client(proxy.addr, &ta, "localhost", ca, Alpn::H2)
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    send_named(&mut s2, &format!("other.example:{}", a.port()), "/mcp").await;

    // The upstream got every request, untouched, and the token exactly once: at /mcp, named
    // by its own origin.
    let seen = a.seen.lock().unwrap().clone();
    for (path, _) in turned_away {
        assert!(
            seen.iter()
                .any(|r| r.target == path && r.authorization.is_none()),
            "{path} not forwarded bare: {seen:#?}"
        );
    }
    let with_token: Vec<_> = seen
        .iter()
        .filter(|r| {
            r.authorization
                .as_deref()
                .is_some_and(|a| a.contains("tok-from-upstream"))
        })
        .collect();
    assert_eq!(with_token.len(), 1, "{seen:#?}");
    assert_eq!(with_token[0].target, "/mcp");
    assert_eq!(with_token[0].host.as_deref(), Some(ta.as_str()));
    assert!(
        seen.iter()
            .any(|r| r.host.as_deref() == Some("evil.example") && r.authorization.is_none()),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|r| r.host.as_deref()
            == Some(format!("other.example:{}", a.port()).as_str())
            && r.authorization.is_none()),
        "{seen:#?}"
    );

    // Each flow says why it was not injected.
    let mut away = Vec::new();
    for (path, reason) in turned_away {
        let f = proxy
            .flow(|f| f.request.url.ends_with(path) && f.request.method == "POST")
            .await;
        assert!(f.injected.is_none(), "{path}");
        let why = f.not_injected.clone().unwrap_or_default();
        assert!(why.contains(reason), "{path}: {why:?}");
        away.push(f.id);
    }
    let f = proxy
        .flow(|f| f.request.headers.get("host") == Some("evil.example"))
        .await;
    assert!(f.injected.is_none());
    assert!(
        f.not_injected
            .as_deref()
            .is_some_and(|w| w.contains("evil.example")),
        "{:?}",
        f.not_injected
    );
    away.push(f.id);
    let f = proxy
        .flow(|f| {
            f.request.version == mcptap_flow::HttpVersion::Http2 && f.request.url.ends_with("/mcp")
        })
        .await;
    assert!(f.injected.is_none());
    assert!(
        f.not_injected
            .as_deref()
            .is_some_and(|w| w.contains("other.example")),
        "{:?}",
        f.not_injected
    );
    away.push(f.id);

    // No inject verdict names any of them.
    let flows: Vec<mcptap_flow::Flow> = proxy
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            mcptap_flow::FlowEvent::Completed { flow }
            | mcptap_flow::FlowEvent::Failed { flow } => Some((**flow).clone()),
            _ => None,
        })
        .collect();
    let report = mcptap_analyze::analyze(&flows);
    for f in &report.findings {
        if f.id == "client-omits-token-confirmed" || f.id == "server-rejects-token" {
            assert!(
                !f.evidence.iter().any(|id| away.contains(id)),
                "{} cites a flow that was not injected: {:?}",
                f.id,
                f.evidence
            );
        }
    }
}
