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
fn a_live_analyzer_that_lists_no_flows_counts_them_and_decides_the_same() {
    let mut s = Scenario::new();
    dance(&mut s);
    let cdn =
        s.add(FlowBuilder::get("https://cdn.example/app.js").resp_body("text/javascript", "x")); // #6
                                                                                                 // Other traffic the server answered: the evidence that it is up, which the live analyzer
                                                                                                 // must see although it lists no flow.
    let health =
        s.add(FlowBuilder::get("https://rs.example/healthz").resp_body("text/plain", "ok")); // #7
    s.add(init_401()); // #8: the token is not sent
    s.add(init_401()); // #9
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok-1")
            .header("origin", "https://app.example")
            .rpc("initialize", 1)
            .status(403)
            .resp_body("text/plain", "Invalid Origin header"),
    ); // #10
    s.add(FlowBuilder::get("https://cdn.example/style.css").resp_body("text/css", "y")); // #11

    let mut a = Analyzer::new(Options {
        list_flows: false,
        ..Options::default()
    });
    for f in &s.flows {
        a.push(f);
        // The flow just pushed can always be looked up (live views classify it at once).
        assert_eq!(a.summary(f.id).map(|x| x.id), Some(f.id));
    }
    assert!(a.summary(cdn).is_none(), "an older flow is not kept");
    let live = a.finish();
    let full = analyze(&s.flows);
    assert_eq!(live.findings, full.findings);
    assert_eq!(
        the(&live, "token-not-sent")
            .evidence
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        vec![5, 8, 9]
    );
    let guard = the(&live, "host-origin-rejected");
    assert!(guard.evidence.contains(&health), "{guard:#?}");
    assert!(guard.summary.contains("healthz"), "{guard:#?}");
    assert!(live.flows.is_empty());
    assert_eq!(full.flows.len(), 11);
    // Counted instead: the MCP flows (#1, #8, #9, #10) apart from the rest.
    assert_eq!(live.environment.unlisted_mcp_flows, 4);
    assert_eq!(live.environment.unlisted_flows, 7);
    assert_eq!(full.environment.unlisted_flows, 0);
    // The text report still counts every flow.
    let text = mcptap_analyze::render_text(&live);
    assert!(text.starts_with("mcptap analysis: 11 flow(s)"), "{text}");
}
