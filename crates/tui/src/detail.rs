//! The detail pane's text for one flow: request and response heads, bodies pretty-printed
//! (JSON, JSON-RPC, forms, SSE events with their arrival times), TLS, redactions, errors and the
//! findings that cite the flow. Built once per selection or change, never per frame.

use crate::app::App;
use crate::row::{phase_label, short};
use crate::store::Missing;
use crate::theme::Theme;
use mcptap_flow::human::{clock, millis};
use mcptap_flow::{CapturedBody, FlowId, FlowKind, Headers, SseEvent, TlsInfo};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};

/// Bytes of one body that are pretty-printed; the rest is summarised.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Lines of one body shown.
const MAX_BODY_LINES: usize = 2000;
/// SSE events shown (the last ones).
const MAX_SSE: usize = 500;

/// What the detail pane says of an evicted flow that no journal holds.
pub const NOT_RECORDED: &str =
    "Not recorded either (--no-save, or it had not finished): nothing to show.";

pub(crate) fn lines(app: &App, id: FlowId) -> Vec<Line<'static>> {
    let t = Theme {
        color: app.opts.color,
    };
    let mut out = Vec::new();
    let Some(flow) = app.store.get(id) else {
        out.push(Line::from(format!(
            "{id}: details not kept in memory (this live view keeps the last {} flows whole).",
            app.store.cap().unwrap_or(0)
        )));
        out.push(Line::from(match app.store.missing(id) {
            Missing::Asked => "Reading it back from the session journal…".to_owned(),
            Missing::Unavailable(why) => why.to_owned(),
            Missing::NotAsked => NOT_RECORDED.to_owned(),
        }));
        return out;
    };
    let row = app.row_of(id);
    // Title.
    let mut head = vec![
        Span::styled(format!("{id} "), t.bold()),
        Span::styled(
            format!("{} {}", flow.request.method, flow.request.url),
            t.bold(),
        ),
    ];
    match &flow.response {
        Some(r) => head.push(Span::styled(
            format!(
                "  -> {}{}",
                r.status,
                if r.synthetic { " (made by mcptap)" } else { "" }
            ),
            t.status(Some(r.status), flow.state),
        )),
        None => head.push(Span::styled("  -> (no response)", t.dim())),
    }
    out.push(Line::from(head));
    let mut facts = vec![format!("state {:?}", flow.state).to_lowercase()];
    if let Some(d) = flow.timings.duration() {
        facts.push(millis(d));
    }
    if let Some(c) = flow.timings.connected {
        // A new upstream connection's handshakes (none when a connection was reused).
        let us = (c - flow.timings.started).max(0);
        facts.push(format!("upstream connect {}", millis(us)));
    }
    facts.push(format!("started {}", clock(flow.timings.started)));
    if let Some(r) = row {
        if let Some(role) = r.role {
            let p = phase_label(role);
            if !p.is_empty() {
                facts.push(format!("phase {p}"));
            }
        }
    }
    out.push(Line::styled(facts.join(" · "), t.dim()));
    if let Some(r) = row {
        let mut mcp = Vec::new();
        if let Some(m) = &r.mcp {
            mcp.push(format!("mcp {m}"));
        }
        mcp.push(format!("auth {}", r.auth.label()));
        if let Some(tok) = &r.issued {
            mcp.push(format!("issued token {tok}"));
        }
        if let Some(held) = app.bare_alarm.get(&r.id) {
            mcp.push(match held {
                Some(tok) => format!("sent without token {tok}, which was valid"),
                None => "sent without the token the client held".to_owned(),
            });
        }
        if r.closed_by_client() {
            mcp.push("the client closed the stream after its answer (normal)".to_owned());
        }
        if let Some(s) = &r.session {
            mcp.push(format!("session {s}"));
        }
        out.push(Line::styled(mcp.join(" · "), t.dim()));
    }
    if let Some(c) = &flow.client_addr {
        out.push(Line::styled(format!("client {c}"), t.dim()));
    }
    if let Some(tls) = &flow.client_tls {
        out.push(Line::styled(
            format!("TLS client<->mcptap: {}", tls_text(tls)),
            t.dim(),
        ));
    }
    if let Some(tls) = &flow.upstream_tls {
        out.push(Line::styled(
            format!("TLS mcptap<->server: {}", tls_text(tls)),
            t.dim(),
        ));
    }
    if let Some(inj) = &flow.injected {
        let from = inj
            .token_flow
            .map(|f| format!(" (issued in {f})"))
            .unwrap_or_default();
        out.push(Line::styled(
            format!(
                "mcptap INJECTED Authorization: Bearer sha256:{}{from}",
                inj.fingerprint
            ),
            t.fg(Color::Yellow),
        ));
    }
    if let Some(why) = &flow.not_injected {
        out.push(Line::styled(
            format!("mcptap did NOT inject a token: {why}"),
            t.fg(Color::Yellow),
        ));
    }
    if let Some(why) = &flow.by_mcptap {
        out.push(Line::styled(
            format!("made by mcptap ({why}), not by the client"),
            t.fg(Color::Yellow),
        ));
    }
    if let Some(e) = &flow.error {
        out.push(Line::styled(
            format!("error [{}] {}", e.kind.as_str(), e.message),
            t.fg(Color::Red),
        ));
        if let Some(h) = &e.hint {
            out.push(Line::styled(format!("hint: {h}"), t.fg(Color::Red)));
        }
    }
    if flow.raw_secrets {
        out.push(Line::styled(
            "this flow holds RAW SECRETS (--keep-secrets)",
            t.fg(Color::Red),
        ));
    }
    // Findings citing it.
    let citing: Vec<_> = app
        .findings
        .iter()
        .filter(|f| f.evidence.contains(&id))
        .collect();
    if !citing.is_empty() {
        out.push(Line::styled("── findings", t.heading()));
        for f in citing {
            out.push(Line::from(vec![
                Span::styled(format!("[{}] {}", f.severity, f.id), t.severity(f.severity)),
                Span::raw(format!(" ({}) {}", f.culprit, f.summary)),
            ]));
        }
    }
    if flow.kind == FlowKind::Tunnel {
        let tun = flow.tunnel.unwrap_or_default();
        out.push(Line::from(format!(
            "tunnel (not decrypted): up {} bytes, down {} bytes",
            tun.bytes_up, tun.bytes_down
        )));
        return out;
    }
    // Request.
    out.push(Line::styled(
        format!(
            "── request {} {}",
            flow.request.method, flow.request.version
        ),
        t.heading(),
    ));
    headers(&mut out, &flow.request.headers, t);
    body(
        &mut out,
        &flow.request.body,
        &flow.request.headers,
        "request body",
        t,
    );
    // Response.
    if let Some(r) = &flow.response {
        out.push(Line::styled(
            format!("── response {} {}", r.status, r.version),
            t.heading(),
        ));
        headers(&mut out, &r.headers, t);
        if flow.is_sse() || !r.sse.is_empty() {
            sse(&mut out, &r.sse, t);
        } else {
            body(&mut out, &r.body, &r.headers, "response body", t);
        }
    }
    if !flow.secrets.is_empty() {
        out.push(Line::styled("── redacted", t.heading()));
        for s in &flow.secrets {
            let mut text = format!("{}  sha256:{} len={}", s.place, s.fingerprint, s.len);
            if let Some(j) = &s.jwt {
                let claims: Vec<String> = j
                    .claims
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                    .collect();
                text.push_str(&format!("  JWT {}", claims.join(" ")));
            }
            out.push(Line::styled(text, t.redacted()));
        }
    }
    out
}

fn tls_text(t: &TlsInfo) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &t.version {
        parts.push(v.clone());
    }
    if let Some(a) = &t.alpn {
        parts.push(format!("ALPN {a}"));
    }
    if let Some(s) = &t.sni {
        parts.push(format!("SNI {s}"));
    }
    if let Some(c) = &t.cipher {
        parts.push(c.clone());
    }
    if t.unverified {
        parts.push("certificate NOT verified (-k)".to_owned());
    }
    if parts.is_empty() {
        "yes".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A line with `[redacted sha256:…]` markers styled.
fn marked(text: &str, base: Style, t: Theme) -> Line<'static> {
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("[redacted sha256:") {
        let end = rest[i..].find(']').map_or(rest.len(), |e| i + e + 1);
        if i > 0 {
            spans.push(Span::styled(rest[..i].to_owned(), base));
        }
        spans.push(Span::styled(rest[i..end].to_owned(), t.redacted()));
        rest = &rest[end..];
    }
    if !rest.is_empty() || spans.is_empty() {
        spans.push(Span::styled(rest.to_owned(), base));
    }
    Line::from(spans)
}

fn headers(out: &mut Vec<Line<'static>>, h: &Headers, t: Theme) {
    for hd in h.iter() {
        let mut l = marked(&hd.value, Style::default(), t);
        l.spans
            .insert(0, Span::styled(format!("{}: ", hd.name), t.fg(Color::Blue)));
        if hd.is_lossy() {
            // U+FFFD stands for bytes that were not UTF-8; the recording keeps them exactly.
            l.spans.push(Span::styled("  (not UTF-8)", t.dim()));
        }
        out.push(l);
    }
}

fn body(out: &mut Vec<Line<'static>>, b: &CapturedBody, h: &Headers, what: &str, t: Theme) {
    if b.is_empty() {
        return;
    }
    let ct = h.get("content-type").unwrap_or("");
    let bytes = &b.bytes[..b.bytes.len().min(MAX_BODY_BYTES)];
    let (kind, text) = render_body(bytes, ct);
    let mut label = format!("── {what} ({kind}, {} bytes", b.total_len);
    if b.truncated || bytes.len() < b.bytes.len() {
        label.push_str(&format!(", showing the first {}", bytes.len()));
    }
    if let Some(enc) = &b.encoding {
        label.push_str(&format!(", still {enc}-encoded"));
    }
    label.push(')');
    out.push(Line::styled(label, t.heading()));
    push_text(out, &text, t);
}

fn push_text(out: &mut Vec<Line<'static>>, text: &str, t: Theme) {
    let total = text.lines().count();
    for l in text.lines().take(MAX_BODY_LINES) {
        out.push(marked(l, Style::default(), t));
    }
    if total > MAX_BODY_LINES {
        out.push(Line::styled(
            format!("… {} more lines", total - MAX_BODY_LINES),
            t.dim(),
        ));
    }
}

/// Pretty text for a body and what it is (`JSON-RPC`, `JSON`, `form`, `text`, `binary`).
pub(crate) fn render_body(bytes: &[u8], content_type: &str) -> (&'static str, String) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let rpc = match &v {
            serde_json::Value::Array(a) => a.iter().any(|m| m.get("jsonrpc").is_some()),
            m => m.get("jsonrpc").is_some(),
        };
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        return (if rpc { "JSON-RPC" } else { "JSON" }, text);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if mcptap_flow::media_type_is(content_type, "application/x-www-form-urlencoded") => {
            let text = s
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    format!(
                        "{} = {}",
                        mcptap_flow::redact::form_decode(k.as_bytes()),
                        mcptap_flow::redact::form_decode(v.as_bytes())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            ("form", text)
        }
        Ok(s) => ("text", s.to_owned()),
        Err(e) if e.valid_up_to() + 4 >= bytes.len() => {
            // Cut in the middle of a character at the capture limit.
            ("text", String::from_utf8_lossy(bytes).into_owned())
        }
        Err(_) => ("binary", format!("({} bytes of binary data)", bytes.len())),
    }
}

fn sse(out: &mut Vec<Line<'static>>, events: &[SseEvent], t: Theme) {
    out.push(Line::styled(
        format!("── SSE events ({})", events.len()),
        t.heading(),
    ));
    let skip = events.len().saturating_sub(MAX_SSE);
    if skip > 0 {
        out.push(Line::styled(format!("… {skip} earlier events"), t.dim()));
    }
    for e in &events[skip..] {
        let mut head = clock(e.at);
        if let Some(ev) = &e.event {
            head.push_str(&format!(" event={ev}"));
        }
        if let Some(id) = &e.id {
            head.push_str(&format!(" id={}", short(id, 24)));
        }
        out.push(Line::styled(head, t.fg(Color::Green)));
        let (_, text) = render_body(e.data.as_bytes(), "");
        let mut l = Vec::new();
        push_text(&mut l, &text, t);
        for line in l.into_iter().take(200) {
            let mut line = line;
            line.spans.insert(0, Span::raw("  "));
            out.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &Line<'_>) -> String {
        l.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn a_header_value_that_was_not_utf8_is_marked() {
        let mut h = Headers::new();
        h.push_bytes("x-latin", b"caf\xe9");
        h.push_bytes("x-plain", "café".as_bytes());
        let mut out = Vec::new();
        headers(&mut out, &h, Theme { color: false });
        let out: Vec<String> = out.iter().map(text).collect();
        assert_eq!(
            out,
            ["x-latin: caf\u{fffd}  (not UTF-8)", "x-plain: café"],
            "{out:?}"
        );
    }
}
