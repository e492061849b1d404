//! Modes 30–43 of the reference (registration mechanisms, scope selection, issuers, discovery
//! order) and its rules for extension grants and unfixable insufficient scope: each a
//! positive case and a near miss that reaches the rule.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::{analyze, Culprit, Severity, Status};
use serde_json::json;

fn discovered(s: &mut Scenario) {
    s.add(init_401()); // #1
    s.add(prm(RS_MCP, AS)); // #2
    s.add(as_meta(AS)); // #3
}

/// An authorization request whose redirect carries `iss`.
fn authorize_iss(iss: &str) -> FlowBuilder {
    FlowBuilder::get(&format!(
        "{AS}/authorize?response_type=code&client_id=client-1&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=st8&scope=mcp&resource={}",
        enc(REDIRECT),
        s256(VERIFIER),
        enc(RS_MCP)
    ))
    .status(302)
    .resp_header(
        "location",
        &format!("{REDIRECT}?code=code-1&state=st8&iss={}", enc(iss)),
    )
}

fn invalid_client(b: FlowBuilder, status: u16) -> FlowBuilder {
    b.status(status)
        .resp_json(json!({"error":"invalid_client","error_description":"Unrecognized client_id"}))
}

// ---------------------------------------------------------------- 30 client-registration-stale

#[test]
fn a_forgotten_cached_registration_not_renewed_is_client_registration_stale() {
    let mut s = Scenario::new();
    discovered(&mut s);
    // A client_id from an earlier run; the server restarted and forgot it.
    s.add(invalid_client(token_code(AS, "c"), 400)); // #4
    s.wait(5_000);
    s.add(invalid_client(token_code(AS, "c2"), 400)); // #5: retries, never re-registers
    let r = analyze(&s.flows);
    let f = the(&r, "client-registration-stale");
    assert_eq!(f.culprit, Culprit::Client);
    assert_eq!(f.status, Status::Confirmed);
    assert_eq!(f.evidence.first().map(|e| e.0), Some(4));
    assert!(
        f.details.iter().any(|d| d.contains("401 invalid_client")),
        "{f:#?}"
    );
    absent(&r, "token-response-invalid");
}

#[test]
fn client_registration_stale_near_miss_the_client_registers_again() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(invalid_client(token_code(AS, "c"), 401)); // #4
    s.wait(4_000); // suspected by now
    s.add(register(AS)); // #5: the cue was understood
    let r = analyze(&s.flows);
    cleared(&r, "client-registration-stale");
}

// ---------------------------------------------------------------- 31 registration-mechanism-mismatch

fn cimd_only_meta() -> FlowBuilder {
    let mut doc = as_doc(AS);
    doc.as_object_mut().unwrap().remove("registration_endpoint");
    doc["client_id_metadata_document_supported"] = json!(true);
    FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
        .status(200)
        .resp_json(doc)
}

#[test]
fn dcr_against_a_cimd_only_server_is_registration_mechanism_mismatch() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(cimd_only_meta()); // #3
    s.add(
        register(AS)
            .status(404)
            .resp_body("text/plain", "Not Found"),
    ); // #4
    let r = analyze(&s.flows);
    check(
        &r,
        "registration-mechanism-mismatch",
        Culprit::Client,
        &[3, 4],
        Some("dcr-not-offered"),
    );
    absent(&r, "registration-failed");
}

#[test]
fn registration_mechanism_near_miss_dcr_offered_too_is_only_cimd_not_used() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    let mut doc = as_doc(AS);
    doc["client_id_metadata_document_supported"] = json!(true);
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc),
    ); // #3
    s.add(register(AS)); // #4
    let r = analyze(&s.flows);
    absent(&r, "registration-mechanism-mismatch");
    // 43: only a SHOULD.
    let f = the(&r, "cimd-not-used");
    assert_eq!(f.severity, Severity::Info);
    assert_eq!(f.culprit, Culprit::Client);
}

#[test]
fn cimd_not_used_near_miss_server_does_not_offer_cimd() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    let r = analyze(&s.flows);
    absent(&r, "cimd-not-used");
    assert_eq!(r.stories.len(), 0);
    assert!(r.flows.iter().any(|f| f.role.as_str() == "registration"));
}

// ---------------------------------------------------------------- 32 cimd-invalid

const CIMD_URL: &str = "https://client.example/oauth/client.json";

fn cimd_doc(client_id: &str) -> FlowBuilder {
    FlowBuilder::get(CIMD_URL).status(200).resp_json(
        json!({"client_id": client_id, "client_name": "c", "redirect_uris": ["http://127.0.0.1:33418/callback"]}),
    )
}

fn cimd_authorize(redirect: &str) -> FlowBuilder {
    FlowBuilder::get(&format!(
        "{AS}/authorize?response_type=code&client_id={}&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=s&scope=mcp&resource={}",
        enc(CIMD_URL),
        enc(redirect),
        s256(VERIFIER),
        enc(RS_MCP)
    ))
    .status(400)
    .resp_body("text/html", "<p>Invalid redirect URI</p>")
}

#[test]
fn a_cimd_document_that_does_not_list_the_redirect_uri_is_cimd_invalid() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(cimd_doc(CIMD_URL)); // #4
    s.add(cimd_authorize("http://localhost:5555/cb")); // #5
    let r = analyze(&s.flows);
    check(
        &r,
        "cimd-invalid",
        Culprit::Client,
        &[4, 5],
        Some("redirect-not-listed"),
    );

    let mut s = Scenario::new();
    s.add(cimd_doc("https://client.example/other.json")); // #1
    let r = analyze(&s.flows);
    check(
        &r,
        "cimd-invalid",
        Culprit::Client,
        &[1],
        Some("client-id-differs"),
    );
}

#[test]
fn cimd_invalid_near_miss_a_valid_document() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(cimd_doc(CIMD_URL));
    s.add(
        cimd_authorize(REDIRECT)
            .status(302)
            .resp_header("location", &format!("{REDIRECT}?code=c&state=s")),
    );
    let r = analyze(&s.flows);
    absent(&r, "cimd-invalid");
    assert!(r.visibility.authorize_seen);
}

// ---------------------------------------------------------------- 33 scope-rejected

#[test]
fn invalid_scope_for_a_scope_nobody_offers_is_scope_rejected() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "c"),
                ("client_id", "client-1"),
                ("scope", "mcp offline_access"),
            ])
            .status(400)
            .resp_json(json!({"error":"invalid_scope"})),
    ); // #5
    let r = analyze(&s.flows);
    let f = the(&r, "scope-rejected");
    assert_eq!(f.culprit, Culprit::Client);
    assert!(
        f.summary.contains("offline_access") && !f.summary.contains("\"mcp"),
        "{f:#?}"
    );
}

#[test]
fn scope_rejected_near_miss_an_offered_scope_refused_is_not_the_clients_fault() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "c"),
                ("client_id", "client-1"),
                ("scope", "mcp"),
            ])
            .status(400)
            .resp_json(json!({"error":"invalid_scope"})),
    );
    absent(&analyze(&s.flows), "scope-rejected");
}

// ---------------------------------------------------------------- 34 issuer-mismatch

#[test]
fn an_iss_that_is_not_the_metadata_issuer_is_issuer_mismatch() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(authorize_iss("https://idp.example")); // #5
    let r = analyze(&s.flows);
    check(&r, "issuer-mismatch", Culprit::Server, &[3, 5], None);
}

#[test]
fn issuer_mismatch_near_miss_the_right_iss() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(authorize_iss(AS));
    absent(&analyze(&s.flows), "issuer-mismatch");
}

// ---------------------------------------------------------------- 37 credential-cross-issuer

#[test]
fn a_refresh_token_sent_to_another_authorization_server_is_credential_cross_issuer() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", Some("rt-1"))); // #5
    s.add(as_meta("https://other-as.example")); // #6
    s.add(
        token_refresh("https://other-as.example", "rt-1")
            .status(400)
            .resp_json(json!({"error":"invalid_grant"})),
    ); // #7
    let r = analyze(&s.flows);
    let f = the(&r, "credential-cross-issuer");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.culprit, Culprit::Client);
    assert_eq!(
        f.evidence.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![5, 7]
    );
}

#[test]
fn credential_cross_issuer_near_miss_the_same_server() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", Some("rt-1")));
    s.add(issued(token_refresh(AS, "rt-1"), "tok-2", Some("rt-2")));
    let r = analyze(&s.flows);
    absent(&r, "credential-cross-issuer");
    assert_eq!(r.stories[0].tokens.len(), 2, "the refresh was seen");
}

// ---------------------------------------------------------------- 41 scope-selection-wrong

#[test]
fn an_authorization_without_the_challenged_scope_is_scope_selection_wrong() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge(&format!(
                r#"Bearer resource_metadata="{PRM_URL}", scope="mcp:tools files:read""#
            )),
    ); // #1
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(authorize(AS, "code-1")); // #5: scope=mcp only
    let r = analyze(&s.flows);
    check(
        &r,
        "scope-selection-wrong",
        Culprit::Client,
        &[1, 5],
        Some("challenge-scope-ignored"),
    );
    assert_eq!(the(&r, "scope-selection-wrong").severity, Severity::Low);
}

#[test]
fn scope_selection_near_miss_the_challenged_scope_is_requested() {
    let mut s = Scenario::new();
    discovered(&mut s); // challenge scope="mcp"
    s.add(register(AS));
    s.add(authorize(AS, "code-1")); // scope=mcp
    absent(&analyze(&s.flows), "scope-selection-wrong");
}

// ---------------------------------------------------------------- 42 discovery-order-wrong

#[test]
fn the_root_prm_before_the_path_form_is_discovery_order_wrong() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge("Bearer"),
    ); // #1: no resource_metadata
    s.add(
        FlowBuilder::get(&format!("{RS}/.well-known/oauth-protected-resource"))
            .status(200)
            .resp_json(json!({"resource":RS_MCP,"authorization_servers":[AS]})),
    ); // #2: root first
    let r = analyze(&s.flows);
    check(
        &r,
        "discovery-order-wrong",
        Culprit::Client,
        &[2],
        Some("prm-root-first"),
    );
}

#[test]
fn discovery_order_near_miss_path_form_first_then_root() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge("Bearer"),
    );
    s.add(FlowBuilder::get(PRM_URL).status(404)); // path form first
    s.add(
        FlowBuilder::get(&format!("{RS}/.well-known/oauth-protected-resource"))
            .status(200)
            .resp_json(json!({"resource":RS_MCP,"authorization_servers":[AS]})),
    );
    let r = analyze(&s.flows);
    absent(&r, "discovery-order-wrong");
    assert_eq!(
        r.flows
            .iter()
            .filter(|f| f.role.as_str() == "prm_discovery")
            .count(),
        2
    );
}

// ---------------------------------------------------------------- extension grants

#[test]
fn a_client_credentials_grant_is_not_judged_by_the_authorization_code_rules() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "svc"),
                ("client_secret", "x"),
            ])
            .status(200)
            .resp_json(json!({"access_token":"tok-cc","token_type":"Bearer","expires_in":3600})),
    ); // #4: no resource, no PKCE, no browser
    s.add(init_ok("tok-cc", None)); // #5
    let r = analyze(&s.flows);
    assert!(r.counted().next().is_none(), "{:#?}", r.findings);
    assert!(
        !r.visibility.not_checked.contains(&"pkce-mismatch"),
        "{:?}",
        r.visibility
    );
    assert_eq!(r.stories[0].tokens[0].grant, "client_credentials");
}

#[test]
fn a_token_exchange_answer_with_token_type_n_a_is_valid() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(
        FlowBuilder::post(&format!("{AS}/token"))
            .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", "st"), ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")])
            .status(200)
            .resp_json(json!({"access_token":"jag","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:id-jag","expires_in":300})),
    );
    absent(&analyze(&s.flows), "token-response-invalid");
}

// ---------------------------------------------------------------- insufficient scope, unfixable

#[test]
fn insufficient_scope_for_a_scope_the_token_holds_is_the_servers_fault() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    s.add(issued(token_code(AS, "code-1"), "tok-1", None)); // #5: scope "mcp"
    s.add(
        init_ok("tok-1", None)
            .challenge(r#"Bearer error="insufficient_scope", scope="mcp""#)
            .status(403),
    ); // #6
    s.wait(200_000);
    s.add(FlowBuilder::get("https://cdn.example/x").status(200));
    let r = analyze(&s.flows);
    let all: Vec<_> = r
        .findings_with_id("insufficient-scope-unhandled")
        .filter(|f| f.counts())
        .collect();
    assert_eq!(all.len(), 1, "{:#?}", r.findings);
    assert_eq!(all[0].culprit, Culprit::Server);
    assert_eq!(all[0].subcase, Some("already-granted"));
}

#[test]
fn re_authorizing_again_and_again_for_a_scope_the_server_never_honours_is_retry_unlimited() {
    let mut s = Scenario::new();
    discovered(&mut s);
    s.add(register(AS));
    for i in 1..=3 {
        let tok = format!("tok-{i}");
        s.add(issued(token_code(AS, &format!("code-{i}")), &tok, None));
        s.add(
            init_ok(&tok, None)
                .challenge(r#"Bearer error="insufficient_scope", scope="mcp""#)
                .status(403),
        );
    }
    let r = analyze(&s.flows);
    let client: Vec<_> = r
        .findings_with_id("insufficient-scope-unhandled")
        .filter(|f| f.culprit == Culprit::Client)
        .collect();
    assert_eq!(client.len(), 1, "{:#?}", r.findings);
    assert_eq!(client[0].subcase, Some("retry-unlimited"));
    assert_eq!(client[0].evidence.len(), 3);
    // And the server, which refuses what it granted.
    assert!(r
        .findings_with_id("insufficient-scope-unhandled")
        .any(|f| f.culprit == Culprit::Server && f.subcase == Some("already-granted")));
}

#[test]
fn scope_selection_a_subset_of_scopes_supported_is_wrong() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 0)
            .challenge(&format!(r#"Bearer resource_metadata="{PRM_URL}""#)),
    ); // #1: no scope
    s.add(
        FlowBuilder::get(PRM_URL).status(200).resp_json(
            json!({"resource":RS_MCP,"authorization_servers":[AS],"scopes_supported":["mcp","files:read"]}),
        ),
    ); // #2
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(authorize(AS, "code-1")); // #5: scope=mcp only
    let r = analyze(&s.flows);
    check(
        &r,
        "scope-selection-wrong",
        Culprit::Client,
        &[2, 5],
        Some("scopes-supported-ignored"),
    );
}

// ---------------------------------------------------------------- 48 jsonrpc-response-invalid

#[test]
fn a_malformed_json_rpc_answer_is_jsonrpc_response_invalid() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("tools/list", 7)
            .status(200)
            .resp_json(json!({"id": 7, "result": {"tools": []}})),
    ); // #1: no jsonrpc
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("tools/list", 9)
            .status(200)
            .resp_json(json!({"jsonrpc": "2.0", "id": 10, "result": {"tools": [], "error": null}, "error": {"code": "x"}})),
    ); // #2: not the request's id, result and error, an error without an integer code
    let r = analyze(&s.flows);
    let f = the(&r, "jsonrpc-response-invalid");
    assert_eq!(f.culprit, Culprit::Server);
    assert!(f.summary.contains("jsonrpc"), "{f:#?}");
    assert_eq!(
        f.evidence.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        f.details
            .iter()
            .any(|d| d.contains("both result and error")),
        "{f:#?}"
    );
    assert!(
        f.details.iter().any(|d| d.contains("integer code")),
        "{f:#?}"
    );

    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("initialize", 1)
            .status(200)
            .result(1, json!({"capabilities": {}})),
    );
    let r = analyze(&s.flows);
    assert!(the(&r, "jsonrpc-response-invalid")
        .summary
        .contains("protocolVersion, serverInfo"));
}

#[test]
fn jsonrpc_near_miss_an_oauth_error_body_on_401_is_not_json_rpc() {
    let mut s = Scenario::new();
    s.add(init_401().resp_json(json!({"error":"invalid_token","error_description":"expired"})));
    s.add(tools_list_ok("tok", "s", 2));
    let r = analyze(&s.flows);
    absent(&r, "jsonrpc-response-invalid");
    assert!(r
        .flows
        .iter()
        .any(|f| f.mcp.as_ref().is_some_and(|m| !m.messages.is_empty())));
}

// ---------------------------------------------------------------- 51 metadata-url-invalid

#[test]
fn metadata_with_a_relative_endpoint_and_query_bearer_is_metadata_url_invalid() {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(FlowBuilder::get(PRM_URL).status(200).resp_json(
        json!({"resource": RS_MCP, "authorization_servers": [AS], "bearer_methods_supported": ["header", "query"]}),
    )); // #2
    let mut doc = as_doc(AS);
    doc["token_endpoint"] = json!("/token");
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc),
    ); // #3
    let r = analyze(&s.flows);
    let all: Vec<_> = r.findings_with_id("metadata-url-invalid").collect();
    assert_eq!(all.len(), 2, "{:#?}", r.findings);
    assert!(all
        .iter()
        .any(|f| f.summary.contains("query") && f.evidence[0].0 == 2));
    assert!(all
        .iter()
        .any(|f| f.summary.contains("token_endpoint") && f.evidence[0].0 == 3));
}

#[test]
fn metadata_url_near_miss_http_on_loopback_is_fine() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::get("http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp").status(200).resp_json(
        json!({"resource": "http://127.0.0.1:8000/mcp", "authorization_servers": ["http://localhost:9000"]}),
    ));
    let r = analyze(&s.flows);
    absent(&r, "metadata-url-invalid");
    assert_eq!(r.flows[0].role.as_str(), "prm_discovery");
}

// ---------------------------------------------------------------- 52 jwks-invalid

fn with_jwks(s: &mut Scenario) {
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    let mut doc = as_doc(AS);
    doc["jwks_uri"] = json!(format!("{AS}/jwks"));
    s.add(
        FlowBuilder::get(&format!("{AS}/.well-known/oauth-authorization-server"))
            .status(200)
            .resp_json(doc),
    );
}

#[test]
fn a_jwks_without_keys_is_jwks_invalid() {
    let mut s = Scenario::new();
    with_jwks(&mut s); // the AS document names jwks_uri
    s.add(
        FlowBuilder::get(&format!("{AS}/jwks"))
            .status(200)
            .resp_json(json!({"kid": "x"})),
    ); // #4
    let r = analyze(&s.flows);
    check(&r, "jwks-invalid", Culprit::Server, &[4], None);

    let mut s = Scenario::new();
    with_jwks(&mut s);
    s.add(
        FlowBuilder::get(&format!("{AS}/jwks"))
            .status(200)
            .resp_json(json!({"keys": [{"kid": "k1", "kty": "EC"}]})),
    );
    let r = analyze(&s.flows);
    absent(&r, "jwks-invalid");
    assert!(r.flows.iter().any(|f| f.role.as_str() == "jwks"));
}

// ---------------------------------------------------------------- 49 get-stream-wrong

#[test]
fn a_get_stream_answered_with_json_is_get_stream_wrong() {
    let mut s = Scenario::new();
    s.add(init_ok("tok", None)); // #1: the endpoint is known
    s.add(
        FlowBuilder::get(RS_MCP)
            .bearer("tok")
            .header("accept", "text/event-stream")
            .status(200)
            .resp_json(json!({"ok": true})),
    );
    check(
        &analyze(&s.flows),
        "get-stream-wrong",
        Culprit::Server,
        &[2],
        None,
    );
}

#[test]
fn get_stream_near_miss_405_and_an_event_stream_are_fine() {
    let mut s = Scenario::new();
    s.add(init_ok("tok", None));
    s.add(
        FlowBuilder::get(RS_MCP)
            .bearer("tok")
            .header("accept", "text/event-stream")
            .status(405),
    );
    s.add(
        FlowBuilder::get(RS_MCP)
            .bearer("tok")
            .header("accept", "text/event-stream")
            .sse(vec![
                json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
            ]),
    );
    let r = analyze(&s.flows);
    absent(&r, "get-stream-wrong");
    assert_eq!(
        r.flows.iter().filter(|f| f.role.as_str() == "mcp").count(),
        3
    );
}

// ---------------------------------------------------------------- 50 notification-answer-wrong

#[test]
fn a_notification_answered_200_with_a_body_is_notification_answer_wrong() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok")
            .notify("notifications/initialized")
            .status(200)
            .resp_json(json!({"ok": true})),
    );
    check(
        &analyze(&s.flows),
        "notification-answer-wrong",
        Culprit::Server,
        &[1],
        None,
    );
}

#[test]
fn notification_answer_near_miss_202_without_a_body() {
    let mut s = Scenario::new();
    s.add(
        FlowBuilder::post(RS_MCP)
            .bearer("tok")
            .notify("notifications/initialized")
            .status(202),
    );
    let r = analyze(&s.flows);
    absent(&r, "notification-answer-wrong");
    assert_eq!(r.flows[0].role.as_str(), "mcp");
}
