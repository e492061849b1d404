//! Rules about requests to MCP endpoints: where tokens went (token-not-sent, fresh-token-
//! rejected, stale-token-sent), challenges, sessions, transport headers, CORS, redirects,
//! scope step-up, tool schemas, and the inject-mode verdicts.

use crate::catalog::FindingId as Id;
use crate::classify::Ctx;
use crate::engine::{us, Analyzer, Decision, New, Pending, Session};
use crate::model::{Culprit, RpcDirection, RpcKind, Severity};
use crate::util::{self, Challenge, Url};
use mcptap_flow::oauth::WellKnown;
use mcptap_flow::Micros;
use mcptap_flow::{redact, FlowId};
use serde_json::Value;

/// MCP sessions remembered at least (the most recently used); up to twice as many are kept
/// between clean-ups.
pub(crate) const KEPT_SESSIONS: usize = 4096;

const REQUEST_METHODS: &[&str] = &["POST", "GET", "DELETE", "PUT", "PATCH"];

impl Analyzer {
    pub(crate) fn on_mcp(&mut self, c: &Ctx<'_>) {
        let Some(url) = c.url.clone() else { return };
        let ei = self.endpoint_idx(&url);
        let ep = self.endpoints[ei].key.clone();
        self.vis.mcp_seen = true;
        for v in [&c.protocol_version, &c.negotiated].into_iter().flatten() {
            if !self.env.protocol_versions.contains(v) {
                self.env.protocol_versions.push(v.clone());
            }
        }
        let method = c.flow.request.method.to_ascii_uppercase();
        let challenges = util::challenges(c.flow);
        if matches!(c.status, Some(401 | 403)) {
            if let Some(sc) = challenges
                .iter()
                .find(|ch| ch.is_bearer())
                .and_then(|ch| ch.param("scope"))
            {
                let sc: Vec<String> = sc.split_whitespace().map(str::to_owned).collect();
                if self.challenge_scopes.len() >= 16 {
                    self.challenge_scopes.remove(0);
                }
                self.challenge_scopes.push((sc, c.id, c.done));
            }
        }
        let injected = c.flow.injected.is_some();
        let bare =
            c.bearer.is_none() && (injected || !c.flow.request.headers.contains("authorization"));
        self.follow_redirects(c, &ep, &method);

        if c.status == Some(401) {
            self.last_401 = Some((ep.clone(), c.done));
            let e = &mut self.endpoints[ei];
            e.challenged.get_or_insert(c.id);
            if bare && !injected {
                e.last_bare_refused = Some(c.id);
            }
            self.check_challenge(c, ei, &challenges, bare && !injected);
            let lazy = self.endpoints[ei].lazy_ok.first().copied();
            if let (Some(ok), true) = (lazy, bare && !injected) {
                let what = c.client_methods().next().unwrap_or("request").to_owned();
                self.emit(
                    New::finding(Id::LazyChallenge, ep.clone(), Severity::Medium, Culprit::Server)
                        .sub("late-challenge")
                        .say(format!(
                            "{ep} served {ok} without a token but challenged the {what} in {} with 401: clients that already connected do not expect to authorize now.",
                            c.id
                        ))
                        .ev([ok, c.id]),
                );
            }
        }
        if bare
            && !injected
            && c.ok()
            && c.has_method(&["initialize", "server/discover", "tools/list"])
        {
            let e = &mut self.endpoints[ei];
            if e.lazy_ok.len() < 4 {
                e.lazy_ok.push(c.id);
            }
        }
        self.track_sessions(c, ei, &method);
        self.check_headers(c, ei, &method);
        self.check_tools(c, &ep);
        self.check_jsonrpc_answers(c, &ep);
        self.check_get_stream(c, &ep);
        self.check_notification_answer(c, &ep);
        self.check_redirect(c, &url, &method);
        self.check_scope(c, &challenges);
        self.check_cors_expose(c, &ep);
        self.check_transport(c, &ep, &challenges);
        if REQUEST_METHODS.contains(&method.as_str()) {
            self.mark_activity(c, &ep);
            if let Some(fp) = c.bearer.clone() {
                self.token_carried(c, ei, &fp, &challenges);
            } else if bare {
                self.token_missing(c, ei);
            }
        }
        if let Some(inj) = c.flow.injected.clone() {
            self.inject_verdict(c, ei, &inj, &challenges);
        }
    }

    /// `challenge-missing` and `prm-url-not-path-scoped` (a).
    fn check_challenge(
        &mut self,
        c: &Ctx<'_>,
        ei: usize,
        challenges: &[Challenge],
        discovery: bool,
    ) {
        let ep = self.endpoints[ei].key.clone();
        let base = |sub: &'static str, sev: Severity, text: String| {
            New::finding(
                Id::ChallengeMissing,
                format!("{ep} {sub}"),
                sev,
                Culprit::Server,
            )
            .sub(sub)
            .say(text)
            .ev([c.id])
        };
        if challenges.is_empty() {
            self.emit(base("no-header", Severity::High, format!(
                "{ep} answered 401 in {} without WWW-Authenticate: clients cannot find the protected-resource metadata and may build endpoints on the MCP origin.",
                c.id
            )));
            return;
        }
        let Some(bearer) = challenges.iter().find(|ch| ch.is_bearer()) else {
            let schemes: Vec<&str> = challenges.iter().map(|ch| ch.scheme.as_str()).collect();
            self.emit(base(
                "not-bearer",
                Severity::High,
                format!(
                    "{ep} answered 401 in {} with a {} challenge, not Bearer.",
                    c.id,
                    schemes.join(", ")
                ),
            ));
            return;
        };
        if !challenges[0].is_bearer() {
            self.emit(base("bearer-not-first", Severity::Medium, format!(
                "{ep} answered 401 in {} with the Bearer challenge after a {} one; the TypeScript SDK reads only the first scheme.",
                c.id, challenges[0].scheme
            )));
        }
        match bearer.param("resource_metadata") {
            Some(rm) => {
                let Some(rm_url) = self.endpoints[ei].url.join(rm) else {
                    return;
                };
                let key = rm_url.endpoint();
                self.known.prm_urls.insert(key.clone());
                let e = &mut self.endpoints[ei];
                if !e.advertised_prm.contains(&key) {
                    e.advertised_prm.push(key);
                }
                let mcp_path = util::trim_slash(&e.url.path).to_owned();
                if util::trim_slash(&rm_url.path) == WellKnown::ProtectedResource.path()
                    && !mcp_path.is_empty()
                {
                    self.emit(
                        New::finding(Id::PrmUrlNotPathScoped, ep.clone(), Severity::Medium, Culprit::Server)
                            .sub("root-url-advertised")
                            .say(format!(
                                "{ep} has the path {mcp_path} but its challenge in {} points at the root metadata {}; RFC 9728 §3.1 puts it at /.well-known/oauth-protected-resource{mcp_path}.",
                                c.id,
                                rm_url.endpoint()
                            ))
                            .ev([c.id]),
                    );
                }
            }
            None if discovery => {
                self.endpoints[ei].no_rm_401.push(c.id);
                let url = self.endpoints[ei].url.clone();
                let prm_known = self.prms.iter().any(|p| p.url.origin() == url.origin());
                self.emit(base(
                    "no-resource-metadata",
                    if prm_known { Severity::Low } else { Severity::High },
                    format!(
                        "{ep} answered 401 in {} with a Bearer challenge without resource_metadata (a MUST since 2025-06-18); clients must guess the metadata URL.",
                        c.id
                    ),
                ));
            }
            None => {}
        }
    }

    /// Keeps the [`KEPT_SESSIONS`] sessions used last: a client that opens a session per
    /// request must not grow the analyzer with its traffic. A forgotten session that comes
    /// back is treated as one first seen then.
    fn forget_idle_sessions(&mut self) {
        let mut seen: Vec<Micros> = self.sessions.values().map(|s| s.last_seen).collect();
        let cut = seen.len() - KEPT_SESSIONS;
        let (_, &mut keep_from, _) = seen.select_nth_unstable(cut);
        self.sessions.retain(|_, s| s.last_seen >= keep_from);
    }

    fn track_sessions(&mut self, c: &Ctx<'_>, ei: usize, method: &str) {
        if self.sessions.len() >= 2 * KEPT_SESSIONS {
            self.forget_idle_sessions();
        }
        let ep = self.endpoints[ei].key.clone();
        if let Some(v) = &c.negotiated {
            self.endpoints[ei].negotiated = Some((c.done, v.clone()));
        }
        if let (Some(ns), true) = (&c.new_session, c.ok()) {
            if c.session.as_ref() != Some(ns) {
                self.sessions.insert(
                    ns.clone(),
                    Session {
                        created: c.id,
                        created_at: c.done,
                        last_seen: c.done,
                        version: c.negotiated.clone(),
                        valid: true,
                        terminated: None,
                        deleted: false,
                        ua: c.ua.clone(),
                    },
                );
                self.endpoints[ei].last_session = Some(ns.clone());
            }
        }
        let Some(s) = c.session.clone() else { return };
        let status = c.status;
        let sess = self.sessions.entry(s.clone()).or_insert_with(|| Session {
            created: c.id,
            created_at: c.started,
            last_seen: c.done,
            version: None,
            valid: false,
            terminated: None,
            deleted: false,
            ua: c.ua.clone(),
        });
        sess.last_seen = sess.last_seen.max(c.done);
        if let Some((f404, t404)) = sess.terminated {
            if c.started >= t404 && method != "DELETE" && f404 != c.id {
                self.emit(
                    New::finding(Id::Session404Mishandled, s.clone(), Severity::High, Culprit::Client)
                        .sub("session-reused")
                        .say(format!(
                            "The server ended session {s} with 404 in {f404}, yet the client sent it again in {} instead of a new initialize without a session id.",
                            c.id
                        ))
                        .ev([f404, c.id]),
                );
                return;
            }
        }
        let mentions_session = self.rpc_error_mentions_session(c);
        let Some(sess) = self.sessions.get_mut(&s) else {
            return;
        };
        match status {
            Some(404) => {
                sess.terminated.get_or_insert((c.id, c.done));
            }
            Some(st) if (200..300).contains(&st) && !mentions_session => {
                sess.valid = true;
                if method == "DELETE" {
                    sess.deleted = true;
                }
            }
            Some(st)
                if sess.valid
                    && sess.terminated.is_none()
                    && !sess.deleted
                    && (st == 400 || (200..300).contains(&st))
                    && body_mentions(c, &["session"]) =>
            {
                let created = sess.created;
                self.emit(
                    New::finding(Id::Session404Mishandled, format!("{ep} server"), Severity::High, Culprit::Server)
                        .sub("wrong-status")
                        .say(format!(
                            "{ep} answered {st} about session {s} in {} where the spec requires 404 for an unknown or expired session; clients then never re-initialize.",
                            c.id
                        ))
                        .ev([created, c.id]),
                );
            }
            _ => {}
        }
    }

    fn rpc_error_mentions_session(&self, c: &Ctx<'_>) -> bool {
        c.rpc.iter().any(|r| {
            r.dir == RpcDirection::ServerToClient && r.kind == RpcKind::Error && r.id.is_none()
        }) && body_mentions(c, &["session"])
    }

    /// `transport-header-violation`.
    fn check_headers(&mut self, c: &Ctx<'_>, ei: usize, method: &str) {
        if !REQUEST_METHODS.contains(&method) || c.is_session_start() {
            return;
        }
        // A request with no session, no protocol version and no token, to an endpoint where
        // this client authenticated before, comes from a client that has not started its own
        // session yet (a new process probing before it initializes): the session and version
        // headers are not owed yet, and the missing token is token-not-sent's to judge.
        let fresh = c.session.is_none()
            && c.protocol_version.is_none()
            && !c.flow.request.headers.contains("authorization")
            && self.endpoints[ei]
                .authenticated_uas
                .iter()
                .any(|u| c.ua.as_ref() == Some(u) || c.ua.is_none());
        if fresh {
            return;
        }
        let ep = self.endpoints[ei].key.clone();
        let negotiated = match &c.session {
            Some(s) => self.sessions.get(s).and_then(|x| x.version.clone()),
            None => self.endpoints[ei]
                .negotiated
                .as_ref()
                .filter(|(at, _)| *at <= c.started)
                .map(|(_, v)| v.clone()),
        };
        // A client that breaks a rule does so on every request: a repeat only counts (the
        // text is formatted for a new finding).
        let emit = |this: &mut Analyzer,
                    sub: &'static str,
                    sev: Severity,
                    culprit: Culprit,
                    text: std::fmt::Arguments<'_>,
                    ev: Vec<FlowId>| {
            let key = format!("{ep} {sub}");
            if this.repeat(Id::TransportHeaderViolation, key.clone(), &ev) {
                return;
            }
            this.emit(
                New::finding(Id::TransportHeaderViolation, key, sev, culprit)
                    .sub(sub)
                    .say(text.to_string())
                    .ev(ev),
            );
        };
        // A 2026-07-28 request's version header mirrors its `_meta`: stateless-header-violation
        // (rules_transport.rs) decides it, not the negotiated session version.
        let stateless = crate::rules_transport::stateless_version(c).is_some();
        if let Some(v) = negotiated
            .as_deref()
            .filter(|v| *v >= "2025-06-18" && !stateless)
        {
            match c.protocol_version.as_deref() {
                None => emit(self, "protocol-version-missing", Severity::Medium, Culprit::Client, format_args!(
                    "Request {} ({}) lacks MCP-Protocol-Version although {v} was negotiated; servers assume 2025-03-26 or answer 400.",
                    c.id,
                    c.kind_label()
                ), vec![c.id]),
                Some(p) if p != v => emit(self, "protocol-version-mismatch", Severity::Medium, Culprit::Client, format_args!(
                    "Request {} sends MCP-Protocol-Version {p} but {v} was negotiated.",
                    c.id
                ), vec![c.id]),
                Some(_) => {
                    if c.status == Some(400) && body_mentions(c, &["protocol version", "protocol-version", "protocolversion"]) {
                        emit(self, "valid-version-refused", Severity::Medium, Culprit::Server, format_args!(
                            "{ep} refused the negotiated MCP-Protocol-Version {v} with 400 in {}.",
                            c.id
                        ), vec![c.id]);
                    }
                }
            }
        }
        if c.session.is_none() {
            let live = self.endpoints[ei]
                .last_session
                .as_ref()
                .and_then(|s| self.sessions.get(s))
                .filter(|s| {
                    s.created_at <= c.started
                        && !s.deleted
                        && s.terminated.is_none_or(|(_, t)| t > c.started)
                        && (s.ua.is_none() || c.ua.is_none() || s.ua == c.ua)
                });
            if let Some(s) = live {
                let created = s.created;
                emit(self, "session-id-missing", Severity::Medium, Culprit::Client, format_args!(
                    "The server assigned an Mcp-Session-Id in {created}, but request {} ({}) does not send it.",
                    c.id,
                    c.kind_label()
                ), vec![created, c.id]);
            }
        }
        let accept = c
            .flow
            .request
            .headers
            .get("accept")
            .unwrap_or("")
            .to_ascii_lowercase();
        let any = accept.contains("*/*");
        let json = any || accept.contains("application/json") || accept.contains("application/*");
        let sse = any || accept.contains("text/event-stream") || accept.contains("text/*");
        let lacking = match method {
            "POST" if !(json && sse) => true,
            "GET" if !sse => true,
            _ => false,
        };
        if lacking {
            let refused = matches!(c.status, Some(406));
            emit(
                self,
                "accept-incomplete",
                if refused {
                    Severity::Medium
                } else {
                    Severity::Low
                },
                Culprit::Client,
                format_args!(
                    "Request {} ({method}) sends Accept {:?}; the spec requires {}{}.",
                    c.id,
                    c.flow.request.headers.get("accept").unwrap_or("(none)"),
                    if method == "GET" {
                        "text/event-stream"
                    } else {
                        "both application/json and text/event-stream"
                    },
                    if refused {
                        " and the server answered 406"
                    } else {
                        " (this server tolerated it, strict ones answer 406)"
                    }
                ),
                vec![c.id],
            );
            if refused {
                let key = format!("{ep} accept-incomplete");
                self.set_severity(Id::TransportHeaderViolation, &key, Severity::Medium);
            }
        }
    }

    /// `tool-schema-invalid`.
    fn check_tools(&mut self, c: &Ctx<'_>, ep: &str) {
        let mut problems = Vec::new();
        for r in &c.rpc {
            if r.dir != RpcDirection::ServerToClient || r.kind != RpcKind::Response {
                continue;
            }
            if r.method.as_deref().is_some_and(|m| m != "tools/list") {
                continue;
            }
            let Some(tools) = r
                .result()
                .and_then(|x| x.get("tools"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for t in tools {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
                if let Some(p) = schema_problem(t.get("inputSchema")) {
                    problems.push(format!("{name}: inputSchema {p}"));
                }
                if let Some(out) = t.get("outputSchema") {
                    if let Some(p) = schema_problem(Some(out)) {
                        problems.push(format!("{name}: outputSchema {p}"));
                    }
                }
            }
        }
        if problems.is_empty() {
            return;
        }
        self.emit(
            New::finding(Id::ToolSchemaInvalid, ep, Severity::Medium, Culprit::Server)
                .say(format!(
                    "The tools/list result in {} has {} tool schema problem(s), e.g. {}; some clients drop the connection and report it as an auth failure.",
                    c.id,
                    problems.len(),
                    problems[0]
                ))
                .ev([c.id])
                .details(problems.into_iter().take(10)),
        );
    }

    /// `redirect-drops-auth`: the redirect itself.
    fn check_redirect(&mut self, c: &Ctx<'_>, url: &Url, method: &str) {
        if !matches!(c.status, Some(301 | 302 | 303 | 307 | 308)) {
            return;
        }
        let Some(loc) = util::response_header(c.flow, "location") else {
            return;
        };
        let Some(target) = url.join(loc) else { return };
        let ep = url.endpoint();
        self.known.mcp_endpoints.insert(target.endpoint());
        if target.origin() != url.origin() && self.redirected_to.len() < 64 {
            self.redirected_to
                .entry(target.endpoint())
                .or_insert_with(|| (ep.clone(), c.id));
        }
        let sub = if url.scheme == "https" && target.scheme == "http" {
            Some("https-to-http")
        } else if util::host_is_internal(&target.host) && !util::host_is_internal(&url.host) {
            Some("internal-host")
        } else if target.origin() != url.origin() {
            Some("cross-origin")
        } else {
            None
        };
        if let Some(sub) = sub {
            self.emit(
                New::finding(Id::RedirectDropsAuth, ep.clone(), Severity::High, Culprit::Server)
                    .sub(sub)
                    .say(format!(
                        "The MCP endpoint {ep} redirects ({} {}) to {}; clients drop Authorization on such redirects (and cannot reach internal hosts).",
                        c.id,
                        c.status.unwrap_or(0),
                        target.endpoint()
                    ))
                    .ev([c.id]),
            );
            return;
        }
        let deadline = c.done + 30_000_000;
        self.wait(Pending::Redirect {
            flow: c.id,
            target: target.endpoint(),
            had_auth: c.bearer.is_some(),
            was_post: method == "POST",
            done: c.done,
            deadline,
        });
    }

    /// `redirect-drops-auth`: the follow-up of a same-origin redirect.
    fn follow_redirects(&mut self, c: &Ctx<'_>, ep: &str, method: &str) {
        let mut found = None;
        self.pending.retain(|w| match &w.p {
            Pending::Redirect {
                flow,
                target,
                had_auth,
                was_post,
                done,
                ..
            } if found.is_none() && target == ep && c.started >= *done => {
                found = Some((*flow, *had_auth, *was_post));
                false
            }
            _ => true,
        });
        let Some((flow, had_auth, was_post)) = found else {
            return;
        };
        let dropped = had_auth && c.bearer.is_none();
        let changed = was_post && method == "GET";
        if dropped || changed {
            self.emit(
                New::finding(
                    Id::RedirectDropsAuth,
                    ep.to_owned(),
                    Severity::High,
                    Culprit::Server,
                )
                .sub(if dropped {
                    "auth-dropped"
                } else {
                    "method-changed"
                })
                .say(format!(
                    "The MCP endpoint redirected {flow}, and the follow-up {} {}.",
                    c.id,
                    if dropped {
                        "arrived without the Authorization header"
                    } else {
                        "became a GET without the JSON-RPC body"
                    }
                ))
                .ev([flow, c.id]),
            );
        }
    }

    /// `insufficient-scope-unhandled`: a 403 step-up challenge.
    fn check_scope(&mut self, c: &Ctx<'_>, challenges: &[Challenge]) {
        if c.status != Some(403) {
            return;
        }
        let Some(ch) = challenges
            .iter()
            .find(|ch| ch.is_bearer() && ch.param("error") == Some("insufficient_scope"))
        else {
            return;
        };
        let scope: Vec<String> = ch
            .param("scope")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let fp = c
            .bearer
            .clone()
            .or_else(|| c.flow.injected.as_ref().map(|i| i.fingerprint.clone()))
            .unwrap_or_default();
        let story = self.token_index.get(&fp).map(|&t| self.tokens[t].story);
        // Insufficient scope that re-authorizing cannot fix: the refused token already holds
        // every challenged scope, so the server refuses what it granted (failure-modes.md).
        let held: Option<Vec<String>> = self
            .token_index
            .get(&fp)
            .and_then(|&t| {
                let t = &self.tokens[t];
                t.scope.clone().or_else(|| {
                    t.jwt.as_ref().and_then(|j| {
                        j.claims
                            .get("scope")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                })
            })
            .map(|s| s.split_whitespace().map(str::to_owned).collect());
        if let Some(held) =
            held.filter(|h| !scope.is_empty() && scope.iter().all(|s| h.contains(s)))
        {
            let tf = self.token_index.get(&fp).map(|&t| self.tokens[t].flow);
            self.emit(
                New::finding(Id::InsufficientScopeUnhandled, format!("{fp} already-granted"), Severity::Medium, Culprit::Server)
                    .sub("already-granted")
                    .say(format!(
                        "The server refused {} with insufficient_scope for {:?}, which the token it refused already holds ({:?}): re-authorizing cannot fix it, and a client that gives up is right.",
                        c.id,
                        scope.join(" "),
                        held.join(" ")
                    ))
                    .ev(tf.into_iter().chain([c.id])),
            );
            // A client that keeps authorizing again for a scope the server will not honour
            // (each time a new token) has no retry limit.
            let key = format!("{} {}", c.endpoint().unwrap_or_default(), scope.join(" "));
            let refused = self.scope_refusals.entry(key.clone()).or_default();
            if !refused.iter().any(|(f, _)| *f == fp) && refused.len() < 16 {
                refused.push((fp.clone(), c.id));
            }
            if refused.len() >= 3 {
                let ids: Vec<FlowId> = refused.iter().map(|(_, id)| *id).collect();
                let n = ids.len();
                self.emit(
                    New::finding(Id::InsufficientScopeUnhandled, format!("{key} retry"), Severity::Medium, Culprit::Client)
                        .sub("retry-unlimited")
                        .say(format!(
                            "The client authorized again {n} times for {:?}, and the server refused each new token for the same scope ({}): it should stop after one retry.",
                            scope.join(" "),
                            ids.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
                        ))
                        .ev(ids),
                );
            }
            return;
        }
        let max = self.opts.max_evidence.max(1);
        let (count, ids) = self.scope_403.entry(fp.clone()).or_default();
        *count += 1;
        if ids.len() < max {
            ids.push(c.id);
        }
        // A client stuck in this loop repeats it for as long as it runs: only the first
        // refusals are kept (evidence holds no more).
        let (count, ids) = (*count, ids.clone());
        if count >= 3 {
            self.emit(
                New::finding(Id::InsufficientScopeUnhandled, story.map(|s| s.to_string()).unwrap_or_default(), Severity::Medium, Culprit::Client)
                    .sub("repeated")
                    .say(format!(
                        "The same token {fp} was refused with insufficient_scope {count} times ({}); the client retries without re-authorizing.",
                        ids.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
                    ))
                    .ev(ids),
            );
        } else if count == 1 {
            let deadline = c.done + us(self.opts.exchange_timeout);
            self.wait(Pending::StepUp {
                flow: c.id,
                started: c.started,
                story,
                scope,
                deadline,
            });
        }
    }

    /// `cors-blocked` on real responses to browser requests.
    fn check_cors_expose(&mut self, c: &Ctx<'_>, ep: &str) {
        if !c.flow.request.headers.contains("origin") || c.status.is_none() {
            return;
        }
        let Some(resp) = &c.flow.response else { return };
        let expose = resp
            .headers
            .get_all("access-control-expose-headers")
            .collect::<Vec<_>>()
            .join(",")
            .to_ascii_lowercase();
        let exposed = |h: &str| expose.split(',').any(|x| x.trim() == h || x.trim() == "*");
        let mut missing = Vec::new();
        if !resp.headers.contains("access-control-allow-origin") {
            missing.push("Access-Control-Allow-Origin".to_owned());
        }
        if resp.headers.contains("mcp-session-id") && !exposed("mcp-session-id") {
            missing.push("Mcp-Session-Id in Access-Control-Expose-Headers".to_owned());
        }
        if c.status == Some(401)
            && resp.headers.contains("www-authenticate")
            && !exposed("www-authenticate")
        {
            missing.push("WWW-Authenticate in Access-Control-Expose-Headers".to_owned());
        }
        if missing.is_empty() {
            return;
        }
        self.emit(
            New::finding(
                Id::CorsBlocked,
                format!("{ep} response"),
                Severity::Medium,
                Culprit::Server,
            )
            .sub("not-exposed")
            .say(format!(
                "The response to the browser request {} lacks {}; a browser client cannot read it.",
                c.id,
                missing.join(" and ")
            ))
            .ev([c.id]),
        );
    }

    pub(crate) fn on_preflight(&mut self, c: &Ctx<'_>) {
        let Some(url) = &c.url else { return };
        let ep = url.endpoint();
        let Some(status) = c.status else { return };
        let req = &c.flow.request.headers;
        let want_method = req
            .get("access-control-request-method")
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        let want_headers: Vec<String> = req
            .get("access-control-request-headers")
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let mut problems = Vec::new();
        if !(200..300).contains(&status) {
            problems.push(format!("the preflight was answered {status}"));
        } else if let Some(resp) = &c.flow.response {
            if !resp.headers.contains("access-control-allow-origin") {
                problems.push("no Access-Control-Allow-Origin".to_owned());
            }
            let allow_h = resp
                .headers
                .get_all("access-control-allow-headers")
                .collect::<Vec<_>>()
                .join(",")
                .to_ascii_lowercase();
            let allowed: Vec<&str> = allow_h.split(',').map(str::trim).collect();
            let lacking: Vec<&String> = want_headers
                .iter()
                .filter(|h| {
                    !(allowed.contains(&h.as_str())
                        || (allowed.contains(&"*") && h.as_str() != "authorization"))
                })
                .collect();
            if !lacking.is_empty() {
                problems.push(format!(
                    "Access-Control-Allow-Headers lacks {}",
                    lacking
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let allow_m = resp
                .headers
                .get_all("access-control-allow-methods")
                .collect::<Vec<_>>()
                .join(",")
                .to_ascii_uppercase();
            let simple = matches!(want_method.as_str(), "GET" | "HEAD" | "POST" | "");
            if !simple
                && !allow_m
                    .split(',')
                    .any(|m| m.trim() == want_method || m.trim() == "*")
            {
                problems.push(format!("Access-Control-Allow-Methods lacks {want_method}"));
            }
        }
        if problems.is_empty() {
            return;
        }
        self.emit(
            New::finding(
                Id::CorsBlocked,
                format!("{ep} preflight"),
                Severity::Medium,
                Culprit::Server,
            )
            .sub(if (200..300).contains(&status) {
                "preflight-incomplete"
            } else {
                "preflight-refused"
            })
            .say(format!(
                "The CORS preflight to {ep} ({}) would block a browser client: {}.",
                c.id,
                problems.join("; ")
            ))
            .ev([c.id]),
        );
    }

    /// Which story's token is current for a request started at `at`: the newest issued before.
    fn current_token(&self, story: usize, at: mcptap_flow::Micros) -> Option<usize> {
        self.stories[story]
            .tokens
            .iter()
            .rev()
            .copied()
            .find(|&t| self.tokens[t].issued <= at)
    }

    /// True when token `ti` is meant for endpoint `ei` (see the module docs of engine.rs).
    fn applies(&self, ti: usize, ei: usize) -> bool {
        let t = &self.tokens[ti];
        let e = &self.endpoints[ei];
        if t.endpoints.contains(&e.key) {
            return true;
        }
        let story = &self.stories[t.story];
        if let Some(r) = story.resource.as_deref().and_then(Url::parse) {
            return r.origin() == e.url.origin();
        }
        if let Some(tr) = &t.trigger {
            return *tr == e.key;
        }
        let prm_says = self.prms.iter().any(|p| {
            p.auth_servers
                .iter()
                .any(|a| crate::rules_discovery::same_issuer(a, &story.issuer))
                && p.resource
                    .as_deref()
                    .and_then(Url::parse)
                    .is_some_and(|r| r.origin() == e.url.origin())
        });
        prm_says || t.token_url.origin() == e.url.origin() || self.endpoints.len() == 1
    }

    /// Notes that the MCP endpoint saw traffic after each current token (for `token-unused`).
    fn mark_activity(&mut self, c: &Ctx<'_>, _ep: &str) {
        let Some(&ei) = self.endpoint_index.get(&c.endpoint().unwrap_or_default()) else {
            return;
        };
        for s in 0..self.stories.len() {
            if let Some(t) = self.current_token(s, c.started) {
                if !self.tokens[t].mcp_after && self.applies(t, ei) {
                    self.tokens[t].mcp_after = true;
                }
            }
        }
    }

    /// Why token `ti` is no longer one the client should send at `at`, if it is not: it
    /// expired, a request carrying it was refused, the client revoked it, or its refresh was
    /// refused. A client that stops sending such a token is right to.
    pub(crate) fn token_dropped(&self, ti: usize, at: Micros) -> Option<&'static str> {
        let t = &self.tokens[ti];
        if t.expires_at.is_some_and(|e| at >= e) {
            return Some("expired");
        }
        if t.refused.is_some_and(|(_, done)| done <= at) {
            return Some("refused");
        }
        if t.revoked.is_some_and(|(_, done)| done <= at) {
            return Some("revoked");
        }
        let refresh_refused = t
            .refresh_fp
            .as_ref()
            .and_then(|rt| self.refresh.get(rt))
            .is_some_and(|r| r.uses.iter().any(|&(_, started, ok)| !ok && started <= at));
        refresh_refused.then_some("refresh refused")
    }

    /// A request without a token: `token-not-sent` at once when the same client holds a token
    /// from this capture that is still good (see [`Analyzer::token_dropped`]). A later
    /// recovery amends the finding (see `rules_token::amend_recovery`), never removes it.
    fn token_missing(&mut self, c: &Ctx<'_>, ei: usize) {
        for s in 0..self.stories.len() {
            let Some(ti) = self.current_token(s, c.started) else {
                continue;
            };
            if self.token_dropped(ti, c.started).is_some() || !self.applies(ti, ei) {
                continue;
            }
            let t = &self.tokens[ti];
            if let Some(ua) = &c.ua {
                if !t.uas.is_empty() && !t.uas.contains(ua) && t.token_ua.as_ref() != Some(ua) {
                    continue; // another client on the same machine
                }
            }
            let kind = c.kind_label();
            let (tf, fp) = (t.flow, t.fp.clone());
            let key = format!("story {s}");
            let no_expiry =
                t.expires_in.is_none() && t.jwt.as_ref().and_then(|j| j.num("exp")).is_none();
            let ep = self.endpoints[ei].key.clone();
            if !self.bare_while_held.iter().any(|&(bs, _, _)| bs == s) {
                self.bare_while_held.push((s, c.started, ti));
            }
            if self.status_of(Id::TokenNotSent, &key) == Some(crate::model::Status::Confirmed) {
                self.emit(
                    New::finding(Id::TokenNotSent, key, Severity::Critical, Culprit::Client)
                        .ev([c.id]),
                );
                continue;
            }
            let valid = match t.expires_at {
                Some(e) => format!("valid for {} more", util::secs(e - c.started)),
                None => "with no known expiry".to_owned(),
            };
            let (sub, say) = if t.uses == 0 {
                ("never-sent", format!(
                    "A token was issued in {tf} ({fp}), but the {kind} request {} to {ep} carried no Authorization header, while the token was {valid}.",
                    c.id
                ))
            } else if !t.kinds.contains(&kind) {
                ("some-methods-only", format!(
                    "Token {fp} from {tf} is sent on {} but not on the {kind} request {}; the spec requires it on every request.",
                    t.kinds.join(", "),
                    c.id
                ))
            } else {
                let (sub, why) = if c.is_session_start() && c.session.is_none() {
                    ("after-restart", "a new session (initialize) started without it: the client did not persist or reload it")
                } else if no_expiry {
                    ("after-expiry-guess", "the token response had no expires_in, so the client probably guessed an expiry and dropped the still-valid token")
                } else {
                    ("stopped", "the client stopped sending it")
                };
                (sub, format!(
                    "Token {fp} from {tf} was sent before ({} requests), but the {kind} request {} to {ep} went without it while it was {valid}: {why}.",
                    t.uses,
                    c.id
                ))
            };
            let mut n = New::finding(Id::TokenNotSent, key, Severity::Critical, Culprit::Client)
                .sub(sub)
                .say(say)
                .ev([tf, c.id]);
            if c.status == Some(401) {
                n = n.detail("the server answered 401 and the client did not add the token: a 401 loop without a header");
            }
            if no_expiry {
                n = n.detail("the token response had no expires_in");
            }
            self.emit(n);
        }
    }

    /// A request with a Bearer token: record the use; `fresh-token-rejected`, `stale-token-sent`.
    fn token_carried(&mut self, c: &Ctx<'_>, ei: usize, fp: &str, challenges: &[Challenge]) {
        let refused = c.status == Some(401)
            || (c.status == Some(403)
                && !challenges
                    .iter()
                    .any(|ch| ch.param("error") == Some("insufficient_scope"))
                && !self.has_edge_marks(c));
        let Some(&ti) = self.token_index.get(fp) else {
            self.foreign_token(c, fp);
            return;
        };
        let ep = self.endpoints[ei].key.clone();
        let kind = c.kind_label();
        let applies = self.applies(ti, ei);
        let current = self.current_token(self.tokens[ti].story, c.started) == Some(ti);
        let max = self.opts.max_evidence.max(1) * 4;
        let t = &mut self.tokens[ti];
        let first = t.uses == 0;
        t.uses += 1;
        if t.sent_to.len() < max {
            t.sent_to.push(c.id);
        }
        if !t.endpoints.contains(&ep) && t.endpoints.len() < 16 {
            t.endpoints.push(ep.clone());
        }
        if !t.kinds.contains(&kind) {
            t.kinds.push(kind);
        }
        if let Some(ua) = &c.ua {
            if !t.uas.contains(ua) && t.uas.len() < 8 {
                t.uas.push(ua.clone());
            }
        }
        let expired = t.expires_at.is_some_and(|e| c.started >= e);
        let ua = c.ua.clone().unwrap_or_default();
        let e = &mut self.endpoints[ei];
        if !e.authenticated_uas.contains(&ua) && e.authenticated_uas.len() < 8 {
            e.authenticated_uas.push(ua);
        }
        let t = &mut self.tokens[ti];
        if refused && t.refused.is_none() {
            t.refused = Some((c.id, c.done));
        }
        let (tf, story, issued) = (t.flow, t.story, t.issued);
        // The same token sent again after a bare request, with no new login: the bare request
        // was a probe and the client recovered by itself (the finding stays, lowered).
        if let Some(pos) = self
            .bare_while_held
            .iter()
            .position(|&(s, at, held)| s == story && held == ti && at < c.started)
        {
            self.bare_while_held.remove(pos);
            self.amend(
                Id::TokenNotSent,
                &format!("story {story}"),
                format!(
                    "recovered: the client sent token {fp} again at {} without a new login; the request without it was a probe, still against the spec (a token on every request)",
                    c.id
                ),
                Some(Severity::Low),
                None,
            );
        }
        if first && refused && !expired && applies && current {
            let mut n = New::finding(Id::FreshTokenRejected, fp, Severity::High, Culprit::Server)
                .say(format!(
                    "The first request bearing the token issued in {tf} ({fp}), {} to {ep}, {} after issue, was refused with {}.",
                    c.id,
                    util::secs(c.started - issued),
                    c.status.unwrap_or(0)
                ))
                .ev([tf, c.id]);
            for d in self.token_diagnosis(ti, ei, challenges) {
                n = n.detail(d);
            }
            self.emit(n);
        }
        if c.status != Some(401) {
            return;
        }
        let grace = us(self.opts.stale_grace);
        let newer = self.stories[story].tokens.iter().copied().find(|&o| {
            o != ti && self.tokens[o].issued > issued && self.tokens[o].issued + grace <= c.started
        });
        if let Some(o) = newer {
            let of = self.tokens[o].flow;
            self.emit(
                New::finding(Id::StaleTokenSent, format!("superseded {story}"), Severity::High, Culprit::Client)
                    .sub("superseded")
                    .say(format!(
                        "Request {} carried the token from {tf} although a newer one had been issued in {of}, and was refused.",
                        c.id
                    ))
                    .ev([tf, of, c.id]),
            );
        } else if expired {
            let earlier = self.tokens[ti]
                .expired_refused
                .iter()
                .find(|(_, d)| *d <= c.started)
                .map(|(f, _)| *f);
            self.tokens[ti].expired_refused.push((c.id, c.done));
            match earlier {
                Some(e) => self.emit(
                    New::finding(Id::StaleTokenSent, format!("expired {story}"), Severity::High, Culprit::Client)
                        .sub("expired-repeated")
                        .say(format!(
                            "The client keeps sending the expired token from {tf}: refused in {e} and again in {}, with no refresh in between.",
                            c.id
                        ))
                        .ev([tf, e, c.id]),
                ),
                None => {
                    let deadline = c.done + us(self.opts.exchange_timeout);
                    self.wait(Pending::StaleExpired {
                        story: Some(story),
                        token_flow: Some(tf),
                        flow: c.id,
                        started: c.started,
                        done: c.done,
                        deadline,
                    });
                }
            }
        }
    }

    /// A token whose issuance the capture does not hold: only its JWT `exp` can tell.
    fn foreign_token(&mut self, c: &Ctx<'_>, fp: &str) {
        if c.status != Some(401) {
            return;
        }
        let jwt = c
            .flow
            .secrets
            .iter()
            .find(|s| s.fingerprint == fp && s.jwt.is_some())
            .and_then(|s| s.jwt.clone())
            .or_else(|| {
                let v = c.flow.request.headers.get("authorization")?;
                redact::decode_jwt(v.trim().split_once(' ')?.1.trim())
            });
        let Some(exp) = jwt.as_ref().and_then(|j| j.num("exp")) else {
            return;
        };
        if c.started < exp.saturating_mul(1_000_000) {
            return;
        }
        let deadline = c.done + us(self.opts.exchange_timeout);
        let exists = self
            .pending
            .iter()
            .any(|w| matches!(&w.p, Pending::StaleExpired { story: None, .. }));
        if !exists {
            self.wait(Pending::StaleExpired {
                story: None,
                token_flow: None,
                flow: c.id,
                started: c.started,
                done: c.done,
                deadline,
            });
        }
    }

    fn has_edge_marks(&self, _c: &Ctx<'_>) -> bool {
        self.edge_now
    }

    /// What the token and the refusal say about why a fresh token was refused.
    fn token_diagnosis(&self, ti: usize, ei: usize, challenges: &[Challenge]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(ch) = challenges.iter().find(|ch| ch.is_bearer()) {
            for p in ["error", "error_description"] {
                if let Some(v) = ch.param(p) {
                    out.push(format!("WWW-Authenticate {p}: {v}"));
                }
            }
        }
        let t = &self.tokens[ti];
        let e = &self.endpoints[ei];
        if let Some(j) = &t.jwt {
            let aud = crate::engine::jwt_aud(j);
            let resource = self
                .prms
                .iter()
                .filter_map(|p| p.resource.as_deref())
                .find(|r| Url::parse(r).is_some_and(|ru| util::resource_covers(&ru, &e.url)));
            if let Some(r) = resource {
                if !aud
                    .iter()
                    .any(|a| util::trim_slash(a) == util::trim_slash(r))
                {
                    out.push(format!(
                        "JWT aud {aud:?} does not contain the protected resource {r:?}"
                    ));
                }
            }
            let iss = j.claims.get("iss").and_then(Value::as_str);
            let story = &self.stories[t.story];
            if let Some(i) = iss {
                if !crate::rules_discovery::same_issuer(i, &story.issuer)
                    && self
                        .as_docs
                        .iter()
                        .any(|d| d.issuer.as_deref() == Some(story.issuer.as_str()))
                {
                    out.push(format!(
                        "JWT iss {i:?} is not the authorization server's issuer {:?}",
                        story.issuer
                    ));
                }
            }
            if j.claims.get("exp").is_none() {
                out.push("JWT has no exp (the TypeScript SDK's requireBearerAuth refuses tokens without expiry)".into());
            }
            if let Some(kid) = j.header.get("kid").and_then(Value::as_str) {
                if !self.jwks_kids.is_empty() && !self.jwks_kids.iter().any(|k| k == kid) {
                    out.push(format!("JWT kid {kid:?} is not in the captured JWKS"));
                }
            }
        } else if t.expires_in.is_none() {
            out.push(
                "opaque token without expires_in (servers that require an expiry refuse it)".into(),
            );
        }
        if t.grant == "authorization_code" && self.stories[t.story].resource.is_none() {
            out.push("the token request had no resource parameter: the token may be bound to another audience".into());
        }
        out
    }

    /// Inject mode verdicts.
    fn inject_verdict(
        &mut self,
        c: &Ctx<'_>,
        ei: usize,
        inj: &mcptap_flow::Injection,
        challenges: &[Challenge],
    ) {
        let ep = self.endpoints[ei].key.clone();
        let token_flow = inj.token_flow.or_else(|| {
            self.token_index
                .get(&inj.fingerprint)
                .map(|&t| self.tokens[t].flow)
        });
        let bare = self.endpoints[ei].last_bare_refused;
        let ev: Vec<FlowId> = bare.into_iter().chain([c.id]).chain(token_flow).collect();
        let token = token_flow.map(|f| format!(" from {f}")).unwrap_or_default();
        if c.ok() {
            let bare_text = match bare {
                Some(b) => format!("the bare request {b} was refused"),
                None => "the client sent no token itself".to_owned(),
            };
            self.emit(
                New::finding(Id::ClientOmitsTokenConfirmed, ep.clone(), Severity::Critical, Culprit::Client)
                    .say(format!(
                        "With the captured token{token} injected, {} to {ep} succeeded ({}), while {bare_text}: the server accepts the token, the client does not send it.",
                        c.id,
                        c.status.unwrap_or(0)
                    ))
                    .ev(ev),
            );
        } else if c.status == Some(401)
            || (c.status == Some(403)
                && !challenges
                    .iter()
                    .any(|ch| ch.param("error") == Some("insufficient_scope")))
        {
            let mut n = New::finding(Id::ServerRejectsToken, ep.clone(), Severity::High, Culprit::Server)
                .say(format!(
                    "mcptap injected the token{token}, issued by the server's own authorization server, into {} and {ep} refused it with {}.",
                    c.id,
                    c.status.unwrap_or(0)
                ))
                .ev(ev);
            if let Some(ch) = challenges.iter().find(|ch| ch.is_bearer()) {
                for p in ["error", "error_description"] {
                    if let Some(v) = ch.param(p) {
                        n = n.detail(format!("WWW-Authenticate {p}: {v}"));
                    }
                }
            }
            self.emit(n);
        }
    }

    /// When a waiting MCP decision becomes likely enough to show, and the suspected finding.
    pub(crate) fn suspicion_mcp(&self, p: &Pending) -> Option<New> {
        match p {
            Pending::StaleExpired {
                story,
                token_flow,
                flow,
                done,
                deadline,
                ..
            } => {
                let n = New::finding(Id::StaleTokenSent, format!("expired {}", story.map(|s| s.to_string()).unwrap_or_default()), Severity::High, Culprit::Client)
                    .sub("expired-not-refreshed")
                    .say(format!("Request {flow} carried an expired token and was refused; no refresh or new authorization has followed."))
                    .ev(token_flow.iter().copied().chain([*flow]))
                    .suspect(format!(
                        "a refresh or a new token within {} clears it; none confirms it",
                        util::secs(deadline - done)
                    ));
                Some(n)
            }
            Pending::StepUp {
                flow,
                story,
                scope,
                deadline,
                started,
            } => {
                let n = New::finding(Id::InsufficientScopeUnhandled, story.map(|s| s.to_string()).unwrap_or_default(), Severity::Medium, Culprit::Client)
                    .sub("no-reauth")
                    .say(format!("The server asked for more scope ({:?}) in {flow}; the client has not authorized again yet.", scope.join(" ")))
                    .ev([*flow])
                    .suspect(format!(
                        "a new authorization with the challenged scope within {} clears it; none confirms it",
                        util::secs(deadline - started)
                    ));
                Some(n)
            }
            _ => None,
        }
    }

    /// Whether what a waiting MCP decision waits for has happened, and why that settles it.
    pub(crate) fn healthy_mcp(&self, p: &Pending) -> Option<String> {
        let after = |story: Option<usize>, at: Micros, code_only: bool| match story {
            Some(s) => self.stories[s].tokens.iter().any(|&o| {
                self.tokens[o].issued > at
                    && (!code_only || self.tokens[o].grant == "authorization_code")
            }),
            None => self
                .tokens
                .iter()
                .any(|t| t.issued > at && (!code_only || t.grant == "authorization_code")),
        };
        match p {
            Pending::StaleExpired { story, started, .. } => {
                after(*story, *started, false).then(|| "the client obtained a new token".to_owned())
            }
            Pending::StepUp { story, started, .. } => {
                after(*story, *started, true).then(|| "the client authorized again".to_owned())
            }
            _ => None,
        }
    }

    /// Resolves a waiting MCP decision (see [`Analyzer::resolve_oauth`]).
    pub(crate) fn resolve_mcp(&mut self, p: Pending, due: bool) -> Decision {
        if let (Pending::StaleExpired { .. }, Some(why)) = (&p, self.healthy_mcp(&p)) {
            return Decision::Healthy(why);
        }
        match p {
            Pending::StaleExpired {
                story,
                token_flow,
                flow,
                done,
                ..
            } => {
                let within = if due {
                    format!("within {}", util::secs(us(self.opts.exchange_timeout)))
                } else {
                    format!(
                        "before the capture ended {} later",
                        util::secs(self.now() - done)
                    )
                };
                self.emit(
                    New::finding(Id::StaleTokenSent, format!("expired {}", story.map(|s| s.to_string()).unwrap_or_default()), Severity::High, Culprit::Client)
                        .sub("expired-not-refreshed")
                        .say(format!(
                            "Request {flow} carried an expired token, was refused, and the client neither refreshed nor re-authorized {within}.",
                        ))
                        .ev(token_flow.into_iter().chain([flow])),
                );
                Decision::Done
            }
            Pending::StepUp {
                flow,
                started,
                story,
                scope,
                ..
            } => {
                let after: Vec<usize> = match story {
                    Some(s) => self.stories[s]
                        .tokens
                        .iter()
                        .copied()
                        .filter(|&t| self.tokens[t].issued > started)
                        .collect(),
                    None => (0..self.tokens.len())
                        .filter(|&t| self.tokens[t].issued > started)
                        .collect(),
                };
                let code = after
                    .iter()
                    .copied()
                    .find(|&t| self.tokens[t].grant == "authorization_code");
                let key = story.map(|s| s.to_string()).unwrap_or_default();
                if let Some(t) = code {
                    let az = self
                        .authzs
                        .iter()
                        .rev()
                        .find(|a| a.started > started && a.scope.is_some());
                    let (granted, src, ev) = match az {
                        Some(a) => (a.scope.clone(), a.flow, a.flow),
                        None => (
                            self.tokens[t].scope.clone(),
                            self.tokens[t].flow,
                            self.tokens[t].flow,
                        ),
                    };
                    if let Some(g) = granted {
                        let have: Vec<&str> = g.split_whitespace().collect();
                        let lacking: Vec<&String> = scope
                            .iter()
                            .filter(|s| !have.contains(&s.as_str()))
                            .collect();
                        if !lacking.is_empty() {
                            self.emit(
                                New::finding(Id::InsufficientScopeUnhandled, key, Severity::Medium, Culprit::Client)
                                    .sub("scope-not-widened")
                                    .say(format!(
                                        "After the insufficient_scope refusal in {flow}, the new authorization ({src}) still lacks {lacking:?}.",
                                    ))
                                    .ev([flow, ev]),
                            );
                        }
                    }
                    return Decision::Healthy("the client authorized again".to_owned());
                }
                let ended = if due {
                    String::new()
                } else {
                    format!(
                        " (the capture ended {} later)",
                        util::secs(self.now() - started)
                    )
                };
                let refresh = after
                    .iter()
                    .copied()
                    .find(|&t| self.tokens[t].grant == "refresh_token");
                let (sub, why) = if refresh.is_some() {
                    (
                        "refresh-instead",
                        "it refreshed instead, and a refresh cannot widen scope",
                    )
                } else {
                    (
                        "no-reauth",
                        "it did not re-authorize with the challenged scope",
                    )
                };
                self.emit(
                    New::finding(
                        Id::InsufficientScopeUnhandled,
                        key,
                        Severity::Medium,
                        Culprit::Client,
                    )
                    .sub(sub)
                    .say(format!(
                        "The server asked for more scope ({:?}) in {flow}, but {why}{ended}.",
                        scope.join(" ")
                    ))
                    .ev([flow]
                        .into_iter()
                        .chain(refresh.map(|t| self.tokens[t].flow))),
                );
                Decision::Done
            }
            Pending::Redirect { .. } => Decision::Done,
            other => Decision::Wait(other),
        }
    }
}

/// True when the response body mentions any of `words` (case-insensitive, first 4 KiB). Used
/// only to recognise a foreign server's error *about* a topic, never to classify our errors.
pub(crate) fn body_mentions(c: &Ctx<'_>, words: &[&str]) -> bool {
    let body = c
        .flow
        .response
        .as_ref()
        .and_then(|r| r.body.as_str())
        .map(|b| {
            b.chars()
                .take(4096)
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    words.iter().any(|w| body.contains(w))
}

/// What is wrong with a tool's JSON Schema, if anything.
fn schema_problem(s: Option<&Value>) -> Option<String> {
    let Some(s) = s else {
        return Some("is missing".into());
    };
    let Some(obj) = s.as_object() else {
        return Some(format!("is not an object ({})", type_name(s)));
    };
    match obj.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        Some(t) => return Some(format!("has type {t}, not \"object\"")),
        None => return Some("has no \"type\": \"object\"".into()),
    }
    if let Some(p) = obj.get("properties") {
        let Some(props) = p.as_object() else {
            return Some("has properties that are not an object".into());
        };
        for (k, v) in props {
            if !(v.is_object() || v.is_boolean()) {
                return Some(format!("property {k:?} is not a schema"));
            }
            if let Some(t) = v.get("type") {
                let valid = |x: &Value| {
                    matches!(
                        x.as_str(),
                        Some(
                            "string"
                                | "number"
                                | "integer"
                                | "boolean"
                                | "object"
                                | "array"
                                | "null"
                        )
                    )
                };
                let ok = match t {
                    Value::Array(a) => a.iter().all(valid),
                    x => valid(x),
                };
                if !ok {
                    return Some(format!("property {k:?} has an invalid type {t}"));
                }
            }
        }
    }
    if let Some(r) = obj.get("required") {
        if !r.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            return Some("has a \"required\" that is not an array of strings".into());
        }
    }
    None
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
