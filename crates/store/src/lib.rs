//! mcptap's sessions on disk.
//!
//! Every proxy run records a *session*: a directory (0700) holding `journal.jsonl` (0600), a
//! crash-safe JSON Lines journal appended and flushed as flows progress, and, after a clean
//! shutdown, `session.har`, the same flows as HAR 1.2 written atomically. A journal left by a
//! crash (even one whose last line is torn) still reads and exports.
//!
//! ```text
//! FlowEvent ──► prepare_event (decode bodies, redact) ──► Journal::record ──► journal.jsonl
//!                                                         Journal::finish ──► session.har
//! journal.jsonl ──► JournalReader (streaming) ──► export ──► out.har
//! any .har (mcptap, Chrome, Firefox, mitmproxy, Charles, HTTP Toolkit) ──► har::read_har ──► flows
//! ```
//!
//! * [`prepare`] / [`prepare_event`]: what every consumer of engine events should see: bodies
//!   decoded from their `Content-Encoding` (bounded), secrets redacted with fingerprints (see
//!   [`mcptap_flow::redact`]) unless `--keep-secrets`.
//! * [`Journal`]: the writer; [`JournalReader`]: the streaming reader.
//! * [`har`]: the HAR 1.2 writer (streaming) and reader (tolerant of other tools' files).
//! * [`export()`] and [`load`]: what `mcptap export`, `analyze` and `view` call.
#![deny(missing_docs)]

mod cut;
mod decode;
mod error;
mod export;
mod format;
pub mod har;
mod journal;
mod prepare;
mod reader;
mod reorder;
mod session;
mod timefmt;

pub use decode::{decode_body, Decoded};
pub use error::{HarError, StoreError};
pub use export::{export, export_journal, export_to, write_atomic, ExportOptions, ExportReport};
pub use format::{HAR_FILE, JOURNAL_FILE, JOURNAL_VERSION};
pub use journal::{Journal, SessionMeta};
pub use prepare::{
    prepare, prepare_event, prepare_event_known, Options, DEFAULT_BODY_LIMIT, KEEP_SECRETS_WARNING,
};
pub use reader::{read_flow_at, read_journal, JournalReader, ReadWarning};
pub use reorder::StartOrder;
pub use session::{
    detect, leading_meta, load, stream, stream_early, Session, SourceKind, Streamed,
};
