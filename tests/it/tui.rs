//! The terminal view, driven for real: the `mcptap` binary in a pseudo-terminal (util-linux
//! `script`, present wherever the CI runs; the test says so clearly if it is missing), a live
//! proxy session with a real HTTPS client, flows appearing on screen, and `q` restoring the
//! terminal, stopping the proxy and saving the session. Also `mcptap view` on the saved session.

use crate::common::client::{body_bytes, request, tls_client, Alpn};
use crate::common::pki::{read_cert_der, TestPki};
use crate::common::upstream::Upstream;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A program running in a pseudo-terminal of 120x40: what it drew so far, and its keyboard.
pub(crate) struct Pty {
    child: Child,
    keys: ChildStdin,
    screen: Arc<Mutex<Vec<u8>>>,
}

/// Quotes for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Pty {
    pub(crate) fn spawn(args: &[String]) -> Pty {
        let script = Command::new("script").arg("--version").output();
        assert!(
            script.is_ok_and(|o| o.status.success()),
            "these tests need util-linux `script` for a pseudo-terminal (apt-get install -y bsdutils)"
        );
        let mut cmd = String::from("stty cols 120 rows 40; exec");
        cmd.push(' ');
        cmd.push_str(&sh_quote(env!("CARGO_BIN_EXE_mcptap")));
        for a in args {
            cmd.push(' ');
            cmd.push_str(&sh_quote(a));
        }
        let mut child = Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .env_remove("MCPTAP_HOME")
            .env("NO_COLOR", "1")
            .env("TERM", "xterm-256color")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("script runs");
        let keys = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            keys,
            screen,
        }
    }

    /// Everything written to the terminal, escape sequences included.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the text drawn (escape sequences read as spaces, spaces collapsed) satisfies
    /// `pred`, or panics with what was drawn.
    pub(crate) fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = plain(&self.text());
            if pred(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the terminal got (last 3000 chars):\n{}",
                t.chars()
                    .skip(t.chars().count().saturating_sub(3000))
                    .collect::<String>()
                    .escape_debug()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn press(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "mcptap did not exit; the terminal got:\n{}",
                    self.text().escape_debug()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The text of a terminal stream: each escape sequence (ratatui moves the cursor over cells
/// that did not change, blanks included) becomes a space; runs of spaces collapse to one.
fn plain(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&n) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    let mut collapsed = String::with_capacity(out.len());
    for word in out.split(' ').filter(|w| !w.is_empty()) {
        if !collapsed.is_empty() {
            collapsed.push(' ');
        }
        collapsed.push_str(word);
    }
    collapsed
}

const ALT_SCREEN_ON: &str = "\x1b[?1049h";
const ALT_SCREEN_OFF: &str = "\x1b[?1049l";
const CURSOR_SHOWN: &str = "\x1b[?25h";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_flows_and_q_restores_the_terminal() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let conf = tempfile::tempdir().unwrap();
    let session = conf.path().join("session");
    let args: Vec<String> = vec![
        "proxy".into(),
        "-p".into(),
        "0".into(),
        "--no-system-roots".into(),
        "--upstream-ca".into(),
        pki.ca_path().display().to_string(),
        "--confdir".into(),
        conf.path().display().to_string(),
        "-w".into(),
        session.display().to_string(),
    ];
    let pty = tokio::task::spawn_blocking(move || Pty::spawn(&args))
        .await
        .unwrap();
    let text = pty.wait_for("the view", |t| t.contains("proxy listening on http://"));
    pty.wait_for("the alternate screen", |_| {
        pty.text().contains(ALT_SCREEN_ON)
    });
    let addr: std::net::SocketAddr = text
        .split("proxy listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    pty.wait_for("the empty flow list with the setup hint", |t| {
        t.contains("waiting for traffic")
            && t.contains(&format!("mcptap env -p {}", addr.port()))
            && t.contains("mcptap-ca-cert.pem")
    });

    // A real client through the proxy.
    let ca = read_cert_der(&conf.path().join("mcptap-ca-cert.pem"));
    let target = format!("localhost:{}", up.port());
    let (mut s, _) = tls_client(
        addr,
        &target,
        "localhost",
        std::slice::from_ref(&ca),
        Alpn::H1,
    )
    .await
    .unwrap();
    let mut req = request(
        "POST",
        &target,
        "/echo",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
    );
    req.headers_mut()
        .insert("authorization", "Bearer raw-token-value".parse().unwrap());
    let resp = s.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = body_bytes(resp).await;
    drop(s);

    let pty = tokio::task::spawn_blocking(move || {
        let t = pty.wait_for("the flow row", |t| {
            // Only changed cells are redrawn, so look for whole cells, not whole lines.
            t.contains(&format!("localhost:{}/echo", up.port())) && t.contains("tools/call echo")
        });
        assert!(t.contains("Bearer "), "the auth column shows the scheme");
        assert!(!t.contains("raw-token-value"), "no token on screen");
        // `/` opens the filter line; Esc closes it; `q` quits.
        let mut pty = pty;
        pty.press("/");
        pty.wait_for("the filter prompt", |t| t.contains("~noauth"));
        pty.press("\x1b");
        std::thread::sleep(Duration::from_millis(300));
        pty.press("q");
        let st = pty.wait_exit();
        (pty, st)
    })
    .await
    .unwrap();
    let (pty, st) = pty;
    assert!(st.success(), "{st:?}");
    std::thread::sleep(Duration::from_millis(200));
    let t = pty.text();
    let off = t
        .rfind(ALT_SCREEN_OFF)
        .expect("the alternate screen is left");
    assert!(off > t.rfind(ALT_SCREEN_ON).unwrap());
    assert!(
        t[off..].contains(CURSOR_SHOWN)
            || t.rfind(CURSOR_SHOWN).unwrap() > t.rfind("\x1b[?25l").unwrap(),
        "the cursor is shown again"
    );
    assert!(
        t[off..].contains("mcptap: stopped"),
        "the summary prints after the view: {}",
        t[off..].escape_debug()
    );
    assert!(
        t[off..].contains("session saved in"),
        "{}",
        t[off..].escape_debug()
    );
    assert!(session.join("session.har").is_file());
    // Raw mode is off: the summary's lines end in CR LF (ONLCR on again), not bare LF.
    assert!(
        t[off..].contains("mcptap: stopped\r\n"),
        "{}",
        t[off..].escape_debug()
    );

    // The saved session opens read-only in the same view.
    let args = vec!["view".to_owned(), session.display().to_string()];
    let mut pty = Pty::spawn(&args);
    let t = pty.wait_for("the saved flow", |t| {
        t.contains("read-only") && t.contains("/echo")
    });
    assert!(t.contains("1 flows"), "{}", t.escape_debug());
    pty.press("q");
    assert!(pty.wait_exit().success());
    assert!(pty.text().contains(ALT_SCREEN_OFF));
}

#[test]
fn no_tui_and_pipes_keep_the_line_view_and_view_needs_a_terminal() {
    // `mcptap view` without a terminal says what to use instead.
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("x.har");
    std::fs::write(
        &har,
        r#"{"log":{"version":"1.2","creator":{"name":"t","version":"1"},"entries":[]}}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .arg("view")
        .arg(&har)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcptap analyze"));
    // --no-tui is accepted everywhere a proxy runs.
    use clap::Parser as _;
    let cli = mcptap::args::Cli::parse_from(["mcptap", "--no-tui"]);
    assert!(cli.proxy.no_tui);
    let cli = mcptap::args::Cli::parse_from(["mcptap", "reverse", "https://x.example", "--no-tui"]);
    assert!(matches!(cli.command, Some(mcptap::args::Command::Reverse(r)) if r.proxy.no_tui));
}
