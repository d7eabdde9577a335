//! What the engine publishes: the [`HubView`] dashboards and progress read, and the job
//! reports of a run.

use crate::clock::Micros;
use crate::hub::handle::{HubView, JobView};
use crate::hub::jobs::Job;
use crate::report::JobReport;

use super::Engine;

impl Engine {
    fn job_makespan(job: &Job, now: Micros) -> (f64, f64) {
        if job.stats.device_count == 0 || job.start_us > now {
            return (0.0, 0.0);
        }
        let end = if job.status.is_terminal() {
            job.last_done_us.max(job.start_us)
        } else {
            now
        };
        let span_us = end.saturating_sub(job.start_us);
        let done = job.stats.succeeded_count + job.stats.failed_count;
        let ops = if span_us > 0 {
            done as f64 / (span_us as f64 / 1e6)
        } else {
            0.0
        };
        (span_us as f64 / 1000.0, ops)
    }

    pub(super) fn job_reports(&self, now: Micros) -> Vec<JobReport> {
        self.slots
            .iter()
            .map(|s| {
                let (makespan_ms, ops_per_s) = Self::job_makespan(&s.job, now);
                JobReport {
                    job_id: s.job.request.job_id.clone(),
                    job_type: s.job.request.kind.type_name().to_owned(),
                    status: s.job.status.name().to_owned(),
                    statistics: s.job.stats,
                    makespan_ms,
                    ops_per_s,
                    failures: s.job.errors.by_cause(),
                }
            })
            .collect()
    }

    pub(super) fn view(&mut self, now: Micros) -> HubView {
        let metrics = self.recorder.snapshot(now);
        HubView {
            delivery_clock: self.receipts.report(),
            now_us: now,
            devices: self.registry.len() as u64,
            connected: self.registry.connected(),
            jobs: self
                .slots
                .iter()
                .map(|s| {
                    let (makespan_ms, ops_per_s) = Self::job_makespan(&s.job, now);
                    JobView {
                        id: s.job.request.job_id.clone(),
                        job_type: s.job.request.kind.type_name(),
                        status: s.job.status,
                        stats: s.job.stats,
                        makespan_ms,
                        ops_per_s,
                        errors: s.job.errors.clone(),
                        start_us: s.job.start_us,
                        end_us: s.job.end_us,
                        ramp: s.job.ramp,
                        tally: s.job.tally,
                        tripped: s.job.tripped,
                    }
                })
                .collect(),
            metrics,
        }
    }
}
