//! Creates a scenario's jobs on a hub when they are due (`fleetsim run`, and `fleetsim hub
//! --scenario` unless `--no-jobs`): at their times from the run's start, or, for a job with
//! `after`, once the job it follows has ended.

use std::collections::HashSet;

use crate::clock::{Clock, Micros};
use crate::hub::{Hub, HubView};
use crate::scenario::build::{self, PlannedJob};
use crate::scenario::Scenario;

/// Creates a scenario's jobs when they are due.
pub(crate) struct JobFeeder {
    /// The jobs timed from the run's start, by creation time.
    plan: Vec<PlannedJob>,
    next: usize,
    /// The jobs that wait for another job to end, in file order.
    waiting: Vec<PlannedJob>,
    /// Clock reading the plan's times count from (when the devices were ready).
    offset: Micros,
    /// Jobs planned in all.
    total: usize,
    /// Jobs created.
    created: usize,
    /// Jobs the hub refused (or that followed a refused job), with the reason.
    pub(crate) refused: Vec<(String, String)>,
    /// Jobs the hub already holds (a resumed run's): counted as created, not created again.
    kept: HashSet<String>,
}

impl JobFeeder {
    /// The feeder of `scenario`'s jobs.
    pub(crate) fn new(scenario: &Scenario) -> Self {
        let (waiting, plan): (Vec<_>, Vec<_>) = build::planned_jobs(scenario)
            .into_iter()
            .partition(|p| p.after.is_some());
        JobFeeder {
            total: plan.len() + waiting.len(),
            plan,
            next: 0,
            waiting,
            offset: 0,
            created: 0,
            refused: Vec::new(),
            kept: HashSet::new(),
        }
    }

    /// Counts the jobs with these ids as created without creating them: a resumed run's hub
    /// kept them.
    pub(crate) fn keeping(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.kept = ids.into_iter().collect();
        self
    }

    /// Counts the plan's times from `offset` (when the devices were ready).
    pub(crate) fn starting_at(mut self, offset: Micros) -> Self {
        self.offset = offset;
        self
    }

    /// Creates every job due at `now`, with `view` telling which jobs have ended; answers the
    /// jobs refused this time, with why (they are also kept in `refused`).
    pub(crate) async fn create_due(
        &mut self,
        hub: &Hub,
        clock: &Clock,
        now: Micros,
        view: &HubView,
    ) -> &[(String, String)] {
        let before = self.refused.len();
        while self.next < self.plan.len()
            && self.offset.saturating_add(self.plan[self.next].create_at) <= now
        {
            let planned = self.plan[self.next].clone();
            self.create(
                hub,
                clock,
                &planned,
                self.offset.saturating_add(planned.start_at),
            )
            .await;
            self.next += 1;
        }
        let mut i = 0;
        while i < self.waiting.len() {
            let after = self.waiting[i].after.clone().unwrap_or_default();
            let ended = view
                .jobs
                .iter()
                .any(|j| j.id == after && j.status.is_terminal());
            let refused = self.refused.iter().any(|(id, _)| *id == after);
            if !(ended || refused) {
                i += 1;
                continue;
            }
            let planned = self.waiting.remove(i);
            if refused {
                let why = format!("the job it follows, '{after}', was not created");
                self.refused.push((planned.request.job_id, why));
            } else {
                let start = now.saturating_add(planned.start_at - planned.create_at);
                self.create(hub, clock, &planned, start).await;
            }
        }
        &self.refused[before..]
    }

    /// Creates `planned` to start at `start`.
    async fn create(&mut self, hub: &Hub, clock: &Clock, planned: &PlannedJob, start: Micros) {
        if self.kept.contains(&planned.request.job_id) {
            self.created += 1;
            return;
        }
        let mut request = planned.request.clone();
        request.start_time = Some(clock.wall_at(start));
        match hub.create_job(request).await {
            Ok(_) => self.created += 1,
            Err(e) => self
                .refused
                .push((planned.request.job_id.clone(), e.to_string())),
        }
    }

    /// When the next job timed from the run's start is due (None once all are created).
    pub(crate) fn next_at(&self) -> Option<Micros> {
        self.plan
            .get(self.next)
            .map(|p| self.offset.saturating_add(p.create_at))
    }

    /// Whether jobs remain to be created (at a time, or after another job).
    pub(crate) fn pending(&self) -> bool {
        self.next < self.plan.len() || !self.waiting.is_empty()
    }

    /// Jobs planned.
    pub(crate) fn planned(&self) -> usize {
        self.total
    }

    /// Jobs created so far.
    pub(crate) fn created(&self) -> usize {
        self.created
    }
}
