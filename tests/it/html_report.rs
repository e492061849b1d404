//! `mcptap report --html` in a real browser: headless Chromium (Debian package `chromium`,
//! installed here when missing) loads the page offline, runs its script without a console
//! error, and its DOM holds the diagram's arrows and the finding ids. A screenshot is kept
//! under `target/tmp/report-html/` to look at.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn mcptap() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcptap"));
    c.env_remove("MCPTAP_HOME").env("NO_COLOR", "1");
    c
}

/// One HAR entry, `ms` after the start.
fn entry(
    ms: u64,
    method: &str,
    url: &str,
    req: Option<(&str, Value)>,
    status: u16,
    resp: Value,
) -> Value {
    let mut headers = vec![json!({"name": "user-agent", "value": "claude-code/2.1"})];
    let mut post = Value::Null;
    if let Some((ct, body)) = req {
        headers.push(json!({"name": "content-type", "value": ct}));
        let text = match body {
            Value::String(s) => s,
            v => v.to_string(),
        };
        post = json!({"mimeType": ct, "text": text});
    }
    if url.ends_with("/mcp") {
        headers.push(json!({"name": "accept", "value": "application/json, text/event-stream"}));
    }
    let mut request = json!({
        "method": method, "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
        "headers": headers, "queryString": [], "headersSize": -1, "bodySize": -1,
    });
    if !post.is_null() {
        request["postData"] = post;
    }
    let text = resp.to_string();
    let mut rh = vec![json!({"name": "content-type", "value": "application/json"})];
    if status == 401 {
        rh.push(json!({"name": "www-authenticate", "value":
            "Bearer resource_metadata=\"https://mcp.example/.well-known/oauth-protected-resource/mcp\""}));
    }
    json!({
        "startedDateTime": format!("2026-12-01T10:00:{:02}.{:03}Z", ms / 1000, ms % 1000),
        "time": 5,
        "request": request,
        "response": {
            "status": status, "statusText": "", "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": rh,
            "content": {"mimeType": "application/json", "size": text.len(), "text": text},
            "redirectURL": "", "headersSize": -1, "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 1, "wait": 3, "receive": 1},
    })
}

/// Claude Code's "Needs authentication": a token is issued and MCP requests go out without it.
fn token_not_sent_har() -> Value {
    let init = || {
        Some((
            "application/json",
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "claude-code", "version": "2.1"}}}),
        ))
    };
    let unauthorized = || json!({"error": "invalid_token"});
    let entries = vec![
        entry(0, "POST", "https://mcp.example/mcp", init(), 401, unauthorized()),
        entry(20, "GET", "https://mcp.example/.well-known/oauth-protected-resource/mcp", None, 200,
            json!({"resource": "https://mcp.example/mcp", "authorization_servers": ["https://auth.example"]})),
        entry(40, "GET", "https://auth.example/.well-known/oauth-authorization-server", None, 200,
            json!({"issuer": "https://auth.example",
                   "authorization_endpoint": "https://auth.example/authorize",
                   "token_endpoint": "https://auth.example/token",
                   "registration_endpoint": "https://auth.example/register",
                   "revocation_endpoint": "https://auth.example/revoke",
                   "response_types_supported": ["code"],
                   "code_challenge_methods_supported": ["S256"]})),
        entry(60, "POST", "https://auth.example/register",
            Some(("application/json", json!({"redirect_uris": ["http://localhost:33418/callback"]}))), 201,
            json!({"client_id": "client-1", "redirect_uris": ["http://localhost:33418/callback"]})),
        entry(2000, "POST", "https://auth.example/token",
            Some(("application/x-www-form-urlencoded", Value::String(
                "grant_type=authorization_code&code=raw-code-1&client_id=client-1&code_verifier=raw-verifier-0123456789012345678901234567890&redirect_uri=http%3A%2F%2Flocalhost%3A33418%2Fcallback&resource=https%3A%2F%2Fmcp.example%2Fmcp".into()))),
            200, json!({"access_token": "raw-token-value", "token_type": "Bearer", "expires_in": 3600})),
        entry(2100, "POST", "https://mcp.example/mcp", init(), 401, unauthorized()),
        entry(2200, "POST", "https://mcp.example/mcp", init(), 401, unauthorized()),
        entry(2300, "POST", "https://mcp.example/mcp", init(), 401, unauthorized()),
        entry(2400, "POST", "https://auth.example/revoke",
            Some(("application/x-www-form-urlencoded", Value::String("token=raw-token-value".into()))),
            400, json!({"error": "unsupported_token_type"})),
    ];
    json!({"log": {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": entries}})
}

/// The Chromium binary, installing the Debian package when it is missing; `None` (with the
/// reason printed) only where it cannot be installed.
fn chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        install();
    }
    let found = find();
    if found.is_none() {
        println!(
            "SKIPPED: the HTML report's browser test needs Chromium, and `apt-get install -y \
             chromium` could not install it here"
        );
    }
    found
}

/// Runs headless Chromium on `url` with `extra` arguments; returns (stdout, console lines).
fn headless(chrome: &Path, profile: &Path, url: &str, extra: &[&str]) -> (String, Vec<String>) {
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn html_report_loads_in_chromium_with_its_diagram_and_flows() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-html");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let har = dir.join("needs-auth.har");
    std::fs::write(&har, token_not_sent_har().to_string()).unwrap();
    let html = dir.join("report.html");
    let out = mcptap()
        .arg("report")
        .arg(&har)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing is fetched, and no secret is in the page.
    for banned in [
        "<link",
        "src=\"http",
        "@import",
        "url(http",
        "raw-token-value",
        "raw-code-1",
    ] {
        assert!(!page.contains(banned), "the page holds {banned:?}");
    }
    assert!(page.contains("token-not-sent"), "{page}");

    let Some(chrome) = chromium() else {
        return;
    };
    let profile = dir.join("profile");
    // The console check sees errors: a page that throws is caught.
    let bad = dir.join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><script>console.error('broken'); throw new Error('boom');</script>",
    )
    .unwrap();
    let (_, console) = headless(
        &chrome,
        &profile,
        &format!("file://{}", bad.display()),
        &["--dump-dom"],
    );
    assert!(
        console
            .iter()
            .any(|l| l.contains("boom") || l.contains("broken")),
        "chromium does not report console errors on stderr, so the check below would prove \
         nothing: {console:?}"
    );

    let url = format!("file://{}#flow-6", html.display());
    let (dom, console) = headless(&chrome, &profile, &url, &["--dump-dom"]);
    assert!(console.is_empty(), "console output: {console:#?}");
    assert!(
        dom.contains("<svg class=\"seq\""),
        "no diagram in the DOM:\n{dom}"
    );
    // The arrows: discovery, registration, the token with its fingerprint, the bare requests
    // folded with their count and the finding on them, and the refused revocation.
    let fp = mcptap_flow::redact::fingerprint("raw-token-value");
    for arrow in [
        "resource metadata",
        "(register)",
        &format!("200, issues token {fp}"),
        &format!("#6–#8 (×3) initialize, no token ({fp} was valid)"),
        "✗ token-not-sent",
        "(revoke)",
    ] {
        assert!(dom.contains(arrow), "no {arrow:?} in the DOM:\n{dom}");
    }
    // The script opened the flow the address names: its headers and body are shown.
    let opened = dom
        .split("<details")
        .find(|d| d.contains("id=\"flow-6\""))
        .expect("flow 6 has a details block");
    assert!(
        opened.contains(" open=\"\""),
        "flow 6 is not opened: {opened}"
    );
    assert!(
        opened.contains("accept: application/json, text/event-stream"),
        "{opened}"
    );

    let shot = dir.join("report.png");
    let (_, console) = headless(
        &chrome,
        &profile,
        &format!("file://{}", html.display()),
        &[&format!("--screenshot={}", shot.display())],
    );
    assert!(console.is_empty(), "console output: {console:#?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", shot.display());
}
