//! fleetsim: a load-testing and device-fleet simulator for Azure IoT Hub jobs.
//!
//! Module map:
//! - [`clock`]: the one source of time (monotonic instant + the wall-clock time it maps to).
//! - [`metrics`]: HDR latency histograms, per-second time series, live snapshots and the run's
//!   result files (summary.json, .hgrm, .hlog, timeseries.csv).
//! - [`report`]: plain data a run reports (`RunReport`, `JobReport`, `DeviceJobStatistics`).

pub mod metrics;
pub mod report;
