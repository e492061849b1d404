//! The real `mcptap` binary: the CA command, the port-in-use message, the line view and a clean
//! exit on SIGTERM.

use crate::common::client::{body_bytes, request, tls_client, Alpn};
use crate::common::pki::{read_cert_der, TestPki};
use crate::common::upstream::Upstream;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mcptap() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcptap"));
    c.env_remove("MCPTAP_HOME").env("NO_COLOR", "1");
    c
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
    assert_eq!(out.status.code(), Some(2));
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
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line
            .trim()
            .strip_prefix("mcptap: proxy listening on http://")
        {
            addr = Some(rest.parse::<std::net::SocketAddr>().unwrap());
        }
    }
    let addr = addr.expect("the proxy announces its address");
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
    let mut req = request("POST", &target, "/echo", "{}");
    req.headers_mut()
        .insert("authorization", "Bearer raw-token-value".parse().unwrap());
    let resp = s.send(req).await.unwrap();
    assert_eq!(body_bytes(resp).await, "{}");
    drop(s);

    // SIGTERM: graceful shutdown, exit status 0.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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
}
