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
