//! `edge-blocked` (failure-modes.md 2): a CDN, WAF or bot filter answering in the origin's
//! place.

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{Analyzer, New};
use crate::model::{Culprit, Role, Severity};
use crate::util;

const EDGE_PHRASES: &[&str] = &[
    "just a moment",
    "attention required",
    "your request was blocked",
    "request blocked",
    "cf-chl",
    "captcha",
    "checking your browser",
    "access denied | ",
    "bot protection",
];

impl Analyzer {
    /// `edge-blocked`: 403/429/503 without a challenge, not JSON, with a CDN's marks.
    pub(crate) fn check_edge(&mut self, c: &Ctx<'_>) -> bool {
        if matches!(
            c.role,
            Role::Other | Role::Tunnel | Role::Callback | Role::McpPreflight
        ) {
            return false;
        }
        let Some(status) = c.status else { return false };
        if !matches!(status, 403 | 429 | 503) {
            return false;
        }
        let Some(resp) = &c.flow.response else {
            return false;
        };
        if resp.headers.contains("www-authenticate") || util::response_json(c.flow).is_some() {
            return false;
        }
        let server = resp
            .headers
            .get("server")
            .unwrap_or("")
            .to_ascii_lowercase();
        let marker_header = [
            "cf-ray",
            "cf-mitigated",
            "x-amz-cf-id",
            "x-sucuri-id",
            "x-iinfo",
            "x-vercel-mitigated",
            "x-datadome",
            "akamai-grn",
        ]
        .iter()
        .find(|h| resp.headers.contains(h))
        .map(|h| (*h).to_owned())
        .or_else(|| {
            [
                "cloudflare",
                "akamai",
                "cloudfront",
                "sucuri",
                "incapsula",
                "imperva",
                "ddos-guard",
            ]
            .iter()
            .find(|s| server.contains(*s))
            .map(|s| format!("server: {s}"))
        });
        let body = resp
            .body
            .as_str()
            .map(|b| {
                b.chars()
                    .take(4096)
                    .collect::<String>()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let phrase = EDGE_PHRASES.iter().find(|p| body.contains(*p));
        let strong = resp.headers.contains("cf-mitigated") || phrase.is_some();
        if !(strong || (marker_header.is_some() && status != 503)) {
            return false;
        }
        let Some(url) = &c.url else { return false };
        let mut n = New::finding(Id::EdgeBlocked, url.origin(), Severity::Critical, Culprit::Edge)
            .say(format!(
                "{} answered {status} to the {} request in {} without a challenge and with a non-JSON body: a CDN/WAF blocked it before the server saw it.",
                url.origin(),
                c.role,
                c.id
            ))
            .ev([c.id]);
        if let Some(m) = marker_header {
            n = n.detail(format!("edge marker: {m}"));
        }
        if let Some(p) = phrase {
            n = n.detail(format!("body says {p:?}"));
        }
        if let Some(ua) = &c.ua {
            n = n.detail(format!("User-Agent: {ua}"));
        }
        self.emit(n);
        true
    }
}
