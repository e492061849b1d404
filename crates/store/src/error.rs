//! Errors of the store, by kind: what the user can fix (a path, a file that is not a session)
//! and what the system refused (I/O). Sources are chained, never folded into the message.

use std::fmt;
use std::path::PathBuf;

/// Why a session could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The session directory could not be created.
    #[error("cannot create session directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory already holds a journal; sessions are never overwritten.
    #[error("{path} already holds a session journal")]
    Exists {
        /// The journal found there.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path is neither a session directory, a journal nor a HAR file.
    #[error("{path} is not a mcptap session, journal or HAR file ({why})")]
    UnknownFormat {
        /// The path.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// A HAR file is invalid.
    #[error("{path}: invalid HAR")]
    Har {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: HarError,
    },
}

impl StoreError {
    /// True when the user named something that is not a session (fix the path or the file),
    /// as opposed to an I/O failure.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::Exists { .. } | StoreError::UnknownFormat { .. } | StoreError::Har { .. }
        )
    }

    /// The I/O error underneath, if any.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            StoreError::CreateDir { source, .. }
            | StoreError::Write { source, .. }
            | StoreError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where and why a HAR file could not be read: `entry 12: request.url: missing`.
#[derive(Debug, thiserror::Error)]
pub struct HarError {
    /// Index of the entry in `log.entries` (from 0), when the problem is inside one.
    pub entry: Option<usize>,
    /// The field, as a path relative to the entry (`request.url`, `response.headers[3]`) or
    /// to the document (`log.entries`) when `entry` is `None`.
    pub field: String,
    /// What is wrong (`missing`, `expected a string`).
    pub reason: String,
    /// The JSON syntax error, when the file is not JSON at all.
    #[source]
    pub source: Option<serde_json::Error>,
}

impl HarError {
    pub(crate) fn at(
        entry: Option<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        HarError {
            entry,
            field: field.into(),
            reason: reason.into(),
            source: None,
        }
    }
}

impl fmt::Display for HarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.entry {
            write!(f, "entry {i}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}
