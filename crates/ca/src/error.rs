//! Why the CA could not be loaded, created or used.
//!
//! One enum for the whole crate, because callers handle its failures in only two ways: a problem
//! with the CA files stops the program with a message naming the file (and the file is left as
//! it was), while a host name that cannot go into a certificate fails just that one connection.
//! [`CaError::is_invalid_host`] and [`CaError::path`] let callers tell these apart by type.

use std::io;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A CA file or its directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`read`, `write`, `create directory`).
        action: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A CA file exists but cannot be used. It was left exactly as it was.
    #[error(
        "{} cannot be used: {reason} (the file was left untouched; fix or restore it, or move it \
         away to have mcptap create a new CA)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate exists but its private key file does not.
    #[error(
        "{} exists but the CA's private key {} does not: restore the key file, or move the \
         certificate away to have mcptap create a new CA (which clients must then trust)",
        cert_path.display(),
        key_path.display()
    )]
    MissingKey {
        /// The certificate-only file that was found.
        cert_path: PathBuf,
        /// The key file that is missing.
        key_path: PathBuf,
    },
    /// The CA certificate is no longer valid, so no client would accept what it signs.
    #[error(
        "the CA certificate in {} expired on {not_after}: move the CA files away to have mcptap \
         create a new CA (which clients must then trust)",
        path.display()
    )]
    Expired {
        /// The file holding the certificate.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The host cannot be named in a certificate (it is neither a DNS name nor an IP address).
    #[error("cannot issue a certificate for {host:?}: {reason}")]
    InvalidHost {
        /// The host as it was given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Generating a key or signing a certificate failed.
    #[error("cannot {action}: {source}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: rcgen::Error,
    },
    /// rustls rejected a key or the configuration, or the random number generator failed.
    #[error("TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
}

impl CaError {
    /// True if the host given to
    /// [`ServerConfigSource::server_config`](crate::ServerConfigSource::server_config) cannot be
    /// put in a certificate: the peer's fault, not the CA's.
    pub fn is_invalid_host(&self) -> bool {
        matches!(self, CaError::InvalidHost { .. })
    }

    /// The CA file (or directory) this error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            CaError::Io { path, .. } | CaError::Corrupt { path, .. } => Some(path),
            CaError::Expired { path, .. } => Some(path),
            CaError::MissingKey { key_path, .. } => Some(key_path),
            CaError::InvalidHost { .. } | CaError::Crypto { .. } | CaError::Rustls(_) => None,
        }
    }

    pub(crate) fn io(path: &Path, action: &'static str, source: io::Error) -> CaError {
        CaError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> CaError {
        CaError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn crypto(action: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
        move |source| CaError::Crypto { action, source }
    }
}
