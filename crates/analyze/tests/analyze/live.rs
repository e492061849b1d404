//! The live analyzer: findings come out of `push` once, from the flow that proves them;
//! deadlines fire on `tick`; `finish` agrees with the offline `analyze`.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::{analyze, Analyzer, Options, Severity, Status};
use std::time::Duration;

fn dance(s: &mut Scenario) {
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", Some("rt-1"))); // #5
}

#[test]
fn findings_are_emitted_once_by_the_proving_flow_then_updated() {
    let mut s = Scenario::new();
    dance(&mut s);
    s.add(init_401()); // #6
    s.add(init_401()); // #7
    let mut a = Analyzer::new(Options::default());
    let mut emitted = Vec::new();
    for f in &s.flows {
        for finding in a.push(f) {
            emitted.push((
                f.id.0,
                finding.id.as_str(),
                finding.evidence.iter().map(|e| e.0).collect::<Vec<_>>(),
            ));
        }
    }
    assert_eq!(emitted, vec![(6, "token-not-sent", vec![5, 6])]);
    let now = a.findings();
    assert_eq!(now.len(), 1);
    assert_eq!(
        now[0].evidence.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(now[0].occurrences, 2);
    assert_eq!(a.finish(), analyze(&s.flows));
}

#[test]
fn tick_fires_deadlines_without_traffic() {
    let mut s = Scenario::new();
    dance(&mut s);
    let mut a = Analyzer::new(Options {
        token_unused_after: Duration::from_secs(30),
        ..Options::default()
    });
    for f in &s.flows {
        assert!(a.push(f).is_empty());
    }
    let token_done = s.flows[4].timings.finished.unwrap();
    assert!(a.tick(token_done + 4_000_000).is_empty(), "not likely yet");
    // Five seconds unused: shown at once as suspected, saying what would decide it.
    let suspected = a.tick(token_done + 6_000_000);
    assert_eq!(suspected.len(), 1, "{suspected:#?}");
    assert_eq!(suspected[0].id, "token-not-sent");
    assert_eq!(suspected[0].status, Status::Suspected);
    assert!(suspected[0].decides.is_some());
    assert!(a.tick(token_done + 29_000_000).is_empty(), "not due yet");
    // The deadline decides it: the same finding, announced again as confirmed.
    let fired = a.tick(token_done + 31_000_000);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].id, "token-not-sent");
    assert_eq!(fired[0].key, suspected[0].key);
    assert_eq!(fired[0].status, Status::Confirmed);
    assert_eq!(fired[0].severity, Severity::Critical);
    assert_eq!(fired[0].subcase, Some("token-unused"));
    assert!(a.tick(token_done + 60_000_000).is_empty(), "emitted once");
    assert_eq!(a.findings().len(), 1);
}

#[test]
fn completion_order_is_what_live_sees() {
    // A long GET stream that started early completes last; pushing in completion order must
    // give the same result as the offline sort.
    let s = crate::healthy::session(crate::healthy::Healthy::default());
    let mut order: Vec<_> = s.flows.iter().collect();
    order.sort_by_key(|f| f.timings.finished);
    let mut a = Analyzer::default();
    for f in order {
        a.push(f);
    }
    let live = a.finish();
    assert!(live.findings.is_empty(), "{:#?}", live.findings);
    assert_eq!(live, analyze(&s.flows));
}

#[test]
fn other_traffic_is_counted_not_listed_when_asked_and_findings_do_not_change() {
    let mut s = Scenario::new();
    dance(&mut s);
    let cdn =
        s.add(FlowBuilder::get("https://cdn.example/app.js").resp_body("text/javascript", "x")); // #6
    s.add(init_401()); // #7: the token is not sent
    let last = s.add(FlowBuilder::get("https://cdn.example/style.css").resp_body("text/css", "y")); // #8

    let mut a = Analyzer::new(Options {
        keep_other_flows: false,
        ..Options::default()
    });
    for f in &s.flows {
        a.push(f);
        // The flow just pushed can always be looked up (live views classify it at once).
        assert_eq!(a.summary(f.id).map(|x| x.id), Some(f.id));
    }
    assert!(
        a.summary(cdn).is_none(),
        "an older unlisted flow is not kept"
    );
    let live = a.finish();
    let full = analyze(&s.flows);
    assert_eq!(live.findings, full.findings);
    assert_eq!(live.environment.unlisted_flows, 2);
    assert_eq!(full.environment.unlisted_flows, 0);
    let listed: Vec<u64> = live.flows.iter().map(|f| f.id.0).collect();
    assert_eq!(listed, vec![1, 2, 3, 4, 5, 7]);
    assert_eq!(full.flows.len(), 8);
    assert!(full.flows.iter().any(|f| f.id == last));
    // The text report still counts every flow.
    assert!(mcptap_analyze::render_text(&live).starts_with("mcptap analysis: 8 flow(s)"));
}

#[test]
fn mcp_flows_past_the_live_bound_are_counted_and_findings_do_not_change() {
    let mut s = Scenario::new();
    dance(&mut s);
    for _ in 6..=9 {
        s.add(init_401()); // #6..#9: the token is never sent
    }
    let mut a = Analyzer::new(Options {
        keep_other_flows: false,
        max_listed_mcp_flows: Some(2),
        ..Options::default()
    });
    for f in &s.flows {
        a.push(f);
        assert_eq!(a.summary(f.id).map(|x| x.id), Some(f.id));
    }
    let live = a.finish();
    let full = analyze(&s.flows);
    assert_eq!(live.findings, full.findings);
    // The finding still cites the flows past the bound.
    let evidence: Vec<u64> = the(&live, "token-not-sent")
        .evidence
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(evidence, vec![5, 6, 7, 8, 9]);
    // The first two MCP flows (#1, the first 401, and #6) and every OAuth flow are listed.
    let listed: Vec<u64> = live.flows.iter().map(|f| f.id.0).collect();
    assert_eq!(listed, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(live.environment.unlisted_mcp_flows, 3);
    assert_eq!(full.environment.unlisted_mcp_flows, 0);
    let text = mcptap_analyze::render_text(&live);
    assert!(text.starts_with("mcptap analysis: 9 flow(s)"), "{text}");
    assert!(text.contains("3 more MCP flow(s) not shown"), "{text}");
}
