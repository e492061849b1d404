//! Where the detail pane finds whole flows (headers, bodies, SSE events).
//!
//! A live session keeps only the most recent flows whole ([`Store::recent`], default
//! [`DEFAULT_KEEP`]); older ones keep their compact row, and when the session is recorded the
//! detail pane reads the selected one back from the journal on demand ([`Store::load`]: one
//! seek and one line, at the offset the recorder reported). A session opened from a file is
//! held whole ([`Store::all`]), as `mcptap analyze` holds it.

use mcptap_flow::{Flow, FlowEvent, FlowId, Response};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

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
    /// The live session's journal, and where each finished flow's line starts in it.
    journal: Option<PathBuf>,
    offsets: HashMap<FlowId, u64>,
    /// The last flow read back from the journal.
    reloaded: Option<Flow>,
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

    /// Sets the journal that evicted flows are read back from.
    pub fn set_journal(&mut self, path: PathBuf) {
        self.journal = Some(path);
    }

    /// Notes where a finished flow's line starts in the journal.
    pub fn saved(&mut self, id: FlowId, offset: u64) {
        if self.journal.is_some() {
            self.offsets.insert(id, offset);
        }
    }

    /// True when `id` is not in memory but can be read back from the journal.
    pub fn on_disk(&self, id: FlowId) -> bool {
        self.journal.is_some() && self.offsets.contains_key(&id)
    }

    /// Makes [`Store::get`] find `id` if it was evicted but is in the journal: reads its one
    /// line back. Returns false when it is neither kept nor readable.
    pub fn load(&mut self, id: FlowId) -> bool {
        if self.get(id).is_some() {
            return true;
        }
        let (Some(path), Some(&offset)) = (self.journal.as_ref(), self.offsets.get(&id)) else {
            return false;
        };
        match read_flow_at(path, offset) {
            Some(flow) if flow.id == id => {
                self.reloaded = Some(flow);
                true
            }
            _ => false,
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

/// The flow of the journal line starting at `offset` (a `completed` or `failed` event).
fn read_flow_at(path: &std::path::Path, offset: u64) -> Option<Flow> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut line = String::new();
    BufReader::new(file).read_line(&mut line).ok()?;
    match serde_json::from_str::<FlowEvent>(&line).ok()? {
        FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => Some(*flow),
        _ => None,
    }
}
