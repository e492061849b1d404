//! The HTML report (`mcptap report --html FILE`): the markdown report's story in one
//! self-contained page — the verdict, a sequence diagram drawn here as SVG (no scripts, fonts
//! or styles from the network), the findings, the timeline, and every flow's redacted headers
//! and body, opened by clicking its arrow or its row.

use crate::model::{Report, Status};
use crate::render::{exchange_text, html_escape as esc, MarkdownOptions};
use crate::story::{self, Party, Step};
use mcptap_flow::Flow;
use std::fmt::Write as _;

/// At most this many flows get a details block (the rest are in the timeline only).
const MAX_DETAILED_FLOWS: usize = 400;

const STYLE: &str = r#"
:root { color-scheme: light; --fail: #c62828; --failbg: #fdecea; --dim: #667; --line: #99a; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
  max-width: 1100px; padding: 16px 24px 48px; color: #1d1f23; }
h1 { font-size: 22px; margin: 8px 0 12px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #dde; padding-bottom: 4px; }
code, pre { font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
code { background: #f1f2f6; padding: 0 3px; border-radius: 3px; }
.verdict { font-size: 16px; padding: 10px 14px; border-left: 5px solid var(--fail);
  background: var(--failbg); }
.verdict.ok { border-color: #2e7d32; background: #edf7ee; }
dl.ea { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; }
dl.ea dt { font-weight: 600; } dl.ea dd { margin: 0; }
svg.seq { width: 100%; height: auto; border: 1px solid #e3e4ea; border-radius: 6px; background: #fff; }
svg.seq text { font: 12px system-ui, sans-serif; fill: #1d1f23; }
svg.seq .party { font-weight: 600; font-size: 13px; }
svg.seq .sub { fill: var(--dim); font-size: 11px; }
svg.seq .life { stroke: #c9cbd6; stroke-dasharray: 4 4; }
svg.seq .req { stroke: #33384a; stroke-width: 1.4; }
svg.seq .rep { stroke: var(--line); stroke-width: 1.2; stroke-dasharray: 5 3; }
svg.seq .failbox { fill: var(--failbg); stroke: #f3b4ae; }
svg.seq .fail { fill: var(--fail); font-weight: 600; }
svg.seq a { cursor: pointer; } svg.seq a:hover text { text-decoration: underline; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eceef3; vertical-align: top; }
tr[data-flow] { cursor: pointer; } tr[data-flow]:hover { background: #f5f7ff; }
tr.cited td { background: var(--failbg); }
.finding { border: 1px solid #e3e4ea; border-radius: 6px; padding: 8px 12px; margin: 10px 0; }
.finding.suspected { border-style: dashed; }
.sev { font-weight: 700; color: var(--fail); }
details.flow { border: 1px solid #e3e4ea; border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
details.flow[open] { background: #fafbfd; }
details.flow summary { cursor: pointer; }
details.flow pre { white-space: pre-wrap; word-break: break-all; background: #f4f5f8; padding: 8px;
  border-radius: 4px; }
.dim { color: var(--dim); }
"#;

/// Opens the flow a clicked arrow or row names, and the one in the address's `#flow-N`.
const SCRIPT: &str = r#"
(function () {
  function open(n, scroll) {
    var d = document.getElementById('flow-' + n);
    if (!d) return;
    d.open = true;
    if (scroll) d.scrollIntoView({ block: 'start' });
  }
  document.addEventListener('click', function (e) {
    var el = e.target.closest ? e.target.closest('[data-flow]') : null;
    if (!el) return;
    e.preventDefault();
    open(el.getAttribute('data-flow'), true);
    history.replaceState(null, '', '#flow-' + el.getAttribute('data-flow'));
  });
  var m = /^#flow-(\d+)$/.exec(location.hash);
  if (m) open(m[1], true);
})();
"#;

/// `Some("x")` → `<code>x</code>` for markdown's inline code; everything escaped.
fn inline(md: &str) -> String {
    let mut out = String::new();
    for (i, part) in md.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// The HTML report: one self-contained page (inline style, a few lines of inline script, SVG
/// drawn here), secrets fingerprinted as in [`crate::render_markdown`].
pub fn render_html(report: &Report, flows: &[Flow], opts: &MarkdownOptions) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>mcptap report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>mcptap report</h1>\n"
    );
    write_verdict(&mut out, report);
    let steps = story::steps(report);
    if !steps.is_empty() {
        let _ = writeln!(
            out,
            "<h2>What happened</h2>\n<p class=\"dim\">Click an arrow to see its headers and body.</p>"
        );
        out.push_str(&svg(report, &steps));
    }
    write_findings(&mut out, report);
    write_timeline(&mut out, report);
    write_flows(&mut out, report, flows, opts);
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    out
}

fn write_verdict(out: &mut String, report: &Report) {
    let counted: Vec<_> = report.counted().collect();
    match counted.first() {
        None => {
            let _ = writeln!(
                out,
                "<p class=\"verdict ok\" id=\"verdict\"><b>Verdict:</b> mcptap found no problem in {} flow(s).</p>",
                report.flows.len()
            );
        }
        Some(top) => {
            let (verdict, expected, actual) = story::verdict_parts(report, top, counted.len());
            let _ = writeln!(
                out,
                "<p class=\"verdict\" id=\"verdict\"><b>Verdict:</b> {}</p>\n<dl class=\"ea\">\
                 <dt>Expected</dt><dd>{}.</dd><dt>Actual</dt><dd>{}</dd></dl>",
                inline(&verdict),
                inline(&expected),
                inline(&actual)
            );
        }
    }
}

fn lane_x(p: Party) -> f64 {
    match p {
        Party::Client => 110.0,
        Party::Auth => 480.0,
        Party::Mcp => 850.0,
    }
}

/// Cuts `s` to what fits in `px` pixels of 12px text (about 6.6 px a character).
fn fit(s: &str, px: f64) -> String {
    let max = ((px / 6.6) as usize).max(8);
    if s.chars().count() > max {
        s.chars().take(max - 1).collect::<String>() + "…"
    } else {
        s.to_owned()
    }
}

fn arrow(out: &mut String, x1: f64, x2: f64, y: f64, class: &str, head: &str, label: &str) {
    let (lx, anchor) = ((x1 + x2) / 2.0, "middle");
    let _ = writeln!(
        out,
        "<line class=\"{class}\" x1=\"{x1}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" marker-end=\"url(#{head})\"/>\
         <text x=\"{lx}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
        y - 5.0,
        esc(&fit(label, (x2 - x1).abs() - 16.0))
    );
}

/// The sequence diagram as SVG: three lifelines, a request and an answer arrow per step,
/// failing steps on a red band with their finding ids; each step links to its flow.
fn svg(report: &Report, steps: &[Step]) -> String {
    const TOP: f64 = 70.0;
    const ROW: f64 = 26.0;
    let height_of = |s: &Step| {
        if s.marks.is_empty() {
            2.0 * ROW + 6.0
        } else {
            3.0 * ROW + 10.0
        }
    };
    let height = TOP + steps.iter().map(height_of).sum::<f64>() + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg class=\"seq\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 960 {height}\" \
         role=\"img\" aria-label=\"sequence diagram\">\n<defs>\
         <marker id=\"h\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#33384a\"/></marker>\
         <marker id=\"o\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10\" fill=\"none\" stroke=\"#99a\" stroke-width=\"1.5\"/></marker>\
         <marker id=\"x\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"9\" markerHeight=\"9\" orient=\"auto\"><path d=\"M1,1 L9,9 M9,1 L1,9\" stroke=\"#c62828\" stroke-width=\"2\"/></marker>\
         </defs>"
    );
    let env = &report.environment;
    let host = |v: &[String]| {
        v.iter()
            .map(|u| {
                let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
                rest.split('/').next().unwrap_or(rest).to_owned()
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (p, name, sub) in [
        (
            Party::Client,
            "Client",
            env.user_agents.first().cloned().unwrap_or_default(),
        ),
        (
            Party::Auth,
            "Authorization server",
            host(&env.authorization_servers),
        ),
        (Party::Mcp, "MCP server", host(&env.mcp_endpoints)),
    ] {
        let x = lane_x(p);
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"8\" width=\"200\" height=\"44\" rx=\"6\" fill=\"#eef0f7\" stroke=\"#c9cbd6\"/>\
             <text class=\"party\" x=\"{x}\" y=\"27\" text-anchor=\"middle\">{name}</text>\
             <text class=\"sub\" x=\"{x}\" y=\"43\" text-anchor=\"middle\">{}</text>\
             <line class=\"life\" x1=\"{x}\" y1=\"52\" x2=\"{x}\" y2=\"{}\"/>",
            x - 100.0,
            esc(&fit(&sub, 190.0)),
            height - 8.0
        );
    }
    let mut y = TOP;
    for s in steps {
        let h = height_of(s);
        let first = s.flows.first().map(|f| f.0).unwrap_or(0);
        let _ = writeln!(
            out,
            "<a class=\"step\" data-flow=\"{first}\" href=\"#flow-{first}\"><title>{}</title>",
            esc(&format!("{} → {}", s.request_label(), s.reply))
        );
        let marked = !s.marks.is_empty();
        if marked {
            let _ = writeln!(
                out,
                "<rect class=\"failbox\" x=\"12\" y=\"{}\" width=\"936\" height=\"{}\" rx=\"4\"/>",
                y - 4.0,
                h - 4.0
            );
        }
        let (x1, x2) = (lane_x(s.from), lane_x(s.to));
        let y1 = y + ROW - 4.0;
        arrow(&mut out, x1, x2, y1, "req", "h", &s.request_label());
        let y2 = y1 + ROW;
        let failed_mark = s.failed && marked;
        let reply = if failed_mark {
            format!("✗ {}", s.reply)
        } else {
            s.reply.clone()
        };
        arrow(
            &mut out,
            x2,
            x1,
            y2,
            "rep",
            if failed_mark { "x" } else { "o" },
            &reply,
        );
        if marked {
            let (lo, hi) = (x1.min(x2), x1.max(x2));
            let _ = writeln!(
                out,
                "<text class=\"fail\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">✗ {}</text>",
                (lo + hi) / 2.0,
                y2 + ROW - 4.0,
                esc(&s.marks_label())
            );
        }
        let _ = writeln!(out, "</a>");
        y += h;
    }
    let _ = writeln!(out, "</svg>");
    out
}

fn write_findings(out: &mut String, report: &Report) {
    let _ = writeln!(out, "<h2>Findings</h2>");
    if report.counted().next().is_none() {
        let _ = writeln!(out, "<p>None.</p>");
    }
    for f in report.counted() {
        let status = match f.status {
            Status::Suspected => " suspected",
            _ => "",
        };
        let _ = writeln!(
            out,
            "<div class=\"finding{status}\" id=\"finding-{}\"><p><span class=\"sev\">{}{}</span> \
             <code>{}</code> — {} <span class=\"dim\">(culprit: {})</span></p><p>{}</p><ul>",
            f.id,
            f.severity.as_str().to_ascii_uppercase(),
            status.to_ascii_uppercase(),
            f.id,
            esc(f.id.title()),
            f.culprit,
            esc(&f.summary)
        );
        if let Some(d) = &f.decides {
            let _ = writeln!(out, "<li>Not decided yet: {}</li>", esc(d));
        }
        for a in &f.amendments {
            let _ = writeln!(out, "<li>Amended: {}</li>", esc(a));
        }
        let ev: Vec<String> = f
            .evidence
            .iter()
            .map(|id| format!("<a href=\"#flow-{0}\" data-flow=\"{0}\">{id}</a>", id.0))
            .collect();
        let _ = writeln!(out, "<li>Evidence: {}</li>", ev.join(", "));
        for d in &f.details {
            let _ = writeln!(out, "<li>{}</li>", esc(d));
        }
        let _ = writeln!(
            out,
            "<li>Fix: {}</li><li>More: <code>mcptap explain {}</code></li></ul></div>",
            inline(&f.hint),
            f.id
        );
    }
}

fn write_timeline(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "<h2>Timeline</h2>\n<table><thead><tr><th>time</th><th>flow</th><th>role</th>\
         <th>request</th><th>status</th><th>auth</th><th>finding</th></tr></thead><tbody>"
    );
    let base = report.environment.first_started.unwrap_or(0);
    for f in &report.flows {
        let cited: Vec<String> = report
            .findings
            .iter()
            .filter(|x| x.evidence.contains(&f.id))
            .map(|x| match x.status {
                Status::Confirmed => x.id.to_string(),
                s => format!("{} ({})", x.id, s.as_str()),
            })
            .collect();
        let auth = match (&f.issued_token, &f.auth) {
            (Some(t), _) => format!("issues {t}"),
            (None, Some(a)) if a.injected => format!("injected {}", a.fingerprint),
            (None, Some(a)) => format!("{} {}", a.scheme, a.fingerprint),
            (None, None) => "—".to_owned(),
        };
        let what = crate::render::what_col(f);
        let _ = writeln!(
            out,
            "<tr data-flow=\"{}\"{}><td>+{:.3}s</td><td>{}</td><td>{}</td><td><code>{} {}</code> {}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            f.id.0,
            if cited.is_empty() { "" } else { " class=\"cited\"" },
            (f.started - base) as f64 / 1_000_000.0,
            f.id,
            f.role,
            esc(&f.method),
            esc(&f.url),
            esc(&what),
            f.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| f.error.unwrap_or("no response").to_owned()),
            esc(&auth),
            esc(&cited.join(", "))
        );
    }
    let _ = writeln!(out, "</tbody></table>");
    let env = &report.environment;
    let unlisted = env.unlisted_flows + env.unlisted_mcp_flows;
    if unlisted > 0 {
        let _ = writeln!(
            out,
            "<p class=\"dim\">{unlisted} more flow(s) were analysed and counted but not listed by the live analyzer.</p>"
        );
    }
}

fn write_flows(out: &mut String, report: &Report, flows: &[Flow], opts: &MarkdownOptions) {
    let _ = writeln!(out, "<h2>Flows</h2>");
    let mut shown = 0;
    for s in &report.flows {
        if shown == MAX_DETAILED_FLOWS {
            let _ = writeln!(
                out,
                "<p class=\"dim\">Headers and bodies of the first {MAX_DETAILED_FLOWS} flows only; see the session for the rest.</p>"
            );
            break;
        }
        let Some(flow) = flows.iter().find(|f| f.id == s.id) else {
            continue;
        };
        shown += 1;
        let (req, resp) = exchange_text(flow, opts.max_body);
        let status = s
            .status
            .map(|c| c.to_string())
            .unwrap_or_else(|| "no response".into());
        let _ = writeln!(
            out,
            "<details class=\"flow\" id=\"flow-{}\"><summary><b>{}</b> {} <code>{}</code> → {}</summary>\
             <pre>{}</pre>{}</details>",
            s.id.0,
            s.id,
            esc(&flow.request.method),
            esc(&s.url),
            status,
            esc(&req),
            resp.map(|r| format!("<pre>{}</pre>", esc(&r)))
                .unwrap_or_default()
        );
    }
}
