//! Plays a scenario's staged rollouts against a hub, as a client of it like the job feeder: at
//! a rollout's start it selects the target set and splits it into waves; each wave is a job
//! `{rollout}-w{n}` on its devices, each retry a job `{rollout}-w{n}-r{k}` on the devices that
//! failed with a retried failure, `backoff` after the try before ended; the next wave starts
//! `soak` after the last try of the one before.
//!
//! What must be exact stays in the hub, per job: the rising rate (carried from job to job) and
//! the abort criteria (over the outcomes of the jobs before, passed in as a base), so a virtual
//! run gives the same figures on every machine. The controller reads ended jobs from the
//! engine's views and acts at the moments they name (a job's end, plus soak or backoff).

use std::sync::Arc;

use crate::clock::{Clock, Micros};
use crate::hub::jobs::{
    Abort, DeviceError, Failure, JobControl, JobRequest, JobStatus, Ramp, Tally,
};
use crate::hub::{Hub, HubView, JobView};
use crate::ids::DeviceIdx;
use crate::report::{RolloutReport, RolloutStatus, WaveReport};
use crate::rollout::{Margin, RolloutPlan, RolloutView, WaveView};
use crate::units::fmt_us;

/// Where a rollout stands.
#[derive(Debug, Clone)]
enum Phase {
    /// Wave `n` (from 0) starts at `at`; wave 0 waits for the rollout's start.
    Wave { n: usize, at: Micros },
    /// Retry `k` of wave `n` starts at `at` on `devices`.
    Retry {
        n: usize,
        k: u32,
        at: Micros,
        devices: Vec<DeviceIdx>,
    },
    /// Try `k` (0: the wave's own job) of wave `n` runs as job `job`.
    Running { n: usize, k: u32, job: String },
    /// Ended.
    Done(RolloutStatus, Option<String>),
}

/// One rollout being played.
struct RolloutRun {
    plan: RolloutPlan,
    phase: Phase,
    /// The waves' devices, once the rollout started.
    waves: Vec<Arc<[DeviceIdx]>>,
    /// Devices in the target set.
    devices: u64,
    /// Outcomes so far, each device by its last try's (a retried device's earlier failure is
    /// taken out when its retry is created).
    tally: Tally,
    /// The rate as the last job left it.
    ramp: Option<Ramp>,
    /// The rate last told to the event log.
    told_rate: Option<f64>,
    /// The tier's pace, per minute (None: unlimited); rates shown and reported are capped by it.
    tier_per_minute: Option<f64>,
    /// Retries created.
    retried: u64,
    /// The waves that started.
    reports: Vec<WaveReport>,
    /// The ids of every job created, by wave.
    jobs: Vec<Vec<String>>,
    /// When the first wave started and the last job ended.
    started_us: Option<Micros>,
    ended_us: Option<Micros>,
}

/// Creates a scenario's rollouts' jobs when they are due.
pub(crate) struct Rollouts {
    runs: Vec<RolloutRun>,
    /// Clock reading the plans' times count from (when the devices were ready).
    offset: Micros,
    /// Jobs created.
    created: usize,
}

/// The rate a ramp dispatches at under the tier's pace (`tier_per_minute`, None: unlimited).
fn effective(ramp: Option<Ramp>, tier_per_minute: Option<f64>) -> Option<f64> {
    ramp.map(|r| tier_per_minute.map_or(r.per_minute, |t| r.per_minute.min(t)))
}

impl Rollouts {
    /// The controller of `plans`, timed from `offset`, on a hub whose tier paces job device
    /// operations at `tier_per_minute` (None: unlimited).
    pub(crate) fn new(
        plans: Vec<RolloutPlan>,
        offset: Micros,
        tier_per_minute: Option<f64>,
    ) -> Self {
        let runs = plans
            .into_iter()
            .map(|plan| RolloutRun {
                phase: Phase::Wave {
                    n: 0,
                    at: offset + plan.start_at,
                },
                ramp: plan.ramp,
                told_rate: effective(plan.ramp, tier_per_minute),
                tier_per_minute,
                plan,
                waves: Vec::new(),
                devices: 0,
                tally: Tally::default(),
                retried: 0,
                reports: Vec::new(),
                jobs: Vec::new(),
                started_us: None,
                ended_us: None,
            })
            .collect();
        Rollouts {
            runs,
            offset,
            created: 0,
        }
    }

    /// Acts on everything due at `now`, with `view` telling which jobs ended; answers lines for
    /// the event log (wave starts, retries, aborts, ends).
    pub(crate) async fn advance(
        &mut self,
        hub: &Hub,
        clock: &Clock,
        now: Micros,
        view: &HubView,
    ) -> Vec<String> {
        let mut events = Vec::new();
        for run in &mut self.runs {
            while let Some(created) = run
                .step(hub, clock, now, view, self.offset, &mut events)
                .await
            {
                self.created += usize::from(created);
            }
            run.note_rate(view, &mut events);
        }
        events
    }

    /// When the next wave or retry is due (None when none waits for a time).
    pub(crate) fn next_at(&self) -> Option<Micros> {
        self.runs
            .iter()
            .filter_map(|r| match r.phase {
                Phase::Wave { at, .. } | Phase::Retry { at, .. } => Some(at),
                _ => None,
            })
            .min()
    }

    /// Whether a rollout has not ended.
    pub(crate) fn pending(&self) -> bool {
        self.runs
            .iter()
            .any(|r| !matches!(r.phase, Phase::Done(..)))
    }

    /// Jobs created so far.
    pub(crate) fn created(&self) -> usize {
        self.created
    }

    /// What the dashboard shows of each rollout now.
    pub(crate) fn views(&self, view: &HubView) -> Vec<RolloutView> {
        self.runs.iter().map(|r| r.view(view)).collect()
    }

    /// The rollouts as `summary.json` reports them; one still going when the run ended has
    /// failed.
    pub(crate) fn reports(&self) -> Vec<RolloutReport> {
        self.runs.iter().map(RolloutRun::report).collect()
    }
}

impl RolloutRun {
    /// Takes one step if one is due: answers Some(created a job) when it did something, None
    /// when it waits.
    async fn step(
        &mut self,
        hub: &Hub,
        clock: &Clock,
        now: Micros,
        view: &HubView,
        offset: Micros,
        events: &mut Vec<String>,
    ) -> Option<bool> {
        match self.phase.clone() {
            Phase::Wave { n, at } if at <= now => {
                if n == 0 {
                    if let Err(why) = self.select(hub).await {
                        self.phase = Phase::Done(RolloutStatus::Failed, Some(why));
                        return Some(false);
                    }
                    self.started_us = Some(at);
                }
                let devices = self.waves[n].clone();
                let job = self.plan.job_id(n + 1, 0);
                self.reports.push(WaveReport {
                    job_id: job.clone(),
                    devices: devices.len() as u64,
                    succeeded: 0,
                    failed: 0,
                    started_s: at.saturating_sub(offset) as f64 / 1e6,
                    ended_s: None,
                    rate_per_minute_at_end: None,
                });
                self.jobs.push(Vec::new());
                events.push(format!(
                    "rollout '{}': wave {} ({job}) starts on {} devices{}",
                    self.plan.id,
                    n + 1,
                    devices.len(),
                    effective(self.ramp, self.tier_per_minute)
                        .map(|r| format!(" at {r:.0}/min"))
                        .unwrap_or_default()
                ));
                Some(self.create(hub, clock, n, 0, devices, at).await)
            }
            Phase::Retry { n, k, at, devices } if at <= now => {
                let job = self.plan.job_id(n + 1, k);
                self.retried += devices.len() as u64;
                events.push(format!(
                    "rollout '{}': retry {k} of wave {} ({job}) on {} devices",
                    self.plan.id,
                    n + 1,
                    devices.len()
                ));
                Some(self.create(hub, clock, n, k, devices.into(), at).await)
            }
            Phase::Running { n, k, job } => {
                let j = view
                    .jobs
                    .iter()
                    .find(|j| j.id == job && j.status.is_terminal())?;
                self.ended(hub, n, k, j, offset, events).await;
                Some(false)
            }
            _ => None,
        }
    }

    /// Tells the event log when the running job's rate stepped up since it last told.
    fn note_rate(&mut self, view: &HubView, events: &mut Vec<String>) {
        let Phase::Running { job, .. } = &self.phase else {
            return;
        };
        let ramp = view.jobs.iter().find(|j| &j.id == job).and_then(|j| j.ramp);
        let rate = effective(ramp, self.tier_per_minute);
        if rate.is_some() && rate != self.told_rate {
            events.push(format!(
                "rollout '{}': rate now {:.0}/min",
                self.plan.id,
                rate.unwrap_or_default()
            ));
            self.told_rate = rate;
        }
    }

    /// Selects the target set and splits it into waves.
    async fn select(&mut self, hub: &Hub) -> Result<(), String> {
        let targets = hub
            .select(&self.plan.query)
            .await
            .map_err(|e| format!("its query failed: {e}"))?;
        let mut matching = Vec::with_capacity(self.plan.waves.len());
        for w in &self.plan.waves {
            matching.push(match w.narrowing() {
                Some(clause) => hub
                    .select(clause)
                    .await
                    .map_err(|e| format!("wave \"{clause}\" failed: {e}"))?,
                None => Vec::new(),
            });
        }
        self.devices = targets.len() as u64;
        self.waves = self
            .plan
            .split(&targets, |i| std::mem::take(&mut matching[i]))
            .into_iter()
            .map(Arc::from)
            .collect();
        Ok(())
    }

    /// Creates try `k` of wave `n` on `devices`, starting at `at`; answers whether
    /// the hub took it (the rollout fails otherwise).
    async fn create(
        &mut self,
        hub: &Hub,
        clock: &Clock,
        n: usize,
        k: u32,
        devices: Arc<[DeviceIdx]>,
        at: Micros,
    ) -> bool {
        let plan = &self.plan;
        let job = plan.job_id(n + 1, k);
        let request = JobRequest {
            job_id: job.clone(),
            kind: plan.kind.clone(),
            query_condition: plan.wave_condition(&plan.waves[n]),
            start_time: Some(clock.wall_at(at)),
            max_execution_s: plan.max_execution_s,
            control: JobControl {
                devices: Some(devices),
                ramp: self.ramp,
                abort: (!plan.abort.is_empty()).then(|| Abort {
                    rules: plan.abort.clone(),
                    base: self.tally,
                }),
                ack_timeout_s: plan.ack_timeout_s,
            },
        };
        match hub.create_job(request).await {
            Ok(_) => {
                self.jobs[n].push(job.clone());
                self.phase = Phase::Running { n, k, job };
                true
            }
            Err(e) => {
                self.ended_us = Some(at);
                self.phase = Phase::Done(
                    RolloutStatus::Failed,
                    Some(format!("the hub refused job '{job}': {e}")),
                );
                false
            }
        }
    }

    /// Takes in the end of try `k` of wave `n` (job `j`) and decides what comes next: the end
    /// (aborted, failed, or completed after the last wave), a retry, or the next wave.
    async fn ended(
        &mut self,
        hub: &Hub,
        n: usize,
        k: u32,
        j: &JobView,
        offset: Micros,
        events: &mut Vec<String>,
    ) {
        let end = j.end_us.unwrap_or(j.start_us);
        self.ended_us = Some(end);
        self.tally = self.tally.plus(&j.tally);
        self.ramp = j.ramp;
        let wave = &mut self.reports[n];
        // From the tally: a device cancelled with its job (an abort) neither succeeded nor
        // failed, though the job's statistics count it failed as IoT Hub does.
        let failed = j.tally.of(Failure::Failed);
        wave.succeeded += j.tally.ended - failed;
        wave.failed += failed;
        wave.ended_s = Some(end.saturating_sub(offset) as f64 / 1e6);
        wave.rate_per_minute_at_end = effective(self.ramp, self.tier_per_minute);
        if let Some(t) = &j.tripped {
            let why = format!("{t}; wave {} ({}) was cancelled", n + 1, j.id);
            events.push(format!("rollout '{}' aborted: {why}", self.plan.id));
            self.phase = Phase::Done(RolloutStatus::Aborted, Some(why));
            return;
        }
        if j.status == JobStatus::Cancelled {
            let why = format!("its job '{}' was cancelled", j.id);
            events.push(format!("rollout '{}' failed: {why}", self.plan.id));
            self.phase = Phase::Done(RolloutStatus::Failed, Some(why));
            return;
        }
        let retried: Vec<Failure> = self
            .plan
            .retry
            .iter()
            .filter(|r| r.times > k)
            .map(|r| r.failure)
            .collect();
        if !retried.is_empty() {
            let failed = hub.failed_devices(&j.id, retried).await.unwrap_or_default();
            if !failed.is_empty() {
                self.take_back(n, &failed);
                let backoff = self
                    .plan
                    .retry
                    .iter()
                    .filter(|r| r.times > k && failed.iter().any(|&(_, e)| r.failure.matches(e)))
                    .map(|r| r.backoff_us)
                    .max()
                    .unwrap_or(0);
                self.phase = Phase::Retry {
                    n,
                    k: k + 1,
                    at: end + backoff,
                    devices: failed.into_iter().map(|(d, _)| d).collect(),
                };
                return;
            }
        }
        if n + 1 < self.waves.len() {
            self.phase = Phase::Wave {
                n: n + 1,
                at: end + self.plan.soak_us,
            };
        } else {
            events.push(format!(
                "rollout '{}' completed in {}",
                self.plan.id,
                fmt_us(end.saturating_sub(self.started_us.unwrap_or(end)))
            ));
            self.phase = Phase::Done(RolloutStatus::Completed, None);
        }
    }

    /// Takes the failures of devices about to be retried out of the tally and the wave's
    /// figures: a device counts once, with its last try's outcome.
    fn take_back(&mut self, n: usize, failed: &[(DeviceIdx, DeviceError)]) {
        self.tally.ended -= failed.len() as u64;
        for &(_, e) in failed {
            self.tally.add_failure(e, -1);
        }
        self.reports[n].failed -= failed.len() as u64;
    }

    fn report(&self) -> RolloutReport {
        let (status, reason) = match &self.phase {
            Phase::Done(status, reason) => (*status, reason.clone()),
            _ => (
                RolloutStatus::Failed,
                Some("the run ended before the rollout did".to_owned()),
            ),
        };
        let makespan_us = match (self.started_us, self.ended_us) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => 0,
        };
        RolloutReport {
            id: self.plan.id.clone(),
            status,
            reason,
            devices: self.devices,
            succeeded: self.reports.iter().map(|w| w.succeeded).sum(),
            failed: self.reports.iter().map(|w| w.failed).sum(),
            retried: self.retried,
            makespan_ms: makespan_us as f64 / 1000.0,
            waves: self.reports.clone(),
        }
    }

    fn view(&self, view: &HubView) -> RolloutView {
        let running = match &self.phase {
            Phase::Running { job, .. } => view.jobs.iter().find(|j| &j.id == job),
            _ => None,
        };
        let tally = running.map_or(self.tally, |j| self.tally.plus(&j.tally));
        let status = match &self.phase {
            Phase::Wave { n: 0, .. } if self.reports.is_empty() => "waiting".to_owned(),
            Phase::Wave { n, .. } => format!("soaking before wave {}", n + 1),
            Phase::Retry { n, k, .. } => format!("backing off before retry {k} of wave {}", n + 1),
            Phase::Running { n, k: 0, .. } => {
                format!("wave {} of {}", n + 1, self.plan.waves.len())
            }
            Phase::Running { n, k, .. } => format!("wave {} retry {k}", n + 1),
            Phase::Done(status, _) => format!("{status:?}").to_lowercase(),
        };
        RolloutView {
            id: self.plan.id.clone(),
            status,
            rate_per_minute: effective(
                running.and_then(|j| j.ramp).or(self.ramp),
                self.tier_per_minute,
            ),
            waves: (0..self.plan.waves.len())
                .map(|n| {
                    let jobs: Vec<&JobView> = self
                        .jobs
                        .get(n)
                        .into_iter()
                        .flatten()
                        .filter_map(|id| view.jobs.iter().find(|j| &j.id == id))
                        .collect();
                    // The outcomes of the wave's try still running (ended tries are in its
                    // report).
                    let live = jobs
                        .last()
                        .filter(|j| !j.status.is_terminal())
                        .map(|j| j.tally);
                    WaveView {
                        job_id: self.plan.job_id(n + 1, 0),
                        devices: self.waves.get(n).map_or(0, |w| w.len() as u64),
                        started: !jobs.is_empty(),
                        succeeded: self.reports.get(n).map_or(0, |w| w.succeeded)
                            + live.map_or(0, |t| t.ended - t.of(Failure::Failed)),
                        failed: self.reports.get(n).map_or(0, |w| w.failed)
                            + live.map_or(0, |t| t.of(Failure::Failed)),
                    }
                })
                .collect(),
            margins: self
                .plan
                .abort
                .iter()
                .map(|&rule| Margin { rule, tally })
                .collect(),
        }
    }
}
