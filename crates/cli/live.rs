//! Where a running proxy's session is, for `mcptap mcp`: each `mcptap proxy`, `run` and
//! `reverse` that records a session writes `<confdir>/live/<pid>.json` (mode 0600, in a 0700
//! directory) naming its journal, holds an exclusive lock on that file while it runs, and
//! removes it when it stops. A reader that can take the lock has found a file left by a proxy
//! that died (`kill -9`) and skips it. Local files only: nothing listens, nothing goes over a
//! network, and no secret is written (the journal's path, the listening address, the mode).

use mcptap_flow::Micros;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The directory under the confdir holding one control file per running proxy.
pub const LIVE_DIR: &str = "live";

/// What a running proxy says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    /// The proxy's process id.
    pub pid: u32,
    /// The session directory.
    pub session_dir: PathBuf,
    /// Its `journal.jsonl`, appended as flows finish.
    pub journal: PathBuf,
    /// Where the proxy listens.
    pub listen: String,
    /// `regular` or `reverse:URL` (redacted as the journal records it).
    pub mode: String,
    /// When it started (µs since the epoch).
    pub started: Micros,
    /// The mcptap version that runs it.
    pub mcptap: String,
}

/// Keeps the control file (and its lock) while the proxy runs; removes it when dropped.
#[derive(Debug)]
pub struct LiveGuard {
    path: PathBuf,
    // Holds the exclusive lock: released when the file is closed, also by a crash.
    _file: File,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes the control file of this process for the session recorded in `journal`. A proxy
/// that cannot write it still runs (it says why, once): `mcptap mcp` then only finds the
/// session among the saved ones.
pub fn register(
    confdir: &Path,
    journal: &mcptap_store::Journal,
    listen: SocketAddr,
    mode: &str,
) -> Option<LiveGuard> {
    let info = LiveSession {
        pid: std::process::id(),
        session_dir: journal.dir().to_path_buf(),
        journal: journal.path().to_path_buf(),
        listen: listen.to_string(),
        mode: mcptap_flow::redact::redact_text(mode),
        started: mcptap_flow::now_micros(),
        mcptap: env!("CARGO_PKG_VERSION").to_owned(),
    };
    sweep(&confdir.join(LIVE_DIR));
    match write(&confdir.join(LIVE_DIR), &info) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(
                "cannot write the control file for `mcptap mcp` in {}: {e}",
                confdir.join(LIVE_DIR).display()
            );
            None
        }
    }
}

fn write(dir: &Path, info: &LiveSession) -> std::io::Result<LiveGuard> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let path = dir.join(format!("{}.json", info.pid));
    let tmp = dir.join(format!("{}.json.tmp", info.pid));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&tmp)?;
    // Locked before it is visible under its name: a reader never takes a live proxy's file
    // for a stale one.
    file.lock()?;
    file.write_all(&serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?)?;
    file.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    Ok(LiveGuard { path, _file: file })
}

/// Removes the control files of proxies that died without removing theirs (`kill -9`): those
/// nobody holds the lock of. A file under its final name is locked from before it got that
/// name, so a live proxy's is never taken; files still being written (`.tmp`) are left alone.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        if let Ok(file) = File::open(&path) {
            if file.try_lock().is_ok() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The running proxies that record a session, newest first. Files left by a proxy that died
/// are skipped, as are files that do not parse.
pub fn list(confdir: &Path) -> Vec<LiveSession> {
    let Ok(entries) = std::fs::read_dir(confdir.join(LIVE_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<LiveSession> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| read_live(&p))
        .collect();
    out.sort_by(|a, b| b.started.cmp(&a.started).then(b.pid.cmp(&a.pid)));
    out
}

fn read_live(path: &Path) -> Option<LiveSession> {
    let file = File::open(path).ok()?;
    match file.try_lock_shared() {
        // Nobody holds it: its proxy is gone.
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => {
            let info: LiveSession = serde_json::from_reader(&file).ok()?;
            info.journal.is_file().then_some(info)
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_proxy_is_listed_until_its_guard_drops() {
        let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let session = conf.path().join("s");
        let journal =
            mcptap_store::Journal::create(&session, mcptap_store::SessionMeta::new("test"))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(list(conf.path()).is_empty());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}"));
        let guard = register(
            conf.path(),
            &journal,
            addr,
            "reverse:https://u:pw@x.example/",
        )
        .unwrap_or_else(|| panic!("registered"));
        let live = list(conf.path());
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].pid, std::process::id());
        assert_eq!(live[0].journal, journal.path());
        assert!(!live[0].mode.contains("pw"), "{}", live[0].mode);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = conf.path().join(LIVE_DIR);
            let file = dir.join(format!("{}.json", std::process::id()));
            let mode = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0)
            };
            assert_eq!(mode(&file), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        drop(guard);
        assert!(list(conf.path()).is_empty());
    }

    #[test]
    fn a_file_nobody_holds_is_a_dead_proxys_and_skipped() {
        let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = conf.path().join(LIVE_DIR);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let journal = conf.path().join("journal.jsonl");
        std::fs::write(&journal, "").unwrap_or_else(|e| panic!("{e}"));
        let info = LiveSession {
            pid: 1,
            session_dir: conf.path().to_path_buf(),
            journal,
            listen: "127.0.0.1:1".into(),
            mode: "regular".into(),
            started: 1,
            mcptap: "0".into(),
        };
        std::fs::write(
            dir.join("1.json"),
            serde_json::to_vec(&info).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            list(conf.path()).is_empty(),
            "no lock held: a dead proxy's file"
        );
        assert!(dir.join("1.json").exists(), "a reader leaves it");
        let journal = mcptap_store::Journal::create(
            &conf.path().join("s"),
            mcptap_store::SessionMeta::new("test"),
        )
        .unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let _guard = register(conf.path(), &journal, addr, "regular").unwrap();
        assert!(!dir.join("1.json").exists(), "the next proxy sweeps it");
        assert_eq!(list(conf.path()).len(), 1);
    }
}
