//! mcptap's command line: raw arguments → validated configuration → `run`.
//!
//! Each subcommand lives in its own module and is callable in-process (tests drive
//! [`proxy::run`] directly). `anyhow` is used here and nowhere else in the workspace.

/// `eprintln!` that never panics: a message to a closed stderr (`mcptap proxy 2>&1 | head`) is
/// dropped instead of taking the proxy down with it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod args;
pub mod bypass;
pub mod ca;
pub mod config;
pub mod env;
pub mod error;
pub mod explain;
pub mod files;
pub mod lineview;
pub mod live;
pub mod mcp;
pub mod mcp_data;
pub mod probe;
mod probe_checks;
pub mod probe_http;
pub mod proxy;
pub mod run;
pub mod sink;
pub mod tuiview;

use clap::Parser;
use std::process::ExitCode;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let result = match cli.command {
        None => proxy::main(cli.proxy, cli.quiet),
        Some(args::Command::Proxy(p)) => proxy::main(p, cli.quiet),
        Some(args::Command::Ca(c)) => ca::main(c),
        Some(args::Command::Explain(e)) => explain::main(e),
        Some(args::Command::Export(e)) => files::export(e),
        Some(args::Command::Analyze(a)) => files::analyze(a),
        Some(args::Command::Report(r)) => files::report(r),
        Some(args::Command::Run(r)) => run::main(r, cli.quiet),
        Some(args::Command::Env(e)) => env::main(e),
        Some(args::Command::View(v)) => tuiview::view(v),
        Some(args::Command::Probe(p)) => probe::main(p, cli.quiet),
        Some(args::Command::Mcp(m)) => mcp::main(m),
        Some(args::Command::Reverse(r)) => {
            let mut p = r.proxy;
            p.mode = config::Mode::Reverse(r.url);
            proxy::main(p, cli.quiet)
        }
    };
    match result {
        Ok(code) => code,
        // The reader went away (`mcptap analyze … | head`): nothing to say to anyone, as
        // ripgrep does.
        Err(e) if closed_output(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say!("mcptap: error: {e:#}");
            ExitCode::from(error::ErrorKind::of(&e).exit_code())
        }
    }
}

/// True when `e` is a write to a pipe whose reader has gone.
fn closed_output(e: &anyhow::Error) -> bool {
    let broken = Some(std::io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == broken
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == broken
    })
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,mcptap=info",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPTAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Silent while the terminal view owns the screen: a log line would tear it.
        .with_writer(|| -> Box<dyn std::io::Write> {
            if mcptap_tui::screen_owned() {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::stderr())
            }
        })
        .with_target(false)
        // Escape codes only for a terminal that wants colour (not in log files or pipes).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .try_init();
}
