//! The authorization step: the browser's `/authorize` and the callback — failure-modes.md 13–15
//! (authorize side), 34, 41 (via the scope and issuer rules), and the wait for a code exchange
//! (`token-exchange-missing`, 16).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{us, Analyzer, Authz, Decision, New, Pending};
use crate::model::{Culprit, Severity};
use crate::rules_discovery::same_issuer;
use crate::util::{self, jstr, Url};
use mcptap_flow::{redact, FlowId, Micros};

impl Analyzer {
    pub(crate) fn push_exchange_anchor(&mut self, anchor: FlowId, at: Micros, code_returned: bool) {
        let deadline = at + us(self.opts.exchange_timeout);
        // One attempt at a time: a later step of the same dance replaces the earlier anchor.
        let mut also = Vec::new();
        let exchanges: Vec<Micros> = self.code_exchanges.iter().map(|e| e.1).collect();
        self.pending.retain(|w| match &w.p {
            Pending::Exchange {
                also: a,
                anchor: prev,
                at: t,
                ..
            } => {
                if !exchanges.iter().any(|s| s >= t) {
                    also.extend(a.iter().copied());
                    also.push(*prev);
                }
                false
            }
            _ => true,
        });
        self.wait(Pending::Exchange {
            also,
            anchor,
            at,
            code_returned,
            deadline,
        });
    }

    /// The PRM `resource` values that apply to a request to the authorization server `issuer`.
    pub(crate) fn prm_resources_for(&self, issuer: Option<&str>) -> (Vec<String>, Vec<FlowId>) {
        let mut res = Vec::new();
        let mut flows = Vec::new();
        for p in &self.prms {
            let Some(r) = &p.resource else { continue };
            let matches = match issuer {
                Some(i) => p.auth_servers.iter().any(|a| same_issuer(a, i)),
                None => true,
            };
            if matches && !res.contains(r) {
                res.push(r.clone());
                flows.push(p.flow);
            }
        }
        if issuer.is_none() && res.len() > 1 {
            return (Vec::new(), Vec::new());
        }
        (res, flows)
    }

    pub(crate) fn check_resource_param(
        &mut self,
        c: &Ctx<'_>,
        value: Option<&str>,
        place: &str,
        issuer: Option<&str>,
    ) {
        let (expected, prm_flows) = self.prm_resources_for(issuer);
        if expected.is_empty() {
            return;
        }
        let err = util::response_json(c.flow)
            .and_then(|v| jstr(&v, "error").map(str::to_owned))
            .filter(|e| e == "invalid_target");
        match value {
            None => {
                let mut n = New::finding(Id::ResourceParamWrong, "missing", Severity::High, Culprit::Client)
                    .sub("missing")
                    .say(format!(
                        "The {place} request {} has no `resource` parameter; MCP requires `resource={}` (RFC 8707) on authorize, token and refresh requests.",
                        c.id, expected[0]
                    ))
                    .ev(prm_flows.iter().copied().chain([c.id]));
                if let Some(e) = err {
                    n = n.detail(format!("the authorization server answered {e}"));
                }
                self.emit(n);
            }
            Some(v) if !expected.iter().any(|e| e == v) => {
                let slash = expected
                    .iter()
                    .any(|e| util::trim_slash(e) == util::trim_slash(v));
                let mut n = New::finding(Id::ResourceParamWrong, "differs", Severity::High, Culprit::Client)
                    .sub("differs")
                    .say(format!(
                        "The {place} request {} sends resource={v:?} but the protected-resource metadata says {:?}{}.",
                        c.id,
                        expected[0],
                        if slash { " (only a trailing slash differs)" } else { "" }
                    ))
                    .ev(prm_flows.iter().copied().chain([c.id]));
                if let Some(e) = err {
                    n = n.detail(format!("the authorization server answered {e}"));
                }
                self.emit(n);
            }
            Some(_) => {}
        }
    }

    pub(crate) fn as_doc_for(&self, field: &str, ep: &str) -> Option<usize> {
        self.as_docs
            .iter()
            .rposition(|d| d.endpoint(field).as_deref() == Some(ep))
    }

    pub(crate) fn on_authorize(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        self.vis.authorize_seen = true;
        self.oauth_dance = true;
        let q = url.query_pairs();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let location = util::response_header(c.flow, "location").and_then(|l| url.join(l));
        let code_fp = location
            .as_ref()
            .and_then(|l| l.query_param("code"))
            .map(|v| redact::fingerprint_of(&v));
        let loc_error = location.as_ref().and_then(|l| l.query_param("error"));
        let a = Authz {
            flow: c.id,
            started: c.started,
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            challenge: get("code_challenge"),
            method: get("code_challenge_method"),
            resource: get("resource"),
            scope: get("scope"),
            code_fp: code_fp.clone(),
            issuer: self
                .as_doc_for("authorization_endpoint", &url.endpoint())
                .and_then(|i| self.as_docs[i].issuer.clone()),
        };
        let refused = code_fp.is_none()
            && (loc_error.is_some() || c.status.is_some_and(|s| (400..600).contains(&s)));
        // redirect-uri-mismatch
        let reg = self
            .regs
            .iter()
            .rev()
            .find(|r| r.ok && r.client_id.is_some() && r.client_id == a.client_id);
        if let (Some(reg), Some(ru)) = (reg, a.redirect_uri.as_deref()) {
            if !reg.redirect_uris.iter().any(|r| r == ru) {
                let port_only = Url::parse(ru).is_some_and(|u| {
                    reg.redirect_uris
                        .iter()
                        .filter_map(|r| Url::parse(r))
                        .any(|r| {
                            util::host_is_loopback(&u.host)
                                && r.host == u.host
                                && r.path == u.path
                                && r.scheme == u.scheme
                        })
                });
                if !port_only || refused {
                    let reg_flow = reg.flow;
                    let registered = reg.redirect_uris.clone();
                    self.emit(
                        New::finding(Id::RedirectUriMismatch, a.client_id.clone().unwrap_or_default(), Severity::Medium, Culprit::Client)
                            .sub(if port_only { "port-changed" } else { "not-registered" })
                            .say(format!(
                                "The authorization request {} uses redirect_uri {ru:?}, which the registration in {reg_flow} did not register{}.",
                                c.id,
                                if refused { " and the authorization server refused it" } else { "" }
                            ))
                            .ev([reg_flow, c.id])
                            .detail(format!("registered: {registered:?}")),
                    );
                }
            }
        } else if refused {
            let body = c
                .flow
                .response
                .as_ref()
                .and_then(|r| r.body.as_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let desc = location
                .as_ref()
                .and_then(|l| l.query_param("error_description"))
                .unwrap_or_default()
                .to_ascii_lowercase();
            if body.contains("redirect_uri")
                || body.contains("redirect uri")
                || desc.contains("redirect")
            {
                self.emit(
                    New::finding(Id::RedirectUriMismatch, a.client_id.clone().unwrap_or_default(), Severity::Medium, Culprit::Unknown)
                        .sub("rejected-by-as")
                        .say(format!(
                            "The authorization server refused the authorization request {} and names the redirect_uri; no registration was captured to compare with.",
                            c.id
                        ))
                        .ev([c.id]),
                );
            }
        }
        // PKCE, authorize side.
        match (&a.challenge, a.method.as_deref()) {
            (None, _) => self.emit(
                New::finding(Id::PkceMismatch, format!("{} challenge", c.id), Severity::High, Culprit::Client)
                    .sub("no-challenge")
                    .say(format!("The authorization request {} has no code_challenge; MCP requires PKCE with S256.", c.id))
                    .ev([c.id]),
            ),
            (Some(_), m) if m != Some("S256") => self.emit(
                New::finding(Id::PkceMismatch, format!("{} method", c.id), Severity::High, Culprit::Client)
                    .sub("not-s256")
                    .say(format!(
                        "The authorization request {} uses code_challenge_method {:?}; MCP requires S256.",
                        c.id,
                        m.unwrap_or("(absent, i.e. plain)")
                    ))
                    .ev([c.id]),
            ),
            _ => {}
        }
        let issuer = a.issuer.clone();
        self.check_resource_param(c, a.resource.as_deref(), "authorization", issuer.as_deref());
        // Registration, scope and issuer rules of the authorization step.
        if let (Some(id), Some(ru)) = (a.client_id.as_deref(), a.redirect_uri.as_deref()) {
            self.check_cimd_authorize(c, id, ru);
        }
        self.check_scope_selection(c, a.scope.as_deref());
        self.check_scope_rejected(c, a.scope.as_deref(), loc_error.as_deref());
        if let Some(iss) = location.as_ref().and_then(|l| l.query_param("iss")) {
            self.check_response_iss(c, &iss, Some(&url.endpoint()));
        }
        let body = c
            .flow
            .response
            .as_ref()
            .and_then(|r| r.body.as_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let client_refused = loc_error.as_deref() == Some("invalid_client")
            || (refused
                && c.status == Some(400)
                && [
                    "invalid_client",
                    "unrecognized client",
                    "client not found",
                    "unknown client",
                ]
                .iter()
                .any(|w| body.contains(w)));
        self.check_stale_registration(c, a.client_id.as_deref(), client_refused);
        self.push_exchange_anchor(c.id, c.done, code_fp.is_some());
        self.authzs.push(a);
    }

    /// The redirect back to the client's loopback callback: its `iss` (RFC 9207).
    pub(crate) fn on_callback(&mut self, c: &Ctx<'_>) {
        if let Some(iss) = c.url.as_ref().and_then(|u| u.query_param("iss")) {
            self.check_response_iss(c, &iss, None);
        }
    }

    /// The suspicion a waiting authorization decision shows once it is likely (same id and key as the
    /// confirmed finding it may become).
    pub(crate) fn suspicion_authorize(&self, p: &Pending) -> Option<New> {
        match p {
            Pending::Exchange {
                also,
                anchor,
                at,
                code_returned,
                deadline,
            } => {
                let n = New::finding(Id::TokenExchangeMissing, "exchange", Severity::High, if *code_returned { Culprit::Client } else { Culprit::Unknown })
                    .sub(if *code_returned { "code-not-exchanged" } else { "no-exchange" })
                    .say(format!(
                        "Authorization started ({anchor}) and no token request has followed{}.",
                        if *code_returned { " although the authorization server returned a code" } else { "" }
                    ))
                    .ev(also.iter().copied().chain([*anchor]))
                    .suspect(format!(
                        "a token request before {} after it clears it; none confirms it (if the callback never reaches the client, its PKCE state or loopback port was lost)",
                        util::secs(deadline - at)
                    ));
                Some(n)
            }
            _ => None,
        }
    }

    /// Whether what a waiting authorization decision waits for has happened, and why that settles it.
    pub(crate) fn healthy_authorize(&self, p: &Pending) -> Option<String> {
        match p {
            Pending::Exchange { at, .. } => {
                let satisfied = self.code_exchanges.iter().any(|(_, s, _, _)| s >= at)
                    || self.tokens.iter().any(|t| t.issued >= *at);
                satisfied.then(|| "a token request followed".to_owned())
            }
            _ => None,
        }
    }

    /// Decides a waiting authorization decision. `due`: its time has come (or the client moved on);
    /// otherwise the session is over and it is decided on the evidence at hand.
    pub(crate) fn resolve_authorize(&mut self, p: Pending, due: bool) -> Decision {
        if let Some(why) = self.healthy_authorize(&p) {
            return Decision::Healthy(why);
        }
        let now = self.now();
        match p {
            Pending::Exchange {
                also,
                anchor,
                at,
                code_returned,
                ..
            } => {
                let ended = if due {
                    format!("within {}", util::secs(us(self.opts.exchange_timeout)))
                } else {
                    format!("before the capture ended {} later", util::secs(now - at))
                };
                if !due && !code_returned {
                    return Decision::Open {
                        why: format!(
                            "Authorization started in {anchor} but the capture ended {} later without a callback or a token request: whether the user, the browser or the client stopped it is not visible here.",
                            util::secs(now - at)
                        ),
                        show: true,
                    };
                }
                let culprit = if code_returned {
                    Culprit::Client
                } else {
                    Culprit::Unknown
                };
                self.emit(
                    New::finding(
                        Id::TokenExchangeMissing,
                        "exchange",
                        Severity::High,
                        culprit,
                    )
                    .sub(if code_returned {
                        "code-not-exchanged"
                    } else {
                        "no-exchange"
                    })
                    .say(format!(
                        "Authorization started ({anchor}) but no token request followed {ended}{}.",
                        if code_returned {
                            " although the authorization server returned a code to the client"
                        } else {
                            ""
                        }
                    ))
                    .ev(also.iter().copied().chain([anchor])),
                );
                if !self.vis.authorize_seen {
                    self.emit(
                        New::finding(Id::AuthorizeNotVisible, "authorize", Severity::Info, Culprit::Unknown)
                            .say("The browser's /authorize was not captured, so mcptap cannot tell whether the user, the browser or the client stopped the authorization.".to_owned())
                            .ev([anchor]),
                    );
                }
                Decision::Done
            }
            other => Decision::Wait(other),
        }
    }
}
