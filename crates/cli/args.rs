//! Command-line arguments (clap). Names follow mitmproxy where users already know them:
//! `-p/--listen-port`, `--listen-host`, `-k/--ssl-insecure`, `--ignore-hosts`, `-w`.

use crate::config::Mode;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A debugging proxy for MCP servers that use OAuth.
#[derive(Debug, Parser)]
#[command(
    name = "mcptap",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = crate::error::EXIT_STATUS_HELP
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). MCPTAP_LOG=filter overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do (default: proxy).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `mcptap proxy`, for `mcptap` without a subcommand.
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the intercepting proxy (the default).
    Proxy(ProxyArgs),
    /// Show where mcptap's CA certificate is and how to make clients trust it.
    Ca(CaArgs),
    /// Listen as if you were the MCP server and forward everything to URL (for clients whose
    /// proxy you cannot set, e.g. Claude.ai connectors). Same as `proxy --mode reverse:URL`.
    Reverse(ReverseArgs),
    /// Explain a finding (what it means, how mcptap decides, how to fix it).
    Explain(ExplainArgs),
    /// Write a session (directory or journal, even one left by a crash) or any HAR as HAR 1.2.
    Export(ExportArgs),
    /// Diagnose a session, journal or HAR file (from mcptap or other tools).
    Analyze(AnalyzeArgs),
    /// A redacted markdown summary of a session, ready to paste into a bug report.
    Report(ReportArgs),
    /// Run a command with its traffic going through mcptap (a proxy on a free port just for
    /// it) and trusting mcptap's CA; exit with the command's status.
    Run(RunArgs),
    /// Print the variables that send a shell's programs through a running mcptap:
    /// eval "$(mcptap env)".
    Env(EnvArgs),
    /// Open a session, journal or HAR file (from mcptap or other tools) in the terminal view,
    /// read-only.
    View(ViewArgs),
    /// Check an MCP server the way a conformant client would, step by step, through mcptap's
    /// own proxy: the session is recorded and judged like any capture.
    Probe(ProbeArgs),
    /// Serve the captures to a coding agent as an MCP server on stdio (sessions, flows,
    /// findings, explain pages, the bug report), read-only and redacted:
    /// `claude mcp add mcptap -- mcptap mcp`.
    Mcp(McpArgs),
}

/// `mcptap mcp`.
#[derive(Debug, Args, Clone)]
pub struct McpArgs {
    /// The session the tools read when a call names none: a session directory, a journal or a
    /// HAR file (default: the running proxy's session, else the newest saved one).
    #[arg(value_name = "SESSION")]
    pub session: Option<PathBuf>,
    #[command(flatten)]
    pub confdir: ConfDir,
}

/// What `mcptap probe --help` lists after the options.
const PROBE_CHECKS: &str = "\
Server checks a client never makes (on by default; --no-server-checks turns them off):
  token-not-validated      a fabricated bearer token must get 401; when the probe's token is a
                           JWT, so must it with its signature altered, with exp an hour ago,
                           and with aud another resource (the last two keep the old signature:
                           they prove the expiry and audience checks only on a server that
                           skips the signature); and a JWT the authorization server issues
                           for another resource (a refresh with resource=...) must get 401
  token-in-query-accepted  the token as ?access_token= without a header must not be served
  origin-not-validated     a valid token with Origin: https://<random>.invalid must get 403
  invalid-request-accepted tools/list with an unknown MCP-Protocol-Version, or without the
                           session id, must get 400; one with \"id\": null, and
                           notifications/initialized with an id, must be refused (4xx or a
                           JSON-RPC error)
  registration-redirect-unsafe  registering a redirect URI http://<random>.invalid/callback
                           (plain http, not loopback), javascript:, data: or file: must be
                           refused (an accepted one is deleted where the server allows it)
  These are requests any client makes; the analyzer judges them:
  notification-answer-wrong  a POST holding only a notification must get 202 without a body
  get-stream-wrong         GET with Accept: text/event-stream must be an event stream or 405
                           (2026-07-28: 405)
  jwks-invalid             the jwks_uri of the authorization-server metadata must answer a
                           key set

Exit status: 0 when no finding is at or above --fail-on and every step of the client's flow
passed or warned, 1 otherwise, 2 when the server cannot be probed at all (bad URL,
unreachable).";

/// `mcptap probe URL`.
#[derive(Debug, Args, Clone)]
#[command(after_help = PROBE_CHECKS)]
pub struct ProbeArgs {
    /// The MCP endpoint, e.g. https://mcp.example.com/mcp
    #[arg(value_name = "URL")]
    pub url: String,
    /// The MCP protocol version to speak: 2025-06-18, 2025-11-25 or 2026-07-28 (stateless:
    /// server/discover, no session). Default: the newest the server accepts (2026-07-28,
    /// else initialize with 2025-11-25, which the server may negotiate down to 2025-06-18).
    #[arg(long, value_name = "VERSION")]
    pub protocol: Option<String>,
    /// A pre-registered client id (skips registration).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// The pre-registered client's secret (sent as client_secret_post).
    #[arg(long, value_name = "SECRET", requires = "client_id")]
    pub client_secret: Option<String>,
    /// The URL of a Client ID Metadata Document to use as client_id where the authorization
    /// server supports them.
    #[arg(long, value_name = "URL")]
    pub client_metadata_url: Option<String>,
    /// The callback URI registered for --client-id (default: a loopback listener on a free
    /// port, http://127.0.0.1:PORT/callback).
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
    /// Follow the authorization redirects without a browser (for servers that approve without
    /// a login page).
    #[arg(long)]
    pub headless: bool,
    /// Print the authorization URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Seconds to wait for the browser's callback (each request waits at most 30).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Skip the server checks listed below.
    #[arg(long)]
    pub no_server_checks: bool,
    /// Machine-readable output: the steps, the findings and the session directory.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when a finding is at least this severe.
    #[arg(long, value_enum, default_value = "high", value_name = "SEVERITY")]
    pub fail_on: FailOn,
    /// Do not count findings with this id (repeatable).
    #[arg(long = "ignore", value_name = "ID")]
    pub ignore: Vec<String>,
    /// Also trust this CA (PEM) for the server. Repeatable.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(short = 'k', long)]
    pub ssl_insecure: bool,
    /// Record the session in this directory (default: <confdir>/sessions/<UTC time>/).
    #[arg(short = 'w', long = "save", value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Do not record a session on disk.
    #[arg(long, conflicts_with = "save")]
    pub no_save: bool,
    /// Store tokens, codes and cookies in clear in the session (default: redacted).
    #[arg(long)]
    pub keep_secrets: bool,
    #[command(flatten)]
    pub confdir: ConfDir,
}

/// `mcptap run [proxy options] -- CMD [ARGS...]`.
#[derive(Debug, Args, Clone)]
#[command(mut_arg("listen_port", |a| a.default_value("0").help("Port to listen on (0: a free one)")))]
pub struct RunArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Write the line view here instead of the terminal, which stays the command's (default:
    /// lines.log in the session directory, or <confdir>/run/last-run.log with --no-save).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Do not add mcptap's preload to NODE_OPTIONS (it makes Node's built-in fetch use the
    /// proxy on Node versions that ignore HTTPS_PROXY).
    #[arg(long)]
    pub no_node_preload: bool,
    /// The command to run and its arguments (put `--` before it when it takes options).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

/// `--fail-on`: the least severe finding that fails the command (exit status 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Only critical findings.
    Critical,
    /// High and critical.
    High,
    /// Medium and above.
    Medium,
    /// Low and above.
    Low,
    /// Any finding.
    Info,
}

impl From<FailOn> for mcptap_analyze::Severity {
    fn from(f: FailOn) -> Self {
        use mcptap_analyze::Severity as S;
        match f {
            FailOn::Critical => S::Critical,
            FailOn::High => S::High,
            FailOn::Medium => S::Medium,
            FailOn::Low => S::Low,
            FailOn::Info => S::Info,
        }
    }
}

/// Shells `mcptap env` can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// `export NAME='value'` (also zsh, dash, ksh).
    #[value(alias = "sh")]
    Bash,
    /// Same syntax as bash.
    Zsh,
    /// `set -gx NAME 'value'`.
    Fish,
    /// `$env:NAME = 'value'`.
    #[value(alias = "pwsh")]
    Powershell,
}

/// `mcptap env`.
#[derive(Debug, Args, Clone)]
pub struct EnvArgs {
    /// The shell to print for.
    #[arg(long, value_enum, default_value = "bash")]
    pub shell: Shell,
    /// The running proxy's URL (default: http://127.0.0.1:PORT).
    #[arg(long, value_name = "URL", conflicts_with = "listen_port")]
    pub proxy: Option<String>,
    /// Port of a proxy on 127.0.0.1.
    #[arg(short = 'p', long, default_value_t = 8080)]
    pub listen_port: u16,
    /// Do not add mcptap's Node preload to NODE_OPTIONS.
    #[arg(long)]
    pub no_node_preload: bool,
    #[command(flatten)]
    pub confdir: ConfDir,
}

/// `mcptap export`.
#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// A session directory, a journal.jsonl, or a HAR file.
    pub input: PathBuf,
    /// Where to write the HAR (`-` for stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Keep secrets in clear (only meaningful for sessions recorded with --keep-secrets or
    /// HAR files from other tools).
    #[arg(long)]
    pub keep_secrets: bool,
}

/// `mcptap analyze`.
#[derive(Debug, Args, Clone)]
pub struct AnalyzeArgs {
    /// A session directory, a journal.jsonl, or a HAR file.
    pub input: PathBuf,
    /// Machine-readable output (schema: docs/findings/README.md).
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when a finding is at least this severe.
    #[arg(long, value_enum, default_value = "high", value_name = "SEVERITY")]
    pub fail_on: FailOn,
    /// The capture came from a reverse proxy in front of the server.
    #[arg(long)]
    pub reverse: bool,
}

/// `mcptap report`.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// A session directory, a journal.jsonl, or a HAR file.
    pub input: PathBuf,
    /// Write the markdown here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the report as one self-contained HTML page (verdict, sequence diagram, every
    /// flow's headers and body; opens offline in any browser) instead of printing the
    /// markdown; give `-o` too for both.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `mcptap view`.
#[derive(Debug, Args, Clone)]
pub struct ViewArgs {
    /// A session directory, a journal.jsonl, or a HAR file.
    pub input: PathBuf,
    /// The capture came from a reverse proxy in front of the server.
    #[arg(long)]
    pub reverse: bool,
    /// Show secrets kept in the file in clear (default: redacted to fingerprints, as recorded).
    #[arg(long)]
    pub keep_secrets: bool,
}

/// `mcptap explain ID`.
#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    /// The finding's id, e.g. token-not-sent. Without one, lists all ids.
    pub id: Option<String>,
}

/// `mcptap reverse URL`.
#[derive(Debug, Args, Clone)]
pub struct ReverseArgs {
    /// The upstream MCP server, e.g. https://mcp.example.com
    #[arg(value_name = "URL")]
    pub url: String,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// Where mcptap keeps its CA and sessions.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfDir {
    /// Configuration directory (CA, sessions). Default: $MCPTAP_HOME or ~/.mcptap.
    #[arg(long, value_name = "DIR", env = "MCPTAP_HOME")]
    pub confdir: Option<PathBuf>,
}

impl ConfDir {
    /// The directory to use.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.confdir {
            return Ok(d.clone());
        }
        match std::env::var_os("HOME") {
            Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join(".mcptap")),
            _ => Err(crate::error::usage(
                "cannot find a home directory: set MCPTAP_HOME or pass --confdir",
            )),
        }
    }
}

/// `mcptap proxy`.
#[derive(Debug, Args, Clone)]
pub struct ProxyArgs {
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 8080)]
    pub listen_port: u16,
    /// Address to listen on. Anything but loopback makes mcptap an open proxy.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_host: IpAddr,
    #[command(flatten)]
    pub confdir: ConfDir,
    /// Bytes of each body kept in the recording (e.g. 4m, 512k); the rest still streams through.
    #[arg(long, default_value = "4m", value_parser = parse_size)]
    pub body_limit: usize,
    /// Tunnel matching CONNECT targets (regex on host or host:port) without decrypting them.
    #[arg(long = "ignore-hosts", value_name = "REGEX")]
    pub ignore_hosts: Vec<String>,
    /// Also trust this CA (PEM) for upstream servers. Repeatable.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify upstream certificates.
    #[arg(short = 'k', long)]
    pub ssl_insecure: bool,
    /// Do not use the system's root certificates for upstreams (only webpki roots and
    /// --upstream-ca).
    #[arg(long, hide = true)]
    pub no_system_roots: bool,
    /// Send upstream connections through another proxy: http://[user:pass@]host:port
    /// (mitmproxy's `upstream:` mode). mcptap never reads HTTPS_PROXY for itself.
    #[arg(long, value_name = "URL")]
    pub upstream_proxy: Option<String>,
    /// Give up connecting to an upstream (DNS, TCP, then TLS) after this long (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Close a tunnel whose client has not finished its TLS handshake this long after CONNECT.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Answer 504 when the upstream sends no response head this long after the request.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = parse_duration)]
    pub response_timeout: Duration,
    /// Cut a body (request or response) that sends nothing for this long once started. SSE
    /// keep-alive comments count as traffic: a live stream is never cut.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_body_timeout: Duration,
    /// `regular` (an explicit proxy, the default) or `reverse:URL` (mitmproxy's spelling;
    /// same as `mcptap reverse URL`).
    #[arg(short = 'm', long, default_value = "regular", value_name = "MODE", value_parser = parse_mode)]
    pub mode: Mode,
    /// Reverse mode: send paths under PREFIX to another upstream, e.g.
    /// --route /oauth=https://auth.example.com (repeatable; the path is kept whole).
    #[arg(long = "route", value_name = "PREFIX=URL")]
    pub routes: Vec<String>,
    /// Reverse mode: rewrite upstream URLs in OAuth metadata and WWW-Authenticate to the
    /// public origin the client used.
    #[arg(long)]
    pub rewrite_metadata: bool,
    /// Reverse mode: serve TLS with this certificate chain (PEM) instead of a minted one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Reverse mode: the private key (PEM) for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Add the token the client was issued to its MCP requests that lack Authorization, to
    /// prove whether the client or the server is at fault (see `mcptap explain
    /// client-omits-token-confirmed`). Never replaces a header, never leaves the MCP endpoint.
    #[arg(long)]
    pub inject_token: bool,
    /// With --inject-token: when the client's token has expired, refresh it with the client's
    /// refresh token (at the token endpoint the client used) and inject the new one. This
    /// rotates the refresh token on servers that rotate: the client's own copy may stop working.
    #[arg(long, requires = "inject_token")]
    pub inject_refresh: bool,
    /// Record the session in this directory (default: <confdir>/sessions/<UTC time>/).
    #[arg(short = 'w', long = "save", value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Do not record a session on disk.
    #[arg(long, conflicts_with = "save")]
    pub no_save: bool,
    /// Print one line per flow instead of the terminal view (the default when stdout is not a
    /// terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Store tokens, codes and cookies in clear in the session (default: redacted to
    /// fingerprints). Never share such a session.
    #[arg(long)]
    pub keep_secrets: bool,
    /// Explicit mode: require clients to authenticate to mcptap with user:pass (Basic).
    #[arg(long, value_name = "USER:PASS")]
    pub proxy_auth: Option<String>,
    /// Seconds to let exchanges in flight finish on Ctrl-C (0 to 86400).
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub shutdown_deadline: f64,
}

/// `mcptap ca`.
#[derive(Debug, Args, Clone)]
pub struct CaArgs {
    #[command(flatten)]
    pub confdir: ConfDir,
    /// Print only the path of the CA certificate (for scripts).
    #[arg(long)]
    pub path: bool,
}

/// The longest duration a seconds option takes: a day (a value beyond it is a typo, and one
/// beyond what `Duration` holds would panic).
pub const MAX_SECONDS: f64 = 86_400.0;

/// `v` seconds as a `Duration` when in 0..=[`MAX_SECONDS`] (not NaN nor infinite).
pub fn seconds(v: f64) -> Option<std::time::Duration> {
    (0.0..=MAX_SECONDS)
        .contains(&v)
        .then(|| std::time::Duration::from_secs_f64(v))
}

/// Parses `--mode` (clap reports the error as a usage error).
fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

/// Parses a number of seconds (`3`, `0.5`) in 0..=[`MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    match seconds(v) {
        Some(_) => Ok(v),
        None => Err(format!(
            "{s} seconds is out of range (0 to {MAX_SECONDS} seconds)"
        )),
    }
}

/// Parses durations like `10s`, `300ms`, `2m`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 10s, 300ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    // At least a millisecond, at most a year: a zero limit would fire at once.
    if !(0.001..=365.0 * 86_400.0).contains(&secs) {
        return Err(format!("duration out of range (1ms to 365 days): {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses sizes like `4m`, `512k`, `1MiB`, `1000`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use k, m or g)"
            ))
        }
    };
    let v = n * mult;
    if !(0.0..=(usize::MAX as f64)).contains(&v) {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_within_a_day_and_never_panic() {
        assert_eq!(parse_seconds("3").unwrap(), 3.0);
        assert_eq!(parse_seconds("0.5").unwrap(), 0.5);
        assert_eq!(parse_seconds("86400").unwrap(), 86_400.0);
        for bad in ["1e300", "86401", "-1", "NaN", "inf", "-inf", "x", ""] {
            let err = parse_seconds(bad).unwrap_err();
            assert!(err.contains("seconds"), "{bad}: {err}");
        }
        let err =
            Cli::try_parse_from(["mcptap", "proxy", "--shutdown-deadline", "1e300"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("--shutdown-deadline"), "{err}");
    }

    #[test]
    fn durations_parse() {
        for (text, ms) in [
            ("10s", 10_000),
            ("300ms", 300),
            ("2m", 120_000),
            ("1.5s", 1_500),
            ("1h", 3_600_000),
            ("45", 45_000),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in ["", "0s", "-1s", "10x", "1e300", "inf", "s", "400d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_limit_flags_default_to_the_engines_limits_and_reach_it() {
        let proxy = |argv: &[&str]| {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Some(Command::Proxy(p)) = cli.command else {
                panic!("not a proxy command");
            };
            crate::config::RunConfig::from_args(&p, true)
                .unwrap()
                .proxy
                .limits
        };
        let base = ["mcptap", "proxy", "--confdir", "/nonexistent/mcptap-test"];
        assert_eq!(proxy(&base), mcptap_proxy::Limits::default());
        let mut argv = base.to_vec();
        argv.extend([
            "--connect-timeout",
            "1s",
            "--tls-handshake-timeout",
            "2s",
            "--response-timeout",
            "300ms",
            "--idle-body-timeout",
            "1h",
        ]);
        assert_eq!(
            proxy(&argv),
            mcptap_proxy::Limits {
                connect: Duration::from_secs(1),
                tls_handshake: Duration::from_secs(2),
                response_head: Duration::from_millis(300),
                idle_body: Duration::from_secs(3600),
            }
        );
        assert!(Cli::try_parse_from(["mcptap", "proxy", "--response-timeout", "0"]).is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4m").unwrap(), 4 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("12q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn run_takes_proxy_options_then_the_command_with_its_own_options() {
        match Cli::parse_from(["mcptap", "run", "-k", "--", "node", "-e", "x"]).command {
            Some(Command::Run(r)) => {
                assert_eq!(r.proxy.listen_port, 0, "a free port by default");
                assert!(r.proxy.ssl_insecure);
                assert_eq!(r.command, ["node", "-e", "x"]);
            }
            other => panic!("{other:?}"),
        }
        match Cli::parse_from(["mcptap", "run", "-p", "9000", "claude", "mcp", "list"]).command {
            Some(Command::Run(r)) => {
                assert_eq!(r.proxy.listen_port, 9000);
                assert_eq!(r.command, ["claude", "mcp", "list"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["mcptap", "run"]).is_err());
        match Cli::parse_from(["mcptap", "env", "--shell", "pwsh"]).command {
            Some(Command::Env(e)) => assert!(e.shell == Shell::Powershell && e.listen_port == 8080),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inject_refresh_requires_inject_token_wherever_it_is_offered() {
        assert!(Cli::try_parse_from(["mcptap", "proxy", "--inject-refresh"]).is_err());
        assert!(Cli::try_parse_from(["mcptap", "run", "--inject-refresh", "x"]).is_err());
        match Cli::parse_from(["mcptap", "proxy", "--inject-token", "--inject-refresh"]).command {
            Some(Command::Proxy(p)) => assert!(p.inject_token && p.inject_refresh),
            other => panic!("{other:?}"),
        }
        match Cli::parse_from(["mcptap", "run", "--inject-token", "--inject-refresh", "x"]).command
        {
            Some(Command::Run(r)) => assert!(r.proxy.inject_refresh),
            other => panic!("{other:?}"),
        }
        match Cli::parse_from(["mcptap", "proxy", "--inject-token"]).command {
            Some(Command::Proxy(p)) => assert!(!p.inject_refresh),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_mcptap_is_proxy_on_8080() {
        let cli = Cli::parse_from(["mcptap"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.proxy.listen_port, 8080);
        assert_eq!(cli.proxy.listen_host.to_string(), "127.0.0.1");
        let cli = Cli::parse_from(["mcptap", "-p", "9001"]);
        assert_eq!(cli.proxy.listen_port, 9001);
        match Cli::parse_from(["mcptap", "proxy", "--listen-port", "9002", "-k"]).command {
            Some(Command::Proxy(p)) => assert!(p.ssl_insecure && p.listen_port == 9002),
            other => panic!("{other:?}"),
        }
    }
}
