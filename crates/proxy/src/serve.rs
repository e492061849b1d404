//! Serving HTTP on client streams: the decrypted or plain streams inside tunnels (HTTP/1.1 or
//! HTTP/2, whichever the client chose), each request handed to [`forward`](crate::forward). The
//! proxy listener's own connections ([`crate::listener`]) are driven the same way. Every
//! connection drains on shutdown and is dropped at the deadline.

use crate::context::ConnCtx;
use crate::exec::SpanExecutor;
use crate::message::ProxyBody;
use crate::shared::Shared;
use crate::shutdown::{Guard, Phase};
use crate::tap::record_failed;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mcptap_flow::{now_micros, ErrorKind, Flow, FlowError};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A hyper connection that can be asked to finish gracefully.
pub(crate) trait Drain: Future {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S> Drain for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Drain for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, ProxyBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Drain for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<ProxyBody>,
    >,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, ProxyBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` to completion, draining it when shutdown starts and dropping it at the deadline.
/// Returns the connection's own result, or `None` when it was dropped.
pub(crate) async fn drive<C, T, E>(conn: C, mut guard: Guard) -> Option<Result<T, E>>
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

pub(crate) fn h1_builder() -> hyper::server::conn::http1::Builder {
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
pub(crate) fn record_protocol_error(shared: &Shared, ctx: &ConnCtx, e: &hyper::Error) {
    if !(e.is_parse() || e.is_parse_too_large()) {
        return;
    }
    let (host, port) = ctx
        .target
        .as_ref()
        .map(|t| (t.host.clone(), t.port))
        .unwrap_or_default();
    let now = now_micros();
    let mut flow = Flow {
        request: mcptap_flow::Request {
            method: "?".to_owned(),
            url: String::new(),
            ..Default::default()
        },
        ..ctx.flow(shared.ids.next(), host, port, now)
    };
    flow.timings.finished = Some(now);
    let error = FlowError::new(
        ErrorKind::ClientProtocol,
        format!("malformed request from the client: {e}"),
    );
    record_failed(&shared.events, flow, error);
}

fn tunnel_service(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        async move { Ok::<_, Infallible>(crate::forward::forward(shared, ctx, req).await) }
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
    let conn = hyper::server::conn::http2::Builder::new(SpanExecutor)
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
    let mut builder = hyper_util::server::conn::auto::Builder::new(SpanExecutor);
    builder.http1().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Some(Err(e)) = drive(conn, guard).await {
        tracing::debug!("plain tunnel connection: {e}");
    }
}
