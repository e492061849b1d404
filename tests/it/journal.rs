//! The journal of a real recording (journal v4): flows that span the recorder's batches are
//! written with final lines that point at their head lines, and read back, analysed and
//! exported exactly as the same journal written whole (version 3) is.

use crate::cli::{export, mcptap, sigterm, Recording};
use crate::common::client::{body_bytes, request};
use http_body_util::BodyExt as _;
use mcptap_flow::Flow;
use std::path::Path;
use std::time::Duration;

#[path = "../../crates/store/tests/it/v3form.rs"]
mod v3form;

/// `mcptap analyze --json` of `source`, with its path taken out.
fn analyze(source: &Path) -> String {
    let out = mcptap()
        .args(["analyze", "--json"])
        .arg(source)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = source.parent().unwrap().to_string_lossy().into_owned();
    String::from_utf8(out.stdout).unwrap().replace(&dir, "DIR")
}

#[tokio::test]
async fn a_recorded_session_whose_flows_span_batches_reads_back_as_version_3_gives_it() {
    let r = Recording::start().await;
    let (target, mut s) = r.client().await;
    let token = "tok-77c0ffee-journal4-secret";

    // A stream: its first event now, the rest once released, well after the recorder wrote
    // its start: the final line comes in a later batch.
    let mut req = request(
        "POST",
        &target,
        "/sse",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
    );
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let resp = s.send(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.up.sse_release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("id: 3"));

    // A plain-text download past the body limit, read slowly: it spans many batches.
    let resp = s
        .send(request("GET", &target, "/big?n=20000000", ""))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut seen = 0;
    let mut slept = false;
    while let Some(frame) = body.frame().await {
        seen += frame.unwrap().data_ref().map_or(0, |d| d.len());
        if !slept {
            tokio::time::sleep(Duration::from_millis(300)).await;
            slept = true;
        }
    }
    assert_eq!(seen, 20_000_000);

    // Calls with a token, one after a pause (the recorder idle: its start alone in a batch).
    for pause in [1_200, 0, 50] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let mut req = request("POST", &target, "/echo", r#"{"jsonrpc":"2.0","id":2}"#);
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let resp = s.send(req).await.unwrap();
        assert_eq!(body_bytes(resp).await, r#"{"jsonrpc":"2.0","id":2}"#);
    }
    drop(s);
    sigterm(&r.child);
    let mut child = r.child;
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(st.success(), "{st:?}");

    let journal = r.session.join(mcptap_store::JOURNAL_FILE);
    let lines = v3form::lines(&journal);
    assert_eq!(lines[0].1["version"], 4);
    let final_of = |path: &str| {
        lines
            .iter()
            .find(|(_, v)| {
                v["type"] == "completed"
                    && lines.iter().any(|(_, s)| {
                        s["type"] == "request_started"
                            && s["flow"]["id"] == v["flow"]["id"]
                            && s["flow"]["request"]["url"]
                                .as_str()
                                .is_some_and(|u| u.contains(path))
                    })
            })
            .unwrap_or_else(|| panic!("no final line pointing at a start for {path}"))
    };
    // The stream's final line points at its start and response head, and at its events.
    let (_, sse) = final_of("/sse");
    assert_eq!(sse["head"].as_array().unwrap().len(), 2, "{sse}");
    assert_eq!(sse["sse"]["lines"].as_array().unwrap().len(), 3, "{sse}");
    assert!(sse["flow"].get("host").is_none(), "{sse}");
    // The download's points at its start, its body in the side file.
    let (big_at, big) = final_of("/big");
    assert!(big.get("head").is_some(), "{big}");
    assert!(big.get("bodies").is_some(), "{big}");
    assert!(big["flow"]["request"].get("url").is_none(), "{big}");
    // Nothing raw on disk: the start lines were redacted, the final lines bring nothing back.
    for e in std::fs::read_dir(&r.session).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }

    // Every reader gives what the same journal written whole gives.
    let v3 = r.conf.path().join("v3").join(mcptap_store::JOURNAL_FILE);
    v3form::as_v3(&journal, &v3);
    let mut reader = mcptap_store::read_journal(&journal).unwrap();
    let flows: Vec<Flow> = reader.by_ref().map(Result::unwrap).collect();
    assert!(reader.warnings().is_empty(), "{:?}", reader.warnings());
    let whole: Vec<Flow> = mcptap_store::read_journal(&v3)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(flows.len(), 5);
    assert!(
        flows == whole,
        "the flows differ from the journal written whole"
    );
    for (at, v) in &lines {
        if v["type"] == "completed" {
            let back = mcptap_store::read_flow_at(&journal, *at).unwrap().unwrap();
            let want = flows.iter().find(|f| f.id == back.id).unwrap();
            assert!(back == *want, "flow {} read at {at} differs", back.id);
        }
    }
    let (har4, har3) = (r.conf.path().join("4.har"), r.conf.path().join("3.har"));
    export(&r.session, &har4);
    export(&v3, &har3);
    let (h4, h3) = (
        std::fs::read_to_string(&har4).unwrap(),
        std::fs::read_to_string(&har3).unwrap(),
    );
    assert!(h4 == h3, "the HAR files differ");
    assert_eq!(analyze(&journal), analyze(&v3));

    // The download costs no more in the journal (its lines and its body in the side file)
    // than in the HAR.
    let har: serde_json::Value = serde_json::from_str(&h4).unwrap();
    let entry = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request"]["url"].as_str().unwrap().contains("/big"))
        .unwrap();
    let id = &big["flow"]["id"];
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines_bytes: usize = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["flow"]["id"] == *id || v["id"] == *id
        })
        .map(|l| l.len() + 1)
        .sum();
    let side = big["bodies"]["response"][1].as_u64().unwrap() as usize;
    let har_bytes = serde_json::to_vec(entry).unwrap().len();
    assert!(
        lines_bytes + side <= har_bytes,
        "the download: journal {lines_bytes} + {side} bytes, HAR entry {har_bytes} (final line at {big_at})"
    );
}
