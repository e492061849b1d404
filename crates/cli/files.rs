//! Commands on saved sessions and HAR files: `export`, `analyze`, `report`.

use crate::args::{AnalyzeArgs, ExportArgs, ReportArgs};
use crate::error::{with_kind, ErrorKind, ResultExt as _};
use anyhow::Context as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Step 1 of the offline pipeline: reads a session directory, a journal or any HAR file whole,
/// saying on stderr what was tolerated. An error says which file and why, with the kind its
/// cause has (input for a path or a file that cannot be used, I/O otherwise).
pub fn read(path: &Path) -> anyhow::Result<mcptap_store::Session> {
    // A probe's probe.json stands for its session directory.
    let path = &crate::probe::session_of(path);
    let session = mcptap_store::load(path)
        .map_err(|e| store_error(format!("cannot read {}", path.display()), &e))?;
    for w in &session.warnings {
        say!("mcptap: warning: {}: {w}", path.display());
    }
    Ok(session)
}

/// Step 2: how flows are prepared offline, as the live proxy prepares them: bodies decoded,
/// secrets redacted unless `keep_secrets` (a HAR from another tool may hold raw ones).
pub fn prepare_options(keep_secrets: bool) -> mcptap_store::Options {
    mcptap_store::Options {
        keep_secrets,
        ..Default::default()
    }
}

/// Steps 2 and 3 of the one offline pipeline (`analyze`, `report`, `view`; `export` streams
/// through the same step 2): the flows prepared ([`prepare_options`]), then analysed as the
/// live proxy analysed them, up to the time recording stopped when the session says (so the
/// saved session gives what the live proxy printed). Reverse mode comes from the flag or the
/// session's own record of its [`Mode`](crate::config::Mode).
pub fn analyze_session(
    session: &mut mcptap_store::Session,
    reverse: bool,
    keep_secrets: bool,
) -> mcptap_analyze::Report {
    let prepare = prepare_options(keep_secrets);
    for f in &mut session.flows {
        mcptap_store::prepare(f, &prepare);
    }
    let reverse = reverse
        || session
            .meta
            .as_ref()
            .and_then(|m| m.mode.as_deref())
            .and_then(|m| m.parse::<crate::config::Mode>().ok())
            .is_some_and(|m| m.is_reverse());
    mcptap_analyze::analyze_ended(
        &session.flows,
        session.ended,
        mcptap_analyze::Options {
            reverse_proxy: reverse,
            ..Default::default()
        },
    )
}

/// A store error under `what`, its sources said once, with the kind its type gives.
fn store_error(what: String, e: &mcptap_store::StoreError) -> anyhow::Error {
    with_kind(
        ErrorKind::of_error(e),
        anyhow::anyhow!("{what}: {}", chain(e)),
    )
}

/// An error and its sources, each said once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// `mcptap export`: the journal is streamed (a crashed session of any size exports in bounded
/// memory), its flows prepared by the offline pipeline's step 2 ([`prepare_options`]).
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let opts = mcptap_store::ExportOptions {
        prepare: prepare_options(args.keep_secrets),
        ..Default::default()
    };
    if args.keep_secrets {
        say!("mcptap: {}", mcptap_store::KEEP_SECRETS_WARNING);
    }
    let result = if args.output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let r = mcptap_store::export_to(&args.input, &mut out, &args.output, &opts);
        out.flush().context("writing to stdout")?;
        r
    } else {
        mcptap_store::export(&args.input, &args.output, &opts)
    };
    let report =
        result.map_err(|e| store_error(format!("cannot export {}", args.input.display()), &e))?;
    for w in &report.warnings {
        say!("mcptap: warning: {w}");
    }
    if args.output.as_os_str() != "-" {
        say!(
            "mcptap: wrote {} entries to {}{}",
            report.entries,
            args.output.display(),
            match (report.pending, report.cut_short) {
                (0, _) => String::new(),
                (n, true) => format!(" ({n} unfinished at the time of the crash)"),
                // A clean end: whatever is unfinished is not a crash's doing.
                (n, false) => format!(" ({n} without an end in the recording)"),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcptap analyze`: exit 1 when a finding is at or above `--fail-on`.
pub fn analyze(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let mut session = read(&args.input)?;
    let mut report = analyze_session(&mut session, args.reverse, false);
    crate::probe::apply_saved(&args.input, &mut report);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", mcptap_analyze::render_text(&report))?;
    }
    out.flush()?;
    Ok(if report.fails(args.fail_on.into()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `mcptap report`.
pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let mut session = read(&args.input)?;
    let mut report = analyze_session(&mut session, false, false);
    crate::probe::apply_saved(&args.input, &mut report);
    let mut md = mcptap_analyze::render_markdown(
        &report,
        &session.flows,
        &mcptap_analyze::MarkdownOptions::default(),
    );
    // A probe's report shows its steps next to the verdict, before the story.
    if let Some(steps) = crate::probe::steps_markdown(&args.input) {
        let at = md.find("\n## ").map_or(md.len(), |i| i + 1);
        md.insert_str(at, &steps);
    }
    if let Some(path) = &args.html {
        let html = mcptap_analyze::render_html(
            &report,
            &session.flows,
            &mcptap_analyze::MarkdownOptions::default(),
        );
        write_whole(path, html.as_bytes())?;
        if args.output.is_none() {
            // stdout stays the markdown only when asked for nothing else.
            return Ok(ExitCode::SUCCESS);
        }
    }
    match &args.output {
        Some(path) => write_whole(path, md.as_bytes())?,
        None => print!("{md}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a whole file atomically (temp file, `sync_data`, rename: [`mcptap_store::write_atomic`]);
/// a failure ("cannot write PATH: why") is an I/O error.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    mcptap_store::write_atomic(path, |w| {
        w.write_all(bytes)
            .map_err(|source| mcptap_store::StoreError::Write {
                path: path.to_path_buf(),
                source,
            })
    })
    .kind(ErrorKind::Io)
}

/// [`write_file`], and says so on stderr.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_file(path, bytes)?;
    say!("mcptap: wrote {}", path.display());
    Ok(())
}
