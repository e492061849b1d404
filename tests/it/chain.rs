//! `--upstream-proxy`: mcptap chained through a second, plain CONNECT proxy still intercepts.

use crate::common::client::body_bytes;
use crate::common::pki::TestPki;
use crate::common::proxy::TestProxy;
use crate::common::upstream::Upstream;
use mcptap_flow::ErrorKind;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A minimal CONNECT proxy that records each request head and demands Basic auth `u:p`.
async fn chain_proxy() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(head.clone());
                // base64("u:p") = dTpw
                if !head.contains("Proxy-Authorization: Basic dTpw") {
                    let _ = c
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                        .await;
                    return;
                }
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let Ok(mut up) = TcpStream::connect(&target).await else {
                    let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = c
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcptap_chained_through_an_upstream_proxy_still_intercepts() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let (chain, seen) = chain_proxy().await;
    let proxy = TestProxy::start(&pki, |c| {
        c.upstream_proxy =
            Some(mcptap_proxy::UpstreamProxy::parse(&format!("http://u:p@{chain}")).unwrap())
    })
    .await;
    let target = format!("localhost:{}", up.port());
    let resp = proxy.get(&target, "/small").await;
    assert_eq!(body_bytes(resp).await, "hello from upstream\n");
    let flow = proxy.flow(|f| f.request.url.ends_with("/small")).await;
    assert_eq!(flow.status(), Some(200), "decrypted and recorded by mcptap");
    let heads = seen.lock().unwrap().clone();
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with(&format!("CONNECT localhost:{} HTTP/1.1", up.port()))),
        "{heads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_proxy_that_refuses_is_a_502_naming_it() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let (chain, _) = chain_proxy().await;
    // Wrong credentials: the chain answers 407.
    let proxy = TestProxy::start(&pki, |c| {
        c.upstream_proxy =
            Some(mcptap_proxy::UpstreamProxy::parse(&format!("http://u:wrong@{chain}")).unwrap())
    })
    .await;
    let target = format!("localhost:{}", up.port());
    let resp = proxy.get(&target, "/small").await;
    assert_eq!(resp.status(), 502);
    let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert!(
        text.contains("upstream proxy") && text.contains("407"),
        "{text}"
    );
    let flow = proxy.flow(|f| f.request.url.ends_with("/small")).await;
    assert_eq!(flow.error.unwrap().kind, ErrorKind::UpstreamConnect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_is_required_when_configured() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let proxy = TestProxy::start(&pki, |c| c.proxy_auth = Some("u:p".into())).await;
    let connect = |auth: Option<&'static str>| {
        let addr = proxy.addr;
        let port = up.port();
        async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let extra = auth
                .map(|a| {
                    if a.contains(' ') {
                        format!("Proxy-Authorization: {a}\r\n")
                    } else {
                        format!("Proxy-Authorization: Basic {a}\r\n")
                    }
                })
                .unwrap_or_default();
            tcp.write_all(
                format!(
                    "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n{extra}\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut buf = vec![0u8; 512];
            let n = tcp.read(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    let denied = connect(None).await;
    assert!(denied.starts_with("HTTP/1.1 407"), "{denied}");
    assert!(
        denied
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{denied}"
    );
    assert!(connect(Some("dTp3cm9uZw=="))
        .await
        .starts_with("HTTP/1.1 407"));
    assert!(connect(Some("dTpw")).await.starts_with("HTTP/1.1 200"));
    // Auth schemes are case-insensitive (RFC 9110 §11.1); the credentials are not.
    for scheme in ["basic dTpw", "BASIC dTpw", "bAsIc  dTpw"] {
        let answer = connect(Some(scheme)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
    }
    for wrong in ["basic dTpW", "Bearer dTpw", "basicdTpw"] {
        let answer = connect(Some(wrong)).await;
        assert!(answer.starts_with("HTTP/1.1 407"), "{wrong}: {answer}");
    }
}
