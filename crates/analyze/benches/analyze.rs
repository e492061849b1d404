//! Benchmark of the analyzer, `cargo bench -p mcptap-analyze`:
//! - offline: `analyze` of 100k synthetic flows held in memory (one OAuth dance, then MCP
//!   calls with SSE and JSON responses), flows per second;
//! - live: 1M flows (`ANALYZE_LIVE_FLOWS`) streamed one by one into an [`Analyzer`] with the
//!   options the proxy runs it with: MCP calls over rotating sessions, other traffic, and a
//!   token refresh every 10k flows. Prints the time and the process's RSS after 1k flows
//!   and at the end, which must stay flat: its state is bounded by what a decision needs,
//!   not by the number of flows.

use bytes::Bytes;
use mcptap_analyze::{analyze, Analyzer, Options};
use mcptap_flow::{
    CapturedBody, Flow, FlowId, FlowState, Headers, Request, Response, SseEvent, Timings,
};
use std::time::Instant;

const N: usize = 100_000;

/// The allocator the `mcptap` binary runs `mcptap analyze` with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The process's resident memory in KiB (Linux), 0 where unknown.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)] // a literal flow, field by field
fn flow(
    id: u64,
    at: i64,
    method: &str,
    url: &str,
    req: Headers,
    body: &str,
    status: u16,
    resp: Headers,
    resp_body: &str,
) -> Flow {
    let sse = if resp.get("content-type") == Some("text/event-stream") {
        vec![SseEvent {
            at,
            data: resp_body.to_owned(),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    Flow {
        id: FlowId(id),
        state: FlowState::Completed,
        host: "rs.example".into(),
        port: 443,
        request: Request {
            method: method.into(),
            url: url.into(),
            headers: req,
            body: CapturedBody::complete(Bytes::from(body.to_owned())),
            ..Default::default()
        },
        response: Some(Response {
            status,
            headers: resp,
            body: CapturedBody::complete(Bytes::from(resp_body.to_owned())),
            sse,
            ..Default::default()
        }),
        timings: Timings {
            started: at,
            finished: Some(at + 2_000),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(n, v)| (*n, *v)).collect()
}

fn main() {
    // Live first, so that its RSS is not the offline run's left-overs.
    live();
    offline();
}

fn offline() {
    let base = 1_750_000_000_000_000i64;
    let mcp = "https://rs.example/mcp";
    let prm = "https://rs.example/.well-known/oauth-protected-resource/mcp";
    let json = ("content-type", "application/json");
    let mut flows = vec![
        flow(1, base, "POST", mcp, h(&[json]), r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#, 401,
             h(&[("www-authenticate", &format!(r#"Bearer resource_metadata="{prm}""#))]), ""),
        flow(2, base + 10_000, "GET", prm, h(&[]), "", 200, h(&[json]), r#"{"resource":"https://rs.example/mcp","authorization_servers":["https://auth.example"]}"#),
        flow(3, base + 20_000, "GET", "https://auth.example/.well-known/oauth-authorization-server", h(&[]), "", 200, h(&[json]),
             r#"{"issuer":"https://auth.example","authorization_endpoint":"https://auth.example/authorize","token_endpoint":"https://auth.example/token","registration_endpoint":"https://auth.example/register","response_types_supported":["code"],"code_challenge_methods_supported":["S256"]}"#),
        flow(4, base + 30_000, "POST", "https://auth.example/register", h(&[json]), r#"{"redirect_uris":["http://127.0.0.1:9/cb"]}"#, 201, h(&[json]), r#"{"client_id":"c1","redirect_uris":["http://127.0.0.1:9/cb"]}"#),
        flow(5, base + 40_000, "POST", "https://auth.example/token", h(&[("content-type", "application/x-www-form-urlencoded")]),
             "grant_type=authorization_code&code=abc&client_id=c1&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&resource=https%3A%2F%2Frs.example%2Fmcp", 200, h(&[json]),
             r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":86400}"#),
        flow(6, base + 50_000, "POST", mcp, h(&[json, ("authorization", "Bearer tok-1"), ("accept", "application/json, text/event-stream")]),
             r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#, 200, h(&[json, ("mcp-session-id", "s1")]),
             r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}"#),
    ];
    let req = h(&[
        json,
        ("authorization", "Bearer tok-1"),
        ("mcp-session-id", "s1"),
        ("mcp-protocol-version", "2025-06-18"),
        ("accept", "application/json, text/event-stream"),
    ]);
    let sse = h(&[("content-type", "text/event-stream")]);
    let plain = h(&[json]);
    while flows.len() < N {
        let id = flows.len() as u64 + 1;
        let at = base + 60_000 + id as i64 * 3_000;
        let (resp, body) = if id % 2 == 0 {
            (
                sse.clone(),
                r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}"#,
            )
        } else {
            (
                plain.clone(),
                r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}"#,
            )
        };
        let method = if id % 2 == 0 {
            "tools/call"
        } else {
            "tools/list"
        };
        flows.push(flow(
            id,
            at,
            "POST",
            mcp,
            req.clone(),
            &format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{{}}}}"#),
            200,
            resp,
            body,
        ));
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let report = analyze(&flows);
        let secs = t.elapsed().as_secs_f64();
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        best = best.min(secs);
    }
    println!(
        "analyze: {N} flows in {:.1} ms (best of 3), {:.0} flows/s",
        best * 1000.0,
        N as f64 / best
    );
}

/// The live proxy's analyzer fed `ANALYZE_LIVE_FLOWS` (1M) flows one at a time, generated on
/// the fly so that only the analyzer's own memory is measured.
fn live() {
    let n: u64 = std::env::var("ANALYZE_LIVE_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = 1_760_000_000_000_000i64;
    let mcp = "https://rs.example/mcp";
    let json = ("content-type", "application/json");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let mut a = Analyzer::new(Options {
        list_flows: false,
        ..Default::default()
    });
    let token = |gen: u64| format!("tok-{gen}");
    let dance = [
        flow(1, base, "POST", mcp, h(&[json]), r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#, 401,
             h(&[("www-authenticate", r#"Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource/mcp""#)]), ""),
        flow(2, base + 10_000, "GET", "https://rs.example/.well-known/oauth-protected-resource/mcp", h(&[]), "", 200, h(&[json]), r#"{"resource":"https://rs.example/mcp","authorization_servers":["https://auth.example"]}"#),
        flow(3, base + 20_000, "GET", "https://auth.example/.well-known/oauth-authorization-server", h(&[]), "", 200, h(&[json]),
             r#"{"issuer":"https://auth.example","authorization_endpoint":"https://auth.example/authorize","token_endpoint":"https://auth.example/token","registration_endpoint":"https://auth.example/register","response_types_supported":["code"],"code_challenge_methods_supported":["S256"],"grant_types_supported":["authorization_code","refresh_token"]}"#),
        flow(4, base + 30_000, "POST", "https://auth.example/register", h(&[json]), r#"{"redirect_uris":["http://127.0.0.1:9/cb"]}"#, 201, h(&[json]), r#"{"client_id":"c1","redirect_uris":["http://127.0.0.1:9/cb"]}"#),
        flow(5, base + 40_000, "POST", "https://auth.example/token", h(&[form]),
             "grant_type=authorization_code&code=abc&client_id=c1&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&resource=https%3A%2F%2Frs.example%2Fmcp", 200, h(&[json]),
             r#"{"access_token":"tok-0","refresh_token":"rt-0","token_type":"Bearer","expires_in":86400}"#),
    ];
    for f in &dance {
        a.push(f);
    }
    let mut gen = 0u64;
    let mut heap_1k = 0;
    let t = Instant::now();
    for id in 6..=n {
        let at = base + 60_000 + id as i64 * 3_000;
        let f = if id % 10_000 == 0 {
            // A refresh: the next flows use the new token.
            gen += 1;
            flow(id, at, "POST", "https://auth.example/token", h(&[form]),
                 &format!("grant_type=refresh_token&refresh_token=rt-{}&client_id=c1&resource=https%3A%2F%2Frs.example%2Fmcp", gen - 1),
                 200, h(&[json]),
                 &format!(r#"{{"access_token":"tok-{gen}","refresh_token":"rt-{gen}","token_type":"Bearer","expires_in":86400}}"#))
        } else if id % 5 == 0 {
            flow(
                id,
                at,
                "GET",
                &format!("https://cdn.example/asset/{id}.js"),
                h(&[]),
                "",
                200,
                h(&[("content-type", "text/javascript")]),
                "x",
            )
        } else if id % 1_000 == 1 {
            // A new MCP session every thousand flows.
            flow(
                id,
                at,
                "POST",
                mcp,
                h(&[
                    json,
                    ("authorization", &format!("Bearer {}", token(gen))),
                    ("accept", "application/json, text/event-stream"),
                ]),
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
                200,
                h(&[json, ("mcp-session-id", &format!("s{id}"))]),
                r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}"#,
            )
        } else {
            let session = format!("s{}", id / 1_000 * 1_000 + 1);
            flow(
                id,
                at,
                "POST",
                mcp,
                h(&[
                    json,
                    ("authorization", &format!("Bearer {}", token(gen))),
                    ("mcp-session-id", &session),
                    ("mcp-protocol-version", "2025-06-18"),
                    ("accept", "application/json, text/event-stream"),
                ]),
                &format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo"}}}}"#
                ),
                200,
                h(&[("content-type", "text/event-stream")]),
                &format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"ok"}}]}}}}"#
                ),
            )
        };
        let found = a.push(&f);
        assert!(found.is_empty(), "{found:#?}");
        if id == 1_000 {
            heap_1k = rss_kib();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let heap_end = rss_kib();
    let report = a.finish();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    println!(
        "live: {n} flows in {:.2} s, {:.0} flows/s; RSS {heap_1k} KiB after 1k flows, {heap_end} KiB at the end",
        secs,
        n as f64 / secs,
    );
}
