//! `mcptap run [proxy options] -- CMD [ARGS...]`: a proxy on a free loopback port for one
//! command, which runs with the environment of [`crate::env`] (proxy variables, mcptap's CA,
//! the Node preload) and keeps the terminal.
//!
//! - **The terminal is the command's.** The line view goes to a file, never to the screen the
//!   command draws on: `lines.log` in the session directory (next to the journal and HAR of the
//!   same run, so concurrent runs never share a log), `<confdir>/run/last-run.log` with
//!   `--no-save`, or `--log-file FILE`. mcptap says where on stderr before the command starts
//!   (`tail -f` it from another terminal) and again in the closing summary.
//! - **Signals.** The command stays in mcptap's process group, the terminal's foreground group,
//!   so the terminal delivers Ctrl-C (SIGINT), Ctrl-\ (SIGQUIT) and hang-ups (SIGHUP) to it
//!   directly. mcptap catches those and keeps waiting for the command: dying first would cut
//!   the command off from its proxy mid-exchange, and forwarding them would deliver each twice
//!   (a second Ctrl-C makes many CLIs quit without cleaning up). SIGTERM is usually sent to
//!   mcptap alone (`kill`, a supervisor, a test harness), so it is forwarded to the command.
//! - **Exit.** When the command exits, the proxy drains (at most the shutdown deadline), the
//!   session is closed, a summary is printed on stderr, and mcptap exits with the command's
//!   status: 128+N when it was killed by signal N, 127 when it cannot be found, 126 when it
//!   cannot be run.

use crate::args::RunArgs;
use crate::config::{Mode, RunConfig};
use crate::env::{self, PlanOptions};
use crate::error::{usage, ErrorKind, ResultExt as _};
use crate::sink::Summary;
use anyhow::Context as _;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It could not be started (127: not found, 126: anything else).
    NotStarted(u8),
    /// Waiting for it failed (should not happen).
    Unknown,
}

impl Exit {
    /// mcptap's own exit status for it, as a shell would report it.
    pub fn code(self) -> u8 {
        match self {
            Exit::Code(c) => (c & 0xff) as u8,
            Exit::Signal(s) => (128 + (s & 0x7f)) as u8,
            Exit::NotStarted(c) => c,
            Exit::Unknown => 1,
        }
    }

    fn from_status(status: std::io::Result<std::process::ExitStatus>) -> Exit {
        let Ok(status) = status else {
            return Exit::Unknown;
        };
        if let Some(c) = status.code() {
            return Exit::Code(c);
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            if let Some(s) = status.signal() {
                return Exit::Signal(s);
            }
        }
        Exit::Unknown
    }
}

/// The closing summary of a run: the session's counts and findings ([`Summary::lines`]), where
/// the line view went, and how the command ended. New kinds of findings appear here by
/// themselves, through the session's report.
pub fn summary_lines(summary: &Summary, log: &Path, command: &str, exit: Exit) -> Vec<String> {
    let mut lines = summary.lines();
    lines.push(format!("mcptap: traffic log: {}", log.display()));
    lines.push(match exit {
        Exit::Code(c) => format!("mcptap: `{command}` exited with status {c}"),
        Exit::Signal(s) => format!("mcptap: `{command}` was killed by signal {s}"),
        Exit::NotStarted(_) => format!("mcptap: `{command}` did not start"),
        Exit::Unknown => format!("mcptap: `{command}` ended, status unknown"),
    });
    lines
}

/// Runs `mcptap run`.
pub fn main(args: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.proxy.mode != Mode::Regular {
        return Err(usage(format!(
            "mcptap run starts an explicit proxy for its command; --mode {} does not apply \
             (use `mcptap reverse URL` in front of a server)",
            args.proxy.mode
        )));
    }
    // Lines always go to the log file; -q only quiets mcptap's own notes on stderr.
    let config = RunConfig::from_args(&args.proxy, false)?;
    let rt = crate::proxy::runtime()?;
    let exit = rt.block_on(run(config, &args, quiet))?;
    Ok(ExitCode::from(exit.code()))
}

/// Starts the proxy, runs the command through it, waits for it, stops the proxy.
pub async fn run(config: RunConfig, args: &RunArgs, quiet: bool) -> anyhow::Result<Exit> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| usage("no command to run: mcptap run -- CMD [ARGS...]"))?;
    // Before anything else: from here on a Ctrl-C no longer kills mcptap.
    let mut signals = Signals::install()?;
    let mut started = crate::proxy::start(&config, false).await?;
    let url = proxy_url(started.addr, config.proxy.proxy_auth.as_deref());
    let files = env::prepare(&config.confdir, &started.ca_cert, &env::process_env)?;
    let plan = env::plan(
        &url,
        &files,
        PlanOptions {
            node_preload: !args.no_node_preload,
        },
        &env::process_env,
    );
    let log = log_path(args, &config, started.session_dir.as_deref());
    let file = open_log(&log)?;
    started.lines_to(Box::new(std::io::LineWriter::new(file)));
    started.findings_to_stderr();
    let shown = display_command(program, rest);
    if !quiet {
        say!(
            "mcptap: proxy on {} for `{shown}`; traffic log: {} (tail -f it)",
            redact_url(&url),
            log.display()
        );
        if let Some(note) = plan.no_proxy_note() {
            say!("{note}");
        }
    }
    // Even with -q: a bypassed server is a capture that silently misses the flows that matter.
    if let Some(note) = plan.no_proxy_bypass_note() {
        say!("{note}");
    }

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest);
    for change in &plan.changes {
        match change {
            env::Change::Set(k, v) => cmd.env(k, v),
            env::Change::Unset(k) => cmd.env_remove(k),
        };
    }
    let exit = match cmd.spawn() {
        Ok(child) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let waiter = async move {
                let exit = wait_child(child, &mut signals).await;
                let _ = tx.send(exit);
            };
            let sink = started.serve(waiter).await?;
            let exit = rx.await.unwrap_or(Exit::Unknown);
            finish(sink.close(), &log, &shown, exit);
            exit
        }
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            say!("mcptap: error: cannot run `{shown}`: {e}");
            let sink = started.serve(std::future::ready(())).await?;
            let exit = Exit::NotStarted(code);
            finish(sink.close(), &log, &shown, exit);
            exit
        }
    };
    Ok(exit)
}

fn finish(summary: Summary, log: &Path, shown: &str, exit: Exit) {
    for line in summary_lines(&summary, log, shown, exit) {
        say!("{line}");
    }
}

/// The proxy URL the command gets: loopback when mcptap listens on every address, with the
/// `--proxy-auth` credentials when there are some.
pub fn proxy_url(addr: SocketAddr, auth: Option<&str>) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let hostport = SocketAddr::new(ip, addr.port());
    match auth.and_then(|a| a.split_once(':')) {
        Some((user, pass)) => format!(
            "http://{}:{}@{hostport}",
            mcptap_flow::redact::percent_encode(user),
            mcptap_flow::redact::percent_encode(pass)
        ),
        None => format!("http://{hostport}"),
    }
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn log_path(args: &RunArgs, config: &RunConfig, session: Option<&Path>) -> PathBuf {
    match (&args.log_file, session) {
        (Some(f), _) => f.clone(),
        (None, Some(dir)) => dir.join("lines.log"),
        (None, None) => config.confdir.join("run").join("last-run.log"),
    }
}

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::File::create(path).with_context(|| format!("cannot write the log {}", path.display()))
}

fn display_command(program: &OsString, rest: &[OsString]) -> String {
    let words: Vec<String> = std::iter::once(program)
        .chain(rest)
        .map(|a| {
            let a = a.to_string_lossy();
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
            if plain {
                a.into_owned()
            } else {
                env::sh_quote(&a)
            }
        })
        .collect();
    let s = words.join(" ");
    if s.chars().count() > 60 {
        s.chars().take(57).collect::<String>() + "..."
    } else {
        s
    }
}

/// Waits for the child, forwarding SIGTERM to it and riding out the terminal's signals.
async fn wait_child(mut child: tokio::process::Child, signals: &mut Signals) -> Exit {
    loop {
        tokio::select! {
            status = child.wait() => return Exit::from_status(status),
            sig = signals.recv() => {
                if sig == Caught::Terminate {
                    forward_terminate(&mut child).await;
                }
            }
        }
    }
}

/// A signal mcptap caught while its command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caught {
    /// SIGTERM: forwarded.
    Terminate,
    /// SIGINT, SIGQUIT, SIGHUP: the terminal delivered them to the command as well.
    FromTerminal,
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let on = |kind: SignalKind| {
            signal(kind)
                .context("cannot install signal handlers")
                .kind(ErrorKind::Internal)
        };
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            quit: on(SignalKind::quit())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Caught {
        tokio::select! {
            Some(()) = self.term.recv() => Caught::Terminate,
            Some(()) = self.int.recv() => Caught::FromTerminal,
            Some(()) = self.quit.recv() => Caught::FromTerminal,
            Some(()) = self.hup.recv() => Caught::FromTerminal,
            else => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals)
    }

    async fn recv(&mut self) -> Caught {
        // The console sends Ctrl-C to every process attached to it, the command included.
        let _ = tokio::signal::ctrl_c().await;
        Caught::FromTerminal
    }
}

/// Sends SIGTERM to the child. The workspace forbids `unsafe` and the binary has no signal
/// crate, so this runs `kill(1)`; without it the child is killed outright. The child has not
/// been reaped (we are not inside `wait`), so its pid cannot have been reused.
async fn forward_terminate(child: &mut tokio::process::Child) {
    let Some(pid) = child.id() else {
        return;
    };
    let sent = tokio::process::Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .status()
        .await;
    if !sent.is_ok_and(|s| s.success()) {
        say!("mcptap: cannot forward SIGTERM with kill(1); killing the command instead");
        let _ = child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Exit::Code(0).code(), 0);
        assert_eq!(Exit::Code(7).code(), 7);
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::Signal(2).code(), 130);
        assert_eq!(Exit::NotStarted(127).code(), 127);
    }

    #[test]
    fn the_child_gets_a_loopback_url_with_encoded_credentials() {
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(proxy_url(any, None), "http://127.0.0.1:4000");
        let v6: SocketAddr = "[::]:4000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(proxy_url(v6, None), "http://[::1]:4000");
        let lo: SocketAddr = "127.0.0.1:5".parse().unwrap_or_else(|_| unreachable!());
        let url = proxy_url(lo, Some("me:p@ss:word"));
        assert_eq!(url, "http://me:p%40ss%3Aword@127.0.0.1:5");
        assert_eq!(redact_url(&url), "http://me:***@127.0.0.1:5");
    }
}
