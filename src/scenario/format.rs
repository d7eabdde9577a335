//! The scenario file: TOML read with serde, every key checked (unknown keys are errors), and
//! typed values (durations, shares, distributions) that refuse bad input where they are read,
//! so that an error points at the line that holds it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::clock::ClockMode;
use crate::hub::throttle::{Model, Tier};
use crate::units::parse_duration;
use crate::verdict::thresholds::Thresholds;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name: results go to `results/<name>/`.
    pub name: String,
    /// The seed every random draw derives from.
    #[serde(default)]
    pub seed: u64,
    /// Hard limit for the whole run.
    pub(crate) duration: Dur,
    /// Real or virtual time (`fleetsim run --clock` overrides it).
    #[serde(default)]
    pub(crate) clock: ClockMode,
    /// The hub.
    #[serde(default)]
    pub hub: HubSpec,
    /// The fleet's cohorts.
    #[serde(default, rename = "cohort")]
    pub(crate) cohorts: Vec<Cohort>,
    /// The jobs to schedule.
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobSpec>,
    /// The staged rollouts.
    #[serde(default, rename = "rollout")]
    pub(crate) rollouts: Vec<RolloutSpec>,
    /// The faults on the run's timeline.
    #[serde(default, rename = "fault")]
    pub(crate) faults: Vec<Spanned<FaultSpec>>,
    /// `[thresholds]` as written; checked into [`Scenario::thresholds`] by
    /// [`parse`](crate::scenario::parse).
    #[serde(default, rename = "thresholds")]
    pub(crate) threshold_table: ThresholdTable,
    /// The checked conditions on the run's figures.
    #[serde(skip)]
    pub(crate) thresholds: Thresholds,
}

/// `[thresholds]`: `abort_on_fail`, `engine_lag_limit`, and `"figure" = "condition"` pairs whose
/// conditions keep their position for errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct ThresholdTable {
    /// Stop the run as soon as a threshold is certainly lost.
    pub(crate) abort_on_fail: bool,
    /// Engine-lag p99 above which the run is invalid.
    pub(crate) engine_lag_limit: Option<Dur>,
    /// `(figure, condition)` in file order.
    pub(crate) conditions: Vec<(String, Spanned<String>)>,
}

impl<'de> Deserialize<'de> for ThresholdTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ThresholdTable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a table of \"figure\" = \"condition\", such as \"delivery.p99\" = \"< 250ms\"",
                )
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ThresholdTable, A::Error> {
                let mut out = ThresholdTable::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "abort_on_fail" => out.abort_on_fail = map.next_value()?,
                        "engine_lag_limit" => out.engine_lag_limit = Some(map.next_value()?),
                        _ => out.conditions.push((key, map.next_value()?)),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `[hub]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpec {
    /// Tier: unlimited, F1, S1, S2, S3.
    #[serde(default = "unlimited")]
    pub(crate) tier: TierSpec,
    /// Units of the tier.
    #[serde(default = "one")]
    pub(crate) units: u32,
    /// What the hub does with service calls past an allowance: `shape` (IoT Hub's documented
    /// traffic shaping, the default) or `reject` (429001 at once).
    #[serde(default)]
    pub(crate) throttle: ThrottleSpec,
    /// How devices reach the hub: `inproc` (channels, the default) or `mqtt` (every device a
    /// real MQTT client with its own connection to the hub's MQTT endpoint).
    #[serde(default)]
    pub(crate) transport: Transport,
    /// MQTT transport: new connections opened per second while the fleet connects.
    #[serde(default = "default_ramp")]
    pub ramp: u32,
}

impl Default for HubSpec {
    fn default() -> Self {
        HubSpec {
            tier: unlimited(),
            units: 1,
            throttle: ThrottleSpec::default(),
            transport: Transport::default(),
            ramp: default_ramp(),
        }
    }
}

/// `[hub] transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// Channels inside the process.
    #[default]
    Inproc,
    /// One MQTT connection per device.
    Mqtt,
}

fn default_ramp() -> u32 {
    2000
}

fn unlimited() -> TierSpec {
    TierSpec(Tier::Unlimited)
}

fn one() -> u32 {
    1
}

/// A tier read from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TierSpec(pub Tier);

impl<'de> Deserialize<'de> for TierSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(TierSpec).map_err(de::Error::custom)
    }
}

/// A throttle model read from its name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ThrottleSpec(pub Model);

impl<'de> Deserialize<'de> for ThrottleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(ThrottleSpec).map_err(de::Error::custom)
    }
}

/// `[[cohort]]`: a group of devices that behave alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cohort {
    /// Name, for reports.
    pub name: String,
    /// How many devices.
    pub(crate) count: u64,
    /// Device ids are `<id_prefix><n>`, `n` zero-padded to the width of `count - 1`.
    pub(crate) id_prefix: String,
    /// Initial tags.
    #[serde(default)]
    pub(crate) tags: toml::Table,
    /// Initial desired properties.
    #[serde(default)]
    pub(crate) desired: toml::Table,
    /// Initial reported properties.
    #[serde(default)]
    pub(crate) reported: toml::Table,
    /// Share of devices that never connect.
    #[serde(default)]
    pub(crate) offline: Share,
    /// Disconnects and downtime of connected devices.
    #[serde(default)]
    pub(crate) churn: Option<Churn>,
    /// Behaviour per method name; `default` answers the others.
    #[serde(default)]
    pub(crate) methods: BTreeMap<String, MethodBehaviour>,
    /// Twin behaviour.
    #[serde(default)]
    pub(crate) twin: TwinBehaviour,
    /// The network between the hub and the devices (none: messages arrive at once).
    #[serde(default)]
    pub(crate) link: Option<LinkSpec>,
}

/// `[cohort.link]`: latency and loss of every message between hub and device, each direction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkSpec {
    /// One-way latency, each direction.
    #[serde(default)]
    pub(crate) latency: Dist,
    /// Share of messages lost, each direction.
    #[serde(default)]
    pub(crate) loss: Share,
}

/// `churn = { disconnects_per_hour = 2, downtime = { dist = ..., ... } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Churn {
    /// Mean disconnects per connected device per hour (exponential gaps).
    pub(crate) disconnects_per_hour: f64,
    /// How long a device stays away.
    pub(crate) downtime: Dist,
}

/// `[cohort.methods.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MethodBehaviour {
    /// Time from receiving the request to answering.
    #[serde(default)]
    pub(crate) latency: Dist,
    /// Share of requests answered with `error_status`.
    #[serde(default)]
    pub(crate) error_rate: Share,
    /// The status of an error answer.
    #[serde(default = "default_error_status")]
    pub(crate) error_status: i32,
    /// Share of requests never answered.
    #[serde(default)]
    pub(crate) no_response: Share,
    /// The status of a good answer.
    #[serde(default = "default_ok_status")]
    pub(crate) status: i32,
}

fn default_error_status() -> i32 {
    500
}

fn default_ok_status() -> i32 {
    200
}

impl Default for MethodBehaviour {
    fn default() -> Self {
        MethodBehaviour {
            latency: Dist::default(),
            error_rate: Share::default(),
            error_status: default_error_status(),
            no_response: Share::default(),
            status: default_ok_status(),
        }
    }
}

/// `[cohort.twin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TwinBehaviour {
    /// Time from a desired patch to the device's reported acknowledgement.
    #[serde(default)]
    pub(crate) ack_latency: Dist,
    /// Share of desired patches the device never acknowledges.
    #[serde(default)]
    pub(crate) failure_rate: Share,
}

/// A latency distribution: `{ dist = "lognormal", median = "40ms", p99 = "400ms" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Dist {
    /// Always `value`.
    Fixed {
        /// The latency.
        value: Dur,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        /// Lower bound.
        min: Dur,
        /// Upper bound.
        max: Dur,
    },
    /// Normal, cut at zero.
    Normal {
        /// Mean.
        mean: Dur,
        /// Standard deviation.
        stddev: Dur,
    },
    /// Log-normal given its median and 99th percentile.
    Lognormal {
        /// Median.
        median: Dur,
        /// 99th percentile (must exceed the median).
        p99: Dur,
    },
    /// Exponential with the given mean.
    Exponential {
        /// Mean.
        mean: Dur,
    },
    /// Pareto with scale (minimum) and shape.
    Pareto {
        /// Scale: the smallest value.
        scale: Dur,
        /// Shape (alpha), > 0.
        shape: f64,
    },
}

impl Default for Dist {
    fn default() -> Self {
        Dist::Fixed { value: Dur::ZERO }
    }
}

/// `[[job]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job id (suffixed `-1`, `-2`, ... when repeated).
    pub(crate) id: Spanned<String>,
    /// `scheduleDeviceMethod` or `scheduleUpdateTwin`.
    #[serde(rename = "type")]
    pub(crate) job_type: Spanned<String>,
    /// When: `+2s` after the run starts (default `+0s`).
    #[serde(default)]
    pub(crate) start: Offset,
    /// The queryCondition.
    pub(crate) query: Spanned<String>,
    /// For method jobs.
    #[serde(default)]
    pub(crate) method: Option<MethodSpec>,
    /// For twin jobs.
    #[serde(default)]
    pub(crate) twin: Option<TwinSpec>,
    /// maxExecutionTimeInSeconds.
    #[serde(default = "default_max_execution")]
    pub(crate) max_execution: Dur,
    /// Repeat every this long.
    #[serde(default)]
    pub(crate) every: Option<Dur>,
    /// How many times in all (default 1; with `every`, default 1 too).
    #[serde(default)]
    pub(crate) times: Option<u32>,
    /// Create the job only once the job with this id has ended (its `start` then counts from
    /// that moment): jobs in sequence, as a tier that allows one active job needs them.
    #[serde(default)]
    pub(crate) after: Option<Spanned<String>>,
}

fn default_max_execution() -> Dur {
    Dur(Duration::from_secs(3600))
}

/// `method = { name = "reboot", payload = {...}, response_timeout = "5s", connect_timeout = "0s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MethodSpec {
    /// Method name.
    pub name: String,
    /// Payload.
    #[serde(default)]
    pub(crate) payload: Option<toml::Value>,
    /// responseTimeoutInSeconds (5 s to 300 s).
    #[serde(default = "default_response_timeout")]
    pub(crate) response_timeout: Dur,
    /// connectTimeoutInSeconds (0 s to 300 s).
    #[serde(default)]
    pub(crate) connect_timeout: Dur,
}

fn default_response_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// `twin = { tags = {...}, desired = {...} }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TwinSpec {
    /// Tags patch.
    #[serde(default)]
    pub(crate) tags: Option<toml::Table>,
    /// Desired properties patch.
    #[serde(default)]
    pub(crate) desired: Option<toml::Table>,
}

/// `[[rollout]]`: a staged rollout, a job per wave (see `crate::rollout`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutSpec {
    /// The rollout id; its waves' jobs are `{id}-w{n}`.
    pub(crate) id: Spanned<String>,
    /// `scheduleUpdateTwin` or `scheduleDeviceMethod`.
    #[serde(rename = "type")]
    pub(crate) job_type: Spanned<String>,
    /// The target set's WHERE clause, evaluated when the rollout starts.
    pub(crate) query: Spanned<String>,
    /// For method rollouts.
    #[serde(default)]
    pub(crate) method: Option<MethodSpec>,
    /// For twin rollouts.
    #[serde(default)]
    pub(crate) twin: Option<TwinSpec>,
    /// When: `+10s` after the run starts (default `+0s`).
    #[serde(default)]
    pub(crate) start: Offset,
    /// maxExecutionTimeInSeconds of each wave's job.
    #[serde(default = "default_max_execution")]
    pub(crate) max_execution: Dur,
    /// Cumulative shares (`"10%"`) or WHERE clauses (`"*"`: the rest).
    pub(crate) waves: Spanned<Vec<Spanned<String>>>,
    /// The wait after a wave ends before the next begins.
    #[serde(default)]
    pub(crate) soak: Dur,
    /// `written` (the default) or `acknowledged`.
    #[serde(default)]
    pub(crate) success: Option<Spanned<String>>,
    /// How long an acknowledgement may take (default 15m).
    #[serde(default)]
    pub(crate) ack_timeout: Option<Spanned<Dur>>,
    /// The exponential rate.
    #[serde(default)]
    pub(crate) rate: Option<Spanned<RateSpec>>,
    /// Abort criteria.
    #[serde(default)]
    pub(crate) abort: Vec<Spanned<AbortSpec>>,
    /// Retry rules.
    #[serde(default)]
    pub(crate) retry: Vec<Spanned<RetrySpec>>,
}

/// `rate = { base_per_minute = 600, increment_factor = 2.0, notified = 1000, ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateSpec {
    /// The starting rate, devices notified per minute.
    pub(crate) base_per_minute: f64,
    /// 1.1 to 5.
    pub(crate) increment_factor: f64,
    /// Step up after this many more devices were notified.
    #[serde(default)]
    pub(crate) notified: Option<u64>,
    /// Step up after this many more devices succeeded.
    #[serde(default)]
    pub(crate) succeeded: Option<u64>,
    /// The highest rate (default: no cap but the tier's).
    #[serde(default)]
    pub(crate) max_per_minute: Option<f64>,
}

/// `{ failure = "failed", threshold = "5%", min_executed = 200 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortSpec {
    /// failed, timed_out, not_online, rejected or all.
    pub(crate) failure: String,
    /// A percentage such as "5%".
    pub(crate) threshold: Percent,
    /// Ended devices needed before it is judged (default 1).
    #[serde(default)]
    pub(crate) min_executed: Option<u64>,
}

/// `{ failure = "timed_out", times = 2, backoff = "1m" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrySpec {
    /// failed, timed_out, not_online, rejected or all.
    pub(crate) failure: String,
    /// Retries at most (1 to 10).
    pub(crate) times: u32,
    /// The wait before each retry.
    #[serde(default)]
    pub(crate) backoff: Dur,
}

/// A share written as a percentage, `"5%"` (0% to 100%), read as 0.05.
/// `[[fault]]`: something going wrong at a point of the run's time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    /// When it starts: an offset from the run's start, such as `+30s`.
    pub(crate) at: Offset,
    /// What goes wrong.
    pub(crate) kind: FaultKindSpec,
    /// The cohort it hits (every cohort without it); not for `hub_restart`.
    #[serde(default)]
    pub(crate) cohort: Option<String>,
    /// The share of the cohort's devices it hits (all of them without it); not for
    /// `hub_restart`.
    #[serde(default)]
    pub(crate) share: Option<Share>,
    /// How long it lasts: `partition`, `latency` and `errors` need it.
    #[serde(default, rename = "for")]
    pub(crate) lasts: Option<Dur>,
    /// `latency`: what it adds to each message, each way.
    #[serde(default)]
    pub(crate) add: Option<Dur>,
    /// `errors`: the share of method requests that fail.
    #[serde(default)]
    pub(crate) error_rate: Option<Share>,
}

/// `[[fault]] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKindSpec {
    /// Devices drop their connections at once and reconnect with backoff.
    Disconnect,
    /// Devices are cut off from the hub.
    Partition,
    /// The link slows.
    Latency,
    /// Devices fail methods.
    Errors,
    /// The hub drops every connection and its engine restarts.
    HubRestart,
}

impl FaultKindSpec {
    /// The name in the scenario file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKindSpec::Disconnect => "disconnect",
            FaultKindSpec::Partition => "partition",
            FaultKindSpec::Latency => "latency",
            FaultKindSpec::Errors => "errors",
            FaultKindSpec::HubRestart => "hub_restart",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(crate) struct Percent(pub f64);

impl Percent {
    /// Parses `"5%"` or `"0.5%"`.
    pub(crate) fn parse(text: &str) -> Option<Percent> {
        let n: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
        (0.0..=100.0).contains(&n).then_some(Percent(n / 100.0))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Percent::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "'{s}' is not a percentage; write e.g. \"5%\" (0% to 100%)"
            ))
        })
    }
}

/// A duration such as `250us`, `40ms`, `5s`, `2m`, `1h` (a bare `0` is zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Dur(pub Duration);

impl Dur {
    /// Zero.
    pub(crate) const ZERO: Dur = Dur(Duration::ZERO);

    /// Microseconds (saturating; [`parse_duration`] keeps durations far below).
    pub(crate) fn micros(self) -> u64 {
        u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A start offset: `+2s` (or `2s`, or `now`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offset(pub Duration);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "now" {
            return Ok(Offset(Duration::ZERO));
        }
        parse_duration(s.trim().trim_start_matches('+'))
            .map(Offset)
            .map_err(|e| {
                de::Error::custom(format!(
                    "{e} (a start is an offset from the run's start, such as +2s)"
                ))
            })
    }
}

/// A share between 0 and 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub(crate) struct Share(pub f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Share(v))
        } else {
            Err(de::Error::custom(format!(
                "share {v} is outside 0..1; write e.g. 0.02 for 2%"
            )))
        }
    }
}
