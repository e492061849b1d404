//! A journal left by a crash: cut at any byte of its last line, or by a real `kill -9`.

use crate::common::{events, session, tempdir, T0};
use mcptap_flow::{
    CapturedBody, Flow, FlowEvent, FlowId, FlowState, HttpVersion, Request, Response, SseEvent,
    Timings,
};
use mcptap_store::{
    export, load, prepare_event, read_journal, ExportOptions, Journal, Options, SessionMeta,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_journal_cut_at_every_byte_of_its_last_line_still_exports() {
    let dir = tempdir();
    let session_dir = dir.path().join("s");
    let mut journal = Journal::create(&session_dir, SessionMeta::new("test")).unwrap();
    let flows = session();
    // Flows 1..=4 complete; flow 5 (an SSE stream) starts, streams its events, then its
    // `completed` line is the one being written when the proxy dies.
    for f in &flows[..4] {
        for mut ev in events(f) {
            prepare_event(&mut ev, &Options::default());
            journal.record(&ev).unwrap();
        }
    }
    for mut ev in events(&flows[4]) {
        prepare_event(&mut ev, &Options::default());
        journal.record(&ev).unwrap();
    }
    drop(journal); // no end line: as after a crash
    let full = std::fs::read(session_dir.join("journal.jsonl")).unwrap();
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    assert!(full[last_start..].starts_with(br#"{"type":"completed""#));
    let out = dir.path().join("out.har");
    let cut_path = dir.path().join("cut.jsonl");
    for cut in last_start..=full.len() {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        let report = export(&cut_path, &out, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap())
            .unwrap_or_else(|e| panic!("cut at {cut}: HAR is not JSON: {e}"));
        let entries = doc["log"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 5, "cut at {cut}");
        // The line is whole once every byte but the newline is there.
        let whole = cut >= full.len() - 1;
        let last = entries.iter().find(|e| e["_mcptap"]["id"] == 5).unwrap();
        let state = last["_mcptap"]["state"].as_str().unwrap();
        if whole {
            assert_eq!(state, "completed", "cut at {cut}");
            assert!(
                report.warnings.is_empty(),
                "cut at {cut}: {:?}",
                report.warnings
            );
        } else {
            assert_eq!(state, "pending", "cut at {cut}");
            // What the stream sent before the crash is there, with its times.
            assert_eq!(
                last["_mcptap"]["sse"].as_array().unwrap().len(),
                3,
                "cut at {cut}"
            );
            assert_eq!(last["response"]["status"], 200);
            if cut > last_start {
                assert_eq!(report.warnings.len(), 1, "cut at {cut}");
                let w = report.warnings[0].to_string();
                assert!(w.contains("torn last line"), "{w}");
                assert!(
                    w.starts_with(&format!(
                        "line {}:",
                        full[..last_start].iter().filter(|&&b| b == b'\n').count() + 1
                    )),
                    "{w}"
                );
            }
        }
        assert_eq!(
            entries
                .iter()
                .filter(|e| e["_mcptap"]["state"] == "completed")
                .count(),
            if whole { 5 } else { 4 },
            "cut at {cut}: everything completed before the cut is there"
        );
    }
}

#[test]
fn damaged_lines_are_reported_and_skipped() {
    let dir = tempdir();
    let path = dir.path().join("journal.jsonl");
    let mut text =
        String::from("{\"type\":\"session\",\"version\":1,\"created\":0,\"mcptap\":\"t\"}\n");
    let f = &session()[1];
    let line = |ev: &FlowEvent| serde_json::to_string(ev).unwrap() + "\n";
    text.push_str("garbage that is not json\n");
    text.push_str("{\"type\":\"from_the_future\"}\n");
    text.push('\n');
    text.push_str(&line(&FlowEvent::Completed {
        flow: Box::new(f.clone()),
    }));
    text.push_str("\u{0}\u{1}\u{2}\n");
    std::fs::write(&path, text.as_bytes()).unwrap();
    let s = load(&path).unwrap();
    assert_eq!(s.flows, vec![f.clone()]);
    assert!(!s.complete);
    assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
    assert!(
        s.warnings[0].starts_with("line 2: not a journal record"),
        "{:?}",
        s.warnings
    );
    assert!(s.warnings[1].starts_with("line 3: "), "{:?}", s.warnings);
    assert!(s.warnings[2].starts_with("line 6: "), "{:?}", s.warnings);
    // Not even UTF-8.
    std::fs::write(
        &path,
        b"{\"type\":\"session\",\"version\":1,\"created\":0,\"mcptap\":\"t\"}\n\xff\xfe{\n",
    )
    .unwrap();
    let s = load(&path).unwrap();
    assert!(s.flows.is_empty());
    assert_eq!(s.warnings.len(), 1);
}

fn sse_flow(id: u64) -> Flow {
    Flow {
        id: FlowId(id),
        host: "mcp.example".into(),
        port: 443,
        request: Request {
            method: "GET".into(),
            url: "https://mcp.example/mcp".into(),
            version: HttpVersion::Http11,
            headers: [("accept", "text/event-stream")].into_iter().collect(),
            body: CapturedBody::default(),
        },
        timings: Timings {
            started: T0,
            ..Timings::default()
        },
        ..Flow::default()
    }
}

/// The child half of [`kill_9_loses_nothing_completed`]: records flows forever, printing
/// `done N` after flow N is recorded, and `event N` after the N-th event of a stream that never
/// ends. Does nothing unless run by that test.
#[test]
#[ignore = "run by kill_9_loses_nothing_completed as a child process"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os("MCPTAP_STORE_CRASH_CHILD") else {
        return;
    };
    let mut journal = Journal::create(Path::new(&dir), SessionMeta::new("child")).unwrap();
    let opts = Options::default();
    let stream = sse_flow(1);
    journal
        .record(&FlowEvent::RequestStarted {
            flow: Box::new(stream),
        })
        .unwrap();
    journal
        .record(&FlowEvent::ResponseHead {
            id: FlowId(1),
            at: T0 + 10,
            status: 200,
            version: HttpVersion::Http11,
            headers: [("content-type", "text/event-stream")]
                .into_iter()
                .collect(),
        })
        .unwrap();
    let template = session();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let mut ev = FlowEvent::Sse {
            id: FlowId(1),
            event: SseEvent {
                at: T0 + n as i64,
                data: format!("{{\"n\":{n}}}"),
                ..SseEvent::default()
            },
        };
        prepare_event(&mut ev, &opts);
        journal.record(&ev).unwrap();
        println!("event {n}");
        let mut f = template[(n as usize) % template.len()].clone();
        f.id = FlowId(n + 1);
        for mut ev in events(&f) {
            prepare_event(&mut ev, &opts);
            journal.record(&ev).unwrap();
        }
        println!("done {}", n + 1);
    }
}

#[test]
fn kill_9_loses_nothing_completed() {
    let dir = tempdir();
    let session_dir = dir.path().join("s");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MCPTAP_STORE_CRASH_CHILD", &session_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut done, mut events) = (0u64, 0u64);
    let mut line = String::new();
    while done < 300 {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("the child ended early (done {done})");
        }
        if let Some(n) = line.trim().strip_prefix("done ") {
            done = n.parse().unwrap();
        } else if let Some(n) = line.trim().strip_prefix("event ") {
            events = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever the child printed before it died was recorded before it died.
    for l in out.lines() {
        let l = l.unwrap();
        if let Some(n) = l.trim().strip_prefix("done ") {
            done = n.parse().unwrap();
        } else if let Some(n) = l.trim().strip_prefix("event ") {
            events = n.parse().unwrap();
        }
    }
    let mut reader = read_journal(&session_dir.join("journal.jsonl")).unwrap();
    let flows: Vec<Flow> = reader.by_ref().map(Result::unwrap).collect();
    assert!(reader.warnings().len() <= 1, "{:?}", reader.warnings());
    assert!(!reader.ended_cleanly());
    for id in 2..=done {
        let f = flows.iter().find(|f| f.id == FlowId(id));
        let f = f.unwrap_or_else(|| panic!("flow {id} was recorded before the kill but is gone"));
        assert_ne!(f.state, FlowState::Pending, "flow {id}");
    }
    let stream = flows.iter().find(|f| f.id == FlowId(1)).unwrap();
    assert_eq!(stream.state, FlowState::Pending);
    let resp: &Response = stream.response.as_ref().unwrap();
    assert!(
        resp.sse.len() as u64 >= events,
        "{} < {events}",
        resp.sse.len()
    );
    assert_eq!(resp.sse[0].data, "{\"n\":1}");
    // And the crashed session exports.
    let report = export(
        &session_dir,
        &dir.path().join("crash.har"),
        &ExportOptions::default(),
    )
    .unwrap();
    assert!(report.entries >= done);
    assert!(report.pending >= 1);
}
