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
use futures_util::FutureExt as _;
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
///
/// The connection goes into a box of its own before the future starts: moved into an `async fn`
/// and pinned there, it would be stored twice in the future (the argument and the pinned copy;
/// a hyper connection over TLS is ~2.5 KB), for as long as the connection lives. Callers pass
/// the connection as an expression, not a named local, for the same reason.
pub(crate) fn drive<C, T, E>(conn: C, guard: Guard) -> impl Future<Output = Option<Result<T, E>>>
where
    C: Drain + Future<Output = Result<T, E>>,
{
    let conn = Box::pin(conn);
    drive_boxed(conn, guard)
}

async fn drive_boxed<C, T, E>(mut conn: Pin<Box<C>>, mut guard: Guard) -> Option<Result<T, E>>
where
    C: Drain + Future<Output = Result<T, E>>,
{
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
    service_fn(move |req| exchange(shared.clone(), ctx.clone(), req))
}

/// The future hyper holds for one request: only a pointer to the boxed exchange.
fn exchange(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: http::Request<hyper::body::Incoming>,
) -> impl Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send {
    let exchange = boxed_forward(shared, ctx, req);
    async move { Ok::<_, Infallible>(exchange.await) }
}

/// The exchange of one request, boxed: hyper's HTTP/1.1 connection keeps a slot the size of
/// its service's future for as long as the connection lives, and an idle event stream would
/// keep a slot as large as the whole exchange (route, hooks, upstream connect and TLS
/// handshake, ~9 KB) after its response head went out. Boxed, the slot is a pointer and the
/// exchange's memory goes as soon as its response is ready.
pub(crate) fn boxed_forward(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: http::Request<hyper::body::Incoming>,
) -> Pin<Box<dyn Future<Output = http::Response<ProxyBody>> + Send>> {
    Box::pin(crate::forward::forward(shared, ctx, req))
}

/// HTTP/1.1 inside a tunnel (upgrades allowed: WebSocket).
///
/// Not an `async fn`: an async fn's future keeps its arguments for as long as it lives, and
/// `io` (a TLS stream, ~1 KB) moves into the boxed hyper connection at once. The future is the
/// driven connection and what records its end (`map`: stored once; an `async` block awaiting
/// it would hold it twice).
pub(crate) fn serve_h1<IO>(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    io: IO,
    guard: Guard,
) -> impl Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tunnel_service(shared.clone(), ctx.clone());
    let conn = h1_tunnel_builder().serve_connection(TokioIo::new(io), svc);
    drive(conn.with_upgrades(), guard).map(move |res| {
        if let Some(Err(e)) = res {
            record_protocol_error(&shared, &ctx, &e);
            tracing::debug!("tunnel connection: {e}");
        }
    })
}

/// HTTP/2 inside a tunnel. Not an `async fn`, as [`serve_h1`].
pub(crate) fn serve_h2<IO>(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    io: IO,
    guard: Guard,
) -> impl Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tunnel_service(shared, ctx);
    let mut builder = hyper::server::conn::http2::Builder::new(SpanExecutor);
    builder.timer(TokioTimer::new());
    drive(builder.serve_connection(TokioIo::new(io), svc), guard).map(|res| {
        if let Some(Err(e)) = res {
            tracing::debug!("h2 tunnel connection: {e}");
        }
    })
}

/// Plain text inside a tunnel: HTTP/1.1 or HTTP/2 with prior knowledge.
pub(crate) async fn serve_auto<IO>(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: IO, guard: Guard)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tunnel_service(shared.clone(), ctx.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(SpanExecutor);
    builder.http1().timer(TokioTimer::new());
    // (The auto connection borrows its builder, which stays in this future.)
    let conn = drive(
        builder.serve_connection_with_upgrades(TokioIo::new(io), svc),
        guard,
    );
    if let Some(Err(e)) = conn.await {
        tracing::debug!("plain tunnel connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;
    use tokio_rustls::server::TlsStream;

    /// The size of the future `f` returns, without calling it.
    fn returns<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn returns3<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle connection keeps: the futures that live as long as a connection stay small,
    /// the large states (the exchange, the TLS handshake, the hyper connection) are boxed and
    /// freed when done. Sizes are the compiler's, the same on every run; the bounds are a few
    /// times what they are now (intercept ~0.7 KB, the per-request slot a pointer), well under
    /// what they were inline (10.6 KB, 8.8 KB). Serving (~0.5 KB; 1.8 KB when it kept its
    /// stream argument) stays under the size of the TLS stream it hands to hyper.
    #[test]
    fn long_lived_futures_stay_small() {
        let exchange = returns3(exchange);
        assert!(
            exchange <= 64,
            "hyper's slot for a request: {exchange} bytes"
        );
        let h1 = returns(serve_h1::<TlsStream<TcpStream>>);
        let h2 = returns(serve_h2::<TlsStream<TcpStream>>);
        // Not the client's TLS stream (~1.2 KB), which lives in the boxed hyper connection.
        let tls = std::mem::size_of::<TlsStream<TcpStream>>();
        assert!(h1 < tls, "serve_h1: {h1} bytes");
        assert!(h2 < tls, "serve_h2: {h2} bytes");
        let conn = returns3(crate::listener::serve_listener_conn);
        assert!(conn <= 3 * 1024, "listener connection: {conn} bytes");
    }
}
