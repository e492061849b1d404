//! Leak rules of inject mode, on flow literals.

use super::*;
use mcptap_flow::{CapturedBody, Headers, Request, Response, Timings};

const T0: Micros = 1_700_000_000_000_000;

fn flow(
    id: u64,
    method: &str,
    url: &str,
    req_body: &str,
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
) -> Flow {
    Flow {
        id: FlowId(id),
        request: Request {
            method: method.into(),
            url: url.into(),
            body: CapturedBody::complete(req_body.to_owned()),
            ..Default::default()
        },
        response: Some(Response {
            status,
            headers: headers.iter().copied().collect::<Headers>(),
            body: CapturedBody::complete(body.to_owned()),
            ..Default::default()
        }),
        timings: Timings {
            started: T0 + id as i64,
            response_head: Some(T0 + id as i64),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A: MCP server https://a.example/mcp with AS https://auth.example; B another server.
fn learned(token_resource: &str, token_type: &str, expires_in: &str) -> Injector {
    let inj = Injector::new();
    inj.observe(&flow(
        1,
        "GET",
        "https://a.example/.well-known/oauth-protected-resource/mcp",
        "",
        200,
        &[],
        r#"{"resource":"https://a.example/mcp","authorization_servers":["https://auth.example/"]}"#,
    ));
    inj.observe(&flow(
        2,
        "GET",
        "https://auth.example/.well-known/oauth-authorization-server",
        "",
        200,
        &[],
        r#"{"issuer":"https://auth.example","token_endpoint":"https://auth.example/token"}"#,
    ));
    inj.observe(&flow(3, "POST", "https://auth.example/token",
        &format!("grant_type=authorization_code&code=c&resource={}", token_resource.replace(':', "%3A").replace('/', "%2F")),
        200, &[], &format!(r#"{{"access_token":"tok-A","token_type":"{token_type}","expires_in":{expires_in},"refresh_token":"r"}}"#)));
    inj
}

#[test]
fn a_bare_request_to_the_resource_gets_the_token_issued_for_it() {
    let inj = learned("https://a.example/mcp", "Bearer", "3600");
    let p = inj.pick("https://a.example/mcp", T0 + 1_000_000).unwrap();
    assert_eq!(p.header, "Bearer tok-A");
    assert_eq!(p.token_flow, FlowId(3));
    assert_eq!(p.fingerprint, redact::fingerprint("tok-A"));
    // A path below the resource is the same endpoint family.
    assert!(inj.pick("https://A.example:443/mcp/x?q=1", T0).is_ok());
}

#[test]
fn never_to_another_host_path_port_or_the_authorization_server() {
    let inj = learned("https://a.example/mcp", "Bearer", "3600");
    for url in [
        "https://b.example/mcp",
        "https://a.example/other",
        "https://a.example/mcpx",
        "https://a.example:8443/mcp",
        "https://auth.example/token",
        "https://auth.example/register",
        "https://a.example/.well-known/oauth-protected-resource/mcp",
    ] {
        assert!(inj.pick(url, T0).is_err(), "{url}");
    }
}

#[test]
fn never_over_plain_http_except_loopback() {
    let inj = learned("https://a.example/mcp", "Bearer", "3600");
    assert_eq!(
        inj.pick("http://a.example/mcp", T0).unwrap_err(),
        Skip::Insecure
    );
    let local = Injector::new();
    local.observe(&flow(
        1,
        "GET",
        "http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp",
        "",
        200,
        &[],
        r#"{"resource":"http://127.0.0.1:9/mcp","authorization_servers":["http://127.0.0.1:9"]}"#,
    ));
    local.observe(&flow(
        2,
        "POST",
        "http://127.0.0.1:9/token",
        "grant_type=authorization_code&resource=http%3A%2F%2F127.0.0.1%3A9%2Fmcp",
        200,
        &[],
        r#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#,
    ));
    assert!(local.pick("http://127.0.0.1:9/mcp", T0).is_ok());
}

#[test]
fn expired_and_non_bearer_tokens_are_never_injected() {
    let inj = learned("https://a.example/mcp", "Bearer", "30");
    // 30 s lifetime minus the skew: already unusable.
    assert_eq!(
        inj.pick("https://a.example/mcp", T0 + 1).unwrap_err(),
        Skip::NoToken
    );
    let dpop = learned("https://a.example/mcp", "DPoP", "3600");
    assert!(dpop.pick("https://a.example/mcp", T0).is_err());
}

#[test]
fn a_token_for_another_resource_is_not_used_and_a_slash_difference_is_reported() {
    let inj = learned("https://b.example/mcp", "Bearer", "3600");
    assert_eq!(
        inj.pick("https://a.example/mcp", T0).unwrap_err(),
        Skip::NoToken
    );
    let slash = learned("https://a.example/mcp/", "Bearer", "3600");
    assert_eq!(
        slash.pick("https://a.example/mcp", T0).unwrap_err(),
        Skip::SlashOnly("https://a.example/mcp/".into())
    );
}

#[test]
fn a_token_from_an_issuer_the_metadata_does_not_name_is_not_used() {
    let inj = Injector::new();
    inj.observe(&flow(
        1,
        "GET",
        "https://a.example/.well-known/oauth-protected-resource/mcp",
        "",
        200,
        &[],
        r#"{"resource":"https://a.example/mcp","authorization_servers":["https://auth.example"]}"#,
    ));
    inj.observe(&flow(
        3,
        "POST",
        "https://evil.example/token",
        "grant_type=authorization_code&resource=https%3A%2F%2Fa.example%2Fmcp",
        200,
        &[],
        r#"{"access_token":"tok","token_type":"Bearer","expires_in":3600}"#,
    ));
    assert_eq!(
        inj.pick("https://a.example/mcp", T0).unwrap_err(),
        Skip::NoToken
    );
}

#[test]
fn the_newest_token_covering_the_challenged_scope_wins() {
    let inj = learned("https://a.example/mcp", "Bearer", "3600");
    inj.observe(&flow(
        4,
        "POST",
        "https://auth.example/token",
        "grant_type=refresh_token&resource=https%3A%2F%2Fa.example%2Fmcp",
        200,
        &[],
        r#"{"access_token":"tok-B","token_type":"Bearer","expires_in":3600,"scope":"read"}"#,
    ));
    assert_eq!(
        inj.pick("https://a.example/mcp", T0).unwrap().header,
        "Bearer tok-B"
    );
    inj.observe(&flow(
        5,
        "POST",
        "https://a.example/mcp",
        "{}",
        403,
        &[(
            "www-authenticate",
            r#"Bearer error="insufficient_scope", scope="write""#,
        )],
        "",
    ));
    // tok-B (read only) no longer covers the challenge; tok-A's scope is unknown.
    assert_eq!(
        inj.pick("https://a.example/mcp", T0).unwrap().header,
        "Bearer tok-A"
    );
}

#[test]
fn challenge_parameters_parse_quoted_and_bare() {
    assert_eq!(
        challenge_param(r#"Bearer resource_metadata="x", scope="a b""#, "scope").as_deref(),
        Some("a b")
    );
    assert_eq!(
        challenge_param("Bearer scope=mcp, error=x", "scope").as_deref(),
        Some("mcp")
    );
    assert_eq!(challenge_param(r#"Bearer myscope="no""#, "scope"), None);
}
