//! The real `mcptap` binary: the CA command, the port-in-use message, the line view and a clean
//! exit on SIGTERM.

use crate::common::client::{body_bytes, request, tls_client, Alpn};
use crate::common::pki::{read_cert_der, TestPki};
use crate::common::upstream::Upstream;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn mcptap() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcptap"));
    c.env_remove("MCPTAP_HOME").env("NO_COLOR", "1");
    c
}

#[path = "../../crates/cli/relr.rs"]
mod relr;

/// The build script links the binary with packed relative relocations when a probe program
/// linked that way runs here (crates/cli/build.rs): then the binary must have them; otherwise
/// the build says why.
#[test]
fn the_binary_packs_its_relative_relocations_where_the_toolchain_can() {
    let verdict = env!("MCPTAP_RELR");
    let elf = std::fs::read(env!("CARGO_BIN_EXE_mcptap")).unwrap();
    assert!(elf.starts_with(b"\x7fELF"), "not an ELF file");
    if verdict == "packed" {
        assert!(
            relr::has_relr(&elf),
            "the build packed relocations but the binary has no DT_RELR"
        );
    } else {
        assert!(verdict.starts_with("not packed: "), "{verdict}");
        assert!(
            !relr::has_relr(&elf),
            "{verdict}, yet the binary has DT_RELR"
        );
    }
}

/// The build script places the functions `crates/cli/link-order.txt` lists first, in its order,
/// when this toolchain's linker takes the list (crates/cli/build.rs): then those of them the
/// binary has sit at ascending addresses in the list's order; otherwise the build says why,
/// and the linker's own order shows.
#[test]
fn the_binary_places_its_start_up_functions_in_the_listed_order_where_the_linker_can() {
    let verdict = env!("MCPTAP_LINK_ORDER");
    let elf = std::fs::read(env!("CARGO_BIN_EXE_mcptap")).unwrap();
    let at = symbol_addresses(&elf);
    assert!(!at.is_empty(), "the binary has no symbol table");
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/cli/link-order.txt"
    ))
    .unwrap();
    let placed: Vec<u64> = list
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|name| at.get(name).copied())
        .collect();
    // A debug build inlines less and names fewer of them, but still hundreds.
    assert!(
        placed.len() >= 50,
        "only {} listed functions are in the binary: rerun scripts/link-order.sh",
        placed.len()
    );
    let in_order = placed.windows(2).filter(|w| w[0] < w[1]).count();
    if verdict == "ordered" {
        assert_eq!(in_order, placed.len() - 1, "the list's order was not kept");
    } else {
        assert!(verdict.starts_with("not ordered: "), "{verdict}");
        assert!(
            in_order < placed.len() - 1,
            "{verdict}, yet the list's order shows"
        );
    }
}

/// Each defined symbol's name and address, from an ELF64 little-endian file's `.symtab`.
fn symbol_addresses(elf: &[u8]) -> std::collections::HashMap<&str, u64> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let mut out = std::collections::HashMap::new();
    let (Some(shoff), Some(shentsize), Some(shnum)) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c))
    else {
        return out;
    };
    let section = |i: usize| shoff as usize + i * usize::from(shentsize);
    for i in 0..usize::from(shnum) {
        let sh = section(i);
        // SHT_SYMTAB = 2; sh_offset at +24, sh_size at +32, sh_link (its string table) at +40.
        if u32_at(sh + 4) != Some(2) {
            continue;
        }
        let (Some(off), Some(size), Some(link)) =
            (u64_at(sh + 24), u64_at(sh + 32), u32_at(sh + 40))
        else {
            continue;
        };
        let strtab = section(link as usize);
        let (Some(str_off), Some(str_size)) = (u64_at(strtab + 24), u64_at(strtab + 32)) else {
            continue;
        };
        let Some(names) = elf.get(str_off as usize..(str_off + str_size) as usize) else {
            continue;
        };
        for sym in (off as usize..(off + size) as usize).step_by(24) {
            // st_name at +0, st_shndx at +6 (0: undefined), st_value at +8.
            let (Some(name), Some(shndx), Some(value)) =
                (u32_at(sym), u16_at(sym + 6), u64_at(sym + 8))
            else {
                break;
            };
            let Some(rest) = names.get(name as usize..) else {
                continue;
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if shndx != 0 {
                if let Ok(name) = std::str::from_utf8(&rest[..end]) {
                    out.insert(name, value);
                }
            }
        }
    }
    out
}

#[test]
fn ca_prints_the_certificate_path_and_how_to_trust_it() {
    let conf = tempfile::tempdir().unwrap();
    let out = mcptap()
        .args(["ca", "--confdir"])
        .arg(conf.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let cert = conf.path().join("mcptap-ca-cert.pem");
    assert!(text.contains(&cert.display().to_string()), "{text}");
    for needle in [
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "--cacert",
    ] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("created a new CA"));
    // Second run: same CA, nothing created.
    let out = mcptap()
        .args(["ca", "--path", "--confdir"])
        .arg(conf.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        cert.display().to_string()
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created"));
}

#[test]
fn a_corrupt_ca_is_a_clear_error_and_is_left_alone() {
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("mcptap-ca.pem"), "not a key").unwrap();
    let out = mcptap()
        .args(["ca", "--confdir"])
        .arg(conf.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "an input error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mcptap-ca.pem"), "{err}");
    assert_eq!(
        std::fs::read_to_string(conf.path().join("mcptap-ca.pem")).unwrap(),
        "not a key"
    );
}

#[test]
fn a_port_in_use_is_a_one_line_error_naming_the_port_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let conf = tempfile::tempdir().unwrap();
    let out = mcptap()
        .args(["proxy", "-p", &port.to_string(), "--confdir"])
        .arg(conf.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains(&port.to_string()) && line.contains("--listen-port"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_line_per_exchange_and_exits_cleanly_on_sigterm() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let conf = tempfile::tempdir().unwrap();
    let mut child = mcptap()
        .args(["proxy", "-p", "0", "--no-system-roots", "--upstream-ca"])
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(conf.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, banner) = listening_addr(&mut child);
    // Said once, in plain text (stderr is a pipe here: no colour codes).
    assert_eq!(banner.matches("created a new CA").count(), 1, "{banner}");
    assert!(!banner.contains('\x1b'), "{banner:?}");
    let (target, mut s) = client_through(addr, conf.path(), &up).await;
    let mut req = request("POST", &target, "/echo", "{}");
    req.headers_mut()
        .insert("authorization", "Bearer raw-token-value".parse().unwrap());
    let resp = s.send(req).await.unwrap();
    assert_eq!(body_bytes(resp).await, "{}");
    drop(s);

    // SIGTERM: graceful shutdown, exit status 0.
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let mut out = String::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (st, out);
            }
            assert!(
                Instant::now() < deadline,
                "mcptap did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let (st, out) = status;
    assert!(st.success(), "{st:?}");
    let line = out
        .lines()
        .find(|l| l.contains("/echo"))
        .unwrap_or_else(|| panic!("no line for /echo in {out:?}"));
    assert!(
        line.contains(&format!("POST https://localhost:{}/echo -> 200", up.port())),
        "{line}"
    );
    assert!(line.contains("[Bearer "), "{line}");
    assert!(
        !out.contains("raw-token-value"),
        "the line view never prints a token: {out}"
    );

    // The session was recorded under the confdir, redacted, with a HAR written at shutdown.
    let sessions: Vec<_> = std::fs::read_dir(conf.path().join("sessions"))
        .unwrap()
        .collect();
    assert_eq!(sessions.len(), 1);
    let session = sessions.into_iter().next().unwrap().unwrap().path();
    let journal = std::fs::read_to_string(session.join("journal.jsonl")).unwrap();
    let har = std::fs::read_to_string(session.join("session.har")).unwrap();
    for text in [&journal, &har] {
        assert!(
            text.contains("/echo") && text.contains("Bearer [redacted sha256:"),
            "{text}"
        );
        assert!(!text.contains("raw-token-value"));
    }

    // export, analyze and report read it back.
    let out_har = conf.path().join("out.har");
    export(&session.join("journal.jsonl"), &out_har);
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_har).unwrap()).unwrap();
    assert_eq!(exported["log"]["version"], "1.2");
    assert!(exported["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["request"]["url"]
            .as_str()
            .unwrap_or("")
            .ends_with("/echo")));
    let out = mcptap()
        .arg("analyze")
        .arg(&session)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["findings"].is_array());
    let out = mcptap().arg("report").arg(&out_har).output().unwrap();
    assert!(out.status.success());
    // The streaming pipeline says what the whole session in memory says, for both files.
    for input in [&session, &out_har] {
        for cmd in [&["analyze", "--json"][..], &["analyze"], &["report"]] {
            let streamed = mcptap().args(cmd).arg(input).output().unwrap();
            let whole = mcptap()
                .args(cmd)
                .arg(input)
                .env("MCPTAP_OFFLINE_WHOLE", "1")
                .output()
                .unwrap();
            assert!(streamed.status.success(), "{cmd:?} {input:?}");
            assert_eq!(streamed.stdout, whole.stdout, "{cmd:?} {input:?}");
            assert_eq!(streamed.status.code(), whole.status.code());
        }
        let mut pages = Vec::new();
        for whole in [false, true] {
            let page = conf.path().join(format!("report-{whole}.html"));
            let mut cmd = mcptap();
            cmd.arg("report").arg(input).arg("--html").arg(&page);
            if whole {
                cmd.env("MCPTAP_OFFLINE_WHOLE", "1");
            }
            assert!(cmd.output().unwrap().status.success());
            pages.push(std::fs::read(&page).unwrap());
        }
        assert!(pages[0] == pages[1], "report --html {input:?}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("raw-token-value"));
}

/// Only a journal without the end line of a clean shutdown may blame a crash for its
/// unfinished flows.
#[test]
fn export_blames_a_crash_only_for_a_journal_without_a_clean_end() {
    use mcptap_flow::{Flow, FlowEvent, FlowId};
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s");
        let mut journal =
            mcptap_store::Journal::create(&session, mcptap_store::SessionMeta::new("test"))
                .unwrap();
        let flow = Flow {
            id: FlowId(1),
            host: "mcp.example".into(),
            port: 443,
            request: mcptap_flow::Request {
                method: "POST".into(),
                url: "https://mcp.example/mcp".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        journal
            .record(&FlowEvent::RequestStarted {
                flow: Box::new(flow),
            })
            .unwrap();
        journal.flush().unwrap();
        if clean {
            journal.finish().unwrap();
        } else {
            drop(journal);
        }
        let err = export(&session, &dir.path().join("out.har"));
        assert!(err.contains("wrote 1 entries"), "{err}");
        if clean {
            assert!(!err.contains("crash"), "{err}");
            assert!(err.contains("1 without an end in the recording"), "{err}");
        } else {
            assert!(
                err.contains("1 unfinished at the time of the crash"),
                "{err}"
            );
        }
    }
}

#[test]
fn analyze_says_why_a_file_is_unusable_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.har");
    std::fs::write(
        &bad,
        r#"{"log":{"version":"1.2","entries":[{"request":{}}]}}"#,
    )
    .unwrap();
    let out = mcptap().arg("analyze").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "an input error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry 0"), "says where it broke: {err}");
    let out = mcptap()
        .args(["analyze", "/nonexistent/file.har"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = mcptap()
        .arg("analyze")
        .arg(&bad)
        .args(["--fail-on", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn analyze_exits_1_on_a_finding_at_the_threshold() {
    // A token is issued, then the MCP endpoint keeps being called without it: token-not-sent.
    let har = crate::snapshots::fixture("token-not-sent.har");
    let out = mcptap().arg("analyze").arg(&har).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("token-not-sent"), "{text}");
}

/// Output to a pipe whose reader has gone (`mcptap analyze … | head`) ends quietly with 0, as
/// ripgrep does: no error message, no panic.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    let har = crate::snapshots::fixture("token-not-sent.har");
    for cmd in [
        &["analyze"][..],
        &["analyze", "--json"],
        &["report"],
        &["export", "-o", "-"],
    ] {
        // The read end is closed before mcptap starts: its first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = mcptap()
            .args(cmd)
            .arg(&har)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {stderr}");
        assert!(!stderr.contains("error"), "{cmd:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{cmd:?}: {stderr}");
    }
}

/// The exit status follows the error's kind, as `mcptap --help` documents it: usage 2, input 3,
/// I/O 74.
#[test]
fn the_exit_status_follows_the_kind_of_error() {
    let help = mcptap().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "Exit status:",
        "  2   usage",
        "  3   input",
        "  70  internal",
        "  74  I/O",
    ] {
        assert!(help.contains(line), "{line:?} in {help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    let code = |args: &[&str]| {
        let out = mcptap()
            .args(args)
            .arg("--confdir")
            .arg(&conf)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, err) = code(&["proxy", "--mode", "upstream:http://x"]);
    assert_eq!(status, Some(2), "{err}");
    let (status, err) = code(&["run", "--mode", "reverse:https://x.example", "true"]);
    assert_eq!(status, Some(2), "{err}");
    let (status, err) = code(&["proxy", "--upstream-ca", "/nonexistent/ca.pem"]);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("--upstream-ca /nonexistent/ca.pem"), "{err}");
    // A report that cannot be written: its directory is a file.
    let har = dir.path().join("empty.har");
    std::fs::write(
        &har,
        r#"{"log":{"version":"1.2","creator":{"name":"t","version":"1"},"entries":[]}}"#,
    )
    .unwrap();
    let out = mcptap()
        .arg("report")
        .arg(&har)
        .arg("-o")
        .arg(har.join("report.md"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{out:?}");
}

#[test]
fn explain_prints_a_finding_page_and_lists_ids_for_unknown_ones() {
    let out = mcptap()
        .args(["explain", "token-not-sent"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains("token-not-sent") && page.to_lowercase().contains("fix"),
        "{page}"
    );
    let out = mcptap()
        .args(["explain", "no-such-thing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("challenge-missing") && err.contains("token-not-sent"),
        "{err}"
    );
    // No id: every id with its title, on stdout.
    let out = mcptap().arg("explain").output().unwrap();
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("A token was issued, but MCP requests go out without it"),
        "{list}"
    );
    // A sub-case opens its finding's page; piped, the page is raw markdown.
    let out = mcptap().args(["explain", "never-sent"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# token-not-sent"));
    // A typo is answered with the nearest id.
    let out = mcptap()
        .args(["explain", "token-not-snet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean token-not-sent?"));
}

/// `kill -9` at any moment loses nothing that finished: the journal left behind exports, with
/// every exchange the client saw answered.
#[tokio::test]
async fn after_kill_9_the_journal_has_every_finished_exchange() {
    let mut r = Recording::start().await;
    let (target, mut s) = r.client().await;
    for i in 0..5 {
        let resp = s
            .send(request("POST", &target, "/echo", format!("{{\"n\":{i}}}")))
            .await
            .unwrap();
        assert_eq!(body_bytes(resp).await, format!("{{\"n\":{i}}}"));
    }
    // The last answer reached the client; give the recorder a moment (it takes events in
    // batches a few milliseconds apart), then kill without warning.
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.child.kill().unwrap();
    let _ = r.child.wait();
    assert!(
        !r.session.join("session.har").exists(),
        "no clean shutdown happened"
    );

    let out_har = r.conf.path().join("out.har");
    export(&r.session, &out_har);
    let har: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_har).unwrap()).unwrap();
    let bodies: Vec<String> = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["request"]["url"]
                .as_str()
                .unwrap_or("")
                .ends_with("/echo")
        })
        .map(|e| {
            e["response"]["content"]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let want: Vec<String> = (0..5).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(bodies, want);
}

#[test]
fn inject_refresh_needs_inject_token_and_warns_at_start() {
    let conf = tempfile::tempdir().unwrap();
    let out = mcptap()
        .args([
            "proxy",
            "-p",
            "0",
            "--no-save",
            "--inject-refresh",
            "--confdir",
        ])
        .arg(conf.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--inject-token"));

    let mut child = mcptap()
        .args([
            "proxy",
            "-p",
            "0",
            "--no-save",
            "--no-tui",
            "--inject-token",
            "--inject-refresh",
            "--confdir",
        ])
        .arg(conf.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let warned = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.contains("--inject-refresh uses the client's refresh token") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(warned, "no --inject-refresh warning in {seen:?}");
}

/// SIGTERM to a child (the way a supervisor stops mcptap).
pub(crate) fn sigterm(child: &std::process::Child) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// `mcptap export INPUT -o OUTPUT`, which must succeed; returns its stderr.
pub(crate) fn export(input: &std::path::Path, output: &std::path::Path) -> String {
    let out = mcptap()
        .arg("export")
        .arg(input)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// The flows a session's journal finished (its `completed`, `failed` lines), whole.
fn finished_flows(session: &std::path::Path) -> Vec<serde_json::Value> {
    // Through the reader: a final line may point at the lines that said its flow's head.
    let Ok(mut reader) = mcptap_store::read_journal(&session.join("journal.jsonl")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(flow) = reader.next() {
        // Flows still in flight at the end have no final line (no place).
        if let (Ok(flow), Some(_)) = (flow, reader.placed()) {
            out.push(serde_json::json!({ "flow": flow }));
        }
    }
    out
}

/// `mcptap proxy` on a free port recording into `session`, trusting `pki` upstream, with its
/// stderr piped (read it with [`listening_addr`]).
pub(crate) fn recording_proxy(
    pki: &TestPki,
    confdir: &std::path::Path,
    session: &std::path::Path,
    flag: &str,
) -> std::process::Child {
    mcptap()
        .args([
            "proxy",
            flag,
            "-p",
            "0",
            "--no-system-roots",
            "--upstream-ca",
        ])
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(confdir)
        .arg("-w")
        .arg(session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the proxy's stderr until it announces its address; returns it and what came before.
pub(crate) fn listening_addr(child: &mut std::process::Child) -> (std::net::SocketAddr, String) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    let mut banner = String::new();
    while Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
        if let Some(rest) = line
            .trim()
            .strip_prefix("mcptap: proxy listening on http://")
        {
            // Keep draining: a closed stderr would fail the proxy's later messages.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (rest.parse().unwrap(), banner);
        }
    }
    panic!("the proxy did not announce its address: {banner}");
}

/// An HTTP/1.1 client tunnelled through the proxy at `addr` to `up`, trusting the CA in
/// `confdir`; returns the `host:port` target too.
pub(crate) async fn client_through(
    addr: std::net::SocketAddr,
    confdir: &std::path::Path,
    up: &Upstream,
) -> (String, crate::common::client::Sender) {
    let ca = read_cert_der(&confdir.join("mcptap-ca-cert.pem"));
    let target = format!("localhost:{}", up.port());
    let (s, _) = tls_client(
        addr,
        &target,
        "localhost",
        std::slice::from_ref(&ca),
        Alpn::H1,
    )
    .await
    .unwrap();
    (target, s)
}

/// A quiet proxy recording into `<conf>/session` in front of an HTTPS upstream (HTTP/1.1).
pub(crate) struct Recording {
    /// Keeps the upstream's CA files.
    _pki: TestPki,
    pub up: Upstream,
    pub conf: tempfile::TempDir,
    pub session: std::path::PathBuf,
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Recording {
    pub(crate) async fn start() -> Recording {
        let pki = TestPki::new();
        let up = Upstream::https(&pki, &[b"http/1.1"]).await;
        let conf = tempfile::tempdir().unwrap();
        let session = conf.path().join("session");
        let mut child = recording_proxy(&pki, conf.path(), &session, "-q");
        let (addr, _) = listening_addr(&mut child);
        Recording {
            _pki: pki,
            up,
            conf,
            session,
            child,
            addr,
        }
    }

    /// A client connection through the proxy: the upstream's authority and the sender.
    pub(crate) async fn client(&self) -> (String, crate::common::client::Sender) {
        client_through(self.addr, self.conf.path(), &self.up).await
    }
}

/// A closed stderr (`mcptap proxy 2>&1 | head`) loses messages, not the proxy: traffic still
/// flows and the session is still saved on SIGTERM.
#[tokio::test]
async fn a_closed_stderr_does_not_stop_the_proxy() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let conf = tempfile::tempdir().unwrap();
    let session = conf.path().join("session");
    let mut child = recording_proxy(&pki, conf.path(), &session, "--no-tui");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("proxy listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no address announced"
        );
    }
    let addr: std::net::SocketAddr = line
        .trim()
        .trim_start_matches("mcptap: proxy listening on http://")
        .parse()
        .unwrap();
    drop(stderr); // the reader goes away, as `head` does

    let (target, mut s) = client_through(addr, conf.path(), &up).await;
    let resp = s
        .send(request("POST", &target, "/echo", "{}"))
        .await
        .unwrap();
    assert_eq!(body_bytes(resp).await, "{}");
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(child.try_wait().unwrap().is_none(), "the proxy died");

    sigterm(&child);
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(st.success(), "{st:?}");
    let har = std::fs::read_to_string(session.join("session.har")).unwrap();
    assert!(har.contains("/echo"), "{har}");
}

/// `-k` warns at start, and every flow whose upstream certificate went unverified says so in
/// the journal and the HAR; without `-k` no flow is marked.
#[tokio::test]
async fn ssl_insecure_warns_and_marks_the_flows_it_affected() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    for insecure in [true, false] {
        let conf = tempfile::tempdir().unwrap();
        let session = conf.path().join("session");
        let flag = if insecure { "-k" } else { "--no-tui" };
        let mut child = recording_proxy(&pki, conf.path(), &session, flag);
        let (addr, banner) = listening_addr(&mut child);
        assert_eq!(
            banner.contains("WARNING: -k/--ssl-insecure: upstream certificates are not verified"),
            insecure,
            "{banner}"
        );
        let (target, mut s) = client_through(addr, conf.path(), &up).await;
        let resp = s
            .send(request("POST", &target, "/echo", "{}"))
            .await
            .unwrap();
        assert_eq!(body_bytes(resp).await, "{}");
        drop(s);
        sigterm(&child);
        let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(st.success(), "{st:?}");
        let journal = std::fs::read_to_string(session.join("journal.jsonl")).unwrap();
        let flow: serde_json::Value = journal
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["type"] == "completed")
            .expect("a completed flow")["flow"]
            .clone();
        assert_eq!(
            flow["upstream_tls"]["unverified"]
                .as_bool()
                .unwrap_or(false),
            insecure,
            "{flow}"
        );
        let har: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(session.join("session.har")).unwrap())
                .unwrap();
        let entry = &har["log"]["entries"][0];
        assert_eq!(
            entry["_mcptap"]["upstream_tls"]["unverified"]
                .as_bool()
                .unwrap_or(false),
            insecure,
            "{entry}"
        );
    }
}

/// Credentials given on the command line are recorded redacted: in the journal's first line,
/// in `session.har` and in `mcptap export` output, only their markers.
#[tokio::test]
async fn command_line_credentials_never_reach_a_saved_file() {
    let conf = tempfile::tempdir().unwrap();
    let session = conf.path().join("session");
    let mut child = mcptap()
        .args([
            "proxy",
            "--no-tui",
            "-p",
            "0",
            "--proxy-auth",
            "alice:S3cretProxyPw",
            "--upstream-proxy=http://bob:Hunter2UpstreamPw@127.0.0.1:9",
            "--confdir",
        ])
        .arg(conf.path())
        .arg("-w")
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listening_addr(&mut child);
    sigterm(&child);
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(st.success(), "{st:?}");
    let export = mcptap()
        .args(["export", "-o", "-"])
        .arg(&session)
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let journal = std::fs::read_to_string(session.join("journal.jsonl")).unwrap();
    let har = std::fs::read_to_string(session.join("session.har")).unwrap();
    let exported = String::from_utf8(export.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    let har_argv = serde_json::from_str::<serde_json::Value>(&har).unwrap()["log"]["_mcptap"]
        ["session"]["argv"]
        .clone();
    let export_argv = serde_json::from_str::<serde_json::Value>(&exported).unwrap()["log"]
        ["_mcptap"]["session"]["argv"]
        .clone();
    for (name, text, argv) in [
        ("journal", &journal, &first["argv"]),
        ("session.har", &har, &har_argv),
        ("export", &exported, &export_argv),
    ] {
        for secret in ["S3cretProxyPw", "Hunter2UpstreamPw"] {
            assert!(!text.contains(secret), "{secret} in {name}: {text}");
        }
        // The markers are there, with the fingerprints of what they replace.
        let argv = argv.to_string();
        for secret in ["S3cretProxyPw", "Hunter2UpstreamPw"] {
            assert!(
                argv.contains(&mcptap_flow::redact::fingerprint(secret)),
                "{name}: no fingerprint of {secret} in {argv}"
            );
        }
        assert!(argv.contains("alice:[redacted sha256:"), "{name}: {argv}");
    }
}

/// Out-of-range durations and sizes are usage errors (exit 2) naming the option, never a panic.
#[test]
fn out_of_range_durations_and_sizes_are_usage_errors_not_panics() {
    let conf = tempfile::tempdir().unwrap();
    for (opt, value) in [
        ("--shutdown-deadline", "1e300"),
        ("--shutdown-deadline", "-1"),
        ("--shutdown-deadline", "inf"),
        ("--body-limit", "1e300"),
        ("--body-limit", "99999999999999999999999g"),
    ] {
        let out = mcptap()
            .args([
                "proxy",
                "--no-save",
                "-p",
                "0",
                &format!("{opt}={value}"),
                "--confdir",
            ])
            .arg(conf.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{opt} {value}: {err}");
        assert!(err.contains(opt) && !err.contains("panicked"), "{err}");
    }
}

/// A session that cannot be read is reported with the OS's reason, not as "a directory without
/// journal.jsonl". (Tests run as root, which reads any file whatever its mode: these are the
/// failures root meets too.)
#[test]
fn an_unreadable_session_is_reported_with_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    // journal.jsonl is a directory.
    let a = dir.path().join("a");
    std::fs::create_dir_all(a.join("journal.jsonl")).unwrap();
    // journal.jsonl is a symlink loop.
    let b = dir.path().join("b");
    std::fs::create_dir(&b).unwrap();
    std::os::unix::fs::symlink("journal.jsonl", b.join("journal.jsonl")).unwrap();
    // The session's parent is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let c = file.join("session");
    for (session, os_error) in [
        (&a, "os error 21"),
        (&b, "os error 40"),
        (&c, "os error 20"),
    ] {
        for cmd in [&["export", "-o", "-"][..], &["analyze"][..]] {
            let out = mcptap().args(cmd).arg(session).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{session:?}: {out:?}");
            assert!(
                err.contains(os_error) && !err.contains("without"),
                "{cmd:?} {session:?}: {err}"
            );
        }
    }
}

/// Unmounts a test's filesystem, even when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk (a 64 KiB tmpfs): the exit message counts the flows that were not recorded,
/// exactly as many as the journal lacks, and never calls the journal intact; no session.har
/// silently holds part of the session.
#[tokio::test]
async fn a_full_disk_counts_the_flows_not_recorded_and_never_says_intact() {
    let pki = TestPki::new();
    let up = Upstream::https(&pki, &[b"http/1.1"]).await;
    let conf = tempfile::tempdir().unwrap();
    let mnt = conf.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("SKIPPED: cannot mount a 64 KiB tmpfs to fill (needs root): {other:?}");
            return;
        }
    }
    let _unmount = Unmount(mnt.clone());
    let session = mnt.join("session");
    let mut child = mcptap()
        .args([
            "proxy",
            "--no-tui",
            "-p",
            "0",
            "--no-system-roots",
            "--upstream-ca",
        ])
        .arg(pki.ca_path())
        .arg("--confdir")
        .arg(conf.path())
        .arg("-w")
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        if let Some(a) = line.strip_prefix("mcptap: proxy listening on http://") {
            break a.trim().parse().unwrap();
        }
    };
    let (target, mut s) = client_through(addr, conf.path(), &up).await;
    let (small, big) = (10, 3);
    for i in 0..small + big {
        let path = if i < small { "/small" } else { "/big?n=300000" };
        let resp = s.send(request("GET", &target, path, "")).await.unwrap();
        body_bytes(resp).await;
        // One flow per journal batch, so that the count can be exact.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
    sigterm(&child);
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let err = reader.join().unwrap();
    assert!(st.success(), "{st:?}: {err}");

    let recorded = finished_flows(&session).len();
    let total = small + big;
    let lost = total - recorded;
    assert!(
        lost >= big,
        "the disk never filled: {recorded} recorded\n{err}"
    );
    assert!(
        err.contains("recording failed, traffic still flows"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{lost} of {total} flows were not recorded")),
        "{lost} lost: {err}"
    );
    assert!(
        err.contains(&format!("{lost} of these flows were not recorded")),
        "{err}"
    );
    assert!(!err.contains("intact"), "{err}");
    assert!(!session.join("session.har").exists());
}

/// Every started flow ends in the journal and in the summary: one whose client gave up before
/// the response head, and one still waiting when mcptap was stopped. After that clean stop,
/// export never speaks of a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_without_an_answer_are_ended_recorded_and_counted_at_a_clean_stop() {
    use tokio::io::AsyncWriteExt;
    // An upstream that reads requests and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let conf = tempfile::tempdir().unwrap();
    let session = conf.path().join("session");
    let mut child = mcptap()
        .args([
            "proxy",
            "-p",
            "0",
            "--shutdown-deadline",
            "0.3",
            "--confdir",
        ])
        .arg(conf.path())
        .arg("-w")
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: std::net::SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no address");
        if let Some(a) = line
            .trim()
            .strip_prefix("mcptap: proxy listening on http://")
        {
            break a.parse().unwrap();
        }
    };
    let get = |path: &str| format!("GET http://{up}{path} HTTP/1.1\r\nHost: {up}\r\n\r\n");
    let mut gives_up = tokio::net::TcpStream::connect(addr).await.unwrap();
    gives_up
        .write_all(get("/gives-up").as_bytes())
        .await
        .unwrap();
    let mut waits = tokio::net::TcpStream::connect(addr).await.unwrap();
    waits.write_all(get("/waits").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(gives_up);
    tokio::time::sleep(Duration::from_millis(300)).await;

    sigterm(&child);
    let (status, err) = tokio::task::spawn_blocking(move || {
        let mut err = String::new();
        stderr.read_to_string(&mut err).unwrap();
        (child.wait().unwrap(), err)
    })
    .await
    .unwrap();
    drop(waits);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("mcptap: 2 flows (2 aborted, 0 failed)"),
        "{err}"
    );

    let ends: Vec<(String, String)> = finished_flows(&session)
        .into_iter()
        .map(|v| {
            (
                v["flow"]["request"]["url"].as_str().unwrap().to_owned(),
                v["flow"]["error"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            (
                format!("http://{up}/gives-up"),
                "client_disconnected".to_owned()
            ),
            (format!("http://{up}/waits"), "shutdown".to_owned()),
        ]
    );

    let err = export(&session, &conf.path().join("out.har"));
    assert!(err.contains("wrote 2 entries"), "{err}");
    assert!(
        !err.contains("crash") && !err.contains("without an end"),
        "{err}"
    );
}

/// Header values that are not UTF-8 (obs-text: Latin-1 `é` and a 0xFF byte) go through the
/// real proxy byte-exact both ways, and the journal, the HAR written at shutdown and a read-back
/// hold the exact bytes; a secret in such a value is in no saved file, as text or as bytes.
#[tokio::test]
async fn header_values_that_are_not_utf8_are_recorded_byte_exact() {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const REQ_VALUE: &[u8] = b"caf\xe9\xff";
    const RESP_VALUE: &[u8] = b"na\xefve \xff";
    const SECRET: &[u8] = b"Bearer s3cr\xe9t-token-value";

    // The upstream: a raw socket that keeps the request head it got and answers with a
    // response header that is not UTF-8 either.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        let _ = got_tx.send(head);
        let mut resp = b"HTTP/1.1 200 OK\r\nX-Resp: ".to_vec();
        resp.extend_from_slice(RESP_VALUE);
        resp.extend_from_slice(b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let _ = s.write_all(&resp).await;
        let _ = s.shutdown().await;
    });

    let conf = tempfile::tempdir().unwrap();
    let session = conf.path().join("session");
    let mut child = mcptap()
        .args(["proxy", "--no-tui", "-p", "0", "--confdir"])
        .arg(conf.path())
        .arg("-w")
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _) = listening_addr(&mut child);

    let mut req = format!("GET http://{up}/latin HTTP/1.1\r\nHost: {up}\r\nX-Latin: ").into_bytes();
    req.extend_from_slice(REQ_VALUE);
    req.extend_from_slice(b"\r\nAuthorization: ");
    req.extend_from_slice(SECRET);
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&req).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(resp.starts_with(b"HTTP/1.1 200"), "{resp:?}");
    assert!(
        contains(&resp, RESP_VALUE),
        "the client got the exact bytes"
    );
    let head = tokio::time::timeout(Duration::from_secs(5), got_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        contains(&head, REQ_VALUE),
        "the upstream got the exact bytes"
    );
    assert!(contains(&head, SECRET), "the upstream got the exact secret");

    sigterm(&child);
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(st.success(), "{st:?}");

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let journal = std::fs::read_to_string(session.join("journal.jsonl")).unwrap();
    let har = std::fs::read_to_string(session.join("session.har")).unwrap();
    for (name, text) in [("journal", &journal), ("session.har", &har)] {
        for raw in [REQ_VALUE, RESP_VALUE] {
            assert!(text.contains(&b64(raw)), "{name} lacks {raw:?}: {text}");
        }
        assert!(
            !text.contains("s3cr"),
            "the secret's text in {name}: {text}"
        );
        assert!(!text.contains(&b64(SECRET)), "the secret's bytes in {name}");
    }
    // Other HAR readers see a plain string in `value`.
    let doc: serde_json::Value = serde_json::from_str(&har).unwrap();
    let entry = &doc["log"]["entries"][0];
    let latin = entry["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case("x-latin"))
        .unwrap();
    assert_eq!(latin["value"], "caf\u{fffd}\u{fffd}");
    assert_eq!(latin["_mcptapValueBase64"], b64(REQ_VALUE));

    // Read back, from the journal and from the HAR.
    let exact = |f: &mcptap_flow::Flow| {
        let raw = |h: &mcptap_flow::Headers, name: &str| {
            h.iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| h.raw().map(<[u8]>::to_vec))
        };
        (
            raw(&f.request.headers, "x-latin"),
            raw(&f.response.as_ref().unwrap().headers, "x-resp"),
            raw(&f.request.headers, "authorization"),
        )
    };
    let want = (Some(REQ_VALUE.to_vec()), Some(RESP_VALUE.to_vec()), None);
    let loaded = mcptap_store::load(&session).unwrap();
    assert_eq!(loaded.kind, mcptap_store::SourceKind::Journal);
    assert_eq!(exact(&loaded.flows[0]), want, "from the journal");
    let from_har = mcptap_store::load(&session.join("session.har")).unwrap();
    assert_eq!(exact(&from_har.flows[0]), want, "from the HAR");
    assert_eq!(from_har.flows, loaded.flows);
}
