//! What a person reads, snapshot-tested with insta (house rule 9): the line view, the closing
//! summary of `mcptap run`, `mcptap analyze`'s text and a HAR export, all of one capture
//! (`fixtures/token-not-sent.har`: a token is issued, then the MCP endpoint keeps being called
//! without it). The capture's times and ports are fixed; what changes from build to build
//! (mcptap's version) is filtered by the insta settings. A HAR exported from a live capture
//! through the real engine is snapshot too, its times and ports filtered the same way.

use crate::common::client::body_bytes;
use crate::common::pki::TestPki;
use crate::common::proxy::{has_path, TestProxy};
use crate::common::upstream::Upstream;
use std::path::{Path, PathBuf};

/// A file under `tests/it/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

/// The capture, through the offline pipeline (read, prepare, analyze) as `mcptap analyze` runs
/// it.
fn analyzed() -> (mcptap_store::Session, mcptap_analyze::Report) {
    let mut session = mcptap::files::read(&fixture("token-not-sent.har")).unwrap();
    let report = mcptap::files::analyze_session(&mut session, false, false);
    (session, report)
}

/// Snapshots beside this file; mcptap's own version filtered.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(&regex_escape(env!("CARGO_PKG_VERSION")), "[version]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[test]
fn the_line_view() {
    let (session, _) = analyzed();
    let lines: Vec<String> = session.flows.iter().map(mcptap::lineview::line).collect();
    settings().bind(|| insta::assert_snapshot!("line_view", lines.join("\n")));
}

#[test]
fn analyze_text() {
    let (_, report) = analyzed();
    let text = mcptap_analyze::render_text(&report);
    settings().bind(|| insta::assert_snapshot!("analyze_text", text));
}

#[test]
fn the_run_summary() {
    let (session, _) = analyzed();
    let mut sink = mcptap::sink::Sink::new(true, false, None, mcptap_store::Options::default());
    for flow in session.flows {
        sink.feed(mcptap_flow::FlowEvent::Completed {
            flow: Box::new(flow),
        });
    }
    let lines = mcptap::run::summary_lines(
        &sink.close(),
        Path::new("/home/me/.mcptap/run/last-run.log"),
        "claude mcp list",
        mcptap::run::Exit::Code(0),
    );
    settings().bind(|| insta::assert_snapshot!("run_summary", lines.join("\n")));
}

#[test]
fn a_har_export() {
    let mut out = Vec::new();
    let report = mcptap_store::export_to(
        &fixture("token-not-sent.har"),
        &mut out,
        Path::new("-"),
        &mcptap_store::ExportOptions::default(),
    )
    .unwrap();
    assert_eq!(report.entries, 4);
    let har: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let text = serde_json::to_string_pretty(&har).unwrap();
    settings().bind(|| insta::assert_snapshot!("har_export", text));
}

/// A live exchange through the engine, recorded by the CLI's sink as `mcptap proxy` records it,
/// and the `session.har` written at its close: times, ports and durations are filtered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_export_of_a_live_capture() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let mut proxy = TestProxy::start(&pki, |_| {}).await;
    let target = format!("localhost:{}", up.port());
    body_bytes(proxy.get(&target, "/small").await).await;
    proxy.flow(has_path("/small")).await;
    proxy.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s");
    let journal =
        mcptap_store::Journal::create(&session, mcptap_store::SessionMeta::new("test")).unwrap();
    let mut sink = mcptap::sink::Sink::new(true, false, Some(journal), Default::default());
    let events = proxy.events.lock().unwrap().clone();
    for ev in events {
        sink.feed(ev);
    }
    sink.close();
    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session.join(mcptap_store::HAR_FILE)).unwrap())
            .unwrap();
    let text = serde_json::to_string_pretty(&har).unwrap();
    let mut settings = settings();
    for (volatile, shown) in [
        // ISO times, and µs since the epoch.
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
        (r"\b1\d{15}\b", "[micros]"),
        // The HTTP Date header.
        (r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", "[date]"),
        // Ephemeral ports, in URLs, addresses and fields.
        (r"(localhost|127\.0\.0\.1):\d+", "$1:[port]"),
        (r#""port": \d+"#, r#""port": "[port]""#),
        // The cipher suite rustls prefers depends on the CPU (AES hardware or not).
        (r#""cipher": "[^"]+""#, r#""cipher": "[cipher]""#),
        // Durations in ms.
        (
            r#""(time|blocked|dns|connect|ssl|send|wait|receive)": -?[\d.]+"#,
            r#""$1": "[ms]""#,
        ),
    ] {
        settings.add_filter(volatile, shown);
    }
    settings.bind(|| insta::assert_snapshot!("har_export_live", text));
}
