//! Healthy sessions yield no finding at all: both protocol modes, an authorization server on
//! another origin or on the MCP origin, opaque and JWT tokens, raw and redacted captures, with
//! and without the browser's /authorize, a restart that reuses the persisted token, a
//! cloud-connector shape (different User-Agents for OAuth and MCP), and a browser client.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::{analyze, Report};
use serde_json::json;

#[derive(Clone, Copy)]
pub struct Healthy {
    pub legacy: bool,
    pub as_other_origin: bool,
    pub jwt: bool,
    pub authorize_visible: bool,
    pub refresh: bool,
    pub redacted: bool,
}

impl Default for Healthy {
    fn default() -> Self {
        Healthy {
            legacy: true,
            as_other_origin: true,
            jwt: false,
            authorize_visible: true,
            refresh: true,
            redacted: false,
        }
    }
}

pub fn token_value(cfg: &Healthy, n: u32, as_: &str) -> String {
    if cfg.jwt {
        jwt(
            json!({"iss": as_, "aud": RS_MCP, "exp": BASE / 1_000_000 + 3600 * i64::from(n), "sub": "u1", "client_id": "client-1"}),
        )
    } else {
        format!("opaque-access-token-{n}-abcdefghijklmnopqrstuvwxyz")
    }
}

/// A full, correct session.
pub fn session(cfg: Healthy) -> Scenario {
    let as_ = if cfg.as_other_origin {
        AS.to_owned()
    } else {
        format!("{RS}/")
    };
    let r = |b: FlowBuilder| if cfg.redacted { b.redacted() } else { b };
    let t1 = token_value(&cfg, 1, &as_);
    let t2 = token_value(&cfg, 2, &as_);
    let mut s = Scenario::new();
    s.add(r(init_401()));
    s.add(r(prm(RS_MCP, &as_)));
    s.add(r(as_meta(&as_)));
    s.add(r(register(&as_)));
    if cfg.authorize_visible {
        s.add(r(authorize(&as_, "code-1")));
    }
    s.wait(800);
    s.add(r(issued(
        token_code(&as_, "code-1"),
        &t1,
        Some("refresh-1"),
    )));
    if cfg.legacy {
        s.add(r(init_ok(&t1, Some("sess-1"))));
        s.add(r(FlowBuilder::post(RS_MCP)
            .bearer(&t1)
            .session("sess-1")
            .pv("2025-06-18")
            .notify("notifications/initialized")
            .status(202)));
        s.add_long(
            r(FlowBuilder::get(RS_MCP)
                .bearer(&t1)
                .session("sess-1")
                .pv("2025-06-18")
                .header("accept", "text/event-stream")
                .sse(vec![
                    json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
                ])),
            120_000,
        );
        s.add(r(tools_list_ok(&t1, "sess-1", 2)));
        s.add(r(call(&t1, "sess-1", "tools/call", 3)));
    } else {
        let meta = |m: &str, id: i64| {
            FlowBuilder::post(RS_MCP)
                .bearer(&t1)
                .pv("2026-07-28")
                .header("mcp-method", m)
                .rpc_params(m, id, json!({"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}))
                .status(200)
        };
        s.add(r(meta("server/discover", 1).result(1, json!({"supportedVersions":["2026-07-28"],"capabilities":{},"serverInfo":{"name":"s","version":"1"}}))));
        s.add(r(meta("tools/list", 2).sse(vec![json!({"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}}]}})])));
        s.add(r(
            meta("tools/call", 3).result(3, json!({"content":[{"type":"text","text":"hi"}]}))
        ));
    }
    let tok = if cfg.refresh {
        s.wait(3_000_000);
        s.add(r(issued(
            token_refresh(&as_, "refresh-1"),
            &t2,
            Some("refresh-2"),
        )));
        t2.clone()
    } else {
        t1.clone()
    };
    if cfg.legacy {
        s.add(r(call(&tok, "sess-1", "tools/call", 4)));
        s.add(r(FlowBuilder::delete(RS_MCP)
            .bearer(&tok)
            .session("sess-1")
            .pv("2025-06-18")
            .status(200)));
    } else {
        s.add(r(FlowBuilder::post(RS_MCP)
            .bearer(&tok)
            .pv("2026-07-28")
            .header("mcp-method", "tools/call")
            .rpc_params("tools/call", 4, json!({"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}))
            .status(200)
            .result(4, json!({"content":[]}))));
    }
    s
}

fn assert_clean(r: &Report) {
    assert!(
        r.findings.is_empty(),
        "healthy session produced findings: {:#?}",
        r.findings
    );
}

#[test]
fn legacy_mode_with_as_on_another_origin() {
    let r = analyze(&session(Healthy::default()).flows);
    assert_clean(&r);
    assert!(r.visibility.authorize_seen && r.visibility.token_seen && r.visibility.mcp_seen);
    assert_eq!(r.stories.len(), 1, "{:#?}", r.stories);
    let story = &r.stories[0];
    assert_eq!(story.issuer, AS);
    assert_eq!(story.resource.as_deref(), Some(RS_MCP));
    assert_eq!(story.client_id.as_deref(), Some("client-1"));
    assert_eq!(story.tokens.len(), 2);
    assert_eq!(story.tokens[0].grant, "authorization_code");
    assert_eq!(story.tokens[1].grant, "refresh_token");
    assert!(
        story.tokens[0].uses >= 4 && story.tokens[1].uses == 2,
        "{story:#?}"
    );
}

#[test]
fn stateless_mode_with_as_on_the_mcp_origin_and_jwt_tokens() {
    let r = analyze(
        &session(Healthy {
            legacy: false,
            as_other_origin: false,
            jwt: true,
            ..Default::default()
        })
        .flows,
    );
    assert_clean(&r);
    assert_eq!(r.stories[0].tokens[0].jwt_aud, vec![RS_MCP.to_owned()]);
}

#[test]
fn forward_proxy_without_browser_visibility() {
    let r = analyze(
        &session(Healthy {
            authorize_visible: false,
            ..Default::default()
        })
        .flows,
    );
    assert_clean(&r);
    assert!(!r.visibility.authorize_seen);
    assert!(
        r.visibility.not_checked.contains(&"pkce-mismatch"),
        "{:?}",
        r.visibility
    );
}

#[test]
fn redacted_capture_is_as_healthy_as_the_raw_one() {
    for legacy in [true, false] {
        let r = analyze(
            &session(Healthy {
                redacted: true,
                jwt: true,
                legacy,
                ..Default::default()
            })
            .flows,
        );
        assert_clean(&r);
        assert_eq!(r.stories[0].tokens[0].uses, if legacy { 5 } else { 3 });
    }
}

#[test]
fn no_refresh_and_stateless_with_opaque_tokens() {
    let r = analyze(
        &session(Healthy {
            legacy: false,
            refresh: false,
            ..Default::default()
        })
        .flows,
    );
    assert_clean(&r);
}

#[test]
fn restart_reusing_the_persisted_token() {
    let mut s = session(Healthy {
        refresh: false,
        ..Default::default()
    });
    let t1 = token_value(&Healthy::default(), 1, AS);
    s.wait(600_000);
    // A new process: initialize with the stored token, new session.
    s.add(init_ok(&t1, Some("sess-2")));
    s.add(tools_list_ok(&t1, "sess-2", 2));
    s.add(
        FlowBuilder::delete(RS_MCP)
            .bearer(&t1)
            .session("sess-2")
            .pv("2025-06-18")
            .status(405),
    );
    assert_clean(&analyze(&s.flows));
}

#[test]
fn cloud_connector_shape_with_different_user_agents() {
    // Claude.ai connectors: python-httpx for discovery and token, Claude-User for MCP.
    let mut s = Scenario::new();
    let oauth = "python-httpx/0.28.1";
    s.add(init_401().ua(oauth));
    s.add(prm(RS_MCP, AS).ua(oauth));
    s.add(as_meta(AS).ua(oauth));
    s.add(register(AS).ua(oauth));
    s.wait(5_000);
    s.add(issued(token_code(AS, "c"), "tok-1", Some("r")).ua(oauth));
    s.add(init_ok("tok-1", Some("s1")).ua("Claude-User"));
    s.add(tools_list_ok("tok-1", "s1", 2).ua("Claude-User"));
    assert_clean(&analyze(&s.flows));
}

#[test]
fn browser_client_with_correct_cors() {
    let mut s = Scenario::new();
    let origin = "https://app.example";
    s.add(
        FlowBuilder::options(RS_MCP)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-protocol-version",
            )
            .status(204)
            .resp_header("access-control-allow-origin", origin)
            .resp_header("access-control-allow-methods", "GET, POST, DELETE")
            .resp_header(
                "access-control-allow-headers",
                "Authorization, Content-Type, Mcp-Protocol-Version, Mcp-Session-Id, Last-Event-ID",
            ),
    );
    s.add(
        init_401()
            .header("origin", origin)
            .resp_header("access-control-allow-origin", origin)
            .resp_header(
                "access-control-expose-headers",
                "WWW-Authenticate, Mcp-Session-Id",
            ),
    );
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(authorize(AS, "c"));
    s.add(issued(token_code(AS, "c"), "tok-1", None));
    s.add(
        init_ok("tok-1", Some("s1"))
            .header("origin", origin)
            .resp_header("access-control-allow-origin", origin)
            .resp_header("access-control-expose-headers", "Mcp-Session-Id"),
    );
    assert_clean(&analyze(&s.flows));
}

#[test]
fn auth_less_server_is_not_lazy() {
    let mut s = Scenario::new();
    s.add(FlowBuilder::post(RS_MCP).rpc("initialize", 1).status(200).result(1, json!({"protocolVersion":"2025-03-26","capabilities":{},"serverInfo":{"name":"s","version":"1"}})));
    s.add(
        FlowBuilder::post(RS_MCP)
            .rpc("tools/list", 2)
            .status(200)
            .result(2, json!({"tools":[]})),
    );
    s.add(
        FlowBuilder::get(&format!("{RS}/.well-known/oauth-protected-resource/mcp"))
            .status(404)
            .resp_body("text/plain", "Not Found"),
    );
    let r = analyze(&s.flows);
    assert_clean(&r);
}

#[test]
fn arrival_order_does_not_matter() {
    // The same session, pushed in file order, in reverse, and in completion order, gives the
    // same report.
    let s = session(Healthy::default());
    let mut rev = s.flows.clone();
    rev.reverse();
    assert_eq!(analyze(&s.flows), analyze(&rev));
}

#[test]
fn the_engines_own_redaction_keeps_healthy_sessions_healthy() {
    // The same sessions after mcptap-flow's redact_flow (what the engine records): same
    // stories, same token uses, still no finding.
    for cfg in [
        Healthy::default(),
        Healthy {
            legacy: false,
            as_other_origin: false,
            jwt: true,
            ..Default::default()
        },
    ] {
        let raw = session(cfg);
        let mut red = raw.flows.clone();
        for f in &mut red {
            mcptap_flow::redact::redact_flow(f);
        }
        assert_ne!(red, raw.flows, "redaction changed nothing");
        let (a, b) = (analyze(&raw.flows), analyze(&red));
        assert_clean(&b);
        assert_eq!(a.stories, b.stories);
    }
}
