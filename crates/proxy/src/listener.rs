//! The proxy listener's side of a client connection: HTTP/1.1, where CONNECT and absolute-form
//! requests arrive (after proxy authentication, when asked for), or in reverse mode a stream
//! handed straight to TLS dispatch, as if mcptap were the server.

use crate::context::ConnCtx;
use crate::hook::Hook;
use crate::message::is_connect;
use crate::serve::{boxed_forward, drive, h1_builder, record_protocol_error};
use crate::shared::Shared;
use crate::shutdown::Guard;
use crate::target::Target;
use crate::tls::Handshake;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mcptap_flow::now_micros;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Serves the proxy listener's side of one client connection.
pub(crate) async fn serve_listener_conn(shared: Arc<Shared>, stream: TcpStream, guard: Guard) {
    let Ok(client_addr) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let ctx = Arc::new(ConnCtx::new(
        &shared.idle_h1,
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
                // Proxy authentication, before anything else.
                if let Some(denied) = shared.hooks.admit(&req) {
                    return Ok::<_, Infallible>(denied);
                }
                Ok::<_, Infallible>(if is_connect(&req) {
                    crate::connect::handle_connect(shared, ctx, req, guard).await
                } else {
                    boxed_forward(shared, ctx, req).await
                })
            }
        })
    };
    let conn = {
        let conn = h1_builder().serve_connection(TokioIo::new(stream), svc);
        drive(conn.with_upgrades(), guard)
    };
    if let Some(Err(e)) = conn.await {
        record_protocol_error(&shared, &ctx, &e);
        tracing::debug!(%client_addr, "client connection: {e}");
    }
}

/// Reverse mode: the client speaks to mcptap as to the server itself, TLS or plain.
async fn serve_reverse_conn(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    stream: TcpStream,
    guard: Guard,
) {
    let at = Handshake {
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
    let target = Target {
        host: "localhost".to_owned(),
        port,
        tls: false,
    };
    crate::tls::dispatch(shared, ctx, stream, first[0], target, guard, at).await;
}
