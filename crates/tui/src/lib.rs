//! mcptap's terminal view: the flow list with MCP-aware columns (phase, MCP method, auth,
//! session), a detail pane, live findings with their explain pages, and mitmproxy-style
//! filters.
//!
//! Model / update / view, as gitui does it:
//!
//! - [`App`]: the state. One compact [`Row`] per flow (no bodies); whole flows for the detail
//!   pane in a [`store::Store`] (a live view keeps the last [`store::DEFAULT_KEEP`], and asks
//!   its [`Host`] for older ones by message: the view never reads the disk).
//! - [`update`]: applies a [`Msg`] (an engine event, a classification, findings, a key).
//! - [`draw`]: renders an [`App`]; pure (no clock, no I/O), so frames snapshot-test with
//!   ratatui's `TestBackend`.
//! - [`run`]: owns the terminal (raw mode, alternate screen, restored by a guard on every exit,
//!   panics included) and feeds [`update`] from the keyboard and from a bounded [`Feed`] that
//!   never blocks its sender.
#![deny(missing_docs)]

mod app;
mod detail;
pub mod filter;
mod row;
pub mod store;
mod term;
mod theme;
mod view;

pub use app::{color_from_env, update, App, Focus, Msg, Options, Popup};
pub use detail::NOT_RECORDED;
pub use filter::Filter;
pub use row::{phase_label, Auth, Row};
pub use store::{Host, Request};
pub use term::{channel, run, screen_owned, Feed, Inbox, FRAME};
pub use view::draw;

/// Settles derived state and draws: what the terminal loop does each frame (tests use it with
/// a `TestBackend`).
pub fn render<B: ratatui::backend::Backend>(
    app: &mut App,
    terminal: &mut ratatui::Terminal<B>,
) -> std::io::Result<()> {
    app.settle();
    terminal.draw(|f| draw(app, f))?;
    Ok(())
}
