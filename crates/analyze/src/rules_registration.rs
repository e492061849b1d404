//! Registration-phase rules added with the 2025-11-25 registration order (pre-registered →
//! Client ID Metadata Document → dynamic registration): `client-registration-stale` (30),
//! `registration-mechanism-mismatch` (31), `cimd-invalid` (32) and `cimd-not-used` (43).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{us, Analyzer, Decision, New, Pending, Reg};
use crate::model::{Culprit, Severity};
use crate::util::{self, jstr, jstrs, Url};
use mcptap_flow::FlowId;
use serde_json::Value;

/// A Client ID Metadata Document seen on the wire (fetched through mcptap).
#[derive(Debug)]
pub(crate) struct Cimd {
    pub flow: FlowId,
    pub url: String,
    pub redirect_uris: Vec<String>,
}

/// True for a client id that is a Client ID Metadata Document URL: https with a path.
pub(crate) fn is_cimd_client_id(id: &str) -> bool {
    Url::parse(id).is_some_and(|u| u.scheme == "https" && u.path.len() > 1)
}

impl Analyzer {
    /// The authorization-server document whose registration endpoint (or origin) is `url`'s.
    fn as_doc_for_registration(&self, url: &Url) -> Option<usize> {
        let ep = url.endpoint();
        self.as_docs
            .iter()
            .rposition(|d| d.endpoint("registration_endpoint").as_deref() == Some(ep.as_str()))
            .or_else(|| {
                self.as_docs.iter().rposition(|d| {
                    d.issuer
                        .as_deref()
                        .and_then(Url::parse)
                        .is_some_and(|i| i.origin() == url.origin())
                })
            })
    }

    /// Called for every registration POST, before `registration-failed` is considered.
    /// Returns true when mode 31 explains a failed registration (no `registration-failed`
    /// then: root cause over consequence).
    pub(crate) fn check_registration_mechanism(&mut self, c: &Ctx<'_>) -> bool {
        let Some(url) = c.url.as_ref() else {
            return false;
        };
        let Some(d) = self.as_doc_for_registration(url) else {
            return false;
        };
        let doc = &self.as_docs[d];
        let cimd = doc.doc.get("client_id_metadata_document_supported") == Some(&Value::Bool(true));
        let advertised = doc.endpoint("registration_endpoint");
        let (df, key) = (doc.flow, doc.url.endpoint());
        if !cimd {
            return false;
        }
        let gone = matches!(c.status, Some(404 | 410));
        if advertised.is_none() || gone {
            self.emit(
                New::finding(Id::RegistrationMechanismMismatch, key, Severity::High, Culprit::Client)
                    .sub(if advertised.is_none() { "dcr-not-offered" } else { "dcr-gone" })
                    .say(format!(
                        "The authorization-server metadata ({df}) offers Client ID Metadata Documents{}, yet the client tried dynamic registration ({}{}).",
                        if advertised.is_none() { " and no registration endpoint" } else { "" },
                        c.id,
                        c.status.map(|s| format!(" → {s}")).unwrap_or_default()
                    ))
                    .ev([df, c.id])
                    .detail("2025-11-25 order: pre-registered client → Client ID Metadata Document (an https client_id URL) → dynamic registration"),
            );
            return true;
        }
        if c.ok() {
            // 43: DCR although CIMD is offered; a SHOULD only, so informational.
            self.emit(
                New::finding(Id::CimdNotUsed, key, Severity::Info, Culprit::Client)
                    .say(format!(
                        "The authorization server ({df}) offers Client ID Metadata Documents, and the client registered dynamically instead ({}); the 2025-11-25 order puts CIMD first.",
                        c.id
                    ))
                    .ev([df, c.id]),
            );
        }
        false
    }

    /// A JSON document that is a Client ID Metadata Document (`client_id` and
    /// `redirect_uris`), fetched through mcptap: its `client_id` must be its own URL.
    pub(crate) fn on_possible_cimd(&mut self, c: &Ctx<'_>) {
        if !c.flow.request.method.eq_ignore_ascii_case("GET") {
            return;
        }
        let Some(url) = c.url.as_ref() else { return };
        if url.scheme != "https" {
            return;
        }
        let looks = c
            .flow
            .response
            .as_ref()
            .and_then(|r| r.body.as_str())
            .is_some_and(|b| b.len() < 64 * 1024 && b.contains("\"redirect_uris\""));
        if !looks {
            return;
        }
        let Some(doc) = util::response_json(c.flow) else {
            return;
        };
        let (Some(id), Some(_)) = (jstr(&doc, "client_id"), doc.get("redirect_uris")) else {
            return;
        };
        let fetched = format!("{}{}", url.origin(), url.path);
        let id = id.to_owned();
        if self.cimds.len() < 64 {
            self.cimds.push(Cimd {
                flow: c.id,
                url: fetched.clone(),
                redirect_uris: jstrs(&doc, "redirect_uris"),
            });
        }
        if id != fetched && !c.flow.request.url.starts_with(&id) {
            self.emit(
                New::finding(Id::CimdInvalid, fetched.clone(), Severity::High, Culprit::Client)
                    .sub("client-id-differs")
                    .say(format!(
                        "The Client ID Metadata Document at {fetched} ({}) says client_id {id:?}; it must be exactly the document's URL.",
                        c.id
                    ))
                    .ev([c.id]),
            );
        }
    }

    /// At /authorize with an https client_id: its captured document must list the
    /// redirect_uri.
    pub(crate) fn check_cimd_authorize(&mut self, c: &Ctx<'_>, client_id: &str, redirect: &str) {
        if !is_cimd_client_id(client_id) {
            return;
        }
        let Some(d) = self.cimds.iter().rev().find(|d| d.url == client_id) else {
            return;
        };
        if d.redirect_uris.iter().any(|r| r == redirect) {
            return;
        }
        let (df, listed) = (d.flow, d.redirect_uris.join(", "));
        self.emit(
            New::finding(Id::CimdInvalid, client_id.to_owned(), Severity::High, Culprit::Client)
                .sub("redirect-not-listed")
                .say(format!(
                    "The authorization request {} uses redirect_uri {redirect:?}, which the client's metadata document ({df}) does not list ({listed}).",
                    c.id
                ))
                .ev([df, c.id])
                .detail("redirect URIs match exactly; a portless http://localhost/callback covers an ephemeral port only where the AS applies the loopback port rule (RFC 8252 §7.3)"),
        );
    }

    /// 30: `invalid_client` for a client id this capture never saw registered. Waits for a
    /// new registration (the cue to re-register), shown as suspected meanwhile.
    pub(crate) fn check_stale_registration(
        &mut self,
        c: &Ctx<'_>,
        client_id: Option<&str>,
        refused: bool,
    ) {
        let Some(id) = client_id.filter(|_| refused) else {
            return;
        };
        if is_cimd_client_id(id) || self.regs.iter().any(|r| r.client_id.as_deref() == Some(id)) {
            return;
        }
        if self
            .pending
            .iter()
            .any(|w| matches!(&w.p, Pending::StaleRegistration { client_id: x, .. } if x == id))
        {
            return;
        }
        let deadline = c.done + us(self.opts.exchange_timeout);
        self.wait(Pending::StaleRegistration {
            flow: c.id,
            client_id: id.to_owned(),
            status: c.status.unwrap_or(0),
            done: c.done,
            deadline,
        });
    }

    pub(crate) fn suspicion_registration(&self, p: &Pending) -> Option<New> {
        let Pending::StaleRegistration {
            flow, client_id, ..
        } = p
        else {
            return None;
        };
        Some(
            New::finding(Id::ClientRegistrationStale, client_id.clone(), Severity::High, Culprit::Client)
                .say(format!(
                    "The authorization server does not know client_id {client_id:?} ({flow}: invalid_client), which was not registered in this capture (a cached registration), and the client has not registered again."
                ))
                .ev([*flow])
                .suspect("a new registration clears it; retries with the same client_id confirm it"),
        )
    }

    pub(crate) fn healthy_registration(&self, p: &Pending) -> Option<String> {
        let Pending::StaleRegistration { done, .. } = p else {
            return None;
        };
        self.regs
            .iter()
            .any(|r| r.done > *done)
            .then(|| "the client registered again".to_owned())
    }

    pub(crate) fn resolve_registration(&mut self, p: Pending, due: bool) -> Decision {
        if let Some(why) = self.healthy_registration(&p) {
            return Decision::Healthy(why);
        }
        let Pending::StaleRegistration {
            flow,
            client_id,
            status,
            done,
            ..
        } = p
        else {
            return Decision::Wait(p);
        };
        let when = if due {
            format!("within {}", util::secs(us(self.opts.exchange_timeout)))
        } else {
            format!(
                "before the capture ended {} later",
                util::secs(self.now() - done)
            )
        };
        let mut n = New::finding(Id::ClientRegistrationStale, client_id.clone(), Severity::High, Culprit::Client)
            .say(format!(
                "The authorization server refused client_id {client_id:?} ({flow}: invalid_client); it was not registered in this capture (a cached registration the server forgot) and the client did not register again {when}."
            ))
            .ev([flow]);
        if status == 400 {
            n = n.detail("the server answered 400; 401 invalid_client is the cue clients re-register on (server side: answer 401)");
        }
        self.emit(n);
        Decision::Done
    }
}

impl Analyzer {
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
        let explained = self.check_registration_mechanism(c);
        self.check_scope_rejected(
            c,
            jstr(&req, "scope"),
            resp.as_ref().and_then(|v| jstr(v, "error")),
        );
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
            // Root cause over consequence: a registration the metadata did not offer (31).
            if !explained {
                self.emit(n);
            }
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
}
