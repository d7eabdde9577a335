//! Metrics: HDR latency histograms and a time series for one run, in intervals of one second
//! (or longer for runs past an hour: [`interval_for`]).
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
/// Microseconds in one second.
pub(crate) const US_PER_S: u64 = 1_000_000;

/// Interval lengths (seconds) a run's time series and interval log may use.
const INTERVALS_S: [u64; 13] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
/// Intervals a run of its full duration may have at most.
const MOST_INTERVALS: u64 = 3600;

/// The interval length for a run that may last `duration_us`: one second for runs up to an
/// hour, then the shortest of 2 s, 5 s, 10 s, ... 1 h that keeps the run within 3,600 intervals
/// (time-series rows, and interval-log entries per histogram), so a 28-hour run writes
/// 60-second rows rather than 100,800 one-second ones.
pub(crate) fn interval_for(duration_us: u64) -> u64 {
    let seconds = duration_us.div_ceil(US_PER_S);
    INTERVALS_S
        .into_iter()
        .find(|w| seconds.div_ceil(*w) <= MOST_INTERVALS)
        .unwrap_or(3600)
}

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
