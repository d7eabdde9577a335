//! The `[thresholds]` table of a scenario: conditions on a run's figures, checked when the
//! scenario is read (errors point at their line), evaluated on a finished run's [`Summary`] and, for `abort_on_fail`, on the
//! live [`HubView`] while the run goes on.
//!
//! ```toml
//! [thresholds]
//! abort_on_fail = true                        # stop as soon as one is certainly lost
//! engine_lag_limit = "1s"                     # engine-lag p99 beyond this: the run is invalid
//! "delivery.p99" = "< 250ms"                  # <measure>.<statistic>, overall
//! "job.reboot-b43-f3.failed_ratio" = "< 0.03" # job.<jobId>.<figure>
//! "job.firmware-b44.round_trip.p50" = "<= 20ms"
//! "throughput.ops_per_s_mean" = "> 5000"
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::clock::ClockMode;
use crate::hub::HubView;
use crate::metrics::results::Summary;
use crate::metrics::{HistogramStats, Measure};
use crate::report::RolloutStatus;
use crate::units::parse_duration;

/// Engine-lag p99 above which a run is invalid when the scenario does not say otherwise: the
/// simulator could not dispatch on time, so the figures describe fleetsim, not the system.
pub(crate) const DEFAULT_ENGINE_LAG_LIMIT: Duration = Duration::from_secs(1);

/// A statistic of a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    Min,
    Mean,
    P50,
    P90,
    P99,
    P999,
    P9999,
    Max,
    Count,
}

impl Stat {
    const ALL: [(&'static str, Stat); 9] = [
        ("min", Stat::Min),
        ("mean", Stat::Mean),
        ("p50", Stat::P50),
        ("p90", Stat::P90),
        ("p99", Stat::P99),
        ("p999", Stat::P999),
        ("p9999", Stat::P9999),
        ("max", Stat::Max),
        ("count", Stat::Count),
    ];

    /// The value of this statistic in `h` (µs, or a count).
    pub(crate) fn of(self, h: &HistogramStats) -> f64 {
        match self {
            Stat::Min => h.min_us as f64,
            Stat::Mean => h.mean_us,
            Stat::P50 => h.p50_us as f64,
            Stat::P90 => h.p90_us as f64,
            Stat::P99 => h.p99_us as f64,
            Stat::P999 => h.p999_us as f64,
            Stat::P9999 => h.p9999_us as f64,
            Stat::Max => h.max_us as f64,
            Stat::Count => h.count as f64,
        }
    }
}

/// A figure of a job, from its `deviceJobStatistics` and timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobFigure {
    /// From the job's start to its last device's terminal state.
    Makespan,
    /// Terminal device operations per second of makespan.
    OpsPerS,
    /// `failedCount / deviceCount`.
    FailedRatio,
    FailedCount,
    SucceededCount,
    DeviceCount,
}

impl JobFigure {
    const ALL: [(&'static str, JobFigure); 6] = [
        ("makespan", JobFigure::Makespan),
        ("ops_per_s", JobFigure::OpsPerS),
        ("failed_ratio", JobFigure::FailedRatio),
        ("failed_count", JobFigure::FailedCount),
        ("succeeded_count", JobFigure::SucceededCount),
        ("device_count", JobFigure::DeviceCount),
    ];
}

/// A run-wide throughput figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunFigure {
    OpsPerSMean,
    OpsPerSPeak,
    OpsTotal,
    FailuresTotal,
    /// `failures_total / ops_total`.
    FailedRatio,
}

impl RunFigure {
    const ALL: [(&'static str, RunFigure); 5] = [
        ("ops_per_s_mean", RunFigure::OpsPerSMean),
        ("ops_per_s_peak", RunFigure::OpsPerSPeak),
        ("ops_total", RunFigure::OpsTotal),
        ("failures_total", RunFigure::FailuresTotal),
        ("failed_ratio", RunFigure::FailedRatio),
    ];
}

/// A figure of a staged rollout, from its entry in `summary.json`'s `rollouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RolloutFigure {
    /// From its first wave's start to its last job's end.
    Makespan,
    /// Devices whose last try failed, over its target set.
    FailedRatio,
    /// Waves that ran to their end (an aborted wave does not count).
    WavesCompleted,
    /// 1 if it aborted, else 0.
    Aborted,
}

impl RolloutFigure {
    const ALL: [(&'static str, RolloutFigure); 4] = [
        ("makespan", RolloutFigure::Makespan),
        ("failed_ratio", RolloutFigure::FailedRatio),
        ("waves_completed", RolloutFigure::WavesCompleted),
        ("aborted", RolloutFigure::Aborted),
    ];
}

/// What a threshold key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Figure {
    /// `<measure>.<stat>` (overall) or `job.<id>.<measure>.<stat>`.
    Latency {
        job: Option<String>,
        measure: Measure,
        stat: Stat,
    },
    /// `job.<id>.<figure>`.
    Job { job: String, figure: JobFigure },
    /// `throughput.<figure>`.
    Run(RunFigure),
    /// `rollout.<id>.<figure>`.
    Rollout {
        rollout: String,
        figure: RolloutFigure,
    },
}

fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl Figure {
    /// Parses a threshold key such as `delivery.p99` or `job.reboot.failed_ratio`.
    pub(crate) fn parse(key: &str) -> Result<Figure, String> {
        let unknown = || {
            format!(
                "unknown figure '{key}'; expected <measure>.<statistic> (measures: engine_lag, delivery, round_trip, completion; statistics: {}), job.<jobId>.<figure> ({}, or <measure>.<statistic>), throughput.<figure> ({}), or rollout.<id>.<figure> ({})",
                names(&Stat::ALL),
                names(&JobFigure::ALL),
                names(&RunFigure::ALL),
                names(&RolloutFigure::ALL)
            )
        };
        let latency = |job: Option<String>, rest: &str| {
            let (m, s) = rest.split_once('.')?;
            Some(Figure::Latency {
                job,
                measure: Measure::from_name(m)?,
                stat: lookup(&Stat::ALL, s)?,
            })
        };
        if let Some(rest) = key.strip_prefix("throughput.") {
            return lookup(&RunFigure::ALL, rest)
                .map(Figure::Run)
                .ok_or_else(unknown);
        }
        if let Some(rest) = key.strip_prefix("rollout.") {
            let (id, figure) = rest.rsplit_once('.').ok_or_else(unknown)?;
            return match lookup(&RolloutFigure::ALL, figure) {
                Some(figure) if !id.is_empty() => Ok(Figure::Rollout {
                    rollout: id.to_owned(),
                    figure,
                }),
                _ => Err(unknown()),
            };
        }
        if let Some(rest) = key.strip_prefix("job.") {
            // Job ids may hold dots: take the figure from the right.
            let mut parts = rest.rsplitn(3, '.');
            let (last, middle, first) = (parts.next(), parts.next(), parts.next());
            if let (Some(s), Some(m), Some(id)) = (last, middle, first) {
                if let Some(f) = latency(Some(id.to_owned()), &format!("{m}.{s}")) {
                    return Ok(f);
                }
            }
            let (id, figure) = rest.rsplit_once('.').ok_or_else(unknown)?;
            return match lookup(&JobFigure::ALL, figure) {
                Some(figure) if !id.is_empty() => Ok(Figure::Job {
                    job: id.to_owned(),
                    figure,
                }),
                _ => Err(unknown()),
            };
        }
        latency(None, key).ok_or_else(unknown)
    }

    /// The job this figure is about, if any.
    pub(crate) fn job(&self) -> Option<&str> {
        match self {
            Figure::Latency { job, .. } => job.as_deref(),
            Figure::Job { job, .. } => Some(job),
            Figure::Run(_) | Figure::Rollout { .. } => None,
        }
    }

    /// The rollout this figure is about, if any.
    pub(crate) fn rollout(&self) -> Option<&str> {
        match self {
            Figure::Rollout { rollout, .. } => Some(rollout),
            _ => None,
        }
    }

    /// Whether the figure is a time (its bound is written with a unit, its value is in µs).
    pub(crate) fn is_time(&self) -> bool {
        match self {
            Figure::Latency { stat, .. } => *stat != Stat::Count,
            Figure::Job { figure, .. } => *figure == JobFigure::Makespan,
            Figure::Run(_) => false,
            Figure::Rollout { figure, .. } => *figure == RolloutFigure::Makespan,
        }
    }

    /// Whether the figure adds up over shards (a count or a rate), so that one shard's value
    /// says nothing about the whole run: such thresholds are judged on the merged result.
    pub(crate) fn is_additive(&self) -> bool {
        match self {
            Figure::Latency { stat, .. } => *stat == Stat::Count,
            Figure::Job { figure, .. } => {
                !matches!(figure, JobFigure::Makespan | JobFigure::FailedRatio)
            }
            Figure::Run(f) => *f != RunFigure::FailedRatio,
            // Each shard plays its own rollout over its slice: judged per shard.
            Figure::Rollout { .. } => false,
        }
    }

    /// The figure's value in `summary` (µs for times); `None` when its job did not run or a
    /// latency statistic has no samples.
    pub(crate) fn value(&self, summary: &Summary) -> Option<f64> {
        match self {
            Figure::Latency { job, measure, stat } => {
                let h = match job {
                    None => summary.histograms.get(*measure),
                    Some(id) => summary.job_histograms.get(id)?.get(*measure),
                };
                (h.count > 0 || *stat == Stat::Count).then(|| stat.of(h))
            }
            Figure::Job { job, figure } => {
                let j = summary.run.jobs.iter().find(|j| &j.job_id == job)?;
                let s = &j.statistics;
                Some(match figure {
                    JobFigure::Makespan => j.makespan_ms * 1000.0,
                    JobFigure::OpsPerS => j.ops_per_s,
                    JobFigure::FailedRatio => ratio(s.failed_count, s.device_count),
                    JobFigure::FailedCount => s.failed_count as f64,
                    JobFigure::SucceededCount => s.succeeded_count as f64,
                    JobFigure::DeviceCount => s.device_count as f64,
                })
            }
            Figure::Run(f) => {
                let t = &summary.throughput;
                Some(match f {
                    RunFigure::OpsPerSMean => t.ops_per_s_mean,
                    RunFigure::OpsPerSPeak => t.ops_per_s_peak,
                    RunFigure::OpsTotal => t.ops_total as f64,
                    RunFigure::FailuresTotal => t.failures_total as f64,
                    RunFigure::FailedRatio => ratio(t.failures_total, t.ops_total),
                })
            }
            Figure::Rollout { rollout, figure } => {
                let r = summary.run.rollouts.iter().find(|r| &r.id == rollout)?;
                let aborted = r.status == RolloutStatus::Aborted;
                Some(match figure {
                    RolloutFigure::Makespan => r.makespan_ms * 1000.0,
                    RolloutFigure::FailedRatio => ratio(r.failed, r.devices),
                    RolloutFigure::WavesCompleted => {
                        let ended = r.waves.iter().filter(|w| w.ended_s.is_some()).count();
                        ended.saturating_sub(usize::from(aborted)) as f64
                    }
                    RolloutFigure::Aborted => f64::from(u8::from(aborted)),
                })
            }
        }
    }

    /// The lowest value the figure can still end with, seen from a live run: for figures that
    /// can only grow while the run goes on (counts, maxima, makespans, failed shares of a job
    /// whose device count is fixed), their current value; `None` for the others.
    fn floor_now(&self, view: &HubView) -> Option<f64> {
        let job = |id: &str| view.jobs.iter().find(|j| j.id == id);
        match self {
            Figure::Latency {
                job: id,
                measure,
                stat: stat @ (Stat::Max | Stat::Count),
            } => {
                let m = match id {
                    None => view.metrics.measure(*measure),
                    Some(id) => view.metrics.job(id)?.measure(*measure),
                };
                Some(stat.of(&m.stats))
            }
            Figure::Latency { .. } => None,
            Figure::Job { job: id, figure } => {
                let j = job(id)?;
                let s = &j.stats;
                match figure {
                    JobFigure::Makespan => Some(j.makespan_ms * 1000.0),
                    JobFigure::FailedRatio => Some(ratio(s.failed_count, s.device_count)),
                    JobFigure::FailedCount => Some(s.failed_count as f64),
                    JobFigure::SucceededCount => Some(s.succeeded_count as f64),
                    JobFigure::OpsPerS | JobFigure::DeviceCount => None,
                }
            }
            Figure::Run(RunFigure::OpsTotal) => Some(view.metrics.totals.ops_done as f64),
            Figure::Run(RunFigure::FailuresTotal) => Some(view.metrics.totals.failures as f64),
            Figure::Run(_) | Figure::Rollout { .. } => None,
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Lt => value < bound,
            Op::Le => value <= bound,
            Op::Gt => value > bound,
            Op::Ge => value >= bound,
        }
    }
}

/// One condition: a figure, an operator and a bound (µs for times).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Threshold {
    /// The key as written, such as `delivery.p99`.
    pub(crate) key: String,
    /// The condition as written, such as `< 250ms`.
    pub(crate) condition: String,
    pub(crate) figure: Figure,
    pub(crate) op: Op,
    pub(crate) bound: f64,
}

impl Threshold {
    /// Parses `key = "condition"`.
    pub(crate) fn parse(key: &str, condition: &str) -> Result<Threshold, String> {
        let figure = Figure::parse(key)?;
        let text = condition.trim();
        let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .into_iter()
            .find_map(|(p, op)| text.strip_prefix(p).map(|r| (op, r.trim())))
            .ok_or_else(|| {
                format!("threshold '{key}': bad condition '{condition}'; expected <, <=, > or >= and a value, such as \"< 250ms\"")
            })?;
        let bound = if figure.is_time() {
            parse_duration(rest)
                .map_err(|e| format!("threshold '{key}': {e}"))?
                .as_secs_f64()
                * 1e6
        } else if let Some(pct) = rest.strip_suffix('%') {
            parse_number(key, pct)? / 100.0
        } else {
            parse_number(key, rest)?
        };
        Ok(Threshold {
            key: key.to_owned(),
            condition: text.to_owned(),
            figure,
            op,
            bound,
        })
    }

    /// Whether `value` meets the condition.
    pub(crate) fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.bound)
    }

    /// Whether the condition is already lost in a live run, whatever happens next: it asks for
    /// a figure that can only grow to stay below a bound it has reached.
    /// In a shard (`sharded`), additive figures are left to the merge.
    pub(crate) fn certainly_lost(&self, view: &HubView, sharded: bool) -> bool {
        matches!(self.op, Op::Lt | Op::Le)
            && !(sharded && self.figure.is_additive())
            && self.figure.floor_now(view).is_some_and(|v| !self.holds(v))
    }

    /// `value` for people: a time with its unit, or a number.
    pub(crate) fn show(&self, value: f64) -> String {
        show_value(self.figure.is_time(), value)
    }
}

/// A figure's value for people: µs as a time with a unit, or a number with sensible digits.
pub(crate) fn show_value(is_time: bool, value: f64) -> String {
    if is_time {
        crate::units::fmt_us(value.round() as u64)
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() < 1.0 {
        format!("{value:.4}")
    } else {
        format!("{value:.1}")
    }
}

fn parse_number(key: &str, text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            format!("threshold '{key}': bad number '{text}'; this figure is a plain number (or a percentage such as 3%)")
        })
}

/// The `[thresholds]` table, checked (from [`ThresholdTable`](crate::scenario::format::ThresholdTable)
/// by `scenario::parse`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Thresholds {
    /// Stop the run as soon as a threshold is certainly lost.
    pub(crate) abort_on_fail: bool,
    /// Engine-lag p99 above which the run is invalid.
    pub(crate) engine_lag_limit: Duration,
    /// The conditions, in file order.
    pub(crate) list: Vec<Threshold>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            abort_on_fail: false,
            engine_lag_limit: DEFAULT_ENGINE_LAG_LIMIT,
            list: Vec::new(),
        }
    }
}

/// How one threshold fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Outcome {
    /// The key as written.
    pub(crate) key: String,
    /// The condition as written.
    pub(crate) condition: String,
    /// The figure's value for people (`None`: its job did not run, or no samples).
    pub(crate) actual: Option<String>,
    pub(crate) held: bool,
    /// Not judged: an additive figure of one shard (the merge judges it).
    pub(crate) skipped: bool,
}

/// Every threshold of `thresholds` evaluated on `summary`. In a shard's summary, thresholds on
/// additive figures are skipped.
pub(crate) fn evaluate(thresholds: &Thresholds, summary: &Summary) -> Vec<Outcome> {
    thresholds
        .list
        .iter()
        .map(|t| {
            let value = t.figure.value(summary);
            let skipped = summary.run.shard.is_some() && t.figure.is_additive();
            Outcome {
                key: t.key.clone(),
                condition: t.condition.clone(),
                actual: value.map(|v| t.show(v)),
                held: skipped || value.is_some_and(|v| t.holds(v)),
                skipped,
            }
        })
        .collect()
}

/// Why a run's figures say nothing about the system (`None`: they do): its engine lag p99 is
/// beyond the limit, so fleetsim itself could not keep up.
pub(crate) fn invalid_because(thresholds: &Thresholds, summary: &Summary) -> Option<String> {
    // In virtual time the simulator's own work takes no simulated time: engine lag is only
    // modelled waiting, and cannot show a saturated simulator.
    if summary.run.clock == ClockMode::Virtual {
        return None;
    }
    let p99 = summary.histograms.engine_lag.p99_us;
    let limit = thresholds.engine_lag_limit.as_micros() as u64;
    (p99 > limit).then(|| {
        format!(
            "engine lag p99 {} is above the limit {} (engine_lag_limit): the simulator was saturated, so the figures describe fleetsim, not the system",
            show_value(true, p99 as f64),
            show_value(true, limit as f64)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_figures() {
        assert_eq!(
            Figure::parse("delivery.p99"),
            Ok(Figure::Latency {
                job: None,
                measure: Measure::Delivery,
                stat: Stat::P99
            })
        );
        assert_eq!(
            Figure::parse("job.reboot-b43-f3.failed_ratio"),
            Ok(Figure::Job {
                job: "reboot-b43-f3".into(),
                figure: JobFigure::FailedRatio
            })
        );
        assert_eq!(
            Figure::parse("job.fw.v1.2.round_trip.p50"),
            Ok(Figure::Latency {
                job: Some("fw.v1.2".into()),
                measure: Measure::RoundTrip,
                stat: Stat::P50
            })
        );
        assert_eq!(
            Figure::parse("job.a.b.makespan"),
            Ok(Figure::Job {
                job: "a.b".into(),
                figure: JobFigure::Makespan
            })
        );
        assert_eq!(
            Figure::parse("throughput.ops_per_s_mean"),
            Ok(Figure::Run(RunFigure::OpsPerSMean))
        );
        let rollout = Figure::parse("rollout.fw-2.1.waves_completed").unwrap();
        assert_eq!(
            rollout,
            Figure::Rollout {
                rollout: "fw-2.1".into(),
                figure: RolloutFigure::WavesCompleted
            }
        );
        assert_eq!(rollout.rollout(), Some("fw-2.1"));
        assert!(Figure::parse("rollout.fw.makespan").unwrap().is_time());
        for bad in [
            "delivery.p98",
            "latency.p99",
            "job.x",
            "job..makespan",
            "throughput.fast",
            "p99",
            "rollout.fw.speed",
            "rollout..aborted",
        ] {
            let e = Figure::parse(bad).unwrap_err();
            assert!(e.contains(&format!("unknown figure '{bad}'")), "{e}");
            assert!(
                e.contains(
                    "rollout.<id>.<figure> (makespan, failed_ratio, waves_completed, aborted)"
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn parses_conditions() {
        let t = Threshold::parse("delivery.p99", "< 250ms").unwrap();
        assert_eq!((t.op, t.bound), (Op::Lt, 250_000.0));
        assert!(t.holds(249_999.0) && !t.holds(250_000.0));
        let t = Threshold::parse("job.x.makespan", "<= 2m").unwrap();
        assert_eq!((t.op, t.bound), (Op::Le, 120e6));
        let t = Threshold::parse("throughput.ops_per_s_mean", ">5000").unwrap();
        assert_eq!((t.op, t.bound), (Op::Gt, 5000.0));
        let t = Threshold::parse("job.x.failed_ratio", ">= 3%").unwrap();
        assert_eq!((t.op, t.bound), (Op::Ge, 0.03));

        let e = Threshold::parse("delivery.p99", "250ms").unwrap_err();
        assert!(e.contains("expected <, <=, > or >="), "{e}");
        let e = Threshold::parse("delivery.p99", "< 250").unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        let e = Threshold::parse("throughput.ops_total", "< 5s").unwrap_err();
        assert!(e.contains("bad number '5s'"), "{e}");
    }
}
