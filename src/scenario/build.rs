//! Turns a checked scenario into the domain's own types: the registry of its devices (twins
//! sharing their cohort's initial maps), the fleet with its cohorts' behaviour models, and the
//! job requests with their times.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::{Clock, Micros};
use crate::fleet::behaviour::{Churn, CohortModel, Latency, LinkModel, MethodModel};
use crate::fleet::faults::{DeviceFault, FaultKind, FaultPlan};
use crate::fleet::Fleet;
use crate::hub::jobs::{AbortRule, Failure, JobKind, JobRequest, MethodCall, Ramp, TwinUpdate};
use crate::hub::registry::Registry;
use crate::hub::twin::{Object, Twin};
use crate::report::FaultWindow;
use crate::rollout::{RetryRule, RolloutPlan, Wave};
use crate::scenario::format::{
    Cohort, Dist, Dur, FaultKindSpec, JobSpec, MethodBehaviour, MethodSpec, Percent, Scenario,
    TwinSpec,
};
use crate::shard::Shard;
use crate::units::fmt_us;

/// A TOML table as a JSON object.
pub(crate) fn json_object(table: &toml::Table) -> Object {
    match serde_json::to_value(table) {
        Ok(Value::Object(map)) => map,
        _ => Object::new(),
    }
}

/// The id of the `n`-th device of a cohort of `count`: the prefix and `n` zero-padded.
pub(crate) fn device_id(prefix: &str, n: u64, count: u64) -> String {
    let width = count.saturating_sub(1).max(1).to_string().len();
    format!("{prefix}{n:0width$}")
}

/// The ids of a cohort's devices, in order.
pub(crate) fn cohort_ids(c: &Cohort) -> impl Iterator<Item = String> + '_ {
    (0..c.count).map(|n| device_id(&c.id_prefix, n, c.count))
}

/// The ids of every device of a scenario, in registry order.
pub(crate) fn device_ids(scenario: &Scenario) -> impl Iterator<Item = String> + '_ {
    scenario.cohorts.iter().flat_map(cohort_ids)
}

/// The registry of a scenario's devices in `shard`, in cohort order.
pub fn registry(scenario: &Scenario, clock: Clock, shard: Shard) -> Registry {
    let mut registry = Registry::new(clock);
    let mut global = 0u64;
    for c in &scenario.cohorts {
        let tags = Arc::new(json_object(&c.tags));
        let desired = Arc::new(json_object(&c.desired));
        let reported = Arc::new(json_object(&c.reported));
        for id in cohort_ids(c) {
            global += 1;
            if !shard.contains(global - 1) {
                continue;
            }
            let twin = Twin::new(tags.clone(), desired.clone(), reported.clone());
            // Validation guarantees unique prefixes; a clash would only skip the device.
            let _ = registry.add(&id, twin);
        }
    }
    registry
}

/// The fleet of a scenario's devices in `shard`, in registry order, drawing from `seed`.
pub(crate) fn fleet(scenario: &Scenario, seed: u64, shard: Shard) -> Fleet {
    let cohorts = scenario
        .cohorts
        .iter()
        .map(|c| (cohort_model(c), c.count))
        .collect();
    Fleet::new(cohorts, seed, shard).with_faults(fault_plan(scenario))
}

/// The scenario's device-side faults (every kind but `hub_restart`).
fn fault_plan(scenario: &Scenario) -> FaultPlan {
    let faults = scenario
        .faults
        .iter()
        .map(|f| f.get_ref())
        .filter_map(|f| {
            let kind = match f.kind {
                FaultKindSpec::Disconnect => FaultKind::Disconnect,
                FaultKindSpec::Partition => FaultKind::Partition,
                FaultKindSpec::Latency => FaultKind::Latency(f.add.unwrap_or_default().micros()),
                FaultKindSpec::Errors => FaultKind::Errors(f.error_rate.unwrap_or_default().0),
                FaultKindSpec::HubRestart => return None,
            };
            let start_us = Dur(f.at.0).micros();
            Some(DeviceFault {
                kind,
                start_us,
                end_us: start_us.saturating_add(f.lasts.unwrap_or_default().micros()),
                cohort: f.cohort.as_ref().and_then(|name| {
                    let k = scenario.cohorts.iter().position(|c| &c.name == name)?;
                    Some(k as u16)
                }),
                share: f.share.map_or(1.0, |s| s.0),
            })
        })
        .collect();
    FaultPlan::new(faults)
}

/// The scenario's faults as windows of the run's time, for the results.
pub(crate) fn fault_windows(scenario: &Scenario) -> Vec<FaultWindow> {
    scenario
        .faults
        .iter()
        .map(|f| f.get_ref())
        .map(|f| {
            let start_s = Dur(f.at.0).micros() as f64 / 1e6;
            let target = match (f.kind, &f.cohort, f.share) {
                (FaultKindSpec::HubRestart, _, _) => "the hub".to_owned(),
                (_, None, None) => "all devices".to_owned(),
                (_, None, Some(share)) => format!("{}% of all devices", share.0 * 100.0),
                (_, Some(c), None) => format!("cohort {c}"),
                (_, Some(c), Some(share)) => format!("{}% of cohort {c}", share.0 * 100.0),
            };
            let detail = match f.kind {
                FaultKindSpec::Latency => {
                    format!("+{} each way", fmt_us(f.add.unwrap_or_default().micros()))
                }
                FaultKindSpec::Errors => format!(
                    "{}% of methods fail",
                    f.error_rate.unwrap_or_default().0 * 100.0
                ),
                _ => String::new(),
            };
            FaultWindow {
                kind: f.kind.name().to_owned(),
                target,
                detail,
                start_s,
                end_s: start_s + f.lasts.unwrap_or_default().0.as_secs_f64(),
            }
        })
        .collect()
}

/// A cohort's behaviour model.
fn cohort_model(c: &Cohort) -> CohortModel {
    let method = |m: &MethodBehaviour| MethodModel {
        latency: latency(&m.latency),
        error_rate: m.error_rate.0,
        error_status: m.error_status,
        no_response: m.no_response.0,
        ok_status: m.status,
    };
    let churn = c.churn.as_ref().map(|ch| Churn {
        disconnects_per_hour: ch.disconnects_per_hour,
        downtime: latency(&ch.downtime),
    });
    let link = c.link.as_ref().map(|l| LinkModel {
        latency: latency(&l.latency),
        loss: l.loss.0,
    });
    CohortModel::new(
        c.methods
            .iter()
            .map(|(k, v)| (k.clone(), method(v)))
            .collect(),
        latency(&c.twin.ack_latency),
        c.twin.failure_rate.0,
        c.offline.0,
        churn,
    )
    .with_link(link)
}

/// A checked distribution as a sampler (in µs).
fn latency(d: &Dist) -> Latency {
    let us = |d: &Dur| d.0.as_secs_f64() * 1e6;
    match d {
        Dist::Fixed { value } => Latency::fixed(value.micros()),
        Dist::Uniform { min, max } => Latency::uniform(min.micros(), max.micros()),
        Dist::Normal { mean, stddev } => Latency::normal(us(mean), us(stddev)),
        Dist::Lognormal { median, p99 } => Latency::lognormal(us(median), us(p99)),
        Dist::Exponential { mean } => Latency::exponential(us(mean)),
        Dist::Pareto { scale, shape } => Latency::pareto(us(scale), *shape),
    }
}

/// The ids a job spec creates: its id, or `id-1` .. `id-N` when it repeats.
pub(crate) fn instance_ids(job: &JobSpec) -> Vec<String> {
    let times = job.times.unwrap_or(1);
    let id = job.id.get_ref();
    if times <= 1 && job.every.is_none() {
        vec![id.clone()]
    } else {
        (1..=times.max(1)).map(|k| format!("{id}-{k}")).collect()
    }
}

/// One job to create during a run.
#[derive(Debug, Clone)]
pub(crate) struct PlannedJob {
    /// When the run creates it (µs after the run starts, or after `after` ended).
    pub(crate) create_at: Micros,
    /// When it is to start (µs after the run starts, or after `after` ended).
    pub(crate) start_at: Micros,
    /// The job whose end the times count from, if not the run's start.
    pub(crate) after: Option<String>,
    /// The request, without its start time (set at creation from `start_at`).
    pub(crate) request: JobRequest,
}

/// What a job (or a rollout's jobs) does per device, from its `method` or `twin`.
fn job_kind(method: Option<&MethodSpec>, twin: Option<&TwinSpec>) -> Option<JobKind> {
    Some(match (method, twin) {
        (Some(m), _) => JobKind::Method(MethodCall {
            name: m.name.as_str().into(),
            payload: Arc::new(
                m.payload
                    .as_ref()
                    .and_then(|p| serde_json::to_value(p).ok())
                    .unwrap_or(Value::Null),
            ),
            response_timeout_s: m.response_timeout.0.as_secs() as u32,
            connect_timeout_s: m.connect_timeout.0.as_secs() as u32,
        }),
        (None, Some(t)) => JobKind::Twin(TwinUpdate {
            tags: t.tags.as_ref().map(|x| Arc::new(json_object(x))),
            desired: t.desired.as_ref().map(|x| Arc::new(json_object(x))),
        }),
        (None, None) => return None,
    })
}

/// The acknowledgement timeout when a rollout's `ack_timeout` is not given.
pub(crate) const DEFAULT_ACK_TIMEOUT_S: u64 = 15 * 60;

/// A scenario's staged rollouts, in file order, drawing their samples from `seed`.
pub(crate) fn rollout_plans(scenario: &Scenario, seed: u64) -> Vec<RolloutPlan> {
    scenario
        .rollouts
        .iter()
        .filter_map(|r| {
            let kind = job_kind(r.method.as_ref(), r.twin.as_ref())?;
            let acknowledged = r
                .success
                .as_ref()
                .is_some_and(|s| s.get_ref() == "acknowledged");
            Some(RolloutPlan {
                id: r.id.get_ref().clone(),
                kind,
                query: r.query.get_ref().clone(),
                start_at: r.start.0.as_micros() as Micros,
                max_execution_s: r.max_execution.0.as_secs(),
                waves: r
                    .waves
                    .get_ref()
                    .iter()
                    .map(|w| match Percent::parse(w.get_ref()) {
                        Some(p) => Wave::Share(p.0),
                        None => Wave::Where(w.get_ref().clone()),
                    })
                    .collect(),
                soak_us: r.soak.micros(),
                ack_timeout_s: acknowledged.then(|| {
                    r.ack_timeout
                        .as_ref()
                        .map_or(DEFAULT_ACK_TIMEOUT_S, |d| d.get_ref().0.as_secs().max(1))
                }),
                ramp: r.rate.as_ref().map(|rate| {
                    let rate = rate.get_ref();
                    Ramp::new(
                        rate.base_per_minute,
                        rate.increment_factor,
                        rate.notified.unwrap_or(0),
                        rate.succeeded.unwrap_or(0),
                        rate.max_per_minute.unwrap_or(f64::INFINITY),
                    )
                }),
                abort: r
                    .abort
                    .iter()
                    .filter_map(|a| {
                        let a = a.get_ref();
                        Some(AbortRule {
                            failure: Failure::parse(&a.failure)?,
                            threshold: a.threshold.0,
                            min_executed: a.min_executed.unwrap_or(1),
                        })
                    })
                    .collect(),
                retry: r
                    .retry
                    .iter()
                    .filter_map(|t| {
                        let t = t.get_ref();
                        Some(RetryRule {
                            failure: Failure::parse(&t.failure)?,
                            times: t.times,
                            backoff_us: t.backoff.micros(),
                        })
                    })
                    .collect(),
                seed,
            })
        })
        .collect()
}

/// Every job instance of a scenario, ordered by creation time. A repeated job's k-th instance
/// is created when the (k-1)-th would start plus `every`, and starts `start` after that.
pub(crate) fn planned_jobs(scenario: &Scenario) -> Vec<PlannedJob> {
    let mut out = Vec::new();
    for job in &scenario.jobs {
        let Some(kind) = job_kind(job.method.as_ref(), job.twin.as_ref()) else {
            continue; // refused by validation
        };
        let every = job.every.map_or(0, |e| e.micros());
        for (k, id) in instance_ids(job).into_iter().enumerate() {
            let create_at = (k as Micros).saturating_mul(every);
            out.push(PlannedJob {
                create_at,
                start_at: create_at.saturating_add(Dur(job.start.0).micros()),
                after: job.after.as_ref().map(|a| a.get_ref().clone()),
                request: JobRequest {
                    job_id: id,
                    kind: kind.clone(),
                    query_condition: job.query.get_ref().clone(),
                    start_time: None,
                    max_execution_s: job.max_execution.0.as_secs(),
                    control: Default::default(),
                },
            });
        }
    }
    out.sort_by_key(|p| p.create_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DeviceIdx;

    #[test]
    fn ids_are_padded_to_the_cohort_width() {
        assert_eq!(device_id("b43-", 7, 6000), "b43-0007");
        assert_eq!(device_id("x", 0, 1), "x0");
        assert_eq!(device_id("x", 9, 10), "x9");
        assert_eq!(device_id("x", 10, 11), "x10");
    }

    #[test]
    fn plans_repeated_jobs_in_time_order() {
        let s = crate::scenario::parse(
            r#"
name = "p"
duration = "1m"
[[cohort]]
name = "a"
count = 3
id_prefix = "a-"
tags = { b = "1" }
[[job]]
id = "r"
type = "scheduleDeviceMethod"
start = "+2s"
query = "*"
method = { name = "m" }
every = "10s"
times = 2
[[job]]
id = "t"
type = "scheduleUpdateTwin"
start = "+5s"
query = "*"
twin = { desired = { fw = "2" } }
"#,
            "p.toml",
        )
        .unwrap();
        let plan = planned_jobs(&s);
        let got: Vec<_> = plan
            .iter()
            .map(|p| (p.request.job_id.as_str(), p.create_at, p.start_at))
            .collect();
        assert_eq!(
            got,
            vec![
                ("r-1", 0, 2_000_000),
                ("t", 0, 5_000_000),
                ("r-2", 10_000_000, 12_000_000)
            ]
        );
        let reg = registry(&s, Clock::start(), Shard::ALL);
        let half = registry(&s, Clock::start(), Shard::new(1, 2).unwrap());
        assert_eq!(half.len(), 1);
        assert_eq!(half.get(DeviceIdx::new(0)).unwrap().id.as_ref(), "a-1");
        assert_eq!(reg.len(), 3);
        assert_eq!(reg.get(DeviceIdx::new(2)).unwrap().id.as_ref(), "a-2");
    }
}
