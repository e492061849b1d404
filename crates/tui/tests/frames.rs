//! Snapshot tests of rendered frames (ratatui's `TestBackend`): what the user sees, for an
//! empty view, an OAuth dance, a selected SSE flow, a selected finding, a filter and a narrow
//! terminal. Flows are literals with fixed times; the live path (events, then the analyzer's
//! classification and findings) feeds the view as the CLI does.
#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use insta::assert_snapshot;
use mcptap_analyze::Analyzer;
use mcptap_flow::{
    redact, CapturedBody, ErrorKind, Flow, FlowError, FlowEvent, FlowId, FlowState, Headers,
    Request, Response, SseEvent, Timings, TlsInfo,
};
use mcptap_tui::{render, update, App, Focus, Msg, Options};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (k, v) in pairs {
        h.push(*k, *v);
    }
    h
}

struct F {
    id: u64,
    at_ms: i64,
    method: &'static str,
    url: String,
    req_h: Vec<(&'static str, String)>,
    req_body: String,
    status: u16,
    resp_h: Vec<(&'static str, String)>,
    resp_body: String,
    sse: Vec<(i64, String)>,
}

fn f(id: u64, at_ms: i64, method: &'static str, url: &str, status: u16) -> F {
    F {
        id,
        at_ms,
        method,
        url: url.to_owned(),
        req_h: vec![],
        req_body: String::new(),
        status,
        resp_h: vec![],
        resp_body: String::new(),
        sse: vec![],
    }
}

impl F {
    fn req(mut self, ct: &str, body: &str) -> F {
        self.req_h.push(("content-type", ct.to_owned()));
        self.req_body = body.to_owned();
        self
    }
    fn rh(mut self, k: &'static str, v: &str) -> F {
        self.req_h.push((k, v.to_owned()));
        self
    }
    fn resp(mut self, ct: &str, body: &str) -> F {
        self.resp_h.push(("content-type", ct.to_owned()));
        self.resp_body = body.to_owned();
        self
    }
    fn sh(mut self, k: &'static str, v: &str) -> F {
        self.resp_h.push((k, v.to_owned()));
        self
    }
    fn event(mut self, at_ms: i64, data: &str) -> F {
        self.sse.push((at_ms, data.to_owned()));
        self
    }
    fn build(self) -> Flow {
        let started = T0 + self.at_ms * 1000;
        let rh: Vec<(&str, &str)> = self.req_h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sh: Vec<(&str, &str)> = self.resp_h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let host = "mcp.example.com";
        let mut flow = Flow {
            id: FlowId(self.id),
            state: FlowState::Completed,
            host: host.into(),
            port: 443,
            client_addr: Some("127.0.0.1:50000".into()),
            client_tls: Some(
                TlsInfo {
                    sni: Some(host.into()),
                    alpn: Some("http/1.1".into()),
                    version: Some("TLSv1.3".into()),
                    cipher: None,
                    unverified: false,
                }
                .into(),
            ),
            request: Request {
                method: self.method.into(),
                url: self.url,
                headers: headers(&rh),
                body: CapturedBody::complete(self.req_body.into_bytes()),
                ..Request::default()
            },
            response: Some(Response {
                status: self.status,
                headers: headers(&sh),
                body: CapturedBody::complete(self.resp_body.into_bytes()),
                sse: self
                    .sse
                    .into_iter()
                    .map(|(at, data)| SseEvent {
                        at: T0 + at * 1000,
                        event: Some("message".into()),
                        data,
                        ..SseEvent::default()
                    })
                    .collect(),
                ..Response::default()
            }),
            timings: Timings {
                started,
                response_head: Some(started + 8_000),
                finished: Some(started + 12_300),
                ..Timings::default()
            },
            ..Flow::default()
        };
        redact::redact_flow(&mut flow);
        flow
    }
}

const MCP: &str = "https://mcp.example.com/mcp";
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo","version":"1"}}}"#;

/// A whole OAuth dance, then MCP calls (the last one answered over SSE).
fn dance() -> Vec<Flow> {
    let bearer = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.sig-abcdef";
    vec![
        f(1, 0, "POST", MCP, 401)
            .req("application/json", INIT)
            .rh("accept", "application/json, text/event-stream")
            .sh("www-authenticate", r#"Bearer realm="mcp", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#)
            .build(),
        f(2, 40, "GET", "https://mcp.example.com/.well-known/oauth-protected-resource/mcp", 200)
            .resp("application/json", r#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://mcp.example.com"]}"#)
            .build(),
        f(3, 80, "GET", "https://mcp.example.com/.well-known/oauth-authorization-server", 200)
            .resp("application/json", r#"{"issuer":"https://mcp.example.com","authorization_endpoint":"https://mcp.example.com/authorize","token_endpoint":"https://mcp.example.com/token","registration_endpoint":"https://mcp.example.com/register","code_challenge_methods_supported":["S256"],"response_types_supported":["code"]}"#)
            .build(),
        f(4, 120, "POST", "https://mcp.example.com/register", 201)
            .req("application/json", r#"{"client_name":"demo","redirect_uris":["http://127.0.0.1:33418/callback"]}"#)
            .resp("application/json", r#"{"client_id":"c-123","redirect_uris":["http://127.0.0.1:33418/callback"]}"#)
            .build(),
        f(5, 2000, "POST", "https://mcp.example.com/token", 200)
            .req("application/x-www-form-urlencoded", "grant_type=authorization_code&code=abc123&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Fcallback&client_id=c-123&code_verifier=verifier-verifier-verifier-verifier-verifier-1234&resource=https%3A%2F%2Fmcp.example.com%2Fmcp")
            .resp("application/json", r#"{"access_token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.sig-abcdef","token_type":"Bearer","expires_in":3600}"#)
            .build(),
        f(6, 2100, "POST", MCP, 200)
            .req("application/json", INIT)
            .rh("accept", "application/json, text/event-stream")
            .rh("authorization", bearer)
            .resp("application/json", r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"demo","version":"1"}}}"#)
            .sh("mcp-session-id", "sess-0123456789")
            .build(),
        f(7, 2200, "POST", MCP, 200)
            .req("application/json", r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#)
            .rh("accept", "application/json, text/event-stream")
            .rh("mcp-protocol-version", "2025-06-18")
            .rh("authorization", bearer)
            .rh("mcp-session-id", "sess-0123456789")
            .resp("text/event-stream", "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}\n\n")
            .event(2210, r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#)
            .event(2250, r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"hi"}]}}"#)
            .build(),
    ]
}

/// A token is issued and never sent: the MCP endpoint keeps answering 401 (token-not-sent).
fn token_not_sent() -> Vec<Flow> {
    vec![
        f(1, 0, "POST", MCP, 401)
            .req("application/json", INIT)
            .build(),
        f(2, 1000, "POST", "https://mcp.example.com/token", 200)
            .req(
                "application/x-www-form-urlencoded",
                "grant_type=authorization_code&code=abc",
            )
            .resp(
                "application/json",
                r#"{"access_token":"tok-abcdefgh","token_type":"Bearer","expires_in":3600}"#,
            )
            .build(),
        f(3, 2000, "POST", MCP, 401)
            .req("application/json", INIT)
            .build(),
        f(4, 40_000, "POST", MCP, 401)
            .req("application/json", INIT)
            .build(),
    ]
}

fn opts() -> Options {
    Options {
        title: "proxy http://127.0.0.1:8080".into(),
        color: false,
        keep: Some(100),
        read_only: false,
        setup: vec![
            "eval \"$(mcptap env -p 8080)\"   (or HTTPS_PROXY=http://127.0.0.1:8080)".into(),
            "CA certificate: /home/u/.mcptap/mcptap-ca-cert.pem".into(),
        ],
    }
}

/// Feeds flows as a live session does: events, then the analyzer's classification and findings.
fn live(flows: Vec<Flow>) -> App {
    live_with(flows, false)
}

/// [`live`], with colours on or off.
fn live_with(flows: Vec<Flow>, color: bool) -> App {
    let mut app = App::new(Options { color, ..opts() });
    let mut analyzer = Analyzer::default();
    for flow in flows {
        update(
            &mut app,
            Msg::Event(FlowEvent::RequestStarted {
                flow: Box::new(flow.head()),
            }),
        );
        let found = analyzer.push(&flow);
        let id = flow.id;
        update(
            &mut app,
            Msg::Event(FlowEvent::Completed {
                flow: Box::new(flow),
            }),
        );
        if let Some(s) = analyzer.summary(id) {
            update(&mut app, Msg::Classified(Box::new(s.clone())));
        }
        if !found.is_empty() {
            update(&mut app, Msg::Findings(analyzer.findings()));
        }
    }
    let _ = analyzer.finish();
    update(&mut app, Msg::Findings(analyzer.findings()));
    app
}

fn frame(app: &mut App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    render(app, &mut term).unwrap();
    term.backend().to_string()
}

fn keys(app: &mut App, msgs: impl IntoIterator<Item = Msg>) {
    for m in msgs {
        update(app, m);
    }
}

#[test]
fn empty() {
    let mut app = App::new(opts());
    assert_snapshot!(frame(&mut app, 140, 20));
}

#[test]
fn oauth_dance() {
    let report = mcptap_analyze::analyze(&dance());
    assert!(
        report.findings.is_empty(),
        "a healthy dance: {:?}",
        report.findings
    );
    let mut app = live(dance());
    assert!(app.following());
    assert_eq!(
        app.selected_id(),
        Some(FlowId(7)),
        "follow mode selects the newest flow"
    );
    let shot = frame(&mut app, 140, 30);
    for phase in ["PRM", "AS meta", "register", "token", "MCP"] {
        assert!(shot.contains(phase), "{phase} missing:\n{shot}");
    }
    assert!(shot.contains("tools/call echo"), "{shot}");
    assert_snapshot!(shot);
}

#[test]
fn selected_sse_flow() {
    let mut app = live(dance());
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    assert_eq!(app.focus(), Focus::Detail);
    frame(&mut app, 140, 40);
    // Scroll the detail pane down to the response.
    keys(
        &mut app,
        std::iter::repeat_with(|| Msg::key(KeyCode::Char('j'))).take(22),
    );
    let shot = frame(&mut app, 140, 40);
    assert!(shot.contains("SSE events (2)"), "{shot}");
    assert!(shot.contains("00:00:02.250 event=message"), "{shot}");
    assert!(
        !shot.contains("sig-abcdef"),
        "the token never shows: {shot}"
    );
    assert_snapshot!(shot);
}

#[test]
fn finding_selected() {
    let mut app = live(token_not_sent());
    assert!(
        app.rows().len() == 4,
        "four flows: {:?}",
        app.rows().iter().map(|r| r.id).collect::<Vec<_>>()
    );
    keys(&mut app, [Msg::key(KeyCode::Tab), Msg::key(KeyCode::Enter)]);
    assert_eq!(app.focus(), Focus::Findings);
    assert!(!app.following(), "jumping to evidence leaves follow mode");
    let first = app.selected_id();
    assert!(first.is_some());
    let shot = frame(&mut app, 140, 30);
    assert!(shot.contains("token-not-sent"), "{shot}");
    assert_snapshot!("finding_selected", shot);
    // `?` opens its explain page.
    keys(&mut app, [Msg::key(KeyCode::Char('?'))]);
    let shot = frame(&mut app, 140, 30);
    assert!(shot.contains("explain token-not-sent"), "{shot}");
    assert_snapshot!("finding_explain", shot);
    keys(&mut app, [Msg::key(KeyCode::Esc)]);
    assert!(!frame(&mut app, 140, 30).contains("explain token-not-sent"));
}

#[test]
fn filter_applied() {
    let mut app = live(dance());
    keys(&mut app, [Msg::key(KeyCode::Char('/'))]);
    keys(&mut app, Msg::keys("~ph token | ~c 401"));
    let typing = frame(&mut app, 140, 20);
    assert!(typing.contains("/~ph token | ~c 401_"), "{typing}");
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    assert_eq!(app.visible_len(), 2);
    let shot = frame(&mut app, 140, 20);
    assert!(
        shot.contains("2/7 flows") && shot.contains("filter: ~ph token | ~c 401"),
        "{shot}"
    );
    assert_snapshot!(shot);
    // A bad expression says why and keeps the old filter.
    keys(&mut app, [Msg::key(KeyCode::Char('/'))]);
    keys(&mut app, Msg::keys(" & ~zz"));
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    assert!(frame(&mut app, 140, 20).contains("unknown filter ~zz"));
    keys(&mut app, [Msg::key(KeyCode::Esc), Msg::key(KeyCode::Esc)]);
    assert_eq!(app.visible_len(), 7, "Esc clears the filter");
    // No auth.
    keys(&mut app, [Msg::key(KeyCode::Char('/'))]);
    keys(&mut app, Msg::keys("~noauth & ~ph mcp"));
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    assert_eq!(app.visible_len(), 1);
}

#[test]
fn narrow_terminal() {
    let mut app = live(dance());
    let shot = frame(&mut app, 60, 24);
    assert_snapshot!(shot);
}

#[test]
fn scrolling_leaves_follow_mode_and_g_resumes_it() {
    let mut app = live(dance());
    keys(&mut app, [Msg::key(KeyCode::Up), Msg::key(KeyCode::Up)]);
    assert!(!app.following());
    assert_eq!(app.selected_id(), Some(FlowId(5)));
    // New traffic does not move the selection while not following.
    let mut more = dance().pop().unwrap();
    more.id = FlowId(8);
    update(
        &mut app,
        Msg::Event(FlowEvent::Completed {
            flow: Box::new(more),
        }),
    );
    assert_eq!(app.selected_id(), Some(FlowId(5)));
    keys(&mut app, [Msg::key(KeyCode::Char('G'))]);
    assert!(app.following());
    assert_eq!(app.selected_id(), Some(FlowId(8)));
}

#[test]
fn live_sse_events_show_as_they_arrive() {
    let mut app = App::new(opts());
    let mut flow = dance().pop().unwrap();
    let events = std::mem::take(&mut flow.response.as_mut().unwrap().sse);
    let head = flow.response.clone().unwrap();
    update(
        &mut app,
        Msg::Event(FlowEvent::RequestStarted {
            flow: Box::new(flow.head()),
        }),
    );
    update(
        &mut app,
        Msg::Event(FlowEvent::ResponseHead {
            id: flow.id,
            at: T0,
            status: head.status,
            version: head.version,
            headers: head.headers.clone(),
        }),
    );
    update(
        &mut app,
        Msg::Event(FlowEvent::Sse {
            id: flow.id,
            event: events[0].clone(),
        }),
    );
    let shot = frame(&mut app, 140, 100);
    assert!(shot.contains("SSE events (1)"), "{shot}");
    assert!(shot.contains("(1 ev)"), "{shot}");
    update(
        &mut app,
        Msg::Event(FlowEvent::Sse {
            id: flow.id,
            event: events[1].clone(),
        }),
    );
    let shot = frame(&mut app, 140, 100);
    assert!(
        shot.contains("SSE events (2)") && shot.contains("(2 ev)"),
        "{shot}"
    );
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = App::new(opts());
    keys(&mut app, [Msg::key(KeyCode::Char('q'))]);
    assert!(app.should_quit());
    let mut app = App::new(opts());
    keys(
        &mut app,
        [Msg::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        ))],
    );
    assert!(app.should_quit());
}

#[test]
fn old_flows_keep_their_row_but_not_their_body() {
    let mut app = App::new(Options {
        keep: Some(3),
        ..opts()
    });
    for i in 1..=10u64 {
        let mut fl = dance()[1].clone();
        fl.id = FlowId(i);
        update(
            &mut app,
            Msg::Event(FlowEvent::Completed { flow: Box::new(fl) }),
        );
    }
    assert_eq!(app.rows().len(), 10);
    keys(&mut app, [Msg::key(KeyCode::Char('g'))]);
    let shot = frame(&mut app, 140, 30);
    assert!(shot.contains("details not kept in memory"), "{shot}");
}

#[test]
fn old_flows_are_asked_of_the_host_and_shown_when_it_answers() {
    // The view never reads the disk: a flow evicted from memory is asked for by message, once,
    // and shown when the host sends it back.
    let (tx, asked) = std::sync::mpsc::channel();
    let mut app = App::new(Options {
        keep: Some(3),
        ..opts()
    })
    .with_host(mcptap_tui::Host::new(move |r| {
        let _ = tx.send(r);
    }));
    let flow = |i: u64| {
        let mut fl = dance()[1].clone();
        fl.id = FlowId(i);
        fl.request.url =
            format!("https://rs.example/.well-known/oauth-protected-resource/mcp?n={i}");
        fl
    };
    for i in 1..=10u64 {
        update(
            &mut app,
            Msg::Event(FlowEvent::Completed {
                flow: Box::new(flow(i)),
            }),
        );
    }
    keys(&mut app, [Msg::key(KeyCode::Char('g'))]);
    let shot = frame(&mut app, 140, 30);
    assert!(
        shot.contains("Reading it back from the session journal"),
        "{shot}"
    );
    let _ = frame(&mut app, 140, 30);
    assert_eq!(
        asked.try_iter().collect::<Vec<_>>(),
        [mcptap_tui::Request::Flow(FlowId(1))],
        "asked once"
    );
    update(&mut app, Msg::Loaded(Box::new(flow(1))));
    let shot = frame(&mut app, 140, 30);
    assert!(!shot.contains("details not kept in memory"), "{shot}");
    assert!(shot.contains("protected-resource/mcp?n=1 "), "{shot}");
    // The host says why it cannot; the view says it, not another flow.
    keys(&mut app, [Msg::key(KeyCode::Down)]);
    let _ = frame(&mut app, 140, 30);
    assert_eq!(
        asked.try_iter().collect::<Vec<_>>(),
        [mcptap_tui::Request::Flow(FlowId(2))]
    );
    update(
        &mut app,
        Msg::Unavailable {
            id: FlowId(2),
            why: "It could not be read back from the session journal: damaged".into(),
        },
    );
    let shot = frame(&mut app, 140, 30);
    assert!(shot.contains("could not be read back"), "{shot}");
    assert_eq!(asked.try_iter().count(), 0, "not asked again");
}

#[test]
fn read_only_session_view() {
    let flows = dance();
    let report = mcptap_analyze::analyze(&flows);
    let mut app = App::from_session(flows, &report, opts());
    assert!(!app.following());
    assert_eq!(app.selected_id(), Some(FlowId(1)));
    let shot = frame(&mut app, 140, 30);
    assert!(
        shot.contains("read-only") && shot.contains("tools/call echo"),
        "{shot}"
    );
}

#[test]
fn a_flow_mcptap_made_itself_says_so_in_the_detail() {
    let mut flows = dance();
    let last = flows.last_mut().unwrap();
    last.by_mcptap = Some("inject-refresh".into());
    let mut app = live(flows);
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    let shot = frame(&mut app, 140, 40);
    assert!(
        shot.contains("made by mcptap (inject-refresh), not by the client"),
        "{shot}"
    );
    let mut app = live(dance());
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    assert!(!frame(&mut app, 140, 40).contains("made by mcptap"));
}

#[test]
fn the_detail_shows_a_new_upstream_connections_connect_time() {
    let mut flows = dance();
    let last = flows.last_mut().unwrap();
    last.timings.connected = Some(last.timings.started + 3_400);
    let mut app = live(flows);
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    let shot = frame(&mut app, 140, 40);
    assert!(shot.contains("upstream connect 3.4ms"), "{shot}");
    // A reused connection (no connect time) says nothing about it.
    let mut app = live(dance());
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    assert!(!frame(&mut app, 140, 40).contains("upstream connect"));
}

#[test]
fn the_detail_says_why_no_token_was_injected_and_that_an_upstream_went_unverified() {
    let mut flows = dance();
    let last = flows.last_mut().unwrap();
    last.not_injected = Some("the path is /other once dot-segments are removed".into());
    last.upstream_tls = Some(
        TlsInfo {
            version: Some("TLSv1.3".into()),
            unverified: true,
            ..Default::default()
        }
        .into(),
    );
    let mut app = live(flows);
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    let shot = frame(&mut app, 160, 40);
    assert!(
        shot.contains(
            "mcptap did NOT inject a token: the path is /other once dot-segments are removed"
        ),
        "{shot}"
    );
    assert!(shot.contains("certificate NOT verified (-k)"), "{shot}");
    let mut app = live(dance());
    keys(&mut app, [Msg::key(KeyCode::Enter)]);
    let shot = frame(&mut app, 160, 40);
    assert!(!shot.contains("NOT inject") && !shot.contains("NOT verified"));
}

/// Claude Code's "Needs authentication", live: a token is issued, then bare MCP requests go out
/// while it is valid; a call answered over SSE whose stream the client then closes (normal
/// Streamable HTTP), and a stream the server cuts (a real failure).
fn needs_auth() -> Vec<Flow> {
    let mut flows = token_not_sent();
    let cut = |mut flow: Flow, kind: ErrorKind| {
        flow.state = FlowState::Aborted;
        flow.error = Some(FlowError::new(kind, kind.as_str()));
        flow
    };
    flows.push(cut(
        f(5, 41_000, "POST", MCP, 200)
            .req("application/json", r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search","arguments":{}}}"#)
            .rh("authorization", "Bearer other-token-1")
            .resp("text/event-stream", "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n")
            .event(41_050, r#"{"jsonrpc":"2.0","id":2,"result":{}}"#)
            .build(),
        ErrorKind::ClientDisconnected,
    ));
    flows.push(cut(
        f(6, 42_000, "POST", MCP, 200)
            .req("application/json", r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{}}}"#)
            .rh("authorization", "Bearer other-token-1")
            .resp("text/event-stream", "")
            .build(),
        ErrorKind::UpstreamDisconnected,
    ));
    flows
}

/// The rows and panes of the "Needs authentication" capture, at 80×24 and 160×45.
#[test]
fn needs_authentication_points_at_the_bare_request() {
    for (w, h) in [(80u16, 24u16), (160, 45)] {
        let mut app = live(needs_auth());
        // Select the first finding's first evidence, as a user following the findings would.
        keys(&mut app, [Msg::key(KeyCode::Tab), Msg::key(KeyCode::Enter)]);
        let shot = frame(&mut app, w, h);
        let tok = &redact::fingerprint("tok-abcdefgh")[..6];
        assert!(
            shot.contains(&format!("issued {tok}")),
            "the token row names its token:\n{shot}"
        );
        let bare = if w >= 120 {
            format!("none — token {tok} valid")
        } else {
            format!("none, had {tok}")
        };
        assert!(
            shot.contains(&bare),
            "the bare request names the valid token:\n{shot}"
        );
        assert!(
            shot.contains("!1"),
            "evidence markers name their finding:\n{shot}"
        );
        assert!(shot.contains("CUT"), "a real cut is shown:\n{shot}");
        assert!(!shot.contains("ABRT"), "{shot}");
        assert_snapshot!(format!("needs_auth_{w}x{h}"), shot);
    }
}

/// The alarm is in colour: the bare request's auth cell is light red and bold, a stream the
/// client closed is dim, and the selected row has one style.
#[test]
fn the_bare_request_is_in_the_alarm_colour() {
    use ratatui::style::{Color, Modifier};
    let mut app = live_with(needs_auth(), true);
    keys(&mut app, [Msg::key(KeyCode::Home)]);
    let mut term = Terminal::new(TestBackend::new(160, 45)).unwrap();
    render(&mut app, &mut term).unwrap();
    let buf = term.backend().buffer().clone();
    let find = |needle: &str| -> (u16, u16) {
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_owned())
                .collect();
            if let Some(i) = line.find(needle) {
                let x = line[..i].chars().count() as u16;
                return (x, y);
            }
        }
        panic!("{needle} not drawn");
    };
    let (x, y) = find("none — token");
    let cell = &buf[(x, y)];
    assert_eq!(cell.fg, Color::LightRed, "alarm colour");
    assert!(cell.modifier.contains(Modifier::BOLD));
    let (_, y) = find("tools/call search");
    assert!(
        (0..buf.area.width)
            .all(|x| buf[(x, y)].fg != Color::Red && buf[(x, y)].fg != Color::Magenta),
        "a client's close is no alarm"
    );
    let line: String = (0..buf.area.width)
        .map(|x| buf[(x, y)].symbol().to_owned())
        .collect();
    let x = line.find(" 200 ").unwrap() as u16 + 1;
    assert_eq!(buf[(x, y)].fg, Color::DarkGray, "a client's close is dim");
    let (_, y) = find("CUT");
    assert!(
        (0..buf.area.width).any(|x| buf[(x, y)].fg == Color::Red),
        "a real cut is an alarm"
    );
    // The selected row (the first, after Home): every cell reversed, none with its own colour.
    let (_, y) = find("00:00:00.000");
    for x in 2..150 {
        let c = &buf[(x, y)];
        assert!(
            c.modifier.contains(Modifier::REVERSED),
            "cell {x} not reversed"
        );
        assert_eq!(c.fg, Color::Reset, "cell {x} has its own colour");
    }
}

/// Suspected findings look different from confirmed ones, cleared ones are dim.
#[test]
fn suspected_and_cleared_findings_look_different() {
    use mcptap_analyze::Status;
    let mut app = live(needs_auth());
    let base = {
        let mut a = Analyzer::default();
        for flow in needs_auth() {
            a.push(&flow);
        }
        let _ = a.finish();
        a.findings()
    };
    let mut suspected = base[0].clone();
    suspected.status = Status::Suspected;
    suspected.decides = Some("the next MCP request".into());
    let mut cleared = base[1].clone();
    cleared.status = Status::Cleared;
    update(
        &mut app,
        Msg::Findings(vec![base[0].clone(), suspected, cleared]),
    );
    let shot = frame(&mut app, 160, 45);
    assert!(shot.contains("SUSPECTED"), "{shot}");
    assert!(shot.contains("cleared"), "{shot}");
    assert_snapshot!("findings_by_status", shot);
}

/// The empty live view says how to point a client at the proxy and where the CA is.
#[test]
fn empty_view_says_how_to_start() {
    let mut app = App::new(opts());
    for (w, h) in [(80u16, 24u16), (160, 45)] {
        let shot = frame(&mut app, w, h);
        assert!(shot.contains("eval \"$(mcptap env -p 8080)\""), "{shot}");
        assert!(shot.contains("mcptap-ca-cert.pem"), "{shot}");
        assert_snapshot!(format!("empty_{w}x{h}"), shot);
    }
}

/// `?` outside the findings pane: the keys, what the row markers mean, and the filters.
#[test]
fn help_explains_keys_and_markers() {
    let mut app = live(needs_auth());
    keys(&mut app, [Msg::key(KeyCode::Char('?'))]);
    let shot = frame(&mut app, 160, 45);
    assert!(shot.contains("!N cited by finding N"), "{shot}");
    assert_snapshot!("help_160x45", shot);
}
