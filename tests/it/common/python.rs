//! Python virtual environments for third-party peers, built once and reused.
//!
//! `venv(name, requirements)` returns `<target>/peers-venv-<name>`, creating it with
//! `python3 -m venv` and `pip install -r requirements` when it is missing or was built from
//! other requirements (a stamp file inside the venv records a hash of the requirements file,
//! the interpreter version and this module's layout version). Creation is serialised across
//! threads and processes (nextest runs tests in parallel processes) by an exclusive lock on
//! `<target>/peers-venv-<name>.lock`.
//!
//! The interpreter is `python3` from `PATH`, or `$MCPTAP_TEST_PYTHON` when set.
//!
//! The one venv builder of the workspace: `mcptap-store`'s tests include this file too
//! (`#[path]`), so it uses nothing but `std`.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long `pip install` may take before the venv counts as failed.
const PIP_TIMEOUT: Duration = Duration::from_secs(900);
/// How long `python3 -m venv` may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(180);
/// Bump to force every venv to be rebuilt after a change to how they are made.
const LAYOUT_VERSION: u32 = 1;
const STAMP_FILE: &str = ".mcptap-stamp";

/// The venv `<target>/peers-venv-<name>` with `requirements` installed, created or rebuilt
/// as needed. Panics with the tool output when creation fails (this is test support).
pub fn venv(name: &str, requirements: &Path) -> PathBuf {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "venv name must be [A-Za-z0-9_-]+, got {name:?}"
    );
    let reqs = fs::read(requirements)
        .unwrap_or_else(|e| panic!("reading requirements {}: {e}", requirements.display()));
    let interpreter = interpreter();
    let python_version = python_version(&interpreter);
    let stamp = format!(
        "layout={LAYOUT_VERSION}\npython={python_version}\nrequirements-fnv1a64={:016x}\n",
        fnv1a64(&reqs)
    );

    // Within one test process, answer repeated calls without touching the file system.
    static DONE: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    let key = (name.to_owned(), stamp.clone());
    if let Some(dir) = done.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return dir.clone();
    }

    let target = target_dir();
    fs::create_dir_all(&target).unwrap_or_else(|e| panic!("creating {}: {e}", target.display()));
    let dir = target.join(format!("peers-venv-{name}"));
    let lock_path = target.join(format!("peers-venv-{name}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    // Blocks while another thread or process builds this venv; released when `lock` drops.
    // `File::lock` (Rust 1.89) is newer than the workspace MSRV; only the tests use it, and
    // they are built with a current toolchain. It saves a file-locking dependency.
    #[allow(clippy::incompatible_msrv)]
    let locked = lock.lock();
    locked.unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));

    let stamp_path = dir.join(STAMP_FILE);
    let current = fs::read_to_string(&stamp_path).ok();
    if current.as_deref() != Some(stamp.as_str()) || !python(&dir).exists() {
        build(&interpreter, &dir, requirements, name);
        let tmp = dir.join(format!("{STAMP_FILE}.tmp"));
        fs::write(&tmp, &stamp).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        fs::rename(&tmp, &stamp_path)
            .unwrap_or_else(|e| panic!("writing {}: {e}", stamp_path.display()));
    }
    drop(lock);

    done.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, dir.clone());
    dir
}

/// The interpreter inside a venv made by [`venv`].
pub fn python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (at run time, then at build time), else
/// `<workspace>/target`. A relative value is taken relative to the workspace root (the nearest
/// directory up holding `Cargo.lock`: this file also serves `mcptap-store`'s tests).
pub fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(manifest);
    let configured = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from));
    match configured {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn interpreter() -> PathBuf {
    std::env::var_os("MCPTAP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn python_version(interpreter: &Path) -> String {
    let out = Command::new(interpreter)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} --version: {e} (set MCPTAP_TEST_PYTHON to a Python 3.10+ interpreter)",
                interpreter.display()
            )
        });
    assert!(
        out.status.success(),
        "{} --version failed: {}",
        interpreter.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Python 3 prints to stdout; some very old builds printed to stderr.
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text).trim().to_owned()
}

/// (Re)create the venv from scratch. Called with the lock held.
fn build(interpreter: &Path, dir: &Path, requirements: &Path, name: &str) {
    let started = Instant::now();
    eprintln!(
        "[python] building venv {} from {} (first run or requirements changed)",
        dir.display(),
        requirements.display()
    );
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }

    let mut venv_cmd = Command::new(interpreter);
    venv_cmd.args(["-m", "venv"]).arg(dir);
    run_checked(venv_cmd, VENV_TIMEOUT, &format!("python -m venv ({name})"));

    let mut pip = Command::new(python(dir));
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "-r",
    ])
    .arg(requirements)
    .env("PIP_NO_INPUT", "1");
    run_checked(pip, PIP_TIMEOUT, &format!("pip install -r ({name})"));
    eprintln!(
        "[python] venv {} ready in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}

fn run_checked(cmd: Command, timeout: Duration, what: &str) {
    let out =
        run_with_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    match out.status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "{what} failed ({status}):\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        ),
        None => panic!(
            "{what} timed out after {timeout:?} and was killed:\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        ),
    }
}

/// Output of a process run with a deadline; `status` is `None` when it was killed on timeout.
pub struct TimedOutput {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `cmd` to completion (stdin closed, stdout and stderr captured), killing it after
/// `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> std::io::Result<TimedOutput> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = started + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(TimedOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// 64-bit FNV-1a: stable across Rust releases (unlike `DefaultHasher`), enough for a stamp.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
