//! Faults on either side of the proxy: time limits, peers that go away, and peers that break
//! HTTP. Hostile upstreams are raw TCP listeners on loopback writing bytes by hand; hostile
//! clients are raw TCP streams. Every case checks what the client got and what was recorded,
//! and that the record blames the side that caused it.

use crate::common::client::{connect_tunnel, request, tls_client, Alpn};
use crate::common::pki::TestPki;
use crate::common::proxy::{has_path, TestProxy};
use crate::common::upstream::Upstream;
use mcptap_flow::{BodyState, ErrorKind, FlowState, Phase, TimeLimit};
use mcptap_proxy::{Limits, ProxyConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every limit at 300 ms, so that a test waits for one in well under a second.
fn short_limits(c: &mut ProxyConfig) {
    let ms = Duration::from_millis(300);
    c.limits = Limits {
        connect: ms,
        tls_handshake: ms,
        response_head: ms,
        idle_body: ms,
    };
}

fn limit(phase: Phase) -> Option<TimeLimit> {
    Some(TimeLimit {
        phase,
        after_ms: 300,
    })
}

/// A hostile upstream on 127.0.0.1:0: for each connection, reads the request head, then lets
/// `act` write whatever it likes.
async fn raw_upstream<F, Fut>(act: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut b).await {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            tokio::spawn(act(s));
        }
    });
    addr
}

/// Writes `parts` with `pause` between them, then holds the connection open for a while.
async fn write_slowly(mut s: TcpStream, parts: Vec<&'static [u8]>, pause: Duration) {
    for p in parts {
        if s.write_all(p).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
}

/// Sends `head_and_body` to the proxy as a raw client and reads until the proxy closes (at most
/// 5 s); returns what came back.
async fn raw_exchange(proxy: SocketAddr, head_and_body: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(head_and_body).await.unwrap();
    read_until_closed(&mut s).await
}

async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the proxy kept the connection open; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

fn get(up: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET http://{up}{path} HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The body of an HTTP/1.1 response with `Content-Length`.
fn body_of(resp: &[u8]) -> &[u8] {
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    &resp[at + 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_a_504_at_the_response_head_limit() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| write_slowly(s, vec![], Duration::ZERO)).await;
    let proxy = TestProxy::start(&pki, short_limits).await;
    let started = Instant::now();
    let out = text(&raw_exchange(proxy.addr, &get(up, "/slow")).await);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(out.starts_with("HTTP/1.1 504"), "{out}");
    assert!(out.contains("--response-timeout"), "{out}");
    let flow = proxy.flow(has_path("/slow")).await;
    assert_eq!(flow.state, FlowState::Failed);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
    assert_eq!(err.limit, limit(Phase::ResponseHead));
    assert!(
        err.message.contains("no response head within 300ms"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_tls_handshake_that_stalls_is_a_504_at_the_connect_limit() {
    let pki = TestPki::new();
    // Accepts TCP and never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let proxy = TestProxy::start(&pki, |c| {
        short_limits(c);
        // The head limit counts connecting too: keep it out of the way.
        c.limits.response_head = Duration::from_secs(5);
    })
    .await;
    let target = format!("localhost:{port}");
    let resp = proxy.get(&target, "/x").await;
    assert_eq!(resp.status(), 504);
    let flow = proxy.flow(has_path("/x")).await;
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
    assert_eq!(err.limit, limit(Phase::UpstreamConnect));
    assert!(err.hint.unwrap().contains("--connect-timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_never_sends_tls_is_a_failed_flow_at_the_handshake_limit() {
    let pki = TestPki::new();
    let proxy = TestProxy::start(&pki, short_limits).await;

    // Silent after CONNECT.
    let mut silent = connect_tunnel(proxy.addr, "silent.example:443")
        .await
        .unwrap();
    // Starts a TLS record and stalls.
    let mut stalled = connect_tunnel(proxy.addr, "stalled.example:443")
        .await
        .unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut silent).await.is_empty());
    assert!(read_until_closed(&mut stalled).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(3));

    for (host, words) in [
        ("silent.example", "sent nothing for 300ms"),
        (
            "stalled.example",
            "did not finish its TLS handshake within 300ms",
        ),
    ] {
        let flow = proxy.flow(|f| f.host == host).await;
        assert_eq!(flow.request.method, "CONNECT");
        assert_eq!(flow.state, FlowState::Failed);
        let err = flow.error.unwrap();
        assert_eq!(err.kind, ErrorKind::ClientTimeout);
        assert_eq!(err.limit, limit(Phase::ClientTlsHandshake));
        assert!(err.message.contains(words), "{}", err.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_at_the_idle_limit_with_what_was_relayed() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| {
        write_slowly(
            s,
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"],
            Duration::ZERO,
        )
    })
    .await;
    let proxy = TestProxy::start(&pki, short_limits).await;
    let out = text(&raw_exchange(proxy.addr, &get(up, "/stall")).await);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("5\r\nhello\r\n"), "cut, not ended: {out:?}");
    let flow = proxy.flow(has_path("/stall")).await;
    assert_eq!(flow.state, FlowState::Aborted);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
    assert_eq!(err.limit, limit(Phase::IdleBody));
    assert!(err.message.contains("after 5 bytes"), "{}", err.message);
    let body = flow.response.unwrap().body;
    assert_eq!(
        (body.bytes.as_ref(), body.total_len),
        (b"hello".as_ref(), 5)
    );
    assert_eq!(body.state, BodyState::Error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_keep_alives_keep_a_quiet_stream_alive_past_the_idle_limit() {
    let pki = TestPki::new();
    let up = raw_upstream(|mut s| async move {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        // A second of keep-alives, each well inside the 300 ms limit, then one event.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.write_all(b"e\r\n: keep-alive\n\n\r\n").await.unwrap();
        }
        let ev = "data: {\"n\":1}\n\n";
        let chunk = format!("{:x}\r\n{ev}\r\n0\r\n\r\n", ev.len());
        s.write_all(chunk.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let proxy = TestProxy::start(&pki, short_limits).await;
    let out = text(&raw_exchange(proxy.addr, &get(up, "/events")).await);
    assert!(out.ends_with("0\r\n\r\n"), "{out:?}");
    let flow = proxy.flow(has_path("/events")).await;
    assert_eq!(flow.state, FlowState::Completed, "{:?}", flow.error);
    let resp = flow.response.unwrap();
    assert_eq!(resp.sse.len(), 1);
    assert_eq!(resp.sse[0].data, "{\"n\":1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_before_the_head_is_an_aborted_flow_at_once() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| write_slowly(s, vec![], Duration::ZERO)).await;
    // Default limits: the response-head limit is far away.
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get(up, "/wait")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let gone = Instant::now();
    drop(s);
    let flow = proxy.flow(has_path("/wait")).await;
    assert!(gone.elapsed() < Duration::from_secs(2));
    assert_eq!(flow.state, FlowState::Aborted);
    assert!(flow.response.is_none());
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::ClientDisconnected);
    // How long it waited, in the words and in the timings.
    let waited_ms: u64 = err
        .message
        .strip_prefix("the client went away after waiting ")
        .and_then(|m| m.strip_suffix("ms for the response head"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", err.message));
    assert!((400..1000).contains(&waited_ms), "{}", err.message);
    let waited = flow.timings.duration().unwrap();
    assert!(waited >= 400_000, "{waited} µs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_flow_waiting_for_its_head_as_aborted_by_the_shutdown() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| write_slowly(s, vec![], Duration::ZERO)).await;
    let mut proxy = TestProxy::start(&pki, |_| {}).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get(up, "/pending")).await.unwrap();
    proxy
        .event(|ev| match ev {
            mcptap_flow::FlowEvent::RequestStarted { flow } => Some(flow.id),
            _ => None,
        })
        .await;
    proxy.shutdown().await;
    let flow = proxy.flow(has_path("/pending")).await;
    assert_eq!(flow.state, FlowState::Aborted);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::Shutdown);
    assert!(err.message.contains("shut down"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_request_body_is_the_clients_fault() {
    let pki = TestPki::new();
    let up = Upstream::http().await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let req = format!(
        "POST http://{}/echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\nzz\r\n",
        up.addr, up.addr
    );
    let out = text(&raw_exchange(proxy.addr, req.as_bytes()).await);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    let flow = proxy.flow(has_path("/echo")).await;
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::ClientProtocol, "{}", err.message);
    assert!(
        err.message
            .starts_with("the client sent a malformed request body after 5 bytes"),
        "{}",
        err.message
    );
    assert_eq!(flow.request.body.total_len, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_the_clients_timeout_not_the_upstreams() {
    let pki = TestPki::new();
    let up = Upstream::http().await;
    let proxy = TestProxy::start(&pki, short_limits).await;
    let req = format!(
        "POST http://{}/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        up.addr, up.addr
    );
    let out = text(&raw_exchange(proxy.addr, req.as_bytes()).await);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let flow = proxy.flow(has_path("/echo")).await;
    assert_eq!(flow.state, FlowState::Failed);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::ClientTimeout, "{}", err.message);
    assert_eq!(err.limit, limit(Phase::IdleBody));
    assert!(err.message.starts_with("the client sent nothing for 300ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_both_content_length_and_transfer_encoding_is_refused_as_its_fault() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| {
        let mut resp =
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n"
                .to_vec();
        resp.extend_from_slice(&[b'a'; 65]);
        resp.extend_from_slice(b"\r\n0\r\n\r\n");
        let resp: &'static [u8] = Box::leak(resp.into_boxed_slice());
        write_slowly(s, vec![resp], Duration::ZERO)
    })
    .await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let out = raw_exchange(proxy.addr, &get(up, "/both")).await;
    assert!(text(&out).starts_with("HTTP/1.1 502"), "{}", text(&out));
    let flow = proxy.flow(has_path("/both")).await;
    assert_eq!(flow.state, FlowState::Failed);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
    assert!(
        err.message.starts_with("the upstream sent")
            && err.message.contains("Content-Length")
            && err.message.contains("Transfer-Encoding"),
        "{}",
        err.message
    );
    // The record holds exactly what the client got.
    let resp = flow.response.unwrap();
    assert!(resp.synthetic);
    assert_eq!(resp.status, 502);
    assert_eq!(resp.body.bytes.as_ref(), body_of(&out));
    assert_eq!(resp.body.total_len, body_of(&out).len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_http_version_from_the_upstream_names_the_upstream() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| {
        write_slowly(
            s,
            vec![b"HTTP/7.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"],
            Duration::ZERO,
        )
    })
    .await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let out = text(&raw_exchange(proxy.addr, &get(up, "/version")).await);
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.contains("mcptap: the upstream sent"), "{out}");
    let flow = proxy.flow(has_path("/version")).await;
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
    assert!(
        err.message
            .starts_with("the upstream sent a response that is not valid HTTP/1.1"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_from_the_upstream_is_its_fault_with_the_bytes_the_client_got() {
    let pki = TestPki::new();
    let up = raw_upstream(|s| {
        write_slowly(
            s,
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                b"zz\r\n",
            ],
            Duration::from_millis(50),
        )
    })
    .await;
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let out = text(&raw_exchange(proxy.addr, &get(up, "/chunks")).await);
    assert!(out.ends_with("5\r\nhello\r\n"), "{out:?}");
    let flow = proxy.flow(has_path("/chunks")).await;
    assert_eq!(flow.state, FlowState::Aborted);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
    assert!(
        err.message
            .starts_with("the upstream sent a malformed response body after 5 bytes"),
        "{}",
        err.message
    );
    assert_eq!(flow.response.unwrap().body.total_len, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_goes_away_inside_a_tls_tunnel_is_an_aborted_flow_at_once() {
    let pki = TestPki::new();
    // An HTTPS upstream that completes TLS, then never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(&[b"h2", b"http/1.1"]));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 4096];
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    let proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{port}");
    let (mut s, alpn) = tls_client(
        proxy.addr,
        &target,
        "localhost",
        std::slice::from_ref(&proxy.ca_der),
        Alpn::H2,
    )
    .await
    .unwrap();
    assert_eq!(alpn.as_deref(), Some(b"h2".as_slice()));
    let pending = s.send(request("GET", &target, "/h2-wait", ""));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pending)
            .await
            .is_err(),
        "no answer yet"
    );
    let gone = Instant::now();
    drop(s);
    let flow = proxy.flow(has_path("/h2-wait")).await;
    assert!(gone.elapsed() < Duration::from_secs(2));
    assert_eq!(flow.state, FlowState::Aborted);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::ClientDisconnected, "{}", err.message);
    assert!(err
        .message
        .starts_with("the client went away after waiting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_tunnel_open_at_shutdown_is_aborted_by_the_shutdown() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let mut proxy =
        TestProxy::start(&pki, |c| c.ignore_hosts = vec!["^localhost:\\d+$".into()]).await;
    let target = format!("localhost:{}", up.port());
    let (mut s, _) = tls_client(
        proxy.addr,
        &target,
        "localhost",
        std::slice::from_ref(&pki.ca_der),
        Alpn::H1,
    )
    .await
    .unwrap();
    let resp = s.send(request("GET", &target, "/small", "")).await.unwrap();
    assert_eq!(resp.status(), 200);
    proxy.shutdown().await;
    let flow = proxy
        .flow(|f| f.kind == mcptap_flow::FlowKind::Tunnel)
        .await;
    assert_eq!(flow.state, FlowState::Aborted);
    assert_eq!(flow.error.unwrap().kind, ErrorKind::Shutdown);
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_reading_the_request_body_and_never_answers_is_a_504() {
    let pki = TestPki::new();
    // Reads the head, never the body, never answers.
    let up = raw_upstream(|s| write_slowly(s, vec![], Duration::ZERO)).await;
    let proxy = TestProxy::start(&pki, short_limits).await;
    let size = 64 << 20;
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head =
        format!("POST http://{up}/upload HTTP/1.1\r\nHost: {up}\r\nContent-Length: {size}\r\n\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..size / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    // The answer comes while the client is still sending (its body is drained, not read to the
    // end here).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text(&out).contains("--response-timeout") {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    assert!(text(&out).starts_with("HTTP/1.1 504"), "{}", text(&out));
    let flow = proxy.flow(has_path("/upload")).await;
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout, "{}", err.message);
    assert_eq!(err.limit, limit(Phase::ResponseHead));
    assert!(
        err.message.starts_with("the upstream neither read"),
        "{}",
        err.message
    );
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_read_is_not_an_idle_upstream() {
    let pki = TestPki::new();
    const SIZE: usize = 8 << 20;
    let up = raw_upstream(|mut s| async move {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let _ = s.write_all(&vec![b'x'; SIZE]).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let proxy = TestProxy::start(&pki, short_limits).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get(up, "/fast")).await.unwrap();
    // The upstream has sent everything; the client reads nothing for three idle limits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = read_until_closed(&mut s).await;
    assert_eq!(body_of(&out).len(), SIZE);
    let flow = proxy.flow(has_path("/fast")).await;
    assert_eq!(flow.state, FlowState::Completed, "{:?}", flow.error);
    assert_eq!(flow.response.unwrap().body.total_len, SIZE as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_while_reverse_mode_reads_metadata_is_an_aborted_flow_at_once() {
    let pki = TestPki::new();
    // Metadata whose body stalls after 10 of its 100 bytes.
    let up = raw_upstream(|s| {
        write_slowly(
            s,
            vec![b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"resourc"],
            Duration::ZERO,
        )
    })
    .await;
    let proxy = TestProxy::start(&pki, |c| {
        c.reverse = Some(mcptap_proxy::reverse::ReverseConfig {
            upstream: mcptap_proxy::reverse::parse_upstream(&format!("http://{up}")).unwrap(),
            routes: Vec::new(),
            rewrite_metadata: true,
        });
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let path = "/.well-known/oauth-protected-resource/mcp";
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let flow = proxy.flow(has_path(path)).await;
    assert_eq!(flow.state, FlowState::Aborted);
    let err = flow.error.unwrap();
    assert_eq!(err.kind, ErrorKind::ClientDisconnected);
    assert!(
        err.message.ends_with("for the response body to be relayed"),
        "{}",
        err.message
    );
}
