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
//!   secrets fingerprinted), [`render_html`] (the same story as one self-contained page), and the [`Report`]'s serde JSON (schema in
//!   `docs/findings/README.md`).
//!
//! Flows may be redacted (`[redacted sha256:… len=…]`) or raw; secrets are always compared
//! through [`mcptap_flow::redact::fingerprint_of`], so both work alike.
#![deny(missing_docs)]

mod catalog;
mod classify;
mod engine;
mod html;
mod model;
mod render;
mod rules_authorize;
mod rules_discovery;
mod rules_edge;
mod rules_issuer;
mod rules_mcp;
mod rules_registration;
mod rules_scope;
mod rules_server;
mod rules_session;
mod rules_token;
mod rules_transport;
mod story;
mod util;

pub use catalog::FindingId;
pub use engine::{Analyzer, Options};
pub use html::render_html;
pub use model::{
    AuthInfo, Culprit, Environment, Finding, FlowSummary, McpInfo, OAuthStory, Report, Role,
    RpcDirection, RpcKind, RpcMessage, Severity, Status, TokenRecord, UnknownSeverity, Visibility,
    SCHEMA_VERSION,
};
pub use render::{render_markdown, render_text, MarkdownOptions};

use mcptap_flow::{Flow, Micros};

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
    order.sort_by_key(|f| (completed_at(f), f.id));
    let mut a = Analyzer::new(opts);
    for f in order {
        a.push(f);
    }
    a.into_report(ended)
}

/// When a flow completed, as the analyzer orders flows offline: its end, else its response
/// head, else its start (never before its start).
pub fn completed_at(f: &Flow) -> Micros {
    let t = &f.timings;
    t.finished
        .or(t.response_head)
        .unwrap_or(t.started)
        .max(t.started)
}

/// [`analyze_ended`] for a capture read one flow at a time (a file of any size): flows are
/// pushed as the file yields them, each with a bound the file's order promises (no flow still
/// to come completes before it), wait in a heap until that bound passes them, then go to the
/// [`Analyzer`] in the very order [`analyze_ended`] gives the file's flows sorted by start —
/// completion, id, start, file order — and are dropped. What waits is what was in flight at once, not the
/// file.
///
/// A bound is the file's promise, not the analyzer's: a flow that comes after one later in
/// the order has gone on makes [`finish`](Self::finish) say `None`, and the caller analyses
/// the capture whole instead. Nothing is wrong then, only slower.
pub struct Ordered {
    analyzer: Analyzer,
    waiting: std::collections::BinaryHeap<std::cmp::Reverse<Waiting>>,
    seq: u64,
    last: Option<OrderKey>,
    out_of_order: bool,
    most_waiting: usize,
}

/// Completion, id, start, arrival: the order of [`analyze_ended`] over flows sorted by start.
type OrderKey = (Micros, mcptap_flow::FlowId, Micros, u64);

/// A flow waiting for its turn.
type Waiting = mcptap_flow::ByKey<OrderKey, Flow>;

impl Ordered {
    /// An empty analysis with `opts`.
    pub fn new(opts: Options) -> Self {
        Ordered {
            analyzer: Analyzer::new(opts),
            waiting: Default::default(),
            seq: 0,
            last: None,
            out_of_order: false,
            most_waiting: 0,
        }
    }

    /// Takes the file's next flow; `bound`: no flow after this one completes before it.
    pub fn push(&mut self, flow: Flow, bound: Micros) {
        if self.out_of_order {
            return;
        }
        let key = (completed_at(&flow), flow.id, flow.timings.started, self.seq);
        self.seq += 1;
        if self.last.is_some_and(|last| key < last) {
            self.out_of_order = true;
            self.waiting.clear();
            return;
        }
        self.waiting
            .push(std::cmp::Reverse(Waiting { key, value: flow }));
        self.most_waiting = self.most_waiting.max(self.waiting.len());
        while let Some(std::cmp::Reverse(w)) = self.waiting.peek() {
            if w.key.0 >= bound {
                break;
            }
            self.release();
        }
    }

    /// Makes room for `n` flows in the report's list at once ([`Analyzer::reserve_flows`]).
    pub fn reserve_flows(&mut self, n: usize) {
        self.analyzer.reserve_flows(n);
    }

    /// Takes the file's promise that no flow still to come, the next one pushed included,
    /// completes before `bound`: the flows waiting that complete earlier go to the analyzer
    /// now (and are dropped), before the next flow is read whole. What `push` would do with
    /// them next, done sooner.
    pub fn advance(&mut self, bound: Micros) {
        if self.out_of_order {
            return;
        }
        while let Some(std::cmp::Reverse(w)) = self.waiting.peek() {
            if w.key.0 >= bound {
                break;
            }
            self.release();
        }
    }

    fn release(&mut self) {
        if let Some(std::cmp::Reverse(w)) = self.waiting.pop() {
            self.last = Some(w.key);
            self.analyzer.push(&w.value);
        }
    }

    /// The most flows that waited at once (what memory was bounded by).
    pub fn most_waiting(&self) -> usize {
        self.most_waiting
    }

    /// The report, as [`analyze_ended`] makes it; `None` when a flow came too late for its
    /// turn (analyse the capture whole then).
    pub fn finish(mut self, ended: Option<Micros>) -> Option<Report> {
        while !self.waiting.is_empty() && !self.out_of_order {
            self.release();
        }
        if self.out_of_order {
            return None;
        }
        Some(self.analyzer.into_report(ended))
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

    /// docs/findings/README.md says in which file each finding is decided; every file it
    /// names must decide it (`Id::Variant` appears there), and every file that does is named.
    #[test]
    fn the_map_of_where_findings_are_decided_is_true() {
        let readme = include_str!("../../../docs/findings/README.md");
        let files: &[(&str, &str)] = &[
            ("rules_authorize.rs", include_str!("rules_authorize.rs")),
            ("rules_discovery.rs", include_str!("rules_discovery.rs")),
            ("rules_edge.rs", include_str!("rules_edge.rs")),
            ("rules_issuer.rs", include_str!("rules_issuer.rs")),
            ("rules_mcp.rs", include_str!("rules_mcp.rs")),
            (
                "rules_registration.rs",
                include_str!("rules_registration.rs"),
            ),
            ("rules_scope.rs", include_str!("rules_scope.rs")),
            ("rules_server.rs", include_str!("rules_server.rs")),
            ("rules_session.rs", include_str!("rules_session.rs")),
            ("rules_token.rs", include_str!("rules_token.rs")),
            ("rules_transport.rs", include_str!("rules_transport.rs")),
            // The probe's server checks: requests no client makes, judged by the probe.
            ("probe_checks.rs", include_str!("../../cli/probe_checks.rs")),
        ];
        for id in FindingId::ALL {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{id}` |")))
                .unwrap_or_else(|| panic!("{id} is not in the map"));
            let named: Vec<&str> = files
                .iter()
                .map(|(f, _)| *f)
                .filter(|f| row.contains(&format!("`{f}`")))
                .collect();
            assert!(!named.is_empty(), "{id}: no file named");
            if *id == FindingId::TokenUnused {
                continue; // reported as token-not-sent
            }
            let variant = format!("{id:?}");
            let pat = |text: &str| {
                text.match_indices(&format!("Id::{variant}")).any(|(i, m)| {
                    !text[i + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
                })
            };
            for (f, text) in files {
                assert_eq!(
                    named.contains(f),
                    pat(text),
                    "{id}: the map and {f} disagree"
                );
            }
        }
    }

    #[test]
    fn sub_cases_come_from_the_pages() {
        assert_eq!(
            FindingId::with_subcase("never-sent"),
            [FindingId::TokenNotSent]
        );
        assert!(FindingId::TokenNotSent
            .subcases()
            .contains(&"after-restart"));
        assert!(
            FindingId::with_subcase("cf-ray").is_empty(),
            "a header is no sub-case"
        );
        assert!(FindingId::with_subcase("token-not-sent").is_empty());
    }
}
