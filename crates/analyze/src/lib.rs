//! mcptap's analyzer: names the MCP + OAuth failures a capture proves.
//!
//! Pure: flows in, findings out. No I/O, no async runtime, no clock: time comes from the flows
//! (or from the caller, via [`Analyzer::tick`]). The specification is
//! `shared/reference/failure-modes.md`; every mode there has a finding id, a rule, and a page
//! in `docs/findings/` that [`explain`] returns.
//!
//! - Offline: [`analyze`] a slice of flows into a [`Report`].
//! - Live: an [`Analyzer`]; [`Analyzer::push`] each completed flow and show the findings it
//!   returns, [`Analyzer::tick`] now and then so deadline rules fire without traffic, and
//!   [`Analyzer::finish`] at shutdown for the summary.
//! - Output: [`render_text`] (the human report), [`render_markdown`] (for an issue tracker,
//!   secrets fingerprinted), and the [`Report`]'s serde JSON (schema in
//!   `docs/findings/README.md`).
//!
//! Flows may be redacted (`[redacted sha256:… len=…]`) or raw; secrets are always compared
//! through [`mcptap_flow::redact::fingerprint_of`], so both work alike.
#![deny(missing_docs)]

mod catalog;
mod classify;
mod engine;
mod model;
mod render;
mod rules_mcp;
mod rules_oauth;
mod rules_transport;
mod util;

pub use catalog::FindingId;
pub use engine::{Analyzer, Options};
pub use model::{
    AuthInfo, Culprit, Environment, Finding, FlowSummary, McpInfo, OAuthStory, Report, Role,
    RpcDirection, RpcKind, RpcMessage, Severity, Status, TokenRecord, UnknownSeverity, Visibility,
    SCHEMA_VERSION,
};
pub use render::{render_markdown, render_text, MarkdownOptions};

use mcptap_flow::Flow;

/// Analyses a whole capture with the default [`Options`].
pub fn analyze(flows: &[Flow]) -> Report {
    analyze_with(flows, Options::default())
}

/// Analyses a whole capture. Flows are fed in the order they completed (as a live session
/// would have seen them), whatever order the file holds them in. The capture is taken to end
/// with its last flow (see [`analyze_ended`]).
pub fn analyze_with(flows: &[Flow], opts: Options) -> Report {
    analyze_ended(flows, None, opts)
}

/// Analyses a whole capture that ended at `ended` (µs since the epoch: when recording
/// stopped, as a session's journal and HAR say), deciding what waits on the evidence at hand
/// as the live proxy did when it stopped. `None` (a HAR from another tool): the last flow's
/// end.
pub fn analyze_ended(flows: &[Flow], ended: Option<mcptap_flow::Micros>, opts: Options) -> Report {
    let mut order: Vec<&Flow> = flows.iter().collect();
    order.sort_by_key(|f| {
        let t = &f.timings;
        (
            t.finished
                .or(t.response_head)
                .unwrap_or(t.started)
                .max(t.started),
            f.id,
        )
    });
    let mut a = Analyzer::new(opts);
    for f in order {
        a.push(f);
    }
    match ended {
        Some(end) => a.finish_at(end),
        None => a.finish(),
    }
}

/// Every id [`explain`] knows, in the reference's order: the ids findings carry, plus
/// `token-unused`, which is reported as `token-not-sent` with that sub-case.
pub fn finding_ids() -> &'static [FindingId] {
    FindingId::ALL
}

/// The page for a finding id (`docs/findings/ID.md`), like `rustc --explain`; `None` for an
/// unknown id (show [`finding_ids`] then).
pub fn explain(id: &str) -> Option<&'static str> {
    FindingId::parse(id).map(FindingId::page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_has_a_page_and_a_hint() {
        for id in FindingId::ALL {
            assert_eq!(FindingId::parse(id.as_str()), Some(*id));
            let page = explain(id.as_str()).unwrap();
            assert!(
                page.starts_with(&format!("# {id}")),
                "{id}: page must start with its id"
            );
            assert!(!id.hint().is_empty() && !id.title().is_empty());
        }
        assert!(explain("no-such-id").is_none());
    }
}
