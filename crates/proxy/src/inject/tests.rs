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

/// Flows 1 and 2: A's protected-resource metadata (naming https://auth.example) and that
/// authorization server's metadata.
fn discovered(inj: &Injector) {
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
}

/// A: MCP server https://a.example/mcp with AS https://auth.example; B another server.
fn learned(token_resource: &str, token_type: &str, expires_in: &str) -> Injector {
    let inj = Injector::new();
    discovered(&inj);
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
fn the_challenged_scope_is_read_by_the_shared_challenge_parser() {
    let scope = |v: &[&str]| challenged_scope(v.iter().copied());
    assert_eq!(
        scope(&[r#"Bearer resource_metadata="x", scope="a b""#]).as_deref(),
        Some("a b")
    );
    assert_eq!(
        scope(&["Bearer scope=mcp, error=x"]).as_deref(),
        Some("mcp")
    );
    assert_eq!(scope(&[r#"Bearer myscope="no""#]), None);
    // Inside a quoted value it is text, not a parameter; a later challenge may carry it.
    assert_eq!(
        scope(&[r#"Basic realm="scope=no""#, "Bearer scope=yes"]).as_deref(),
        Some("yes")
    );
}

// ---------------------------------------------------------------- --inject-refresh

/// Like [`learned`] with a 30 s token (unusable: inside the margin) and a refresh token, the
/// client authenticating with client_secret_post, in an injector with or without the flag.
fn refreshable(flag: bool) -> Arc<Injector> {
    let inj = Arc::new(Injector::with_refresh(flag));
    discovered(&inj);
    inj.observe(&flow(
        3,
        "POST",
        "https://auth.example/token",
        "grant_type=authorization_code&code=c&client_id=cid&client_secret=s%2Fs&scope=mcp&resource=https%3A%2F%2Fa.example%2Fmcp",
        200,
        &[],
        r#"{"access_token":"tok-A","token_type":"Bearer","expires_in":30,"refresh_token":"rt-1"}"#,
    ));
    inj
}

fn go(r: Option<Refresh>) -> Box<RefreshJob> {
    match r {
        Some(Refresh::Go(job)) => job,
        Some(Refresh::Wait(_)) => panic!("asked to wait"),
        None => panic!("no refresh planned"),
    }
}

const NOW: Micros = T0 + 1_000_000;

#[test]
fn without_the_flag_refresh_tokens_are_never_used() {
    let inj = refreshable(false);
    assert_eq!(
        inj.pick("https://a.example/mcp", NOW).unwrap_err(),
        Skip::NoToken
    );
    assert!(!inj.refreshes());
    assert!(inj.plan_refresh("https://a.example/mcp").is_none());
    // Nor even kept in memory.
    let st = inj.state.lock().unwrap();
    assert!(st.tokens.iter().all(|t| t.refresh.is_none()));
}

#[test]
fn with_the_flag_the_refresh_goes_to_the_clients_token_endpoint_with_its_credentials() {
    let inj = refreshable(true);
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    assert_eq!(job.endpoint, "https://auth.example/token");
    assert_eq!(
        job.body,
        "grant_type=refresh_token&refresh_token=rt-1&client_id=cid&client_secret=s%2Fs\
         &resource=https%3A%2F%2Fa.example%2Fmcp&scope=mcp"
    );
    assert_eq!(job.basic, None);
    assert_eq!(job.key, redact::fingerprint("rt-1"));
    // The new token is injected, and the flow that got it is named.
    let pick = inj
        .refresh_done(
            job,
            Some(br#"{"access_token":"tok-B","token_type":"bearer","expires_in":30,"refresh_token":"rt-2"}"#),
            FlowId(9),
            NOW,
            "https://a.example/mcp",
        )
        .unwrap();
    assert_eq!(pick.header, "Bearer tok-B");
    assert_eq!(pick.fingerprint, redact::fingerprint("tok-B"));
    assert_eq!(pick.token_flow, FlowId(9));
    // A token mcptap refreshed itself is used for half its life, then refreshed again — with
    // the rotated refresh token, never the old one.
    assert!(inj.pick("https://a.example/mcp", NOW + 14_000_000).is_ok());
    assert!(inj.pick("https://a.example/mcp", NOW + 16_000_000).is_err());
    let again = go(inj.plan_refresh("https://a.example/mcp"));
    assert!(again.body.contains("refresh_token=rt-2&"), "{}", again.body);
    assert_eq!(again.key, redact::fingerprint("rt-2"));
}

#[test]
fn a_client_secret_basic_client_is_authenticated_the_same_way() {
    let inj = Arc::new(Injector::with_refresh(true));
    inj.observe(&flow(
        1,
        "GET",
        "https://a.example/.well-known/oauth-protected-resource/mcp",
        "",
        200,
        &[],
        r#"{"resource":"https://a.example/mcp","authorization_servers":["https://auth.example"]}"#,
    ));
    let mut f = flow(
        3,
        "POST",
        "https://auth.example/oauth/token",
        "grant_type=authorization_code&code=c&client_id=cid",
        200,
        &[],
        r#"{"access_token":"tok-A","token_type":"Bearer","expires_in":1,"refresh_token":"rt-1"}"#,
    );
    f.request
        .headers
        .push("Authorization", "Basic Y2lkOnNlY3JldA==");
    inj.observe(&f);
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    assert_eq!(job.endpoint, "https://auth.example/oauth/token");
    assert_eq!(job.basic.as_deref(), Some("Basic Y2lkOnNlY3JldA=="));
    assert_eq!(
        job.body,
        "grant_type=refresh_token&refresh_token=rt-1&client_id=cid"
    );
}

#[test]
fn one_refresh_at_a_time_per_refresh_token_and_a_failed_one_is_not_retried() {
    let inj = refreshable(true);
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    let mut waiting = match inj.plan_refresh("https://a.example/mcp") {
        Some(Refresh::Wait(rx)) => rx,
        _ => panic!("a second refresh of the same refresh token must wait"),
    };
    assert!(inj
        .refresh_done(job, None, FlowId(9), NOW, "https://a.example/mcp")
        .is_none());
    // The waiter is released (its channel closes) ...
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting.changed())
            .await
            .expect("released")
            .expect_err("closed, nothing sent");
    });
    // ... and the failed refresh token is not tried again.
    assert!(inj.plan_refresh("https://a.example/mcp").is_none());
    // An error answer (not a Bearer token) counts as a failure too.
    let other = refreshable(true);
    let job = go(other.plan_refresh("https://a.example/mcp"));
    assert!(other
        .refresh_done(
            job,
            Some(br#"{"error":"invalid_grant"}"#),
            FlowId(9),
            NOW,
            "https://a.example/mcp"
        )
        .is_none());
    assert!(other.plan_refresh("https://a.example/mcp").is_none());
}

#[test]
fn failed_refresh_tokens_are_bounded_and_the_recent_ones_remembered() {
    let inj = refreshable(true);
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    assert!(inj
        .refresh_done(job, None, FlowId(9), NOW, "https://a.example/mcp")
        .is_none());
    let fill = |from: usize, to: usize| {
        let mut st = inj.state.lock().unwrap();
        for i in from..to {
            st.failed_refresh
                .insert(redact::fingerprint(&format!("other-{i}")));
        }
        // A failure remembered again is not a second entry.
        st.failed_refresh
            .insert(redact::fingerprint(&format!("other-{}", to - 1)));
        assert_eq!(st.failed_refresh.set.len(), st.failed_refresh.order.len());
        assert!(st.failed_refresh.order.len() <= MAX_FAILED_REFRESH);
    };
    // rt-1 and 1,023 later failures: all remembered, rt-1 still not retried.
    fill(0, MAX_FAILED_REFRESH - 1);
    assert_eq!(
        inj.state.lock().unwrap().failed_refresh.order.len(),
        MAX_FAILED_REFRESH
    );
    assert!(inj.plan_refresh("https://a.example/mcp").is_none());
    // Many more: the set stays at its bound, the oldest (rt-1) is forgotten, the most recent
    // are kept.
    fill(MAX_FAILED_REFRESH - 1, 5 * MAX_FAILED_REFRESH);
    {
        let st = inj.state.lock().unwrap();
        assert_eq!(st.failed_refresh.order.len(), MAX_FAILED_REFRESH);
        assert!(!st.failed_refresh.contains(&redact::fingerprint("rt-1")));
        assert!(st.failed_refresh.contains(&redact::fingerprint(&format!(
            "other-{}",
            5 * MAX_FAILED_REFRESH - 1
        ))));
        assert!(!st.failed_refresh.contains(&redact::fingerprint("other-0")));
    }
    assert!(matches!(
        inj.plan_refresh("https://a.example/mcp"),
        Some(Refresh::Go(_))
    ));
}

#[test]
fn a_dropped_job_frees_its_slot_without_marking_a_failure() {
    let inj = refreshable(true);
    drop(go(inj.plan_refresh("https://a.example/mcp")));
    assert!(matches!(
        inj.plan_refresh("https://a.example/mcp"),
        Some(Refresh::Go(_))
    ));
}

#[test]
fn refresh_only_for_a_token_that_otherwise_qualifies_and_never_to_another_endpoint() {
    let inj = refreshable(true);
    // Another resource, another origin, the authorization server: nothing to refresh.
    for url in [
        "https://b.example/mcp",
        "https://a.example/other",
        "https://auth.example/token",
        "http://a.example/mcp",
    ] {
        assert!(inj.plan_refresh(url).is_none(), "{url}");
    }
    // A token issued for another resource, or by an issuer the metadata does not name, or of
    // another scheme, is not refreshed for this one.
    for (endpoint, resource, ty) in [
        (
            "https://auth.example/token",
            "https%3A%2F%2Fb.example%2Fmcp",
            "Bearer",
        ),
        (
            "https://evil.example/token",
            "https%3A%2F%2Fa.example%2Fmcp",
            "Bearer",
        ),
        (
            "https://auth.example/token",
            "https%3A%2F%2Fa.example%2Fmcp",
            "DPoP",
        ),
    ] {
        let inj = Arc::new(Injector::with_refresh(true));
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
            endpoint,
            &format!("grant_type=authorization_code&client_id=c&resource={resource}"),
            200,
            &[],
            &format!(
                r#"{{"access_token":"t","token_type":"{ty}","expires_in":1,"refresh_token":"rt"}}"#
            ),
        ));
        assert!(
            inj.plan_refresh("https://a.example/mcp").is_none(),
            "{endpoint} {resource} {ty}"
        );
    }
    // The client's token endpoint over plain HTTP to a non-loopback host: never.
    let plain = Arc::new(Injector::with_refresh(true));
    plain.observe(&flow(
        1,
        "GET",
        "https://a.example/.well-known/oauth-protected-resource/mcp",
        "",
        200,
        &[],
        r#"{"resource":"https://a.example/mcp","authorization_servers":["http://auth.example"]}"#,
    ));
    plain.observe(&flow(
        3,
        "POST",
        "http://auth.example/token",
        "grant_type=authorization_code&client_id=c",
        200,
        &[],
        r#"{"access_token":"t","token_type":"Bearer","expires_in":1,"refresh_token":"rt"}"#,
    ));
    assert!(plain.plan_refresh("https://a.example/mcp").is_none());
    assert!(!endpoint_allowed("http://auth.example/token"));
    assert!(endpoint_allowed("http://127.0.0.1:9/token"));
    assert!(endpoint_allowed("https://auth.example/token"));
    // The refresh goes where the client got the token, not to another endpoint of the issuer.
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    assert_eq!(job.endpoint, "https://auth.example/token");
}

#[test]
fn a_refresh_the_client_makes_itself_moves_the_refresh_token() {
    let inj = refreshable(true);
    // The client refreshes on its own; the server rotates.
    inj.observe(&flow(
        4,
        "POST",
        "https://auth.example/token",
        "grant_type=refresh_token&refresh_token=rt-1&client_id=cid&resource=https%3A%2F%2Fa.example%2Fmcp",
        200,
        &[],
        r#"{"access_token":"tok-C","token_type":"Bearer","expires_in":30,"refresh_token":"rt-3"}"#,
    ));
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    assert!(job.body.contains("refresh_token=rt-3&"), "{}", job.body);
    drop(job);
    // A server that does not rotate: the same refresh token stays the current one.
    inj.observe(&flow(
        5,
        "POST",
        "https://auth.example/token",
        "grant_type=refresh_token&refresh_token=rt-3&client_id=cid&resource=https%3A%2F%2Fa.example%2Fmcp",
        200,
        &[],
        r#"{"access_token":"tok-D","token_type":"Bearer","expires_in":30}"#,
    ));
    let job = go(inj.plan_refresh("https://a.example/mcp"));
    assert!(job.body.contains("refresh_token=rt-3&"), "{}", job.body);
    let st = inj.state.lock().unwrap();
    assert_eq!(
        st.tokens.iter().filter(|t| t.refresh.is_some()).count(),
        1,
        "one current refresh token"
    );
}

#[test]
fn paths_are_normalised_as_rfc_3986_removes_dot_segments_with_encoded_dots_decoded() {
    for (path, want) in [
        ("/mcp", "/mcp"),
        ("/mcp/", "/mcp/"),
        ("/", "/"),
        ("/mcp/../other", "/other"),
        ("/mcp/%2e%2e/other", "/other"),
        ("/mcp/%2E%2e/other", "/other"),
        ("/mcp/.%2E/other", "/other"),
        ("/mcp/./x", "/mcp/x"),
        ("/other/../mcp", "/mcp"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/../../mcp", "/mcp"),
        ("/mcp/..", "/"),
        ("/mcp/...", "/mcp/..."),
        ("/mcp/%2e%2ex", "/mcp/..x"),
    ] {
        assert_eq!(normalise_path(path).as_deref(), Ok(want), "{path}");
    }
    // A separator some servers decode and others do not is never read as the endpoint.
    for path in [
        "/mcp%2f..%2fother",
        "/mcp/..%2Fother",
        "/mcp%5c..%5cother",
        "/mcp/..\\other",
        "/mcp/..;x/other",
        "/mcp/%2e%2e;/other",
        "/mcp/.;/x",
    ] {
        assert_eq!(normalise_path(path), Err(Skip::AmbiguousPath), "{path}");
    }
}

#[test]
fn a_path_that_leaves_or_reaches_the_resource_by_dot_segments_gets_nothing() {
    let inj = learned("https://a.example/mcp", "Bearer", "3600");
    for (url, normalised) in [
        ("https://a.example/mcp/../other", "/other"),
        ("https://a.example/mcp/%2e%2e/other", "/other"),
        ("https://a.example/mcp/%2E%2e/other", "/other"),
        ("https://a.example/mcp/..", "/"),
        ("https://a.example/other/../mcp", "/mcp"),
        ("https://a.example/mcp/x/../../token", "/token"),
    ] {
        assert_eq!(
            inj.pick(url, T0).unwrap_err(),
            Skip::DotSegments {
                normalised: normalised.into()
            },
            "{url}"
        );
    }
    for url in [
        "https://a.example/mcp%2f..%2fother",
        "https://a.example/mcp/..%2fother",
    ] {
        assert_eq!(inj.pick(url, T0).unwrap_err(), Skip::AmbiguousPath, "{url}");
    }
    // Read either way, still below the endpoint: allowed.
    assert!(inj.pick("https://a.example/mcp/./x", T0).is_ok());
    assert!(inj.pick("https://a.example/mcp/x/../y", T0).is_ok());
}

#[test]
fn the_host_a_request_names_must_be_the_origin_it_goes_to() {
    let url = "https://a.example/mcp";
    for ok in [
        vec![],
        vec!["a.example"],
        vec!["A.Example:443"],
        vec!["a.example", "a.example:443"],
    ] {
        assert_eq!(check_authority(url, ok.iter().copied()), Ok(()), "{ok:?}");
    }
    assert_eq!(
        check_authority("https://127.0.0.1:8443/mcp", ["127.0.0.1:8443"]),
        Ok(())
    );
    for bad in [
        vec!["b.example"],
        vec!["a.example:8443"],
        vec!["a.example", "b.example"],
        vec!["a.example.evil"],
        vec!["user@a.example"],
        vec!["a.example/x"],
        vec![""],
    ] {
        match check_authority(url, bad.iter().copied()) {
            Err(Skip::OtherHost { origin, .. }) => assert_eq!(origin, "https://a.example"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // The reason names both.
    let why = check_authority(url, ["b.example"]).unwrap_err().to_string();
    assert!(
        why.contains("b.example") && why.contains("https://a.example"),
        "{why}"
    );
}
