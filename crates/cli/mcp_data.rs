//! What `mcptap mcp`'s tools answer, apart from MCP itself (that is `crate::mcp`): which session
//! a call means, the session loaded through the one offline pipeline
//! ([`crate::files::analyze_session`], so the answers are what `mcptap analyze` says), and each
//! answer as JSON or markdown.
//!
//! Every flow is redacted before anything reads it, as mcptap's own saved files are, whatever
//! the source: a HAR from another tool, or a session recorded with `--keep-secrets`, holds raw
//! tokens. On top of the per-flow redaction, one redactor walks the whole session twice, so a
//! secret recognised in one flow (a token in a token response) is also replaced where another
//! flow carries it in a place that is not recognised as secret (an echo in a body, a custom
//! header). Last, every answer is scrubbed of the raw values of the secrets the source held
//! ([`Loaded::scrub`]), for whatever the flows' redaction does not reach (a warning quoting a
//! journal line, a HAR's creator): an agent's context never receives a live credential.

use crate::live::{self, LiveSession};
use mcptap_analyze::{Finding, FindingId, FlowSummary, Report};
use mcptap_flow::redact::Redactor;
use mcptap_flow::{CapturedBody, Flow, FlowId, Headers, Micros};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Flows `list_flows` returns by default, and at most.
pub const DEFAULT_PAGE: usize = 50;
/// The most flows one `list_flows` call returns.
pub const MAX_PAGE: usize = 500;
/// Bytes of each body `get_flow` shows by default.
pub const DEFAULT_BODY_BYTES: usize = 8 * 1024;
/// The most bytes of each body `get_flow` shows.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Characters of one header value shown (a cookie jar can be huge).
const MAX_HEADER_CHARS: usize = 2048;
/// Server-sent events `get_flow` shows at most (their data counts towards the body bound).
const MAX_SSE_EVENTS: usize = 100;
/// Characters of the markdown report returned at most.
const MAX_REPORT_CHARS: usize = 200_000;

/// Where sessions are found.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `<confdir>`: `sessions/` and `live/`.
    pub confdir: PathBuf,
    /// The session given on the command line (`mcptap mcp SESSION`): the default.
    pub pinned: Option<PathBuf>,
}

/// A session loaded, redacted and analysed.
#[derive(Debug)]
pub struct Loaded {
    /// The file the flows came from.
    pub path: PathBuf,
    /// The running proxy recording it, when it is live.
    pub live: Option<LiveSession>,
    /// The session, its flows redacted.
    pub session: mcptap_store::Session,
    /// What `mcptap analyze` says of it.
    pub report: Report,
    /// Per flow (same order as `session.flows`): the row the terminal view shows, which the
    /// filter language tests.
    pub rows: Vec<mcptap_tui::Row>,
    /// The finding ids citing each flow (cleared suspicions left out).
    pub cited: HashMap<FlowId, Vec<&'static str>>,
    /// The raw secrets the source held, longest first: [`Loaded::scrub`] replaces any that
    /// still shows in an answer.
    raw: Vec<String>,
}

impl Loaded {
    /// `text` with every raw secret of the source replaced by its marker: the last guard before
    /// an answer leaves, for whatever the redaction of flows does not reach (a warning quoting
    /// a journal line, a path). Nothing to do for a session that held none.
    pub fn scrub(&self, text: String) -> String {
        let mut text = text;
        for raw in &self.raw {
            if text.contains(raw.as_str()) {
                text = text.replace(raw.as_str(), &mcptap_flow::redact::redacted(raw));
            }
        }
        text
    }
}

/// A tool error the agent can act on (shown as the tool's text, `isError: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ToolError> {
    Err(ToolError(msg.into()))
}

/// The loaded sessions, one kept: an agent asks about one session many times in a row. A
/// journal that grows (a live proxy's) is loaded again.
#[derive(Debug, Default)]
pub struct Cache {
    last: Mutex<Option<(CacheKey, Arc<Loaded>)>>,
}

type CacheKey = (PathBuf, u64, Option<SystemTime>, bool);

impl Sources {
    /// The sessions directory.
    pub fn sessions_dir(&self) -> PathBuf {
        self.confdir.join("sessions")
    }

    /// Which file `asked` means: nothing (the pinned session, else the running proxy's, else
    /// the newest saved one), `live`, a session's name under the sessions directory, or a path
    /// (directory, journal or HAR).
    pub fn resolve(
        &self,
        asked: Option<&str>,
    ) -> Result<(PathBuf, Option<LiveSession>), ToolError> {
        let asked = asked.map(str::trim).filter(|s| !s.is_empty());
        match asked {
            None => {
                if let Some(p) = &self.pinned {
                    return Ok((p.clone(), self.live_for(p)));
                }
                if let Some(l) = live::list(&self.confdir).into_iter().next() {
                    return Ok((l.session_dir.clone(), Some(l)));
                }
                match self.saved().into_iter().next() {
                    Some(s) => Ok((s.path.clone(), None)),
                    None => err(format!(
                        "no session: no mcptap proxy is running and {} holds no saved session. \
                         Pass `session` (a session directory, a journal.jsonl or a HAR file).",
                        self.sessions_dir().display()
                    )),
                }
            }
            Some("live") => match live::list(&self.confdir).into_iter().next() {
                Some(l) => Ok((l.session_dir.clone(), Some(l))),
                None => err("no mcptap proxy that records a session is running"),
            },
            Some(name) => {
                let under = self.sessions_dir().join(name);
                let plain = !name.contains(['/', '\\']) && name != "." && name != "..";
                let path = if plain && under.exists() {
                    under
                } else {
                    PathBuf::from(name)
                };
                if !path.exists() {
                    return err(format!(
                        "no session {name:?}: not a name from list_sessions, nor a path that exists"
                    ));
                }
                let live = self.live_for(&path);
                Ok((path, live))
            }
        }
    }

    fn live_for(&self, path: &Path) -> Option<LiveSession> {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        let want = canon(path)?;
        live::list(&self.confdir).into_iter().find(|l| {
            canon(&l.session_dir) == Some(want.clone()) || canon(&l.journal) == Some(want.clone())
        })
    }

    /// The saved sessions (directories under the sessions directory holding a journal or a
    /// HAR), newest first.
    pub fn saved(&self) -> Vec<SavedSession> {
        let Ok(entries) = std::fs::read_dir(self.sessions_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<SavedSession> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let journal = path.join(mcptap_store::JOURNAL_FILE);
                let har = path.join(mcptap_store::HAR_FILE);
                let file = [&journal, &har].into_iter().find(|f| f.is_file())?.clone();
                let meta = std::fs::metadata(&file).ok()?;
                Some(SavedSession {
                    name: e.file_name().to_string_lossy().into_owned(),
                    path,
                    modified: meta.modified().ok(),
                    bytes: meta.len(),
                    har: har.is_file(),
                })
            })
            .collect();
        out.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.name.cmp(&a.name)));
        out
    }
}

/// A saved session, as `list_sessions` shows it.
#[derive(Debug, Clone)]
pub struct SavedSession {
    /// The directory's name (what the tools' `session` takes).
    pub name: String,
    /// The directory.
    pub path: PathBuf,
    /// When its journal (or HAR) last changed.
    pub modified: Option<SystemTime>,
    /// Its size.
    pub bytes: u64,
    /// True when it ended cleanly (`session.har` written).
    pub har: bool,
}

impl Cache {
    /// The session `asked` means, loaded (or the copy kept from the last call, when its file
    /// has not changed).
    pub fn get(&self, sources: &Sources, asked: Option<&str>) -> Result<Arc<Loaded>, ToolError> {
        let (path, live) = sources.resolve(asked)?;
        let (file, _) = mcptap_store::detect(&path).map_err(|e| {
            ToolError(format!(
                "cannot read {}: {}",
                path.display(),
                crate::files::chain(&e)
            ))
        })?;
        let meta = std::fs::metadata(&file).ok();
        let key: CacheKey = (
            file.clone(),
            meta.as_ref().map_or(0, |m| m.len()),
            meta.and_then(|m| m.modified().ok()),
            live.is_some(),
        );
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, loaded)) = last.as_ref() {
            if *k == key {
                return Ok(loaded.clone());
            }
        }
        let loaded = Arc::new(load(&path, live)?);
        *last = Some((key, loaded.clone()));
        Ok(loaded)
    }
}

/// Loads `path`, redacts it whole (see the module docs) and analyses it as `mcptap analyze`
/// does.
pub fn load(path: &Path, live: Option<LiveSession>) -> Result<Loaded, ToolError> {
    let mut session = mcptap_store::load(path).map_err(|e| {
        ToolError(format!(
            "cannot read {}: {}",
            path.display(),
            crate::files::chain(&e)
        ))
    })?;
    let raw = redact_session(&mut session);
    let mut report = crate::files::analyze_session(&mut session, false, false);
    crate::probe::apply_saved(path, &mut report);
    let summaries: HashMap<FlowId, &FlowSummary> = report.flows.iter().map(|f| (f.id, f)).collect();
    let rows = session
        .flows
        .iter()
        .map(|f| {
            let mut row = mcptap_tui::Row::of(f);
            if let Some(s) = summaries.get(&f.id) {
                row.classify(s, Some(f));
            }
            row
        })
        .collect();
    let mut cited: HashMap<FlowId, Vec<&'static str>> = HashMap::new();
    for f in report.counted() {
        for id in &f.evidence {
            let ids = cited.entry(*id).or_default();
            if !ids.contains(&f.id.as_str()) {
                ids.push(f.id.as_str());
            }
        }
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        live,
        session,
        report,
        rows,
        cited,
        raw,
    })
}

/// Redacts every flow of `session` and the command line it records, whatever the source held
/// (see the module docs). Bodies are decoded first (a gzip body hides nothing from the
/// redactor); the per-flow notes (fingerprints, JWT claims) are kept for analysis. Returns the
/// raw secrets it found, longest first (for [`Loaded::scrub`]).
pub fn redact_session(session: &mut mcptap_store::Session) -> Vec<String> {
    let note = mcptap_store::Options {
        keep_secrets: true,
        ..Default::default()
    };
    for f in &mut session.flows {
        mcptap_store::prepare(f, &note);
    }
    let raw = raw_secrets(&session.flows);
    // Twice: the second walk replaces, in the flows before it, what a later flow showed to be
    // a secret.
    let mut r = Redactor::new();
    for _ in 0..2 {
        for f in &mut session.flows {
            r.flow(f);
        }
    }
    for f in &mut session.flows {
        f.raw_secrets = false;
    }
    session.raw_secrets = false;
    if let Some(m) = &mut session.meta {
        m.redact_command_line();
        m.raw_secrets = false;
    }
    raw
}

/// The raw values of the secrets noted in `flows` (before redaction): the words of their URLs,
/// header values, bodies and events whose fingerprint is a noted one. Only words as long as some
/// noted secret are hashed.
fn raw_secrets(flows: &[Flow]) -> Vec<String> {
    use std::collections::{BTreeSet, HashSet};
    let noted: HashSet<(&str, usize)> = flows
        .iter()
        .flat_map(|f| f.secrets.iter())
        .map(|n| (n.fingerprint.as_str(), n.len))
        .collect();
    let lens: HashSet<usize> = noted.iter().map(|(_, l)| *l).filter(|l| *l >= 8).collect();
    if lens.is_empty() {
        return Vec::new();
    }
    let mut found = BTreeSet::new();
    let mut look = |text: &str| {
        let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)));
        for word in words {
            // `code=abc` in a form or a query, and `abc==` (base64 padding), both ways.
            for w in std::iter::once(word).chain(word.split('=')) {
                if lens.contains(&w.len())
                    && noted.contains(&(mcptap_flow::redact::fingerprint(w).as_str(), w.len()))
                {
                    found.insert(w.to_owned());
                }
            }
        }
    };
    for f in flows {
        look(&f.request.url);
        for h in f.request.headers.as_slice() {
            look(&h.value);
        }
        look(&String::from_utf8_lossy(&f.request.body.bytes));
        if let Some(r) = &f.response {
            for h in r.headers.as_slice() {
                look(&h.value);
            }
            look(&String::from_utf8_lossy(&r.body.bytes));
            for e in &r.sse {
                look(&e.data);
            }
        }
    }
    let mut raw: Vec<String> = found.into_iter().collect();
    raw.sort_by_key(|r| std::cmp::Reverse(r.len()));
    raw
}

/// An RFC 3339 UTC time.
pub fn time(t: Micros) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn system_time(t: SystemTime) -> String {
    let micros = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    time(micros)
}

/// `list_sessions`.
pub fn list_sessions(sources: &Sources, limit: usize) -> Value {
    let live: Vec<Value> = live::list(&sources.confdir)
        .into_iter()
        .map(|l| {
            json!({
                "session": l.session_dir,
                "journal": l.journal,
                "pid": l.pid,
                "listen": l.listen,
                "mode": l.mode,
                "started": time(l.started),
            })
        })
        .collect();
    let all = sources.saved();
    let total = all.len();
    let saved: Vec<Value> = all
        .into_iter()
        .take(limit)
        .map(|s| {
            json!({
                "session": s.name,
                "path": s.path,
                "modified": s.modified.map(system_time),
                "bytes": s.bytes,
                "ended_cleanly": s.har,
            })
        })
        .collect();
    json!({
        "default": sources.resolve(None).ok().map(|(p, _)| p),
        "pinned": sources.pinned,
        "live": live,
        "saved": saved,
        "saved_total": total,
        "sessions_dir": sources.sessions_dir(),
        "how": "Pass `session` to the other tools: a `session` name from `saved`, `live` for the \
                running proxy, or a path (a session directory, a journal.jsonl or any HAR file). \
                Without it they read the default.",
    })
}

fn source(l: &Loaded) -> Value {
    let s = &l.session;
    json!({
        "path": l.path,
        "kind": match s.kind {
            mcptap_store::SourceKind::Journal => "mcptap journal",
            mcptap_store::SourceKind::Har => "HAR",
        },
        "live": l.live.as_ref().map(|x| json!({"pid": x.pid, "listen": x.listen, "started": time(x.started)})),
        "ended_cleanly": s.complete,
        "ended": s.ended.map(time),
        "creator": s.creator,
        "recorded_by": s.meta.as_ref().map(|m| format!("mcptap {}", m.mcptap)),
        "mode": s.meta.as_ref().and_then(|m| m.mode.clone()),
        "warnings": s.warnings,
    })
}

fn finding_brief(f: &Finding) -> Value {
    json!({
        "id": f.id.as_str(),
        "severity": f.severity.as_str(),
        "culprit": f.culprit.as_str(),
        "status": f.status.as_str(),
        "subcase": f.subcase,
        "summary": f.summary,
        "evidence": f.evidence.iter().map(|e| e.0).collect::<Vec<_>>(),
    })
}

/// `summary`.
pub fn summary(l: &Loaded) -> Value {
    let r = &l.report;
    let mut roles: HashMap<&'static str, u64> = HashMap::new();
    for f in &r.flows {
        let key = if f.role.is_oauth() {
            "oauth"
        } else if matches!(
            f.role,
            mcptap_analyze::Role::Mcp | mcptap_analyze::Role::McpPreflight
        ) {
            "mcp"
        } else {
            "other"
        };
        *roles.entry(key).or_default() += 1;
    }
    let state = |s: mcptap_flow::FlowState| l.session.flows.iter().filter(|f| f.state == s).count();
    let tokens: Vec<Value> = r
        .stories
        .iter()
        .flat_map(|s| {
            s.tokens.iter().map(move |t| {
                json!({
                    "fingerprint": t.fingerprint,
                    "issued_in": t.flow.0,
                    "issuer": s.issuer,
                    "resource": s.resource,
                    "client_id": s.client_id,
                    "grant": t.grant,
                    "issued_at": time(t.issued_at),
                    "expires_at": t.expires_at.map(time),
                    "scope": t.scope,
                    "uses": t.uses,
                    "sent_to_flows": t.sent_to.iter().map(|e| e.0).collect::<Vec<_>>(),
                    "endpoints": t.endpoints,
                })
            })
        })
        .collect();
    let findings: Vec<Value> = r.counted().map(finding_brief).collect();
    let verdict = match r.counted().next() {
        None => "No finding: nothing in this capture is known to be wrong.".to_owned(),
        Some(f) => format!(
            "{} finding(s); the most severe: [{}] {} (culprit: {}): {} Evidence flows: {}.",
            r.counted().count(),
            f.severity,
            f.id,
            f.culprit,
            f.summary,
            f.evidence
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    json!({
        "source": source(l),
        "verdict": verdict,
        "flows": {
            "total": l.session.flows.len(),
            "oauth": roles.get("oauth").copied().unwrap_or(0),
            "mcp": roles.get("mcp").copied().unwrap_or(0),
            "other": roles.get("other").copied().unwrap_or(0),
            "failed": state(mcptap_flow::FlowState::Failed),
            "aborted": state(mcptap_flow::FlowState::Aborted),
            "pending": state(mcptap_flow::FlowState::Pending),
        },
        "clients": r.environment.user_agents,
        "mcp_endpoints": r.environment.mcp_endpoints,
        "authorization_servers": r.environment.authorization_servers,
        "protocol_versions": r.environment.protocol_versions,
        "first_request": r.environment.first_started.map(time),
        "last_activity": r.environment.last_activity.map(time),
        "tokens": tokens,
        "findings": findings,
        "could_not_check": r.visibility.not_checked,
        "notes": r.visibility.notes,
        "next": "findings: evidence, culprit and fix of each finding; get_flow ID: a flow's headers \
                 and body; list_flows with a filter such as `~noauth & ~ph MCP` or `~f`.",
    })
}

/// `list_flows`: the flows passing `filter` (mcptap's filter language), `limit` from `offset`.
pub fn list_flows(
    l: &Loaded,
    filter: Option<&str>,
    offset: usize,
    limit: usize,
) -> Result<Value, ToolError> {
    let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(text) => Some(mcptap_tui::Filter::parse(text).map_err(|e| {
            ToolError(format!(
                "filter {text:?}: {e}. Filters: ~d host, ~u url, ~p path, ~m method, ~c 401 or \
                 4xx, ~ph phase (PRM, AS meta, register, authorize, token, refresh, MCP), ~rpc \
                 method, ~noauth, ~auth, ~f (cited by a finding), ~e (failed), ~q (pending), \
                 ~sse, a bare word; combined with !, & and |, and parentheses."
            ))
        })?),
    };
    let matching: Vec<&mcptap_tui::Row> = l
        .rows
        .iter()
        .filter(|r| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(r, l.cited.contains_key(&r.id)))
        })
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| row_json(l, r))
        .collect();
    let next = offset.saturating_add(page.len());
    Ok(json!({
        "matching": total,
        "offset": offset,
        "returned": page.len(),
        "next_offset": (next < total).then_some(next),
        "flows": page,
    }))
}

fn row_json(l: &Loaded, r: &mcptap_tui::Row) -> Value {
    json!({
        "id": r.id.0,
        "started": time(r.started),
        "method": r.method,
        "url": r.target(),
        "status": r.status,
        "phase": r.phase(),
        "mcp": r.mcp,
        "auth": r.auth.label(),
        "issued_token": r.issued,
        "state": state_name(r.state),
        "error": r.error,
        "duration_ms": r.duration.map(|d| d / 1000),
        "findings": l.cited.get(&r.id).cloned().unwrap_or_default(),
    })
}

fn state_name(s: mcptap_flow::FlowState) -> &'static str {
    match s {
        mcptap_flow::FlowState::Pending => "pending",
        mcptap_flow::FlowState::Completed => "completed",
        mcptap_flow::FlowState::Aborted => "aborted",
        mcptap_flow::FlowState::Failed => "failed",
    }
}

/// `get_flow`: one flow whole (as redacted), each body cut at `max_body` bytes.
pub fn get_flow(l: &Loaded, id: u64, max_body: usize) -> Result<Value, ToolError> {
    let Some(i) = l.session.flows.iter().position(|f| f.id.0 == id) else {
        let (lo, hi) = (
            l.session.flows.first().map(|f| f.id.0),
            l.session.flows.last().map(|f| f.id.0),
        );
        return err(format!(
            "no flow #{id} in this session (ids {} to {}; list_flows lists them)",
            lo.unwrap_or(0),
            hi.unwrap_or(0)
        ));
    };
    let f: &Flow = &l.session.flows[i];
    let summary = l.report.flows.iter().find(|s| s.id == f.id);
    let response = f.response.as_ref().map(|r| {
        let mut budget = max_body;
        let body = body_json(&r.body, r.headers.get("content-type"), &mut budget);
        let sse: Vec<Value> = r
            .sse
            .iter()
            .take(MAX_SSE_EVENTS)
            .map(|e| {
                let (data, cut) = cut_text(&e.data, budget);
                budget = budget.saturating_sub(data.len());
                json!({"at": time(e.at), "event": e.event, "id": e.id, "data": data, "data_cut": cut})
            })
            .collect();
        json!({
            "status": r.status,
            "version": r.version.as_str(),
            "headers": headers_json(&r.headers),
            "body": body,
            "sse_events": r.sse_count(),
            "sse": sse,
            "made_by_mcptap": r.synthetic,
        })
    });
    let mut budget = max_body;
    Ok(json!({
        "id": f.id.0,
        "state": state_name(f.state),
        "started": time(f.timings.started),
        "duration_ms": f.timings.duration().map(|d| d / 1000),
        "role": summary.map(|s| s.role.as_str()),
        "mcp": summary.and_then(|s| s.mcp.as_ref()),
        "auth": summary.and_then(|s| s.auth.as_ref()),
        "issued_token": summary.and_then(|s| s.issued_token.as_ref()),
        "findings": l.cited.get(&f.id).cloned().unwrap_or_default(),
        "request": {
            "method": f.request.method,
            "url": f.request.url,
            "version": f.request.version.as_str(),
            "headers": headers_json(&f.request.headers),
            "body": body_json(&f.request.body, f.request.headers.get("content-type"), &mut budget),
        },
        "response": response,
        "error": f.error.as_ref().map(|e| json!({"kind": e.kind.as_str(), "message": e.message, "hint": e.hint})),
        "injected_by_mcptap": f.injected.as_ref().map(|i| &i.fingerprint),
        "not_injected": f.not_injected,
        "made_by_mcptap": f.by_mcptap,
        "upstream_tls_unverified": f.upstream_tls.as_ref().is_some_and(|t| t.unverified),
        "secrets_redacted": f.secrets.iter().map(|s| json!({"place": s.place, "fingerprint": s.fingerprint, "jwt": s.jwt})).collect::<Vec<_>>(),
    }))
}

/// Header fields as `name: value` lines, in the order received.
fn headers_json(h: &Headers) -> Vec<String> {
    h.as_slice()
        .iter()
        .map(|x| {
            let (v, cut) = cut_text(&x.value, MAX_HEADER_CHARS);
            if cut {
                format!("{}: {v}… [{} bytes]", x.name, x.value.len())
            } else {
                format!("{}: {v}", x.name)
            }
        })
        .collect()
}

/// At most `max` bytes of `s`, cut at a character boundary; true when cut.
fn cut_text(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

fn body_json(b: &CapturedBody, content_type: Option<&str>, budget: &mut usize) -> Value {
    if b.bytes.is_empty() && b.total_len == 0 {
        return Value::Null;
    }
    let text = match std::str::from_utf8(&b.bytes) {
        Ok(t) => Some(t),
        // A body cut by the capture limit may end inside a character.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&b.bytes[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    let mut out = json!({
        "content_type": content_type,
        "content_encoding": b.encoding,
        "bytes_on_wire": b.total_len,
        "bytes_recorded": b.bytes.len(),
        "cut_by_capture_limit": b.truncated,
    });
    match text {
        Some(t) => {
            let (shown, cut) = cut_text(t, *budget);
            *budget = budget.saturating_sub(shown.len());
            out["text"] = Value::from(shown);
            if cut {
                out["cut_here"] = json!(format!(
                    "{} of {} bytes shown: pass a larger max_body_bytes (at most {MAX_BODY_BYTES}) for more",
                    shown.len(),
                    t.len()
                ));
            }
        }
        None => {
            out["text"] = json!(format!(
                "({} bytes of binary data, not shown)",
                b.bytes.len()
            ))
        }
    }
    out
}

/// `findings`: every finding (or those with `id`), with the fix from its explain page.
pub fn findings(l: &Loaded, id: Option<&str>, include_cleared: bool) -> Result<Value, ToolError> {
    let id = id.map(str::trim).filter(|s| !s.is_empty());
    if let Some(id) = id {
        if FindingId::parse(id).is_none() {
            return err(unknown_id(id));
        }
    }
    let list: Vec<Value> = l
        .report
        .findings
        .iter()
        .filter(|f| include_cleared || f.counts())
        .filter(|f| id.is_none_or(|id| f.id.as_str() == id))
        .map(|f| {
            let mut v = finding_brief(f);
            v["title"] = json!(f.id.title());
            v["occurrences"] = json!(f.occurrences);
            v["hint"] = json!(f.hint);
            v["fix"] = json!(fix_of(f.id));
            v["details"] = json!(f.details);
            v["decides"] = json!(f.decides);
            v["amendments"] = json!(f.amendments);
            v["explain"] = json!(format!("explain {}", f.id));
            v
        })
        .collect();
    Ok(json!({
        "source": source(l),
        "findings": list,
        "cleared_left_out": if include_cleared { 0 } else { l.report.findings.iter().filter(|f| !f.counts()).count() },
        "could_not_check": l.report.visibility.not_checked,
        "notes": l.report.visibility.notes,
    }))
}

/// The "How to fix it" section of a finding's page.
pub fn fix_of(id: FindingId) -> String {
    let page = id.page();
    let Some(start) = page.find("## How to fix it") else {
        return id.hint().to_owned();
    };
    let rest = &page[start + "## How to fix it".len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].trim().to_owned()
}

fn unknown_id(id: &str) -> String {
    match crate::explain::nearest(id) {
        Some(near) => format!(
            "no finding called {id:?}; did you mean {near}? (explain without an id lists them)"
        ),
        None => format!("no finding called {id:?} (explain without an id lists them)"),
    }
}

/// `explain`: a finding's page, or the list of ids.
pub fn explain(id: Option<&str>) -> Result<String, ToolError> {
    let Some(id) = id.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(crate::explain::list());
    };
    if let Some(f) = FindingId::parse(id) {
        return Ok(f.page().to_owned());
    }
    match FindingId::with_subcase(id).as_slice() {
        [f] => Ok(format!("({id} is a sub-case of {f})\n\n{}", f.page())),
        [] => err(unknown_id(id)),
        many => err(format!(
            "{id} is a sub-case of several findings: {}",
            many.iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `report`: the markdown bug report of `mcptap report`.
pub fn report(l: &Loaded) -> String {
    let md = mcptap_analyze::render_markdown(
        &l.report,
        &l.session.flows,
        &mcptap_analyze::MarkdownOptions::default(),
    );
    match cut_text(&md, MAX_REPORT_CHARS) {
        (all, false) => all.to_owned(),
        (part, true) => format!(
            "{part}\n\n[… cut at {MAX_REPORT_CHARS} of {} bytes: `mcptap report {}` prints it whole]\n",
            md.len(),
            l.path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::{Request, Response};

    fn flow(id: u64, url: &str, req: &[(&str, &str)], body: &str, resp_body: &str) -> Flow {
        Flow {
            id: FlowId(id),
            host: "as.example".into(),
            port: 443,
            request: Request {
                method: "POST".into(),
                url: url.into(),
                headers: req.iter().copied().collect(),
                body: CapturedBody::complete(body.to_owned()),
                ..Request::default()
            },
            response: Some(Response {
                status: 200,
                headers: [("content-type", "application/json")].into_iter().collect(),
                body: CapturedBody::complete(resp_body.to_owned()),
                ..Response::default()
            }),
            state: mcptap_flow::FlowState::Completed,
            ..Flow::default()
        }
    }

    #[test]
    fn a_token_seen_in_one_flow_is_redacted_where_another_flow_hides_it() {
        let token = "tok-0123456789abcdef";
        let mut session = mcptap_store::Session {
            path: "x.har".into(),
            kind: mcptap_store::SourceKind::Har,
            meta: None,
            creator: None,
            flows: vec![
                // Seen first where nothing marks it secret …
                flow(
                    1,
                    "https://rs.example/echo",
                    &[("x-my-token", token)],
                    "",
                    &format!("{{\"echo\":\"{token}\"}}"),
                ),
                // … then where it is one.
                flow(
                    2,
                    "https://as.example/token",
                    &[],
                    "grant_type=authorization_code&code=c0de-c0de-c0de",
                    &format!("{{\"access_token\":\"{token}\"}}"),
                ),
            ],
            raw_secrets: true,
            warnings: vec![],
            complete: true,
            ended: None,
        };
        let raw = redact_session(&mut session);
        assert!(raw.contains(&token.to_owned()), "{raw:?}");
        assert!(raw.contains(&"c0de-c0de-c0de".to_owned()), "{raw:?}");
        let text = serde_json::to_string(&session.flows).unwrap();
        assert!(!text.contains(token), "{text}");
        assert!(!text.contains("c0de-c0de-c0de"), "{text}");
        assert!(text.contains("[redacted sha256:"), "{text}");
        assert!(session.flows[1]
            .secrets
            .iter()
            .any(|s| s.place == "response.json.access_token"));
    }

    /// What the flows' redaction cannot reach (here the HAR's creator) is scrubbed on the way
    /// out.
    #[test]
    fn an_answer_is_scrubbed_of_the_sources_raw_secrets() {
        let token = "at-secret-0123456789";
        let har = json!({"log": {
            "version": "1.2",
            "creator": {"name": format!("tool {token}"), "version": "1"},
            "entries": [{
                "startedDateTime": "2026-01-01T00:00:00.000Z",
                "time": 1,
                "request": {"method": "POST", "url": "https://as.example/token", "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "content-type", "value": "application/x-www-form-urlencoded"}],
                    "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 40,
                    "postData": {"mimeType": "application/x-www-form-urlencoded", "text": "grant_type=authorization_code&code=abcdefgh1234"}},
                "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "content-type", "value": "application/json"}], "cookies": [],
                    "content": {"size": 40, "mimeType": "application/json", "text": format!("{{\"access_token\":\"{token}\",\"token_type\":\"Bearer\"}}")},
                    "redirectURL": "", "headersSize": -1, "bodySize": 40},
                "cache": {}, "timings": {"send": 0, "wait": 1, "receive": 0}
            }]
        }});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.har");
        std::fs::write(&path, har.to_string()).unwrap();
        let l = load(&path, None).unwrap();
        let said = summary(&l).to_string();
        assert!(said.contains(token), "the creator holds it: {said}");
        let scrubbed = l.scrub(said);
        assert!(!scrubbed.contains(token), "{scrubbed}");
        assert!(scrubbed.contains(&mcptap_flow::redact::redacted(token)));
        let flow = get_flow(&l, 1, MAX_BODY_BYTES).unwrap().to_string();
        assert!(
            !flow.contains(token) && !flow.contains("abcdefgh1234"),
            "{flow}"
        );
    }

    #[test]
    fn bodies_and_headers_are_cut_at_their_bounds() {
        let mut budget = 10;
        let b = CapturedBody::complete("ééééééééé".to_owned());
        let v = body_json(&b, Some("text/plain"), &mut budget);
        assert_eq!(v["text"], "ééééé");
        assert!(v["cut_here"].as_str().unwrap().contains("10 of 18 bytes"));
        assert_eq!(budget, 0);
        let long = "x".repeat(MAX_HEADER_CHARS + 5);
        let h: Headers = [("cookie", long.as_str())].into_iter().collect();
        let shown = headers_json(&h);
        assert!(shown[0].starts_with("cookie: xxx"));
        assert!(shown[0].ends_with(&format!("[{} bytes]", long.len())));
    }

    #[test]
    fn the_fix_is_the_pages_section() {
        let fix = fix_of(FindingId::parse("token-not-sent").unwrap());
        assert!(fix.starts_with("- **Client:**"), "{fix}");
        assert!(!fix.contains("## Public reports"), "{fix}");
    }
}
