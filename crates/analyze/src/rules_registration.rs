//! Registration-phase rules added with the 2025-11-25 registration order (pre-registered →
//! Client ID Metadata Document → dynamic registration): `client-registration-stale` (30),
//! `registration-mechanism-mismatch` (31), `cimd-invalid` (32) and `cimd-not-used` (43).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{us, Analyzer, Decision, New, Pending};
use crate::model::{Culprit, Severity};
use crate::util::{self, jstr, jstrs, Url};
use mcptap_flow::{FlowId, Micros};
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

    /// When the suspicion of a registration decision is due.
    pub(crate) fn suspect_registration_at(p: &Pending) -> Option<Micros> {
        match p {
            Pending::StaleRegistration { done, .. } => Some(done + 3_000_000),
            _ => None,
        }
    }
}
