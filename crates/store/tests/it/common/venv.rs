//! A Python venv with mitmproxy and jsonschema (the independent HAR reader), built once under
//! the target directory and reused while its requirements file is unchanged, by the
//! workspace's one venv builder ([`super::python`]).
//!
//! The interpreter is `python3`, or `$MCPTAP_TEST_PYTHON`. When it is missing the tests fail
//! with a message saying so: they are never skipped silently.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The venv's directory, built if needed.
pub fn venv() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let reqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requirements-mitmproxy.txt");
        super::python::venv("store-mitmproxy", &reqs)
    })
}

/// A program installed in the venv (`mitmdump`, `python`).
pub fn bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}
