//! The plain data a finished (or interrupted) run reports: shared by the job engine, which fills
//! it, and the result writers, which print it. No behaviour lives here.

use serde::{Deserialize, Serialize};

use crate::clock::ClockMode;
use crate::shard::Shard;

/// Per-job device counts, as IoT Hub reports them in `deviceJobStatistics`.
///
/// Invariant kept by the job engine: `failed + succeeded + running + pending == device_count`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJobStatistics {
    /// Devices the job's query selected.
    pub device_count: u64,
    /// Devices whose operation ended in failure (including those never reached).
    pub failed_count: u64,
    /// Devices whose operation succeeded.
    pub succeeded_count: u64,
    /// Devices with an operation dispatched and not yet answered.
    pub running_count: u64,
    /// Devices not dispatched yet.
    pub pending_count: u64,
}

/// One job as it appears in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The job id (`jobId` on the wire).
    #[serde(rename = "jobId")]
    pub job_id: String,
    /// `scheduleDeviceMethod` or `scheduleUpdateTwin`.
    #[serde(rename = "type")]
    pub(crate) job_type: String,
    /// Wire status: queued, scheduled, running, completed, failed, cancelled.
    pub status: String,
    /// Device counts at the end of the run.
    #[serde(rename = "deviceJobStatistics")]
    pub statistics: DeviceJobStatistics,
    /// From the job's start time to its last device reaching a terminal state (or to now, when
    /// the job is still running), in milliseconds.
    pub makespan_ms: f64,
    /// Terminal device operations divided by the makespan.
    pub ops_per_s: f64,
    /// Failed devices by cause: IoT Hub's error code and name (`404103 DeviceNotOnline`), or
    /// `device status <n>`, `expired`, `rejected`. Empty (and absent) without failures.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures: std::collections::BTreeMap<String, u64>,
}

/// How a staged rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Every wave ran.
    Completed,
    /// An abort criterion tripped.
    Aborted,
    /// A wave's job could not be created or was cancelled, or the run ended first.
    Failed,
}

impl RolloutStatus {
    /// The name `summary.json` gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RolloutStatus::Completed => "completed",
            RolloutStatus::Aborted => "aborted",
            RolloutStatus::Failed => "failed",
        }
    }
}

/// One staged rollout as it appears in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// The rollout id.
    pub id: String,
    /// How it ended.
    pub status: RolloutStatus,
    /// Why it aborted or failed (the criterion and its figures); null when completed.
    pub reason: Option<String>,
    /// Devices in its target set.
    pub devices: u64,
    /// Devices whose last try succeeded.
    pub succeeded: u64,
    /// Devices whose last try failed.
    pub failed: u64,
    /// Retries (a device retried twice counts twice).
    pub retried: u64,
    /// From its first wave's start to its last job's end, in milliseconds.
    pub makespan_ms: f64,
    /// The waves that started, in order.
    pub waves: Vec<WaveReport>,
}

/// One wave of a staged rollout in `summary.json`: its job and retries together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveReport {
    /// The wave's job id (`{rollout}-w{n}`; its retries are `{rollout}-w{n}-r{k}`).
    #[serde(rename = "jobId")]
    pub job_id: String,
    /// Devices in the wave.
    pub devices: u64,
    /// Devices whose last try succeeded.
    pub succeeded: u64,
    /// Devices whose last try failed.
    pub failed: u64,
    /// When it started, seconds from the run's start.
    pub started_s: f64,
    /// When its last job ended, seconds from the run's start (null while it runs).
    pub ended_s: Option<f64>,
    /// The rollout's rate when the wave ended (null without `rate`).
    pub rate_per_minute_at_end: Option<f64>,
}

/// One `[[fault]]` of a scenario as a window of the run's time (`summary.json`, the report, the
/// `faults` column of `timeseries.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// `disconnect`, `partition`, `latency`, `errors` or `hub_restart`.
    pub kind: String,
    /// Whom it hits: `cohort b43-floor3, 50%`, `all devices`, `the hub`.
    pub target: String,
    /// What it does beyond its kind (`+500 ms each way`, `30% of methods fail`), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// When it starts, seconds from the run's start.
    pub start_s: f64,
    /// When it ends, seconds from the run's start (its start for an instant: a disconnect,
    /// a hub restart).
    pub end_s: f64,
}

impl FaultWindow {
    /// Whether the window touches `[from_s, to_s)` (an instant counts in the second it falls in).
    pub(crate) fn overlaps(&self, from_s: f64, to_s: f64) -> bool {
        self.start_s < to_s && (self.end_s > from_s || self.start_s >= from_s)
    }

    /// One line for logs and the dashboard: `disconnect cohort b43-floor3, 50% at +30s`.
    pub(crate) fn label(&self) -> String {
        let detail = if self.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.detail)
        };
        if self.end_s > self.start_s {
            format!(
                "{} {}{detail} from +{}s to +{}s",
                self.kind, self.target, self.start_s, self.end_s
            )
        } else {
            format!(
                "{} {}{detail} at +{}s",
                self.kind, self.target, self.start_s
            )
        }
    }
}

/// Everything about a run that does not come from the histograms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario name (the `name` key).
    pub scenario: String,
    /// The seed the run used.
    pub seed: u64,
    /// False when the run was interrupted (Ctrl-C, `q`, duration limit with jobs unfinished).
    pub complete: bool,
    /// UTC, RFC 3339 with milliseconds.
    pub(crate) started_at: String,
    /// UTC, RFC 3339 with milliseconds.
    pub(crate) ended_at: String,
    /// Devices in the fleet.
    pub(crate) devices: u64,
    /// The jobs in creation order.
    pub jobs: Vec<JobReport>,
    /// The staged rollouts, in file order (older results have none).
    #[serde(default)]
    pub rollouts: Vec<RolloutReport>,
    /// The slice of the fleet this run played (`--shard i/n`); absent for the whole fleet and
    /// for merged shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Real or virtual time (older results, without it, ran in real time).
    #[serde(default)]
    pub(crate) clock: ClockMode,
    /// The scenario's faults, in file order (absent without any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultWindow>,
    /// Simulated and real seconds the run took.
    #[serde(flatten, default)]
    pub(crate) timing: Timing,
    /// How the deliveries another process stamped were judged (an external MQTT fleet's
    /// receipts); absent when every delivery was stamped with the run's own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) delivery_clock: Option<DeliveryClockReport>,
}

/// What became of the delivery receipts stamped with another process's clock, and how well the
/// clocks agreed (`summary.json`'s `delivery_clock`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryClockReport {
    /// The last measured offset of the other clock from the hub's, µs (wall-clock mappings:
    /// about 0 on one machine); None: never measured.
    pub offset_us: Option<i64>,
    /// The last offset's uncertainty, µs; None: never measured.
    pub uncertainty_us: Option<u64>,
    /// The largest uncertainty a batch of receipts came with, µs.
    pub max_uncertainty_us: u64,
    /// Receipts recorded as deliveries.
    pub recorded: u64,
    /// Receipts not recorded because the clocks' agreement was not good enough for them.
    pub refused: u64,
    /// Why receipts were refused (the last reason), if any were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// How long a run took: in its own (possibly simulated) time and in real time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Timing {
    /// Seconds of the run's time from start to end (simulated in virtual time).
    #[serde(default)]
    pub(crate) simulated_s: f64,
    /// Real seconds the run took.
    #[serde(default)]
    pub(crate) wall_s: f64,
    /// `simulated_s / wall_s`: how much faster than real time the run went (about 1 in real
    /// time).
    #[serde(default)]
    pub(crate) speedup: f64,
}

impl Timing {
    /// A run that lasted `simulated_us` of its own time and `wall` of real time.
    pub(crate) fn new(simulated_us: u64, wall: std::time::Duration) -> Timing {
        let (simulated_s, wall_s) = (simulated_us as f64 / 1e6, wall.as_secs_f64());
        Timing {
            simulated_s,
            wall_s,
            speedup: if wall_s > 0.0 {
                simulated_s / wall_s
            } else {
                0.0
            },
        }
    }
}
