//! Journal order (flows complete in any order) to HAR order (`startedDateTime`), in bounded
//! memory.
//!
//! A completed flow is held until nothing still to come can have started before it: no flow in
//! flight started earlier, and the journal has moved [`SLACK`] past its start (requests racing
//! to the journal). Holding is bounded by [`ExportOptions`](crate::ExportOptions): past the bound
//! the earliest held flow is released anyway, so a stream open for hours in a huge session ends
//! up after flows that started later instead of costing unbounded memory. Such releases are
//! counted as out of order.
//!
//! A large flow read from a journal file ([`StartOrder::spilling`]) is not held whole: only
//! where its final line starts is, and it is read back from there when its turn comes
//! ([`read_flow_at`](crate::read_flow_at)), so memory is bounded by the small flows held and
//! the largest flow, not by the large ones waiting.

use crate::error::StoreError;
use crate::reader::JournalReader;
use mcptap_flow::{Flow, Micros};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::BufRead;
use std::path::PathBuf;

/// How far behind the latest start a held flow must be before it is released.
pub const SLACK: Micros = 2_000_000;

/// A flow held for start order (start, id, arrival), with its approximate size.
type Held = mcptap_flow::ByKey<(Micros, u64, u64), (usize, Hold)>;

/// A held flow: whole, or where its final line starts in the journal.
enum Hold {
    Whole(Box<Flow>),
    At(u64, usize),
}

/// Flows of about this size or more are held by their place in the journal when it can be
/// read again (a file), not whole.
pub const SPILL_FROM: usize = 64 << 10;

/// Flows of a journal in start order (see the module docs for the bound).
pub struct StartOrder<R> {
    reader: JournalReader<R>,
    heap: BinaryHeap<Reverse<Held>>,
    held_bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    seq: u64,
    exhausted: bool,
    last_released: Option<(Micros, u64)>,
    out_of_order: u64,
    max_held: usize,
    /// The journal to read large flows back from.
    spill: Option<PathBuf>,
}

impl<R: BufRead> StartOrder<R> {
    /// Reorders `reader`'s flows, holding at most `max_entries` flows and about `max_bytes` of
    /// bodies and events at once.
    pub fn new(reader: JournalReader<R>, max_entries: usize, max_bytes: usize) -> Self {
        StartOrder {
            reader,
            heap: BinaryHeap::new(),
            held_bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            seq: 0,
            exhausted: false,
            last_released: None,
            out_of_order: 0,
            max_held: 0,
            spill: None,
        }
    }

    /// Holds flows of [`SPILL_FROM`] bytes or more by their place in `journal` (the file the
    /// reader reads), reading them back when their turn comes.
    pub fn spilling(mut self, journal: PathBuf) -> Self {
        self.spill = Some(journal);
        self
    }

    /// The reader underneath (for its metadata and warnings).
    pub fn reader(&self) -> &JournalReader<R> {
        &self.reader
    }

    /// The reader underneath, mutably.
    pub fn reader_mut(&mut self) -> &mut JournalReader<R> {
        &mut self.reader
    }

    /// Flows released before a flow that started earlier (the bound was hit).
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// The most flows held at once.
    pub fn max_held(&self) -> usize {
        self.max_held
    }

    fn releasable(&self, start: Micros) -> bool {
        if self.exhausted || self.heap.len() > self.max_entries || self.held_bytes > self.max_bytes
        {
            return true;
        }
        let in_flight_ok = self.reader.min_in_flight_start().is_none_or(|m| start < m);
        let slack_ok = self
            .reader
            .latest_start()
            .is_some_and(|l| start < l.saturating_sub(SLACK));
        in_flight_ok && (slack_ok || self.reader.at_eof())
    }

    fn release(&mut self) -> Option<Result<Flow, StoreError>> {
        let Reverse(h) = self.heap.pop()?;
        let (size, hold) = h.value;
        self.held_bytes = self.held_bytes.saturating_sub(size);
        let k = (h.key.0, h.key.1);
        if self.last_released.is_some_and(|l| k < l) {
            self.out_of_order += 1;
        } else {
            self.last_released = Some(k);
        }
        Some(match hold {
            Hold::Whole(flow) => Ok(*flow),
            Hold::At(at, len) => self.read_back(at, len),
        })
    }

    /// The flow whose final line (`len` bytes) starts at `at` in the spill journal.
    fn read_back(&self, at: u64, len: usize) -> Result<Flow, StoreError> {
        let path = self.spill.as_deref().unwrap_or(std::path::Path::new(""));
        crate::reader::read_flow_sized(path, at, len)?.ok_or_else(|| StoreError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the flow read at byte {at} is no longer there"),
            ),
        })
    }
}

fn approx_size(f: &Flow) -> usize {
    let mut n = 512 + f.request.body.bytes.len();
    if let Some(r) = &f.response {
        n += r.body.bytes.len() + r.sse.iter().map(|e| e.data.len() + 64).sum::<usize>();
    }
    n
}

impl<R: BufRead> Iterator for StartOrder<R> {
    type Item = Result<Flow, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(Reverse(top)) = self.heap.peek() {
                if self.releasable(top.key.0) {
                    return self.release();
                }
            }
            if self.exhausted {
                return None;
            }
            match self.reader.next() {
                Some(Ok(flow)) => {
                    self.seq += 1;
                    let key = (flow.timings.started, flow.id.0, self.seq);
                    let size = approx_size(&flow);
                    let value = match self.reader.placed() {
                        Some(at) if self.spill.is_some() && size >= SPILL_FROM => {
                            (64, Hold::At(at, self.reader.placed_len()))
                        }
                        _ => (size, Hold::Whole(Box::new(flow))),
                    };
                    self.held_bytes += value.0;
                    self.heap.push(Reverse(Held { key, value }));
                    self.max_held = self.max_held.max(self.heap.len());
                }
                Some(Err(e)) => return Some(Err(e)),
                None => self.exhausted = true,
            }
        }
    }
}
