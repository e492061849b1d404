//! The session journal: JSON Lines, appended and flushed as flows progress, so that `kill -9`
//! at any moment loses nothing that was recorded before it.
//!
//! The line format is declared in [`crate::format`].
//!
//! `body` progress events are not written (they carry nothing the final flow lacks). A finished
//! flow's line is serialized straight into the file's buffer, without a copy of it (its bodies
//! can be megabytes); a crash in the middle of one leaves a torn last line, which the reader
//! skips. Every other line is written whole; [`Journal::record`]
//! flushes to the OS at each line that finishes something, and the proxy, which takes events in
//! batches of a few milliseconds, flushes once per batch (no fsync per line: a process crash
//! loses nothing that was flushed, a power cut may lose the last seconds). A flow that starts and
//! finishes within one batch is written as its final line only. [`Journal::finish`] fsyncs,
//! then writes `session.har` atomically.

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
    /// takes events in batches (the proxy) calls [`Journal::flush`] once per batch. A stream's
    /// final event is borrowed mutably to write it without its events (and body) when its
    /// `sse` lines hold them; it is given back as it came.
    pub fn record_unflushed(&mut self, event: &mut FlowEvent) -> Result<bool, StoreError> {
        if matches!(event, FlowEvent::Body { .. }) {
            return Ok(false);
        }
        if event.is_final() && !self.streams.contains_key(&event.flow_id()) {
            return self.write_direct(event);
        }
        let at = self.position;
        self.line.clear();
        let mut buf = std::mem::take(&mut self.line);
        let res = match event {
            FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => {
                let stream = self.streams.remove(&flow.id);
                match stream {
                    Some(stream) => write_final(&mut buf, event, stream),
                    None => format::write_event(&mut buf, event),
                }
            }
            _ => format::write_event(&mut buf, event),
        };
        self.line = buf;
        res.map_err(|e| self.write_err(e.into()))?;
        self.write_line(false)?;
        match event {
            FlowEvent::Sse { id, event } => {
                let s = self.streams.entry(*id).or_default();
                if s.offsets.len() < crate::reader::MAX_SSE_EVENTS {
                    s.offsets.push(at);
                    s.digest = digest(s.digest, event);
                } else {
                    // More than a reader keeps: the final line holds what it has.
                    s.digest = 0;
                }
            }
            e if e.is_final() => self.flows += 1,
            _ => {}
        }
        Ok(true)
    }

    /// Hands everything appended so far to the OS (a crash of mcptap then loses none of it).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.out.flush().map_err(|e| self.write_err(e))
    }

    /// Flushes and fsyncs the journal.
    pub fn sync(&mut self) -> Result<(), StoreError> {
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

    /// Writes a final flow that has no `sse` lines straight into the file's buffer. Measured on
    /// four parallel 10 MB downloads (4 MiB captured each): a line buffer as large as the
    /// largest body stayed resident, and each line was copied once more on its way to the file.
    fn write_direct(&mut self, event: &FlowEvent) -> Result<bool, StoreError> {
        let mut out = Counting {
            inner: &mut self.out,
            written: 0,
        };
        let res = format::write_event(&mut out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        self.position += out.written;
        res.map_err(|e| self.write_err(e))?;
        self.flows += 1;
        Ok(true)
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

/// Writes a flow's final line. When its events are exactly those its `sse` lines hold, they are
/// left out (and the response body too when it is those events written back), the line saying
/// where they are; otherwise it is the whole flow. The event is given back unchanged.
fn write_final(buf: &mut Vec<u8>, event: &mut FlowEvent, stream: Stream) -> serde_json::Result<()> {
    let (FlowEvent::Completed { flow } | FlowEvent::Failed { flow }) = event else {
        return format::write_event(buf, event);
    };
    let Some(resp) = flow.response.as_mut() else {
        return format::write_event(buf, event);
    };
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
        return format::write_event(buf, event);
    }
    let elided = std::mem::take(&mut resp.sse_elided);
    let events = std::mem::take(&mut resp.sse);
    let body_end = (!resp.body.truncated && resp.body.encoding.is_none())
        .then(|| {
            format::LineEnd::ALL
                .into_iter()
                .find(|&end| resp.body.bytes == format::sse_text(&events, end).as_bytes())
        })
        .flatten();
    let body = body_end.map(|_| std::mem::take(&mut resp.body.bytes));
    let sse = format::SseRef {
        lines: stream.offsets,
        body: body_end,
    };
    let res = format::write_streamed(buf, event, &sse);
    if let FlowEvent::Completed { flow } | FlowEvent::Failed { flow } = event {
        if let Some(resp) = flow.response.as_mut() {
            resp.sse = events;
            resp.sse_elided = elided;
            if let Some(b) = body {
                resp.body.bytes = b;
            }
        }
    }
    res
}

/// A writer that counts what it accepted (the journal's position).
struct Counting<'a, W> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
