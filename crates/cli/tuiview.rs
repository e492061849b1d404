//! The terminal view (`mcptap-tui`) wired to the CLI: `mcptap proxy` (and `reverse`) on a
//! terminal, and `mcptap view FILE`.
//!
//! Live, the view runs on its own thread and is fed by the [`Sink`](crate::sink::Sink) (the
//! same prepared, redacted events the journal gets, each flow's classification and the
//! findings). Quitting the view stops the proxy as Ctrl-C would; a signal closes the view first,
//! so the closing summary prints on a restored terminal.

use crate::args::{ProxyArgs, ViewArgs};
use crate::config::RunConfig;
use crate::error::{usage, ErrorKind, ResultExt as _};
use anyhow::Context as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;

/// Messages queued for the view before it drops (and counts) the rest.
const FEED_CAPACITY: usize = 65_536;

/// True when `mcptap proxy` should show the terminal view: not `--no-tui`, not `-q`, and both
/// stdin and stdout are terminals.
pub fn wants_tui(args: &ProxyArgs, quiet: bool) -> bool {
    !args.no_tui && !quiet && std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

/// Runs the proxy with the terminal view until `q` in the view or `signal`.
pub async fn run_live(
    config: RunConfig,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut started = crate::proxy::start(&config, true).await?;
    let mut title = match &config.proxy.reverse {
        Some(r) => format!("reverse {} -> {}", started.addr, r.upstream),
        None => format!("proxy http://{}", started.addr),
    };
    if started.session_dir.is_none() {
        title.push_str("  (not recorded)");
    }
    let (feed, inbox) = mcptap_tui::channel(FEED_CAPACITY);
    // The view asks for flows it no longer holds; the recorder answers from the journal.
    let (ask, requests) = tokio::sync::mpsc::unbounded_channel();
    started.ui_to(feed.clone(), requests);
    let app = mcptap_tui::App::new(mcptap_tui::Options {
        title,
        setup: setup_lines(&config, &started),
        ..mcptap_tui::Options::default()
    })
    .with_host(mcptap_tui::Host::new(move |r| {
        let _ = ask.send(r);
    }));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let view = std::thread::Builder::new()
        .name("mcptap-tui".into())
        .spawn(move || {
            let result = mcptap_tui::run(app, inbox);
            let _ = done_tx.send(result);
        })
        .context("cannot start the terminal view")
        .kind(ErrorKind::Internal)?;
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        tokio::select! {
            _ = signal => feed.quit(),
            r = done_rx => { let _ = result_tx.send(r); }
        }
    };
    let sink = started.serve(stop).await?;
    // The view gives the terminal back before anything is printed.
    let _ = tokio::task::spawn_blocking(move || view.join()).await;
    sink.finish();
    say!("mcptap: stopped");
    match result_rx.await {
        Ok(Ok(Err(e))) => {
            Err(anyhow::Error::new(e).context("the terminal view failed")).kind(ErrorKind::Internal)
        }
        Ok(Err(_)) => Err(anyhow::anyhow!(
            "the terminal view crashed (see the panic above)"
        ))
        .kind(ErrorKind::Internal),
        _ => Ok(()),
    }
}

/// What the empty live view says: how to point a client at the proxy and where the CA is (the
/// same hint `mcptap proxy` prints before the terminal view hides it).
fn setup_lines(config: &RunConfig, started: &crate::proxy::Started) -> Vec<String> {
    let addr = started.addr;
    let ca = format!("CA certificate: {}", started.ca_cert.display());
    if let Some(r) = &config.proxy.reverse {
        return vec![
            format!(
                "point the client at http://{addr} instead of {} (reverse mode)",
                r.upstream
            ),
            ca,
        ];
    }
    let env = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!(
            "in the client's shell: eval \"$(mcptap env -p {})\"   (sets HTTPS_PROXY and the CA)",
            addr.port()
        )
    } else {
        format!("in the client's shell: eval \"$(mcptap env --proxy http://{addr})\"")
    };
    let mut lines = vec![env, ca];
    if let Some(w) = crate::env::no_proxy_bypass(&crate::env::no_proxy_bypassed_here()) {
        lines.push(format!("warning: {w}"));
    }
    lines
}

/// `mcptap view FILE`: a saved session or any HAR in the terminal view, read-only.
pub fn view(args: ViewArgs) -> anyhow::Result<ExitCode> {
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        return Err(usage(format!(
            "mcptap view needs a terminal; `mcptap analyze {}` prints the diagnosis as text",
            args.input.display()
        )));
    }
    let mut session = crate::files::read(&args.input)?;
    let mut report = crate::files::analyze_session(&mut session, args.reverse, args.keep_secrets);
    // A probe's session: its findings as the probe made them (see `mcptap analyze`).
    let probed = crate::probe::apply_saved(&args.input, &mut report);
    let flows = session.flows;
    let mut title = args.input.display().to_string();
    if probed {
        title.push_str("  (mcptap probe)");
    }
    if !session.complete {
        title.push_str("  (journal cut short)");
    }
    let app = mcptap_tui::App::from_session(
        flows,
        &report,
        mcptap_tui::Options {
            title,
            ..mcptap_tui::Options::default()
        },
    );
    let (feed, inbox) = mcptap_tui::channel(16);
    // Ctrl-C is a key in raw mode; SIGTERM must still close the view and restore the terminal.
    std::thread::Builder::new()
        .name("mcptap-signals".into())
        .spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async { crate::proxy::shutdown_signal().await });
                feed.quit();
            }
        })
        .context("cannot watch for signals")
        .kind(ErrorKind::Internal)?;
    mcptap_tui::run(app, inbox)
        .context("the terminal view failed")
        .kind(ErrorKind::Internal)?;
    Ok(ExitCode::SUCCESS)
}
