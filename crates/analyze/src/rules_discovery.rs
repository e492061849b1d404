//! Discovery: protected-resource metadata (RFC 9728), authorization-server metadata (RFC 8414 /
//! OpenID), JWKS, and the endpoints they advertise — failure-modes.md 6–11, 25–27, and the
//! waits they schedule (metadata still to be found, endpoints still to be reached).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{us, Analyzer, AsDoc, Attempt, Decision, New, Pending, Prm};
use crate::model::{Culprit, Role, Severity};
use crate::util::{self, jstr, jstrs, Url};
use mcptap_flow::oauth::WellKnown;
use mcptap_flow::{ErrorKind, FlowId, Micros};
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
    let (oauth, oidc) = (
        WellKnown::AuthorizationServer.path(),
        WellKnown::OpenidConfiguration.path(),
    );
    if p.is_empty() {
        vec![format!("{o}{oauth}"), format!("{o}{oidc}")]
    } else {
        vec![
            format!("{o}{oauth}{p}"),
            format!("{o}{oidc}{p}"),
            format!("{o}{p}{oidc}"),
        ]
    }
}

/// The resource a PRM URL was derived from (RFC 9728 §3.1), when it is a well-known URL:
/// `Some(None)` for the root document, `Some(Some(url))` for a path-inserted one.
fn prm_implied(url: &Url) -> Option<Option<Url>> {
    let rest = url.path.strip_prefix(WellKnown::ProtectedResource.path())?;
    if util::trim_slash(rest).is_empty() {
        return Some(None);
    }
    if !rest.starts_with('/') {
        return None;
    }
    Some(Url::parse(&format!("{}{}", url.origin(), rest)))
}

impl Analyzer {
    pub(crate) fn on_jwks(&mut self, c: &Ctx<'_>) {
        self.check_jwks(c);
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

    pub(crate) fn prm_pending(&mut self, origin: String, at: Micros) {
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
    pub(crate) fn prm_subject_origin(&self, url: &Url) -> String {
        let key = url.endpoint();
        self.endpoints
            .iter()
            .find(|e| e.advertised_prm.contains(&key))
            .map(|e| e.url.origin())
            .unwrap_or_else(|| url.origin())
    }

    pub(crate) fn on_prm(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        self.check_prm_order(c, &url);
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
                error: c.flow.error.as_ref().map(|e| e.kind),
            });
            self.prm_pending(subject, c.done);
            self.check_prm_path_scoped(&url.origin());
            return;
        };
        self.prm_attempts.push(Attempt {
            flow: c.id,
            url: url.clone(),
            ok: true,
            error: None,
        });
        self.check_metadata_urls(c, &doc, true);
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
            scopes: jstrs(&doc, "scopes_supported"),
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
    pub(crate) fn check_prm_path_scoped(&mut self, origin: &str) {
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

    pub(crate) fn metadata_not_json(&mut self, c: &Ctx<'_>, url: &Url) {
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
        self.check_as_order(c, &url);
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
                error: c.flow.error.as_ref().map(|e| e.kind),
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
            error: None,
        });
        self.check_metadata_urls(c, &doc, false);
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

    /// True when the server at `origin` asked for a token: it challenged, or the client went
    /// on to OAuth endpoints on its origin (the 2025-03-26 fallback). Only such a server owes
    /// protected-resource metadata.
    pub(crate) fn origin_protected(&self, origin: &str) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.url.origin() == origin && e.challenged.is_some())
            || self.oauth_origins.contains(origin)
    }

    /// The suspicion a waiting discovery decision shows once it is likely (same id and key as the
    /// confirmed finding it may become).
    pub(crate) fn suspicion_discovery(&self, p: &Pending) -> Option<New> {
        match p {
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

    /// Whether what a waiting discovery decision waits for has happened, and why that settles it.
    pub(crate) fn healthy_discovery(&self, p: &Pending) -> Option<String> {
        match p {
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

    /// Decides a waiting discovery decision. `due`: its time has come (or the client moved on);
    /// otherwise the session is over and it is decided on the evidence at hand.
    pub(crate) fn resolve_discovery(&mut self, p: Pending, due: bool) -> Decision {
        let healthy = self.healthy_discovery(&p);
        if !matches!(p, Pending::Prm { .. }) {
            if let Some(why) = healthy {
                return Decision::Healthy(why);
            }
        }
        let now = self.now();
        match p {
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
                    a.error.is_some_and(|k| {
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
                    New::finding(Id::AsMetadataIncomplete, format!("{key} registration"), Severity::Medium, Culprit::Unknown)
                        .sub("no-registration")
                        .say(format!(
                            "The authorization-server metadata of {} ({df}) offers neither registration_endpoint nor client_id_metadata_document_supported, and the client stopped without using a pre-registered client id.",
                            issuer.unwrap_or(key.clone())
                        ))
                        .ev([df])
                        .detail("culprit unknown: a server that expects pre-registered clients may offer neither; whether this client was given a client_id for it would tell (then the client is at fault, else the server)"),
                );
                Decision::Done
            }
            other => Decision::Wait(other),
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

/// The root protected-resource metadata path (RFC 9728 §3).
const PRM_WELL_KNOWN: &str = WellKnown::ProtectedResource.path();

/// `discovery-order-wrong` (failure-modes.md 42).
impl Analyzer {
    /// 42, protected-resource side: the root metadata URL probed before the path-inserted one,
    /// for an MCP endpoint with a path, when no challenge pointed at the root.
    pub(crate) fn check_prm_order(&mut self, c: &Ctx<'_>, url: &Url) {
        if url.path != PRM_WELL_KNOWN {
            return;
        }
        let origin = url.origin();
        let root = format!("{origin}{PRM_WELL_KNOWN}");
        let Some(e) = self.endpoints.iter().find(|e| {
            e.url.origin() == origin && e.url.path.len() > 1 && !e.advertised_prm.contains(&root)
        }) else {
            return;
        };
        let path_form = format!("{origin}{PRM_WELL_KNOWN}{}", e.url.path);
        let ep = e.key.clone();
        let advertised = e.advertised_prm.clone();
        let earlier = self.prm_attempts.iter().any(|a| {
            let u = a.url.endpoint();
            u == path_form || advertised.contains(&u)
        });
        if earlier {
            return;
        }
        self.emit(
            New::finding(Id::DiscoveryOrderWrong, format!("{origin} prm"), Severity::Low, Culprit::Client)
                .sub("prm-root-first")
                .say(format!(
                    "The client fetched the root protected-resource metadata ({}) before the path-inserted {path_form} for {ep}; RFC 9728 §3.1 and 2025-11-25 put the header URL, then the path form, first.",
                    c.id
                ))
                .ev([c.id]),
        );
    }

    /// 42, authorization-server side: the root metadata URL probed for an issuer with a path.
    pub(crate) fn check_as_order(&mut self, c: &Ctx<'_>, url: &Url) {
        let root = WellKnown::of_path(&url.path)
            .is_some_and(|w| w.is_server_metadata() && url.path == w.path());
        if !root {
            return;
        }
        let origin = url.origin();
        let issuer = self
            .prms
            .iter()
            .flat_map(|p| p.auth_servers.iter())
            .find(|a| {
                Url::parse(a)
                    .is_some_and(|u| u.origin() == origin && u.path.trim_end_matches('/').len() > 1)
            })
            .cloned();
        let Some(issuer) = issuer else { return };
        self.emit(
            New::finding(Id::DiscoveryOrderWrong, format!("{issuer} as"), Severity::Low, Culprit::Client)
                .sub("as-root-for-path-issuer")
                .say(format!(
                    "The client fetched the root authorization-server metadata ({}) for the issuer {issuer}, which has a path; 2025-11-25 names only the path-aware URLs (RFC 8414 path insertion, then OpenID), with no root fallback.",
                    c.id
                ))
                .ev([c.id]),
        );
    }
}
