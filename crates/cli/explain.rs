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

/// A finding as the line view prints it when it is announced: new, suspected, confirmed,
/// amended (a recovery) or cleared. Several lines.
pub fn finding_line(f: &mcptap_analyze::Finding) -> String {
    use mcptap_analyze::Status;
    let evidence: Vec<String> = f.evidence.iter().map(|id| id.to_string()).collect();
    let sub = f.subcase.map(|s| format!(" ({s})")).unwrap_or_default();
    let head = match (f.status, f.amendments.last()) {
        (Status::Suspected, None) => "?? SUSPECTED",
        (Status::Suspected, Some(_)) => "?? STILL SUSPECTED",
        (Status::Cleared, _) => "-- CLEARED",
        (Status::Confirmed, Some(a)) if a.starts_with("confirmed") => "!! CONFIRMED",
        (Status::Confirmed, Some(_)) => "!! AMENDED",
        (Status::Confirmed, None) => "!! FINDING",
    };
    let mut out = format!(
        "{head} [{}] {}{} — culprit: {}\n   {}\n   evidence: {}",
        f.severity.as_str(),
        f.id,
        sub,
        f.culprit.as_str(),
        f.summary,
        evidence.join(" "),
    );
    if let Some(d) = &f.decides {
        out.push_str(&format!("\n   decides: {d}"));
    }
    if let Some(a) = f.amendments.last() {
        out.push_str(&format!("\n   {a}"));
    }
    if f.status != Status::Cleared {
        out.push_str(&format!(
            "\n   fix: {}\n   more: mcptap explain {}",
            f.hint, f.id
        ));
    }
    out
}

/// A finding as one line (for stderr while `mcptap run`'s command owns the terminal).
pub fn finding_oneline(f: &mcptap_analyze::Finding) -> String {
    use mcptap_analyze::Status;
    let evidence: Vec<String> = f.evidence.iter().map(|id| id.to_string()).collect();
    let status = match f.status {
        Status::Suspected => " suspected",
        Status::Cleared => " cleared",
        Status::Confirmed => "",
    };
    let last = f
        .amendments
        .last()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    format!(
        "mcptap: [{}{status}] {} ({}): {} [{}]{last}",
        f.severity.as_str(),
        f.id,
        f.culprit.as_str(),
        f.summary,
        evidence.join(" ")
    )
}
