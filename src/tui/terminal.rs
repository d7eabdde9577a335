//! The terminal while the dashboard owns it: raw mode, the alternate screen and mouse clicks,
//! given back by a drop guard on every way out (return, error, panic unwinding; Ctrl-C is a key
//! in raw mode and returns), and by a panic hook before the panic message prints, so the message
//! lands on a normal screen.

use std::fmt;
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::event::DisableMouseCapture;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute, Command};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Whether the dashboard holds the terminal now: the panic hook restores only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// The dashboard's terminal.
pub(crate) type Screen = Terminal<CrosstermBackend<Stdout>>;

/// Gives the terminal back when dropped.
#[derive(Debug)]
pub(crate) struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Reports mouse presses, releases and the wheel (xterm modes 1000 and 1006, SGR coordinates).
/// crossterm's `EnableMouseCapture` also reports every motion, and each would wake the frame
/// loop for a frame nobody needs; `DisableMouseCapture` turns every mode off again.
#[derive(Debug, Clone, Copy)]
struct EnableMouseClicks;

impl Command for EnableMouseClicks {
    fn write_ansi(&self, f: &mut impl fmt::Write) -> fmt::Result {
        f.write_str("\x1b[?1000h\x1b[?1006h")
    }

    #[cfg(windows)]
    fn execute_winapi(&self) -> io::Result<()> {
        crossterm::event::EnableMouseCapture.execute_winapi()
    }
}

/// Takes the terminal: raw mode, alternate screen, mouse clicks, hidden cursor.
pub(crate) fn enter() -> io::Result<(Guard, Screen)> {
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
    execute!(
        io::stdout(),
        EnterAlternateScreen,
        EnableMouseClicks,
        cursor::Hide
    )?;
    let screen = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    Ok((guard, screen))
}

/// Leaves raw mode, mouse reporting and the alternate screen, once, if the dashboard holds the
/// terminal.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Best effort: there is nowhere left to report a failure to.
        let _ = disable_raw_mode();
        let _ = execute!(
            io::stdout(),
            DisableMouseCapture,
            LeaveAlternateScreen,
            cursor::Show
        );
    }
}
