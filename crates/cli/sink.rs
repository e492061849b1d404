//! Where the engine's events go (ripgrep's `Sink`): redaction and decoding first, then the
//! journal, the line view or the terminal view, and the live analyzer; and, at the end, the
//! closing [`Summary`]. [`crate::proxy`] wires a [`Sink`] to the engine; nothing here knows
//! how the proxy was started.

use mcptap_flow::FlowEvent;
use mcptap_proxy::EventReceiver;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The recorder yields its core after this many events of a batch (`sched_yield`: a no-op
/// when no other thread waits for the core). A batch of a few hundred flows took the core for
/// ~0.3 ms at a time, and the request a worker was serving then waited behind it. Measured
/// with the harness's `perfload small` at one connection, interleaved runs, p99: 0.47 ms
/// without, 0.28 ms yielding every ~8 flows, 0.36 ms every ~32 (hudsucker 0.28 ms); at 32
/// connections 3.4 ms against 2.9 ms. CPU per request did not move beyond the noise.
const YIELD_EVERY: usize = 8;
/// A batch larger than this means the recorder is behind the traffic: it then works through
/// it without yielding. Yielding under saturation let the backlog grow (RSS at 32 busy
/// connections rose from 20 MB to 45-90 MB) and, left so, would fill the channel.
const YIELD_BATCH_MAX: usize = 256;

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
    /// Raw secret values seen in the heads of flows still streaming (memory only), scrubbed
    /// from their later events (see [`mcptap_store::prepare_event_known`]).
    known: HashMap<mcptap_flow::FlowId, Vec<String>>,
    /// Where lines go; `None` is stdout.
    out: Option<Box<dyn Write + Send>>,
    /// Also say each finding as it is announced on stderr, one line each (`mcptap run`: the
    /// line view goes to a file while the command owns the terminal).
    findings_to_stderr: bool,
    /// The terminal view, when it replaces the line view.
    ui: Option<mcptap_tui::Feed>,
    /// What the terminal view asks for (flows it no longer holds), answered from the journal.
    ui_requests: Option<tokio::sync::mpsc::UnboundedReceiver<mcptap_tui::Request>>,
    /// With a terminal view: where each recorded flow's final line starts in the journal.
    offsets: HashMap<mcptap_flow::FlowId, u64>,
    /// Reverse mode without `--rewrite-metadata`: says when an answer sends the client around
    /// the proxy.
    bypass: Option<crate::bypass::BypassWatch>,
    /// Where the engine keeps large bodies until a final event is handled here: they are put
    /// back one flow at a time, so that at most one of them is in memory (see
    /// [`mcptap_proxy::Spools`]).
    spools: Option<mcptap_proxy::Spools>,
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

/// The terminal view's next request; never resolves without a view (or once it is gone).
async fn next_request(
    requests: &mut Option<tokio::sync::mpsc::UnboundedReceiver<mcptap_tui::Request>>,
) -> Option<mcptap_tui::Request> {
    match requests {
        Some(rx) => match rx.recv().await {
            Some(r) => Some(r),
            None => {
                *requests = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

impl Sink {
    /// Sends the line view (and live findings) to `out` instead of stdout.
    pub fn lines_to(&mut self, out: Box<dyn Write + Send>) {
        self.out = Some(out);
    }

    /// Also says each finding on stderr, one line each, as it is announced.
    pub fn findings_to_stderr(&mut self) {
        self.findings_to_stderr = true;
    }

    /// Feeds the terminal view instead of printing lines, and answers what it asks on
    /// `requests` (the view's [`mcptap_tui::Host`]) while consuming.
    pub fn ui_to(
        &mut self,
        feed: mcptap_tui::Feed,
        requests: tokio::sync::mpsc::UnboundedReceiver<mcptap_tui::Request>,
    ) {
        self.ui = Some(feed);
        self.ui_requests = Some(requests);
    }

    /// Answers the terminal view: a flow it no longer holds, read back from the journal at the
    /// offset its final line was written at.
    fn answer(&mut self, request: mcptap_tui::Request) {
        let mcptap_tui::Request::Flow(id) = request;
        let offset = self.offsets.get(&id).copied();
        if offset.is_some() {
            // Its line may still sit in the journal's buffer.
            self.flush_journal();
        }
        let found = match (&self.journal, offset) {
            (Some(j), Some(offset)) => mcptap_store::read_flow_at(j.path(), offset),
            _ => Ok(None),
        };
        let Some(ui) = &self.ui else {
            return;
        };
        ui.send(match found {
            Ok(Some(flow)) if flow.id == id => mcptap_tui::Msg::Loaded(Box::new(flow)),
            Ok(_) if offset.is_none() => mcptap_tui::Msg::Unavailable {
                id,
                why: mcptap_tui::NOT_RECORDED.to_owned(),
            },
            Ok(_) => mcptap_tui::Msg::Unavailable {
                id,
                why: "It could not be read back from the session journal.".to_owned(),
            },
            Err(e) => mcptap_tui::Msg::Unavailable {
                id,
                why: format!(
                    "It could not be read back from the session journal: {}",
                    crate::files::chain(&e)
                ),
            },
        });
    }

    /// Says when an answer sends the client around the proxy (reverse mode without
    /// `--rewrite-metadata`).
    pub fn watch_bypass(&mut self, watch: crate::bypass::BypassWatch) {
        self.bypass = Some(watch);
    }

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
            ui_requests: None,
            offsets: HashMap::new(),
            known: HashMap::new(),
            spools: None,
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
        // In the session directory when recording (on disk, where /tmp may be memory).
        let dir = self.journal.as_ref().map(|j| j.dir().to_path_buf());
        self.spools = Some(rx.spool_large_bodies_in(dir));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(1024);
        let mut idle_polls = IDLE_POLLS;
        let mut requests = self.ui_requests.take();
        loop {
            let polling = idle_polls < IDLE_POLLS;
            tokio::select! {
                Some(req) = next_request(&mut requests) => self.answer(req),
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
        // Behind (a large batch waited): no yielding until it has caught up, so the channel
        // never backs up (memory) and nothing is dropped.
        let polite = batch.len() <= YIELD_BATCH_MAX;
        let mut handled = 0;
        for ev in batch.drain(..) {
            let redundant = matches!(
                ev,
                FlowEvent::RequestStarted { .. } | FlowEvent::ResponseHead { .. }
            ) && whole.contains(&ev.flow_id());
            self.event(ev, redundant);
            if !redundant {
                handled += 1;
                if polite && handled % YIELD_EVERY == 0 {
                    // Give the core back to a worker that is waiting for it (see YIELD_EVERY).
                    std::thread::yield_now();
                }
            }
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
        if let Some(spools) = &self.spools {
            spools.unspool(&mut ev);
        }
        let id = ev.flow_id();
        if ev.is_final() {
            self.known.remove(&id);
            mcptap_store::prepare_event(&mut ev, &self.prepare);
        } else {
            let known = self.known.entry(id).or_default();
            mcptap_store::prepare_event_known(&mut ev, &self.prepare, known);
            if known.is_empty() {
                self.known.remove(&id);
            }
        }
        if let Some(j) = self.journal.as_mut().filter(|_| !redundant) {
            let offset = j.position();
            if self.journal_failed {
                self.not_recorded += u64::from(ev.is_final());
            } else {
                match j.record_unflushed(&mut ev) {
                    Ok(_) => {
                        self.unflushed += u64::from(ev.is_final());
                        if self.ui.is_some() && ev.is_final() {
                            self.offsets.insert(ev.flow_id(), offset);
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
        self.known.clear();
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

    /// A quiet sink recording into `s/` of a new temporary directory.
    fn recording() -> (tempfile::TempDir, Sink) {
        let dir = tempfile::tempdir().unwrap();
        let journal = mcptap_store::Journal::create(
            &dir.path().join("s"),
            mcptap_store::SessionMeta::new("test"),
        )
        .unwrap();
        let sink = Sink::new(true, false, Some(journal), Default::default());
        (dir, sink)
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
    fn a_token_from_a_streams_request_head_is_scrubbed_from_its_events_on_disk() {
        let (dir, mut sink) = recording();
        let path = dir.path().join("s/journal.jsonl");
        let token = "tok-5bd1c0ffee-42";
        let mut f = flow(5);
        f.request.headers = [("authorization", format!("Bearer {token}"))]
            .into_iter()
            .collect();
        let echo = |n: u32| FlowEvent::Sse {
            id: FlowId(5),
            event: mcptap_flow::SseEvent {
                at: 2_500,
                // Not a secret field: only the token known from the head gives it away.
                data: format!(
                    r#"{{"jsonrpc":"2.0","method":"log","params":{{"n":{n},"seen":"Bearer {token}"}}}}"#
                ),
                ..Default::default()
            },
        };
        // The head in one batch, the events in later ones: each line is written at once.
        sink.batch(&mut vec![FlowEvent::RequestStarted {
            flow: Box::new(f.clone()),
        }]);
        sink.batch(&mut vec![head(5), echo(1)]);
        sink.batch(&mut vec![echo(2)]);
        sink.batch(&mut vec![done(5)]);
        sink.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(r#""type":"sse""#).count(), 2, "{text}");
        assert!(!text.contains(token), "{text}");
        assert_eq!(
            text.matches(&mcptap_flow::redact::redacted(token)).count(),
            3,
            "the head's header and both events: {text}"
        );
    }

    #[test]
    fn a_flow_without_an_end_is_ended_as_aborted_by_the_shutdown_and_counted() {
        let (dir, mut sink) = recording();
        let path = dir.path().join("s/journal.jsonl");
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

    #[tokio::test]
    async fn the_terminal_view_asks_for_an_evicted_flow_and_gets_it_from_the_journal() {
        let (dir, mut sink) = recording();
        let (feed, inbox) = mcptap_tui::channel(64);
        let (ask, requests) = tokio::sync::mpsc::unbounded_channel();
        sink.ui_to(feed, requests);
        // Flow 1 spans two batches: its final line points at its start line for its head.
        sink.batch(&mut vec![started(1)]);
        sink.batch(&mut vec![head(1), done(1), started(2)]);
        let journal = std::fs::read_to_string(dir.path().join("s/journal.jsonl")).unwrap();
        let end = journal.lines().find(|l| l.contains(r#""completed""#));
        assert!(
            end.is_some_and(|l| l.starts_with(r#"{"type":"completed","head":["#)),
            "{journal}"
        );
        let (tx, rx) = mcptap_proxy::events::channel(8);
        let (_stop_tx, stop) = tokio::sync::oneshot::channel();
        ask.send(mcptap_tui::Request::Flow(FlowId(1))).unwrap();
        ask.send(mcptap_tui::Request::Flow(FlowId(2))).unwrap();
        drop(ask);
        // Answered while consuming; the engine going away ends it.
        let consume = sink.consume(rx, stop);
        tokio::pin!(consume);
        tokio::select! {
            _ = &mut consume => panic!("ended before answering"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        drop(tx);
        consume.await;
        let answers: Vec<_> = std::iter::from_fn(|| inbox.try_recv())
            .filter(|m| {
                matches!(
                    m,
                    mcptap_tui::Msg::Loaded(_) | mcptap_tui::Msg::Unavailable { .. }
                )
            })
            .collect();
        match &answers[..] {
            [mcptap_tui::Msg::Loaded(flow), mcptap_tui::Msg::Unavailable { id, why }] => {
                assert_eq!(flow.id, FlowId(1));
                assert_eq!(flow.request.url, "https://mcp.example/mcp?n=1");
                assert_eq!(*id, FlowId(2));
                assert_eq!(why, mcptap_tui::NOT_RECORDED);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_batch_writes_flows_finished_in_it_once_and_keeps_the_rest_whole() {
        let (dir, mut sink) = recording();
        let (session, path) = (dir.path().join("s"), dir.path().join("s/journal.jsonl"));
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
