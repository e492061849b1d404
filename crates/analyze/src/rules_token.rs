//! The token endpoint: code exchanges, refreshes, other grants and revocations — failure-modes.md
//! 15 (token side), 17, 20, 24, the token story each token starts, recovery amendments of
//! `token-not-sent`, and the wait for a token's first use (`token-unused`).

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{us, Analyzer, Decision, New, Pending, Story, Token};
use crate::model::{Culprit, Severity};
use crate::rules_discovery::same_issuer;
use crate::util::{self, jstr, jstrs, Url};
use mcptap_flow::{redact, FlowId};
use serde_json::Value;

/// The RFC 8693 token-exchange grant type.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// `token_type` of a token response: Bearer, or (RFC 8693 §2.2.1) `N_A` with an
/// `issued_token_type` in a token-exchange response.
fn token_type_ok(grant: &str, t: &str, v: &Value) -> bool {
    t.eq_ignore_ascii_case("bearer")
        || (grant == TOKEN_EXCHANGE
            && t.eq_ignore_ascii_case("n_a")
            && jstr(v, "issued_token_type").is_some())
}

impl Analyzer {
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

    pub(crate) fn on_token(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        let key = url.endpoint();
        self.vis.token_seen = true;
        let form = util::request_form(c.flow).unwrap_or_default();
        let f = |k: &str| util::form_get(&form, k).map(str::to_owned);
        let grant = f("grant_type").unwrap_or_default();
        // Extension grants (client credentials, jwt-bearer with an ID-JAG, token exchange) have
        // no browser step: they are not judged by PKCE, redirect URIs, browser visibility or
        // the authorization-code resource rules (failure-modes.md).
        let code_flow = matches!(grant.as_str(), "authorization_code" | "refresh_token");
        self.oauth_dance |= code_flow;
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
                        // RFC 8693 §2.2.1: a token-exchange response may say N_A.
                        Some(t) if !token_type_ok(&grant, t, v) => {
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
        // A well-formed invalid_client is no invalid token response: it points at the auth
        // method (24, `explained`) or a registration the server forgot (30).
        if !explained {
            let refused_client =
                error.as_deref() == Some("invalid_client") && matches!(status, 400 | 401 | 422);
            self.check_stale_registration(c, client_id.as_deref(), refused_client);
        }
        self.check_scope_rejected(c, f("scope").as_deref(), error.as_deref());
        self.check_cross_issuer(c, &issuer, rt_fp.as_deref(), code_fp.as_deref());
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
        if code_flow {
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
        }
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
    pub(crate) fn issue_token(
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
        let expires_at = mcptap_flow::oauth::expires_at(expires_in, jwt.as_ref(), c.done);
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
    pub(crate) fn amend_recovery(&mut self, c: &Ctx<'_>, new: usize, grant: &str) {
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

    pub(crate) fn check_refresh(
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

    pub(crate) fn check_pkce_token(
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
    pub(crate) fn check_auth_method(
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

    /// The suspicion a waiting token decision shows once it is likely (same id and key as the
    /// confirmed finding it may become).
    pub(crate) fn suspicion_token(&self, p: &Pending) -> Option<New> {
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
            _ => None,
        }
    }

    /// Whether what a waiting token decision waits for has happened, and why that settles it.
    pub(crate) fn healthy_token(&self, p: &Pending) -> Option<String> {
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
            _ => None,
        }
    }

    /// Decides a waiting token decision. `due`: its time has come (or the client moved on);
    /// otherwise the session is over and it is decided on the evidence at hand.
    pub(crate) fn resolve_token(&mut self, p: Pending, due: bool) -> Decision {
        if let Some(why) = self.healthy_token(&p) {
            return Decision::Healthy(why);
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
            other => Decision::Wait(other),
        }
    }
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
    Some(mcptap_flow::oauth::form_decode(id.as_bytes()))
}
