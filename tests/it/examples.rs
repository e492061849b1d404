//! The programs in `examples/`, run for real: `embed` proxies a request and prints it with its
//! auth marker; `analyze` finds in a HAR file what `mcptap analyze` finds.

use crate::common::upstream::Upstream;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The example binary `cargo test` built next to this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo test` builds the examples (or `cargo build --examples`)",
        path.display()
    );
    path
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of the child's stdout, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_matching(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no matching line ({e}); saw: {seen:#?}"),
        }
    }
}

#[tokio::test]
async fn embed_proxies_and_prints_each_exchange_with_its_auth() {
    let upstream = Upstream::http().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(example("embed"))
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let _child = Killed(child);
    let ca = next_matching(&rx, |l| l.starts_with("ca "));
    assert!(Path::new(&ca[3..]).starts_with(tmp.path()), "{ca}");
    let proxy = next_matching(&rx, |l| l.starts_with("proxy http://"));
    let addr = proxy.trim_start_matches("proxy http://").to_owned();

    for auth in ["Authorization: Bearer abc123\r\n", ""] {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET http://{0}/small HTTP/1.1\r\nHost: {0}\r\n{auth}Connection: close\r\n\r\n",
            upstream.addr
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        tcp.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let want = if auth.is_empty() {
            "[no auth]"
        } else {
            "[Bearer]"
        };
        let line = next_matching(&rx, |l| l.contains("/small"));
        assert!(
            line.contains(&format!("GET http://{}/small -> 200 {want}", upstream.addr)),
            "{line}"
        );
    }
}

#[test]
fn analyze_finds_what_the_cli_finds() {
    let har =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/store/tests/fixtures/httptoolkit.har");
    let out = Command::new(example("analyze")).arg(&har).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();

    let cli = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["analyze", "--json"])
        .arg(&har)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "the fixture has a finding to show");
    assert!(
        text.starts_with(&format!("4 flows, {} findings", findings.len())),
        "{text}"
    );
    for f in findings {
        let id = f["id"].as_str().unwrap();
        assert!(
            text.contains(&format!("mcptap explain {id}")),
            "{id} missing:\n{text}"
        );
    }
}
