//! Large bodies through the real binary: spooled while they stream, saved raw in the session's
//! side file, redacted, and back byte-exact in every reader; a crash mid-download leaves a
//! readable session.

use crate::cli::{export, mcptap, sigterm, Recording};
use crate::common::client::{body_bytes, request};
use mcptap_flow::Flow;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits (at most 20 s) for `child` to exit; its status must be success.
async fn exits_cleanly(mut child: std::process::Child) {
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "mcptap did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}

fn by_path<'a>(flows: &'a [Flow], path: &str) -> &'a Flow {
    flows
        .iter()
        .find(|f| f.request.url.ends_with(path))
        .unwrap_or_else(|| panic!("no flow for {path}"))
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn downloads_above_and_below_the_body_limit_come_back_exact_from_journal_and_har() {
    let r = Recording::start().await;
    let (target, mut s) = r.client().await;
    // Past the 4 MiB limit (truncated in the record), large below it, and small.
    let sizes = [6_000_000usize, 2_000_000, 100_000, 5_000];
    for n in sizes {
        let resp = s
            .send(request("GET", &target, &format!("/big?n={n}"), ""))
            .await
            .unwrap();
        let got = body_bytes(resp).await;
        assert_eq!(got.len(), n, "the client gets the whole body");
    }
    drop(s);
    sigterm(&r.child);
    exits_cleanly(r.child).await;

    let side = std::fs::metadata(r.session.join("bodies.bin"))
        .unwrap()
        .len();
    let limit = 4 << 20;
    // Bodies written with direct I/O start at a page boundary: a few KiB of gaps at most.
    let bodies = (limit + 2_000_000 + 100_000) as u64;
    assert!(side >= bodies && side < bodies + 3 * 4096, "{side} bytes");
    let journal = std::fs::metadata(r.session.join("journal.jsonl"))
        .unwrap()
        .len();
    assert!(journal < 64 << 10, "journal of {journal} bytes");

    let out = r.conf.path().join("out.har");
    export(&r.session, &out);
    for source in [
        r.session.clone(),
        r.session.join("session.har"),
        out.clone(),
    ] {
        let loaded = mcptap_store::load(&source).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        for n in sizes {
            let f = by_path(&loaded.flows, &format!("/big?n={n}"));
            let body = &f.response.as_ref().unwrap().body;
            assert_eq!(body.total_len, n as u64, "{}", source.display());
            assert_eq!(body.bytes.len(), n.min(limit), "{}", source.display());
            assert!(
                body.bytes.iter().all(|&b| b == b'x'),
                "{}",
                source.display()
            );
            assert_eq!(body.truncated, n > limit, "{}", source.display());
        }
    }
    // The offline analysis reads the same session.
    let analyze = mcptap()
        .args(["analyze", "--json"])
        .arg(&r.session)
        .output()
        .unwrap();
    assert!(
        analyze.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&analyze.stderr)
    );
}

#[tokio::test]
async fn a_token_in_a_large_streamed_body_never_reaches_the_disk() {
    let r = Recording::start().await;
    let (target, mut s) = r.client().await;
    let (_, mut s2) = r.client().await;
    let token = "tok-3f9a1c77e2b84d0c9a55-secret";
    // Text of 3 MB with the token at the start, across the point where the capture moves to
    // the spool (512 KiB), across the spool's blocks (128 KiB) and near the end.
    let mut body = vec![b'.'; 3_000_000];
    for at in [0, (512 << 10) - 10, (128 << 10) * 9 - 5, 2_999_000] {
        body[at..at + token.len()].copy_from_slice(token.as_bytes());
    }
    let req = || {
        let mut req = request("POST", &target, "/echo", body.clone());
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req.headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        req
    };
    // Two at once, spooled while they stream.
    let (a, b) = tokio::join!(s.send(req()), s2.send(req()));
    for resp in [a.unwrap(), b.unwrap()] {
        assert_eq!(body_bytes(resp).await, body, "the client sees the token");
    }
    drop((s, s2));
    sigterm(&r.child);
    exits_cleanly(r.child).await;

    for (path, bytes) in files_under(&r.session) {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the raw token is in {}",
            path.display()
        );
    }
    let loaded = mcptap_store::load(&r.session).unwrap();
    let marker = mcptap_flow::redact::redacted(token);
    let echoes: Vec<&Flow> = loaded
        .flows
        .iter()
        .filter(|f| f.request.url.ends_with("/echo"))
        .collect();
    assert_eq!(echoes.len(), 2);
    for f in echoes {
        for b in [
            &f.request.body.bytes,
            &f.response.as_ref().unwrap().body.bytes,
        ] {
            let text = std::str::from_utf8(b).unwrap();
            assert_eq!(text.matches(&marker).count(), 4);
        }
    }
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_download_leaves_a_readable_session() {
    let mut r = Recording::start().await;
    let (target, mut s) = r.client().await;
    let resp = s
        .send(request("GET", &target, "/big?n=3000000", ""))
        .await
        .unwrap();
    assert_eq!(body_bytes(resp).await.len(), 3_000_000);
    // A second download, killed part way through.
    let resp = s
        .send(request("GET", &target, "/big?n=400000000", ""))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut seen = 0;
    while seen < 5_000_000 {
        use http_body_util::BodyExt as _;
        let frame = body.frame().await.unwrap().unwrap();
        seen += frame.data_ref().map_or(0, |d| d.len());
    }
    // Let the recorder write the first flow (it takes events in batches).
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.child.kill().unwrap();
    let _ = r.child.wait();

    let out = r.conf.path().join("out.har");
    export(&r.session, &out);
    for source in [r.session.clone(), out] {
        let loaded = mcptap_store::load(&source).unwrap();
        let done = by_path(&loaded.flows, "/big?n=3000000");
        let b = &done.response.as_ref().unwrap().body;
        assert_eq!(b.bytes.len(), 3_000_000);
        assert!(b.bytes.iter().all(|&c| c == b'x'));
        // The download in flight is there, as pending, without a body.
        let cut = by_path(&loaded.flows, "/big?n=400000000");
        assert_eq!(cut.state, mcptap_flow::FlowState::Pending);
    }
}
