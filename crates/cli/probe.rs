//! `mcptap probe URL`: a reference MCP client that walks the authorization spec step by step
//! against one server, through mcptap's own proxy started in-process on a free loopback port.
//! Its traffic is therefore a session like any other (saved with `-w`, redacted by default,
//! `mcptap report DIR` works on it) and is judged by the same analyzer, so a probe and a
//! captured client speak one vocabulary of finding ids. On top of that the probe makes a few
//! requests no client makes ([`crate::probe_checks`]) and judges those itself.
//!
//! Each step is printed as it runs with its verdict, its flows (the proxy numbers the probe's
//! requests in the order they are sent: one connection per request, one request at a time) and
//! the spec section; a step whose prerequisite failed is skipped with the reason.

use crate::args::ProbeArgs;
use crate::probe_checks::{self, Check};
use crate::probe_http::{random_token, s256, Client, HttpError, Reply, Req, Url};
use crate::proxy::{RunConfig, SaveTo};
use anyhow::Context as _;
use http::header::{HeaderName, ACCEPT, AUTHORIZATION, LOCATION};
use http::Method;
use mcptap_analyze::{Finding, FindingId, Severity};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when the server cannot be probed at all.
const UNUSABLE: u8 = 2;
/// The longest a single request may take (the GET stream check waits less).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the GET stream may take to send its headers.
const STREAM_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed with `--headless` before giving up.
const MAX_REDIRECTS: usize = 10;

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As the spec says.
    Pass,
    /// Works, but not as the spec says, or a check could not be made.
    Warn,
    /// Broken: the steps that depend on it are skipped.
    Fail,
    /// Not run: a step it depends on failed.
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One row of the stage table.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Short name.
    pub name: String,
    /// The outcome.
    pub verdict: Verdict,
    /// The flows it sent (ids of the session).
    pub flows: Vec<u64>,
    /// The spec section it follows.
    pub spec: &'static str,
    /// What was seen, or why it was skipped.
    pub note: String,
    /// A server check (a request no client makes) rather than a step of a client's flow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub server_check: bool,
}

/// Validated configuration of `mcptap probe`.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The MCP endpoint as given.
    pub url: String,
    /// Its parts.
    pub target: Url,
    /// The protocol version to speak first.
    pub protocol: String,
    /// `--protocol` was not given: start with 2026-07-28 and fall back to what the server
    /// accepts.
    pub auto_protocol: bool,
    /// Pre-registered client.
    pub client_id: Option<String>,
    /// Its secret.
    pub client_secret: Option<String>,
    /// A Client ID Metadata Document URL.
    pub client_metadata_url: Option<String>,
    /// The callback URI registered for a pre-registered client.
    pub redirect_uri: Option<String>,
    /// Follow authorization redirects without a browser.
    pub headless: bool,
    /// Print the authorization URL instead of opening a browser.
    pub no_browser: bool,
    /// How long to wait for the browser's callback.
    pub timeout: Duration,
    /// Run the server checks.
    pub checks: bool,
    /// JSON output.
    pub json: bool,
    /// `-q`: no stage table while it runs, only the failed steps and the findings at the end;
    /// no warnings on stderr.
    pub quiet: bool,
    /// `--fail-on`.
    pub threshold: Severity,
    /// `--ignore`.
    pub ignore: Vec<FindingId>,
    /// The proxy the probe goes through.
    pub run: RunConfig,
}

impl ProbeConfig {
    /// Validates raw arguments.
    pub fn from_args(args: &ProbeArgs, quiet: bool) -> anyhow::Result<ProbeConfig> {
        let target = Url::parse(&args.url)
            .with_context(|| format!("{:?} is not an http(s) URL of an MCP endpoint", args.url))?;
        if let Some(p) = &args.protocol {
            if !["2025-06-18", "2025-11-25", probe_checks::MODERN].contains(&p.as_str()) {
                anyhow::bail!("--protocol {p:?}: use 2025-06-18, 2025-11-25 or 2026-07-28");
            }
        }
        let threshold: Severity = args.fail_on.into();
        let ignore = args
            .ignore
            .iter()
            .map(|i| {
                FindingId::parse(i).with_context(|| {
                    format!("--ignore {i:?}: no such finding id (see `mcptap explain`)")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !(args.timeout.is_finite() && args.timeout > 0.0) {
            anyhow::bail!("--timeout must be a positive number of seconds");
        }
        for f in &args.upstream_ca {
            if !f.is_file() {
                anyhow::bail!("--upstream-ca {}: no such file", f.display());
            }
        }
        let confdir = args.confdir.resolve()?;
        let run = RunConfig {
            proxy: mcptap_proxy::ProxyConfig {
                listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                upstream_trust: mcptap_proxy::UpstreamTrust {
                    extra_ca_files: args.upstream_ca.clone(),
                    insecure: args.ssl_insecure,
                    no_system_roots: false,
                },
                shutdown_deadline: Duration::from_secs(3),
                ..mcptap_proxy::ProxyConfig::default()
            },
            confdir: confdir.clone(),
            quiet: true,
            listener_cert: None,
            save: SaveTo::choose(args.no_save, args.save.as_deref(), &confdir),
            keep_secrets: args.keep_secrets,
        };
        Ok(ProbeConfig {
            url: args.url.clone(),
            target,
            protocol: args
                .protocol
                .clone()
                .unwrap_or_else(|| probe_checks::MODERN.to_owned()),
            auto_protocol: args.protocol.is_none(),
            client_id: args.client_id.clone(),
            client_secret: args.client_secret.clone(),
            client_metadata_url: args.client_metadata_url.clone(),
            redirect_uri: args.redirect_uri.clone(),
            headless: args.headless,
            no_browser: args.no_browser,
            timeout: Duration::from_secs_f64(args.timeout),
            checks: !args.no_server_checks,
            json: args.json,
            quiet,
            threshold,
            ignore,
            run,
        })
    }
}

/// Runs `mcptap probe`.
pub fn main(args: ProbeArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let config = match ProbeConfig::from_args(&args, quiet) {
        Ok(c) => c,
        Err(e) => {
            say!("mcptap: error: {e:#}");
            return Ok(ExitCode::from(UNUSABLE));
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(config))
}

/// What the probe found, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The MCP endpoint.
    pub url: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Every counted finding not ignored: the analyzer's on the session, then the probe's own.
    pub findings: Vec<Finding>,
    /// The findings `--ignore` left out (kept, so that `analyze` on the saved session shows
    /// them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<Finding>,
    /// What the analyzer found in the server checks' deliberate requests (a token in the query
    /// string looks like a client that dropped its token): listed, not counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provoked: Vec<Finding>,
    /// Where the session was saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<std::path::PathBuf>,
    /// The server could not be probed at all.
    pub unusable: bool,
    /// The flows of the server checks (requests no client makes).
    pub deliberate_flows: Vec<u64>,
    /// The flows of the probe's requests to the MCP endpoint.
    pub mcp_flows: Vec<u64>,
}

/// Starts the proxy, runs the probe through it, closes the session and judges it.
pub async fn run(config: ProbeConfig) -> anyhow::Result<ExitCode> {
    let started = crate::proxy::start(&config.run, false).await?;
    let client = Client::new(started.addr, &started.ca_cert)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cfg = config.clone();
    let probing = async move {
        let mut p = Probe::new(client, &cfg);
        p.run().await;
        let _ = tx.send((p.steps, p.findings, p.deliberate, p.mcp_flows, p.unusable));
    };
    let sink = started.serve(probing).await?;
    let (steps, own, deliberate, mcp_flows, unusable) =
        rx.await.context("the probe stopped unexpectedly")?;
    let summary = sink.close();
    let own_ids: Vec<FindingId> = own.iter().map(|f| f.id).collect();
    // The analyzer judges the checks' requests as if a client had made them (a token in the
    // query string looks like a client that dropped its token): what they provoke is listed,
    // not counted.
    let (provoked, analyzed): (Vec<&Finding>, Vec<&Finding>) = summary
        .report
        .counted()
        .filter(|f| !own_ids.contains(&f.id))
        .partition(|f| provoked_by_checks(f, &deliberate, &mcp_flows));
    let provoked: Vec<Finding> = provoked.into_iter().cloned().collect();
    let (mut findings, ignored): (Vec<Finding>, Vec<Finding>) = analyzed
        .into_iter()
        .cloned()
        .chain(own)
        .partition(|f| !config.ignore.contains(&f.id));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let outcome = Outcome {
        url: config.url.clone(),
        steps,
        findings,
        ignored,
        provoked,
        session: summary.session_dir.clone(),
        unusable,
        deliberate_flows: deliberate,
        mcp_flows,
    };
    if let Some(dir) = &outcome.session {
        // Next to the HAR: the probe's verdicts, which the analyzer cannot re-derive from the
        // flows alone (it does not know which requests were deliberate).
        let path = dir.join(PROBE_FILE);
        let written = mcptap_store::write_atomic(&path, |w| {
            serde_json::to_writer_pretty(&mut *w, &outcome).map_err(|e| {
                mcptap_store::StoreError::Write {
                    path: path.clone(),
                    source: e.into(),
                }
            })
        });
        if let (Err(e), false) = (written, config.quiet) {
            say!("mcptap: warning: cannot write {}: {e}", path.display());
        }
    }
    let mut out = std::io::stdout().lock();
    if config.json {
        serde_json::to_writer_pretty(&mut out, &outcome).context("writing JSON")?;
        writeln!(out)?;
    } else {
        if config.quiet {
            // The table was not shown: the steps that failed, then the findings.
            for s in outcome.steps.iter().filter(|s| s.verdict == Verdict::Fail) {
                writeln!(out, "FAIL  {}: {}", s.name, s.note)?;
            }
        } else {
            writeln!(out)?;
        }
        if outcome.findings.is_empty() {
            writeln!(out, "no findings")?;
        } else {
            writeln!(out, "{} finding(s):", outcome.findings.len())?;
            for f in &outcome.findings {
                writeln!(out, "{}", crate::explain::finding_line(f))?;
            }
        }
        for f in outcome.provoked.iter().filter(|_| !config.quiet) {
            let flows: Vec<String> = f.evidence.iter().map(|i| i.to_string()).collect();
            writeln!(
                out,
                "not counted: {} ({}), provoked by the server checks' own requests",
                f.id,
                flows.join(" ")
            )?;
        }
        if let (Some(dir), false) = (&outcome.session, config.quiet) {
            writeln!(out, "session: {} (mcptap report {0})", dir.display())?;
        }
    }
    out.flush()?;
    // A step of the client's flow that failed means a conformant client cannot use the server,
    // whatever the findings say (the server checks fail through their findings only).
    let flow_failed = outcome
        .steps
        .iter()
        .any(|s| s.verdict == Verdict::Fail && !s.server_check);
    Ok(if outcome.unusable {
        ExitCode::from(UNUSABLE)
    } else if flow_failed
        || outcome
            .findings
            .iter()
            .any(|f| f.severity >= config.threshold)
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The probe's file in a session directory.
pub const PROBE_FILE: &str = "probe.json";

/// The session `input` names: its directory when `input` is a probe's `probe.json`, else
/// `input` itself (a directory, a journal or a HAR).
pub fn session_of(input: &std::path::Path) -> std::path::PathBuf {
    match (input.file_name(), input.parent()) {
        (Some(name), Some(dir)) if name == PROBE_FILE => dir.to_path_buf(),
        _ => input.to_path_buf(),
    }
}

/// When `input` is (or is in) a session a probe recorded: the probe's steps as a markdown
/// section for `mcptap report` (the stage table the terminal showed, a verdict per step of the
/// spec and per server check, with its flows and spec section).
pub fn steps_markdown(input: &std::path::Path) -> Option<String> {
    use std::fmt::Write as _;
    let dir = if input.is_dir() {
        input
    } else {
        input.parent()?
    };
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(PROBE_FILE)).ok()?).ok()?;
    let steps = saved["steps"].as_array().filter(|s| !s.is_empty())?;
    let cell = |v: &Value| {
        v.as_str()
            .unwrap_or_default()
            .replace('|', "\\|")
            .replace('\n', " ")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Probe of {}
",
        cell(&saved["url"])
    );
    let _ = writeln!(out, "| # | step | verdict | flows | seen | spec |");
    let _ = writeln!(out, "| ---: | --- | --- | --- | --- | --- |");
    for (i, s) in steps.iter().enumerate() {
        let verdict = match s["verdict"].as_str() {
            Some("fail") => "**FAIL**".to_owned(),
            Some(v) => v.to_owned(),
            None => String::new(),
        };
        let flows = flows_of(&s["flows"])
            .iter()
            .map(|f| format!("#{f}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {verdict} | {flows} | {} | {} |",
            i + 1,
            cell(&s["name"]),
            cell(&s["note"]),
            cell(&s["spec"]),
        );
    }
    out.push('\n');
    Some(out)
}

/// When `input` is (or is in) a session a probe recorded, makes `report` what the probe said:
/// without the findings its server checks provoked, with the findings of those checks (which
/// the analyzer cannot make: it does not know which requests were deliberate). Returns whether
/// it applied.
pub fn apply_saved(input: &std::path::Path, report: &mut mcptap_analyze::Report) -> bool {
    let dir = if input.is_dir() {
        input
    } else {
        match input.parent() {
            Some(d) => d,
            None => return false,
        }
    };
    let Ok(text) = std::fs::read_to_string(dir.join(PROBE_FILE)) else {
        return false;
    };
    let Ok(saved) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    let deliberate = flows_of(&saved["deliberate_flows"]);
    let mcp_flows = flows_of(&saved["mcp_flows"]);
    report
        .findings
        .retain(|f| !f.counts() || !provoked_by_checks(f, &deliberate, &mcp_flows));
    let checks: Vec<FindingId> = Check::ALL.iter().filter_map(|c| c.finding_id()).collect();
    let saved_findings = ["findings", "ignored"]
        .into_iter()
        .flat_map(|k| saved[k].as_array().into_iter().flatten());
    for f in saved_findings {
        let Some(id) = f["id"].as_str().and_then(FindingId::parse) else {
            continue;
        };
        if !checks.contains(&id) || report.findings.iter().any(|g| g.id == id) {
            continue;
        }
        let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
        report.findings.push(probe_checks::server_finding(
            id,
            text("key"),
            text("severity").parse().unwrap_or(Severity::Medium),
            text("summary"),
            flows_of(&f["evidence"]),
            f["details"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        ));
    }
    report
        .findings
        .sort_by_key(|f| std::cmp::Reverse(f.severity));
    true
}

fn flows_of(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Whether the analyzer's finding `f` was provoked by the server checks: its evidence holds a
/// check's request and either blames the client (the probe is the client, and only its
/// deliberate requests break the rules: a request without the session id cites the
/// `initialize` that assigned it) or holds none of the probe's ordinary requests to the MCP
/// endpoint (a missing challenge on the first `initialize` stays the server's even when the
/// checks' 401s show it too).
fn provoked_by_checks(f: &Finding, deliberate: &[u64], mcp_flows: &[u64]) -> bool {
    let ids: Vec<u64> = f.evidence.iter().map(|id| id.0).collect();
    ids.iter().any(|id| deliberate.contains(id))
        && (f.culprit == mcptap_analyze::Culprit::Client
            || !ids
                .iter()
                .any(|id| mcp_flows.contains(id) && !deliberate.contains(id)))
}

/// A parsed `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, Default, Clone)]
struct Challenge {
    resource_metadata: Option<String>,
    scope: Option<String>,
}

/// The Bearer challenge of a `WWW-Authenticate` value, if it has one.
fn bearer_challenge(value: &str) -> Option<Challenge> {
    let start = value.to_ascii_lowercase().find("bearer")?;
    let rest = &value[start + "bearer".len()..];
    let re = regex::Regex::new(r#"([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))"#).ok()?;
    let mut c = Challenge::default();
    for cap in re.captures_iter(rest) {
        let key = cap.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
        let val = cap
            .get(2)
            .or(cap.get(3))
            .map_or(String::new(), |m| m.as_str().to_owned());
        match key.as_str() {
            "resource_metadata" => c.resource_metadata = Some(val),
            "scope" => c.scope = Some(val),
            _ => {}
        }
    }
    Some(c)
}

/// The query parameters of a URL, decoded.
fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, q)) = url.split_once('?') else {
        return Vec::new();
    };
    let q = q.split('#').next().unwrap_or(q);
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let d = |s: &str| mcptap_flow::redact::percent_decode(s.as_bytes(), true);
            (d(k), d(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `location` resolved against `base`.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let Some(b) = Url::parse(base) else {
        return location.to_owned();
    };
    if location.starts_with('/') {
        return format!("{}{location}", b.origin());
    }
    let dir = b.path().rsplit_once('/').map_or("", |(d, _)| d);
    format!("{}{dir}/{location}", b.origin())
}

/// A URL compared as a resource identifier: without a trailing slash, scheme and host in lower
/// case.
fn canonical(url: &str) -> String {
    match Url::parse(url) {
        Some(u) => format!(
            "{}{}",
            u.origin().to_ascii_lowercase(),
            u.path_and_query.trim_end_matches('/')
        ),
        None => url.trim_end_matches('/').to_owned(),
    }
}

/// The well-known URLs of authorization-server metadata for `issuer`, in the spec's order.
fn as_metadata_urls(issuer: &str) -> Vec<String> {
    let Some(u) = Url::parse(issuer) else {
        return Vec::new();
    };
    let path = u.path().trim_end_matches('/');
    let o = u.origin();
    if path.is_empty() {
        vec![
            format!("{o}/.well-known/oauth-authorization-server"),
            format!("{o}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{o}/.well-known/oauth-authorization-server{path}"),
            format!("{o}/.well-known/openid-configuration{path}"),
            format!("{o}{path}/.well-known/openid-configuration"),
        ]
    }
}

/// The protected-resource metadata URLs, in the spec's order: the challenge's, then
/// path-inserted, then root.
fn prm_urls(target: &Url, from_challenge: Option<&str>) -> Vec<String> {
    let mut urls: Vec<String> = from_challenge.map(str::to_owned).into_iter().collect();
    let path = target.path().trim_end_matches('/');
    let root = format!("{}/.well-known/oauth-protected-resource", target.origin());
    if !path.is_empty() {
        urls.push(format!("{root}{path}"));
    }
    urls.push(root);
    urls.dedup();
    urls
}

fn is_json(reply: &Reply) -> bool {
    reply
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
}

fn mcp_session() -> HeaderName {
    HeaderName::from_static("mcp-session-id")
}

/// Section names of the 2025-11-25 specification.
mod spec {
    pub const CHALLENGE: &str = "authorization §Protected Resource Metadata Discovery Requirements";
    pub const PRM: &str = "authorization §Protected Resource Metadata Discovery Requirements";
    pub const AS: &str = "authorization §Authorization Server Metadata Discovery";
    pub const REGISTRATION: &str = "authorization §Client Registration Approaches";
    pub const AUTHORIZE: &str =
        "authorization §Authorization Flow Steps; §Authorization Code Protection";
    pub const TOKEN: &str = "authorization §Resource Parameter Implementation; OAuth 2.1 §4.1.3";
    pub const USE: &str = "authorization §Access Token Usage; transports §Session Management";
    pub const REFRESH: &str = "authorization §Token Handling; OAuth 2.1 §4.3";
    pub const CLEANUP: &str = "RFC 7009 (revocation); RFC 7592 (registration management)";
}

/// What registration gave.
#[derive(Debug, Clone)]
struct Registered {
    client_id: String,
    client_secret: Option<String>,
    basic: bool,
    redirect_uri: String,
    /// RFC 7592: the registration's URL and its access token, to delete it afterwards.
    management: Option<(String, String)>,
}

/// What the probe created on the server and removes at the end.
#[derive(Debug, Clone, Default)]
struct Created {
    /// The revocation endpoint and the client that holds the tokens.
    revocation: Option<(String, Registered)>,
    /// Tokens issued to the probe.
    tokens: Vec<(String, &'static str)>,
    /// A dynamic registration that can be deleted.
    registration: Option<(String, String)>,
    /// Registrations the unsafe-redirect check got accepted: deletable ones, and a count of
    /// the others.
    check_registrations: Vec<(String, String)>,
    undeletable_check_registrations: usize,
}

/// The probe's state while it runs.
struct Probe<'a> {
    http: Client,
    cfg: &'a ProbeConfig,
    steps: Vec<Step>,
    findings: Vec<Finding>,
    unusable: bool,
    /// The first request was served without a token.
    open: bool,
    /// What to clean up at the end.
    created: Created,
    random: String,
    /// The flows of the server checks: requests no client makes.
    deliberate: Vec<u64>,
    /// The flows of the probe's requests to the MCP endpoint.
    mcp_flows: Vec<u64>,
    /// The protocol version the probe speaks now.
    protocol: String,
    /// Why the probe fell back from 2026-07-28, when it did.
    fell_back: Option<String>,
    /// The token endpoint, the client and the refresh token it holds: for the other-resource
    /// check.
    refreshable: Option<(String, Registered, String)>,
}

/// Why the main path stopped (`... failed`), said on the steps it skips.
type Stop = String;

/// Why nothing is checked on a server that serves without a token.
const OPEN: &str = "the server requires no authorization";

impl<'a> Probe<'a> {
    fn new(http: Client, cfg: &'a ProbeConfig) -> Probe<'a> {
        Probe {
            http,
            cfg,
            steps: Vec::new(),
            findings: Vec::new(),
            unusable: false,
            open: false,
            created: Created::default(),
            deliberate: Vec::new(),
            mcp_flows: Vec::new(),
            protocol: cfg.protocol.clone(),
            fell_back: None,
            refreshable: None,
            random: random_token(9)
                .to_ascii_lowercase()
                .replace(['_', '-'], "x"),
        }
    }

    /// Records and prints a step.
    fn step(
        &mut self,
        name: &str,
        spec: &'static str,
        verdict: Verdict,
        flows: Vec<u64>,
        note: String,
    ) {
        let s = Step {
            name: name.to_owned(),
            verdict,
            flows,
            spec,
            note,
            server_check: Check::ALL.iter().any(|c| c.title() == name),
        };
        if !self.cfg.json && !self.cfg.quiet {
            let flows = s
                .flows
                .iter()
                .map(|f| format!("#{f}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut out = std::io::stdout().lock();
            if self.steps.is_empty() {
                let _ = writeln!(
                    out,
                    "{:>2}  {:<31} {:<4}  {:<12} seen [spec]",
                    "", "step", "", "flows"
                );
            }
            let _ = writeln!(
                out,
                "{:>2}  {:<31} {:<4}  {:<12} {}",
                self.steps.len() + 1,
                s.name,
                s.verdict.as_str(),
                flows,
                s.note
            );
            let _ = writeln!(out, "{:>2}  {:<31}       {:<12} [{}]", "", "", "", s.spec);
            let _ = out.flush();
        }
        self.steps.push(s);
    }

    fn skip(&mut self, name: &str, spec: &'static str, why: &str) {
        self.step(
            name,
            spec,
            Verdict::Skip,
            Vec::new(),
            format!("skipped: {why}"),
        );
    }

    async fn send(&mut self, req: Req) -> Result<Reply, HttpError> {
        let mcp = req.url.split('?').next() == Some(self.cfg.url.as_str());
        let r = self.http.send(req, REQUEST_TIMEOUT).await;
        if mcp {
            self.mcp_flows.push(self.http.sent());
        }
        r
    }

    /// A step that got no answer at all (the request's flow is the one just sent).
    fn no_answer(&mut self, name: &str, spec: &'static str, e: &HttpError) {
        let flow = self.http.sent();
        self.step(
            name,
            spec,
            Verdict::Fail,
            vec![flow],
            format!("no answer: {}", crate::files::chain(e)),
        );
    }

    /// The first MCP request (`initialize`, or `server/discover` for 2026-07-28), with
    /// `authorization` when given.
    fn first_req(&self, authorization: Option<String>) -> Req {
        let mut req =
            probe_checks::mcp_post(&self.cfg.url, &self.protocol, None, self.first_request());
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        req
    }

    fn first_request(&self) -> Value {
        if self.protocol == probe_checks::MODERN {
            json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}})
        } else {
            json!({
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": self.protocol,
                    "capabilities": {},
                    "clientInfo": {"name": "mcptap-probe", "version": env!("CARGO_PKG_VERSION")}
                }
            })
        }
    }

    fn first_name(&self) -> &'static str {
        if self.protocol == probe_checks::MODERN {
            "server/discover"
        } else {
            "initialize"
        }
    }

    /// With `--protocol` left to the probe, whether `reply` to a 2026-07-28 request says the
    /// server does not speak that revision ([`probe_checks::fallback_version`]); then the
    /// probe speaks the version it names from here on. Returns whether it fell back.
    fn fall_back(&mut self, reply: &Reply) -> bool {
        if !self.cfg.auto_protocol || self.protocol != probe_checks::MODERN {
            return false;
        }
        let Some(version) = probe_checks::fallback_version(reply) else {
            return false;
        };
        self.fell_back = Some(format!(
            "2026-07-28 refused ({}{})",
            reply.status,
            reply
                .json()
                .and_then(|v| v
                    .pointer("/error/message")?
                    .as_str()
                    .map(|m| format!(": {m}")))
                .unwrap_or_default()
        ));
        self.protocol = version.to_owned();
        true
    }

    /// The whole probe: the main path, the checks, then the clean-up.
    async fn run(&mut self) {
        self.run_steps().await;
        self.clean_up().await;
    }

    async fn run_steps(&mut self) {
        let mut ctx = probe_checks::Ctx {
            url: self.cfg.url.clone(),
            first_request: self.first_request(),
            token: None,
            session: None,
            protocol: self.protocol.clone(),
            loopback: is_loopback(&self.cfg.target.host),
            random: self.random.clone(),
            registration_endpoint: None,
            jwks_uri: None,
        };
        let reached = self.main_path(&mut ctx).await;
        if !self.cfg.checks {
            return;
        }
        if self.unusable {
            return;
        }
        if self.open {
            for check in Check::ALL {
                self.skip(check.title(), check.spec(), OPEN);
            }
            return;
        }
        if !self.cfg.json && !self.cfg.quiet {
            let _ = writeln!(
                std::io::stdout().lock(),
                "    server checks: requests no client makes"
            );
        }
        for check in Check::after_main_path() {
            if check.needs_token() && ctx.token.is_none() {
                let why = reached.as_deref().unwrap_or("no token was obtained");
                self.skip(check.title(), check.spec(), why);
                continue;
            }
            if check == Check::OtherResource {
                self.other_resource(&ctx).await;
                continue;
            }
            self.check(check, &ctx).await;
        }
    }

    async fn check(&mut self, check: Check, ctx: &probe_checks::Ctx) {
        let Some(mut req) = probe_checks::request(check, ctx) else {
            self.skip(check.title(), check.spec(), check.skip_reason(ctx));
            return;
        };
        let timeout = if check == Check::GetStream {
            STREAM_HEAD_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        req.head_only |= check == Check::GetStream;
        let mcp = req.url.split('?').next() == Some(self.cfg.url.as_str());
        let answer = self.http.send(req, timeout).await;
        let flow = self.http.sent();
        if mcp {
            self.mcp_flows.push(flow);
        }
        // Only the requests no client makes: the analyzer judges the others as any capture.
        if check.finding_id().is_some() {
            self.deliberate.push(flow);
        }
        let judged = probe_checks::judge(check, answer.as_ref(), ctx);
        if let (true, Ok(r)) = (check.registers(), &answer) {
            if r.ok() {
                let doc = r.json().unwrap_or(Value::Null);
                let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
                match field("registration_client_uri").zip(field("registration_access_token")) {
                    Some(m) => self.created.check_registrations.push(m),
                    None => self.created.undeletable_check_registrations += 1,
                }
            }
        }
        self.step(
            check.title(),
            check.spec(),
            judged.verdict,
            vec![flow],
            judged.note,
        );
        if let Some(f) = judged.finding {
            self.add_finding(f);
        }
    }

    /// The other-resource check: a refresh naming another resource (RFC 8707 §2.2), then, when
    /// the authorization server issued a JWT for it, that token on the first MCP request.
    async fn other_resource(&mut self, ctx: &probe_checks::Ctx) {
        let check = Check::OtherResource;
        let jwt = ctx
            .token
            .as_deref()
            .and_then(probe_checks::jwt_audience)
            .is_some();
        let Some((endpoint, client, rt)) = self.refreshable.clone().filter(|_| jwt) else {
            self.skip(check.title(), check.spec(), check.skip_reason(ctx));
            return;
        };
        let other = ctx.other_audience();
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
            ("resource", other.as_str()),
        ];
        let req = Self::client_post(&endpoint, &client, form).header(ACCEPT, "application/json");
        let answer = self.http.send(req, REQUEST_TIMEOUT).await;
        let mut flows = vec![self.http.sent()];
        self.deliberate.extend(&flows);
        let reply = match answer {
            Ok(r) => r,
            Err(e) => {
                let note = format!("no answer: {}", crate::files::chain(&e));
                self.step(check.title(), check.spec(), Verdict::Warn, flows, note);
                return;
            }
        };
        let doc = reply.json().unwrap_or(Value::Null);
        let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        let issued = field("access_token").filter(|_| reply.status == 200);
        if let Some(t) = &issued {
            self.created.tokens.push((t.clone(), "access_token"));
        }
        if let Some(r) = field("refresh_token").filter(|_| issued.is_some()) {
            self.created.tokens.push((r, "refresh_token"));
        }
        let judged = match issued {
            None => probe_checks::judge_other_resource(
                probe_checks::OtherResource::Refused(&reply),
                ctx,
            ),
            Some(token) => match probe_checks::jwt_audience(&token) {
                Some(aud) if aud.contains(&other) => {
                    let req = probe_checks::mcp_post(
                        &ctx.url,
                        &ctx.protocol,
                        None,
                        ctx.first_request.clone(),
                    )
                    .header(AUTHORIZATION, format!("Bearer {token}"));
                    let answer = self.http.send(req, REQUEST_TIMEOUT).await;
                    let flow = self.http.sent();
                    flows.push(flow);
                    self.deliberate.push(flow);
                    self.mcp_flows.push(flow);
                    match &answer {
                        Ok(r) => probe_checks::judge_other_resource(
                            probe_checks::OtherResource::Used(r),
                            ctx,
                        ),
                        Err(e) => probe_checks::Judged {
                            verdict: Verdict::Warn,
                            note: format!("no answer: {}", crate::files::chain(e)),
                            finding: None,
                        },
                    }
                }
                aud => probe_checks::judge_other_resource(
                    probe_checks::OtherResource::Ignored(aud.unwrap_or_default()),
                    ctx,
                ),
            },
        };
        self.step(
            check.title(),
            check.spec(),
            judged.verdict,
            flows,
            judged.note,
        );
        if let Some(f) = judged.finding {
            self.add_finding(f);
        }
    }

    /// Adds a server check's finding; a second check failing with the same id (three token
    /// checks make `token-not-validated`) adds its evidence and summary to the first, so that
    /// each id is one finding, as the analyzer makes them.
    fn add_finding(&mut self, f: Finding) {
        match self.findings.iter_mut().find(|g| g.id == f.id) {
            Some(g) => {
                g.occurrences += 1;
                g.severity = g.severity.max(f.severity);
                g.evidence.extend(f.evidence);
                g.details.push(format!("also: {}", f.summary));
                g.details.extend(f.details);
            }
            None => self.findings.push(f),
        }
    }

    /// Steps 1–6. Returns the name of the step that stopped it, if one did.
    async fn main_path(&mut self, ctx: &mut probe_checks::Ctx) -> Option<Stop> {
        let challenge = match self.unauthenticated().await {
            Ok(c) => c,
            Err(stop) => {
                for (name, spec) in [
                    ("protected-resource metadata", spec::PRM),
                    ("authorization-server metadata", spec::AS),
                    ("registration", spec::REGISTRATION),
                    ("authorization code + PKCE", spec::AUTHORIZE),
                    ("token exchange", spec::TOKEN),
                ] {
                    self.skip(name, spec, &stop);
                }
                return Some(stop);
            }
        };
        self.oauth(challenge, ctx).await
    }

    /// Step 1: the unauthenticated first request must get 401 with a Bearer challenge.
    async fn unauthenticated(&mut self) -> Result<Challenge, Stop> {
        let mut flows = Vec::new();
        let reply = loop {
            let name = format!("unauthenticated {}", self.first_name());
            match self.send(self.first_req(None)).await {
                Ok(r) if self.fall_back(&r) => flows.push(r.flow),
                Ok(r) => break r,
                Err(e) => {
                    self.no_answer(&name, spec::CHALLENGE, &e);
                    self.unusable = true;
                    return Err(format!("{name} failed"));
                }
            }
        };
        let name = format!("unauthenticated {}", self.first_name());
        flows.push(reply.flow);
        if reply.status == 502 || reply.status == 504 {
            let note = format!(
                "{}: the proxy could not reach the server: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body).trim()
            );
            self.step(&name, spec::CHALLENGE, Verdict::Fail, flows, note);
            self.unusable = true;
            return Err(name);
        }
        if reply.ok() {
            self.step(
                &name,
                spec::CHALLENGE,
                Verdict::Warn,
                flows,
                format!(
                    "{}: the server does not require authorization",
                    reply.status
                ),
            );
            self.open = true;
            return Err(OPEN.to_owned());
        }
        if reply.status != 401 {
            self.step(
                &name,
                spec::CHALLENGE,
                Verdict::Fail,
                flows,
                format!("{} instead of 401", reply.status),
            );
            return Err(format!("{name} failed"));
        }
        match reply.header("www-authenticate").and_then(bearer_challenge) {
            Some(c) => {
                let (verdict, note) = match &c.resource_metadata {
                    Some(_) => (Verdict::Pass, "401 with a Bearer challenge and resource_metadata"),
                    None => (
                        Verdict::Warn,
                        "401 with a Bearer challenge without resource_metadata (well-known fallback)",
                    ),
                };
                self.step(&name, spec::CHALLENGE, verdict, flows, note.to_owned());
                Ok(c)
            }
            None => {
                self.step(
                    &name,
                    spec::CHALLENGE,
                    Verdict::Warn,
                    flows,
                    "401 without a Bearer challenge (well-known fallback)".to_owned(),
                );
                Ok(Challenge::default())
            }
        }
    }

    /// Steps 2–6 after the challenge.
    async fn oauth(&mut self, challenge: Challenge, ctx: &mut probe_checks::Ctx) -> Option<Stop> {
        const STEPS: [(&str, &str); 5] = [
            ("protected-resource metadata", spec::PRM),
            ("authorization-server metadata", spec::AS),
            ("registration", spec::REGISTRATION),
            ("authorization code + PKCE", spec::AUTHORIZE),
            ("token exchange", spec::TOKEN),
        ];
        let skip_from = |p: &mut Probe<'_>, from: usize, why: &str| {
            for (name, spec) in &STEPS[from..] {
                p.skip(name, spec, why);
            }
        };
        // 2. Protected-resource metadata.
        let Some(prm) = self.prm(&challenge).await else {
            skip_from(self, 1, &format!("{} failed", STEPS[0].0));
            return Some(format!("{} failed", STEPS[0].0));
        };
        // 3. Authorization-server metadata.
        let Some(asm) = self.as_metadata(&prm).await else {
            skip_from(self, 2, &format!("{} failed", STEPS[1].0));
            return Some(format!("{} failed", STEPS[1].0));
        };
        ctx.jwks_uri = asm
            .get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // 4. Registration, on a loopback callback.
        let listener = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await
        {
            Ok(l) => l,
            Err(e) => {
                self.step(
                    STEPS[2].0,
                    spec::REGISTRATION,
                    Verdict::Fail,
                    Vec::new(),
                    format!("cannot open the loopback callback listener: {e}"),
                );
                skip_from(self, 3, &format!("{} failed", STEPS[2].0));
                return Some(format!("{} failed", STEPS[2].0));
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let Some(client) = self.register(&asm, port).await else {
            skip_from(self, 3, &format!("{} failed", STEPS[2].0));
            return Some(format!("{} failed", STEPS[2].0));
        };
        self.created.registration = client.management.clone();
        ctx.registration_endpoint = asm
            .get("registration_endpoint")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(endpoint) = asm.get("revocation_endpoint").and_then(Value::as_str) {
            self.created.revocation = Some((endpoint.to_owned(), client.clone()));
        }
        // 5. Authorization code with PKCE.
        let resource = prm
            .get("resource")
            .and_then(Value::as_str)
            .unwrap_or(&self.cfg.url)
            .to_owned();
        let scope = challenge.scope.clone().or_else(|| {
            let list: Vec<&str> = prm
                .get("scopes_supported")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            (!list.is_empty()).then(|| list.join(" "))
        });
        let verifier = random_token(48);
        let Some(code) = self
            .authorize(
                &asm,
                &client,
                &resource,
                scope.as_deref(),
                &verifier,
                listener,
            )
            .await
        else {
            skip_from(self, 4, &format!("{} failed", STEPS[3].0));
            return Some(format!("{} failed", STEPS[3].0));
        };
        // 6. Token exchange, then use.
        let Some(tokens) = self.token(&asm, &client, &resource, &code, &verifier).await else {
            return Some(format!("{} failed", STEPS[4].0));
        };
        let access = tokens
            .get("access_token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        ctx.token = Some(access.clone());
        self.created.tokens.push((access.clone(), "access_token"));
        let used = self.use_token(&access, ctx).await;
        if let Some(rt) = tokens.get("refresh_token").and_then(Value::as_str) {
            let rt = rt.to_owned();
            let renewed = self.refresh(&asm, &client, &resource, &rt).await;
            let fresh = |k: &str| {
                renewed
                    .as_ref()
                    .and_then(|d| d.get(k)?.as_str().map(str::to_owned))
            };
            if let Some(a) = fresh("access_token") {
                self.created.tokens.push((a, "access_token"));
            }
            // Rotated or not, the last refresh token the probe holds.
            let last = fresh("refresh_token").unwrap_or(rt);
            self.created.tokens.push((last.clone(), "refresh_token"));
            if let Some(endpoint) = asm.get("token_endpoint").and_then(Value::as_str) {
                self.refreshable = Some((endpoint.to_owned(), client.clone(), last));
            }
        } else {
            self.step(
                "refresh",
                spec::REFRESH,
                Verdict::Pass,
                Vec::new(),
                "no refresh token issued: nothing to refresh".to_owned(),
            );
        }
        if used {
            None
        } else {
            Some(format!("{} with token failed", self.first_name()))
        }
    }

    /// Step 2.
    async fn prm(&mut self, challenge: &Challenge) -> Option<Value> {
        let name = "protected-resource metadata";
        let mut flows = Vec::new();
        let mut notes = Vec::new();
        for url in prm_urls(&self.cfg.target, challenge.resource_metadata.as_deref()) {
            let reply = match self
                .send(Req::get(&url).header(ACCEPT, "application/json"))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    flows.push(self.http.sent());
                    notes.push(format!("{url}: {}", crate::files::chain(&e)));
                    continue;
                }
            };
            flows.push(reply.flow);
            let doc = if reply.status == 200 {
                reply.json().filter(Value::is_object)
            } else {
                None
            };
            let Some(doc) = doc else {
                notes.push(format!(
                    "{url}: {}{}",
                    reply.status,
                    if reply.status == 200 && !is_json(&reply) {
                        " not JSON"
                    } else {
                        ""
                    }
                ));
                continue;
            };
            let servers = doc
                .get("authorization_servers")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(Value::is_string));
            if !servers {
                notes.push(format!("{url}: no authorization_servers"));
                continue;
            }
            let resource = doc.get("resource").and_then(Value::as_str).unwrap_or("");
            if canonical(resource) != canonical(&self.cfg.url) {
                self.step(
                    name,
                    spec::PRM,
                    Verdict::Fail,
                    flows,
                    format!(
                        "resource {resource:?} is not the MCP URL {:?}: a conformant client stops",
                        self.cfg.url
                    ),
                );
                return None;
            }
            let verdict = if notes.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Warn
            };
            notes.push(format!("found at {url}"));
            self.step(name, spec::PRM, verdict, flows, notes.join("; "));
            return Some(doc);
        }
        self.step(name, spec::PRM, Verdict::Fail, flows, notes.join("; "));
        None
    }

    /// Step 3.
    async fn as_metadata(&mut self, prm: &Value) -> Option<Value> {
        let name = "authorization-server metadata";
        let issuer = prm
            .get("authorization_servers")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find_map(Value::as_str))
            .unwrap_or_default()
            .to_owned();
        let mut flows = Vec::new();
        let mut notes = Vec::new();
        for url in as_metadata_urls(&issuer) {
            let reply = match self
                .send(Req::get(&url).header(ACCEPT, "application/json"))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    flows.push(self.http.sent());
                    notes.push(format!("{url}: {}", crate::files::chain(&e)));
                    continue;
                }
            };
            flows.push(reply.flow);
            let Some(doc) = (reply.status == 200)
                .then(|| reply.json())
                .flatten()
                .filter(Value::is_object)
            else {
                notes.push(format!(
                    "{url}: {}{}",
                    reply.status,
                    if reply.status == 200 { " not JSON" } else { "" }
                ));
                continue;
            };
            let mut problems = Vec::new();
            if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                problems.push(format!(
                    "issuer {:?} is not {issuer:?}",
                    doc.get("issuer").and_then(Value::as_str).unwrap_or("")
                ));
            }
            for field in ["authorization_endpoint", "token_endpoint"] {
                if doc.get(field).and_then(Value::as_str).is_none() {
                    problems.push(format!("no {field}"));
                }
            }
            let s256 = doc
                .get("code_challenge_methods_supported")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|v| v == "S256"));
            if !s256 {
                problems.push(
                    "code_challenge_methods_supported lacks S256: a conformant client refuses to \
                     proceed"
                        .to_owned(),
                );
            }
            if !problems.is_empty() {
                self.step(name, spec::AS, Verdict::Fail, flows, problems.join("; "));
                return None;
            }
            let verdict = if notes.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Warn
            };
            notes.push(format!("found at {url}"));
            self.step(name, spec::AS, verdict, flows, notes.join("; "));
            return Some(doc);
        }
        if issuer.is_empty() {
            notes.push("no authorization server in the metadata".to_owned());
        }
        self.step(name, spec::AS, Verdict::Fail, flows, notes.join("; "));
        None
    }

    /// Step 4.
    async fn register(&mut self, asm: &Value, port: u16) -> Option<Registered> {
        let name = "registration";
        let loopback = format!("http://127.0.0.1:{port}/callback");
        if let Some(id) = &self.cfg.client_id {
            let client = Registered {
                client_id: id.clone(),
                client_secret: self.cfg.client_secret.clone(),
                basic: false,
                redirect_uri: self.cfg.redirect_uri.clone().unwrap_or(loopback),
                management: None,
            };
            self.step(
                name,
                spec::REGISTRATION,
                Verdict::Pass,
                Vec::new(),
                format!("pre-registered client {id}"),
            );
            return Some(client);
        }
        let cimd = asm
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            == Some(true);
        if let (Some(url), true) = (&self.cfg.client_metadata_url, cimd) {
            self.step(
                name,
                spec::REGISTRATION,
                Verdict::Pass,
                Vec::new(),
                format!("Client ID Metadata Document {url}"),
            );
            return Some(Registered {
                client_id: url.clone(),
                client_secret: None,
                basic: false,
                redirect_uri: self.cfg.redirect_uri.clone().unwrap_or(loopback),
                management: None,
            });
        }
        let Some(endpoint) = asm.get("registration_endpoint").and_then(Value::as_str) else {
            self.step(
                name,
                spec::REGISTRATION,
                Verdict::Fail,
                Vec::new(),
                "no registration_endpoint and no usable Client ID Metadata Document: pass \
                 --client-id"
                    .to_owned(),
            );
            return None;
        };
        let body = json!({
            "client_name": "mcptap probe",
            "redirect_uris": [loopback],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        let endpoint = endpoint.to_owned();
        let reply = match self
            .send(
                Req::new(Method::POST, &endpoint)
                    .header(ACCEPT, "application/json")
                    .json(&body),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.no_answer(name, spec::REGISTRATION, &e);
                return None;
            }
        };
        let doc = reply.json().unwrap_or(Value::Null);
        let id = doc.get("client_id").and_then(Value::as_str);
        match (reply.ok(), id) {
            (true, Some(id)) => {
                let secret = doc
                    .get("client_secret")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let basic = doc
                    .get("token_endpoint_auth_method")
                    .and_then(Value::as_str)
                    == Some("client_secret_basic");
                let echoed = doc
                    .get("redirect_uris")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|u| u == loopback.as_str()));
                let (verdict, note) = if echoed {
                    (Verdict::Pass, format!("dynamic registration: client {id}"))
                } else {
                    (
                        Verdict::Warn,
                        format!("dynamic registration: client {id}, redirect_uris not echoed"),
                    )
                };
                self.step(name, spec::REGISTRATION, verdict, vec![reply.flow], note);
                let management = doc
                    .get("registration_client_uri")
                    .and_then(Value::as_str)
                    .zip(doc.get("registration_access_token").and_then(Value::as_str))
                    .map(|(u, t)| (u.to_owned(), t.to_owned()));
                Some(Registered {
                    client_id: id.to_owned(),
                    client_secret: secret,
                    basic,
                    redirect_uri: loopback,
                    management,
                })
            }
            _ => {
                let err = doc
                    .get("error")
                    .and_then(Value::as_str)
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                self.step(
                    name,
                    spec::REGISTRATION,
                    Verdict::Fail,
                    vec![reply.flow],
                    format!("dynamic registration answered {}{err}", reply.status),
                );
                None
            }
        }
    }

    /// Step 5: the authorization code.
    async fn authorize(
        &mut self,
        asm: &Value,
        client: &Registered,
        resource: &str,
        scope: Option<&str>,
        verifier: &str,
        listener: tokio::net::TcpListener,
    ) -> Option<String> {
        let name = "authorization code + PKCE";
        let endpoint = asm
            .get("authorization_endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let state = random_token(16);
        let challenge = s256(verifier);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &client.client_id),
            ("redirect_uri", &client.redirect_uri),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", &state),
            ("resource", resource),
        ];
        if let Some(s) = scope {
            params.push(("scope", s));
        }
        let enc = mcptap_flow::redact::percent_encode;
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let url = format!("{endpoint}{sep}{}", query.join("&"));
        let mut flows = Vec::new();
        let callback = if self.cfg.headless {
            drop(listener);
            let mut at = url;
            let mut found = None;
            for _ in 0..MAX_REDIRECTS {
                let reply = match self.send(Req::get(&at)).await {
                    Ok(r) => r,
                    Err(e) => {
                        flows.push(self.http.sent());
                        self.step(
                            name,
                            spec::AUTHORIZE,
                            Verdict::Fail,
                            flows,
                            format!("{at}: {}", crate::files::chain(&e)),
                        );
                        return None;
                    }
                };
                flows.push(reply.flow);
                let location = reply.header(LOCATION.as_str()).map(|l| resolve(&at, l));
                match location {
                    Some(l) if (300..400).contains(&reply.status) => {
                        if l.starts_with(&client.redirect_uri) {
                            found = Some(l);
                            break;
                        }
                        at = l;
                    }
                    _ => {
                        let why = if reply.status == 200 {
                            "200: a login or consent page; run without --headless".to_owned()
                        } else {
                            format!(
                                "{} {}",
                                reply.status,
                                String::from_utf8_lossy(&reply.body)
                                    .chars()
                                    .take(200)
                                    .collect::<String>()
                            )
                        };
                        self.step(name, spec::AUTHORIZE, Verdict::Fail, flows, why);
                        return None;
                    }
                }
            }
            match found {
                Some(l) => l,
                None => {
                    self.step(
                        name,
                        spec::AUTHORIZE,
                        Verdict::Fail,
                        flows,
                        format!("more than {MAX_REDIRECTS} redirects"),
                    );
                    return None;
                }
            }
        } else {
            if !self.cfg.json {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "    open this URL to authorize (waiting {:?}):\n    {url}",
                    self.cfg.timeout
                );
                let _ = out.flush();
            } else {
                say!("mcptap: open this URL to authorize: {url}");
            }
            if !self.cfg.no_browser {
                open_browser(&url);
            }
            match tokio::time::timeout(self.cfg.timeout, wait_callback(&listener)).await {
                Ok(Ok(target)) => format!("http://127.0.0.1{target}"),
                Ok(Err(e)) => {
                    self.step(
                        name,
                        spec::AUTHORIZE,
                        Verdict::Fail,
                        flows,
                        format!("the callback listener failed: {e}"),
                    );
                    return None;
                }
                Err(_) => {
                    self.step(
                        name,
                        spec::AUTHORIZE,
                        Verdict::Fail,
                        flows,
                        format!("no callback within {:?}", self.cfg.timeout),
                    );
                    return None;
                }
            }
        };
        let p = query_params(&callback);
        if let Some(err) = param(&p, "error") {
            let desc = param(&p, "error_description").unwrap_or("");
            self.step(
                name,
                spec::AUTHORIZE,
                Verdict::Fail,
                flows,
                format!("the server answered error={err} {desc}"),
            );
            return None;
        }
        let Some(code) = param(&p, "code") else {
            self.step(
                name,
                spec::AUTHORIZE,
                Verdict::Fail,
                flows,
                "the callback carries no code".to_owned(),
            );
            return None;
        };
        if param(&p, "state") != Some(state.as_str()) {
            self.step(
                name,
                spec::AUTHORIZE,
                Verdict::Fail,
                flows,
                "the callback's state is not the one sent".to_owned(),
            );
            return None;
        }
        let mut notes = vec!["code received, state matches".to_owned()];
        let mut verdict = Verdict::Pass;
        if asm.get("authorization_response_iss_parameter_supported") == Some(&Value::Bool(true)) {
            let iss = asm.get("issuer").and_then(Value::as_str);
            if param(&p, "iss") != iss {
                verdict = Verdict::Warn;
                notes.push("iss missing or not the issuer (RFC 9207)".to_owned());
            }
        }
        let code = code.to_owned();
        self.step(name, spec::AUTHORIZE, verdict, flows, notes.join("; "));
        Some(code)
    }

    /// Client authentication at the token endpoint: the form fields and the header.
    /// A form POST to an authorization-server endpoint, authenticated as `client` (see
    /// [`Self::client_auth`]).
    fn client_post<'c>(
        endpoint: &str,
        client: &'c Registered,
        mut form: Vec<(&'c str, &'c str)>,
    ) -> Req {
        let basic = Self::client_auth(client, &mut form);
        let req = Req::new(Method::POST, endpoint).form(&form);
        match basic {
            Some(b) => req.header(AUTHORIZATION, b),
            None => req,
        }
    }

    fn client_auth<'c>(
        client: &'c Registered,
        form: &mut Vec<(&'c str, &'c str)>,
    ) -> Option<String> {
        use base64::Engine as _;
        form.push(("client_id", &client.client_id));
        match (&client.client_secret, client.basic) {
            (Some(secret), true) => {
                form.retain(|(k, _)| *k != "client_id");
                let enc = mcptap_flow::redact::percent_encode;
                let pair = format!("{}:{}", enc(&client.client_id), enc(secret));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (Some(secret), false) => {
                form.push(("client_secret", secret));
                None
            }
            (None, _) => None,
        }
    }

    /// Step 6a.
    async fn token(
        &mut self,
        asm: &Value,
        client: &Registered,
        resource: &str,
        code: &str,
        verifier: &str,
    ) -> Option<Value> {
        let name = "token exchange";
        let endpoint = asm
            .get("token_endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", verifier),
            ("resource", resource),
        ];
        let req = Self::client_post(&endpoint, client, form).header(ACCEPT, "application/json");
        let reply = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                self.no_answer(name, spec::TOKEN, &e);
                return None;
            }
        };
        let doc = reply.json().unwrap_or(Value::Null);
        let access = doc.get("access_token").and_then(Value::as_str);
        let bearer = doc
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        if reply.status != 200 || access.is_none() || !bearer {
            let err = doc
                .get("error")
                .and_then(Value::as_str)
                .map(|e| format!(" error={e}"))
                .unwrap_or_default();
            self.step(
                name,
                spec::TOKEN,
                Verdict::Fail,
                vec![reply.flow],
                format!(
                    "{}{err}: no usable Bearer access token in the answer",
                    reply.status
                ),
            );
            return None;
        }
        let mut notes = vec!["access token issued".to_owned()];
        let mut verdict = Verdict::Pass;
        if doc.get("expires_in").is_none() {
            verdict = Verdict::Warn;
            notes.push("no expires_in".to_owned());
        }
        if doc.get("refresh_token").is_some() {
            notes.push("refresh token issued".to_owned());
        }
        self.step(
            name,
            spec::TOKEN,
            verdict,
            vec![reply.flow],
            notes.join("; "),
        );
        Some(doc)
    }

    /// Step 6b: the first request and `tools/list` with the token; the notification check
    /// rides on `notifications/initialized`.
    async fn use_token(&mut self, token: &str, ctx: &mut probe_checks::Ctx) -> bool {
        let bearer = format!("Bearer {token}");
        let mut flows = Vec::new();
        let reply = loop {
            let name = format!("{} with token", self.first_name());
            match self.send(self.first_req(Some(bearer.clone()))).await {
                Ok(r) if self.fall_back(&r) => flows.push(r.flow),
                Ok(r) => break r,
                Err(e) => {
                    self.no_answer(&name, spec::USE, &e);
                    ctx.token = None;
                    return false;
                }
            }
        };
        let name = format!("{} with token", self.first_name());
        flows.push(reply.flow);
        // What the checks send from here on: the protocol the probe fell back to, if it did.
        ctx.protocol = self.protocol.clone();
        ctx.first_request = self.first_request();
        let fell_back = self
            .fell_back
            .as_ref()
            .map(|f| format!("{f}; "))
            .unwrap_or_default();
        let answer = reply.json();
        let result = answer.as_ref().and_then(|v| v.get("result").cloned());
        let Some(result) = result.filter(|_| reply.ok()) else {
            let why = match answer.as_ref().and_then(|v| v.get("error")) {
                _ if matches!(reply.status, 401 | 403) => {
                    format!("{}: the token was not accepted", reply.status)
                }
                Some(e) => format!(
                    "{}: JSON-RPC error {} {}",
                    reply.status,
                    e.get("code").unwrap_or(&Value::Null),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                ),
                None if reply.ok() => format!("{}: no JSON-RPC result", reply.status),
                None => format!("{}: refused", reply.status),
            };
            self.step(
                &name,
                spec::USE,
                Verdict::Fail,
                flows,
                format!("{fell_back}{why}"),
            );
            ctx.token = None;
            return false;
        };
        if let Some(v) = result.get("protocolVersion").and_then(Value::as_str) {
            ctx.protocol = v.to_owned();
        }
        ctx.session = reply.header("mcp-session-id").map(str::to_owned);
        self.step(
            &name,
            spec::USE,
            Verdict::Pass,
            flows,
            format!(
                "{fell_back}{}: protocol {}{}",
                reply.status,
                ctx.protocol,
                if ctx.session.is_some() {
                    ", session"
                } else {
                    ""
                }
            ),
        );
        if self.cfg.checks {
            self.check(Check::Notification, ctx).await;
        } else if let Some(req) = probe_checks::request(Check::Notification, ctx) {
            let _ = self.send(req).await;
        }
        let mut req = probe_checks::mcp_post(
            &self.cfg.url,
            &ctx.protocol,
            Some(&ctx.protocol),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}),
        )
        .header(AUTHORIZATION, bearer);
        if let Some(s) = &ctx.session {
            req = req.header(mcp_session(), s);
        }
        match self.send(req).await {
            Ok(r) => {
                let tools = r.json().and_then(|v| {
                    v.pointer("/result/tools")
                        .and_then(Value::as_array)
                        .map(Vec::len)
                });
                let (verdict, note) = match tools {
                    Some(n) if r.ok() => (Verdict::Pass, format!("{}: {n} tool(s)", r.status)),
                    _ => (Verdict::Fail, format!("{}: no tool list", r.status)),
                };
                self.step(
                    "tools/list with token",
                    spec::USE,
                    verdict,
                    vec![r.flow],
                    note,
                );
            }
            Err(e) => {
                self.no_answer("tools/list with token", spec::USE, &e);
            }
        }
        true
    }

    /// Step 6c.
    async fn refresh(
        &mut self,
        asm: &Value,
        client: &Registered,
        resource: &str,
        rt: &str,
    ) -> Option<Value> {
        let name = "refresh";
        let endpoint = asm
            .get("token_endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("resource", resource),
        ];
        let req = Self::client_post(&endpoint, client, form).header(ACCEPT, "application/json");
        match self.send(req).await {
            Ok(r) => {
                let doc = r.json().filter(|d| {
                    r.status == 200 && d.get("access_token").and_then(Value::as_str).is_some()
                });
                let (verdict, note) = if doc.is_some() {
                    (Verdict::Pass, "new access token".to_owned())
                } else {
                    (Verdict::Fail, format!("{}: no new access token", r.status))
                };
                self.step(name, spec::REFRESH, verdict, vec![r.flow], note);
                doc
            }
            Err(e) => {
                self.no_answer(name, spec::REFRESH, &e);
                None
            }
        }
    }

    /// Revokes the tokens the probe obtained (RFC 7009) and deletes its registration where
    /// the server allows it (RFC 7592).
    async fn clean_up(&mut self) {
        let created = std::mem::take(&mut self.created);
        let mut flows = Vec::new();
        let mut notes = Vec::new();
        let mut verdict = Verdict::Pass;
        match &created.revocation {
            Some((endpoint, client)) if !created.tokens.is_empty() => {
                let mut refused = 0;
                let mut first_refusal = None;
                for (token, hint) in &created.tokens {
                    let form = vec![("token", token.as_str()), ("token_type_hint", *hint)];
                    let req = Self::client_post(endpoint, client, form);
                    match self.send(req).await {
                        Ok(r) => {
                            flows.push(r.flow);
                            if r.status != 200 {
                                refused += 1;
                                first_refusal.get_or_insert_with(|| oauth_error(&r));
                            }
                        }
                        Err(_) => {
                            flows.push(self.http.sent());
                            refused += 1;
                        }
                    }
                }
                if refused > 0 {
                    verdict = Verdict::Warn;
                    notes.push(format!(
                        "{refused} of {} revocations refused{}",
                        created.tokens.len(),
                        first_refusal.map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                } else {
                    notes.push(format!("{} token(s) revoked", created.tokens.len()));
                }
            }
            None if !created.tokens.is_empty() => {
                notes.push("no revocation_endpoint: the tokens expire on their own".to_owned());
            }
            _ => {}
        }
        for (uri, token) in &created.check_registrations {
            let req =
                Req::new(Method::DELETE, uri).header(AUTHORIZATION, format!("Bearer {token}"));
            match self.send(req).await {
                Ok(r) if r.status == 204 || r.ok() => {
                    flows.push(r.flow);
                    notes.push("the unsafe-redirect check's registration deleted".to_owned());
                }
                other => {
                    flows.push(other.as_ref().map_or(self.http.sent(), |r| r.flow));
                    verdict = Verdict::Warn;
                    notes.push("the unsafe-redirect check's registration not deleted".to_owned());
                }
            }
        }
        let mut undeletable = created.undeletable_check_registrations;
        if undeletable > 0 {
            verdict = Verdict::Warn;
        }
        match &created.registration {
            Some((uri, token)) => {
                let req =
                    Req::new(Method::DELETE, uri).header(AUTHORIZATION, format!("Bearer {token}"));
                match self.send(req).await {
                    Ok(r) => {
                        flows.push(r.flow);
                        if r.status == 204 || r.ok() {
                            notes.push("registration deleted".to_owned());
                        } else {
                            verdict = Verdict::Warn;
                            notes.push(format!("registration not deleted ({})", r.status));
                        }
                    }
                    Err(e) => {
                        flows.push(self.http.sent());
                        verdict = Verdict::Warn;
                        notes.push(format!(
                            "registration not deleted: {}",
                            crate::files::chain(&e)
                        ));
                    }
                }
            }
            None if self.cfg.client_id.is_none() && !created.tokens.is_empty() => {
                undeletable += 1;
            }
            None => {}
        }
        if undeletable > 0 {
            notes.push(format!(
                "{undeletable} registration(s) cannot be deleted (no RFC 7592 management)"
            ));
        }
        if !notes.is_empty() {
            self.step("clean-up", spec::CLEANUP, verdict, flows, notes.join("; "));
        }
    }
}

/// `400 invalid_request: description` of an OAuth error answer.
fn oauth_error(r: &Reply) -> String {
    let doc = r.json().unwrap_or(Value::Null);
    let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("");
    let mut s = r.status.to_string();
    if !field("error").is_empty() {
        s.push(' ');
        s.push_str(field("error"));
    }
    if !field("error_description").is_empty() {
        s.push_str(": ");
        s.push_str(
            &field("error_description")
                .chars()
                .take(120)
                .collect::<String>(),
        );
    }
    s
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Opens `url` in the user's browser, best effort.
fn open_browser(url: &str) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let spawned = std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        say!("mcptap: cannot open a browser ({program}); open the URL above yourself");
    }
}

/// Waits for the browser's request on the loopback callback; returns its request target
/// (`/callback?code=...`). Other requests (a favicon) get a 404 and the wait goes on.
async fn wait_callback(listener: &tokio::net::TcpListener) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head);
        let target = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_owned();
        let ours = target.starts_with("/callback");
        let (status, body) = if ours {
            (
                "200 OK",
                "mcptap probe: authorization received, you can close this window.\n",
            )
        } else {
            ("404 Not Found", "not found\n")
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
        if ours {
            return Ok(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_the_spec_order() {
        let t = Url::parse("https://mcp.example/a/mcp").unwrap_or_else(|| unreachable!());
        assert_eq!(
            prm_urls(&t, Some("https://mcp.example/prm")),
            [
                "https://mcp.example/prm",
                "https://mcp.example/.well-known/oauth-protected-resource/a/mcp",
                "https://mcp.example/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            as_metadata_urls("https://auth.example/tenant"),
            [
                "https://auth.example/.well-known/oauth-authorization-server/tenant",
                "https://auth.example/.well-known/openid-configuration/tenant",
                "https://auth.example/tenant/.well-known/openid-configuration"
            ]
        );
        assert_eq!(as_metadata_urls("https://auth.example").len(), 2);
    }

    #[test]
    fn challenges_and_callbacks_parse() {
        let c = bearer_challenge(
            r#"Bearer error="invalid_token", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp", scope=mcp"#,
        )
        .unwrap_or_else(|| unreachable!());
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://x/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scope.as_deref(), Some("mcp"));
        assert!(bearer_challenge("Basic realm=x").is_none());
        let p = query_params("http://127.0.0.1:5/callback?code=a%2Bb&state=s+t");
        assert_eq!(param(&p, "code"), Some("a+b"));
        assert_eq!(param(&p, "state"), Some("s t"));
        assert_eq!(
            resolve("https://a.example/x/y", "/z"),
            "https://a.example/z"
        );
        assert_eq!(
            canonical("https://A.example/mcp/"),
            canonical("https://a.example/mcp")
        );
    }
}
