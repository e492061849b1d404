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

/// Steps 2 and 3 of the one offline pipeline on a session in memory (`view`, `mcp`, and
/// [`analyze_file`] when a file breaks its order; `export` streams through the same step 2;
/// `analyze` and `report` stream through all three with [`analyze_file`]): the flows prepared ([`prepare_options`]), then analysed as the
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

/// Whether a session's own record of its [`Mode`](crate::config::Mode) says reverse mode.
fn says_reverse(meta: Option<&mcptap_store::SessionMeta>) -> bool {
    meta.and_then(|m| m.mode.as_deref())
        .and_then(|m| m.parse::<crate::config::Mode>().ok())
        .is_some_and(|m| m.is_reverse())
}

/// Set (to anything) to analyse sessions whole, as before streaming: tests compare the two.
pub const WHOLE_ENV: &str = "MCPTAP_OFFLINE_WHOLE";

/// Steps 1 to 3 of the offline pipeline for a file of any size (`analyze`, `report`): the
/// file is read one flow at a time ([`mcptap_store::stream`]), each flow prepared
/// ([`prepare_options`]), handed to the analyzer in completion order
/// ([`mcptap_analyze::Ordered`]) and dropped; only what the report lists is kept. The report
/// is [`analyze_session`]'s. Returns the session without its flows.
///
/// Two cases read the file again: a HAR file that states reverse mode (after its entries:
/// analysed once more in that mode), and a file whose order broke its bound (a flow that
/// completed before one already analysed): analysed whole, as [`analyze_session`] does.
pub fn analyze_file(
    input: &Path,
    reverse: bool,
    keep_secrets: bool,
) -> anyhow::Result<(mcptap_store::Session, mcptap_analyze::Report)> {
    let path = &crate::probe::session_of(input);
    if std::env::var_os(WHOLE_ENV).is_some() {
        let mut session = read(path)?;
        let report = analyze_session(&mut session, reverse, keep_secrets);
        session.flows = Vec::new();
        return Ok((session, report));
    }
    let cannot =
        |e: mcptap_store::StoreError| store_error(format!("cannot read {}", path.display()), &e);
    let leading = mcptap_store::leading_meta(path).map_err(cannot)?;
    let mut reverse_now = reverse || says_reverse(leading.as_ref());
    let prepare = prepare_options(keep_secrets);
    let mut said = false;
    let most_flows = most_flows(path);
    loop {
        let mut ordered = mcptap_analyze::Ordered::new(mcptap_analyze::Options {
            reverse_proxy: reverse_now,
            ..Default::default()
        });
        ordered.reserve_flows(most_flows);
        // Flows that wait for their turn go on before the next flow's large bodies are read
        // (`Streamed::Early`): one large flow in memory at a time, not two.
        let session = mcptap_store::stream_early(path, &mut |s| match s {
            mcptap_store::Streamed::Early(bound) => ordered.advance(bound),
            mcptap_store::Streamed::Flow(mut f, bound) => {
                mcptap_store::prepare(&mut f, &prepare);
                ordered.push(f, bound);
            }
        })
        .map_err(cannot)?;
        if !said {
            for w in &session.warnings {
                say!("mcptap: warning: {}: {w}", path.display());
            }
            said = true;
        }
        let reverse_said = reverse || says_reverse(session.meta.as_ref());
        if reverse_said != reverse_now {
            reverse_now = reverse_said;
            continue;
        }
        tracing::debug!(most_waiting = ordered.most_waiting(), "streamed analysis");
        if let Some(report) = ordered.finish(session.ended) {
            return Ok((session, report));
        }
        tracing::debug!("flows out of their order: analysing the session whole");
        let mut whole = mcptap_store::load(path).map_err(cannot)?;
        let report = analyze_session(&mut whole, reverse, keep_secrets);
        whole.flows = Vec::new();
        return Ok((whole, report));
    }
}

/// Bytes of the smallest flow a journal line or a HAR entry holds (a request line with no
/// headers and no response is about 300).
const MIN_FLOW_BYTES: u64 = 256;
/// At most this many flows' room is made at once (about 400 MB of address space, none of it
/// touched until used).
const MOST_FLOWS_RESERVED: u64 = 1 << 20;

/// The most flows the session at `path` can hold, as far as its size tells (room made for
/// them at once: [`mcptap_analyze::Ordered::reserve_flows`]).
fn most_flows(path: &Path) -> usize {
    let file = match mcptap_store::detect(path) {
        Ok((file, _)) => file,
        Err(_) => return 0,
    };
    let len = std::fs::metadata(file).map_or(0, |m| m.len());
    usize::try_from((len / MIN_FLOW_BYTES).min(MOST_FLOWS_RESERVED)).unwrap_or(0)
}

/// The flows `ids` names, read again from `path` and prepared as [`analyze_file`] prepared
/// them, in start order (what `report` shows in full: evidence and the first flows).
pub fn read_flows(
    input: &Path,
    ids: &std::collections::HashSet<mcptap_flow::FlowId>,
    keep_secrets: bool,
) -> anyhow::Result<Vec<mcptap_flow::Flow>> {
    let path = &crate::probe::session_of(input);
    let prepare = prepare_options(keep_secrets);
    let mut flows = Vec::new();
    mcptap_store::stream(path, &mut |mut f, _| {
        if ids.contains(&f.id) {
            mcptap_store::prepare(&mut f, &prepare);
            flows.push(f);
        }
    })
    .map_err(|e| store_error(format!("cannot read {}", path.display()), &e))?;
    flows.sort_by_key(|f| (f.timings.started, f.id));
    Ok(flows)
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
    let (_, mut report) = analyze_file(&args.input, args.reverse, false)?;
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

/// At least as many flows as the HTML report details (`MAX_DETAILED_FLOWS` there, 400).
const REPORT_DETAILED: usize = 1000;

/// `mcptap report`.
pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (_, mut report) = analyze_file(&args.input, false, false)?;
    crate::probe::apply_saved(&args.input, &mut report);
    // Only the flows the report shows in full are read again: the evidence (markdown) and,
    // for HTML, the first listed flows.
    let detailed = if args.html.is_some() {
        REPORT_DETAILED
    } else {
        0
    };
    let ids: std::collections::HashSet<_> = report
        .findings
        .iter()
        .flat_map(|f| f.evidence.iter().copied())
        .chain(report.flows.iter().take(detailed).map(|f| f.id))
        .collect();
    let flows = read_flows(&args.input, &ids, false)?;
    let mut md = mcptap_analyze::render_markdown(
        &report,
        &flows,
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
            &flows,
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
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(md.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the report")?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The flows of the journal at `seed`, each JSON object body given a large member with
    /// escapes of every kind, written as a journal with its bodies inline, as a session (large
    /// bodies in its side file) and as a HAR file under `dir`.
    fn large_bodies(seed: &Path, dir: &Path) -> Vec<std::path::PathBuf> {
        let pad = "quote \" slash \\ é ☃ 😀 tab\t line\n ".repeat(4000);
        let mut flows = mcptap_store::load(seed).unwrap().flows;
        let grow = |b: &mut mcptap_flow::CapturedBody| {
            if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(&b.bytes) {
                m.insert("padding".into(), pad.clone().into());
                *b = mcptap_flow::CapturedBody::complete(serde_json::to_vec(&m).unwrap());
            }
        };
        for f in &mut flows {
            grow(&mut f.request.body);
            if let Some(r) = f.response.as_mut() {
                grow(&mut r.body);
            }
        }
        assert!(flows.iter().any(|f| f
            .response
            .as_ref()
            .is_some_and(|r| r.body.bytes.len() > 64 << 10)));
        let inline = dir.join("large-inline.jsonl");
        let mut lines = Vec::new();
        for f in &flows {
            let ev = mcptap_flow::FlowEvent::Completed {
                flow: Box::new(f.clone()),
            };
            serde_json::to_writer(&mut lines, &ev).unwrap();
            lines.push(b'\n');
        }
        std::fs::write(&inline, lines).unwrap();
        let session = dir.join("large-session");
        let meta = mcptap_store::SessionMeta::new("test");
        let mut journal = mcptap_store::Journal::create(&session, meta).unwrap();
        for f in &flows {
            let ev = mcptap_flow::FlowEvent::Completed {
                flow: Box::new(f.clone()),
            };
            journal.record(&ev).unwrap();
        }
        journal.finish().unwrap();
        assert!(session.join("bodies.bin").exists());
        let har = dir.join("large.har");
        mcptap_store::export(&session, &har, &Default::default()).unwrap();
        vec![inline, session, har]
    }

    /// The streaming pipeline against the whole session in memory, on every HAR and journal
    /// the repository keeps (other tools' HAR files, a journal, a torn one), with the flows
    /// also handed over in reverse and shuffled file order (a bound the file breaks).
    #[test]
    fn streaming_analysis_says_what_the_whole_session_says() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [
            "crates/store/tests/fixtures",
            "fuzz/seeds/har",
            "fuzz/seeds/journal",
        ] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                let p = e.unwrap().path();
                if matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("har" | "jsonl")
                ) {
                    files.push(p);
                }
            }
        }
        assert!(files.len() >= 8, "{files:?}");
        // Each HAR file again with its entries reversed: a file that breaks its order, so
        // that the streamed analysis falls back to the whole session.
        let dir = tempfile::tempdir().unwrap();
        // The journal seed with large bodies: inline in its lines, in a session's side file,
        // and in a HAR file (what the readers cut out and read after the flows waiting).
        files.extend(large_bodies(
            &root.join("fuzz/seeds/journal/session.jsonl"),
            dir.path(),
        ));
        for file in files.clone() {
            if file.extension().is_some_and(|x| x == "har") {
                let mut doc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
                if let Some(entries) = doc["log"]["entries"].as_array_mut() {
                    entries.reverse();
                }
                let name = format!("reversed-{}", file.file_name().unwrap().to_string_lossy());
                let path = dir.path().join(name);
                std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
                files.push(path);
            }
        }
        for file in &files {
            for reverse in [false, true] {
                let mut whole = mcptap_store::load(file).unwrap();
                let want = analyze_session(&mut whole, reverse, false);
                let (_, got) = analyze_file(file, reverse, false).unwrap();
                assert_eq!(
                    serde_json::to_value(&got).unwrap(),
                    serde_json::to_value(&want).unwrap(),
                    "{file:?}"
                );
                assert_eq!(
                    mcptap_analyze::render_text(&got),
                    mcptap_analyze::render_text(&want)
                );
                // The same flows in an order no bound promises: Ordered says so (or, when
                // the order happens to hold, gives the same report).
                let mut flows = whole.flows.clone();
                flows.reverse();
                let opts = mcptap_analyze::Options {
                    reverse_proxy: reverse,
                    ..Default::default()
                };
                let mut ordered = mcptap_analyze::Ordered::new(opts.clone());
                for f in flows {
                    let bound = f.timings.started;
                    ordered.push(f, bound);
                }
                if let Some(r) = ordered.finish(whole.ended) {
                    assert_eq!(
                        serde_json::to_value(&r).unwrap(),
                        serde_json::to_value(&want).unwrap()
                    );
                }
                // With no bound at all (everything waits to the end): the same report.
                let mut ordered = mcptap_analyze::Ordered::new(opts);
                for f in whole.flows.iter().rev().cloned() {
                    ordered.push(f, mcptap_flow::Micros::MIN);
                }
                assert_eq!(
                    serde_json::to_value(ordered.finish(whole.ended).unwrap()).unwrap(),
                    serde_json::to_value(&want).unwrap(),
                    "{file:?}"
                );
            }
        }
    }
}
