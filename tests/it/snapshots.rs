//! What a person reads, snapshot-tested with insta (house rule 9): the line view, the closing
//! summary of `mcptap run`, `mcptap analyze`'s text and a HAR export, all of one capture
//! (`fixtures/token-not-sent.har`: a token is issued, then the MCP endpoint keeps being called
//! without it). The capture's times and ports are fixed; what changes from build to build
//! (mcptap's version) is filtered by the insta settings.

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
