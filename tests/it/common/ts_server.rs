//! The TypeScript MCP SDK's example server (`simpleStreamableHttp.js --oauth`, from the npm
//! package `@modelcontextprotocol/sdk` installed under `<target>/node-peers`): an MCP server on
//! plain `http://localhost` with its demo authorization server (auto-approving, dynamic
//! registration, token introspection) on a second port. Both ports come from the environment
//! (`MCP_PORT`, `MCP_AUTH_PORT`): they are picked free on 127.0.0.1 just before the start. The
//! server is killed on drop.

use crate::common::npm;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long both listeners may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `<target>/node-peers` with `tests/peers/node/package.json` installed.
pub fn node_peers() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node");
    npm::install("node-peers", &dir, |_| {})
}

/// A running `simpleStreamableHttp.js --oauth`.
pub struct TsExampleServer {
    /// The MCP server's port (`http://localhost:{port}/mcp`).
    pub port: u16,
    /// The authorization server's port.
    pub auth_port: u16,
    child: Child,
    output: Arc<Mutex<String>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TsExampleServer {
    /// Starts the example with `args` (e.g. `--oauth`) and waits (bounded) until both of its
    /// listeners say so.
    pub fn start(args: &[&str]) -> TsExampleServer {
        let script = node_peers().join(
            "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js",
        );
        assert!(script.is_file(), "{} is missing", script.display());
        let (port, auth_port) = loop {
            let (a, b) = (free_port(), free_port());
            if a != b {
                break (a, b);
            }
        };
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .args(args)
            .env("MCP_PORT", port.to_string())
            .env("MCP_AUTH_PORT", auth_port.to_string());
        for var in npm::PROXY_AND_TRUST_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node on PATH runs the TypeScript SDK's example server");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = TsExampleServer {
            port,
            auth_port,
            child,
            output,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut mcp, mut auth) = (false, !args.contains(&"--oauth"));
        while !(mcp && auth) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("MCP Streamable HTTP Server listening") => mcp = true,
                Ok(line) if line.contains("OAuth Authorization Server listening") => auth = true,
                Ok(_) => {}
                Err(e) => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    panic!(
                        "the TypeScript example server did not start ({e:?}):\n{}",
                        server.output()
                    );
                }
            }
        }
        server
    }

    /// `http://localhost:{port}/mcp`.
    pub fn url(&self) -> String {
        format!("http://localhost:{}/mcp", self.port)
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TsExampleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
