//! fleetsim: a load-testing and device-fleet simulator for Azure IoT Hub jobs.
//!
//! Module map (data flows down this list):
//! - [`scenario`]: the TOML scenario format, its validation, the runner that wires a run, and
//!   the export of its device identities with their keys (`fleetsim keys`).
//! - [`hub`]: the emulated IoT Hub: registry, twins, job engine (an actor), tier model, errors.
//! - [`query`]: the IoT Hub query language (parse, evaluate against twins or job records, plan
//!   index use, project rows).
//! - [`link`]: the messages between hub and devices, and the hub's side of a transport.
//! - [`mqtt`]: the IoT Hub MQTT dialect shared by hub and fleet: topics, packet framing, and the
//!   event loop (reactor) both packet pumps run on.
//! - [`fleet`]: virtual devices (data, not tasks), behaviour models, the in-process and MQTT
//!   transports (MQTT devices connect as tokio tasks, then one pump thread serves every
//!   established connection), and what MQTT devices sign in with (hub keys, a key file, a
//!   policy).
//! - [`metrics`]: HDR latency histograms, per-second time series, live snapshots and the run's
//!   result files (summary.json, .hgrm, .hlog, timeseries.csv).
//! - [`verdict`]: thresholds, comparison with a baseline, exit codes, junit.xml and summary.md.
//! - [`shard`]: the `i/n` slice of a fleet a sharded run plays.
//! - [`report`]: plain data a run reports (`RunReport`, `JobReport`, `DeviceJobStatistics`).
//! - [`sas`]: shared access signature tokens (parse, sign, generate) and device keys, for the
//!   hub's checks and the fleet's passwords alike.
//! - [`tls`]: the private CA, server certificates and rustls configuration of the hub's endpoints.
//! - [`ids`]: the device index, the job engine's slot and record indices, and the device-id
//!   rules, shared by hub and fleet.
//! - [`clock`]: the one source of time (monotonic instant + the wall-clock time it maps to).
//! - [`tui`]: the live dashboard (ratatui), fed by the engine's snapshots.
//! - [`cli`]: the command line.

pub mod cli;
pub mod clock;
pub mod fleet;
pub mod hub;
pub mod ids;
pub mod link;
pub mod metrics;
pub mod mqtt;
pub mod query;
pub mod report;
pub mod sas;
pub mod scenario;
pub mod shard;
pub mod tls;
pub mod tui;
pub mod verdict;
