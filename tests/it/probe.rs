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

    fn ids(&self) -> Vec<&str> {
        self.out["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect()
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

fn probe(pki: &TestPki, server: &McpServer, extra: &[&str]) -> Probed {
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
        .args(extra)
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

fn probe_fault(opts: ServerOpts) -> Probed {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, opts);
    probe(&pki, &server, &[])
}

#[test]
fn a_healthy_server_passes_every_step_and_fails_only_the_origin_and_redirect_checks() {
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
    for check in [
        "fabricated token refused",
        "token in query refused",
        "unknown version refused",
        "GET stream or 405",
    ] {
        assert_eq!(p.verdict(check), "pass", "{check}: {:#}", p.out);
    }
    // The SDK server, as the tests run it, does not validate Origin (the test server turns
    // DNS-rebinding protection off), and the SDK's registration accepts any redirect URI: those
    // are the only findings, and no OAuth finding is made on the probe's own traffic.
    assert_eq!(p.verdict("foreign Origin refused"), "fail");
    assert_eq!(p.verdict("unsafe redirect URI refused"), "fail");
    assert_eq!(
        p.ids(),
        ["origin-not-validated", "registration-redirect-unsafe"],
        "{:#}",
        p.out
    );
    let f = p.finding("registration-redirect-unsafe");
    assert_eq!(
        f["evidence"],
        p.step("unsafe redirect URI refused")["flows"]
    );
    assert!(f["summary"].as_str().unwrap().contains("(201)"), "{f:#}");
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
    let analyzed = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(["analyze", "--json"])
        .arg(p.session())
        .output()
        .unwrap();
    assert_eq!(analyzed.status.code(), Some(1), "{analyzed:?}");
    let analyzed: Value = serde_json::from_slice(&analyzed.stdout).unwrap();
    let ids: Vec<&str> = analyzed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["origin-not-validated", "registration-redirect-unsafe"],
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
        2,
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
    let p = probe_fault(ServerOpts {
        extra_args: vec!["--metadata-html".into()],
        ..Default::default()
    });
    assert_eq!(p.verdict("protected-resource metadata"), "fail");
    p.finding("metadata-not-json");
    p.finding("prm-unavailable");
}

#[test]
fn metadata_without_s256_is_as_metadata_incomplete_and_stops_the_flow() {
    let p = probe_fault(ServerOpts {
        extra_args: vec!["--no-s256".into()],
        ..Default::default()
    });
    assert_eq!(p.verdict("authorization-server metadata"), "fail");
    assert_eq!(p.verdict("registration"), "skip");
    p.finding("as-metadata-incomplete");
}

#[test]
fn a_refused_registration_is_registration_failed() {
    let p = probe_fault(ServerOpts {
        extra_args: vec!["--refuse-dcr".into()],
        ..Default::default()
    });
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
        .args(["--no-save", "--headless"])
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
    // the clean-up says so (a warning, no finding).
    let table: Vec<&str> = text.lines().take(38).map(str::trim_end).collect();
    let expected = r#"    step                                 flows        seen [spec]
 1  unauthenticated initialize     pass  #1           401 with a Bearer challenge and resource_metadata
                                                      [authorization §Protected Resource Metadata Discovery Requirements]
 2  protected-resource metadata    pass  #2           found at https://localhost:PORT/.well-known/oauth-protected-resource/mcp
                                                      [authorization §Protected Resource Metadata Discovery Requirements]
 3  authorization-server metadata  pass  #3           found at https://localhost:PORT/.well-known/oauth-authorization-server
                                                      [authorization §Authorization Server Metadata Discovery]
 4  registration                   pass  #4           dynamic registration: client CLIENT
                                                      [authorization §Client Registration Approaches]
 5  authorization code + PKCE      pass  #5           code received, state matches
                                                      [authorization §Authorization Flow Steps; §Authorization Code Protection]
 6  token exchange                 pass  #6           access token issued; refresh token issued
                                                      [authorization §Resource Parameter Implementation; OAuth 2.1 §4.1.3]
 7  initialize with token          pass  #7           200: protocol 2025-11-25, session
                                                      [authorization §Access Token Usage; transports §Session Management]
 8  notification answered 202      pass  #8           202 without body
                                                      [transports §Sending Messages to the Server]
 9  tools/list with token          pass  #9           200: 2 tool(s)
                                                      [authorization §Access Token Usage; transports §Session Management]
10  refresh                        pass  #10          new access token
                                                      [authorization §Token Handling; OAuth 2.1 §4.3]
    server checks: requests no client makes
11  fabricated token refused       pass  #11          401 invalid_token
                                                      [authorization §Token Handling; RFC 6750 §3.1]
12  token in query refused         pass  #12          401: not served
                                                      [authorization §Token Requirements]
13  foreign Origin refused         FAIL  #13          a request with a valid token and Origin: https://RANDOM.invalid was served (200) instead of refused with 403 → origin-not-validated
                                                      [transports §Security Warning]
14  unknown version refused        pass  #14          400
                                                      [transports §Protocol Version Header]
15  GET stream or 405              pass  #15          200 text/event-stream
                                                      [transports §Listening for Messages from the Server]
16  unsafe redirect URI refused    FAIL  #16          registration accepted the redirect URI http://mcptap-probe-RANDOM.invalid/callback (plain http, not loopback) (201) → registration-redirect-unsafe
                                                      [authorization §Open Redirection; OAuth 2.1 §2.3.1]
17  clean-up                       warn  #17,#18,#19  3 of 3 revocations refused (400 invalid_request: client_secret: Field required); 2 registration(s) cannot be deleted (no RFC 7592 management)
                                                      [RFC 7009 (revocation); RFC 7592 (registration management)]

2 finding(s):"#;
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
    let p = probe_fault(ServerOpts {
        extra_args: vec!["--allowed-hosts".into(), "localhost:*".into()],
        ..Default::default()
    });
    assert_eq!(p.verdict("foreign Origin refused"), "pass", "{:#}", p.out);
    assert_eq!(p.verdict("tools/list with token"), "pass", "{:#}", p.out);
    assert_eq!(p.ids(), ["registration-redirect-unsafe"], "{:#}", p.out);
}
