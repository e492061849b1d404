//! One positive and at least one near-miss negative per finding, asserting id, culprit, sub-case
//! and the exact evidence flow ids. Flow ids are the order of `s.add` calls (#1, #2, …).

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::{analyze, Culprit, Role, Severity, Status};
use mcptap_flow::{ErrorKind, FlowId};
use serde_json::json;

/// #1 401, #2 PRM, #3 AS metadata, #4 registration, #5 token (`tok`, refresh `rt-1`).
fn oauth(s: &mut Scenario, tok: &str) -> FlowId {
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), tok, Some("rt-1")))
}

fn unrelated() -> FlowBuilder {
    FlowBuilder::get("https://cdn.example/app.js")
        .status(200)
        .resp_body("text/javascript", "x")
}

// ---------------------------------------------------------------- 1 token-not-sent

#[test]
fn token_not_sent_never_sent() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_401()); // #6 bare, 401
    s.add(init_401()); // #7 again: a 401 loop without header
    let r = analyze(&s.flows);
    check(
        &r,
        "token-not-sent",
        Culprit::Client,
        &[5, 6, 7],
        Some("never-sent"),
    );
    let f = the(&r, "token-not-sent");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.details.iter().any(|d| d.contains("401 loop")), "{f:#?}");
}

#[test]
fn token_not_sent_near_miss_bare_request_to_another_server() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None));
    // An auth-less server elsewhere gets no token: correct.
    s.add(FlowBuilder::post("https://other.example/mcp").rpc("initialize", 1).status(200).result(1, json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"o","version":"1"}})));
    s.add(
        FlowBuilder::post("https://other.example/mcp")
            .rpc("tools/list", 2)
            .status(200)
            .result(2, json!({"tools":[]})),
    );
    absent(&analyze(&s.flows), "token-not-sent");
}

#[test]
fn token_not_sent_token_unused() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.wait(40_000);
    s.add(unrelated()); // #6: time has passed, nothing reached the MCP endpoint
    let r = analyze(&s.flows);
    check(
        &r,
        "token-not-sent",
        Culprit::Client,
        &[5],
        Some("token-unused"),
    );
    assert!(the(&r, "token-not-sent").summary.contains("never used"));
}

#[test]
fn token_unused_near_miss_capture_too_short_or_token_used() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.wait(3_000);
    s.add(unrelated());
    let r = analyze(&s.flows);
    absent(&r, "token-not-sent");
    assert!(
        r.visibility.notes.iter().any(|n| n.contains("too early")),
        "{:?}",
        r.visibility.notes
    );

    // Ten seconds unused is suspicious: shown as suspected, not decided, saying why.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.wait(10_000);
    s.add(unrelated());
    let r = analyze(&s.flows);
    let f = the(&r, "token-not-sent");
    assert_eq!(f.status, Status::Suspected, "{f:#?}");
    assert_eq!(f.subcase, Some("token-unused"));
    assert!(
        f.decides.as_deref().unwrap().contains("--inject-token"),
        "{f:#?}"
    );
    assert!(
        f.amendments.iter().any(|a| a.contains("too early")),
        "{f:#?}"
    );
    assert!(!r.fails(Severity::Critical) && r.fails(Severity::High));

    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None));
    s.wait(60_000);
    s.add(unrelated());
    absent(&analyze(&s.flows), "token-not-sent");
}

#[test]
fn token_not_sent_some_methods_only() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(
        FlowBuilder::get(RS_MCP)
            .session("s1")
            .pv("2025-06-18")
            .header("accept", "text/event-stream")
            .status(401)
            .resp_header("www-authenticate", "Bearer error=\"invalid_token\""),
    ); // #7
    check(
        &analyze(&s.flows),
        "token-not-sent",
        Culprit::Client,
        &[5, 7],
        Some("some-methods-only"),
    );
}

#[test]
fn some_methods_only_near_miss_stream_carries_the_token() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.add(
        FlowBuilder::get(RS_MCP)
            .bearer("tok-1")
            .session("s1")
            .pv("2025-06-18")
            .header("accept", "text/event-stream")
            .status(405),
    );
    absent(&analyze(&s.flows), "token-not-sent");
}

#[test]
fn token_not_sent_after_restart() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(tools_list_ok("tok-1", "s1", 2)); // #7
    s.wait(60_000);
    s.add(init_401()); // #8: new process, bare initialize, no new token follows
    s.wait(130_000);
    s.add(unrelated()); // #9
    check(
        &analyze(&s.flows),
        "token-not-sent",
        Culprit::Client,
        &[5, 8],
        Some("after-restart"),
    );
}

#[test]
fn after_restart_recovered_by_a_new_login_is_amended_not_erased() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.wait(60_000);
    s.add(init_401()); // #7: a new process starts bare while tok-1 is valid
    s.add(issued(token_code(AS, "code-2"), "tok-2", None)); // #8: a new dance follows
    s.add(init_ok("tok-2", Some("s2")));
    s.wait(130_000);
    s.add(unrelated());
    let r = analyze(&s.flows);
    check(
        &r,
        "token-not-sent",
        Culprit::Client,
        &[5, 7],
        Some("after-restart"),
    );
    let f = the(&r, "token-not-sent");
    assert_eq!(f.status, Status::Confirmed);
    assert_eq!(f.severity, Severity::High, "lowered from critical");
    assert!(
        f.amendments
            .iter()
            .any(|a| a.contains("a new login at #8") && a.contains("still valid")),
        "{f:#?}"
    );
}

#[test]
fn token_not_sent_after_expiry_guess() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(
        token_code(AS, "code-1")
            .status(200)
            .resp_json(json!({"access_token":"tok-1","token_type":"Bearer"})),
    ); // #5, no expires_in
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(call("tok-1", "s1", "tools/call", 2)); // #7
    s.wait(30_000);
    s.add(
        FlowBuilder::post(RS_MCP)
            .session("s1")
            .pv("2025-06-18")
            .rpc("tools/call", 3)
            .status(401)
            .resp_header(
                "www-authenticate",
                &format!("Bearer resource_metadata=\"{PRM_URL}\""),
            ),
    ); // #8
    s.wait(130_000);
    s.add(unrelated());
    check(
        &analyze(&s.flows),
        "token-not-sent",
        Culprit::Client,
        &[5, 8],
        Some("after-expiry-guess"),
    );
}

#[test]
fn expiry_guess_near_miss_token_really_expired() {
    // expires_in 60: after it passed, a bare request and a refresh are fine.
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(token_code(AS, "code-1").status(200).resp_json(json!({"access_token":"tok-1","token_type":"Bearer","expires_in":60,"refresh_token":"rt-1"})));
    s.add(init_ok("tok-1", Some("s1")));
    s.wait(70_000);
    s.add(
        FlowBuilder::post(RS_MCP)
            .session("s1")
            .pv("2025-06-18")
            .rpc("tools/call", 3)
            .status(401)
            .resp_header(
                "www-authenticate",
                &format!("Bearer resource_metadata=\"{PRM_URL}\""),
            ),
    );
    s.wait(130_000);
    s.add(unrelated());
    absent(&analyze(&s.flows), "token-not-sent");
}

// ---------------------------------------------------------------- 2 edge-blocked

#[test]
fn edge_blocked() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(
        init_ok("tok-1", None)
            .status(403)
            .resp_body(
                "text/html",
                "<!DOCTYPE html><title>Just a moment...</title>",
            )
            .resp_header("server", "cloudflare")
            .resp_header("cf-ray", "8a1b2c3d4e5f-AMS"),
    ); // #6
    let r = analyze(&s.flows);
    check(&r, "edge-blocked", Culprit::Edge, &[6], None);
    absent(&r, "fresh-token-rejected");
}

#[test]
fn edge_blocked_near_miss_scope_refusal_behind_cloudflare() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(
        init_ok("tok-1", None)
            .status(403)
            .resp_header("cf-ray", "8a1b2c3d4e5f-AMS")
            .resp_header(
                "www-authenticate",
                r#"Bearer error="insufficient_scope", scope="mcp admin""#,
            )
            .resp_json(json!({"error":"insufficient_scope"})),
    );
    absent(&analyze(&s.flows), "edge-blocked");
}

// ---------------------------------------------------------------- 3 fresh-token-rejected

#[test]
fn fresh_token_rejected_with_wrong_audience() {
    let tok =
        jwt(json!({"iss": AS, "aud": "https://api.other.example", "exp": BASE / 1_000_000 + 3600}));
    let mut s = Scenario::new();
    oauth(&mut s, &tok);
    s.add(init_ok(&tok, None).status(401).resp_header(
        "www-authenticate",
        r#"Bearer error="invalid_token", error_description="audience mismatch""#,
    )); // #6
    let r = analyze(&s.flows);
    check(&r, "fresh-token-rejected", Culprit::Server, &[5, 6], None);
    let f = the(&r, "fresh-token-rejected");
    assert!(f.details.iter().any(|d| d.contains("JWT aud")), "{f:#?}");
    assert!(
        f.details.iter().any(|d| d.contains("audience mismatch")),
        "{f:#?}"
    );
}

#[test]
fn fresh_token_rejected_near_miss_refused_only_after_expiry() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(token_code(AS, "c").status(200).resp_json(json!({"access_token":"tok-1","token_type":"Bearer","expires_in":60,"refresh_token":"rt-1"})));
    s.add(init_ok("tok-1", Some("s1")));
    s.wait(70_000);
    s.add(call("tok-1", "s1", "tools/call", 2).status(401));
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")));
    s.add(call("tok-2", "s1", "tools/call", 3));
    let r = analyze(&s.flows);
    absent(&r, "fresh-token-rejected");
    absent(&r, "stale-token-sent"); // the reactive refresh is healthy
}

// ---------------------------------------------------------------- 4 stale-token-sent

#[test]
fn stale_token_sent_superseded() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.wait(600_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2"))); // #7
    s.wait(5_000);
    s.add(call("tok-1", "s1", "tools/call", 2).status(401)); // #8
    check(
        &analyze(&s.flows),
        "stale-token-sent",
        Culprit::Client,
        &[5, 7, 8],
        Some("superseded"),
    );
}

#[test]
fn stale_token_near_miss_in_flight_when_refreshed() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.wait(600_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")));
    s.add(call("tok-1", "s1", "tools/call", 2).status(401)); // within the grace period
    s.add(call("tok-2", "s1", "tools/call", 3));
    absent(&analyze(&s.flows), "stale-token-sent");
}

#[test]
fn stale_token_expired_and_not_refreshed() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(token_code(AS, "c").status(200).resp_json(json!({"access_token":"tok-1","token_type":"Bearer","expires_in":60,"refresh_token":"rt-1"}))); // #5
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.wait(70_000);
    s.add(call("tok-1", "s1", "tools/call", 2).status(401)); // #7
    s.wait(130_000);
    s.add(unrelated());
    check(
        &analyze(&s.flows),
        "stale-token-sent",
        Culprit::Client,
        &[5, 7],
        Some("expired-not-refreshed"),
    );
}

// ---------------------------------------------------------------- 5 redirect-drops-auth

#[test]
fn redirect_drops_auth_on_trailing_slash_redirect() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(
        init_ok("tok-1", None)
            .status(307)
            .resp_header("location", "/mcp/"),
    ); // #6
    s.add(
        FlowBuilder::post("https://rs.example/mcp/")
            .rpc("initialize", 1)
            .status(401)
            .resp_header(
                "www-authenticate",
                &format!("Bearer resource_metadata=\"{PRM_URL}\""),
            ),
    ); // #7
    check(
        &analyze(&s.flows),
        "redirect-drops-auth",
        Culprit::Server,
        &[6, 7],
        Some("auth-dropped"),
    );
}

#[test]
fn redirect_to_http_is_flagged_at_once() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 1)
            .status(301)
            .resp_header("location", "http://rs.example/mcp"),
    );
    check(
        &analyze(&s.flows),
        "redirect-drops-auth",
        Culprit::Server,
        &[1],
        Some("https-to-http"),
    );
}

#[test]
fn redirect_near_miss_authorize_redirect_and_auth_kept() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(authorize(AS, "code-2")); // a 302 to the loopback callback is the normal flow
    s.add(
        init_ok("tok-1", None)
            .status(308)
            .resp_header("location", "/mcp/"),
    );
    s.add(FlowBuilder::post("https://rs.example/mcp/").bearer("tok-1").rpc("initialize", 1).status(200).result(1, json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}})));
    absent(&analyze(&s.flows), "redirect-drops-auth");
}

// ---------------------------------------------------------------- 6 challenge-missing

#[test]
fn challenge_missing_header() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .status(401)
            .resp_json(json!({"error":"unauthorized"})),
    );
    let r = analyze(&s.flows);
    check(
        &r,
        "challenge-missing",
        Culprit::Server,
        &[1],
        Some("no-header"),
    );
    assert_eq!(the(&r, "challenge-missing").severity, Severity::High);
}

#[test]
fn challenge_without_resource_metadata_is_low_when_the_fallback_works() {
    let mut s = Scenario::new();
    s.add(init_401().no_header("x").status(401));
    s.flows[0]
        .response
        .as_mut()
        .unwrap()
        .headers
        .retain(|h| h.name != "www-authenticate");
    s.flows[0]
        .response
        .as_mut()
        .unwrap()
        .headers
        .push("www-authenticate", r#"Bearer realm="mcp""#);
    s.add(prm(RS_MCP, AS));
    let r = analyze(&s.flows);
    check(
        &r,
        "challenge-missing",
        Culprit::Server,
        &[1],
        Some("no-resource-metadata"),
    );
    assert_eq!(the(&r, "challenge-missing").severity, Severity::Low);
}

#[test]
fn challenge_missing_near_miss_proper_challenge_and_token_errors() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    // A refused token may omit resource_metadata: only the discovery 401 needs it.
    s.add(
        init_ok("tok-1", None)
            .status(401)
            .resp_header("www-authenticate", r#"Bearer error="invalid_token""#),
    );
    absent(&analyze(&s.flows), "challenge-missing");
}

// ---------------------------------------------------------------- 7 prm-unavailable

#[test]
fn prm_unavailable_everywhere() {
    let mut s = Scenario::new();
    s.add(init_401()); // #1 advertises PRM_URL
    s.add(
        FlowBuilder::get(PRM_URL)
            .status(404)
            .resp_body("text/plain", "Not Found"),
    ); // #2
    s.add(FlowBuilder::get(&format!("{RS}/.well-known/oauth-protected-resource")).status(404)); // #3
    s.add(FlowBuilder::get(&format!("{RS}/.well-known/oauth-authorization-server")).status(404)); // #4: moved on
    s.add(
        FlowBuilder::post(&format!("{RS}/register"))
            .json(json!({"redirect_uris":[REDIRECT]}))
            .status(404),
    ); // #5
    check(
        &analyze(&s.flows),
        "prm-unavailable",
        Culprit::Server,
        &[2, 3],
        Some("not-found"),
    );
}

#[test]
fn prm_incomplete() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(
        FlowBuilder::get(PRM_URL)
            .status(200)
            .resp_json(json!({"resource": RS_MCP})),
    );
    check(
        &analyze(&s.flows),
        "prm-unavailable",
        Culprit::Server,
        &[2],
        Some("incomplete"),
    );
}

#[test]
fn prm_unavailable_near_miss_unprotected_server_probed() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::get(PRM_URL).status(404));
    s.add(FlowBuilder::get(&format!("{RS}/.well-known/oauth-protected-resource")).status(404));
    s.add(FlowBuilder::post(RS_MCP).rpc("initialize", 1).status(200).result(1, json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}})));
    s.wait(200_000);
    s.add(unrelated());
    absent(&analyze(&s.flows), "prm-unavailable");
}

// ---------------------------------------------------------------- 8 metadata-not-json

#[test]
fn metadata_not_json() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::get(PRM_URL).status(200).resp_body(
        "text/html; charset=utf-8",
        "<!doctype html><div id=root></div>",
    ));
    check(
        &analyze(&s.flows),
        "metadata-not-json",
        Culprit::Server,
        &[1],
        None,
    );
}

#[test]
fn metadata_not_json_near_miss_html_404() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::get(PRM_URL)
            .status(404)
            .resp_body("text/html", "<h1>Not found</h1>"),
    );
    absent(&analyze(&s.flows), "metadata-not-json");
}

// ---------------------------------------------------------------- 9 prm-resource-mismatch

#[test]
fn prm_resource_mismatch_behind_a_tunnel() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm("http://localhost:8000/mcp", AS));
    check(
        &analyze(&s.flows),
        "prm-resource-mismatch",
        Culprit::Server,
        &[2],
        None,
    );
}

#[test]
fn prm_resource_mismatch_reached_through_a_cross_origin_redirect_is_folded_into_the_redirect() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 1)
            .status(307)
            .resp_header("location", "https://edge.example/mcp"),
    ); // #1: the MCP endpoint redirects to another origin
    s.add(
        FlowBuilder::post("https://edge.example/mcp")
            .rpc("initialize", 1)
            .status(401)
            .resp_header(
                "www-authenticate",
                "Bearer resource_metadata=\"https://edge.example/.well-known/oauth-protected-resource/mcp\"",
            ),
    ); // #2
    s.add(
        FlowBuilder::get("https://edge.example/.well-known/oauth-protected-resource/mcp")
            .status(200)
            .resp_json(json!({"resource": RS_MCP, "authorization_servers": [AS]})),
    ); // #3: names the original endpoint, not the one reached
    let r = analyze(&s.flows);
    absent(&r, "prm-resource-mismatch");
    check(
        &r,
        "redirect-drops-auth",
        Culprit::Server,
        &[1, 3],
        Some("cross-origin"),
    );
    assert!(
        the(&r, "redirect-drops-auth")
            .details
            .iter()
            .any(|d| d.starts_with("consequence: ") && d.contains("#3")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn prm_resource_near_miss_origin_is_a_prefix() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS, AS));
    absent(&analyze(&s.flows), "prm-resource-mismatch");
}

// ---------------------------------------------------------------- 10 as-discovery-failed

const TENANT: &str = "https://auth.example/tenant1";

#[test]
fn as_discovery_failed_for_path_issuer() {
    let mut s = Scenario::new();
    s.add(init_401()); // #1
    s.add(prm(RS_MCP, TENANT)); // #2
    s.add(
        FlowBuilder::get("https://auth.example/.well-known/oauth-authorization-server/tenant1")
            .status(404),
    ); // #3
    s.add(
        FlowBuilder::get("https://auth.example/.well-known/openid-configuration/tenant1")
            .status(404),
    ); // #4
    s.add(
        FlowBuilder::get("https://auth.example/tenant1/.well-known/openid-configuration")
            .status(404),
    ); // #5
    s.add(
        FlowBuilder::post(&format!("{RS}/register"))
            .json(json!({"redirect_uris":[REDIRECT]}))
            .status(404),
    ); // #6
    check(
        &analyze(&s.flows),
        "as-discovery-failed",
        Culprit::Server,
        &[3, 4, 5],
        Some("not-found"),
    );
}

#[test]
fn as_discovery_issuer_mismatch() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, TENANT));
    s.add(
        FlowBuilder::get("https://auth.example/.well-known/oauth-authorization-server/tenant1")
            .status(200)
            .resp_json(as_doc(AS)),
    );
    check(
        &analyze(&s.flows),
        "as-discovery-failed",
        Culprit::Server,
        &[3],
        Some("issuer-mismatch"),
    );
}

#[test]
fn as_discovery_near_miss_second_url_works() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, TENANT));
    s.add(
        FlowBuilder::get("https://auth.example/.well-known/oauth-authorization-server/tenant1")
            .status(404),
    );
    s.add(
        FlowBuilder::get("https://auth.example/.well-known/openid-configuration/tenant1")
            .status(200)
            .resp_json(as_doc(TENANT)),
    );
    s.add(register(TENANT));
    s.add(issued(token_code(TENANT, "c"), "tok-1", None));
    s.add(init_ok("tok-1", None));
    absent(&analyze(&s.flows), "as-discovery-failed");
}

// ---------------------------------------------------------------- 11 as-metadata-incomplete

#[test]
fn as_metadata_without_s256() {
    let mut doc = as_doc(AS);
    doc.as_object_mut()
        .unwrap()
        .remove("code_challenge_methods_supported");
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc),
    );
    let r = analyze(&s.flows);
    check(
        &r,
        "as-metadata-incomplete",
        Culprit::Server,
        &[3],
        Some("fields-missing"),
    );
    assert_eq!(the(&r, "as-metadata-incomplete").severity, Severity::High);
}

#[test]
fn as_metadata_without_any_registration_path() {
    let mut doc = as_doc(AS);
    doc.as_object_mut().unwrap().remove("registration_endpoint");
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc.clone()),
    );
    s.wait(130_000);
    s.add(unrelated());
    check(
        &analyze(&s.flows),
        "as-metadata-incomplete",
        Culprit::Unknown,
        &[3],
        Some("no-registration"),
    );

    // Near miss: a pre-registered client goes on to /authorize and /token.
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc),
    );
    s.add(authorize(AS, "c"));
    s.add(issued(token_code(AS, "c"), "tok-1", None));
    s.add(init_ok("tok-1", None));
    s.wait(130_000);
    s.add(unrelated());
    absent(&analyze(&s.flows), "as-metadata-incomplete");
}

// ---------------------------------------------------------------- 12 registration-failed

#[test]
fn registration_failed() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS).status(400).resp_json(
        json!({"error":"invalid_redirect_uri","error_description":"loopback not allowed"}),
    ));
    let r = analyze(&s.flows);
    // The refused redirect URI is loopback http, which the spec tells the AS to accept.
    check(
        &r,
        "registration-failed",
        Culprit::Server,
        &[4],
        Some("rejected"),
    );
    let f = the(&r, "registration-failed");
    assert!(f.details.iter().any(|d| d.contains("loopback not allowed")));
    assert!(f.details.iter().any(|d| d.contains("RFC 8252")), "{f:#?}");
}

#[test]
fn registration_failed_near_miss_culprit_unknown_says_what_would_tell() {
    // A refusal that does not name the redirect URI: the capture cannot tell who is wrong.
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(
        register(AS)
            .status(400)
            .resp_json(json!({"error":"invalid_client_metadata"})),
    );
    let r = analyze(&s.flows);
    check(
        &r,
        "registration-failed",
        Culprit::Unknown,
        &[4],
        Some("rejected"),
    );
    let f = the(&r, "registration-failed");
    assert!(
        f.details
            .iter()
            .any(|d| d.starts_with("culprit unknown: ") && d.contains("would tell")),
        "{f:#?}"
    );
}

#[test]
fn registration_404_at_guessed_path() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(&format!("{RS}/register"))
            .json(json!({"redirect_uris":[REDIRECT]}))
            .status(404),
    );
    check(
        &analyze(&s.flows),
        "registration-failed",
        Culprit::Server,
        &[1],
        Some("no-dcr"),
    );
}

#[test]
fn registration_near_miss_201_with_extra_fields() {
    let mut s = Scenario::new();
    s.add(register(AS).resp_json(json!({"client_id":"c","redirect_uris":[REDIRECT, "http://127.0.0.1:1/x"],"client_id_issued_at":1})));
    absent(&analyze(&s.flows), "registration-failed");
}

// ---------------------------------------------------------------- 13 redirect-uri-mismatch

#[test]
fn redirect_uri_mismatch_host_spelling() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-0");
    s.add(authorize_with(
        AS,
        "code-2",
        "http://localhost:33418/callback",
        &s256(VERIFIER),
        RS_MCP,
    )); // #6
    check(
        &analyze(&s.flows),
        "redirect-uri-mismatch",
        Culprit::Client,
        &[4, 6],
        Some("not-registered"),
    );
}

#[test]
fn redirect_uri_near_miss_loopback_port_change_accepted() {
    let mut s = Scenario::new();
    s.add(register(AS));
    s.add(authorize_with(
        AS,
        "code-2",
        "http://127.0.0.1:40000/callback",
        &s256(VERIFIER),
        RS_MCP,
    ));
    absent(&analyze(&s.flows), "redirect-uri-mismatch");
}

// ---------------------------------------------------------------- 14 resource-param-wrong

#[test]
fn resource_param_missing_at_token() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS)); // #2
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(issued(
        FlowBuilder::post(&format!("{AS}/token")).form(&[
            ("grant_type", "authorization_code"),
            ("code", "c"),
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("code_verifier", VERIFIER),
        ]),
        "tok-1",
        None,
    )); // #5
    check(
        &analyze(&s.flows),
        "resource-param-wrong",
        Culprit::Client,
        &[2, 5],
        Some("missing"),
    );
}

#[test]
fn resource_param_trailing_slash_on_authorize() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(authorize_with(
        AS,
        "c",
        REDIRECT,
        &s256(VERIFIER),
        "https://rs.example/mcp/",
    )); // #5
    let r = analyze(&s.flows);
    check(
        &r,
        "resource-param-wrong",
        Culprit::Client,
        &[2, 5],
        Some("differs"),
    );
    assert!(the(&r, "resource-param-wrong")
        .summary
        .contains("trailing slash"));
}

#[test]
fn resource_param_near_miss_legacy_server_without_prm() {
    // 2025-03-26: no protected-resource metadata, so no canonical resource to demand.
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::get(&format!("{RS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(as_doc(RS)),
    );
    s.add(register(RS));
    s.add(issued(
        FlowBuilder::post(&format!("{RS}/token")).form(&[
            ("grant_type", "authorization_code"),
            ("code", "c"),
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("code_verifier", VERIFIER),
        ]),
        "tok-1",
        None,
    ));
    s.add(init_ok("tok-1", None));
    absent(&analyze(&s.flows), "resource-param-wrong");
}

// ---------------------------------------------------------------- 15 pkce-mismatch

#[test]
fn pkce_verifier_does_not_match_challenge() {
    for redacted in [false, true] {
        let mut s = Scenario::new();
        let r = |b: FlowBuilder| if redacted { b.redacted() } else { b };
        s.add(r(init_401()));
        s.add(r(prm(RS_MCP, AS)));
        s.add(r(as_meta(AS)));
        s.add(r(register(AS)));
        let other = "another-verifier-0123456789-0123456789-0123456789";
        s.add(r(authorize_with(
            AS,
            "code-1",
            REDIRECT,
            &s256(other),
            RS_MCP,
        ))); // #5
        s.add(r(token_code(AS, "code-1").status(400).resp_json(
            json!({"error":"invalid_grant","error_description":"PKCE verification failed"}),
        ))); // #6
        check(
            &analyze(&s.flows),
            "pkce-mismatch",
            Culprit::Client,
            &[5, 6],
            Some("challenge-mismatch"),
        );
        // The engine's own redaction keeps what the check needs.
        let mut red = s.flows.clone();
        red.iter_mut().for_each(mcptap_flow::redact::redact_flow);
        check(
            &analyze(&red),
            "pkce-mismatch",
            Culprit::Client,
            &[5, 6],
            Some("challenge-mismatch"),
        );
    }
}

#[test]
fn pkce_missing_verifier_needs_no_browser() {
    let mut s = Scenario::new();
    s.add(register(AS));
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "c"),
                ("client_id", "client-1"),
            ])
            .status(400)
            .resp_json(json!({"error":"invalid_request"})),
    );
    check(
        &analyze(&s.flows),
        "pkce-mismatch",
        Culprit::Client,
        &[2],
        Some("no-verifier"),
    );
}

#[test]
fn pkce_near_miss_matching_verifier_redacted() {
    let mut s = Scenario::new();
    s.add(register(AS).redacted());
    s.add(authorize(AS, "code-1").redacted());
    s.add(issued(token_code(AS, "code-1"), "tok-1", None).redacted());
    let r = analyze(&s.flows);
    absent(&r, "pkce-mismatch");
}

// ---------------------------------------------------------------- 16 token-exchange-missing

#[test]
fn token_exchange_missing_after_code_returned() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS)); // #4
    s.add(authorize(AS, "code-1")); // #5 returned a code
    s.wait(130_000);
    s.add(unrelated());
    let r = analyze(&s.flows);
    check(
        &r,
        "token-exchange-missing",
        Culprit::Client,
        &[4, 5],
        Some("code-not-exchanged"),
    );
    absent(&r, "authorize-not-visible");
}

#[test]
fn token_exchange_near_miss_exchange_within_timeout() {
    let mut s = Scenario::new();
    s.add(register(AS));
    s.wait(90_000);
    s.add(issued(token_code(AS, "c"), "tok-1", None));
    s.add(init_ok("tok-1", None));
    s.wait(130_000);
    s.add(unrelated());
    // Suspected after 30 s without an exchange, cleared by the exchange at 90 s.
    cleared(&analyze(&s.flows), "token-exchange-missing");
}

// ---------------------------------------------------------------- 17 token-response-invalid

#[test]
fn token_response_error_in_200() {
    let mut s = Scenario::new();
    s.add(register(AS));
    s.add(token_code(AS, "c").status(200).resp_json(json!({"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."})));
    check(
        &analyze(&s.flows),
        "token-response-invalid",
        Culprit::Server,
        &[2],
        Some("error-in-200"),
    );
}

#[test]
fn token_response_html() {
    let mut s = Scenario::new();
    s.add(
        token_code(AS, "c")
            .status(200)
            .resp_body("text/html", "<html>login</html>"),
    );
    check(
        &analyze(&s.flows),
        "token-response-invalid",
        Culprit::Server,
        &[1],
        Some("html"),
    );
}

#[test]
fn token_response_near_miss_json_error_with_400() {
    let mut s = Scenario::new();
    s.add(
        token_code(AS, "c")
            .status(400)
            .resp_json(json!({"error":"invalid_grant"})),
    );
    absent(&analyze(&s.flows), "token-response-invalid");
}

// ---------------------------------------------------------------- 18 insufficient-scope-unhandled

fn scope_403(b: FlowBuilder) -> FlowBuilder {
    b.status(403).resp_header(
        "www-authenticate",
        &format!(
            r#"Bearer error="insufficient_scope", scope="mcp admin", resource_metadata="{PRM_URL}""#
        ),
    )
}

#[test]
fn insufficient_scope_no_reauth() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(scope_403(call("tok-1", "s1", "tools/call", 2))); // #7
    s.wait(130_000);
    s.add(unrelated());
    check(
        &analyze(&s.flows),
        "insufficient-scope-unhandled",
        Culprit::Client,
        &[7],
        Some("no-reauth"),
    );
}

#[test]
fn insufficient_scope_repeated() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    for id in 2..5 {
        s.add(scope_403(call("tok-1", "s1", "tools/call", id))); // #7 #8 #9
    }
    check(
        &analyze(&s.flows),
        "insufficient-scope-unhandled",
        Culprit::Client,
        &[7, 8, 9],
        Some("repeated"),
    );
}

#[test]
fn insufficient_scope_near_miss_step_up() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.add(scope_403(call("tok-1", "s1", "tools/call", 2)));
    s.add(FlowBuilder::get(&format!(
        "{AS}/authorize?response_type=code&client_id=client-1&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=s&scope=mcp%20admin&resource={}",
        enc(REDIRECT),
        s256(VERIFIER),
        enc(RS_MCP)
    )).status(302).resp_header("location", &format!("{REDIRECT}?code=code-2&state=s")));
    s.add(issued(token_code(AS, "code-2"), "tok-2", None));
    s.add(call("tok-2", "s1", "tools/call", 3));
    s.wait(130_000);
    s.add(unrelated());
    absent(&analyze(&s.flows), "insufficient-scope-unhandled");
}

// ---------------------------------------------------------------- 19 lazy-challenge

#[test]
fn lazy_challenge() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::post(RS_MCP).rpc("initialize", 1).status(200).result(1, json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}))); // #1
    s.add(
        FlowBuilder::post(RS_MCP)
            .pv("2025-06-18")
            .rpc("tools/list", 2)
            .status(200)
            .result(2, json!({"tools":[]})),
    ); // #2
    s.add(
        FlowBuilder::post(RS_MCP)
            .pv("2025-06-18")
            .rpc("tools/call", 3)
            .challenge(&format!("Bearer resource_metadata=\"{PRM_URL}\"")),
    ); // #3
    check(
        &analyze(&s.flows),
        "lazy-challenge",
        Culprit::Server,
        &[1, 3],
        Some("late-challenge"),
    );
}

#[test]
fn lazy_challenge_never_but_metadata_says_protected() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::get(PRM_URL)
            .status(200)
            .resp_json(json!({"resource":RS_MCP,"authorization_servers":[AS]})),
    ); // #1
    s.add(FlowBuilder::post(RS_MCP).rpc("initialize", 1).status(200).result(1, json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}))); // #2
    check(
        &analyze(&s.flows),
        "lazy-challenge",
        Culprit::Server,
        &[1, 2],
        Some("never-challenges"),
    );
}

#[test]
fn lazy_challenge_near_miss_challenge_at_initialize() {
    let s = crate::healthy::session(crate::healthy::Healthy::default());
    absent(&analyze(&s.flows), "lazy-challenge");
}

// ---------------------------------------------------------------- 20 refresh-broken

#[test]
fn refresh_broken_invalid_grant() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None));
    s.wait(3_000_000);
    s.add(
        token_refresh(AS, "rt-1")
            .status(400)
            .resp_json(json!({"error":"invalid_grant"})),
    ); // #7
       // rt-1 was issued in #5 by this server to this client: refused on its first use, the
       // server is at fault.
    check(
        &analyze(&s.flows),
        "refresh-broken",
        Culprit::Server,
        &[7],
        Some("refused-on-first-use"),
    );
}

#[test]
fn refresh_broken_invalid_grant_for_a_refresh_token_from_before_the_capture_is_unknown() {
    let mut s = Scenario::new();
    s.add(
        token_refresh(AS, "rt-old")
            .status(400)
            .resp_json(json!({"error":"invalid_grant"})),
    ); // #1
    let r = analyze(&s.flows);
    check(
        &r,
        "refresh-broken",
        Culprit::Unknown,
        &[1],
        Some("invalid-grant"),
    );
    assert!(the(&r, "refresh-broken").summary.contains("would tell"));
}

#[test]
fn refresh_broken_race_and_reuse_of_rotated_token() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None)); // #6
    s.wait(3_000_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2"))); // #7
    s.add(
        token_refresh(AS, "rt-1")
            .status(400)
            .resp_json(json!({"error":"invalid_grant"})),
    ); // #8 second process
    let r = analyze(&s.flows);
    check(
        &r,
        "refresh-broken",
        Culprit::Client,
        &[7, 8],
        Some("concurrent-refresh"),
    );
    check(
        &r,
        "refresh-broken",
        Culprit::Client,
        &[8],
        Some("reused-rotated"),
    );
}

#[test]
fn refresh_near_miss_mcptap_rotated_the_clients_refresh_token() {
    // The same wire as `refresh_broken_race_and_reuse_of_rotated_token`, but the first refresh
    // was mcptap's own (--inject-refresh): the client's refused reuse is mcptap's doing.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None)); // #6
    s.wait(3_000_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")).by_mcptap()); // #7
    s.add(
        token_refresh(AS, "rt-1")
            .status(400)
            .resp_json(json!({"error":"invalid_grant"})),
    ); // #8 the client, with the refresh token mcptap rotated
    let r = analyze(&s.flows);
    absent(&r, "refresh-broken");
    assert!(
        r.visibility
            .notes
            .iter()
            .any(|n| n.contains("Refresh #8 was refused") && n.contains("mcptap's own refresh #7")),
        "{:#?}",
        r.visibility.notes
    );
    let t = r.flows.iter().find(|f| f.id.0 == 7).unwrap();
    assert_eq!(t.by_mcptap.as_deref(), Some("inject-refresh"));
    assert!(mcptap_analyze::render_text(&r).contains("BY MCPTAP (inject-refresh) issues"));
}

#[test]
fn a_token_mcptap_refreshed_for_itself_is_never_unused_by_the_client() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None)); // #6
    s.wait(3_000_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")).by_mcptap()); // #7
    s.wait(120_000_000);
    s.add(FlowBuilder::get("https://cdn.example/later.js").resp_body("text/javascript", "x"));
    let r = analyze(&s.flows);
    absent(&r, "token-not-sent");
    // The near miss: the client's own refreshed token, unused for two minutes, is named.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None));
    s.wait(3_000_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")));
    s.wait(120_000_000);
    s.add(FlowBuilder::get("https://cdn.example/later.js").resp_body("text/javascript", "x"));
    assert!(analyze(&s.flows)
        .findings
        .iter()
        .any(|f| f.id == "token-not-sent" && f.subcase == Some("token-unused")));
}

#[test]
fn refresh_near_miss_rotation_done_right() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", None));
    s.wait(3_000_000);
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")));
    s.add(init_ok("tok-2", None));
    s.wait(3_000_000);
    s.add(issued(token_refresh(AS, "rt-2"), "tok-3", Some("rt-3")));
    s.add(init_ok("tok-3", None));
    absent(&analyze(&s.flows), "refresh-broken");
}

// ---------------------------------------------------------------- 21 session-404-mishandled

#[test]
fn session_reused_after_404() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(call("tok-1", "s1", "tools/call", 2).status(404)); // #7
    s.add(call("tok-1", "s1", "tools/call", 3).status(404)); // #8
    check(
        &analyze(&s.flows),
        "session-404-mishandled",
        Culprit::Client,
        &[7, 8],
        Some("session-reused"),
    );
}

#[test]
fn session_unknown_answered_400() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(call("tok-1", "s1", "tools/call", 2)); // #7
    s.add(call("tok-1", "s1", "tools/call", 3).status(400).resp_json(json!({"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}))); // #8
    check(
        &analyze(&s.flows),
        "session-404-mishandled",
        Culprit::Server,
        &[6, 8],
        Some("wrong-status"),
    );
}

#[test]
fn session_near_miss_reinitialize_after_404() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.add(call("tok-1", "s1", "tools/call", 2).status(404));
    s.add(init_ok("tok-1", Some("s2")));
    s.add(call("tok-1", "s2", "tools/call", 3));
    absent(&analyze(&s.flows), "session-404-mishandled");
}

// ---------------------------------------------------------------- 22 transport-header-violation

#[test]
fn transport_protocol_version_missing() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok-1")
            .session("s1")
            .rpc("tools/list", 2)
            .status(200)
            .result(2, json!({"tools":[]})),
    ); // #7
    check(
        &analyze(&s.flows),
        "transport-header-violation",
        Culprit::Client,
        &[7],
        Some("protocol-version-missing"),
    );
}

#[test]
fn transport_session_id_missing() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok-1")
            .pv("2025-06-18")
            .rpc("tools/list", 2)
            .status(400)
            .resp_body("text/plain", "Mcp-Session-Id header is required"),
    ); // #7
    check(
        &analyze(&s.flows),
        "transport-header-violation",
        Culprit::Client,
        &[6, 7],
        Some("session-id-missing"),
    );
}

#[test]
fn transport_accept_repeated_counts_every_flow_and_a_later_406_raises_it() {
    // A client that never sends Accept: one finding for all its requests (the first one's
    // text), every flow counted; the server refusing the fourth with 406 makes it medium.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    for (id, status) in [(2, 200), (3, 200), (4, 200), (5, 406)] {
        s.add(
            FlowBuilder::post(RS_MCP)
                .bearer("tok-1")
                .session("s1")
                .pv("2025-06-18")
                .rpc("tools/list", id)
                .no_header("accept")
                .status(status)
                .result(id, json!({"tools":[]})),
        ); // #7..#10
    }
    let r = analyze(&s.flows);
    check(
        &r,
        "transport-header-violation",
        Culprit::Client,
        &[7, 8, 9, 10],
        Some("accept-incomplete"),
    );
    let f = the(&r, "transport-header-violation");
    assert_eq!(f.occurrences, 4, "{f:?}");
    assert_eq!(f.severity, Severity::Medium, "{f:?}");
    assert!(f.summary.contains("#7"), "{}", f.summary);
}

#[test]
fn transport_near_miss_2025_03_26_needs_no_version_header() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::post(RS_MCP).rpc("initialize", 1).status(200).resp_header("mcp-session-id", "s1").result(1, json!({"protocolVersion":"2025-03-26","capabilities":{},"serverInfo":{"name":"s","version":"1"}})));
    s.add(
        FlowBuilder::post(RS_MCP)
            .session("s1")
            .rpc("tools/list", 2)
            .status(200)
            .result(2, json!({"tools":[]})),
    );
    absent(&analyze(&s.flows), "transport-header-violation");
}

// ---------------------------------------------------------------- 23 cors-blocked

#[test]
fn cors_preflight_refused() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::options(RS_MCP)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,mcp-protocol-version",
            )
            .status(401)
            .resp_header("www-authenticate", "Bearer"),
    );
    check(
        &analyze(&s.flows),
        "cors-blocked",
        Culprit::Server,
        &[1],
        Some("preflight-refused"),
    );
}

#[test]
fn cors_wildcard_does_not_cover_authorization() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::options(RS_MCP)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,mcp-protocol-version",
            )
            .status(204)
            .resp_header("access-control-allow-origin", "https://app.example")
            .resp_header("access-control-allow-headers", "*"),
    );
    let r = analyze(&s.flows);
    check(
        &r,
        "cors-blocked",
        Culprit::Server,
        &[1],
        Some("preflight-incomplete"),
    );
    assert!(the(&r, "cors-blocked").summary.contains("authorization"));
}

#[test]
fn cors_near_miss_non_browser_client() {
    // No Origin: a CLI client; missing CORS headers do not matter.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    absent(&analyze(&s.flows), "cors-blocked");
}

// ---------------------------------------------------------------- 24 token-auth-method-mismatch

fn register_basic() -> FlowBuilder {
    FlowBuilder::post(&format!("{AS}/register"))
        .json(json!({"redirect_uris":[REDIRECT],"token_endpoint_auth_method":"client_secret_basic"}))
        .status(201)
        .resp_json(json!({"client_id":"client-1","client_secret":"secret-1","redirect_uris":[REDIRECT],"token_endpoint_auth_method":"client_secret_basic"}))
}

#[test]
fn auth_method_differs_from_registration() {
    let mut s = Scenario::new();
    s.add(as_meta(AS));
    s.add(register_basic()); // #2
    s.add(
        token_code(AS, "c")
            .status(401)
            .resp_json(json!({"error":"invalid_client"})),
    ); // #3: form secret
    let r = analyze(&s.flows);
    check(
        &r,
        "token-auth-method-mismatch",
        Culprit::Client,
        &[2, 3],
        Some("method-differs"),
    );
    absent(&r, "token-response-invalid");
}

#[test]
fn registered_basic_refused_by_server() {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("client-1:secret-1");
    let mut s = Scenario::new();
    s.add(register_basic()); // #1
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .header("authorization", &format!("Basic {basic}"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "c"),
                ("code_verifier", VERIFIER),
                ("resource", RS_MCP),
            ])
            .status(400)
            .resp_json(json!({"error":"invalid_request","error_description":"missing client_id"})),
    ); // #2
    check(
        &analyze(&s.flows),
        "token-auth-method-mismatch",
        Culprit::Server,
        &[1, 2],
        Some("registered-method-refused"),
    );
}

#[test]
fn auth_method_near_miss_lenient_server_accepts() {
    let mut s = Scenario::new();
    s.add(register_basic());
    s.add(issued(token_code(AS, "c"), "tok-1", None));
    absent(&analyze(&s.flows), "token-auth-method-mismatch");
}

// ---------------------------------------------------------------- 25 metadata-unreachable-endpoints

#[test]
fn metadata_advertises_localhost_token_endpoint() {
    let mut doc = as_doc(AS);
    doc["token_endpoint"] = json!("http://localhost:8000/token");
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc),
    ); // #3
    s.add(register(AS));
    s.add(
        FlowBuilder::post("http://localhost:8000/token")
            .form(&[("grant_type", "authorization_code"), ("code", "c")])
            .failed(ErrorKind::UpstreamConnect),
    ); // #5
    check(
        &analyze(&s.flows),
        "metadata-unreachable-endpoints",
        Culprit::Server,
        &[3, 5],
        Some("request-failed"),
    );
}

#[test]
fn metadata_unreachable_near_miss_local_development() {
    let local = "http://localhost:9000";
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::get(&format!("{local}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(as_doc(local)),
    );
    s.add(
        FlowBuilder::post(&format!("{local}/register"))
            .json(json!({"redirect_uris":[REDIRECT]}))
            .status(201)
            .resp_json(json!({"client_id":"c","redirect_uris":[REDIRECT]})),
    );
    s.wait(200_000);
    s.add(unrelated());
    absent(&analyze(&s.flows), "metadata-unreachable-endpoints");
}

// ---------------------------------------------------------------- 26 client-ignores-metadata

#[test]
fn client_uses_fallback_token_endpoint() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS)); // #3 names https://auth.example/token
    s.add(register(AS));
    s.add(
        FlowBuilder::post(&format!("{RS}/token"))
            .form(&[("grant_type", "authorization_code"), ("code", "c")])
            .status(404),
    ); // #5
    check(
        &analyze(&s.flows),
        "client-ignores-metadata",
        Culprit::Client,
        &[3, 5],
        Some("token_endpoint"),
    );
}

#[test]
fn client_ignores_metadata_near_miss_second_server_with_own_as() {
    let mut s = Scenario::new();
    s.add(as_meta(AS));
    // Another MCP server whose AS metadata was never fetched (pre-configured client).
    s.add(issued(
        FlowBuilder::post("https://other-as.example/token")
            .form(&[("grant_type", "client_credentials")]),
        "tok-x",
        None,
    ));
    absent(&analyze(&s.flows), "client-ignores-metadata");
}

// ---------------------------------------------------------------- 27 prm-url-not-path-scoped

#[test]
fn prm_url_not_path_scoped() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::post("https://rs.example/api/mcp").rpc("initialize", 0).challenge(r#"Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource""#));
    check(
        &analyze(&s.flows),
        "prm-url-not-path-scoped",
        Culprit::Server,
        &[1],
        Some("root-url-advertised"),
    );
}

#[test]
fn prm_only_at_root_while_path_probe_fails() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post("https://rs.example/api/mcp")
            .rpc("initialize", 0)
            .challenge("Bearer"),
    ); // #1
    s.add(
        FlowBuilder::get("https://rs.example/.well-known/oauth-protected-resource/api/mcp")
            .status(404),
    ); // #2
    s.add(
        FlowBuilder::get("https://rs.example/.well-known/oauth-protected-resource")
            .status(200)
            .resp_json(
                json!({"resource":"https://rs.example/api/mcp","authorization_servers":[AS]}),
            ),
    ); // #3
    check(
        &analyze(&s.flows),
        "prm-url-not-path-scoped",
        Culprit::Server,
        &[2, 3],
        Some("root-only"),
    );
}

#[test]
fn prm_url_near_miss_server_at_root() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::post("https://rs.example/").rpc("initialize", 0).challenge(r#"Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource""#));
    s.add(
        FlowBuilder::get("https://rs.example/.well-known/oauth-protected-resource")
            .status(200)
            .resp_json(json!({"resource":"https://rs.example","authorization_servers":[AS]})),
    );
    absent(&analyze(&s.flows), "prm-url-not-path-scoped");
}

// ---------------------------------------------------------------- 28 tool-schema-invalid

#[test]
fn tool_schema_invalid() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok-1")
            .session("s1")
            .pv("2025-06-18")
            .rpc("tools/list", 2)
            .status(200)
            .sse(vec![json!({"jsonrpc":"2.0","id":2,"result":{"tools":[
                {"name":"ok","inputSchema":{"type":"object"}},
                {"name":"str","inputSchema":{"type":"string"}},
                {"name":"none"}
            ]}})]),
    ); // #7
    let r = analyze(&s.flows);
    check(&r, "tool-schema-invalid", Culprit::Server, &[7], None);
    let f = the(&r, "tool-schema-invalid");
    assert_eq!(f.details.len(), 2, "{f:#?}");
    assert!(
        f.details.iter().any(|d| d.starts_with("str:"))
            && f.details.iter().any(|d| d.starts_with("none:"))
    );
}

#[test]
fn tool_schema_near_miss_valid_schemas() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.add(tools_list_ok("tok-1", "s1", 2));
    absent(&analyze(&s.flows), "tool-schema-invalid");
}

// ---------------------------------------------------------------- 35 host-origin-rejected

#[test]
fn host_origin_rejected_by_the_dns_rebinding_guard() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1"); // #2 is the PRM, answered 200 by the same origin
    s.add(
        init_ok("tok-1", None)
            .header("x-forwarded-host", "mcp.public.example")
            .status(421)
            .resp_body("text/plain", "Invalid Host header"),
    ); // #6
    let r = analyze(&s.flows);
    check(
        &r,
        "host-origin-rejected",
        Culprit::Server,
        &[2, 6],
        Some("host"),
    );
    let f = the(&r, "host-origin-rejected");
    assert_eq!(f.severity, Severity::High);
    assert!(f.summary.contains("#2"), "{f:#?}");
    assert!(
        f.details.iter().any(|d| d.contains("mcp.public.example")),
        "{f:#?}"
    );

    // The Origin guard: 403 naming the Origin the request carried.
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .header("origin", "https://app.example")
            .rpc("initialize", 1)
            .status(403)
            .resp_body("text/plain", "Invalid Origin header"),
    );
    check(
        &analyze(&s.flows),
        "host-origin-rejected",
        Culprit::Server,
        &[1],
        Some("origin"),
    );
}

#[test]
fn host_origin_near_miss_other_403s() {
    // A plain 403, and a scope refusal whose body happens to name the host: not the guard.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(
        init_ok("tok-1", None)
            .status(403)
            .resp_body("text/plain", "Forbidden"),
    ); // #6
    s.add(
        init_ok("tok-1", None)
            .status(403)
            .resp_header(
                "www-authenticate",
                r#"Bearer error="insufficient_scope", scope="admin""#,
            )
            .resp_body("text/plain", "insufficient scope for this host header"),
    ); // #7
    let r = analyze(&s.flows);
    absent(&r, "host-origin-rejected");
    // The rule was reached: both refusals were MCP requests to the endpoint.
    for id in [6, 7] {
        let f = r.flows.iter().find(|f| f.id.0 == id).unwrap();
        assert_eq!((f.role, f.status), (Role::Mcp, Some(403)), "{f:#?}");
    }
}

// ---------------------------------------------------------------- 36 sse-buffered

/// The GET stream of a legacy session, `ms` long, with two events.
fn get_stream(s: &mut Scenario, ms: i64) -> FlowId {
    s.add_long(
        FlowBuilder::get(RS_MCP)
            .bearer("tok-1")
            .session("s1")
            .pv("2025-06-18")
            .header("accept", "text/event-stream")
            .resp_header("server", "nginx/1.25.3")
            .sse(vec![
                json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
                json!({"jsonrpc":"2.0","method":"notifications/resources/list_changed"}),
            ]),
        ms,
    )
}

/// A legacy tools/call answered with an event stream.
fn stream_call(id: i64) -> FlowBuilder {
    FlowBuilder::post(RS_MCP)
        .bearer("tok-1")
        .session("s1")
        .pv("2025-06-18")
        .rpc("tools/call", id)
        .status(200)
}

/// Moves the events of flow `id` to `before_end` ms before its end (one per entry).
fn events_at(s: &mut Scenario, id: FlowId, before_end: &[i64]) {
    let f = &mut s.flows[id.0 as usize - 1];
    let end = f.timings.finished.unwrap();
    for (e, ms) in f.response.as_mut().unwrap().sse.iter_mut().zip(before_end) {
        e.at = end - ms * 1000;
    }
}

#[test]
fn sse_buffered_events_released_at_the_close() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    let g = get_stream(&mut s, 30_000); // #7
    events_at(&mut s, g, &[20, 10]);
    let r = analyze(&s.flows);
    check(
        &r,
        "sse-buffered",
        Culprit::Edge,
        &[7],
        Some("burst-at-close"),
    );
    let f = the(&r, "sse-buffered");
    assert_eq!((f.severity, f.status), (Severity::High, Status::Confirmed));
    assert!(
        f.details.iter().any(|d| d.contains("X-Accel-Buffering")),
        "{f:#?}"
    );

    // A tools/call answered by one burst after 3 s: slow work looks the same, so suspected.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    let c = s.add(
        stream_call(2)
            .sse(vec![
                json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}),
                json!({"jsonrpc":"2.0","id":2,"result":{"content":[]}}),
            ])
            .dur(3_000),
    ); // #7
    events_at(&mut s, c, &[5, 1]);
    let r = analyze(&s.flows);
    let f = the(&r, "sse-buffered");
    assert_eq!(
        (f.severity, f.status),
        (Severity::Medium, Status::Suspected)
    );
    assert_eq!(f.culprit, Culprit::Server);
    assert!(f.decides.as_deref().unwrap().contains("reverse mode"));
}

#[test]
fn sse_buffered_compressed_stream() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    s.add(tools_list_ok("tok-1", "s1", 2).resp_header("content-encoding", "gzip")); // #7
    check(
        &analyze(&s.flows),
        "sse-buffered",
        Culprit::Server,
        &[7],
        Some("compressed"),
    );
}

#[test]
fn sse_buffered_near_miss_events_as_they_happen() {
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1")));
    let g = get_stream(&mut s, 30_000); // #7: events spread over the stream's life
    events_at(&mut s, g, &[25_000, 12_000]);
    // A quick response whose events come together right after the headers.
    s.add(
        stream_call(3).sse(vec![
            json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}),
            json!({"jsonrpc":"2.0","id":3,"result":{"content":[]}}),
        ]),
    );
    let r = analyze(&s.flows);
    absent(&r, "sse-buffered");
    // The rule was reached: the stream's events were read.
    let f = r.flows.iter().find(|f| f.id == g).unwrap();
    assert_eq!(f.mcp.as_ref().unwrap().messages.len(), 2, "{f:#?}");
}

// ---------------------------------------------------------------- 38 challenge-ambiguous

#[test]
fn challenge_ambiguous_two_resource_metadata() {
    let other = "https://rs.example/.well-known/oauth-protected-resource";
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge(&format!(
                r#"Bearer resource_metadata="{other}", resource_metadata="{PRM_URL}""#
            )),
    ); // #1
    s.add(FlowBuilder::get(other).status(404)); // #2: the first one, which clients take
    s.add(prm(RS_MCP, AS)); // #3
    let r = analyze(&s.flows);
    check(
        &r,
        "challenge-ambiguous",
        Culprit::Server,
        &[1, 2],
        Some("several-resource-metadata"),
    );
    let f = the(&r, "challenge-ambiguous");
    assert_eq!(
        f.severity,
        Severity::High,
        "raised by the failing first URL"
    );
    assert!(
        f.amendments
            .iter()
            .any(|a| a.contains("404") && a.contains("#2")),
        "{f:#?}"
    );

    // Two challenges (an app's and a gateway's) naming different documents.
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge(&format!(r#"Bearer resource_metadata="{PRM_URL}""#))
            .resp_header(
                "www-authenticate",
                r#"Bearer realm="gw", resource_metadata="https://gw.example/prm""#,
            ),
    );
    let r = analyze(&s.flows);
    check(
        &r,
        "challenge-ambiguous",
        Culprit::Server,
        &[1],
        Some("several-challenges"),
    );
    assert_eq!(the(&r, "challenge-ambiguous").severity, Severity::Medium);
}

#[test]
fn challenge_ambiguous_near_miss_same_document_twice() {
    // The same document, once relative and once absolute: one URL, nothing ambiguous.
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge(&format!(
                r#"Bearer resource_metadata="/.well-known/oauth-protected-resource/mcp", resource_metadata="{PRM_URL}""#
            )),
    );
    s.add(prm(RS_MCP, AS));
    let r = analyze(&s.flows);
    absent(&r, "challenge-ambiguous");
    // The rule was reached: the challenge was read as a proper Bearer challenge.
    absent(&r, "challenge-missing");
    assert_eq!(r.flows[0].status, Some(401));
}

// ---------------------------------------------------------------- 39 version-negotiation-failed

fn init_versions(asked: &str, answered: &str) -> FlowBuilder {
    FlowBuilder::post(RS_MCP)
        .rpc_params("initialize", 1, json!({"protocolVersion":asked,"capabilities":{},"clientInfo":{"name":"t","version":"1"}}))
        .status(200)
        .result(1, json!({"protocolVersion":answered,"capabilities":{},"serverInfo":{"name":"s","version":"1"}}))
}

#[test]
fn version_negotiation_fixed_version() {
    // Proven either way round: the answer before or after the flow that shows support.
    for proof_first in [true, false] {
        let mut s = Scenario::new();
        if proof_first {
            s.add(init_versions("2025-06-18", "2025-06-18"));
            s.add(init_versions("2025-06-18", "2025-11-25").ua("junie/1.0"));
        } else {
            s.add(init_versions("2025-06-18", "2025-11-25").ua("junie/1.0"));
            s.add(init_versions("2025-06-18", "2025-06-18"));
        }
        let r = analyze(&s.flows);
        check(
            &r,
            "version-negotiation-failed",
            Culprit::Server,
            &[1, 2],
            Some("fixed-version"),
        );
    }
}

#[test]
fn version_negotiation_answer_not_accepted() {
    // Asked 2025-06-18, answered 2025-11-25, and the client never goes on (it tears down).
    let mut s = Scenario::new();
    s.add(init_versions("2025-06-18", "2025-11-25")); // #1
    s.wait(5_000);
    s.add(unrelated()); // #2: live, suspected by now
    let mut live = mcptap_analyze::Analyzer::default();
    let shown: Vec<_> = s.flows.iter().flat_map(|f| live.push(f)).collect();
    assert!(
        shown.iter().any(|f| f.id == "version-negotiation-failed"
            && f.status == Status::Suspected
            && f.decides.is_some()),
        "{shown:#?}"
    );
    s.wait(20_000);
    s.add(unrelated()); // #3: decided
    let r = analyze(&s.flows);
    check(
        &r,
        "version-negotiation-failed",
        Culprit::Unknown,
        &[1],
        Some("answer-not-accepted"),
    );
    let f = the(&r, "version-negotiation-failed");
    assert_eq!(f.status, Status::Confirmed);
    assert!(f.summary.contains("must answer 2025-06-18"), "{f:#?}");
}

#[test]
fn version_negotiation_initialize_refused_over_its_header() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .pv("2025-11-25")
            .rpc_params("initialize", 1, json!({"protocolVersion":"2025-11-25","capabilities":{}}))
            .status(400)
            .resp_body(
                "text/plain",
                "Bad Request: Unsupported protocol version (supported versions: 2025-06-18, 2025-03-26)",
            ),
    );
    check(
        &analyze(&s.flows),
        "version-negotiation-failed",
        Culprit::Server,
        &[1],
        Some("initialize-refused"),
    );
}

fn modern(method: &str, id: i64, version: &str, params: serde_json::Value) -> FlowBuilder {
    let mut p = params;
    p["_meta"] = json!({"io.modelcontextprotocol/protocolVersion":version,"io.modelcontextprotocol/clientCapabilities":{}});
    FlowBuilder::post(RS_MCP)
        .pv(version)
        .header("mcp-method", method)
        .rpc_params(method, id, p)
}

fn unsupported(id: i64, supported: &[&str]) -> serde_json::Value {
    json!({"jsonrpc":"2.0","id":id,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":supported}}})
}

#[test]
fn version_negotiation_stateless_refusals() {
    // A version refused although the server lists it.
    let mut s = Scenario::new();
    s.add(
        modern("server/discover", 1, "2026-07-28", json!({}))
            .status(400)
            .resp_json(unsupported(1, &["2026-07-28"])),
    );
    check(
        &analyze(&s.flows),
        "version-negotiation-failed",
        Culprit::Server,
        &[1],
        Some("supported-version-refused"),
    );
}

#[test]
fn version_negotiation_near_miss_legitimate_negotiation() {
    let mut s = Scenario::new();
    // The server does not serve what was asked and says which it does: the client follows.
    s.add(
        modern("server/discover", 1, "2027-03-01", json!({}))
            .status(400)
            .resp_json(unsupported(1, &["2026-07-28"])),
    );
    s.add(modern("server/discover", 2, "2026-07-28", json!({})).status(200).result(
        2,
        json!({"supportedVersions":["2026-07-28"],"capabilities":{},"serverInfo":{"name":"s","version":"1"}}),
    ));
    // A handshake-era server refuses the discover probe; the client falls back to initialize
    // and is offered another version than it asked, which the server was never seen to serve.
    let legacy = "https://legacy.example/mcp";
    s.add(
        FlowBuilder::post(legacy)
            .pv("2026-07-28")
            .header("mcp-method", "server/discover")
            .rpc_params("server/discover", 1, json!({"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}))
            .status(400)
            .resp_json(json!({"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: Unsupported protocol version"}})),
    );
    s.add(FlowBuilder::post(legacy).rpc_params("initialize", 2, json!({"protocolVersion":"2025-11-25","capabilities":{}})).status(200).result(2, json!({"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"l","version":"1"}})));
    s.add(
        FlowBuilder::post(legacy)
            .pv("2025-06-18")
            .notify("notifications/initialized")
            .status(202),
    ); // the client goes on with the answer
    s.wait(30_000);
    s.add(unrelated());
    let r = analyze(&s.flows);
    absent(&r, "version-negotiation-failed");
    // The rule was reached: the versions were read.
    for v in ["2026-07-28", "2025-06-18"] {
        assert!(
            r.environment.protocol_versions.iter().any(|p| p == v),
            "{:?}",
            r.environment.protocol_versions
        );
    }
}

// ---------------------------------------------------------------- 40 stateless-header-violation

#[test]
fn stateless_headers_missing_or_wrong() {
    let mut s = Scenario::new();
    s.add(
        modern(
            "tools/call",
            3,
            "2026-07-28",
            json!({"name":"echo","arguments":{}}),
        )
        .no_header("mcp-method")
        .header("mcp-method", "tools/list")
        .status(200)
        .result(3, json!({"content":[]})),
    ); // #1: wrong Mcp-Method, no Mcp-Name, served anyway
    let r = analyze(&s.flows);
    check(
        &r,
        "stateless-header-violation",
        Culprit::Client,
        &[1],
        Some("method-mismatch"),
    );
    check(
        &r,
        "stateless-header-violation",
        Culprit::Client,
        &[1],
        Some("name-missing"),
    );
    assert!(r
        .findings
        .iter()
        .all(|f| f.details.iter().any(|d| d.contains("HeaderMismatch"))));
}

#[test]
fn stateless_meta_version_differs_from_the_header() {
    // The `_meta` version and the header disagree: mode 40, not 22 (one wire fact, one
    // finding). The name's `/` may be escaped (`\/`, as PHP writes it) and still counts.
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-28"}}}"#;
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1");
    s.add(init_ok("tok-1", Some("s1"))); // #6
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok-1")
            .session("s1")
            .pv("2025-06-18")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .header("accept", "application/json, text/event-stream")
            .body("application/json", body)
            .status(400)
            .resp_json(
                json!({"jsonrpc":"2.0","id":2,"error":{"code":-32020,"message":"Header mismatch"}}),
            ),
    ); // #7
    let r = analyze(&s.flows);
    check(
        &r,
        "stateless-header-violation",
        Culprit::Client,
        &[7],
        Some("protocol-version-mismatch"),
    );
    absent(&r, "transport-header-violation");
}

#[test]
fn stateless_valid_headers_refused_by_the_server() {
    let mut s = Scenario::new();
    s.add(
        modern("tools/call", 3, "2026-07-28", json!({"name":"héllo","arguments":{}}))
            .header("mcp-name", "=?base64?aMOpbGxv?=")
            .status(400)
            .resp_json(json!({"jsonrpc":"2.0","id":3,"error":{"code":-32020,"message":"Mcp-Name header does not match"}})),
    );
    let r = analyze(&s.flows);
    check(
        &r,
        "stateless-header-violation",
        Culprit::Server,
        &[1],
        Some("valid-headers-refused"),
    );
}

#[test]
fn stateless_near_miss_encoded_name_and_legacy_requests() {
    let mut s = Scenario::new();
    // Base64-sentinel Mcp-Name that decodes to the body's name; resources/read names its uri.
    s.add(
        modern(
            "tools/call",
            3,
            "2026-07-28",
            json!({"name":"héllo","arguments":{}}),
        )
        .header("mcp-name", "=?base64?aMOpbGxv?=")
        .status(200)
        .result(3, json!({"content":[]})),
    );
    s.add(
        modern(
            "resources/read",
            4,
            "2026-07-28",
            json!({"uri":"file:///a.txt"}),
        )
        .header("mcp-name", "file:///a.txt")
        .status(200)
        .result(4, json!({"contents":[]})),
    );
    // A 2025-06-18 session needs none of these headers.
    s.add(init_ok("tok-1", Some("s1")));
    s.add(call("tok-1", "s1", "tools/call", 5));
    let r = analyze(&s.flows);
    absent(&r, "stateless-header-violation");
    // The rule was reached: the stateless requests were seen as such.
    assert!(r
        .environment
        .protocol_versions
        .iter()
        .any(|v| v == "2026-07-28"));
}

// ---------------------------------------------------------------- inject mode verdicts

#[test]
fn inject_confirms_client_omits_token() {
    let mut s = Scenario::new();
    let t = oauth(&mut s, "tok-1"); // #5
    s.add(init_401()); // #6 the client's own request, bare, refused
    s.add(
        init_ok("tok-1", None)
            .no_header("authorization")
            .injected("tok-1", Some(t)),
    ); // #7
    let r = analyze(&s.flows);
    check(
        &r,
        "client-omits-token-confirmed",
        Culprit::Client,
        &[5, 6, 7],
        None,
    );
    absent(&r, "server-rejects-token");
    check(
        &r,
        "token-not-sent",
        Culprit::Client,
        &[5, 6, 7],
        Some("never-sent"),
    );
}

#[test]
fn a_request_inject_mode_turned_away_yields_no_verdict() {
    // What the proxy once injected into `/mcp/../other` (served as `/other`, which answered),
    // now forwarded bare and marked: no inject verdict either way.
    let mut s = Scenario::new();
    oauth(&mut s, "tok-1"); // #5
    s.add(init_401()); // #6
    s.add(
        init_ok("tok-1", None)
            .no_header("authorization")
            .not_injected("the path is /other once dot-segments are removed"),
    ); // #7
    let r = analyze(&s.flows);
    absent(&r, "client-omits-token-confirmed");
    absent(&r, "server-rejects-token");
}

#[test]
fn inject_shows_server_rejects_its_own_token() {
    let mut s = Scenario::new();
    let t = oauth(&mut s, "tok-1");
    s.add(init_401()); // #6
    s.add(
        init_ok("tok-1", None)
            .no_header("authorization")
            .injected("tok-1", Some(t))
            .status(401)
            .resp_header("www-authenticate", r#"Bearer error="invalid_token""#),
    ); // #7
    let r = analyze(&s.flows);
    check(
        &r,
        "server-rejects-token",
        Culprit::Server,
        &[5, 6, 7],
        None,
    );
    absent(&r, "client-omits-token-confirmed");
}

// ---------------------------------------------------------------- visibility

#[test]
fn authorize_not_visible_when_it_would_matter() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS)); // #4
    s.wait(130_000);
    s.add(unrelated());
    let r = analyze(&s.flows);
    check(&r, "authorize-not-visible", Culprit::Unknown, &[4], None);
    check(
        &r,
        "token-exchange-missing",
        Culprit::Unknown,
        &[4],
        Some("no-exchange"),
    );
    assert_eq!(the(&r, "authorize-not-visible").severity, Severity::Info);
}

#[test]
fn authorize_not_visible_near_miss_successful_dance() {
    let s = crate::healthy::session(crate::healthy::Healthy {
        authorize_visible: false,
        ..Default::default()
    });
    absent(&analyze(&s.flows), "authorize-not-visible");
}

// ---------------------------------------------------------------- robustness

#[test]
fn odd_flows_never_panic() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::new("GET", "/relative/only").status(200));
    s.add(
        FlowBuilder::post(RS_MCP)
            .body("application/json", "{not json")
            .status(500),
    );
    s.add(FlowBuilder::post(RS_MCP).rpc("initialize", 1).dur(0));
    s.flows[2].response = None;
    s.flows[2].state = mcptap_flow::FlowState::Pending;
    s.add(FlowBuilder::get(PRM_URL).failed(ErrorKind::UpstreamDns));
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .body(
                "application/x-www-form-urlencoded",
                "grant_type=%ZZ&&=&code",
            )
            .status(200)
            .resp_json(json!([1, 2])),
    );
    s.add(FlowBuilder::new("CONNECT", "ignored.example:443"));
    s.flows[5].kind = mcptap_flow::FlowKind::Tunnel;
    let _ = analyze(&s.flows);
}
