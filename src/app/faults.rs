//! A scenario's faults as the run's loop plays them: it announces each as it begins and ends
//! (the dashboard's events, or stderr), and restarts the hub at each `hub_restart`. The
//! devices' side of the faults acts in the fleet itself (`fleet::faults`), on the same timeline:
//! both count from the instant the run's jobs count from.

use crate::clock::Micros;
use crate::hub::handle::Restarted;
use crate::hub::Hub;
use crate::report::FaultWindow;
use crate::scenario::{build, Scenario};

/// One moment of the timeline.
#[derive(Debug, Clone, PartialEq)]
struct Moment {
    /// µs of the clock.
    at: Micros,
    /// Which fault (its index in the windows).
    fault: usize,
    /// Its start (or its end).
    starts: bool,
}

/// The faults' moments still to come.
pub(crate) struct FaultTimeline {
    windows: Vec<FaultWindow>,
    /// Latest first: the next is popped from the end.
    moments: Vec<Moment>,
}

impl FaultTimeline {
    /// The faults of `scenario`, on a timeline beginning at `origin` (µs of the clock).
    pub(crate) fn new(scenario: &Scenario, origin: Micros) -> FaultTimeline {
        let windows = build::fault_windows(scenario);
        let us = |s: f64| origin.saturating_add((s * 1e6).round() as Micros);
        let mut moments: Vec<Moment> = windows
            .iter()
            .enumerate()
            .flat_map(|(fault, w)| {
                let start = Moment {
                    at: us(w.start_s),
                    fault,
                    starts: true,
                };
                let end = (w.end_s > w.start_s).then(|| Moment {
                    at: us(w.end_s),
                    fault,
                    starts: false,
                });
                std::iter::once(start).chain(end)
            })
            .collect();
        // Latest first; at one instant, file order (starts before ends of the same fault).
        moments.sort_by_key(|m| std::cmp::Reverse((m.at, m.fault, !m.starts)));
        FaultTimeline { windows, moments }
    }

    /// When the next moment is due (None: no more).
    pub(crate) fn next_at(&self) -> Option<Micros> {
        self.moments.last().map(|m| m.at)
    }

    /// Plays the moments due by `now`: restarts the hub for each `hub_restart`; answers a line
    /// for each, for the event log.
    pub(crate) async fn advance(&mut self, hub: &Hub, now: Micros) -> Vec<String> {
        let mut lines = Vec::new();
        while self.moments.last().is_some_and(|m| m.at <= now) {
            let Some(m) = self.moments.pop() else {
                break;
            };
            let w = &self.windows[m.fault];
            if m.starts && w.kind == "hub_restart" {
                let line = match hub.restart().await {
                    Ok(Restarted::FromMemory) => {
                        format!("fault: the hub restarts (+{}s)", w.start_s)
                    }
                    Ok(Restarted::FromStore { devices, jobs }) => format!(
                        "fault: the hub restarts from its store: {devices} devices, {jobs} jobs \
                         (+{}s)",
                        w.start_s
                    ),
                    Ok(Restarted::StoreUnreadable(why)) => format!(
                        "fault: the hub restarts from memory: its store could not be read back \
                         ({why}) (+{}s)",
                        w.start_s
                    ),
                    Err(e) => format!("fault: the hub could not restart: {e}"),
                };
                lines.push(line);
                continue;
            }
            lines.push(match m.starts {
                true => format!("fault begins: {}", w.label()),
                false => format!("fault ends: {} {}", w.kind, w.target),
            });
        }
        lines
    }
}
