//! The model and its update function: every change to what the view shows goes through
//! [`update`] (engine events, findings, keys), so a test can drive the view without a terminal.

use crate::detail;
use crate::filter::Filter;
use crate::row::Row;
use crate::store::{Host, Request, Store, DEFAULT_KEEP};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use mcptap_analyze::{Finding, FindingId, FlowSummary, Report, Severity, Status};
use mcptap_flow::{Flow, FlowEvent, FlowId, FlowState};
use ratatui::text::Line;
use std::cell::Cell;
use std::collections::HashMap;

/// What the view reacts to.
#[derive(Debug, Clone)]
pub enum Msg {
    /// An engine event, already prepared (decoded, redacted) by the caller.
    Event(FlowEvent),
    /// The analyzer's classification of a finished flow (role, MCP methods).
    Classified(Box<FlowSummary>),
    /// Every finding so far, in the report's order (replaces the list).
    Findings(Vec<Finding>),
    /// A one-line message for the status line (a recording error, …).
    Notice(String),
    /// The host's answer to [`Request::Flow`]: the whole flow.
    Loaded(Box<Flow>),
    /// The host's answer to [`Request::Flow`]: it cannot give that flow.
    Unavailable {
        /// The flow.
        id: FlowId,
        /// Why, as the detail pane says it.
        why: String,
    },
    /// A key press.
    Key(KeyEvent),
    /// Close the view (the proxy is shutting down).
    Quit,
}

impl Msg {
    /// A key press without modifiers (for tests and scripts).
    pub fn key(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    /// One key press per character of `s`.
    pub fn keys(s: &str) -> Vec<Msg> {
        s.chars().map(|c| Msg::key(KeyCode::Char(c))).collect()
    }
}

/// How a flow is cited by the findings: the marker in the flow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cite {
    /// The finding's number in the findings pane (1-based).
    pub number: usize,
    /// Its severity.
    pub severity: Severity,
    /// Only suspected so far.
    pub suspected: bool,
}

/// Which pane the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The flow list.
    Flows,
    /// The findings list.
    Findings,
    /// The detail pane (arrows scroll it).
    Detail,
}

/// A window over the panes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popup {
    /// The keys and the filter syntax.
    Help,
    /// A finding's explain page.
    Explain {
        /// Index into the findings.
        finding: usize,
        /// Lines scrolled.
        scroll: u16,
    },
}

/// How the view is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the title bar says after `mcptap` (the proxy address, the file name).
    pub title: String,
    /// Colours (off for `NO_COLOR`).
    pub color: bool,
    /// Whole flows kept for the detail pane; `None` keeps all.
    pub keep: Option<usize>,
    /// Read-only view of a file (no follow mode at start, no "live" marker).
    pub read_only: bool,
    /// What the empty flow list says to do (how to point a client at the proxy, where the CA
    /// is), one line each; the hint printed before the alternate screen would be hidden.
    pub setup: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            title: String::new(),
            color: color_from_env(),
            keep: Some(DEFAULT_KEEP),
            read_only: false,
            setup: Vec::new(),
        }
    }
}

/// False when `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn color_from_env() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The detail pane's content for one flow, built when the selection or the flow changes.
#[derive(Debug, Default)]
pub(crate) struct DetailCache {
    pub id: Option<FlowId>,
    pub lines: Vec<Line<'static>>,
    pub stale: bool,
}

/// The whole state of the view.
#[derive(Debug)]
pub struct App {
    pub(crate) opts: Options,
    pub(crate) rows: Vec<Row>,
    index: HashMap<FlowId, usize>,
    /// Indices into `rows` that pass the filter, ascending.
    pub(crate) visible: Vec<usize>,
    /// Position in `visible`.
    pub(crate) selected: Option<usize>,
    pub(crate) follow: bool,
    pub(crate) store: Store,
    /// Where to ask for flows the store no longer holds.
    host: Option<Host>,
    pub(crate) findings: Vec<Finding>,
    /// The most severe finding citing each flow (findings that count only).
    pub(crate) cited: HashMap<FlowId, Cite>,
    /// Bare MCP requests a `token-not-sent` finding cites: the token the client held then
    /// (short fingerprint, when the evidence names its token flow).
    pub(crate) bare_alarm: HashMap<FlowId, Option<String>>,
    pub(crate) finding_sel: usize,
    evidence_next: usize,
    pub(crate) focus: Focus,
    pub(crate) popup: Option<Popup>,
    pub(crate) filter: Option<(String, Filter)>,
    /// The filter being typed, and why it does not parse.
    pub(crate) input: Option<(String, Option<String>)>,
    pub(crate) detail: DetailCache,
    pub(crate) detail_scroll: u16,
    pub(crate) notice: Option<String>,
    pub(crate) dropped: u64,
    pub(crate) quit: bool,
    /// First row shown in the flow list, as the last frame drew it (render-derived).
    pub(crate) list_offset: Cell<usize>,
    /// First finding shown, as the last frame drew it (render-derived).
    pub(crate) findings_offset: Cell<usize>,
    /// Rows of the flow list in the last frame (PageUp/PageDown step).
    pub(crate) list_height: Cell<usize>,
}

impl App {
    /// An empty view.
    pub fn new(opts: Options) -> App {
        let store = match opts.keep {
            Some(n) => Store::recent(n),
            None => Store::all(),
        };
        App {
            follow: !opts.read_only,
            opts,
            rows: Vec::new(),
            index: HashMap::new(),
            visible: Vec::new(),
            selected: None,
            store,
            host: None,
            findings: Vec::new(),
            cited: HashMap::new(),
            bare_alarm: HashMap::new(),
            finding_sel: 0,
            evidence_next: 0,
            focus: Focus::Flows,
            popup: None,
            filter: None,
            input: None,
            detail: DetailCache::default(),
            detail_scroll: 0,
            notice: None,
            dropped: 0,
            quit: false,
            list_offset: Cell::new(0),
            findings_offset: Cell::new(0),
            list_height: Cell::new(20),
        }
    }

    /// Asks `host` for the flows this view no longer holds (a live view of a recorded session).
    pub fn with_host(mut self, host: Host) -> App {
        self.host = Some(host);
        self
    }

    /// A read-only view of a whole session: its flows (already prepared) and their report.
    pub fn from_session(flows: Vec<Flow>, report: &Report, mut opts: Options) -> App {
        opts.read_only = true;
        opts.keep = None;
        let mut app = App::new(opts);
        let summaries: HashMap<FlowId, &FlowSummary> =
            report.flows.iter().map(|s| (s.id, s)).collect();
        app.rows.reserve(flows.len());
        for flow in flows {
            let mut row = Row::of(&flow);
            if let Some(s) = summaries.get(&flow.id) {
                row.classify(s, Some(&flow));
            }
            app.push_row(row);
            app.store.put(flow);
        }
        app.set_findings(report.findings.clone());
        if !app.visible.is_empty() {
            app.selected = Some(0);
        }
        app.detail.stale = true;
        app
    }

    /// True once the user asked to quit (or [`Msg::Quit`] arrived).
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Every flow row, in arrival order.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows passing the filter.
    pub fn visible_len(&self) -> usize {
        self.visible.len()
    }

    /// The selected flow.
    pub fn selected_id(&self) -> Option<FlowId> {
        self.selected
            .and_then(|i| self.visible.get(i))
            .map(|&r| self.rows[r].id)
    }

    /// Which pane has the focus.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// True while new flows are followed.
    pub fn following(&self) -> bool {
        self.follow
    }

    /// Events the feed dropped because the view was too slow (shown in the title).
    pub fn set_dropped(&mut self, n: u64) {
        self.dropped = n;
    }

    /// Brings derived state (the detail pane) up to date; call before drawing.
    pub fn settle(&mut self) {
        let id = self.selected_id();
        if id != self.detail.id || self.detail.stale {
            if let (Some(id), Some(host)) = (id, &self.host) {
                // A flow evicted from memory is asked for (one at a time); the answer comes
                // back as a message.
                if self.store.should_ask(id) {
                    host.ask(Request::Flow(id));
                    self.store.asked(id);
                }
            }
            if id != self.detail.id {
                self.detail_scroll = 0;
            }
            self.detail.lines = match id {
                Some(id) => detail::lines(self, id),
                None => Vec::new(),
            };
            self.detail.id = id;
            self.detail.stale = false;
        }
    }

    /// The row of a flow.
    pub(crate) fn row_of(&self, id: FlowId) -> Option<&Row> {
        self.index.get(&id).map(|&i| &self.rows[i])
    }

    fn has_finding(&self, id: FlowId) -> bool {
        self.cited.contains_key(&id)
    }

    fn passes(&self, row: &Row) -> bool {
        match &self.filter {
            None => true,
            Some((_, f)) => f.matches(row, self.has_finding(row.id)),
        }
    }

    fn push_row(&mut self, row: Row) {
        let i = self.rows.len();
        self.index.insert(row.id, i);
        let pass = self.passes(&row);
        self.rows.push(row);
        if pass {
            self.visible.push(i);
            if self.follow {
                self.selected = Some(self.visible.len() - 1);
            }
        }
    }

    /// Re-tests one row after it changed (a status arrived, a classification).
    fn recheck(&mut self, i: usize) {
        if self.filter.is_none() {
            return;
        }
        let pass = self.passes(&self.rows[i]);
        match (self.visible.binary_search(&i), pass) {
            (Err(pos), true) => {
                self.visible.insert(pos, i);
                if let Some(s) = self.selected.as_mut() {
                    if *s >= pos && !self.follow {
                        *s += 1;
                    }
                }
                if self.follow {
                    self.selected = Some(self.visible.len() - 1);
                }
            }
            (Ok(pos), false) => {
                let keep = self.selected_id();
                self.visible.remove(pos);
                self.reselect(keep);
            }
            _ => {}
        }
    }

    /// Recomputes the visible rows, keeping the selection on the same flow when it stays.
    fn refilter(&mut self) {
        let keep = self.selected_id();
        self.visible = (0..self.rows.len())
            .filter(|&i| self.passes(&self.rows[i]))
            .collect();
        self.reselect(keep);
    }

    fn reselect(&mut self, keep: Option<FlowId>) {
        if self.visible.is_empty() {
            self.selected = None;
            return;
        }
        if self.follow {
            self.selected = Some(self.visible.len() - 1);
            return;
        }
        let pos = match keep.and_then(|id| self.index.get(&id)) {
            Some(&row) => match self.visible.binary_search(&row) {
                Ok(p) => p,
                Err(p) => p.min(self.visible.len() - 1),
            },
            None => 0,
        };
        self.selected = Some(pos);
    }

    fn set_findings(&mut self, findings: Vec<Finding>) {
        self.findings = findings;
        self.recite();
        if self.finding_sel >= self.findings.len() {
            self.finding_sel = self.findings.len().saturating_sub(1);
        }
        if matches!(&self.popup, Some(Popup::Explain { finding, .. }) if *finding >= self.findings.len())
        {
            self.popup = None;
        }
        self.detail.stale = true;
    }

    /// Recomputes the evidence markers and the bare-request alarms from the findings (and
    /// from the rows' issued tokens, which a later classification may add).
    fn recite(&mut self) {
        self.cited.clear();
        self.bare_alarm.clear();
        for (n, f) in self.findings.iter().enumerate() {
            if !f.counts() {
                continue;
            }
            let cite = Cite {
                number: n + 1,
                severity: f.severity,
                suspected: f.status == Status::Suspected,
            };
            for id in &f.evidence {
                let e = self.cited.entry(*id).or_insert(cite);
                if (cite.severity, !cite.suspected) > (e.severity, !e.suspected) {
                    *e = cite;
                }
            }
            if matches!(
                f.id,
                FindingId::TokenNotSent | FindingId::ClientOmitsTokenConfirmed
            ) {
                let token = f
                    .evidence
                    .iter()
                    .find_map(|id| self.row_of(*id).and_then(|r| r.issued.clone()));
                for id in &f.evidence {
                    let bare = self.row_of(*id).is_some_and(|r| {
                        r.auth == crate::row::Auth::None
                            && matches!(r.role, Some(mcptap_analyze::Role::Mcp))
                    });
                    if bare {
                        self.bare_alarm.insert(*id, token.clone());
                    }
                }
            }
        }
    }

    fn on_event(&mut self, ev: FlowEvent) {
        let id = ev.flow_id();
        match &ev {
            FlowEvent::RequestStarted { flow } => {
                if !self.index.contains_key(&id) {
                    self.push_row(Row::of(flow));
                }
            }
            FlowEvent::Completed { flow } | FlowEvent::Failed { flow } => {
                let row = Row::of(flow);
                match self.index.get(&id) {
                    Some(&i) => {
                        let old = &self.rows[i];
                        let (role, mcp, issued, answered) =
                            (old.role, old.mcp.clone(), old.issued.clone(), old.answered);
                        self.rows[i] = row;
                        if self.rows[i].role.is_none() {
                            self.rows[i].role = role;
                        }
                        if self.rows[i].mcp.is_none() {
                            self.rows[i].mcp = mcp;
                        }
                        if self.rows[i].issued.is_none() {
                            self.rows[i].issued = issued;
                        }
                        self.rows[i].answered |= answered;
                        self.recheck(i);
                    }
                    None => self.push_row(row),
                }
            }
            FlowEvent::ResponseHead { status, .. } => {
                if let Some(&i) = self.index.get(&id) {
                    self.rows[i].status = Some(*status);
                    self.recheck(i);
                }
            }
            FlowEvent::Body {
                direction, total, ..
            } => {
                if let Some(&i) = self.index.get(&id) {
                    match direction {
                        mcptap_flow::Direction::Request => self.rows[i].req_size = *total,
                        mcptap_flow::Direction::Response => self.rows[i].resp_size = *total,
                    }
                }
            }
            FlowEvent::Sse { .. } => {
                if let Some(&i) = self.index.get(&id) {
                    self.rows[i].sse_events = self.rows[i].sse_events.saturating_add(1);
                }
            }
        }
        if !matches!(ev, FlowEvent::Body { .. }) {
            self.store.apply(ev);
            if self.detail.id == Some(id) {
                self.detail.stale = true;
            }
        }
    }

    fn on_classified(&mut self, s: &FlowSummary) {
        if let Some(&i) = self.index.get(&s.id) {
            let flow = self.store.get(s.id);
            self.rows[i].classify(s, flow);
            if s.issued_token.is_some() || self.cited.contains_key(&s.id) {
                self.recite();
            }
            self.recheck(i);
            if self.detail.id == Some(s.id) {
                self.detail.stale = true;
            }
        }
    }

    // ---- keys ----

    fn on_key(&mut self, k: KeyEvent) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            self.quit = true;
            return;
        }
        if self.input.is_some() {
            self.on_input_key(k);
            return;
        }
        if let Some(p) = self.popup.as_mut() {
            match k.code {
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('?') | KeyCode::Enter => {
                    self.popup = None
                }
                KeyCode::Down | KeyCode::Char('j') => scroll_popup(p, 1),
                KeyCode::Up | KeyCode::Char('k') => scroll_popup(p, -1),
                KeyCode::PageDown | KeyCode::Char(' ') => scroll_popup(p, 20),
                KeyCode::PageUp => scroll_popup(p, -20),
                _ => {}
            }
            return;
        }
        self.notice = None;
        let page = self.list_height.get().max(1) as isize;
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Flows => Focus::Findings,
                    Focus::Findings => Focus::Detail,
                    Focus::Detail => Focus::Flows,
                }
            }
            KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Flows => Focus::Detail,
                    Focus::Findings => Focus::Flows,
                    Focus::Detail => Focus::Findings,
                }
            }
            KeyCode::Char('/') => {
                let current = self
                    .filter
                    .as_ref()
                    .map(|(t, _)| t.clone())
                    .unwrap_or_default();
                self.input = Some((current, None));
            }
            KeyCode::Esc if self.filter.is_some() => {
                self.filter = None;
                self.refilter();
            }
            KeyCode::Char('f') | KeyCode::Char('F') => {
                self.follow = !self.follow;
                if self.follow && !self.visible.is_empty() {
                    self.selected = Some(self.visible.len() - 1);
                }
            }
            KeyCode::Char('?') => {
                self.popup = Some(
                    if self.focus == Focus::Findings && !self.findings.is_empty() {
                        Popup::Explain {
                            finding: self.finding_sel,
                            scroll: 0,
                        }
                    } else {
                        Popup::Help
                    },
                );
            }
            KeyCode::Enter => match self.focus {
                Focus::Findings => self.jump_to_evidence(),
                Focus::Flows => self.focus = Focus::Detail,
                Focus::Detail => self.focus = Focus::Flows,
            },
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.move_by(page),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => {
                self.move_by(isize::MAX / 2);
                if self.focus == Focus::Flows {
                    self.follow = true;
                }
            }
            _ => {}
        }
    }

    fn move_by(&mut self, delta: isize) {
        match self.focus {
            Focus::Flows => {
                if self.visible.is_empty() {
                    return;
                }
                self.follow = false;
                let cur = self.selected.unwrap_or(0) as isize;
                let max = self.visible.len() as isize - 1;
                self.selected = Some(cur.saturating_add(delta).clamp(0, max) as usize);
            }
            Focus::Findings => {
                if self.findings.is_empty() {
                    return;
                }
                let max = self.findings.len() as isize - 1;
                let next = (self.finding_sel as isize)
                    .saturating_add(delta)
                    .clamp(0, max) as usize;
                if next != self.finding_sel {
                    self.finding_sel = next;
                    self.evidence_next = 0;
                }
            }
            Focus::Detail => {
                let max = self.detail.lines.len().saturating_sub(1) as isize;
                let next = (self.detail_scroll as isize)
                    .saturating_add(delta)
                    .clamp(0, max.min(u16::MAX as isize));
                self.detail_scroll = next as u16;
            }
        }
    }

    /// Selects the selected finding's next evidence flow (Enter again cycles through them).
    fn jump_to_evidence(&mut self) {
        let Some(f) = self.findings.get(self.finding_sel) else {
            return;
        };
        if f.evidence.is_empty() {
            self.notice = Some(format!("{} cites no flow", f.id));
            return;
        }
        let k = self.evidence_next % f.evidence.len();
        let id = f.evidence[k];
        let count = f.evidence.len();
        self.evidence_next = k + 1;
        let Some(&row) = self.index.get(&id) else {
            self.notice = Some(format!("{id} is not in this view"));
            return;
        };
        self.follow = false;
        if self.visible.binary_search(&row).is_err() {
            self.filter = None;
            self.refilter();
            self.notice = Some(format!("filter cleared to show {id}"));
        } else {
            self.notice = Some(format!("evidence {} of {count}: {id}", k + 1));
        }
        if let Ok(pos) = self.visible.binary_search(&row) {
            self.selected = Some(pos);
        }
    }

    fn on_input_key(&mut self, k: KeyEvent) {
        let Some((text, err)) = self.input.as_mut() else {
            return;
        };
        match k.code {
            KeyCode::Esc => self.input = None,
            KeyCode::Enter => {
                let t = text.trim().to_owned();
                if t.is_empty() {
                    self.input = None;
                    self.filter = None;
                    self.refilter();
                    return;
                }
                match Filter::parse(&t) {
                    Ok(f) => {
                        self.input = None;
                        self.filter = Some((t, f));
                        self.refilter();
                    }
                    Err(e) => *err = Some(e),
                }
            }
            KeyCode::Backspace => {
                text.pop();
                *err = None;
            }
            KeyCode::Char(c) => {
                text.push(c);
                *err = None;
            }
            _ => {}
        }
    }
}

fn scroll_popup(p: &mut Popup, delta: i32) {
    if let Popup::Explain { scroll, .. } = p {
        *scroll = (i32::from(*scroll) + delta).clamp(0, i32::from(u16::MAX)) as u16;
    }
}

/// Applies one message to the state.
pub fn update(app: &mut App, msg: Msg) {
    match msg {
        Msg::Event(ev) => app.on_event(ev),
        Msg::Classified(s) => app.on_classified(&s),
        Msg::Findings(f) => {
            app.set_findings(f);
            if app.filter.is_some() {
                app.refilter();
            }
        }
        Msg::Notice(n) => app.notice = Some(n),
        Msg::Loaded(flow) => {
            let id = flow.id;
            app.store.loaded(*flow);
            app.detail.stale |= app.detail.id == Some(id);
        }
        Msg::Unavailable { id, why } => {
            app.store.unavailable(id, why);
            app.detail.stale |= app.detail.id == Some(id);
        }
        Msg::Key(k) => app.on_key(k),
        Msg::Quit => app.quit = true,
    }
}

/// True for a flow that did not complete (for the row marker).
pub(crate) fn broken(state: FlowState) -> bool {
    matches!(state, FlowState::Failed | FlowState::Aborted)
}
