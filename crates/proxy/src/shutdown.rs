//! Graceful shutdown with a deadline.
//!
//! Every connection task holds a [`Guard`]. On shutdown the listener stops accepting, every
//! connection is asked to drain (HTTP/1 closes after the current exchange, HTTP/2 sends GOAWAY),
//! and after the deadline the remaining ones are dropped — which ends their flows as aborted, so
//! nothing in flight is lost from the record.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Finishing current exchanges; no new ones.
    Draining,
    /// Dropping whatever is left.
    Stop,
}

/// Held by the listener: starts and awaits shutdown.
#[derive(Debug)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by every task: tells it the phase; dropping it reports the task finished.
#[derive(Debug, Clone)]
pub struct Guard {
    phase: watch::Receiver<Phase>,
    _done: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A new shutdown controller in the `Running` phase.
    pub fn new() -> Shutdown {
        let (phase, _) = watch::channel(Phase::Running);
        let (done_tx, done_rx) = mpsc::channel(1);
        Shutdown {
            phase,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A guard for a new task.
    pub fn guard(&self) -> Guard {
        Guard {
            phase: self.phase.subscribe(),
            // `done_tx` is only taken in `run`, after which no guards are made.
            _done: self.done_tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
        }
    }

    /// Drains for at most `deadline`, then stops the rest and waits for them to unwind.
    pub async fn run(self, deadline: Duration) {
        self.run_then(deadline, || {}).await;
    }

    /// [`Shutdown::run`], calling `at_stop` when the deadline passes, before anything is
    /// dropped (the engine marks what ends from then on as ended by the shutdown).
    pub async fn run_then(mut self, deadline: Duration, at_stop: impl FnOnce()) {
        drop(self.done_tx.take());
        self.phase.send_replace(Phase::Draining);
        if tokio::time::timeout(deadline, self.done_rx.recv())
            .await
            .is_err()
        {
            tracing::info!("shutdown deadline passed; closing remaining connections");
            at_stop();
            self.phase.send_replace(Phase::Stop);
            // Tasks return promptly once told to stop; bound that too.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.done_rx.recv()).await;
        }
    }
}

impl Guard {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Resolves once the phase is at least `at`.
    pub async fn reached(&mut self, at: Phase) {
        let _ = self.phase.wait_for(|p| *p >= at).await;
    }
}
