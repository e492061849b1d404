//! Request targets with bad ports or authorities, sent over raw TCP to the real proxy: a `400`
//! naming the target and a failed flow (the client's fault), never a default port.

use crate::common::pki::TestPki;
use crate::common::proxy::TestProxy;
use mcptap_flow::{ErrorKind, FlowState};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (a request line and headers) and returns everything the proxy answered until it
/// closed the connection.
async fn raw(proxy: &TestProxy, head: &str) -> String {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ports_get_a_400_naming_the_target_and_a_failed_flow() {
    let pki = TestPki::new();
    let proxy = TestProxy::start(&pki, |_| {}).await;
    for (method, target, why) in [
        (
            "GET",
            "http://127.0.0.1:99999/",
            "port 99999 is out of range",
        ),
        (
            "GET",
            "http://127.0.0.1:65536/mcp",
            "port 65536 is out of range",
        ),
        ("GET", "http://127.0.0.1:0/", "port 0"),
        ("GET", "http://127.0.0.1:/", "empty port"),
        ("CONNECT", "localhost:99999", "port 99999 is out of range"),
        ("CONNECT", "localhost:65536", "port 65536 is out of range"),
        ("CONNECT", "localhost:0", "port 0"),
        ("CONNECT", "localhost:", "empty port"),
        ("CONNECT", "localhost", "no port"),
    ] {
        let answer = raw(
            &proxy,
            &format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{method} {target}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(
            body.contains(target) && body.contains(why),
            "{method} {target}: {answer}"
        );
        let flow = proxy
            .flow(|f| f.request.method == method && f.request.url == target)
            .await;
        assert_eq!(flow.state, FlowState::Failed, "{method} {target}");
        let err = flow.error.as_ref().unwrap();
        assert_eq!(err.kind, ErrorKind::ClientProtocol, "{method} {target}");
        assert!(err.message.contains(why), "{method} {target}: {err:?}");
        assert_eq!(flow.status(), Some(400));
        assert!(
            ![80, 443].contains(&flow.port),
            "{method} {target} recorded with a default port {}",
            flow.port
        );
    }
}
