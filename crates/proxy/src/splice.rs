//! Splicing two byte streams (opaque tunnels, upgraded connections) while counting what
//! crossed, so that a tunnel closed with an error still reports its byte counts.

use mcptap_flow::TunnelStats;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts the bytes read from `inner`.
struct Counted<IO> {
    inner: IO,
    read: Arc<AtomicU64>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
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

/// Copies both ways until both sides are done. Returns the byte counts, and whether the
/// splice ended with an error (a reset rather than a close).
/// Stops (as an error) when shutdown reaches its deadline.
pub(crate) async fn splice<A, B>(
    client: A,
    upstream: B,
    mut guard: crate::shutdown::Guard,
) -> (TunnelStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let mut a = Counted {
        inner: client,
        read: up.clone(),
    };
    let mut b = Counted {
        inner: upstream,
        read: down.clone(),
    };
    let err = tokio::select! {
        res = tokio::io::copy_bidirectional(&mut a, &mut b) => res.err(),
        () = guard.reached(crate::shutdown::Phase::Stop) => Some(io::Error::new(
            io::ErrorKind::Interrupted,
            "mcptap shut down",
        )),
    };
    (
        TunnelStats {
            bytes_up: up.load(Ordering::Relaxed),
            bytes_down: down.load(Ordering::Relaxed),
        },
        err,
    )
}
