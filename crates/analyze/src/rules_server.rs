//! Server checks that captured traffic can show as well as the probe (failure-modes.md 44–53
//! that need no request a client would not send): `jsonrpc-response-invalid` (48),
//! `metadata-url-invalid` (51) and `jwks-invalid` (52).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{Analyzer, New};
use crate::model::{Culprit, RpcDirection, RpcKind, Severity};
use crate::util::{self, Url};
use serde_json::Value;

/// Where a URL in metadata may point: an absolute https URL, or http on loopback.
fn url_problem(v: &str) -> Option<String> {
    let Some(u) = Url::parse(v) else {
        return Some(format!("{v:?} is not an absolute URL"));
    };
    if u.scheme == "http" && !util::host_is_loopback(&u.host) {
        return Some(format!("{v:?} is plain http off loopback"));
    }
    if u.scheme != "http" && u.scheme != "https" {
        return Some(format!("{v:?} is not an http(s) URL"));
    }
    None
}

impl Analyzer {
    /// 48: the server's JSON-RPC answers in a 2xx MCP flow.
    pub(crate) fn check_jsonrpc_answers(&mut self, c: &Ctx<'_>, ep: &str) {
        if !c.status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let mut problems: Vec<String> = c.rpc_faults.clone();
        let asked: Vec<(&str, &str)> = c
            .rpc
            .iter()
            .filter(|r| r.dir == RpcDirection::ClientToServer && r.kind == RpcKind::Request)
            .filter_map(|r| Some((r.id.as_deref()?, r.method.as_deref()?)))
            .collect();
        let answers: Vec<&crate::classify::Rpc<'_>> = c
            .rpc
            .iter()
            .filter(|r| {
                r.dir == RpcDirection::ServerToClient
                    && matches!(r.kind, RpcKind::Response | RpcKind::Error)
            })
            .collect();
        // One request answered with ids that are not its own (a batch may interleave).
        if asked.len() == 1 && !answers.is_empty() {
            let id = asked[0].0;
            if !answers.iter().any(|a| a.id.as_deref() == Some(id)) {
                problems.push(format!(
                    "the answer's id {} does not echo the request's id {id}",
                    answers[0].id.as_deref().unwrap_or("(none)")
                ));
            }
        }
        for a in answers.iter().filter(|a| a.kind == RpcKind::Response) {
            match a.method.as_deref() {
                Some("initialize") => {
                    if let Some(r) = a.result() {
                        let missing: Vec<&str> = ["protocolVersion", "capabilities", "serverInfo"]
                            .into_iter()
                            .filter(|k| r.get(k).is_none())
                            .collect();
                        if !missing.is_empty() {
                            problems.push(format!(
                                "the initialize result lacks {}",
                                missing.join(", ")
                            ));
                        }
                    }
                }
                Some("ping")
                    if a.result()
                        .is_some_and(|r| r.as_object().is_none_or(|o| !o.is_empty())) =>
                {
                    problems.push(format!(
                        "the ping result is {} instead of {{}}",
                        a.result_text().unwrap_or("")
                    ));
                }
                _ => {}
            }
        }
        if problems.is_empty() {
            return;
        }
        self.emit(
            New::finding(Id::JsonrpcResponseInvalid, ep.to_owned(), Severity::Medium, Culprit::Server)
                .say(format!(
                    "{ep} answered {} with JSON-RPC a client cannot accept: {}; clients drop the connection, which users report as an authentication failure.",
                    c.id,
                    problems[0]
                ))
                .ev([c.id])
                .details(problems.into_iter().map(|p| format!("{}: {p}", c.id))),
        );
    }

    /// 51: the URLs and identifiers in protected-resource (`prm`) or authorization-server
    /// metadata.
    pub(crate) fn check_metadata_urls(&mut self, c: &Ctx<'_>, doc: &Value, prm: bool) {
        let mut problems = Vec::new();
        let single: &[&str] = if prm {
            &["resource", "jwks_uri"]
        } else {
            &[
                "issuer",
                "authorization_endpoint",
                "token_endpoint",
                "registration_endpoint",
                "revocation_endpoint",
                "jwks_uri",
            ]
        };
        for f in single {
            if let Some(v) = doc.get(*f).and_then(Value::as_str) {
                if let Some(p) = url_problem(v) {
                    problems.push(format!("{f}: {p}"));
                }
            }
        }
        if prm {
            for v in util::jstrs(doc, "authorization_servers") {
                if let Some(p) = url_problem(&v) {
                    problems.push(format!("authorization_servers: {p}"));
                }
            }
            if let Some(r) = util::jstr(doc, "resource").filter(|r| r.contains('#')) {
                problems.push(format!("resource {r:?} has a fragment (RFC 9728 §2)"));
            }
            let methods = util::jstrs(doc, "bearer_methods_supported");
            for m in &methods {
                match m.as_str() {
                    "header" | "body" => {}
                    "query" => problems
                        .push("bearer_methods_supported lists query, which MCP forbids".to_owned()),
                    other => problems.push(format!(
                        "bearer_methods_supported has the unknown value {other:?}"
                    )),
                }
            }
        } else if let Some(i) =
            util::jstr(doc, "issuer").filter(|i| i.contains('?') || i.contains('#'))
        {
            problems.push(format!(
                "issuer {i:?} has a query or fragment (RFC 8414 §2)"
            ));
        }
        if problems.is_empty() {
            return;
        }
        let key = c.url.as_ref().map(Url::endpoint).unwrap_or_default();
        self.emit(
            New::finding(
                Id::MetadataUrlInvalid,
                key.clone(),
                Severity::Medium,
                Culprit::Server,
            )
            .say(format!(
                "The {} metadata at {key} ({}) holds an invalid URL or identifier: {}.",
                if prm {
                    "protected-resource"
                } else {
                    "authorization-server"
                },
                c.id,
                problems[0]
            ))
            .ev([c.id])
            .details(problems.into_iter().skip(1)),
        );
    }

    /// 52: a JWKS fetch that fails or holds no `keys`.
    pub(crate) fn check_jwks(&mut self, c: &Ctx<'_>) {
        if c.failed {
            return;
        }
        let key = c.url.as_ref().map(Url::endpoint).unwrap_or_default();
        let problem = match c.status {
            Some(s) if !(200..300).contains(&s) => Some(format!("it answered {s}")),
            Some(_) => match util::response_json(c.flow) {
                None => Some("it is not JSON".to_owned()),
                Some(v) if !v.get("keys").is_some_and(Value::is_array) => {
                    Some("the document has no keys array".to_owned())
                }
                Some(_) => None,
            },
            None => None,
        };
        let Some(problem) = problem else { return };
        self.emit(
            New::finding(Id::JwksInvalid, key.clone(), Severity::Medium, Culprit::Server)
                .say(format!(
                    "The JWKS at {key} ({}) is unusable: {problem}; a resource server that validates tokens with it refuses every token (see fresh-token-rejected).",
                    c.id
                ))
                .ev([c.id]),
        );
    }
}

/// 49 and 50: what the transport allows as answers to a GET stream and to a POST that carries
/// no request.
impl Analyzer {
    /// 49: `GET` with `Accept: text/event-stream` must open an event stream or get 405 (2026-07-28:
    /// 405), and its headers come at once.
    pub(crate) fn check_get_stream(&mut self, c: &Ctx<'_>, ep: &str) {
        let flow = c.flow;
        if !flow.request.method.eq_ignore_ascii_case("GET")
            || !flow
                .request
                .headers
                .get("accept")
                .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"))
        {
            return;
        }
        let Some(status) = c.status else { return };
        let stateless = c
            .protocol_version
            .as_deref()
            .is_some_and(|v| v >= "2026-07-28");
        let problem = if (200..300).contains(&status) && !flow.is_sse() {
            Some(format!(
                "it answered {status} with {:?} instead of an event stream or 405",
                util::response_content_type(flow)
            ))
        } else if (200..300).contains(&status) && stateless {
            Some(format!(
                "it opened a stream for a {} request; the 2026-07-28 transport has no GET stream (405 expected)",
                c.protocol_version.as_deref().unwrap_or_default()
            ))
        } else {
            flow.timings
                .response_head
                .filter(|h| h - flow.timings.started > 5_000_000)
                .map(|h| {
                    format!(
                        "its headers came {} after the request (clients wait 5 s at most)",
                        util::secs(h - flow.timings.started)
                    )
                })
        };
        let Some(problem) = problem else { return };
        self.emit(
            New::finding(
                Id::GetStreamWrong,
                ep.to_owned(),
                Severity::Medium,
                Culprit::Server,
            )
            .say(format!(
                "The GET stream {} to {ep} is wrong: {problem}.",
                c.id
            ))
            .ev([c.id]),
        );
    }

    /// 50: a POST that carries only notifications or responses is answered 202 without a body.
    pub(crate) fn check_notification_answer(&mut self, c: &Ctx<'_>, ep: &str) {
        if !c.flow.request.method.eq_ignore_ascii_case("POST") {
            return;
        }
        let sent: Vec<&crate::classify::Rpc<'_>> = c
            .rpc
            .iter()
            .filter(|r| r.dir == RpcDirection::ClientToServer)
            .collect();
        if sent.is_empty() || sent.iter().any(|r| r.kind == RpcKind::Request) {
            return;
        }
        let Some(status) = c.status.filter(|s| (200..300).contains(s)) else {
            return;
        };
        let body = c.flow.response.as_ref().map_or(0, |r| r.body.total_len);
        if status == 202 && body == 0 {
            return;
        }
        self.emit(
            New::finding(Id::NotificationAnswerWrong, ep.to_owned(), Severity::Low, Culprit::Server)
                .say(format!(
                    "{ep} answered the POST {} that carried only {} with {status}{}; the transport asks for 202 Accepted without a body.",
                    c.id,
                    if sent.iter().all(|r| r.kind == RpcKind::Notification) {
                        "notifications"
                    } else {
                        "responses or notifications"
                    },
                    if body > 0 {
                        format!(" and a {body}-byte body")
                    } else {
                        String::new()
                    }
                ))
                .ev([c.id]),
        );
    }
}
