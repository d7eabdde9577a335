//! Creates a scenario's jobs on a hub when they are due (`fleetsim run`, and `fleetsim hub
//! --scenario` unless `--no-jobs`).

use crate::clock::{Clock, Micros};
use crate::hub::Hub;
use crate::scenario::build::{self, PlannedJob};
use crate::scenario::Scenario;

/// Creates a scenario's jobs when they are due.
pub(crate) struct JobFeeder {
    plan: Vec<PlannedJob>,
    next: usize,
    /// Clock reading the plan's times count from (when the devices were ready).
    offset: Micros,
    /// Jobs the hub refused, with the reason.
    pub(crate) refused: Vec<(String, String)>,
}

impl JobFeeder {
    /// The feeder of `scenario`'s jobs.
    pub(crate) fn new(scenario: &Scenario) -> Self {
        JobFeeder {
            plan: build::planned_jobs(scenario),
            next: 0,
            offset: 0,
            refused: Vec::new(),
        }
    }

    /// Counts the plan's times from `offset` (when the devices were ready).
    pub(crate) fn starting_at(mut self, offset: Micros) -> Self {
        self.offset = offset;
        self
    }

    /// Creates every job due at `now`; answers the jobs the hub refused this time, with why
    /// (they are also kept in `refused`).
    pub(crate) async fn create_due(
        &mut self,
        hub: &Hub,
        clock: &Clock,
        now: Micros,
    ) -> &[(String, String)] {
        let before = self.refused.len();
        while self.next < self.plan.len() && self.offset + self.plan[self.next].create_at <= now {
            let planned = &self.plan[self.next];
            let mut request = planned.request.clone();
            request.start_time = Some(clock.wall_at(self.offset + planned.start_at));
            if let Err(e) = hub.create_job(request).await {
                self.refused
                    .push((planned.request.job_id.clone(), e.to_string()));
            }
            self.next += 1;
        }
        &self.refused[before..]
    }

    /// When the next job is due (None once all are created).
    pub(crate) fn next_at(&self) -> Option<Micros> {
        self.plan.get(self.next).map(|p| self.offset + p.create_at)
    }

    /// Jobs planned.
    pub(crate) fn planned(&self) -> usize {
        self.plan.len()
    }

    /// Jobs created so far.
    pub(crate) fn created(&self) -> usize {
        self.next - self.refused.len()
    }
}
