//! Drivers for the Python peers in `tests/peers/`: an OAuth-protected MCP server and a headless
//! MCP client, both from the Python `mcp` SDK (see `tests/peers/requirements.txt`).
//!
//! Everything here blocks (std::process); from an async test use [`run_client_async`] or wrap
//! calls in `tokio::task::spawn_blocking`. Every wait is bounded and every child is killed on
//! drop.

use crate::common::pki::TestPki;
use crate::common::python;
use serde::Deserialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the server may take to print `READY <port>` (cold `.pyc` caches included).
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Slack on top of the client's own `--timeout` before the harness kills it.
const CLIENT_GRACE: Duration = Duration::from_secs(20);

/// Proxy variables cleared from (or set on) every peer's environment.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `tests/peers/` in this checkout.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("peers")
}

/// The venv holding the `mcp` SDK (built on first use, then reused).
pub fn mcp_venv() -> PathBuf {
    python::venv("mcp", &peers_dir().join("requirements.txt"))
}

/// Write a PEM bundle of `pems` (e.g. the upstream CA and mcptap's CA) to `dir/name`.
pub fn write_ca_bundle(dir: &Path, name: &str, pems: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut bundle = String::new();
    for pem in pems {
        bundle.push_str(pem.trim_end());
        bundle.push('\n');
    }
    std::fs::write(&path, bundle).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Flags of `tests/peers/oauth_server.py`; the default is a well-behaved server.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// `--no-www-authenticate`: 401s carry no `WWW-Authenticate`.
    pub no_www_authenticate: bool,
    /// `--prm-resource URL`: protected-resource metadata names another `resource`
    /// (`{port}` in it is replaced by the server's port).
    pub prm_resource: Option<String>,
    /// `--reject-own-tokens`: `/mcp` answers 401 `invalid_token` to every token it issued.
    pub reject_own_tokens: bool,
    /// `--no-expires-in`: token responses lack `expires_in` (tokens still expire).
    pub no_expires_in: bool,
    /// `--token-ttl SECONDS` (server default 3600).
    pub token_ttl: Option<u64>,
    /// `--public-url` (server default `https://localhost:{port}`).
    pub public_url: Option<String>,
    /// Anything else, appended verbatim.
    pub extra_args: Vec<String>,
}

/// A running `oauth_server.py` over TLS on 127.0.0.1; killed on drop.
pub struct McpServer {
    pub port: u16,
    child: Child,
    // Held open: the server runs with --watch-stdin and exits when this closes, so it cannot
    // outlive the test process even if Drop never runs.
    _stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    log_dir: tempfile::TempDir,
}

impl McpServer {
    /// Spawn the server with `pki`'s leaf certificate and wait (bounded) for `READY <port>`.
    pub fn start(pki: &TestPki, opts: ServerOpts) -> McpServer {
        Self::start_with_files(&pki.leaf_path(), &pki.key_path(), opts)
    }

    /// Like [`McpServer::start`], from certificate and key files (usable from `spawn_blocking`).
    pub fn start_with_files(certfile: &Path, keyfile: &Path, opts: ServerOpts) -> McpServer {
        let py = python::python(&mcp_venv());
        let log_dir = tempfile::tempdir().expect("server log dir");
        let mut cmd = Command::new(&py);
        cmd.arg("-u")
            .arg(peers_dir().join("oauth_server.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--watch-stdin"])
            .arg("--certfile")
            .arg(certfile)
            .arg("--keyfile")
            .arg(keyfile)
            .arg("--log-requests")
            .arg(log_dir.path().join("requests.jsonl"));
        if opts.no_www_authenticate {
            cmd.arg("--no-www-authenticate");
        }
        if let Some(url) = &opts.prm_resource {
            cmd.args(["--prm-resource", url]);
        }
        if opts.reject_own_tokens {
            cmd.arg("--reject-own-tokens");
        }
        if opts.no_expires_in {
            cmd.arg("--no-expires-in");
        }
        if let Some(ttl) = opts.token_ttl {
            cmd.args(["--token-ttl", &ttl.to_string()]);
        }
        if let Some(url) = &opts.public_url {
            cmd.args(["--public-url", url]);
        }
        cmd.args(&opts.extra_args);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", py.display()));
        let output = Arc::new(Mutex::new(String::new()));

        // stderr: captured whole, shown when something fails.
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                out.push_str(&line);
                out.push('\n');
            }
        });

        // stdout: the READY line goes to `ready`; anything else joins the captured output.
        let stdout = child.stdout.take().expect("stdout");
        let (ready_tx, ready_rx) = mpsc::channel::<u16>();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .strip_prefix("READY ")
                    .and_then(|p| p.trim().parse().ok())
                {
                    let _ = ready_tx.send(port);
                } else {
                    let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str("stdout: ");
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        });

        let stdin = child.stdin.take();
        let mut server = McpServer {
            port: 0,
            child,
            _stdin: stdin,
            output,
            log_dir,
        };
        match ready_rx.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(port) => server.port = port,
            Err(e) => {
                let _ = server.child.kill();
                let status = server.child.wait().ok();
                // Give the stderr reader a moment to collect the traceback.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "oauth_server.py did not report READY ({e:?}; exit {status:?}):\n{}",
                    server.output()
                );
            }
        }
        server
    }

    /// `https://localhost:{port}`.
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The MCP endpoint, `https://localhost:{port}/mcp`.
    pub fn url(&self) -> String {
        format!("{}/mcp", self.origin())
    }

    /// Everything the server wrote to stderr (and non-READY stdout) so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server's request log (`--log-requests`), in arrival order.
    pub fn requests(&self) -> Vec<ServerRequest> {
        let path = self.log_dir.path().join("requests.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut records: Vec<ServerRequest> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
            .collect();
        records.sort_by_key(|r| r.seq);
        records
    }

    /// One line per logged request, for assertion messages.
    pub fn requests_summary(&self) -> String {
        self.requests()
            .iter()
            .map(ServerRequest::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the server's request log (see `RequestLog` in `oauth_server.py`).
#[derive(Clone, Debug, Deserialize)]
pub struct ServerRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Unix time of arrival.
    pub t: f64,
    pub method: String,
    pub path: String,
    pub query_keys: Vec<String>,
    pub status: u16,
    pub has_authorization: bool,
    pub authorization_scheme: Option<String>,
    /// Whether the request carried `Mcp-Session-Id`.
    pub session_id: bool,
    pub protocol_version: Option<String>,
    pub user_agent: Option<String>,
    /// The response's `WWW-Authenticate`, if any.
    pub www_authenticate: Option<String>,
    /// The response's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// JSON-RPC method of a POST /mcp body (a string, or a list for a batch).
    pub rpc_method: Option<Value>,
    /// `grant_type` of a POST /token body.
    pub grant_type: Option<String>,
}

impl ServerRequest {
    /// The JSON-RPC method when the body held a single message.
    pub fn rpc(&self) -> Option<&str> {
        self.rpc_method.as_ref().and_then(Value::as_str)
    }

    pub fn is_mcp(&self) -> bool {
        self.path.trim_end_matches('/') == "/mcp"
    }

    pub fn summary(&self) -> String {
        format!(
            "#{} {} {} -> {} auth={} session={} pv={} rpc={} grant={} www-auth={}",
            self.seq,
            self.method,
            self.path,
            self.status,
            self.has_authorization,
            self.session_id,
            self.protocol_version.as_deref().unwrap_or("-"),
            self.rpc_method
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "-".into()),
            self.grant_type.as_deref().unwrap_or("-"),
            self.www_authenticate.as_deref().unwrap_or("-"),
        )
    }
}

/// Protocol selection of `oauth_client.py`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientMode {
    /// The SDK default (`mode="auto"`): `server/discover`, 2026-07-28, no session.
    #[default]
    Stateless,
    /// `initialize`, `Mcp-Session-Id`, GET SSE stream, closing DELETE.
    Legacy,
}

impl ClientMode {
    pub fn as_arg(self) -> &'static str {
        match self {
            ClientMode::Stateless => "stateless",
            ClientMode::Legacy => "legacy",
        }
    }
}

/// How to run `oauth_client.py`.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// PEM bundle the client trusts, and nothing else.
    pub cafile: PathBuf,
    pub mode: ClientMode,
    /// `--drop-auth-after-token`: the "token-not-sent" client bug.
    pub drop_auth_after_token: bool,
    /// `http://127.0.0.1:PORT`: sets HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and clears NO_PROXY.
    /// `None` clears all proxy variables, so the client connects directly.
    pub proxy: Option<String>,
    /// The client's own deadline (`--timeout`); the harness kills it a little later.
    pub timeout: Duration,
    /// `--token-endpoint-auth-method` (client default `client_secret_post`).
    pub token_endpoint_auth_method: Option<String>,
}

impl ClientOpts {
    /// Direct connection, stateless mode, 30 s deadline, trusting `cafile`.
    pub fn new(cafile: impl Into<PathBuf>) -> ClientOpts {
        ClientOpts {
            cafile: cafile.into(),
            mode: ClientMode::Stateless,
            drop_auth_after_token: false,
            proxy: None,
            timeout: Duration::from_secs(30),
            token_endpoint_auth_method: None,
        }
    }
}

/// What `oauth_client.py` reported.
#[derive(Clone, Debug)]
pub struct ClientOutcome {
    /// `json["ok"] == true` and exit code 0.
    pub ok: bool,
    /// The JSON line it printed (`Value::Null` when none parsed).
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
    /// `None` when the harness had to kill it.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
}

impl ClientOutcome {
    /// `json["error"]`.
    pub fn error(&self) -> Option<&str> {
        self.json.get("error").and_then(Value::as_str)
    }

    /// The HTTP exchanges the client made (`json["requests"]`), in order.
    pub fn requests(&self) -> Vec<ClientRequest> {
        self.json
            .get("requests")
            .cloned()
            .map(|v| serde_json::from_value(v).expect("client requests"))
            .unwrap_or_default()
    }

    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status: {:?} after {:?}\n--- json\n{}\n--- stderr\n{}",
            self.status,
            self.elapsed,
            serde_json::to_string_pretty(&self.json).unwrap_or_default(),
            self.stderr
        )
    }
}

/// One HTTP exchange as the client sent it (after auth was applied).
#[derive(Clone, Debug, Deserialize)]
pub struct ClientRequest {
    pub method: String,
    /// Without query.
    pub url: String,
    pub rpc_method: Option<String>,
    /// `None` when no response arrived.
    pub status: Option<u16>,
    pub has_authorization: bool,
    /// `--drop-auth-after-token` removed the header from this request.
    pub auth_dropped: bool,
    /// A token had been obtained before this request was sent.
    pub after_token: bool,
}

/// Run `oauth_client.py` against the MCP endpoint `url` and wait (bounded) for its verdict.
pub fn run_client(url: &str, opts: ClientOpts) -> ClientOutcome {
    let py = python::python(&mcp_venv());
    let mut cmd = Command::new(&py);
    cmd.arg("-u")
        .arg(peers_dir().join("oauth_client.py"))
        .arg(url)
        .arg("--cafile")
        .arg(&opts.cafile)
        .args(["--mode", opts.mode.as_arg()])
        .args(["--timeout", &format!("{:.3}", opts.timeout.as_secs_f64())]);
    if opts.drop_auth_after_token {
        cmd.arg("--drop-auth-after-token");
    }
    if let Some(method) = &opts.token_endpoint_auth_method {
        cmd.args(["--token-endpoint-auth-method", method]);
    }
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    if let Some(proxy) = &opts.proxy {
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env(var, proxy);
        }
    }
    cmd.env("PYTHONUNBUFFERED", "1");

    let out = python::run_with_timeout(cmd, opts.timeout + CLIENT_GRACE)
        .unwrap_or_else(|e| panic!("spawning {}: {e}", py.display()));
    let json = out
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let ok = json.get("ok") == Some(&Value::Bool(true))
        && out.status.map(|s| s.success()).unwrap_or(false);
    ClientOutcome {
        ok,
        json,
        stdout: out.stdout,
        stderr: out.stderr,
        status: out.status,
        elapsed: out.elapsed,
    }
}

/// [`run_client`] on tokio's blocking pool, for `#[tokio::test(flavor = "multi_thread")]`.
pub async fn run_client_async(url: String, opts: ClientOpts) -> ClientOutcome {
    tokio::task::spawn_blocking(move || run_client(&url, opts))
        .await
        .expect("run_client panicked")
}
