//! The probe's HTTP/1.1 client. Every request goes through mcptap's own proxy (an absolute URI
//! for `http`, `CONNECT` then TLS trusting mcptap's CA for `https`), one connection per
//! request: the probe sends a dozen requests, one at a time, so that the proxy numbers them in
//! the order they were sent and the probe can name each step's flows as it runs.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::Instrument as _;

/// Bytes of a response body the probe reads (the proxy records its own copy).
const BODY_LIMIT: usize = 4 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be requested.
    #[error("bad URL {0:?}")]
    Url(String),
    /// The connection to mcptap's own proxy failed.
    #[error("cannot reach the probe's proxy")]
    Proxy(#[source] std::io::Error),
    /// The proxy refused the tunnel.
    #[error("the proxy answered CONNECT with {0}")]
    Connect(String),
    /// TLS with the proxy's minted certificate failed.
    #[error("TLS through the proxy failed")]
    Tls(#[source] std::io::Error),
    /// HTTP framing or I/O.
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(HeaderName, String)>,
    /// Body and its content type.
    pub body: Option<(&'static str, Bytes)>,
    /// Read the response head only and drop the connection (an event stream that never ends).
    pub head_only: bool,
}

impl Req {
    /// A request without body.
    pub fn new(method: Method, url: impl Into<String>) -> Req {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            head_only: false,
        }
    }

    /// A GET.
    pub fn get(url: impl Into<String>) -> Req {
        Req::new(Method::GET, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }

    /// A JSON body.
    pub fn json(mut self, v: &serde_json::Value) -> Req {
        self.body = Some(("application/json", Bytes::from(v.to_string())));
        self
    }

    /// A form body.
    pub fn form(mut self, fields: &[(&str, &str)]) -> Req {
        let enc = mcptap_flow::redact::percent_encode;
        let text: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        self.body = Some((
            "application/x-www-form-urlencoded",
            Bytes::from(text.join("&")),
        ));
        self
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The flow id the proxy gave the exchange.
    pub flow: u64,
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The body (empty with `head_only`).
    pub body: Bytes,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (a JSON body, or the first `data:` event of an event stream that
    /// holds JSON).
    pub fn json(&self) -> Option<serde_json::Value> {
        if let Ok(v) = serde_json::from_slice(&self.body) {
            return Some(v);
        }
        let text = std::str::from_utf8(&self.body).ok()?;
        let mut data = String::new();
        for line in text.lines().chain(std::iter::once("")) {
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.is_empty() && !data.is_empty() {
                if let Ok(v) = serde_json::from_str(&data) {
                    return Some(v);
                }
                data.clear();
            }
        }
        None
    }

    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The client: where the proxy is, and the TLS settings that trust its CA.
pub struct Client {
    proxy: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    sent: u64,
}

/// The parts of an absolute URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https` or `http`.
    pub scheme: String,
    /// Host, without brackets.
    pub host: String,
    /// Port (the scheme's default when absent).
    pub port: u16,
    /// Path and query (`/` at least).
    pub path_and_query: String,
}

impl Url {
    /// Parses an absolute http(s) URL.
    pub fn parse(s: &str) -> Option<Url> {
        let uri: http::Uri = s.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        Some(Url {
            scheme,
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(default),
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// `scheme://host[:port]`, the port only when not the default.
    pub fn origin(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            format!("{}://{host}", self.scheme)
        } else {
            format!("{}://{host}:{}", self.scheme, self.port)
        }
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query)
    }
}

impl Client {
    /// A client sending through the proxy at `proxy`, trusting the CA certificate in `ca_pem`.
    pub fn new(proxy: SocketAddr, ca_pem: &std::path::Path) -> anyhow::Result<Client> {
        use anyhow::Context as _;
        let pem = std::fs::read(ca_pem)
            .with_context(|| format!("cannot read mcptap's CA {}", ca_pem.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.context("mcptap's CA certificate is not valid PEM")?)
                .context("mcptap's CA certificate is not usable")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS settings")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            proxy,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            sent: 0,
        })
    }

    /// Requests sent so far (each is one flow of the session).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends `req`, waiting at most `timeout` for the whole answer (the head only with
    /// `head_only`).
    pub async fn send(&mut self, req: Req, timeout: Duration) -> Result<Reply, HttpError> {
        self.sent += 1;
        let flow = self.sent;
        match tokio::time::timeout(timeout, self.exchange(req, flow)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }

    async fn exchange(&self, req: Req, flow: u64) -> Result<Reply, HttpError> {
        let url = Url::parse(&req.url).ok_or_else(|| HttpError::Url(req.url.clone()))?;
        let tcp = TcpStream::connect(self.proxy)
            .await
            .map_err(HttpError::Proxy)?;
        let _ = tcp.set_nodelay(true);
        let authority = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let (io, target): (Box<dyn Io>, String) = if url.scheme == "https" {
            let tcp = connect_tunnel(tcp, &authority).await?;
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| HttpError::Url(req.url.clone()))?;
            let tls = self.tls.connect(name, tcp).await.map_err(HttpError::Tls)?;
            (Box::new(tls), url.path_and_query.clone())
        } else {
            (Box::new(tcp), req.url.clone())
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(HttpError::Http)?;
        let conn = tokio::spawn(
            async move {
                let _ = conn.await;
            }
            .instrument(tracing::debug_span!("probe connection", flow)),
        );
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(target)
            .header(
                http::header::HOST,
                url.origin().split_once("://").map_or("", |(_, h)| h),
            )
            .header(
                http::header::USER_AGENT,
                concat!("mcptap-probe/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &req.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                builder = builder.header(k, v);
            }
        }
        let body = match &req.body {
            Some((ct, b)) => {
                builder = builder.header(http::header::CONTENT_TYPE, *ct);
                b.clone()
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|_| HttpError::Url(req.url.clone()))?;
        let result = async {
            let resp = sender.send_request(request).await?;
            let (parts, body) = resp.into_parts();
            let body = if req.head_only {
                Bytes::new()
            } else {
                http_body_util::Limited::new(body, BODY_LIMIT)
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default()
            };
            Ok::<_, hyper::Error>((parts, body))
        }
        .await;
        if req.head_only {
            conn.abort();
        }
        let (parts, body) = result.map_err(HttpError::Http)?;
        Ok(Reply {
            flow,
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// `CONNECT authority` on `tcp`; the stream once the proxy says 200.
async fn connect_tunnel(mut tcp: TcpStream, authority: &str) -> Result<TcpStream, HttpError> {
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(HttpError::Proxy)?;
    // Read byte by byte up to the blank line: nothing past it may be consumed.
    let mut got = Vec::with_capacity(128);
    while !got.ends_with(b"\r\n\r\n") {
        if got.len() > 16 * 1024 {
            return Err(HttpError::Connect("an endless answer".into()));
        }
        let b = tcp.read_u8().await.map_err(HttpError::Proxy)?;
        got.push(b);
    }
    let text = String::from_utf8_lossy(&got);
    let status = text.lines().next().unwrap_or("").to_owned();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(HttpError::Connect(status));
    }
    Ok(tcp)
}

/// Random bytes from the TLS provider's generator, as unpadded base64url.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    // The provider's generator fails only where the OS has none; time then stands in (the
    // values are test state and PKCE verifiers of a probe, not long-lived secrets).
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The PKCE S256 challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_what_the_client_needs() {
        let u = Url::parse("https://mcp.example/a/mcp?x=1").unwrap();
        assert_eq!(u.port, 443);
        assert_eq!(u.origin(), "https://mcp.example");
        assert_eq!(u.path(), "/a/mcp");
        let u = Url::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(u.origin(), "http://127.0.0.1:9");
        assert!(Url::parse("ftp://x/").is_none());
    }

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_ne!(random_token(32), random_token(32));
    }

    #[test]
    fn event_stream_bodies_give_their_json() {
        let r = Reply {
            flow: 1,
            status: 200,
            headers: HeaderMap::new(),
            body: Bytes::from("event: message\ndata: {\"a\":1}\n\n"),
        };
        assert_eq!(r.json().unwrap()["a"], 1);
    }
}
