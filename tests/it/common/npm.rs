//! npm packages for third-party peers, installed once under the cargo target directory.
//!
//! `install(name, dir, verify)` returns `<target>/<name>` with `<dir>/package.json` installed
//! by `npm install`, (re)built when the package list or the machine's Node changes (a stamp file
//! records both), serialised across threads and processes by an exclusive lock on
//! `<target>/<name>.lock`. `verify` runs once after each install, so that a package whose
//! install script quietly failed is caught there. The `.mjs` scripts beside `package.json` are
//! copied in on every call (under the lock), so that their imports resolve to the installed
//! packages and an edit applies at once. Only the npm registry is used, through the ordinary
//! client and its configuration.

use super::python::{self, run_with_timeout, TimedOutput};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long `npm install` may take.
const NPM_TIMEOUT: Duration = Duration::from_secs(600);

/// Variables of a developer's or CI's environment that would send npm (or a child that
/// inherits them) through a proxy or change whom it trusts; cleared for the peers' tools.
pub const PROXY_AND_TRUST_VARS: &[&str] = &[
    "MCPTAP_HOME",
    "MCPTAP",
    "MCPTAP_PROXY",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "GLOBAL_AGENT_HTTP_PROXY",
    "npm_config_proxy",
    "npm_config_https_proxy",
    "NODE_OPTIONS",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// `<target>/<name>` with `<dir>/package.json` installed; see the module doc.
pub fn install(name: &str, dir: &Path, verify: impl FnOnce(&Path)) -> PathBuf {
    let manifest = dir.join("package.json");
    let package = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let node = Command::new("node")
        .arg("--version")
        .output()
        .expect("node (20+) on PATH installs and runs the Node peers");
    let stamp = format!(
        "package-fnv1a64={:016x}\nnode={}\n",
        python::fnv1a64(package.as_bytes()),
        String::from_utf8_lossy(&node.stdout).trim()
    );
    let target = python::target_dir();
    std::fs::create_dir_all(&target).unwrap();
    let out_dir = target.join(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join(format!("{name}.lock")))
        .unwrap();
    // As in python.rs: `File::lock` is newer than the MSRV; only tests use it.
    #[allow(clippy::incompatible_msrv)]
    lock.lock().unwrap();
    let stamp_path = out_dir.join(".mcptap-stamp");
    if std::fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str()) {
        let started = Instant::now();
        eprintln!(
            "[npm] installing {} into {}",
            manifest.display(),
            out_dir.display()
        );
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::write(out_dir.join("package.json"), &package).unwrap();
        let mut npm = Command::new("npm");
        for var in PROXY_AND_TRUST_VARS {
            npm.env_remove(var);
        }
        npm.args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&out_dir);
        let out = run_with_timeout(npm, NPM_TIMEOUT).unwrap();
        assert!(
            out.status.is_some_and(|s| s.success()),
            "npm install failed:\n{}",
            dump(&out)
        );
        verify(&out_dir);
        std::fs::write(&stamp_path, &stamp).unwrap();
        eprintln!("[npm] ready in {:.1}s", started.elapsed().as_secs_f64());
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "mjs") {
            std::fs::copy(&path, out_dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    drop(lock);
    out_dir
}

/// A finished process's status, time and output, for assertion messages.
pub fn dump(out: &TimedOutput) -> String {
    format!(
        "status {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status, out.elapsed, out.stdout, out.stderr
    )
}
