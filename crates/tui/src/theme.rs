//! Colours, or none at all (`NO_COLOR`): every style the view uses comes from here.

use mcptap_analyze::Severity;
use mcptap_flow::FlowState;
use ratatui::style::{Color, Modifier, Style};

/// The palette for one frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    pub fn bold(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    pub fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        }
    }

    /// The selected row: reversed, which reads without colours too.
    pub fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// What the user must see first: a bare request while a token was valid.
    pub fn alarm(self) -> Style {
        self.fg(Color::LightRed).add_modifier(Modifier::BOLD)
    }

    /// A finding only suspected so far: its severity's colour, in italics.
    pub fn suspected(self, s: Severity) -> Style {
        self.severity(s).add_modifier(Modifier::ITALIC)
    }

    pub fn severity(self, s: Severity) -> Style {
        self.fg(match s {
            Severity::Critical => Color::LightRed,
            Severity::High => Color::Red,
            Severity::Medium => Color::Yellow,
            Severity::Low => Color::Cyan,
            Severity::Info => Color::Gray,
        })
    }

    pub fn status(self, status: Option<u16>, state: FlowState) -> Style {
        match (status, state) {
            (_, FlowState::Failed) => self.fg(Color::Red),
            (_, FlowState::Aborted) => self.fg(Color::Magenta),
            (None, _) => self.dim(),
            (Some(s), _) if s >= 500 => self.fg(Color::Red),
            (Some(s), _) if s >= 400 => self.fg(Color::Yellow),
            (Some(s), _) if s >= 300 => self.fg(Color::Cyan),
            (Some(_), _) => self.fg(Color::Green),
        }
    }

    pub fn redacted(self) -> Style {
        if self.color {
            Style::default().fg(Color::Magenta)
        } else {
            Style::default().add_modifier(Modifier::UNDERLINED)
        }
    }

    pub fn heading(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn border(self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            self.dim()
        }
    }
}
