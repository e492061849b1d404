//! A Python venv with mitmproxy and jsonschema, built once under the target directory and reused
//! while its requirements file is unchanged (a stamp records their hash). Building is serialised
//! across test processes by an exclusive lock on a file beside the venv.
//!
//! The interpreter is `python3`, or `$MCPTAP_TEST_PYTHON`. When it is missing the tests fail
//! with a message saying so: they are never skipped silently.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const NAME: &str = "store-mitmproxy";

fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => manifest.join("../..").join(d),
        None => manifest.join("../../target"),
    }
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The venv's directory, built if needed.
pub fn venv() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

/// A program installed in the venv (`mitmdump`, `python`).
pub fn bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

fn build() -> PathBuf {
    let reqs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requirements-mitmproxy.txt");
    let reqs = fs::read(&reqs_path).unwrap();
    let python = std::env::var_os("MCPTAP_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let version = Command::new(&python)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Python 3 with venv and pip to install mitmproxy (the independent \
                 HAR reader): running {python:?} failed: {e}. Install python3 or set MCPTAP_TEST_PYTHON."
            )
        });
    let stamp = format!(
        "python={}\nrequirements={:016x}\n",
        String::from_utf8_lossy(&version.stdout).trim(),
        fnv1a64(&reqs)
    );
    let target = target_dir();
    fs::create_dir_all(&target).unwrap();
    let dir = target.join(format!("peers-venv-{NAME}"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join(format!("peers-venv-{NAME}.lock")))
        .unwrap();
    // `File::lock` is newer than the workspace MSRV; only tests use it (built with a current
    // toolchain), and it saves a file-locking dependency.
    #[allow(clippy::incompatible_msrv)]
    lock.lock().unwrap();
    let stamp_path = dir.join(".mcptap-stamp");
    if fs::read_to_string(&stamp_path).ok().as_deref() != Some(&stamp)
        || !dir.join("bin/python").exists()
    {
        eprintln!(
            "[store] building {} (first run or requirements changed)",
            dir.display()
        );
        let _ = fs::remove_dir_all(&dir);
        let run = |cmd: &mut Command| {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new(&python).arg("-m").arg("venv").arg(&dir));
        run(Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs_path));
        fs::write(&stamp_path, &stamp).unwrap();
    }
    drop(lock);
    dir
}
