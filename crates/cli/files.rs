//! Commands on saved sessions and HAR files: `export`, `analyze`, `report`.

use crate::args::{AnalyzeArgs, ExportArgs, ReportArgs};
use anyhow::Context as _;
use std::io::Write as _;
use std::process::ExitCode;

/// Exit status for unusable input (a CI can tell it from "findings found").
const UNUSABLE: u8 = 2;

fn load(path: &std::path::Path) -> Result<mcptap_store::Session, ExitCode> {
    match mcptap_store::load(path) {
        Ok(s) => {
            for w in &s.warnings {
                say!("mcptap: warning: {}: {w}", path.display());
            }
            Ok(s)
        }
        Err(e) => {
            say!(
                "mcptap: error: cannot read {}: {}",
                path.display(),
                chain(&e)
            );
            Err(ExitCode::from(UNUSABLE))
        }
    }
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

/// `mcptap export`.
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let opts = mcptap_store::ExportOptions {
        prepare: mcptap_store::Options {
            keep_secrets: args.keep_secrets,
            ..Default::default()
        },
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
    match result {
        Ok(report) => {
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
        Err(e) => {
            say!(
                "mcptap: error: cannot export {}: {}",
                args.input.display(),
                chain(&e)
            );
            Ok(ExitCode::from(UNUSABLE))
        }
    }
}

/// `mcptap analyze`.
pub fn analyze(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let threshold: mcptap_analyze::Severity = match args.fail_on.parse() {
        Ok(s) => s,
        Err(_) => {
            say!(
                "mcptap: error: --fail-on {:?}: use critical, high, medium, low or info",
                args.fail_on
            );
            return Ok(ExitCode::from(UNUSABLE));
        }
    };
    let session = match load(&args.input) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let reverse = args.reverse
        || session
            .meta
            .as_ref()
            .and_then(|m| m.mode.as_deref())
            .is_some_and(|m| m.starts_with("reverse"));
    let report = mcptap_analyze::analyze_with(
        &session.flows,
        mcptap_analyze::Options {
            reverse_proxy: reverse,
            ..Default::default()
        },
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", mcptap_analyze::render_text(&report))?;
    }
    out.flush()?;
    Ok(if report.fails(threshold) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `mcptap report`.
pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let session = match load(&args.input) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let report = mcptap_analyze::analyze(&session.flows);
    let md = mcptap_analyze::render_markdown(
        &report,
        &session.flows,
        &mcptap_analyze::MarkdownOptions::default(),
    );
    match &args.output {
        Some(path) => {
            mcptap_store::write_atomic(path, |w| {
                w.write_all(md.as_bytes())
                    .map_err(|source| mcptap_store::StoreError::Write {
                        path: path.clone(),
                        source,
                    })
            })
            .with_context(|| format!("cannot write {}", path.display()))?;
            say!("mcptap: wrote {}", path.display());
        }
        None => print!("{md}"),
    }
    Ok(ExitCode::SUCCESS)
}
