//! Rules that look at the whole session when it ends.

use crate::catalog::FindingId as Id;
use crate::engine::{Analyzer, New};
use crate::model::{Culprit, Severity};
use crate::util::{self, Url};

impl Analyzer {
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
