//! Journal v4: a final line points at its flow's `request_started` and `response_head` lines
//! instead of saying the head again. Flows come back whole through every reader, as a journal
//! that says every flow whole gives them; damage to the lines pointed at is a warning, never a
//! lost flow.

use crate::common::{events, tempdir, T0};
use crate::v3form::{as_v3, lines};
use mcptap_flow::{
    CapturedBody, ErrorKind, Flow, FlowError, FlowEvent, FlowId, FlowState, HttpVersion, Request,
    Response, SseEvent, Timings, TlsInfo,
};
use mcptap_store::{
    export, prepare_event, read_flow_at, read_journal, ExportOptions, Journal, Options, SessionMeta,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tls() -> Option<Arc<TlsInfo>> {
    Some(Arc::new(TlsInfo {
        sni: Some("mcp.example".into()),
        alpn: Some("http/1.1".into()),
        version: Some("TLSv1_3".into()),
        cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
        ..TlsInfo::default()
    }))
}

/// A flow as the engine ends it, with a head like an MCP client's.
fn base(id: u64, method: &str, url: &str) -> Flow {
    let started = T0 + id as i64 * 10_000;
    Flow {
        id: FlowId(id),
        state: FlowState::Completed,
        client_addr: Some(format!("127.0.0.1:{}", 40_000 + id)),
        host: "mcp.example".into(),
        port: 443,
        client_tls: tls(),
        upstream_tls: tls(),
        request: Request {
            method: method.into(),
            url: url.into(),
            version: HttpVersion::Http11,
            headers: [
                ("host", "mcp.example"),
                ("user-agent", "claude-code/2.0.1 (external, cli)"),
                ("accept", "application/json, text/event-stream"),
                ("content-type", "application/json"),
                ("mcp-protocol-version", "2025-06-18"),
                ("mcp-session-id", "9f6c2b1e-54a3-4c1b-9d0e-3a2f5e8b7c61"),
                ("authorization", "Bearer tok-5bd1c0ffee-secret-42"),
            ]
            .into_iter()
            .collect(),
            body: CapturedBody::default(),
        },
        response: Some(Response {
            status: 200,
            version: HttpVersion::Http11,
            headers: [
                ("content-type", "application/json"),
                ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ]
            .into_iter()
            .collect(),
            ..Response::default()
        }),
        timings: Timings {
            started,
            connected: Some(started + 100),
            request_done: Some(started + 120),
            response_head: Some(started + 2_000),
            finished: Some(started + 9_000),
        },
        ..Flow::default()
    }
}

/// A call, a plain-text download (in the side file), a stream, a failed flow.
fn flows() -> Vec<Flow> {
    let mut call = base(1, "POST", "https://mcp.example/mcp");
    call.request.body = CapturedBody::complete(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
    );
    call.response.as_mut().unwrap().body =
        CapturedBody::complete(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);

    let mut download = base(2, "GET", "https://mcp.example/files/log.txt?n=2");
    let resp = download.response.as_mut().unwrap();
    resp.headers = [("content-type", "text/plain")].into_iter().collect();
    resp.body = CapturedBody::complete("line of a log file\n".repeat(20_000));

    let mut stream = base(3, "POST", "https://mcp.example/mcp");
    let resp = stream.response.as_mut().unwrap();
    resp.headers = [("content-type", "text/event-stream")]
        .into_iter()
        .collect();
    let mut body = String::new();
    for i in 0..5 {
        let data = format!(r#"{{"jsonrpc":"2.0","method":"notifications/progress","n":{i}}}"#);
        body.push_str(&format!("event: message\ndata: {data}\n\n"));
        resp.sse.push(SseEvent {
            at: T0 + 30_000 + i,
            event: Some("message".into()),
            data,
            ..SseEvent::default()
        });
    }
    resp.body = CapturedBody::complete(body);

    let mut failed = base(4, "POST", "https://down.example/mcp");
    failed.state = FlowState::Failed;
    failed.response = None;
    failed.upstream_tls = None;
    failed.timings.response_head = None;
    failed.error = Some(FlowError::new(
        ErrorKind::UpstreamConnect,
        "connection refused",
    ));
    vec![call, download, stream, failed]
}

/// Records `flows` (each as the engine reports it: start, response head, events, end, every
/// event prepared as the proxy prepares it) into `<dir>/s`; returns the journal's path and
/// each flow as it was handed to the journal at its end.
fn record(dir: &Path, flows: &[Flow]) -> (PathBuf, Vec<Flow>) {
    let mut j = Journal::create(&dir.join("s"), SessionMeta::new("test")).unwrap();
    let mut ended = Vec::new();
    for f in flows {
        for mut ev in events(f) {
            prepare_event(&mut ev, &Options::default());
            j.record(&ev).unwrap();
            if let FlowEvent::Completed { flow } | FlowEvent::Failed { flow } = ev {
                ended.push(*flow);
            }
        }
    }
    let path = j.path().to_owned();
    j.finish().unwrap();
    (path, ended)
}

/// Flows compared, saying only where they differ (bodies are long).
#[track_caller]
fn same(got: &[Flow], want: &[Flow]) {
    fn paths(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys()) {
                    let (p, q) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    paths(p, q, format!("{at}.{k}"), out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    paths(p, q, format!("{at}[{i}]"), out);
                }
            }
            _ if a != b => out.push(format!(
                "{at}: {:.80} != {:.80}",
                a.to_string(),
                b.to_string()
            )),
            _ => {}
        }
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let mut out = Vec::new();
        paths(
            &serde_json::to_value(g).unwrap(),
            &serde_json::to_value(w).unwrap(),
            String::new(),
            &mut out,
        );
        out.dedup();
        assert!(out.is_empty() && g == w, "flow {}: {out:?}", w.id);
    }
}

/// Where each flow's final line starts.
fn final_offsets(path: &Path) -> Vec<(FlowId, u64)> {
    lines(path)
        .into_iter()
        .filter(|(_, v)| matches!(v["type"].as_str(), Some("completed" | "failed")))
        .map(|(at, v)| (FlowId(v["flow"]["id"].as_u64().unwrap()), at))
        .collect()
}

#[test]
fn final_lines_point_at_their_head_and_flows_read_back_as_version_3_gives_them() {
    let dir = tempdir();
    let (path, ended) = record(dir.path(), &flows());
    let all = lines(&path);
    assert_eq!(all[0].1["version"], 4);
    let type_at = |offset: u64| {
        let (_, v) = all.iter().find(|(a, _)| *a == offset).unwrap();
        v["type"].as_str().unwrap().to_owned()
    };
    for (_, v) in all.iter().filter(|(_, v)| v.get("head").is_some()) {
        let head = v["head"].as_array().unwrap();
        assert_eq!(type_at(head[0].as_u64().unwrap()), "request_started");
        // What the start line says is not said again.
        let flow = v["flow"].as_object().unwrap();
        for m in ["host", "port", "client_addr", "client_tls", "kind"] {
            assert!(!flow.contains_key(m), "{m} in {v}");
        }
        assert_eq!(v["flow"]["request"].as_object().unwrap().len(), 1, "{v}");
        match head.get(1) {
            Some(r) => {
                assert_eq!(type_at(r.as_u64().unwrap()), "response_head");
                assert!(v["flow"]["response"].get("headers").is_none(), "{v}");
            }
            // The failed flow has no response head.
            None => assert_eq!(v["type"], "failed", "{v}"),
        }
    }
    assert_eq!(
        all.iter().filter(|(_, v)| v.get("head").is_some()).count(),
        4
    );
    // The raw token is nowhere (the start line was redacted; nothing raw comes back).
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("tok-5bd1c0ffee-secret-42"));

    // Sequentially, and one flow at a time by the place of its final line.
    let read: Vec<Flow> = read_journal(&path).unwrap().map(Result::unwrap).collect();
    same(&read, &ended);
    for (id, at) in final_offsets(&path) {
        let back = read_flow_at(&path, at).unwrap().unwrap();
        same(
            &[back],
            &[ended.iter().find(|f| f.id == id).unwrap().clone()],
        );
    }
    let mut reader = read_journal(&path).unwrap();
    reader.by_ref().for_each(drop);
    assert!(reader.warnings().is_empty(), "{:?}", reader.warnings());

    // The same session as version 3 wrote it reads the same, and exports the same HAR, byte
    // for byte.
    let v3 = dir.path().join("v3").join(mcptap_store::JOURNAL_FILE);
    as_v3(&path, &v3);
    assert!(!std::fs::read_to_string(&v3).unwrap().contains(r#""head":"#));
    let read3: Vec<Flow> = read_journal(&v3).unwrap().map(Result::unwrap).collect();
    same(&read3, &read);
    let (har4, har3) = (dir.path().join("4.har"), dir.path().join("3.har"));
    export(&path, &har4, &ExportOptions::default()).unwrap();
    export(&v3, &har3, &ExportOptions::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&har4).unwrap(),
        std::fs::read_to_string(&har3).unwrap()
    );
    // Smaller than version 3 by the heads not said again.
    let (len4, len3) = (
        std::fs::metadata(&path).unwrap().len(),
        std::fs::metadata(&v3).unwrap().len(),
    );
    assert!(len4 + 4 * 300 < len3, "v4 {len4} bytes, v3 {len3}");
}

/// A head that changed between the start line and the end (a header the final flow has that
/// the start did not, a redaction that differs) is said whole: the reader never takes the
/// start line's for it.
#[test]
fn a_final_flow_whose_head_changed_is_written_whole() {
    let dir = tempdir();
    let mut j = Journal::create(&dir.path().join("s"), SessionMeta::new("test")).unwrap();
    let f = flows().remove(0);
    let mut evs = events(&f);
    if let FlowEvent::Completed { flow } = evs.last_mut().unwrap() {
        let mut h = flow.request.headers.clone();
        h.push("x-added-later", "1");
        flow.request.headers = h;
        // And a response head other than the response_head line said.
        flow.response.as_mut().unwrap().status = 502;
    }
    for ev in &evs {
        j.record(ev).unwrap();
    }
    let path = j.path().to_owned();
    drop(j);
    let last = lines(&path).pop().unwrap().1;
    assert!(last.get("head").is_none(), "{last}");
    let back: Vec<Flow> = read_journal(&path).unwrap().map(Result::unwrap).collect();
    let FlowEvent::Completed { flow } = evs.pop().unwrap() else {
        unreachable!()
    };
    assert_eq!(back, vec![*flow]);

    // Only the response head changed: the start is pointed at, the response head said.
    let dir = tempdir();
    let mut j = Journal::create(&dir.path().join("s"), SessionMeta::new("test")).unwrap();
    let mut evs = events(&f);
    if let FlowEvent::Completed { flow } = evs.last_mut().unwrap() {
        flow.response.as_mut().unwrap().status = 502;
    }
    for ev in &evs {
        j.record(ev).unwrap();
    }
    let path = j.path().to_owned();
    drop(j);
    let (at, last) = lines(&path).pop().unwrap();
    assert_eq!(last["head"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["flow"]["response"]["status"], 502, "{last}");
    let FlowEvent::Completed { flow } = evs.pop().unwrap() else {
        unreachable!()
    };
    let back: Vec<Flow> = read_journal(&path).unwrap().map(Result::unwrap).collect();
    assert_eq!(back, vec![(*flow).clone()]);
    assert_eq!(read_flow_at(&path, at).unwrap().unwrap(), *flow);
}

/// What a flow's final line says without its head: the flow with an empty head (and empty
/// response head: the line that said it belongs to a flow that never started).
fn without_head(f: &Flow) -> Flow {
    let mut f = f.clone();
    f.kind = Default::default();
    f.client_addr = None;
    f.host = String::new();
    f.port = 0;
    f.client_tls = None;
    f.request.method = String::new();
    f.request.url = String::new();
    f.request.version = HttpVersion::default();
    f.request.headers = Default::default();
    if let Some(r) = f.response.as_mut() {
        r.status = 0;
        r.version = HttpVersion::default();
        r.headers = Default::default();
    }
    f
}

/// The start line a final line points at, damaged in place, or gone (the lines after it moved
/// up): the flow comes back with what its final line says, and a warning, from every reader;
/// never another flow's head; export still writes every flow.
#[test]
fn a_damaged_or_missing_start_line_is_a_warning_and_a_flow_with_what_is_known() {
    let dir = tempdir();
    let (path, ended) = record(dir.path(), &flows());
    let original = std::fs::read(&path).unwrap();
    let all = lines(&path);
    // The call's (flow 1) start line.
    let (start, _) = all
        .iter()
        .find(|(_, v)| v["type"] == "request_started" && v["flow"]["id"] == 1)
        .unwrap();
    let start = *start as usize;
    let end = start + original[start..].iter().position(|&b| b == b'\n').unwrap();

    // Damaged in place (same length: the offsets still hold).
    let mut damaged = original.clone();
    for b in &mut damaged[start + 10..end - 10] {
        *b = b'#';
    }
    // Gone: the lines after it are 1 line earlier than their final lines say.
    let mut gone = original.clone();
    gone.drain(start..=end);
    for (what, bytes) in [("damaged", damaged), ("gone", gone)] {
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = read_journal(&path).unwrap();
        let read: Vec<Flow> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(read.len(), 4, "{what}");
        same(&read[..1], &[without_head(&ended[0])]);
        same(&read[1..], &ended[1..]);
        assert!(
            reader
                .warnings()
                .iter()
                .any(|w| w.message.contains("flow #1: its start")),
            "{what}: {:?}",
            reader.warnings()
        );
        let (_, at) = final_offsets(&path)[0];
        let back = read_flow_at(&path, at).unwrap().unwrap();
        if what == "damaged" {
            same(&[back], &read[..1]);
        } else {
            // Its offsets now point into other lines: none of them is taken for its own.
            assert_eq!(back.id, FlowId(1));
            assert_eq!(back.request.url, "", "{what}");
            assert_eq!(back.host, "", "{what}");
            assert_eq!(back.request.body, ended[0].request.body, "{what}");
        }
        let har = dir.path().join(format!("{what}.har"));
        let report = export(&path, &har, &ExportOptions::default()).unwrap();
        assert_eq!(report.entries, 4, "{what}");
    }

    // The response head line damaged: the status and headers are missing, said so.
    let (head, _) = all
        .iter()
        .find(|(_, v)| v["type"] == "response_head" && v["id"] == 2)
        .unwrap();
    let head = *head as usize;
    let mut damaged = original.clone();
    damaged[head + 2] = b'!';
    std::fs::write(&path, &damaged).unwrap();
    let mut reader = read_journal(&path).unwrap();
    let read: Vec<Flow> = reader.by_ref().map(Result::unwrap).collect();
    let dl = read.iter().find(|f| f.id == FlowId(2)).unwrap();
    assert_eq!(dl.request.url, ended[1].request.url);
    assert_eq!(dl.response.as_ref().unwrap().status, 0);
    assert_eq!(
        dl.response.as_ref().unwrap().body,
        ended[1].response.as_ref().unwrap().body
    );
    assert!(
        reader
            .warnings()
            .iter()
            .any(|w| w.message.contains("flow #2: its response head")),
        "{:?}",
        reader.warnings()
    );
    let (_, at) = final_offsets(&path)[1];
    assert_eq!(&read_flow_at(&path, at).unwrap().unwrap(), dl);

    // The failed flow's (its final line is the last but the end line): offsets past the end
    // of the file, or not numbers: a flow, or a line skipped, never a panic.
    std::fs::write(&path, &original).unwrap();
    let text = String::from_utf8(original).unwrap();
    let (id, at) = final_offsets(&path)[3];
    assert_eq!(id, FlowId(4));
    let at = at as usize;
    let line_end = at + text[at..].find('\n').unwrap();
    let start = all
        .iter()
        .find(|(_, v)| v["type"] == "request_started" && v["flow"]["id"] == 4)
        .unwrap()
        .0;
    for to in ["[99999999999]", "[18446744073709551615]", r#"["x"]"#] {
        let t = text[..at].to_owned()
            + &text[at..line_end].replacen(&format!("[{start}]"), to, 1)
            + &text[line_end..];
        assert_ne!(t, text);
        std::fs::write(&path, &t).unwrap();
        let mut reader = read_journal(&path).unwrap();
        let read: Vec<Flow> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(read.len(), 4, "{to}");
        assert!(!reader.warnings().is_empty(), "{to}");
        let back = read_flow_at(&path, at as u64).unwrap();
        if to.contains("99999") || to.contains("1844") {
            // Its start was still in flight: the sequential reader has its head.
            assert_eq!(read[3], ended[3]);
            let back = back.unwrap();
            assert_eq!(back, without_head(&ended[3]));
        } else {
            // Not a final line: the flow started and never ended, as far as can be read.
            assert!(back.is_none());
            assert_eq!(read[3].state, FlowState::Pending);
            assert_eq!(read[3].request.url, ended[3].request.url);
        }
    }
}
