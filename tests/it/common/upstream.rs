//! A real HTTPS (or plain HTTP) upstream on loopback: hyper + rustls, HTTP/1.1 and HTTP/2.
//!
//! Routes: `/small` (a short text), `/echo` (echoes the request body and reports the
//! Authorization header it got in `x-seen-authorization`), `/big?n=BYTES` (streams that many
//! bytes in 64 KiB frames), `/sse` (sends one event, then waits until the test releases the
//! rest), `/ws` (upgrades to a byte echo), `/status/CODE`, `/close` (answers, then closes the
//! connection). Every request it receives is logged ([`Upstream::seen`]).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use super::pki::TestPki;

type Body = BoxBody<Bytes, Infallible>;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target as received (origin-form path and query, or the whole URI).
    pub target: String,
    /// `Host`, or the HTTP/2 `:authority`.
    pub host: Option<String>,
    pub authorization: Option<String>,
}

impl Seen {
    fn of(req: &Request<Incoming>) -> Seen {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Seen {
            method: req.method().to_string(),
            target: req.uri().to_string(),
            host: header("host").or_else(|| req.uri().authority().map(|a| a.to_string())),
            authorization: header("authorization"),
        }
    }
}

/// A running upstream. Dropping it stops accepting.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Every request received, in order.
    pub seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    /// Released by the test to let `/sse` send its remaining events and end.
    pub sse_release: Arc<Notify>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// HTTPS on 127.0.0.1:0 with the PKI's leaf, offering `alpn`.
    pub async fn https(pki: &TestPki, alpn: &[&[u8]]) -> Upstream {
        Upstream::start(Some(tokio_rustls::TlsAcceptor::from(
            pki.server_config(alpn),
        )))
        .await
    }

    /// Plain HTTP on 127.0.0.1:0.
    pub async fn http() -> Upstream {
        Upstream::start(None).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let rel = release.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let tls = tls.clone();
                let rel = rel.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        log.lock().unwrap().push(Seen::of(&req));
                        route(req, rel.clone())
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acc) => {
                            let Ok(stream) = acc.accept(tcp).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            sse_release: release,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn route(
    mut req: Request<Incoming>,
    release: Arc<Notify>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let resp = match path.as_str() {
        "/close" => Response::builder()
            .header("connection", "close")
            .body(full("closing\n"))
            .unwrap(),
        "/small" => Response::builder()
            .header("content-type", "text/plain")
            .header("x-upstream-version", format!("{:?}", req.version()))
            .body(full("hello from upstream\n"))
            .unwrap(),
        "/echo" => {
            let seen = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_else(|| "none".to_owned());
            let ct = req
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(http::HeaderValue::from_static("application/octet-stream"));
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Response::builder()
                .header("content-type", ct)
                .header("x-seen-authorization", seen)
                .body(full(body))
                .unwrap()
        }
        "/big" => {
            let n: usize = query
                .strip_prefix("n=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut left = n;
                while left > 0 {
                    let take = left.min(chunk.len());
                    if tx.send(Ok(Frame::data(chunk.slice(..take)))).await.is_err() {
                        return;
                    }
                    left -= take;
                }
            });
            let stream = tokio_stream_from(rx);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-length", n.to_string())
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        "/sse" => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let first = "event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/first\"}\n\n";
                if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
                    return;
                }
                release.notified().await;
                for i in 2..=3 {
                    let ev = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(StreamBody::new(tokio_stream_from(rx)).boxed())
                .unwrap()
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(""))
                .unwrap()
        }
        // A minimal OAuth-protected resource for inject-mode tests: metadata naming this origin,
        // a token endpoint (`?ttl=` sets expires_in), and /mcp reporting the Authorization seen.
        "/.well-known/oauth-protected-resource/mcp" => {
            let host = req
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost")
                .to_owned();
            Response::builder()
                .header("content-type", "application/json")
                .body(full(format!(
                    r#"{{"resource":"https://{host}/mcp","authorization_servers":["https://{host}"]}}"#
                )))
                .unwrap()
        }
        "/token" => {
            let ttl = query.strip_prefix("ttl=").unwrap_or("3600").to_owned();
            Response::builder()
                .header("content-type", "application/json")
                .body(full(format!(
                    r#"{{"access_token":"tok-from-upstream-{ttl}","token_type":"Bearer","expires_in":{ttl}}}"#
                )))
                .unwrap()
        }
        "/mcp" | "/other" => {
            let seen = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_else(|| "none".to_owned());
            Response::builder()
                .header("content-type", "application/json")
                .body(full(format!(r#"{{"seen":"{seen}"}}"#)))
                .unwrap()
        }
        "/headers" => {
            let mut text = String::new();
            for (n, v) in req.headers() {
                text.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::builder()
                .header("content-type", "text/plain")
                .body(full(text))
                .unwrap()
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            Response::builder()
                .status(code)
                .body(full(format!("status {code}\n")))
                .unwrap()
        }
        _ => Response::builder()
            .status(404)
            .body(full("not found\n"))
            .unwrap(),
    };
    Ok(resp)
}

/// Adapts an mpsc receiver to a `Stream` without pulling in tokio-stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
