//! Streaming journal reader: flows come out as their final line is met, so memory is bounded by
//! the flows in flight at any point of the session, not by the size of the journal.
//!
//! Flows that never completed (the proxy was killed) come out at the end, in start order, as
//! [`FlowState::Pending`] with the response head and SSE events seen so far; their response
//! body is rebuilt from those events. A line that does not parse (a torn last line, or damage)
//! is reported as a [`ReadWarning`] and skipped: reading never fails on content, only on I/O.

use crate::error::StoreError;
use crate::format::{
    sse_body, sse_text, BodiesRef, EndLine, HeadRef, Line, LineEnd, ResponseHead, SseRef,
    StartHead, BODIES_FILE, JOURNAL_VERSION,
};
use crate::journal::SessionMeta;
use mcptap_flow::{
    BodyState, CapturedBody, Flow, FlowEvent, FlowId, FlowState, Micros, Response, SseEvent,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A line of a journal that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWarning {
    /// Line number (from 1).
    pub line: u64,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ReadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// SSE events kept per flow in flight (the engine's own bound; the journal leaves a stream's
/// events out of its final line only up to it).
pub(crate) const MAX_SSE_EVENTS: usize = 100_000;
/// Lines longer than this are skipped (a flow holds at most two bodies at the body limit).
pub(crate) const DEFAULT_MAX_LINE: usize = 1 << 30;

struct InFlight {
    flow: Flow,
    sse_dropped: u64,
    /// Its `response_head` line was read (the response in `flow` is not only its events).
    response_head: bool,
    /// Where its `request_started` line starts.
    start_at: u64,
}

/// Reads flows from a journal, one at a time (an [`Iterator`] of flows).
pub struct JournalReader<R> {
    input: R,
    path: PathBuf,
    line_no: u64,
    buf: Vec<u8>,
    max_line: usize,
    meta: Option<SessionMeta>,
    version: Option<u32>,
    in_flight: HashMap<FlowId, InFlight>,
    starts: BTreeSet<(Micros, FlowId)>,
    max_in_flight: usize,
    latest_start: Option<Micros>,
    ended: bool,
    ended_at: Option<Micros>,
    eof: bool,
    leftovers: VecDeque<(Flow, Option<u64>)>,
    warnings: Vec<ReadWarning>,
    failed: bool,
    /// The session's side file of large bodies (known when the journal's path is).
    side: Option<SideReader>,
    /// Bytes of input consumed.
    pos: u64,
    /// Where the line last read starts.
    line_start: u64,
    /// How long the line last read is (its buffer may be let go).
    line_len: usize,
    /// Where the final line of the flow last returned starts (see [`JournalReader::placed`]).
    placed: Option<u64>,
    /// Large bodies in the lines are cut as a line streams by and read back from the file
    /// ([`read_journal`]).
    inline: Option<Inline>,
}

/// A journal whose large inline bodies (v1 and v2 lines) are not held in the line's text: a
/// body of [`CUT_MIN`](crate::cut::CUT_MIN) bytes or more is measured as the line streams by
/// (`Cutter::cut_skipping`), `""` is left in its place, and once the rest of the line is
/// parsed it is read from its place in the journal and decoded into a buffer of its size.
/// Anything the streaming decode does not vouch for reads the line again whole, as before.
#[derive(Debug, Default)]
struct Inline {
    /// The journal, opened when a body is read back.
    file: Option<File>,
    /// The bodies the line last read left out (their places are from the line's start).
    skipped: Vec<crate::har::scan::Skipped>,
    /// True when the line last read was not cut whole (it is read again).
    damaged: bool,
}

impl Inline {
    /// The journal at `path`.
    fn file(&mut self, path: &Path) -> std::io::Result<&mut File> {
        let file = match self.file.take() {
            Some(f) => f,
            None => File::open(path)?,
        };
        Ok(self.file.insert(file))
    }
}

/// Reads bodies back from a session's [`BODIES_FILE`], opened at the first one.
#[derive(Debug)]
pub(crate) struct SideReader {
    path: PathBuf,
    file: Option<(File, u64)>,
}

impl SideReader {
    /// The side file next to the journal at `journal`.
    pub(crate) fn next_to(journal: &Path) -> SideReader {
        SideReader {
            path: journal.with_file_name(BODIES_FILE),
            file: None,
        }
    }

    /// The `len` bytes at `at`.
    fn read(&mut self, at: u64, len: u64) -> Result<bytes::Bytes, String> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let name = BODIES_FILE;
        if self.file.is_none() {
            let file = File::open(&self.path).map_err(|e| format!("cannot open {name}: {e}"))?;
            let size = file
                .metadata()
                .map_err(|e| format!("cannot read {name}: {e}"))?
                .len();
            self.file = Some((file, size));
        }
        let Some((file, size)) = self.file.as_mut() else {
            unreachable!("opened above");
        };
        if at.checked_add(len).is_none_or(|end| end > *size) {
            // Grown since it was opened (a live session), or damaged: look again once.
            *size = file.metadata().map_or(*size, |m| m.len());
            if at.checked_add(len).is_none_or(|end| end > *size) {
                return Err(format!(
                    "{len} bytes at {at} are past the end of {name} ({size} bytes)"
                ));
            }
        }
        let mut buf = vec![0; usize::try_from(len).map_err(|_| "too large".to_owned())?];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| format!("cannot read {len} bytes at {at} of {name}: {e}"))?;
        Ok(buf.into())
    }
}

/// Puts back into a final line's flow the bodies it keeps in the side file; what could not be
/// read is said in the returned messages (the body stays empty).
pub(crate) fn resolve_bodies(
    line: &mut Line,
    bodies: &BodiesRef,
    side: Option<&mut SideReader>,
) -> Vec<String> {
    let (Line::Event(FlowEvent::Completed { flow } | FlowEvent::Failed { flow })
    | Line::Streamed(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, _)
    | Line::Rest(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, _, _)) = line
    else {
        return Vec::new();
    };
    resolve_flow_bodies(flow, bodies, side)
}

/// [`resolve_bodies`] on the flow of a final line.
fn resolve_flow_bodies(
    flow: &mut Flow,
    bodies: &BodiesRef,
    side: Option<&mut SideReader>,
) -> Vec<String> {
    let Some(side) = side else {
        return vec![format!(
            "flow {}: its bodies are in {BODIES_FILE} next to the journal, which this reader was not given",
            flow.id
        )];
    };
    let mut problems = Vec::new();
    let id = flow.id;
    let mut fill =
        |what: &str, span: [u64; 2], body: &mut CapturedBody| match side.read(span[0], span[1]) {
            Ok(b) => body.bytes = b,
            Err(e) => problems.push(format!("flow {id}: its {what} body is missing: {e}")),
        };
    if let Some(span) = bodies.request {
        fill("request", span, &mut flow.request.body);
    }
    if let Some(span) = bodies.response {
        let resp = flow.response.get_or_insert_with(Response::default);
        fill("response", span, &mut resp.body);
    }
    problems
}

/// Where a flow's bodies are in a line that carries the flow, when they are in the line.
const BODY_TEXTS: &[&[&str]] = &[
    &["flow", "request", "body", "text"],
    &["flow", "response", "body", "text"],
];

/// [`Line::parse_with_bodies`], with large bodies cut out of the line before it is parsed and
/// put back into the flow after ([`crate::cut`]: each decoded once, into a buffer of its size).
pub(crate) fn parse_line(text: &[u8]) -> Result<(Line, Option<BodiesRef>), serde_json::Error> {
    let (mut line, bodies, spans) = parse_line_cut(text)?;
    if let Some(flow) = flow_of(&mut line) {
        put_back(flow, &spans, text);
    }
    Ok((line, bodies))
}

/// [`parse_line`] with the bodies it cut not put back yet ([`put_back`] puts them into the
/// line's flow: the spans are of `text`, and there is always a flow for them).
fn parse_line_cut(
    text: &[u8],
) -> Result<(Line, Option<BodiesRef>, Vec<crate::cut::Span>), serde_json::Error> {
    if let Some(cut) = crate::cut::cut_strings(text, BODY_TEXTS) {
        if let Ok((mut line, bodies)) = Line::parse_with_bodies(&cut.text) {
            let room = flow_of(&mut line)
                .is_some_and(|f| f.response.is_some() || cut.spans.iter().all(|s| s.path == 0));
            if room {
                return Ok((line, bodies, cut.spans));
            }
        }
    }
    Line::parse_with_bodies(text).map(|(l, b)| (l, b, Vec::new()))
}

/// The flow a line carries, if it carries one.
fn flow_of(line: &mut Line) -> Option<&mut Flow> {
    match line {
        Line::Event(
            FlowEvent::RequestStarted { flow }
            | FlowEvent::Completed { flow }
            | FlowEvent::Failed { flow },
        )
        | Line::Streamed(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, _)
        | Line::Rest(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, _, _) => {
            Some(flow)
        }
        _ => None,
    }
}

/// Puts the bodies cut out of `text` ([`BODY_TEXTS`]) into the flow it carries.
fn put_back(flow: &mut Flow, spans: &[crate::cut::Span], text: &[u8]) {
    for span in spans {
        let body = match span.path {
            0 => &mut flow.request.body,
            _ => &mut flow.response.get_or_insert_with(Response::default).body,
        };
        body.bytes = span.decode(text).into_bytes().into();
    }
}

/// Opens the journal at `path` for streaming.
pub fn read_journal(path: &Path) -> Result<JournalReader<BufReader<File>>, StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(
        JournalReader::new(BufReader::with_capacity(256 * 1024, file))
            .with_path(path)
            .with_inline_bodies(),
    )
}

/// The flow whose `completed` or `failed` line starts at byte `offset` of the journal at
/// `path` (where [`crate::Journal::position`] said it would): how a live view gets back a flow
/// it no longer holds. `Ok(None)` when no such line starts there.
pub fn read_flow_at(path: &Path, offset: u64) -> Result<Option<Flow>, StoreError> {
    read_flow_sized(path, offset, 0)
}

/// [`read_flow_at`] of a line known to be about `len` bytes long: read into a buffer of that
/// size, not one grown (and copied) step by step.
pub(crate) fn read_flow_sized(
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Option<Flow>, StoreError> {
    if len >= crate::cut::CUT_MIN {
        if let Some(flow) = read_flow_streamed(path, offset, len)? {
            return Ok(Some(flow));
        }
    }
    read_flow_whole(path, offset, len)
}

/// A long final line (v1 and v2 journals carry large bodies in it) read as [`read_journal`]
/// reads it: its large bodies cut out as it streams by and read back from their places
/// ([`Inline`]), so the line is never held whole beside its bodies. `None` for anything else —
/// a line that points at its head's lines (v4, which the whole read looks up), a line that is
/// not a final one, one the reader warns about — which [`read_flow_whole`] then reads as before.
fn read_flow_streamed(path: &Path, offset: u64, len: usize) -> Result<Option<Flow>, StoreError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let err = |source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    file.seek(SeekFrom::Start(offset)).map_err(err)?;
    // The line and its newline, no further.
    let mut input = BufReader::new(file.take(len as u64 + 1));
    let head = input.fill_buf().map_err(err)?;
    if [
        &br#"{"type":"completed","head":"#[..],
        br#"{"type":"failed","head":"#,
    ]
    .iter()
    .any(|p| head.starts_with(p))
    {
        return Ok(None);
    }
    let mut reader = JournalReader::new(input)
        .with_path(path)
        .with_inline_bodies()
        .starting_at(offset);
    let flow = match reader.next() {
        Some(Ok(flow)) => flow,
        Some(Err(e)) => return Err(e),
        None => return Ok(None),
    };
    if !reader.warnings().is_empty() || reader.placed() != Some(offset) {
        return Ok(None);
    }
    Ok(Some(flow))
}

/// [`read_flow_sized`] with the line read whole.
fn read_flow_whole(path: &Path, offset: u64, len: usize) -> Result<Option<Flow>, StoreError> {
    use std::io::{Seek as _, SeekFrom};
    let err = |source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(err)?);
    // The line and its newline (the size comes from this reader's own reading of the file).
    let mut line = Vec::with_capacity(len.saturating_add(1).min(DEFAULT_MAX_LINE));
    let line_at = |file: &mut BufReader<File>, at: u64, line: &mut Vec<u8>| {
        file.seek(SeekFrom::Start(at))?;
        line.clear();
        file.read_until(b'\n', line)
    };
    line_at(&mut file, offset, &mut line).map_err(err)?;
    let parsed = match parse_line(trim_ascii(&line)) {
        Ok((mut l, bodies)) => {
            if let Some(bodies) = bodies {
                let mut side = SideReader::next_to(path);
                if let Some(problem) = resolve_bodies(&mut l, &bodies, Some(&mut side)).pop() {
                    return Err(err(std::io::Error::other(problem)));
                }
            }
            Ok(l)
        }
        Err(e) => Err(e),
    };
    let (mut flow, head, sse) = match parsed {
        Ok(Line::Event(FlowEvent::Completed { flow } | FlowEvent::Failed { flow })) => {
            (flow, None, None)
        }
        Ok(Line::Streamed(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, sse)) => {
            (flow, None, Some(sse))
        }
        Ok(Line::Rest(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, head, sse)) => {
            (flow, Some(head), sse)
        }
        _ => return Ok(None),
    };
    if let Some(head) = head {
        // Its head from the lines that said it; a line not found there (damage) leaves the
        // flow with what its final line says, as the journal's reader gives it.
        // (A response head without its start is not taken, as the journal's reader does not.
        // An offset that cannot be read, past the end or beyond what a seek takes, is damage
        // too.)
        let mut read_at = |at: u64| {
            line_at(&mut file, at, &mut line)
                .ok()
                .and_then(|_| Line::parse(trim_ascii(&line)).ok())
        };
        let started = match read_at(head.request) {
            Some(Line::Event(FlowEvent::RequestStarted { flow: start })) if start.id == flow.id => {
                StartHead::taken(*start).put_into(&mut flow);
                true
            }
            _ => false,
        };
        if let Some(at) = head.response.filter(|_| started) {
            if let Some(Line::Event(FlowEvent::ResponseHead {
                id,
                status,
                version,
                headers,
                ..
            })) = read_at(at)
            {
                if let Some(resp) = flow.response.as_mut().filter(|_| id == flow.id) {
                    ResponseHead {
                        status,
                        version,
                        headers,
                    }
                    .put_into(resp);
                }
            }
        }
    }
    if let Some(sse) = sse {
        let mut events = Vec::with_capacity(sse.lines.len());
        for &at in &sse.lines {
            line_at(&mut file, at, &mut line).map_err(err)?;
            if let Ok(Line::Event(FlowEvent::Sse { id, event })) = Line::parse(trim_ascii(&line)) {
                if id == flow.id {
                    events.push(event);
                }
            }
        }
        restore_sse(&mut flow, events, &sse);
    }
    Ok(Some(*flow))
}

/// Puts back into a streamed flow's final form the events its final line left out (read from
/// its `sse` lines), and the body when that was left out too.
fn restore_sse(flow: &mut Flow, events: Vec<SseEvent>, sse: &SseRef) {
    let resp = flow.response.get_or_insert_with(Response::default);
    resp.sse_elided = (sse.lines.len() as u64).saturating_sub(events.len() as u64);
    if let Some(end) = sse.body {
        let text = sse_body(&events, end, &sse.extra);
        resp.body.bytes = text.into();
    }
    resp.sse = events;
}

impl<R: BufRead> JournalReader<R> {
    /// A reader over `input`.
    pub fn new(input: R) -> JournalReader<R> {
        JournalReader {
            input,
            path: PathBuf::from("journal"),
            line_no: 0,
            buf: Vec::new(),
            max_line: DEFAULT_MAX_LINE,
            meta: None,
            version: None,
            in_flight: HashMap::new(),
            starts: BTreeSet::new(),
            max_in_flight: 0,
            latest_start: None,
            ended: false,
            ended_at: None,
            eof: false,
            leftovers: VecDeque::new(),
            warnings: Vec::new(),
            failed: false,
            side: None,
            pos: 0,
            line_start: 0,
            line_len: 0,
            placed: None,
            inline: None,
        }
    }

    /// Cuts the large bodies out of a line as it is read and reads them back from the journal
    /// at the reader's path (which the input reads from its start): see [`Inline`].
    pub(crate) fn with_inline_bodies(mut self) -> Self {
        self.inline = Some(Inline::default());
        self
    }

    /// Reads input that starts at byte `offset` of the journal (one line read back), so that
    /// places in it are the journal's.
    fn starting_at(mut self, offset: u64) -> Self {
        self.pos = offset;
        self
    }

    /// Names the journal in I/O errors, and finds the side file of its large bodies next to it.
    pub fn with_path(mut self, path: &Path) -> Self {
        self.path = path.to_owned();
        self.side = Some(SideReader::next_to(path));
        self
    }

    /// Skips lines longer than `max` bytes (with a warning) instead of holding them.
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    /// The session line, once read (it is the first line).
    pub fn meta(&self) -> Option<&SessionMeta> {
        self.meta.as_ref()
    }

    /// The journal format version from the session line.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// Reads up to the session line (if not read yet) and returns it.
    pub fn read_meta(&mut self) -> Result<Option<&SessionMeta>, StoreError> {
        while self.meta.is_none() && self.line_no == 0 && !self.eof {
            let flow = self.step(None)?;
            if let Some(f) = flow {
                // Not a session line first: keep the flow for the iterator.
                self.leftovers.push_front((f, Some(self.line_start)));
                break;
            }
        }
        Ok(self.meta.as_ref())
    }

    /// Lines skipped so far.
    pub fn warnings(&self) -> &[ReadWarning] {
        &self.warnings
    }

    /// Takes the warnings collected so far.
    pub fn take_warnings(&mut self) -> Vec<ReadWarning> {
        std::mem::take(&mut self.warnings)
    }

    /// True once an `end` line was read: the session was closed cleanly.
    pub fn ended_cleanly(&self) -> bool {
        self.ended
    }

    /// When recording stopped, as the end line says (read to the end first).
    pub fn ended_at(&self) -> Option<Micros> {
        self.ended_at
    }

    /// Flows started but not yet completed at the current point of the journal.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The most flows that were in flight at once: what the reader's memory was bounded by.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The earliest start among flows in flight (nothing that comes later can have started
    /// before it, except by a few scheduling microseconds).
    pub fn min_in_flight_start(&self) -> Option<Micros> {
        self.starts.first().map(|(t, _)| *t)
    }

    /// The latest start time seen so far.
    pub fn latest_start(&self) -> Option<Micros> {
        self.latest_start
    }

    /// Where the `completed` or `failed` line of the flow last returned starts in the input
    /// ([`read_flow_at`] reads the flow back from there); `None` for a flow that never
    /// completed (made from the lines of a flow still in flight at the end).
    pub fn placed(&self) -> Option<u64> {
        self.placed
    }

    /// How long (in bytes, without its newline) the line [`placed`](Self::placed) points at
    /// is.
    pub(crate) fn placed_len(&self) -> usize {
        self.line_len
    }

    /// True once the input is exhausted (flows left in flight are then being drained).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    fn see_start(&mut self, t: Micros) {
        self.latest_start = Some(self.latest_start.map_or(t, |l| l.max(t)));
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(ReadWarning {
            line: self.line_no,
            message: message.into(),
        });
    }

    /// Reads one line into `buf`. `Ok(None)` at end of input; `Ok(Some(false))` for a line
    /// without a final newline (the last one).
    fn read_line(&mut self) -> std::io::Result<Option<(bool, bool)>> {
        self.buf.clear();
        self.line_start = self.pos;
        let mut overlong = false;
        let mut any = false;
        if let Some(inline) = self.inline.as_mut() {
            inline.skipped.clear();
            inline.damaged = false;
            // A line that ends within `CUT_MIN` bytes has no body to cut: read as it is.
            let long_object = loop {
                match self.input.fill_buf() {
                    Ok(c) => {
                        let head = &c[..c.len().min(crate::cut::CUT_MIN)];
                        break c.first() == Some(&b'{') && memchr::memchr(b'\n', head).is_none();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if long_object {
                any = true;
                let mut cut = crate::har::scan::Cutter::line(&mut self.input);
                let r = cut.cut_skipping(&mut self.buf, BODY_TEXTS, crate::cut::CUT_MIN);
                self.pos += cut.pos();
                match r {
                    Ok((_, skipped)) => inline.skipped = skipped,
                    Err(crate::har::scan::CutError::Io(e)) => return Err(e),
                    Err(crate::har::scan::CutError::Syntax { .. }) => inline.damaged = true,
                }
                if self.pos - self.line_start > self.max_line as u64 {
                    overlong = true;
                    self.buf.clear();
                    inline.skipped.clear();
                }
                self.line_len = if overlong {
                    0
                } else {
                    (self.pos - self.line_start) as usize
                };
            }
        }
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(any.then_some((false, overlong)));
            }
            any = true;
            let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            // The line's bytes so far (some may have been cut out of `buf`).
            let raw = (self.pos - self.line_start) as usize;
            if !overlong {
                if raw + part.len() > self.max_line {
                    overlong = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            let line_len = if overlong { 0 } else { raw + part.len() };
            let used = done.unwrap_or(chunk.len());
            self.input.consume(used);
            self.pos += used as u64;
            self.line_len = line_len;
            if done.is_some() {
                return Ok(Some((true, overlong)));
            }
        }
    }

    /// The bound of the flows still to come: none completes before it (with `slack` for
    /// flows racing to the journal): no flow in flight started earlier, and flows not yet seen
    /// start no earlier than the latest start.
    pub fn bound(&self, slack: Micros) -> Micros {
        let seen = self.latest_start.unwrap_or(Micros::MIN);
        self.min_in_flight_start()
            .map_or(seen, |t| t.min(seen))
            .saturating_sub(slack)
    }

    /// The next flow, as [`Iterator::next`] gives it; when its line holds large bodies (or
    /// points at them in the side file), `early` is told first, before they are read, the
    /// bound ([`bound`](Self::bound) with `slack`) that it and every flow still to come keep:
    /// a consumer can let go of the flows it holds that complete earlier before the bodies
    /// of this one take their memory.
    pub fn next_flow(
        &mut self,
        slack: Micros,
        early: &mut dyn FnMut(Micros),
    ) -> Option<Result<Flow, StoreError>> {
        if self.failed {
            return None;
        }
        if let Some((f, at)) = self.leftovers.pop_front() {
            self.placed = at;
            return Some(Ok(f));
        }
        while !self.eof {
            match self.step(Some((slack, &mut *early))) {
                Ok(Some(flow)) => {
                    self.placed = Some(self.line_start);
                    return Some(Ok(flow));
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.placed = None;
        self.drain_in_flight().map(Ok)
    }

    /// Processes one line; returns a flow when the line completed one. With `early`, a final
    /// line's large bodies are read after `early` is told the bound (see
    /// [`next_flow`](Self::next_flow)).
    fn step(
        &mut self,
        early: Option<(Micros, &mut dyn FnMut(Micros))>,
    ) -> Result<Option<Flow>, StoreError> {
        let Some((newline, overlong)) = self.read_line().map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?
        else {
            self.eof = true;
            return Ok(None);
        };
        self.line_no += 1;
        if overlong {
            self.warn(format!("longer than {} bytes: skipped", self.max_line));
            return Ok(None);
        }
        let streamed = self.parse_streamed()?;
        let text = trim_ascii(&self.buf);
        if text.is_empty() {
            return Ok(None);
        }
        let parsed = match streamed {
            Some((line, bodies)) => Ok((line, bodies, Vec::new())),
            None => parse_line_cut(text),
        };
        let (mut line, bodies, spans) = match parsed {
            Ok(parsed) => parsed,
            Err(e) if !newline => {
                let n = self.line_len;
                self.warn(format!(
                    "torn last line ({n} bytes without a newline; the proxy was probably killed while writing it): skipped ({e})"
                ));
                return Ok(None);
            }
            Err(e) => {
                self.warn(format!("not a journal record: {e}: skipped"));
                return Ok(None);
            }
        };
        let final_line = matches!(
            line,
            Line::Event(FlowEvent::Completed { .. } | FlowEvent::Failed { .. })
                | Line::Streamed(..)
                | Line::Rest(..)
        );
        if !final_line {
            // A flow's head waits in flight: what it holds is put in now.
            if let Some(flow) = flow_of(&mut line) {
                put_back(flow, &spans, text);
                self.put_back_skipped(flow);
            }
            return Ok(self.apply(line));
        }
        let Some(mut flow) = self.apply(line) else {
            return Ok(None);
        };
        let skipped = self.inline.as_ref().is_some_and(|i| !i.skipped.is_empty());
        if let Some((slack, early)) =
            early.filter(|_| !spans.is_empty() || skipped || bodies.is_some())
        {
            early(self.bound(slack).min(flow.timings.started));
        }
        put_back(&mut flow, &spans, trim_ascii(&self.buf));
        self.put_back_skipped(&mut flow);
        if let Some(bodies) = bodies {
            for problem in resolve_flow_bodies(&mut flow, &bodies, self.side.as_mut()) {
                self.warn(problem);
            }
        }
        Ok(Some(flow))
    }

    /// The line last read parsed, when bodies were cut out of it as it streamed by
    /// ([`Inline`]) and the rest parses with room for them; else `None`, and the line is in
    /// `buf` whole (read again from the journal when something was cut out of it).
    fn parse_streamed(&mut self) -> Result<Option<(Line, Option<BodiesRef>)>, StoreError> {
        let Some(inline) = self.inline.as_mut() else {
            return Ok(None);
        };
        if !inline.damaged && inline.skipped.is_empty() {
            return Ok(None);
        }
        if !inline.damaged && inline.skipped.iter().all(|s| s.measure.is_some()) {
            if let Ok((mut line, bodies)) = Line::parse_with_bodies(trim_ascii(&self.buf)) {
                let room = flow_of(&mut line).is_some_and(|f| {
                    f.response.is_some() || inline.skipped.iter().all(|s| s.path == 0)
                });
                if room {
                    return Ok(Some((line, bodies)));
                }
            }
        }
        // Read again whole, as it was before bodies were cut out of lines.
        inline.skipped.clear();
        let err = |source| StoreError::Read {
            path: self.path.clone(),
            source,
        };
        let file = inline.file(&self.path).map_err(err)?;
        {
            use std::io::{Read as _, Seek as _, SeekFrom};
            file.seek(SeekFrom::Start(self.line_start)).map_err(err)?;
            self.buf.clear();
            let len = self.line_len as u64;
            file.take(len).read_to_end(&mut self.buf).map_err(err)?;
            if self.buf.len() as u64 != len {
                return Err(err(std::io::Error::other(
                    "the journal changed while it was read",
                )));
            }
        }
        Ok(None)
    }

    /// Puts into `flow` the bodies cut out of its line as it streamed by ([`Inline`]), each
    /// read from its place in the journal into a buffer of its size.
    fn put_back_skipped(&mut self, flow: &mut Flow) {
        let Some(inline) = self.inline.as_mut() else {
            return;
        };
        let mut problem = None;
        for s in std::mem::take(&mut inline.skipped) {
            let Some(m) = s.measure else { continue };
            let mut bytes = Vec::with_capacity(m.len);
            let read = inline.file(&self.path).and_then(|file| {
                crate::cut::decode_at(file, self.line_start + s.pos, s.raw_len, &mut bytes)
            });
            match read {
                Ok(true) if bytes.len() == m.len => {
                    let body = match s.path {
                        0 => &mut flow.request.body,
                        _ => &mut flow.response.get_or_insert_with(Response::default).body,
                    };
                    body.bytes = bytes.into();
                }
                Ok(_) => problem = Some("the journal changed while it was read".to_owned()),
                Err(e) => problem = Some(format!("cannot read a body back: {e}")),
            }
        }
        if let Some(p) = problem {
            self.warn(format!("flow {}: {p}", flow.id));
        }
    }

    fn apply(&mut self, line: Line) -> Option<Flow> {
        match line {
            Line::Session(s) => {
                if self.meta.is_some() {
                    self.warn("a second session line: ignored");
                } else {
                    if s.version > JOURNAL_VERSION {
                        self.warn(format!(
                            "journal version {} is newer than this mcptap reads ({JOURNAL_VERSION}); reading what it can",
                            s.version,
                        ));
                    }
                    self.version = Some(s.version);
                    self.meta = Some(s.meta.into_owned());
                }
                None
            }
            Line::Event(FlowEvent::RequestStarted { flow }) => {
                let id = flow.id;
                self.see_start(flow.timings.started);
                if let Some(old) = self.in_flight.remove(&id) {
                    self.starts.remove(&(old.flow.timings.started, id));
                    self.warn(format!(
                        "flow {id} started twice: the first start is dropped"
                    ));
                }
                self.starts.insert((flow.timings.started, id));
                self.in_flight.insert(
                    id,
                    InFlight {
                        flow: *flow,
                        sse_dropped: 0,
                        response_head: false,
                        start_at: self.line_start,
                    },
                );
                self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
                None
            }
            Line::Event(FlowEvent::ResponseHead {
                id,
                at,
                status,
                version,
                headers,
            }) => {
                match self.in_flight.get_mut(&id) {
                    Some(f) => {
                        f.response_head = true;
                        f.flow.timings.response_head = Some(at);
                        let sse = f.flow.response.take().map(|r| r.sse).unwrap_or_default();
                        f.flow.response = Some(Response {
                            status,
                            version,
                            headers,
                            sse,
                            ..Response::default()
                        });
                    }
                    None => self.warn(format!(
                        "response head for flow {id}, which never started: ignored"
                    )),
                }
                None
            }
            Line::Event(FlowEvent::Sse { id, event }) => {
                match self.in_flight.get_mut(&id) {
                    Some(f) => {
                        let resp = f.flow.response.get_or_insert_with(Response::default);
                        if resp.sse.len() < MAX_SSE_EVENTS {
                            resp.sse.push(event);
                        } else {
                            f.sse_dropped += 1;
                        }
                    }
                    None => self.warn(format!("event for flow {id}, which never started: ignored")),
                }
                None
            }
            Line::Event(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }) => {
                Some(self.end_flow(flow, None, None))
            }
            Line::Streamed(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, sse) => {
                Some(self.end_flow(flow, None, Some(sse)))
            }
            Line::Rest(FlowEvent::Completed { flow } | FlowEvent::Failed { flow }, head, sse) => {
                Some(self.end_flow(flow, Some(head), sse))
            }
            Line::Streamed(..) | Line::Rest(..) => {
                self.warn("an event that is not a flow's end points at earlier lines: ignored");
                None
            }
            Line::Event(FlowEvent::Body { .. }) => None,
            Line::End(EndLine { at, .. }) => {
                self.ended = true;
                self.ended_at = at;
                None
            }
        }
    }

    /// A flow's final line read: the flow whole, with what the lines it points at said (its
    /// head, `head`; its events, `sse`) taken from the flow in flight, which ends.
    fn end_flow(
        &mut self,
        mut flow: Box<Flow>,
        head: Option<HeadRef>,
        sse: Option<SseRef>,
    ) -> Flow {
        let id = flow.id;
        let old = self.in_flight.remove(&id);
        if let Some(old) = &old {
            self.starts.remove(&(old.flow.timings.started, id));
        }
        let (start, response_head) = match old {
            Some(InFlight {
                mut flow,
                response_head,
                start_at,
                ..
            }) => {
                if head.is_some_and(|h| h.request != start_at) {
                    // Damage, or lines moved: the start read is this flow's all the same.
                    self.warn(format!(
                        "flow {id}: its final line says its start is at byte {}, it is at byte {start_at}",
                        head.map_or(0, |h| h.request)
                    ));
                }
                let response = flow.response.take();
                (Some(flow), response.map(|r| (r, response_head)))
            }
            None => (None, None),
        };
        let (events, response_head) = match response_head {
            Some((r, seen)) => (
                r.sse,
                seen.then_some(ResponseHead {
                    status: r.status,
                    version: r.version,
                    headers: r.headers,
                }),
            ),
            None => (Vec::new(), None),
        };
        if let Some(head) = head {
            match start {
                Some(start) => StartHead::taken(start).put_into(&mut flow),
                None => self.warn(format!(
                    "flow {id}: its start (the line at byte {}) was not found: its request head is missing",
                    head.request
                )),
            }
            if let Some(at) = head.response {
                match (response_head, flow.response.as_mut()) {
                    (Some(h), Some(resp)) => h.put_into(resp),
                    _ => self.warn(format!(
                        "flow {id}: its response head (the line at byte {at}) was not found: its status and headers are missing"
                    )),
                }
            }
        }
        if let Some(sse) = sse {
            if events.len() != sse.lines.len() {
                self.warn(format!(
                    "flow {id}: {} of its {} server-sent events were found",
                    events.len(),
                    sse.lines.len()
                ));
            }
            restore_sse(&mut flow, events, &sse);
        }
        self.see_start(flow.timings.started);
        *flow
    }

    /// At end of input: flows still in flight, in start order, as pending.
    fn drain_in_flight(&mut self) -> Option<Flow> {
        let (start, id) = self.starts.pop_first()?;
        let Some(mut f) = self.in_flight.remove(&id) else {
            debug_assert!(false, "start index out of sync");
            return self.drain_in_flight();
        };
        let _ = start;
        f.flow.state = FlowState::Pending;
        if let Some(resp) = f.flow.response.as_mut() {
            if resp.body.is_empty() && !resp.sse.is_empty() {
                let text = sse_text(&resp.sse, LineEnd::Lf);
                resp.body = CapturedBody {
                    total_len: text.len() as u64,
                    bytes: text.into(),
                    truncated: false,
                    state: BodyState::Streaming,
                    encoding: None,
                };
            }
        }
        if f.sse_dropped > 0 {
            self.warnings.push(ReadWarning {
                line: self.line_no,
                message: format!(
                    "flow {id}: {} server-sent events past the first {MAX_SSE_EVENTS} were counted, not kept",
                    f.sse_dropped
                ),
            });
        }
        Some(f.flow)
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

impl<R: BufRead> Iterator for JournalReader<R> {
    type Item = Result<Flow, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_flow(0, &mut |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::{Request, Timings};

    /// A flow whose bodies are large enough to be cut out of its line, with escapes of every
    /// kind in them.
    fn large_flow(id: u64) -> Flow {
        let text = |n: usize| {
            let unit = r#"{"jsonrpc":"2.0","text":"quote \" slash \\ é ☃ 😀 tab	line
"}"#;
            unit.repeat(n / unit.len() + 1).into_bytes()
        };
        Flow {
            id: FlowId(id),
            request: Request {
                method: "POST".into(),
                url: "https://mcp.example/mcp".into(),
                body: CapturedBody::complete(text(100_000)),
                ..Request::default()
            },
            response: Some(Response {
                status: 200,
                headers: [("content-type", "application/json")].into_iter().collect(),
                body: CapturedBody::complete(text(300_000)),
                ..Response::default()
            }),
            timings: Timings {
                started: 1_000 * id as i64,
                finished: Some(1_000 * id as i64 + 5),
                ..Timings::default()
            },
            ..Flow::default()
        }
    }

    /// Bodies cut out of a line before it is parsed come back as parsing the whole line gives
    /// them, on every line that carries a flow; a line the cut cannot take (a bad escape in a
    /// large body) is parsed whole and says what serde_json says.
    #[test]
    fn a_line_read_with_its_bodies_cut_out_is_the_line_read_whole() {
        let flow = large_flow(1);
        for event in [
            FlowEvent::Completed {
                flow: Box::new(flow.clone()),
            },
            FlowEvent::Failed {
                flow: Box::new(flow.clone()),
            },
            FlowEvent::RequestStarted {
                flow: Box::new(flow.clone()),
            },
        ] {
            let text = serde_json::to_vec(&event).unwrap();
            assert!(crate::cut::cut_strings(&text, BODY_TEXTS).is_some());
            let (Line::Event(got), None) = parse_line(&text).unwrap() else {
                panic!("not an event");
            };
            let (Line::Event(want), None) = Line::parse_with_bodies(&text).unwrap() else {
                panic!("not an event");
            };
            assert_eq!(got, want);
            assert_eq!(got, event);
        }
        // Through the reader, next to small flows.
        let mut journal = Vec::new();
        for id in 1..=3 {
            let mut f = large_flow(id);
            if id == 2 {
                f.response = None;
            }
            serde_json::to_writer(&mut journal, &FlowEvent::Completed { flow: Box::new(f) })
                .unwrap();
            journal.push(b'\n');
        }
        let flows: Vec<Flow> = JournalReader::new(&journal[..])
            .map(Result::unwrap)
            .collect();
        assert_eq!(flows.len(), 3);
        assert_eq!(flows[0], large_flow(1));
        assert!(flows[1].response.is_none());
        // A bad escape deep in a large body: the line is parsed whole, and fails as it would.
        let text = String::from_utf8(
            serde_json::to_vec(&FlowEvent::Completed {
                flow: Box::new(flow),
            })
            .unwrap(),
        )
        .unwrap()
        .replacen(r"\\ ", r"\q ", 1);
        let err = parse_line(text.as_bytes()).unwrap_err().to_string();
        let want = Line::parse_with_bodies(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(err, want);
        assert!(err.contains("invalid escape"), "{err}");
    }

    /// A large flow waiting its turn (`export`) is read back from a v1/v2 line with its bodies
    /// cut out as the line streams by, and gives what reading the line whole gives; a line that
    /// points at its head (v4), a damaged one and a line that is not a final one are left to
    /// the whole read.
    #[test]
    fn a_long_line_read_back_streams_its_bodies_and_gives_what_the_whole_read_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut journal = Vec::new();
        let mut places = Vec::new();
        for id in 1..=3 {
            let at = journal.len() as u64;
            serde_json::to_writer(
                &mut journal,
                &FlowEvent::Completed {
                    flow: Box::new(large_flow(id)),
                },
            )
            .unwrap();
            places.push((at, journal.len() as u64 - at));
            journal.push(b'\n');
        }
        // A damaged line: a bad escape deep in a large body.
        let damaged_at = journal.len() as u64;
        let bad = String::from_utf8(
            serde_json::to_vec(&FlowEvent::Completed {
                flow: Box::new(large_flow(4)),
            })
            .unwrap(),
        )
        .unwrap()
        .replacen(r"\\ ", r"\q ", 1);
        journal.extend_from_slice(bad.as_bytes());
        journal.push(b'\n');
        // A long start line, and a v4 line pointing at it.
        let start_at = journal.len() as u64;
        serde_json::to_writer(
            &mut journal,
            &FlowEvent::RequestStarted {
                flow: Box::new(large_flow(5)),
            },
        )
        .unwrap();
        let start_len = journal.len() as u64 - start_at;
        journal.push(b'\n');
        let head_at = journal.len() as u64;
        journal
            .extend_from_slice(format!(r#"{{"type":"completed","head":[{start_at}],"#).as_bytes());
        journal.extend_from_slice(&[b' '; crate::cut::CUT_MIN]);
        journal.extend_from_slice(b"}\n");
        std::fs::write(&path, &journal).unwrap();

        for (id, (at, len)) in (1..).zip(places) {
            let streamed = read_flow_streamed(&path, at, len as usize).unwrap();
            assert_eq!(streamed, Some(large_flow(id)), "flow {id}");
            let whole = read_flow_whole(&path, at, len as usize).unwrap();
            assert_eq!(whole, Some(large_flow(id)));
            assert_eq!(
                read_flow_sized(&path, at, len as usize).unwrap(),
                Some(large_flow(id))
            );
        }
        // Left to the whole read, which says what it always said.
        let len = bad.len();
        assert_eq!(read_flow_streamed(&path, damaged_at, len).unwrap(), None);
        let sized = read_flow_sized(&path, damaged_at, len).map_err(|e| e.to_string());
        let whole = read_flow_whole(&path, damaged_at, len).map_err(|e| e.to_string());
        assert_eq!(sized, whole);
        assert_eq!(
            read_flow_streamed(&path, start_at, start_len as usize).unwrap(),
            None
        );
        assert_eq!(
            read_flow_streamed(&path, head_at, crate::cut::CUT_MIN + 40).unwrap(),
            None
        );
    }

    /// A journal whose large bodies are cut out of each line as it streams by and read back
    /// from the file ([`Inline`]) gives what reading each line whole gives: the same flows and
    /// the same warnings, on good lines, heads waiting in flight, damaged lines (a bad escape,
    /// a raw newline, a torn last line inside a body), overlong lines and large strings that
    /// are not bodies.
    #[test]
    fn bodies_read_back_from_the_journal_are_the_line_read_whole() {
        let line = |event: &FlowEvent| {
            let mut l = serde_json::to_vec(event).unwrap();
            l.push(b'\n');
            l
        };
        let completed = |f: Flow| FlowEvent::Completed { flow: Box::new(f) };
        let mut journal = Vec::new();
        journal.extend(line(&completed(large_flow(1))));
        journal.extend(line(&FlowEvent::RequestStarted {
            flow: Box::new(large_flow(2)),
        }));
        let mut no_response = large_flow(3);
        no_response.response = None;
        journal.extend(line(&FlowEvent::Failed {
            flow: Box::new(no_response),
        }));
        let mut elsewhere = large_flow(4);
        elsewhere.request.url = "x".repeat(200_000);
        journal.extend(line(&completed(elsewhere)));
        let bad = String::from_utf8(line(&completed(large_flow(5))))
            .unwrap()
            .replacen(r"\\ ", r"\q ", 1);
        journal.extend(bad.as_bytes());
        let mut raw_newline = line(&completed(large_flow(6)));
        let at = raw_newline.len() / 2;
        raw_newline.insert(at, b'\n');
        journal.extend(&raw_newline);
        journal.extend(b"\n   \n{\"type\":\"nonsense\"} trailing\n");
        journal.extend(line(&completed(large_flow(7))));
        journal.extend(line(&completed(large_flow(2))));
        let torn = line(&completed(large_flow(8)));
        let whole = |journal: &[u8], max: usize| {
            let mut r = JournalReader::new(journal).with_max_line(max);
            let flows: Vec<Flow> = r.by_ref().map(Result::unwrap).collect();
            (flows, r.take_warnings())
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        for torn_at in [
            None,
            Some(100),
            Some(50_000),
            Some(200_000),
            Some(torn.len() - 1),
        ] {
            let mut j = journal.clone();
            if let Some(at) = torn_at {
                j.extend(&torn[..at]);
            }
            for max in [DEFAULT_MAX_LINE, 500_000] {
                std::fs::write(&path, &j).unwrap();
                let mut r = read_journal(&path).unwrap().with_max_line(max);
                let flows: Vec<Flow> = r.by_ref().map(Result::unwrap).collect();
                let got = (flows, r.take_warnings());
                let want = whole(&j, max);
                assert_eq!(got.1, want.1, "torn at {torn_at:?}, max {max}");
                assert!(got.0 == want.0, "torn at {torn_at:?}, max {max}");
                assert!(want.0.len() >= 4, "{}", want.0.len());
            }
        }
    }
}
