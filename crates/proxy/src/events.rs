//! The engine's only way out: typed [`FlowEvent`]s over a bounded channel.
//!
//! Traffic must never wait for a consumer (a slow terminal, a slow disk), so sending never
//! blocks: when the channel is full the event is dropped and counted, whatever its kind (a final
//! `Completed`/`Failed` as well as a progress event; the capacity is large so that this happens
//! only when the consumer has stopped keeping up).
//!
//! The senders also share whether the engine has reached its shutdown deadline: every flow
//! holds a sender, and a flow dropped after that point ended because mcptap stopped, not
//! because a peer went away.

use mcptap_flow::FlowEvent;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Capacity of the channel, in events.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Sending half, cloned into every connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventSender {
    tx: mpsc::Sender<FlowEvent>,
    state: Arc<State>,
}

/// What the two halves share (one allocation: cloning a sender stays one reference count).
#[derive(Debug, Default)]
struct State {
    dropped: AtomicU64,
    stopping: AtomicBool,
    /// The consumer takes large bodies back from [`State::spooled`] ([`crate::spool`]).
    spool: AtomicBool,
    spooled: Arc<crate::spool::Registry>,
}

/// Receiving half, owned by the consumer (the CLI's dispatcher).
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::Receiver<FlowEvent>,
    state: Arc<State>,
}

/// A bounded event channel of `capacity` events.
pub fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let state = Arc::new(State::default());
    (
        EventSender {
            tx,
            state: state.clone(),
        },
        EventReceiver { rx, state },
    )
}

impl EventSender {
    /// Sends without waiting; a full or closed channel drops the event and counts it.
    pub fn send(&self, ev: FlowEvent) {
        if let Err(e) = self.tx.try_send(ev) {
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            let ev = match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            if ev.is_final() {
                // Nobody will take its spooled bodies.
                self.state.spooled.forget(ev.flow_id());
            }
        }
    }

    /// True when large bodies are to be spooled ([`crate::spool`]).
    pub(crate) fn spools(&self) -> bool {
        self.state.spool.load(Ordering::Relaxed)
    }

    /// Where spool files go (`None`: the system's temporary directory).
    pub(crate) fn spool_dir(&self) -> Option<&std::path::Path> {
        self.state.spooled.dir()
    }

    /// A spool file free for reuse ([`crate::spool::Spool`]).
    pub(crate) fn spool_file(&self) -> Option<std::fs::File> {
        self.state.spooled.take_file()
    }

    /// Holds a spooled body until the consumer takes it with its flow's final event.
    pub(crate) fn put_spooled(
        &self,
        id: mcptap_flow::FlowId,
        dir: mcptap_flow::Direction,
        body: crate::spool::Spooled,
    ) {
        self.state.spooled.put(id, dir, body);
    }

    /// Marks the engine as past its shutdown deadline: what ends from now on was ended by
    /// mcptap stopping.
    pub(crate) fn mark_stopping(&self) {
        self.state.stopping.store(true, Ordering::Relaxed);
    }

    /// True once [`EventSender::mark_stopping`] was called on any sender of this channel.
    pub(crate) fn is_stopping(&self) -> bool {
        self.state.stopping.load(Ordering::Relaxed)
    }

    /// Events dropped so far because the consumer was too slow (or gone).
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }
}

impl EventReceiver {
    /// From now on, bodies captured past [`crate::spool`]'s threshold wait in an encrypted
    /// temporary file instead of memory, and the final events carry them empty: the consumer
    /// puts them back with [`crate::Spools::unspool`] before reading a final event's bodies.
    pub fn spool_large_bodies(&self) -> crate::spool::Spools {
        self.spool_large_bodies_in(None)
    }

    /// [`EventReceiver::spool_large_bodies`], with the temporary files in `dir` (a session
    /// directory: on disk, where `/tmp` may be memory) rather than the system's temporary
    /// directory.
    pub fn spool_large_bodies_in(&self, dir: Option<std::path::PathBuf>) -> crate::spool::Spools {
        self.state.spooled.set_dir(dir);
        self.state.spool.store(true, Ordering::Relaxed);
        crate::spool::Spools(self.state.spooled.clone())
    }

    /// The next event; `None` once every sender is gone and the channel is drained.
    pub async fn recv(&mut self) -> Option<FlowEvent> {
        self.rx.recv().await
    }

    /// Waits for at least one event and takes up to `limit` into `buf`; 0 when the channel is
    /// closed and drained. Batches keep the consumer from waking once per event.
    pub async fn recv_many(&mut self, buf: &mut Vec<FlowEvent>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<FlowEvent> {
        self.rx.try_recv().ok()
    }

    /// Moves up to `limit` waiting events into `buf` without waiting (and without asking to be
    /// woken); returns how many.
    pub fn try_recv_many(&mut self, buf: &mut Vec<FlowEvent>, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            match self.rx.try_recv() {
                Ok(ev) => {
                    buf.push(ev);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// True once every sender is gone (events may still be waiting).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    /// Events dropped so far because this receiver was too slow.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }
}
