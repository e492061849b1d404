//! flow → journal → HAR → flows, and what the files hold on the way.

use crate::common::{self, interleaved, raw_secrets, session, tempdir};
use mcptap_flow::redact::{fingerprint, redacted};
use mcptap_flow::{Flow, FlowKind, FlowState};
use mcptap_store::har::read_har;
use mcptap_store::{
    export, load, prepare, prepare_event, ExportOptions, Journal, Options, SessionMeta, SourceKind,
};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Records `flows` (events interleaved) through `prepare_event` into a new session; returns the
/// session directory, the HAR written by `finish`, and the flows as prepared.
pub fn record(dir: &Path, flows: &[Flow], options: &Options) -> (PathBuf, PathBuf, Vec<Flow>) {
    let mut meta = SessionMeta::new("0.1.0-test");
    meta.raw_secrets = options.keep_secrets;
    meta.argv = vec!["mcptap".into(), "proxy".into()];
    meta.mode = Some("regular".into());
    let session_dir = dir.join("session");
    let mut journal = Journal::create(&session_dir, meta).unwrap();
    for mut ev in interleaved(flows) {
        prepare_event(&mut ev, options);
        journal.record(&ev).unwrap();
    }
    let har = journal.finish().unwrap();
    let expected = flows
        .iter()
        .map(|f| {
            let mut f = f.clone();
            prepare(&mut f, options);
            f
        })
        .collect();
    (session_dir, har, expected)
}

fn by_id(mut flows: Vec<Flow>) -> Vec<Flow> {
    flows.sort_by_key(|f| f.id);
    flows
}

fn har_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn flow_to_journal_to_har_to_flows_is_lossless() {
    let dir = tempdir();
    let (_, har, expected) = record(dir.path(), &session(), &Options::default());
    let back = read_har(File::open(&har).unwrap()).unwrap();
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(
        back.creator.as_deref(),
        Some(concat!("mcptap ", env!("CARGO_PKG_VERSION")))
    );
    let meta = back.session.expect("session meta in log._mcptap");
    assert_eq!(meta.mode.as_deref(), Some("regular"));
    let back = by_id(back.flows);
    assert_eq!(back.len(), expected.len());
    for (b, e) in back.iter().zip(&expected) {
        assert_eq!(b, e, "flow {} differs after the round trip", e.id);
    }
}

#[test]
fn journal_reads_back_the_prepared_flows() {
    let dir = tempdir();
    let (session_dir, _, expected) = record(dir.path(), &session(), &Options::default());
    let s = load(&session_dir).unwrap();
    assert_eq!(s.kind, SourceKind::Journal);
    assert!(s.complete, "the journal has its end line");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.meta.unwrap().argv, ["mcptap", "proxy"]);
    assert_eq!(by_id(s.flows), expected);
}

/// What a reader that ignores `_mcptap` (any other tool) gets is still the exchange.
#[test]
fn har_without_mcptap_fields_keeps_what_har_can_hold() {
    let dir = tempdir();
    let (_, har, expected) = record(dir.path(), &session(), &Options::default());
    let mut doc = har_json(&har);
    for e in doc["log"]["entries"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("_mcptap");
    }
    doc["log"].as_object_mut().unwrap().remove("_mcptap");
    let plain = read_har(serde_json::to_vec(&doc).unwrap().as_slice()).unwrap();
    let plain = plain.flows;
    // Entries are in start order; ids are assigned in that order.
    let mut sorted = expected.clone();
    sorted.sort_by_key(|f| (f.timings.started, f.id));
    assert_eq!(plain.len(), sorted.len());
    for (p, e) in plain.iter().zip(&sorted) {
        let what = format!("flow {}", e.id);
        assert_eq!(p.request.method, e.request.method, "{what}");
        if e.kind == FlowKind::Http {
            assert_eq!(p.request.url, e.request.url, "{what}");
            assert_eq!((&p.host, p.port), (&e.host, e.port), "{what}");
        } else {
            assert_eq!(
                p.request.url,
                format!("https://{}/", e.request.url),
                "{what}"
            );
        }
        assert_eq!(p.request.version, e.request.version, "{what}");
        assert_eq!(p.request.headers, e.request.headers, "{what}");
        assert_eq!(p.request.body.bytes, e.request.body.bytes, "{what}");
        assert_eq!(
            p.timings.started,
            e.timings.started / 1000 * 1000,
            "{what}: ms precision"
        );
        assert_eq!(
            p.timings.finished.map(|f| f - p.timings.started),
            e.timings.finished.map(|f| f - e.timings.started),
            "{what}: durations keep microseconds"
        );
        match (&p.response, &e.response) {
            (Some(p), Some(e)) => {
                assert_eq!(p.status, e.status, "{what}");
                assert_eq!(p.version, e.version, "{what}");
                assert_eq!(p.headers, e.headers, "{what}");
                assert_eq!(p.body.bytes, e.body.bytes, "{what}");
                assert_eq!(p.body.encoding, e.body.encoding, "{what}");
                // Without `_mcptap`, events are parsed from the body (times are lost).
                let strip = |v: &[mcptap_flow::SseEvent]| {
                    v.iter()
                        .map(|e| (e.event.clone(), e.id.clone(), e.data.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(strip(&p.sse), strip(&e.sse), "{what}");
            }
            (None, None) => {
                assert_eq!(p.state, FlowState::Failed);
                assert_eq!(
                    p.error.as_ref().unwrap().message,
                    e.error.as_ref().unwrap().message
                );
            }
            (p, e) if e.as_ref().is_some_and(|r| r.synthetic) => {
                assert_eq!(p.as_ref().unwrap().status, 502, "{what}");
            }
            (p, e) => panic!("{what}: response {p:?} vs {e:?}"),
        }
    }
}

#[test]
fn har_entries_follow_the_spec_and_the_tools() {
    let dir = tempdir();
    let (_, har, expected) = record(dir.path(), &session(), &Options::default());
    let doc = har_json(&har);
    let log = &doc["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "mcptap");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), expected.len());
    // Start order although the journal is in completion order.
    let started: Vec<&str> = entries
        .iter()
        .map(|e| e["startedDateTime"].as_str().unwrap())
        .collect();
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted);
    assert!(
        started[0].ends_with('Z') && started[0].len() == 24,
        "{}",
        started[0]
    );
    for e in entries {
        let id = e["_mcptap"]["id"].as_u64().unwrap();
        // `time` is the sum of the non-negative timings.
        let t = &e["timings"];
        let sum: f64 = ["blocked", "dns", "connect", "send", "wait", "receive"]
            .iter()
            .map(|k| t[k].as_f64().unwrap())
            .filter(|v| *v >= 0.0)
            .sum();
        assert!(
            (sum - e["time"].as_f64().unwrap()).abs() < 1e-6,
            "entry {id}: {t} vs {}",
            e["time"]
        );
        for k in ["send", "wait", "receive"] {
            assert!(t[k].as_f64().unwrap() >= 0.0, "entry {id}: {k}");
        }
        match id {
            4 => {
                // Decoded for the stored copy: the original encoding is noted.
                let c = &e["response"]["content"];
                assert_eq!(e["_mcptap"]["response_body"]["encoding"], "gzip");
                // `size` is the content as stored (decoded, redacted); `bodySize` the wire.
                assert_eq!(
                    c["size"].as_u64().unwrap() as usize,
                    c["text"].as_str().unwrap().len()
                );
                let gz = expected[3].response.as_ref().unwrap().body.total_len;
                assert_eq!(e["response"]["bodySize"], gz);
                assert!(serde_json::from_str::<Value>(c["text"].as_str().unwrap()).is_ok());
                let params = e["request"]["postData"]["params"].as_array().unwrap();
                assert_eq!(params[1]["name"], "code");
                assert_eq!(params[1]["value"], redacted("authcode-93b1"));
                assert_eq!(e["response"]["cookies"][0]["httpOnly"], true);
            }
            5 => {
                assert_eq!(e["request"]["httpVersion"], "HTTP/2.0");
                assert_eq!(e["_mcptap"]["sse"].as_array().unwrap().len(), 3);
                assert_eq!(e["_mcptap"]["client_tls"]["alpn"], "h2");
            }
            6 => {
                // Not text: where HTTP Toolkit puts such bodies (HAR's postData is text only).
                assert!(e["request"].get("postData").is_none());
                assert_eq!(
                    e["request"]["_requestBodyStatus"],
                    "discarded:not-representable"
                );
                assert_eq!(e["request"]["_content"]["encoding"], "base64");
                assert_eq!(e["request"]["_content"]["text"], "/wCAf/4=");
                assert_eq!(e["response"]["content"]["encoding"], "base64");
                assert_eq!(e["request"]["queryString"][0]["value"], "a b");
            }
            7 => {
                assert_eq!(e["response"]["status"], 0);
                assert_eq!(
                    e["response"]["_error"],
                    "connecting to mcp.example:443: connection refused"
                );
                assert_eq!(e["_mcptap"]["error"]["kind"], "upstream_connect");
            }
            9 => {
                assert_eq!(e["request"]["method"], "CONNECT");
                assert_eq!(e["request"]["url"], "https://ignored.example:443/");
                assert_eq!(e["_mcptap"]["tunnel"]["bytes_down"], 88_000);
            }
            10 => {
                assert_eq!(e["response"]["bodySize"], 1_000_000);
                assert_eq!(e["_mcptap"]["response_body"]["truncated"], true);
            }
            11 => {
                assert_eq!(e["serverIPAddress"], "127.0.0.1");
                assert_eq!(e["request"]["httpVersion"], "HTTP/1.0");
                assert!(e["_mcptap"]["injected"]["fingerprint"].is_string());
            }
            _ => {}
        }
    }
    assert_eq!(log["_mcptap"]["raw_secrets"], false);
    assert_eq!(log["_mcptap"]["session"]["mcptap"], "0.1.0-test");
}

#[test]
fn secrets_are_redacted_everywhere_and_fingerprints_match() {
    let dir = tempdir();
    let (session_dir, har, _) = record(dir.path(), &session(), &Options::default());
    let journal = std::fs::read_to_string(session_dir.join("journal.jsonl")).unwrap();
    let har_text = std::fs::read_to_string(&har).unwrap();
    for secret in raw_secrets() {
        assert!(!journal.contains(&secret), "journal leaks {secret}");
        assert!(!har_text.contains(&secret), "HAR leaks {secret}");
    }
    let flows = by_id(read_har(har_text.as_bytes()).unwrap().flows);
    let note = |id: usize, place: &str| {
        flows[id - 1]
            .secrets
            .iter()
            .find(|n| n.place == place)
            .unwrap_or_else(|| panic!("flow {id}: no {place} in {:#?}", flows[id - 1].secrets))
            .clone()
    };
    let token = common::access_token();
    // Header, JSON body, form body, query (a redirect's Location) all covered.
    let issued = note(4, "response.json.access_token");
    let sent = note(5, "request.header.authorization");
    let injected = note(11, "request.header.authorization");
    assert_eq!(issued.fingerprint, fingerprint(&token));
    assert_eq!(
        sent.fingerprint, issued.fingerprint,
        "the token sent is the token issued"
    );
    assert_eq!(injected.fingerprint, issued.fingerprint);
    assert_ne!(
        note(1, "request.header.authorization").fingerprint,
        issued.fingerprint,
        "a stale token is not"
    );
    assert_eq!(
        note(3, "response.header.location.code").fingerprint,
        note(4, "request.form.code").fingerprint
    );
    note(4, "request.form.code_verifier");
    note(4, "request.form.client_secret");
    note(4, "request.header.authorization"); // Basic
    note(4, "response.json.refresh_token");
    note(4, "response.cookie.as_session");
    note(3, "request.cookie.as_session");
    note(5, "request.header.mcp-session-id");
    note(5, "response.header.mcp-session-id");
    let jwt = issued.jwt.expect("JWT claims kept beside the fingerprint");
    assert_eq!(jwt.header["kid"], "key-1");
    assert_eq!(jwt.claims["aud"], "https://mcp.example/mcp");
    assert_eq!(jwt.claims["client_id"], "client-1");
    assert!(
        !har_text.contains("not-a-real-signature"),
        "never the signature"
    );
    // The scheme is kept.
    let auth = flows[4].request.headers.get("authorization").unwrap();
    assert_eq!(auth, format!("Bearer {}", redacted(&token)));
    // The live-event path redacts response heads too (Mcp-Session-Id is certain to be there).
    let head_line = journal
        .lines()
        .find(|l| l.starts_with(r#"{"type":"response_head","id":5"#))
        .unwrap();
    assert!(
        head_line.contains(&redacted("session-id-4242")),
        "{head_line}"
    );
}

#[test]
fn keep_secrets_keeps_them_and_marks_the_session() {
    let dir = tempdir();
    let options = Options {
        keep_secrets: true,
        ..Options::default()
    };
    let (session_dir, har, expected) = record(dir.path(), &session(), &options);
    let journal = std::fs::read_to_string(session_dir.join("journal.jsonl")).unwrap();
    let har_text = std::fs::read_to_string(&har).unwrap();
    for secret in raw_secrets() {
        assert!(journal.contains(&secret), "journal lost {secret}");
        assert!(har_text.contains(&secret), "HAR lost {secret}");
    }
    let first: Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(first["raw_secrets"], true);
    let doc: Value = serde_json::from_str(&har_text).unwrap();
    assert_eq!(doc["log"]["_mcptap"]["raw_secrets"], true);
    let s = load(&har).unwrap();
    assert!(s.raw_secrets);
    assert!(s.flows.iter().all(|f| f.raw_secrets));
    assert_eq!(by_id(s.flows), expected);
    // Fingerprints are noted all the same.
    assert!(expected[3]
        .secrets
        .iter()
        .any(|n| n.fingerprint == fingerprint(&common::access_token())));
    // `export` redacts unless told to keep them.
    let out = dir.path().join("redacted.har");
    export(&session_dir, &out, &ExportOptions::default()).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    for secret in raw_secrets() {
        assert!(!text.contains(&secret), "export leaks {secret}");
    }
    let out = dir.path().join("raw.har");
    let keep = ExportOptions {
        prepare: options,
        ..ExportOptions::default()
    };
    export(&session_dir, &out, &keep).unwrap();
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains(&common::access_token()));
}

#[test]
fn export_of_the_journal_is_the_har_finish_wrote() {
    let dir = tempdir();
    let (session_dir, har, _) = record(dir.path(), &session(), &Options::default());
    let out = dir.path().join("out.har");
    let report = export(&session_dir, &out, &ExportOptions::default()).unwrap();
    assert_eq!(report.entries, 11);
    assert!(report.warnings.is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&har).unwrap());
    // Exporting the HAR again (HAR in, HAR out) gives the same flows.
    let again = dir.path().join("again.har");
    export(&har, &again, &ExportOptions::default()).unwrap();
    assert_eq!(
        by_id(load(&again).unwrap().flows),
        by_id(load(&har).unwrap().flows)
    );
}

#[test]
fn sessions_are_private_and_never_overwritten() {
    let dir = tempdir();
    let (session_dir, _, _) = record(dir.path(), &session()[..2], &Options::default());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&session_dir), 0o700);
        assert_eq!(mode(&session_dir.join("journal.jsonl")), 0o600);
        assert_eq!(mode(&session_dir.join("session.har")), 0o600);
    }
    let err = Journal::create(&session_dir, SessionMeta::new("x")).unwrap_err();
    assert!(
        matches!(err, mcptap_store::StoreError::Exists { .. }),
        "{err}"
    );
    assert!(err.is_user_error());
    // Default naming: a fresh timestamped directory each time.
    let base = dir.path().join("sessions");
    let a = Journal::create_in(&base, SessionMeta::new("x")).unwrap();
    let b = Journal::create_in(&base, SessionMeta::new("x")).unwrap();
    assert_ne!(a.dir(), b.dir());
    let name = a.dir().file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.ends_with('Z') && name.contains('T') && !name.contains(':'),
        "{name}"
    );
}

#[test]
fn a_flow_mcptap_made_itself_keeps_its_mark_through_journal_and_har() {
    let dir = tempdir();
    let mut flows = session();
    flows[3].by_mcptap = Some("inject-refresh".into());
    let marked = flows[3].id;
    // And a request inject mode turned away keeps its reason.
    flows[2].not_injected = Some("the path is /other once dot-segments are removed".into());
    let turned_away = flows[2].id;
    let (session_dir, har, _) = record(dir.path(), &flows, &Options::default());
    let from_har = read_har(File::open(&har).unwrap()).unwrap().flows;
    let from_journal = mcptap_store::load(&session_dir.join(mcptap_store::JOURNAL_FILE))
        .unwrap()
        .flows;
    for back in [from_har, from_journal] {
        for f in &back {
            let want = (f.id == marked).then_some("inject-refresh");
            assert_eq!(f.by_mcptap.as_deref(), want, "flow {}", f.id);
            let why =
                (f.id == turned_away).then_some("the path is /other once dot-segments are removed");
            assert_eq!(f.not_injected.as_deref(), why, "flow {}", f.id);
        }
    }
}

#[test]
fn export_redacts_a_command_line_an_older_mcptap_recorded_in_clear() {
    let dir = tempdir();
    let journal = dir.path().join("journal.jsonl");
    std::fs::write(
        &journal,
        concat!(
            r#"{"type":"session","version":1,"created":1,"mcptap":"0.0.9","argv":["mcptap","--proxy-auth","u:OldClearPw","--upstream-proxy","http://v:OldUpPw@p:3128"],"mode":"reverse:https://w:OldModePw@mcp.example"}"#,
            "\n",
            r#"{"type":"end","at":2,"flows":0}"#,
            "\n"
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    mcptap_store::export_to(
        &journal,
        &mut out,
        Path::new("-"),
        &mcptap_store::ExportOptions::default(),
    )
    .unwrap();
    let har = String::from_utf8(out).unwrap();
    for secret in ["OldClearPw", "OldUpPw", "OldModePw"] {
        assert!(!har.contains(secret), "{secret}: {har}");
        assert!(har.contains(&fingerprint(secret)), "{secret}: {har}");
    }
}

#[test]
fn the_time_recording_stopped_is_in_the_journal_the_har_and_a_re_export() {
    let dir = tempdir();
    let flows = session();
    let mut journal =
        Journal::create(&dir.path().join("s"), SessionMeta::new("0.1.0-test")).unwrap();
    for ev in interleaved(&flows) {
        journal.record(&ev).unwrap();
    }
    let end = flows
        .iter()
        .filter_map(|f| f.timings.finished)
        .max()
        .unwrap()
        + 12_345_678;
    let har = journal.finish_at(end).unwrap();
    // The journal's end line, read back by `load` (what analyze and view use).
    let from_journal = load(&dir.path().join("s")).unwrap();
    assert_eq!(from_journal.kind, SourceKind::Journal);
    assert!(from_journal.complete);
    assert_eq!(from_journal.ended, Some(end));
    // The HAR says it under log._mcptap.ended, and reads back the same.
    assert_eq!(har_json(&har)["log"]["_mcptap"]["ended"], end);
    assert_eq!(
        read_har(File::open(&har).unwrap()).unwrap().ended,
        Some(end)
    );
    assert_eq!(load(&har).unwrap().ended, Some(end));
    // A HAR exported from that HAR keeps it.
    let again = dir.path().join("again.har");
    export(&har, &again, &ExportOptions::default()).unwrap();
    assert_eq!(load(&again).unwrap().ended, Some(end));
    // A journal cut short (no end line) does not know when recording stopped.
    let cut = dir.path().join("cut.jsonl");
    let text = std::fs::read_to_string(dir.path().join("s/journal.jsonl")).unwrap();
    let without_end: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"type\":\"end\""))
        .collect();
    std::fs::write(&cut, without_end.join("\n") + "\n").unwrap();
    let s = load(&cut).unwrap();
    assert!(!s.complete);
    assert_eq!(s.ended, None);
}

/// Header values that were not UTF-8 (obs-text, e.g. Latin-1) come back byte-exact from the
/// journal and from the HAR, other HAR readers see a plain string, and a redacted one keeps
/// neither its secret text nor its bytes.
#[test]
fn header_values_that_are_not_utf8_are_kept_byte_exact() {
    use base64::Engine as _;
    const REQ: &[u8] = b"caf\xe9 \xff";
    const RESP: &[u8] = b"na\xefve\x80";
    const SECRET: &[u8] = b"Bearer s3cr\xe9t-token-value";
    let mut flow = session()
        .into_iter()
        .find(|f| f.kind == FlowKind::Http && f.response.is_some())
        .unwrap();
    flow.request.headers.push_bytes("x-latin", REQ);
    flow.request.headers.push_bytes("authorization", SECRET);
    flow.response
        .as_mut()
        .unwrap()
        .headers
        .push_bytes("x-resp", RESP);
    let raw_of = |f: &Flow, name: &str, resp: bool| -> Option<Vec<u8>> {
        let h = if resp {
            &f.response.as_ref().unwrap().headers
        } else {
            &f.request.headers
        };
        let h = h.iter().rfind(|h| h.name == name)?;
        h.raw().map(<[u8]>::to_vec)
    };
    let dir = tempdir();
    let (session_dir, har, expected) =
        record(dir.path(), std::slice::from_ref(&flow), &Options::default());
    assert_eq!(raw_of(&expected[0], "x-latin", false).as_deref(), Some(REQ));
    assert_eq!(raw_of(&expected[0], "authorization", false), None);

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let journal = std::fs::read_to_string(session_dir.join(mcptap_store::JOURNAL_FILE)).unwrap();
    assert!(
        journal.contains(&format!("\"base64\":\"{}\"", b64(REQ))),
        "{journal}"
    );
    assert!(
        journal.contains(&format!("\"base64\":\"{}\"", b64(RESP))),
        "{journal}"
    );
    let har_text = std::fs::read_to_string(&har).unwrap();
    for text in [&journal, &har_text] {
        assert!(!text.contains("s3cr"), "the secret's text");
        assert!(!text.contains(&b64(SECRET)), "the secret's bytes");
    }

    // Other HAR readers see `value` as a plain (lossy) string.
    let doc = har_json(&har);
    let req_h = &doc["log"]["entries"][0]["request"]["headers"];
    let latin = req_h
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "x-latin")
        .unwrap();
    assert_eq!(latin["value"], "caf\u{fffd} \u{fffd}");
    assert_eq!(latin["_mcptapValueBase64"], b64(REQ));

    // Read back losslessly from the HAR and from the journal.
    let back = read_har(File::open(&har).unwrap()).unwrap();
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(back.flows, expected);
    assert_eq!(
        raw_of(&back.flows[0], "x-resp", true).as_deref(),
        Some(RESP)
    );
    std::fs::remove_file(&har).unwrap();
    let s = load(&session_dir).unwrap();
    assert_eq!(s.kind, SourceKind::Journal);
    assert_eq!(s.flows, expected);
    assert_eq!(raw_of(&s.flows[0], "x-latin", false).as_deref(), Some(REQ));
    assert_eq!(raw_of(&s.flows[0], "x-resp", true).as_deref(), Some(RESP));
}

/// A HAR whose header `value` was edited (say, redacted by hand) after mcptap wrote it: the text
/// wins and the bytes, which could hold what the edit removed, are dropped.
#[test]
fn an_edited_header_value_drops_its_bytes_on_read() {
    let dir = tempdir();
    let mut flow = session()
        .into_iter()
        .find(|f| f.kind == FlowKind::Http)
        .unwrap();
    flow.request.headers.push_bytes("x-latin", b"caf\xe9");
    let (_, har, _) = record(dir.path(), &[flow], &Options::default());
    let mut doc = har_json(&har);
    for h in doc["log"]["entries"][0]["request"]["headers"]
        .as_array_mut()
        .unwrap()
    {
        if h["name"] == "x-latin" {
            h["value"] = "edited".into();
        }
    }
    let back = read_har(serde_json::to_vec(&doc).unwrap().as_slice()).unwrap();
    let h = back.flows[0]
        .request
        .headers
        .iter()
        .find(|h| h.name == "x-latin")
        .unwrap();
    assert_eq!((h.value.as_str(), h.raw()), ("edited", None));
}

/// A HAR file is exported entry by entry: the same bytes as writing its flows loaded whole,
/// sorted by start and prepared, also for a file whose entries come in reverse order.
#[test]
fn a_har_file_exports_streaming_as_it_did_whole() {
    let dir = tempdir();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in [
        "charles.har",
        "chrome-devtools.har",
        "chromium-playwright.har",
        "firefox-devtools.har",
        "httptoolkit.har",
        "mitmproxy.har",
    ] {
        let plain = fixtures.join(name);
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&plain).unwrap()).unwrap();
        doc["log"]["entries"].as_array_mut().unwrap().reverse();
        let reversed = dir.path().join(format!("reversed-{name}"));
        std::fs::write(&reversed, serde_json::to_vec(&doc).unwrap()).unwrap();
        for input in [&plain, &reversed] {
            let opts = ExportOptions::default();
            let mut streamed = Vec::new();
            mcptap_store::export_to(input, &mut streamed, Path::new("-"), &opts).unwrap();
            let whole = load(input).unwrap();
            let mut w =
                mcptap_store::har::HarWriter::new(Vec::new(), &opts.mcptap_version).unwrap();
            for mut f in whole.flows {
                prepare(&mut f, &opts.prepare);
                w.write(&f).unwrap();
            }
            let extra = mcptap_store::har::LogExtra {
                session: whole.meta,
                ended: whole.ended,
                ..Default::default()
            };
            let want = w.finish(extra).unwrap();
            assert!(
                streamed == want,
                "{input:?}: the streamed export differs from the whole one"
            );
        }
    }
}

/// `-o /dev/null`, a link or a pipe is written in place, never renamed over: as root, a rename
/// over `/dev/null` would make it a plain file for every program on the machine.
#[cfg(unix)]
#[test]
fn what_is_not_a_plain_file_is_written_in_place() {
    use std::io::Read as _;
    use std::os::unix::fs::FileTypeExt as _;
    let write = |path: &std::path::Path, text: &'static str| {
        mcptap_store::write_atomic(path, |w| {
            w.write_all(text.as_bytes())
                .map_err(|source| mcptap_store::StoreError::Write {
                    path: path.to_owned(),
                    source,
                })
        })
    };
    let null = std::path::Path::new("/dev/null");
    if std::fs::metadata(null).is_ok_and(|m| m.file_type().is_char_device()) {
        write(null, "{}").unwrap();
        let after = std::fs::symlink_metadata(null).unwrap();
        assert!(after.file_type().is_char_device(), "/dev/null replaced");
    }
    // A link to a file: the link stays, the file gets the text (whole, not appended).
    let dir = tempdir();
    let target = dir.path().join("target.har");
    std::fs::write(&target, "an older, longer text").unwrap();
    let link = dir.path().join("link.har");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write(&link, "new").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    // A FIFO: read on the other end.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                std::fs::File::open(fifo)
                    .unwrap()
                    .read_to_string(&mut text)
                    .unwrap();
                text
            })
        };
        write(&fifo, "through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), "through the pipe");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
    // A plain file is still replaced atomically.
    let plain = dir.path().join("plain.har");
    write(&plain, "one").unwrap();
    write(&plain, "two").unwrap();
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "two");
}
