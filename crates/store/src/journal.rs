//! The session journal: JSON Lines, appended and flushed as flows progress, so that `kill -9`
//! at any moment loses nothing that was recorded before it.
//!
//! The line format is declared in [`crate::format`].
//!
//! `body` progress events are not written (they carry nothing the final flow lacks). Each line
//! is serialized into one reused buffer and handed to the file's buffer whole (measured:
//! `serde_json` writing through the file's `BufWriter` fragment by fragment cost ~20 % more
//! per line than into a `Vec`); large bodies are not in lines (they go to
//! [`format::BODIES_FILE`]), so the buffer stays small. A crash in the middle of a line leaves
//! a torn last line, which the reader skips. [`Journal::record`]
//! flushes to the OS at each line that finishes something, and the proxy, which takes events in
//! batches of a few milliseconds, flushes once per batch (no fsync per line: a process crash
//! loses nothing that was flushed, a power cut may lose the last seconds). A flow that starts and
//! finishes within one batch is written as its final line only; one whose `request_started`
//! line (and `response_head` line) went out earlier has a final line that points at them
//! instead of saying its head again, when the final flow's head is still the same
//! ([`format::HeadRef`]: the journal keeps where each open flow's head lines went and what
//! they said, shared headers and a few short strings, until its end). [`Journal::finish`]
//! fsyncs, then writes `session.har` atomically.

use crate::error::StoreError;
use crate::export::{export_journal, write_atomic, ExportOptions};
use crate::format::{self, HAR_FILE, JOURNAL_FILE};
use crate::prepare::Options;
use crate::reader::JournalReader;
use crate::timefmt;
use mcptap_flow::{now_micros, FlowEvent, FlowId, Micros, SseEvent};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{Hash as _, Hasher as _};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What a session says about itself (the journal's first line, and `log._mcptap.session` in
/// HAR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// When the session started.
    pub created: Micros,
    /// The mcptap version that recorded it.
    pub mcptap: String,
    /// True when recorded with `--keep-secrets`: secrets are in clear.
    #[serde(default)]
    pub raw_secrets: bool,
    /// The command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The proxy mode (`regular`, `reverse:https://…`), when the CLI says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl SessionMeta {
    /// Replaces the credentials in the recorded command line and mode (`--proxy-auth user:pass`,
    /// a URL's password or secret query parameters) by their redaction markers. Always applied
    /// when a journal is created and when a session is exported: these are the user's own
    /// credentials, not traffic, so even `--keep-secrets` does not keep them.
    pub fn redact_command_line(&mut self) {
        self.argv = mcptap_flow::redact::argv(&self.argv);
        if let Some(m) = &mut self.mode {
            *m = mcptap_flow::redact::redact_text(m);
        }
    }

    /// A session starting now, recorded by mcptap `version`.
    pub fn new(version: impl Into<String>) -> SessionMeta {
        SessionMeta {
            created: now_micros(),
            mcptap: version.into(),
            raw_secrets: false,
            argv: Vec::new(),
            mode: None,
        }
    }
}

/// A line buffer that grew past this (a stream's final line holding its events) is not kept
/// for the next line. Bodies of [`format::SIDE_MIN`] or more are not in lines, so nearly every
/// line fits well below it.
const LINE_KEPT: usize = 256 * 1024;

/// Appends a session's events to `journal.jsonl`.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
    meta: SessionMeta,
    flows: u64,
    /// Bytes appended so far (buffered or not): where the next line starts.
    position: u64,
    /// Per flow in flight whose events went out as `sse` lines: where they are, so that its
    /// final line need not repeat them.
    streams: HashMap<FlowId, Stream>,
    /// Large bodies, raw ([`format::BODIES_FILE`]).
    side: SideFile,
    /// Per flow in flight whose `request_started` line went out: where, and what it said, so
    /// that its final line need not say it again ([`format::HeadRef`]).
    heads: HashMap<FlowId, Head>,
}

/// The head lines written for one flow.
#[derive(Debug)]
struct Head {
    /// Where its `request_started` line starts, and what it said.
    at: u64,
    start: format::StartHead,
    /// Where its `response_head` line starts, and what it said.
    response: Option<(u64, format::ResponseHead)>,
}

/// The `sse` lines written for one flow.
#[derive(Debug, Default)]
struct Stream {
    offsets: Vec<u64>,
    /// A digest of the events as written, to check that the final line holds the same ones.
    digest: u64,
}

/// A digest of SSE events (what `sse` lines said against what a final flow holds).
fn digest(previous: u64, ev: &SseEvent) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (previous, ev.at, &ev.event, &ev.id, &ev.data, ev.retry).hash(&mut h);
    h.finish()
}

impl Journal {
    /// Creates the session directory `dir` (0700; it may exist if it holds no journal) and its
    /// journal (0600), and writes the session line.
    pub fn create(dir: &Path, mut meta: SessionMeta) -> Result<Journal, StoreError> {
        meta.redact_command_line();
        create_dir(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                StoreError::Exists { path: path.clone() }
            } else {
                StoreError::Write {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let mut journal = Journal {
            dir: dir.to_owned(),
            path,
            out: BufWriter::with_capacity(64 * 1024, file),
            line: Vec::with_capacity(4096),
            meta,
            flows: 0,
            position: 0,
            streams: HashMap::new(),
            heads: HashMap::new(),
            side: SideFile {
                path: dir.join(format::BODIES_FILE),
                file: None,
                len: 0,
                direct: Direct::Untried,
            },
        };
        let mut buf = Vec::new();
        format::write_session(&mut buf, &journal.meta).map_err(|e| journal.write_err(e.into()))?;
        journal.line = buf;
        journal.write_line(true)?;
        Ok(journal)
    }

    /// Creates a new session under `base` (normally `<confdir>/sessions`) named after the
    /// current UTC time (`2026-05-01T12-30-05Z`, with `-2`, `-3`… if taken).
    pub fn create_in(base: &Path, meta: SessionMeta) -> Result<Journal, StoreError> {
        let stamp = timefmt::dir_stamp(meta.created);
        let mut n = 1;
        loop {
            let name = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            match Journal::create(&base.join(name), meta.clone()) {
                Err(StoreError::Exists { .. }) if n < 1000 => n += 1,
                other => return other,
            }
        }
    }

    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The session's metadata.
    pub fn meta(&self) -> &SessionMeta {
        &self.meta
    }

    /// Flows recorded as completed or failed so far.
    pub fn flows(&self) -> u64 {
        self.flows
    }

    /// The byte offset in the journal file where the next line will start (a live view reads a
    /// flow back from there once it is flushed).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Appends one event (already [`prepare`](crate::prepare_event)d). Lines that complete
    /// something — a finished flow, an SSE event — are flushed at once (with everything before
    /// them); a request or response head waits for the next of those, which saves a write per
    /// flow and loses nothing that had finished. `Body` progress events are skipped; returns
    /// whether a line was written.
    pub fn record(&mut self, event: &FlowEvent) -> Result<bool, StoreError> {
        let flush = matches!(
            event,
            FlowEvent::Completed { .. } | FlowEvent::Failed { .. } | FlowEvent::Sse { .. }
        );
        let written = self.record_unflushed(&mut event.clone())?;
        if written && flush {
            self.flush()?;
        }
        Ok(written)
    }

    /// Appends one event like [`Journal::record`] but leaves it in the buffer: a caller that
    /// takes events in batches (the proxy) calls [`Journal::flush`] once per batch. A final
    /// event is borrowed mutably to write it without what goes elsewhere (a stream's events and
    /// body when its `sse` lines hold them, large bodies that go to the side file); it is given
    /// back as it came.
    pub fn record_unflushed(&mut self, event: &mut FlowEvent) -> Result<bool, StoreError> {
        if matches!(event, FlowEvent::Body { .. }) {
            return Ok(false);
        }
        if event.is_final() {
            let stream = self.streams.remove(&event.flow_id());
            let head = self.heads.remove(&event.flow_id());
            return self.write_final(event, stream, head);
        }
        let at = self.position;
        self.line.clear();
        let mut buf = std::mem::take(&mut self.line);
        let res = format::write_event(&mut buf, event);
        self.line = buf;
        res.map_err(|e| self.write_err(e.into()))?;
        self.write_line(false)?;
        match event {
            FlowEvent::RequestStarted { flow } => {
                let start = format::StartHead::of(flow);
                self.heads.insert(
                    flow.id,
                    Head {
                        at,
                        start,
                        response: None,
                    },
                );
            }
            FlowEvent::ResponseHead {
                id,
                status,
                version,
                headers,
                ..
            } => {
                if let Some(h) = self.heads.get_mut(id) {
                    let head = format::ResponseHead {
                        status: *status,
                        version: *version,
                        headers: headers.clone(),
                    };
                    h.response = Some((at, head));
                }
            }
            _ => {}
        }
        if let FlowEvent::Sse { id, event } = event {
            let s = self.streams.entry(*id).or_default();
            if s.offsets.len() < crate::reader::MAX_SSE_EVENTS {
                s.offsets.push(at);
                s.digest = digest(s.digest, event);
            } else {
                // More than a reader keeps: the final line holds what it has.
                s.digest = 0;
            }
        }
        Ok(true)
    }

    /// Hands everything appended so far to the OS (a crash of mcptap then loses none of it).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.out.flush().map_err(|e| self.write_err(e))
    }

    /// Flushes and fsyncs the journal.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.side.sync().map_err(|source| StoreError::Write {
            path: self.side.path.clone(),
            source,
        })?;
        self.out.flush().map_err(|e| self.write_err(e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| self.write_err(e))
    }

    /// Closes the session: writes the end line, fsyncs the journal, then writes `session.har`
    /// atomically from it (keeping secrets only if the session did). Returns the HAR's path.
    pub fn finish(self) -> Result<PathBuf, StoreError> {
        self.finish_at(now_micros())
    }

    /// [`Journal::finish`] with the time recording stopped given by the caller (the proxy
    /// hands the same time to its analyzer, so the saved session is decided as the live one
    /// was).
    pub fn finish_at(mut self, at: Micros) -> Result<PathBuf, StoreError> {
        let mut buf = Vec::new();
        format::write_end(&mut buf, at, self.flows).map_err(|e| self.write_err(e.into()))?;
        self.line = buf;
        self.write_line(true)?;
        self.sync()?;
        let har = self.dir.join(HAR_FILE);
        let file = File::open(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        let reader = JournalReader::new(std::io::BufReader::with_capacity(256 * 1024, file));
        let options = ExportOptions {
            prepare: Options {
                keep_secrets: self.meta.raw_secrets,
                ..Options::default()
            },
            ..ExportOptions::default()
        };
        let reader = reader.with_path(&self.path);
        write_atomic(&har, |w| {
            export_journal(reader, w, &har, &options).map(|_| ())
        })?;
        Ok(har)
    }

    /// Closes the journal after a write failed, dropping what is still buffered: the file ends
    /// where the failure left it (perhaps in a torn line), and nothing is written later behind
    /// the caller's back (a `BufWriter` would try on drop).
    pub fn abandon(self) {
        let (_file, _unwritten) = self.out.into_parts();
    }

    /// Writes a flow's final line, serialized whole first (a line that cannot be serialized
    /// leaves nothing in the file; one larger than [`LINE_KEPT`] does not stay resident: large
    /// bodies are in the side file, not in lines). When its events are exactly those
    /// its `sse` lines hold (`stream`), they are left out (and the response body too when it is
    /// those events written back), the line saying where they are. When its head is the same as
    /// its `request_started` (and `response_head`) line said (`head`), it is left out, the line
    /// saying where those are. Large bodies, and a
    /// stream's body that its events do not rebuild, go to the side file first, the line
    /// saying where. The event is given back unchanged.
    fn write_final(
        &mut self,
        event: &mut FlowEvent,
        stream: Option<Stream>,
        head: Option<Head>,
    ) -> Result<bool, StoreError> {
        let (FlowEvent::Completed { flow } | FlowEvent::Failed { flow }) = event else {
            unreachable!("write_final takes a final event");
        };
        let head = head
            .filter(|h| h.start.same(flow))
            .map(|h| format::HeadRef {
                request: h.at,
                response: h
                    .response
                    .filter(|(_, r)| flow.response.as_ref().is_some_and(|resp| r.same(resp)))
                    .map(|(at, _)| at),
            });
        let streamed = stream.is_some();
        let (sse, events, sse_body) = match (stream, flow.response.as_mut()) {
            (Some(stream), Some(resp)) => leave_out_events(resp, stream),
            _ => (None, None, None),
        };
        // Bodies that go to the side file: taken out of the flow while the line is written.
        let mut bodies = format::BodiesRef::default();
        let mut res = Ok(());
        let req = spill(&mut self.side, &mut flow.request.body, false).unwrap_or_else(|e| {
            res = Err(e);
            None
        });
        let resp = match flow.response.as_mut() {
            // A stream's body that its events do not rebuild would be repeated in full.
            Some(r) if res.is_ok() && sse_body.is_none() => {
                spill(&mut self.side, &mut r.body, streamed).unwrap_or_else(|e| {
                    res = Err(e);
                    None
                })
            }
            _ => None,
        };
        bodies.request = req.as_ref().map(|(at, b)| [*at, b.len() as u64]);
        bodies.response = resp.as_ref().map(|(at, b)| [*at, b.len() as u64]);
        if res.is_ok() {
            self.line.clear();
            res = write_final_line(&mut self.line, event, head, sse.as_ref(), &bodies);
            if res.is_ok() {
                res = self.out.write_all(&self.line).map_err(SideOrLine::Line);
            }
            if res.is_ok() {
                self.position += self.line.len() as u64;
            }
            if self.line.capacity() > LINE_KEPT {
                // A rare long line (a stream's events): not kept resident.
                self.line = Vec::with_capacity(4096);
            }
        }
        // Given back as it came.
        if let FlowEvent::Completed { flow } | FlowEvent::Failed { flow } = event {
            if let Some((_, b)) = req {
                flow.request.body.bytes = b;
            }
            if let Some(r) = flow.response.as_mut() {
                if let Some(ev) = events {
                    r.sse = ev;
                }
                if let Some(b) = sse_body.or(resp.map(|(_, b)| b)) {
                    r.body.bytes = b;
                }
            }
        }
        match res {
            Ok(()) => {
                self.flows += 1;
                Ok(true)
            }
            Err(SideOrLine::Side(e)) => Err(StoreError::Write {
                path: self.side.path.clone(),
                source: e,
            }),
            Err(SideOrLine::Line(e)) => Err(self.write_err(e)),
        }
    }

    fn write_line(&mut self, flush: bool) -> Result<(), StoreError> {
        self.line.push(b'\n');
        let mut res = self.out.write_all(&self.line);
        if res.is_ok() {
            self.position += self.line.len() as u64;
        }
        if flush {
            res = res.and_then(|()| self.out.flush());
        }
        res.map_err(|e| self.write_err(e))
    }

    fn write_err(&self, source: std::io::Error) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// Takes out of a stream's final response the events its `sse` lines hold, when they are
/// exactly those, and the body too when it is those events written back: the line's
/// [`format::SseRef`], and what was taken out (to put back).
#[allow(clippy::type_complexity)]
fn leave_out_events(
    resp: &mut mcptap_flow::Response,
    stream: Stream,
) -> (
    Option<format::SseRef>,
    Option<Vec<SseEvent>>,
    Option<bytes::Bytes>,
) {
    let same = if resp.sse_elided == 0 {
        resp.sse.len() == stream.offsets.len()
            && stream.digest != 0
            && resp.sse.iter().fold(0, digest) == stream.digest
    } else {
        // A long stream kept only some of its events: its lines hold them all (the ones it
        // kept among them) when every event it counted went out as a line.
        resp.sse.len() as u64 + resp.sse_elided == stream.offsets.len() as u64 && stream.digest != 0
    };
    if !same {
        return (None, None, None);
    }
    let events = std::mem::take(&mut resp.sse);
    let rebuilt = (!resp.body.truncated && resp.body.encoding.is_none())
        .then(|| {
            format::LineEnd::ALL
                .into_iter()
                .find(|&end| resp.body.bytes == format::sse_text(&events, end).as_bytes())
                .map(|end| (end, Vec::new()))
                // Keep-alive comments between the events.
                .or_else(|| format::sse_extra(&resp.body.bytes, &events))
        })
        .flatten();
    let (body_end, extra) = match rebuilt {
        Some((end, extra)) => (Some(end), extra),
        None => (None, Vec::new()),
    };
    let body = body_end.map(|_| std::mem::take(&mut resp.body.bytes));
    let sse = format::SseRef {
        lines: stream.offsets,
        body: body_end,
        extra,
    };
    (Some(sse), Some(events), body)
}

/// Appends `body` to the side file when it is large or not text (or `always`, unless empty), taking its
/// bytes out: where they went, and the bytes (to put back).
fn spill(
    side: &mut SideFile,
    body: &mut mcptap_flow::CapturedBody,
    always: bool,
) -> Result<Option<(u64, bytes::Bytes)>, SideOrLine> {
    let len = body.bytes.len();
    // A body that is not text would be base64 in the line, a third larger than raw.
    let large = len >= format::SIDE_MIN || std::str::from_utf8(&body.bytes).is_err();
    if len == 0 || !(large || always) {
        return Ok(None);
    }
    let at = side.append(&body.bytes)?;
    Ok(Some((at, std::mem::take(&mut body.bytes))))
}

/// A failure writing a final line: to the side file or to the journal.
enum SideOrLine {
    Side(std::io::Error),
    Line(std::io::Error),
}

/// Writes a final line (with its newline) to `out`: the event (without its head when `head`
/// says where that is), then the members that say where its events and bodies are.
fn write_final_line(
    out: &mut Vec<u8>,
    event: &FlowEvent,
    head: Option<format::HeadRef>,
    sse: Option<&format::SseRef>,
    bodies: &format::BodiesRef,
) -> Result<(), SideOrLine> {
    let line = |e: serde_json::Error| SideOrLine::Line(e.into());
    match head {
        Some(head) => format::write_rest(out, event, head).map_err(line)?,
        None => format::write_event(out, event).map_err(line)?,
    }
    if let Some(sse) = sse {
        format::write_streamed_ref(out, sse).map_err(line)?;
    }
    if !bodies.is_empty() {
        format::write_bodies_ref(out, bodies).map_err(line)?;
    }
    out.push(b'\n');
    Ok(())
}

/// The side file of large bodies ([`format::BODIES_FILE`]), created at the first one. Written
/// unbuffered: a body's bytes are with the OS before the line that points at them is written.
///
/// A body of [`DIRECT_MIN`] bytes or more is written with direct I/O where the file system
/// allows it (Linux's `O_DIRECT`), at the next multiple of [`DIRECT_ALIGN`], its last block
/// padded with zeros: readers go by offset and length, so the gaps are never read. Through the
/// page cache, every megabyte appended took fresh pages, and filling them was the largest part
/// of the recorder's work on a 10 MB download (measured: ~5 ms of kernel copy per 4 MiB body
/// against ~0.5 ms direct, on a VM where fresh pages are costly); the proxy never reads the
/// bodies back while it runs (a terminal view's reread goes to the disk).
#[derive(Debug)]
struct SideFile {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    direct: Direct,
}

/// Bodies at least this long go to the side file with direct I/O (smaller ones are appended
/// through the page cache).
const DIRECT_MIN: usize = 256 * 1024;
/// Direct I/O's unit: the offset, the length and the buffer's address of a direct write are
/// multiples of it (the largest logical block size in use).
const DIRECT_ALIGN: usize = 4096;
/// Bytes staged in the aligned buffer per direct write (a body that is not aligned in memory).
const DIRECT_CHUNK: usize = 256 * 1024;

/// The side file's direct-I/O handle.
#[derive(Debug, Default)]
enum Direct {
    /// Not opened yet.
    #[default]
    Untried,
    /// Open, with its staging buffer (aligned from [`Direct::window`]).
    Open(File, Vec<u8>),
    /// The file system (or the platform) does not take direct I/O: everything is buffered.
    Off,
}

impl Direct {
    /// The staging buffer's aligned window of [`DIRECT_CHUNK`] bytes.
    fn window(buf: &mut [u8]) -> Option<&mut [u8]> {
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
        buf.get_mut(at..at.checked_add(DIRECT_CHUNK)?)
    }
}

/// `n` rounded up to a multiple of [`DIRECT_ALIGN`].
fn align_up(n: u64) -> u64 {
    let a = DIRECT_ALIGN as u64;
    n.div_ceil(a) * a
}

impl SideFile {
    /// Appends `bytes`; returns the offset they start at.
    fn append(&mut self, bytes: &[u8]) -> Result<u64, SideOrLine> {
        if self.file.is_none() {
            let mut opts = OpenOptions::new();
            opts.append(true).create(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let file = opts.open(&self.path).map_err(SideOrLine::Side)?;
            // A file left there by something else is appended to, never overwritten.
            self.len = file.metadata().map_err(SideOrLine::Side)?.len();
            self.file = Some(file);
        }
        if bytes.len() >= DIRECT_MIN {
            if let Some(at) = self.append_direct(bytes)? {
                return Ok(at);
            }
        }
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above");
        };
        let at = self.len;
        if let Err(e) = file.write_all(bytes) {
            // Whatever part went out stays unreferenced; later bodies go after it.
            self.len = file.metadata().map_or(u64::MAX, |m| m.len());
            return Err(SideOrLine::Side(e));
        }
        self.len += bytes.len() as u64;
        Ok(at)
    }

    /// Appends `bytes` with direct I/O at the next aligned offset; `None` when direct I/O is
    /// not available here (nothing was written: the caller appends through the page cache).
    fn append_direct(&mut self, bytes: &[u8]) -> Result<Option<u64>, SideOrLine> {
        if matches!(self.direct, Direct::Untried) {
            self.direct = open_direct(&self.path);
        }
        let Direct::Open(file, buf) = &mut self.direct else {
            return Ok(None);
        };
        let Some(window) = Direct::window(buf) else {
            self.direct = Direct::Off;
            return Ok(None);
        };
        let at = align_up(self.len);
        let mut off = at;
        // A body that starts at an aligned address (a spooled body, read back) goes straight
        // from where it is, but for its last partial block; any other through the staging
        // buffer.
        let whole = if bytes.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
            bytes.len() / DIRECT_ALIGN * DIRECT_ALIGN
        } else {
            0
        };
        let (direct, staged) = bytes.split_at(whole);
        let pieces = std::iter::once((direct, false))
            .filter(|(d, _)| !d.is_empty())
            .chain(staged.chunks(DIRECT_CHUNK).map(|c| (c, true)));
        for (piece, stage) in pieces {
            let out: &[u8] = if stage {
                let padded = usize::try_from(align_up(piece.len() as u64)).unwrap_or(DIRECT_CHUNK);
                window[..piece.len()].copy_from_slice(piece);
                window[piece.len()..padded].fill(0);
                &window[..padded]
            } else {
                piece
            };
            if let Err(e) = write_all_at(file, out, off) {
                if off == at && e.kind() == std::io::ErrorKind::InvalidInput {
                    // Refused before anything was written: not a file system for direct I/O.
                    self.direct = Direct::Off;
                    return Ok(None);
                }
                // Whatever part went out stays unreferenced; later bodies go after it.
                self.len = file.metadata().map_or(u64::MAX, |m| m.len());
                return Err(SideOrLine::Side(e));
            }
            off += out.len() as u64;
        }
        self.len = off;
        Ok(Some(at))
    }

    fn sync(&self) -> std::io::Result<()> {
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

/// The side file opened a second time, for direct I/O (Linux only).
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Direct {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    match file {
        Ok(f) => Direct::Open(f, vec![0; DIRECT_CHUNK + DIRECT_ALIGN]),
        Err(_) => Direct::Off,
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> Direct {
    Direct::Off
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}

#[cfg(not(unix))]
fn write_all_at(_: &File, _: &[u8], _: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::InvalidInput.into())
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}
