//! CONNECT: answer `200`, then hand the first byte the client sends through the tunnel to TLS
//! dispatch ([`crate::tls`]); `--ignore-hosts` targets are spliced without decryption.
//! A client gets `--tls-handshake-timeout` from the `200` to its first byte and the end of its
//! TLS handshake; one that stalls is recorded as a failed `CONNECT` flow.

use crate::context::ConnCtx;
use crate::limits::human;
use crate::message::{empty, flow_headers, flow_version, request_head, text_response, ProxyBody};
use crate::shared::Shared;
use crate::shutdown::Guard;
use crate::tap::{record_failed, synthetic_answer};
use crate::target::Target;
use crate::tls::{connect_flow, dispatch, handshake_timed_out, Handshake};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcptap_flow::{
    now_micros, ErrorKind, Flow, FlowError, FlowEvent, FlowKind, FlowState, TunnelStats,
};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

/// Parses `host:port` from a CONNECT request target (the port is required and checked).
fn connect_target(req: &Request<Incoming>) -> Result<(String, u16), String> {
    let authority = req
        .uri()
        .authority()
        .ok_or("CONNECT needs a host:port target")?;
    crate::target::host_port(authority.as_str(), None)
}

/// A CONNECT with a bad target: a failed flow (the client's fault) and a `400` naming it.
fn refuse_connect(
    shared: &Shared,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
    why: &str,
) -> Response<ProxyBody> {
    let started = now_micros();
    let shown = req.uri().to_string();
    let text = format!("mcptap: bad CONNECT target {shown:?}: {why}\n");
    let host = req.uri().host().unwrap_or("").to_owned();
    let flow = Flow {
        request: request_head(req, shown.clone()),
        response: Some(synthetic_answer(StatusCode::BAD_REQUEST, &text)),
        ..ctx.flow(shared.ids.next(), host, 0, started)
    };
    let error = FlowError::new(
        ErrorKind::ClientProtocol,
        format!("bad CONNECT target {shown:?}: {why}"),
    );
    record_failed(&shared.events, flow, error);
    text_response(StatusCode::BAD_REQUEST, text)
}

/// Handles a CONNECT on the proxy listener.
pub(crate) async fn handle_connect(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
    guard: Guard,
) -> Response<ProxyBody> {
    let (host, port) = match connect_target(&req) {
        Ok(t) => t,
        Err(why) => return refuse_connect(&shared, &ctx, &req, &why),
    };
    if shared.is_ignored(&host, port) {
        return tunnel_ignored(shared, ctx, req, host, port, guard).await;
    }
    let on_upgrade = hyper::upgrade::on(req);
    let span = tracing::debug_span!("tunnel", %host, port);
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    intercept(
                        shared,
                        ctx,
                        upgraded,
                        Target {
                            host,
                            port,
                            tls: false,
                        },
                        guard,
                    )
                    .await
                }
                Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
            }
        }
        .instrument(span),
    );
    Response::new(empty())
}

/// The client's side of a tunnel: the raw socket when hyper hands it back untouched (the fast
/// path), otherwise the upgraded stream with any bytes hyper had already read replayed first.
enum TunnelIo {
    Tcp(TcpStream),
    Other(Prefixed<Box<dyn Io>>),
}

/// Any byte stream a tunnel can run over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn into_tunnel_io(upgraded: hyper::upgrade::Upgraded) -> TunnelIo {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => TunnelIo::Tcp(parts.io.into_inner()),
        Ok(parts) => TunnelIo::Other(Prefixed::new(
            parts.read_buf,
            Box::new(parts.io.into_inner()),
        )),
        Err(up) => TunnelIo::Other(Prefixed::new(
            bytes::Bytes::new(),
            Box::new(TokioIo::new(up)),
        )),
    }
}

async fn intercept(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    upgraded: hyper::upgrade::Upgraded,
    target: Target,
    guard: Guard,
) {
    let started = now_micros();
    let deadline = Instant::now() + shared.limits.tls_handshake;
    let first = match into_tunnel_io(upgraded) {
        TunnelIo::Tcp(tcp) => {
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {
                    let at = Handshake { deadline, started };
                    return dispatch(shared, ctx, tcp, first[0], target, guard, at).await;
                }
                Err(_) => None,
            }
        }
        TunnelIo::Other(mut io) => match tokio::time::timeout_at(deadline, io.peek_byte()).await {
            Ok(Ok(Some(b))) => Some((io, b)),
            Ok(_) => return,
            Err(_) => None,
        },
    };
    match first {
        Some((io, b)) => {
            let at = Handshake { deadline, started };
            dispatch(shared, ctx, io, b, target, guard, at).await;
        }
        None => {
            let limit = shared.limits.tls_handshake;
            let message = format!(
                "the client sent nothing for {} after its CONNECT was answered",
                human(limit)
            );
            handshake_timed_out(&shared, &ctx, &target, None, started, message);
        }
    }
}

/// `--ignore-hosts`: connect first (so a failure is a 502), then splice bytes both ways.
async fn tunnel_ignored(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
    host: String,
    port: u16,
    guard: Guard,
) -> Response<ProxyBody> {
    let started = now_micros();
    let target = Target {
        host: host.clone(),
        port,
        tls: false,
    };
    let mut flow = connect_flow(&shared, &ctx, &target, started);
    flow.kind = FlowKind::Tunnel;
    flow.request.headers = flow_headers(req.headers());
    flow.request.version = flow_version(req.version());
    let upstream = match shared.connector.open(&host, port).await {
        Ok(s) => s,
        Err(e) => {
            let text = format!("mcptap: {e}\n");
            flow.response = Some(mcptap_flow::Response {
                status: 502,
                synthetic: true,
                body: mcptap_flow::CapturedBody::complete(text.clone()),
                ..Default::default()
            });
            record_failed(&shared.events, flow, e.flow_error());
            return text_response(StatusCode::BAD_GATEWAY, text);
        }
    };
    flow.response = Some(mcptap_flow::Response {
        status: 200,
        ..Default::default()
    });
    flow.timings.connected = Some(now_micros());
    shared.events.send(FlowEvent::RequestStarted {
        flow: Box::new(flow.clone()),
    });
    let on_upgrade = hyper::upgrade::on(req);
    let span = tracing::debug_span!("ignored_tunnel", %host, port);
    tokio::spawn(
        async move {
            let stats = match on_upgrade.await {
                Ok(upgraded) => splice(upgraded, upstream, guard).await,
                Err(_) => Err(TunnelStats::default()),
            };
            flow.timings.finished = Some(now_micros());
            match stats {
                Ok(s) => {
                    flow.tunnel = Some(s);
                    flow.state = FlowState::Completed;
                }
                Err(s) => {
                    flow.tunnel = Some(s);
                    flow.state = FlowState::Aborted;
                    flow.error = Some(if shared.events.is_stopping() {
                        FlowError::new(ErrorKind::Shutdown, "mcptap shut down with the tunnel open")
                    } else {
                        FlowError::new(
                            ErrorKind::ClientDisconnected,
                            "the tunnel was closed with an error",
                        )
                    });
                }
            }
            shared.events.send(FlowEvent::Completed {
                flow: Box::new(flow),
            });
        }
        .instrument(span),
    );
    Response::new(empty())
}

async fn splice(
    upgraded: hyper::upgrade::Upgraded,
    upstream: TcpStream,
    guard: Guard,
) -> Result<TunnelStats, TunnelStats> {
    let (stats, err) = match into_tunnel_io(upgraded) {
        TunnelIo::Tcp(tcp) => crate::splice::splice(tcp, upstream, guard).await,
        TunnelIo::Other(io) => crate::splice::splice(io, upstream, guard).await,
    };
    match err {
        None => Ok(stats),
        Some(_) => Err(stats),
    }
}

/// An IO that yields `prefix` before reading from `inner`.
pub(crate) struct Prefixed<IO> {
    prefix: bytes::Bytes,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> Prefixed<IO> {
    fn new(prefix: bytes::Bytes, inner: IO) -> Prefixed<IO> {
        Prefixed { prefix, inner }
    }

    /// Reads one byte if none is buffered and keeps it for replay.
    async fn peek_byte(&mut self) -> io::Result<Option<u8>> {
        if let Some(&b) = self.prefix.first() {
            return Ok(Some(b));
        }
        let mut buf = [0u8; 1];
        let n = self.inner.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        self.prefix = bytes::Bytes::copy_from_slice(&buf);
        Ok(Some(buf[0]))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returns5<A, B, C, D, E, F>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn returns7<A, B, C, D, E, G, H, F>(_: impl Fn(A, B, C, D, E, G, H) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A tunnel's task lives as long as the tunnel (an idle event stream: hours) and its cell is
    /// as large as its future: the TLS handshake and the serving of the stream are boxed (freed
    /// when done, sized to what is used), so the cell stays small (~0.7 KB; inline it was
    /// 10.6 KB). Sizes are the compiler's, the same on every run.
    #[test]
    fn the_tunnel_task_stays_small() {
        let tunnel = returns5(intercept);
        assert!(tunnel <= 2048, "intercept: {tunnel} bytes");
        let tcp = returns7(crate::tls::dispatch::<TcpStream>);
        let other = returns7(crate::tls::dispatch::<Prefixed<Box<dyn Io>>>);
        assert!(
            tcp <= 1024 && other <= 1024,
            "dispatch: {tcp} / {other} bytes"
        );
    }
}
