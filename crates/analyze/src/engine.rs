//! The incremental analyzer: the state that flows build up (endpoints, metadata, registrations,
//! tokens, sessions), the finding store, and deadlines for the rules that need time to pass.
//!
//! Flows are pushed in completion order, as the engine reports them. A rule that says "X
//! happened after Y" compares `timings.started` of X with the completion of Y: Y then always
//! arrived first, so every rule fires from the flow that completes its proof, live and offline
//! alike. Rules that need an absence ("no request within 30 s") become deadlines, resolved when
//! a later flow (or [`Analyzer::tick`]) shows that time has passed, or at [`Analyzer::finish`].

use crate::catalog::FindingId as Id;
use crate::classify::{self, Ctx, Known};
use crate::model::*;
use crate::util::Url;
use mcptap_flow::{redact::JwtInfo, ErrorKind, Flow, FlowId, FlowKind, Micros};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Tunables of the analysis. The defaults follow the reference (failure-modes.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// A token not used by any MCP request this long after it was issued is `token-unused`
    /// (default 30 s).
    pub token_unused_after: Duration,
    /// A token not used this long after it was issued is shown as a suspected `token-unused`
    /// until the deadline above decides it (default 5 s).
    pub token_unused_suspect: Duration,
    /// How long a client gets to finish a step (exchange a code after registering, re-authorize
    /// after a 403, refresh after a 401) before the analyzer concludes it never will (120 s).
    pub exchange_timeout: Duration,
    /// Two refreshes with the same refresh token within this window are a race (60 s).
    pub refresh_race_window: Duration,
    /// Requests started this soon after a newer token arrived may still carry the old one
    /// without blame (in flight when it was issued) (2 s).
    pub stale_grace: Duration,
    /// The capture point is a reverse proxy in front of the server (rather than a forward proxy
    /// next to the client): an edge before it may hide requests, which some findings mention.
    pub reverse_proxy: bool,
    /// At most this many evidence flow ids per finding (16).
    pub max_evidence: usize,
    /// Keep the summary of every flow for [`Report::flows`] (the default: a report of a saved
    /// capture lists them). A live proxy, which may run for days, turns it off: flows are then
    /// counted ([`Environment::unlisted_flows`], [`Environment::unlisted_mcp_flows`]) instead of
    /// listed, and the analyzer's memory is bounded by what its decisions need (endpoints,
    /// tokens, sessions, waiting decisions), not by the traffic. No rule reads the listing, so
    /// the findings are the same either way.
    pub list_flows: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            token_unused_after: Duration::from_secs(30),
            token_unused_suspect: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(120),
            refresh_race_window: Duration::from_secs(60),
            stale_grace: Duration::from_secs(2),
            reverse_proxy: false,
            max_evidence: 16,
            list_flows: true,
        }
    }
}

pub(crate) fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// An MCP endpoint and what it did.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub url: Url,
    pub key: String,
    /// Bare initialize/discover/tools/list answered 2xx (lazy-challenge evidence).
    pub lazy_ok: Vec<FlowId>,
    /// A 401 was seen.
    pub challenged: Option<FlowId>,
    /// The last refused request without a token (for inject verdicts).
    pub last_bare_refused: Option<FlowId>,
    /// The last negotiated protocol version and when the result arrived.
    pub negotiated: Option<(Micros, String)>,
    /// `resource_metadata` URLs its challenges named.
    pub advertised_prm: Vec<String>,
    /// 401s without `resource_metadata` (challenge-missing, severity settles once PRM is known).
    pub no_rm_401: Vec<FlowId>,
    /// The session most recently assigned on this endpoint.
    pub last_session: Option<String>,
    /// User-Agents (empty: none sent) of requests that carried a token here.
    pub authenticated_uas: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Prm {
    pub flow: FlowId,
    pub url: Url,
    pub resource: Option<String>,
    pub auth_servers: Vec<String>,
    /// `scopes_supported`.
    pub scopes: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Attempt {
    pub flow: FlowId,
    pub url: Url,
    pub ok: bool,
    /// How the fetch failed, when no answer came.
    pub error: Option<ErrorKind>,
}

#[derive(Debug)]
pub(crate) struct AsDoc {
    pub flow: FlowId,
    pub done: Micros,
    pub url: Url,
    pub issuer: Option<String>,
    pub doc: serde_json::Value,
}

impl AsDoc {
    /// An endpoint the document advertises (`token_endpoint`…), as origin+path.
    pub fn endpoint(&self, field: &str) -> Option<String> {
        crate::util::jstr(&self.doc, field)
            .and_then(Url::parse)
            .map(|u| u.endpoint())
    }
}

#[derive(Debug)]
pub(crate) struct Reg {
    pub flow: FlowId,
    pub done: Micros,
    pub ok: bool,
    pub client_id: Option<String>,
    pub redirect_uris: Vec<String>,
    pub method: Option<String>,
    pub req_method: Option<String>,
    pub secret: bool,
}

#[derive(Debug)]
pub(crate) struct Authz {
    pub flow: FlowId,
    pub started: Micros,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub challenge: Option<String>,
    pub method: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub code_fp: Option<String>,
    /// The issuer whose authorization endpoint this was, when its metadata was seen.
    pub issuer: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Token {
    pub fp: String,
    pub flow: FlowId,
    pub grant: String,
    pub issued: Micros,
    pub expires_in: Option<i64>,
    pub expires_at: Option<Micros>,
    pub refresh_fp: Option<String>,
    pub scope: Option<String>,
    pub jwt: Option<JwtInfo>,
    pub story: usize,
    pub token_url: Url,
    pub trigger: Option<String>,
    pub token_ua: Option<String>,
    pub uses: u64,
    pub sent_to: Vec<FlowId>,
    pub endpoints: Vec<String>,
    pub kinds: Vec<String>,
    pub uas: Vec<String>,
    pub mcp_after: bool,
    /// A request carrying it was refused (401, or 403 other than insufficient_scope): the
    /// client is right to stop sending it.
    pub refused: Option<(FlowId, Micros)>,
    /// The client revoked it (RFC 7009): the flow and when it completed.
    pub revoked: Option<(FlowId, Micros)>,
    pub expired_refused: Vec<(FlowId, Micros)>,
}

#[derive(Debug)]
pub(crate) struct Story {
    pub issuer: String,
    pub resource: Option<String>,
    pub client_id: Option<String>,
    pub tokens: Vec<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct RefreshState {
    pub story: Option<usize>,
    /// Refresh requests that used it: (flow, started, accepted).
    pub uses: Vec<(FlowId, Micros, bool)>,
    pub rejected: Option<FlowId>,
    pub rotated: bool,
    /// Refreshes mcptap made itself with this refresh token (`--inject-refresh`).
    pub by_mcptap: Vec<FlowId>,
    /// The mcptap refresh that rotated it, if one did.
    pub rotated_by_mcptap: Option<FlowId>,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub created: FlowId,
    pub created_at: Micros,
    /// The last request that carried it completed then (for forgetting idle sessions).
    pub last_seen: Micros,
    pub version: Option<String>,
    pub valid: bool,
    pub terminated: Option<(FlowId, Micros)>,
    pub deleted: bool,
    pub ua: Option<String>,
}

#[derive(Debug)]
pub(crate) enum Pending {
    TokenUnused {
        token: usize,
        deadline: Micros,
    },
    StaleExpired {
        story: Option<usize>,
        token_flow: Option<FlowId>,
        flow: FlowId,
        started: Micros,
        done: Micros,
        deadline: Micros,
    },
    Exchange {
        also: Vec<FlowId>,
        anchor: FlowId,
        at: Micros,
        code_returned: bool,
        deadline: Micros,
    },
    StepUp {
        flow: FlowId,
        started: Micros,
        story: Option<usize>,
        scope: Vec<String>,
        deadline: Micros,
    },
    Prm {
        origin: String,
        created: Micros,
        deadline: Micros,
    },
    AsDiscovery {
        issuer: String,
        created: Micros,
        deadline: Micros,
    },
    Unreachable {
        meta_flow: FlowId,
        url: String,
        field: &'static str,
        reason: String,
        deadline: Micros,
    },
    Redirect {
        flow: FlowId,
        target: String,
        had_auth: bool,
        was_post: bool,
        done: Micros,
        deadline: Micros,
    },
    NoRegistration {
        doc: usize,
        deadline: Micros,
    },
    /// `client-registration-stale`: invalid_client for a client id never registered here.
    StaleRegistration {
        flow: FlowId,
        client_id: String,
        status: u16,
        done: Micros,
        deadline: Micros,
    },
    /// `initialize` answered with another protocol version than asked: does the client go on
    /// with it? (rules_transport.rs)
    VersionOffer {
        endpoint: String,
        flow: FlowId,
        client: Option<String>,
        requested: String,
        answered: String,
        done: Micros,
        deadline: Micros,
    },
}

impl Pending {
    fn deadline(&self) -> Micros {
        match self {
            Pending::TokenUnused { deadline, .. }
            | Pending::StaleExpired { deadline, .. }
            | Pending::Exchange { deadline, .. }
            | Pending::StepUp { deadline, .. }
            | Pending::Prm { deadline, .. }
            | Pending::AsDiscovery { deadline, .. }
            | Pending::Unreachable { deadline, .. }
            | Pending::Redirect { deadline, .. }
            | Pending::NoRegistration { deadline, .. }
            | Pending::StaleRegistration { deadline, .. }
            | Pending::VersionOffer { deadline, .. } => *deadline,
        }
    }
}

/// A decision that waits for time or flows, and whether its suspicion is showing.
#[derive(Debug)]
pub(crate) struct Wait {
    pub p: Pending,
    /// The suspected finding was emitted (see [`Analyzer::suspicion`]).
    pub shown: bool,
    /// Not worth looking at again before this time: a suspicion that was due but not shown
    /// (not likely after all, or already healthy) is looked at again at most once a second, so
    /// a long wait costs nothing per flow.
    pub next_look: Micros,
}

/// What resolving a [`Pending`] concluded.
pub(crate) enum Decision {
    /// Not decided yet: keep waiting.
    Wait(Pending),
    /// Decided: the rule emitted what it proved (a confirmed finding, or nothing to say).
    Done,
    /// Decided healthy: a suspicion shown for it is cleared, saying why.
    Healthy(String),
    /// The capture ended before it could be decided: a suspicion shown for it stays, with this
    /// said; without one, `show` decides between showing it now and a visibility note.
    Open { why: String, show: bool },
}

/// A finding before it is stored.
pub(crate) struct New {
    pub id: Id,
    pub key: String,
    pub severity: Severity,
    pub culprit: Culprit,
    pub status: Status,
    pub decides: Option<String>,
    pub subcase: Option<&'static str>,
    pub summary: String,
    pub evidence: Vec<FlowId>,
    pub details: Vec<String>,
}

impl New {
    pub fn finding(id: Id, key: impl Into<String>, severity: Severity, culprit: Culprit) -> New {
        New {
            id,
            key: key.into(),
            severity,
            culprit,
            status: Status::Confirmed,
            decides: None,
            subcase: None,
            summary: String::new(),
            evidence: Vec::new(),
            details: Vec::new(),
        }
    }
    /// Makes it a suspicion: shown at once, with what would decide it.
    pub fn suspect(mut self, decides: impl Into<String>) -> New {
        self.status = Status::Suspected;
        self.decides = Some(decides.into());
        self
    }
    pub fn sub(mut self, s: &'static str) -> New {
        self.subcase = Some(s);
        self
    }
    pub fn say(mut self, s: impl Into<String>) -> New {
        self.summary = s.into();
        self
    }
    pub fn ev(mut self, ids: impl IntoIterator<Item = FlowId>) -> New {
        self.evidence.extend(ids);
        self
    }
    pub fn detail(mut self, d: impl Into<String>) -> New {
        self.details.push(d.into());
        self
    }
    pub fn details(mut self, d: impl IntoIterator<Item = String>) -> New {
        self.details.extend(d);
        self
    }
}

/// The live, incremental analyzer. Push flows as they complete; read findings as they are
/// proven; call [`Analyzer::finish`] at the end of the session.
///
/// ```
/// use mcptap_analyze::{Analyzer, Options};
/// let mut a = Analyzer::new(Options::default());
/// // for flow in flows { for f in a.push(&flow) { println!("{}", f.summary) } }
/// let report = a.finish();
/// assert!(report.findings.is_empty());
/// ```
#[derive(Debug)]
pub struct Analyzer {
    pub(crate) opts: Options,
    pub(crate) now: Option<Micros>,
    pub(crate) first_started: Option<Micros>,
    pub(crate) known: Known,
    pub(crate) flows: Vec<FlowSummary>,
    /// The last flow not kept in `flows` (see [`Options::keep_other_flows`]), for
    /// [`Analyzer::summary`].
    pub(crate) last_unlisted: Option<FlowSummary>,
    pub(crate) unlisted: u64,
    pub(crate) unlisted_mcp: u64,
    /// Origins the client reached OAuth endpoints on (other than protected-resource metadata).
    pub(crate) oauth_origins: HashSet<String>,
    /// Per origin, the last flow it answered 2xx (not synthetic), with its URL: "the server is
    /// up" evidence.
    pub(crate) last_ok: HashMap<String, (FlowId, String)>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) endpoint_index: HashMap<String, usize>,
    pub(crate) prms: Vec<Prm>,
    pub(crate) prm_attempts: Vec<Attempt>,
    pub(crate) as_docs: Vec<AsDoc>,
    pub(crate) as_attempts: Vec<Attempt>,
    pub(crate) regs: Vec<Reg>,
    pub(crate) authzs: Vec<Authz>,
    pub(crate) tokens: Vec<Token>,
    pub(crate) token_index: HashMap<String, usize>,
    pub(crate) stories: Vec<Story>,
    pub(crate) refresh: HashMap<String, RefreshState>,
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) jwks_kids: Vec<String>,
    pub(crate) code_exchanges: Vec<(FlowId, Micros, Option<String>, bool)>,
    pub(crate) last_401: Option<(String, Micros)>,
    /// insufficient_scope refusals of tokens that held the scope, per (endpoint, scope): the
    /// distinct tokens refused and the flow that refused each.
    pub(crate) scope_refusals: HashMap<String, Vec<(String, FlowId)>>,
    /// Client ID Metadata Documents fetched through mcptap.
    pub(crate) cimds: Vec<crate::rules_registration::Cimd>,
    /// Scopes named by Bearer challenges (401/403): (scopes, flow, completed), the last 16.
    pub(crate) challenge_scopes: Vec<(Vec<String>, FlowId, Micros)>,
    /// MCP endpoints reached through a cross-origin redirect: target → (redirecting endpoint,
    /// the redirect flow).
    pub(crate) redirected_to: HashMap<String, (String, FlowId)>,
    /// Bare MCP requests made while a good token was held: (story, started, token). A later
    /// token amends their `token-not-sent` with how the client recovered.
    pub(crate) bare_while_held: Vec<(usize, Micros, usize)>,
    /// Per token fingerprint: how many insufficient_scope refusals, and the first flows.
    pub(crate) scope_403: HashMap<String, (u64, Vec<FlowId>)>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) finding_index: HashMap<(Id, String), usize>,
    pub(crate) fresh: Vec<Finding>,
    pub(crate) pending: Vec<Wait>,
    pub(crate) env: Environment,
    pub(crate) vis: Visibility,
    /// When recording stopped, if the caller said ([`Analyzer::finish_at`]).
    pub(crate) capture_ended: Option<Micros>,
    pub(crate) oauth_dance: bool,
    /// The flow being pushed was blocked by an edge (edge-blocked).
    pub(crate) edge_now: bool,
    /// What the transport rules remember (rules_transport.rs).
    pub(crate) transport: crate::rules_transport::TransportState,
}

impl Default for Analyzer {
    fn default() -> Analyzer {
        Analyzer::new(Options::default())
    }
}

impl Analyzer {
    /// A fresh analyzer.
    pub fn new(opts: Options) -> Analyzer {
        Analyzer {
            opts,
            now: None,
            first_started: None,
            known: Known::default(),
            flows: Vec::new(),
            last_unlisted: None,
            unlisted: 0,
            unlisted_mcp: 0,
            oauth_origins: HashSet::new(),
            last_ok: HashMap::new(),
            endpoints: Vec::new(),
            endpoint_index: HashMap::new(),
            prms: Vec::new(),
            prm_attempts: Vec::new(),
            as_docs: Vec::new(),
            as_attempts: Vec::new(),
            regs: Vec::new(),
            authzs: Vec::new(),
            tokens: Vec::new(),
            token_index: HashMap::new(),
            stories: Vec::new(),
            refresh: HashMap::new(),
            sessions: HashMap::new(),
            jwks_kids: Vec::new(),
            code_exchanges: Vec::new(),
            last_401: None,
            scope_403: HashMap::new(),
            bare_while_held: Vec::new(),
            redirected_to: HashMap::new(),
            cimds: Vec::new(),
            scope_refusals: HashMap::new(),
            challenge_scopes: Vec::new(),
            findings: Vec::new(),
            finding_index: HashMap::new(),
            fresh: Vec::new(),
            pending: Vec::new(),
            env: Environment::default(),
            vis: Visibility::default(),
            capture_ended: None,
            oauth_dance: false,
            edge_now: false,
            transport: Default::default(),
        }
    }

    /// Feeds one finished flow (in the order flows complete). Returns the findings this flow
    /// newly proved, including deadline findings that the flow's time made due. Each finding is
    /// returned once; later evidence updates it in [`Analyzer::findings`] silently.
    pub fn push(&mut self, flow: &Flow) -> Vec<Finding> {
        if flow.kind == FlowKind::Tunnel {
            return Vec::new();
        }
        let ctx = classify::facts(flow, &self.known);
        self.first_started = Some(
            self.first_started
                .map_or(ctx.started, |f| f.min(ctx.started)),
        );
        self.now = Some(self.now.map_or(ctx.done, |n| n.max(ctx.done)));
        // What a live proxy's clock would have shown before this flow arrived: suspicions due
        // by now (offline, nothing ticks between flows).
        self.show_suspicions();
        // mcptap's own requests (`--inject-refresh`) say nothing about the client.
        if let Some(ua) = ctx.ua.as_ref().filter(|_| flow.by_mcptap.is_none()) {
            if !self.env.user_agents.contains(ua) && self.env.user_agents.len() < 32 {
                self.env.user_agents.push(ua.clone());
            }
        }
        self.edge_now = self.check_edge(&ctx);
        match ctx.role {
            Role::PrmDiscovery => self.on_prm(&ctx),
            Role::AsMetadata => self.on_as_metadata(&ctx),
            Role::Registration => self.on_registration(&ctx),
            Role::Authorize => self.on_authorize(&ctx),
            Role::TokenCode | Role::TokenRefresh | Role::TokenOther => self.on_token(&ctx),
            Role::Mcp => self.on_mcp(&ctx),
            Role::McpPreflight => self.on_preflight(&ctx),
            Role::Jwks => self.on_jwks(&ctx),
            Role::Revocation => self.on_revocation(&ctx),
            Role::Callback => self.on_callback(&ctx),
            Role::Other => self.on_possible_cimd(&ctx),
            Role::Tunnel => {}
        }
        if matches!(
            ctx.role,
            Role::Registration
                | Role::Authorize
                | Role::TokenCode
                | Role::TokenRefresh
                | Role::TokenOther
        ) {
            self.check_ignored_metadata(&ctx);
        }
        self.check_unreachable_use(&ctx);
        self.check_ambiguous_prm(&ctx);
        self.summarize(&ctx);
        let moved_on = ctx.role.is_oauth() && ctx.role != Role::PrmDiscovery;
        self.run_pending(false, moved_on.then_some((ctx.role, ctx.started)));
        std::mem::take(&mut self.fresh)
    }

    /// Advances the analyzer's clock to `now` (µs since the epoch) without a flow, so deadline
    /// rules (`token-unused`, `token-exchange-missing`…) fire on time in a live session where no
    /// traffic arrives. The caller reads the clock; the analyzer never does.
    pub fn tick(&mut self, now: Micros) -> Vec<Finding> {
        if self.now.is_none_or(|n| now > n) {
            self.now = Some(now);
        }
        self.run_pending(false, None);
        std::mem::take(&mut self.fresh)
    }

    /// The findings so far, in the report's order, with all evidence gathered until now.
    pub fn findings(&self) -> Vec<Finding> {
        let mut f = self.findings.clone();
        sort_findings(&mut f);
        f
    }

    /// Ends the session: resolves every deadline with the last flow's time as "now" (deadlines
    /// not yet due become notes in [`Visibility::notes`], not findings) and returns the report.
    /// Findings that only this call proves are in the report; the analyzer can keep being used.
    pub fn finish(&mut self) -> Report {
        self.end(None);
        self.report()
    }

    /// Ends the session at `end` (µs since the epoch), when recording stopped: what waits is
    /// decided on the evidence at hand, with the time the capture went on after the deciding
    /// request stated. This is how a live proxy ends (Ctrl-C, or `mcptap run`'s command
    /// exiting), and how a saved session that knows its end is analysed, so both agree.
    pub fn finish_at(&mut self, end: Micros) -> Report {
        self.end(Some(end));
        self.report()
    }

    /// [`finish_at`](Self::finish_at) when `end` is known, else [`finish`](Self::finish), for
    /// an analyzer that is done: its flow list moves into the report instead of being copied.
    pub fn into_report(mut self, end: Option<Micros>) -> Report {
        self.end(end);
        let flows = std::mem::take(&mut self.flows);
        self.report_of(flows)
    }

    /// Decides what waits, as of `end` when recording stopped then.
    fn end(&mut self, end: Option<Micros>) {
        if let Some(end) = end {
            if self.now.is_none_or(|n| end > n) {
                self.now = Some(end);
            }
            self.capture_ended = Some(end);
        }
        self.run_pending(true, None);
        self.finish_rules();
        self.fresh.clear();
    }

    /// Makes room in the report's flow list for `n` more flows at once (when the caller knows
    /// how many may come, up to a bound), instead of growing it by doubling: each doubling
    /// copies the list into new memory, and the allocator holds on to the old for a while.
    /// Room that is never used is never touched. Nothing happens if the room cannot be had.
    pub fn reserve_flows(&mut self, n: usize) {
        if self.opts.list_flows {
            let _ = self.flows.try_reserve_exact(n);
        }
    }

    /// The summary (role, MCP facts, credentials) of a flow already pushed; `None` for a tunnel
    /// or an unknown id. Cheap for the flow just pushed (live views call it after each push).
    pub fn summary(&self, id: FlowId) -> Option<&FlowSummary> {
        self.last_unlisted
            .as_ref()
            .filter(|f| f.id == id)
            .or_else(|| self.flows.iter().rev().find(|f| f.id == id))
    }

    /// Builds the report of the current state (without ending the session).
    pub fn report(&self) -> Report {
        self.report_of(self.flows.clone())
    }

    /// The report, with `flows` as its flow list.
    fn report_of(&self, mut flows: Vec<FlowSummary>) -> Report {
        let mut findings = self.findings.clone();
        sort_findings(&mut findings);
        // Flows that do not overlap come in start order already: a stable sort would still take
        // a scratch buffer of up to half the list.
        if !flows.is_sorted_by_key(|f| (f.started, f.id)) {
            flows.sort_by_key(|f| (f.started, f.id));
        }
        let stories = self
            .stories
            .iter()
            .map(|s| OAuthStory {
                issuer: s.issuer.clone(),
                resource: s.resource.clone(),
                client_id: s.client_id.clone(),
                tokens: s.tokens.iter().map(|&t| self.token_record(t)).collect(),
            })
            .collect();
        let mut env = self.env.clone();
        env.first_started = self.first_started;
        env.last_activity = self.now;
        env.capture_ended = self.capture_ended;
        env.mcp_endpoints = self.endpoints.iter().map(|e| e.key.clone()).collect();
        env.unlisted_flows = self.unlisted;
        env.unlisted_mcp_flows = self.unlisted_mcp;
        let mut vis = self.vis.clone();
        vis.not_checked.sort_unstable();
        vis.not_checked.dedup();
        Report {
            schema: SCHEMA_VERSION,
            environment: env,
            visibility: vis,
            findings,
            stories,
            flows,
        }
    }

    fn token_record(&self, t: usize) -> TokenRecord {
        let t = &self.tokens[t];
        TokenRecord {
            fingerprint: t.fp.clone(),
            flow: t.flow,
            grant: t.grant.clone(),
            issued_at: t.issued,
            expires_in: t.expires_in,
            expires_at: t.expires_at,
            refresh_fingerprint: t.refresh_fp.clone(),
            scope: t.scope.clone(),
            jwt_aud: t.jwt.as_ref().map(jwt_aud).unwrap_or_default(),
            uses: t.uses,
            sent_to: t.sent_to.clone(),
            endpoints: t.endpoints.clone(),
        }
    }

    /// A flow that repeats a confirmed finding (same `id` and `key`): counts it and adds its
    /// `evidence` as [`Analyzer::emit`] would, and returns true, so that a rule met on every
    /// flow (a client that never sends a header) does not build the finding's text each time.
    /// False, with nothing done, when there is no such confirmed finding yet.
    pub(crate) fn repeat(&mut self, id: Id, key: String, evidence: &[FlowId]) -> bool {
        let Some(&i) = self.finding_index.get(&(id, key)) else {
            return false;
        };
        let f = &mut self.findings[i];
        if f.status != Status::Confirmed {
            return false;
        }
        f.occurrences += 1;
        merge_evidence(&mut f.evidence, evidence, self.opts.max_evidence.max(1));
        true
    }

    /// Stores a finding (or adds to the one with the same id and key). A confirmed finding
    /// that meets its own suspicion (same id and key) replaces it and is announced again.
    pub(crate) fn emit(&mut self, n: New) {
        let max = self.opts.max_evidence.max(1);
        let key = (n.id, n.key.clone());
        if let Some(&i) = self.finding_index.get(&key) {
            let f = &mut self.findings[i];
            f.occurrences += 1;
            merge_evidence(&mut f.evidence, &n.evidence, max);
            for d in n.details {
                if f.details.len() < 12 && !f.details.contains(&d) {
                    f.details.push(d);
                }
            }
            if n.status == Status::Confirmed && f.status != Status::Confirmed {
                let was = f.status;
                f.status = Status::Confirmed;
                f.severity = n.severity;
                f.culprit = n.culprit;
                f.subcase = n.subcase.or(f.subcase);
                f.decides = None;
                if !n.summary.is_empty() {
                    f.summary = n.summary;
                }
                f.amendments.push(match was {
                    Status::Cleared => "confirmed after all by later flows".to_owned(),
                    _ => "confirmed: the suspicion was decided by the flows cited".to_owned(),
                });
                let f = f.clone();
                self.fresh.push(f);
            }
            return;
        }
        let mut evidence = Vec::new();
        merge_evidence(&mut evidence, &n.evidence, max);
        let mut details = Vec::new();
        for d in n.details {
            if !details.contains(&d) {
                details.push(d);
            }
        }
        let f = Finding {
            id: n.id,
            key: n.key,
            severity: n.severity,
            culprit: n.culprit,
            status: n.status,
            subcase: n.subcase,
            summary: n.summary,
            evidence,
            occurrences: 1,
            hint: n.id.hint().to_owned(),
            details,
            decides: n.decides,
            amendments: Vec::new(),
        };
        self.finding_index.insert(key, self.findings.len());
        self.fresh.push(f.clone());
        self.findings.push(f);
    }

    /// Amends a stored finding: says what changed (`note`), optionally lowers or raises its
    /// severity and changes its status, and announces it again. Never removes it.
    pub(crate) fn amend(
        &mut self,
        id: Id,
        key: &str,
        note: String,
        severity: Option<Severity>,
        status: Option<Status>,
    ) -> bool {
        let Some(&i) = self.finding_index.get(&(id, key.to_owned())) else {
            return false;
        };
        let f = &mut self.findings[i];
        if f.amendments.contains(&note) {
            return false;
        }
        f.amendments.push(note);
        if let Some(s) = severity {
            f.severity = s;
        }
        if let Some(s) = status {
            f.status = s;
            if s != Status::Suspected {
                f.decides = None;
            }
        }
        let f = f.clone();
        self.fresh.push(f);
        true
    }

    /// The status of a stored finding.
    pub(crate) fn status_of(&self, id: Id, key: &str) -> Option<Status> {
        self.finding_index
            .get(&(id, key.to_owned()))
            .map(|&i| self.findings[i].status)
    }

    /// When a waiting decision becomes likely enough to show as suspected; `None` for the
    /// decisions that are taken before anyone would wait for them.
    fn suspect_at(&self, p: &Pending) -> Option<Micros> {
        Some(match p {
            Pending::TokenUnused { token, .. } => {
                self.tokens[*token].issued + us(self.opts.token_unused_suspect)
            }
            // A client that has the code exchanges it at once; a user in the browser takes
            // longer to come back.
            Pending::Exchange {
                at, code_returned, ..
            } => {
                at + if *code_returned {
                    3_000_000
                } else {
                    30_000_000
                }
            }
            Pending::Prm { created, .. } | Pending::AsDiscovery { created, .. } => {
                created + 5_000_000
            }
            Pending::Unreachable { deadline, .. } => {
                deadline - us(self.opts.exchange_timeout) + 10_000_000
            }
            Pending::StaleExpired { done, .. } => done + 3_000_000,
            Pending::StepUp { started, .. } => started + 5_000_000,
            // A client re-registers at once on invalid_client.
            Pending::StaleRegistration { done, .. } => done + 3_000_000,
            // A client that accepts the version goes on within milliseconds.
            Pending::VersionOffer { done, .. } => done + 3_000_000,
            Pending::Redirect { .. } | Pending::NoRegistration { .. } => return None,
        })
    }

    /// The suspected finding a waiting decision shows (same id and key as the confirmed one it
    /// may become), from the rules file that scheduled it.
    pub(crate) fn suspicion(&self, p: &Pending) -> Option<New> {
        match p {
            Pending::StaleRegistration { .. } => self.suspicion_registration(p),
            Pending::StaleExpired { .. } | Pending::StepUp { .. } | Pending::Redirect { .. } => {
                self.suspicion_mcp(p)
            }
            Pending::TokenUnused { .. } => self.suspicion_token(p),
            Pending::Exchange { .. } => self.suspicion_authorize(p),
            Pending::Prm { .. }
            | Pending::AsDiscovery { .. }
            | Pending::Unreachable { .. }
            | Pending::NoRegistration { .. } => self.suspicion_discovery(p),
            Pending::VersionOffer { .. } => self.suspicion_transport(p),
        }
    }

    /// Whether what a decision waits for has happened (why it is healthy), from the rules file
    /// that scheduled it.
    pub(crate) fn healthy(&self, p: &Pending) -> Option<String> {
        match p {
            Pending::StaleRegistration { .. } => self.healthy_registration(p),
            Pending::StaleExpired { .. } | Pending::StepUp { .. } | Pending::Redirect { .. } => {
                self.healthy_mcp(p)
            }
            Pending::TokenUnused { .. } => self.healthy_token(p),
            Pending::Exchange { .. } => self.healthy_authorize(p),
            Pending::Prm { .. }
            | Pending::AsDiscovery { .. }
            | Pending::Unreachable { .. }
            | Pending::NoRegistration { .. } => self.healthy_discovery(p),
            Pending::VersionOffer { .. } => self.healthy_transport(p),
        }
    }

    /// Decides a waiting decision, in the rules file that scheduled it.
    pub(crate) fn resolve(&mut self, p: Pending, due: bool) -> Decision {
        match p {
            Pending::StaleRegistration { .. } => self.resolve_registration(p, due),
            Pending::StaleExpired { .. } | Pending::StepUp { .. } | Pending::Redirect { .. } => {
                self.resolve_mcp(p, due)
            }
            Pending::TokenUnused { .. } => self.resolve_token(p, due),
            Pending::Exchange { .. } => self.resolve_authorize(p, due),
            Pending::Prm { .. }
            | Pending::AsDiscovery { .. }
            | Pending::Unreachable { .. }
            | Pending::NoRegistration { .. } => self.resolve_discovery(p, due),
            Pending::VersionOffer { .. } => self.resolve_transport(p, due),
        }
    }

    /// Schedules a decision that needs time or later flows.
    pub(crate) fn wait(&mut self, p: Pending) {
        self.pending.push(Wait {
            p,
            shown: false,
            next_look: 0,
        });
    }

    /// Changes the severity of a stored finding (when later flows settle it).
    pub(crate) fn set_severity(&mut self, id: Id, key: &str, sev: Severity) {
        if let Some(&i) = self.finding_index.get(&(id, key.to_owned())) {
            self.findings[i].severity = sev;
        }
    }

    pub(crate) fn endpoint_idx(&mut self, url: &Url) -> usize {
        let key = url.endpoint();
        if let Some(&i) = self.endpoint_index.get(&key) {
            return i;
        }
        self.known.mcp_endpoints.insert(key.clone());
        self.endpoints.push(Endpoint {
            url: url.clone(),
            key: key.clone(),
            lazy_ok: Vec::new(),
            challenged: None,
            last_bare_refused: None,
            negotiated: None,
            advertised_prm: Vec::new(),
            no_rm_401: Vec::new(),
            last_session: None,
            authenticated_uas: Vec::new(),
        });
        self.endpoint_index.insert(key, self.endpoints.len() - 1);
        self.endpoints.len() - 1
    }

    pub(crate) fn now(&self) -> Micros {
        self.now.unwrap_or(0)
    }

    fn summarize(&mut self, c: &Ctx<'_>) {
        let flow = c.flow;
        let url = match &c.url {
            Some(u) => u.endpoint(),
            None => flow.request.url.split('?').next().unwrap_or("").to_owned(),
        };
        let auth = if let Some(inj) = &flow.injected {
            Some(AuthInfo {
                scheme: "Bearer".into(),
                fingerprint: inj.fingerprint.clone(),
                injected: true,
            })
        } else {
            crate::util::authorization(flow).map(|(scheme, fingerprint)| AuthInfo {
                scheme,
                fingerprint,
                injected: false,
            })
        };
        let mcp = (c.role == Role::Mcp).then(|| McpInfo {
            endpoint: url.clone(),
            messages: c
                .rpc
                .iter()
                .map(|r| RpcMessage {
                    dir: r.dir,
                    kind: r.kind,
                    method: r.method.clone(),
                    id: r.id.clone(),
                    sse: r.sse,
                })
                .collect(),
            session: c.session.clone(),
            new_session: c.new_session.clone(),
            protocol_version: c.protocol_version.clone(),
            negotiated_version: c.negotiated.clone(),
        });
        let summary = FlowSummary {
            by_mcptap: flow.by_mcptap.clone(),
            id: c.id,
            started: c.started,
            role: c.role,
            method: flow.request.method.clone(),
            url,
            status: flow.response.as_ref().map(|r| r.status),
            synthetic: c.synthetic,
            error: flow.error.as_ref().map(|e| e.kind.as_str()),
            auth,
            mcp,
            issued_token: self
                .tokens
                .last()
                .filter(|t| t.flow == c.id)
                .map(|t| t.fp.clone()),
        };
        if let Some(origin) = c.url.as_ref().map(|u| u.origin()) {
            if c.role.is_oauth() && c.role != Role::PrmDiscovery {
                self.oauth_origins.insert(origin.clone());
            }
            if summary.status.is_some_and(|s| (200..300).contains(&s)) && !summary.synthetic {
                self.last_ok
                    .insert(origin, (summary.id, summary.url.clone()));
            }
        }
        if self.opts.list_flows {
            self.flows.push(summary);
        } else {
            if matches!(c.role, Role::Mcp | Role::McpPreflight) {
                self.unlisted_mcp += 1;
            } else {
                self.unlisted += 1;
            }
            self.last_unlisted = Some(summary);
        }
    }

    /// Shows a waiting decision as suspected once that is likely, unless what it waits for has
    /// already happened.
    fn show_suspicion(&mut self, w: &mut Wait, now: Micros) {
        if w.shown || now < w.next_look || self.suspect_at(&w.p).is_none_or(|at| at > now) {
            return;
        }
        match self
            .healthy(&w.p)
            .is_none()
            .then(|| self.suspicion(&w.p))
            .flatten()
        {
            Some(n) => {
                w.shown = true;
                self.emit(n);
            }
            None => w.next_look = now + 1_000_000,
        }
    }

    fn show_suspicions(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = self.now();
        let mut pending = std::mem::take(&mut self.pending);
        for w in &mut pending {
            self.show_suspicion(w, now);
        }
        pending.append(&mut self.pending);
        self.pending = pending;
    }

    fn run_pending(&mut self, at_end: bool, moved_on: Option<(Role, Micros)>) {
        if self.pending.is_empty() {
            return;
        }
        let now = self.now();
        let pending = std::mem::take(&mut self.pending);
        let mut keep = Vec::new();
        for mut w in pending {
            let due = w.p.deadline() <= now;
            let forced = match (&w.p, moved_on) {
                (Pending::Prm { created, .. }, Some((_, started))) => started > *created,
                (Pending::AsDiscovery { created, .. }, Some((role, started))) => {
                    started > *created && role != Role::AsMetadata
                }
                _ => false,
            };
            if !(due || forced || at_end) {
                self.show_suspicion(&mut w, now);
                keep.push(w);
                continue;
            }
            let suspicion = self.suspicion(&w.p);
            match self.resolve(w.p, due || forced) {
                Decision::Wait(p) => keep.push(Wait {
                    p,
                    shown: w.shown,
                    next_look: w.next_look,
                }),
                Decision::Done => {}
                Decision::Healthy(why) => {
                    if let Some(n) = suspicion.filter(|_| w.shown) {
                        if self.status_of(n.id, &n.key) == Some(Status::Suspected) {
                            self.amend(
                                n.id,
                                &n.key,
                                format!("cleared: {why}"),
                                Some(Severity::Info),
                                Some(Status::Cleared),
                            );
                        }
                    }
                }
                Decision::Open { why, show } => match suspicion {
                    Some(n) if w.shown || show => {
                        let (id, k) = (n.id, n.key.clone());
                        if !w.shown {
                            self.emit(n);
                        }
                        if self.status_of(id, &k) == Some(Status::Suspected) {
                            self.amend(id, &k, why, None, None);
                        }
                    }
                    _ => {
                        if !self.vis.notes.contains(&why) {
                            self.vis.notes.push(why);
                        }
                    }
                },
            }
        }
        keep.append(&mut self.pending);
        self.pending = keep;
    }
}

fn merge_evidence(into: &mut Vec<FlowId>, add: &[FlowId], max: usize) {
    for id in add {
        if let Err(pos) = into.binary_search(id) {
            into.insert(pos, *id);
        }
    }
    into.truncate(max);
}

pub(crate) fn sort_findings(f: &mut [Finding]) {
    f.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.evidence.first().cmp(&b.evidence.first()))
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// The `aud` claim as a list.
pub(crate) fn jwt_aud(j: &JwtInfo) -> Vec<String> {
    match j.claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}
