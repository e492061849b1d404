//! 100k flows: linear time, also in debug builds.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::analyze;
use std::time::Instant;

#[test]
fn a_hundred_thousand_flows_in_linear_time() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", Some("rt-1")));
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
