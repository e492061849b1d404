//! Whatever the user names (`mcptap export|analyze|view PATH`): a session directory, a journal,
//! or a HAR file from any tool, told apart by content, not by extension.

use crate::error::StoreError;
use crate::format::{HAR_FILE, JOURNAL_FILE};
use crate::har::read_har;
use crate::har::read_har_early;
use crate::journal::SessionMeta;
use crate::reader::{read_journal, ReadWarning};
use mcptap_flow::{Flow, Micros};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A mcptap journal (JSON Lines).
    Journal,
    /// A HAR file (mcptap's or another tool's; plain, gzip or zlib-compressed).
    Har,
}

/// A whole session in memory (for analysis and viewing; export streams instead).
#[derive(Debug, Clone)]
pub struct Session {
    /// The file the flows came from.
    pub path: PathBuf,
    /// What kind of file it was.
    pub kind: SourceKind,
    /// The session's metadata, when the file has it.
    pub meta: Option<SessionMeta>,
    /// The tool that wrote a HAR file (`"Chrome 125"`), when it says.
    pub creator: Option<String>,
    /// The flows, in start order (`timings.started`, then id).
    pub flows: Vec<Flow>,
    /// True when the session holds raw secrets (`--keep-secrets`, or a HAR that says so).
    pub raw_secrets: bool,
    /// What was tolerated: skipped journal lines, unreadable `_mcptap` blocks.
    pub warnings: Vec<String>,
    /// False for a journal without its end line: the proxy did not shut down cleanly.
    pub complete: bool,
    /// When recording stopped (the journal's end line, or `log._mcptap.ended` of mcptap's
    /// HAR); `None` for a crashed session or another tool's HAR.
    pub ended: Option<mcptap_flow::Micros>,
}

/// Tells what `path` is. A directory must hold `journal.jsonl` (preferred) or `session.har`;
/// a file is a journal when its first line is a journal record, else a HAR file when it looks
/// like JSON (or is compressed).
pub fn detect(path: &Path) -> Result<(PathBuf, SourceKind), StoreError> {
    let meta = std::fs::metadata(path).map_err(|source| StoreError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_dir() {
        for (name, kind) in [
            (JOURNAL_FILE, SourceKind::Journal),
            (HAR_FILE, SourceKind::Har),
        ] {
            let file = path.join(name);
            // Only a file that is not there is skipped: one that cannot be read (permissions, a
            // directory by that name, a symlink loop) is reported with the OS's reason.
            match std::fs::metadata(&file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StoreError::Read { path: file, source }),
                Ok(_) => {
                    let readable = File::open(&file).and_then(|mut f| f.read(&mut [0u8; 1]));
                    return match readable {
                        Ok(_) => Ok((file, kind)),
                        Err(source) => Err(StoreError::Read { path: file, source }),
                    };
                }
            }
        }
        return Err(StoreError::UnknownFormat {
            path: path.to_owned(),
            why: format!("a directory without {JOURNAL_FILE} or {HAR_FILE}"),
        });
    }
    let mut head = Vec::with_capacity(256);
    File::open(path)
        .and_then(|f| f.take(256).read_to_end(&mut head))
        .map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
    let unknown = |why: &str| StoreError::UnknownFormat {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    if head.starts_with(&[0x1f, 0x8b]) || head.first() == Some(&0x78) {
        return Ok((path.to_owned(), SourceKind::Har));
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head);
    let start = text
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .ok_or_else(|| unknown("empty"))?;
    let text = &text[start..];
    if text.first() != Some(&b'{') {
        return Err(unknown("not JSON"));
    }
    let compact: Vec<u8> = text[1..]
        .iter()
        .copied()
        .filter(|c| !matches!(c, b' ' | b'\t'))
        .take(8)
        .collect();
    if compact.starts_with(b"\"type\"") {
        Ok((path.to_owned(), SourceKind::Journal))
    } else {
        Ok((path.to_owned(), SourceKind::Har))
    }
}

/// Loads a session directory, a journal or a HAR file whole. Flows are as stored (a HAR from
/// another tool keeps its raw secrets: run [`prepare`](crate::prepare) to redact them).
pub fn load(path: &Path) -> Result<Session, StoreError> {
    let (file, kind) = detect(path)?;
    match kind {
        SourceKind::Journal => {
            let mut reader = read_journal(&file)?;
            let mut flows = Vec::new();
            for f in reader.by_ref() {
                flows.push(f?);
            }
            flows.sort_by_key(|f| (f.timings.started, f.id));
            let meta = reader.meta().cloned();
            let warnings: Vec<ReadWarning> = reader.take_warnings();
            Ok(Session {
                path: file,
                kind,
                raw_secrets: meta.as_ref().is_some_and(|m| m.raw_secrets)
                    || flows.iter().any(|f| f.raw_secrets),
                meta,
                creator: None,
                flows,
                warnings: warnings.iter().map(ToString::to_string).collect(),
                complete: reader.ended_cleanly(),
                ended: reader.ended_at(),
            })
        }
        SourceKind::Har => {
            let f = File::open(&file).map_err(|source| StoreError::Read {
                path: file.clone(),
                source,
            })?;
            let mut har = read_har(BufReader::new(f)).map_err(|source| StoreError::Har {
                path: file.clone(),
                source,
            })?;
            har.flows.sort_by_key(|f| (f.timings.started, f.id));
            Ok(Session {
                path: file,
                kind,
                raw_secrets: har.raw_secrets || har.flows.iter().any(|f| f.raw_secrets),
                meta: har.session,
                creator: har.creator,
                flows: har.flows,
                warnings: har.warnings,
                complete: true,
                ended: har.ended,
            })
        }
    }
}

/// How far a journal's order may stray from start order: a flow is stamped on one worker and
/// journalled when its event reaches the recorder, so a flow journalled later may have started
/// a little earlier than one already read (the time between stamping a flow and sending its
/// event: microseconds, unless a worker is preempted). A flow that strays further costs a
/// consumer that checks the order a second reading, never a wrong one.
const JOURNAL_SLACK: Micros = 50_000;

/// The session metadata a file states before its flows (a journal's first line); `None` for
/// a HAR file, which states it after its entries.
pub fn leading_meta(path: &Path) -> Result<Option<SessionMeta>, StoreError> {
    let (file, kind) = detect(path)?;
    match kind {
        SourceKind::Journal => Ok(read_journal(&file)?.read_meta()?.cloned()),
        SourceKind::Har => Ok(None),
    }
}

/// Reads a session directory, a journal or a HAR file one flow at a time, never whole: each
/// flow goes to `each`, in the file's order (a journal's: when flows completed; a HAR's: as
/// written, by start for mcptap's and browsers' files), with a *bound*: as far as that order
/// tells, no flow still to come completes (or starts) before it. A consumer that needs flows
/// in completion order waits for the bound to pass them, and checks (the bound of a file
/// written by another tool is only as good as its order). Returns the session with its
/// `flows` empty, read to the end.
pub fn stream(path: &Path, each: &mut dyn FnMut(Flow, Micros)) -> Result<Session, StoreError> {
    stream_early(path, &mut |s| {
        if let Streamed::Flow(f, bound) = s {
            each(f, bound);
        }
    })
}

/// What [`stream_early`] hands its consumer, in the file's order.
#[derive(Debug)]
// Handed over by value once and never stored: a box would only add an allocation per flow.
#[allow(clippy::large_enum_variant)]
pub enum Streamed {
    /// No flow still to come, the next one handed over included, completes before this (µs
    /// since the epoch): flows held for their turn that complete earlier can go on now. Said
    /// before the next flow's large bodies are read, so that they are not in memory with
    /// those of the flows that wait.
    Early(Micros),
    /// The next flow, and its bound (see [`stream`]).
    Flow(Flow, Micros),
}

/// [`stream`], also saying a bound before a flow's large bodies are read
/// ([`Streamed::Early`]).
pub fn stream_early(path: &Path, each: &mut dyn FnMut(Streamed)) -> Result<Session, StoreError> {
    let (file, kind) = detect(path)?;
    match kind {
        SourceKind::Journal => {
            let mut reader = read_journal(&file)?;
            let mut raw_secrets = false;
            loop {
                let next = reader.next_flow(JOURNAL_SLACK, &mut |t| each(Streamed::Early(t)));
                let Some(f) = next else {
                    break;
                };
                let f = f?;
                raw_secrets |= f.raw_secrets;
                // Flows not yet complete started no earlier than the earliest one in flight,
                // and flows not yet seen no earlier than the latest start (each less the slack).
                let bound = reader.bound(JOURNAL_SLACK);
                each(Streamed::Flow(f, bound));
            }
            let meta = reader.meta().cloned();
            let warnings: Vec<ReadWarning> = reader.take_warnings();
            Ok(Session {
                path: file,
                kind,
                raw_secrets: raw_secrets || meta.as_ref().is_some_and(|m| m.raw_secrets),
                meta,
                creator: None,
                flows: Vec::new(),
                warnings: warnings.iter().map(ToString::to_string).collect(),
                complete: reader.ended_cleanly(),
                ended: reader.ended_at(),
            })
        }
        SourceKind::Har => {
            let f = File::open(&file).map_err(|source| StoreError::Read {
                path: file.clone(),
                source,
            })?;
            let mut raw_secrets = false;
            let mut latest = Micros::MIN;
            // Both callbacks hand over to `each`, one at a time (never one inside the other).
            let each = std::cell::RefCell::new(each);
            let har = read_har_early(
                f,
                Some(&file),
                &mut |t| (each.borrow_mut())(Streamed::Early(t)),
                &mut |f, _| {
                    raw_secrets |= f.raw_secrets;
                    latest = latest.max(f.timings.started);
                    (each.borrow_mut())(Streamed::Flow(f, latest));
                },
            )
            .map_err(|source| StoreError::Har {
                path: file.clone(),
                source,
            })?;
            Ok(Session {
                path: file,
                kind,
                raw_secrets: har.raw_secrets || raw_secrets,
                meta: har.session,
                creator: har.creator,
                flows: Vec::new(),
                warnings: har.warnings,
                complete: true,
                ended: har.ended,
            })
        }
    }
}
