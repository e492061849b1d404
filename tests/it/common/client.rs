//! A real client that goes through the proxy the way HTTPS_PROXY users do: `CONNECT`, then TLS
//! trusting only the given roots, then HTTP/1.1 or HTTP/2 (by ALPN) with hyper.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which HTTP version to ask for with ALPN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alpn {
    H1,
    H2,
}

/// Opens a CONNECT tunnel through `proxy` to `target` (`host:port`) and returns the raw stream
/// after the proxy's `200`.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> std::io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("proxy closed during CONNECT"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("CONNECT refused: {head}")));
    }
    Ok(tcp)
}

/// A request sender over one tunnelled TLS connection.
pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Sender::H1(s) => {
                let mut req = req;
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".into());
                *req.uri_mut() = pq.parse().unwrap();
                // The previous exchange may still be finishing on this connection.
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// CONNECT + TLS (trusting `roots`, SNI `server_name`) + HTTP handshake.
pub async fn tls_client(
    proxy: SocketAddr,
    target: &str,
    server_name: &str,
    roots: &[CertificateDer<'static>],
    alpn: Alpn,
) -> std::io::Result<(Sender, Option<Vec<u8>>)> {
    let tcp = connect_tunnel(proxy, target).await?;
    let protos: &[&[u8]] = match alpn {
        Alpn::H1 => &[b"http/1.1"],
        Alpn::H2 => &[b"h2"],
    };
    let cfg = super::pki::client_config(roots, protos);
    let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = TokioIo::new(tls);
    let sender = if negotiated.as_deref() == Some(b"h2") {
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn.with_upgrades());
        Sender::H1(s)
    };
    Ok((sender, negotiated))
}

/// Builds a request for a tunnelled connection (origin-form for h1, absolute for h2).
pub fn request(
    method: &str,
    authority: &str,
    path: &str,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://{authority}{path}"))
        .header("host", authority)
        .body(Full::new(body.into()))
        .unwrap()
}

/// Reads a whole body.
pub async fn body_bytes(resp: http::Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}
