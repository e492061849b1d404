//! The upstream side: TCP (with `TCP_NODELAY`) plus verified TLS, pooled by hyper-util's client.
//!
//! The connector reports what it negotiated (ALPN, TLS version) to every response through
//! hyper-util's `Connected::extra`, and fails with a typed [`ConnectError`] so that the handler
//! can tell DNS, refusal, timeout and TLS failures apart without reading message text.
//!
//! [`head_within`] waits for a response head under `--response-timeout` and turns every way
//! that can fail into a [`FlowError`] that names the side at fault: a broken request body is
//! the client's ([`BodyFault`]), a response head that is not valid HTTP or frames its body
//! ambiguously is the upstream's.

use crate::limits::{exceeded, human};
use crate::message::BoxError;
use crate::tap::{BodyFault, Recorder};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use mcptap_flow::{now_micros, ErrorKind, FlowError, Phase, TlsInfo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URI had no host.
    #[error("the request has no host to connect to")]
    NoHost,
    /// Name resolution failed.
    #[error("cannot resolve {host}: {source}")]
    Dns {
        /// The name.
        host: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Every address refused or failed.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        /// The name.
        host: String,
        /// The port.
        port: u16,
        /// The last error.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to {host}:{port} timed out after {}", human(*after))]
    Timeout {
        /// The name.
        host: String,
        /// The port.
        port: u16,
        /// The timeout.
        after: Duration,
    },
    /// The upstream proxy (`--upstream-proxy`) refused or failed the CONNECT.
    #[error("upstream proxy {proxy} refused CONNECT {host}:{port}: {reason}")]
    UpstreamProxy {
        /// The proxy, `host:port`.
        proxy: String,
        /// The target.
        host: String,
        /// The target port.
        port: u16,
        /// Its status line or the I/O error.
        reason: String,
    },
    /// The TLS handshake failed (certificate not trusted, protocol mismatch, …).
    #[error("TLS handshake with {host}:{port} failed: {source}")]
    Tls {
        /// The name.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// The flow error kind this maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::NoHost
            | ConnectError::Connect { .. }
            | ConnectError::UpstreamProxy { .. } => ErrorKind::UpstreamConnect,
            ConnectError::Dns { .. } => ErrorKind::UpstreamDns,
            ConnectError::Timeout { .. } => ErrorKind::UpstreamTimeout,
            ConnectError::Tls { .. } => ErrorKind::UpstreamTls,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConnectError::Tls { source, .. } => {
                let cert_problem = source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                cert_problem.then(|| {
                    "the upstream's certificate is not trusted: pass its CA with --upstream-ca FILE \
                     (or -k/--ssl-insecure to skip verification)"
                        .to_owned()
                })
            }
            ConnectError::Connect { .. } => Some("is the upstream server running?".to_owned()),
            ConnectError::Timeout { after, .. } => Some(format!(
                "mcptap's limit; raise it with --connect-timeout (now {})",
                human(*after)
            )),
            ConnectError::Dns { .. } => Some("check the host name".to_owned()),
            _ => None,
        }
    }
}

impl ConnectError {
    /// The flow error: kind, message, hint, and the limit when the connect limit fired.
    pub fn flow_error(&self) -> FlowError {
        match self {
            ConnectError::Timeout { after, .. } => exceeded(
                ErrorKind::UpstreamTimeout,
                Phase::UpstreamConnect,
                *after,
                self.to_string(),
                "--connect-timeout",
            ),
            _ => FlowError {
                kind: self.kind(),
                message: self.to_string(),
                hint: self.hint(),
                limit: None,
            },
        }
    }
}

/// What was negotiated with the upstream, attached to every response from that connection.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    /// TLS parameters; `None` for plain HTTP.
    pub tls: Option<Arc<TlsInfo>>,
    /// The address connected to.
    pub peer: SocketAddr,
}

/// Another proxy that mcptap's upstream connections go through (`--upstream-proxy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamProxy {
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `user:pass` for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
}

impl UpstreamProxy {
    /// Parses `http://[user:pass@]host:port`.
    pub fn parse(url: &str) -> Result<UpstreamProxy, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("--upstream-proxy {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") | None => {}
            Some(other) => {
                return Err(format!(
                    "--upstream-proxy {url:?}: only http:// proxies are supported, not {other}://"
                ))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--upstream-proxy {url:?}: no host"))?;
        let (credentials, hostport) = match authority.as_str().rsplit_once('@') {
            Some((c, h)) => (Some(c.to_owned()), h),
            None => (None, authority.as_str()),
        };
        let parsed: http::uri::Authority = hostport
            .parse()
            .map_err(|e| format!("--upstream-proxy {url:?}: {e}"))?;
        Ok(UpstreamProxy {
            host: parsed
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: parsed.port_u16().unwrap_or(8080),
            credentials,
        })
    }
}

/// Connects to upstreams: resolve, TCP with `TCP_NODELAY` (directly or through an upstream
/// proxy's CONNECT), then TLS for `https`.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
    via: Option<Arc<UpstreamProxy>>,
    /// `-k`: certificates are not verified; every TLS connection's info says so.
    unverified: bool,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector using `tls` for https upstreams.
    pub fn new(
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
        via: Option<UpstreamProxy>,
    ) -> Connector {
        Connector {
            tls: TlsConnector::from(tls),
            connect_timeout,
            via: via.map(Arc::new),
            unverified: false,
        }
    }

    /// Marks the TLS connections it makes as not verified ([`TlsInfo::unverified`]), for a
    /// `tls` config that skips verification (`-k`).
    pub fn unverified(mut self, yes: bool) -> Connector {
        self.unverified = yes;
        self
    }

    /// A byte stream to `host:port`: a direct TCP connection, or a CONNECT tunnel through the
    /// upstream proxy.
    pub async fn open(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let Some(via) = self.via.clone() else {
            return self.tcp(host, port).await;
        };
        let mut tcp = self.tcp(&via.host, via.port).await?;
        let refused = |reason: String| ConnectError::UpstreamProxy {
            proxy: format!("{}:{}", via.host, via.port),
            host: host.to_owned(),
            port,
            reason,
        };
        let target = format!("{}:{port}", crate::target::url_host(host));
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &via.credentials {
            use base64::Engine as _;
            let enc = base64::engine::general_purpose::STANDARD.encode(c.as_bytes());
            req.push_str(&format!("Proxy-Authorization: Basic {enc}\r\n"));
        }
        req.push_str("\r\n");
        let handshake = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tcp.write_all(req.as_bytes()).await?;
            // Read the response head byte by byte: nothing after it may be consumed.
            let mut head = Vec::with_capacity(128);
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tcp.read(&mut b).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the proxy closed the connection",
                    ));
                }
                head.push(b[0]);
                if head.len() > 16 * 1024 {
                    return Err(io::Error::other("response head too large"));
                }
            }
            Ok(head)
        };
        let head = match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(refused(e.to_string())),
            Err(_) => return Err(refused("timed out".to_owned())),
        };
        let status_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if !code.starts_with('2') {
            return Err(refused(status_line));
        }
        Ok(tcp)
    }

    /// Opens a TCP connection to `host:port` (any resolved address), with `TCP_NODELAY`.
    pub async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let timeout = self.connect_timeout;
        let attempt = async {
            let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|source| ConnectError::Dns {
                        host: host.to_owned(),
                        source,
                    })?
                    .collect(),
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = e,
                }
            }
            Err(ConnectError::Connect {
                host: host.to_owned(),
                port,
                source: last,
            })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout {
                host: host.to_owned(),
                port,
                after: timeout,
            }),
        }
    }

    /// Connects to the origin of `uri` (TCP, then TLS for `https`).
    pub(crate) async fn connect(
        self,
        uri: http::Uri,
    ) -> Result<TokioIo<UpstreamConn>, ConnectError> {
        let host = uri.host().ok_or(ConnectError::NoHost)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = self.open(&host, port).await?;
        let peer = tcp.peer_addr().map_err(|source| ConnectError::Connect {
            host: host.clone(),
            port,
            source,
        })?;
        if !https {
            return Ok(TokioIo::new(UpstreamConn::Plain(
                tcp,
                UpstreamInfo { tls: None, peer },
            )));
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| ConnectError::Tls {
            host: host.clone(),
            port,
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let handshake = self.tls.connect(name, tcp);
        let tls = match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => return Err(ConnectError::Tls { host, port, source }),
            Err(_) => {
                return Err(ConnectError::Timeout {
                    host,
                    port,
                    after: self.connect_timeout,
                })
            }
        };
        let (_, session) = tls.get_ref();
        let sni = Some(host.clone()).filter(|h| h.parse::<std::net::IpAddr>().is_err());
        let info = tls_info(session, sni, self.unverified);
        Ok(TokioIo::new(UpstreamConn::Tls(
            Box::new(tls),
            UpstreamInfo {
                tls: Some(Arc::new(info)),
                peer,
            },
        )))
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<UpstreamConn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A connection to an upstream, plain or TLS.
#[derive(Debug)]
pub enum UpstreamConn {
    /// Plain TCP.
    Plain(TcpStream, UpstreamInfo),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>, UpstreamInfo),
}

impl UpstreamConn {
    /// What was negotiated on this connection.
    pub fn info(&self) -> &UpstreamInfo {
        match self {
            UpstreamConn::Plain(_, info) | UpstreamConn::Tls(_, info) => info,
        }
    }
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        match self {
            UpstreamConn::Plain(_, info) => Connected::new().extra(info.clone()),
            UpstreamConn::Tls(tls, info) => {
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let c = Connected::new().extra(info.clone());
                if h2 {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl AsyncRead for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamConn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            UpstreamConn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamConn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            UpstreamConn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamConn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamConn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamConn::Plain(s, _) => s.is_write_vectored(),
            UpstreamConn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamConn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            UpstreamConn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamConn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            UpstreamConn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The upstream client for requests whose bodies stream from the client.
pub(crate) type StreamClient =
    hyper_util::client::legacy::Client<Connector, crate::tap::Tap<hyper::body::Incoming>>;

/// The upstream client for the requests mcptap sends whole (`--inject-refresh`, rewritten forms).
pub(crate) type OwnClient = hyper_util::client::legacy::Client<
    Connector,
    crate::tap::Tap<http_body_util::Full<bytes::Bytes>>,
>;

/// What a TLS session negotiated, as recorded in flows (either side: the client's session with
/// mcptap, or mcptap's with the upstream).
pub(crate) fn tls_info(
    session: &rustls::CommonState,
    sni: Option<String>,
    unverified: bool,
) -> TlsInfo {
    TlsInfo {
        sni,
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        version: session
            .protocol_version()
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        cipher: session
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .map(str::to_owned),
        unverified,
    }
}

/// Waits for `send` to bring the upstream's response head, at most `limit` after the request
/// (`rec`'s) was sent whole, and checks its framing. Every failure comes back as the flow
/// error that names the side at fault.
pub(crate) async fn head_within<B>(
    limit: Duration,
    rec: &Recorder,
    mut send: std::pin::Pin<&mut impl Future<Output = Result<http::Response<B>, BoxError>>>,
) -> Result<http::Response<B>, FlowError> {
    let mut deadline = tokio::time::Instant::now() + limit;
    let mut uploaded = 0;
    let resp = loop {
        match tokio::time::timeout_at(deadline, send.as_mut()).await {
            Ok(Ok(resp)) => break resp,
            Ok(Err(e)) => return Err(flow_error(&*e)),
            Err(_) => {
                let Some(done) = rec.request_done() else {
                    // The request body is still on its way. While it moves, or while mcptap
                    // waits for the client (whose stalls the idle-body limit judges), the
                    // upstream cannot be blamed; an upstream that neither takes the body nor
                    // answers for a whole limit can.
                    let (bytes, waiting_on_client) = rec.upload();
                    if bytes == uploaded && !waiting_on_client {
                        return Err(exceeded(
                            ErrorKind::UpstreamTimeout,
                            Phase::ResponseHead,
                            limit,
                            format!(
                                "the upstream neither read the rest of the request body nor \
                                 sent a response head for {}",
                                human(limit)
                            ),
                            "--response-timeout",
                        ));
                    }
                    uploaded = bytes;
                    deadline = tokio::time::Instant::now() + limit;
                    continue;
                };
                // The limit counts from the end of the request.
                let waited = Duration::from_micros(u64::try_from(now_micros() - done).unwrap_or(0));
                if waited >= limit {
                    return Err(no_head_within(limit));
                }
                deadline = tokio::time::Instant::now() + (limit - waited);
            }
        }
    };
    check_framing(&resp)?;
    Ok(resp)
}

/// `--response-timeout` fired.
fn no_head_within(limit: Duration) -> FlowError {
    exceeded(
        ErrorKind::UpstreamTimeout,
        Phase::ResponseHead,
        limit,
        format!("the upstream sent no response head within {}", human(limit)),
        "--response-timeout",
    )
}

/// Refuses a response whose body length is ambiguous: both `Content-Length` and
/// `Transfer-Encoding` (RFC 9112 §6.3 calls it a response-splitting risk, to be handled as an
/// error). Relaying it would send the client one framing and record the other.
fn check_framing<B>(resp: &http::Response<B>) -> Result<(), FlowError> {
    let h = resp.headers();
    let Some(te) = h.get(http::header::TRANSFER_ENCODING) else {
        return Ok(());
    };
    let Some(cl) = h.get(http::header::CONTENT_LENGTH) else {
        return Ok(());
    };
    Err(FlowError {
        kind: ErrorKind::UpstreamProtocol,
        message: format!(
            "the upstream sent both Content-Length: {} and Transfer-Encoding: {} (ambiguous \
             framing, RFC 9112 §6.3); mcptap did not relay the response",
            String::from_utf8_lossy(cl.as_bytes()),
            String::from_utf8_lossy(te.as_bytes()),
        ),
        hint: Some("the upstream server (or something in front of it) is broken".to_owned()),
        limit: None,
    })
}

/// The flow error for a failed upstream exchange, found by walking the error's source chain.
pub(crate) fn flow_error(err: &(dyn std::error::Error + 'static)) -> FlowError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // A body that broke already knows whose fault it was (the client's, for a request).
        if let Some(f) = e.downcast_ref::<BodyFault>() {
            return f.error.clone();
        }
        if let Some(c @ ConnectError::Timeout { .. }) = e.downcast_ref::<ConnectError>() {
            return c.flow_error();
        }
        cur = e.source();
    }
    let (kind, message, hint) = classify(err);
    FlowError {
        kind,
        message,
        hint,
        limit: None,
    }
}

/// What the upstream sent that hyper could not parse, in words that name the upstream.
fn invalid_head(h: &hyper::Error) -> Option<&'static str> {
    if h.is_parse_too_large() {
        Some("the upstream sent a response head larger than mcptap accepts")
    } else if h.is_parse_status() {
        Some("the upstream sent an invalid HTTP status code")
    } else if h.is_parse() {
        Some("the upstream sent a response that is not valid HTTP/1.1")
    } else {
        None
    }
}

/// Classifies an error from the pooled client by walking its source chain.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> (ErrorKind, String, Option<String>) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut messages = Vec::new();
    let mut found: Option<(ErrorKind, Option<String>)> = None;
    while let Some(e) = cur {
        messages.push(e.to_string());
        if found.is_none() {
            if let Some(c) = e.downcast_ref::<ConnectError>() {
                found = Some((c.kind(), c.hint()));
            } else if let Some(f) = e.downcast_ref::<BodyFault>() {
                found = Some((f.error.kind, f.error.hint.clone()));
            } else if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    found = Some((ErrorKind::UpstreamTimeout, None));
                } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                    found = Some((ErrorKind::UpstreamDisconnected, None));
                } else if let Some(what) = invalid_head(h) {
                    // hyper's own words ("invalid HTTP version parsed") say what was wrong.
                    messages.pop();
                    messages.push(format!("{what} ({h})"));
                    found = Some((ErrorKind::UpstreamProtocol, None));
                }
            }
        }
        cur = e.source();
    }
    // The pooled client's own wrapper says little ("client error (Connect)"); skip it.
    let message = messages
        .iter()
        .filter(|m| !m.starts_with("client error ("))
        .cloned()
        .collect::<Vec<_>>();
    let message = if message.is_empty() {
        messages.join(": ")
    } else {
        dedup_chain(&message)
    };
    let (kind, hint) = found.unwrap_or((ErrorKind::UpstreamProtocol, None));
    (kind, message, hint)
}

/// Joins an error chain, leaving out links already contained in the previous one.
fn dedup_chain(links: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for l in links {
        if out.last().is_some_and(|p| p.contains(l.as_str())) {
            continue;
        }
        out.push(l);
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_proxy_urls_parse() {
        let p = UpstreamProxy::parse("http://user:p%40ss@proxy.corp:3128").unwrap();
        assert_eq!(p.host, "proxy.corp");
        assert_eq!(p.port, 3128);
        assert_eq!(p.credentials.as_deref(), Some("user:p%40ss"));
        let p = UpstreamProxy::parse("http://[::1]:8888").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.credentials),
            ("::1", 8888, None)
        );
        assert!(UpstreamProxy::parse("socks5://x:1").is_err());
        assert!(UpstreamProxy::parse("http://").is_err());
    }
}
