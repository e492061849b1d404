//! The probe's server checks: requests a client never makes, judged by the probe itself (it
//! knows what it sent), each naming the finding of the reference's server checks (44–53) it
//! proves. Each check is a request built here and a verdict on its answer decided here; the
//! probe sends it through the proxy like every other request, so the evidence is in the session.

use crate::probe::Verdict;
use crate::probe_http::{HttpError, Reply, Req};
use http::header::{HeaderName, ACCEPT, AUTHORIZATION, ORIGIN};
use http::Method;
use mcptap_analyze::{Culprit, Finding, FindingId as Id, Severity, Status};
use mcptap_flow::FlowId;

/// A server check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A fabricated bearer token must be refused with 401 (`token-not-validated`).
    FabricatedToken,
    /// The token in the query string without a header must not be served
    /// (`token-in-query-accepted`).
    QueryToken,
    /// A valid token with a foreign `Origin` must get 403 (`origin-not-validated`).
    ForeignOrigin,
    /// A POST holding only a notification must get 202 without a body
    /// (`notification-answer-wrong`).
    Notification,
    /// `GET` with `Accept: text/event-stream` must be an event stream or 405
    /// (`get-stream-wrong`).
    GetStream,
    /// A request with an unknown `MCP-Protocol-Version` must get 400
    /// (`invalid-request-accepted`).
    UnknownVersion,
    /// Registration with a plain-`http` redirect URI on a non-loopback host must be refused
    /// (`registration-redirect-unsafe`).
    UnsafeRedirect,
}

impl Check {
    /// Every check.
    pub const ALL: [Check; 7] = [
        Check::FabricatedToken,
        Check::QueryToken,
        Check::ForeignOrigin,
        Check::Notification,
        Check::GetStream,
        Check::UnknownVersion,
        Check::UnsafeRedirect,
    ];

    /// The finding the probe makes when the server fails this check; `None` for the checks
    /// whose requests any client may make, which the analyzer judges on the session like any
    /// capture (`get-stream-wrong`, `notification-answer-wrong`: the probe only sends them and
    /// says what it saw).
    pub fn finding_id(self) -> Option<Id> {
        match self {
            Check::FabricatedToken => Some(Id::TokenNotValidated),
            Check::QueryToken => Some(Id::TokenInQueryAccepted),
            Check::ForeignOrigin => Some(Id::OriginNotValidated),
            Check::UnknownVersion => Some(Id::InvalidRequestAccepted),
            Check::UnsafeRedirect => Some(Id::RegistrationRedirectUnsafe),
            Check::Notification | Check::GetStream => None,
        }
    }

    /// The id of the finding a failure is, whoever decides it.
    pub fn id_name(self) -> &'static str {
        match self {
            Check::Notification => "notification-answer-wrong",
            Check::GetStream => "get-stream-wrong",
            c => c.finding_id().map_or("", |id| id.as_str()),
        }
    }

    /// What the step table calls it.
    pub fn title(self) -> &'static str {
        match self {
            Check::FabricatedToken => "fabricated token refused",
            Check::QueryToken => "token in query refused",
            Check::ForeignOrigin => "foreign Origin refused",
            Check::Notification => "notification answered 202",
            Check::GetStream => "GET stream or 405",
            Check::UnknownVersion => "unknown version refused",
            Check::UnsafeRedirect => "unsafe redirect URI refused",
        }
    }

    /// The spec section it checks.
    pub fn spec(self) -> &'static str {
        match self {
            Check::FabricatedToken => "authorization §Token Handling; RFC 6750 §3.1",
            Check::QueryToken => "authorization §Token Requirements",
            Check::ForeignOrigin => "transports §Security Warning",
            Check::Notification => "transports §Sending Messages to the Server",
            Check::GetStream => "transports §Listening for Messages from the Server",
            Check::UnknownVersion => "transports §Protocol Version Header",
            Check::UnsafeRedirect => "authorization §Open Redirection; OAuth 2.1 §2.3.1",
        }
    }
}

/// What a check needs to know.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The MCP endpoint.
    pub url: String,
    /// The MCP request body the check sends (`initialize` or the protocol's first request).
    pub first_request: serde_json::Value,
    /// The token the probe obtained.
    pub token: Option<String>,
    /// The MCP session, when the server keeps sessions.
    pub session: Option<String>,
    /// The negotiated protocol version.
    pub protocol: String,
    /// The server is on a loopback address (a foreign Origin is then worse: DNS rebinding).
    pub loopback: bool,
    /// Random text for fabricated values.
    pub random: String,
    /// The authorization server's dynamic registration endpoint, if it has one.
    pub registration_endpoint: Option<String>,
}

impl Ctx {
    /// The redirect URI the unsafe-redirect check registers: plain `http` on a host that is
    /// not loopback (and does not exist).
    pub fn unsafe_redirect(&self) -> String {
        format!("http://mcptap-probe-{}.invalid/callback", self.random)
    }
}

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// A protocol version no server supports.
const UNKNOWN_VERSION: &str = "1999-01-01";

fn mcp_session() -> HeaderName {
    HeaderName::from_static("mcp-session-id")
}

fn mcp_version() -> HeaderName {
    HeaderName::from_static("mcp-protocol-version")
}

/// The request of `check`; `None` when what it needs (a token) is missing.
pub fn request(check: Check, ctx: &Ctx) -> Option<Req> {
    let post = |url: &str| {
        Req::new(Method::POST, url)
            .header(ACCEPT, ACCEPT_BOTH)
            .json(&ctx.first_request)
    };
    Some(match check {
        Check::FabricatedToken => post(&ctx.url).header(
            AUTHORIZATION,
            format!("Bearer mcptap-probe-fabricated-{}", ctx.random),
        ),
        Check::QueryToken => {
            let token = ctx.token.as_deref()?;
            let sep = if ctx.url.contains('?') { '&' } else { '?' };
            let url = format!(
                "{}{sep}access_token={}",
                ctx.url,
                mcptap_flow::redact::percent_encode(token)
            );
            post(&url)
        }
        Check::ForeignOrigin => post(&ctx.url)
            .header(AUTHORIZATION, format!("Bearer {}", ctx.token.as_deref()?))
            .header(ORIGIN, format!("https://{}.invalid", ctx.random)),
        Check::Notification => {
            let mut r = Req::new(Method::POST, &ctx.url)
                .header(ACCEPT, ACCEPT_BOTH)
                .header(AUTHORIZATION, format!("Bearer {}", ctx.token.as_deref()?))
                .header(mcp_version(), &ctx.protocol)
                .json(&serde_json::json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/initialized"
                }));
            if let Some(s) = &ctx.session {
                r = r.header(mcp_session(), s);
            }
            r
        }
        Check::GetStream => {
            let mut r = Req::get(&ctx.url)
                .header(ACCEPT, "text/event-stream")
                .header(AUTHORIZATION, format!("Bearer {}", ctx.token.as_deref()?))
                .header(mcp_version(), &ctx.protocol);
            if let Some(s) = &ctx.session {
                r = r.header(mcp_session(), s);
            }
            r.head_only = true;
            r
        }
        Check::UnsafeRedirect => Req::new(Method::POST, ctx.registration_endpoint.as_deref()?)
            .header(ACCEPT, "application/json")
            .json(&serde_json::json!({
                "client_name": "mcptap probe: unsafe redirect URI check (delete me)",
                "redirect_uris": [ctx.unsafe_redirect()],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            })),
        Check::UnknownVersion => {
            let mut r = Req::new(Method::POST, &ctx.url)
                .header(ACCEPT, ACCEPT_BOTH)
                .header(AUTHORIZATION, format!("Bearer {}", ctx.token.as_deref()?))
                .header(mcp_version(), UNKNOWN_VERSION)
                .json(&serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": 90,
                    "method": "tools/list",
                    "params": {}
                }));
            if let Some(s) = &ctx.session {
                r = r.header(mcp_session(), s);
            }
            r
        }
    })
}

/// The verdict on a check's answer: pass, warn or fail, a note, and the finding a failure is.
pub struct Judged {
    /// Pass, warn or fail.
    pub verdict: Verdict,
    /// What was seen.
    pub note: String,
    /// The finding, when the server failed the check.
    pub finding: Option<Finding>,
}

/// Judges the answer to `check`.
pub fn judge(check: Check, answer: Result<&Reply, &HttpError>, ctx: &Ctx) -> Judged {
    let reply = match answer {
        Ok(r) => r,
        Err(HttpError::Timeout(t)) if check == Check::GetStream => {
            return fail(
                check,
                ctx,
                None,
                Severity::Medium,
                format!("GET with Accept: text/event-stream got no response headers within {t:?}"),
            );
        }
        Err(e) => {
            return Judged {
                verdict: Verdict::Warn,
                note: format!("no answer: {}", crate::files::chain(e)),
                finding: None,
            }
        }
    };
    let status = reply.status;
    let ctype = reply
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    match check {
        Check::FabricatedToken => match status {
            401 => pass(format!("401{}", challenge_error(reply))),
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::Critical,
                format!("a fabricated bearer token was served ({s}) instead of refused with 401"),
            ),
            s => warn(format!(
                "{s}: refused, but RFC 6750 asks for 401 invalid_token"
            )),
        },
        Check::QueryToken => match status {
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::High,
                format!("the token in the query string (?access_token=) was served ({s})"),
            ),
            s => pass(format!("{s}: not served")),
        },
        Check::ForeignOrigin => match status {
            403 => pass("403".to_owned()),
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                if ctx.loopback {
                    Severity::High
                } else {
                    Severity::Medium
                },
                format!(
                    "a request with a valid token and Origin: https://{}.invalid was served ({s}) \
                     instead of refused with 403",
                    ctx.random
                ),
            ),
            s => warn(format!("{s}: refused, but the transport asks for 403")),
        },
        Check::Notification => {
            if status == 202 && reply.body.is_empty() {
                pass("202 without body".to_owned())
            } else {
                fail(
                    check,
                    ctx,
                    Some(reply),
                    Severity::Low,
                    format!(
                        "a POST holding only a notification was answered {status}{}",
                        if reply.body.is_empty() {
                            String::new()
                        } else {
                            format!(" with a {}-byte body", reply.body.len())
                        }
                    ),
                )
            }
        }
        Check::UnsafeRedirect => match status {
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::High,
                format!(
                    "registration accepted the redirect URI {} (plain http, not loopback) ({s})",
                    ctx.unsafe_redirect()
                ),
            ),
            400 => pass(format!("400{}", oauth_error_code(reply))),
            s => warn(format!(
                "{s}: refused, but RFC 7591 asks for 400 invalid_redirect_uri"
            )),
        },
        Check::UnknownVersion => match status {
            400 => pass("400".to_owned()),
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::Low,
                format!(
                    "tools/list with MCP-Protocol-Version: {UNKNOWN_VERSION} was served ({s}) \
                     instead of refused with 400"
                ),
            ),
            s => warn(format!("{s}: refused, but the transport asks for 400")),
        },
        Check::GetStream => {
            if status == 405 {
                pass("405 (no GET stream)".to_owned())
            } else if status == 200 && ctype.starts_with("text/event-stream") {
                pass("200 text/event-stream".to_owned())
            } else if (200..300).contains(&status) {
                fail(
                    check,
                    ctx,
                    Some(reply),
                    Severity::Medium,
                    format!(
                        "GET with Accept: text/event-stream was answered {status} with \
                         content type {:?} instead of an event stream or 405",
                        reply.header("content-type").unwrap_or("")
                    ),
                )
            } else {
                warn(format!(
                    "{status}: neither an event stream nor 405 (the transport allows only those)"
                ))
            }
        }
    }
}

fn oauth_error_code(reply: &Reply) -> String {
    reply
        .json()
        .and_then(|v| v.get("error")?.as_str().map(|e| format!(" {e}")))
        .unwrap_or_default()
}

fn challenge_error(reply: &Reply) -> String {
    match reply.header("www-authenticate") {
        Some(c) if c.contains("invalid_token") => " invalid_token".to_owned(),
        Some(_) => String::new(),
        None => " (no WWW-Authenticate)".to_owned(),
    }
}

fn pass(note: String) -> Judged {
    Judged {
        verdict: Verdict::Pass,
        note,
        finding: None,
    }
}

fn warn(note: String) -> Judged {
    Judged {
        verdict: Verdict::Warn,
        note,
        finding: None,
    }
}

fn fail(
    check: Check,
    ctx: &Ctx,
    reply: Option<&Reply>,
    severity: Severity,
    summary: String,
) -> Judged {
    let Some(id) = check.finding_id() else {
        return Judged {
            verdict: Verdict::Fail,
            note: format!("{summary} → {} (the analyzer's)", check.id_name()),
            finding: None,
        };
    };
    let mut details = vec![format!("probe check: {}", check.title())];
    if let Some(r) = reply {
        details.push(format!(
            "answer: {} {}",
            r.status,
            r.header("content-type").unwrap_or("(no content type)")
        ));
    }
    let finding = server_finding(
        id,
        ctx.url.clone(),
        severity,
        match reply {
            Some(r) => format!("{summary} (#{})", r.flow),
            None => summary.clone(),
        },
        reply.map(|r| r.flow).into_iter().collect(),
        details,
    );
    Judged {
        verdict: Verdict::Fail,
        note: format!("{summary} → {id}"),
        finding: Some(finding),
    }
}

/// A finding of a server check, as the probe makes it and as a saved probe gives it back
/// ([`crate::probe::apply_saved`]).
pub fn server_finding(
    id: Id,
    key: String,
    severity: Severity,
    summary: String,
    evidence: Vec<u64>,
    details: Vec<String>,
) -> Finding {
    Finding {
        id,
        key,
        severity,
        culprit: Culprit::Server,
        status: Status::Confirmed,
        subcase: None,
        summary,
        evidence: evidence.into_iter().map(FlowId).collect(),
        occurrences: 1,
        hint: id.hint().to_owned(),
        details,
        decides: None,
        amendments: Vec::new(),
    }
}
