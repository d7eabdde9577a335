//! fleetsim: a load-testing and device-fleet simulator for Azure IoT Hub jobs.
//!
//! Module map, top layer first (a module uses only modules below it; ARCHITECTURE.md has the
//! table that `tests/architecture.rs` checks):
//! - [`cli`]: every clap type and its conversion into an [`app::Command`].
//! - [`app`]: what each command does: wiring a run, a hub process and a fleet-only process,
//!   progress lines, final tables, the terminal and signals.
//! - [`tui`]: the live dashboard (ratatui), fed by the engine's snapshots.
//! - [`html`]: `report.html`, one self-contained page for a run, a comparison or a sweep.
//! - [`scenario`]: the TOML scenario format, its validation, and its translation into the
//!   domain's types (registry, fleet models, job requests); the export of its device identities.
//! - [`verdict`]: thresholds, comparison with a baseline, exit codes, junit.xml and summary.md.
//! - [`hub`]: the emulated IoT Hub: registry, twins, job engine (an actor), tier model, errors,
//!   SAS policies, the service REST API and the MQTT device endpoint.
//! - [`fleet`]: virtual devices (data, not tasks), their behaviour models, the in-process and
//!   MQTT transports, and what MQTT devices sign in with.
//! - [`mqtt`]: the IoT Hub MQTT dialect shared by hub and fleet: topics, packet framing, and the
//!   event loop (reactor) both packet pumps run on.
//! - [`metrics`]: HDR latency histograms, per-second time series, live snapshots and the run's
//!   result files (summary.json, .hgrm, .hlog, timeseries.csv).
//! - [`query`]: the IoT Hub query language (parse, evaluate against twins or job records, plan
//!   index use, project rows).
//! - [`link`]: the messages between hub and devices, and the hub's side of a transport.
//! - [`report`]: plain data a run reports (`RunReport`, `JobReport`, `DeviceJobStatistics`).
//! - Leaves: [`clock`] (the one source of time), [`units`] (durations and human formatting),
//!   [`ids`] (the device index, the job engine's slot and record indices, the device-id rules),
//!   [`sas`] (shared access signature tokens and device keys, for the hub's checks and the
//!   fleet's passwords alike), [`tls`] (the private CA, certificates and rustls configuration),
//!   [`shard`] (the `i/n` slice of a fleet a sharded run plays).

pub mod app;
pub mod cli;
pub mod clock;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod html;
pub mod hub;
pub mod ids;
pub mod link;
pub mod metrics;
pub(crate) mod mqtt;
pub mod query;
pub(crate) mod receipts;
pub(crate) mod report;
pub(crate) mod rollout;
pub mod sas;
pub mod scenario;
pub mod shard;
pub mod tls;
pub(crate) mod tui;
pub mod units;
pub(crate) mod verdict;
