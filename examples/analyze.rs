//! The analyzer as a library: load a session directory, a journal or any HAR file (mcptap's
//! own, or a browser's, mitmproxy's, HTTP Toolkit's…), analyse it and print each finding with
//! the flows that prove it — what `mcptap analyze FILE` does, in a dozen lines.
//!
//! ```text
//! cargo run --example analyze -- ~/.mcptap/sessions/2026-11-30T10-00-00Z
//! cargo run --example analyze -- capture.har
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: analyze SESSION_DIR|JOURNAL|HAR")?;
    let session = mcptap_store::load(std::path::Path::new(&path))?;
    let report = mcptap_analyze::analyze(&session.flows);
    println!(
        "{} flows, {} findings",
        session.flows.len(),
        report.findings.len()
    );
    for f in &report.findings {
        let evidence: Vec<String> = f.evidence.iter().map(|id| id.to_string()).collect();
        println!(
            "[{}] {} ({}): {}\n    flows: {}\n    see: mcptap explain {}",
            f.severity.as_str(),
            f.id,
            f.culprit.as_str(),
            f.summary,
            evidence.join(" "),
            f.id
        );
    }
    Ok(())
}
