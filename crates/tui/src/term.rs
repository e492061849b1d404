//! The terminal: raw mode and the alternate screen held by a guard that restores them on drop,
//! on panic (a hook) and on every return path; the loop that reads keys and the feed and
//! redraws at most every [`FRAME`].

use crate::app::{update, App, Msg};
use crossterm::event::{self, Event, KeyEventKind};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// The longest the loop waits for input before looking at the feed again.
pub const FRAME: Duration = Duration::from_millis(40);
/// Messages taken from the feed between two frames (the rest wait for the next one).
const BATCH: usize = 20_000;

static SCREEN_OWNED: AtomicBool = AtomicBool::new(false);

/// True while a view owns the terminal: nothing else may print (route logs elsewhere).
pub fn screen_owned() -> bool {
    SCREEN_OWNED.load(Ordering::Relaxed)
}

/// The sending side of a view's input: never blocks; a full queue drops and counts.
#[derive(Debug, Clone)]
pub struct Feed {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// The receiving side, handed to [`run`].
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Msg>,
    dropped: Arc<AtomicU64>,
}

/// A bounded feed of `capacity` messages.
pub fn channel(capacity: usize) -> (Feed, Inbox) {
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Feed {
            tx,
            dropped: dropped.clone(),
        },
        Inbox { rx, dropped },
    )
}

impl Inbox {
    /// The next queued message, if any (for a caller that drives [`update`] itself, as tests
    /// do).
    pub fn try_recv(&self) -> Option<Msg> {
        self.rx.try_recv().ok()
    }
}

impl Feed {
    /// Queues a message; false when the view is gone. A full queue drops the message (counted
    /// and shown in the title bar): the proxy never waits for the screen.
    pub fn send(&self, msg: Msg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Asks the view to close (waits for room: this one must not be dropped).
    pub fn quit(&self) {
        let _ = self.tx.send(Msg::Quit);
    }
}

/// Restores the terminal however the view ends.
struct Guard;

impl Guard {
    fn enter() -> io::Result<Guard> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        SCREEN_OWNED.store(true, Ordering::Relaxed);
        let guard = Guard;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    if SCREEN_OWNED.swap(false, Ordering::Relaxed) {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Runs the view on this thread until `q` (or [`Msg::Quit`]): owns the terminal meanwhile and
/// restores it before returning, also on error or panic.
pub fn run(mut app: App, inbox: Inbox) -> io::Result<()> {
    let _guard = Guard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let result = event_loop(&mut app, &inbox, &mut terminal);
    drop(terminal);
    result
}

fn event_loop(
    app: &mut App,
    inbox: &Inbox,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
) -> io::Result<()> {
    let mut dirty = true;
    let mut feed_open = true;
    loop {
        if dirty {
            app.set_dropped(inbox.dropped.load(Ordering::Relaxed));
            app.settle();
            terminal.draw(|f| crate::view::draw(app, f))?;
            dirty = false;
        }
        let deadline = Instant::now() + FRAME;
        // Input first: keys stay responsive however busy the feed is.
        while event::poll(deadline.saturating_duration_since(Instant::now()))? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    update(app, Msg::Key(k));
                    dirty = true;
                }
                Event::Resize(..) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
            if app.should_quit() {
                return Ok(());
            }
            if dirty {
                break;
            }
        }
        if feed_open {
            for _ in 0..BATCH {
                match inbox.rx.try_recv() {
                    Ok(m) => {
                        update(app, m);
                        dirty = true;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        feed_open = false;
                        break;
                    }
                }
            }
        }
        if app.should_quit() {
            return Ok(());
        }
    }
}
