//! What people read: the human report (`mcptap analyze`) and the markdown summary to paste into
//! an issue (`mcptap report`), with every secret replaced by its fingerprint.

use crate::model::{Finding, FlowSummary, Report, Role, Status};
use mcptap_flow::{redact, Flow, FlowId};
use serde_json::Value;
use std::collections::HashSet;
use std::fmt::Write as _;

/// At most this many timeline lines for MCP flows that are not evidence.
const TIMELINE_MCP_LINES: usize = 120;

fn offset(report: &Report, at: i64) -> String {
    let base = report.environment.first_started.unwrap_or(at);
    format!("+{:.3}s", (at - base) as f64 / 1_000_000.0)
}

fn auth_col(f: &FlowSummary) -> String {
    if let Some(t) = &f.issued_token {
        return match &f.by_mcptap {
            Some(why) => format!("BY MCPTAP ({why}) issues {t}"),
            None => format!("issues {t}"),
        };
    }
    if let Some(why) = &f.by_mcptap {
        return format!("BY MCPTAP ({why})");
    }
    match &f.auth {
        Some(a) if a.injected => format!("INJECTED {}", a.fingerprint),
        Some(a) => format!("{} {}", a.scheme, a.fingerprint),
        None => "-".to_owned(),
    }
}

pub(crate) fn what_col(f: &FlowSummary) -> String {
    let Some(m) = &f.mcp else {
        return String::new();
    };
    let mut names: Vec<&str> = Vec::new();
    for msg in &m.messages {
        if msg.dir == crate::model::RpcDirection::ClientToServer {
            names.push(msg.method.as_deref().unwrap_or("response"));
        }
    }
    if names.is_empty() && f.method.eq_ignore_ascii_case("GET") {
        names.push("stream");
    }
    let mut s = names.join(",");
    if s.chars().count() > 28 {
        s = s.chars().take(27).collect::<String>() + "…";
    }
    s
}

/// Which flows the timeline shows: every OAuth flow and evidence flow, and MCP flows up to a
/// limit (the rest are counted).
fn timeline(report: &Report) -> (Vec<&FlowSummary>, u64) {
    let evidence: HashSet<FlowId> = report
        .findings
        .iter()
        .flat_map(|f| f.evidence.iter().copied())
        .collect();
    let mut mcp = 0;
    let mut omitted = 0u64;
    let mut out = Vec::new();
    for f in &report.flows {
        let keep = f.role.is_oauth() || evidence.contains(&f.id);
        if keep {
            out.push(f);
        } else if matches!(f.role, Role::Mcp | Role::McpPreflight) {
            if mcp < TIMELINE_MCP_LINES {
                mcp += 1;
                out.push(f);
            } else {
                omitted += 1;
            }
        }
    }
    (out, omitted + report.environment.unlisted_mcp_flows)
}

/// The human report: a timeline of the OAuth dance and the MCP requests, then the findings.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let env = &report.environment;
    let _ = writeln!(
        out,
        "mcptap analysis: {} flow(s), {} MCP endpoint(s), {} authorization server(s), {}",
        report.flows.len() as u64
            + report.environment.unlisted_flows
            + report.environment.unlisted_mcp_flows,
        env.mcp_endpoints.len(),
        env.authorization_servers.len(),
        finding_count(report)
    );
    if !env.user_agents.is_empty() {
        let _ = writeln!(out, "clients: {}", env.user_agents.join(" | "));
    }
    let _ = writeln!(
        out,
        "browser /authorize captured: {}",
        if report.visibility.authorize_seen {
            "yes"
        } else {
            "no"
        }
    );
    let (lines, omitted) = timeline(report);
    let _ = writeln!(out, "\nTimeline");
    if lines.is_empty() {
        let _ = writeln!(out, "  (no OAuth or MCP traffic)");
    }
    for f in lines {
        let status = match (f.status, f.synthetic) {
            (Some(s), false) => s.to_string(),
            (Some(s), true) => format!("{s}*"),
            (None, _) => "---".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:>9} {:>5} {:<14} {:<7} {} {}  {} [{}]",
            offset(report, f.started),
            f.id.to_string(),
            f.role.as_str(),
            f.method,
            f.url,
            what_col(f),
            status,
            auth_col(f)
        );
    }
    if omitted > 0 {
        let _ = writeln!(out, "  … {omitted} more MCP flow(s) not shown");
    }
    if !report.stories.is_empty() {
        let _ = writeln!(out, "\nTokens");
    }
    for s in &report.stories {
        let _ = writeln!(
            out,
            "  issuer {} resource {} client {}",
            s.issuer,
            s.resource.as_deref().unwrap_or("(none sent)"),
            s.client_id.as_deref().unwrap_or("(unknown)")
        );
        for t in &s.tokens {
            let expiry = match (t.expires_in, t.expires_at) {
                (Some(e), _) => format!("expires_in {e} s"),
                (None, Some(_)) => "expiry from JWT exp".to_owned(),
                (None, None) => "no expiry given".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {} {} from {} at {}, {expiry}{}; sent {} time(s){}",
                t.grant,
                t.fingerprint,
                t.flow,
                offset(report, t.issued_at),
                if t.refresh_fingerprint.is_some() {
                    ", with refresh token"
                } else {
                    ""
                },
                t.uses,
                if t.sent_to.is_empty() {
                    String::new()
                } else {
                    format!(", first in {}", t.sent_to[0])
                }
            );
        }
    }
    let _ = writeln!(out, "\nFindings");
    if report.counted().next().is_none() {
        let _ = writeln!(out, "  none");
    }
    for f in report.counted() {
        write_finding_text(&mut out, f);
    }
    let cleared: Vec<&Finding> = report.findings.iter().filter(|f| !f.counts()).collect();
    if !cleared.is_empty() {
        let _ = writeln!(out, "\nSuspected, then cleared");
        for f in cleared {
            let _ = writeln!(
                out,
                "  - {}: {} ({})",
                f.id,
                f.summary,
                f.amendments.last().map(String::as_str).unwrap_or("")
            );
        }
    }
    let vis = &report.visibility;
    if !vis.notes.is_empty() {
        let _ = writeln!(out, "\nNot decided");
        for n in &vis.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

/// "2 finding(s)", or "2 finding(s) (1 suspected)".
fn finding_count(report: &Report) -> String {
    let n = report.counted().count();
    let suspected = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Suspected)
        .count();
    if suspected > 0 {
        format!("{n} finding(s) ({suspected} suspected)")
    } else {
        format!("{n} finding(s)")
    }
}

/// " SUSPECTED" for a suspicion, nothing for a confirmed finding.
fn status_tag(f: &Finding) -> &'static str {
    match f.status {
        Status::Suspected => " SUSPECTED",
        Status::Cleared => " CLEARED",
        Status::Confirmed => "",
    }
}

fn ids(ev: &[FlowId]) -> String {
    ev.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_finding_text(out: &mut String, f: &Finding) {
    let sub = f.subcase.map(|s| format!(" ({s})")).unwrap_or_default();
    let _ = writeln!(
        out,
        "\n  {}{} {}{} [culprit: {}]",
        f.severity.as_str().to_ascii_uppercase(),
        status_tag(f),
        f.id,
        sub,
        f.culprit
    );
    let _ = writeln!(out, "    {}", f.summary);
    if let Some(d) = &f.decides {
        let _ = writeln!(out, "    decides: {d}");
    }
    for a in &f.amendments {
        let _ = writeln!(out, "    amended: {a}");
    }
    let more = if f.occurrences > 1 {
        format!(" (seen {} times)", f.occurrences)
    } else {
        String::new()
    };
    let _ = writeln!(out, "    evidence: {}{more}", ids(&f.evidence));
    for d in &f.details {
        let _ = writeln!(out, "    - {d}");
    }
    let _ = writeln!(out, "    fix: {}", f.hint);
    let _ = writeln!(out, "    more: mcptap explain {}", f.id);
}

/// Options of [`render_markdown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownOptions {
    /// At most this many exchanges in "Key exchanges" (evidence flows first).
    pub max_exchanges: usize,
    /// At most this many bytes of each body.
    pub max_body: usize,
}

impl Default for MarkdownOptions {
    fn default() -> MarkdownOptions {
        MarkdownOptions {
            max_exchanges: 8,
            max_body: 2000,
        }
    }
}

/// The redacted markdown summary for an issue tracker: environment, timeline, findings, and
/// the key exchanges (evidence flows from `flows`) with every secret fingerprinted, also when
/// the capture kept raw secrets.
pub fn render_markdown(report: &Report, flows: &[Flow], opts: &MarkdownOptions) -> String {
    let mut out = String::new();
    let env = &report.environment;
    let _ = writeln!(out, "# mcptap report\n");
    out.push_str(&crate::story::verdict_markdown(report));
    let steps = crate::story::steps(report);
    if !steps.is_empty() {
        let _ = writeln!(out, "## What happened\n");
        out.push_str(&crate::story::mermaid(report, &steps));
        out.push('\n');
    }
    let _ = writeln!(out, "## Environment\n");
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_owned()
        } else {
            v.iter()
                .map(|s| format!("`{}`", s.replace('`', "'")))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(out, "- Clients (User-Agent): {}", list(&env.user_agents));
    let _ = writeln!(out, "- MCP endpoints: {}", list(&env.mcp_endpoints));
    let _ = writeln!(
        out,
        "- Authorization servers: {}",
        list(&env.authorization_servers)
    );
    let _ = writeln!(
        out,
        "- MCP protocol versions: {}",
        list(&env.protocol_versions)
    );
    let span = match (env.first_started, env.last_activity) {
        (Some(a), Some(b)) => format!(" over {:.1} s", (b - a) as f64 / 1_000_000.0),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "- Capture: {} HTTP flow(s){span}; browser /authorize captured: {}",
        report.flows.len() as u64
            + report.environment.unlisted_flows
            + report.environment.unlisted_mcp_flows,
        if report.visibility.authorize_seen {
            "yes"
        } else {
            "no"
        }
    );
    let _ = writeln!(out, "- Secrets are shown as `[redacted sha256:<first 12 hex> len=<n>]`; equal fingerprints mean equal values.");
    write_full_timeline(&mut out, report);
    let _ = writeln!(out, "\n## Findings\n");
    if report.counted().next().is_none() {
        let _ = writeln!(out, "None.");
    }
    for f in report.counted() {
        let sub = f.subcase.map(|s| format!(" — {s}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "### {}{} `{}` (culprit: {}){sub}\n",
            f.severity.as_str().to_ascii_uppercase(),
            status_tag(f),
            f.id,
            f.culprit
        );
        let _ = writeln!(out, "{}\n", f.summary);
        if let Some(d) = &f.decides {
            let _ = writeln!(out, "- Not decided yet: {d}");
        }
        for a in &f.amendments {
            let _ = writeln!(out, "- Amended: {a}");
        }
        let _ = writeln!(out, "- Evidence: {}", ids(&f.evidence));
        for d in &f.details {
            let _ = writeln!(out, "- {d}");
        }
        let _ = writeln!(out, "- Fix: {}", f.hint);
        let _ = writeln!(out, "- More: `mcptap explain {}`\n", f.id);
    }
    if !report.visibility.notes.is_empty() {
        let _ = writeln!(out, "## Not decided\n");
        for n in &report.visibility.notes {
            let _ = writeln!(out, "- {n}");
        }
        out.push('\n');
    }
    let mut chosen: Vec<FlowId> = Vec::new();
    for f in &report.findings {
        for id in &f.evidence {
            if !chosen.contains(id) {
                chosen.push(*id);
            }
        }
    }
    chosen.sort_unstable();
    chosen.truncate(opts.max_exchanges);
    if !chosen.is_empty() {
        let _ = writeln!(out, "## Key exchanges\n");
        for id in chosen {
            if let Some(flow) = flows.iter().find(|f| f.id == id) {
                write_exchange_details(&mut out, flow, opts.max_body);
            }
        }
    }
    out
}

const SECRET_KEYS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "code",
    "code_verifier",
    "password",
    "token",
    "assertion",
    "client_assertion",
    "registration_access_token",
    "device_code",
    "subject_token",
    "actor_token",
    "api_key",
];

fn mark(v: &str) -> String {
    if redact::parse_redacted(v).is_some() {
        v.to_owned()
    } else {
        redact::redacted(v)
    }
}

fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.matches('.').count() == 2 && !s.contains(' ')
}

fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "mcp-session-id"
    ) || n.contains("token")
        || n.contains("secret")
        || n.contains("api-key")
        || n.contains("apikey")
}

fn redact_header(name: &str, value: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n == "authorization" || n == "proxy-authorization" {
        return match value.trim().split_once(' ') {
            Some((scheme, cred)) => format!("{scheme} {}", mark(cred.trim())),
            None => mark(value.trim()),
        };
    }
    if n == "location" {
        return redact_url(value);
    }
    if secret_header(name) {
        return mark(value.trim());
    }
    value.to_owned()
}

fn redact_pairs(s: &str) -> String {
    s.split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if SECRET_KEYS.contains(&redact::form_decode(k.as_bytes()).as_str()) => {
                format!("{k}={}", mark(&redact::form_decode(v.as_bytes())))
            }
            _ => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn redact_url(u: &str) -> String {
    // The secret of the userinfo (`https://user:pw@host/`, or a token as the user name), then
    // the query and fragment.
    let with_pw;
    let u = match redact::url_password_span(u, true) {
        Some((start, end)) => {
            let pw = redact::percent_decode(&u.as_bytes()[start..end], false);
            with_pw = format!(
                "{}{}{}",
                &u[..start],
                redact::percent_encode(&mark(&pw)),
                &u[end..]
            );
            with_pw.as_str()
        }
        None => u,
    };
    match u.split_once('?') {
        Some((base, q)) => {
            let (q, frag) = match q.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (q, None),
            };
            let mut s = format!("{base}?{}", redact_pairs(q));
            if let Some(f) = frag {
                s.push('#');
                s.push_str(&redact_pairs(f));
            }
            s
        }
        None => u.to_owned(),
    }
}

fn redact_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) {
                    if let Value::String(s) = val {
                        *s = mark(s);
                        continue;
                    }
                }
                redact_json(val);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::String(s) if looks_like_jwt(s) => *s = mark(s),
        _ => {}
    }
}

fn redact_body(text: &str, max: usize) -> String {
    let t = text.trim();
    let red = if t.starts_with('{') || t.starts_with('[') {
        match serde_json::from_str::<Value>(t) {
            Ok(mut v) => {
                redact_json(&mut v);
                serde_json::to_string_pretty(&v).unwrap_or_default()
            }
            Err(_) => redact_tokens(t),
        }
    } else if t.contains('=') && !t.contains('<') && !t.contains('\n') {
        redact_pairs(t)
    } else {
        redact_tokens(t)
    };
    if red.len() > max {
        let mut cut = max;
        while !red.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}\n… ({} more bytes)", &red[..cut], red.len() - cut)
    } else {
        red
    }
}

/// Replaces JWT-looking words in free text.
fn redact_tokens(t: &str) -> String {
    t.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .map(|w| {
            let core = w.trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == ',');
            if looks_like_jwt(core) {
                w.replacen(core, &mark(core), 1)
            } else {
                w.to_owned()
            }
        })
        .collect()
}

/// Every flow of the report, in a table, with the findings that cite it; what is folded is
/// counted, and says why.
fn write_full_timeline(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\n## Timeline\n");
    let _ = writeln!(
        out,
        "| time | flow | role | request | status | auth | finding |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let cited = cited_by(report);
    let (lines, folded) = full_timeline(report);
    for f in lines {
        let status = match (f.status, f.synthetic) {
            (Some(s), false) => s.to_string(),
            (Some(s), true) => format!("{s} (by mcptap)"),
            (None, _) => f.error.unwrap_or("no response").to_owned(),
        };
        let what = what_col(f);
        let _ = writeln!(
            out,
            "| {} | {} | {} | `{} {}`{} | {} | {} | {} |",
            offset(report, f.started),
            f.id,
            f.role,
            f.method,
            f.url.replace('|', "%7C").replace('`', "%60"),
            if what.is_empty() {
                String::new()
            } else {
                format!(" {what}")
            },
            status,
            auth_col(f),
            cited.get(&f.id).map(String::as_str).unwrap_or("")
        );
    }
    if folded > 0 {
        let _ = writeln!(
            out,
            "\n{folded} more MCP flow(s) are not listed: past the first {TIMELINE_MCP_LINES} \
             MCP requests, only OAuth flows and the flows findings cite are listed."
        );
    }
    let env = &report.environment;
    if env.unlisted_mcp_flows > 0 {
        let _ = writeln!(
            out,
            "\n{} MCP flow(s) were analysed and counted but not listed by the live analyzer \
             (`mcptap report` of the saved session lists them).",
            env.unlisted_mcp_flows
        );
    }
    if env.unlisted_flows > 0 {
        let _ = writeln!(
            out,
            "\n{} other flow(s) were analysed and counted but not listed by the live analyzer.",
            env.unlisted_flows
        );
    }
}

/// The timeline of the markdown report: every flow but MCP flows past the limit that no
/// finding cites (counted).
fn full_timeline(report: &Report) -> (Vec<&FlowSummary>, u64) {
    let evidence: HashSet<FlowId> = report
        .findings
        .iter()
        .flat_map(|f| f.evidence.iter().copied())
        .collect();
    let mut mcp = 0;
    let mut folded = 0u64;
    let mut out = Vec::new();
    for f in &report.flows {
        let is_mcp = matches!(f.role, Role::Mcp | Role::McpPreflight);
        if is_mcp && !evidence.contains(&f.id) {
            if mcp >= TIMELINE_MCP_LINES {
                folded += 1;
                continue;
            }
            mcp += 1;
        }
        out.push(f);
    }
    (out, folded)
}

/// For each flow, the ids of the findings that cite it (`token-not-sent`, suspected ones
/// marked).
fn cited_by(report: &Report) -> std::collections::HashMap<FlowId, String> {
    let mut out: std::collections::HashMap<FlowId, String> = std::collections::HashMap::new();
    for f in &report.findings {
        let tag = match f.status {
            Status::Confirmed => format!("`{}`", f.id),
            s => format!("`{}` ({})", f.id, s.as_str()),
        };
        for id in &f.evidence {
            let e = out.entry(*id).or_default();
            if !e.contains(&tag) {
                if !e.is_empty() {
                    e.push_str(", ");
                }
                e.push_str(&tag);
            }
        }
    }
    out
}

/// One exchange, collapsed: its summary line is the request and the status, the headers and
/// bodies are inside.
fn write_exchange_details(out: &mut String, flow: &Flow, max_body: usize) {
    let status = flow
        .response
        .as_ref()
        .map(|r| r.status.to_string())
        .unwrap_or_else(|| "no response".into());
    let _ = writeln!(
        out,
        "<details>\n<summary>{} {} {} → {}</summary>\n",
        flow.id,
        flow.request.method,
        html_escape(&redact_url(&flow.request.url)),
        status
    );
    let mut inner = String::new();
    write_exchange(&mut inner, flow, max_body);
    // The exchange's own heading is the summary line.
    let body = inner.split_once("\n\n").map(|(_, b)| b).unwrap_or(&inner);
    out.push_str(body);
    let _ = writeln!(out, "</details>\n");
}

/// Escapes text for HTML (also inside markdown's raw HTML).
pub(crate) fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn write_exchange(out: &mut String, flow: &Flow, max_body: usize) {
    let status = flow
        .response
        .as_ref()
        .map(|r| r.status.to_string())
        .unwrap_or_else(|| "no response".into());
    let _ = writeln!(
        out,
        "### {} {} {} → {}\n",
        flow.id,
        flow.request.method,
        redact_url(&flow.request.url),
        status
    );
    let (request, response) = exchange_text(flow, max_body);
    let _ = writeln!(out, "```http\n{request}```\n");
    if let Some(response) = response {
        let _ = writeln!(out, "```http\n{response}```\n");
    }
}

/// The redacted request and response of a flow as HTTP text: start line, headers, a blank
/// line and the body (at most `max_body` bytes; SSE as its first events).
pub(crate) fn exchange_text(flow: &Flow, max_body: usize) -> (String, Option<String>) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} {}",
        flow.request.method,
        redact_url(&flow.request.url),
        flow.request.version
    );
    for h in &flow.request.headers {
        let _ = writeln!(out, "{}: {}", h.name, redact_header(&h.name, &h.value));
    }
    if let Some(inj) = &flow.injected {
        let _ = writeln!(
            out,
            "# mcptap injected: Authorization: Bearer [redacted sha256:{}]",
            inj.fingerprint
        );
    }
    if let Some(b) = flow.request.body.as_str().filter(|b| !b.trim().is_empty()) {
        let _ = writeln!(out, "\n{}", redact_body(b, max_body));
    }
    let Some(r) = &flow.response else {
        return (out, None);
    };
    let mut resp = String::new();
    let _ = writeln!(
        resp,
        "{} {}{}",
        r.version,
        r.status,
        if r.synthetic { " (made by mcptap)" } else { "" }
    );
    for h in &r.headers {
        let _ = writeln!(resp, "{}: {}", h.name, redact_header(&h.name, &h.value));
    }
    if !r.sse.is_empty() {
        resp.push('\n');
        for e in r.sse.iter().take(10) {
            if let Some(ev) = &e.event {
                let _ = writeln!(resp, "event: {ev}");
            }
            let _ = writeln!(
                resp,
                "data: {}\n",
                redact_body(&e.data, max_body).replace('\n', "\ndata: ")
            );
        }
        if r.sse_count() > 10 {
            let _ = writeln!(resp, "… {} more event(s)", r.sse_count() - 10);
        }
    } else if let Some(b) = r.body.as_str().filter(|b| !b.trim().is_empty()) {
        let _ = writeln!(resp, "\n{}", redact_body(b, max_body));
    }
    (out, Some(resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fingerprinted_everywhere() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig";
        let body = format!(
            r#"{{"access_token":"raw-secret","nested":{{"refresh_token":"r1"}},"x":"{jwt}"}}"#
        );
        let red = redact_body(&body, 10_000);
        assert!(
            !red.contains("raw-secret") && !red.contains("\"r1\"") && !red.contains(jwt),
            "{red}"
        );
        assert!(red.contains(&redact::redacted("raw-secret")));
        let form = redact_body(
            "grant_type=authorization_code&code=abc&code_verifier=v",
            1000,
        );
        assert_eq!(
            form,
            format!(
                "grant_type=authorization_code&code={}&code_verifier={}",
                redact::redacted("abc"),
                redact::redacted("v")
            )
        );
        assert_eq!(
            redact_header("Authorization", "Bearer tok"),
            format!("Bearer {}", redact::redacted("tok"))
        );
        let already = redact::redacted("tok");
        assert_eq!(
            redact_header("Authorization", &format!("Bearer {already}")),
            format!("Bearer {already}")
        );
        assert!(
            !redact_header("Location", "http://127.0.0.1:9/cb?code=secret&state=s")
                .contains("secret")
        );
        assert!(!redact_tokens(&format!("token {jwt} here")).contains(jwt));
        let loc = redact_header("Location", "https://ops:pa55word@mcp.example/cb?state=s");
        assert!(!loc.contains("pa55word"), "{loc}");
        assert!(loc.starts_with("https://ops:") && loc.ends_with("@mcp.example/cb?state=s"));
    }
}
