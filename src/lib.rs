//! fleetsim: a load-testing and device-fleet simulator for Azure IoT Hub jobs.
//!
//! Module map:
//! - [`clock`]: the one source of time (monotonic instant + the wall-clock time it maps to).
//! - [`query`]: the IoT Hub query language (parse, evaluate against twins or job records, plan
//!   index use, project rows).
//! - [`report`]: plain data a run reports (`RunReport`, `JobReport`, `DeviceJobStatistics`).

pub mod query;
pub mod report;
