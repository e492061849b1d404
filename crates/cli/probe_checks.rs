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
use serde_json::Value;

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
    /// Registration with a `javascript:` redirect URI must be refused.
    RedirectJavascript,
    /// Registration with a `data:` redirect URI must be refused.
    RedirectData,
    /// Registration with a `file:` redirect URI must be refused.
    RedirectFile,
    /// The probe's own JWT with its signature altered must be refused with 401
    /// (`token-not-validated`).
    BadSignature,
    /// The probe's own JWT with `exp` an hour ago must be refused with 401
    /// (`token-not-validated`).
    ExpiredToken,
    /// The probe's own JWT with `aud` naming another resource must be refused with 401
    /// (`token-not-validated`).
    WrongAudience,
    /// A JWT the authorization server issued, on a refresh naming another resource (RFC 8707
    /// §2.2), must be refused with 401 (`token-not-validated`): the audience check of a server
    /// that verifies signatures.
    OtherResource,
    /// A request with `"id": null` must be refused (`invalid-request-accepted`).
    NullId,
    /// A notification method sent with an `id` must be refused (`invalid-request-accepted`).
    NotificationWithId,
    /// On a server that keeps sessions, a request without the session id (as if before
    /// `initialize`) must get 400 (`invalid-request-accepted`).
    BeforeInitialize,
    /// The authorization server's `jwks_uri` must answer a key set (`jwks-invalid`, which the
    /// analyzer decides on any fetch of it).
    Jwks,
}

impl Check {
    /// Every check.
    pub const ALL: [Check; 18] = [
        Check::Jwks,
        Check::FabricatedToken,
        Check::BadSignature,
        Check::ExpiredToken,
        Check::WrongAudience,
        Check::OtherResource,
        Check::QueryToken,
        Check::ForeignOrigin,
        Check::Notification,
        Check::GetStream,
        Check::UnknownVersion,
        Check::NullId,
        Check::NotificationWithId,
        Check::BeforeInitialize,
        Check::UnsafeRedirect,
        Check::RedirectJavascript,
        Check::RedirectData,
        Check::RedirectFile,
    ];

    /// The checks run after the main path, in this order (the notification check rides on the
    /// main path's `notifications/initialized`).
    pub fn after_main_path() -> impl Iterator<Item = Check> {
        Check::ALL.into_iter().filter(|c| *c != Check::Notification)
    }

    /// Whether it sends the token the probe obtained (or one made from it).
    pub fn needs_token(self) -> bool {
        !matches!(self, Check::FabricatedToken | Check::Jwks) && !self.registers()
    }

    /// Whether it registers a client with an unsafe redirect URI.
    pub fn registers(self) -> bool {
        matches!(
            self,
            Check::UnsafeRedirect
                | Check::RedirectJavascript
                | Check::RedirectData
                | Check::RedirectFile
        )
    }

    /// Whether it sends a JWT made from the probe's own.
    pub fn forges_jwt(self) -> bool {
        matches!(
            self,
            Check::BadSignature | Check::ExpiredToken | Check::WrongAudience
        )
    }

    /// Why it cannot run when [`request`] gives nothing.
    pub fn skip_reason(self, ctx: &Ctx) -> &'static str {
        if self == Check::Jwks {
            "the authorization-server metadata names no jwks_uri"
        } else if self.registers() {
            "the server offers no dynamic registration (or its metadata was not found)"
        } else if ctx.token.is_none() {
            "no token was obtained"
        } else if self == Check::OtherResource {
            if ctx.token.as_deref().and_then(jwt_audience).is_some() {
                "no refresh token was issued"
            } else {
                "the token is opaque (not a JWT): whether a new one is for another resource \
                 cannot be told"
            }
        } else if self.forges_jwt() {
            "the token is opaque (not a JWT): only the fabricated token applies"
        } else if self == Check::BeforeInitialize {
            "the server keeps no session"
        } else {
            "not applicable"
        }
    }

    /// The finding the probe makes when the server fails this check; `None` for the checks
    /// whose requests any client may make, which the analyzer judges on the session like any
    /// capture (`get-stream-wrong`, `notification-answer-wrong`: the probe only sends them and
    /// says what it saw).
    pub fn finding_id(self) -> Option<Id> {
        match self {
            Check::FabricatedToken
            | Check::BadSignature
            | Check::ExpiredToken
            | Check::WrongAudience
            | Check::OtherResource => Some(Id::TokenNotValidated),
            Check::QueryToken => Some(Id::TokenInQueryAccepted),
            Check::ForeignOrigin => Some(Id::OriginNotValidated),
            Check::UnknownVersion
            | Check::NullId
            | Check::NotificationWithId
            | Check::BeforeInitialize => Some(Id::InvalidRequestAccepted),
            Check::UnsafeRedirect
            | Check::RedirectJavascript
            | Check::RedirectData
            | Check::RedirectFile => Some(Id::RegistrationRedirectUnsafe),
            Check::Notification | Check::GetStream | Check::Jwks => None,
        }
    }

    /// The id of the finding a failure is, whoever decides it.
    pub fn id_name(self) -> &'static str {
        match self {
            Check::Notification => "notification-answer-wrong",
            Check::GetStream => "get-stream-wrong",
            Check::Jwks => "jwks-invalid",
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
            Check::Jwks => "JWKS usable",
            Check::RedirectJavascript => "javascript: redirect refused",
            Check::RedirectData => "data: redirect refused",
            Check::RedirectFile => "file: redirect refused",
            Check::BadSignature => "JWT bad signature refused",
            Check::ExpiredToken => "JWT past exp refused",
            Check::WrongAudience => "JWT other audience refused",
            Check::OtherResource => "other-resource token refused",
            Check::NullId => "id null refused",
            Check::NotificationWithId => "notification with id refused",
            Check::BeforeInitialize => "no session id refused",
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
            Check::UnsafeRedirect
            | Check::RedirectJavascript
            | Check::RedirectData
            | Check::RedirectFile => "authorization §Open Redirection; OAuth 2.1 §2.3.1",
            Check::BadSignature | Check::ExpiredToken | Check::WrongAudience => {
                "authorization §Token Audience Binding and Validation; RFC 6750 §3.1"
            }
            Check::NullId | Check::NotificationWithId => "basic §Requests; §Notifications",
            Check::BeforeInitialize => "transports §Session Management",
            Check::OtherResource => {
                "authorization §Token Audience Binding and Validation; RFC 8707 §2.2"
            }
            Check::Jwks => "RFC 8414 §2 (jwks_uri); RFC 7517 §5",
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
    /// The authorization server's `jwks_uri`, if it names one.
    pub jwks_uri: Option<String>,
}

impl Ctx {
    /// The redirect URI the unsafe-redirect check registers: plain `http` on a host that is
    /// not loopback (and does not exist).
    pub fn unsafe_redirect(&self) -> String {
        format!("http://mcptap-probe-{}.invalid/callback", self.random)
    }

    /// The redirect URI a registering check asks for.
    pub fn redirect_of(&self, check: Check) -> Option<String> {
        Some(match check {
            Check::UnsafeRedirect => self.unsafe_redirect(),
            Check::RedirectJavascript => "javascript:alert(document.domain)//".to_owned(),
            Check::RedirectData => "data:text/html,<script>alert(1)</script>".to_owned(),
            Check::RedirectFile => "file:///tmp/mcptap-probe-callback".to_owned(),
            _ => return None,
        })
    }

    /// The audience the wrong-audience JWT names.
    pub fn other_audience(&self) -> String {
        format!("https://mcptap-probe-{}.invalid/mcp", self.random)
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

/// The stateless protocol revision: no `initialize`, no session; every request carries its
/// version and client in `params._meta`, mirrored in headers.
pub const MODERN: &str = "2026-07-28";

/// The version the probe falls back to when a server refuses 2026-07-28 without naming the
/// ones it supports (`initialize` then negotiates further down).
pub const FALLBACK: &str = "2025-11-25";

/// Whether `reply` to a 2026-07-28 request says the server does not speak that revision, and
/// the version to speak instead, as the transport's backward compatibility asks of clients:
/// an `UnsupportedProtocolVersion` error (-32022) names the supported versions (the newest of
/// 2025-11-25 and 2025-06-18 among them); a header error (-32020, -32021) is a modern server's
/// answer to a malformed request, not a reason to fall back; any other 4xx but 401 and 403 (an
/// older server refusing the version header, the missing session or the unknown method) means
/// 2025-11-25.
pub fn fallback_version(reply: &Reply) -> Option<&'static str> {
    if !(400..500).contains(&reply.status) || matches!(reply.status, 401 | 403) {
        return None;
    }
    let error = reply.json().and_then(|v| v.get("error").cloned());
    let code = error.as_ref().and_then(|e| e.get("code")?.as_i64());
    match code {
        Some(-32020 | -32021) => None,
        Some(-32022) => {
            let supported = error
                .as_ref()
                .and_then(|e| e.pointer("/data/supported")?.as_array().cloned())
                .unwrap_or_default();
            ["2025-11-25", "2025-06-18"]
                .into_iter()
                .find(|v| supported.iter().any(|s| s == v))
                .or(supported.is_empty().then_some(FALLBACK))
        }
        _ => Some(FALLBACK),
    }
}

/// A JSON-RPC POST of `body` to the MCP endpoint in the dialect of `protocol`. Before
/// 2026-07-28 the version header is `version`, sent after `initialize` only (`None` for
/// `initialize` itself). For 2026-07-28 every message carries `version` (default: the
/// protocol) in `params._meta` with the client's name and capabilities, and the headers
/// mirror the body: `MCP-Protocol-Version`, `Mcp-Method`, and `Mcp-Name` for the methods that
/// name a tool, resource or prompt.
pub fn mcp_post(url: &str, protocol: &str, version: Option<&str>, mut body: Value) -> Req {
    let mut req = Req::new(Method::POST, url).header(ACCEPT, ACCEPT_BOTH);
    if protocol != MODERN {
        if let Some(v) = version {
            req = req.header(mcp_version(), v);
        }
        return req.json(&body);
    }
    let version = version.unwrap_or(protocol);
    req = req.header(mcp_version(), version);
    let method = body
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let (Some(method), Some(obj)) = (method, body.as_object_mut()) {
        let params = obj
            .entry("params")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(p) = params.as_object_mut() {
            let name = match method.as_str() {
                "tools/call" | "prompts/get" => p.get("name"),
                "resources/read" => p.get("uri"),
                _ => None,
            };
            if let Some(n) = name.and_then(Value::as_str) {
                req = req.header(HeaderName::from_static("mcp-name"), n);
            }
            p.insert(
                "_meta".into(),
                serde_json::json!({
                    "io.modelcontextprotocol/protocolVersion": version,
                    "io.modelcontextprotocol/clientInfo": {
                        "name": "mcptap-probe",
                        "version": env!("CARGO_PKG_VERSION")
                    },
                    "io.modelcontextprotocol/clientCapabilities": {}
                }),
            );
        }
        req = req.header(HeaderName::from_static("mcp-method"), method);
    }
    req.json(&body)
}

/// The request of `check`; `None` when what it needs (a token) is missing.
pub fn request(check: Check, ctx: &Ctx) -> Option<Req> {
    // The first request (`initialize` carries its version in the body; `server/discover` in
    // `_meta` and the headers).
    let post = |url: &str| mcp_post(url, &ctx.protocol, None, ctx.first_request.clone());
    // A request after the first, with the token and the session.
    let rpc = |version: &str, body: serde_json::Value| -> Option<Req> {
        let mut r = mcp_post(&ctx.url, &ctx.protocol, Some(version), body)
            .header(AUTHORIZATION, format!("Bearer {}", ctx.token.as_deref()?));
        if let Some(s) = &ctx.session {
            r = r.header(mcp_session(), s);
        }
        Some(r)
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
        Check::Notification => rpc(
            &ctx.protocol,
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )?,
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
        Check::UnsafeRedirect
        | Check::RedirectJavascript
        | Check::RedirectData
        | Check::RedirectFile => Req::new(Method::POST, ctx.registration_endpoint.as_deref()?)
            .header(ACCEPT, "application/json")
            .json(&serde_json::json!({
                "client_name": "mcptap probe: unsafe redirect URI check (delete me)",
                "redirect_uris": [ctx.redirect_of(check)?],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            })),
        Check::Jwks => Req::get(ctx.jwks_uri.as_deref()?).header(ACCEPT, "application/json"),
        // Two requests, the first to the token endpoint with the probe's client: the probe
        // sends them ([`crate::probe`]); the verdict is [`judge_other_resource`]'s.
        Check::OtherResource => return None,
        Check::BadSignature | Check::ExpiredToken | Check::WrongAudience => {
            let forged = forge_jwt(check, ctx.token.as_deref()?, ctx, now_secs())?;
            post(&ctx.url).header(AUTHORIZATION, format!("Bearer {forged}"))
        }
        Check::NullId | Check::NotificationWithId | Check::BeforeInitialize => {
            let body = match check {
                Check::NullId => serde_json::json!({
                    "jsonrpc": "2.0", "id": null, "method": "tools/list", "params": {}
                }),
                Check::NotificationWithId => serde_json::json!({
                    "jsonrpc": "2.0", "id": 92, "method": "notifications/initialized"
                }),
                _ => serde_json::json!({
                    "jsonrpc": "2.0", "id": 93, "method": "tools/list", "params": {}
                }),
            };
            let r = rpc(&ctx.protocol, body)?;
            if check != Check::BeforeInitialize {
                return Some(r);
            }
            // Without the session: the server cannot tell it from a request before
            // `initialize`. Only where there is a session to leave out.
            ctx.session.as_ref()?;
            let mut r = r;
            r.headers.retain(|(n, _)| *n != mcp_session());
            r
        }
        Check::UnknownVersion => rpc(
            UNKNOWN_VERSION,
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": 90,
                "method": "tools/list",
                "params": {}
            }),
        )?,
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
        Check::OtherResource => judge_other_resource(OtherResource::Used(reply), ctx),
        Check::FabricatedToken
        | Check::BadSignature
        | Check::ExpiredToken
        | Check::WrongAudience => match status {
            401 => pass(format!(
                "401{}{}",
                challenge_error(reply),
                match check {
                    // Made from the probe's token without its key: the signature no longer
                    // matches either, so a refusal proves the expiry or audience check only on
                    // a server that skips the signature.
                    Check::ExpiredToken | Check::WrongAudience => " (its signature is stale too)",
                    _ => "",
                }
            )),
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::Critical,
                match check {
                    Check::BadSignature => format!(
                        "the probe's JWT with its signature altered was served ({s}) instead of \
                         refused with 401: signatures are not verified"
                    ),
                    Check::ExpiredToken => format!(
                        "the probe's JWT with exp an hour ago was served ({s}) instead of \
                         refused with 401: expiry is not checked"
                    ),
                    Check::WrongAudience => format!(
                        "the probe's JWT with aud {} was served ({s}) instead of refused with \
                         401: the audience is not checked",
                        ctx.other_audience()
                    ),
                    _ => format!(
                        "a fabricated bearer token was served ({s}) instead of refused with 401"
                    ),
                },
            ),
            s => warn(not_401(s)),
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
        Check::UnsafeRedirect
        | Check::RedirectJavascript
        | Check::RedirectData
        | Check::RedirectFile => match status {
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::High,
                format!(
                    "registration accepted the redirect URI {}{} ({s})",
                    ctx.redirect_of(check).unwrap_or_default(),
                    if check == Check::UnsafeRedirect {
                        " (plain http, not loopback)"
                    } else {
                        ""
                    }
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
        Check::NullId | Check::NotificationWithId => {
            let error = reply.json().and_then(|v| v.get("error").cloned());
            match (status, error) {
                (s, Some(e)) if reply.ok() => pass(format!(
                    "{s}: JSON-RPC error {}",
                    e.get("code").unwrap_or(&serde_json::Value::Null)
                )),
                (s, _) if reply.ok() => fail(
                    check,
                    ctx,
                    Some(reply),
                    Severity::Low,
                    format!(
                        "{} was {} ({s})",
                        if check == Check::NullId {
                            "a tools/list request with \"id\": null"
                        } else {
                            "notifications/initialized with an id"
                        },
                        if reply.body.is_empty() {
                            "accepted without an answer"
                        } else {
                            "served"
                        }
                    ),
                ),
                (s, _) => pass(format!("{s}: refused")),
            }
        }
        Check::Jwks => {
            let keys = reply
                .json()
                .and_then(|v| v.get("keys")?.as_array().map(Vec::len));
            match keys {
                Some(n) if status == 200 => pass(format!("200: {n} key(s)")),
                _ => fail(
                    check,
                    ctx,
                    Some(reply),
                    Severity::Medium,
                    format!(
                        "jwks_uri answered {status}{}",
                        if reply.ok() {
                            " without a keys array"
                        } else {
                            ""
                        }
                    ),
                ),
            }
        }
        Check::BeforeInitialize => match status {
            400 => pass("400".to_owned()),
            s if reply.ok() => fail(
                check,
                ctx,
                Some(reply),
                Severity::Low,
                format!(
                    "tools/list without the Mcp-Session-Id of a server that keeps sessions was \
                     served ({s}) instead of refused with 400"
                ),
            ),
            s => warn(format!("{s}: refused, but the transport asks for 400")),
        },
        Check::GetStream => {
            if status == 405 {
                pass("405 (no GET stream)".to_owned())
            } else if (200..300).contains(&status) && ctx.protocol.as_str() >= MODERN {
                fail(
                    check,
                    ctx,
                    Some(reply),
                    Severity::Medium,
                    format!(
                        "GET with Accept: text/event-stream was answered {status} for a \
                         {} request; the 2026-07-28 transport has no GET stream (405 expected)",
                        ctx.protocol
                    ),
                )
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

/// What came of the other-resource check, step by step.
pub enum OtherResource<'a> {
    /// The authorization server answered the refresh naming another resource without a token.
    Refused(&'a Reply),
    /// It issued a token whose `aud` does not name the other resource (it ignored `resource`).
    Ignored(Vec<String>),
    /// The MCP endpoint's answer to a token for the other resource.
    Used(&'a Reply),
}

/// The verdict of [`Check::OtherResource`].
pub fn judge_other_resource(seen: OtherResource<'_>, ctx: &Ctx) -> Judged {
    let check = Check::OtherResource;
    match seen {
        OtherResource::Refused(r) => pass(format!(
            "the authorization server issues no token for {} ({}{})",
            ctx.other_audience(),
            r.status,
            oauth_error_code(r)
        )),
        OtherResource::Ignored(aud) => warn(format!(
            "the authorization server ignored resource={} and issued a token for {}: \
             nothing to check",
            ctx.other_audience(),
            if aud.is_empty() {
                "no audience".to_owned()
            } else {
                aud.join(", ")
            }
        )),
        OtherResource::Used(r) => match r.status {
            401 => pass(format!(
                "401{}: refused a token its authorization server issued for {}",
                challenge_error(r),
                ctx.other_audience()
            )),
            s if r.ok() => fail(
                check,
                ctx,
                Some(r),
                Severity::Critical,
                format!(
                    "a token its authorization server issued for {} (RFC 8707 resource on a \
                     refresh) was served ({s}): the audience is not checked",
                    ctx.other_audience()
                ),
            ),
            s => warn(not_401(s)),
        },
    }
}

/// The `aud` of a JWT (one value or a list); `None` when `token` is not a JWT.
pub fn jwt_audience(token: &str) -> Option<Vec<String>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (header, claims) = (parts.next()?, parts.next()?);
    parts.next()?;
    let header: Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
    header.get("alg")?.as_str()?;
    let claims: Value = serde_json::from_slice(&B64.decode(claims).ok()?).ok()?;
    Some(match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    })
}

/// The note of a token check answered with neither 2xx nor 401.
fn not_401(status: u16) -> String {
    if status >= 500 {
        format!(
            "{status}: not served, but a server error where RFC 6750 asks for 401 invalid_token"
        )
    } else {
        format!("{status}: refused, but RFC 6750 asks for 401 invalid_token")
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The JWT a token check sends, made from the probe's own token `jwt` at time `now`: its
/// signature altered, or its claims changed (then the signature no longer matches them: the
/// probe does not hold the server's key). `None` when `jwt` is not a JWT.
pub fn forge_jwt(check: Check, jwt: &str, ctx: &Ctx, now: i64) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let mut parts = jwt.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header_doc: serde_json::Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
    header_doc.get("alg")?.as_str()?;
    let mut claims_doc: serde_json::Value =
        serde_json::from_slice(&B64.decode(claims).ok()?).ok()?;
    let map = claims_doc.as_object_mut()?;
    match check {
        Check::BadSignature => {
            let mut sig = B64.decode(signature).ok()?;
            let first = sig.first_mut()?;
            *first ^= 0x55;
            return Some(format!("{header}.{claims}.{}", B64.encode(sig)));
        }
        Check::ExpiredToken => {
            map.insert("exp".into(), (now - 3600).into());
            for k in ["iat", "nbf"] {
                if map.contains_key(k) {
                    map.insert(k.into(), (now - 7200).into());
                }
            }
        }
        Check::WrongAudience => {
            map.insert("aud".into(), ctx.other_audience().into());
        }
        _ => return None,
    }
    let claims = B64.encode(serde_json::to_vec(&claims_doc).ok()?);
    Some(format!("{header}.{claims}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;

    fn ctx(token: Option<&str>) -> Ctx {
        Ctx {
            url: "https://mcp.example/mcp".into(),
            first_request: serde_json::json!({}),
            token: token.map(str::to_owned),
            session: None,
            protocol: "2025-11-25".into(),
            loopback: false,
            random: "r4nd".into(),
            registration_endpoint: None,
            jwks_uri: None,
        }
    }

    fn claims(jwt: &str) -> serde_json::Value {
        serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn forged_jwts_change_one_thing_each() {
        let header = B64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = B64.encode(br#"{"aud":"https://mcp.example/mcp","exp":2000,"iat":1000}"#);
        let sig = B64.encode([1u8, 2, 3]);
        let jwt = format!("{header}.{body}.{sig}");
        let c = ctx(Some(&jwt));
        let bad = forge_jwt(Check::BadSignature, &jwt, &c, 1500).unwrap();
        assert_eq!(bad.split('.').nth(1), Some(body.as_str()));
        assert_ne!(bad.split('.').nth(2), Some(sig.as_str()));
        let expired = forge_jwt(Check::ExpiredToken, &jwt, &c, 1500).unwrap();
        assert_eq!(claims(&expired)["exp"], -2100);
        assert_eq!(claims(&expired)["iat"], -5700);
        assert_eq!(claims(&expired)["aud"], "https://mcp.example/mcp");
        let other = forge_jwt(Check::WrongAudience, &jwt, &c, 1500).unwrap();
        assert_eq!(
            claims(&other)["aud"],
            "https://mcptap-probe-r4nd.invalid/mcp"
        );
        assert_eq!(claims(&other)["exp"], 2000);
        // An opaque token gives no JWT check.
        assert!(forge_jwt(Check::ExpiredToken, "at_abc", &c, 1500).is_none());
        assert!(request(Check::ExpiredToken, &ctx(Some("at_abc"))).is_none());
        assert_eq!(
            Check::ExpiredToken.skip_reason(&ctx(Some("at_abc"))),
            "the token is opaque (not a JWT): only the fabricated token applies"
        );
    }

    #[test]
    fn jwt_audiences_are_one_value_or_a_list() {
        let jwt = |claims: &str| {
            format!(
                "{}.{}.c2ln",
                B64.encode(br#"{"alg":"RS256"}"#),
                B64.encode(claims)
            )
        };
        assert_eq!(
            jwt_audience(&jwt(r#"{"aud":"https://a/mcp"}"#)),
            Some(vec!["https://a/mcp".to_owned()])
        );
        assert_eq!(
            jwt_audience(&jwt(r#"{"aud":["x","y"]}"#)),
            Some(vec!["x".to_owned(), "y".to_owned()])
        );
        assert_eq!(jwt_audience(&jwt("{}")), Some(Vec::new()));
        assert_eq!(jwt_audience("at_opaque"), None);
    }

    #[test]
    fn a_get_stream_is_judged_by_the_protocol() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "text/event-stream".parse().unwrap());
        let reply = Reply {
            flow: 7,
            status: 200,
            headers,
            body: Default::default(),
        };
        let mut c = ctx(Some("t"));
        let judged = judge(Check::GetStream, Ok(&reply), &c);
        assert_eq!(judged.verdict, Verdict::Pass);
        c.protocol = MODERN.into();
        let judged = judge(Check::GetStream, Ok(&reply), &c);
        assert_eq!(judged.verdict, Verdict::Fail);
        assert!(judged.note.contains("405 expected"), "{}", judged.note);
        assert!(judged.note.ends_with("→ get-stream-wrong (the analyzer's)"));
        // Not the probe's finding: the analyzer makes it on the session.
        assert!(judged.finding.is_none());
    }

    #[test]
    fn a_refused_2026_07_28_falls_back_as_the_transport_says() {
        let reply = |status: u16, body: &str| Reply {
            flow: 1,
            status,
            headers: http::HeaderMap::new(),
            body: body.to_owned().into(),
        };
        let legacy = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#;
        assert_eq!(fallback_version(&reply(400, legacy)), Some(FALLBACK));
        assert_eq!(fallback_version(&reply(405, "")), Some(FALLBACK));
        let unsupported = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"x","data":{"supported":["2025-06-18"],"requested":"2026-07-28"}}}"#;
        assert_eq!(
            fallback_version(&reply(400, unsupported)),
            Some("2025-06-18")
        );
        let only_newer = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"x","data":{"supported":["2027-01-01"]}}}"#;
        assert_eq!(fallback_version(&reply(400, only_newer)), None);
        let mismatch =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"Header mismatch"}}"#;
        assert_eq!(fallback_version(&reply(400, mismatch)), None);
        assert_eq!(fallback_version(&reply(401, "")), None);
        assert_eq!(fallback_version(&reply(200, "{}")), None);
    }

    #[test]
    fn before_initialize_needs_a_session() {
        let mut c = ctx(Some("t"));
        assert!(request(Check::BeforeInitialize, &c).is_none());
        c.session = Some("s".into());
        let r = request(Check::BeforeInitialize, &c).unwrap();
        assert!(r.headers.iter().all(|(n, _)| n != "mcp-session-id"));
        let r = request(Check::NullId, &c).unwrap();
        assert!(r.headers.iter().any(|(n, _)| n == "mcp-session-id"));
    }
}
