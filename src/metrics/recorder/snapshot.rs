//! [`Recorder::snapshot`]. Summarising a histogram costs two passes over its 23,552 bins, so the
//! recorder keeps the last summary of each (overall and per job and measure) in a
//! [`SnapshotCache`] and only walks the bins of histograms that gained samples since: a hub with
//! many finished jobs does not pay for them ten times a second.

use super::{Recorder, SecondRow};
use crate::metrics::snapshot::{
    measure_snapshot, JobSnapshot, MeasureSnapshot, MetricsSnapshot, Totals, RECENT_SECONDS,
};
use crate::metrics::{JobSlot, Measure, US_PER_S};

/// The last summary of every histogram, reused while its sample and outlier counts stay the
/// same (samples are only ever added, so equal counts mean equal contents).
#[derive(Debug, Default)]
pub(super) struct SnapshotCache(Vec<Option<Cached>>);

#[derive(Debug)]
struct Cached {
    samples: u64,
    outliers: u64,
    snapshot: MeasureSnapshot,
}

impl SnapshotCache {
    /// The summary of `m` in `r`, overall or for `job`: from the cache when unchanged.
    fn measure(&mut self, r: &Recorder, job: Option<JobSlot>, m: Measure) -> MeasureSnapshot {
        let key = job.map_or(0, |j| j.0 as usize + 1) * Measure::ALL.len() + m.index();
        if self.0.len() <= key {
            self.0.resize_with(key + 1, || None);
        }
        let bins = r.bins(job, m);
        let samples = bins.iter().map(|b| b.len()).sum();
        let outliers = r.outliers(job, m);
        match &self.0[key] {
            Some(c) if c.samples == samples && c.outliers == outliers => c.snapshot.clone(),
            _ => {
                let snapshot = measure_snapshot(&bins, outliers, m);
                self.0[key] = Some(Cached {
                    samples,
                    outliers,
                    snapshot: snapshot.clone(),
                });
                snapshot
            }
        }
    }
}

impl Recorder {
    /// An owned snapshot at `now_us` (which should not be before the last `tick`). Mutable only
    /// to keep the summaries it computes for the next call.
    pub fn snapshot(&mut self, now_us: u64) -> MetricsSnapshot {
        let mut cache = std::mem::take(&mut self.snapshot_cache);
        let overall = Measure::ALL
            .iter()
            .map(|&m| cache.measure(self, None, m))
            .collect();
        let jobs = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let slot = JobSlot(i as u32);
                JobSnapshot {
                    job_id: j.id.clone(),
                    slot: Some(slot),
                    measures: Measure::ALL
                        .iter()
                        .map(|&m| cache.measure(self, Some(slot), m))
                        .collect(),
                    ops_dispatched: j.dispatched,
                    ops_done: j.done,
                    failures: j.failed,
                    in_flight: j.in_flight,
                }
            })
            .collect();
        self.snapshot_cache = cache;
        let skip = self.rows.len().saturating_sub(RECENT_SECONDS);
        let start_us = self.open_sec * US_PER_S;
        let part_us = now_us
            .saturating_sub(start_us)
            .min(self.interval_s * US_PER_S);
        let current = SecondRow {
            second: self.open_sec,
            ops_done: self.done,
            ops_per_s: if part_us == 0 {
                0.0
            } else {
                self.sec_done as f64 * US_PER_S as f64 / part_us as f64
            },
            in_flight: self.in_flight,
            failures: self.sec_failed,
            connected: self.connected,
            faults: 0,
        };
        MetricsSnapshot {
            overall,
            jobs,
            recent: self.rows[skip..].to_vec(),
            current,
            totals: Totals {
                elapsed_us: now_us,
                ops_dispatched: self.dispatched,
                ops_done: self.done,
                failures: self.failed,
                in_flight: self.in_flight,
                ops_per_s_mean: self.ops_per_s_mean(now_us),
                ops_per_s_peak: self.ops_per_s_peak(now_us),
                outliers: self.overall_outliers.iter().sum(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::COARSE_BOUNDS_US;
    use crate::metrics::snapshot::Bucket;
    use crate::metrics::MAX_US;

    #[test]
    fn snapshot_percentiles_match_known_samples() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        let b = r.add_job("b");
        // 1..=1000 µs split across two jobs; all below 2048, so recorded exactly.
        for v in 1..=1000u64 {
            let job = if v % 2 == 0 { a } else { b };
            r.record(job, Measure::RoundTrip, v);
        }
        r.record(a, Measure::Completion, MAX_US * 2);
        let s = r.snapshot(500_000);
        let rt = &s.measure(Measure::RoundTrip).stats;
        assert_eq!(
            (rt.count, rt.min_us, rt.p50_us, rt.p90_us, rt.p99_us, rt.p999_us, rt.max_us),
            (1000, 1, 500, 900, 990, 999, 1000)
        );
        assert_eq!(rt.p9999_us, 1000);
        assert!((rt.mean_us - 500.5).abs() < 1e-9);
        let ja = &s.job("a").unwrap().measure(Measure::RoundTrip).stats;
        assert_eq!(
            (ja.count, ja.min_us, ja.p50_us, ja.max_us),
            (500, 2, 500, 1000)
        );
        let jb = &s.job("b").unwrap().measure(Measure::RoundTrip).stats;
        assert_eq!(
            (jb.count, jb.min_us, jb.p50_us, jb.max_us),
            (500, 1, 499, 999)
        );
        let buckets = &s.measure(Measure::RoundTrip).buckets;
        assert_eq!(buckets.len(), COARSE_BOUNDS_US.len());
        assert_eq!(
            buckets[0],
            Bucket {
                upper_us: 100,
                count: 100
            }
        );
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert_eq!(s.totals.outliers, 1);
        assert_eq!(s.measure(Measure::Completion).stats.outliers, 1);
        assert_eq!(s.measure(Measure::Completion).stats.max_us, MAX_US);
    }

    #[test]
    fn later_snapshots_see_new_samples_through_the_cache() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        let b = r.add_job("b");
        r.record(a, Measure::RoundTrip, 100);
        r.record(b, Measure::RoundTrip, 300);
        let first = r.snapshot(100_000);
        r.record(a, Measure::RoundTrip, 5_000);
        r.tick(1_500_000);
        r.record(a, Measure::RoundTrip, 7_000);
        let second = r.snapshot(1_500_000);
        let stats =
            |s: &MetricsSnapshot, job: &str| s.job(job).unwrap().measure(Measure::RoundTrip).stats;
        assert_eq!(
            (stats(&first, "a").count, stats(&first, "a").max_us),
            (1, 100)
        );
        assert_eq!(stats(&second, "a").count, 3);
        assert!(stats(&second, "a").max_us >= 7_000);
        assert_eq!(stats(&second, "b"), stats(&first, "b"));
        assert_eq!(second.measure(Measure::RoundTrip).stats.count, 4);
        // A fresh recorder with the same samples agrees with the cached summaries.
        let mut fresh = Recorder::new();
        for (job, v) in [("a", 100), ("b", 300), ("a", 5_000), ("a", 7_000)] {
            let slot = fresh.add_job(job);
            fresh.record(slot, Measure::RoundTrip, v);
        }
        let third = r.snapshot(1_600_000);
        assert_eq!(third.overall, fresh.snapshot(1_600_000).overall);
    }

    #[test]
    fn snapshot_counters_and_recent_rows() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        for s in 0..100u64 {
            r.op_dispatched(a);
            r.op_done(a, s * US_PER_S + 10, s % 10 == 0);
        }
        r.op_dispatched(a);
        let snap = r.snapshot(99_500_000);
        assert_eq!(snap.recent.len(), RECENT_SECONDS);
        assert_eq!(snap.recent[0].second, 99 - RECENT_SECONDS as u64);
        assert_eq!(snap.recent.last().unwrap().second, 98);
        assert_eq!(snap.current.second, 99);
        assert!((snap.current.ops_per_s - 2.0).abs() < 1e-9, "1 op in 0.5 s");
        assert_eq!(snap.totals.ops_done, 100);
        assert_eq!(snap.totals.failures, 10);
        assert_eq!(snap.totals.in_flight, 1);
        assert_eq!(snap.totals.ops_dispatched, 101);
        assert_eq!(snap.totals.ops_per_s_peak, 1.0);
        let job = snap.job("a").unwrap();
        assert_eq!((job.ops_done, job.failures, job.in_flight), (100, 10, 1));
    }
}
