//! Raw arguments → validated configuration (ripgrep's `LowArgs` → `HiArgs`): everything a
//! proxy run needs, checked once, with the mode as an enum. [`crate::proxy`] and
//! [`crate::run`] only wire up what this hands them.

use crate::args::ProxyArgs;
use crate::error::{input, usage};
use mcptap_proxy::{ProxyConfig, UpstreamTrust};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How the proxy is reached (`-m/--mode`, mitmproxy's spelling).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// An explicit proxy: clients send it CONNECT and absolute-form requests.
    #[default]
    Regular,
    /// A reverse proxy in front of this upstream URL (`reverse:URL`, `mcptap reverse URL`).
    Reverse(String),
}

impl Mode {
    /// True in reverse mode.
    pub fn is_reverse(&self) -> bool {
        matches!(self, Mode::Reverse(_))
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "regular" => Ok(Mode::Regular),
            m => match m.strip_prefix("reverse:") {
                Some(url) if !url.is_empty() => Ok(Mode::Reverse(url.to_owned())),
                _ => Err(format!(
                    "unknown --mode {m:?}: use regular or reverse:URL (for upstream:URL use \
                     --upstream-proxy)"
                )),
            },
        }
    }
}

/// As `--mode` spells it, and as a session records it (`SessionMeta::mode`).
impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Regular => f.write_str("regular"),
            Mode::Reverse(url) => write!(f, "reverse:{url}"),
        }
    }
}

/// Validated configuration for a proxy run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Engine settings.
    pub proxy: ProxyConfig,
    /// mcptap's configuration directory (CA lives here).
    pub confdir: PathBuf,
    /// No line per flow (`-q`, like mitmdump).
    pub quiet: bool,
    /// Reverse mode: certificate chain and key files to serve instead of minted leaves.
    pub listener_cert: Option<(PathBuf, PathBuf)>,
    /// Where to record the session (`None`: not recorded).
    pub save: Option<SaveTo>,
    /// Keep secrets in clear in the recording.
    pub keep_secrets: bool,
}

/// Where a session is recorded.
#[derive(Debug, Clone)]
pub enum SaveTo {
    /// Exactly this directory (`-w`).
    Dir(PathBuf),
    /// A new timestamped directory under this one.
    Under(PathBuf),
}

impl SaveTo {
    /// Where `--no-save` and `-w DIR` say to record: nowhere, `DIR`, or a new directory under
    /// `<confdir>/sessions`.
    pub fn choose(no_save: bool, save: Option<&Path>, confdir: &Path) -> Option<SaveTo> {
        if no_save {
            return None;
        }
        Some(match save {
            Some(d) => SaveTo::Dir(d.to_owned()),
            None => SaveTo::Under(confdir.join("sessions")),
        })
    }
}

impl RunConfig {
    /// Validates raw arguments; every error is a usage error but a missing `--upstream-ca`
    /// file (input).
    pub fn from_args(args: &ProxyArgs, quiet: bool) -> anyhow::Result<RunConfig> {
        let listen = SocketAddr::new(args.listen_host, args.listen_port);
        for pat in &args.ignore_hosts {
            if let Err(e) = regex::Regex::new(pat) {
                return Err(usage(format!(
                    "--ignore-hosts {pat:?} is not a valid regex: {e}"
                )));
            }
        }
        for f in &args.upstream_ca {
            if !f.is_file() {
                return Err(input(format!(
                    "--upstream-ca {}: no such file",
                    f.display()
                )));
            }
        }
        let upstream_proxy = match &args.upstream_proxy {
            Some(u) => Some(mcptap_proxy::UpstreamProxy::parse(u).map_err(usage)?),
            None => None,
        };
        let reverse = match &args.mode {
            Mode::Regular => {
                if !args.routes.is_empty() || args.rewrite_metadata || args.cert.is_some() {
                    return Err(usage(
                        "--route, --rewrite-metadata and --cert apply to reverse mode only",
                    ));
                }
                None
            }
            Mode::Reverse(url) => {
                let upstream = mcptap_proxy::reverse::parse_upstream(url).map_err(usage)?;
                let routes = args
                    .routes
                    .iter()
                    .map(|r| mcptap_proxy::reverse::parse_route(r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(usage)?;
                if args.proxy_auth.is_some() {
                    return Err(usage(
                        "--proxy-auth applies to the explicit proxy, not to reverse mode",
                    ));
                }
                Some(mcptap_proxy::reverse::ReverseConfig {
                    upstream,
                    routes,
                    rewrite_metadata: args.rewrite_metadata,
                })
            }
        };
        if let Some(auth) = &args.proxy_auth {
            if !auth.contains(':') {
                return Err(usage("--proxy-auth takes user:pass"));
            }
        }
        // Checked again here for configs built without clap (never a panic in from_secs_f64).
        let shutdown_deadline = crate::args::seconds(args.shutdown_deadline).ok_or_else(|| {
            usage(format!(
                "--shutdown-deadline {} is out of range (0 to {} seconds)",
                args.shutdown_deadline,
                crate::args::MAX_SECONDS
            ))
        })?;
        let confdir = args.confdir.resolve()?;
        Ok(RunConfig {
            proxy: ProxyConfig {
                listen,
                body_limit: args.body_limit,
                ignore_hosts: args.ignore_hosts.clone(),
                upstream_trust: UpstreamTrust {
                    extra_ca_files: args.upstream_ca.clone(),
                    insecure: args.ssl_insecure,
                    no_system_roots: args.no_system_roots,
                },
                shutdown_deadline,
                limits: mcptap_proxy::Limits {
                    connect: args.connect_timeout,
                    tls_handshake: args.tls_handshake_timeout,
                    response_head: args.response_timeout,
                    idle_body: args.idle_body_timeout,
                },
                upstream_proxy,
                reverse,
                proxy_auth: args.proxy_auth.clone(),
                inject_token: args.inject_token,
                inject_refresh: args.inject_refresh,
            },
            listener_cert: match (&args.cert, &args.key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => None,
            },
            save: SaveTo::choose(args.no_save, args.save.as_deref(), &confdir),
            keep_secrets: args.keep_secrets,
            confdir,
            quiet,
        })
    }

    /// The mode this configuration runs in, as a session records it.
    pub fn mode(&self) -> Mode {
        match &self.proxy.reverse {
            Some(r) => Mode::Reverse(r.upstream.to_string()),
            None => Mode::Regular,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_once_and_print_as_they_parse() {
        assert_eq!("regular".parse(), Ok(Mode::Regular));
        let m: Mode = "reverse:https://mcp.example".parse().unwrap();
        assert_eq!(m, Mode::Reverse("https://mcp.example".into()));
        assert_eq!(m.to_string(), "reverse:https://mcp.example");
        for bad in ["", "reverse:", "upstream:http://x", "Regular"] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
    }
}
