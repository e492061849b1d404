//! Issuer rules: `issuer-mismatch` (34, RFC 9207's `iss` in the authorization response) and
//! `credential-cross-issuer` (37, 2026-07-28 "Authorization Server Binding": credentials from
//! one authorization server sent to another).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{Analyzer, New};
use crate::model::{Culprit, Severity};
use crate::rules_discovery::same_issuer;

impl Analyzer {
    /// 34: an `iss` in the authorization response (the 302 of /authorize, or the callback)
    /// that is not the metadata's `issuer`, compared as plain strings (RFC 9207 §2.4).
    pub(crate) fn check_response_iss(
        &mut self,
        c: &Ctx<'_>,
        iss: &str,
        authorize_ep: Option<&str>,
    ) {
        let doc = match authorize_ep {
            Some(ep) => self
                .as_docs
                .iter()
                .rev()
                .find(|d| d.endpoint("authorization_endpoint").as_deref() == Some(ep)),
            None => self.as_docs.last(),
        };
        let Some(d) = doc else { return };
        let Some(issuer) = d.issuer.clone() else {
            return;
        };
        if iss == issuer {
            return;
        }
        let df = d.flow;
        self.emit(
            New::finding(Id::IssuerMismatch, issuer.clone(), Severity::High, Culprit::Server)
                .say(format!(
                    "The authorization response in {} carries iss {iss:?}, but the authorization-server metadata ({df}) says issuer {issuer:?}; clients that validate iss (RFC 9207, required by 2026-07-28) abort.",
                    c.id
                ))
                .ev([df, c.id])
                .detail("typically an authorization server that delegates /authorize to another identity provider and passes its iss through"),
        );
    }

    /// 37: a refresh token or authorization code from one authorization server sent to another
    /// one's token endpoint.
    pub(crate) fn check_cross_issuer(
        &mut self,
        c: &Ctx<'_>,
        issuer: &str,
        rt_fp: Option<&str>,
        code_fp: Option<&str>,
    ) {
        let from_rt = rt_fp
            .and_then(|rt| self.refresh.get(rt))
            .and_then(|st| st.story)
            .map(|s| {
                (
                    self.stories[s].issuer.clone(),
                    "refresh token",
                    self.stories[s].tokens.first().map(|&t| self.tokens[t].flow),
                )
            });
        let from_code = code_fp.and_then(|cf| {
            let a = self
                .authzs
                .iter()
                .rev()
                .find(|a| a.code_fp.as_deref() == Some(cf))?;
            Some((a.issuer.clone()?, "authorization code", Some(a.flow)))
        });
        for (from, what, origin_flow) in [from_rt, from_code].into_iter().flatten() {
            if same_issuer(&from, issuer) {
                continue;
            }
            self.emit(
                New::finding(Id::CredentialCrossIssuer, format!("{from} -> {issuer}"), Severity::Critical, Culprit::Client)
                    .say(format!(
                        "The token request {} to {issuer} carries a {what} that {from} issued{}: credentials must be kept per authorization server (2026-07-28 \"Authorization Server Binding\").",
                        c.id,
                        origin_flow.map(|f| format!(" ({f})")).unwrap_or_default()
                    ))
                    .ev(origin_flow.into_iter().chain([c.id]))
                    .detail("typically after the protected-resource metadata's authorization_servers changed"),
            );
        }
    }
}
