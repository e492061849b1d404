//! Scope rules: `scope-rejected` (33) and `scope-selection-wrong` (41), from the 2025-11-25
//! "Scope Selection Strategy": the challenge's `scope`, else the protected-resource
//! metadata's `scopes_supported`, else no `scope` at all.

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{Analyzer, New};
use crate::model::{Culprit, Severity};
use crate::util::jstrs;
use mcptap_flow::{FlowId, Micros};

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

impl Analyzer {
    /// The scope of the last Bearer challenge (401 or 403) that named one, before `at`.
    pub(crate) fn challenge_scope(&self, at: Micros) -> Option<(Vec<String>, FlowId)> {
        self.challenge_scopes
            .iter()
            .rev()
            .find(|(_, _, done)| *done <= at)
            .map(|(s, f, _)| (s.clone(), *f))
    }

    /// Every `scopes_supported` the protected-resource metadata named.
    fn prm_scopes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.prms {
            for s in &p.scopes {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }

    /// 33: an `invalid_scope` answer to a registration, authorization or token request whose
    /// requested scope holds values no metadata or challenge defines.
    pub(crate) fn check_scope_rejected(
        &mut self,
        c: &Ctx<'_>,
        requested: Option<&str>,
        error: Option<&str>,
    ) {
        if error != Some("invalid_scope") {
            return;
        }
        let asked = requested.map(words).unwrap_or_default();
        let mut known: Vec<String> = self.prm_scopes();
        if let Some((ch, _)) = self.challenge_scope(c.started) {
            known.extend(ch);
        }
        for d in &self.as_docs {
            known.extend(jstrs(&d.doc, "scopes_supported"));
        }
        let unknown: Vec<&String> = asked.iter().filter(|s| !known.contains(s)).collect();
        let key = format!("{} invalid_scope", c.id);
        if known.is_empty() {
            self.emit(
                New::finding(Id::ScopeRejected, key, Severity::High, Culprit::Unknown)
                    .say(format!(
                        "The server refused the requested scope {:?} with invalid_scope ({}).",
                        asked.join(" "),
                        c.id
                    ))
                    .ev([c.id])
                    .detail("culprit unknown: neither a challenge nor any metadata in this capture names the scopes the server accepts; its scopes_supported would tell"),
            );
        } else if !unknown.is_empty() {
            self.emit(
                New::finding(Id::ScopeRejected, key, Severity::High, Culprit::Client)
                    .say(format!(
                        "The server refused the scope with invalid_scope ({}); the client asked for {:?}, which no challenge, protected-resource or authorization-server metadata offers.",
                        c.id,
                        unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
                    ))
                    .ev([c.id])
                    .detail("request offline_access only when the authorization server lists it (2026-07-28)"),
            );
        }
    }

    /// 41: the scope of an authorization request against the Scope Selection Strategy.
    pub(crate) fn check_scope_selection(&mut self, c: &Ctx<'_>, requested: Option<&str>) {
        let asked = requested.map(words).unwrap_or_default();
        let key = c.id.to_string();
        if let Some((ch, cf)) = self.challenge_scope(c.started) {
            let lacking: Vec<&String> = ch.iter().filter(|s| !asked.contains(s)).collect();
            if !lacking.is_empty() {
                self.emit(
                    New::finding(Id::ScopeSelectionWrong, key, Severity::Low, Culprit::Client)
                        .sub("challenge-scope-ignored")
                        .say(format!(
                            "The authorization request {} asks for {:?} but the challenge in {cf} asked for {:?}; the client must request the challenged scope.",
                            c.id,
                            asked.join(" "),
                            ch.join(" ")
                        ))
                        .ev([cf, c.id]),
                );
            }
            return;
        }
        // "use all scopes defined in scopes_supported" of the metadata the client read last.
        let last = self.prms.iter().rev().find(|p| !p.scopes.is_empty());
        if let Some(p) = last {
            let (pf, prm) = (p.flow, p.scopes.clone());
            let lacking: Vec<&String> = prm.iter().filter(|s| !asked.contains(s)).collect();
            if !lacking.is_empty() {
                self.emit(
                    New::finding(Id::ScopeSelectionWrong, key, Severity::Low, Culprit::Client)
                        .sub("scopes-supported-ignored")
                        .say(format!(
                            "The authorization request {} asks for {:?}, although no challenge named a scope and the protected-resource metadata ({pf}) offers scopes_supported {:?}: the client should request all of them.",
                            c.id,
                            asked.join(" "),
                            prm.join(" ")
                        ))
                        .ev([pf, c.id]),
                );
            }
            return;
        }
        if !asked.is_empty() && !self.prms.is_empty() {
            self.emit(
                New::finding(Id::ScopeSelectionWrong, key, Severity::Low, Culprit::Client)
                    .sub("scope-not-defined")
                    .say(format!(
                        "The authorization request {} asks for scope {:?} although neither a challenge nor the protected-resource metadata defines one; the client should omit it.",
                        c.id,
                        asked.join(" ")
                    ))
                    .ev([c.id]),
            );
        }
    }
}
