//! Where the detail pane finds whole flows (headers, bodies, SSE events).
//!
//! A live session keeps only the most recent flows whole ([`Store::recent`], default
//! [`DEFAULT_KEEP`]); older ones keep their compact row and their detail says it was evicted
//! (the session journal on disk still has it: `mcptap view SESSION`). A session opened from a
//! file is held whole ([`Store::all`]), as `mcptap analyze` holds it.

use mcptap_flow::{Flow, FlowEvent, FlowId, Response};
use std::collections::{HashMap, VecDeque};

/// How many whole flows a live view keeps by default.
pub const DEFAULT_KEEP: usize = 2000;

/// Whole flows by id.
#[derive(Debug, Default)]
pub struct Store {
    flows: HashMap<FlowId, Flow>,
    order: VecDeque<FlowId>,
    /// `None`: keep everything.
    cap: Option<usize>,
    evicted: u64,
}

impl Store {
    /// Keeps the last `cap` flows (at least one).
    pub fn recent(cap: usize) -> Store {
        Store {
            cap: Some(cap.max(1)),
            ..Store::default()
        }
    }

    /// Keeps every flow.
    pub fn all() -> Store {
        Store::default()
    }

    /// The whole flow, if kept.
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.flows.get(&id)
    }

    /// How many flows were dropped to stay under the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The cap, when there is one.
    pub fn cap(&self) -> Option<usize> {
        self.cap
    }

    /// How many flows are held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Stores (or replaces) a flow.
    pub fn put(&mut self, flow: Flow) {
        let id = flow.id;
        if self.flows.insert(id, flow).is_none() {
            self.order.push_back(id);
            if let Some(cap) = self.cap {
                while self.order.len() > cap {
                    if let Some(old) = self.order.pop_front() {
                        self.flows.remove(&old);
                        self.evicted += 1;
                    }
                }
            }
        }
    }

    /// Applies a progress event to a kept flow (response head, SSE event).
    pub fn apply(&mut self, ev: FlowEvent) {
        match ev {
            FlowEvent::RequestStarted { flow }
            | FlowEvent::Completed { flow }
            | FlowEvent::Failed { flow } => self.put(*flow),
            FlowEvent::ResponseHead {
                id,
                at,
                status,
                version,
                headers,
            } => {
                if let Some(f) = self.flows.get_mut(&id) {
                    f.timings.response_head = Some(at);
                    f.response = Some(Response {
                        status,
                        version,
                        headers,
                        ..Response::default()
                    });
                }
            }
            FlowEvent::Sse { id, event } => {
                if let Some(r) = self.flows.get_mut(&id).and_then(|f| f.response.as_mut()) {
                    r.sse.push(event);
                }
            }
            FlowEvent::Body { .. } => {}
        }
    }
}
