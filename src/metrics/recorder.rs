//! The hot-path [`Recorder`]: owned by the job engine, called hundreds of thousands of times per
//! second, so recording is a clamp, a bin index and two counter increments (the job's open second
//! and the run's), with no lock, allocation or formatting. `hdrhistogram::Histogram::record`
//! costs ~15-20 ns per call here, so the hot path counts into plain [`Bins`] laid out exactly as
//! HdrHistogram's counts, and whole seconds move into HdrHistogram form on `tick`.
//!
//! Intervals: the recorder keeps one *open* one-second interval `[s, s+1)`. Samples passed to
//! [`Recorder::record`] and operations passed to [`Recorder::op_done`] count in the open interval;
//! [`Recorder::tick`] closes every whole second up to `now_us`, encoding that second's histograms
//! into the interval log (`histograms.hlog`) and appending a [`SecondRow`] to the time series.
//! `op_done` ticks by itself; the engine should also call `tick(now)` whenever it wakes, before
//! recording what happened at `now`, so that samples land in the right second.

use std::collections::HashMap;

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use self::snapshot::SnapshotCache;
use super::histogram::{bin_index, new_histogram, stats_of_bins, Bins, HistogramStats};
use super::{tag, JobSlot, Measure, MAX_US, US_PER_S};

mod hlog;
mod snapshot;

/// One second of the run's time series (one row of `timeseries.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SecondRow {
    /// Seconds since the run started: the row covers `[second, second + 1)`.
    pub second: u64,
    /// Operations done (terminal) since the run started, at the end of this second.
    pub ops_done: u64,
    /// Operations done during this second divided by its length (shorter than 1 s only for the
    /// run's last, partial second).
    pub ops_per_s: f64,
    /// Operations dispatched and not yet done, at the end of this second.
    pub in_flight: u64,
    /// Operations that ended in failure during this second.
    pub failures: u64,
    /// Devices connected at the end of this second (0 in results written before it was kept).
    #[serde(default)]
    pub connected: u64,
    /// The scenario's faults active during this second (filled in when the results are
    /// written).
    #[serde(default)]
    pub faults: u32,
}

/// Histograms and counters of one job.
struct JobMetrics {
    id: String,
    /// `.hlog` tag per measure ([`tag::job_tags`]).
    tags: [String; 4],
    /// Samples of the closed seconds.
    closed: [Bins; 4],
    /// Samples of the open second.
    open: [Bins; 4],
    outliers: [u64; 4],
    dispatched: u64,
    done: u64,
    failed: u64,
    in_flight: u64,
    /// `[second, succeeded, failed]` so far at the end of each closed interval in which the job
    /// ended operations (cumulative; seconds since the run started).
    progress: Vec<[u64; 3]>,
}

/// Operation counters, of one job or of all: what [`Recorder::totals`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OpTotals {
    pub(crate) dispatched: u64,
    /// Reached a terminal state.
    pub(crate) done: u64,
    /// Of those, the ones that failed.
    pub(crate) failed: u64,
    /// Dispatched and not done.
    pub(crate) in_flight: u64,
}

/// Records one run's latencies and throughput. See the [module docs](self) for intervals.
pub struct Recorder {
    jobs: Vec<JobMetrics>,
    /// Each job's slot, by id.
    job_slots: HashMap<String, JobSlot>,
    /// All jobs' samples of the closed seconds.
    closed: [Bins; 4],
    /// All jobs' samples of the open second.
    open: [Bins; 4],
    overall_outliers: [u64; 4],
    /// Scratch histogram an interval is encoded from.
    scratch: Histogram<u64>,
    /// Seconds each interval (each time-series row and interval-log entry) covers.
    interval_s: u64,
    /// The open interval is `[open_sec, open_sec + interval_s)` seconds.
    open_sec: u64,
    /// `(open_sec + interval_s) * US_PER_S`: `tick` does nothing before this.
    open_end_us: u64,
    /// Operations done / failed in the open interval.
    sec_done: u64,
    sec_failed: u64,
    dispatched: u64,
    done: u64,
    failed: u64,
    in_flight: u64,
    /// Devices connected now (the engine keeps it current).
    connected: u64,
    /// Closed seconds.
    rows: Vec<SecondRow>,
    /// Most operations done in one closed interval.
    peak_ops_per_s: u64,
    /// Interval log lines of the closed seconds (no header: the results add it). Grows by one
    /// line per second per measure and per active job and measure.
    hlog: Vec<u8>,
    /// First failure to encode an interval (kept, not panicked on: it surfaces when the results
    /// are written).
    hlog_error: Option<String>,
    serializer: V2DeflateSerializer,
    /// Histogram summaries of the last snapshot.
    snapshot_cache: SnapshotCache,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// How many seconds an interval (a row of the time series) lasts.
    pub(crate) fn interval_s(&self) -> u64 {
        self.interval_s
    }

    /// An empty recorder whose intervals last `interval_s` seconds instead of one (at least 1):
    /// the time series and the interval log of a long run stay a sensible size.
    pub(crate) fn with_interval(interval_s: u64) -> Self {
        let interval_s = interval_s.max(1);
        Recorder {
            interval_s,
            open_end_us: interval_s * US_PER_S,
            ..Self::new()
        }
    }

    /// This recorder with its first interval the one holding `now_us`, and none before it: a
    /// hub that resumed its clock ([`crate::clock::Clock::resume`]) measures from its restart.
    pub(crate) fn starting_at(mut self, now_us: u64) -> Self {
        self.open_sec = now_us / US_PER_S / self.interval_s * self.interval_s;
        self.open_end_us = (self.open_sec + self.interval_s) * US_PER_S;
        self
    }

    /// An empty recorder, at time 0 with no jobs.
    pub fn new() -> Self {
        Recorder {
            jobs: Vec::new(),
            job_slots: HashMap::new(),
            closed: Default::default(),
            open: Default::default(),
            overall_outliers: [0; 4],
            scratch: new_histogram(),
            interval_s: 1,
            open_sec: 0,
            open_end_us: US_PER_S,
            sec_done: 0,
            sec_failed: 0,
            dispatched: 0,
            done: 0,
            failed: 0,
            in_flight: 0,
            connected: 0,
            rows: Vec::new(),
            peak_ops_per_s: 0,
            hlog: Vec::new(),
            hlog_error: None,
            serializer: V2DeflateSerializer::new(),
            snapshot_cache: SnapshotCache::default(),
        }
    }

    /// Registers a job and returns its slot; a job id already registered gets its existing slot.
    /// A job's bins (2 x 4 x 184 KiB) are allocated with their first sample.
    pub fn add_job(&mut self, job_id: &str) -> JobSlot {
        if let Some(&slot) = self.job_slots.get(job_id) {
            return slot;
        }
        let slot = JobSlot(self.jobs.len() as u32);
        self.job_slots.insert(job_id.to_owned(), slot);
        self.jobs.push(JobMetrics {
            id: job_id.to_owned(),
            tags: tag::job_tags(job_id),
            closed: Default::default(),
            open: Default::default(),
            outliers: [0; 4],
            dispatched: 0,
            done: 0,
            failed: 0,
            in_flight: 0,
            progress: Vec::new(),
        });
        slot
    }

    /// Records one latency sample for `job`, overall and per job. A value above [`MAX_US`] is
    /// recorded as [`MAX_US`] and counted as an outlier.
    ///
    /// Panics if `job` was not handed out by this recorder's [`add_job`](Recorder::add_job).
    #[inline]
    pub fn record(&mut self, job: JobSlot, measure: Measure, micros: u64) {
        let m = measure.index();
        let j = &mut self.jobs[job.0 as usize];
        let v = if micros > MAX_US {
            j.outliers[m] += 1;
            self.overall_outliers[m] += 1;
            MAX_US
        } else {
            micros
        };
        let i = bin_index(v);
        j.open[m].record_bin(i);
        self.open[m].record_bin(i);
    }

    /// One operation of `job` was dispatched: in flight + 1.
    #[inline]
    pub fn op_dispatched(&mut self, job: JobSlot) {
        let j = &mut self.jobs[job.0 as usize];
        j.dispatched += 1;
        j.in_flight += 1;
        self.dispatched += 1;
        self.in_flight += 1;
    }

    /// Devices connected now: the time series keeps it at the end of each second.
    #[inline]
    pub fn set_connected(&mut self, devices: u64) {
        self.connected = devices;
    }

    /// One dispatched operation of `job` goes back to waiting (a hub restart: it is sent
    /// again later): no longer in flight, nor counted as dispatched.
    pub fn op_recalled(&mut self, job: JobSlot) {
        let j = &mut self.jobs[job.0 as usize];
        j.dispatched = j.dispatched.saturating_sub(1);
        j.in_flight = j.in_flight.saturating_sub(1);
        self.dispatched = self.dispatched.saturating_sub(1);
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// One operation of `job` reached a terminal state at `now_us`: in flight − 1 (saturating at
    /// zero), counted as done (and failed, when `failed`) in the second holding `now_us`.
    #[inline]
    pub fn op_done(&mut self, job: JobSlot, now_us: u64, failed: bool) {
        self.tick(now_us);
        let j = &mut self.jobs[job.0 as usize];
        j.in_flight = j.in_flight.saturating_sub(1);
        j.done += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.done += 1;
        self.sec_done += 1;
        if failed {
            j.failed += 1;
            self.failed += 1;
            self.sec_failed += 1;
        }
    }

    /// Closes every whole one-second interval that ends at or before `now_us` (one interval-log
    /// entry per non-empty histogram, one time-series row per second, empty seconds included).
    /// A single comparison when there is nothing to close.
    #[inline]
    pub fn tick(&mut self, now_us: u64) {
        if now_us >= self.open_end_us {
            self.close_intervals(now_us);
        }
    }

    #[cold]
    #[inline(never)]
    fn close_intervals(&mut self, now_us: u64) {
        let target = now_us / US_PER_S / self.interval_s * self.interval_s;
        while self.open_sec < target {
            self.close_open_interval();
            self.open_sec += self.interval_s;
        }
        self.open_end_us = (self.open_sec + self.interval_s) * US_PER_S;
    }

    fn close_open_interval(&mut self) {
        if self.open.iter().any(|b| !b.is_empty()) {
            self.encode_closing_interval();
            for (closed, open) in self.closed.iter_mut().zip(&mut self.open) {
                closed.add(open);
                open.clear();
            }
            for j in &mut self.jobs {
                for (closed, open) in j.closed.iter_mut().zip(&mut j.open) {
                    closed.add(open);
                    open.clear();
                }
            }
        }
        let end = self.open_sec + self.interval_s;
        for j in &mut self.jobs {
            if j.progress.last().map_or(0, |&[_, s, f]| s + f) != j.done {
                j.progress.push([end, j.done - j.failed, j.failed]);
            }
        }
        self.peak_ops_per_s = self.peak_ops_per_s.max(self.sec_done);
        self.rows.push(SecondRow {
            second: self.open_sec,
            ops_done: self.done,
            ops_per_s: self.sec_done as f64 / self.interval_s as f64,
            in_flight: self.in_flight,
            failures: self.sec_failed,
            connected: self.connected,
            faults: 0,
        });
        self.sec_done = 0;
        self.sec_failed = 0;
    }

    /// The job slots in creation order, with their ids.
    pub(crate) fn jobs(&self) -> impl Iterator<Item = (JobSlot, &str)> {
        self.jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (JobSlot(i as u32), j.id.as_str()))
    }

    /// The id `job` was registered with.
    #[cfg(test)]
    pub(crate) fn job_id(&self, job: JobSlot) -> &str {
        &self.jobs[job.0 as usize].id
    }

    /// Operations dispatched, done, failed and in flight so far: overall when `job` is `None`.
    pub(crate) fn totals(&self, job: Option<JobSlot>) -> OpTotals {
        match job {
            None => OpTotals {
                dispatched: self.dispatched,
                done: self.done,
                failed: self.failed,
                in_flight: self.in_flight,
            },
            Some(j) => {
                let j = &self.jobs[j.0 as usize];
                OpTotals {
                    dispatched: j.dispatched,
                    done: j.done,
                    failed: j.failed,
                    in_flight: j.in_flight,
                }
            }
        }
    }

    /// The bins of the closed seconds and of the open one: overall when `job` is `None`.
    pub(crate) fn bins(&self, job: Option<JobSlot>, measure: Measure) -> [&Bins; 2] {
        let m = measure.index();
        match job {
            None => [&self.closed[m], &self.open[m]],
            Some(j) => {
                let j = &self.jobs[j.0 as usize];
                [&j.closed[m], &j.open[m]]
            }
        }
    }

    /// Every sample of `measure` so far, as an HdrHistogram (1 µs to 1 h, 3 significant
    /// digits): overall when `job` is `None`. Builds it (184 KiB): not for the hot path.
    pub(crate) fn histogram(&self, job: Option<JobSlot>, measure: Measure) -> Histogram<u64> {
        let mut h = new_histogram();
        for b in self.bins(job, measure) {
            b.add_to(&mut h);
        }
        h
    }

    /// Samples of `measure` so far: overall when `job` is `None`.
    #[cfg(test)]
    pub(crate) fn count(&self, job: Option<JobSlot>, measure: Measure) -> u64 {
        self.bins(job, measure).iter().map(|b| b.len()).sum()
    }

    /// Samples of `measure` clamped to [`MAX_US`]: overall when `job` is `None`.
    pub(crate) fn outliers(&self, job: Option<JobSlot>, measure: Measure) -> u64 {
        match job {
            None => self.overall_outliers[measure.index()],
            Some(j) => self.jobs[j.0 as usize].outliers[measure.index()],
        }
    }

    /// Statistics of `measure` so far: overall when `job` is `None`. Equal to
    /// [`HistogramStats::of`] the [`histogram`](Recorder::histogram), computed from the bins.
    pub(crate) fn stats(&self, job: Option<JobSlot>, measure: Measure) -> HistogramStats {
        stats_of_bins(&self.bins(job, measure), self.outliers(job, measure))
    }

    /// The closed seconds' rows.
    pub fn closed_rows(&self) -> &[SecondRow] {
        &self.rows
    }

    /// The whole time series up to `now_us`: the closed seconds, then the open second and any
    /// seconds after it up to `now_us` (empty: nothing was recorded in them), the last one
    /// possibly partial. `ceil(now_us / 1 s)` rows when `now_us` is not before the last tick.
    pub(crate) fn timeseries(&self, now_us: u64) -> Vec<SecondRow> {
        let mut rows = self.rows.clone();
        let step = self.interval_s;
        let mut end_sec = now_us.div_ceil(US_PER_S * step) * step;
        if self.sec_done > 0 || self.sec_failed > 0 {
            end_sec = end_sec.max(self.open_sec + step);
        }
        for second in (self.open_sec..end_sec).step_by(step as usize) {
            let (done, failed) = if second == self.open_sec {
                (self.sec_done, self.sec_failed)
            } else {
                (0, 0)
            };
            let len_us = now_us
                .saturating_sub(second * US_PER_S)
                .min(step * US_PER_S);
            rows.push(SecondRow {
                second,
                ops_done: self.done,
                ops_per_s: if len_us == 0 {
                    0.0
                } else {
                    done as f64 * US_PER_S as f64 / len_us as f64
                },
                in_flight: self.in_flight,
                failures: failed,
                connected: self.connected,
                faults: 0,
            });
        }
        rows
    }

    /// Each job's cumulative `[second, succeeded, failed]` at the end of every interval in
    /// which it ended operations, the last row at `now_us` (rounded up to a whole second) when
    /// the open interval holds some: job ids in creation order.
    pub(crate) fn job_progress(&self, now_us: u64) -> Vec<(&str, Vec<[u64; 3]>)> {
        let now_s = now_us.div_ceil(US_PER_S);
        self.jobs
            .iter()
            .map(|j| {
                let mut rows = j.progress.clone();
                if rows.last().map_or(0, |&[_, s, f]| s + f) != j.done {
                    rows.push([now_s, j.done - j.failed, j.failed]);
                }
                (j.id.as_str(), rows)
            })
            .collect()
    }

    /// Most operations done in one whole second so far, counting the open second when `now_us`
    /// has reached its end; the mean rate when no whole second has passed yet.
    pub(crate) fn ops_per_s_peak(&self, now_us: u64) -> f64 {
        let mut peak = self.peak_ops_per_s;
        if now_us >= self.open_end_us {
            peak = peak.max(self.sec_done);
        }
        if now_us < self.interval_s * US_PER_S {
            return self.ops_per_s_mean(now_us);
        }
        peak as f64 / self.interval_s as f64
    }

    /// Operations done divided by the time since the run started (0 at time 0).
    pub(crate) fn ops_per_s_mean(&self, now_us: u64) -> f64 {
        if now_us == 0 {
            0.0
        } else {
            self.done as f64 * US_PER_S as f64 / now_us as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::interval_log::Tag;

    use super::*;

    #[test]
    fn long_runs_measure_in_longer_intervals() {
        use crate::metrics::interval_for;
        assert_eq!(interval_for(3_600 * US_PER_S), 1);
        assert_eq!(interval_for(3_601 * US_PER_S), 2);
        assert_eq!(interval_for(28 * 3_600 * US_PER_S), 30);
        assert_eq!(interval_for(40 * 3_600 * US_PER_S), 60);

        let mut r = Recorder::with_interval(60);
        let a = r.add_job("a");
        for t in [5, 59, 61, 200] {
            r.op_dispatched(a);
            r.op_done(a, t * US_PER_S, t == 61);
        }
        let rows = r.timeseries(210 * US_PER_S);
        let seconds: Vec<u64> = rows.iter().map(|row| row.second).collect();
        assert_eq!(seconds, [0, 60, 120, 180]);
        assert_eq!(rows[0].ops_per_s, 2.0 / 60.0);
        assert_eq!((rows[1].ops_done, rows[1].failures), (3, 1));
        // The last row is partial: one operation in its first 30 s.
        assert_eq!(rows[3].ops_per_s, 1.0 / 30.0);
        assert_eq!(r.ops_per_s_peak(210 * US_PER_S), 2.0 / 60.0);
    }

    #[test]
    fn recorder_and_snapshot_can_move_across_tasks() {
        fn send<T: Send + 'static>() {}
        send::<Recorder>();
        send::<crate::metrics::MetricsSnapshot>();
    }

    #[test]
    fn clamps_and_counts_outliers() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        r.record(a, Measure::Delivery, 5);
        r.record(a, Measure::Delivery, MAX_US);
        r.record(a, Measure::Delivery, MAX_US + 1);
        r.record(a, Measure::Delivery, u64::MAX);
        let s = r.stats(None, Measure::Delivery);
        assert_eq!(s.count, 4);
        assert_eq!(s.outliers, 2, "MAX_US itself is not an outlier");
        assert_eq!(s.max_us, MAX_US);
        assert_eq!(r.outliers(Some(a), Measure::Delivery), 2);
        assert_eq!(r.outliers(None, Measure::RoundTrip), 0);
        let h = r.histogram(None, Measure::Delivery);
        assert_eq!(h.count_between(MAX_US, MAX_US), 3);
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn per_job_and_overall_counts() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        let b = r.add_job("b");
        assert_eq!(r.add_job("a"), a, "a known id keeps its slot");
        for i in 0..10 {
            r.record(a, Measure::EngineLag, i);
        }
        for i in 0..7 {
            r.record(b, Measure::EngineLag, i);
            r.record(b, Measure::Completion, 100 + i);
        }
        assert_eq!(r.count(Some(a), Measure::EngineLag), 10);
        assert_eq!(r.count(Some(b), Measure::EngineLag), 7);
        assert_eq!(r.histogram(None, Measure::EngineLag).len(), 17);
        assert_eq!(r.count(Some(a), Measure::Completion), 0);
        assert_eq!(r.count(None, Measure::Completion), 7);
        assert_eq!(r.count(None, Measure::Delivery), 0);
        let ids: Vec<_> = r.jobs().map(|(_, id)| id.to_owned()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn in_flight_and_totals() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        for _ in 0..5 {
            r.op_dispatched(a);
        }
        r.op_done(a, 10, false);
        r.op_done(a, 20, true);
        assert_eq!(r.in_flight, 3);
        assert_eq!(r.jobs[0].in_flight, 3);
        assert_eq!((r.done, r.failed, r.dispatched), (2, 1, 5));
    }

    #[test]
    fn job_progress_is_cumulative_per_second_with_the_open_one_last() {
        let mut r = Recorder::new();
        let (a, b) = (r.add_job("a"), r.add_job("b"));
        for _ in 0..2 {
            r.op_dispatched(a);
        }
        r.op_dispatched(b);
        r.op_done(a, 100, false);
        r.op_done(a, 1_500_000, true);
        r.op_done(b, 2_200_000, false);
        let progress = r.job_progress(2_500_000);
        assert_eq!(progress[0], ("a", vec![[1, 1, 0], [2, 1, 1]]));
        assert_eq!(progress[1], ("b", vec![[3, 1, 0]]));
    }

    #[test]
    fn tick_closes_whole_seconds_only() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        r.tick(999_999);
        assert!(r.closed_rows().is_empty());
        r.op_dispatched(a);
        r.op_done(a, 500_000, false);
        r.tick(1_000_000);
        assert_eq!(r.closed_rows().len(), 1);
        r.tick(1_999_999);
        assert_eq!(r.closed_rows().len(), 1, "second 1 still open");
        r.tick(1_000_000);
        assert_eq!(r.closed_rows().len(), 1, "time going back closes nothing");
    }

    #[test]
    fn tick_across_a_gap_emits_empty_seconds() {
        let mut r = Recorder::new();
        let a = r.add_job("a");
        for _ in 0..4 {
            r.op_dispatched(a);
        }
        r.record(a, Measure::Delivery, 10);
        r.op_done(a, 100, false);
        r.op_done(a, 200, true);
        // No events for 3 s, then one more op at 4.2 s (op_done ticks by itself).
        r.op_done(a, 4_200_000, false);
        let rows = r.closed_rows();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0],
            SecondRow {
                second: 0,
                ops_done: 2,
                ops_per_s: 2.0,
                in_flight: 2,
                failures: 1,
                connected: 0,
                faults: 0,
            }
        );
        for (s, row) in rows.iter().enumerate().skip(1) {
            assert_eq!(
                *row,
                SecondRow {
                    second: s as u64,
                    ops_done: 2,
                    ops_per_s: 0.0,
                    in_flight: 2,
                    failures: 0,
                    connected: 0,
                    faults: 0,
                }
            );
        }
        // One interval-log line for the overall delivery histogram and one for the job's, both
        // for second 0; the empty seconds write nothing.
        let log = String::from_utf8(r.hlog.clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines[0].starts_with("Tag=delivery,0.000,1.000,10.000,"),
            "{log}"
        );
        assert!(
            lines[1].starts_with("Tag=job/a/delivery,0.000,1.000,10.000,"),
            "{log}"
        );
        // The whole series to 4.5 s: four closed rows and the open, partial, fifth second.
        let all = r.timeseries(4_500_000);
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].second, 4);
        assert_eq!(all[4].ops_done, 3);
        assert!((all[4].ops_per_s - 2.0).abs() < 1e-9, "1 op in 0.5 s");
        assert_eq!(r.ops_per_s_peak(4_500_000), 2.0);
        assert!((r.ops_per_s_mean(4_500_000) - 3.0 / 4.5).abs() < 1e-9);
    }

    #[test]
    fn timeseries_length_is_ceiling_of_elapsed_seconds() {
        let mut r = Recorder::new();
        r.add_job("a");
        r.tick(3_000_000);
        assert_eq!(r.timeseries(3_000_000).len(), 3);
        assert_eq!(r.timeseries(3_000_001).len(), 4);
        assert_eq!(
            r.timeseries(5_000_000).len(),
            5,
            "seconds after the last tick count"
        );
        assert_eq!(Recorder::new().timeseries(0).len(), 0);
    }

    #[test]
    fn tags_escape_forbidden_characters() {
        let mut r = Recorder::new();
        let j = r.add_job("my job");
        assert_eq!(r.jobs[j.0 as usize].tags[1], "job/my%20job/delivery");
        assert!(Tag::new(&r.jobs[j.0 as usize].tags[1]).is_some());
    }
}
