//! The executor hyper spawns its own tasks on (pooled upstream connections, HTTP/2 streams):
//! tokio's, with each task kept in the span it was spawned from, so that what hyper does for a
//! connection logs under that connection's span like mcptap's own tasks.

use std::future::Future;
use tracing::Instrument;

/// [`hyper_util::rt::TokioExecutor`], keeping the spawner's span.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanExecutor;

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut.in_current_span());
    }
}
