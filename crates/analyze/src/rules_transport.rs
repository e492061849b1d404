//! Rules about the HTTP transport around MCP requests, beyond the session headers of
//! `transport-header-violation`: the deployment's Host/Origin guard (`host-origin-rejected`),
//! event streams held back on the way (`sse-buffered`), challenges naming several metadata
//! documents (`challenge-ambiguous`), protocol-version negotiation
//! (`version-negotiation-failed`) and the 2026-07-28 request headers
//! (`stateless-header-violation`). Each is decided from the flow that completes its proof,
//! except whether a client goes on after an `initialize` answered with another version than it
//! asked, which waits for the client's next request ([`Pending::VersionOffer`]).

use crate::catalog::FindingId as Id;
use crate::classify::{meta_protocol_version, Ctx, Rpc};
use crate::engine::{Analyzer, Decision, New, Pending};
use crate::model::{Culprit, Role, RpcDirection, RpcKind, Severity};
use crate::rules_mcp::body_mentions;
use crate::util::{self, Challenge};
use base64::Engine as _;
use mcptap_flow::{Flow, FlowId, Micros};
use serde_json::Value;
use std::collections::HashMap;

/// The first protocol version of the stateless transport (`Mcp-Method`, `_meta` envelope).
const STATELESS_SINCE: &str = "2026-07-28";
/// JSON-RPC error `HeaderMismatch` (2026-07-28).
const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC error `UnsupportedProtocolVersionError` (2026-07-28).
const UNSUPPORTED_VERSION: i64 = -32022;
/// Bound on each table below, so a proxy that runs for days does not grow.
const MAX_STATE: usize = 256;

/// What the transport rules remember between flows.
#[derive(Debug, Default)]
pub(crate) struct TransportState {
    /// (endpoint, version) → the flow that shows the server serves that version.
    supported: HashMap<(String, String), FlowId>,
    /// `initialize` answered with another version than requested, not (yet) shown to be
    /// wrong: (endpoint, requested, answered, flow).
    offered_other: Vec<(String, String, String, FlowId)>,
    /// The first `resource_metadata` URL of an ambiguous challenge → (MCP endpoint, flow).
    ambiguous_first: HashMap<String, (String, FlowId)>,
    /// (endpoint, client) → the latest request after the handshake: (flow, started).
    went_on: HashMap<(String, Option<String>), (FlowId, Micros)>,
}

/// Phrases in a refusal body that name the Host guard or the Origin guard.
const HOST_WORDS: &[&str] = &[
    "invalid host",
    "host header",
    "host not allowed",
    "host is not allowed",
    "disallowed host",
    "untrusted host",
    "allowed_hosts",
    "allowed hosts",
    "dns rebinding",
    "dns-rebinding",
];
const ORIGIN_WORDS: &[&str] = &[
    "invalid origin",
    "origin header",
    "origin not allowed",
    "origin is not allowed",
    "disallowed origin",
    "untrusted origin",
    "allowed_origins",
    "allowed origins",
];

impl Analyzer {
    /// The transport rules for one MCP flow (called from `on_mcp`).
    pub(crate) fn check_transport(&mut self, c: &Ctx<'_>, ep: &str, challenges: &[Challenge]) {
        self.check_host_origin(c, ep, challenges);
        self.check_sse_buffered(c, ep);
        self.check_challenge_ambiguous(c, ep, challenges);
        self.check_version_negotiation(c, ep);
        self.check_stateless_headers(c, ep);
    }

    /// `host-origin-rejected`: 421, or 403 whose body names the Host or Origin guard.
    fn check_host_origin(&mut self, c: &Ctx<'_>, ep: &str, challenges: &[Challenge]) {
        if self.edge_now {
            return;
        }
        let origin_hdr = c.flow.request.headers.get("origin");
        let guard = match c.status {
            Some(421) => "host",
            // A token or scope refusal says so in its challenge; that is not this guard.
            Some(403) if challenges.iter().any(|ch| ch.param("error").is_some()) => return,
            Some(403) if origin_hdr.is_some() && body_mentions(c, ORIGIN_WORDS) => "origin",
            Some(403) if body_mentions(c, HOST_WORDS) => "host",
            _ => return,
        };
        let status = c.status.unwrap_or(0);
        let host = c
            .flow
            .request
            .headers
            .get("host")
            .map(str::to_owned)
            .or_else(|| c.url.as_ref().map(|u| u.origin()))
            .unwrap_or_default();
        let origin = c.url.as_ref().map(|u| u.origin()).unwrap_or_default();
        // "While health checks pass": the same origin answered something else 2xx.
        let healthy = self.last_ok.get(&origin).cloned();
        let up = match &healthy {
            Some((id, url)) => format!(" The server is up: {url} was answered 2xx in {id}."),
            None => String::new(),
        };
        let text = if guard == "host" {
            format!(
                "{ep} refused {} in {} with {status} because of its Host ({host:?}): a DNS-rebinding guard that does not know the name it is reached by, typically behind a tunnel or reverse proxy that rewrites Host, or with an allowed-hosts list that lacks the public name.{up}",
                c.kind_label(),
                c.id
            )
        } else {
            format!(
                "{ep} refused {} in {} with 403 because of its Origin ({:?}): the server's allowed origins do not list it. If this is your client, add its origin; if not, the guard works as intended.{up}",
                c.kind_label(),
                c.id,
                origin_hdr.unwrap_or_default()
            )
        };
        let mut n = New::finding(
            Id::HostOriginRejected,
            format!("{ep} {guard}"),
            Severity::High,
            Culprit::Server,
        )
        .sub(guard)
        .say(text)
        .ev(healthy.map(|(id, _)| id).into_iter().chain([c.id]));
        if let Some(x) = c.flow.request.headers.get("x-forwarded-host") {
            n = n.detail(format!(
                "the request carried X-Forwarded-Host {x:?}: the client asked for that name, a proxy rewrote Host to {host:?}"
            ));
        }
        if let Some(b) = body_snippet(c.flow) {
            n = n.detail(format!("response body: {b}"));
        }
        if self.opts.reverse_proxy {
            n = n.detail("mcptap in reverse mode sends the upstream's own name as Host and the client's in X-Forwarded-Host: allow the upstream's name (or trust X-Forwarded-Host) in the guard");
        }
        self.emit(n);
    }

    /// `sse-buffered`: compression on an event stream, or events held back until the close.
    fn check_sse_buffered(&mut self, c: &Ctx<'_>, ep: &str) {
        let flow = c.flow;
        let Some(resp) = flow.response.as_ref().filter(|r| !r.synthetic) else {
            return;
        };
        if !flow.is_sse() {
            return;
        }
        let via = intermediary(flow);
        let culprit = if via.is_some() {
            Culprit::Edge
        } else {
            Culprit::Server
        };
        if let Some(enc) = util::response_header(flow, "content-encoding")
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
        {
            let mut n = New::finding(Id::SseBuffered, format!("{ep} compressed"), Severity::High, culprit)
                .sub("compressed")
                .say(format!(
                    "The event stream of {} ({}) is sent with Content-Encoding {enc}: a compressor holds events until its block fills or the stream ends, so the client sees them late or times out.",
                    c.id,
                    c.kind_label()
                ))
                .ev([c.id]);
            if let Some(v) = &via {
                n = n.detail(format!("an intermediary answered: {v}"));
            }
            self.emit(n);
            return;
        }
        // Per-event arrival times, as recorded where mcptap stood (an imported file without
        // them has none: nothing to judge).
        let (Some(head), Some(end)) = (flow.timings.response_head, flow.timings.finished) else {
            return;
        };
        let events = &resp.sse;
        if events.len() < 2 || events.iter().any(|e| e.at < head || e.at > end) {
            return;
        }
        let first = events.iter().map(|e| e.at).min().unwrap_or(head);
        let last = events.iter().map(|e| e.at).max().unwrap_or(end);
        let burst = last - first <= 100_000 && end - last <= 100_000;
        if !burst || first - head < 1_000_000 {
            return;
        }
        // A stream that exists to deliver events as they happen (the GET stream,
        // subscriptions/listen) or progress notifications, all delivered at the close, were
        // held back; other responses may just be slow work that ends with several messages.
        let long_lived = flow.request.method.eq_ignore_ascii_case("GET")
            || c.has_method(&["subscriptions/listen"]);
        let progress = c.rpc.iter().any(|r| {
            r.dir == RpcDirection::ServerToClient
                && r.method.as_deref() == Some("notifications/progress")
        });
        let mut n = New::finding(
            Id::SseBuffered,
            format!("{ep} burst"),
            if long_lived || progress {
                Severity::High
            } else {
                Severity::Medium
            },
            culprit,
        )
        .sub("burst-at-close")
        .say(format!(
            "The {} events of {} ({}) all arrived within {} at the end of the stream, {} after the response headers: something between the server and mcptap holds the stream back and releases it when it closes.",
            events.len(),
            c.id,
            c.kind_label(),
            util::secs(last - first),
            util::secs(first - head)
        ))
        .ev([c.id]);
        if !(long_lived || progress) {
            n = n.suspect("mcptap in reverse mode right in front of the server shows whether the server sent the events spread out (buffered on the way: confirmed) or at once (slow work: not this)");
        }
        if let Some(v) = &via {
            n = n.detail(format!("an intermediary answered: {v}"));
        }
        if via.as_deref().is_some_and(|v| v.contains("nginx"))
            && util::response_header(flow, "x-accel-buffering")
                .is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"))
        {
            n = n.detail("nginx answered without `X-Accel-Buffering: no`, which turns its response buffering off for this stream");
        }
        self.emit(n);
    }

    /// `challenge-ambiguous`: several `resource_metadata` values in the Bearer challenges.
    fn check_challenge_ambiguous(&mut self, c: &Ctx<'_>, ep: &str, challenges: &[Challenge]) {
        if !matches!(c.status, Some(401 | 403)) {
            return;
        }
        let Some(url) = &c.url else { return };
        let bearers: Vec<&Challenge> = challenges.iter().filter(|ch| ch.is_bearer()).collect();
        let mut urls: Vec<String> = Vec::new();
        for ch in &bearers {
            for (k, v) in &ch.params {
                if k == "resource_metadata" {
                    let u = url
                        .join(v)
                        .map(|u| u.endpoint())
                        .unwrap_or_else(|| v.clone());
                    if !urls.contains(&u) {
                        urls.push(u);
                    }
                }
            }
        }
        if urls.len() < 2 {
            return;
        }
        let sub = if bearers.len() > 1 {
            "several-challenges"
        } else {
            "several-resource-metadata"
        };
        self.emit(
            New::finding(Id::ChallengeAmbiguous, ep, Severity::Medium, Culprit::Server)
                .sub(sub)
                .say(format!(
                    "{ep} answered {} in {} with {} different resource_metadata URLs ({}); clients take the first, {}, and another client may take another.",
                    c.status.unwrap_or(0),
                    c.id,
                    urls.len(),
                    urls.join(", "),
                    urls[0]
                ))
                .ev([c.id]),
        );
        let t = &mut self.transport;
        if t.ambiguous_first.len() < MAX_STATE {
            t.ambiguous_first
                .entry(urls[0].clone())
                .or_insert((ep.to_owned(), c.id));
        }
    }

    /// `challenge-ambiguous`, later: the first URL of an ambiguous challenge was fetched and
    /// failed (clients that take the first find no metadata). Called for PRM fetches.
    pub(crate) fn check_ambiguous_prm(&mut self, c: &Ctx<'_>) {
        if c.role != Role::PrmDiscovery || c.ok() {
            return;
        }
        let Some(key) = c.endpoint() else { return };
        let Some((ep, challenge)) = self.transport.ambiguous_first.get(&key).cloned() else {
            return;
        };
        let status = c
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        // Adds the fetch to the evidence, then says what it changed (announced again).
        self.emit(
            New::finding(
                Id::ChallengeAmbiguous,
                ep.clone(),
                Severity::High,
                Culprit::Server,
            )
            .ev([challenge, c.id]),
        );
        self.amend(
            Id::ChallengeAmbiguous,
            &ep,
            format!(
                "raised to high: the first resource_metadata, {key}, answered {status} in {}, so clients that take the first find no metadata",
                c.id
            ),
            Some(Severity::High),
            None,
        );
    }

    /// `version-negotiation-failed`.
    fn check_version_negotiation(&mut self, c: &Ctx<'_>, ep: &str) {
        let errors = response_errors(c.flow);
        self.learn_versions(c, ep, &errors);
        let requested = c
            .rpc
            .iter()
            .find(|r| {
                r.dir == RpcDirection::ClientToServer && r.method.as_deref() == Some("initialize")
            })
            .and_then(|r| {
                r.params()?
                    .get("protocolVersion")?
                    .as_str()
                    .map(str::to_owned)
            });
        let unsupported = errors.iter().find(|e| code(e) == Some(UNSUPPORTED_VERSION));
        // Any request after the handshake but a new one: the client goes on.
        let goes_on = c.rpc.iter().any(|r| r.dir == RpcDirection::ClientToServer)
            || c.flow.request.method.eq_ignore_ascii_case("GET");
        if requested.is_none() && goes_on {
            let t = &mut self.transport;
            if t.went_on.len() < MAX_STATE {
                let e = t
                    .went_on
                    .entry((ep.to_owned(), c.ua.clone()))
                    .or_insert((c.id, c.started));
                if c.started >= e.1 {
                    *e = (c.id, c.started);
                }
            }
        }
        // An initialize answered with another version, by a server shown to serve the one asked.
        if let (Some(req), Some(ans)) = (&requested, &c.negotiated) {
            if req != ans {
                match self.transport.supported.get(&(ep.to_owned(), req.clone())) {
                    Some(&proof) => self.fixed_version(ep, req, ans, c.id, proof),
                    None if self.transport.offered_other.len() < MAX_STATE => {
                        self.transport.offered_other.push((
                            ep.to_owned(),
                            req.clone(),
                            ans.clone(),
                            c.id,
                        ));
                        // A legitimate negotiation if the client goes on with the answer.
                        self.wait(Pending::VersionOffer {
                            endpoint: ep.to_owned(),
                            flow: c.id,
                            client: c.ua.clone(),
                            requested: req.clone(),
                            answered: ans.clone(),
                            done: c.done,
                            deadline: c.done + 15_000_000,
                        });
                    }
                    None => {}
                }
            }
        }
        // An initialize refused because of the version, instead of answered with one.
        let refused_init = requested.is_some()
            && c.negotiated.is_none()
            && (c.status == Some(400) || !errors.is_empty())
            && body_mentions(
                c,
                &["protocol version", "protocolversion", "protocol-version"],
            )
            && unsupported.is_none_or(|e| supported_list(e).is_none());
        if refused_init {
            let header = c.protocol_version.as_deref().unwrap_or("(none)");
            self.emit(
                New::finding(Id::VersionNegotiationFailed, format!("{ep} initialize-refused"), Severity::Medium, Culprit::Server)
                    .sub("initialize-refused")
                    .say(format!(
                        "{ep} refused the initialize in {} ({}) because of the protocol version (body {:?}, MCP-Protocol-Version {header}) instead of answering with a version it supports: negotiation happens in the initialize result, so no client that asks for a newer version can connect.",
                        c.id,
                        c.status.unwrap_or(0),
                        requested.as_deref().unwrap_or("")
                    ))
                    .ev([c.id]),
            );
        }
        let Some(e) = unsupported else {
            return;
        };
        // 2026-07-28: UnsupportedProtocolVersionError, 400, with the `supported` list.
        let asked = request_version(c);
        let supported = supported_list(e);
        let base = |sub: &'static str, sev: Severity, culprit: Culprit, text: String| {
            New::finding(
                Id::VersionNegotiationFailed,
                format!("{ep} {sub}"),
                sev,
                culprit,
            )
            .sub(sub)
            .say(text)
            .ev([c.id])
        };
        match (&asked, &supported) {
            (_, None) => self.emit(base("no-supported-list", Severity::Medium, Culprit::Server, format!(
                "{ep} answered {} with UnsupportedProtocolVersionError but without `data.supported`: the client cannot pick a version both sides speak.",
                c.id
            ))),
            (Some(v), Some(list)) if list.contains(v) => self.emit(base("supported-version-refused", Severity::Medium, Culprit::Server, format!(
                "{ep} refused protocol version {v} in {} as unsupported, yet lists it as supported ({}).",
                c.id,
                list.join(", ")
            ))),
            _ => {}
        }
        if c.status.is_some_and(|s| s != 400) {
            self.emit(base("wrong-status", Severity::Low, Culprit::Server, format!(
                "{ep} answered UnsupportedProtocolVersionError with HTTP {} in {}; the 2026-07-28 transport requires 400, which clients read to tell a modern server from a legacy one.",
                c.status.unwrap_or(0),
                c.id
            )));
        }
    }

    /// Versions the server shows it serves: an initialize answered with the version asked, a
    /// `server/discover` result's `supportedVersions`, an error's `data.supported`.
    fn learn_versions(&mut self, c: &Ctx<'_>, ep: &str, errors: &[Value]) {
        let mut learned: Vec<String> = Vec::new();
        if let Some(v) = &c.negotiated {
            learned.push(v.clone());
        }
        for r in &c.rpc {
            if r.dir == RpcDirection::ServerToClient
                && r.kind == RpcKind::Response
                && r.method.as_deref() == Some("server/discover")
            {
                if let Some(v) = r.result().and_then(|x| x.get("supportedVersions")) {
                    learned.extend(strings(v));
                }
            }
        }
        for e in errors {
            if code(e) == Some(UNSUPPORTED_VERSION) {
                learned.extend(supported_list(e).unwrap_or_default());
            }
        }
        if learned.is_empty() {
            return;
        }
        for v in &learned {
            if self.transport.supported.len() < MAX_STATE {
                self.transport
                    .supported
                    .entry((ep.to_owned(), v.clone()))
                    .or_insert(c.id);
            }
        }
        // Earlier initialize answers with another version, now shown wrong.
        let (now_wrong, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transport.offered_other)
            .into_iter()
            .partition(|(e, req, _, f)| e == ep && *f != c.id && learned.contains(req));
        self.transport.offered_other = keep;
        for (e, req, ans, f) in now_wrong {
            self.fixed_version(&e, &req, &ans, f, c.id);
        }
    }

    /// The request with which the client went on after an initialize answered at `done`.
    fn went_on(&self, ep: &str, client: &Option<String>, done: Micros) -> Option<FlowId> {
        let hit = |k: &(String, Option<String>)| {
            self.transport
                .went_on
                .get(k)
                .filter(|(_, at)| *at >= done)
                .map(|(f, _)| *f)
        };
        match client {
            Some(_) => {
                hit(&(ep.to_owned(), client.clone())).or_else(|| hit(&(ep.to_owned(), None)))
            }
            None => self
                .transport
                .went_on
                .iter()
                .filter(|((e, _), (_, at))| e == ep && *at >= done)
                .map(|(_, (f, _))| *f)
                .min(),
        }
    }

    /// The suspected `answer-not-accepted` of a waiting [`Pending::VersionOffer`].
    pub(crate) fn suspicion_transport(&self, p: &Pending) -> Option<New> {
        let Pending::VersionOffer {
            endpoint,
            flow,
            requested,
            answered,
            done,
            deadline,
            ..
        } = p
        else {
            return None;
        };
        Some(
            not_accepted(endpoint, *flow, requested, answered).suspect(format!(
                "a request from the client within {} that goes on with {answered} clears it; none confirms it",
                util::secs(deadline - done)
            )),
        )
    }

    /// Whether the client went on after the answer.
    pub(crate) fn healthy_transport(&self, p: &Pending) -> Option<String> {
        let Pending::VersionOffer {
            endpoint,
            client,
            answered,
            done,
            ..
        } = p
        else {
            return None;
        };
        self.went_on(endpoint, client, *done)
            .map(|f| format!("the client went on with {answered} in {f}"))
    }

    /// Decides a [`Pending::VersionOffer`].
    pub(crate) fn resolve_transport(&mut self, p: Pending, due: bool) -> Decision {
        if let Some(why) = self.healthy_transport(&p) {
            return Decision::Healthy(why);
        }
        let Pending::VersionOffer {
            endpoint,
            flow,
            requested,
            answered,
            done,
            ..
        } = p
        else {
            return Decision::Wait(p);
        };
        // Proven since: fixed-version says it all.
        if self
            .status_of(
                Id::VersionNegotiationFailed,
                &format!("{endpoint} fixed-version"),
            )
            .is_some()
        {
            return Decision::Healthy(format!(
                "decided as fixed-version: the server serves {requested}"
            ));
        }
        let left = self.now() - done;
        if !due && left < 2_000_000 {
            return Decision::Open {
                why: format!(
                    "The capture ended {} after {endpoint} answered the initialize in {flow} with {answered} (asked: {requested}): too early to say whether the client went on.",
                    util::secs(left)
                ),
                show: false,
            };
        }
        let when = if due {
            format!("within {}", util::secs(left))
        } else {
            format!("before the capture ended {} later", util::secs(left))
        };
        self.emit(
            not_accepted(&endpoint, flow, &requested, &answered)
                .detail(format!("no request from the client followed {when}")),
        );
        Decision::Done
    }

    fn fixed_version(&mut self, ep: &str, req: &str, ans: &str, answer: FlowId, proof: FlowId) {
        self.emit(
            New::finding(Id::VersionNegotiationFailed, format!("{ep} fixed-version"), Severity::Medium, Culprit::Server)
                .sub("fixed-version")
                .say(format!(
                    "{ep} answered the initialize in {answer} with protocolVersion {ans} although the client asked for {req}, which the server serves ({proof}): a server must answer with the version asked when it supports it; clients that do not know {ans} disconnect.",
                ))
                .ev([answer, proof]),
        );
    }

    /// `stateless-header-violation`: a 2026-07-28 request whose headers are missing or do not
    /// mirror its body.
    fn check_stateless_headers(&mut self, c: &Ctx<'_>, ep: &str) {
        if !c.flow.request.method.eq_ignore_ascii_case("POST") {
            return;
        }
        let Some(version) = stateless_version(c) else {
            return;
        };
        let Some(r) = c
            .rpc
            .iter()
            .find(|r| r.dir == RpcDirection::ClientToServer && r.kind == RpcKind::Request)
        else {
            return;
        };
        let method = r.method.as_deref().unwrap_or("");
        // The handshake belongs to the earlier protocol, whatever header it carries.
        if method == "initialize" {
            return;
        }
        let headers = &c.flow.request.headers;
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        match (c.protocol_version.as_deref(), meta_protocol_version(r)) {
            (None, _) => problems.push((
                "protocol-version-missing",
                format!("lacks MCP-Protocol-Version (the request speaks {version})"),
            )),
            (Some(h), Some(m)) if h != m => problems.push((
                "protocol-version-mismatch",
                format!("sends MCP-Protocol-Version {h} but its _meta states {m}"),
            )),
            _ => {}
        }
        match headers.get("mcp-method").map(str::trim) {
            None => problems.push(("method-missing", format!("lacks Mcp-Method ({method})"))),
            Some(h) if h != method => problems.push((
                "method-mismatch",
                format!("sends Mcp-Method {h} for the method {method}"),
            )),
            _ => {}
        }
        if let Some(want) = mcp_name_source(r) {
            match headers.get("mcp-name").map(str::trim) {
                None => problems.push((
                    "name-missing",
                    format!("lacks Mcp-Name ({method} of {want:?})"),
                )),
                Some(h) if decode_header_value(h).as_deref() != Some(want.as_str()) => problems
                    .push((
                        "name-mismatch",
                        format!("sends Mcp-Name {h:?} for {want:?}"),
                    )),
                _ => {}
            }
        }
        let mismatch_error = response_errors(c.flow)
            .iter()
            .any(|e| code(e) == Some(HEADER_MISMATCH));
        if problems.is_empty() {
            if mismatch_error {
                self.emit(
                    New::finding(Id::StatelessHeaderViolation, format!("{ep} valid-headers-refused"), Severity::Medium, Culprit::Server)
                        .sub("valid-headers-refused")
                        .say(format!(
                            "{ep} refused {} ({method}) with HeaderMismatch although its MCP-Protocol-Version, Mcp-Method and Mcp-Name agree with the body (an encoded `=?base64?…?=` Mcp-Name must be decoded before comparing; header names are case-insensitive).",
                            c.id
                        ))
                        .ev([c.id]),
                );
            }
            self.check_origin_status(c, ep);
            return;
        }
        let served = c.ok();
        for (sub, what) in problems {
            let mut n = New::finding(
                Id::StatelessHeaderViolation,
                format!("{ep} {sub}"),
                Severity::Medium,
                Culprit::Client,
            )
            .sub(sub)
            .say(format!(
                "Request {} ({method}, protocol {version}) {what}; the 2026-07-28 transport requires every POST to mirror its body in these headers.",
                c.id
            ))
            .ev([c.id]);
            if served {
                n = n.detail(format!(
                    "{ep} served it ({}) instead of answering 400 HeaderMismatch (-32020), as servers must",
                    c.status.unwrap_or(0)
                ));
            }
            self.emit(n);
        }
        self.check_origin_status(c, ep);
    }

    /// `stateless-header-violation`: an Origin refusal with another status than 403.
    fn check_origin_status(&mut self, c: &Ctx<'_>, ep: &str) {
        let Some(st) = c.status.filter(|s| (400..500).contains(s) && *s != 403) else {
            return;
        };
        if !c.flow.request.headers.contains("origin") || !body_mentions(c, ORIGIN_WORDS) {
            return;
        }
        self.emit(
            New::finding(Id::StatelessHeaderViolation, format!("{ep} origin-not-403"), Severity::Low, Culprit::Server)
                .sub("origin-not-403")
                .say(format!(
                    "{ep} refused the Origin of {} with {st}; the transport requires 403 for an invalid Origin, which is what clients and gateways look for.",
                    c.id
                ))
                .ev([c.id]),
        );
    }
}

/// `answer-not-accepted`: the client did not go on after an initialize answered with another
/// version. Whose fault depends on whether the server serves the version asked, which this
/// capture does not show: the text says what would tell.
fn not_accepted(ep: &str, flow: FlowId, requested: &str, answered: &str) -> New {
    New::finding(
        Id::VersionNegotiationFailed,
        format!("{ep} answer-not-accepted"),
        Severity::Medium,
        Culprit::Unknown,
    )
    .sub("answer-not-accepted")
    .say(format!(
        "{ep} answered the initialize in {flow} with protocolVersion {answered} although the client asked for {requested}, and the client did not go on: it does not speak {answered}. If the server supports {requested}, it must answer {requested} (a hard-coded version is a server bug); if it does not, the client needs a version the server serves. The server's list of supported versions (its docs, or an initialize asking {requested} from another client) tells which."
    ))
    .ev([flow])
}

/// True for a protocol version of the stateless transport (2026-07-28 or later).
fn is_stateless(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && v >= STATELESS_SINCE
}

/// The stateless (2026-07-28) protocol version a request speaks, if it does: its `_meta`
/// version or its MCP-Protocol-Version header when either is 2026-07-28 or later, or
/// `server/discover`, which only that protocol has. Mode 22 leaves such requests' version
/// headers to `stateless-header-violation`.
pub(crate) fn stateless_version(c: &Ctx<'_>) -> Option<String> {
    let client = || {
        c.rpc
            .iter()
            .filter(|r| r.dir == RpcDirection::ClientToServer)
    };
    if let Some(m) = client()
        .filter_map(meta_protocol_version)
        .find(|v| is_stateless(v))
    {
        return Some(m.to_owned());
    }
    if let Some(h) = c.protocol_version.as_deref().filter(|v| is_stateless(v)) {
        return Some(h.to_owned());
    }
    client()
        .any(|r| r.method.as_deref() == Some("server/discover"))
        .then(|| STATELESS_SINCE.to_owned())
}

/// The version a request asks for: its `_meta` version, else its header.
fn request_version(c: &Ctx<'_>) -> Option<String> {
    c.rpc
        .iter()
        .filter(|r| r.dir == RpcDirection::ClientToServer)
        .find_map(meta_protocol_version)
        .map(str::to_owned)
        .or_else(|| c.protocol_version.clone())
}

/// The body value `Mcp-Name` mirrors: `params.name` of tools/call and prompts/get,
/// `params.uri` of resources/read.
fn mcp_name_source(r: &Rpc<'_>) -> Option<String> {
    let key = match r.method.as_deref()? {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    r.params()?.get(key)?.as_str().map(str::to_owned)
}

/// A header value with the `=?base64?…?=` sentinel decoded (2026-07-28 "Value Encoding").
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

/// The JSON-RPC `error` objects of the response (JSON body or SSE events).
fn response_errors(flow: &Flow) -> Vec<Value> {
    let Some(resp) = &flow.response else {
        return Vec::new();
    };
    let mut texts: Vec<&str> = resp.sse.iter().map(|e| e.data.as_str()).collect();
    if resp.sse.is_empty() {
        if let Some(b) = resp.body.as_str() {
            texts.push(b);
        }
    }
    let mut out = Vec::new();
    for t in texts {
        let t = t.trim();
        if !t.contains("\"error\"") {
            continue;
        }
        match serde_json::from_str::<Value>(t) {
            Ok(Value::Array(items)) => {
                out.extend(items.into_iter().filter_map(|m| m.get("error").cloned()))
            }
            Ok(m) => out.extend(m.get("error").cloned()),
            Err(_) => {}
        }
    }
    out
}

fn code(error: &Value) -> Option<i64> {
    error.get("code")?.as_i64()
}

/// `data.supported` of an UnsupportedProtocolVersionError.
fn supported_list(error: &Value) -> Option<Vec<String>> {
    let v = error.get("data")?.get("supported")?;
    v.is_array().then(|| strings(v))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A response header that shows an intermediary (CDN, cache, reverse proxy) answered.
fn intermediary(flow: &Flow) -> Option<String> {
    for h in ["via", "x-cache", "cf-ray", "x-served-by", "x-amz-cf-id"] {
        if let Some(v) = util::response_header(flow, h) {
            return Some(format!("{h}: {v}"));
        }
    }
    let server = util::response_header(flow, "server")?;
    let s = server.to_ascii_lowercase();
    [
        "nginx",
        "openresty",
        "cloudflare",
        "envoy",
        "traefik",
        "caddy",
        "haproxy",
        "varnish",
        "apache",
        "awselb",
        "cloudfront",
        "akamai",
        "kong",
    ]
    .iter()
    .any(|p| s.contains(p))
    .then(|| format!("server: {server}"))
}

/// The first 160 characters of a text response body, on one line.
fn body_snippet(flow: &Flow) -> Option<String> {
    let b = flow.response.as_ref()?.body.as_str()?.trim();
    if b.is_empty() {
        return None;
    }
    let one: String = b
        .chars()
        .take(160)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some(format!("{one:?}"))
}
