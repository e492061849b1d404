//! The body tap: bodies stream through frame by frame while the first `limit` bytes are copied
//! into the flow. Each tap reports how its stream ended exactly once — at the end, on error, or
//! when dropped early — and the flow is finished when both of its bodies have reported.
//!
//! A tap also enforces the idle-body limit (a started body that sends nothing for too long) and
//! says whose fault a broken body is: a request body belongs to the client, a response body to
//! the upstream. A handler dropped before the response head ([`AwaitingHead`]) ends its flow at
//! once, as aborted by the client (or by the shutdown).
//!
//! The recording side of failures lives here too: [`fail_with`] ends a flow with its error and
//! the synthetic answer the client gets, [`record_failed`] records one that failed before
//! anything streamed, and [`FlowIds`] numbers the flows.

use crate::events::EventSender;
use crate::limits::{exceeded, human};
pub use crate::message::BoxError;
use crate::message::{text_response, ProxyBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use mcptap_flow::sse::SseParser;
use mcptap_flow::{
    now_micros, BodyState, CapturedBody, Direction, ErrorKind, Flow, FlowError, FlowEvent, FlowId,
    FlowState, Phase,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Progress events are sent at most once per this many bytes of a body.
const PROGRESS_EVERY: u64 = 256 * 1024;

/// Events of one stream kept with its flow in memory. Every event is reported live (the
/// journal writes each as its own line at once, and a reader puts them all back); past this
/// many, a stream keeps only the JSON-RPC responses (the answers the analyzer pairs with
/// requests) and counts the rest ([`mcptap_flow::Response::sse_elided`]), and its body
/// capture stops (marked truncated). So an SSE stream open for hours holds a bounded amount
/// of memory instead of growing with every event until the body limit.
pub(crate) const STREAM_KEEP_EVENTS: usize = 256;

/// Flow ids, handed out in order from 1. Cheap to clone (the counter is shared).
#[derive(Debug, Clone)]
pub(crate) struct FlowIds(Arc<AtomicU64>);

impl Default for FlowIds {
    fn default() -> FlowIds {
        FlowIds(Arc::new(AtomicU64::new(1)))
    }
}

impl FlowIds {
    /// The next id.
    pub(crate) fn next(&self) -> FlowId {
        FlowId(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// Ends a flow with a synthetic error response.
pub(crate) fn fail(
    rec: &Recorder,
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
) -> http::Response<ProxyBody> {
    fail_with(
        rec,
        FlowError {
            kind,
            message,
            hint,
            limit: None,
        },
    )
}

/// Ends a flow with `error` and a synthetic response whose status says whose fault it was:
/// `4xx` for the client's, `5xx` for the upstream's (or mcptap's).
pub(crate) fn fail_with(rec: &Recorder, error: FlowError) -> http::Response<ProxyBody> {
    use http::StatusCode;
    let status = match error.kind {
        ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::ClientProtocol | ErrorKind::ClientDisconnected => StatusCode::BAD_REQUEST,
        ErrorKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    let text = match &error.hint {
        Some(h) => format!("mcptap: {}\n({h})\n", error.message),
        None => format!("mcptap: {}\n", error.message),
    };
    let synthetic = synthetic_answer(status, &text);
    rec.with(|f| f.response = Some(synthetic));
    rec.fail(error);
    text_response(status, text)
}

/// The recorded form of mcptap's own plain-text answer ([`text_response`]).
pub(crate) fn synthetic_answer(status: http::StatusCode, text: &str) -> mcptap_flow::Response {
    mcptap_flow::Response {
        status: status.as_u16(),
        version: mcptap_flow::HttpVersion::Http11,
        headers: [("content-type", "text/plain; charset=utf-8")]
            .into_iter()
            .collect(),
        body: CapturedBody::complete(text.to_owned()),
        synthetic: true,
        ..Default::default()
    }
}

/// Records a flow that failed before anything streamed (a refused CONNECT, a broken TLS
/// handshake, a malformed request, an unreachable upstream of a spliced tunnel): failed with
/// `error`, finished now unless the caller said when.
pub(crate) fn record_failed(events: &EventSender, mut flow: Flow, error: FlowError) {
    flow.state = FlowState::Failed;
    flow.timings.finished.get_or_insert_with(now_micros);
    flow.error = Some(error);
    events.send(FlowEvent::Failed {
        flow: Box::new(flow),
    });
}

/// A flow under construction, shared by the request tap, the response tap and the handler.
#[derive(Debug)]
pub(crate) struct Recorder {
    inner: Mutex<Pending>,
    events: EventSender,
    /// Inject mode learns tokens and metadata from every finished flow.
    observer: Option<Arc<crate::inject::Injector>>,
    /// `--idle-body-timeout` for the flow's taps (`None`: no limit).
    idle: Option<Duration>,
    /// How the request body's upload is going, read by the response-head limit.
    upload: Upload,
}

/// The request body's progress, kept outside the lock: its tap updates it per frame.
#[derive(Debug, Default)]
struct Upload {
    /// Bytes read from the client so far.
    bytes: AtomicU64,
    /// True while the tap waits for the client's next bytes (rather than for the upstream to
    /// take the last ones).
    waiting_on_client: AtomicBool,
}

#[derive(Debug)]
struct Pending {
    flow: Flow,
    /// Bodies that have not reported their end yet; the flow ends when this reaches zero.
    parts_left: u8,
    finished: bool,
    /// The response body has a tap (or, after a `101`, the upgrade) that will end it.
    response_owned: bool,
}

impl Recorder {
    /// Starts recording `flow` (whose request head is filled in) and announces it.
    pub(crate) fn start(
        flow: Flow,
        events: EventSender,
        observer: Option<Arc<crate::inject::Injector>>,
    ) -> Arc<Recorder> {
        Recorder::start_with_idle_limit(flow, events, observer, None)
    }

    /// [`Recorder::start`], with taps that end a body idle for `idle`.
    pub(crate) fn start_with_idle_limit(
        flow: Flow,
        events: EventSender,
        observer: Option<Arc<crate::inject::Injector>>,
        idle: Option<Duration>,
    ) -> Arc<Recorder> {
        events.send(FlowEvent::RequestStarted {
            flow: Box::new(flow.clone()),
        });
        Arc::new(Recorder {
            inner: Mutex::new(Pending {
                flow,
                parts_left: 2,
                finished: false,
                response_owned: false,
            }),
            events,
            observer,
            idle,
            upload: Upload::default(),
        })
    }

    /// Bytes of the request body read from the client so far, and whether mcptap is waiting
    /// for more from it.
    pub(crate) fn upload(&self) -> (u64, bool) {
        (
            self.upload.bytes.load(Ordering::Relaxed),
            self.upload.waiting_on_client.load(Ordering::Relaxed),
        )
    }

    /// A guard that ends the flow if it is dropped before a response head or a failure was
    /// recorded: the handler was cancelled because the client went away (or mcptap stopped).
    pub(crate) fn awaiting_head(self: &Arc<Self>) -> AwaitingHead {
        AwaitingHead(self.clone())
    }

    /// Records that a body was broken or stalled by the side that sent it, unless an earlier
    /// error already says why the flow ends.
    fn blame(&self, error: FlowError) {
        self.with(|f| {
            f.error.get_or_insert(error);
        });
    }

    pub(crate) fn events(&self) -> &EventSender {
        &self.events
    }

    /// The flow's id, for a new tap of `dir`'s body (a response tap now owns the flow's end).
    fn claim(&self, dir: Direction) -> FlowId {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if dir == Direction::Response {
            p.response_owned = true;
        }
        p.flow.id
    }

    /// Runs `f` on the flow under the lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Flow) -> R) -> R {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p.flow)
    }

    /// When the whole request body was read from the client (`None`: still being read).
    pub(crate) fn request_done(&self) -> Option<mcptap_flow::Micros> {
        self.with(|f| f.timings.request_done)
    }

    /// Records the response head and announces it.
    pub(crate) fn response_head(&self, resp: mcptap_flow::Response) {
        let at = now_micros();
        let ev = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            // After a `101` the upgrade's splice ends the flow.
            p.response_owned |= resp.status == 101;
            let flow = &mut p.flow;
            flow.timings.response_head = Some(at);
            let ev = FlowEvent::ResponseHead {
                id: flow.id,
                at,
                status: resp.status,
                version: resp.version,
                headers: resp.headers.clone(),
            };
            flow.response = Some(resp);
            ev
        };
        self.events.send(ev);
    }

    /// A body ended (or was dropped); finishes the flow when it was the last one.
    fn body_done(
        &self,
        dir: Direction,
        (body, sse, spooled): (CapturedBody, Kept, Option<crate::spool::Spooled>),
    ) {
        let now = now_micros();
        let done = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = spooled.filter(|_| !p.finished) {
                // Taken by the consumer with the final event, which is sent after this.
                self.events.put_spooled(p.flow.id, dir, s);
            }
            match dir {
                Direction::Request => {
                    p.flow.timings.request_done.get_or_insert(now);
                    p.flow.request.body = body;
                }
                Direction::Response => {
                    if let Some(resp) = p.flow.response.as_mut() {
                        resp.body = body;
                        resp.sse = sse.events;
                        resp.sse_elided = sse.elided;
                    }
                }
            }
            p.parts_left = p.parts_left.saturating_sub(1);
            p.parts_left == 0
        };
        if done {
            self.finish(None);
        }
    }

    /// Fails the flow: no response will come from the upstream (a synthetic one may have been set).
    pub(crate) fn fail(&self, error: FlowError) {
        self.finish(Some(error));
    }

    /// Marks the response part as done without a body (used when the response is synthetic
    /// and carries no tap, or after an upgrade).
    pub(crate) fn response_part_done(&self) {
        let done = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            p.parts_left = p.parts_left.saturating_sub(1);
            p.parts_left == 0
        };
        if done {
            self.finish(None);
        }
    }

    /// The handler was dropped: unless the flow ended, or its response body went to a tap that
    /// will end it, nobody will, so it ends now as aborted, saying how long the client waited.
    fn handler_dropped(&self) {
        let flow = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if p.finished || p.response_owned {
                return;
            }
            let now = now_micros();
            let waited = human(std::time::Duration::from_micros(
                u64::try_from(now - p.flow.timings.started).unwrap_or(0),
            ));
            let what = if p.flow.response.is_none() {
                format!("{waited} for the response head")
            } else {
                // Reverse mode reads small metadata bodies whole before relaying them.
                format!("{waited} for the response body to be relayed")
            };
            let error = if self.events.is_stopping() {
                FlowError::new(
                    ErrorKind::Shutdown,
                    format!("mcptap shut down while the flow had waited {what}"),
                )
            } else {
                FlowError::new(
                    ErrorKind::ClientDisconnected,
                    format!("the client went away after waiting {what}"),
                )
            };
            p.finished = true;
            let flow = &mut p.flow;
            flow.timings.finished = Some(now);
            flow.error = Some(error);
            flow.state = FlowState::Aborted;
            std::mem::take(flow)
        };
        self.announce(flow);
    }

    fn finish(&self, error: Option<FlowError>) {
        let flow = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if p.finished {
                return;
            }
            p.finished = true;
            let flow = &mut p.flow;
            flow.timings.finished = Some(now_micros());
            if let Some(e) = error {
                flow.error = Some(e);
            }
            flow.state = classify_end(flow, self.events.is_stopping());
            // Nothing reads the flow once it is finished: hand it over instead of copying.
            std::mem::take(flow)
        };
        self.announce(flow);
    }

    /// Sends the finished flow.
    fn announce(&self, flow: Flow) {
        if let Some(obs) = &self.observer {
            obs.observe(&flow);
        }
        let ev = if flow.state == FlowState::Failed {
            FlowEvent::Failed {
                flow: Box::new(flow),
            }
        } else {
            FlowEvent::Completed {
                flow: Box::new(flow),
            }
        };
        self.events.send(ev);
    }
}

/// Ends its flow if the handler holding it is dropped before the response head
/// ([`Recorder::awaiting_head`]).
pub(crate) struct AwaitingHead(Arc<Recorder>);

impl Drop for AwaitingHead {
    fn drop(&mut self) {
        self.0.handler_dropped();
    }
}

/// Decides the final state from what was recorded; `stopping`: mcptap is past its shutdown
/// deadline, so whatever was cut was cut by it.
fn classify_end(flow: &mut Flow, stopping: bool) -> FlowState {
    let resp = match &flow.response {
        None => return FlowState::Failed,
        Some(r) if r.synthetic => return FlowState::Failed,
        Some(r) => r,
    };
    if flow.error.is_some() {
        return FlowState::Aborted;
    }
    let req_cut = matches!(
        flow.request.body.state,
        BodyState::Cancelled | BodyState::Error
    ) && flow.tunnel.is_none();
    let resp_cut = matches!(resp.body.state, BodyState::Cancelled | BodyState::Error);
    if resp_cut || req_cut {
        let kind = if resp.body.state == BodyState::Error {
            ErrorKind::UpstreamDisconnected
        } else if stopping {
            ErrorKind::Shutdown
        } else {
            ErrorKind::ClientDisconnected
        };
        let what = if resp_cut { "response" } else { "request" };
        flow.error = Some(FlowError {
            kind,
            message: format!(
                "the {what} body was cut after {} bytes ({})",
                if resp_cut {
                    resp.body.total_len
                } else {
                    flow.request.body.total_len
                },
                match kind {
                    ErrorKind::UpstreamDisconnected => "the upstream stream failed",
                    ErrorKind::Shutdown => "mcptap shut down",
                    _ => "the client went away",
                }
            ),
            hint: None,
            limit: None,
        });
        return FlowState::Aborted;
    }
    FlowState::Completed
}

/// Copies frames into a bounded buffer as they pass; past [`crate::spool::SPOOL_AT`] bytes,
/// into a spool instead when the consumer takes spooled bodies.
#[derive(Debug)]
struct Capture {
    buf: Vec<u8>,
    /// Where the body goes once it is large ([`crate::spool`]). Boxed: its cipher's key
    /// schedule is ~0.5 KB, which every tap (and every exchange future moving one) would carry.
    spool: Option<Box<crate::spool::Spool>>,
    /// The consumer takes spooled bodies, and spooling has not failed.
    may_spool: bool,
    total: u64,
    limit: usize,
    truncated: bool,
    next_progress: u64,
    sse: Option<Box<SseKeep>>,
    /// Bytes of SSE events kept in the flow so far.
    sse_kept: usize,
    /// SSE events reported but not kept in the flow (see [`STREAM_KEEP_EVENTS`]).
    sse_elided: u64,
}

impl Capture {
    fn push(&mut self, data: &Bytes, rec: &Recorder, id: FlowId, dir: Direction, hint: u64) {
        if self.total == 0 && self.buf.capacity() == 0 {
            // One allocation for the whole capture when the length is announced, instead of
            // doubling (and copying) its way up to the limit; a large one is recycled.
            let mut want = usize::try_from(hint).unwrap_or(usize::MAX).min(self.limit);
            if self.may_spool && want > crate::spool::SPOOL_AT {
                want = crate::spool::SPOOL_AT;
            }
            self.buf = crate::capture_pool::take(want.max(data.len().min(self.limit)));
        }
        self.total += data.len() as u64;
        let kept = self.spool.as_ref().map_or(self.buf.len(), |s| s.len());
        let room = if self.sse_elided > 0 {
            0 // a long stream: its events are in the journal, the body capture has stopped
        } else {
            self.limit.saturating_sub(kept)
        };
        let take = if room >= data.len() {
            &data[..]
        } else {
            self.truncated = true;
            &data[..room]
        };
        if self.spool.is_none()
            && self.may_spool
            && self.buf.len() + take.len() > crate::spool::SPOOL_AT
        {
            // Before the buffer grows past the threshold (a reallocation).
            self.start_spool(id, rec.events());
        }
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.push(take) {
                self.spool_failed(&e, id);
            }
        } else {
            self.buf.extend_from_slice(take);
        }
        if let Some(sse) = self.sse.as_mut() {
            let limit = self.limit;
            let kept = &mut self.sse_kept;
            let elided = &mut self.sse_elided;
            // This chunk's events are in the body capture when all of it went there, after
            // every byte before it.
            let whole = sse.whole && self.spool.is_none() && take.len() == data.len();
            sse.whole = whole;
            if sse.first_chunk.is_none() && !data.is_empty() {
                sse.first_chunk = Some(data.len());
            }
            let SseKeep {
                parser,
                events,
                in_body,
                ..
            } = &mut **sse;
            parser.feed(data, now_micros(), |ev| {
                // Events kept in the flow are bounded like the body, and in number (see
                // STREAM_KEEP_EVENTS); every event is still reported live.
                let size = ev.data.len() + 64;
                let count = in_body.len() + events.len();
                let keep = count < STREAM_KEEP_EVENTS || is_rpc_response(&ev.data);
                if keep && *kept + size <= limit {
                    *kept += size;
                    if whole && *elided == 0 && events.is_empty() {
                        in_body.push(ev.at);
                    } else {
                        events.push(ev.clone());
                    }
                } else {
                    *elided += 1;
                }
                rec.events().send(FlowEvent::Sse { id, event: ev });
            });
            if self.sse_elided > 0 && !self.truncated {
                self.truncated = true;
            }
        }
        if self.total >= self.next_progress {
            self.next_progress = self.total + PROGRESS_EVERY;
            rec.events().send(FlowEvent::Body {
                id,
                direction: dir,
                total: self.total,
            });
        }
    }

    /// Moves the capture to a spool (the consumer takes spooled bodies); on failure the
    /// capture goes on in memory.
    fn start_spool(&mut self, id: FlowId, events: &EventSender) {
        let res = crate::spool::Spool::new(events.spool_dir(), events.spool_file())
            .and_then(|mut s| s.push(&self.buf).map(|()| s));
        if res.is_ok() {
            // The events parsed again from the capture, before it leaves memory.
            if let Some(sse) = self.sse.as_mut() {
                sse.parse_kept(&self.buf);
            }
        }
        match res {
            Ok(s) => {
                self.spool = Some(Box::new(s));
                // Back to the pool (or freed): the bytes are in the spool.
                drop(crate::capture_pool::freeze(std::mem::take(&mut self.buf)));
            }
            Err(e) => {
                tracing::warn!("flow {id}: cannot spool a large body, keeping it in memory: {e}");
                self.may_spool = false;
            }
        }
    }

    /// The spool failed part way: what it took is lost, so the body is recorded as truncated
    /// at what was spooled and kept before, and nothing more is kept.
    fn spool_failed(&mut self, e: &std::io::Error, id: FlowId) {
        tracing::warn!("flow {id}: spooling a large body failed, the rest is not recorded: {e}");
        self.truncated = true;
        self.limit = 0;
    }

    fn finish(&mut self, state: BodyState) -> (CapturedBody, Kept, Option<crate::spool::Spooled>) {
        let spooled = self.spool.take().and_then(|s| match s.finish() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("spooling a large body failed, it is not recorded: {e}");
                self.truncated = true;
                None
            }
        });
        let events = self
            .sse
            .take()
            .map(|mut sse| {
                sse.parse_kept(&self.buf);
                sse.events
            })
            .unwrap_or_default();
        let body = CapturedBody {
            bytes: crate::capture_pool::freeze(std::mem::take(&mut self.buf)),
            total_len: self.total,
            truncated: self.truncated,
            state,
            encoding: None,
        };
        let elided = std::mem::take(&mut self.sse_elided);
        (body, Kept { events, elided }, spooled)
    }
}

/// The events of an event stream as they are kept for its flow. The first ones, while the body
/// capture holds every byte of the stream, are kept as their arrival times only and parsed again
/// from the capture when the flow ends (or before the capture moves to a spool): an event's
/// bytes are not held twice, once in the body and once parsed (30 events of ~100 bytes: ~6 KB
/// of heap per open stream). The parser takes bytes in any split, so the events are the same;
/// the first chunk is fed on its own again, as the byte-order mark is looked for in it alone.
#[derive(Debug)]
struct SseKeep {
    parser: SseParser,
    /// Events kept parsed: those after the capture stopped holding every byte.
    events: Vec<mcptap_flow::SseEvent>,
    /// When each of the first events arrived, whose bytes are in the capture.
    in_body: Vec<mcptap_flow::Micros>,
    /// The length of the first chunk that was not empty.
    first_chunk: Option<usize>,
    /// The capture holds every byte of the stream so far.
    whole: bool,
    max_line: usize,
}

impl SseKeep {
    fn new(max_line: usize) -> SseKeep {
        SseKeep {
            parser: SseParser::new(max_line),
            events: Vec::new(),
            in_body: Vec::new(),
            first_chunk: None,
            whole: true,
            max_line,
        }
    }

    /// Turns the events kept as times into events, parsed from `body` (the capture, which holds
    /// their bytes): they go before the events kept parsed. None are kept as times afterwards.
    fn parse_kept(&mut self, body: &[u8]) {
        self.whole = false;
        if self.in_body.is_empty() {
            return;
        }
        let times = std::mem::take(&mut self.in_body);
        let mut parsed = Vec::with_capacity(times.len() + self.events.len());
        let mut parser = SseParser::new(self.max_line);
        let first = self.first_chunk.unwrap_or(0).min(body.len());
        let mut at = times.iter();
        for part in [&body[..first], &body[first..]] {
            parser.feed(part, 0, |mut ev| {
                if let Some(&t) = at.next() {
                    ev.at = t;
                    parsed.push(ev);
                }
            });
        }
        parsed.append(&mut self.events);
        self.events = parsed;
    }
}

/// The server-sent events a stream keeps with its flow, and how many it left out.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    events: Vec<mcptap_flow::SseEvent>,
    elided: u64,
}

/// True when an event's data is a JSON-RPC response (it has a `result` or an `error`), the
/// kind of event a long stream still keeps: it answers a request of the flow.
fn is_rpc_response(data: &str) -> bool {
    data.contains("\"result\"") || data.contains("\"error\"")
}

pin_project_lite::pin_project! {
    /// A body that streams `inner` through unchanged while capturing it into a flow.
    pub struct Tap<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        state: Option<(Arc<Recorder>, Capture)>,
        dir: Direction,
        id: FlowId,
        idle: Option<IdleTimer>,
    }

    impl<B> PinnedDrop for Tap<B>
    where
        B: Body,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((rec, mut cap)) = this.state.take() {
                // Dropped before the end: an empty body hyper never polled is complete,
                // anything else was cut short.
                let state = if this.inner.is_end_stream() {
                    BodyState::Complete
                } else {
                    BodyState::Cancelled
                };
                rec.body_done(*this.dir, cap.finish(state));
            }
        }
    }
}

impl<B: Body> Tap<B> {
    /// A tap that records nothing (for a body already recorded elsewhere).
    pub(crate) fn passthrough(inner: B) -> Tap<B> {
        Tap {
            inner,
            state: None,
            dir: Direction::Request,
            id: FlowId(0),
            idle: None,
        }
    }

    pub(crate) fn new(
        inner: B,
        rec: Arc<Recorder>,
        dir: Direction,
        limit: usize,
        sse: bool,
    ) -> Tap<B> {
        let may_spool = rec.events.spools();
        Tap {
            inner,
            id: rec.claim(dir),
            idle: rec.idle.map(IdleTimer::new),
            state: Some((
                rec,
                Capture {
                    buf: Vec::new(),
                    spool: None,
                    may_spool,
                    total: 0,
                    limit,
                    truncated: false,
                    next_progress: PROGRESS_EVERY,
                    sse_kept: 0,
                    sse_elided: 0,
                    sse: sse.then(|| Box::new(SseKeep::new(limit.max(64 * 1024)))),
                },
            )),
            dir,
        }
    }
}

/// The idle-body limit of one tap. Time counts only while the tap waits for its sender (the
/// inner body is pending), never while the receiver is slow to poll. The timer is armed on the
/// first wait and then only moved when it fires early, so a busy stream costs one clock read
/// per wait, not a timer reset per frame.
struct IdleTimer {
    limit: Duration,
    /// When the current wait for a frame began; `None` between waits.
    since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> IdleTimer {
        IdleTimer {
            limit,
            since: None,
            sleep: None,
        }
    }

    /// A frame (or the end) arrived: the wait is over.
    fn frame(&mut self) {
        self.since = None;
    }

    /// The inner body is pending: true once this wait has lasted the limit.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        let deadline = since + self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if sleep.deadline() >= deadline {
                return true;
            }
            // Armed during an earlier wait: move it to this wait's deadline.
            sleep.as_mut().reset(deadline);
        }
    }
}

/// An error in a body, with the flow error that blames the side that sent it. Returned to hyper
/// in place of the inner error, so that whoever meets it further up (the upstream client, for a
/// request body) can tell by type whose fault it was.
#[derive(Debug)]
pub(crate) struct BodyFault {
    pub(crate) error: FlowError,
    source: Option<BoxError>,
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for BodyFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// True when `err` (or its cause) means the peer closed the connection mid-body, rather than
/// sending something malformed.
fn is_disconnect(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // Cancelled, or the connection closed: the peer gave up on the exchange (any other
            // reset reason is a protocol error).
            if h2.is_io() || matches!(h2.reason(), Some(h2::Reason::CANCEL | h2::Reason::NO_ERROR))
            {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The flow error for a body of `dir` that failed with `err` after `total` bytes.
fn body_fault(dir: Direction, total: u64, err: &(dyn std::error::Error + 'static)) -> FlowError {
    let gone = is_disconnect(err);
    let (kind, text) = match (dir, gone) {
        (Direction::Request, true) => (
            ErrorKind::ClientDisconnected,
            "the client closed the connection in the middle of the request body",
        ),
        (Direction::Request, false) => (
            ErrorKind::ClientProtocol,
            "the client sent a malformed request body",
        ),
        (Direction::Response, true) => (
            ErrorKind::UpstreamDisconnected,
            "the upstream closed the connection in the middle of the response body",
        ),
        (Direction::Response, false) => (
            ErrorKind::UpstreamProtocol,
            "the upstream sent a malformed response body",
        ),
    };
    FlowError::new(kind, format!("{text} after {total} bytes: {err}"))
}

/// The flow error for a body of `dir` that sent nothing for `limit` after `total` bytes.
fn idle_fault(dir: Direction, total: u64, limit: Duration) -> FlowError {
    let (kind, who) = match dir {
        Direction::Request => (ErrorKind::ClientTimeout, "the client"),
        Direction::Response => (ErrorKind::UpstreamTimeout, "the upstream"),
    };
    exceeded(
        kind,
        Phase::IdleBody,
        limit,
        format!(
            "{who} sent nothing for {} in the middle of the {} body (after {total} bytes)",
            human(limit),
            match dir {
                Direction::Request => "request",
                Direction::Response => "response",
            }
        ),
        "--idle-body-timeout",
    )
}

impl<B> Body for Tap<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let upload = match (*this.dir, this.state.as_ref()) {
            (Direction::Request, Some((rec, _))) => Some(&rec.upload),
            _ => None,
        };
        let res = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(res) => {
                if let Some(idle) = this.idle.as_mut() {
                    if idle.since.is_some() {
                        if let Some(u) = upload {
                            u.waiting_on_client.store(false, Ordering::Relaxed);
                        }
                    }
                    idle.frame();
                }
                if let (Some(u), Some(Ok(frame))) = (upload, &res) {
                    if let Some(data) = frame.data_ref() {
                        u.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                res
            }
            Poll::Pending => {
                let Some(idle) = this.idle.as_mut() else {
                    return Poll::Pending;
                };
                if idle.since.is_none() {
                    if let Some(u) = upload {
                        u.waiting_on_client.store(true, Ordering::Relaxed);
                    }
                }
                if !idle.poll_expired(cx) {
                    return Poll::Pending;
                }
                let limit = idle.limit;
                *this.idle = None;
                let Some((rec, mut cap)) = this.state.take() else {
                    return Poll::Ready(Some(Err(format!(
                        "nothing was sent for {}",
                        human(limit)
                    )
                    .into())));
                };
                let error = idle_fault(*this.dir, cap.total, limit);
                rec.blame(error.clone());
                rec.body_done(*this.dir, cap.finish(BodyState::Error));
                return Poll::Ready(Some(Err(Box::new(BodyFault {
                    error,
                    source: None,
                }))));
            }
        };
        match res {
            Some(Ok(frame)) => {
                if let (Some(data), Some((rec, cap))) = (frame.data_ref(), this.state.as_mut()) {
                    // What is left of the body after this frame, plus this frame.
                    let hint = this.inner.size_hint().lower() + data.len() as u64;
                    cap.push(data, rec, *this.id, *this.dir, hint);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                let Some((rec, mut cap)) = this.state.take() else {
                    return Poll::Ready(Some(Err(e)));
                };
                let error = body_fault(*this.dir, cap.total, &*e);
                rec.blame(error.clone());
                rec.body_done(*this.dir, cap.finish(BodyState::Error));
                Poll::Ready(Some(Err(Box::new(BodyFault {
                    error,
                    source: Some(e),
                }))))
            }
            None => {
                if let Some((rec, mut cap)) = this.state.take() {
                    rec.body_done(*this.dir, cap.finish(BodyState::Complete));
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{channel, EventReceiver};
    use futures_util::stream::{self, StreamExt as _};
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use mcptap_flow::Response;

    type Chunks = Vec<Result<Frame<Bytes>, BoxError>>;

    /// A body that yields `chunks`, then ends (or, with `hang`, never sends another frame).
    fn body(
        chunks: Chunks,
        hang: bool,
    ) -> StreamBody<stream::BoxStream<'static, Result<Frame<Bytes>, BoxError>>> {
        let s = stream::iter(chunks);
        let s = if hang {
            s.chain(stream::pending()).boxed()
        } else {
            s.boxed()
        };
        StreamBody::new(s)
    }

    fn data(b: &'static [u8]) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(b)))
    }

    /// A recorder whose response head (a `200`) is already in.
    fn recorder() -> (Arc<Recorder>, EventReceiver) {
        let (tx, rx) = channel(64);
        (recorder_on(tx, 7), rx)
    }

    /// A recorder of flow `id` sending to `tx`, its response head (a `200`) already in.
    fn recorder_on(tx: crate::events::EventSender, id: u64) -> Arc<Recorder> {
        let flow = Flow {
            id: FlowId(id),
            ..Default::default()
        };
        let rec = Recorder::start(flow, tx, None);
        rec.response_head(Response {
            status: 200,
            ..Default::default()
        });
        rec
    }

    /// The finished flows sent so far.
    fn finished(rx: &mut EventReceiver) -> Vec<Flow> {
        let mut out = Vec::new();
        while let Some(ev) = rx.try_recv() {
            match ev {
                FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => out.push(*flow),
                _ => {}
            }
        }
        out
    }

    /// Ends the response side with an empty, complete body.
    async fn empty_response(rec: &Arc<Recorder>) {
        empty_body(rec, Direction::Response).await;
    }

    /// Ends one side with an empty, complete body.
    async fn empty_body(rec: &Arc<Recorder>, dir: Direction) {
        let tap = Tap::new(Empty::<Bytes>::new(), rec.clone(), dir, 1024, false);
        assert!(tap.collect().await.is_ok());
    }

    #[tokio::test]
    async fn a_body_that_errors_reports_once_and_blames_its_sender() {
        let (rec, mut rx) = recorder();
        let chunks: Chunks = vec![data(b"abc"), Err("broken".into()), data(b"never")];
        let mut tap = Tap::new(
            body(chunks, false),
            rec.clone(),
            Direction::Request,
            1024,
            false,
        );
        let first = tap.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        let err = tap.frame().await.unwrap().unwrap_err();
        // The error that goes on says whose fault it was, by type.
        let fault = err.downcast_ref::<BodyFault>().unwrap();
        assert_eq!(fault.error.kind, ErrorKind::ClientProtocol);
        drop(tap); // already reported: dropping it reports nothing more
        assert!(finished(&mut rx).is_empty(), "the response is still open");
        empty_response(&rec).await;
        let flows = finished(&mut rx);
        assert_eq!(flows.len(), 1);
        let flow = &flows[0];
        assert_eq!(flow.request.body.state, BodyState::Error);
        assert_eq!(flow.request.body.total_len, 3);
        assert_eq!(&flow.request.body.bytes[..], b"abc");
        assert_eq!(flow.state, FlowState::Aborted);
        let error = flow.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::ClientProtocol);
        assert!(error.message.contains("after 3 bytes"), "{}", error.message);
    }

    #[tokio::test]
    async fn a_response_body_cut_by_a_disconnect_blames_the_upstream() {
        let (rec, mut rx) = recorder();
        let gone: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let chunks: Chunks = vec![data(b"data: 1\n\n"), Err(gone)];
        empty_body(&rec, Direction::Request).await;
        let tap = Tap::new(body(chunks, false), rec, Direction::Response, 1024, true);
        assert!(tap.collect().await.is_err());
        let flows = finished(&mut rx);
        assert_eq!(flows.len(), 1);
        let flow = &flows[0];
        let resp = flow.response.as_ref().unwrap();
        assert_eq!(resp.body.state, BodyState::Error);
        // The event that got through before the cut is kept.
        assert_eq!(resp.sse.len(), 1);
        assert_eq!(flow.state, FlowState::Aborted);
        assert_eq!(
            flow.error.as_ref().unwrap().kind,
            ErrorKind::UpstreamDisconnected
        );
    }

    #[tokio::test]
    async fn a_body_cancelled_mid_stream_ends_its_flow_as_cut_by_the_client() {
        let (rec, mut rx) = recorder();
        empty_response(&rec).await;
        let mut tap = Tap::new(
            body(vec![data(b"hello")], true),
            rec.clone(),
            Direction::Request,
            1024,
            false,
        );
        assert_eq!(
            tap.frame().await.unwrap().unwrap().into_data().unwrap(),
            "hello"
        );
        // The next frame never comes: whoever polled gives up (the client went away).
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), tap.frame()).await;
        assert!(next.is_err());
        assert!(finished(&mut rx).is_empty());
        drop(tap);
        let flows = finished(&mut rx);
        assert_eq!(flows.len(), 1, "reported once, on drop");
        let flow = &flows[0];
        assert_eq!(flow.request.body.state, BodyState::Cancelled);
        assert_eq!(flow.request.body.total_len, 5);
        assert_eq!(flow.state, FlowState::Aborted);
        let error = flow.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::ClientDisconnected);
        assert!(error.message.contains("request body was cut after 5 bytes"));
    }

    #[tokio::test]
    async fn a_tap_dropped_unpolled_is_complete_when_empty_and_cancelled_otherwise() {
        let (rec, mut rx) = recorder();
        drop(Tap::new(
            Empty::<Bytes>::new(),
            rec.clone(),
            Direction::Request,
            1024,
            false,
        ));
        drop(Tap::new(
            Full::new(Bytes::from_static(b"unread")),
            rec,
            Direction::Response,
            1024,
            false,
        ));
        let flows = finished(&mut rx);
        assert_eq!(flows.len(), 1);
        let flow = &flows[0];
        assert_eq!(flow.request.body.state, BodyState::Complete);
        let resp = flow.response.as_ref().unwrap();
        assert_eq!(resp.body.state, BodyState::Cancelled);
        assert_eq!(resp.body.total_len, 0);
        assert_eq!(flow.state, FlowState::Aborted);
    }

    #[tokio::test]
    async fn a_large_body_waits_in_the_spool_until_the_consumer_takes_it_with_its_flow() {
        let (tx, mut rx) = channel(64);
        let spools = rx.spool_large_bodies();
        let rec = recorder_on(tx, 9);
        let small = Tap::new(
            Full::new(Bytes::from_static(b"{}")),
            rec.clone(),
            Direction::Request,
            8 << 20,
            false,
        );
        assert!(small.collect().await.is_ok());
        let want: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Chunks = want
            .chunks(70_000)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        // Limited to 2 MB: the spool keeps what the flow keeps.
        let tap = Tap::new(
            body(chunks, false),
            rec,
            Direction::Response,
            2_000_000,
            false,
        );
        assert_eq!(tap.collect().await.unwrap().to_bytes().len(), want.len());
        let mut ev = loop {
            match rx.try_recv() {
                Some(ev @ FlowEvent::Completed { .. }) => break ev,
                Some(_) => {}
                None => panic!("no final event"),
            }
        };
        let FlowEvent::Completed { flow } = &ev else {
            unreachable!()
        };
        let resp = flow.response.as_ref().unwrap();
        assert!(resp.body.bytes.is_empty(), "the event carries it empty");
        assert_eq!(&flow.request.body.bytes[..], b"{}", "small bodies stay");
        assert_eq!(spools.0.len(), 1);
        spools.unspool(&mut ev);
        assert_eq!(spools.0.len(), 0);
        let FlowEvent::Completed { flow } = &ev else {
            unreachable!()
        };
        let body = &flow.response.as_ref().unwrap().body;
        assert_eq!(&body.bytes[..], &want[..2_000_000]);
        assert!(body.truncated);
        assert_eq!(body.total_len, 3_000_000);
        assert_eq!(&flow.request.body.bytes[..], b"{}");
    }

    #[tokio::test]
    async fn a_dropped_final_event_takes_its_spooled_bodies_with_it() {
        // A channel of one event, full: the final event is dropped.
        let (tx, rx) = channel(1);
        let spools = rx.spool_large_bodies();
        let rec = Recorder::start(Flow::default(), tx, None);
        rec.response_head(Response {
            status: 200,
            ..Default::default()
        });
        empty_body(&rec, Direction::Request).await;
        let big = Bytes::from(vec![b'x'; crate::spool::SPOOL_AT + 1]);
        let tap = Tap::new(Full::new(big), rec, Direction::Response, 1 << 20, false);
        assert!(tap.collect().await.is_ok());
        // The start fills the channel: the head, the progress and the final event are dropped.
        assert_eq!(rx.dropped(), 3);
        assert_eq!(spools.0.len(), 0);
    }

    #[tokio::test]
    async fn a_body_longer_than_the_limit_is_truncated_in_the_flow_only() {
        let (rec, mut rx) = recorder();
        empty_response(&rec).await;
        let chunks: Chunks = vec![data(b"0123456789"), data(b"abcdef")];
        let tap = Tap::new(body(chunks, false), rec, Direction::Request, 8, false);
        let all = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"0123456789abcdef");
        let flows = finished(&mut rx);
        let body = &flows[0].request.body;
        assert_eq!((&body.bytes[..], body.total_len), (&b"01234567"[..], 16));
        assert!(body.truncated);
        assert_eq!(flows[0].state, FlowState::Completed);
    }

    /// Runs `chunks` through a response tap of an event stream with body limit `limit`: the
    /// events reported live, and the finished flow.
    async fn stream_through(chunks: Chunks, limit: usize) -> (Vec<mcptap_flow::SseEvent>, Flow) {
        let (tx, mut rx) = channel(4096);
        let rec = recorder_on(tx, 11);
        empty_body(&rec, Direction::Request).await;
        let tap = Tap::new(body(chunks, false), rec, Direction::Response, limit, true);
        assert!(tap.collect().await.is_ok());
        let (mut live, mut flows) = (Vec::new(), Vec::new());
        while let Some(ev) = rx.try_recv() {
            match ev {
                FlowEvent::Sse { event, .. } => live.push(event),
                FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => flows.push(*flow),
                _ => {}
            }
        }
        assert_eq!(flows.len(), 1);
        (live, flows.pop().unwrap())
    }

    /// The events a stream keeps are parsed again from its body capture when it ends, with the
    /// times they arrived: the same events as reported live, whatever the chunks' split (an
    /// empty chunk, a byte-order mark split off with the first bytes, CR LF across chunks, an
    /// event across three).
    #[tokio::test]
    async fn events_kept_from_the_body_are_the_events_reported_live() {
        let chunks: Chunks = vec![
            data(b""),
            data(b"\xEF\xBB"),
            data(b"\xBFid: 1\r"),
            data(b"\ndata: {\"a\":1}\r\n\r\n: note\n\nevent: x\ndata: one"),
            data(b"\ndata: two\n"),
            data(b"\nretry: 5\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"),
        ];
        let (live, flow) = stream_through(chunks, 4 << 20).await;
        assert_eq!(live.len(), 4, "{live:?}");
        // The first chunk alone cannot show its byte-order mark: the first field is not `id`.
        assert_eq!(live[0].id, None);
        assert_eq!(live[1].data, "one\ntwo");
        assert_eq!(live[2].retry, Some(5));
        let resp = flow.response.unwrap();
        assert_eq!(resp.sse, live);
        assert!(!resp.body.truncated);
    }

    /// Once the capture stops holding every byte (a comment past the body limit), the events
    /// before are parsed again from it and those after were kept parsed: in order, all as
    /// reported live.
    #[tokio::test]
    async fn events_past_a_truncated_capture_are_kept_parsed() {
        let comment = format!(": {}\n", "x".repeat(190));
        let chunks: Chunks = vec![
            data(b"data: a\n\n"),
            Ok(Frame::data(Bytes::from(comment))),
            data(b"data: b\n\n"),
            data(b"id: 3\ndata: c\n\n"),
        ];
        let (live, flow) = stream_through(chunks, 200).await;
        assert_eq!(live.len(), 3);
        let resp = flow.response.unwrap();
        assert_eq!((resp.body.bytes.len(), resp.body.truncated), (200, true));
        assert_eq!(resp.sse, live, "a from the capture, b and c kept parsed");
        assert_eq!(resp.sse_elided, 0);
    }

    #[tokio::test]
    async fn a_long_stream_keeps_its_first_events_and_its_answer_and_reports_every_event() {
        let (tx, mut rx) = channel(4096);
        let rec = recorder_on(tx, 9);
        // The request side ends first, as it does on the wire.
        empty_body(&rec, Direction::Request).await;
        let notes = STREAM_KEEP_EVENTS + 40;
        let mut chunks: Chunks = (0..notes)
            .map(|i| {
                let ev = format!(
                    "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{i}}}}}\n\n"
                );
                Ok(Frame::data(Bytes::from(ev)))
            })
            .collect();
        chunks.push(data(
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
        ));
        let limit = 4 << 20;
        let tap = Tap::new(body(chunks, false), rec, Direction::Response, limit, true);
        let all = tap.collect().await.unwrap().to_bytes();
        let (mut live, mut flows, mut live_events) = (0, Vec::new(), Vec::new());
        while let Some(ev) = rx.try_recv() {
            match ev {
                FlowEvent::Sse { event, .. } => {
                    live += 1;
                    live_events.push(event);
                }
                FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => flows.push(*flow),
                _ => {}
            }
        }
        // Every event reached the client and was reported as it passed.
        assert_eq!(live, notes + 1);
        assert_eq!(all.iter().filter(|&&b| b == b'\n').count(), 2 * (notes + 1));
        let resp = flows[0].response.as_ref().unwrap();
        // The flow kept the first STREAM_KEEP_EVENTS and the answer, and counted the rest.
        assert_eq!(resp.sse.len(), STREAM_KEEP_EVENTS + 1);
        assert!(resp.sse.last().unwrap().data.contains("\"result\""));
        assert_eq!(
            resp.sse[..STREAM_KEEP_EVENTS],
            live_events[..STREAM_KEEP_EVENTS]
        );
        assert_eq!(resp.sse_elided, 40);
        // The body capture stopped with the window: bounded, marked truncated.
        assert!(resp.body.truncated);
        assert!(resp.body.bytes.len() < all.len());
        assert_eq!(resp.body.total_len, all.len() as u64);
    }
}
