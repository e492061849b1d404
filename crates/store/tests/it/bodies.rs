//! Large bodies in the side file (`bodies.bin`): exact bytes back through every reader, a crash
//! leaves a readable session, and the journal is no larger than the HAR.

use crate::common::{events, tempdir, T0};
use mcptap_flow::{
    BodyState, CapturedBody, Flow, FlowEvent, FlowId, FlowState, HttpVersion, Request, Response,
    SseEvent, Timings,
};
use mcptap_store::{
    export, load, prepare_event, read_flow_at, read_journal, ExportOptions, Journal, Options,
    SessionMeta,
};
use std::path::Path;

/// Bytes that are neither UTF-8 nor compressible: a download.
fn binary(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// A JSON text with many quotes (JSON-escaped in a HAR).
fn json_text(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(r#"{{"name":"item {i}","value":"\"quoted\""}},"#));
        i += 1;
    }
    s.push_str("0]");
    s.into_bytes()
}

fn flow(id: u64, url: &str, ct: &str, body: Vec<u8>) -> Flow {
    Flow {
        id: FlowId(id),
        host: "files.example".into(),
        port: 443,
        state: FlowState::Completed,
        request: Request {
            method: "GET".into(),
            url: url.into(),
            version: HttpVersion::Http11,
            ..Default::default()
        },
        response: Some(Response {
            status: 200,
            version: HttpVersion::Http11,
            headers: [("content-type", ct)].into_iter().collect(),
            body: CapturedBody::complete(body),
            ..Default::default()
        }),
        timings: Timings {
            started: T0 + id as i64 * 1000,
            response_head: Some(T0 + id as i64 * 1000 + 10),
            finished: Some(T0 + id as i64 * 1000 + 20),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Records `flows` into a new session under `dir`; returns the session directory.
fn record(dir: &Path, flows: &[Flow], end: bool) -> std::path::PathBuf {
    let session = dir.join("s");
    let mut journal = Journal::create(&session, SessionMeta::new("test")).unwrap();
    for f in flows {
        for mut ev in events(f) {
            prepare_event(&mut ev, &Options::default());
            journal.record(&ev).unwrap();
        }
    }
    if end {
        journal.finish().unwrap();
    } else {
        drop(journal);
    }
    session
}

fn response_bytes(f: &Flow) -> &[u8] {
    &f.response.as_ref().unwrap().body.bytes
}

#[test]
fn large_bodies_go_to_the_side_file_and_come_back_exact_through_every_reader() {
    let dir = tempdir();
    let big = binary(3 << 20);
    let text = json_text(200 << 10);
    let small = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec();
    let mut upload = flow(4, "https://files.example/up", "text/plain", Vec::new());
    upload.request.method = "POST".into();
    upload.request.body = CapturedBody::complete(binary(40 << 10));
    let flows = vec![
        flow(
            1,
            "https://files.example/big.bin",
            "application/octet-stream",
            big.clone(),
        ),
        flow(
            2,
            "https://files.example/list.json",
            "application/json",
            text.clone(),
        ),
        flow(
            3,
            "https://mcp.example/mcp",
            "application/json",
            small.clone(),
        ),
        upload.clone(),
    ];
    let session = record(dir.path(), &flows, true);
    let journal = std::fs::read(session.join("journal.jsonl")).unwrap();
    let side = std::fs::read(session.join("bodies.bin")).unwrap();
    // The two large bodies and the upload are in the side file, raw; the small one inline.
    assert_eq!(side.len(), big.len() + text.len() + (40 << 10));
    assert!(journal.len() < 16 << 10, "{} bytes", journal.len());
    assert!(memchr_find(
        &journal,
        br#""bodies":{"response":[0,3145728]}"#
    ));
    assert!(
        memchr_find(&journal, br#"jsonrpc"#),
        "small bodies stay readable in the line"
    );
    // The streaming reader.
    let read: Vec<Flow> = read_journal(&session.join("journal.jsonl"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read.len(), 4);
    assert_eq!(response_bytes(&read[0]), &big[..]);
    assert_eq!(response_bytes(&read[1]), &text[..]);
    assert_eq!(response_bytes(&read[2]), &small[..]);
    assert_eq!(read[3].request.body.bytes, upload.request.body.bytes);
    // `load` (analyze, report, view) and the HAR written at exit and by export.
    let loaded = load(&session).unwrap();
    assert_eq!(response_bytes(&loaded.flows[0]), &big[..]);
    let har = load(&session.join("session.har")).unwrap();
    assert_eq!(response_bytes(&har.flows[0]), &big[..]);
    assert_eq!(response_bytes(&har.flows[1]), &text[..]);
    assert_eq!(har.flows[3].request.body.bytes, upload.request.body.bytes);
    let out = dir.path().join("out.har");
    export(&session, &out, &ExportOptions::default()).unwrap();
    let exported = load(&out).unwrap();
    assert_eq!(response_bytes(&exported.flows[0]), &big[..]);
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_live_view_reads_a_flow_with_a_side_body_back_at_its_offset() {
    let dir = tempdir();
    let big = binary(100 << 10);
    let session = dir.path().join("s");
    let mut journal = Journal::create(&session, SessionMeta::new("test")).unwrap();
    let mut ev = FlowEvent::Completed {
        flow: Box::new(flow(1, "https://f/x", "image/png", big.clone())),
    };
    prepare_event(&mut ev, &Options::default());
    let at = journal.position();
    journal.record_unflushed(&mut ev).unwrap();
    // The event is given back whole (the analyzer and the view read it next).
    let FlowEvent::Completed { flow: given } = &ev else {
        unreachable!()
    };
    assert_eq!(response_bytes(given), &big[..]);
    journal.flush().unwrap();
    let back = read_flow_at(journal.path(), at).unwrap().unwrap();
    assert_eq!(response_bytes(&back), &big[..]);
}

#[test]
fn a_crash_leaves_a_readable_session_and_a_missing_side_body_is_a_warning() {
    let dir = tempdir();
    let big = binary(1 << 20);
    let flows = vec![
        flow(1, "https://f/a", "application/octet-stream", big.clone()),
        flow(2, "https://f/b", "application/octet-stream", big.clone()),
    ];
    // No end line: as after `kill -9`.
    let session = record(dir.path(), &flows, false);
    let read = load(&session).unwrap();
    assert_eq!(read.flows.len(), 2);
    assert_eq!(response_bytes(&read.flows[1]), &big[..]);
    // Bytes written after the last line (the crash came between a body and its line) are
    // not referenced and harm nothing.
    let side = session.join("bodies.bin");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&side)
        .unwrap();
    std::io::Write::write_all(&mut f, &big[..1000]).unwrap();
    drop(f);
    let read = load(&session).unwrap();
    assert_eq!(read.flows.len(), 2);
    assert!(read.warnings.is_empty(), "{:?}", read.warnings);
    // A damaged side file: the flow still comes out, without its body, with a warning.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&side)
        .unwrap()
        .set_len((1 << 20) + 500)
        .unwrap();
    let read = load(&session).unwrap();
    assert_eq!(read.flows.len(), 2);
    assert_eq!(response_bytes(&read.flows[0]), &big[..]);
    assert!(response_bytes(&read.flows[1]).is_empty());
    assert_eq!(
        read.flows[1].response.as_ref().unwrap().body.total_len,
        1 << 20
    );
    let w = read
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>();
    assert!(
        w.iter()
            .any(|w| w.contains("flow #2: its response body is missing")
                && w.contains("past the end of bodies.bin")),
        "{w:?}"
    );
}

/// An SSE stream whose server sends keep-alive comments between events: its body is not the
/// events written back.
fn sse_flow(id: u64, events: usize) -> Flow {
    let mut body = String::new();
    let mut sse = Vec::new();
    for i in 0..events {
        let data = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progress":{i},"message":"step \"{i}\""}}}}"#
        );
        body.push_str(": ping\n\n");
        body.push_str(&format!("event: message\ndata: {data}\n\n"));
        sse.push(SseEvent {
            at: T0 + i as i64,
            event: Some("message".into()),
            data,
            ..Default::default()
        });
    }
    stream(id, body, sse)
}

/// An event stream whose body is `body` and whose events are `sse`.
fn stream(id: u64, body: String, sse: Vec<SseEvent>) -> Flow {
    let mut f = flow(
        id,
        "https://mcp.example/mcp",
        "text/event-stream",
        Vec::new(),
    );
    let resp = f.response.as_mut().unwrap();
    resp.body = CapturedBody::complete(body.into_bytes());
    resp.sse = sse;
    f
}

/// Journal bytes (journal lines and side file) against HAR bytes, for one flow alone.
fn journal_and_har_bytes(f: Flow) -> (u64, u64) {
    let dir = tempdir();
    let session = record(dir.path(), &[f], true);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    // The session's first and last lines are not the flow's.
    let journal = std::fs::read_to_string(session.join("journal.jsonl")).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    let flow_lines: u64 = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.len() as u64 + 1)
        .sum();
    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session.join("session.har")).unwrap()).unwrap();
    let entry = serde_json::to_vec_pretty(&har["log"]["entries"][0]).unwrap();
    let entry_compact = serde_json::to_vec(&har["log"]["entries"][0]).unwrap();
    // The HAR as written is indented or not: the smaller counts, to be fair to the journal.
    let har_bytes = entry.len().min(entry_compact.len()) as u64;
    (flow_lines + size(&session.join("bodies.bin")), har_bytes)
}

#[test]
fn the_journal_is_no_larger_than_the_har_for_binary_text_and_sse_with_keep_alives() {
    for (what, f) in [
        (
            "binary",
            flow(
                1,
                "https://f/b",
                "application/octet-stream",
                binary(1 << 20),
            ),
        ),
        (
            "small binary",
            flow(1, "https://f/b", "application/octet-stream", binary(3000)),
        ),
        (
            "text",
            flow(1, "https://f/t", "application/json", json_text(1 << 20)),
        ),
        ("sse with keep-alives", sse_flow(1, 200)),
        ("short sse with keep-alives", sse_flow(1, 3)),
        // Plain text, nothing to escape in a HAR: the journal's head lines said once only.
        (
            "plain-text download",
            flow(1, "https://f/x.txt", "text/plain", vec![b'x'; 4 << 20]),
        ),
        (
            "plain-text download, 20 KB",
            flow(1, "https://f/x.txt", "text/plain", vec![b'x'; 20_000]),
        ),
        (
            "plain-text answer, 2 KB",
            flow(1, "https://f/x.txt", "text/plain", vec![b'x'; 2_000]),
        ),
    ] {
        let (journal, har) = journal_and_har_bytes(f);
        println!("{what}: journal {journal} bytes, HAR {har} bytes");
        assert!(journal <= har, "{what}: journal {journal} > HAR {har}");
    }
}

/// A stream whose events say `id` before `event` (Starlette's `sse-starlette`, the Python
/// SDK's server, when events have ids), with LF or CRLF line ends.
fn sse_id_first(id: u64, events: usize, crlf: bool) -> Flow {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut body = String::new();
    let mut sse = Vec::new();
    for i in 0..events {
        let data = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"seq":{i}}}}}"#
        );
        body.push_str(&format!(
            "id: {i}{nl}event: message{nl}data: {data}{nl}{nl}"
        ));
        sse.push(SseEvent {
            at: T0 + i as i64,
            event: Some("message".into()),
            id: Some(i.to_string()),
            data,
            ..Default::default()
        });
    }
    stream(id, body, sse)
}

/// Its body is its events written back in their order: left out of the final line (not in the
/// side file), back byte for byte, and the journal no larger than the HAR.
#[test]
fn a_stream_whose_events_say_their_id_first_is_rebuilt_from_them() {
    for crlf in [false, true] {
        let f = sse_id_first(1, 20, crlf);
        let want = response_bytes(&f).to_vec();
        let dir = tempdir();
        let session = record(dir.path(), std::slice::from_ref(&f), true);
        assert!(!session.join("bodies.bin").exists(), "crlf {crlf}");
        let journal = std::fs::read_to_string(session.join("journal.jsonl")).unwrap();
        let form = if crlf { "crlf-id" } else { "lf-id" };
        assert!(
            journal.contains(&format!(r#""body":"{form}"}}"#)),
            "{journal}"
        );
        for source in [session.clone(), session.join("session.har")] {
            let read = load(&source).unwrap();
            let resp = read.flows[0].response.as_ref().unwrap();
            assert_eq!(&resp.body.bytes[..], &want[..], "{}", source.display());
            assert_eq!(resp.sse.len(), 20);
        }
        let (journal, har) = journal_and_har_bytes(f);
        assert!(journal <= har, "crlf {crlf}: journal {journal} > HAR {har}");
    }
}

#[test]
fn an_sse_body_its_events_do_not_rebuild_comes_back_exact() {
    let dir = tempdir();
    let f = sse_flow(1, 5);
    let want = response_bytes(&f).to_vec();
    let session = record(dir.path(), &[f], true);
    for source in [session.clone(), session.join("session.har")] {
        let read = load(&source).unwrap();
        let resp = read.flows[0].response.as_ref().unwrap();
        assert_eq!(&resp.body.bytes[..], &want[..], "{}", source.display());
        assert_eq!(resp.sse.len(), 5);
        assert_eq!(resp.body.state, BodyState::Complete);
    }
}

/// `n` bytes of `data` in a buffer that starts at a page boundary, as a spooled body read back
/// is (the side file then writes it without staging it).
fn page_aligned(data: &[u8]) -> bytes::Bytes {
    let mut buf = vec![0u8; data.len() + 4096];
    let at = buf.as_ptr().align_offset(4096);
    buf[at..at + data.len()].copy_from_slice(data);
    bytes::Bytes::from(buf).slice(at..at + data.len())
}

#[test]
fn large_bodies_written_directly_come_back_exact_between_smaller_ones() {
    direct_round_trip(tempdir().path());
}

/// The same on tmpfs, which kernels before 6.6 refuse direct I/O on (the side file then falls
/// back to the page cache) and later ones take it as buffered I/O: every body comes back
/// exact either way.
#[test]
fn large_bodies_come_back_exact_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIPPED: no /dev/shm here");
        return;
    }
    direct_round_trip(tempfile::tempdir_in(shm).unwrap().path());
}

fn direct_round_trip(dir: &Path) {
    // Direct I/O (where the file system takes it) for 256 KiB and more: from a page-aligned
    // buffer with a partial last block, from one without a partial block, staged from an
    // unaligned one; the smaller bodies between them go through the page cache.
    let sizes = [
        20_000, 1_000_123, 300_001, 30_000, 262_144, 17_000, 2_000_000,
    ];
    let mut flows = Vec::new();
    let mut want = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let data = binary(n + i);
        let data = data[i..].to_vec();
        let mut f = flow(
            i as u64 + 1,
            &format!("https://files.example/{n}"),
            "application/octet-stream",
            Vec::new(),
        );
        let body = if i % 2 == 1 {
            page_aligned(&data)
        } else {
            bytes::Bytes::from(data.clone())
        };
        f.response.as_mut().unwrap().body = CapturedBody::complete(body);
        flows.push(f);
        want.push(data);
    }
    let session = dir.join("s");
    let mut journal = Journal::create(&session, SessionMeta::new("test")).unwrap();
    let mut offsets = Vec::new();
    for f in &flows {
        let mut ev = FlowEvent::Completed {
            flow: Box::new(f.clone()),
        };
        prepare_event(&mut ev, &Options::default());
        offsets.push(journal.position());
        journal.record_unflushed(&mut ev).unwrap();
        journal.flush().unwrap();
    }
    // A live view reads each back at once, before the session ends.
    for (at, data) in offsets.iter().zip(&want) {
        let back = read_flow_at(journal.path(), *at).unwrap().unwrap();
        assert_eq!(response_bytes(&back), &data[..]);
    }
    journal.finish().unwrap();
    let side = std::fs::metadata(session.join("bodies.bin")).unwrap().len();
    let total: usize = sizes.iter().sum();
    assert!(
        side >= total as u64 && side < (total + sizes.len() * 4096) as u64,
        "{side} bytes for {total}"
    );
    for source in [session.clone(), session.join("session.har")] {
        let loaded = load(&source).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.flows.len(), sizes.len());
        for (f, data) in loaded.flows.iter().zip(&want) {
            assert_eq!(response_bytes(f), &data[..], "{}", source.display());
        }
    }
}

/// What `stream_early` hands over, in order: each flow, with a bound said before the large
/// bodies of a flow are read that neither that flow nor any later one completes before.
fn streamed(path: &Path) -> (Vec<Flow>, Vec<Option<i64>>, Vec<String>) {
    let mut flows = Vec::new();
    let mut early = Vec::new();
    let mut said = None;
    let session = mcptap_store::stream_early(path, &mut |s| match s {
        mcptap_store::Streamed::Early(t) => said = Some(t),
        mcptap_store::Streamed::Flow(f, _) => {
            flows.push(f);
            early.push(said.take());
        }
    })
    .unwrap();
    (flows, early, session.warnings)
}

/// Large bodies, in `bodies.bin` (v3) or inline in the line (a journal written before v3, a
/// HAR file): `stream_early` gives the very flows `stream` and `load` give, and says a bound
/// before each large one that holds for it and for every flow after it; a side file cut short
/// is a warning and an empty body, as with every other reader.
#[test]
fn stream_early_says_a_bound_before_large_bodies_and_gives_the_same_flows() {
    let dir = tempdir();
    let text = json_text(300 << 10);
    let flows = vec![
        flow(1, "https://f/a", "application/json", text.clone()),
        flow(2, "https://f/b", "application/json", b"{}".to_vec()),
        flow(
            3,
            "https://f/c",
            "application/octet-stream",
            binary(1 << 20),
        ),
        flow(4, "https://f/d", "application/json", text.clone()),
    ];
    let session = record(dir.path(), &flows, true);
    // The same flows inline: each final line holds its bodies (as version 2 wrote them).
    let inline = dir.path().join("inline.jsonl");
    let mut lines = Vec::new();
    for f in &load(&session).unwrap().flows {
        serde_json::to_writer(
            &mut lines,
            &FlowEvent::Completed {
                flow: Box::new(f.clone()),
            },
        )
        .unwrap();
        lines.push(b'\n');
    }
    std::fs::write(&inline, &lines).unwrap();
    let har = dir.path().join("s.har");
    export(&session, &har, &ExportOptions::default()).unwrap();
    for path in [session.clone(), inline.clone(), har] {
        let (got, early, warnings) = streamed(&path);
        assert!(warnings.is_empty(), "{path:?}: {warnings:?}");
        let want = load(&path).unwrap().flows;
        assert_eq!(got, want, "{path:?}");
        let mut plain = Vec::new();
        mcptap_store::stream(&path, &mut |f, _| plain.push(f)).unwrap();
        assert_eq!(got, plain, "{path:?}");
        for (i, f) in got.iter().enumerate() {
            let large = f.response.as_ref().unwrap().body.bytes.len() >= 64 << 10;
            // Inline, a binary body is base64, which is parsed with its line.
            let base64 = path == inline && i == 2;
            assert_eq!(early[i].is_some(), large && !base64, "{path:?}: flow {i}");
            if let Some(t) = early[i] {
                for later in &got[i..] {
                    assert!(later.timings.finished.unwrap() >= t, "{path:?}: flow {i}");
                }
            }
        }
    }
    // The side file cut short: the last large body is missing, with a warning. (A body
    // written with direct I/O is followed by up to 4 KiB of padding: cut past it.)
    let side = session.join("bodies.bin");
    let len = std::fs::metadata(&side).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&side)
        .unwrap()
        .set_len(len - 4096 - 10)
        .unwrap();
    let (got, _, warnings) = streamed(&session);
    assert_eq!(got.len(), 4);
    assert_eq!(response_bytes(&got[0]), &text[..]);
    assert!(response_bytes(&got[3]).is_empty());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("flow #4: its response body is missing")),
        "{warnings:?}"
    );
}
