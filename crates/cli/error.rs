//! What went wrong, by kind, and the exit status each kind gets (jj's `CommandErrorKind`,
//! sysexits' numbers where they fit).
//!
//! A command's error is an `anyhow::Error`; its kind is either attached where the error is made
//! ([`usage`], [`input`], [`Kind::of`] through [`ResultExt::kind`]) or read from the library
//! error types in its source chain ([`ErrorKind::of`]), never from the message text. What
//! nothing classifies is internal: a bug or a resource mcptap itself could not get.
//!
//! The statuses are documented in `mcptap --help` ([`EXIT_STATUS_HELP`]) and the README.

use std::fmt;

/// Why a command failed, which decides its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line is wrong: an invalid value, options that do not go together, a port
    /// already taken, a finding id that does not exist. Fix the arguments. Exit 2 (clap's own).
    Usage,
    /// Something named on the command line (or mcptap's CA in its configuration directory)
    /// cannot be used: a missing or unreadable file, not a session, an invalid HAR, a corrupt
    /// CA, a certificate without a key. Fix the file or the path. Exit 3.
    Input,
    /// The system refused: a file or directory cannot be written (full disk, permissions), the
    /// listener cannot bind. Exit 74 (sysexits' `EX_IOERR`).
    Io,
    /// mcptap itself failed (a thread or the runtime cannot start, the terminal view crashed).
    /// Exit 70 (sysexits' `EX_SOFTWARE`).
    Internal,
}

/// `mcptap --help`, after the options: every exit status.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success
  1   analyze, probe: a finding at or above --fail-on (probe: or a step of the flow failed)
  2   usage: invalid arguments or options that do not go together, a port already in use;
      probe: the server cannot be probed at all
  3   input: a file or directory named cannot be used (missing, unreadable, not a session or
      HAR file, a corrupt CA, --cert without a usable key)
  70  internal: mcptap itself failed (a bug; please report it)
  74  I/O: a file cannot be written (full disk, permissions) or the listener cannot bind
  run: the command's own status (126 cannot run it, 127 not found, 128+N killed by signal N)";

impl ErrorKind {
    /// The process exit status for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::Input => 3,
            ErrorKind::Io => 74,
            ErrorKind::Internal => 70,
        }
    }

    /// The kind of `e`: the first kind attached along its chain, else the first library error
    /// in it that tells, else [`ErrorKind::Internal`].
    pub fn of(e: &anyhow::Error) -> ErrorKind {
        e.chain().find_map(classify).unwrap_or(ErrorKind::Internal)
    }

    /// The kind of a library error and its sources, as [`ErrorKind::of`].
    pub fn of_error(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
        std::iter::successors(Some(e), |e| e.source())
            .find_map(classify)
            .unwrap_or(ErrorKind::Internal)
    }
}

/// What one error in a chain says about the kind, if anything.
fn classify(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if let Some(k) = e.downcast_ref::<Kinded>() {
        return Some(k.kind);
    }
    if let Some(e) = e.downcast_ref::<mcptap_store::StoreError>() {
        use mcptap_store::StoreError as S;
        return Some(match e {
            S::Read { .. } | S::UnknownFormat { .. } | S::Har { .. } => ErrorKind::Input,
            // A session directory that already holds a journal: -w names another.
            S::Exists { .. } => ErrorKind::Usage,
            S::CreateDir { .. } | S::Write { .. } => ErrorKind::Io,
        });
    }
    if e.downcast_ref::<mcptap_ca::CaError>().is_some() {
        return Some(ErrorKind::Input);
    }
    if let Some(e) = e.downcast_ref::<mcptap_proxy::ProxyError>() {
        use mcptap_proxy::ProxyError as P;
        return Some(match e {
            P::AddrInUse { .. } | P::IgnoreHosts(_) => ErrorKind::Usage,
            P::Bind { .. } => ErrorKind::Io,
            P::Trust(_) => ErrorKind::Input,
        });
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return Some(ErrorKind::Io);
    }
    None
}

/// An error with its kind attached; displays as the error itself.
#[derive(Debug)]
struct Kinded {
    kind: ErrorKind,
    error: anyhow::Error,
}

impl fmt::Display for Kinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Kinded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// `error` as an error of this kind.
pub fn with_kind(kind: ErrorKind, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Kinded {
        kind,
        error: error.into(),
    })
}

/// A usage error with this message.
pub fn usage(msg: impl fmt::Display) -> anyhow::Error {
    with_kind(ErrorKind::Usage, anyhow::anyhow!("{msg}"))
}

/// An input error with this message.
pub fn input(msg: impl fmt::Display) -> anyhow::Error {
    with_kind(ErrorKind::Input, anyhow::anyhow!("{msg}"))
}

/// Attaches a kind to a result's error.
pub trait ResultExt<T> {
    /// The error, if any, as one of `kind`.
    fn kind(self, kind: ErrorKind) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn kind(self, kind: ErrorKind) -> anyhow::Result<T> {
        self.map_err(|e| with_kind(kind, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_read_from_the_chain_by_type_and_survives_context() {
        let e = usage("--mode x").context("while starting");
        assert_eq!(ErrorKind::of(&e), ErrorKind::Usage);
        assert_eq!(format!("{e:#}"), "while starting: --mode x");
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let e = anyhow::Error::new(io).context("cannot write x");
        assert_eq!(ErrorKind::of(&e), ErrorKind::Io);
        let e = anyhow::Error::new(mcptap_store::StoreError::UnknownFormat {
            path: "x".into(),
            why: "empty".into(),
        });
        assert_eq!(ErrorKind::of(&e).exit_code(), 3);
        // An attached kind wins over what a library error underneath would say.
        let e: anyhow::Result<()> =
            Err(std::io::Error::other("no such file")).kind(ErrorKind::Input);
        let e = e.unwrap_err();
        assert_eq!(ErrorKind::of(&e), ErrorKind::Input);
        assert_eq!(e.to_string(), "no such file");
        assert_eq!(
            ErrorKind::of(&anyhow::anyhow!("a thread")),
            ErrorKind::Internal
        );
    }
}
