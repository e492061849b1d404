//! `mcptap explain ID`: the page for a finding, like `rustc --explain`.

use crate::args::ExplainArgs;
use std::process::ExitCode;

/// Runs `mcptap explain`.
pub fn main(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    match args.id.as_deref().and_then(mcptap_analyze::explain) {
        Some(page) => {
            print!("{page}");
            if !page.ends_with('\n') {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            if let Some(id) = &args.id {
                say!("mcptap: no finding called {id:?}. Known findings:");
            } else {
                say!("mcptap: which finding? Known findings:");
            }
            for id in mcptap_analyze::finding_ids() {
                say!("  {id}");
            }
            Ok(ExitCode::from(if args.id.is_some() { 2 } else { 0 }))
        }
    }
}

/// One line for a finding in the line view.
pub fn finding_line(f: &mcptap_analyze::Finding) -> String {
    let evidence: Vec<String> = f.evidence.iter().map(|id| id.to_string()).collect();
    let sub = f.subcase.map(|s| format!(" ({s})")).unwrap_or_default();
    format!(
        "!! FINDING [{}] {}{} — culprit: {}\n   {}\n   evidence: {}\n   fix: {}\n   more: mcptap explain {}",
        f.severity.as_str(),
        f.id,
        sub,
        f.culprit.as_str(),
        f.summary,
        evidence.join(" "),
        f.hint,
        f.id
    )
}
