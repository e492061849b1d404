//! Rules about discovery, registration, authorization and tokens: failure-modes.md entries
//! 2, 6–17, 20, 24–27, the deadline resolutions, and the end-of-session rules.

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::Decision;
use crate::engine::{us, Analyzer, AsDoc, Attempt, Authz, New, Pending, Prm, Reg, Story, Token};
use crate::model::{Culprit, Role, Severity};
use crate::util::{self, jstr, jstrs, Url};
use mcptap_flow::{redact, ErrorKind, FlowId, Micros};
use serde_json::Value;

/// The issuer identifiers compared the way RFC 8414 §3.3 does (exactly), except that the
/// analyzer treats a lone trailing slash as the same server when *matching* documents.
pub(crate) fn same_issuer(a: &str, b: &str) -> bool {
    util::trim_slash(a.trim()) == util::trim_slash(b.trim())
}

/// The well-known URLs (origin+path) a client tries for issuer `issuer` (MCP 2025-11-25).
pub(crate) fn as_metadata_urls(issuer: &str) -> Vec<String> {
    let Some(u) = Url::parse(issuer) else {
        return Vec::new();
    };
    let o = u.origin();
    let p = util::trim_slash(&u.path);
    if p.is_empty() {
        vec![
            format!("{o}/.well-known/oauth-authorization-server"),
            format!("{o}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{o}/.well-known/oauth-authorization-server{p}"),
            format!("{o}/.well-known/openid-configuration{p}"),
            format!("{o}{p}/.well-known/openid-configuration"),
        ]
    }
}

/// The resource a PRM URL was derived from (RFC 9728 §3.1), when it is a well-known URL:
/// `Some(None)` for the root document, `Some(Some(url))` for a path-inserted one.
fn prm_implied(url: &Url) -> Option<Option<Url>> {
    let rest = url
        .path
        .strip_prefix("/.well-known/oauth-protected-resource")?;
    if util::trim_slash(rest).is_empty() {
        return Some(None);
    }
    if !rest.starts_with('/') {
        return None;
    }
    Some(Url::parse(&format!("{}{}", url.origin(), rest)))
}

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

    pub(crate) fn on_jwks(&mut self, c: &Ctx<'_>) {
        if let Some(v) = util::response_json(c.flow) {
            if let Some(keys) = v.get("keys").and_then(Value::as_array) {
                for k in keys {
                    if let Some(kid) = jstr(k, "kid") {
                        self.jwks_kids.push(kid.to_owned());
                    }
                }
            }
        }
    }

    /// A token revocation (RFC 7009): the client gave the token up on purpose, so a later
    /// request without it is no `token-not-sent`.
    pub(crate) fn on_revocation(&mut self, c: &Ctx<'_>) {
        if !c.ok() {
            return;
        }
        let Some(form) = util::request_form(c.flow) else {
            return;
        };
        let Some(token) = util::form_get(&form, "token") else {
            return;
        };
        let fp = redact::fingerprint_of(token);
        if let Some(&ti) = self.token_index.get(&fp) {
            self.tokens[ti].revoked.get_or_insert((c.id, c.done));
        }
        // A revoked refresh token takes its access tokens with it (RFC 7009 §2.1).
        for t in self
            .tokens
            .iter_mut()
            .filter(|t| t.refresh_fp.as_deref() == Some(fp.as_str()))
        {
            t.revoked.get_or_insert((c.id, c.done));
        }
    }

    fn prm_pending(&mut self, origin: String, at: Micros) {
        let exists = self
            .pending
            .iter()
            .any(|w| matches!(&w.p, Pending::Prm { origin: o, .. } if *o == origin));
        if !exists {
            let deadline = at + us(self.opts.exchange_timeout);
            self.wait(Pending::Prm {
                origin,
                created: at,
                deadline,
            });
        }
    }

    /// The origin of the MCP server a PRM URL is about.
    fn prm_subject_origin(&self, url: &Url) -> String {
        let key = url.endpoint();
        self.endpoints
            .iter()
            .find(|e| e.advertised_prm.contains(&key))
            .map(|e| e.url.origin())
            .unwrap_or_else(|| url.origin())
    }

    pub(crate) fn on_prm(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        let key = url.endpoint();
        let subject = self.prm_subject_origin(&url);
        let doc = if c.ok() && !util::response_is_html(c.flow) {
            util::response_json(c.flow)
        } else {
            None
        };
        if c.ok() && doc.is_none() {
            self.metadata_not_json(c, &url);
        }
        let Some(doc) = doc else {
            self.prm_attempts.push(Attempt {
                flow: c.id,
                url: url.clone(),
                ok: false,
            });
            self.prm_pending(subject, c.done);
            self.check_prm_path_scoped(&url.origin());
            return;
        };
        self.prm_attempts.push(Attempt {
            flow: c.id,
            url: url.clone(),
            ok: true,
        });
        let resource = jstr(&doc, "resource").map(str::to_owned);
        let auth_servers = jstrs(&doc, "authorization_servers");
        if resource.is_none() || auth_servers.is_empty() {
            let missing: Vec<&str> = [
                resource.is_none().then_some("resource"),
                auth_servers.is_empty().then_some("authorization_servers"),
            ]
            .into_iter()
            .flatten()
            .collect();
            self.emit(
                New::finding(Id::PrmUnavailable, format!("{key} incomplete"), Severity::High, Culprit::Server)
                    .sub("incomplete")
                    .say(format!(
                        "The protected-resource metadata at {key} ({}) lacks {}, which RFC 9728 and the MCP spec require.",
                        c.id,
                        missing.join(" and ")
                    ))
                    .ev([c.id]),
            );
        }
        // Which MCP endpoints is this document about?
        let mut targets: Vec<(Url, Option<FlowId>)> = self
            .endpoints
            .iter()
            .filter(|e| e.advertised_prm.contains(&key))
            .map(|e| (e.url.clone(), None))
            .collect();
        if targets.is_empty() {
            match prm_implied(&url) {
                Some(Some(implied)) => targets.push((implied, None)),
                Some(None) => targets.extend(
                    self.endpoints
                        .iter()
                        .filter(|e| e.url.origin() == url.origin())
                        .map(|e| (e.url.clone(), None)),
                ),
                None => {}
            }
        }
        if let Some(r) = resource.as_deref() {
            for (target, _) in &targets {
                let covers = Url::parse(r).is_some_and(|ru| util::resource_covers(&ru, target));
                if !covers {
                    // Root cause over consequence: an endpoint the client reached only through
                    // a cross-origin redirect of the MCP endpoint is the redirect's fault.
                    let via = self.redirected_to.get(&target.endpoint()).cloned();
                    if let Some((from, redirect)) = via
                        .filter(|(from, _)| self.status_of(Id::RedirectDropsAuth, from).is_some())
                    {
                        self.emit(
                            New::finding(Id::RedirectDropsAuth, from.clone(), Severity::High, Culprit::Server)
                                .ev([redirect, c.id])
                                .detail(format!(
                                    "consequence: the protected-resource metadata in {} names resource {r:?}, not {}, which the client reached only through the redirect {redirect} from {from}",
                                    c.id,
                                    target.endpoint()
                                )),
                        );
                        continue;
                    }
                    self.emit(
                        New::finding(Id::PrmResourceMismatch, key.clone(), Severity::High, Culprit::Server)
                            .say(format!(
                                "The protected-resource metadata in {} names resource {r:?}, which does not cover the MCP endpoint {} the client uses; SDK clients abort here.",
                                c.id,
                                target.endpoint()
                            ))
                            .ev([c.id])
                            .detail(format!("resource {r:?} vs endpoint {:?}: the origin must match and the path must be a prefix (RFC 9728 §3.3 asks for an exact match)", target.endpoint())),
                    );
                }
            }
        }
        // Advertised authorization servers a remote client cannot reach.
        for a in &auth_servers {
            if let Some(au) = Url::parse(a) {
                if let Some(reason) = unreachable_reason(&url, &au) {
                    let deadline = c.done + us(self.opts.exchange_timeout);
                    self.wait(Pending::Unreachable {
                        meta_flow: c.id,
                        url: au.origin(),
                        field: "authorization_servers",
                        reason,
                        deadline,
                    });
                }
            }
        }
        self.prms.push(Prm {
            flow: c.id,
            url: url.clone(),
            resource,
            auth_servers,
        });
        // A late PRM settles 401s that lacked resource_metadata: the fallback worked.
        let settled: Vec<String> = self
            .endpoints
            .iter()
            .filter(|e| !e.no_rm_401.is_empty() && e.url.origin() == url.origin())
            .map(|e| format!("{} no-resource-metadata", e.key))
            .collect();
        for k in settled {
            self.set_severity(Id::ChallengeMissing, &k, Severity::Low);
        }
        self.check_prm_path_scoped(&url.origin());
    }

    /// `prm-url-not-path-scoped` (b): the path-inserted URL failed, the root one answered.
    fn check_prm_path_scoped(&mut self, origin: &str) {
        let root_ok = self.prm_attempts.iter().find(|a| {
            a.ok && a.url.origin() == origin && matches!(prm_implied(&a.url), Some(None))
        });
        let Some(root_ok) = root_ok.map(|a| a.flow) else {
            return;
        };
        let failed: Vec<(FlowId, String)> = self
            .prm_attempts
            .iter()
            .filter(|a| !a.ok && a.url.origin() == origin)
            .filter_map(|a| match prm_implied(&a.url) {
                Some(Some(e)) => Some((a.flow, e.endpoint())),
                _ => None,
            })
            .collect();
        for (flow, ep) in failed {
            self.emit(
                New::finding(Id::PrmUrlNotPathScoped, ep.clone(), Severity::Medium, Culprit::Server)
                    .sub("root-only")
                    .say(format!(
                        "Protected-resource metadata for {ep} is served only at the root well-known URL ({root_ok}); the path-inserted URL the client tried first failed ({flow})."
                    ))
                    .ev([flow, root_ok]),
            );
        }
    }

    fn metadata_not_json(&mut self, c: &Ctx<'_>, url: &Url) {
        let ct = util::response_content_type(c.flow);
        let start: String = c
            .flow
            .response
            .as_ref()
            .and_then(|r| r.body.as_str())
            .map(|b| b.trim_start().chars().take(40).collect())
            .unwrap_or_default();
        self.emit(
            New::finding(Id::MetadataNotJson, url.endpoint(), Severity::High, Culprit::Server)
                .say(format!(
                    "{} answered 200 with {} instead of JSON metadata ({}); clients fail to parse it (\"Unexpected token '<'\").",
                    url.endpoint(),
                    if ct.is_empty() { "a non-JSON body".to_owned() } else { format!("`{ct}`") },
                    c.id
                ))
                .ev([c.id])
                .detail(format!("body starts with {start:?}")),
        );
    }

    pub(crate) fn on_as_metadata(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        let key = url.endpoint();
        let doc = if c.ok() && !util::response_is_html(c.flow) {
            util::response_json(c.flow)
        } else {
            None
        };
        if c.ok() && doc.is_none() {
            self.metadata_not_json(c, &url);
        }
        let issuers: Vec<String> = self
            .prms
            .iter()
            .flat_map(|p| p.auth_servers.iter().cloned())
            .filter(|i| as_metadata_urls(i).contains(&key))
            .collect();
        let Some(doc) = doc else {
            self.as_attempts.push(Attempt {
                flow: c.id,
                url,
                ok: false,
            });
            for issuer in issuers {
                let exists = self.pending.iter().any(|w| matches!(&w.p, Pending::AsDiscovery { issuer: i, .. } if same_issuer(i, &issuer)),
                );
                if !exists {
                    let deadline = c.done + us(self.opts.exchange_timeout);
                    self.wait(Pending::AsDiscovery {
                        issuer,
                        created: c.done,
                        deadline,
                    });
                }
            }
            return;
        };
        self.as_attempts.push(Attempt {
            flow: c.id,
            url: url.clone(),
            ok: true,
        });
        let issuer = jstr(&doc, "issuer").map(str::to_owned);
        if let Some(i) = &issuer {
            if !self.env.authorization_servers.contains(i) {
                self.env.authorization_servers.push(i.clone());
            }
        }
        for expected in &issuers {
            let got = issuer.as_deref().unwrap_or("");
            if got != expected {
                let slash_only = same_issuer(got, expected) && !got.is_empty();
                self.emit(
                    New::finding(Id::AsDiscoveryFailed, format!("{key} issuer"), if slash_only { Severity::Low } else { Severity::High }, Culprit::Server)
                        .sub("issuer-mismatch")
                        .say(format!(
                            "The authorization-server metadata at {key} ({}) says issuer {got:?} but the protected-resource metadata names {expected:?}; RFC 8414 §3.3 clients reject it{}.",
                            c.id,
                            if slash_only { " (they differ only by a trailing slash)" } else { "" }
                        ))
                        .ev([c.id]),
                );
            }
        }
        // Completeness.
        let mut missing = Vec::new();
        let mut high = false;
        if !jstrs(&doc, "code_challenge_methods_supported")
            .iter()
            .any(|m| m == "S256")
        {
            missing.push(
                "code_challenge_methods_supported with S256 (2025-11-25 clients MUST refuse)"
                    .to_owned(),
            );
            high = true;
        }
        if !jstrs(&doc, "response_types_supported")
            .iter()
            .any(|m| m == "code")
        {
            missing.push("response_types_supported with \"code\"".to_owned());
        }
        for f in ["authorization_endpoint", "token_endpoint"] {
            if jstr(&doc, f).is_none() {
                missing.push(f.to_owned());
                high = true;
            }
        }
        if !missing.is_empty() {
            self.emit(
                New::finding(
                    Id::AsMetadataIncomplete,
                    key.clone(),
                    if high {
                        Severity::High
                    } else {
                        Severity::Medium
                    },
                    Culprit::Server,
                )
                .sub("fields-missing")
                .say(format!(
                    "The authorization-server metadata at {key} ({}) lacks {}.",
                    c.id,
                    missing.join(", ")
                ))
                .ev([c.id])
                .details(missing.iter().map(|m| format!("missing: {m}"))),
            );
        }
        let cimd = doc
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let fetched_from = url.clone();
        let doc_idx = self.as_docs.len();
        if jstr(&doc, "registration_endpoint").is_none() && !cimd {
            let deadline = c.done + us(self.opts.exchange_timeout);
            self.wait(Pending::NoRegistration {
                doc: doc_idx,
                deadline,
            });
        }
        if let Some(u) = jstr(&doc, "revocation_endpoint").and_then(Url::parse) {
            self.known.revocation_endpoints.insert(u.endpoint());
        }
        for (field, set) in [
            ("authorization_endpoint", 0),
            ("token_endpoint", 1),
            ("registration_endpoint", 2),
            ("jwks_uri", 3),
        ] {
            let Some(u) = jstr(&doc, field).and_then(Url::parse) else {
                continue;
            };
            let ep = u.endpoint();
            match set {
                0 => self.known.authorization_endpoints.insert(ep.clone()),
                1 => self.known.token_endpoints.insert(ep.clone()),
                2 => self.known.registration_endpoints.insert(ep.clone()),
                _ => self.known.jwks_uris.insert(ep.clone()),
            };
            if set < 3 {
                if let Some(reason) = unreachable_reason(&fetched_from, &u) {
                    let deadline = c.done + us(self.opts.exchange_timeout);
                    self.wait(Pending::Unreachable {
                        meta_flow: c.id,
                        url: ep,
                        field,
                        reason,
                        deadline,
                    });
                }
            }
        }
        self.as_docs.push(AsDoc {
            flow: c.id,
            done: c.done,
            url,
            issuer,
            doc,
        });
    }

    fn push_exchange_anchor(&mut self, anchor: FlowId, at: Micros, code_returned: bool) {
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

    pub(crate) fn on_registration(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        let key = url.endpoint();
        self.oauth_dance = true;
        let req = util::request_json(c.flow).unwrap_or(Value::Null);
        let req_uris = jstrs(&req, "redirect_uris");
        let req_method = jstr(&req, "token_endpoint_auth_method").map(str::to_owned);
        for u in &req_uris {
            if let Some(p) = Url::parse(u) {
                self.known.redirect_uris.insert(p.endpoint());
            }
        }
        if c.failed {
            return;
        }
        let Some(status) = c.status else { return };
        let resp = util::response_json(c.flow);
        if !(200..300).contains(&status) {
            let advertised = self
                .as_docs
                .iter()
                .any(|d| d.endpoint("registration_endpoint").as_deref() == Some(key.as_str()));
            // A refusal of loopback http redirect URIs is the server's: the spec tells the
            // authorization server to accept them (RFC 8252 §7.3, MCP 2025-11-25).
            let loopback_only = !req_uris.is_empty()
                && req_uris.iter().all(|u| {
                    Url::parse(u)
                        .is_some_and(|p| p.scheme == "http" && util::host_is_loopback(&p.host))
                });
            let names_redirect = resp.as_ref().is_some_and(|v| {
                jstr(v, "error") == Some("invalid_redirect_uri")
                    || jstr(v, "error_description")
                        .is_some_and(|d| d.to_ascii_lowercase().contains("redirect"))
            });
            let culprit = if matches!(status, 404 | 405)
                || status >= 500
                || (loopback_only && names_redirect)
            {
                Culprit::Server
            } else {
                Culprit::Unknown
            };
            let sub = if status == 404 && !advertised {
                "no-dcr"
            } else {
                "rejected"
            };
            let mut n = New::finding(
                Id::RegistrationFailed,
                key.clone(),
                Severity::Medium,
                culprit,
            )
            .sub(sub)
            .say(format!(
                "Dynamic client registration at {key} failed with HTTP {status} ({}){}.",
                c.id,
                if sub == "no-dcr" {
                    "; the server has no registration endpoint at the path the client guessed"
                } else {
                    ""
                }
            ))
            .ev([c.id]);
            if let Some(v) = &resp {
                for f in ["error", "error_description"] {
                    if let Some(e) = jstr(v, f) {
                        n = n.detail(format!("{f}: {e}"));
                    }
                }
            }
            if loopback_only && names_redirect {
                n = n.detail("the refused redirect URIs are loopback http ones, which the authorization server must accept (RFC 8252 §7.3; MCP 2025-11-25)");
            } else if culprit == Culprit::Unknown {
                n = n.detail("culprit unknown: the answer does not say which registration field it refused; its error_description (or the server's log) would tell");
            }
            self.emit(n);
            self.regs.push(Reg {
                flow: c.id,
                done: c.done,
                ok: false,
                client_id: None,
                redirect_uris: req_uris,
                method: None,
                req_method,
                secret: false,
            });
            return;
        }
        let resp = resp.unwrap_or(Value::Null);
        let client_id = jstr(&resp, "client_id").map(str::to_owned);
        if client_id.is_none() {
            self.emit(
                New::finding(
                    Id::RegistrationFailed,
                    key.clone(),
                    Severity::Medium,
                    Culprit::Server,
                )
                .sub("no-client-id")
                .say(format!(
                    "The registration response from {key} ({}) has no client_id.",
                    c.id
                ))
                .ev([c.id]),
            );
        }
        let resp_uris = jstrs(&resp, "redirect_uris");
        let lost: Vec<&String> = req_uris
            .iter()
            .filter(|u| !resp_uris.is_empty() && !resp_uris.contains(u))
            .collect();
        if !lost.is_empty() {
            self.emit(
                New::finding(Id::RegistrationFailed, key.clone(), Severity::Medium, Culprit::Server)
                    .sub("redirect-uris-changed")
                    .say(format!(
                        "The registration response ({}) does not echo the client's redirect URI {:?}; the authorization request will not match.",
                        c.id, lost[0]
                    ))
                    .ev([c.id])
                    .detail(format!("registered: {resp_uris:?}")),
            );
        }
        let secret = resp
            .get("client_secret")
            .is_some_and(|s| !s.is_null() && s.as_str() != Some(""));
        self.regs.push(Reg {
            flow: c.id,
            done: c.done,
            ok: true,
            client_id,
            redirect_uris: if resp_uris.is_empty() {
                req_uris
            } else {
                resp_uris
            },
            method: jstr(&resp, "token_endpoint_auth_method").map(str::to_owned),
            req_method,
            secret,
        });
        self.push_exchange_anchor(c.id, c.done, false);
    }

    /// The PRM `resource` values that apply to a request to the authorization server `issuer`.
    fn prm_resources_for(&self, issuer: Option<&str>) -> (Vec<String>, Vec<FlowId>) {
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

    fn check_resource_param(
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

    fn as_doc_for(&self, field: &str, ep: &str) -> Option<usize> {
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
        let issuer = self
            .as_doc_for("authorization_endpoint", &url.endpoint())
            .and_then(|i| self.as_docs[i].issuer.clone());
        self.check_resource_param(c, a.resource.as_deref(), "authorization", issuer.as_deref());
        self.push_exchange_anchor(c.id, c.done, code_fp.is_some());
        self.authzs.push(a);
    }

    pub(crate) fn on_token(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        let key = url.endpoint();
        self.vis.token_seen = true;
        self.oauth_dance = true;
        let form = util::request_form(c.flow).unwrap_or_default();
        let f = |k: &str| util::form_get(&form, k).map(str::to_owned);
        let grant = f("grant_type").unwrap_or_default();
        let auth = util::authorization(c.flow);
        let basic = auth
            .as_ref()
            .is_some_and(|(s, _)| s.eq_ignore_ascii_case("basic"));
        let client_id = f("client_id").or_else(|| basic_client_id(c.flow));
        let used_method = if basic {
            "client_secret_basic"
        } else if form.iter().any(|(k, _)| k == "client_secret") {
            "client_secret_post"
        } else if form.iter().any(|(k, _)| k == "client_assertion") {
            "private_key_jwt"
        } else {
            "none"
        };
        let resource = f("resource");
        let code_fp = f("code").map(|c| redact::fingerprint_of(&c));
        let rt_fp = f("refresh_token").map(|r| redact::fingerprint_of(&r));
        self.code_exchanges
            .push((c.id, c.started, code_fp.clone(), c.ok()));
        let doc = self.as_doc_for("token_endpoint", &key);
        let issuer = doc
            .and_then(|i| self.as_docs[i].issuer.clone())
            .unwrap_or_else(|| url.origin());
        let issuer_known = doc.is_some();
        if c.failed {
            return;
        }
        let Some(status) = c.status else { return };
        let ok = (200..300).contains(&status);
        let json = util::response_json(c.flow);
        let error = json
            .as_ref()
            .and_then(|v| jstr(v, "error").map(str::to_owned));
        let access = json
            .as_ref()
            .and_then(|v| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned);
        // token-response-invalid
        let mut invalid: Vec<(&'static str, String)> = Vec::new();
        if ok {
            match &json {
                None => invalid.push((
                    if util::response_is_html(c.flow) {
                        "html"
                    } else {
                        "not-json"
                    },
                    format!("content-type {:?}", util::response_content_type(c.flow)),
                )),
                Some(v) => {
                    if let Some(e) = &error {
                        invalid.push(("error-in-200", format!("error: {e}")));
                    } else if access.is_none() {
                        invalid
                            .push(("no-access-token", "access_token is missing or empty".into()));
                    }
                    match jstr(v, "token_type") {
                        None if error.is_none() => {
                            invalid.push(("no-token-type", "token_type is missing".into()))
                        }
                        Some(t) if !t.eq_ignore_ascii_case("bearer") => {
                            invalid.push(("not-bearer", format!("token_type {t:?}")))
                        }
                        _ => {}
                    }
                }
            }
        } else if json.is_none() && util::response_is_html(c.flow) {
            invalid.push(("error-not-json", format!("HTTP {status} with an HTML body")));
        }
        let failed = !ok || access.is_none();
        let explained = failed
            && self.check_auth_method(
                c,
                used_method,
                client_id.as_deref(),
                doc,
                error.as_deref(),
                status,
            );
        if status == 401 && error.as_deref() == Some("invalid_client") && !explained {
            invalid.push(("invalid-client", "401 invalid_client".into()));
        }
        if !invalid.is_empty() {
            let (sub, _) = invalid[0];
            self.emit(
                New::finding(
                    Id::TokenResponseInvalid,
                    key.clone(),
                    Severity::High,
                    Culprit::Server,
                )
                .sub(sub)
                .say(format!(
                    "The token endpoint {key} answered {} with an unusable response ({}): {}.",
                    c.id,
                    status,
                    invalid
                        .iter()
                        .map(|(_, d)| d.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
                .ev([c.id]),
            );
        }
        // PKCE, token side.
        if grant == "authorization_code" {
            self.check_pkce_token(
                c,
                &form,
                code_fp.as_deref(),
                client_id.as_deref(),
                error.as_deref(),
            );
        }
        let as_issuer = issuer_known.then_some(issuer.as_str());
        self.check_resource_param(
            c,
            resource.as_deref(),
            if grant == "refresh_token" {
                "refresh"
            } else {
                "token"
            },
            as_issuer,
        );
        if grant == "authorization_code" {
            if let (Some(cfp), Some(tres)) = (&code_fp, &resource) {
                let a = self
                    .authzs
                    .iter()
                    .rev()
                    .find(|a| a.code_fp.as_ref() == Some(cfp));
                if let Some(a) = a {
                    if let Some(ares) = &a.resource {
                        if ares != tres {
                            let af = a.flow;
                            let ares = ares.clone();
                            self.emit(
                                New::finding(Id::ResourceParamWrong, "authorize-token-differ", Severity::High, Culprit::Client)
                                    .sub("authorize-token-differ")
                                    .say(format!(
                                        "The authorization request {af} sent resource={ares:?} but the token request {} sent resource={tres:?}.",
                                        c.id
                                    ))
                                    .ev([af, c.id]),
                            );
                        }
                    }
                }
            }
        }
        if grant == "refresh_token" {
            if let Some(rt) = &rt_fp {
                self.check_refresh(c, rt, ok, error.as_deref(), json.as_ref());
            }
        }
        let (Some(access), true) = (access, ok) else {
            return;
        };
        let json = json.unwrap_or(Value::Null);
        self.issue_token(
            c, &url, &grant, &access, &json, &issuer, resource, client_id, rt_fp,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_token(
        &mut self,
        c: &Ctx<'_>,
        url: &Url,
        grant: &str,
        access: &str,
        json: &Value,
        issuer: &str,
        resource: Option<String>,
        client_id: Option<String>,
        used_rt: Option<String>,
    ) {
        let fp = redact::fingerprint_of(access);
        let jwt = c
            .flow
            .secrets
            .iter()
            .find(|s| s.fingerprint == fp && s.jwt.is_some())
            .and_then(|s| s.jwt.clone())
            .or_else(|| redact::decode_jwt(access));
        let expires_in = util::expires_in(json);
        let expires_at = expires_in
            .map(|s| c.done.saturating_add(s.saturating_mul(1_000_000)))
            .or_else(|| {
                jwt.as_ref()
                    .and_then(|j| crate::engine::jwt_num(j, "exp"))
                    .map(|e| e.saturating_mul(1_000_000))
            });
        let refresh_fp = jstr(json, "refresh_token")
            .filter(|s| !s.is_empty())
            .map(redact::fingerprint_of);
        // The story: a refresh continues the story of the token that carried its refresh token.
        let from_refresh = used_rt
            .as_ref()
            .and_then(|rt| self.refresh.get(rt))
            .and_then(|s| s.story);
        let story = match from_refresh {
            Some(s) => s,
            None => {
                let found = self.stories.iter().position(|s| {
                    same_issuer(&s.issuer, issuer)
                        && s.resource == resource
                        && (s.client_id == client_id || client_id.is_none())
                });
                match found {
                    Some(s) => s,
                    None => {
                        self.stories.push(Story {
                            issuer: issuer.to_owned(),
                            resource: resource.clone(),
                            client_id: client_id.clone(),
                            tokens: Vec::new(),
                        });
                        self.stories.len() - 1
                    }
                }
            }
        };
        // "no refresh token" sub-case of refresh-broken: a new code exchange after the previous
        // token, issued without a refresh token, expired.
        if grant == "authorization_code" {
            if let Some(&prev) = self.stories[story].tokens.last() {
                let p = &self.tokens[prev];
                if p.refresh_fp.is_none()
                    && p.uses > 0
                    && p.expires_at.is_some_and(|e| e <= c.started)
                {
                    let pf = p.flow;
                    self.emit(
                        New::finding(Id::RefreshBroken, format!("story {story} no-refresh-token"), Severity::High, Culprit::Server)
                            .sub("no-refresh-token")
                            .say(format!(
                                "The token from {pf} came without a refresh_token, so after it expired the client had to authorize again ({}).",
                                c.id
                            ))
                            .ev([pf, c.id]),
                    );
                }
            }
        }
        let prev = self.stories[story].tokens.last().copied();
        let trigger = self
            .last_401
            .as_ref()
            .filter(|(_, at)| *at <= c.started)
            .map(|(e, _)| e.clone())
            .or_else(|| prev.and_then(|p| self.tokens[p].trigger.clone()));
        let ti = self.tokens.len();
        self.tokens.push(Token {
            fp: fp.clone(),
            flow: c.id,
            grant: grant.to_owned(),
            issued: c.done,
            expires_in,
            expires_at,
            refresh_fp: refresh_fp.clone(),
            scope: jstr(json, "scope").map(str::to_owned),
            jwt,
            story,
            token_url: url.clone(),
            trigger,
            token_ua: c.ua.clone(),
            uses: 0,
            sent_to: Vec::new(),
            endpoints: prev
                .map(|p| self.tokens[p].endpoints.clone())
                .unwrap_or_default(),
            kinds: Vec::new(),
            uas: Vec::new(),
            mcp_after: false,
            refused: None,
            revoked: None,
            expired_refused: Vec::new(),
        });
        self.token_index.insert(fp, ti);
        self.stories[story].tokens.push(ti);
        self.amend_recovery(c, ti, grant);
        if let Some(rt) = refresh_fp {
            let st = self.refresh.entry(rt).or_default();
            st.story = Some(story);
        }
        // A token mcptap got for itself (`--inject-refresh`) was never the client's to use.
        if c.flow.by_mcptap.is_none() {
            let deadline = c.done + us(self.opts.token_unused_after);
            self.wait(Pending::TokenUnused {
                token: ti,
                deadline,
            });
        }
    }

    /// A new token after bare requests made while a good token was held: the client recovered.
    /// The `token-not-sent` finding stays, amended with how, at a lower severity.
    fn amend_recovery(&mut self, c: &Ctx<'_>, new: usize, grant: &str) {
        if self.bare_while_held.is_empty() || c.flow.by_mcptap.is_some() {
            return;
        }
        let issuer = self.stories[self.tokens[new].story].issuer.clone();
        let open = std::mem::take(&mut self.bare_while_held);
        let mut keep = Vec::new();
        for (story, bare_started, held) in open {
            let same = story == self.tokens[new].story
                || same_issuer(&self.stories[story].issuer, &issuer);
            if !same || bare_started > c.started {
                keep.push((story, bare_started, held));
                continue;
            }
            let (hf, hfp) = (self.tokens[held].flow, self.tokens[held].fp.clone());
            let (note, sev) = match grant {
                "authorization_code" => (
                    format!(
                        "recovered: a new login at {} put the user through the browser again while token {hfp} from {hf} was still valid",
                        c.id
                    ),
                    Severity::High,
                ),
                "refresh_token" => (
                    format!(
                        "recovered: the client refreshed at {} although token {hfp} from {hf} was still valid",
                        c.id
                    ),
                    Severity::Medium,
                ),
                other => (
                    format!("recovered: a new token ({other}) at {} replaced token {hfp} from {hf}", c.id),
                    Severity::Medium,
                ),
            };
            self.amend(
                Id::TokenNotSent,
                &format!("story {story}"),
                note,
                Some(sev),
                None,
            );
        }
        self.bare_while_held = keep;
    }

    fn check_refresh(
        &mut self,
        c: &Ctx<'_>,
        rt: &str,
        ok: bool,
        error: Option<&str>,
        json: Option<&Value>,
    ) {
        let window = us(self.opts.refresh_race_window);
        let mine = c.flow.by_mcptap.is_some();
        let st = self.refresh.entry(rt.to_owned()).or_default();
        let race = st
            .uses
            .iter()
            .rev()
            .find(|(_, s, _)| (c.started - s).abs() <= window)
            .map(|(f, _, _)| *f);
        let rejected = st.rejected;
        let rotated = st.rotated;
        let rotated_by_mcptap = st.rotated_by_mcptap;
        let race_with_mcptap = race.is_some_and(|p| mine || st.by_mcptap.contains(&p));
        st.uses.push((c.id, c.started, ok));
        if mine {
            st.by_mcptap.push(c.id);
        }
        if ok {
            if let Some(new_rt) = json.and_then(|v| jstr(v, "refresh_token")) {
                if redact::fingerprint_of(new_rt) != rt {
                    st.rotated = true;
                    if mine {
                        st.rotated_by_mcptap.get_or_insert(c.id);
                    }
                }
            }
        } else if error == Some("invalid_grant") {
            st.rejected.get_or_insert(c.id);
        }
        // What mcptap's own refreshes (`--inject-refresh`) cause is not the client's doing nor
        // the server's: said as a note, never as a finding.
        if mine || race_with_mcptap || (rotated_by_mcptap.is_some() && !ok) {
            if let (Some(prev), true) = (race, race_with_mcptap) {
                self.vis.notes.push(format!(
                    "Refreshes {prev} and {} used the same refresh token; mcptap made one of them (--inject-refresh).",
                    c.id
                ));
            }
            if !ok {
                let why = match rotated_by_mcptap {
                    Some(r) if !mine => format!(
                        "its refresh token had been rotated by mcptap's own refresh {r} (--inject-refresh): expected, the client's copy was replaced behind its back"
                    ),
                    _ => format!("mcptap's own refresh (--inject-refresh) was refused{}", error.map(|e| format!(" with {e}")).unwrap_or_default()),
                };
                self.vis
                    .notes
                    .push(format!("Refresh {} was refused: {why}.", c.id));
            }
            return;
        }
        if let Some(prev) = race {
            self.emit(
                New::finding(Id::RefreshBroken, format!("{rt} race"), Severity::High, Culprit::Client)
                    .sub("concurrent-refresh")
                    .say(format!(
                        "Two refresh requests ({prev} and {}) used the same refresh token within {} s: a multi-process race that rotation-strict servers punish by revoking the token family.",
                        c.id,
                        window / 1_000_000
                    ))
                    .ev([prev, c.id]),
            );
        }
        if !ok && error == Some("invalid_grant") {
            let (sub, culprit, why) = if let Some(r) = rejected {
                (
                    "revoked-reused",
                    Culprit::Client,
                    format!("the same refresh token had already been refused in {r}"),
                )
            } else if rotated {
                ("reused-rotated", Culprit::Client, "the refresh token had already been rotated; the client did not store the new one".to_owned())
            } else if race.is_some() {
                (
                    "concurrent-refresh",
                    Culprit::Client,
                    "another refresh with it was in flight".to_owned(),
                )
            } else if let Some((issuer_flow, issued)) = self
                .tokens
                .iter()
                .find(|t| t.refresh_fp.as_deref() == Some(rt))
                .filter(|t| t.revoked.is_none())
                .map(|t| (t.flow, t.issued))
            {
                // Issued in this capture, by this server, to this client, and refused on its
                // first use: the server broke its own refresh token.
                (
                    "refused-on-first-use",
                    Culprit::Server,
                    format!(
                        "the refresh token was issued in {issuer_flow} {} earlier by the same server and refused on its first use",
                        util::secs(c.started - issued)
                    ),
                )
            } else {
                ("invalid-grant", Culprit::Unknown, "the server no longer accepts it (expired, revoked, or issued to another client); who is at fault is not in this capture: a capture that also holds the token response that issued this refresh token would tell".to_owned())
            };
            let mut ev = vec![c.id];
            ev.extend(rejected);
            self.emit(
                New::finding(
                    Id::RefreshBroken,
                    format!("{rt} invalid_grant"),
                    Severity::High,
                    culprit,
                )
                .sub(sub)
                .say(format!(
                    "The refresh request {} was refused with invalid_grant: {why}.",
                    c.id
                ))
                .ev(ev),
            );
        }
    }

    fn check_pkce_token(
        &mut self,
        c: &Ctx<'_>,
        form: &[(String, String)],
        code_fp: Option<&str>,
        client_id: Option<&str>,
        error: Option<&str>,
    ) {
        let authz = self
            .authzs
            .iter()
            .rev()
            .find(|a| code_fp.is_some() && a.code_fp.as_deref() == code_fp)
            .or_else(|| {
                self.authzs.iter().rev().find(|a| {
                    a.started <= c.started
                        && client_id.is_some()
                        && a.client_id.as_deref() == client_id
                })
            })
            .map(|a| (a.flow, a.challenge.clone(), a.method.clone()));
        let verifier = util::form_get(form, "code_verifier");
        let mut ev: Vec<FlowId> = authz.iter().map(|a| a.0).collect();
        ev.push(c.id);
        let refused = error
            .map(|e| format!(" and the server answered {e}"))
            .unwrap_or_default();
        match verifier {
            None => self.emit(
                New::finding(
                    Id::PkceMismatch,
                    format!("{} verifier", c.id),
                    Severity::High,
                    Culprit::Client,
                )
                .sub("no-verifier")
                .say(format!(
                    "The token request {} has no code_verifier{refused}; PKCE is mandatory in MCP.",
                    c.id
                ))
                .ev(ev.clone()),
            ),
            Some(v) => {
                let redacted = redact::parse_redacted(v).is_some();
                let len = if redacted {
                    util::redacted_len(v)
                } else {
                    Some(v.len())
                };
                let bad_chars = !redacted
                    && !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                if len.is_some_and(|l| !(43..=128).contains(&l)) || bad_chars {
                    self.emit(
                        New::finding(Id::PkceMismatch, format!("{} verifier", c.id), Severity::High, Culprit::Client)
                            .sub("bad-verifier")
                            .say(format!(
                                "The code_verifier in {} is not 43–128 unreserved characters (length {}){refused}.",
                                c.id,
                                len.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
                            ))
                            .ev(ev.clone()),
                    );
                }
                if let Some((af, Some(ch), Some(m))) = &authz {
                    if m == "S256" {
                        match util::challenge_fingerprint(ch) {
                            Some(cfp) if cfp != redact::fingerprint_of(v) => self.emit(
                                New::finding(Id::PkceMismatch, format!("{} challenge-mismatch", c.id), Severity::High, Culprit::Client)
                                    .sub("challenge-mismatch")
                                    .say(format!(
                                        "The code_verifier in {} does not hash to the code_challenge of the authorization request {af}{refused}: the client lost or regenerated its PKCE state.",
                                        c.id
                                    ))
                                    .ev(ev.clone()),
                            ),
                            Some(_) => {}
                            None => self.vis.notes.push(format!(
                                "PKCE of {} could not be checked: the code_challenge in {af} is not a readable S256 value.",
                                c.id
                            )),
                        }
                    }
                }
            }
        }
        if authz.is_none() && matches!(error, Some("invalid_grant") | Some("invalid_request")) {
            self.emit(
                New::finding(Id::AuthorizeNotVisible, "authorize", Severity::Info, Culprit::Unknown)
                    .say(format!(
                        "The code exchange {} failed ({}) but the browser's /authorize was not captured, so redirect_uri, PKCE and the authorize-side resource cannot be checked.",
                        c.id,
                        error.unwrap_or("")
                    ))
                    .ev([c.id]),
            );
        }
    }

    /// `token-auth-method-mismatch`; true when it explains a failed token response.
    fn check_auth_method(
        &mut self,
        c: &Ctx<'_>,
        used: &str,
        client_id: Option<&str>,
        doc: Option<usize>,
        error: Option<&str>,
        status: u16,
    ) -> bool {
        let reg = self.regs.iter().rev().find(|r| {
            r.ok && r.done <= c.started
                && (client_id.is_none() || r.client_id.as_deref() == client_id)
        });
        let err = error.unwrap_or("");
        let client_err = matches!(
            err,
            "invalid_client" | "invalid_request" | "unauthorized_client"
        ) || status == 401
            || err.is_empty();
        if !client_err {
            return false;
        }
        let summary_tail = format!(
            "the token endpoint answered {status}{}",
            if err.is_empty() {
                String::new()
            } else {
                format!(" {err}")
            }
        );
        if let Some(r) = reg {
            let rf = r.flow;
            let echoed = r.method.is_some();
            let registered = r.method.clone().or(r.req_method.clone());
            let n = if r.secret && used == "none" {
                Some(New::finding(Id::TokenAuthMethodMismatch, format!("{} no-secret", c.id), Severity::High, if echoed { Culprit::Client } else { Culprit::Server })
                    .sub("no-secret")
                    .say(format!(
                        "The registration in {rf} issued a client secret{}, but the token request {} sent none; {summary_tail}.",
                        if echoed { "" } else { " without echoing token_endpoint_auth_method" },
                        c.id
                    )))
            } else if let Some(m) = registered.as_deref().filter(|m| *m != used) {
                Some(New::finding(Id::TokenAuthMethodMismatch, format!("{} differs", c.id), Severity::High, if echoed { Culprit::Client } else { Culprit::Unknown })
                    .sub("method-differs")
                    .say(format!(
                        "The client registered token_endpoint_auth_method {m} ({rf}) but authenticated with {used} at /token ({}); {summary_tail}.",
                        c.id
                    )))
            } else if registered.as_deref() == Some(used) && used != "none" {
                Some(New::finding(Id::TokenAuthMethodMismatch, format!("{} refused", c.id), Severity::High, Culprit::Server)
                    .sub("registered-method-refused")
                    .say(format!(
                        "The client authenticated with {used}, the method registered in {rf}, yet {summary_tail} in {}: the server does not honour its own registration.",
                        c.id
                    )))
            } else {
                None
            };
            if let Some(n) = n {
                self.emit(n.ev([rf, c.id]));
                return true;
            }
            return false;
        }
        if let Some(d) = doc {
            let supported = jstrs(
                &self.as_docs[d].doc,
                "token_endpoint_auth_methods_supported",
            );
            if !supported.is_empty() && !supported.iter().any(|s| s == used) {
                let df = self.as_docs[d].flow;
                self.emit(
                    New::finding(Id::TokenAuthMethodMismatch, format!("{} unsupported", c.id), Severity::High, Culprit::Client)
                        .sub("unsupported-method")
                        .say(format!(
                            "The token request {} authenticates with {used}, which the metadata in {df} does not list ({}); {summary_tail}.",
                            c.id,
                            supported.join(", ")
                        ))
                        .ev([df, c.id]),
                );
                return true;
            }
        }
        false
    }

    /// `client-ignores-metadata`: a fallback-shaped endpoint although metadata named another.
    pub(crate) fn check_ignored_metadata(&mut self, c: &Ctx<'_>) {
        let Some(url) = &c.url else { return };
        let (field, tail) = match c.role {
            Role::Registration => ("registration_endpoint", "/register"),
            Role::Authorize => ("authorization_endpoint", "/authorize"),
            _ => ("token_endpoint", "/token"),
        };
        let ep = url.endpoint();
        if self
            .as_docs
            .iter()
            .any(|d| d.endpoint(field).as_deref() == Some(ep.as_str()))
        {
            return;
        }
        if !util::trim_slash(&url.path).ends_with(tail) {
            return;
        }
        let mcp_origin = self
            .endpoints
            .iter()
            .any(|e| e.url.origin() == url.origin());
        let hit = self.as_docs.iter().rev().find(|d| {
            d.done <= c.started
                && d.endpoint(field).is_some()
                && (mcp_origin
                    || d.url.origin() == url.origin()
                    || d.endpoint(field)
                        .and_then(|e| Url::parse(&e))
                        .is_some_and(|e| e.origin() == url.origin()))
        });
        if let Some(d) = hit {
            let df = d.flow;
            let adv = d.endpoint(field).unwrap_or_default();
            self.emit(
                New::finding(Id::ClientIgnoresMetadata, field, Severity::High, Culprit::Client)
                    .sub(field)
                    .say(format!(
                        "The client called {ep} ({}) although the authorization-server metadata ({df}) names {field} {adv}.",
                        c.id
                    ))
                    .ev([df, c.id]),
            );
        }
    }

    /// Resolves `metadata-unreachable-endpoints` checks with a request to the endpoint.
    pub(crate) fn check_unreachable_use(&mut self, c: &Ctx<'_>) {
        let Some(url) = &c.url else { return };
        if !self
            .pending
            .iter()
            .any(|w| matches!(&w.p, Pending::Unreachable { .. }))
        {
            return;
        }
        let ep = url.endpoint();
        let origin = url.origin();
        let mut fire = Vec::new();
        self.pending.retain(|w| match &w.p {
            Pending::Unreachable {
                meta_flow,
                url: u,
                field,
                reason,
                ..
            } if *u == ep || (*field == "authorization_servers" && *u == origin) => {
                if c.failed {
                    fire.push((*meta_flow, u.clone(), *field, reason.clone()));
                }
                false
            }
            _ => true,
        });
        for (meta, u, field, reason) in fire {
            let err = c
                .flow
                .error
                .as_ref()
                .map(|e| e.kind.as_str())
                .unwrap_or("no response");
            self.emit(
                New::finding(Id::MetadataUnreachableEndpoints, u.clone(), Severity::High, Culprit::Server)
                    .sub("request-failed")
                    .say(format!(
                        "The metadata in {meta} advertises {field} {u} ({reason}); the client's request to it ({}) failed ({err}).",
                        c.id
                    ))
                    .ev([meta, c.id]),
            );
        }
    }

    /// When a waiting OAuth decision becomes likely enough to show, and the suspected finding
    /// (same id and key as the confirmed one it may become).
    pub(crate) fn suspicion_oauth(&self, p: &Pending) -> Option<New> {
        const INJECT: &str = "rerun with `--inject-token` to prove at once who is at fault";
        match p {
            Pending::TokenUnused { token, deadline } => {
                let t = &self.tokens[*token];
                let n = New::finding(Id::TokenNotSent, format!("story {}", t.story), Severity::High, Culprit::Client)
                    .sub("token-unused")
                    .say(format!(
                        "The token issued in {} ({}) has not been used: no request reached the MCP endpoint after it.",
                        t.flow, t.fp
                    ))
                    .ev([t.flow])
                    .suspect(format!(
                        "an MCP request carrying it within {} of issue clears it; none by then confirms it; {INJECT}",
                        util::secs(deadline - t.issued)
                    ));
                Some(n)
            }
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
            Pending::Prm { origin, .. } => {
                if !self.origin_protected(origin) {
                    return None;
                }
                let n = New::finding(Id::PrmUnavailable, origin.clone(), Severity::High, Culprit::Server)
                    .sub("not-found")
                    .say(format!("No protected-resource metadata has been fetched for {origin} yet: the attempts so far failed."))
                    .ev(self.prm_attempts.iter().filter(|a| !a.ok && a.url.origin() == *origin).map(|a| a.flow))
                    .suspect("a successful fetch of the metadata at any well-known URL clears it");
                Some(n)
            }
            Pending::AsDiscovery { issuer, .. } => {
                let urls = as_metadata_urls(issuer);
                let n = New::finding(Id::AsDiscoveryFailed, issuer.clone(), Severity::High, Culprit::Server)
                    .sub("not-found")
                    .say(format!("The authorization-server metadata for {issuer} has not been found yet: the attempts so far failed."))
                    .ev(self.as_attempts.iter().filter(|a| !a.ok && urls.contains(&a.url.endpoint())).map(|a| a.flow))
                    .suspect("a successful fetch of the issuer's metadata clears it");
                Some(n)
            }
            Pending::Unreachable {
                meta_flow,
                url,
                field,
                reason,
                ..
            } => {
                let n = New::finding(Id::MetadataUnreachableEndpoints, url.clone(), Severity::High, Culprit::Server)
                    .sub("never-reached")
                    .say(format!(
                        "The metadata in {meta_flow} advertises {field} {url} ({reason}), and no request has reached it."
                    ))
                    .ev([*meta_flow])
                    .suspect("a successful request to that endpoint clears it; a failed one or none confirms it");
                Some(n)
            }
            _ => None,
        }
    }

    /// Whether what a waiting OAuth decision waits for has happened, and why that settles it.
    pub(crate) fn healthy_oauth(&self, p: &Pending) -> Option<String> {
        match p {
            Pending::TokenUnused { token, deadline } => {
                let t = &self.tokens[*token];
                if t.uses > 0 || t.mcp_after {
                    return Some(format!(
                        "the token was used ({} requests carried it)",
                        t.uses
                    ));
                }
                let newer = self.stories[t.story].tokens.iter().any(|&o| {
                    o != *token
                        && self.tokens[o].issued > t.issued
                        && self.tokens[o].issued <= *deadline
                });
                newer.then(|| "a newer token replaced it before it was due".to_owned())
            }
            Pending::Exchange { at, .. } => {
                let satisfied = self.code_exchanges.iter().any(|(_, s, _, _)| s >= at)
                    || self.tokens.iter().any(|t| t.issued >= *at);
                satisfied.then(|| "a token request followed".to_owned())
            }
            Pending::Prm { origin, .. } => {
                let found = self.prms.iter().any(|p| {
                    p.url.origin() == *origin
                        || p.resource
                            .as_deref()
                            .and_then(Url::parse)
                            .is_some_and(|r| r.origin() == *origin)
                });
                found.then(|| "the metadata was found".to_owned())
            }
            Pending::AsDiscovery { issuer, .. } => {
                let urls = as_metadata_urls(issuer);
                let found = self.as_docs.iter().any(|d| {
                    urls.contains(&d.url.endpoint())
                        || d.issuer.as_deref().is_some_and(|i| same_issuer(i, issuer))
                });
                found.then(|| "the metadata was found".to_owned())
            }
            Pending::Unreachable { field, .. } => (*field == "authorization_endpoint"
                && !self.code_exchanges.is_empty())
            .then(|| "a code from it was exchanged".to_owned()),
            Pending::NoRegistration { doc, .. } => {
                let d = &self.as_docs[*doc];
                let used = self.authzs.iter().any(|a| a.client_id.is_some())
                    || self.code_exchanges.iter().any(|(_, s, _, _)| *s >= d.done);
                used.then(|| "the client had a client id".to_owned())
            }
            _ => None,
        }
    }

    /// True when the server at `origin` asked for a token: it challenged, or the client went
    /// on to OAuth endpoints on its origin (the 2025-03-26 fallback). Only such a server owes
    /// protected-resource metadata.
    fn origin_protected(&self, origin: &str) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.url.origin() == origin && e.challenged.is_some())
            || self.flows.iter().any(|f| {
                f.role.is_oauth() && f.role != Role::PrmDiscovery && f.url.starts_with(origin)
            })
    }

    /// Resolves a waiting OAuth decision. `due`: its time has come (or the client moved on);
    /// otherwise the session is over and it is decided on the evidence at hand.
    pub(crate) fn resolve_oauth(&mut self, p: Pending, due: bool) -> Decision {
        let healthy = self.healthy_oauth(&p);
        if !matches!(p, Pending::Prm { .. }) {
            if let Some(why) = healthy {
                return Decision::Healthy(why);
            }
        }
        let now = self.now();
        match p {
            Pending::TokenUnused { token, .. } => {
                let t = &self.tokens[token];
                let (flow, fp, issued) = (t.flow, t.fp.clone(), t.issued);
                if !due {
                    return Decision::Open {
                        why: format!(
                            "The capture ended {} after token {fp} was issued in {flow}: too early to say whether it would be used.",
                            util::secs(now - issued)
                        ),
                        show: false,
                    };
                }
                let story = t.story;
                let mut n = New::finding(Id::TokenNotSent, format!("story {story}"), Severity::Critical, Culprit::Client)
                    .sub("token-unused")
                    .say(format!(
                        "The token issued in {flow} ({fp}) was never used: no request reached the MCP endpoint in the {} after it; the server never saw it.",
                        util::secs(us(self.opts.token_unused_after))
                    ))
                    .ev([flow]);
                if self.tokens[token].expires_in.is_none() {
                    n = n.detail("the token response had no expires_in");
                }
                n = n.detail(if self.opts.reverse_proxy {
                    "captured at a reverse proxy: an edge in front of it (CDN/WAF, see edge-blocked) may have stopped the requests before they arrived here".to_owned()
                } else {
                    "check the client's log for an error right after authorization (a tools/list schema problem, a reconnect failure)".to_owned()
                });
                self.emit(n);
                Decision::Done
            }
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
            Pending::Prm { origin, .. } => {
                let advertised: Vec<String> = self
                    .endpoints
                    .iter()
                    .filter(|e| e.url.origin() == origin)
                    .flat_map(|e| e.advertised_prm.iter().cloned())
                    .collect();
                let failed: Vec<FlowId> = self
                    .prm_attempts
                    .iter()
                    .filter(|a| {
                        !a.ok
                            && (a.url.origin() == origin || advertised.contains(&a.url.endpoint()))
                    })
                    .map(|a| a.flow)
                    .collect();
                let adv_failed: Vec<FlowId> = self
                    .prm_attempts
                    .iter()
                    .filter(|a| !a.ok && advertised.contains(&a.url.endpoint()))
                    .map(|a| a.flow)
                    .collect();
                if let Some(why) = healthy {
                    if !adv_failed.is_empty() {
                        self.emit(
                            New::finding(Id::PrmUnavailable, format!("{origin} advertised"), Severity::Medium, Culprit::Server)
                                .sub("advertised-url-fails")
                                .say(format!(
                                    "The resource_metadata URL the server advertises fails ({}); the client found the metadata elsewhere.",
                                    adv_failed.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
                                ))
                                .ev(adv_failed),
                        );
                    }
                    return Decision::Healthy(why);
                }
                if !self.origin_protected(&origin) {
                    return Decision::Healthy("the server never asked for a token".to_owned());
                }
                self.emit(
                    New::finding(Id::PrmUnavailable, origin.clone(), Severity::High, Culprit::Server)
                        .sub("not-found")
                        .say(format!(
                            "No protected-resource metadata could be fetched for {origin} ({} tried and failed); 2025-06-18+ clients then fall back to guessing endpoints on the MCP origin.",
                            failed.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
                        ))
                        .ev(failed),
                );
                Decision::Done
            }
            Pending::AsDiscovery { issuer, .. } => {
                let urls = as_metadata_urls(&issuer);
                let failed: Vec<&Attempt> = self
                    .as_attempts
                    .iter()
                    .filter(|a| !a.ok && urls.contains(&a.url.endpoint()))
                    .collect();
                let ids: Vec<FlowId> = failed.iter().map(|a| a.flow).collect();
                let unreachable = failed.iter().any(|a| {
                    self.flow_error(a.flow).is_some_and(|k| {
                        matches!(
                            k,
                            ErrorKind::UpstreamDns
                                | ErrorKind::UpstreamConnect
                                | ErrorKind::UpstreamTimeout
                        )
                    })
                });
                self.emit(
                    New::finding(Id::AsDiscoveryFailed, issuer.clone(), Severity::High, Culprit::Server)
                        .sub(if unreachable { "unreachable" } else { "not-found" })
                        .say(format!(
                            "The authorization-server metadata for {issuer} (named by the protected-resource metadata) could not be fetched from any well-known URL ({}).",
                            ids.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
                        ))
                        .ev(ids),
                );
                Decision::Done
            }
            Pending::Unreachable {
                meta_flow,
                url,
                field,
                reason,
                deadline,
            } => {
                let when = if due {
                    "and no request to it followed".to_owned()
                } else {
                    format!(
                        "and no request to it followed before the capture ended {} later",
                        util::secs(now - (deadline - us(self.opts.exchange_timeout)))
                    )
                };
                self.emit(
                    New::finding(Id::MetadataUnreachableEndpoints, url.clone(), Severity::High, Culprit::Server)
                        .sub("never-reached")
                        .say(format!(
                            "The metadata in {meta_flow} advertises {field} {url} ({reason}) {when}: the client could not or would not use it."
                        ))
                        .ev([meta_flow]),
                );
                Decision::Done
            }
            Pending::NoRegistration { doc, .. } => {
                let d = &self.as_docs[doc];
                let issuer = d.issuer.clone();
                let (df, key) = (d.flow, d.url.endpoint());
                self.emit(
                    New::finding(Id::AsMetadataIncomplete, format!("{key} registration"), Severity::Medium, Culprit::Server)
                        .sub("no-registration")
                        .say(format!(
                            "The authorization-server metadata of {} ({df}) offers neither registration_endpoint nor client_id_metadata_document_supported, and the client had no pre-registered client id.",
                            issuer.unwrap_or(key.clone())
                        ))
                        .ev([df]),
                );
                Decision::Done
            }
            other => Decision::Wait(other),
        }
    }

    fn flow_error(&self, id: FlowId) -> Option<ErrorKind> {
        let name = self.flows.iter().rev().find(|f| f.id == id)?.error?;
        [
            ErrorKind::UpstreamDns,
            ErrorKind::UpstreamConnect,
            ErrorKind::UpstreamTimeout,
            ErrorKind::UpstreamTls,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }

    /// Rules that look at the whole session.
    pub(crate) fn finish_rules(&mut self) {
        // lazy-challenge, "never": bare initialize accepted by an endpoint whose metadata says
        // it is protected, and no 401 ever came.
        let mut lazy = Vec::new();
        for e in &self.endpoints {
            if e.lazy_ok.is_empty() || e.challenged.is_some() {
                continue;
            }
            let prm = self.prms.iter().find(|p| {
                p.resource
                    .as_deref()
                    .and_then(Url::parse)
                    .is_some_and(|r| util::resource_covers(&r, &e.url))
            });
            if let Some(p) = prm {
                lazy.push((e.key.clone(), e.lazy_ok[0], p.flow));
            }
        }
        for (key, ok, prm) in lazy {
            self.emit(
                New::finding(Id::LazyChallenge, key.clone(), Severity::Medium, Culprit::Server)
                    .sub("never-challenges")
                    .say(format!(
                        "{key} answered {ok} without a token although its protected-resource metadata ({prm}) says it is protected, and it never challenged: clients never start OAuth."
                    ))
                    .ev([ok, prm]),
            );
        }
        if self.oauth_dance && !self.vis.authorize_seen {
            self.vis.not_checked.extend([
                "redirect-uri-mismatch",
                "pkce-mismatch",
                "resource-param-wrong",
            ]);
            let note = "The browser's /authorize was not captured: redirect-uri-mismatch, the PKCE challenge comparison and the authorize half of resource-param-wrong were not checked.".to_owned();
            if !self.vis.notes.contains(&note) {
                self.vis.notes.push(note);
            }
        }
    }
}

/// Why an endpoint advertised in metadata fetched from `from` would not be reachable for the
/// client, if it would not.
fn unreachable_reason(from: &Url, target: &Url) -> Option<String> {
    if util::host_is_internal(&target.host) && !util::host_is_internal(&from.host) {
        return Some(format!("internal host {}", target.host));
    }
    if from.scheme == "https" && target.scheme == "http" && !util::host_is_loopback(&target.host) {
        return Some("plain http".to_owned());
    }
    if from.host == target.host && from.effective_port() != target.effective_port() {
        return Some(format!(
            "port {} while the metadata was fetched on port {}",
            target.effective_port().unwrap_or(0),
            from.effective_port().unwrap_or(0)
        ));
    }
    None
}

/// The client id of an `Authorization: Basic` header, when it is not redacted.
fn basic_client_id(flow: &mcptap_flow::Flow) -> Option<String> {
    use base64::Engine as _;
    let v = flow.request.headers.get("authorization")?.trim();
    let (scheme, cred) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || redact::parse_redacted(cred.trim()).is_some() {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, _) = s.split_once(':')?;
    Some(util::percent_decode(id))
}
