//! Inject mode (`--inject-token`): when an MCP client obtained a token but sends a request to
//! the MCP endpoint without `Authorization`, add the token it was issued, so the server's answer
//! shows who is at fault.
//!
//! The rules keep tokens from leaking (see `docs/inject.md`): only a *missing* header is filled,
//! only for a request whose URL is the protected resource named in the server's metadata (same
//! scheme, host, port and path, or a path below it, read as sent and with dot-segments removed
//! alike) and whose `Host` names that origin, only with a Bearer token that the
//! authorization server named by that metadata issued *for that resource*, never expired, never
//! over plain HTTP except to loopback. Raw tokens live only in this process's memory; flows
//! record the fingerprint.
//!
//! Refresh tokens are never used unless `--inject-refresh` is given ([`Injector::with_refresh`]):
//! then, when no unexpired token qualifies but a qualifying token came with a refresh token,
//! mcptap refreshes it itself at the token endpoint the client used ([`Injector::plan_refresh`],
//! [`Injector::refresh_done`]; the HTTP exchange is in `refresh.rs`). That rotates the
//! refresh token on servers that rotate, so the client's own copy may stop working.

pub use mcptap_flow::oauth::canonical;
use mcptap_flow::oauth::{self, form_value, Url, WellKnown};
use mcptap_flow::{redact, Flow, FlowId, Micros};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Tokens expiring within this margin are not injected (clock skew, request latency).
const EXPIRY_SKEW_US: i64 = 60 * 1_000_000;

/// How many failed refresh tokens are remembered; beyond that the oldest failure is forgotten
/// (and that refresh token could be tried once more).
const MAX_FAILED_REFRESH: usize = 1024;

/// A token seen issued by a token endpoint.
#[derive(Debug, Clone)]
struct Issued {
    token: String,
    fingerprint: String,
    flow: FlowId,
    issued_at: Micros,
    /// `None` when neither `expires_in` nor a JWT `exp` told.
    expires_at: Option<Micros>,
    /// The authorization server (issuer from its metadata, else the token endpoint's origin).
    issuer: String,
    /// `resource` sent in the token request, canonicalised.
    resource: Option<String>,
    scope: Option<Vec<String>>,
    /// The refresh token that came with it and how to use it (`--inject-refresh` only).
    refresh: Option<RefreshCred>,
    /// True when mcptap itself got this token by refreshing (see [`usable`]).
    by_refresh: bool,
}

/// A refresh token and what the client sent to the token endpoint in the request that got it.
#[derive(Clone)]
struct RefreshCred {
    token: String,
    /// The token endpoint URL as the client used it (the flow's URL).
    endpoint: String,
    client_id: Option<String>,
    /// `client_secret` form field (client_secret_post).
    client_secret: Option<String>,
    /// The raw `Authorization: Basic …` header value (client_secret_basic).
    basic: Option<String>,
    /// `resource` and `scope` as the client sent them.
    resource: Option<String>,
    scope: Option<String>,
}

impl std::fmt::Debug for RefreshCred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshCred")
            .field("token", &redact::fingerprint(&self.token))
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Protected-resource metadata seen for a resource.
#[derive(Debug, Clone, Default)]
struct Resource {
    authorization_servers: Vec<String>,
    /// The scope of the last challenge for this resource.
    challenged_scope: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct State {
    tokens: Vec<Issued>,
    /// Canonical resource URL → what its metadata said.
    resources: HashMap<String, Resource>,
    /// Token endpoint URL → issuer, from authorization-server metadata.
    token_endpoints: HashMap<String, String>,
    /// Fingerprints of refresh tokens whose refresh by mcptap failed: not tried again (the
    /// [`MAX_FAILED_REFRESH`] most recent).
    failed_refresh: FailedRefresh,
    /// Fingerprints of refresh tokens being refreshed right now → closed when done.
    refreshing: HashMap<String, tokio::sync::watch::Receiver<()>>,
}

/// Fingerprints of refresh tokens whose refresh failed: the [`MAX_FAILED_REFRESH`] most recent.
#[derive(Debug, Default)]
struct FailedRefresh {
    set: HashSet<String>,
    /// The same fingerprints, oldest first.
    order: VecDeque<String>,
}

impl FailedRefresh {
    fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    /// Remembers `key`, forgetting the oldest failures beyond [`MAX_FAILED_REFRESH`].
    fn insert(&mut self, key: String) {
        if !self.set.insert(key.clone()) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > MAX_FAILED_REFRESH {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// Why a bare request was not given a token; recorded on its flow as `not_injected` (never
/// with a secret: URLs and host names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No protected-resource metadata names this URL.
    NotAResource,
    /// A token exists for this resource but differs by a trailing slash only.
    SlashOnly(String),
    /// No unexpired Bearer token was issued for this resource by its authorization server.
    NoToken,
    /// Plain HTTP to a host that is not loopback.
    Insecure,
    /// The token has characters a header value cannot carry.
    Unsendable,
    /// The path and its normalised form (dot-segments removed, `%2e` decoded, RFC 3986
    /// §5.2.4) are not both the resource: a server that normalises serves another endpoint
    /// than one that does not (`/mcp/../other`, `/other/../mcp`).
    DotSegments {
        /// The path once normalised.
        normalised: String,
    },
    /// The path holds a separator a server may or may not read as one: an encoded slash or
    /// backslash (`%2f`, `%5c`), a backslash, or a dot-segment with parameters (`..;x`).
    AmbiguousPath,
    /// The `Host` header (or HTTP/2 `:authority`) names another origin than the one the
    /// request goes to (inside a tunnel, the CONNECT target).
    OtherHost {
        /// What the request named.
        named: String,
        /// The origin it goes to.
        origin: String,
    },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotAResource => f.write_str("no protected-resource metadata names this URL"),
            Skip::SlashOnly(r) => write!(
                f,
                "the token was issued for {r}, which differs from this URL by a trailing slash only"
            ),
            Skip::NoToken => f.write_str(
                "no unexpired Bearer token was issued for this resource by its authorization server",
            ),
            Skip::Insecure => f.write_str("plain HTTP to a host that is not loopback"),
            Skip::Unsendable => {
                f.write_str("the token has characters a header value cannot carry")
            }
            Skip::DotSegments { normalised } => write!(
                f,
                "the path is {normalised} once dot-segments are removed: not the same endpoint \
                 as the path sent"
            ),
            Skip::AmbiguousPath => f.write_str(
                "the path holds an encoded slash or backslash (%2f, %5c), a backslash or a \
                 dot-segment with parameters: a server may read it as another endpoint",
            ),
            Skip::OtherHost { named, origin } => write!(
                f,
                "the request names the host {named}, not {origin} where it goes"
            ),
        }
    }
}

/// What was injected.
#[derive(Debug, Clone)]
pub struct Pick {
    /// The `Authorization` value to add.
    pub header: String,
    /// Fingerprint of the token.
    pub fingerprint: String,
    /// The flow that issued it.
    pub token_flow: FlowId,
}

/// Watches OAuth traffic and hands out tokens for bare MCP requests.
#[derive(Debug, Default)]
pub struct Injector {
    state: Mutex<State>,
    /// `--inject-refresh`: keep refresh tokens and refresh with them.
    refresh: bool,
}

/// What to do about a bare request that has no usable token but a refreshable one.
pub enum Refresh {
    /// Refresh now with this job (this caller holds the only one for its refresh token).
    Go(Box<RefreshJob>),
    /// Another request is refreshing the same refresh token: wait for this to close, then
    /// pick again.
    Wait(tokio::sync::watch::Receiver<()>),
}

/// One refresh to make: POST `body` (form-encoded) to `endpoint`, with `basic` as
/// `Authorization` when set. Dropping it ends the single-flight slot of its refresh token.
pub struct RefreshJob {
    inj: Arc<Injector>,
    /// Fingerprint of the refresh token used.
    pub key: String,
    /// The token endpoint the client used for the token being refreshed.
    pub endpoint: String,
    /// `grant_type=refresh_token&refresh_token=…&client_id=…` and what else the client sent.
    pub body: String,
    /// The client's `Authorization: Basic …` at the token endpoint, if it used one.
    pub basic: Option<String>,
    old: RefreshCred,
    issuer: String,
    resource: Option<String>,
    scope: Option<Vec<String>>,
    _done: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for RefreshJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshJob")
            .field("key", &self.key)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for RefreshJob {
    fn drop(&mut self) {
        let mut st = self.inj.state.lock().unwrap_or_else(|e| e.into_inner());
        st.refreshing.remove(&self.key);
    }
}

/// The path of `path` (as sent, percent-encoded) with `%2e`/`%2E` decoded and dot-segments
/// removed (RFC 3986 §5.2.4), or [`Skip::AmbiguousPath`] when it holds a separator that servers
/// read differently: `%2f`, `%5c`, `\`, or `.`/`..` followed by `;parameters`. An encoded
/// slash is never decoded, so it never makes a path the endpoint.
pub fn normalise_path(path: &str) -> Result<String, Skip> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(Skip::AmbiguousPath);
    }
    let decoded = path.replace("%2e", ".").replace("%2E", ".");
    let segments: Vec<&str> = decoded
        .strip_prefix('/')
        .unwrap_or(&decoded)
        .split('/')
        .collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if last {
                    out.push(""); // `/a/b/..` is `/a/`
                }
            }
            s if matches!(s.split(';').next(), Some("." | "..")) => {
                return Err(Skip::AmbiguousPath)
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// `Ok` when every authority a request names (its `Host` headers, the authority of an
/// absolute-form or HTTP/2 request target) is the origin of `url`, where it is sent: compared
/// as origins (scheme of `url`, host case-insensitive, default port or none alike).
pub fn check_authority<'a>(
    url: &str,
    named: impl IntoIterator<Item = &'a str>,
) -> Result<(), Skip> {
    let origin = origin_of(url).ok_or(Skip::NotAResource)?;
    let scheme = &origin[..origin.find("://").unwrap_or(0)];
    for a in named {
        let same = !a.contains(['/', '?', '#', '@'])
            && origin_of(&format!("{scheme}://{}/", a.trim())).as_deref() == Some(&origin);
        if !same {
            return Err(Skip::OtherHost {
                named: a.chars().take(200).collect(),
                origin,
            });
        }
    }
    Ok(())
}

fn origin_of(url: &str) -> Option<String> {
    Url::parse(url).map(|u| u.origin())
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

fn is_loopback_host(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn json(bytes: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(bytes).ok()
}

/// Expiry of `token` issued at `issued_at`: `expires_in` (numbers or strings), else JWT `exp`.
fn expiry(doc: &serde_json::Value, token: &str, issued_at: Micros) -> Option<Micros> {
    oauth::expires_at(
        oauth::expires_in(doc),
        oauth::decode_jwt(token).as_ref(),
        issued_at,
    )
}

/// Whether `t` may still be injected at `now`: not expired, with [`EXPIRY_SKEW_US`] of margin —
/// or, for a token mcptap itself just got by refreshing, half its lifetime when that is shorter
/// (mcptap knows when it got it; otherwise a token living less than the margin would be
/// refreshed again for every request).
fn usable(t: &Issued, now: Micros) -> bool {
    let Some(e) = t.expires_at else {
        return true;
    };
    let skew = if t.by_refresh {
        EXPIRY_SKEW_US.min((e - t.issued_at).max(0) / 2)
    } else {
        EXPIRY_SKEW_US
    };
    e - skew > now
}

/// Whether a request may go to this token endpoint: https, or plain http to loopback.
pub fn endpoint_allowed(url: &str) -> bool {
    match canonical(url) {
        Some(c) if c.starts_with("https://") => true,
        Some(c) if c.starts_with("http://") => is_loopback_host(url),
        _ => false,
    }
}

fn scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The scope a `401`/`403` asks for: the `scope` parameter of the first challenge that has one.
fn challenged_scope<'a>(www_authenticate: impl Iterator<Item = &'a str>) -> Option<String> {
    oauth::parse_challenges(www_authenticate)
        .iter()
        .find_map(|c| c.param("scope").map(str::to_owned))
}

impl Injector {
    /// A new, empty injector.
    pub fn new() -> Injector {
        Injector::default()
    }

    /// A new injector that, when `refresh` (`--inject-refresh`), keeps refresh tokens and
    /// refreshes with them.
    pub fn with_refresh(refresh: bool) -> Injector {
        Injector {
            refresh,
            ..Injector::default()
        }
    }

    /// True under `--inject-refresh`.
    pub fn refreshes(&self) -> bool {
        self.refresh
    }

    /// Learns from a finished flow (raw, before redaction): metadata, challenges and issued
    /// tokens.
    pub fn observe(&self, flow: &Flow) {
        let Some(resp) = flow.response.as_ref().filter(|r| !r.synthetic) else {
            return;
        };
        let url = &flow.request.url;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A challenge names the scope the resource wants.
        if matches!(resp.status, 401 | 403) {
            if let Some(c) = canonical(url) {
                if let Some(scope) = challenged_scope(resp.headers.get_all("www-authenticate")) {
                    st.resources.entry(c).or_default().challenged_scope = Some(scopes(&scope));
                }
            }
            return;
        }
        if resp.status != 200 {
            return;
        }
        let metadata = WellKnown::of_url(url);
        if metadata == Some(WellKnown::ProtectedResource) {
            if let Some(doc) = json(&resp.body.bytes) {
                if let (Some(res), Some(servers)) = (
                    doc.get("resource")
                        .and_then(|v| v.as_str())
                        .and_then(canonical),
                    doc.get("authorization_servers").and_then(|v| v.as_array()),
                ) {
                    let entry = st.resources.entry(res).or_default();
                    entry.authorization_servers = servers
                        .iter()
                        .filter_map(|s| s.as_str())
                        .map(|s| trim_slash(s).to_owned())
                        .collect();
                }
            }
            return;
        }
        if metadata.is_some_and(WellKnown::is_server_metadata) {
            if let Some(doc) = json(&resp.body.bytes) {
                if let (Some(issuer), Some(te)) = (
                    doc.get("issuer").and_then(|v| v.as_str()),
                    doc.get("token_endpoint")
                        .and_then(|v| v.as_str())
                        .and_then(canonical),
                ) {
                    st.token_endpoints.insert(te, trim_slash(issuer).to_owned());
                }
            }
            return;
        }
        if flow.request.method != "POST" {
            return;
        }
        let Some(doc) = json(&resp.body.bytes) else {
            return;
        };
        // DPoP or other schemes, empty tokens, redacted input: never injected.
        let Some(token) = oauth::bearer_access_token(&doc) else {
            return;
        };
        let issued_at = flow.timings.response_head.unwrap_or(flow.timings.started);
        let expires_at = expiry(&doc, token, issued_at);
        let body = &flow.request.body.bytes;
        let endpoint = canonical(url).unwrap_or_default();
        let issuer = st
            .token_endpoints
            .get(&endpoint)
            .cloned()
            .or_else(|| origin_of(url))
            .unwrap_or_default();
        let scope = doc
            .get("scope")
            .and_then(|v| v.as_str())
            .map(scopes)
            .or_else(|| form_value(body, "scope").map(|s| scopes(&s)));
        let refresh = if self.refresh {
            // A refresh token the client used itself is spent (rotated) or, when the server
            // sent none, still the current one: it moves to the new token.
            let used = (form_value(body, "grant_type").as_deref() == Some("refresh_token"))
                .then(|| form_value(body, "refresh_token"))
                .flatten();
            if let Some(used) = &used {
                for t in st.tokens.iter_mut() {
                    if t.refresh.as_ref().is_some_and(|r| &r.token == used) {
                        t.refresh = None;
                    }
                }
            }
            let fresh = doc
                .get("refresh_token")
                .and_then(|v| v.as_str())
                .filter(|r| !r.is_empty() && redact::parse_redacted(r).is_none())
                .map(str::to_owned)
                .or(used);
            fresh.map(|token| RefreshCred {
                token,
                endpoint: url.clone(),
                client_id: form_value(body, "client_id"),
                client_secret: form_value(body, "client_secret"),
                basic: flow
                    .request
                    .headers
                    .get("authorization")
                    .filter(|a| a.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("basic ")))
                    .map(str::to_owned),
                resource: form_value(body, "resource"),
                scope: form_value(body, "scope"),
            })
        } else {
            None // refresh tokens are never kept without --inject-refresh
        };
        st.tokens.push(Issued {
            fingerprint: redact::fingerprint(token),
            token: token.to_owned(),
            flow: flow.id,
            issued_at,
            expires_at,
            issuer,
            resource: form_value(body, "resource").and_then(|r| canonical(&r)),
            scope,
            refresh,
            by_refresh: false,
        });
        // Bounded: only the newest tokens matter.
        if st.tokens.len() > 256 {
            st.tokens.remove(0);
        }
    }

    /// The tokens that qualify for a bare request to `url` under every rule but expiry
    /// (resource, issuer, audience, Bearer, challenged scope), newest last; or why none can.
    fn candidates<'a>(st: &'a State, url: &str) -> Result<(Vec<&'a Issued>, Option<String>), Skip> {
        let target = canonical(url).ok_or(Skip::NotAResource)?;
        if target.starts_with("http://") && !is_loopback_host(url) {
            return Err(Skip::Insecure);
        }
        // The URL as a normalising server reads it: the same origin, the path without
        // dot-segments. Both readings must be the resource.
        let host_at = target.find("://").map_or(0, |i| i + 3);
        let path_at = target[host_at..]
            .find('/')
            .map_or(target.len(), |i| host_at + i);
        let normalised = normalise_path(&target[path_at..])?;
        let normal_target = format!("{}{normalised}", &target[..path_at]);
        let covers = |r: &str, t: &str| t == r || t.starts_with(&format!("{}/", trim_slash(r)));
        let known = |(_, m): &(&String, &Resource)| !m.authorization_servers.is_empty();
        // The resource this URL belongs to: its exact URL or a path prefix at a segment boundary.
        let raw_match = st
            .resources
            .iter()
            .filter(known)
            .filter(|(r, _)| covers(r, &target))
            .max_by_key(|(r, _)| r.len());
        let normal_match = st
            .resources
            .iter()
            .filter(known)
            .filter(|(r, _)| covers(r, &normal_target))
            .max_by_key(|(r, _)| r.len());
        if raw_match.map(|(r, _)| r) != normal_match.map(|(r, _)| r) {
            return Err(Skip::DotSegments { normalised });
        }
        let (resource, meta) = raw_match.ok_or_else(|| {
            // Say so when only a trailing slash stands between the URL and a resource.
            match st
                .resources
                .keys()
                .find(|r| trim_slash(r) == trim_slash(&target))
            {
                Some(r) => Skip::SlashOnly(r.clone()),
                None => Skip::NotAResource,
            }
        })?;
        let mut slash_only = None;
        let mut found: Vec<&Issued> = st
            .tokens
            .iter()
            .filter(|t| meta.authorization_servers.contains(&t.issuer))
            .filter(|t| match &t.resource {
                Some(r) if r == resource => true,
                Some(r) if trim_slash(r) == trim_slash(resource) => {
                    slash_only = Some(r.clone());
                    false
                }
                Some(_) => false,
                // No `resource` at /token: the metadata's authorization server issued it, and
                // the client had no other resource in mind.
                None => true,
            })
            .filter(|t| match (&meta.challenged_scope, &t.scope) {
                (Some(want), Some(have)) => want.iter().all(|w| have.contains(w)),
                _ => true,
            })
            .collect();
        found.sort_by_key(|t| t.issued_at);
        Ok((found, slash_only))
    }

    /// A token for a bare request to `url` at `now`, or why not.
    pub fn pick(&self, url: &str, now: Micros) -> Result<Pick, Skip> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (found, slash_only) = Self::candidates(&st, url)?;
        match found.into_iter().rev().find(|t| usable(t, now)) {
            Some(t) => Ok(Pick {
                header: format!("Bearer {}", t.token),
                fingerprint: t.fingerprint.clone(),
                token_flow: t.flow,
            }),
            None => Err(slash_only.map(Skip::SlashOnly).unwrap_or(Skip::NoToken)),
        }
    }

    /// `--inject-refresh`, after [`Injector::pick`] found no usable token for `url`: the newest
    /// qualifying token that has a refresh token (not one whose refresh failed) is to be
    /// refreshed — by this caller ([`Refresh::Go`]), or by another one already doing it
    /// ([`Refresh::Wait`]). `None` without the flag, without such a token, or when the token
    /// endpoint the client used is neither https nor loopback.
    pub fn plan_refresh(self: &Arc<Self>, url: &str) -> Option<Refresh> {
        if !self.refresh {
            return None;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (found, _) = Self::candidates(&st, url).ok()?;
        let t = found.into_iter().rev().find(|t| {
            t.refresh
                .as_ref()
                .is_some_and(|r| !st.failed_refresh.contains(&redact::fingerprint(&r.token)))
        })?;
        let cred = t.refresh.clone()?;
        let key = redact::fingerprint(&cred.token);
        if let Some(rx) = st.refreshing.get(&key) {
            return Some(Refresh::Wait(rx.clone()));
        }
        if !endpoint_allowed(&cred.endpoint) {
            return None;
        }
        let mut body = format!(
            "grant_type=refresh_token&refresh_token={}",
            oauth::percent_encode(&cred.token)
        );
        for (k, v) in [
            ("client_id", &cred.client_id),
            ("client_secret", &cred.client_secret),
            ("resource", &cred.resource),
            ("scope", &cred.scope),
        ] {
            if let Some(v) = v {
                body.push_str(&format!("&{k}={}", oauth::percent_encode(v)));
            }
        }
        let (issuer, resource, scope) = (t.issuer.clone(), t.resource.clone(), t.scope.clone());
        let (tx, rx) = tokio::sync::watch::channel(());
        st.refreshing.insert(key.clone(), rx);
        Some(Refresh::Go(Box::new(RefreshJob {
            inj: self.clone(),
            key,
            endpoint: cred.endpoint.clone(),
            body,
            basic: cred.basic.clone(),
            old: cred,
            issuer,
            resource,
            scope,
            _done: tx,
        })))
    }

    /// Learns the outcome of `job`: the token response body when the endpoint answered `200`
    /// (`None` otherwise), received at `at` in flow `flow`. A new Bearer token joins the others
    /// with the rotated refresh token (or the old one when the server sent none), and the old
    /// refresh token is no longer used; a failure is remembered and that refresh token is not
    /// tried again. Returns what to inject into the request to `url` now, if anything.
    pub fn refresh_done(
        &self,
        job: Box<RefreshJob>,
        response: Option<&[u8]>,
        flow: FlowId,
        at: Micros,
        url: &str,
    ) -> Option<Pick> {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let doc = response.and_then(json);
            let token = doc.as_ref().and_then(oauth::bearer_access_token);
            match (doc.as_ref(), token) {
                (Some(doc), Some(token)) => {
                    for t in st.tokens.iter_mut() {
                        if t.refresh.as_ref().is_some_and(|r| r.token == job.old.token) {
                            t.refresh = None;
                        }
                    }
                    let mut cred = job.old.clone();
                    if let Some(rotated) = doc
                        .get("refresh_token")
                        .and_then(|v| v.as_str())
                        .filter(|r| !r.is_empty())
                    {
                        cred.token = rotated.to_owned();
                    }
                    st.tokens.push(Issued {
                        fingerprint: redact::fingerprint(token),
                        token: token.to_owned(),
                        flow,
                        issued_at: at,
                        expires_at: expiry(doc, token, at),
                        issuer: job.issuer.clone(),
                        resource: job.resource.clone(),
                        scope: doc
                            .get("scope")
                            .and_then(|v| v.as_str())
                            .map(scopes)
                            .or_else(|| job.scope.clone()),
                        refresh: Some(cred),
                        by_refresh: true,
                    });
                    if st.tokens.len() > 256 {
                        st.tokens.remove(0);
                    }
                }
                _ => {
                    st.failed_refresh.insert(job.key.clone());
                }
            }
        }
        drop(job); // wakes the requests waiting for this refresh
        self.pick(url, at).ok()
    }
}

pub(crate) mod hook;

#[cfg(test)]
mod tests;
