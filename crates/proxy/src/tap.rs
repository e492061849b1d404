//! The body tap: bodies stream through frame by frame while the first `limit` bytes are copied
//! into the flow. Each tap reports how its stream ended exactly once — at the end, on error, or
//! when dropped early — and the flow is finished when both of its bodies have reported.

use crate::events::EventSender;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use mcptap_flow::sse::SseParser;
use mcptap_flow::{
    now_micros, BodyState, CapturedBody, Direction, ErrorKind, Flow, FlowError, FlowEvent, FlowId,
    FlowState,
};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Progress events are sent at most once per this many bytes of a body.
const PROGRESS_EVERY: u64 = 256 * 1024;

/// The boxed error type bodies carry through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A flow under construction, shared by the request tap, the response tap and the handler.
#[derive(Debug)]
pub(crate) struct Recorder {
    inner: Mutex<Pending>,
    events: EventSender,
    /// Inject mode learns tokens and metadata from every finished flow.
    observer: Option<Arc<crate::inject::Injector>>,
}

#[derive(Debug)]
struct Pending {
    flow: Flow,
    /// Bodies that have not reported their end yet; the flow ends when this reaches zero.
    parts_left: u8,
    finished: bool,
}

impl Recorder {
    /// Starts recording `flow` (whose request head is filled in) and announces it.
    pub(crate) fn start(
        flow: Flow,
        events: EventSender,
        observer: Option<Arc<crate::inject::Injector>>,
    ) -> Arc<Recorder> {
        events.send(FlowEvent::RequestStarted {
            flow: Box::new(flow.clone()),
        });
        Arc::new(Recorder {
            inner: Mutex::new(Pending {
                flow,
                parts_left: 2,
                finished: false,
            }),
            events,
            observer,
        })
    }

    pub(crate) fn events(&self) -> &EventSender {
        &self.events
    }

    pub(crate) fn id(&self) -> FlowId {
        self.with(|f| f.id)
    }

    /// Runs `f` on the flow under the lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Flow) -> R) -> R {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p.flow)
    }

    /// Records the response head and announces it.
    pub(crate) fn response_head(&self, resp: mcptap_flow::Response) {
        let at = now_micros();
        let ev = self.with(|flow| {
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
        });
        self.events.send(ev);
    }

    /// A body ended (or was dropped); finishes the flow when it was the last one.
    fn body_done(&self, dir: Direction, body: CapturedBody, sse: Vec<mcptap_flow::SseEvent>) {
        let now = now_micros();
        let done = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match dir {
                Direction::Request => {
                    p.flow.timings.request_done.get_or_insert(now);
                    p.flow.request.body = body;
                }
                Direction::Response => {
                    if let Some(resp) = p.flow.response.as_mut() {
                        resp.body = body;
                        resp.sse = sse;
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
            flow.state = classify_end(flow);
            // Nothing reads the flow once it is finished: hand it over instead of copying.
            std::mem::take(flow)
        };
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

/// Decides the final state from what was recorded.
fn classify_end(flow: &mut Flow) -> FlowState {
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
                    _ => "the client went away",
                }
            ),
            hint: None,
        });
        return FlowState::Aborted;
    }
    FlowState::Completed
}

/// Copies frames into a bounded buffer as they pass.
#[derive(Debug)]
struct Capture {
    buf: Vec<u8>,
    total: u64,
    limit: usize,
    truncated: bool,
    next_progress: u64,
    sse: Option<(SseParser, Vec<mcptap_flow::SseEvent>)>,
    /// Bytes of SSE events kept in the flow so far.
    sse_kept: usize,
}

impl Capture {
    fn push(&mut self, data: &Bytes, rec: &Recorder, id: FlowId, dir: Direction, hint: u64) {
        if self.total == 0 && self.buf.capacity() == 0 {
            // One allocation for the whole capture when the length is announced, instead of
            // doubling (and copying) its way up to the limit; a large one is recycled.
            let want = usize::try_from(hint).unwrap_or(usize::MAX).min(self.limit);
            self.buf = crate::capture_pool::take(want.max(data.len().min(self.limit)));
        }
        self.total += data.len() as u64;
        let room = self.limit.saturating_sub(self.buf.len());
        if room >= data.len() {
            self.buf.extend_from_slice(data);
        } else {
            self.buf.extend_from_slice(&data[..room]);
            self.truncated = true;
        }
        if let Some((parser, events)) = self.sse.as_mut() {
            let limit = self.limit;
            let kept = &mut self.sse_kept;
            parser.feed(data, now_micros(), |ev| {
                // Events kept in the flow are bounded like the body; every event is still
                // reported live.
                let size = ev.data.len() + 64;
                if *kept + size <= limit {
                    *kept += size;
                    events.push(ev.clone());
                }
                rec.events().send(FlowEvent::Sse { id, event: ev });
            });
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

    fn finish(&mut self, state: BodyState) -> (CapturedBody, Vec<mcptap_flow::SseEvent>) {
        let body = CapturedBody {
            bytes: crate::capture_pool::freeze(std::mem::take(&mut self.buf)),
            total_len: self.total,
            truncated: self.truncated,
            state,
            encoding: None,
        };
        let sse = self.sse.take().map(|(_, e)| e).unwrap_or_default();
        (body, sse)
    }
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
                let (body, sse) = cap.finish(state);
                rec.body_done(*this.dir, body, sse);
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
        }
    }

    pub(crate) fn new(
        inner: B,
        rec: Arc<Recorder>,
        dir: Direction,
        limit: usize,
        sse: bool,
    ) -> Tap<B> {
        Tap {
            inner,
            id: rec.id(),
            state: Some((
                rec,
                Capture {
                    buf: Vec::new(),
                    total: 0,
                    limit,
                    truncated: false,
                    next_progress: PROGRESS_EVERY,
                    sse_kept: 0,
                    sse: sse.then(|| (SseParser::new(limit.max(64 * 1024)), Vec::new())),
                },
            )),
            dir,
        }
    }
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
        let res = std::task::ready!(this.inner.as_mut().poll_frame(cx));
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
                if let Some((rec, mut cap)) = this.state.take() {
                    let (body, sse) = cap.finish(BodyState::Error);
                    rec.body_done(*this.dir, body, sse);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                if let Some((rec, mut cap)) = this.state.take() {
                    let (body, sse) = cap.finish(BodyState::Complete);
                    rec.body_done(*this.dir, body, sse);
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
