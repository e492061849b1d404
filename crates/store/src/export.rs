//! Journal (or HAR) to HAR, streaming, written atomically.

use crate::error::StoreError;
use crate::har::{read_entry_at, read_har_placed, EntryPlace, HarWriter, LogExtra};
use crate::prepare::{prepare, Options};
use crate::reader::{JournalReader, ReadWarning};
use crate::reorder::StartOrder;
use crate::session::{detect, SourceKind};
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How [`export`] works.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Applied to every flow before it is written ([`prepare`]): by default secrets are
    /// redacted, so exporting a file from another tool, or a session recorded with
    /// `--keep-secrets`, redacts it unless `keep_secrets` is set. Idempotent on mcptap's own,
    /// already-prepared flows.
    pub prepare: Options,
    /// At most this many completed flows are held to write entries in start order.
    pub reorder_entries: usize,
    /// At most about this many bytes of bodies are held for the same.
    pub reorder_bytes: usize,
    /// `log.creator.version`.
    pub mcptap_version: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            prepare: Options::default(),
            reorder_entries: 10_000,
            reorder_bytes: 256 << 20,
            mcptap_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Entries written.
    pub entries: u64,
    /// Of which flows that never completed (a journal cut by a crash).
    pub pending: u64,
    /// True when the input is a journal without the end line a clean shutdown writes: mcptap
    /// was killed or crashed (only then may its pending flows be blamed on a crash).
    pub cut_short: bool,
    /// Entries written after one that started later (the reorder bound was hit).
    pub out_of_order: u64,
    /// Journal lines skipped (a torn last line…), with line numbers.
    pub warnings: Vec<ReadWarning>,
    /// The most flows the reader had in flight at once (its memory bound).
    pub max_in_flight: usize,
    /// The most completed flows held at once for ordering.
    pub max_held: usize,
}

/// Writes `input` (a session directory, a `journal.jsonl`, or any HAR file) to `output` as
/// HAR 1.2, atomically. A journal is streamed; a torn or damaged line is reported in the
/// [`ExportReport`] and skipped.
pub fn export(
    input: &Path,
    output: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, StoreError> {
    let mut report = None;
    write_atomic(output, |w| {
        report = Some(export_to(input, w, output, options)?);
        Ok(())
    })?;
    Ok(report.unwrap_or_default())
}

/// [`export`] to any writer (`-o -`), not atomically; `out_name` names it in errors.
pub fn export_to(
    input: &Path,
    out: &mut dyn Write,
    out_name: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, StoreError> {
    let (path, kind) = detect(input)?;
    match kind {
        SourceKind::Journal => {
            let reader = crate::reader::read_journal(&path)?;
            export_journal_from(reader, Some(path), out, out_name, options)
        }
        SourceKind::Har => export_har(&path, out, out_name, options),
    }
}

/// How far a HAR file's entries may stray from start order and still be written sorted: an
/// entry waits until one starting this much later has been read, or until the entries
/// waiting hold [`HAR_REORDER_BYTES`] of bodies (or the reorder bounds are hit). mcptap's and
/// browsers' files are in start order, so this only delays writing.
const HAR_REORDER_LAG: mcptap_flow::Micros = 1_000_000;

/// At most about this many bytes of bodies wait to be written in start order (a HAR file's
/// entries come in start order; waiting is for other tools' files that stray a little).
const HAR_REORDER_BYTES: usize = 16 << 20;

/// A HAR file to HAR, one entry at a time: entries written in start order within
/// [`HAR_REORDER_LAG`] and the reorder bounds, each prepared on the way. A large entry
/// ([`SPILL_FROM`](crate::reorder::SPILL_FROM) bytes of bodies or more) of a file that can be
/// read again waits as its place in the file and is read back when its turn comes.
fn export_har(
    path: &Path,
    out: &mut dyn Write,
    out_name: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, StoreError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    /// A flow waiting for its turn: whole, or where its entry is in the file.
    enum Hold {
        Whole(Box<mcptap_flow::Flow>),
        At(EntryPlace),
    }
    /// A flow waiting for its turn, by start, id and file order, with its approximate size.
    type Held = mcptap_flow::ByKey<(mcptap_flow::Micros, mcptap_flow::FlowId, u64), (usize, Hold)>;

    let file = File::open(path).map_err(|source| StoreError::Read {
        path: path.to_owned(),
        source,
    })?;
    let werr = |source| StoreError::Write {
        path: out_name.to_owned(),
        source,
    };
    let mut w = HarWriter::new(out, &options.mcptap_version).map_err(werr)?;
    let mut report = ExportReport::default();
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let (mut held_bytes, mut seq, mut latest) = (0usize, 0u64, mcptap_flow::Micros::MIN);
    let mut written: Option<(mcptap_flow::Micros, mcptap_flow::FlowId)> = None;
    let mut failed = None;
    let mut write = |w: &mut HarWriter<&mut dyn Write>,
                     report: &mut ExportReport,
                     Held {
                         key: (started, id, _),
                         value: (_, hold),
                     }: Held|
     -> Result<(), StoreError> {
        if written.is_some_and(|last| (started, id) < last) {
            report.out_of_order += 1;
        }
        written = Some((started, id));
        let f = match hold {
            Hold::Whole(f) => *f,
            Hold::At(place) => {
                let mut f = read_entry_at(path, place)?;
                prepare(&mut f, &options.prepare);
                f
            }
        };
        w.write(&f).map_err(werr)?;
        report.entries += 1;
        report.pending += u64::from(f.state == mcptap_flow::FlowState::Pending);
        Ok(())
    };
    let har = read_har_placed(file, Some(path), &mut |mut f, place| {
        if failed.is_some() {
            return;
        }
        let size = |f: &mcptap_flow::Flow| {
            f.request.body.bytes.len() + f.response.as_ref().map_or(0, |r| r.body.bytes.len())
        };
        latest = latest.max(f.timings.started);
        let key = (f.timings.started, f.id, seq);
        let value = match place {
            // Prepared when it is read back.
            Some(place) if size(&f) >= crate::reorder::SPILL_FROM => {
                drop(f);
                (64, Hold::At(place))
            }
            _ => {
                prepare(&mut f, &options.prepare);
                (size(&f), Hold::Whole(Box::new(f)))
            }
        };
        held_bytes += value.0;
        held.push(Reverse(Held { key, value }));
        seq += 1;
        report.max_held = report.max_held.max(held.len());
        while let Some(Reverse(top)) = held.peek() {
            let due = top.key.0 < latest.saturating_sub(HAR_REORDER_LAG)
                || held.len() > options.reorder_entries
                || held_bytes > options.reorder_bytes.min(HAR_REORDER_BYTES);
            if !due {
                break;
            }
            let Some(Reverse(top)) = held.pop() else {
                break;
            };
            held_bytes -= top.value.0;
            if let Err(e) = write(&mut w, &mut report, top) {
                failed = Some(e);
                return;
            }
        }
    })
    .map_err(|source| StoreError::Har {
        path: path.to_owned(),
        source,
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    while let Some(Reverse(top)) = held.pop() {
        write(&mut w, &mut report, top)?;
    }
    let extra = LogExtra {
        session: har.session.map(|mut m| {
            m.redact_command_line();
            m
        }),
        ended: har.ended,
        ..LogExtra::default()
    };
    w.finish(extra).map_err(werr)?;
    Ok(report)
}

/// Streams a journal to HAR: entries in start order within the reorder bound, pending flows of
/// a crashed session included.
pub fn export_journal<R: BufRead>(
    reader: JournalReader<R>,
    out: &mut dyn Write,
    out_name: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, StoreError> {
    export_journal_from(reader, None, out, out_name, options)
}

/// [`export_journal`]; `file`, when the reader reads that file, lets large flows wait for
/// their turn as their place in it ([`StartOrder::spilling`]).
fn export_journal_from<R: BufRead>(
    mut reader: JournalReader<R>,
    file: Option<PathBuf>,
    out: &mut dyn Write,
    out_name: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, StoreError> {
    let werr = |source| StoreError::Write {
        path: out_name.to_owned(),
        source,
    };
    reader.read_meta()?;
    let mut w = HarWriter::new(out, &options.mcptap_version).map_err(werr)?;
    let mut sorted = StartOrder::new(reader, options.reorder_entries, options.reorder_bytes);
    if let Some(file) = file {
        sorted = sorted.spilling(file);
    }
    let mut report = ExportReport::default();
    for flow in sorted.by_ref() {
        let mut flow = flow?;
        prepare(&mut flow, &options.prepare);
        w.write(&flow).map_err(werr)?;
        report.entries += 1;
        report.pending += u64::from(flow.state == mcptap_flow::FlowState::Pending);
    }
    report.out_of_order = sorted.out_of_order();
    report.max_held = sorted.max_held();
    let reader = sorted.reader_mut();
    report.cut_short = !reader.ended_cleanly();
    report.max_in_flight = reader.max_in_flight();
    report.warnings = reader.take_warnings();
    let extra = LogExtra {
        session: reader.meta().cloned().map(|mut m| {
            m.redact_command_line();
            m
        }),
        raw_secrets: false,
        pending: report.pending,
        ended: reader.ended_at(),
        out_of_order: report.out_of_order,
        warnings: Vec::new(),
    }
    .with_warnings(&report.warnings);
    w.finish(extra).map_err(werr)?;
    Ok(report)
}

/// Writes `path` whole or not at all: a temporary file in the same directory, flushed,
/// `sync_data`, renamed over `path`, and the directory synced (jj's `persist_temp_file`).
///
/// What is not a plain file is written in place, never replaced: a device or a pipe
/// (`-o /dev/null`, `/dev/stdout`, a FIFO — renaming over `/dev/null` would turn it into a file
/// for every program on the machine), and a symbolic link (the link stays, its target is
/// written).
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let werr = |source| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let in_place = std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_symlink() || !m.file_type().is_file());
    if in_place {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(werr)?;
        // A regular file behind a link starts empty; a device or a pipe cannot be truncated.
        if file.metadata().is_ok_and(|m| m.is_file()) {
            file.set_len(0).map_err(werr)?;
        }
        let mut w = BufWriter::with_capacity(256 * 1024, file);
        write(&mut w)?;
        return w.flush().map_err(werr);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".mcptap-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(werr)?;
    let mut w = BufWriter::with_capacity(256 * 1024, tmp);
    write(&mut w)?;
    let tmp = w.into_inner().map_err(|e| werr(e.into_error()))?;
    tmp.as_file().sync_data().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    #[cfg(unix)]
    if let Ok(d) = File::open(&dir) {
        // Makes the rename itself durable; failure here loses nothing already written.
        let _ = d.sync_all();
    }
    Ok(())
}
