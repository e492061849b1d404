//! The story a report tells before its tables: a one-sentence verdict with Expected / Actual,
//! and the exchange between client, authorization server and MCP server as a list of
//! [`Step`]s. The markdown report draws the steps as a mermaid `sequenceDiagram` and the HTML
//! report as an SVG, so both pictures say the same thing.

use crate::model::{Culprit, Finding, FlowSummary, Report, Role, Status};
use crate::FindingId;
use mcptap_flow::FlowId;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Who a step's request goes to (it always comes from the client, except the browser's
/// callback, which comes back from the authorization server's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Party {
    /// The MCP client.
    Client,
    /// The authorization server (metadata, registration, authorize, token, JWKS, revoke).
    Auth,
    /// The MCP server (MCP requests and its protected-resource metadata).
    Mcp,
}

/// One arrow pair of the diagram: a request and its answer, or a run of identical MCP calls
/// folded into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// The flows drawn by this step, in order (more than one when identical calls were folded).
    pub flows: Vec<FlowId>,
    /// Who sends the request.
    pub from: Party,
    /// Who answers.
    pub to: Party,
    /// What was asked (`POST /token (authorization_code)`, `initialize`).
    pub request: String,
    /// The credential the request carried, for MCP requests: `Bearer 755b2046dd8b` or
    /// `no token`.
    pub auth: Option<String>,
    /// The answer (`401`, `200, issues token 755b2046dd8b`, `no response`).
    pub reply: String,
    /// The answer was an error or missing.
    pub failed: bool,
    /// The findings marked on this step (its failing evidence), most severe first.
    pub marks: Vec<(FindingId, Status)>,
}

impl Step {
    /// `#7`, or `#7–#9 (×3)` for a folded run.
    pub fn flow_label(&self) -> String {
        match (self.flows.first(), self.flows.last()) {
            (Some(a), Some(b)) if self.flows.len() > 1 => {
                format!("{a}–{b} (×{})", self.flows.len())
            }
            (Some(a), _) => a.to_string(),
            _ => String::new(),
        }
    }

    /// The request arrow's text: `#7 initialize, no token`.
    pub fn request_label(&self) -> String {
        match &self.auth {
            Some(a) => format!("{} {}, {a}", self.flow_label(), self.request),
            None => format!("{} {}", self.flow_label(), self.request),
        }
    }

    /// The finding ids on this step: `token-not-sent, transport-header-violation (suspected)`.
    pub fn marks_label(&self) -> String {
        self.marks
            .iter()
            .map(|(id, st)| match st {
                Status::Confirmed => id.to_string(),
                st => format!("{id} ({})", st.as_str()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        s.chars().take(max - 1).collect::<String>() + "…"
    } else {
        s.to_owned()
    }
}

/// The findings that count, by the flows they cite as failing steps. A finding marks the
/// evidence flows that failed (an error status or no answer, or a bare MCP request); when none
/// did, its last evidence flow.
fn marks_by_flow(report: &Report) -> HashMap<FlowId, Vec<(FindingId, Status)>> {
    let by_id: HashMap<FlowId, &FlowSummary> = report.flows.iter().map(|f| (f.id, f)).collect();
    let mut out: HashMap<FlowId, Vec<(FindingId, Status)>> = HashMap::new();
    for finding in report.counted() {
        let failing: Vec<FlowId> = finding
            .evidence
            .iter()
            .copied()
            .filter(|id| by_id.get(id).is_some_and(|f| failed(f) || bare_mcp(f)))
            .collect();
        let marked = if failing.is_empty() {
            finding.evidence.last().copied().into_iter().collect()
        } else {
            failing
        };
        for id in marked {
            let v = out.entry(id).or_default();
            if !v.iter().any(|(i, _)| *i == finding.id) {
                v.push((finding.id, finding.status));
            }
        }
    }
    out
}

fn failed(f: &FlowSummary) -> bool {
    f.status.is_none_or(|s| s >= 400) || f.error.is_some()
}

fn bare_mcp(f: &FlowSummary) -> bool {
    f.role == Role::Mcp && f.auth.is_none()
}

/// The steps of the diagram: every OAuth and MCP flow of the report, in order, with runs of
/// identical MCP calls folded. Flows of other roles (other hosts, tunnels) are left to the
/// timeline.
pub(crate) fn steps(report: &Report) -> Vec<Step> {
    let marks = marks_by_flow(report);
    let held = tokens_held(report);
    let mut out: Vec<Step> = Vec::new();
    for f in &report.flows {
        let Some(mut step) = step_of(f, marks.get(&f.id).cloned().unwrap_or_default()) else {
            continue;
        };
        if let (Some(tok), Some(auth)) = (held.get(&f.id), step.auth.as_mut()) {
            *auth = format!("no token ({tok} was valid)");
        }
        if let Some(last) = out.last_mut() {
            let same = last.to == Party::Mcp
                && matches!(f.role, Role::Mcp | Role::McpPreflight)
                && last.from == step.from
                && last.to == step.to
                && last.request == step.request
                && last.auth == step.auth
                && last.reply == step.reply
                && last.marks == step.marks;
            if same {
                last.flows.push(f.id);
                continue;
            }
        }
        out.push(step);
    }
    out
}

/// Bare MCP requests a `token-not-sent` finding cites, with the token the client held then
/// (the one its evidence's token flow issued).
fn tokens_held(report: &Report) -> HashMap<FlowId, String> {
    let by_id: HashMap<FlowId, &FlowSummary> = report.flows.iter().map(|f| (f.id, f)).collect();
    let mut out = HashMap::new();
    for finding in report.counted() {
        if !matches!(
            finding.id,
            FindingId::TokenNotSent | FindingId::ClientOmitsTokenConfirmed
        ) {
            continue;
        }
        let Some(tok) = finding
            .evidence
            .iter()
            .find_map(|id| by_id.get(id).and_then(|f| f.issued_token.clone()))
        else {
            continue;
        };
        for id in &finding.evidence {
            if by_id.get(id).is_some_and(|f| bare_mcp(f)) {
                out.insert(*id, tok.clone());
            }
        }
    }
    out
}

fn step_of(f: &FlowSummary, marks: Vec<(FindingId, Status)>) -> Option<Step> {
    let path = short(path_of(&f.url), 48);
    let (from, to, request) = match f.role {
        Role::PrmDiscovery => (
            Party::Client,
            Party::Mcp,
            format!("{} {path} (resource metadata)", f.method),
        ),
        Role::AsMetadata => (
            Party::Client,
            Party::Auth,
            format!("{} {path} (server metadata)", f.method),
        ),
        Role::Registration => (
            Party::Client,
            Party::Auth,
            format!("{} {path} (register)", f.method),
        ),
        Role::Authorize => (
            Party::Client,
            Party::Auth,
            format!("browser {} {path}", f.method),
        ),
        Role::Callback => (
            Party::Auth,
            Party::Client,
            "browser back to the callback".to_owned(),
        ),
        Role::TokenCode => (
            Party::Client,
            Party::Auth,
            format!("{} {path} (code)", f.method),
        ),
        Role::TokenRefresh => (
            Party::Client,
            Party::Auth,
            format!("{} {path} (refresh)", f.method),
        ),
        Role::TokenOther => (Party::Client, Party::Auth, format!("{} {path}", f.method)),
        Role::Jwks => (
            Party::Client,
            Party::Auth,
            format!("{} {path} (keys)", f.method),
        ),
        Role::Revocation => (
            Party::Client,
            Party::Auth,
            format!("{} {path} (revoke)", f.method),
        ),
        Role::Mcp | Role::McpPreflight => {
            let what = crate::render::what_col(f);
            let what = if what.is_empty() {
                format!("{} {path}", f.method)
            } else {
                what
            };
            (Party::Client, Party::Mcp, what)
        }
        Role::Other | Role::Tunnel => return None,
    };
    let request = match &f.by_mcptap {
        Some(_) => format!("{request} [by mcptap]"),
        None => request,
    };
    let auth = matches!(f.role, Role::Mcp).then(|| match &f.auth {
        Some(a) if a.injected => format!("token {} injected by mcptap", a.fingerprint),
        Some(a) => format!("{} {}", a.scheme, a.fingerprint),
        None => "no token".to_owned(),
    });
    let mut reply = match (f.status, f.error) {
        (Some(s), _) if f.synthetic => format!("{s} (made by mcptap)"),
        (Some(s), _) => s.to_string(),
        (None, Some(e)) => format!("no response ({e})"),
        (None, None) => "no response".to_owned(),
    };
    if let Some(t) = &f.issued_token {
        let _ = write!(reply, ", issues token {t}");
    }
    Some(Step {
        flows: vec![f.id],
        from,
        to,
        request,
        auth,
        reply,
        failed: failed(f),
        marks,
    })
}

/// Who is to blame, as the verdict says it.
fn culprit_phrase(c: Culprit) -> &'static str {
    match c {
        Culprit::Client => "the MCP client is at fault",
        Culprit::Server => "the MCP server or its authorization server is at fault",
        Culprit::Edge => "something between client and server (a CDN, WAF or proxy) is at fault",
        Culprit::Unknown => "the capture does not say who is at fault",
    }
}

/// What should have happened instead of a finding, in one sentence.
fn expected(id: FindingId) -> &'static str {
    use FindingId as F;
    match id {
        F::TokenNotSent | F::TokenUnused | F::ClientOmitsTokenConfirmed => {
            "once a token is issued, every MCP request carries it as `Authorization: Bearer …` and the server answers 2xx"
        }
        F::EdgeBlocked => "requests that carry the token reach the MCP server and get its answer",
        F::FreshTokenRejected | F::ServerRejectsToken => {
            "the MCP server accepts a token its own authorization server just issued"
        }
        F::StaleTokenSent => "the client sends its newest valid token, refreshing it before it expires",
        F::RedirectDropsAuth => "the MCP endpoint answers where the client sent the request, without a redirect",
        F::ChallengeMissing | F::LazyChallenge => {
            "a request without a token gets 401 with `WWW-Authenticate: Bearer resource_metadata=…`"
        }
        F::PrmUnavailable | F::PrmUrlNotPathScoped => {
            "protected-resource metadata (RFC 9728) is served as JSON at the path-scoped well-known URL"
        }
        F::MetadataNotJson => "every .well-known URL answers JSON or 404",
        F::PrmResourceMismatch => "the metadata's `resource` is exactly the MCP URL the client uses",
        F::AsDiscoveryFailed => "the authorization server's metadata is found at the well-known URL of its issuer",
        F::AsMetadataIncomplete => "the authorization server's metadata lists the endpoints and PKCE S256",
        F::RegistrationFailed => "dynamic client registration returns a client id",
        F::RedirectUriMismatch => "the authorize request uses the registered redirect_uri",
        F::ResourceParamWrong => "the `resource` parameter names the MCP server on /authorize, /token and refresh",
        F::PkceMismatch => "the token request's code_verifier matches the authorize request's challenge",
        F::TokenExchangeMissing => "after authorization the client exchanges the code for a token",
        F::TokenResponseInvalid => "the token endpoint answers a JSON token response with `access_token` and `token_type`",
        F::InsufficientScopeUnhandled => "after `insufficient_scope` the client re-authorizes with the scope asked for",
        F::RefreshBroken => "refreshing gives a new token and the client uses it",
        F::TransportHeaderViolation => "Streamable HTTP requests and answers carry the headers the transport requires",
        F::CorsBlocked => "the server answers a browser client's preflight and exposes its headers",
        F::TokenAuthMethodMismatch => "the client authenticates at /token the way it registered",
        F::MetadataUnreachableEndpoints => "the endpoints in the metadata are reachable by the client",
        F::ClientIgnoresMetadata => "the client uses the endpoints the metadata names",
        F::Session404Mishandled => "after a 404 for its session the client starts a new session with initialize",
        F::ToolSchemaInvalid => "every tool's inputSchema is a JSON Schema object",
        F::AuthorizeNotVisible => "the capture includes the browser's /authorize",
        F::ClientRegistrationStale => "after `invalid_client` for a forgotten registration the client registers again",
        F::RegistrationMechanismMismatch => "the client gets its client id the way the server offers (pre-registered, a Client ID Metadata Document, or registration)",
        F::CimdInvalid => "the Client ID Metadata Document names its own URL and lists the redirect URI used",
        F::ScopeRejected => "the client asks only for scopes the challenge or the metadata offer",
        F::IssuerMismatch => "the authorization response's `iss` is the metadata's issuer",
        F::CredentialCrossIssuer => "credentials go only to the authorization server that issued them",
        F::ScopeSelectionWrong => "the client requests the challenged scope, else all of `scopes_supported`, else none",
        F::DiscoveryOrderWrong => "the client probes the challenge's metadata URL, then the path-inserted one, then the root",
        F::CimdNotUsed => "the client uses a Client ID Metadata Document where the server offers one",
        F::JsonrpcResponseInvalid => "every JSON-RPC answer is a well-formed 2.0 response to its request",
        F::MetadataUrlInvalid => "the metadata holds absolute https URLs and a plain issuer",
        F::JwksInvalid => "the JWKS is a JSON document with the signing keys",
        F::GetStreamWrong => "a GET for the stream opens an event stream at once, or gets 405",
        F::NotificationAnswerWrong => "a POST of notifications is answered 202 without a body",
        F::HostOriginRejected => "the MCP server accepts the Host and Origin it is reached with",
        F::SseBuffered => "each server-sent event reaches the client when the server sends it, uncompressed",
        F::ChallengeAmbiguous => "a challenge names one resource_metadata URL, and it works",
        F::VersionNegotiationFailed => "client and server agree on a protocol version both support",
        F::StatelessHeaderViolation => "2026-07-28 requests carry MCP-Protocol-Version, Mcp-Method and Mcp-Name matching their body",
        F::TokenNotValidated => "a bearer token the server never issued, or a JWT with a bad signature, past `exp` or for another audience, gets 401 `invalid_token`",
        F::OriginNotValidated => "a request from a foreign Origin gets 403",
        F::TokenInQueryAccepted => "a token in the query string is never served",
        F::RegistrationRedirectUnsafe => "registration refuses redirect URIs that are neither https nor loopback http",
        F::InvalidRequestAccepted => "a request with an unsupported MCP-Protocol-Version, `\"id\": null`, a notification method with an `id`, or no session id is refused",
    }
}

/// The report's opening: a one-sentence verdict, then Expected and Actual (markdown).
pub(crate) fn verdict_markdown(report: &Report) -> String {
    let mut out = String::new();
    let counted: Vec<&Finding> = report.counted().collect();
    let Some(top) = counted.first() else {
        let _ = writeln!(
            out,
            "**Verdict:** mcptap found no problem in {} flow(s).\n",
            report.flows.len()
        );
        return out;
    };
    let (verdict, expected, actual) = verdict_parts(report, top, counted.len());
    let _ = writeln!(out, "**Verdict:** {verdict}\n");
    let _ = writeln!(out, "- **Expected:** {expected}.");
    let _ = writeln!(out, "- **Actual:** {actual}\n");
    out
}

/// The verdict sentence, the expected behaviour and the actual one, for the most severe
/// finding (markdown inline code allowed).
pub(crate) fn verdict_parts(
    report: &Report,
    top: &Finding,
    counted: usize,
) -> (String, String, String) {
    let _ = report;
    let maybe = if top.status == Status::Suspected {
        "probably: "
    } else {
        ""
    };
    let title = top.id.title();
    let mut title = title.to_owned();
    if let Some(c) = title.get_mut(0..1) {
        c.make_ascii_lowercase();
    }
    let others = match counted {
        1 => String::new(),
        2 => " One other finding follows.".to_owned(),
        n => format!(" {} other findings follow.", n - 1),
    };
    let verdict = format!(
        "{maybe}{} — {title} (`{}`, {}{}).{others}",
        culprit_phrase(top.culprit),
        top.id,
        top.severity.as_str(),
        if top.status == Status::Suspected {
            ", suspected"
        } else {
            ""
        }
    );
    let mut c = verdict.chars();
    let verdict = match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => verdict,
    };
    (verdict, expected(top.id).to_owned(), top.summary.clone())
}

fn alias(p: Party) -> &'static str {
    match p {
        Party::Client => "C",
        Party::Auth => "AS",
        Party::Mcp => "MCP",
    }
}

/// Text that is safe inside a mermaid message: no statement separator (which also keeps a
/// `#7` from reading as an entity code such as `#35;`), no markup.
fn mermaid_text(s: &str) -> String {
    s.replace(';', ",").replace('<', "‹").replace('>', "›")
}

fn origin_of(urls: &[String]) -> String {
    urls.iter()
        .map(|u| {
            let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
            rest.split('/').next().unwrap_or(rest).to_owned()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The mermaid `sequenceDiagram` of the steps, failing steps in a red box with their finding
/// ids in a note.
pub(crate) fn mermaid(report: &Report, steps: &[Step]) -> String {
    let mut out = String::new();
    let env = &report.environment;
    let _ = writeln!(out, "```mermaid\nsequenceDiagram");
    let _ = writeln!(out, "    participant C as Client");
    let auth = origin_of(&env.authorization_servers);
    let _ = writeln!(
        out,
        "    participant AS as Authorization server{}",
        if auth.is_empty() {
            String::new()
        } else {
            format!("<br/>{}", mermaid_text(&auth))
        }
    );
    let mcp = origin_of(&env.mcp_endpoints);
    let _ = writeln!(
        out,
        "    participant MCP as MCP server{}",
        if mcp.is_empty() {
            String::new()
        } else {
            format!("<br/>{}", mermaid_text(&mcp))
        }
    );
    for s in steps {
        let marked = !s.marks.is_empty();
        let indent = if marked { "        " } else { "    " };
        if marked {
            let _ = writeln!(out, "    rect rgb(255, 221, 221)");
        }
        let _ = writeln!(
            out,
            "{indent}{}->>{}: {}",
            alias(s.from),
            alias(s.to),
            mermaid_text(&s.request_label())
        );
        let _ = writeln!(
            out,
            "{indent}{}-->>{}: {}{}",
            alias(s.to),
            alias(s.from),
            if s.failed && marked { "✗ " } else { "" },
            mermaid_text(&s.reply)
        );
        if marked {
            let (a, b) = match (s.from, s.to) {
                (Party::Client, p) | (p, Party::Client) => ("C", alias(p)),
                _ => ("C", "MCP"),
            };
            let _ = writeln!(
                out,
                "{indent}Note over {a},{b}: ✗ {}",
                mermaid_text(&s.marks_label())
            );
            let _ = writeln!(out, "    end");
        }
    }
    let _ = writeln!(out, "```");
    out
}
