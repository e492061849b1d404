//! Serving HTTP on client connections: the proxy listener itself (HTTP/1.1, where CONNECT and
//! absolute-form requests arrive) and the decrypted or plain streams inside tunnels (HTTP/1.1 or
//! HTTP/2, whichever the client chose). Every connection drains on shutdown and is dropped at the
//! deadline.

use crate::connect::handle_connect;
use crate::forward::{self, is_connect, next_id, ConnCtx};
use crate::shutdown::{Guard, Phase};
use crate::Shared;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mcptap_flow::{now_micros, ErrorKind, Flow, FlowError, FlowEvent, FlowState};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A hyper connection that can be asked to finish gracefully.
trait Drain: Future {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S> Drain for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = forward::ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Drain for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = forward::ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, forward::ProxyBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Drain for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<forward::ProxyBody>,
    >,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, forward::ProxyBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` to completion, draining it when shutdown starts and dropping it at the deadline.
/// Returns the connection's own result, or `None` when it was dropped.
async fn drive<C, T, E>(conn: C, mut guard: Guard) -> Option<Result<T, E>>
where
    C: Drain + Future<Output = Result<T, E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut draining = guard.phase() >= Phase::Draining;
    if draining {
        conn.as_mut().drain();
    }
    loop {
        let mut g = guard.clone();
        tokio::select! {
            res = conn.as_mut() => return Some(res),
            _ = g.reached(Phase::Draining), if !draining => {
                draining = true;
                conn.as_mut().drain();
            }
            _ = guard.reached(Phase::Stop), if draining => return None,
        }
    }
}

fn h1_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new()).keep_alive(true);
    b
}

/// Inside a tunnel the client has already proven itself with CONNECT (and TLS): no per-request
/// header timer, which would cost a timer-wheel insert and removal on every exchange.
fn h1_tunnel_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.keep_alive(true).header_read_timeout(None);
    b
}

/// Records a client connection that broke HTTP (hyper already answered `400` where it could).
fn record_protocol_error(shared: &Shared, ctx: &ConnCtx, e: &hyper::Error) {
    if !(e.is_parse() || e.is_parse_too_large()) {
        return;
    }
    let (host, port) = ctx
        .target
        .as_ref()
        .map(|t| (t.host.clone(), t.port))
        .unwrap_or_default();
    let now = now_micros();
    let flow = Flow {
        id: next_id(shared),
        client_addr: Some(ctx.client_addr_text.clone()),
        host,
        port,
        client_tls: ctx.client_tls.clone(),
        state: FlowState::Failed,
        request: mcptap_flow::Request {
            method: "?".to_owned(),
            url: String::new(),
            ..Default::default()
        },
        timings: mcptap_flow::Timings {
            started: now,
            finished: Some(now),
            ..Default::default()
        },
        error: Some(FlowError {
            kind: ErrorKind::ClientProtocol,
            message: format!("malformed request from the client: {e}"),
            hint: None,
            limit: None,
        }),
        ..Default::default()
    };
    shared.events.send(FlowEvent::Failed {
        flow: Box::new(flow),
    });
}

/// Serves the proxy listener's side of one client connection.
pub(crate) async fn serve_listener_conn(shared: Arc<Shared>, stream: TcpStream, guard: Guard) {
    let Ok(client_addr) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let ctx = Arc::new(ConnCtx::new(
        &shared,
        client_addr,
        None,
        None,
        guard.clone(),
    ));
    if shared.reverse.is_some() {
        serve_reverse_conn(shared, ctx, stream, guard).await;
        return;
    }
    let svc = {
        let (shared, ctx, guard) = (shared.clone(), ctx.clone(), guard.clone());
        service_fn(move |req| {
            let (shared, ctx, guard) = (shared.clone(), ctx.clone(), guard.clone());
            async move {
                if let Some(denied) = check_proxy_auth(&shared, &req) {
                    return Ok::<_, Infallible>(denied);
                }
                Ok::<_, Infallible>(if is_connect(&req) {
                    handle_connect(shared, ctx, req, guard).await
                } else {
                    forward::forward(shared, ctx, req).await
                })
            }
        })
    };
    let conn = h1_builder()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    if let Some(Err(e)) = drive(conn, guard).await {
        record_protocol_error(&shared, &ctx, &e);
        tracing::debug!(%client_addr, "client connection: {e}");
    }
}

/// `--proxy-auth`: a `407` unless the request carries the expected credentials.
fn check_proxy_auth(
    shared: &Shared,
    req: &http::Request<hyper::body::Incoming>,
) -> Option<http::Response<forward::ProxyBody>> {
    let expected = shared.proxy_auth.as_deref()?;
    let given = req
        .headers()
        .get(http::header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| basic_matches(g, expected)) {
        return None;
    }
    let mut resp = forward::text_response(
        http::StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "mcptap: proxy authentication required (--proxy-auth)\n",
    );
    resp.headers_mut().insert(
        http::header::PROXY_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"mcptap\""),
    );
    Some(resp)
}

/// True when `given` is `<scheme> <credentials>` with the scheme `expected` has (compared
/// without regard to case, RFC 9110 §11.1) and exactly its credentials; spaces may repeat.
fn basic_matches(given: &str, expected: &str) -> bool {
    let split = |s: &str| -> Option<(String, String)> {
        let (scheme, cred) = s.trim().split_once(' ')?;
        Some((scheme.to_ascii_lowercase(), cred.trim_start().to_owned()))
    };
    match (split(given), split(expected)) {
        (Some((gs, gc)), Some((es, ec))) => {
            // Compared in full whatever the first difference (no early exit on the secret).
            let same = gc.len() == ec.len()
                && gc
                    .bytes()
                    .zip(ec.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            gs == es && same
        }
        _ => false,
    }
}

/// Reverse mode: the client speaks to mcptap as to the server itself, TLS or plain.
async fn serve_reverse_conn(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    stream: TcpStream,
    guard: Guard,
) {
    let at = crate::connect::Handshake {
        deadline: tokio::time::Instant::now() + shared.limits.tls_handshake,
        started: now_micros(),
    };
    // A connection that sends nothing is closed at the limit (there is no request to record).
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(at.deadline, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let target = forward::Target {
        host: "localhost".to_owned(),
        port,
        tls: false,
    };
    crate::connect::dispatch(shared, ctx, stream, first[0], target, guard, at).await;
}

fn tunnel_service(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<forward::ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<forward::ProxyBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        async move { Ok::<_, Infallible>(forward::forward(shared, ctx, req).await) }
    })
}

/// HTTP/1.1 inside a tunnel (upgrades allowed: WebSocket).
pub(crate) async fn serve_h1<IO>(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: IO, guard: Guard)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tunnel_service(shared.clone(), ctx.clone());
    let conn = h1_tunnel_builder()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Some(Err(e)) = drive(conn, guard).await {
        record_protocol_error(&shared, &ctx, &e);
        tracing::debug!("tunnel connection: {e}");
    }
}

/// HTTP/2 inside a tunnel.
pub(crate) async fn serve_h2<IO>(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: IO, guard: Guard)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tunnel_service(shared.clone(), ctx.clone());
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), svc);
    if let Some(Err(e)) = drive(conn, guard).await {
        tracing::debug!("h2 tunnel connection: {e}");
    }
}

/// Plain text inside a tunnel: HTTP/1.1 or HTTP/2 with prior knowledge.
pub(crate) async fn serve_auto<IO>(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: IO, guard: Guard)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tunnel_service(shared.clone(), ctx.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Some(Err(e)) = drive(conn, guard).await {
        tracing::debug!("plain tunnel connection: {e}");
    }
}
