//! The CA's files on disk, and writing them crash-safely.
//!
//! The CA is the user's to keep: clients were told to trust it, so losing or silently replacing
//! it breaks every one of them. Files are therefore written whole into a temporary file in the
//! same directory, synced, and only then given their name, with a hard link that fails if the
//! name is taken: a crash leaves either no file or a complete one, and two mcptap processes
//! creating a CA at the same time end up sharing one instead of overwriting each other. The
//! private key is created with mode 0600 from the first byte; it is never widened later.

use crate::CaError;
use base64::Engine as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// File name of the CA's private key followed by its certificate (like mitmproxy's
/// `mitmproxy-ca.pem`). Created with mode 0600.
pub const CA_KEY_FILE: &str = "mcptap-ca.pem";

/// File name of the CA certificate alone: what clients are told to trust. Mode 0644.
pub const CA_CERT_FILE: &str = "mcptap-ca-cert.pem";

/// Who may read a file being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Only the owner (0600): the private key.
    Private,
    /// Everyone may read (0644): the certificate.
    Public,
}

/// What [`write_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// The file was created with the given contents.
    Created,
    /// A file with that name already existed; it was left alone and nothing was written.
    AlreadyExists,
}

/// The contents of `path`, or `None` if there is no such file.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, CaError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CaError::io(path, "read", e)),
    }
}

/// Whether anything (a file, a directory, a dangling symlink) has the name `path`.
pub(crate) fn exists(path: &Path) -> Result<bool, CaError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CaError::io(path, "inspect", e)),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is.
pub(crate) fn create_dir(dir: &Path) -> Result<(), CaError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| CaError::io(dir, "create directory", e))
}

/// Writes `contents` to a new file `path`, crash-safely, unless `path` already exists.
pub(crate) fn write_new(path: &Path, contents: &[u8], access: Access) -> Result<Written, CaError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp_path, mut tmp) = create_temp(dir, path, access)?;
    let result = fill(&mut tmp, contents)
        .map_err(|e| CaError::io(&tmp_path, "write", e))
        .and_then(|()| {
            drop(tmp);
            publish(&tmp_path, path)
        });
    // After a successful link the temporary name is a second name for the same file; after a
    // failure it is debris. Either way it goes.
    if let Err(e) = fs::remove_file(&tmp_path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!("cannot remove temporary file {}: {e}", tmp_path.display());
        }
    }
    if matches!(result, Ok(Written::Created)) {
        sync_dir(dir);
    }
    result
}

fn fill(file: &mut File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

/// Gives the finished temporary file its real name, never replacing an existing file.
fn publish(tmp_path: &Path, path: &Path) -> Result<Written, CaError> {
    match fs::hard_link(tmp_path, path) {
        Ok(()) => Ok(Written::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Written::AlreadyExists),
        Err(e) => {
            // Some filesystems have no hard links. Fall back to a rename, which cannot refuse
            // to replace, so check first (a race with another process remains possible there).
            tracing::debug!("hard link to {} failed ({e}); renaming", path.display());
            if exists(path)? {
                return Ok(Written::AlreadyExists);
            }
            fs::rename(tmp_path, path).map_err(|e| CaError::io(path, "write", e))?;
            Ok(Written::Created)
        }
    }
}

/// Creates a fresh temporary file next to `path`, with its final permissions from the start.
fn create_temp(
    dir: &Path,
    path: &Path,
    access: Access,
) -> Result<(std::path::PathBuf, File), CaError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or_else(|| "mcptap".into(), |n| n.to_string_lossy());
    let mut attempt = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(
            &mut opts,
            match access {
                Access::Private => 0o600,
                Access::Public => 0o644,
            },
        );
        match opts.open(&tmp_path) {
            Ok(file) => {
                // The umask may have narrowed a public file's mode; the certificate is meant to
                // be readable by every client, so restore 0644 before anything is written. The
                // private key needs no such step: the umask can only narrow 0600.
                #[cfg(unix)]
                if access == Access::Public {
                    use std::os::unix::fs::PermissionsExt as _;
                    file.set_permissions(fs::Permissions::from_mode(0o644))
                        .map_err(|e| CaError::io(&tmp_path, "set permissions of", e))?;
                }
                return Ok((tmp_path, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(CaError::io(&tmp_path, "create", e)),
        }
    }
}

/// Makes a new directory entry durable. Best effort: some filesystems refuse to sync a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!("cannot sync directory {}: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Encodes DER as PEM with `label`, 64 characters a line, LF line endings.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.pem");
        assert_eq!(
            write_new(&path, b"first", Access::Private).expect("first write"),
            Written::Created
        );
        assert_eq!(
            write_new(&path, b"second", Access::Private).expect("second write"),
            Written::AlreadyExists
        );
        assert_eq!(fs::read(&path).expect("read"), b"first");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["f.pem"], "temporary files were left behind");
    }

    #[cfg(unix)]
    #[test]
    fn modes_are_exact() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b");
        create_dir(&nested).expect("create dir");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&nested), 0o700);
        write_new(&nested.join("k"), b"k", Access::Private).expect("write key");
        write_new(&nested.join("c"), b"c", Access::Public).expect("write cert");
        assert_eq!(mode(&nested.join("k")), 0o600);
        assert_eq!(mode(&nested.join("c")), 0o644);
    }

    #[test]
    fn read_if_exists_tells_missing_from_unreadable() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_if_exists(&dir.path().join("none"))
            .expect("missing is fine")
            .is_none());
        // A directory where a file should be cannot be read, whoever runs the test.
        let err = read_if_exists(dir.path()).expect_err("a directory is not readable as a file");
        assert_eq!(err.path(), Some(dir.path()));
    }

    #[test]
    fn pem_encoding_round_trips() {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::CertificateDer;
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parses");
        assert_eq!(back.as_ref(), der.as_slice());
    }
}
