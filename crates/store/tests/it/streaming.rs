//! Reading is streaming: memory follows the flows in flight, not the size of the journal.

use crate::common::{tempdir, T0};
use mcptap_flow::{
    CapturedBody, Flow, FlowEvent, FlowId, FlowState, HttpVersion, Request, Response, SseEvent,
    Timings,
};
use mcptap_store::{export, ExportOptions, Journal, SessionMeta};
use serde_json::Value;
use std::io::{BufRead, BufReader};

fn small(id: u64, started: i64) -> Flow {
    Flow {
        id: FlowId(id),
        state: FlowState::Completed,
        host: "mcp.example".into(),
        port: 443,
        request: Request {
            method: "POST".into(),
            url: "https://mcp.example/mcp".into(),
            version: HttpVersion::Http11,
            headers: [("content-type", "application/json")].into_iter().collect(),
            body: CapturedBody::complete(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#
            )),
        },
        response: Some(Response {
            status: 200,
            headers: [("content-type", "application/json")].into_iter().collect(),
            body: CapturedBody::complete(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)),
            ..Response::default()
        }),
        timings: Timings {
            started,
            connected: Some(started + 10),
            request_done: Some(started + 20),
            response_head: Some(started + 3_000),
            finished: Some(started + 3_100),
        },
        ..Flow::default()
    }
}

fn head(f: &Flow) -> FlowEvent {
    FlowEvent::RequestStarted {
        flow: Box::new(f.head()),
    }
}

/// 50 000 flows, up to 8 in flight at once, completing out of order; plus one stream open for
/// the whole session. The reader never holds more than the flows in flight, and the HAR comes out
/// in start order (the stream first), with a bounded reorder buffer.
#[test]
fn a_large_journal_exports_in_bounded_memory() {
    const N: u64 = 50_000;
    const WINDOW: u64 = 8;
    let dir = tempdir();
    let session = dir.path().join("s");
    let mut j = Journal::create(&session, SessionMeta::new("test")).unwrap();
    let mut stream = small(1, T0);
    stream.request.url = "https://mcp.example/events".into();
    j.record(&head(&stream)).unwrap();
    let mut open = std::collections::VecDeque::new();
    for i in 2..=N + 1 {
        let f = small(i, T0 + i as i64 * 1_000);
        j.record(&head(&f)).unwrap();
        open.push_back(f);
        if open.len() as u64 == WINDOW {
            // Finish the newest first, then the oldest: completion order differs from start order.
            let newest = open.pop_back().unwrap();
            j.record(&FlowEvent::Completed {
                flow: Box::new(newest),
            })
            .unwrap();
            let oldest = open.pop_front().unwrap();
            j.record(&FlowEvent::Completed {
                flow: Box::new(oldest),
            })
            .unwrap();
        }
        if i % 1000 == 0 {
            j.record(&FlowEvent::Sse {
                id: FlowId(1),
                event: SseEvent {
                    at: T0 + i as i64 * 1_000,
                    data: format!("{i}"),
                    ..SseEvent::default()
                },
            })
            .unwrap();
        }
    }
    for f in open.drain(..) {
        j.record(&FlowEvent::Completed { flow: Box::new(f) })
            .unwrap();
    }
    stream.timings.finished = Some(T0 + (N as i64 + 10) * 1_000);
    j.record(&FlowEvent::Completed {
        flow: Box::new(stream),
    })
    .unwrap();
    let journal_len = std::fs::metadata(session.join("journal.jsonl"))
        .unwrap()
        .len();
    let har = j.finish().unwrap();

    let out = dir.path().join("out.har");
    let options = ExportOptions {
        reorder_entries: 1_000,
        ..ExportOptions::default()
    };
    let report = export(&session, &out, &options).unwrap();
    assert_eq!(report.entries, N + 1);
    assert!(
        report.max_in_flight <= WINDOW as usize + 1,
        "reader held {}",
        report.max_in_flight
    );
    assert!(report.max_held <= 1_001, "reorder held {}", report.max_held);
    // The stream that spans the session cannot wait for 50 000 flows within a 1 000 bound: it is
    // written where it completed, and counted.
    assert_eq!(report.out_of_order, 1);
    // Read the output line by line (one entry per line) rather than whole.
    let mut last = String::new();
    let mut n = 0;
    for line in BufReader::new(std::fs::File::open(&out).unwrap()).lines() {
        let line = line.unwrap();
        let Some(json) = line
            .strip_suffix(',')
            .or(Some(&line))
            .filter(|l| l.starts_with("{\"startedDateTime\""))
        else {
            continue;
        };
        let e: Value = serde_json::from_str(json).unwrap();
        let started = e["startedDateTime"].as_str().unwrap().to_owned();
        if e["_mcptap"]["id"] != 1 {
            assert!(started >= last, "{started} after {last}");
            last = started;
        }
        n += 1;
    }
    assert_eq!(n, N + 1);
    // The HAR `finish` wrote used the default bound (10 000): the same, counted in the file.
    let doc: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    assert_eq!(doc["log"]["_mcptap"]["out_of_order"], 1);
    // A bound that fits the whole session puts everything in start order, the stream first.
    let options = ExportOptions {
        reorder_entries: 60_000,
        ..ExportOptions::default()
    };
    let report = export(&session, &out, &options).unwrap();
    assert_eq!(report.out_of_order, 0);
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let entries = doc["log"]["entries"].as_array().unwrap();
    assert_eq!(entries[0]["_mcptap"]["id"], 1);
    assert_eq!(entries.len() as u64, N + 1);
    assert!(
        journal_len > 20 << 20,
        "the journal is large ({journal_len} bytes)"
    );
}

/// An SSE response as the engine reports it: its events, and the body they came in.
fn stream(id: u64, started: i64, n: usize, crlf: bool) -> Flow {
    let mut f = small(id, started);
    let nl = if crlf { "\r\n" } else { "\n" };
    let events: Vec<SseEvent> = (0..n)
        .map(|i| SseEvent {
            at: started + 5_000 + i as i64,
            event: Some("message".into()),
            data: format!(r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progress":{i}}}}}"#),
            ..SseEvent::default()
        })
        .collect();
    let body: String = events
        .iter()
        .map(|e| format!("event: message{nl}data: {}{nl}{nl}", e.data))
        .collect();
    let resp = f.response.as_mut().unwrap();
    resp.headers = [("content-type", "text/event-stream")]
        .into_iter()
        .collect();
    resp.body = CapturedBody::complete(body);
    resp.sse = events;
    f
}

/// Journals a stream as the proxy does (head, one line per event, the final flow) between two
/// small flows, and returns the journal's lines with their offsets.
fn journal_stream(
    f: &Flow,
    final_events: Option<Vec<SseEvent>>,
) -> (tempfile::TempDir, Vec<(u64, String)>) {
    let dir = tempdir();
    let mut j = Journal::create(&dir.path().join("s"), SessionMeta::new("test")).unwrap();
    j.record(&head(f)).unwrap();
    for ev in &f.response.as_ref().unwrap().sse {
        j.record(&small_event(1)).unwrap();
        j.record(&FlowEvent::Sse {
            id: f.id,
            event: ev.clone(),
        })
        .unwrap();
    }
    let mut last = f.clone();
    if let Some(evs) = final_events {
        last.response.as_mut().unwrap().sse = evs;
    }
    j.record(&FlowEvent::Completed {
        flow: Box::new(last),
    })
    .unwrap();
    j.flush().unwrap();
    let path = j.path().to_owned();
    drop(j);
    let mut lines = Vec::new();
    let mut at = 0u64;
    for l in BufReader::new(std::fs::File::open(&path).unwrap()).lines() {
        let l = l.unwrap();
        let len = l.len() as u64 + 1;
        lines.push((at, l));
        at += len;
    }
    (dir, lines)
}

/// Journals `f` (see [`journal_stream`]) and gives its final line, parsed, with its offset.
fn final_line(f: &Flow, final_events: Option<Vec<SseEvent>>) -> (tempfile::TempDir, u64, Value) {
    let (dir, lines) = journal_stream(f, final_events);
    let (offset, last) = lines.last().unwrap().clone();
    (dir, offset, serde_json::from_str(&last).unwrap())
}

fn small_event(id: u64) -> FlowEvent {
    FlowEvent::Completed {
        flow: Box::new(small(id, T0)),
    }
}

fn read_back(dir: &tempfile::TempDir, id: u64, offset: u64) -> (Flow, Flow) {
    let path = dir.path().join("s").join(mcptap_store::JOURNAL_FILE);
    let streamed = mcptap_store::read_journal(&path)
        .unwrap()
        .map(Result::unwrap)
        .find(|f| f.id == FlowId(id))
        .unwrap();
    let at = mcptap_store::read_flow_at(&path, offset).unwrap().unwrap();
    (streamed, at)
}

#[test]
fn a_streams_events_are_journalled_once_and_read_back_whole() {
    let f = stream(7, T0, 20, false);
    let (dir, lines) = journal_stream(&f, None);
    let (offset, last) = lines.last().unwrap().clone();
    // The final line points at the 20 `sse` lines instead of repeating the events, and leaves
    // out the body, which is exactly those events written back.
    assert!(last.starts_with(r#"{"type":"completed""#), "{last}");
    assert!(!last.contains("notifications/progress"), "{last}");
    let v: Value = serde_json::from_str(&last).unwrap();
    let refs: Vec<u64> = v["sse"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let sse_lines: Vec<u64> = lines
        .iter()
        .filter(|(_, l)| l.starts_with(r#"{"type":"sse""#))
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(refs, sse_lines);
    assert_eq!(v["sse"]["body"], "lf");
    // Each event is in the journal once.
    let all: String = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(all.matches(r#""progress\":3}"#).count(), 1, "{all}");
    // Read back whole, by the streaming reader and at the line's offset (a live view).
    let (streamed, at) = read_back(&dir, 7, offset);
    assert_eq!(streamed, f);
    assert_eq!(at, f);
}

#[test]
fn a_stream_with_crlf_line_ends_is_journalled_once_too() {
    let f = stream(7, T0, 3, true);
    let (dir, offset, v) = final_line(&f, None);
    assert_eq!(v["sse"]["body"], "crlf", "{v}");
    let (streamed, at) = read_back(&dir, 7, offset);
    assert_eq!(streamed, f);
    assert_eq!(at, f);
}

#[test]
fn a_stream_with_keep_alive_comments_is_rebuilt_from_its_events_and_the_comments() {
    // A comment line (a keep-alive ping) is in the body but is no event: the line says where
    // it goes among the events instead of repeating the body.
    let mut f = stream(7, T0, 3, false);
    let body = &mut f.response.as_mut().unwrap().body;
    let text = format!(": ping\n\n{}: ping\n\n", body.as_str().unwrap());
    *body = CapturedBody::complete(text);
    let (dir, offset, v) = final_line(&f, None);
    assert!(v["sse"]["lines"].is_array(), "{v}");
    assert_eq!(v["sse"]["body"], "lf", "{v}");
    assert_eq!(v["sse"]["extra"][0][1], ": ping\n\n", "{v}");
    assert_eq!(v["sse"]["extra"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["flow"]["response"]["body"]["text"], "", "{v}");
    assert!(v["flow"]["response"].get("sse").is_none(), "{v}");
    let (streamed, at) = read_back(&dir, 7, offset);
    assert_eq!(streamed, f);
    assert_eq!(at, f);
}

#[test]
fn a_stream_whose_body_is_not_its_events_written_back_keeps_its_body() {
    // A field the events do not keep (an unknown one) is in the body: the events alone would
    // not give the body back byte for byte, so the body is kept (in the side file).
    let mut f = stream(7, T0, 3, false);
    let body = &mut f.response.as_mut().unwrap().body;
    let text = format!("x-vendor: 1\n{}", body.as_str().unwrap());
    *body = CapturedBody::complete(text);
    let (dir, offset, v) = final_line(&f, None);
    assert!(v["sse"]["lines"].is_array(), "{v}");
    assert!(v["sse"].get("body").is_none(), "{v}");
    assert!(v["bodies"]["response"].is_array(), "{v}");
    assert!(v["flow"]["response"].get("sse").is_none(), "{v}");
    let (streamed, at) = read_back(&dir, 7, offset);
    assert_eq!(streamed, f);
    assert_eq!(at, f);
}

#[test]
fn a_final_flow_whose_events_differ_from_its_lines_is_journalled_whole() {
    // The final flow was redacted further than its events as they streamed: it is the truth.
    let f = stream(7, T0, 3, false);
    let mut scrubbed = f.response.as_ref().unwrap().sse.clone();
    scrubbed[1].data = r#"{"jsonrpc":"2.0","method":"[REDACTED]"}"#.into();
    let (dir, offset, v) = final_line(&f, Some(scrubbed.clone()));
    assert!(v.get("sse").is_none(), "{v}");
    let mut want = f.clone();
    want.response.as_mut().unwrap().sse = scrubbed;
    let (streamed, at) = read_back(&dir, 7, offset);
    assert_eq!(streamed, want);
    assert_eq!(at, want);
}

/// Journals a stream whose every event went out as an `sse` line and whose final flow is
/// `kept` (what the engine kept of it): the final line's offset, and that line parsed.
fn journal_kept(f: &Flow, kept: &Flow) -> (tempfile::TempDir, u64, Value) {
    let dir = tempdir();
    let mut j = Journal::create(&dir.path().join("s"), SessionMeta::new("test")).unwrap();
    j.record(&head(f)).unwrap();
    for ev in &f.response.as_ref().unwrap().sse {
        j.record(&FlowEvent::Sse {
            id: f.id,
            event: ev.clone(),
        })
        .unwrap();
    }
    let offset = j.position();
    j.record(&FlowEvent::Completed {
        flow: Box::new(kept.clone()),
    })
    .unwrap();
    j.flush().unwrap();
    drop(j);
    let text =
        std::fs::read_to_string(dir.path().join("s").join(mcptap_store::JOURNAL_FILE)).unwrap();
    let last = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    (dir, offset, last)
}

#[test]
fn a_long_stream_that_kept_only_some_events_is_read_back_with_all_of_them() {
    // The engine keeps a long stream's first events (and its answers) in memory and counts the
    // rest; its `sse` lines hold every one, so the final line points at them all.
    let f = stream(7, T0, 30, false);
    let mut kept = f.clone();
    {
        let resp = kept.response.as_mut().unwrap();
        resp.sse.truncate(10);
        resp.sse_elided = 20;
        resp.body.bytes = resp.body.bytes.slice(..100);
        resp.body.truncated = true;
    }
    let (dir, offset, last) = journal_kept(&f, &kept);
    assert_eq!(last["sse"]["lines"].as_array().unwrap().len(), 30, "{last}");
    assert!(last["flow"]["response"].get("sse").is_none(), "{last}");
    // Read back: every event, none counted as left out, and the truncated body as it was.
    let mut want = f.clone();
    want.response.as_mut().unwrap().body = kept.response.as_ref().unwrap().body.clone();
    let (streamed, at) = read_back(&dir, 7, offset);
    assert_eq!(streamed, want);
    assert_eq!(at, want);
}

#[test]
fn a_long_stream_whose_lines_are_not_all_there_is_journalled_as_it_was_kept() {
    // The counts disagree (lines missing): the final line holds what the flow kept, and says
    // how many events it left out.
    let f = stream(7, T0, 30, false);
    let mut kept = f.clone();
    {
        let resp = kept.response.as_mut().unwrap();
        resp.sse.truncate(10);
        resp.sse_elided = 25;
    }
    let (dir, _, last) = journal_kept(&f, &kept);
    let path = dir.path().join("s").join(mcptap_store::JOURNAL_FILE);
    assert!(last.get("sse").is_none(), "{last}");
    assert_eq!(last["flow"]["response"]["sse_elided"], 25, "{last}");
    let back = mcptap_store::read_journal(&path)
        .unwrap()
        .map(Result::unwrap)
        .find(|x| x.id == FlowId(7))
        .unwrap();
    assert_eq!(back, kept);
}

/// The journal costs no more bytes than the HAR for the same flows: a stream's events once (not
/// as lines, again in the final flow and again in its body), bodies of control characters as
/// base64 rather than six-byte escapes.
#[test]
fn the_journal_is_no_larger_than_the_har_for_streams_and_binary_like_bodies() {
    let mut nul = small(2, T0 + 1_000);
    nul.response.as_mut().unwrap().body = CapturedBody::complete(vec![0u8; 256 * 1024]);
    let mut binary = small(3, T0 + 2_000);
    binary.response.as_mut().unwrap().body = CapturedBody::complete(
        (0..256 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for (name, flow) in [
        ("a stream of 500 events", stream(1, T0, 500, false)),
        ("a stream with CRLF line ends", stream(4, T0, 500, true)),
        ("a body of NUL bytes", nul),
        ("a binary body", binary),
    ] {
        let dir = tempdir();
        let mut j = Journal::create(&dir.path().join("s"), SessionMeta::new("test")).unwrap();
        for ev in crate::common::events(&flow) {
            j.record(&ev).unwrap();
        }
        let journal = j.path().to_owned();
        let har = j.finish().unwrap();
        let (journal, har) = (
            std::fs::metadata(journal).unwrap().len(),
            std::fs::metadata(har).unwrap().len(),
        );
        assert!(
            journal <= har,
            "{name}: the journal holds {journal} bytes, the HAR {har}"
        );
    }
}

/// Large flows wait for their turn as their place in the file, read back when it comes: the
/// export is the same, byte for byte, as one that holds every flow whole (a journal read from
/// a stream, a HAR file compressed), for a journal whose large flows and streams complete out
/// of start order, and for the HAR files made from it (their entries shuffled a little).
#[test]
fn large_flows_wait_as_their_place_in_the_file_and_export_the_same() {
    let dir = tempdir();
    let session = dir.path().join("s");
    let mut j = Journal::create(&session, SessionMeta::new("test")).unwrap();
    let big = |id: u64, started: i64| {
        let mut f = small(id, started);
        let text = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"text":"{}"}}}}"#,
            "é\\\"x".repeat(30_000)
        );
        f.response.as_mut().unwrap().body = CapturedBody::complete(text);
        f
    };
    let mut open = std::collections::VecDeque::new();
    for i in 1..=60u64 {
        let started = T0 + i as i64 * 100_000;
        let f = match i % 5 {
            0 => big(i, started),
            1 => stream(i, started, 2_000, i % 2 == 0),
            _ => small(i, started),
        };
        j.record(&head(&f)).unwrap();
        if let Some(r) = &f.response {
            for ev in r.sse.iter().take(3) {
                j.record(&FlowEvent::Sse {
                    id: f.id,
                    event: ev.clone(),
                })
                .unwrap();
            }
        }
        open.push_back(f);
        if open.len() == 4 {
            // The newest first: completion order is not start order.
            for f in [open.pop_back().unwrap(), open.pop_front().unwrap()] {
                j.record(&FlowEvent::Completed { flow: Box::new(f) })
                    .unwrap();
            }
        }
    }
    for f in open.drain(..) {
        j.record(&FlowEvent::Completed { flow: Box::new(f) })
            .unwrap();
    }
    j.flush().unwrap();
    let journal = j.path().to_owned();
    drop(j);

    let options = ExportOptions::default();
    let spilled = dir.path().join("spilled.har");
    let report = export(&journal, &spilled, &options).unwrap();
    assert_eq!(report.entries, 60);
    // (Given the journal's path, to find its large bodies in the side file next to it.)
    let reader =
        mcptap_store::JournalReader::new(BufReader::new(std::fs::File::open(&journal).unwrap()))
            .with_path(&journal);
    let mut whole = Vec::new();
    mcptap_store::export_journal(reader, &mut whole, &spilled, &options).unwrap();
    let got = std::fs::read(&spilled).unwrap();
    assert!(got.len() > 6 << 20, "large flows: {} bytes", got.len());
    assert_eq!(got, whole, "a journal read from a file and from a stream");

    // The HAR file, with its entries a little out of start order (pairs swapped).
    let mut doc: Value = serde_json::from_slice(&got).unwrap();
    let entries = doc["log"]["entries"].as_array_mut().unwrap();
    for pair in entries.chunks_mut(2) {
        pair.reverse();
    }
    let har = dir.path().join("in.har");
    std::fs::write(&har, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, &std::fs::read(&har).unwrap()).unwrap();
    let gz = dir.path().join("in.har.gz");
    std::fs::write(&gz, z.finish().unwrap()).unwrap();
    let (from_har, from_gz) = (dir.path().join("a.har"), dir.path().join("b.har"));
    export(&har, &from_har, &options).unwrap();
    export(&gz, &from_gz, &options).unwrap();
    let a = std::fs::read(&from_har).unwrap();
    assert_eq!(
        a,
        std::fs::read(&from_gz).unwrap(),
        "a plain and a compressed HAR"
    );
    assert_eq!(a, got, "the HAR file exports as the journal did");
}
