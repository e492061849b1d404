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
        if self.tx.try_send(ev).is_err() {
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
