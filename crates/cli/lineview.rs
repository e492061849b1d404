//! The plain line view: one line per finished flow, for terminals without the TUI and for logs.

use mcptap_flow::human::{clock, duration, size};
use mcptap_flow::{Flow, FlowKind, FlowState};
use std::fmt::Write as _;

/// The auth marker: `Bearer <fingerprint>` when the request carried a bearer token, `no-auth`
/// otherwise, `injected` when mcptap added it.
pub fn auth_marker(flow: &Flow) -> String {
    if let Some(inj) = &flow.injected {
        return format!("INJECTED Bearer {}", inj.fingerprint);
    }
    match flow.request.headers.get("authorization") {
        Some(v) => {
            let mut it = v.splitn(2, ' ');
            let scheme = it.next().unwrap_or("");
            let cred = it.next().unwrap_or("").trim();
            format!("{scheme} {}", mcptap_flow::redact::fingerprint_of(cred))
        }
        None => "no-auth".to_owned(),
    }
}

/// The JSON-RPC method(s) of an MCP request body, with the tool of a `tools/call` (and the
/// name or URI of `prompts/get` and `resources/read`): `tools/call echo`, `initialize`,
/// `notifications/initialized`; a batch joins them with `,`. `None` for a body that is not
/// JSON-RPC, or that only answers the server.
pub fn rpc_label(flow: &Flow) -> Option<String> {
    let body = &flow.request.body.bytes;
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first, b'{' | b'[') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let msgs = match &v {
        serde_json::Value::Array(a) => a.iter().collect::<Vec<_>>(),
        m => vec![m],
    };
    let names: Vec<String> = msgs
        .iter()
        .filter(|m| m.get("jsonrpc").is_some())
        .filter_map(|m| {
            let method = m.get("method")?.as_str()?;
            let target = match method {
                "tools/call" | "prompts/get" => m.get("params")?.get("name"),
                "resources/read" | "resources/subscribe" => m.get("params")?.get("uri"),
                _ => None,
            }
            .and_then(|t| t.as_str());
            Some(match target {
                Some(t) => format!("{method} {}", t.chars().take(60).collect::<String>()),
                None => method.to_owned(),
            })
        })
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

/// One line for a finished flow.
pub fn line(flow: &Flow) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        "{} {:>5} ",
        clock(flow.timings.started),
        flow.id.to_string()
    );
    if flow.kind == FlowKind::Tunnel {
        let t = flow.tunnel.unwrap_or_default();
        let _ = write!(
            out,
            "TUNNEL {}:{} (not decrypted) up {} down {}",
            flow.host,
            flow.port,
            size(t.bytes_up),
            size(t.bytes_down)
        );
        if let Some(d) = flow.timings.duration() {
            let _ = write!(out, " {}", duration(d));
        }
        if let Some(e) = &flow.error {
            let _ = write!(out, " ! {}", e.message);
        }
        return out;
    }
    let url = if flow.request.url.is_empty() {
        format!("{}:{}", flow.host, flow.port)
    } else {
        flow.request.url.clone()
    };
    let _ = write!(out, "{} {} ", flow.request.method, url);
    match (&flow.response, flow.state) {
        (Some(r), _) if !r.synthetic => {
            let _ = write!(out, "-> {}", r.status);
        }
        (Some(r), _) => {
            let _ = write!(out, "-> {} (mcptap)", r.status);
        }
        (None, _) => out.push_str("-> ---"),
    }
    // After the status, so that `METHOD URL -> STATUS` stays greppable.
    if let Some(rpc) = rpc_label(flow) {
        let _ = write!(out, " {rpc}");
    }
    if let Some(d) = flow.timings.duration() {
        let _ = write!(out, " {}", duration(d));
    }
    let req = flow.request.body.total_len;
    let resp = flow
        .response
        .as_ref()
        .map(|r| r.body.total_len)
        .unwrap_or(0);
    let _ = write!(out, " up {} down {}", size(req), size(resp));
    if let Some(r) = &flow.response {
        if !r.sse.is_empty() {
            let _ = write!(out, " sse:{}", r.sse_count());
        }
    }
    if let Some(t) = flow.tunnel {
        let _ = write!(
            out,
            " upgraded(up {} down {})",
            size(t.bytes_up),
            size(t.bytes_down)
        );
    }
    let _ = write!(out, " [{}]", auth_marker(flow));
    if let Some(why) = &flow.by_mcptap {
        // Not the client's request: mcptap made it itself (e.g. an inject-mode refresh).
        let _ = write!(out, " [BY MCPTAP: {why}]");
    }
    if let Some(why) = &flow.not_injected {
        let _ = write!(out, " [NOT INJECTED: {why}]");
    }
    if flow.upstream_tls.as_ref().is_some_and(|t| t.unverified) {
        out.push_str(" [UPSTREAM CERT NOT VERIFIED: -k]");
    }
    match flow.state {
        FlowState::Aborted => out.push_str(" ABORTED"),
        FlowState::Pending => out.push_str(" PENDING"),
        _ => {}
    }
    if let Some(e) = &flow.error {
        let _ = write!(out, "\n      ! {}: {}", e.kind.as_str(), e.message);
        if let Some(h) = &e.hint {
            let _ = write!(out, "\n      hint: {h}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::*;

    #[test]
    fn a_bearer_request_line_shows_the_fingerprint_not_the_token() {
        let mut flow = Flow {
            id: FlowId(7),
            host: "mcp.example.com".into(),
            port: 443,
            request: Request {
                method: "POST".into(),
                url: "https://mcp.example.com/mcp".into(),
                headers: [("authorization", "Bearer sekrit")].into_iter().collect(),
                body: CapturedBody::complete("{}"),
                ..Default::default()
            },
            response: Some(Response {
                status: 200,
                body: CapturedBody::complete("ok"),
                ..Default::default()
            }),
            timings: Timings {
                started: 3_723_004_000,
                finished: Some(3_723_016_500),
                ..Default::default()
            },
            state: FlowState::Completed,
            ..Default::default()
        };
        let l = line(&flow);
        assert_eq!(
            l,
            format!(
                "01:02:03.004    #7 POST https://mcp.example.com/mcp -> 200 12ms up 2b down 2b [Bearer {}]",
                mcptap_flow::redact::fingerprint("sekrit")
            )
        );
        assert!(!l.contains("sekrit"));
        flow.request.headers = Headers::new();
        assert!(line(&flow).ends_with("[no-auth]"));
        flow.by_mcptap = Some("inject-refresh".into());
        assert!(line(&flow).ends_with("[no-auth] [BY MCPTAP: inject-refresh]"));
        flow.by_mcptap = None;
        flow.not_injected = Some("the Host header names b.example".into());
        assert!(line(&flow).ends_with("[no-auth] [NOT INJECTED: the Host header names b.example]"));
        flow.not_injected = None;
        flow.upstream_tls = Some(std::sync::Arc::new(TlsInfo {
            unverified: true,
            ..Default::default()
        }));
        assert!(line(&flow).ends_with("[no-auth] [UPSTREAM CERT NOT VERIFIED: -k]"));
    }

    #[test]
    fn a_long_streams_line_counts_the_events_it_left_out_too() {
        let flow = Flow {
            response: Some(Response {
                status: 200,
                sse: vec![SseEvent::default(); 3],
                sse_elided: 40,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(line(&flow).contains(" sse:43"), "{}", line(&flow));
    }

    #[test]
    fn an_mcp_line_names_its_json_rpc_method_and_tool() {
        let mut flow = Flow {
            id: FlowId(3),
            request: Request {
                method: "POST".into(),
                url: "https://mcp.example.com/mcp".into(),
                body: CapturedBody::complete(
                    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#,
                ),
                ..Default::default()
            },
            timings: Timings {
                started: 3_723_004_000,
                ..Default::default()
            },
            state: FlowState::Completed,
            ..Default::default()
        };
        assert!(
            line(&flow).starts_with(
                "01:02:03.004    #3 POST https://mcp.example.com/mcp -> --- tools/call echo up "
            ),
            "{}",
            line(&flow)
        );
        flow.request.body = CapturedBody::complete(
            r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"method":"tools/list"}]"#,
        );
        assert_eq!(
            rpc_label(&flow).as_deref(),
            Some("notifications/initialized,tools/list")
        );
        flow.request.body = CapturedBody::complete(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(
            rpc_label(&flow),
            None,
            "a response to the server names no method"
        );
        flow.request.body = CapturedBody::complete("grant_type=authorization_code");
        assert_eq!(rpc_label(&flow), None);
    }
}
