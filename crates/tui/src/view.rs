//! Drawing: a pure function of the [`App`] (no clock, no I/O), so frames snapshot-test.
//!
//! ```text
//! title bar:   mcptap  <title>  N flows  M findings  filter  FOLLOW
//! flow list:   mark time method host+path status dur size phase mcp auth session
//! detail pane  |  findings pane      (stacked on narrow terminals)
//! help line:   keys, or the filter being typed, or a notice
//! ```

use crate::app::{broken, App, Focus, Popup};
use crate::theme::Theme;
use mcptap_flow::human::{clock, duration, size};
use mcptap_flow::FlowState;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Table, Wrap};
use ratatui::Frame;

/// Draws the whole view. Call [`App::settle`] first so the detail pane is current.
pub fn draw(app: &App, f: &mut Frame<'_>) {
    let t = Theme {
        color: app.opts.color,
    };
    let area = f.area();
    if area.height < 3 || area.width < 10 {
        f.render_widget(Paragraph::new("mcptap: terminal too small"), area);
        return;
    }
    let [title, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(app, f, title, t);
    draw_help(app, f, help, t);
    let wide = body.width >= 110;
    let list_h = (body.height * 45 / 100).max(5).min(body.height);
    let [list, bottom] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(0)]).areas(body);
    draw_flows(app, f, list, t);
    if bottom.height > 0 {
        let (detail, findings) = if wide {
            let [d, fi] =
                Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)])
                    .areas(bottom);
            (d, fi)
        } else {
            let lines: usize = app
                .findings
                .iter()
                .enumerate()
                .map(|(i, fd)| {
                    finding_lines(i + 1, fd, bottom.width.saturating_sub(2) as usize, None, t).len()
                })
                .sum();
            let most = (bottom.height * 6 / 10).max(3);
            let fh = (lines as u16 + 2).clamp(3, most).min(bottom.height);
            let [fi, d] =
                Layout::vertical([Constraint::Length(fh), Constraint::Min(0)]).areas(bottom);
            (d, fi)
        };
        draw_findings(app, f, findings, t);
        draw_detail(app, f, detail, t);
    }
    if let Some(p) = &app.popup {
        draw_popup(app, p, f, area, t);
    }
}

fn draw_title(app: &App, f: &mut Frame<'_>, area: Rect, t: Theme) {
    let mut spans = vec![Span::styled(" mcptap ", t.heading())];
    if !app.opts.title.is_empty() {
        spans.push(Span::raw(format!("{}  ", app.opts.title)));
    }
    let shown = if app.filter.is_some() {
        format!("{}/{} flows", app.visible.len(), app.rows.len())
    } else {
        format!("{} flows", app.rows.len())
    };
    spans.push(Span::raw(shown));
    let n = app.findings.len();
    let fstyle = app
        .findings
        .iter()
        .map(|f| f.severity)
        .max()
        .map_or(t.dim(), |s| t.severity(s));
    spans.push(Span::styled(
        format!("  {n} finding{}", if n == 1 { "" } else { "s" }),
        fstyle,
    ));
    if let Some((text, _)) = &app.filter {
        spans.push(Span::styled(
            format!("  filter: {text}"),
            t.fg(Color::Yellow),
        ));
    }
    if app.follow {
        spans.push(Span::styled("  FOLLOW", t.fg(Color::Green)));
    }
    if app.opts.read_only {
        spans.push(Span::styled("  read-only", t.dim()));
    }
    if app.dropped > 0 {
        spans.push(Span::styled(
            format!("  {} events dropped", app.dropped),
            t.fg(Color::Red),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(app: &App, f: &mut Frame<'_>, area: Rect, t: Theme) {
    let line = if let Some((text, err)) = &app.input {
        let mut spans = vec![
            Span::styled("/", t.heading()),
            Span::raw(text.clone()),
            Span::styled("_", t.dim()),
        ];
        match err {
            Some(e) => spans.push(Span::styled(format!("  {e}"), t.fg(Color::Red))),
            None => spans.push(Span::styled(
                "  Enter apply · Esc cancel · ~d host ~u url ~c 401 ~m POST ~ph token ~rpc tools ~noauth ~f ! & |",
                t.dim(),
            )),
        }
        Line::from(spans)
    } else if let Some(n) = &app.notice {
        Line::styled(n.clone(), t.fg(Color::Yellow))
    } else {
        let keys: &[(&str, &str)] = &[
            ("q", "quit"),
            ("↑↓", "move"),
            ("Tab", "pane"),
            ("Enter", "open/jump"),
            ("/", "filter"),
            ("f", "follow"),
            ("?", "explain/help"),
            ("Esc", "clear filter"),
        ];
        let mut spans = Vec::new();
        for (k, what) in keys {
            spans.push(Span::styled(format!(" {k}"), t.bold()));
            spans.push(Span::styled(format!(" {what} "), t.dim()));
        }
        Line::from(spans)
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The flow list's columns, narrowest terminals first dropping the least needed: the auth
/// column goes last, since it is where a missing token shows.
struct Cols {
    time: bool,
    dur: bool,
    size: bool,
    phase: bool,
    mcp: bool,
    auth: bool,
    /// Room for `none — token d1997e valid`.
    wide_auth: bool,
    session: bool,
}

impl Cols {
    fn for_width(w: u16) -> Cols {
        Cols {
            time: w >= 120,
            dur: w >= 96,
            size: w >= 104,
            phase: w >= 60,
            mcp: w >= 74,
            auth: w >= 36,
            wide_auth: w >= 120,
            session: w >= 130,
        }
    }

    fn widths(&self) -> Vec<Constraint> {
        let mut v = vec![Constraint::Length(3)];
        if self.time {
            v.push(Constraint::Length(12));
        }
        v.push(Constraint::Length(7));
        v.push(Constraint::Min(16));
        v.push(Constraint::Length(4));
        if self.dur {
            v.push(Constraint::Length(7));
        }
        if self.size {
            v.push(Constraint::Length(6));
        }
        if self.phase {
            v.push(Constraint::Length(9));
        }
        if self.mcp {
            v.push(Constraint::Length(if self.wide_auth { 22 } else { 14 }));
        }
        if self.auth {
            v.push(Constraint::Length(if self.wide_auth { 26 } else { 16 }));
        }
        if self.session {
            v.push(Constraint::Length(6));
        }
        v
    }

    fn header(&self) -> Vec<&'static str> {
        let mut v = vec![""];
        if self.time {
            v.push("time");
        }
        v.extend(["method", "host + path", "code"]);
        if self.dur {
            v.push("dur");
        }
        if self.size {
            v.push("size");
        }
        if self.phase {
            v.push("phase");
        }
        if self.mcp {
            v.push("mcp");
        }
        if self.auth {
            v.push("auth");
        }
        if self.session {
            v.push("sess");
        }
        v
    }
}

fn draw_flows(app: &App, f: &mut Frame<'_>, area: Rect, t: Theme) {
    let focused = app.focus == Focus::Flows && app.popup.is_none();
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border(focused))
        .title(" flows ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height < 2 {
        return;
    }
    let rows_h = (inner.height - 1) as usize;
    app.list_height.set(rows_h);
    if app.visible.is_empty() {
        let msg = if app.rows.is_empty() {
            if app.opts.read_only {
                "no flows in this file"
            } else {
                "waiting for traffic: point a client at the proxy"
            }
        } else {
            "no flow matches the filter (Esc clears it)"
        };
        let mut lines = vec![Line::styled(msg, t.dim())];
        if app.rows.is_empty() && !app.opts.read_only {
            for l in &app.opts.setup {
                lines.push(Line::styled(format!("  {l}"), t.bold()));
            }
        }
        f.render_widget(
            Paragraph::new(lines),
            Rect {
                y: inner.y + 1,
                height: inner.height - 1,
                ..inner
            },
        );
    }
    // Keep the selection in view: scroll as little as possible from the last frame's offset.
    let n = app.visible.len();
    let mut offset = app.list_offset.get().min(n.saturating_sub(rows_h));
    if let Some(sel) = app.selected {
        if sel < offset {
            offset = sel;
        } else if sel >= offset + rows_h {
            offset = sel + 1 - rows_h;
        }
    }
    if app.follow {
        offset = n.saturating_sub(rows_h);
    }
    app.list_offset.set(offset);
    let cols = Cols::for_width(inner.width);
    let end = (offset + rows_h).min(n);
    let rows = app.visible[offset..end].iter().enumerate().map(|(k, &ri)| {
        let r = &app.rows[ri];
        // The selected row has one style (reversed) and no cell colours of its own.
        let sel = app.selected == Some(offset + k);
        let st = |style: Style| if sel { Style::default() } else { style };
        let closed = r.closed_by_client();
        let cited = app.cited.get(&r.id).copied();
        let mark = match (cited, r.state) {
            (Some(c), _) => format!("{}{}", if c.suspected { "?" } else { "!" }, c.number),
            (None, FlowState::Failed) => "x".to_owned(),
            (None, FlowState::Aborted) if closed => String::new(),
            (None, FlowState::Aborted) => "x".to_owned(),
            (None, FlowState::Pending) => ">".to_owned(),
            (None, FlowState::Completed) => String::new(),
        };
        let mut cells = vec![Cell::from(mark).style(st(match cited {
            Some(c) if c.suspected => t.suspected(c.severity),
            Some(c) => t.severity(c.severity),
            None => t.status(r.status, r.state),
        }))];
        if cols.time {
            cells.push(Cell::from(clock(r.started)).style(st(t.dim())));
        }
        cells.push(Cell::from(r.method.clone()));
        cells.push(Cell::from(r.target()));
        let code = match (r.status, r.state) {
            (_, FlowState::Failed) if r.status.is_none_or(|_| r.synthetic) => "ERR".to_owned(),
            (Some(s), _) if closed => s.to_string(),
            (_, FlowState::Aborted) => "CUT".to_owned(),
            (Some(s), _) => s.to_string(),
            (None, _) => "...".to_owned(),
        };
        let code_style = if closed {
            t.dim()
        } else {
            t.status(r.status, r.state)
        };
        cells.push(Cell::from(code).style(st(code_style)));
        if cols.dur {
            cells.push(Cell::from(r.duration.map(duration).unwrap_or_default()).style(st(t.dim())));
        }
        if cols.size {
            cells.push(Cell::from(size(r.resp_size)).style(st(t.dim())));
        }
        if cols.phase {
            cells.push(Cell::from(r.phase()).style(st(t.fg(Color::Cyan))));
        }
        if cols.mcp {
            let mut m = r.mcp.clone().unwrap_or_default();
            if r.sse_events > 0 {
                m.push_str(&format!(" ({} ev)", r.sse_events));
            }
            if closed {
                m.push_str(" closed");
            }
            cells.push(Cell::from(m.trim_start().to_owned()).style(st(t.fg(Color::LightBlue))));
        }
        if cols.auth {
            let (label, style) = auth_cell(app, r, cols.wide_auth, t);
            cells.push(Cell::from(label).style(st(style)));
        }
        if cols.session {
            cells.push(Cell::from(r.session.clone().unwrap_or_default()).style(st(t.dim())));
        }
        let row = TRow::new(cells);
        if sel {
            row.style(t.selected())
        } else if closed {
            row.style(t.dim())
        } else if broken(r.state) {
            row.style(t.fg(Color::Red))
        } else {
            row
        }
    });
    let header = TRow::new(cols.header()).style(t.bold());
    let table = Table::new(rows, cols.widths())
        .header(header)
        .column_spacing(1);
    f.render_widget(table, inner);
}

/// The auth column: the token a token flow issued, the token a request carried, or, for a
/// bare MCP request a `token-not-sent` finding cites, `none — token d1997e valid` as an alarm.
fn auth_cell(app: &App, r: &crate::row::Row, wide: bool, t: Theme) -> (String, Style) {
    if let Some(token) = app.bare_alarm.get(&r.id) {
        let label = match (token, wide) {
            (Some(tok), true) => format!("none — token {tok} valid"),
            (Some(tok), false) => format!("none, had {tok}"),
            (None, true) => "none — a token was valid".to_owned(),
            (None, false) => "none, had token".to_owned(),
        };
        return (label, t.alarm());
    }
    if let Some(tok) = &r.issued {
        return (format!("issued {tok}"), t.fg(Color::Green));
    }
    let style = match r.auth {
        crate::row::Auth::None => t.dim(),
        crate::row::Auth::Injected { .. } => t.fg(Color::Yellow),
        crate::row::Auth::Sent { .. } => t.fg(Color::Green),
    };
    (r.auth.label(), style)
}

/// Cuts `text` into lines of at most `width` characters at spaces, the first line `first`
/// characters shorter; at most `max` lines, the last one ending in `…` when cut.
fn wrap(text: &str, width: usize, first: usize, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![String::new()];
    let room = |i: usize| {
        if i == 0 {
            width.saturating_sub(first)
        } else {
            width
        }
    };
    for word in text.split_whitespace() {
        let i = lines.len() - 1;
        let cur = lines[i].chars().count();
        let need = if cur == 0 { 0 } else { 1 } + word.chars().count();
        if cur + need <= room(i) {
            if cur > 0 {
                lines[i].push(' ');
            }
            lines[i].push_str(word);
            continue;
        }
        if lines.len() == max {
            let last = &mut lines[i];
            while !last.is_empty() && last.chars().count() + 1 > room(i) {
                last.pop();
            }
            last.push('…');
            return lines;
        }
        let mut w: String = word.chars().take(width.max(1)).collect();
        if w.chars().count() < word.chars().count() {
            w.pop();
            w.push('…');
        }
        lines.push(w);
    }
    lines
}

/// The lines of one finding in the findings pane: number, severity, id and status, then the
/// summary and the evidence wrapped onto at most three lines.
fn finding_lines(
    n: usize,
    fd: &mcptap_analyze::Finding,
    width: usize,
    selected: Option<Style>,
    t: Theme,
) -> Vec<Line<'static>> {
    use mcptap_analyze::Status;
    let st = |style: Style| {
        if selected.is_some() {
            Style::default()
        } else {
            style
        }
    };
    let (sev_style, tag) = match fd.status {
        Status::Confirmed => (t.severity(fd.severity), String::new()),
        Status::Suspected => (t.suspected(fd.severity), " SUSPECTED".to_owned()),
        Status::Cleared => (t.dim(), " cleared".to_owned()),
    };
    let body_style = if fd.status == Status::Cleared {
        t.dim()
    } else {
        Style::default()
    };
    let head = vec![
        Span::styled(format!("{n:>2} "), st(sev_style)),
        Span::styled(format!("{:<8} ", fd.severity.as_str()), st(sev_style)),
        Span::styled(
            fd.id.as_str(),
            st(if fd.status == Status::Cleared {
                t.dim()
            } else {
                t.bold()
            }),
        ),
        Span::styled(tag, st(sev_style)),
        Span::styled(format!(" ({}) ", fd.culprit), st(t.dim())),
    ];
    let head_w: usize = head.iter().map(|s| s.content.chars().count()).sum();
    let ev: Vec<String> = fd.evidence.iter().take(4).map(|e| e.to_string()).collect();
    let text = format!("{} [{}]", fd.summary, ev.join(" "));
    let indent = 3;
    let wrapped = if head_w + 12 <= width {
        // The summary starts on the heading line.
        wrap(
            &text,
            width.saturating_sub(indent),
            head_w.saturating_sub(indent),
            3,
        )
    } else {
        let mut v = vec![String::new()];
        v.extend(wrap(&text, width.saturating_sub(indent), 0, 2));
        v
    };
    let mut out = Vec::new();
    for (i, l) in wrapped.into_iter().enumerate() {
        let line = if i == 0 {
            let mut spans = head.clone();
            spans.push(Span::styled(l, st(body_style)));
            Line::from(spans)
        } else {
            Line::from(vec![
                Span::raw(" ".repeat(indent)),
                Span::styled(l, st(body_style)),
            ])
        };
        out.push(match selected {
            Some(s) => line.style(s),
            None => line,
        });
    }
    out
}

fn draw_findings(app: &App, f: &mut Frame<'_>, area: Rect, t: Theme) {
    let focused = app.focus == Focus::Findings && app.popup.is_none();
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border(focused))
        .title(format!(" findings ({}) ", app.findings.len()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    if app.findings.is_empty() {
        f.render_widget(Paragraph::new(Line::styled("none yet", t.dim())), inner);
        return;
    }
    let h = inner.height as usize;
    let width = inner.width as usize;
    let sel_style =
        |i: usize| (i == app.finding_sel).then(|| if focused { t.selected() } else { t.bold() });
    let mut offset = app
        .findings_offset
        .get()
        .min(app.findings.len().saturating_sub(1));
    if app.finding_sel < offset {
        offset = app.finding_sel;
    }
    // Scroll until the selected finding's lines fit.
    loop {
        let used: usize = app.findings[offset..=app.finding_sel.max(offset)]
            .iter()
            .enumerate()
            .map(|(k, fd)| finding_lines(offset + k + 1, fd, width, None, t).len())
            .sum();
        if used <= h || offset >= app.finding_sel {
            break;
        }
        offset += 1;
    }
    app.findings_offset.set(offset);
    let mut lines: Vec<Line<'_>> = Vec::new();
    for (i, fd) in app.findings.iter().enumerate().skip(offset) {
        if lines.len() >= h {
            break;
        }
        lines.extend(finding_lines(i + 1, fd, width, sel_style(i), t));
    }
    lines.truncate(h);
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_detail(app: &App, f: &mut Frame<'_>, area: Rect, t: Theme) {
    let focused = app.focus == Focus::Detail && app.popup.is_none();
    let title = match app.detail.id {
        Some(id) => format!(" {id} "),
        None => " detail ".to_owned(),
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border(focused))
        .title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.detail.lines.is_empty() {
        f.render_widget(
            Paragraph::new(Line::styled("select a flow", t.dim())),
            inner,
        );
        return;
    }
    // Only the lines in view are handed to ratatui (no wrapping: long lines are cut).
    let start = (app.detail_scroll as usize).min(app.detail.lines.len());
    let lines: Vec<Line<'_>> = app.detail.lines[start..]
        .iter()
        .take(inner.height as usize)
        .cloned()
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_popup(app: &App, p: &Popup, f: &mut Frame<'_>, area: Rect, t: Theme) {
    let w = (area.width * 9 / 10).max(10).min(area.width);
    let h = (area.height * 8 / 10).max(3).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    let (title, lines, scroll) = match p {
        Popup::Help => (" help (Esc closes) ".to_owned(), help_lines(t), 0),
        Popup::Explain { finding, scroll } => {
            let Some(fd) = app.findings.get(*finding) else {
                return;
            };
            let mut lines = vec![
                Line::from(vec![
                    Span::styled(fd.id.as_str(), t.severity(fd.severity)),
                    Span::raw(format!("  {} · culprit {}", fd.severity, fd.culprit)),
                ]),
                Line::from(fd.summary.clone()),
            ];
            if let Some(d) = &fd.decides {
                lines.push(Line::styled(format!("suspected; decides: {d}"), t.dim()));
            }
            for a in &fd.amendments {
                lines.push(Line::styled(format!("amended: {a}"), t.dim()));
            }
            lines.extend([
                Line::styled(format!("hint: {}", fd.hint), t.fg(Color::Green)),
                Line::styled(
                    format!(
                        "evidence: {} ({} occurrence{})",
                        fd.evidence
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        fd.occurrences,
                        if fd.occurrences == 1 { "" } else { "s" }
                    ),
                    t.dim(),
                ),
            ]);
            for d in &fd.details {
                lines.push(Line::styled(format!("  {d}"), t.dim()));
            }
            lines.push(Line::from(""));
            let page = fd.id.page();
            for l in page.lines() {
                let style = if l.starts_with('#') {
                    t.heading()
                } else {
                    Style::default()
                };
                lines.push(Line::styled(l.to_owned(), style));
            }
            (
                format!(" explain {} (↑↓ scroll, Esc closes) ", fd.id),
                lines,
                *scroll,
            )
        }
    };
    let para = Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(t.border(true))
                .title(title),
        )
        .wrap(Wrap { trim: false })
        .scroll((scroll, 0));
    f.render_widget(para, rect);
}

fn help_lines(t: Theme) -> Vec<Line<'static>> {
    let keys = [
        ("q, Ctrl-C", "quit (the proxy stops, the session is saved)"),
        ("↑ ↓ j k", "move in the focused pane (leaves follow mode)"),
        ("PgUp PgDn g G", "page, first, last (G resumes following)"),
        ("f", "follow new flows on/off"),
        ("Tab, Shift-Tab", "focus: flows → findings → detail"),
        (
            "Enter",
            "flows: open detail · findings: jump to evidence (again: next)",
        ),
        (
            "?",
            "findings: the finding's explain page · elsewhere: this help",
        ),
        (
            "/",
            "filter (Enter applies, empty clears) · Esc clears the filter",
        ),
    ];
    let mut out: Vec<Line<'static>> = keys
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<16}"), t.bold()),
                Span::raw(*v),
            ])
        })
        .collect();
    out.push(Line::from(""));
    out.push(Line::styled("markers", t.heading()));
    for l in [
        "!N cited by finding N (?N: only suspected) · x failed or cut · > pending",
        "auth: issued T (a token row) · Bearer T (sent) · none — token T valid (sent bare while T was valid)",
        "a dim row, mcp column ending in \"closed\": the client closed its stream after the answer (normal)",
    ] {
        out.push(Line::from(l));
    }
    out.push(Line::from(""));
    out.push(Line::styled(
        "filters (mitmproxy style, regexes ignore case)",
        t.heading(),
    ));
    for l in [
        "~d REGEX host · ~u REGEX host+path · ~p REGEX path · ~m REGEX method",
        "~c 401 | 4xx status · ~ph token phase · ~rpc tools/call MCP method",
        "~noauth no Authorization · ~auth · ~f has a finding · ~e failed · ~q pending · ~sse",
        "WORD host+path or MCP method · combine with ! & | ( )",
    ] {
        out.push(Line::from(l));
    }
    out
}
