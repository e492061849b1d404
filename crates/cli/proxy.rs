//! `mcptap proxy`: start the engine, print one line per flow, stop cleanly on Ctrl-C/SIGTERM.

use crate::args::ProxyArgs;
use anyhow::Context as _;
use mcptap_flow::FlowEvent;
use mcptap_proxy::{EventReceiver, Proxy, ProxyConfig, ProxyError, UpstreamTrust};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

impl RunConfig {
    /// Validates raw arguments.
    pub fn from_args(args: &ProxyArgs, quiet: bool) -> anyhow::Result<RunConfig> {
        let listen = SocketAddr::new(args.listen_host, args.listen_port);
        for pat in &args.ignore_hosts {
            regex::Regex::new(pat)
                .with_context(|| format!("--ignore-hosts {pat:?} is not a valid regex"))?;
        }
        for f in &args.upstream_ca {
            if !f.is_file() {
                anyhow::bail!("--upstream-ca {}: no such file", f.display());
            }
        }
        let upstream_proxy = match &args.upstream_proxy {
            Some(u) => Some(mcptap_proxy::UpstreamProxy::parse(u).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let reverse = match args.mode.as_str() {
            "regular" => {
                if !args.routes.is_empty() || args.rewrite_metadata || args.cert.is_some() {
                    anyhow::bail!(
                        "--route, --rewrite-metadata and --cert apply to reverse mode only"
                    );
                }
                None
            }
            m => {
                let Some(url) = m.strip_prefix("reverse:") else {
                    anyhow::bail!("unknown --mode {m:?}: use regular or reverse:URL (for upstream:URL use --upstream-proxy)");
                };
                let upstream =
                    mcptap_proxy::reverse::parse_upstream(url).map_err(anyhow::Error::msg)?;
                let routes = args
                    .routes
                    .iter()
                    .map(|r| mcptap_proxy::reverse::parse_route(r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(anyhow::Error::msg)?;
                if args.proxy_auth.is_some() {
                    anyhow::bail!(
                        "--proxy-auth applies to the explicit proxy, not to reverse mode"
                    );
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
                anyhow::bail!("--proxy-auth takes user:pass");
            }
        }
        // Checked again here for configs built without clap (never a panic in from_secs_f64).
        let shutdown_deadline = crate::args::seconds(args.shutdown_deadline).ok_or_else(|| {
            anyhow::anyhow!(
                "--shutdown-deadline {} is out of range (0 to {} seconds)",
                args.shutdown_deadline,
                crate::args::MAX_SECONDS
            )
        })?;
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
            save: if args.no_save {
                None
            } else {
                Some(match &args.save {
                    Some(d) => SaveTo::Dir(d.clone()),
                    None => SaveTo::Under(args.confdir.resolve()?.join("sessions")),
                })
            },
            keep_secrets: args.keep_secrets,
            confdir: args.confdir.resolve()?,
            quiet,
        })
    }
}

/// Runs `mcptap proxy` until a signal arrives.
pub fn main(args: ProxyArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let config = RunConfig::from_args(&args, quiet)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if crate::tuiview::wants_tui(&args, quiet) {
        rt.block_on(async { crate::tuiview::run_live(config, shutdown_signal()).await })?;
        return Ok(ExitCode::SUCCESS);
    }
    rt.block_on(async { run(config, shutdown_signal()).await })?;
    Ok(ExitCode::SUCCESS)
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
        Some((cert, key)) => std::sync::Arc::new(crate::ca::FixedCert::load(cert, key)?),
        None => ca.clone(),
    };
    let (tx, rx) = mcptap_proxy::events::channel(mcptap_proxy::events::DEFAULT_CAPACITY);
    let listen = config.proxy.listen;
    let reverse = config.proxy.reverse.clone();
    let proxy = match Proxy::bind(config.proxy.clone(), certs, tx).await {
        Ok(p) => p,
        Err(ProxyError::AddrInUse { addr }) => anyhow::bail!(
            "port {} on {} is already in use: choose another with -p/--listen-port (or --listen-host)",
            addr.port(),
            addr.ip()
        ),
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
            meta.mode = Some(match &reverse {
                Some(r) => format!("reverse:{}", r.upstream),
                None => "regular".to_owned(),
            });
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
    let mut sink = Sink::new(config.quiet, reverse.is_some(), journal, prepare);
    if reverse.as_ref().is_some_and(|r| !r.rewrite_metadata) {
        sink.bypass = Some(crate::bypass::BypassWatch::default());
    }
    Ok(Started {
        addr,
        ca_cert: ca.cert_path(),
        session_dir,
        proxy,
        rx,
        sink,
    })
}

impl Started {
    /// Sends the line view (and live findings) to `out` instead of stdout.
    pub fn lines_to(&mut self, out: Box<dyn Write + Send>) {
        self.sink.out = Some(out);
    }

    /// Also says each finding on stderr, one line each, as it is announced (suspected,
    /// confirmed, amended or cleared).
    pub fn findings_to_stderr(&mut self) {
        self.sink.findings_to_stderr = true;
    }

    /// Feeds the terminal view instead of printing lines: every prepared event, each flow's
    /// classification and the findings (see `crate::tuiview`).
    pub fn ui_to(&mut self, feed: mcptap_tui::Feed) {
        if let Some(j) = &self.sink.journal {
            feed.send(mcptap_tui::Msg::Journal(j.path().to_owned()));
        }
        self.sink.ui = Some(feed);
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
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(sink.consume(rx, stop_rx)),
                    Err(e) => say!("mcptap: error: the recorder cannot start: {e}"),
                }
                let _ = done_tx.send(sink);
            })
            .context("cannot start the recorder thread")?;
        let consumer = done_rx;
        proxy.serve(signal).await;
        // The consumer ends once every sender is gone, i.e. every connection task has finished
        // (they all stop at the shutdown deadline); bound the wait anyway.
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = stop_tx.send(());
        });
        let sink = consumer.await.context("the recorder thread failed")?;
        stopper.abort();
        Ok(sink)
    }
}

/// Where events go: redaction and decoding first, then the journal, the line view and the
/// live analyzer.
pub struct Sink {
    quiet: bool,
    analyzer: mcptap_analyze::Analyzer,
    journal: Option<mcptap_store::Journal>,
    journal_failed: bool,
    /// Finished flows handed to the journal since its last successful flush.
    unflushed: u64,
    /// Finished flows that are not (or may not be) in the journal: from the batch in which
    /// recording failed on, nothing is written.
    not_recorded: u64,
    prepare: mcptap_store::Options,
    flows: u64,
    failed: u64,
    aborted: u64,
    dropped: u64,
    /// Flows whose start was recorded and whose end has not come yet: at the close, any left
    /// are ended as aborted by the shutdown, so that every started flow ends in the journal.
    open: HashMap<mcptap_flow::FlowId, Box<mcptap_flow::Flow>>,
    /// Where lines go; `None` is stdout.
    out: Option<Box<dyn Write + Send>>,
    /// Also say each finding as it is announced on stderr, one line each (`mcptap run`: the
    /// line view goes to a file while the command owns the terminal).
    findings_to_stderr: bool,
    /// The terminal view, when it replaces the line view.
    ui: Option<mcptap_tui::Feed>,
    /// Reverse mode without `--rewrite-metadata`: says when an answer sends the client around
    /// the proxy.
    bypass: Option<crate::bypass::BypassWatch>,
}

/// What a finished session amounts to: counts and the analyzer's report, for the closing
/// summary (`mcptap run` adds its own lines to [`Summary::lines`]).
pub struct Summary {
    /// Finished flows.
    pub flows: u64,
    /// Of which failed.
    pub failed: u64,
    /// Of which aborted (cut short by the client, the upstream, a limit or the shutdown).
    pub aborted: u64,
    /// Events dropped because the consumer was too slow.
    pub dropped: u64,
    /// Finished flows that recording failed to save (a full disk…).
    pub not_recorded: u64,
    /// The findings over the whole session.
    pub report: mcptap_analyze::Report,
    /// The session directory, when it was recorded.
    pub session_dir: Option<PathBuf>,
}

impl Summary {
    /// The closing lines, as `mcptap proxy` prints them on stderr.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.dropped > 0 {
            lines.push(format!(
                "mcptap: {} events were dropped because the output was too slow",
                self.dropped
            ));
        }
        let counted: Vec<&mcptap_analyze::Finding> = self.report.counted().collect();
        let suspected = counted
            .iter()
            .filter(|f| f.status == mcptap_analyze::Status::Suspected)
            .count();
        // "(F failed), K findings" stays as it was for scripts that read it.
        let aborted = match self.aborted {
            0 => String::new(),
            n => format!("{n} aborted, "),
        };
        lines.push(format!(
            "mcptap: {} flows ({aborted}{} failed), {} findings{}",
            self.flows,
            self.failed,
            counted.len(),
            if suspected > 0 {
                format!(" ({suspected} suspected)")
            } else {
                String::new()
            }
        ));
        if self.not_recorded > 0 {
            lines.push(format!(
                "mcptap: {} of these flows were not recorded: recording failed",
                self.not_recorded
            ));
        }
        for f in counted {
            lines.push(format!("  {}", crate::explain::finding_brief(f)));
            for a in &f.amendments {
                lines.push(format!("      {a}"));
            }
        }
        lines
    }
}

impl Sink {
    /// A sink printing lines unless `quiet`, recording into `journal` if any.
    pub fn new(
        quiet: bool,
        reverse: bool,
        journal: Option<mcptap_store::Journal>,
        prepare: mcptap_store::Options,
    ) -> Sink {
        Sink {
            quiet,
            analyzer: mcptap_analyze::Analyzer::new(mcptap_analyze::Options {
                reverse_proxy: reverse,
                // The proxy may run for days: flows are counted, not listed, so memory stays
                // bounded by what decisions need; every flow is still analysed.
                list_flows: false,
                ..Default::default()
            }),
            journal,
            journal_failed: false,
            unflushed: 0,
            not_recorded: 0,
            prepare,
            flows: 0,
            failed: 0,
            aborted: 0,
            dropped: 0,
            open: HashMap::new(),
            out: None,
            findings_to_stderr: false,
            ui: None,
            bypass: None,
        }
    }

    /// Consumes events until every sender is gone or `stop` fires; time-based rules are
    /// checked every second.
    ///
    /// While traffic flows, events are collected on a short timer instead of each one waking
    /// the consumer: measured, waking per event doubled the CPU per request of a client doing
    /// one request at a time, and a thread woken by the engine's send can preempt the very
    /// worker that is about to write that response or SSE event to the client. After a second
    /// without events the consumer waits on the channel again (no timer while idle). What
    /// finished is in the journal within a few milliseconds either way.
    pub async fn consume(
        &mut self,
        mut rx: EventReceiver,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        const POLL: Duration = Duration::from_millis(5);
        const IDLE_POLLS: u32 = 200;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(1024);
        let mut idle_polls = IDLE_POLLS;
        loop {
            let polling = idle_polls < IDLE_POLLS;
            tokio::select! {
                n = rx.recv_many(&mut batch, 1024), if !polling => {
                    if n == 0 {
                        break;
                    }
                    self.batch(&mut batch);
                    idle_polls = 0;
                }
                _ = tokio::time::sleep(POLL), if polling => {
                    if rx.try_recv_many(&mut batch, 4096) > 0 {
                        self.batch(&mut batch);
                        idle_polls = 0;
                    } else if rx.is_closed() {
                        break;
                    } else {
                        idle_polls += 1;
                    }
                }
                _ = tick.tick() => {
                    mcptap_proxy::capture_pool::release_idle();
                    let found = self.analyzer.tick(mcptap_flow::now_micros());
                    self.print_findings(&found);
                }
                _ = &mut stop => {
                    while let Some(ev) = rx.try_recv() {
                        batch.push(ev);
                    }
                    self.batch(&mut batch);
                    say!("mcptap: some connections did not close in time; stopping anyway");
                    break;
                }
            }
        }
        self.dropped = rx.dropped();
    }

    /// Handles one event from the engine.
    pub fn feed(&mut self, ev: FlowEvent) {
        self.event(ev, false);
        self.flush_journal();
    }

    /// Handles a batch of events, in order, then flushes the journal once.
    ///
    /// A flow that starts and finishes within one batch needs only its final event in the
    /// journal: the head lines would repeat what the final line holds whole (the journal reader
    /// and the views take a final flow without a start). Flows with server-sent events in the
    /// batch keep every line, so that no event is lost past the flow's capture limit.
    fn batch(&mut self, batch: &mut Vec<FlowEvent>) {
        let mut whole: HashSet<mcptap_flow::FlowId> = batch
            .iter()
            .filter(|e| e.is_final())
            .map(FlowEvent::flow_id)
            .collect();
        for e in batch.iter() {
            if let FlowEvent::Sse { id, .. } = e {
                whole.remove(id);
            }
        }
        for ev in batch.drain(..) {
            let redundant = matches!(
                ev,
                FlowEvent::RequestStarted { .. } | FlowEvent::ResponseHead { .. }
            ) && whole.contains(&ev.flow_id());
            self.event(ev, redundant);
        }
        self.flush_journal();
    }

    /// Flushes the journal to the OS (once per batch: what finished is readable after a crash).
    fn flush_journal(&mut self) {
        if let Some(j) = self.journal.as_mut().filter(|_| !self.journal_failed) {
            match j.flush() {
                Ok(()) => self.unflushed = 0,
                Err(e) => self.journal_error(e),
            }
        }
    }

    /// Recording failed: the flows still buffered may be lost, and nothing more is written
    /// (a torn line would take the next flow with it).
    fn journal_error(&mut self, e: mcptap_store::StoreError) {
        self.not_recorded += std::mem::take(&mut self.unflushed);
        // Keep proxying: losing the recording must not break the user's client.
        if !self.journal_failed {
            let msg = format!(
                "mcptap: error: recording failed, traffic still flows but is no longer \
                 recorded: {}",
                crate::files::chain(&e)
            );
            match &self.ui {
                Some(ui) => {
                    ui.send(mcptap_tui::Msg::Notice(msg));
                }
                None => say!("{msg}"),
            }
            self.journal_failed = true;
        }
    }

    /// One event; `redundant` head events (see [`Sink::batch`]) only reach a terminal view.
    fn event(&mut self, mut ev: FlowEvent, redundant: bool) {
        if let FlowEvent::Body { .. } = ev {
            if let Some(ui) = &self.ui {
                ui.send(mcptap_tui::Msg::Event(ev));
            }
            return; // progress only matters to a live terminal view
        }
        if redundant && self.ui.is_none() {
            return;
        }
        mcptap_store::prepare_event(&mut ev, &self.prepare);
        if let Some(j) = self.journal.as_mut().filter(|_| !redundant) {
            let offset = j.position();
            if self.journal_failed {
                self.not_recorded += u64::from(ev.is_final());
            } else {
                match j.record_unflushed(&ev) {
                    Ok(_) => {
                        self.unflushed += u64::from(ev.is_final());
                        if let Some(ui) = self.ui.as_ref().filter(|_| ev.is_final()) {
                            ui.send(mcptap_tui::Msg::Saved {
                                id: ev.flow_id(),
                                offset,
                            });
                        }
                    }
                    Err(e) => {
                        self.not_recorded += u64::from(ev.is_final());
                        self.journal_error(e);
                    }
                }
            }
        }
        if let Some(ui) = &self.ui {
            ui.send(mcptap_tui::Msg::Event(ev.clone()));
        }
        if let FlowEvent::Completed { flow } | FlowEvent::Failed { flow } = &ev {
            self.open.remove(&flow.id);
            self.flows += 1;
            match flow.state {
                mcptap_flow::FlowState::Failed => self.failed += 1,
                mcptap_flow::FlowState::Aborted => self.aborted += 1,
                _ => {}
            }
            if !self.quiet && self.ui.is_none() {
                let line = crate::lineview::line(flow);
                self.write_lines(std::iter::once(line));
            }
            if let Some(warning) = self.bypass.as_mut().and_then(|w| w.check(flow)) {
                match &self.ui {
                    Some(ui) => {
                        ui.send(mcptap_tui::Msg::Notice(warning));
                    }
                    None => say!("{warning}"),
                }
            }
            let found = self.analyzer.push(flow);
            if let Some(ui) = self
                .ui
                .as_ref()
                .filter(|_| flow.kind == mcptap_flow::FlowKind::Http)
            {
                if let Some(s) = self.analyzer.summary(flow.id) {
                    ui.send(mcptap_tui::Msg::Classified(Box::new(s.clone())));
                }
            }
            self.print_findings(&found);
        }
        if let FlowEvent::RequestStarted { flow } = ev {
            self.open.insert(flow.id, flow);
        }
    }

    /// Ends the flows that started and never reported an end (their connection did not unwind
    /// by the shutdown deadline, or their final event was dropped) as aborted by the shutdown.
    fn end_open_flows(&mut self) {
        let mut open: Vec<_> = std::mem::take(&mut self.open).into_values().collect();
        open.sort_by_key(|f| f.id);
        let now = mcptap_flow::now_micros();
        for mut flow in open {
            flow.state = mcptap_flow::FlowState::Aborted;
            flow.timings.finished = Some(now);
            flow.error = Some(mcptap_flow::FlowError::new(
                mcptap_flow::ErrorKind::Shutdown,
                "mcptap stopped before this flow reported its end",
            ));
            self.event(FlowEvent::Completed { flow }, false);
        }
        self.flush_journal();
    }

    fn print_findings(&mut self, found: &[mcptap_analyze::Finding]) {
        if let Some(ui) = &self.ui {
            if !found.is_empty() {
                ui.send(mcptap_tui::Msg::Findings(self.analyzer.findings()));
            }
            return;
        }
        if self.quiet || found.is_empty() {
            return;
        }
        if self.findings_to_stderr {
            for f in found {
                say!("{}", crate::explain::finding_oneline(f));
            }
        }
        self.write_lines(found.iter().map(crate::explain::finding_line));
    }

    fn write_lines(&mut self, lines: impl Iterator<Item = String>) {
        match self.out.as_mut() {
            Some(out) => {
                for line in lines {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
            None => {
                let mut out = std::io::stdout().lock();
                for line in lines {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
        }
    }

    /// End of session: the HAR file, then the summary on stderr.
    pub fn finish(self) {
        for line in self.close().lines() {
            say!("{line}");
        }
    }

    /// End of session without the summary: writes the HAR file (saying where on stderr) and
    /// returns what the summary is made of.
    pub fn close(mut self) -> Summary {
        self.end_open_flows();
        // One time for both: the saved session is decided offline as of when recording
        // stopped, exactly as the live analyzer decides it here.
        let ended = mcptap_flow::now_micros();
        let mut session_dir = None;
        if let Some(j) = self.journal.take() {
            let dir = j.dir().to_path_buf();
            let journal = j.path().to_path_buf();
            if self.journal_failed {
                // No session.har that would silently hold part of the session.
                j.abandon();
                say!(
                    "mcptap: error: recording failed: {} of {} flows were not recorded; the \
                     journal in {} holds those before the failure and may end in a torn line \
                     (no session.har was written; `mcptap export {}` recovers what it holds)",
                    self.not_recorded,
                    self.flows,
                    dir.display(),
                    dir.display()
                );
            } else {
                match j.finish_at(ended) {
                    Ok(har) => say!(
                        "mcptap: session saved in {} ({})",
                        dir.display(),
                        har.display()
                    ),
                    // The end line or the sync failed: every flow was flushed, the end is not.
                    Err(mcptap_store::StoreError::Write { path, source }) if path == journal => {
                        say!(
                            "mcptap: error: cannot close the journal {} ({}); its flows are in \
                             it but it may end in a torn line: `mcptap export {}` recovers them",
                            path.display(),
                            crate::files::chain(&source),
                            dir.display()
                        )
                    }
                    // Written, ended and synced: only the HAR failed.
                    Err(e) => say!(
                        "mcptap: error: cannot write the HAR file ({}); the journal in {} is \
                         complete (ended and synced): `mcptap export {}` retries",
                        crate::files::chain(&e),
                        dir.display(),
                        dir.display()
                    ),
                }
            }
            session_dir = Some(dir);
        }
        Summary {
            flows: self.flows,
            failed: self.failed,
            aborted: self.aborted,
            dropped: self.dropped,
            not_recorded: self.not_recorded,
            report: self.analyzer.finish_at(ended),
            session_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::{Flow, FlowId, FlowState, SseEvent};

    fn flow(id: u64) -> Flow {
        Flow {
            id: FlowId(id),
            host: "mcp.example".into(),
            port: 443,
            request: mcptap_flow::Request {
                method: "POST".into(),
                url: format!("https://mcp.example/mcp?n={id}"),
                ..Default::default()
            },
            timings: mcptap_flow::Timings {
                started: 1_000 + id as i64,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn head(id: u64) -> FlowEvent {
        FlowEvent::ResponseHead {
            id: FlowId(id),
            at: 2_000,
            status: 200,
            version: mcptap_flow::HttpVersion::Http11,
            headers: Default::default(),
        }
    }

    fn done(id: u64) -> FlowEvent {
        let mut f = flow(id);
        f.state = FlowState::Completed;
        f.response = Some(mcptap_flow::Response {
            status: 200,
            ..Default::default()
        });
        f.timings.finished = Some(3_000);
        FlowEvent::Completed { flow: Box::new(f) }
    }

    fn started(id: u64) -> FlowEvent {
        FlowEvent::RequestStarted {
            flow: Box::new(flow(id)),
        }
    }

    fn types(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}:{}",
                    v["type"].as_str().unwrap(),
                    v["flow"]["id"]
                        .as_u64()
                        .or(v["id"].as_u64())
                        .map_or(String::new(), |i| i.to_string())
                )
            })
            .collect()
    }

    #[test]
    fn a_flow_without_an_end_is_ended_as_aborted_by_the_shutdown_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s");
        let journal =
            mcptap_store::Journal::create(&session, mcptap_store::SessionMeta::new("test"))
                .unwrap();
        let path = journal.path().to_owned();
        let mut sink = Sink::new(true, false, Some(journal), Default::default());
        // 1 ends; 2 and 3 start and never report an end (4 starts and ends in one batch).
        sink.batch(&mut vec![started(1), started(2), started(3)]);
        sink.batch(&mut vec![head(1), done(1), started(4), done(4)]);
        let summary = sink.close();
        assert_eq!((summary.flows, summary.failed, summary.aborted), (4, 0, 2));
        assert!(
            summary
                .lines()
                .iter()
                .any(|l| l.contains("4 flows (2 aborted, 0 failed), 0 findings")),
            "{:?}",
            summary.lines()
        );
        let t = types(&path);
        assert_eq!(&t[t.len() - 3..], ["completed:2", "completed:3", "end:"]);
        let last: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .nth_back(1)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(last["flow"]["state"], "aborted");
        assert_eq!(last["flow"]["error"]["kind"], "shutdown");
    }

    #[test]
    fn a_batch_writes_flows_finished_in_it_once_and_keeps_the_rest_whole() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s");
        let journal =
            mcptap_store::Journal::create(&session, mcptap_store::SessionMeta::new("test"))
                .unwrap();
        let path = journal.path().to_owned();
        let mut sink = Sink::new(true, false, Some(journal), Default::default());
        let sse = FlowEvent::Sse {
            id: FlowId(3),
            event: SseEvent {
                at: 2_500,
                data: "{}".into(),
                ..Default::default()
            },
        };
        // 1 starts and ends in the batch; 2 only starts; 3 streams an event and ends.
        let mut batch = vec![
            started(1),
            started(2),
            head(1),
            started(3),
            head(3),
            sse,
            done(1),
            done(3),
        ];
        sink.batch(&mut batch);
        assert!(batch.is_empty());
        // Flushed at the end of the batch: readable before the session closes.
        assert_eq!(
            types(&path),
            [
                "session:",
                "request_started:2",
                "request_started:3",
                "response_head:3",
                "sse:3",
                "completed:1",
                "completed:3"
            ]
        );
        // 2's response head comes in a batch of its own, its end in the next one.
        sink.batch(&mut vec![head(2)]);
        sink.batch(&mut vec![done(2)]);
        let summary = sink.close();
        assert_eq!(summary.flows, 3);
        let t = types(&path);
        assert_eq!(&t[7..], ["response_head:2", "completed:2", "end:"]);
        // Every flow comes back whole from the journal, in start order.
        let har = std::fs::read_to_string(session.join(mcptap_store::HAR_FILE)).unwrap();
        let har: serde_json::Value = serde_json::from_str(&har).unwrap();
        let urls: Vec<&str> = har["log"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "https://mcp.example/mcp?n=1",
                "https://mcp.example/mcp?n=2",
                "https://mcp.example/mcp?n=3"
            ]
        );
    }
}
