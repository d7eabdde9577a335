//! The live dashboard (ratatui). It owns its state ([`app::App`]), takes the engine's owned
//! [`HubView`] snapshots from a `watch` channel, renders them with pure functions ([`ui`],
//! [`widgets`]) at a fixed frame rate, and gives the terminal back on exit, error, panic and
//! Ctrl-C ([`terminal`]).
//!
//! It runs on a blocking thread of its own so terminal writes never hold up the engine. Any
//! runner can use it: it needs only the view receiver, a [`Hub`] handle (to cancel jobs), what
//! the header shows, and the run's [`CancellationToken`], which it cancels when the user quits.

pub(crate) mod app;
pub(crate) mod rollouts;
pub(crate) mod terminal;
pub(crate) mod ui;
pub(crate) mod widgets;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{self, Event as TermEvent};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{Micros, Stopwatch};
use crate::hub::{Hub, HubView};
use crate::rollout::RolloutView;
use app::{Action, App};

/// Default frames per second.
pub(crate) const DEFAULT_FPS: u32 = 10;

/// What the header shows besides the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Scenario name (or what the hub serves).
    pub scenario: String,
    /// The run's seed, if it has one.
    pub seed: Option<u64>,
    /// The run's duration limit, if it has one (the header then shows the time left).
    pub(crate) duration_us: Option<Micros>,
    /// How devices connect: "in-process", "mqtt", ...
    pub(crate) transport: &'static str,
    /// In virtual time, the real time since the run started: the header then shows simulated
    /// time, wall time and the speed-up.
    pub(crate) virtual_time: Option<Stopwatch>,
}

/// Something the run tells the dashboard besides snapshots.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A line for the event log.
    Note(String),
    /// The hub refused to create a job.
    Refused {
        /// The job id.
        job: String,
        /// The hub's reason.
        why: String,
    },
    /// The staged rollouts as they stand (for the rollouts panel; not logged).
    Rollouts(Vec<RolloutView>),
    /// The run has ended and its results are written (or why not); the dashboard stays up
    /// until the user quits.
    Finished(String),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Note(text) | Event::Finished(text) => f.write_str(text),
            Event::Refused { job, why } => write!(f, "job '{job}' refused: {why}"),
            Event::Rollouts(list) => write!(f, "{} rollout(s)", list.len()),
        }
    }
}

/// A running dashboard.
#[derive(Debug)]
pub(crate) struct Dashboard {
    events: mpsc::UnboundedSender<Event>,
    /// The dashboard thread's outcome, sent when it ends.
    task: oneshot::Receiver<io::Result<()>>,
}

impl Dashboard {
    /// Opens the dashboard on the terminal. It quits, cancelling `shutdown`, when the user
    /// presses q, Esc or Ctrl-C; it closes by itself when `shutdown` is cancelled elsewhere.
    /// Must be called inside a tokio runtime.
    pub(crate) fn spawn(
        view: watch::Receiver<Arc<HubView>>,
        hub: Hub,
        header: Header,
        shutdown: CancellationToken,
        fps: u32,
    ) -> Dashboard {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = tx.clone();
        let runtime = Handle::current();
        // A thread of its own rather than tokio's blocking pool: a blocking task holds a paused
        // (virtual-time) clock still for as long as it runs.
        let (done, task) = oneshot::channel();
        std::thread::spawn(move || {
            let looped = FrameLoop {
                view,
                hub,
                events: rx,
                replies: tx,
                runtime,
                shutdown: shutdown.clone(),
                frame: Duration::from_millis(1000 / u64::from(fps.max(1))),
            }
            .run(App::new(header));
            // However the dashboard ended, the run must not go on unseen.
            shutdown.cancel();
            let _ = done.send(looped);
        });
        Dashboard { events, task }
    }

    /// Tells the dashboard something (ignored once it has closed).
    pub(crate) fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Tells the dashboard the run has ended and waits until the user quits it.
    pub(crate) async fn finish(self, message: String) -> anyhow::Result<()> {
        self.send(Event::Finished(message));
        self.task
            .await
            .context("the dashboard thread failed")?
            .context("the dashboard lost the terminal")
    }
}

struct FrameLoop {
    view: watch::Receiver<Arc<HubView>>,
    hub: Hub,
    events: mpsc::UnboundedReceiver<Event>,
    /// Where cancel requests report back.
    replies: mpsc::UnboundedSender<Event>,
    runtime: Handle,
    shutdown: CancellationToken,
    frame: Duration,
}

impl FrameLoop {
    fn run(mut self, mut app: App) -> io::Result<()> {
        let (_guard, mut screen) = terminal::enter()?;
        let mut engine_stopped = false;
        while !self.shutdown.is_cancelled() {
            while let Ok(e) = self.events.try_recv() {
                app.on_event(e);
            }
            // An error means the engine has stopped; its last snapshot may still be unseen.
            if !app.frozen
                && self
                    .view
                    .has_changed()
                    .unwrap_or_else(|_| !std::mem::replace(&mut engine_stopped, true))
            {
                app.absorb(self.view.borrow_and_update().clone());
            }
            let area = screen.draw(|f| ui::draw(f, &app))?.area;
            // Mouse positions refer to this frame until the next one is drawn, and the jobs
            // table scrolls from here.
            let table = ui::jobs_table(area, &app);
            app.jobs_offset = table.offset;
            // Keys and clicks wake the loop at once; otherwise it draws once a frame.
            if !event::poll(self.frame)? {
                continue;
            }
            loop {
                match event::read()? {
                    TermEvent::Key(key) => match app.on_key(key) {
                        Some(Action::Quit) => return Ok(()),
                        Some(Action::CancelJob(id)) => self.cancel(id),
                        None => {}
                    },
                    TermEvent::Mouse(mouse) => app.on_mouse(mouse, &table),
                    _ => {}
                }
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn cancel(&self, id: String) {
        let hub = self.hub.clone();
        let replies = self.replies.clone();
        self.runtime.spawn(async move {
            let text = match hub.cancel_job(&id).await {
                Ok(_) => format!("job {id}: cancel accepted"),
                Err(e) => format!("job {id}: cancel refused: {e}"),
            };
            let _ = replies.send(Event::Note(text));
        });
    }
}
