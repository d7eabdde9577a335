//! The owned [`MetricsSnapshot`]: what the live dashboard and the progress line read, sent over a
//! `watch` channel about every 100 ms. [`Recorder::snapshot`] builds it.

use serde::{Deserialize, Serialize};

use super::histogram::{summarise_bins, Bins, HistogramStats, COARSE_BOUNDS_US};
use super::recorder::SecondRow;
#[cfg(doc)]
use super::Recorder;
use super::{JobSlot, Measure};

/// How many closed seconds a snapshot carries in [`MetricsSnapshot::recent`].
pub(crate) const RECENT_SECONDS: usize = 60;

/// One bar of a coarse latency bar chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Inclusive upper bound in µs (the previous bucket's bound is the exclusive lower one).
    pub upper_us: u64,
    /// Samples in the bucket.
    pub count: u64,
}

/// One measure's statistics and bar-chart buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSnapshot {
    pub measure: String,
    pub stats: HistogramStats,
    /// [`COARSE_BOUNDS_US`] with counts; always the same bounds, empty ones included.
    pub buckets: Vec<Bucket>,
}

/// One job's histograms and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub job_id: String,
    #[serde(skip)]
    pub slot: Option<JobSlot>,
    /// Indexed like [`Measure::ALL`]; see [`JobSnapshot::measure`].
    pub measures: Vec<MeasureSnapshot>,
    pub ops_dispatched: u64,
    pub ops_done: u64,
    pub failures: u64,
    pub in_flight: u64,
}

impl JobSnapshot {
    /// This job's snapshot of `m`.
    pub fn measure(&self, m: Measure) -> &MeasureSnapshot {
        &self.measures[m.index()]
    }
}

/// Run-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Microseconds since the run started (the snapshot's `now_us`).
    pub elapsed_us: u64,
    pub ops_dispatched: u64,
    pub ops_done: u64,
    pub failures: u64,
    pub in_flight: u64,
    /// `ops_done` over the elapsed time.
    pub ops_per_s_mean: f64,
    /// Most operations done in one whole second (the mean before the first whole second).
    pub ops_per_s_peak: f64,
    /// Samples clamped to the histogram maximum, all measures.
    pub outliers: u64,
}

/// An owned, self-contained view of a [`Recorder`] at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Indexed like [`Measure::ALL`]; see [`MetricsSnapshot::measure`].
    pub overall: Vec<MeasureSnapshot>,
    /// In creation order.
    pub jobs: Vec<JobSnapshot>,
    /// The last (up to [`RECENT_SECONDS`]) closed seconds, oldest first.
    pub recent: Vec<SecondRow>,
    /// The open second so far (its `ops_per_s` extrapolated from the part elapsed).
    pub current: SecondRow,
    pub totals: Totals,
}

impl MetricsSnapshot {
    /// The overall snapshot of `m`.
    pub fn measure(&self, m: Measure) -> &MeasureSnapshot {
        &self.overall[m.index()]
    }

    /// The job registered as `job_id`, if any.
    pub fn job(&self, job_id: &str) -> Option<&JobSnapshot> {
        self.jobs.iter().find(|j| j.job_id == job_id)
    }
}

/// The statistics and bar-chart buckets of the samples in `bins`.
pub(crate) fn measure_snapshot(bins: &[&Bins; 2], outliers: u64, m: Measure) -> MeasureSnapshot {
    let (stats, counts) = summarise_bins(bins, outliers);
    MeasureSnapshot {
        measure: m.name().to_owned(),
        stats,
        buckets: COARSE_BOUNDS_US
            .iter()
            .zip(counts)
            .map(|(&upper_us, count)| Bucket { upper_us, count })
            .collect(),
    }
}
