//! TLS dispatch: the first byte a client sends on a stream (a CONNECT tunnel, or a reverse-mode
//! connection) says whether it speaks TLS. TLS is terminated with a leaf minted for the SNI and
//! the stream served as HTTP/2 or HTTP/1.1 as ALPN chose; plain streams are served as they come.
//! Both CONNECT ([`crate::connect`]) and reverse mode ([`crate::listener`]) call [`dispatch`];
//! it calls only down, into [`crate::serve`].

use crate::context::ConnCtx;
use crate::limits::{exceeded, human};
use crate::serve::{serve_auto, serve_h1, serve_h2};
use crate::shared::Shared;
use crate::shutdown::Guard;
use crate::tap::record_failed;
use crate::target::{url_host, Target};
use crate::upstream::tls_info;
use mcptap_flow::{ErrorKind, Flow, FlowError, FlowKind, Phase, TlsInfo};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// ALPN offered to clients: whatever they prefer of these.
const CLIENT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// When a client's TLS handshake must be done by, and when its tunnel started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handshake {
    pub deadline: Instant,
    pub started: i64,
}

/// Serves a client stream whose first byte is `first`: TLS is terminated with a leaf for the SNI
/// (or the target, for IP literals) and served as HTTP/2 or HTTP/1.1 as ALPN chose; anything else
/// is served as plain HTTP/1.1 or HTTP/2 with prior knowledge. A failed or stalled handshake is
/// recorded as a failed `CONNECT` flow.
pub(crate) async fn dispatch<IO>(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    io: IO,
    first: u8,
    mut target: Target,
    guard: Guard,
    at: Handshake,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if first != TLS_HANDSHAKE {
        let ctx = Arc::new(ConnCtx::new(
            &shared.idle_h1,
            ctx.client_addr,
            Some(target),
            ctx.client_tls.clone(),
            ctx.guard.clone(),
        ));
        Box::pin(serve_auto(shared, ctx, io, guard)).await;
        return;
    }
    // The handshake's state (the ClientHello, rustls's handshake, the timers) lives in a box of
    // its own, freed once the handshake is done: inline, it would make this task's cell as large
    // as the handshake for as long as the connection stays open. The stream is handed on in a
    // block of its own, so that no copy of it stays in this future while it is served.
    let serving = {
        let Some((tls, sni)) = Box::pin(accept(&shared, &ctx, io, &target, at)).await else {
            return;
        };
        target.tls = true;
        serve_tls(shared, ctx.client_addr, tls, sni, target, guard)
    };
    serving.await;
}

/// Serves a client's TLS stream as HTTP/2 or HTTP/1.1, as ALPN chose, each in a box of its own
/// size (HTTP/1.1 ~5 KB, HTTP/2 ~7 KB): inline in one future, every connection would take as
/// much as the largest of them.
fn serve_tls<IO>(
    shared: Arc<Shared>,
    client_addr: std::net::SocketAddr,
    tls: tokio_rustls::server::TlsStream<IO>,
    sni: Option<String>,
    target: Target,
    guard: Guard,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (_, session) = tls.get_ref();
    let info = tls_info(session, sni, false);
    let h2 = info.alpn.as_deref() == Some("h2");
    let ctx = Arc::new(ConnCtx::new(
        &shared.idle_h1,
        client_addr,
        Some(target),
        Some(Arc::new(info)),
        guard.clone(),
    ));
    if h2 {
        Box::pin(serve_h2(shared, ctx, tls, guard))
    } else {
        Box::pin(serve_h1(shared, ctx, tls, guard))
    }
}

/// Terminates TLS on `io` with a leaf for the ClientHello's SNI (or the target): the stream and
/// the SNI, or `None` when the handshake failed or stalled (recorded as a failed `CONNECT`).
async fn accept<IO>(
    shared: &Shared,
    ctx: &ConnCtx,
    io: IO,
    target: &Target,
    at: Handshake,
) -> Option<(tokio_rustls::server::TlsStream<IO>, Option<String>)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let started = at.started;
    let too_slow = |sni: Option<&str>| {
        let message = format!(
            "the client did not finish its TLS handshake within {}",
            human(shared.limits.tls_handshake)
        );
        handshake_timed_out(shared, ctx, target, sni, started, message);
        None
    };
    let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout_at(at.deadline, hello).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            client_tls_failed(shared, ctx, target, None, started, &e);
            return None;
        }
        Err(_) => return too_slow(None),
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let cert_host = sni.clone().unwrap_or_else(|| target.host.clone());
    let alpn: Vec<Vec<u8>> = CLIENT_ALPN.iter().map(|p| p.to_vec()).collect();
    let config = match shared.ca.server_config(&cert_host, &alpn) {
        Ok(c) => c,
        Err(e) => {
            let io_err = io::Error::other(e);
            client_tls_failed(shared, ctx, target, sni.as_deref(), started, &io_err);
            return None;
        }
    };
    match tokio::time::timeout_at(at.deadline, start.into_stream(config)).await {
        Ok(Ok(t)) => Some((t, sni)),
        Ok(Err(e)) => {
            client_tls_failed(shared, ctx, target, sni.as_deref(), started, &e);
            None
        }
        Err(_) => too_slow(sni.as_deref()),
    }
}

/// True when a handshake error means the client refused our certificate.
fn is_untrusted_ca(e: &io::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied,
        ))
    )
}

const TRUST_HINT: &str = "the client does not trust the mcptap CA: run `mcptap ca` for how to \
trust it (Node: NODE_EXTRA_CA_CERTS, Python: SSL_CERT_FILE/REQUESTS_CA_BUNDLE, curl: --cacert), \
or use `mcptap run -- CMD`";

fn client_tls_failed(
    shared: &Shared,
    ctx: &ConnCtx,
    target: &Target,
    sni: Option<&str>,
    started: i64,
    e: &io::Error,
) {
    let (message, hint) = if is_untrusted_ca(e) {
        (
            format!("the client rejected mcptap's certificate ({e})"),
            Some(TRUST_HINT.to_owned()),
        )
    } else if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset
    {
        (
            "the client closed the connection during the TLS handshake".to_owned(),
            Some(format!("this usually means {TRUST_HINT}")),
        )
    } else {
        (format!("TLS handshake with the client failed: {e}"), None)
    };
    tracing::debug!(host = %target.host, "{message}");
    let error = FlowError {
        kind: ErrorKind::ClientTls,
        message,
        hint,
        limit: None,
    };
    tunnel_failed(shared, ctx, target, sni, started, error);
}

/// `--tls-handshake-timeout` fired: the tunnel is closed and recorded as a failed `CONNECT`.
pub(crate) fn handshake_timed_out(
    shared: &Shared,
    ctx: &ConnCtx,
    target: &Target,
    sni: Option<&str>,
    started: i64,
    message: String,
) {
    tracing::debug!(host = %target.host, "{message}");
    let error = exceeded(
        ErrorKind::ClientTimeout,
        Phase::ClientTlsHandshake,
        shared.limits.tls_handshake,
        message,
        "--tls-handshake-timeout",
    );
    tunnel_failed(shared, ctx, target, sni, started, error);
}

/// Records a tunnel that failed before any request went through it.
fn tunnel_failed(
    shared: &Shared,
    ctx: &ConnCtx,
    target: &Target,
    sni: Option<&str>,
    started: i64,
    error: FlowError,
) {
    let mut flow = connect_flow(shared, ctx, target, started);
    flow.client_tls = Some(Arc::new(TlsInfo {
        sni: sni.map(str::to_owned),
        ..Default::default()
    }));
    record_failed(&shared.events, flow, error);
}

/// A flow describing the tunnel itself (`CONNECT host:port`).
pub(crate) fn connect_flow(shared: &Shared, ctx: &ConnCtx, target: &Target, started: i64) -> Flow {
    Flow {
        kind: FlowKind::Http,
        request: mcptap_flow::Request {
            method: "CONNECT".to_owned(),
            url: format!("{}:{}", url_host(&target.host), target.port),
            version: mcptap_flow::HttpVersion::Http11,
            ..Default::default()
        },
        // On the listener: no TLS with the client yet.
        client_tls: None,
        ..ctx.flow(shared.ids.next(), target.host.clone(), target.port, started)
    }
}
