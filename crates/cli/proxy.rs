//! `mcptap proxy`: wires the validated [`RunConfig`] to the engine and a [`Sink`], prints what
//! a user must know at start, and stops cleanly on Ctrl-C/SIGTERM.

use crate::args::ProxyArgs;
use crate::error::{usage, ErrorKind, ResultExt as _};
use crate::sink::Sink;
use anyhow::Context as _;
use mcptap_proxy::{EventReceiver, Proxy, ProxyError};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// `mcptap probe` builds its proxy's configuration by hand from here.
pub use crate::config::{RunConfig, SaveTo};

/// Runs `mcptap proxy` until a signal arrives.
pub fn main(args: ProxyArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let config = RunConfig::from_args(&args, quiet)?;
    let rt = runtime()?;
    if crate::tuiview::wants_tui(&args, quiet) {
        rt.block_on(async { crate::tuiview::run_live(config, shutdown_signal()).await })?;
        return Ok(ExitCode::SUCCESS);
    }
    rt.block_on(async { run(config, shutdown_signal()).await })?;
    Ok(ExitCode::SUCCESS)
}

/// The multi-threaded runtime a proxy runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .kind(ErrorKind::Internal)
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called (inside a
/// tokio runtime), not when the future is first polled: a SIGTERM that arrives while the proxy
/// is still starting (just after it announced its address) then stops it cleanly, session
/// saved, instead of killing it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Some(mut one), None) | (None, Some(mut one)) => {
                    one.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Binds, serves until `signal`, drains, and flushes every recorded flow.
pub async fn run(
    config: RunConfig,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = start(&config, true).await?;
    let sink = started.serve(signal).await?;
    sink.finish();
    say!("mcptap: stopped");
    Ok(())
}

/// A proxy that is bound, with its session opened, not serving yet ([`start`]).
pub struct Started {
    /// The address actually bound (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The CA certificate clients must trust.
    pub ca_cert: PathBuf,
    /// The recorded session's directory, if the session is recorded.
    pub session_dir: Option<PathBuf>,
    proxy: Proxy,
    rx: EventReceiver,
    sink: Sink,
    /// The control file naming this session for `mcptap mcp`, removed when serving ends.
    _live: Option<crate::live::LiveGuard>,
}

/// Printed at start under `-k/--ssl-insecure`.
pub const SSL_INSECURE_WARNING: &str = "WARNING: -k/--ssl-insecure: upstream certificates are not \
    verified, so anyone on the network path could be answering instead of the server. Flows \
    over such connections are marked (upstream TLS `unverified`, [UPSTREAM CERT NOT VERIFIED: -k]).";

/// Printed at start under `--inject-refresh`.
pub const INJECT_REFRESH_WARNING: &str = "WARNING: --inject-refresh uses the client's refresh \
    token when its access token has expired. Servers that rotate refresh tokens then invalidate \
    the client's own copy (rotation-strict ones may revoke the whole token family): the client \
    may have to log in again after this session.";

/// Binds the listener, loads the CA and opens the session, printing what a user must know
/// (the open-proxy warning, where the session goes) and, when `announce`, how to point
/// clients at the proxy. `mcptap proxy` and `mcptap run` both start here.
pub async fn start(config: &RunConfig, announce: bool) -> anyhow::Result<Started> {
    let ca = crate::ca::load(&config.confdir)?;
    let certs: std::sync::Arc<dyn mcptap_proxy::CertSource> = match &config.listener_cert {
        Some((cert, key)) => {
            std::sync::Arc::new(crate::ca::FixedCert::load(cert, key).kind(ErrorKind::Input)?)
        }
        None => ca.clone(),
    };
    let (tx, rx) = mcptap_proxy::events::channel(mcptap_proxy::events::DEFAULT_CAPACITY);
    let listen = config.proxy.listen;
    let reverse = config.proxy.reverse.clone();
    let proxy = match Proxy::bind(config.proxy.clone(), certs, tx).await {
        Ok(p) => p,
        Err(ProxyError::AddrInUse { addr }) => {
            return Err(usage(format!(
                "port {} on {} is already in use: choose another with -p/--listen-port (or \
                 --listen-host)",
                addr.port(),
                addr.ip()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let addr = proxy.local_addr();
    if config.proxy.upstream_trust.insecure {
        say!("mcptap: {SSL_INSECURE_WARNING}");
    }
    match &reverse {
        None => {
            if !listen.ip().is_loopback() {
                say!(
                    "mcptap: WARNING: listening on {addr}: anyone who can reach this address can use \
                     mcptap as an open proxy. Use --listen-host 127.0.0.1 unless you mean it."
                );
            }
            if announce {
                say!("mcptap: proxy listening on http://{addr}");
                // A wildcard address is where mcptap listens, not one a client can dial.
                let dial = if addr.ip().is_unspecified() {
                    let lo: std::net::IpAddr = if addr.is_ipv6() {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    };
                    SocketAddr::new(lo, addr.port())
                } else {
                    addr
                };
                say!(
                    "mcptap: point clients at it: HTTPS_PROXY=http://{dial} NODE_EXTRA_CA_CERTS={}",
                    ca.cert_path().display()
                );
            }
        }
        Some(rev) => {
            if !listen.ip().is_loopback() {
                say!(
                    "mcptap: NOTE: reverse mode is listening on {addr}, reachable from other \
                     machines: everything sent here is forwarded to {} and recorded.",
                    rev.upstream
                );
            }
            say!(
                "mcptap: reverse proxy listening on {addr} (TLS or plain HTTP) -> {}",
                rev.upstream
            );
            for (prefix, url) in &rev.routes {
                say!("mcptap:   {prefix}* -> {url}");
            }
        }
    }
    let journal = match &config.save {
        None => None,
        Some(to) => {
            let mut meta = mcptap_store::SessionMeta::new(env!("CARGO_PKG_VERSION"));
            meta.raw_secrets = config.keep_secrets;
            meta.argv = std::env::args().collect();
            meta.mode = Some(config.mode().to_string());
            let j = match to {
                SaveTo::Dir(d) => mcptap_store::Journal::create(d, meta),
                SaveTo::Under(base) => mcptap_store::Journal::create_in(base, meta),
            }
            .context("cannot record the session")?;
            say!("mcptap: recording to {}", j.dir().display());
            Some(j)
        }
    };
    if config.keep_secrets {
        say!("mcptap: {}", mcptap_store::KEEP_SECRETS_WARNING);
    }
    if config.proxy.inject_refresh {
        say!("mcptap: {INJECT_REFRESH_WARNING}");
    }
    let prepare = mcptap_store::Options {
        keep_secrets: config.keep_secrets,
        body_limit: config.proxy.body_limit,
    };
    let session_dir = journal.as_ref().map(|j| j.dir().to_path_buf());
    // Tells `mcptap mcp` where this session is, while the proxy runs (crates/cli/live.rs).
    let live = journal
        .as_ref()
        .and_then(|j| crate::live::register(&config.confdir, j, addr, &config.mode().to_string()));
    let mut sink = Sink::new(config.quiet, reverse.is_some(), journal, prepare);
    if reverse.as_ref().is_some_and(|r| !r.rewrite_metadata) {
        sink.watch_bypass(crate::bypass::BypassWatch::default());
    }
    Ok(Started {
        addr,
        ca_cert: ca.cert_path(),
        session_dir,
        proxy,
        rx,
        sink,
        _live: live,
    })
}

impl Started {
    /// Sends the line view (and live findings) to `out` instead of stdout.
    pub fn lines_to(&mut self, out: Box<dyn Write + Send>) {
        self.sink.lines_to(out);
    }

    /// Also says each finding on stderr, one line each, as it is announced (suspected,
    /// confirmed, amended or cleared).
    pub fn findings_to_stderr(&mut self) {
        self.sink.findings_to_stderr();
    }

    /// Feeds the terminal view instead of printing lines: every prepared event, each flow's
    /// classification and the findings (see `crate::tuiview`).
    pub fn ui_to(
        &mut self,
        feed: mcptap_tui::Feed,
        requests: tokio::sync::mpsc::UnboundedReceiver<mcptap_tui::Request>,
    ) {
        self.sink.ui_to(feed, requests);
    }

    /// Serves until `signal`, drains for at most the shutdown deadline, and hands back the
    /// sink holding everything recorded (call [`Sink::finish`] or [`Sink::close`] on it).
    pub async fn serve(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Sink> {
        let Started {
            proxy,
            rx,
            mut sink,
            ..
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The consumer has a thread of its own: its batches (redaction, journal, analysis) then
        // never hold up a worker that has connections to serve.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Sink>();
        std::thread::Builder::new()
            .name("mcptap-recorder".into())
            .spawn(move || {
                let _span = tracing::debug_span!("recorder").entered();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(sink.consume(rx, stop_rx)),
                    Err(e) => say!("mcptap: error: the recorder cannot start: {e}"),
                }
                let _ = done_tx.send(sink);
            })
            .context("cannot start the recorder thread")
            .kind(ErrorKind::Internal)?;
        let consumer = done_rx;
        proxy.serve(signal).await;
        // The consumer ends once every sender is gone, i.e. every connection task has finished
        // (they all stop at the shutdown deadline); bound the wait anyway.
        let stopper = tokio::spawn(tracing::Instrument::instrument(
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = stop_tx.send(());
            },
            tracing::debug_span!("recorder_deadline"),
        ));
        let sink = consumer
            .await
            .context("the recorder thread failed")
            .kind(ErrorKind::Internal)?;
        stopper.abort();
        Ok(sink)
    }
}
