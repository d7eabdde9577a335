//! Metrics: HDR latency histograms and a per-second time series for one run.
//!
//! The job engine owns one [`Recorder`] and calls it on the hot path: no locks, no allocation and
//! no formatting per event. Times are `u64` microseconds since the run started (the engine's
//! clock gives them).
//!
//! Four [`Measure`]s per device operation, all counted from the moment the operation was *meant*
//! to happen, so queueing inside the hub is never hidden (no coordinated omission):
//! - `engine_lag`: scheduled → dispatched,
//! - `delivery`: scheduled → received by the device (end-to-end scheduling latency),
//! - `round_trip`: dispatched → answer,
//! - `completion`: scheduled → terminal.
//!
//! Histograms (overall and per job) track 1 µs to 1 h at 3 significant digits; a value above
//! [`MAX_US`] is recorded as [`MAX_US`] and counted as an outlier.
//!
//! Layout:
//! - [`histogram`]: histogram construction, statistics, coarse buckets, `.hgrm` text.
//! - [`recorder`]: the hot-path [`Recorder`] and its one-second intervals.
//! - [`snapshot`]: the owned [`MetricsSnapshot`] the dashboard and progress line read.
//! - [`tag`]: the tags of `histograms.hlog` (`<measure>`, `job/<escaped jobId>/<measure>`).
//! - [`results`]: the run's result directory (summary.json, .hgrm, .hlog, timeseries.csv).
//! - [`merge`]: the exact merge of a sharded run's result directories.

pub(crate) mod histogram;
pub(crate) mod merge;
pub(crate) mod recorder;
pub mod results;
pub(crate) mod snapshot;
pub(crate) mod tag;

pub use histogram::HistogramStats;
pub use recorder::{Recorder, SecondRow};
pub use snapshot::{Bucket, JobSnapshot, MeasureSnapshot, MetricsSnapshot, Totals};

/// Highest value a histogram tracks: one hour in microseconds. Larger values are clamped to it
/// and counted as outliers.
pub(crate) const MAX_US: u64 = 3_600_000_000;
/// Lowest discernible value: one microsecond.
pub(crate) const LOW_US: u64 = 1;
/// Significant value digits kept by every histogram.
pub(crate) const SIGFIG: u8 = 3;
/// Microseconds in one second (the interval length of the time series and the `.hlog`).
pub(crate) const US_PER_S: u64 = 1_000_000;

/// One of the four latencies measured per device operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Measure {
    /// Scheduled → dispatched by the engine.
    EngineLag,
    /// Scheduled → received by the device (end-to-end scheduling latency).
    Delivery,
    /// Dispatched → answer from the device.
    RoundTrip,
    /// Scheduled → terminal state.
    Completion,
}

impl Measure {
    /// Every measure, in the order used for arrays indexed by `measure as usize`.
    pub const ALL: [Measure; 4] = [
        Measure::EngineLag,
        Measure::Delivery,
        Measure::RoundTrip,
        Measure::Completion,
    ];

    /// The snake_case name used in file names, JSON keys and `.hlog` tags.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Measure::EngineLag => "engine_lag",
            Measure::Delivery => "delivery",
            Measure::RoundTrip => "round_trip",
            Measure::Completion => "completion",
        }
    }

    /// The measure with this [`name`](Measure::name), if any.
    pub(crate) fn from_name(name: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.name() == name)
    }

    #[inline]
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A job's index inside a [`Recorder`], handed out by [`Recorder::add_job`]. Cheap to copy and
/// to index with on the hot path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct JobSlot(pub u32);
