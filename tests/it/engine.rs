//! The engine against a real HTTPS upstream on loopback, through a real CONNECT client.

use crate::common::client::{body_bytes, connect_tunnel, request, tls_client, Alpn};
use crate::common::pki::TestPki;
use crate::common::proxy::{has_path, TestProxy};
use crate::common::upstream::Upstream;
use http_body_util::BodyExt;
use mcptap_flow::{BodyState, ErrorKind, FlowEvent, FlowKind, FlowState, HttpVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get_and_post(client_alpn: Alpn, upstream_alpn: &[&[u8]]) {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, upstream_alpn).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    let (mut s, negotiated) = tls_client(
        proxy.addr,
        &target,
        "localhost",
        std::slice::from_ref(&proxy.ca_der),
        client_alpn,
    )
    .await
    .unwrap();
    let expect_h2 = client_alpn == Alpn::H2;
    assert_eq!(negotiated.as_deref() == Some(b"h2".as_slice()), expect_h2);

    let resp = s.send(request("GET", &target, "/small", "")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "hello from upstream\n");

    let payload = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let mut req = request("POST", &target, "/echo", payload);
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    req.headers_mut()
        .insert("authorization", "Bearer tok-123".parse().unwrap());
    let resp = s.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-authorization"], "Bearer tok-123");
    assert_eq!(body_bytes(resp).await, payload);

    let get = proxy.flow(has_path("/small")).await;
    assert_eq!(get.state, FlowState::Completed);
    assert_eq!(get.request.method, "GET");
    assert_eq!(
        get.request.url,
        format!("https://localhost:{}/small", up.port())
    );
    assert_eq!(
        get.request.version,
        if expect_h2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http11
        }
    );
    let r = get.response.as_ref().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.bytes, "hello from upstream\n");
    assert_eq!(r.body.state, BodyState::Complete);
    // mcptap speaks to the upstream what the client spoke to it (when the upstream offers it).
    let up_h2 = expect_h2 && upstream_alpn.contains(&b"h2".as_slice());
    assert_eq!(
        r.version,
        if up_h2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http11
        }
    );
    let ctls = get.client_tls.as_ref().unwrap();
    assert_eq!(ctls.sni.as_deref(), Some("localhost"));
    assert_eq!(
        ctls.alpn.as_deref(),
        Some(if expect_h2 { "h2" } else { "http/1.1" })
    );
    assert!(
        ctls.version.as_deref().unwrap_or("").starts_with("TLSv1"),
        "{ctls:?}"
    );
    let utls = get.upstream_tls.as_ref().unwrap();
    assert_eq!(
        utls.alpn.as_deref(),
        Some(if up_h2 { "h2" } else { "http/1.1" })
    );

    let post = proxy.flow(has_path("/echo")).await;
    assert_eq!(post.request.body.bytes, payload);
    assert_eq!(post.request.body.total_len, payload.len() as u64);
    assert!(post.has_bearer());
    assert_eq!(post.response.as_ref().unwrap().body.bytes, payload);
    assert!(post.timings.finished.unwrap() >= post.timings.started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_client_h1_upstream() {
    get_and_post(Alpn::H1, &[b"http/1.1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_h2_upstream() {
    get_and_post(Alpn::H2, &[b"h2", b"http/1.1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_h1_upstream() {
    get_and_post(Alpn::H2, &[b"http/1.1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_client_h2_upstream() {
    get_and_post(Alpn::H1, &[b"h2", b"http/1.1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_tunnel_keeps_its_upstream_connection_and_reopens_it_when_closed() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    let ca = std::slice::from_ref(&proxy.ca_der);
    let (mut s, _) = tls_client(proxy.addr, &target, "localhost", ca, Alpn::H1)
        .await
        .unwrap();
    for _ in 0..3 {
        let resp = s.send(request("GET", &target, "/small", "")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body_bytes(resp).await, "hello from upstream\n");
    }
    assert_eq!(up.accepted(), 1, "one upstream connection for the tunnel");

    // The upstream closes after this answer: the next request gets a new connection.
    let resp = s.send(request("GET", &target, "/close", "")).await.unwrap();
    assert_eq!(body_bytes(resp).await, "closing\n");
    let resp = s
        .send(request("GET", &target, "/echo", "again"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "again");
    assert_eq!(up.accepted(), 2);
    let again = proxy.flow(has_path("/echo")).await;
    assert_eq!(again.state, FlowState::Completed);
    assert_eq!(
        again.request.url,
        format!("https://localhost:{}/echo", up.port())
    );
    let utls = again.upstream_tls.as_ref().expect("upstream TLS recorded");
    assert_eq!(utls.alpn.as_deref(), Some("http/1.1"));
    // A new upstream connection has its connect time (HAR `timings.connect`), a reused one none.
    let t = &again.timings;
    let connected = t.connected.expect("the new connection's ready time");
    assert!(
        t.started <= connected && Some(connected) <= t.response_head,
        "{t:?}"
    );
    let reused = proxy.flow(has_path("/close")).await;
    assert_eq!(reused.timings.connected, None, "{:?}", reused.timings);
    let first = proxy.flow(has_path("/small")).await;
    assert!(first.timings.connected.is_some(), "{:?}", first.timings);

    // Another client connection has an upstream connection of its own.
    let (mut s2, _) = tls_client(proxy.addr, &target, "localhost", ca, Alpn::H1)
        .await
        .unwrap();
    let mut req = request("GET", &target, "/small", "");
    req.headers_mut()
        .insert("connection", "close".parse().unwrap());
    let resp = s2.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "hello from upstream\n");
    assert_eq!(up.accepted(), 3);
    drop(s2);

    // A tunnel that ended leaves its upstream connection to the next tunnel to that origin (a
    // client opening a tunnel per request does not cost an upstream handshake each time).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (mut s3, _) = tls_client(proxy.addr, &target, "localhost", ca, Alpn::H1)
        .await
        .unwrap();
    let resp = s3
        .send(request("GET", &target, "/small", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.accepted(), 3, "the ended tunnel's connection was reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_first_event_reaches_the_client_before_the_stream_ends() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    let resp = proxy.get(&target, "/sse").await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The upstream holds the rest of the stream until released: the first event must arrive now.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("first event arrives while the stream is still open")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("notifications/first"));
    // The engine reported that event live, before the flow ended.
    let ev = proxy
        .event(|e| match e {
            FlowEvent::Sse { event, .. } => Some(event.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ev.id.as_deref(), Some("1"));
    assert!(ev.data.contains("notifications/first"));
    assert!(
        !proxy
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.is_final() && e.flow_id() == mcptap_flow::FlowId(1)),
        "the flow must not have finished yet"
    );
    up.sse_release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("\"n\":3"));
    let flow = proxy.flow(has_path("/sse")).await;
    assert!(flow.is_sse());
    let sse = &flow.response.as_ref().unwrap().sse;
    assert_eq!(sse.len(), 3);
    assert_eq!(sse[0].event.as_deref(), Some("message"));
    assert!(sse[0].at <= sse[2].at);
    assert_eq!(sse[2].data, "{\"n\":3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_limit_streams_intact_and_the_capture_is_truncated() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"h2", b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |c| c.body_limit = 64 * 1024).await;
    let target = format!("localhost:{}", up.port());
    let (mut s, _) = tls_client(
        proxy.addr,
        &target,
        "localhost",
        std::slice::from_ref(&proxy.ca_der),
        Alpn::H2,
    )
    .await
    .unwrap();
    let n = 5 * 1024 * 1024 + 17;
    let resp = s
        .send(request("GET", &target, &format!("/big?n={n}"), ""))
        .await
        .unwrap();
    let body = body_bytes(resp).await;
    assert_eq!(body.len(), n);
    assert!(body.iter().all(|&b| b == b'x'));
    let flow = proxy
        .flow(has_path(&*Box::leak(
            format!("/big?n={n}").into_boxed_str(),
        )))
        .await;
    let r = flow.response.unwrap();
    assert_eq!(r.body.total_len, n as u64);
    assert!(r.body.truncated);
    assert_eq!(r.body.bytes.len(), 64 * 1024);

    // And a large request body going up.
    let up_body = vec![b'y'; 300 * 1024];
    let resp = s
        .send(request("POST", &target, "/echo", up_body.clone()))
        .await
        .unwrap();
    assert_eq!(body_bytes(resp).await.len(), up_body.len());
    let flow = proxy.flow(has_path("/echo")).await;
    assert_eq!(flow.request.body.total_len, up_body.len() as u64);
    assert!(flow.request.body.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_that_names_the_cause_and_a_failed_flow() {
    let pki = TestPki::new();
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("localhost:{port}");
    let resp = proxy.get(&target, "/small").await;
    assert_eq!(resp.status(), 502);
    let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert!(text.contains("cannot connect to localhost"), "{text}");
    let flow = proxy.flow(has_path("/small")).await;
    assert_eq!(flow.state, FlowState::Failed);
    assert_eq!(
        flow.error.as_ref().unwrap().kind,
        ErrorKind::UpstreamConnect
    );
    assert!(flow.response.as_ref().unwrap().synthetic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_is_a_502_with_the_fix() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    // This proxy trusts neither the system roots nor the test CA.
    let proxy = TestProxy::start(&pki, |c| c.upstream_trust.extra_ca_files.clear()).await;
    let target = format!("localhost:{}", up.port());
    let resp = proxy.get(&target, "/small").await;
    assert_eq!(resp.status(), 502);
    let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert!(text.contains("--upstream-ca"), "{text}");
    let flow = proxy.flow(has_path("/small")).await;
    assert_eq!(flow.error.as_ref().unwrap().kind, ErrorKind::UpstreamTls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_is_a_failed_flow_with_the_hint() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    // The client trusts only the upstream's CA, not mcptap's.
    let err = tls_client(
        proxy.addr,
        &target,
        "localhost",
        std::slice::from_ref(&pki.ca_der),
        Alpn::H1,
    )
    .await
    .err()
    .expect("the handshake must fail");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let flow = proxy.flow(|f| f.request.method == "CONNECT").await;
    assert_eq!(flow.state, FlowState::Failed);
    let e = flow.error.unwrap();
    assert_eq!(e.kind, ErrorKind::ClientTls);
    assert!(e.hint.unwrap().contains("does not trust the mcptap CA"));
    assert_eq!(flow.client_tls.unwrap().sni.as_deref(), Some("localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_literal_target_gets_a_leaf_with_an_ip_san() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("127.0.0.1:{}", up.port());
    // rustls sends no SNI for an IP address and checks the IP SAN.
    let (mut s, _) = tls_client(
        proxy.addr,
        &target,
        "127.0.0.1",
        std::slice::from_ref(&proxy.ca_der),
        Alpn::H1,
    )
    .await
    .expect("the client accepts a leaf with an IP SAN");
    let resp = s.send(request("GET", &target, "/small", "")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let flow = proxy.flow(has_path("/small")).await;
    assert_eq!(flow.host, "127.0.0.1");
    assert_eq!(flow.client_tls.unwrap().sni, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_absolute_form_is_proxied() {
    let pki = TestPki::new();
    let up = Upstream::http().await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("http://127.0.0.1:{}/small", up.port());
    tcp.write_all(
        format!(
            "GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            up.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("hello from upstream\n"));
    let flow = proxy.flow(has_path("/small")).await;
    assert_eq!(flow.request.url, url);
    assert!(flow.client_tls.is_none() && flow.upstream_tls.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_hosts_are_tunnelled_without_decryption() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |c| c.ignore_hosts = vec!["^localhost:\\d+$".into()]).await;
    let target = format!("localhost:{}", up.port());
    // The client trusts only the upstream's own CA: it talks to the upstream end to end.
    let (mut s, _) = tls_client(
        proxy.addr,
        &target,
        "localhost",
        std::slice::from_ref(&pki.ca_der),
        Alpn::H1,
    )
    .await
    .expect("an ignored host is not intercepted");
    let resp = s.send(request("GET", &target, "/small", "")).await.unwrap();
    assert_eq!(body_bytes(resp).await, "hello from upstream\n");
    drop(s);
    let flow = proxy.flow(|f| f.kind == FlowKind::Tunnel).await;
    assert_eq!(flow.port, up.port());
    let t = flow.tunnel.unwrap();
    assert!(t.bytes_up > 100 && t.bytes_down > 100, "{t:?}");
    assert!(!proxy.events.lock().unwrap().iter().any(
        |e| matches!(e, FlowEvent::Completed { flow } if flow.request.url.ends_with("/small"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_tunnelled_after_its_handshake_flow() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    let mut s = proxy.client(&target).await;
    let mut req = request("GET", &target, "/ws", "");
    req.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    req.headers_mut().insert("upgrade", "echo".parse().unwrap());
    let resp = s.send(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    io.write_all(b"ping-through-the-tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping-through-the-tunnel");
    drop(io);
    let flow = proxy.flow(has_path("/ws")).await;
    assert_eq!(flow.status(), Some(101));
    assert_eq!(flow.tunnel.unwrap().bytes_up, 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_a_400_and_the_proxy_keeps_serving() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GARBAGE \x01\x02 nonsense\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    let flow = proxy
        .flow(|f| {
            f.error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::ClientProtocol)
        })
        .await;
    assert_eq!(flow.state, FlowState::Failed);
    // Origin-form on the proxy port is refused with an explanation, not forwarded.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("mcptap is a proxy"),
        "{out}"
    );
    // Still serving.
    let target = format!("localhost:{}", up.port());
    assert!(connect_tunnel(proxy.addr, &target).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_as_aborted_flows() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let mut proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    let resp = proxy.get(&target, "/sse").await;
    let mut body = resp.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    proxy.shutdown().await; // drains, then drops the stream at the deadline
    let flow = proxy.flow(has_path("/sse")).await;
    assert_eq!(flow.state, FlowState::Aborted);
    assert_eq!(flow.response.as_ref().unwrap().sse.len(), 1);
    // Cut by mcptap's shutdown, not by the client.
    let err = flow.error.as_ref().unwrap();
    assert_eq!(err.kind, ErrorKind::Shutdown);
    assert!(
        err.message.ends_with("(mcptap shut down)"),
        "{}",
        err.message
    );
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "listener closed"
    );
}
