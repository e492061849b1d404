//! `mcptap mcp`, the MCP server on stdio that lets a coding agent read captures, driven by real
//! MCP clients: the Python `mcp` SDK's stdio client (`tests/peers/mcp_stdio_client.py`) over a
//! real token-not-sent capture (the Python SDK's OAuth client through `mcptap run`) and over a
//! HAR of it holding raw tokens, against a running `mcptap proxy`, and Claude Code's
//! `claude mcp add` + `claude mcp list`. The answers are held against `mcptap analyze --json`,
//! `mcptap report` and `mcptap explain` of the same input, and no raw secret of the capture may
//! appear in anything a tool returns.

use crate::common::npm::{self, PROXY_AND_TRUST_VARS};
use crate::common::peers::{mcp_venv, peers_dir, McpServer, ServerOpts};
use crate::common::pki::TestPki;
use crate::common::python::{self, run_with_timeout, TimedOutput};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: [&str; 7] = [
    "explain",
    "findings",
    "get_flow",
    "list_flows",
    "list_sessions",
    "report",
    "summary",
];

fn mcptap() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcptap"));
    for var in PROXY_AND_TRUST_VARS {
        c.env_remove(var);
    }
    c.env("NO_COLOR", "1");
    c
}

fn dump(out: &TimedOutput) -> String {
    npm::dump(out)
}

/// `mcptap ARGS` to completion; its stdout.
fn stdout_of(args: &[&std::ffi::OsStr]) -> String {
    let mut c = mcptap();
    c.args(args);
    let out = run_with_timeout(c, Duration::from_secs(60)).unwrap();
    assert!(out.status.is_some(), "{}", dump(&out));
    out.stdout
}

/// The Python SDK's stdio client running `mcptap mcp --confdir CONF [EXTRA]`: the tools it
/// listed and each call's answer (see the script's doc).
fn drive(conf: &Path, extra: &[&str], calls: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let calls_path = dir.path().join("calls.json");
    std::fs::write(&calls_path, calls.to_string()).unwrap();
    let mut c = Command::new(python::python(&mcp_venv()));
    c.arg("-u")
        .arg(peers_dir().join("mcp_stdio_client.py"))
        .arg(&calls_path)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_mcptap"))
        .arg("mcp")
        .arg("--confdir")
        .arg(conf)
        .args(extra);
    let out = run_with_timeout(c, Duration::from_secs(300)).unwrap();
    let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!("the client's answer is not JSON ({e}):\n{}", dump(&out));
    });
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{}", dump(&out));
    answer
}

/// The text of the `i`th call's answer, which must not be an error.
fn text(answer: &Value, i: usize) -> &str {
    let r = &answer["results"][i];
    assert_eq!(r["is_error"], false, "call {i} failed: {r}");
    r["text"].as_str().unwrap()
}

fn json_of(answer: &Value, i: usize) -> Value {
    serde_json::from_str(text(answer, i))
        .unwrap_or_else(|e| panic!("call {i} is not JSON ({e}): {}", text(answer, i)))
}

/// Findings as (id, severity, culprit, status, evidence), cleared suspicions left out.
fn findings_of(list: &Value) -> Vec<(String, String, String, String, Vec<u64>)> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "cleared")
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                f["culprit"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
                f["evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// Every raw secret of a session recorded with `--keep-secrets`: the substrings of its journal
/// whose fingerprint is one the recording noted as a secret.
fn raw_secrets(journal: &Path) -> BTreeSet<String> {
    let session = mcptap_store::load(journal).unwrap();
    let noted: BTreeSet<String> = session
        .flows
        .iter()
        .flat_map(|f| f.secrets.iter().map(|s| s.fingerprint.clone()))
        .collect();
    let text = std::fs::read_to_string(journal).unwrap();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/".contains(c)))
        .filter(|w| w.len() >= 8)
        .filter(|w| noted.contains(&mcptap_flow::redact::fingerprint(w)))
        .map(str::to_owned)
        .collect()
}

/// Drops every `_`-prefixed member (HAR's custom fields), recursively.
fn strip_private(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('_'));
            m.values_mut().for_each(strip_private);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_private),
        _ => {}
    }
}

/// Records the headline case with `--keep-secrets` (so the session holds the raw tokens): the
/// Python SDK's OAuth client logs in and uses its token, then a restarted client that lost it
/// goes bare and gets 401. Returns the session directory.
fn capture_token_not_sent(conf: &Path) -> PathBuf {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, ServerOpts::default());
    let py = python::python(&mcp_venv());
    let session = conf.join("sessions").join("2026-01-01T00-00-00Z");
    let mut c = mcptap();
    c.arg("run")
        .arg("--confdir")
        .arg(conf)
        .arg("-w")
        .arg(&session)
        .arg("--keep-secrets")
        .arg("--upstream-ca")
        .arg(pki.ca_path())
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(
            r#""$0" -u "$1" "$2" --cafile "$SSL_CERT_FILE" --timeout 30 || exit 9
               exec "$0" -u "$1" "$2" --cafile "$SSL_CERT_FILE" --timeout 30 --no-auth"#,
        )
        .arg(&py)
        .arg(peers_dir().join("oauth_client.py"))
        .arg(server.url());
    let out = run_with_timeout(c, Duration::from_secs(120)).unwrap();
    // The second client fails (401), the first one must not have.
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "{}\nserver:\n{}",
        dump(&out),
        server.output()
    );
    assert!(session.join("journal.jsonl").is_file(), "{}", dump(&out));
    session
}

/// What an agent holding only the tools does with a token-not-sent capture, and what it must
/// get, for one source (`session` as the tools take it): the answers agree with `mcptap
/// analyze --json`, `mcptap report` and `mcptap explain` of the same input. Returns every text
/// the tools returned.
fn agent_reads(conf: &Path, source: &Path, default_too: bool) -> String {
    let s = source.to_str().unwrap();
    let expected: Value = serde_json::from_str(&stdout_of(&[
        "analyze".as_ref(),
        source.as_os_str(),
        "--json".as_ref(),
    ]))
    .unwrap();
    let flow_ids: Vec<u64> = expected["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect();
    assert!(flow_ids.len() >= 8, "a whole OAuth dance: {expected}");
    let mut calls = vec![
        json!({"tool": "list_sessions", "arguments": {}}),
        json!({"tool": "summary", "arguments": {"session": s}}),
        json!({"tool": "findings", "arguments": {"session": s}}),
        json!({"tool": "list_flows", "arguments": {"session": s, "filter": "~ph MCP & ~noauth"}}),
        json!({"tool": "list_flows", "arguments": {"session": s, "limit": 500}}),
        json!({"tool": "list_flows", "arguments": {"session": s, "filter": "~f", "limit": 2}}),
        json!({"tool": "explain", "arguments": {"id": "token-not-sent"}}),
        json!({"tool": "report", "arguments": {"session": s}}),
        json!({"tool": "get_flow", "arguments": {"session": s, "id": 999_999}}),
        json!({"tool": "list_flows", "arguments": {"session": s, "filter": "~zz"}}),
        json!({"tool": "summary", "arguments": {}}),
    ];
    const FIRST_FLOW: usize = 11;
    for id in &flow_ids {
        calls.push(json!({"tool": "get_flow", "arguments": {"session": s, "id": id, "max_body_bytes": 262144}}));
    }
    let answer = drive(conf, &[], &Value::from(calls));

    // Tools: the seven, each read-only with a description and an object schema.
    let tools = answer["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        TOOLS.into_iter().collect()
    );
    for t in tools {
        assert!(t["description"].as_str().unwrap().len() > 60, "{t}");
        assert_eq!(t["input_schema"]["type"], "object", "{t}");
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
    }
    assert_eq!(answer["server"]["name"], "mcptap");

    // list_sessions: the saved session, which is the default.
    let sessions = json_of(&answer, 0);
    assert_eq!(
        sessions["saved"][0]["session"], "2026-01-01T00-00-00Z",
        "{sessions}"
    );
    assert_eq!(sessions["live"], json!([]), "{sessions}");

    // summary and findings: what `mcptap analyze --json` says.
    let want = findings_of(&expected["findings"]);
    let summary = json_of(&answer, 1);
    assert_eq!(findings_of(&summary["findings"]), want, "{summary}");
    assert_eq!(summary["flows"]["total"], flow_ids.len(), "{summary}");
    assert_eq!(
        summary["tokens"].as_array().unwrap().len(),
        expected["stories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["tokens"].as_array().unwrap().len())
            .sum::<usize>()
    );
    let findings = json_of(&answer, 2);
    assert_eq!(findings_of(&findings["findings"]), want);
    let tns: Vec<&Value> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "token-not-sent")
        .collect();
    assert_eq!(tns.len(), 1, "{findings}");
    let tns = tns[0];
    assert_eq!(tns["culprit"], "client");
    // The fix quoted is the page's "How to fix it".
    let page = stdout_of(&["explain".as_ref(), "token-not-sent".as_ref()]);
    let fix = tns["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("- **Client:**") && page.contains(fix),
        "{fix}"
    );

    // The failing flow: a bare MCP request answered 401, cited by the finding, found by the
    // filter and shown whole by get_flow.
    let bare = json_of(&answer, 3);
    let bare_ids: Vec<u64> = bare["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["auth"], "none", "{f}");
            f["id"].as_u64().unwrap()
        })
        .collect();
    let failing = *tns["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_u64().unwrap())
        .filter(|e| bare_ids.contains(e))
        .collect::<Vec<_>>()
        .last()
        .unwrap_or_else(|| panic!("no bare MCP flow in the evidence: {bare}\n{tns}"));
    let flow = json_of(
        &answer,
        FIRST_FLOW + flow_ids.iter().position(|&i| i == failing).unwrap(),
    );
    assert_eq!(flow["response"]["status"], 401, "{flow}");
    assert_eq!(flow["role"], "mcp", "{flow}");
    assert!(
        !flow["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .starts_with("authorization:")),
        "{flow}"
    );
    assert!(flow["findings"]
        .as_array()
        .unwrap()
        .contains(&json!("token-not-sent")));

    // Every flow, paged and filtered, as analysed.
    let all = json_of(&answer, 4);
    let listed: Vec<(u64, Value)> = all["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_u64().unwrap(), f["status"].clone()))
        .collect();
    let analysed: Vec<(u64, Value)> = expected["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_u64().unwrap(), f["status"].clone()))
        .collect();
    assert_eq!(listed, analysed);
    let cited = json_of(&answer, 5);
    let evidence: BTreeSet<u64> = want.iter().flat_map(|f| f.4.clone()).collect();
    assert_eq!(cited["matching"], evidence.len(), "{cited}");
    assert_eq!(cited["returned"], 2.min(evidence.len()), "{cited}");
    if evidence.len() > 2 {
        assert_eq!(cited["next_offset"], 2, "{cited}");
    }

    // explain and report: what the command line prints.
    assert_eq!(text(&answer, 6).trim_end(), page.trim_end());
    let report = stdout_of(&["report".as_ref(), source.as_os_str()]);
    assert_eq!(text(&answer, 7), report);
    assert!(report.contains("token-not-sent"), "{report}");

    // Errors are answers the agent can act on.
    let r = &answer["results"][8];
    assert_eq!(r["is_error"], true, "{r}");
    assert!(
        r["text"].as_str().unwrap().contains("no flow #999999"),
        "{r}"
    );
    let r = &answer["results"][9];
    assert_eq!(r["is_error"], true, "{r}");
    assert!(r["text"].as_str().unwrap().contains("~noauth"), "{r}");

    // Without a session, the newest saved one.
    if default_too {
        let by_default = json_of(&answer, 10);
        assert_eq!(findings_of(&by_default["findings"]), want);
        assert_eq!(by_default["flows"], summary["flows"]);
    }
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The issue's "done when": an agent holding only the tools finds the failing flow, names the
/// finding and quotes the fix of a captured token-not-sent session: from the session (recorded
/// with raw secrets), from mcptap's HAR of it with raw secrets, and from that HAR as another
/// tool would write it (no `_mcptap` blocks); nothing any tool returns holds a secret the
/// capture carried.
#[test]
fn mcp_answers_the_python_sdk_about_a_token_not_sent_capture_without_a_secret() {
    let conf = tempfile::tempdir().unwrap();
    let session = capture_token_not_sent(conf.path());
    let secrets = raw_secrets(&session.join("journal.jsonl"));
    // The access and refresh tokens, the code, the PKCE verifier, the client secret…
    assert!(secrets.len() >= 4, "{secrets:?}");

    let har = conf.path().join("raw.har");
    stdout_of(&[
        "export".as_ref(),
        session.as_os_str(),
        "--keep-secrets".as_ref(),
        "-o".as_ref(),
        har.as_os_str(),
    ]);
    let har_text = std::fs::read_to_string(&har).unwrap();
    assert!(
        secrets.iter().all(|s| har_text.contains(s.as_str())),
        "the HAR holds the raw tokens, as another tool's would"
    );

    // The same HAR as another tool writes it: without mcptap's own `_mcptap` blocks (no notes of
    // which values are secrets, no recording metadata), raw tokens in headers, bodies and URLs.
    let mut foreign: Value = serde_json::from_str(&har_text).unwrap();
    strip_private(&mut foreign);
    foreign["log"]["creator"] = json!({"name": "WebInspector", "version": "537.36"});
    let foreign_har = conf.path().join("foreign.har");
    std::fs::write(&foreign_har, foreign.to_string()).unwrap();
    assert!(!foreign.to_string().contains("_mcptap"));

    for (source, default_too) in [(&session, true), (&har, false), (&foreign_har, false)] {
        let said = agent_reads(conf.path(), source, default_too);
        for s in &secrets {
            assert!(
                !said.contains(s.as_str()),
                "{} leaked {s}",
                source.display()
            );
        }
        assert!(
            said.contains("[redacted sha256:"),
            "secrets are shown as markers"
        );
    }
}

/// A running `mcptap proxy` names its session in the confdir: `mcptap mcp` lists it as live and
/// reads it by default, flows recorded so far included; when the proxy stops the control file
/// goes.
#[test]
fn mcp_reads_the_running_proxys_session() {
    let conf = tempfile::tempdir().unwrap();
    let mut proxy = mcptap()
        .args(["proxy", "--no-tui", "-q", "-p", "0", "--confdir"])
        .arg(conf.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let control = conf
        .path()
        .join("live")
        .join(format!("{}.json", proxy.id()));
    let started = Instant::now();
    let live: Value = loop {
        if let Some(v) = std::fs::read(&control)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no control file {}",
            control.display()
        );
        assert!(proxy.try_wait().unwrap().is_none(), "the proxy exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&control).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // One flow: a request to a closed loopback port, answered 502 by mcptap.
    let listen = live["listen"].as_str().unwrap();
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "-x"])
        .arg(format!("http://{listen}"))
        .arg("http://127.0.0.1:9/nothing-here")
        .status()
        .unwrap();
    assert!(curl.success());
    let journal = PathBuf::from(live["journal"].as_str().unwrap());
    let started = Instant::now();
    while !std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .contains("nothing-here")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the flow never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let answer = drive(
        conf.path(),
        &[],
        &json!([
            {"tool": "list_sessions", "arguments": {}},
            {"tool": "summary", "arguments": {}},
            {"tool": "list_flows", "arguments": {"session": "live", "filter": "~e | ~c 5xx"}},
        ]),
    );
    let sessions = json_of(&answer, 0);
    assert_eq!(sessions["live"][0]["pid"], proxy.id(), "{sessions}");
    assert_eq!(
        sessions["live"][0]["journal"], live["journal"],
        "{sessions}"
    );
    let summary = json_of(&answer, 1);
    assert_eq!(summary["source"]["live"]["pid"], proxy.id(), "{summary}");
    assert_eq!(summary["flows"]["total"], 1, "{summary}");
    let flows = json_of(&answer, 2);
    assert_eq!(flows["matching"], 1, "{flows}");
    assert!(
        flows["flows"][0]["url"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:9/nothing-here"),
        "{flows}"
    );

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(proxy.id().to_string())
        .status();
    let started = Instant::now();
    while proxy.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = proxy.kill();
            panic!("the proxy did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!control.exists(), "the control file outlived the proxy");
}

/// Claude Code set up as the README says (`claude mcp add mcptap -- mcptap mcp`), in a HOME of
/// its own, starts `mcptap mcp` and shows it connected.
#[test]
fn mcp_claude_code_adds_it_and_shows_it_connected() {
    let peers = npm::install(
        "node-peers",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node"),
        |_| {},
    );
    let home = tempfile::tempdir().unwrap();
    let claude = |args: &[&str]| {
        let mut c = Command::new(peers.join("node_modules/.bin/claude"));
        for var in PROXY_AND_TRUST_VARS {
            c.env_remove(var);
        }
        for var in [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ] {
            c.env_remove(var);
        }
        c.env("HOME", home.path())
            .env("CLAUDE_CONFIG_DIR", home.path().join(".claude"))
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .current_dir(home.path())
            .args(args);
        run_with_timeout(c, Duration::from_secs(90)).unwrap()
    };
    let bin = env!("CARGO_BIN_EXE_mcptap");
    // The README's line, with this build for `mcptap` (its confdir is under the HOME above).
    let add = claude(&["mcp", "add", "mcptap", "--", bin, "mcp"]);
    assert!(add.status.is_some_and(|s| s.success()), "{}", dump(&add));
    let list = claude(&["mcp", "list"]);
    assert!(list.status.is_some_and(|s| s.success()), "{}", dump(&list));
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with("mcptap:"))
        .unwrap_or_else(|| panic!("mcptap not listed:\n{}", dump(&list)));
    assert!(line.contains(&format!("{bin} mcp")), "{line}");
    assert!(line.contains("Connected"), "{}", dump(&list));
}
