//! The environment that sends a program's traffic through mcptap and makes it trust mcptap's
//! CA. `mcptap run` sets it on its child; `mcptap env` prints it for a shell
//! (`eval "$(mcptap env)"`).
//!
//! The variables are the ones HTTP Toolkit's terminal interception sets, so tools that already
//! work there work here:
//!
//! - proxy: `HTTPS_PROXY`/`HTTP_PROXY` (both cases), `WS_PROXY`, `WSS_PROXY`,
//!   `GLOBAL_AGENT_HTTP_PROXY`, `npm_config_proxy`, `npm_config_https_proxy`; `NO_PROXY` and
//!   `no_proxy` lose their loopback entries (local MCP servers are what one debugs most).
//! - trust that *adds* to a program's store: `NODE_EXTRA_CA_CERTS` names mcptap's CA.
//! - trust that *replaces* the store: `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`,
//!   `GIT_SSL_CAINFO`, `DENO_CERT`, `CARGO_HTTP_CAINFO`, `AWS_CA_BUNDLE` name a bundle of the
//!   system roots **plus** mcptap's CA (`<confdir>/run/ca-bundle.pem`): the CA alone would break
//!   every HTTPS connection that does not go through mcptap.
//! - Node: `NODE_USE_ENV_PROXY=1` (Node ≥ 22.21 / 24 then proxies `fetch` itself) and
//!   `NODE_OPTIONS=--require <confdir>/run/node-preload.cjs` for older Node, whose built-in
//!   `fetch` ignores every proxy variable (see `preload/node-preload.cjs`).
//! - `MCPTAP=1` and `MCPTAP_PROXY=<url>`, so scripts can tell.
//!
//! Files are written whole and atomically (temp file, `sync_data`, rename), and only when their
//! content changes, so concurrent runs never see half a bundle.

use crate::args::{EnvArgs, Shell};
use crate::error::{input, usage, ErrorKind, ResultExt as _};
use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write as _;
use std::net::{IpAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The Node preload script, written to [`Files::preload`].
pub const NODE_PRELOAD: &str = include_str!("preload/node-preload.cjs");

/// Variables that name the proxy.
pub const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "WS_PROXY",
    "WSS_PROXY",
    "GLOBAL_AGENT_HTTP_PROXY",
    "npm_config_proxy",
    "npm_config_https_proxy",
];

/// Variables that replace a program's trust store: they name the bundle.
pub const BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "DENO_CERT",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
];

/// Variables that also replace a trust store, redirected to the bundle only when the
/// environment already sets them (pip, httplib2, gcloud, gRPC, Nix).
pub const BUNDLE_VARS_IF_SET: &[&str] = &[
    "PIP_CERT",
    "HTTPLIB2_CA_CERTS",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NIX_SSL_CERT_FILE",
];

/// Where the system's roots are on common systems (the list openssl-probe walks), first match
/// wins.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
    "/usr/local/etc/openssl/cert.pem",
    "/opt/homebrew/etc/openssl@3/cert.pem",
];

/// Directories of PEM files, used when no bundle file exists.
const SYSTEM_DIRS: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/system/etc/security/cacerts",
];

/// Reads a variable of the environment being extended.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process's own environment, as a [`Lookup`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The files the variables point at, ready on disk.
#[derive(Debug, Clone)]
pub struct Files {
    /// mcptap's CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// System roots plus mcptap's CA.
    pub bundle: PathBuf,
    /// How many system roots went into the bundle.
    pub system_roots: usize,
    /// Where they came from.
    pub roots_from: Vec<PathBuf>,
    /// The file `NODE_EXTRA_CA_CERTS` names: the CA, or the user's previous file plus the CA.
    pub node_extra_ca: PathBuf,
    /// The Node preload script.
    pub preload: PathBuf,
}

/// Writes the bundle and the preload under `<confdir>/run/`, and the Node extra-CA file when
/// `NODE_EXTRA_CA_CERTS` already names another file. Says on stderr what it had to work around.
pub fn prepare(confdir: &Path, ca_cert: &Path, lookup: Lookup<'_>) -> anyhow::Result<Files> {
    let dir = confdir.join("run");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_pem = std::fs::read(ca_cert)
        .with_context(|| format!("cannot read the CA certificate {}", ca_cert.display()))
        .kind(ErrorKind::Input)?;
    let ca_ders = pem_certs(&ca_pem);
    if ca_ders.is_empty() {
        return Err(input(format!("{} holds no certificate", ca_cert.display())));
    }

    let bundle = dir.join("ca-bundle.pem");
    let (roots, roots_from) = system_roots(lookup, &bundle);
    if roots.is_empty() {
        say!(
            "mcptap: warning: no system root certificates found (set SSL_CERT_FILE to your \
             bundle); {} holds only mcptap's CA, so HTTPS that bypasses mcptap will fail in \
             programs that use it",
            bundle.display()
        );
    }
    let mut seen = HashSet::new();
    let mut text = String::new();
    text.push_str("# mcptap: the system's root certificates plus mcptap's CA (the last one).\n");
    text.push_str("# Written by `mcptap run` and `mcptap env`; edits are overwritten.\n");
    let mut system_roots = 0;
    for der in &roots {
        if !ca_ders.contains(der) && seen.insert(der.as_ref().to_vec()) {
            text.push_str(&mcptap_ca::pem_encode("CERTIFICATE", der));
            system_roots += 1;
        }
    }
    for der in &ca_ders {
        text.push_str(&mcptap_ca::pem_encode("CERTIFICATE", der));
    }
    write_atomic(&bundle, text.as_bytes())?;

    let preload = dir.join("node-preload.cjs");
    write_atomic(&preload, NODE_PRELOAD.as_bytes())?;

    let node_extra_ca = node_extra_ca(&dir, ca_cert, &ca_pem, lookup)?;
    Ok(Files {
        ca_cert: ca_cert.to_path_buf(),
        bundle,
        system_roots,
        roots_from,
        node_extra_ca,
        preload,
    })
}

/// `NODE_EXTRA_CA_CERTS` takes one file: keep a CA the user already trusts that way.
fn node_extra_ca(
    dir: &Path,
    ca_cert: &Path,
    ca_pem: &[u8],
    lookup: Lookup<'_>,
) -> anyhow::Result<PathBuf> {
    let combined = dir.join("node-extra-ca.pem");
    let Some(prev) = lookup("NODE_EXTRA_CA_CERTS").filter(|v| !v.is_empty()) else {
        return Ok(ca_cert.to_path_buf());
    };
    let prev = PathBuf::from(prev);
    if prev == ca_cert || prev == combined {
        return Ok(prev);
    }
    match std::fs::read(&prev) {
        Ok(mut text) => {
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(ca_pem);
            write_atomic(&combined, &text)?;
            Ok(combined)
        }
        Err(e) => {
            say!(
                "mcptap: warning: NODE_EXTRA_CA_CERTS={} cannot be read ({e}); Node will trust \
                 mcptap's CA instead",
                prev.display()
            );
            Ok(ca_cert.to_path_buf())
        }
    }
}

/// The system's root certificates (DER) and the files they came from, as OpenSSL finds them:
/// `SSL_CERT_FILE` or the first bundle of [`SYSTEM_BUNDLES`], plus the directories of
/// `SSL_CERT_DIR` (or, when no bundle file exists, the first of [`SYSTEM_DIRS`]). mcptap's own
/// bundle is never read back.
fn system_roots(
    lookup: Lookup<'_>,
    own_bundle: &Path,
) -> (Vec<CertificateDer<'static>>, Vec<PathBuf>) {
    let mut files: Vec<PathBuf> = Vec::new();
    let env_file = lookup("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p != own_bundle && p.is_file());
    let file = env_file.or_else(|| {
        SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    let env_dirs: Vec<PathBuf> = lookup("SSL_CERT_DIR")
        .map(|v| std::env::split_paths(&v).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    let no_file = file.is_none();
    files.extend(file);
    for d in &env_dirs {
        files.extend(dir_files(d));
    }
    if no_file && env_dirs.is_empty() {
        if let Some(d) = SYSTEM_DIRS.iter().map(Path::new).find(|p| p.is_dir()) {
            files.extend(dir_files(d));
        }
    }
    let mut certs = Vec::new();
    let mut used = Vec::new();
    for f in files {
        let Ok(data) = std::fs::read(&f) else {
            continue;
        };
        let found = pem_certs(&data);
        if !found.is_empty() {
            certs.extend(found);
            used.push(f);
        }
    }
    (certs, used)
}

fn dir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every certificate in PEM data (other blocks and text between them are skipped).
fn pem_certs(data: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &data[..])
        .filter_map(Result::ok)
        .collect()
}

/// Writes `path` whole and atomically ([`crate::files::write_file`]), unless it already holds
/// exactly `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|cur| cur == bytes) {
        return Ok(());
    }
    crate::files::write_file(path, bytes)
}

/// One change to the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set the variable.
    Set(&'static str, String),
    /// Remove the variable.
    Unset(&'static str),
}

/// What to change, and what was taken out of `NO_PROXY`.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In a stable order.
    pub changes: Vec<Change>,
    /// `NO_PROXY` / `no_proxy` entries removed because they cover loopback.
    pub no_proxy_removed: Vec<String>,
    /// `NO_PROXY` / `no_proxy` entries kept: requests to those hosts still go around mcptap.
    pub no_proxy_kept: Vec<String>,
}

impl Plan {
    /// The line to show on stderr about `NO_PROXY`, if anything was removed.
    pub fn no_proxy_note(&self) -> Option<String> {
        if self.no_proxy_removed.is_empty() {
            return None;
        }
        Some(format!(
            "mcptap: removed {} from NO_PROXY/no_proxy so that local servers go through mcptap too",
            self.no_proxy_removed.join(", ")
        ))
    }

    /// The warning to show when `NO_PROXY` still sends some hosts around the proxy.
    pub fn no_proxy_bypass_note(&self) -> Option<String> {
        no_proxy_bypass(&self.no_proxy_kept).map(|w| format!("mcptap: warning: {w}"))
    }
}

/// Says that `NO_PROXY` entries send their hosts around mcptap (an MCP server among them is
/// then never seen), naming them; `None` when there are none.
pub fn no_proxy_bypass(kept: &[String]) -> Option<String> {
    if kept.is_empty() {
        return None;
    }
    Some(format!(
        "NO_PROXY still lists {}: requests to those hosts bypass mcptap and will not show \
         (if your MCP server or its authorization server is one, unset NO_PROXY for the client)",
        kept.join(", ")
    ))
}

/// The `NO_PROXY` entries of this process's environment that send hosts other than loopback
/// around the proxy: what a client started from the same shell would bypass.
pub fn no_proxy_bypassed_here() -> Vec<String> {
    let get = |name: &str| std::env::var(name).unwrap_or_default();
    split_no_proxy(&[get("NO_PROXY"), get("no_proxy")]).0
}

/// Options of [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Add the preload to `NODE_OPTIONS`.
    pub node_preload: bool,
}

/// The changes that send a program through `proxy_url`, given the environment it would
/// otherwise get (`lookup`).
pub fn plan(proxy_url: &str, files: &Files, opts: PlanOptions, lookup: Lookup<'_>) -> Plan {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut changes = Vec::new();
    for var in PROXY_VARS {
        changes.push(Change::Set(var, proxy_url.to_owned()));
    }

    let (kept, removed) = split_no_proxy(&[get("NO_PROXY"), get("no_proxy")]);
    for var in ["NO_PROXY", "no_proxy"] {
        changes.push(if kept.is_empty() {
            Change::Unset(var)
        } else {
            Change::Set(var, kept.join(","))
        });
    }

    changes.push(Change::Set(
        "NODE_EXTRA_CA_CERTS",
        path(&files.node_extra_ca),
    ));
    changes.push(Change::Set("NODE_USE_ENV_PROXY", "1".to_owned()));
    if opts.node_preload {
        changes.push(Change::Set(
            "NODE_OPTIONS",
            node_options_with(&get("NODE_OPTIONS"), &files.preload),
        ));
    }
    for var in BUNDLE_VARS {
        changes.push(Change::Set(var, path(&files.bundle)));
    }
    for var in BUNDLE_VARS_IF_SET {
        if lookup(var).is_some_and(|v| !v.is_empty()) {
            changes.push(Change::Set(var, path(&files.bundle)));
        }
    }
    changes.push(Change::Set("MCPTAP", "1".to_owned()));
    changes.push(Change::Set("MCPTAP_PROXY", proxy_url.to_owned()));
    Plan {
        changes,
        no_proxy_removed: removed,
        no_proxy_kept: kept,
    }
}

/// `existing` plus `--require "<preload>"`, unless it is already there. Node parses
/// `NODE_OPTIONS` like a shell would a double-quoted word: `\` escapes `"` and `\`.
pub fn node_options_with(existing: &str, preload: &Path) -> String {
    let p = preload.to_string_lossy();
    let mut quoted = String::with_capacity(p.len() + 2);
    quoted.push('"');
    for c in p.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    let flag = format!("--require {quoted}");
    let existing = existing.trim();
    if existing.contains(&flag) {
        existing.to_owned()
    } else if existing.is_empty() {
        flag
    } else {
        format!("{existing} {flag}")
    }
}

/// Splits the entries of `NO_PROXY`-style lists into those kept and those removed because they
/// make loopback bypass the proxy. Duplicates are dropped, order kept.
pub fn split_no_proxy(lists: &[String]) -> (Vec<String>, Vec<String>) {
    let mut kept: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for list in lists {
        for entry in list.split(|c: char| c == ',' || c.is_whitespace()) {
            let entry = entry.trim();
            if entry.is_empty() || kept.iter().chain(&removed).any(|e| e == entry) {
                continue;
            }
            if covers_loopback(entry) {
                removed.push(entry.to_owned());
            } else {
                kept.push(entry.to_owned());
            }
        }
    }
    (kept, removed)
}

/// Whether a `NO_PROXY` entry matches a loopback destination: `*`, `localhost` and its
/// subdomains, loopback addresses, `127.*`-style wildcards and CIDR ranges containing
/// 127.0.0.1 or ::1 — with or without a port.
pub fn covers_loopback(entry: &str) -> bool {
    let e = entry.trim().to_ascii_lowercase();
    if e == "*" {
        return true;
    }
    // Drop a port: `host:port`, `[v6]:port` (a bare IPv6 address has several colons).
    let host = if let Some(rest) = e.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest).to_owned()
    } else if e.matches(':').count() == 1 {
        e.split(':').next().unwrap_or(&e).to_owned()
    } else {
        e.clone()
    };
    let host = host
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .to_owned();
    if host == "localhost" || host.ends_with(".localhost") || host == "localhost.localdomain" {
        return true;
    }
    if host == "127.*" || (host.starts_with("127.") && host.ends_with('*')) {
        return true;
    }
    if let Some((addr, bits)) = host.split_once('/') {
        let (Ok(addr), Ok(bits)) = (addr.parse::<IpAddr>(), bits.parse::<u32>()) else {
            return false;
        };
        return cidr_contains(addr, bits, "127.0.0.1".parse().ok())
            || cidr_contains(addr, bits, "::1".parse().ok());
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn cidr_contains(net: IpAddr, bits: u32, ip: Option<IpAddr>) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), Some(IpAddr::V4(i))) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), Some(IpAddr::V6(i))) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The changes as a script for `shell`, with a comment saying what it does.
pub fn render(shell: Shell, proxy_url: &str, plan: &Plan) -> String {
    let mut out = format!(
        "# mcptap: programs started from this shell go through {proxy_url} and trust mcptap's CA\n"
    );
    for change in &plan.changes {
        let line = match (shell, change) {
            (Shell::Bash | Shell::Zsh, Change::Set(k, v)) => format!("export {k}={}", sh_quote(v)),
            (Shell::Bash | Shell::Zsh, Change::Unset(k)) => format!("unset {k}"),
            (Shell::Fish, Change::Set(k, v)) => format!("set -gx {k} {}", fish_quote(v)),
            (Shell::Fish, Change::Unset(k)) => format!("set -e {k}"),
            (Shell::Powershell, Change::Set(k, v)) => format!("$env:{k} = {}", ps_quote(v)),
            (Shell::Powershell, Change::Unset(k)) => {
                format!("Remove-Item Env:{k} -ErrorAction SilentlyContinue")
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// POSIX shells: single quotes, each `'` as `'\''`.
pub fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// fish: single quotes, in which only `\'` and `\\` are escapes.
pub fn fish_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', r"\\").replace('\'', r"\'"))
}

/// PowerShell: single quotes, each quote doubled (PowerShell also takes the typographic
/// single quotes as quotes).
pub fn ps_quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Normalises `--proxy`: `host:port` gets `http://`; only plain-HTTP proxy URLs are accepted.
pub fn proxy_url(arg: &str) -> anyhow::Result<String> {
    let url = if arg.contains("://") {
        arg.to_owned()
    } else {
        format!("http://{arg}")
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(usage(format!(
            "--proxy {arg:?}: mcptap listens for plain http:// proxy requests"
        )));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    if hostport.is_empty() {
        return Err(usage(format!("--proxy {arg:?}: no host")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether something accepts TCP connections at the proxy URL's address (best effort).
fn listening(url: &str) -> Option<bool> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    let hostport = if hostport.rsplit(':').next()?.parse::<u16>().is_ok() {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let addr = hostport.to_socket_addrs().ok()?.next()?;
    Some(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
}

/// Runs `mcptap env`.
pub fn main(args: EnvArgs) -> anyhow::Result<ExitCode> {
    let confdir = args.confdir.resolve()?;
    let url = match &args.proxy {
        Some(p) => proxy_url(p)?,
        None => format!("http://127.0.0.1:{}", args.listen_port),
    };
    let ca = crate::ca::load(&confdir)?;
    let files = prepare(&confdir, &ca.cert_path(), &process_env)?;
    let plan = plan(
        &url,
        &files,
        PlanOptions {
            node_preload: !args.no_node_preload,
        },
        &process_env,
    );
    if let Some(note) = plan.no_proxy_note() {
        say!("{note}");
    }
    if let Some(note) = plan.no_proxy_bypass_note() {
        say!("{note}");
    }
    if listening(&url) == Some(false) {
        say!(
            "mcptap: note: nothing is listening on {url} yet; start it with `mcptap proxy` \
             (or use `mcptap run -- CMD`, which starts its own)"
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(render(args.shell, &url, &plan).as_bytes())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_round_trips_through_rustls_pemfile() {
        for len in [0usize, 1, 2, 3, 4, 47, 48, 49, 100, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = mcptap_ca::pem_encode("CERTIFICATE", &der);
            let back = pem_certs(pem.as_bytes());
            if len == 0 {
                continue;
            }
            assert_eq!(back.len(), 1, "{pem}");
            assert_eq!(back[0].as_ref(), &der[..], "length {len}");
            assert!(pem.lines().all(|l| l.len() <= 64));
        }
    }

    #[test]
    fn loopback_entries_are_recognised() {
        for e in [
            "localhost",
            "LOCALHOST",
            ".localhost",
            "*.localhost",
            "foo.localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.0.0.1:3000",
            "127.1.2.3",
            "127.*",
            "127.0.0.*",
            "127.0.0.0/8",
            "0.0.0.0/0",
            "::1",
            "[::1]",
            "[::1]:8080",
            "::1/128",
            "*",
        ] {
            assert!(covers_loopback(e), "{e} covers loopback");
        }
        for e in [
            "example.com",
            ".corp.internal",
            "10.0.0.0/8",
            "192.168.1.1",
            "localhostess.com",
            "::2",
            "fe80::/10",
            "169.254.169.254",
        ] {
            assert!(!covers_loopback(e), "{e} does not cover loopback");
        }
    }

    #[test]
    fn no_proxy_lists_are_merged_and_cleared_of_loopback() {
        let (kept, removed) = split_no_proxy(&[
            "localhost,127.0.0.1, .corp.example".to_owned(),
            "localhost ::1 metadata.internal".to_owned(),
        ]);
        assert_eq!(kept, [".corp.example", "metadata.internal"]);
        assert_eq!(removed, ["localhost", "127.0.0.1", "::1"]);
        let w = no_proxy_bypass(&kept).unwrap();
        assert!(w.contains(".corp.example, metadata.internal") && w.contains("bypass mcptap"));
        assert_eq!(no_proxy_bypass(&[]), None);
    }

    #[test]
    fn node_options_get_the_preload_once_and_quoted() {
        let p = Path::new("/tmp/it's a \"dir\"/node-preload.cjs");
        let once = node_options_with("--max-old-space-size=100", p);
        assert_eq!(
            once,
            r#"--max-old-space-size=100 --require "/tmp/it's a \"dir\"/node-preload.cjs""#
        );
        assert_eq!(node_options_with(&once, p), once);
        assert_eq!(
            node_options_with("", Path::new("/a/b.cjs")),
            r#"--require "/a/b.cjs""#
        );
    }

    #[test]
    fn quoting_per_shell() {
        let v = r"it's a \ path";
        assert_eq!(sh_quote(v), r"'it'\''s a \ path'");
        assert_eq!(fish_quote(v), r"'it\'s a \\ path'");
        assert_eq!(ps_quote(v), r"'it''s a \ path'");
        assert_eq!(ps_quote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
    }

    #[test]
    fn proxy_urls_are_normalised() {
        assert_eq!(
            proxy_url("127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            proxy_url("http://u:p@localhost:8080/").unwrap(),
            "http://u:p@localhost:8080"
        );
        assert!(proxy_url("https://127.0.0.1:8080").is_err());
        assert!(proxy_url("http://").is_err());
    }
}
