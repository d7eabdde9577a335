//! The terminal while the dashboard owns it: raw mode and the alternate screen, given back by a
//! drop guard on every way out (return, error, panic unwinding), and by a panic hook before the
//! panic message prints, so the message lands on a normal screen.

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Whether the dashboard holds the terminal now: the panic hook restores only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// The dashboard's terminal.
pub type Screen = Terminal<CrosstermBackend<Stdout>>;

/// Gives the terminal back when dropped.
#[derive(Debug)]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Takes the terminal: raw mode, alternate screen, hidden cursor.
pub fn enter() -> io::Result<(Guard, Screen)> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    // From here on the guard restores, even if the rest fails.
    let guard = Guard(());
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
    let screen = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    Ok((guard, screen))
}

/// Leaves raw mode and the alternate screen, once, if the dashboard holds the terminal.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Best effort: there is nowhere left to report a failure to.
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}
