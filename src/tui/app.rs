//! The dashboard's own state: the snapshot on show, the user's choices (selected job, latency
//! measure, throughput window, frozen, help, a pending cancel), the throughput history and the
//! event log. Everything here is a pure state transition; the frame loop feeds it snapshots,
//! run events, keys and mouse events, and acts on the [`Action`]s it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use crate::clock::Micros;
use crate::hub::jobs::JobStatus;
use crate::hub::{HubView, JobView};
use crate::metrics::Measure;
use crate::rollout::RolloutView;

use super::widgets::JobsTable;
use super::{Event, Header};

/// Throughput windows `+`/`-` step through, in seconds.
pub(crate) const WINDOWS_S: [usize; 5] = [10, 30, 60, 300, 900];
/// Event log lines kept.
const LOG_LINES: usize = 200;
/// Latency measures in the order Tab cycles them.
pub(crate) const MEASURES: [Measure; 4] = [
    Measure::Delivery,
    Measure::RoundTrip,
    Measure::Completion,
    Measure::EngineLag,
];

/// What the frame loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Leave the dashboard and stop the run.
    Quit,
    /// Ask the hub to cancel this job.
    CancelJob(String),
}

/// One event log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// Run clock reading when it happened (as far as the dashboard knows).
    pub(crate) at_us: Micros,
    /// What happened.
    pub(crate) text: String,
}

/// The dashboard's state.
#[derive(Debug)]
pub(crate) struct App {
    /// What the header shows besides the snapshot.
    pub(crate) header: Header,
    /// The snapshot on show.
    pub view: Arc<HubView>,
    /// 0 is "all jobs", `i` is `view.jobs[i - 1]`.
    pub(crate) selected: usize,
    /// The jobs table's first row shown when it was last drawn: it scrolls from there, so a row
    /// stays under the mouse when it is clicked.
    pub(crate) jobs_offset: usize,
    /// Index into [`MEASURES`].
    pub(crate) measure: usize,
    /// Index into [`WINDOWS_S`].
    pub(crate) window: usize,
    /// New snapshots are ignored while frozen.
    pub(crate) frozen: bool,
    /// The help overlay is open.
    pub(crate) help: bool,
    /// A job waiting for the user's y/n before it is cancelled.
    pub(crate) confirm: Option<String>,
    /// Set when the run has ended, with what to tell the user.
    pub(crate) finished: Option<String>,
    /// Job creations the hub refused (throttled or invalid).
    pub(crate) refused: u64,
    /// Closed seconds' ops/s, oldest first, at most the largest window.
    pub(crate) history: VecDeque<f64>,
    /// The last second appended to `history`.
    last_second: Option<u64>,
    /// Oldest first.
    pub(crate) log: VecDeque<LogLine>,
    /// The staged rollouts as last told (empty: no rollouts panel).
    pub(crate) rollouts: Vec<RolloutView>,
}

impl App {
    /// A dashboard with nothing seen yet.
    pub(crate) fn new(header: Header) -> App {
        App {
            header,
            view: Arc::default(),
            selected: 0,
            jobs_offset: 0,
            measure: 0,
            window: 2,
            frozen: false,
            help: false,
            confirm: None,
            finished: None,
            refused: 0,
            history: VecDeque::new(),
            last_second: None,
            log: VecDeque::new(),
            rollouts: Vec::new(),
        }
    }

    /// The latency measure on show.
    pub(crate) fn measure(&self) -> Measure {
        MEASURES[self.measure]
    }

    /// The throughput window, in seconds.
    pub(crate) fn window_s(&self) -> usize {
        WINDOWS_S[self.window]
    }

    /// The selected job, or `None` for all jobs.
    pub(crate) fn selected_job(&self) -> Option<&JobView> {
        self.selected
            .checked_sub(1)
            .and_then(|i| self.view.jobs.get(i))
    }

    fn log(&mut self, text: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            at_us: self.view.now_us,
            text,
        });
    }

    /// Takes a new snapshot: logs job state changes against the previous one and extends the
    /// throughput history.
    pub(crate) fn absorb(&mut self, view: impl Into<Arc<HubView>>) {
        let old = std::mem::replace(&mut self.view, view.into());
        // A map, not a search per job: a hub may hold thousands of jobs.
        let statuses: HashMap<&str, JobStatus> =
            old.jobs.iter().map(|j| (j.id.as_str(), j.status)).collect();
        let mut lines = Vec::new();
        for job in &self.view.jobs {
            let before = statuses.get(job.id.as_str()).copied();
            if before.is_none() {
                lines.push(format!("job {} created ({})", job.id, job.job_type));
            }
            if before != Some(job.status) {
                let s = &job.stats;
                lines.push(if job.status.is_terminal() {
                    format!(
                        "job {} {}: {} succeeded, {} failed of {}",
                        job.id,
                        job.status.name(),
                        s.succeeded_count,
                        s.failed_count,
                        s.device_count
                    )
                } else {
                    format!("job {} {}", job.id, job.status.name())
                });
            }
        }
        for line in lines {
            self.log(line);
        }
        let max = WINDOWS_S[WINDOWS_S.len() - 1];
        for row in &self.view.metrics.recent {
            if self.last_second.is_some_and(|s| row.second <= s) {
                continue;
            }
            if self.history.len() == max {
                self.history.pop_front();
            }
            self.history.push_back(row.ops_per_s);
            self.last_second = Some(row.second);
        }
        self.selected = self.selected.min(self.view.jobs.len());
    }

    /// Takes an event from the run or from a cancel request.
    pub(crate) fn on_event(&mut self, event: Event) {
        match event {
            Event::Rollouts(list) => {
                self.rollouts = list;
                return;
            }
            Event::Note(_) => {}
            Event::Refused { .. } => self.refused += 1,
            Event::Finished(ref text) => self.finished = Some(text.clone()),
        }
        self.log(event.to_string());
    }

    fn select_previous(&mut self) {
        self.selected = self.selected.saturating_sub(1);
    }

    fn select_next(&mut self) {
        self.selected = (self.selected + 1).min(self.view.jobs.len());
    }

    /// Handles a mouse event; `table` is the jobs table as drawn on the screen the user sees.
    /// A click on a row selects it and the wheel moves the selection, unless an overlay (help,
    /// cancel confirmation) waits for a key.
    pub(crate) fn on_mouse(&mut self, mouse: MouseEvent, table: &JobsTable) {
        if self.help || self.confirm.is_some() {
            return;
        }
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                let rows = self.view.jobs.len() + 1;
                if let Some(row) = table.row_at(mouse.column, mouse.row, rows) {
                    self.selected = row;
                }
            }
            MouseEventKind::ScrollUp => self.select_previous(),
            MouseEventKind::ScrollDown => self.select_next(),
            _ => {}
        }
    }

    /// Handles a key; returns what the frame loop must do, if anything.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        // Raw mode swallows SIGINT, so Ctrl-C arrives as a key and always quits.
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        if let Some(id) = self.confirm.take() {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                self.log(format!("cancelling job {id}"));
                return Some(Action::CancelJob(id));
            }
            self.log(format!("job {id} not cancelled"));
            return None;
        }
        if self.help {
            self.help = false;
            return (key.code == KeyCode::Char('q')).then_some(Action::Quit);
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Up | KeyCode::Char('k') => self.select_previous(),
            KeyCode::Down | KeyCode::Char('j') => self.select_next(),
            KeyCode::Tab => self.measure = (self.measure + 1) % MEASURES.len(),
            KeyCode::BackTab => self.measure = (self.measure + MEASURES.len() - 1) % MEASURES.len(),
            KeyCode::Char('+' | '=') => self.window = (self.window + 1).min(WINDOWS_S.len() - 1),
            KeyCode::Char('-') => self.window = self.window.saturating_sub(1),
            KeyCode::Char('p') => self.frozen = !self.frozen,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('c') => match self.selected_job() {
                Some(j) if !j.status.is_terminal() => self.confirm = Some(j.id.clone()),
                Some(j) => {
                    let text = format!("job {} has already {}", j.id, j.status.name());
                    self.log(text);
                }
                None => self.log("select a job to cancel (↑/↓)".to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hub::jobs::{ErrorCounts, JobStatus};
    use crate::metrics::recorder::SecondRow;
    use crate::report::DeviceJobStatistics;

    pub(crate) fn job(id: &str, status: JobStatus, done: u64, failed: u64) -> JobView {
        JobView {
            id: id.to_owned(),
            job_type: "scheduleDeviceMethod",
            status,
            stats: DeviceJobStatistics {
                device_count: 200,
                failed_count: failed,
                succeeded_count: done,
                running_count: 10,
                pending_count: 200 - done - failed - 10,
            },
            makespan_ms: 2500.0,
            ops_per_s: 80.0,
            errors: ErrorCounts {
                offline: 7,
                timeout: 2,
                expired: 0,
                rejected: 0,
                by_status: vec![(503, 11)],
            },
            start_us: 0,
            end_us: None,
            ramp: None,
            tally: Default::default(),
            tripped: None,
        }
    }

    pub(crate) fn header() -> Header {
        Header {
            scenario: "small".into(),
            seed: Some(5),
            duration_us: Some(30_000_000),
            transport: "in-process",
            virtual_time: None,
        }
    }

    pub(crate) fn view(now_us: Micros, jobs: Vec<JobView>) -> HubView {
        HubView {
            now_us,
            devices: 300,
            connected: 285,
            jobs,
            ..HubView::default()
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn diffing_snapshots_logs_job_changes() {
        let mut app = App::new(header());
        app.absorb(view(
            1_000_000,
            vec![job("reboot", JobStatus::Queued, 0, 0)],
        ));
        app.absorb(view(
            2_000_000,
            vec![job("reboot", JobStatus::Running, 50, 5)],
        ));
        app.absorb(view(
            2_100_000,
            vec![job("reboot", JobStatus::Running, 60, 5)],
        ));
        app.absorb(view(
            3_000_000,
            vec![job("reboot", JobStatus::Completed, 170, 20)],
        ));
        let lines: Vec<_> = app.log.iter().map(|l| (l.at_us, l.text.as_str())).collect();
        assert_eq!(
            lines,
            [
                (1_000_000, "job reboot created (scheduleDeviceMethod)"),
                (1_000_000, "job reboot queued"),
                (2_000_000, "job reboot running"),
                (
                    3_000_000,
                    "job reboot completed: 170 succeeded, 20 failed of 200"
                ),
            ]
        );
    }

    #[test]
    fn history_appends_each_closed_second_once() {
        let mut app = App::new(header());
        let row = |second, ops_per_s| SecondRow {
            second,
            ops_done: 0,
            ops_per_s,
            in_flight: 0,
            failures: 0,
            connected: 0,
            faults: 0,
        };
        let mut v = view(2_500_000, vec![]);
        v.metrics.recent = vec![row(0, 1.0), row(1, 2.0)];
        app.absorb(v.clone());
        v.metrics.recent.push(row(2, 3.0));
        app.absorb(v);
        assert_eq!(app.history, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn keys_select_cycle_and_freeze() {
        let mut app = App::new(header());
        app.absorb(view(
            0,
            vec![
                job("a", JobStatus::Running, 0, 0),
                job("b", JobStatus::Running, 0, 0),
            ],
        ));
        assert_eq!(app.on_key(key(KeyCode::Up)), None);
        assert_eq!(app.selected, 0);
        for _ in 0..5 {
            app.on_key(key(KeyCode::Down));
        }
        assert_eq!(app.selected_job().unwrap().id, "b");
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.selected_job().unwrap().id, "a");

        assert_eq!(app.measure(), Measure::Delivery);
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.measure(), Measure::RoundTrip);
        app.on_key(key(KeyCode::BackTab));
        app.on_key(key(KeyCode::BackTab));
        assert_eq!(app.measure(), Measure::EngineLag);

        assert_eq!(app.window_s(), 60);
        app.on_key(key(KeyCode::Char('+')));
        assert_eq!(app.window_s(), 300);
        for _ in 0..9 {
            app.on_key(key(KeyCode::Char('-')));
        }
        assert_eq!(app.window_s(), 10);

        app.on_key(key(KeyCode::Char('p')));
        assert!(app.frozen);
        app.on_key(key(KeyCode::Char('?')));
        assert!(app.help);
        assert_eq!(
            app.on_key(key(KeyCode::Char('x'))),
            None,
            "any key closes help"
        );
        assert!(!app.help);
    }

    #[test]
    fn quitting_keys() {
        let mut app = App::new(header());
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(app.on_key(key(KeyCode::Esc)), Some(Action::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        app.confirm = Some("a".into());
        assert_eq!(app.on_key(ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn cancel_asks_first() {
        let mut app = App::new(header());
        app.absorb(view(
            0,
            vec![
                job("a", JobStatus::Running, 0, 0),
                job("b", JobStatus::Completed, 190, 0),
            ],
        ));
        app.on_key(key(KeyCode::Char('c')));
        assert_eq!(
            app.confirm, None,
            "nothing to cancel with all jobs selected"
        );
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Char('c')));
        assert_eq!(app.confirm.as_deref(), Some("a"));
        assert_eq!(app.on_key(key(KeyCode::Char('n'))), None);
        assert_eq!(app.confirm, None);
        app.on_key(key(KeyCode::Char('c')));
        assert_eq!(
            app.on_key(key(KeyCode::Char('y'))),
            Some(Action::CancelJob("a".into()))
        );
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Char('c')));
        assert_eq!(app.confirm, None, "b has already ended");
        assert_eq!(app.log.back().unwrap().text, "job b has already completed");
    }

    #[test]
    fn run_events_are_logged() {
        let mut app = App::new(header());
        app.on_event(Event::Refused {
            job: "x".into(),
            why: "throttled".into(),
        });
        app.on_event(Event::Finished("results written to /tmp/r".into()));
        assert_eq!(app.refused, 1);
        assert_eq!(app.finished.as_deref(), Some("results written to /tmp/r"));
        assert_eq!(app.log.len(), 2);
    }
}
