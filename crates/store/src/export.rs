//! Journal (or HAR) to HAR, streaming, written atomically.

use crate::error::StoreError;
use crate::har::{read_har, HarWriter, LogExtra};
use crate::prepare::{prepare, Options};
use crate::reader::{JournalReader, ReadWarning};
use crate::reorder::StartOrder;
use crate::session::{detect, SourceKind};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
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
            export_journal(reader, out, out_name, options)
        }
        SourceKind::Har => {
            let file = File::open(&path).map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
            let har = read_har(BufReader::new(file)).map_err(|source| StoreError::Har {
                path: path.clone(),
                source,
            })?;
            let werr = |source| StoreError::Write {
                path: out_name.to_owned(),
                source,
            };
            let mut w = HarWriter::new(out, &options.mcptap_version).map_err(werr)?;
            let mut flows = har.flows;
            flows.sort_by_key(|f| (f.timings.started, f.id));
            let mut report = ExportReport::default();
            for mut f in flows {
                prepare(&mut f, &options.prepare);
                w.write(&f).map_err(werr)?;
                report.entries += 1;
                report.pending += u64::from(f.state == mcptap_flow::FlowState::Pending);
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
    }
}

/// Streams a journal to HAR: entries in start order within the reorder bound, pending flows of
/// a crashed session included.
pub fn export_journal<R: BufRead>(
    mut reader: JournalReader<R>,
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
