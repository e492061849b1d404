//! Where the detail pane finds whole flows (headers, bodies, SSE events).
//!
//! A live session keeps only the most recent flows whole ([`Store::recent`], default
//! [`DEFAULT_KEEP`]); older ones keep their compact row. The view never reads the disk: for an
//! evicted flow it asks its [`Host`] ([`Request::Flow`]), and the host (the CLI, which records
//! the session) answers on the feed with [`Msg::Loaded`](crate::Msg::Loaded) or
//! [`Msg::Unavailable`](crate::Msg::Unavailable) (gitui's asyncgit: the view asks, the host does
//! the I/O). A session opened from a file is held whole ([`Store::all`]), as `mcptap analyze`
//! holds it.

use mcptap_flow::{Flow, FlowEvent, FlowId, Response};
use std::collections::{HashMap, VecDeque};
use std::fmt;

/// What the view asks its host for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The whole flow, which the view no longer holds.
    Flow(FlowId),
}

/// Where the view sends its [`Request`]s (a sender into the host's loop). Sending must not
/// block: the view calls it while drawing.
pub struct Host(Box<dyn Fn(Request) + Send>);

impl Host {
    /// A host reached through `send`.
    pub fn new(send: impl Fn(Request) + Send + 'static) -> Host {
        Host(Box::new(send))
    }

    pub(crate) fn ask(&self, req: Request) {
        (self.0)(req);
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Host")
    }
}

/// Why a flow the detail pane wants is not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing<'a> {
    /// Nobody was asked (no host: the session is not recorded).
    NotAsked,
    /// The host was asked and has not answered yet.
    Asked,
    /// The host cannot give it, and says why.
    Unavailable(&'a str),
}

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
    /// The last flow the host sent back.
    reloaded: Option<Flow>,
    /// The flow asked for and not answered yet.
    asked: Option<FlowId>,
    /// The last flow the host could not give, and why.
    unavailable: Option<(FlowId, String)>,
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

    /// The whole flow, if kept (or read back by [`Store::load`]).
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.flows
            .get(&id)
            .or_else(|| self.reloaded.as_ref().filter(|f| f.id == id))
    }

    /// True when the detail pane wants `id` and nobody was asked for it yet.
    pub fn should_ask(&self, id: FlowId) -> bool {
        self.get(id).is_none()
            && self.asked != Some(id)
            && self.unavailable.as_ref().is_none_or(|(u, _)| *u != id)
    }

    /// Notes that the host was asked for `id`.
    pub fn asked(&mut self, id: FlowId) {
        self.asked = Some(id);
    }

    /// The host's answer: the whole flow (held until another one comes back).
    pub fn loaded(&mut self, flow: Flow) {
        if self.asked == Some(flow.id) {
            self.asked = None;
        }
        self.reloaded = Some(flow);
    }

    /// The host's answer: it cannot give `id`, for this reason.
    pub fn unavailable(&mut self, id: FlowId, why: String) {
        if self.asked == Some(id) {
            self.asked = None;
        }
        self.unavailable = Some((id, why));
    }

    /// Why `id` is not held (meaningful when [`Store::get`] finds nothing).
    pub fn missing(&self, id: FlowId) -> Missing<'_> {
        match &self.unavailable {
            Some((u, why)) if *u == id => Missing::Unavailable(why),
            _ if self.asked == Some(id) => Missing::Asked,
            _ => Missing::NotAsked,
        }
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
