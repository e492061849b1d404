//! `mcptap probe` against the Python `mcp` SDK server (real TLS on loopback), the binary run
//! for real: the healthy server passes every step with `--headless` and gives no OAuth finding;
//! each server fault gives its finding id; the server check the SDK server truly fails (it does
//! not validate `Origin`: the test server turns DNS-rebinding protection off) is asserted with
//! its evidence.

use crate::common::peers::{McpServer, ServerOpts};
use crate::common::pki::TestPki;
use serde_json::Value;
use std::process::Command;

/// The steps of the main path, in order, as the probe names them.
const MAIN_PATH: &[&str] = &[
    "unauthenticated initialize",
    "protected-resource metadata",
    "authorization-server metadata",
    "registration",
    "authorization code + PKCE",
    "token exchange",
    "initialize with token",
    "notification answered 202",
    "tools/list with token",
    "refresh",
];

struct Probed {
    code: i32,
    out: Value,
    stderr: String,
    dir: tempfile::TempDir,
}

impl Probed {
    fn session(&self) -> std::path::PathBuf {
        self.dir.path().join("session")
    }

    fn step(&self, name: &str) -> &Value {
        self.out["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name:?}: {:#}", self.out))
    }

    fn verdict(&self, name: &str) -> &str {
        self.step(name)["verdict"].as_str().unwrap()
    }

    /// Asserts that each of `checks` ended with `want`.
    fn verdicts(&self, want: &str, checks: &[&str]) {
        for check in checks {
            assert_eq!(self.verdict(check), want, "{check}: {:#}", self.out);
        }
    }

    fn ids(&self) -> Vec<&str> {
        finding_ids(&self.out)
    }

    fn finding(&self, id: &str) -> &Value {
        self.out["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no {id}: {:#}\n{}", self.out, self.stderr))
    }
}

/// The ids of a probe's or `analyze --json`'s findings, in order.
fn finding_ids(out: &Value) -> Vec<&str> {
    out["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect()
}

/// The ids a healthy Python SDK server's probe ends with: the checks it truly fails.
const HEALTHY_SERVER_FINDINGS: [&str; 3] = [
    "origin-not-validated",
    "registration-redirect-unsafe",
    "invalid-request-accepted",
];

/// `mcptap probe` with `--protocol 2025-11-25` unless `extra` names one (the step names and
/// the checks of sessions follow the protocol; the default, the newest the server accepts, has
/// its own tests).
fn probe(pki: &TestPki, server: &McpServer, extra: &[&str]) -> Probed {
    let pinned: &[&str] = if extra.contains(&"--protocol") || extra.contains(&"--default-protocol")
    {
        &[]
    } else {
        &["--protocol", "2025-11-25"]
    };
    let extra: Vec<&str> = extra
        .iter()
        .copied()
        .filter(|a| *a != "--default-protocol")
        .chain(pinned.iter().copied())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .env("NO_COLOR", "1")
        .arg("probe")
        .arg(server.url())
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(dir.path().join("conf"))
        .arg("-w")
        .arg(dir.path().join("session"))
        .args(["--headless", "--json", "--timeout", "30"])
        .args(&extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}\n{stderr}\n{}", server.output()));
    Probed {
        code: out.status.code().unwrap_or(-1),
        out: json,
        stderr,
        dir,
    }
}

/// [`probe_fault`] against the test server started with `args`.
fn probe_server_args(args: &[&str]) -> Probed {
    probe_fault(ServerOpts {
        extra_args: args.iter().map(|a| (*a).into()).collect(),
        ..Default::default()
    })
}

fn probe_fault(opts: ServerOpts) -> Probed {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, opts);
    probe(&pki, &server, &[])
}

#[test]
fn a_healthy_server_passes_every_step_and_fails_only_the_origin_redirect_and_null_id_checks() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let p = probe(&pki, &server, &[]);
    for name in MAIN_PATH {
        assert_eq!(p.verdict(name), "pass", "{name}: {:#}", p.out);
    }
    // The flows are numbered in the order the probe sent them, from #1.
    assert_eq!(
        p.step("unauthenticated initialize")["flows"],
        serde_json::json!([1])
    );
    p.verdicts(
        "pass",
        &[
            "fabricated token refused",
            "token in query refused",
            "unknown version refused",
            "GET stream or 405",
            "notification with id refused",
            "no session id refused",
        ],
    );
    // Opaque tokens: the JWT checks do not apply, and the SDK names no jwks_uri.
    p.verdicts(
        "skip",
        &[
            "JWT bad signature refused",
            "JWT past exp refused",
            "JWT other audience refused",
            "JWKS usable",
        ],
    );
    // The SDK server, as the tests run it, does not validate Origin (the test server turns
    // DNS-rebinding protection off); the SDK's registration accepts any redirect URI; and the
    // SDK takes a request with "id": null for a notification (202, no answer ever comes).
    // Those are the only findings, and no OAuth finding is made on the probe's own traffic.
    assert_eq!(p.verdict("foreign Origin refused"), "fail");
    let redirects = [
        "unsafe redirect URI refused",
        "javascript: redirect refused",
        "data: redirect refused",
        "file: redirect refused",
    ];
    for check in redirects {
        assert_eq!(p.verdict(check), "fail", "{check}: {:#}", p.out);
    }
    assert_eq!(p.verdict("id null refused"), "fail");
    assert_eq!(p.ids(), HEALTHY_SERVER_FINDINGS, "{:#}", p.out);
    // One finding per id: the four accepted registrations are its evidence.
    let f = p.finding("registration-redirect-unsafe");
    let flows: Vec<Value> = redirects
        .iter()
        .flat_map(|c| p.step(c)["flows"].as_array().unwrap().clone())
        .collect();
    assert_eq!(f["evidence"], Value::from(flows));
    assert_eq!(f["occurrences"], 4, "{f:#}");
    assert!(f["summary"].as_str().unwrap().contains("(201)"), "{f:#}");
    assert!(
        f["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("javascript:")),
        "{f:#}"
    );
    let f = p.finding("invalid-request-accepted");
    assert_eq!(f["evidence"], p.step("id null refused")["flows"]);
    assert!(
        f["summary"].as_str().unwrap().contains("\"id\": null"),
        "{f:#}"
    );
    let f = p.finding("origin-not-validated");
    assert_eq!(f["culprit"], "server");
    assert_eq!(f["severity"], "high", "the server is on loopback");
    assert_eq!(f["evidence"], p.step("foreign Origin refused")["flows"]);
    // Its evidence is in the session: the request with the foreign Origin, served.
    let har: Value =
        serde_json::from_str(&std::fs::read_to_string(p.session().join("session.har")).unwrap())
            .unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    let foreign = entries
        .iter()
        .find(|e| {
            e["request"]["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case("origin"))
        })
        .expect("the foreign-Origin request is recorded");
    assert_eq!(foreign["response"]["status"], 200);
    // High fails the default --fail-on high; --ignore takes it out.
    assert_eq!(p.code, 1, "{}", p.stderr);
    // The session is saved, redacted, with the probe's verdicts, and `report` works on it.
    assert!(p.session().join("probe.json").is_file());
    let token_in_clear = entries.iter().any(|e| {
        e["request"]["headers"].as_array().unwrap().iter().any(|h| {
            h["name"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("authorization")
                && h["value"].as_str().unwrap().contains("at_")
        })
    });
    assert!(!token_in_clear, "tokens are redacted by default");
    // `analyze` and `report` on the saved probe say what the probe said: the check's finding,
    // not what the checks' deliberate requests provoke in the analyzer (a token in the query
    // string looks like a client that dropped its token).
    let report = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .arg("report")
        .arg(p.session())
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let md = String::from_utf8_lossy(&report.stdout);
    assert!(md.contains("origin-not-validated"), "{md}");
    assert!(!md.contains("token-not-sent"), "{md}");
    // With the probe's steps next to the verdict, before the story: the failed check in bold,
    // with its flows.
    let table = md
        .find("## Probe of ")
        .expect("the steps are in the report");
    assert!(table < md.find("## Environment").unwrap(), "{md}");
    let origin_flows: Vec<String> = p.step("foreign Origin refused")["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("#{f}"))
        .collect();
    let row = md[table..]
        .lines()
        .find(|l| l.contains("| foreign Origin refused |"))
        .expect("a row per step");
    assert!(row.contains("| **FAIL** |"), "{row}");
    assert!(row.contains(&origin_flows.join(", ")), "{row}");
    let analyzed = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["analyze", "--json"])
        .arg(p.session())
        .output()
        .unwrap();
    assert_eq!(analyzed.status.code(), Some(1), "{analyzed:?}");
    let analyzed: Value = serde_json::from_slice(&analyzed.stdout).unwrap();
    assert_eq!(
        finding_ids(&analyzed),
        HEALTHY_SERVER_FINDINGS,
        "{analyzed:#}"
    );
    let ignored = probe(
        &pki,
        &server,
        &[
            "--ignore",
            "origin-not-validated",
            "--ignore",
            "registration-redirect-unsafe",
            "--ignore",
            "invalid-request-accepted",
        ],
    );
    assert_eq!(ignored.code, 0, "{:#}", ignored.out);
    assert!(ignored.ids().is_empty(), "{:#}", ignored.out);
    // Ignored at the probe, still in the saved session's analysis.
    let analyzed = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["analyze", "--json"])
        .arg(ignored.session())
        .output()
        .unwrap();
    let analyzed: Value = serde_json::from_slice(&analyzed.stdout).unwrap();
    assert_eq!(
        analyzed["findings"].as_array().unwrap().len(),
        3,
        "{analyzed:#}"
    );
}

#[test]
fn a_missing_challenge_is_challenge_missing_and_discovery_falls_back() {
    let p = probe_fault(ServerOpts {
        no_www_authenticate: true,
        ..Default::default()
    });
    assert_eq!(p.verdict("unauthenticated initialize"), "warn");
    assert_eq!(p.verdict("protected-resource metadata"), "pass");
    assert_eq!(p.verdict("tools/list with token"), "pass");
    let f = p.finding("challenge-missing");
    assert!(
        f["evidence"].as_array().unwrap().contains(&1.into()),
        "{f:#}"
    );
}

#[test]
fn a_prm_naming_another_resource_is_prm_resource_mismatch_and_stops_the_flow() {
    let p = probe_fault(ServerOpts {
        prm_resource: Some("https://elsewhere.example/mcp".into()),
        ..Default::default()
    });
    assert_eq!(p.verdict("protected-resource metadata"), "fail");
    assert_eq!(p.verdict("token exchange"), "skip");
    assert!(p.step("token exchange")["note"]
        .as_str()
        .unwrap()
        .contains("protected-resource metadata failed"));
    assert_eq!(p.verdict("foreign Origin refused"), "skip");
    assert_eq!(p.verdict("fabricated token refused"), "pass");
    p.finding("prm-resource-mismatch");
    assert_eq!(p.code, 1);
}

#[test]
fn a_server_refusing_its_own_tokens_is_fresh_token_rejected() {
    let p = probe_fault(ServerOpts {
        reject_own_tokens: true,
        ..Default::default()
    });
    assert_eq!(p.verdict("token exchange"), "pass");
    assert_eq!(p.verdict("initialize with token"), "fail");
    assert_eq!(p.verdict("foreign Origin refused"), "skip");
    p.finding("fresh-token-rejected");
}

#[test]
fn a_token_response_without_expires_in_warns_at_the_token_step() {
    // The analyzer makes no finding of a missing expires_in alone (it is RECOMMENDED, and it
    // matters only once a client lets the token expire); the probe says so at the step.
    // Also: an older protocol, and no server checks (no Origin finding, hence exit 0).
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            no_expires_in: true,
            ..Default::default()
        },
    );
    let p = probe(
        &pki,
        &server,
        &["--protocol", "2025-06-18", "--no-server-checks"],
    );
    assert!(p.step("initialize with token")["note"]
        .as_str()
        .unwrap()
        .contains("protocol 2025-06-18"));
    let steps = p.out["steps"].as_array().unwrap();
    assert!(
        steps.iter().all(|s| s.get("server_check").is_none()),
        "{:#}",
        p.out
    );
    assert!(p.ids().is_empty(), "{:#}", p.out);
    assert_eq!(p.code, 0, "{:#}", p.out);
    assert_eq!(p.verdict("token exchange"), "warn");
    assert!(p.step("token exchange")["note"]
        .as_str()
        .unwrap()
        .contains("no expires_in"));
    assert_eq!(p.verdict("refresh"), "pass");
}

#[test]
fn metadata_served_as_html_is_metadata_not_json() {
    let p = probe_server_args(&["--metadata-html"]);
    assert_eq!(p.verdict("protected-resource metadata"), "fail");
    p.finding("metadata-not-json");
    p.finding("prm-unavailable");
}

#[test]
fn metadata_without_s256_is_as_metadata_incomplete_and_stops_the_flow() {
    let p = probe_server_args(&["--no-s256"]);
    assert_eq!(p.verdict("authorization-server metadata"), "fail");
    assert_eq!(p.verdict("registration"), "skip");
    p.finding("as-metadata-incomplete");
}

#[test]
fn a_refused_registration_is_registration_failed() {
    let p = probe_server_args(&["--refuse-dcr"]);
    assert_eq!(p.verdict("registration"), "fail");
    assert_eq!(p.verdict("authorization code + PKCE"), "skip");
    p.finding("registration-failed");
}

#[test]
fn an_unreachable_server_is_unusable_input() {
    let pki = TestPki::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .args([
            "probe",
            &format!("https://localhost:{port}/mcp"),
            "--no-save",
        ])
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let bad = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["probe", "not a url", "--no-save", "--confdir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

/// The browser's part, without a browser: `GET` the authorization URL straight from the server
/// (not through the probe's proxy, as a real browser would not be) and deliver its redirect to
/// the probe's loopback callback.
async fn act_as_browser(pki: &TestPki, server_port: u16, url: &str) -> u16 {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let roots = [crate::common::pki::read_cert_der(&pki.ca_path())];
    let cfg = crate::common::pki::client_config(&roots, &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server_port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let path = &url[url.find("/authorize").unwrap()..];
    let req = http::Request::get(path)
        .header("host", format!("localhost:{server_port}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert!(resp.status().is_redirection(), "{resp:?}");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let rest = location.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, target) = rest.split_at(rest.find('/').unwrap());
    let port: u16 = port.parse().unwrap();
    let mut cb = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    cb.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    cb.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    port
}

#[test]
fn without_headless_the_probe_waits_for_the_browser_on_its_loopback_callback() {
    use std::io::BufRead as _;
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .arg("probe")
        .arg(server.url())
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(dir.path())
        .args(["--no-save", "--no-browser", "--json", "--timeout", "60"])
        .args(["--protocol", "2025-11-25"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("mcptap: open this URL to authorize: ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the probe prints the authorization URL");
    assert!(url.contains("code_challenge_method=S256") && url.contains("resource="));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(act_as_browser(&pki, server.port, &url));
    let out = child.wait_with_output().unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = json["steps"].as_array().unwrap();
    for name in MAIN_PATH {
        let s = steps.iter().find(|s| s["name"] == *name).unwrap();
        assert_eq!(s["verdict"], "pass", "{name}: {json:#}");
    }
}

#[test]
fn without_a_callback_the_authorization_step_fails_at_the_timeout() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .arg("probe")
        .arg(server.url())
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(dir.path())
        .args(["--no-save", "--no-browser", "--json", "--timeout", "1"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = |name: &str| {
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        step("authorization code + PKCE")["verdict"],
        "fail",
        "{json:#}"
    );
    assert!(step("authorization code + PKCE")["note"]
        .as_str()
        .unwrap()
        .contains("no callback within"));
    assert_eq!(step("token exchange")["verdict"], "skip");
    // No finding, but the client's flow failed: exit 1.
    assert_eq!(out.status.code(), Some(1), "{json:#}");
}

#[test]
fn the_stage_table_shows_each_step_with_its_flows_and_spec_section() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .arg("probe")
        .arg(server.url())
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(dir.path())
        .args(["--no-save", "--headless", "--protocol", "2025-11-25"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let port = format!("localhost:{}", server.port);
    let client = regex::Regex::new(r"client [0-9a-f-]{36}").unwrap();
    let origin = regex::Regex::new(r"https://[a-z0-9]+\.invalid").unwrap();
    let redirect = regex::Regex::new(r"mcptap-probe-[a-z0-9]+\.invalid").unwrap();
    let text = text.replace(&port, "localhost:PORT");
    let text = client.replace_all(&text, "client CLIENT");
    let text = origin.replace_all(&text, "https://RANDOM.invalid");
    let text = redirect.replace_all(&text, "mcptap-probe-RANDOM.invalid");
    // The SDK's /revoke demands a client_secret even from the public client it registered:
    // the clean-up says so (a warning, no finding). Its tokens are opaque: the JWT checks are
    // skipped with the reason.
    let end = text.find("finding(s):").expect("a findings line") + "finding(s):".len();
    let table: Vec<&str> = text[..end].lines().map(str::trim_end).collect();
    let expected = r#"    step                                  flows        seen [spec]
 1  unauthenticated initialize      pass  #1           401 with a Bearer challenge and resource_metadata
                                                       [authorization §Protected Resource Metadata Discovery Requirements]
 2  protected-resource metadata     pass  #2           found at https://localhost:PORT/.well-known/oauth-protected-resource/mcp
                                                       [authorization §Protected Resource Metadata Discovery Requirements]
 3  authorization-server metadata   pass  #3           found at https://localhost:PORT/.well-known/oauth-authorization-server
                                                       [authorization §Authorization Server Metadata Discovery]
 4  registration                    pass  #4           dynamic registration: client CLIENT
                                                       [authorization §Client Registration Approaches]
 5  authorization code + PKCE       pass  #5           code received, state matches
                                                       [authorization §Authorization Flow Steps; §Authorization Code Protection]
 6  token exchange                  pass  #6           access token issued; refresh token issued
                                                       [authorization §Resource Parameter Implementation; OAuth 2.1 §4.1.3]
 7  initialize with token           pass  #7           200: protocol 2025-11-25, session
                                                       [authorization §Access Token Usage; transports §Session Management]
 8  notification answered 202       pass  #8           202 without body
                                                       [transports §Sending Messages to the Server]
 9  tools/list with token           pass  #9           200: 2 tool(s)
                                                       [authorization §Access Token Usage; transports §Session Management]
10  refresh                         pass  #10          new access token
                                                       [authorization §Token Handling; OAuth 2.1 §4.3]
    server checks: requests no client makes
11  JWKS usable                     skip               skipped: the authorization-server metadata names no jwks_uri
                                                       [RFC 8414 §2 (jwks_uri); RFC 7517 §5]
12  fabricated token refused        pass  #11          401 invalid_token
                                                       [authorization §Token Handling; RFC 6750 §3.1]
13  JWT bad signature refused       skip               skipped: the token is opaque (not a JWT): only the fabricated token applies
                                                       [authorization §Token Audience Binding and Validation; RFC 6750 §3.1]
14  JWT past exp refused            skip               skipped: the token is opaque (not a JWT): only the fabricated token applies
                                                       [authorization §Token Audience Binding and Validation; RFC 6750 §3.1]
15  JWT other audience refused      skip               skipped: the token is opaque (not a JWT): only the fabricated token applies
                                                       [authorization §Token Audience Binding and Validation; RFC 6750 §3.1]
16  other-resource token refused    skip               skipped: the token is opaque (not a JWT): whether a new one is for another resource cannot be told
                                                       [authorization §Token Audience Binding and Validation; RFC 8707 §2.2]
17  token in query refused          pass  #12          401: not served
                                                       [authorization §Token Requirements]
18  foreign Origin refused          FAIL  #13          a request with a valid token and Origin: https://RANDOM.invalid was served (200) instead of refused with 403 → origin-not-validated
                                                       [transports §Security Warning]
19  GET stream or 405               pass  #14          200 text/event-stream
                                                       [transports §Listening for Messages from the Server]
20  unknown version refused         pass  #15          400
                                                       [transports §Protocol Version Header]
21  id null refused                 FAIL  #16          a tools/list request with "id": null was accepted without an answer (202) → invalid-request-accepted
                                                       [basic §Requests; §Notifications]
22  notification with id refused    pass  #17          200: JSON-RPC error -32601
                                                       [basic §Requests; §Notifications]
23  no session id refused           pass  #18          400
                                                       [transports §Session Management]
24  unsafe redirect URI refused     FAIL  #19          registration accepted the redirect URI http://mcptap-probe-RANDOM.invalid/callback (plain http, not loopback) (201) → registration-redirect-unsafe
                                                       [authorization §Open Redirection; OAuth 2.1 §2.3.1]
25  javascript: redirect refused    FAIL  #20          registration accepted the redirect URI javascript:alert(document.domain)// (201) → registration-redirect-unsafe
                                                       [authorization §Open Redirection; OAuth 2.1 §2.3.1]
26  data: redirect refused          FAIL  #21          registration accepted the redirect URI data:text/html,<script>alert(1)</script> (201) → registration-redirect-unsafe
                                                       [authorization §Open Redirection; OAuth 2.1 §2.3.1]
27  file: redirect refused          FAIL  #22          registration accepted the redirect URI file:///tmp/mcptap-probe-callback (201) → registration-redirect-unsafe
                                                       [authorization §Open Redirection; OAuth 2.1 §2.3.1]
28  clean-up                        warn  #23,#24,#25  3 of 3 revocations refused (400 invalid_request: client_secret: Field required); 5 registration(s) cannot be deleted (no RFC 7592 management)
                                                       [RFC 7009 (revocation); RFC 7592 (registration management)]

3 finding(s):"#;
    assert_eq!(table.join("\n"), expected, "{text}");
    assert!(
        text.contains("!! FINDING [high] origin-not-validated"),
        "{text}"
    );
    assert!(
        text.contains("not counted: token-not-sent (#10 #12), provoked by the server checks"),
        "{text}"
    );
}

#[test]
fn a_server_validating_origin_passes_the_origin_check() {
    // The SDK's DNS-rebinding protection, on: a foreign Origin gets 403 (what the analyzer
    // makes of that deliberate refusal is the probe's doing, not counted).
    let p = probe_server_args(&["--allowed-hosts", "localhost:*"]);
    assert_eq!(p.verdict("foreign Origin refused"), "pass", "{:#}", p.out);
    assert_eq!(p.verdict("tools/list with token"), "pass", "{:#}", p.out);
    assert_eq!(
        p.ids(),
        ["registration-redirect-unsafe", "invalid-request-accepted"],
        "{:#}",
        p.out
    );
}

/// `--jwt` plus the checks the SDK leaves out (Origin, redirect URIs): a server that passes
/// every check the probe makes.
fn jwt_server(faults: &[&str]) -> Probed {
    jwt_server_probed(faults, &[])
}

fn jwt_server_probed(faults: &[&str], probe_args: &[&str]) -> Probed {
    let mut extra_args: Vec<String> = [
        "--jwt",
        "--check-redirect-uris",
        "--allowed-hosts",
        "localhost:*",
    ]
    .map(str::to_owned)
    .to_vec();
    extra_args.extend(faults.iter().map(|f| (*f).to_owned()));
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            extra_args,
            ..Default::default()
        },
    );
    probe(&pki, &server, probe_args)
}

const JWT_CHECKS: [&str; 3] = [
    "JWT bad signature refused",
    "JWT past exp refused",
    "JWT other audience refused",
];

#[test]
fn a_jwt_server_that_validates_everything_passes_every_token_jwks_and_redirect_check() {
    let p = jwt_server(&[]);
    for name in MAIN_PATH {
        assert_eq!(p.verdict(name), "pass", "{name}: {:#}", p.out);
    }
    for check in JWT_CHECKS {
        assert_eq!(p.verdict(check), "pass", "{check}: {:#}", p.out);
        assert!(p.step(check)["note"].as_str().unwrap().starts_with("401"));
    }
    assert_eq!(p.verdict("JWKS usable"), "pass", "{:#}", p.out);
    assert_eq!(p.step("JWKS usable")["note"], "200: 1 key(s)");
    // A real token for another resource (a refresh with resource=...): issued, then refused.
    let other = p.step("other-resource token refused");
    assert_eq!(other["verdict"], "pass", "{:#}", p.out);
    assert_eq!(other["flows"].as_array().unwrap().len(), 2, "{other:#}");
    assert!(
        other["note"]
            .as_str()
            .unwrap()
            .starts_with("401 invalid_token: refused a token its authorization server issued"),
        "{other:#}"
    );
    for check in [
        "unsafe redirect URI refused",
        "javascript: redirect refused",
        "data: redirect refused",
        "file: redirect refused",
    ] {
        assert_eq!(p.verdict(check), "pass", "{check}: {:#}", p.out);
        assert_eq!(
            p.step(check)["note"],
            "400 invalid_redirect_uri",
            "{:#}",
            p.out
        );
    }
    // Only the SDK's own "id": null acceptance is left; no token or OAuth finding.
    assert_eq!(p.ids(), ["invalid-request-accepted"], "{:#}", p.out);
    // The JWTs, real and forged, are redacted in the saved session like any token.
    let har = std::fs::read_to_string(p.session().join("session.har")).unwrap();
    let jwt_header = "eyJhbGciOiJSUzI1NiI";
    assert!(!har.contains(jwt_header), "a JWT in clear in the session");
    let journal = std::fs::read_to_string(p.session().join("journal.jsonl")).unwrap();
    assert!(
        !journal.contains(jwt_header),
        "a JWT in clear in the journal"
    );
}

#[test]
fn a_jwt_server_that_skips_the_signature_and_expiry_is_token_not_validated() {
    // The probe cannot sign: its expired and other-audience JWTs carry a stale signature, so
    // they tell expiry and audience checks apart only on a server that skips the signature.
    let p = jwt_server(&["--jwt-signature-not-checked", "--expiry-not-checked"]);
    assert_eq!(
        p.verdict("JWT bad signature refused"),
        "fail",
        "{:#}",
        p.out
    );
    assert_eq!(p.verdict("JWT past exp refused"), "fail", "{:#}", p.out);
    // The audience is still checked: that rule was reached and held.
    assert_eq!(
        p.verdict("JWT other audience refused"),
        "pass",
        "{:#}",
        p.out
    );
    assert_eq!(p.verdict("fabricated token refused"), "pass", "{:#}", p.out);
    let f = p.finding("token-not-validated");
    assert_eq!(f["severity"], "critical");
    let flows: Vec<Value> = ["JWT bad signature refused", "JWT past exp refused"]
        .iter()
        .flat_map(|c| p.step(c)["flows"].as_array().unwrap().clone())
        .collect();
    assert_eq!(f["evidence"], Value::from(flows), "{f:#}");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("signatures are not verified"),
        "{f:#}"
    );
    assert!(
        f["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("expiry is not checked")),
        "{f:#}"
    );
    assert_eq!(p.code, 1, "critical fails --fail-on high");
}

#[test]
fn a_jwt_server_that_skips_the_audience_is_token_not_validated_and_a_jwks_without_keys_is_jwks_invalid(
) {
    let p = jwt_server(&[
        "--jwt-signature-not-checked",
        "--audience-not-checked",
        "--jwks-without-keys",
    ]);
    assert_eq!(
        p.verdict("JWT other audience refused"),
        "fail",
        "{:#}",
        p.out
    );
    assert_eq!(p.verdict("JWT past exp refused"), "pass", "{:#}", p.out);
    let f = p.finding("token-not-validated");
    assert!(
        f["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("the audience is not checked")),
        "{f:#}"
    );
    // The JWKS fetch is an ordinary request: the analyzer decides jwks-invalid on it.
    assert_eq!(p.verdict("JWKS usable"), "fail", "{:#}", p.out);
    let f = p.finding("jwks-invalid");
    assert_eq!(f["evidence"], p.step("JWKS usable")["flows"], "{f:#}");
}

#[test]
fn by_default_the_probe_speaks_2026_07_28_to_a_server_that_accepts_it() {
    let p = jwt_server_probed(&[], &["--default-protocol"]);
    for name in [
        "unauthenticated server/discover",
        "server/discover with token",
        "notification answered 202",
        "tools/list with token",
        "refresh",
    ] {
        assert_eq!(p.verdict(name), "pass", "{name}: {:#}", p.out);
    }
    assert_eq!(
        p.step("server/discover with token")["note"],
        "200: protocol 2026-07-28",
        "{:#}",
        p.out
    );
    // Stateless: no GET stream (405), no session to leave out; and the SDK's 2026-07-28 path
    // refuses "id": null.
    assert_eq!(p.step("GET stream or 405")["note"], "405 (no GET stream)");
    assert_eq!(p.verdict("no session id refused"), "skip");
    p.verdicts(
        "pass",
        &[
            "id null refused",
            "notification with id refused",
            "unknown version refused",
        ],
    );
    // Every request carried the 2026-07-28 headers: no stateless-header-violation, counted or
    // provoked.
    assert!(p.ids().is_empty(), "{:#}", p.out);
    let provoked = p.out["provoked"].as_array().cloned().unwrap_or_default();
    assert!(
        provoked
            .iter()
            .all(|f| f["id"] != "stateless-header-violation"),
        "{:#}",
        p.out
    );
    assert_eq!(p.code, 0, "{:#}", p.out);
}

#[test]
fn by_default_the_probe_falls_back_to_initialize_when_2026_07_28_is_refused() {
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            extra_args: vec!["--legacy-only".into()],
            ..Default::default()
        },
    );
    let p = probe(&pki, &server, &["--default-protocol"]);
    // The 401 comes before the version: the unauthenticated request stays server/discover.
    assert_eq!(p.verdict("unauthenticated server/discover"), "pass");
    let step = p.step("initialize with token");
    assert_eq!(step["verdict"], "pass", "{:#}", p.out);
    assert_eq!(step["flows"], serde_json::json!([7, 8]), "{:#}", p.out);
    let note = step["note"].as_str().unwrap();
    assert!(
        note.starts_with("2026-07-28 refused (400: Bad Request: Unsupported protocol version")
            && note.ends_with("200: protocol 2025-11-25, session"),
        "{note}"
    );
    for name in ["tools/list with token", "no session id refused"] {
        assert_eq!(p.verdict(name), "pass", "{name}: {:#}", p.out);
    }
}

#[test]
fn the_typescript_sdk_example_server_with_oauth() {
    // Its own demo authorization server on a second port, tokens checked by introspection,
    // no refresh tokens, no revocation; it speaks 2025-11-25 with sessions.
    let server = crate::common::ts_server::TsExampleServer::start(&["--oauth"]);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .arg("probe")
        .arg(server.url())
        .arg("--confdir")
        .arg(dir.path().join("conf"))
        .arg("-w")
        .arg(dir.path().join("session"))
        .args(["--headless", "--json", "--timeout", "30"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}\n{}", server.output()));
    let p = Probed {
        code: out.status.code().unwrap_or(-1),
        out: json,
        stderr,
        dir,
    };
    for name in [
        "unauthenticated server/discover",
        "protected-resource metadata",
        "authorization-server metadata",
        "registration",
        "authorization code + PKCE",
        "token exchange",
        "initialize with token",
        "notification answered 202",
        "tools/list with token",
        "refresh",
    ] {
        assert_eq!(p.verdict(name), "pass", "{name}: {:#}", p.out);
    }
    // The authorization server is on another port: found from the PRM, not the MCP origin.
    let asm = p.step("authorization-server metadata")["note"]
        .as_str()
        .unwrap();
    assert!(
        asm.contains(&format!("localhost:{}", server.auth_port)),
        "{asm}"
    );
    // 2026-07-28 first (the SDK 1.32 example wants a session), then initialize.
    let first = p.step("initialize with token");
    assert_eq!(first["flows"].as_array().unwrap().len(), 2, "{first:#}");
    assert!(
        first["note"]
            .as_str()
            .unwrap()
            .starts_with("2026-07-28 refused (400"),
        "{first:#}"
    );
    assert_eq!(
        p.step("refresh")["note"],
        "no refresh token issued: nothing to refresh"
    );
    // The example's answers, as they are: a token its introspection does not know gets 500
    // (refused, but not 401: a warning, no finding); javascript: and data: redirect URIs are
    // refused, file: and plain http off loopback are accepted; Origin is not validated.
    assert_eq!(p.verdict("fabricated token refused"), "warn", "{:#}", p.out);
    assert!(p.step("fabricated token refused")["note"]
        .as_str()
        .unwrap()
        .starts_with("500: not served, but a server error"));
    p.verdicts(
        "pass",
        &[
            "token in query refused",
            "unknown version refused",
            "id null refused",
            "notification with id refused",
            "no session id refused",
            "GET stream or 405",
            "javascript: redirect refused",
            "data: redirect refused",
        ],
    );
    p.verdicts(
        "fail",
        &[
            "foreign Origin refused",
            "unsafe redirect URI refused",
            "file: redirect refused",
        ],
    );
    // No OAuth finding: only the two server checks it truly fails.
    assert_eq!(
        p.ids(),
        ["origin-not-validated", "registration-redirect-unsafe"],
        "{:#}",
        p.out
    );
    let f = p.finding("registration-redirect-unsafe");
    let flows: Vec<Value> = ["unsafe redirect URI refused", "file: redirect refused"]
        .iter()
        .flat_map(|c| p.step(c)["flows"].as_array().unwrap().clone())
        .collect();
    assert_eq!(f["evidence"], Value::from(flows), "{f:#}");
    assert_eq!(p.code, 1, "{}", p.stderr);
    assert!(p.session().join("probe.json").is_file());
}

#[test]
fn quiet_prints_the_verdict_only_and_view_and_analyze_open_the_probe_json() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session");
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .env_remove("MCPTAP_HOME")
        .env("NO_COLOR", "1")
        .arg("probe")
        .arg("-q")
        .arg(server.url())
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(dir.path().join("conf"))
        .arg("-w")
        .arg(&session)
        .args(["--headless", "--protocol", "2025-11-25"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // No table, no "not counted", no session line: the failed checks, then the findings.
    assert!(!text.contains("seen [spec]"), "{text}");
    assert!(!text.contains("server checks"), "{text}");
    assert!(!text.contains("not counted"), "{text}");
    assert!(!text.contains("session:"), "{text}");
    assert!(
        text.starts_with("FAIL  foreign Origin refused: a request with a valid token"),
        "{text}"
    );
    assert!(text.contains("\n3 finding(s):\n"), "{text}");
    assert!(
        text.contains("!! FINDING [high] origin-not-validated"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    // `analyze` takes the probe.json for its session.
    let analyzed = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["analyze", "--json"])
        .arg(session.join("probe.json"))
        .output()
        .unwrap();
    let analyzed: Value =
        serde_json::from_slice(&analyzed.stdout).unwrap_or_else(|e| panic!("{e}: {analyzed:?}"));
    assert_eq!(finding_ids(&analyzed), HEALTHY_SERVER_FINDINGS);
    // `view` of the probe.json: the probe's findings, not what its checks provoked.
    let mut pty = crate::tui::Pty::spawn(&[
        "view".to_owned(),
        session.join("probe.json").display().to_string(),
    ]);
    let t = pty.wait_for("the probe's session", |t| {
        t.contains("(mcptap probe)") && t.contains("origin-not-validated")
    });
    assert!(t.contains("3 findings"), "{}", t.escape_debug());
    assert!(!t.contains("token-not-sent"), "{}", t.escape_debug());
    pty.press("q");
    assert!(pty.wait_exit().success());
}

#[test]
fn a_jwt_server_that_verifies_signatures_but_skips_the_audience_is_token_not_validated() {
    // The server most often met: a JWT library checks signature and expiry, nobody configured
    // the audience. The probe's forged JWTs are refused (their signature is stale); a token
    // the authorization server itself issued for another resource is served.
    let p = jwt_server(&["--audience-not-checked"]);
    for check in JWT_CHECKS {
        assert_eq!(p.verdict(check), "pass", "{check}: {:#}", p.out);
    }
    let step = p.step("other-resource token refused");
    assert_eq!(step["verdict"], "fail", "{:#}", p.out);
    let flows = step["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2, "{step:#}");
    let f = p.finding("token-not-validated");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["evidence"], Value::from(vec![flows[1].clone()]), "{f:#}");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("the audience is not checked"),
        "{f:#}"
    );
    assert_eq!(
        p.ids(),
        ["token-not-validated", "invalid-request-accepted"],
        "{:#}",
        p.out
    );
}

#[test]
fn the_clean_up_deletes_every_registration_the_probe_made_where_rfc_7592_allows_it() {
    let pki = TestPki::new();
    let server = McpServer::start(
        &pki,
        ServerOpts {
            extra_args: vec!["--registration-management".into()],
            ..Default::default()
        },
    );
    let p = probe(&pki, &server, &[]);
    // The four unsafe registrations were accepted (the SDK checks no redirect URI)...
    assert_eq!(p.finding("registration-redirect-unsafe")["occurrences"], 4);
    // ...and, with the probe's own, deleted at the end.
    let cleanup = p.step("clean-up");
    let note = cleanup["note"].as_str().unwrap();
    assert_eq!(
        note.matches("the unsafe-redirect check's registration deleted")
            .count(),
        4,
        "{note}"
    );
    assert!(note.contains("; registration deleted"), "{note}");
    assert!(!note.contains("cannot be deleted"), "{note}");
    let deletes: Vec<(String, u16)> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(deletes.len(), 5, "{}", server.requests_summary());
    assert!(
        deletes
            .iter()
            .all(|(path, status)| path.starts_with("/register/") && *status == 204),
        "{deletes:?}"
    );
    // Each DELETE is a flow of the clean-up step.
    let flows = cleanup["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 3 + 5, "{cleanup:#}");
}
