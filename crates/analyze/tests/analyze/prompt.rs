//! Promptness (failure-modes.md, "Promptness"): a finding appears as soon as the evidence
//! makes it likely, live and offline alike; a later recovery amends it and never erases it; a
//! capture that ends while a decision waits is decided on the evidence at hand.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::{analyze, Analyzer, Culprit, Options, Severity, Status};

/// The dance, then the token used by an initialize (#6) and a tools/list (#7).
fn used(s: &mut Scenario) {
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", Some("rt-1"))); // #5
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(tools_list_ok("tok-1", "s1", 2)); // #7
}

#[test]
fn a_bare_request_while_a_used_token_is_valid_is_token_not_sent_the_moment_it_is_answered() {
    let mut s = Scenario::new();
    used(&mut s);
    s.wait(5_000);
    let bare = s.add(init_401()); // #8: the stored token was blanked; Claude Code goes bare
    let mut a = Analyzer::new(Options::default());
    let mut when = None;
    for f in &s.flows {
        let found = a.push(f);
        if let Some(tns) = found.iter().find(|x| x.id == "token-not-sent") {
            when = Some((f.id, tns.clone()));
        }
    }
    let (at, f) = when.expect("token-not-sent was announced");
    assert_eq!(at, bare, "announced by the bare request's own answer");
    assert_eq!(f.status, Status::Confirmed);
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.culprit, Culprit::Client);
    assert_eq!(f.subcase, Some("after-restart"));
    assert!(f.summary.contains("valid for"), "{f:#?}");
    // The capture ends 0.4 s later (the user closed the client when it said "Needs
    // authentication"): nothing waits, nothing changes, and offline agrees.
    let end = s.flows.last().unwrap().timings.finished.unwrap() + 400_000;
    let live = a.finish_at(end);
    assert_eq!(live.counted().count(), 1, "{:#?}", live.findings);
    assert_eq!(live.environment.capture_ended, Some(end));
    let offline = mcptap_analyze::analyze_ended(&s.flows, Some(end), Options::default());
    assert_eq!(live.findings, offline.findings);
}

#[test]
fn a_bare_request_after_the_token_was_refused_expired_or_revoked_is_not_token_not_sent() {
    // Refused: the server said 401 to the token itself; the client is right to drop it.
    let mut s = Scenario::new();
    used(&mut s);
    s.add(call("tok-1", "s1", "tools/call", 3).status(401)); // #8
    s.add(init_401()); // #9
    let r = analyze(&s.flows);
    absent(&r, "token-not-sent");
    assert!(
        r.stories[0].tokens[0].uses == 3,
        "the rule saw the token's uses"
    );

    // Expired: 60 s token, bare request 70 s later.
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(token_code(AS, "c").status(200).resp_json(
        serde_json::json!({"access_token":"tok-1","token_type":"Bearer","expires_in":60}),
    )); // #5
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.wait(70_000);
    s.add(init_401()); // #7
    absent(&analyze(&s.flows), "token-not-sent");

    // Revoked (RFC 7009), then a bare request: the client logged out.
    let mut s = Scenario::new();
    used(&mut s);
    s.add(
        FlowBuilder::post(&format!("{AS}/revoke"))
            .form(&[("token", "tok-1"), ("token_type_hint", "access_token")])
            .status(200),
    ); // #8
    s.add(init_401()); // #9
    absent(&analyze(&s.flows), "token-not-sent");
}

#[test]
fn a_recovery_by_refresh_lowers_the_finding_and_says_how() {
    let mut s = Scenario::new();
    used(&mut s);
    s.add(init_401()); // #8 bare while tok-1 is valid
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2"))); // #9
    s.add(init_ok("tok-2", Some("s2"))); // #10
    let mut a = Analyzer::default();
    let mut announced = Vec::new();
    for f in &s.flows {
        for x in a.push(f) {
            announced.push((f.id.0, x.id.as_str(), x.severity));
        }
    }
    // Announced at #8 as critical, announced again at #9 lowered, never withdrawn.
    assert_eq!(
        announced,
        vec![
            (8, "token-not-sent", Severity::Critical),
            (9, "token-not-sent", Severity::Medium)
        ]
    );
    let r = a.finish();
    let f = the(&r, "token-not-sent");
    assert_eq!(f.status, Status::Confirmed);
    assert!(
        f.amendments
            .iter()
            .any(|x| x.contains("refreshed at #9") && x.contains("still valid")),
        "{f:#?}"
    );
}

#[test]
fn an_expired_token_refused_as_the_capture_ends_is_decided_with_the_time_left() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(token_code(AS, "c").status(200).resp_json(serde_json::json!({"access_token":"tok-1","token_type":"Bearer","expires_in":60,"refresh_token":"rt-1"}))); // #5
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.wait(70_000);
    s.add(call("tok-1", "s1", "tools/call", 2).status(401)); // #7: the client exits now
    let end = s.flows.last().unwrap().timings.finished.unwrap() + 300_000;
    let r = mcptap_analyze::analyze_ended(&s.flows, Some(end), Options::default());
    check(
        &r,
        "stale-token-sent",
        Culprit::Client,
        &[5, 7],
        Some("expired-not-refreshed"),
    );
    let f = the(&r, "stale-token-sent");
    assert_eq!(f.status, Status::Confirmed);
    assert!(f.summary.contains("capture ended 0.3 s later"), "{f:#?}");
    // Without the capture's end (a HAR from another tool), the last flow is the end.
    let r = analyze(&s.flows);
    assert_eq!(the(&r, "stale-token-sent").status, Status::Confirmed);
}

#[test]
fn a_suspicion_shows_live_then_is_confirmed_or_cleared_and_offline_agrees() {
    // The code came back to the client (callback seen) and it never exchanged it.
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS)); // #4
    let mut a = Analyzer::default();
    for f in &s.flows {
        a.push(f);
    }
    let t0 = s.flows[3].timings.finished.unwrap();
    assert!(a.tick(t0 + 29_000_000).is_empty());
    let shown = a.tick(t0 + 31_000_000);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_eq!(shown[0].id, "token-exchange-missing");
    assert_eq!(shown[0].status, Status::Suspected);
    assert!(shown[0]
        .decides
        .as_deref()
        .unwrap()
        .contains("token request"));
    // The capture ends at 40 s: not decided, it stays a suspicion that says so.
    let live = a.finish_at(t0 + 40_000_000);
    let f = the(&live, "token-exchange-missing");
    assert_eq!(f.status, Status::Suspected);
    assert!(
        f.amendments.iter().any(|x| x.contains("capture ended")),
        "{f:#?}"
    );
    let offline =
        mcptap_analyze::analyze_ended(&s.flows, Some(t0 + 40_000_000), Options::default());
    assert_eq!(live.findings, offline.findings);
}

#[test]
fn a_bare_probe_then_the_same_token_again_is_lowered_and_owes_no_session_headers() {
    // mcp-remote restarted with its stored token: the new process first probes with a bare GET
    // (no session, no protocol version: it has not initialized yet), then connects with the
    // same token, without a new login.
    let mut s = Scenario::new();
    used(&mut s); // #6 initialize (session s1), #7 tools/list
    s.add(
        FlowBuilder::get(RS_MCP)
            .header("accept", "text/event-stream")
            .challenge(&format!(r#"Bearer resource_metadata="{PRM_URL}""#)),
    ); // #8
    s.add(init_ok("tok-1", Some("s2"))); // #9: the same token, a new session
    let r = analyze(&s.flows);
    let f = the(&r, "token-not-sent");
    assert_eq!(f.severity, Severity::Low, "{f:#?}");
    assert!(
        f.amendments
            .iter()
            .any(|a| a.contains("again at #9") && a.contains("probe")),
        "{f:#?}"
    );
    absent(&r, "transport-header-violation");

    // Near miss: an authenticated request that drops the session header is still judged.
    let mut s = Scenario::new();
    used(&mut s);
    s.add(call("tok-1", "s1", "tools/call", 3).no_header("mcp-session-id")); // #8
    let r = analyze(&s.flows);
    let f = the(&r, "transport-header-violation");
    assert_eq!(f.subcase, Some("session-id-missing"));
}
