//! Independent readers of the HAR mcptap writes: a HAR 1.2 JSON Schema (written from the spec,
//! `tests/har-1.2.schema.json`) checked by Python's `jsonschema`, and mitmproxy reading the file
//! (`mitmdump -nr`). Both come from a venv built on first use (see `common::venv`); without
//! Python these tests fail, saying why.

use crate::common::{events, session, tempdir, venv};
use crate::roundtrip::record;
use mcptap_store::{export, prepare_event, ExportOptions, Journal, Options, SessionMeta};
use std::path::{Path, PathBuf};
use std::process::Command;

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft7Validator
schema = json.load(open(sys.argv[1]))
Draft7Validator.check_schema(schema)
v = Draft7Validator(schema)
bad = 0
for path in sys.argv[2:]:
    doc = json.load(open(path))
    for e in sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        bad += 1
        print(f"{path}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
sys.exit(1 if bad else 0)
"#;

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/har-1.2.schema.json")
}

/// Validates `files`; returns the errors printed (empty when valid).
fn validate(files: &[&Path]) -> (bool, String) {
    let out = Command::new(venv::bin("python"))
        .arg("-c")
        .arg(VALIDATE)
        .arg(schema())
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Our HARs: a whole session (every kind of flow), and the export of a crashed one (pending
/// flows), both with and without secrets.
fn our_hars(dir: &Path) -> Vec<PathBuf> {
    let (_, har, _) = record(&dir.join("a"), &session(), &Options::default());
    let keep = Options {
        keep_secrets: true,
        ..Options::default()
    };
    let (_, raw, _) = record(&dir.join("b"), &session(), &keep);
    let crashed = dir.join("c");
    let mut j = Journal::create(&crashed, SessionMeta::new("t")).unwrap();
    for f in session() {
        let evs = events(&f);
        // Every flow started and got its response head, if any; none ended.
        let n = (evs.len() - 1).min(2);
        for mut ev in evs.into_iter().take(n) {
            prepare_event(&mut ev, &Options::default());
            j.record(&ev).unwrap();
        }
    }
    drop(j);
    let pending = dir.join("pending.har");
    let report = export(&crashed, &pending, &ExportOptions::default()).unwrap();
    assert_eq!(report.pending, 11);
    vec![har, raw, pending]
}

#[test]
fn our_har_is_valid_har_1_2() {
    let dir = tempdir();
    let hars = our_hars(dir.path());
    let files: Vec<&Path> = hars.iter().map(PathBuf::as_path).collect();
    let (ok, errors) = validate(&files);
    assert!(ok, "schema violations:\n{errors}");
    // The check is not vacuous: a HAR missing a required field fails it.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&hars[0]).unwrap()).unwrap();
    doc["log"]["entries"][0]["timings"]
        .as_object_mut()
        .unwrap()
        .remove("send");
    doc["log"]["entries"][1]["response"]["redirectUrl"] = "x".into();
    let bad = dir.path().join("bad.har");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (ok, errors) = validate(&[&bad]);
    assert!(!ok);
    assert!(
        errors.contains("entries/0/timings: 'send' is a required property"),
        "{errors}"
    );
    assert!(
        errors.contains("entries/1/response: 'redirectUrl' does not match any of the regexes"),
        "{errors}"
    );
}

#[test]
fn mitmproxy_reads_our_har() {
    let dir = tempdir();
    for har in our_hars(dir.path()) {
        let entries = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&har).unwrap())
            .unwrap()["log"]["entries"]
            .as_array()
            .unwrap()
            .len();
        let out = Command::new(venv::bin("mitmdump"))
            .args(["-n", "--set", "flow_detail=1", "--set"])
            .arg(format!("confdir={}", dir.path().join("mitm").display()))
            .arg("-r")
            .arg(&har)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "mitmdump -nr {} failed:\n{stdout}\n{stderr}",
            har.display()
        );
        for bad in ["Traceback", "Error", "error", "Could not"] {
            assert!(
                !stderr.contains(bad) && !stdout.contains(bad),
                "{}:\n{stdout}\n{stderr}",
                har.display()
            );
        }
        // One line per flow read.
        let flows = stdout
            .lines()
            .filter(|l| l.starts_with("127.0.0.1:0: "))
            .count();
        assert_eq!(flows, entries, "{}:\n{stdout}", har.display());
    }
}
