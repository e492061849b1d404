//! 100k flows: linear time, also in debug builds.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::analyze;
use std::time::Instant;

/// Discovery, registration and a token (`tok-1`): flows #1-#5.
fn dance(s: &mut Scenario) {
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", Some("rt-1")));
}

#[test]
fn a_hundred_thousand_flows_in_linear_time() {
    let mut s = Scenario::new();
    dance(&mut s);
    s.add(init_ok("tok-1", Some("s1")));
    let call = call("tok-1", "s1", "tools/call", 7);
    while s.flows.len() < 100_000 {
        s.add(call.clone().dur(1));
    }
    let started = Instant::now();
    let r = analyze(&s.flows);
    let took = started.elapsed();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.flows.len(), 100_000);
    assert_eq!(r.stories[0].tokens[0].uses, 99_995);
    // Generous for unoptimised builds on a slow CI core; the release benchmark is the figure.
    assert!(took.as_secs() < 20, "analysing 100k flows took {took:?}");
    eprintln!("100k flows analysed in {took:?}");
}

/// A client that opens a session per request: the analyzer forgets idle sessions (it keeps
/// the few thousand used last) rather than grow with the traffic, and a long-lived session in
/// use is still judged.
#[test]
fn a_session_per_request_does_not_grow_the_analyzer_and_a_live_session_is_still_judged() {
    let mut s = Scenario::new();
    dance(&mut s);
    let long = s.add(init_ok("tok-1", Some("s-long"))); // #6
    let idle = s.add(init_ok("tok-1", Some("s-idle"))); // #7, never used again until the end
    for i in 0..12_000 {
        let session = format!("s-{i}");
        s.add(init_ok("tok-1", Some(&session)).dur(1));
        s.add(call("tok-1", &session, "tools/call", 2).dur(1));
        if i % 500 == 0 {
            s.add(call("tok-1", "s-long", "tools/call", 3).dur(1));
        }
    }
    // The server forgets both sessions and says so with 400 instead of 404.
    let unknown = |session: &str| {
        call("tok-1", session, "tools/call", 4)
            .status(400)
            .resp_body("text/plain", "Bad Request: no valid session ID provided")
    };
    let refused = s.add(unknown("s-long"));
    s.add(unknown("s-idle"));
    let r = analyze(&s.flows);
    let f = the(&r, "session-404-mishandled");
    // The session in use was remembered from its start...
    assert_eq!(f.evidence, vec![long, refused], "{f:#?}");
    // ...the idle one was forgotten (only a session known to be valid is judged), which shows
    // the clean-up ran.
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert!(!f.evidence.contains(&idle));
}

/// Room made for the flow list at once (as offline analysis makes it, for the most flows a
/// file can hold) changes nothing in the report, nor does room that cannot be had; flows
/// pushed out of start order are still listed by start.
#[test]
fn room_made_for_the_flow_list_changes_nothing() {
    let mut s = Scenario::new();
    dance(&mut s);
    s.add(init_ok("tok-1", Some("s1")));
    let base = s.clock_ms;
    for i in 0..50 {
        // Calls that overlap: completion order is not start order.
        s.at(base + i);
        s.add(call("tok-1", "s1", "tools/call", 10 + i).dur(if i % 2 == 0 { 30 } else { 1 }));
    }
    let want = serde_json::to_value(analyze(&s.flows)).unwrap();
    for room in [0, 3, 1000, usize::MAX] {
        let mut ordered = mcptap_analyze::Ordered::new(mcptap_analyze::Options::default());
        ordered.reserve_flows(room);
        let mut by_end: Vec<_> = s.flows.iter().collect();
        by_end.sort_by_key(|f| (mcptap_analyze::completed_at(f), f.id));
        assert!(!by_end.is_sorted_by_key(|f| f.timings.started));
        for f in by_end {
            ordered.push(f.clone(), mcptap_analyze::completed_at(f));
        }
        let got = serde_json::to_value(ordered.finish(None).unwrap()).unwrap();
        assert_eq!(got, want, "room for {room}");
    }
    let starts: Vec<_> = want["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["started"].as_i64().unwrap())
        .collect();
    assert!(starts.is_sorted());
}
