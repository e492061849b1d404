//! Frame times with 100k flows: `cargo run --release -p mcptap-tui --example bench`.
//! Draws into ratatui's `TestBackend` (the terminal's own write time is not counted) after
//! loading 100k completed, classified flows through `update`, then while scrolling, paging and
//! filtering. Results go to docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

use crossterm::event::KeyCode;
use mcptap_analyze::{FlowSummary, McpInfo, Role, RpcDirection, RpcKind, RpcMessage};
use mcptap_flow::{
    CapturedBody, Flow, FlowEvent, FlowId, FlowState, Headers, Request, Response, Timings,
};
use mcptap_tui::{render, update, App, Msg, Options};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::time::{Duration, Instant};

const N: u64 = 100_000;

fn flow(i: u64) -> Flow {
    let mut h = Headers::new();
    h.push("content-type", "application/json");
    if i % 3 != 0 {
        h.push(
            "authorization",
            "Bearer [redacted sha256:0123456789ab len=40]",
        );
    }
    let started = 1_767_225_600_000_000 + i as i64 * 1000;
    Flow {
        id: FlowId(i),
        state: FlowState::Completed,
        host: format!("mcp{}.example.com", i % 7),
        port: 443,
        request: Request {
            method: "POST".into(),
            url: format!("https://mcp{}.example.com/mcp?n={i}", i % 7),
            headers: h.clone(),
            body: CapturedBody::complete(format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo"}}}}"#).into_bytes()),
            ..Request::default()
        },
        response: Some(Response {
            status: if i % 10 == 0 { 401 } else { 200 },
            headers: h,
            body: CapturedBody::complete(format!(r#"{{"jsonrpc":"2.0","id":{i},"result":{{}}}}"#).into_bytes()),
            ..Response::default()
        }),
        timings: Timings { started, finished: Some(started + 900), ..Timings::default() },
        ..Flow::default()
    }
}

fn summary(f: &Flow) -> FlowSummary {
    FlowSummary {
        id: f.id,
        started: f.timings.started,
        role: Role::Mcp,
        method: "POST".into(),
        url: f.request.url.clone(),
        status: f.status(),
        synthetic: false,
        error: None,
        auth: None,
        mcp: Some(McpInfo {
            endpoint: f.request.url.clone(),
            messages: vec![RpcMessage {
                dir: RpcDirection::ClientToServer,
                kind: RpcKind::Request,
                method: Some("tools/call".into()),
                id: None,
                sse: false,
            }],
            ..McpInfo::default()
        }),
        issued_token: None,
        by_mcptap: None,
    }
}

fn stats(name: &str, mut t: Vec<Duration>) {
    t.sort();
    let p = |q: f64| t[((t.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} |",
        t.len(),
        p(0.5),
        p(0.95),
        p(1.0)
    );
}

fn main() {
    let mut app = App::new(Options {
        title: "bench".into(),
        color: true,
        ..Options::default()
    });
    let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let t0 = Instant::now();
    for i in 1..=N {
        let f = flow(i);
        let s = summary(&f);
        update(
            &mut app,
            Msg::Event(FlowEvent::Completed { flow: Box::new(f) }),
        );
        update(&mut app, Msg::Classified(Box::new(s)));
    }
    let load = t0.elapsed();
    println!("loaded {N} flows through update() in {:.0} ms ({:.1} µs/flow); whole flows kept: the last {}",
        load.as_secs_f64() * 1000.0, load.as_secs_f64() * 1e6 / N as f64, mcptap_tui::store::DEFAULT_KEEP);
    println!();
    println!("| action (160x48, 100k flows) | frames | p50 ms | p95 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    let mut frame = |app: &mut App, msgs: Vec<Msg>| {
        let t = Instant::now();
        for m in msgs {
            update(app, m);
        }
        render(app, &mut term).unwrap();
        t.elapsed()
    };
    let follow: Vec<_> = (0..200).map(|_| frame(&mut app, vec![])).collect();
    stats("redraw, following the newest flow", follow);
    let up: Vec<_> = (0..500)
        .map(|_| frame(&mut app, vec![Msg::key(KeyCode::Up)]))
        .collect();
    stats("↑ one row", up);
    let pg: Vec<_> = (0..500)
        .map(|_| frame(&mut app, vec![Msg::key(KeyCode::PageUp)]))
        .collect();
    stats("PgUp", pg);
    let home = vec![frame(&mut app, vec![Msg::key(KeyCode::Char('g'))])];
    stats("g (first flow, details evicted)", home);
    let mut filt = Vec::new();
    for expr in [
        "~c 401",
        "~d mcp3 & ~noauth",
        "!~m POST | echo",
        "~ph mcp & ~rpc tools/call",
    ] {
        let mut msgs = vec![Msg::key(KeyCode::Char('/'))];
        msgs.extend(Msg::keys(expr));
        msgs.push(Msg::key(KeyCode::Enter));
        filt.push(frame(&mut app, msgs));
        filt.push(frame(&mut app, vec![Msg::key(KeyCode::Esc)]));
    }
    stats("apply / clear a filter over 100k rows", filt);
    let live: Vec<_> = (N + 1..=N + 1000)
        .map(|i| {
            let f = flow(i);
            frame(
                &mut app,
                vec![Msg::Event(FlowEvent::Completed { flow: Box::new(f) })],
            )
        })
        .collect();
    stats("a new flow arrives (one frame each)", live);
}
