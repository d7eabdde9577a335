//! `GET /metrics` in the Prometheus text format: devices and connected devices, jobs by status
//! and type, job device operations by outcome (from the engine's published [`HubView`]), and
//! a latency histogram of the service API's own calls by route and status class.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::clock::Micros;
use crate::hub::jobs::JobStatus;
use crate::hub::throttle::ThrottleCounts;
use crate::hub::HubView;
use crate::metrics::Measure;
use crate::report::DeliveryClockReport;

use super::Api;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; BUCKETS_S.len() + 1],
    sum_us: u64,
}

/// Latency of API calls by (method, route, status class): a short list scanned in place, so a
/// call allocates nothing. A std mutex held for one increment, never across `.await`.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    by_route: Mutex<Vec<(String, String, u16, Histogram)>>,
}

impl Latency {
    /// Records one `method` call of `route` that answered `status` after `us` microseconds.
    pub(crate) fn record(&self, method: &str, route: &str, status: u16, us: Micros) {
        let class = status / 100 * 100;
        let seconds = us as f64 / 1e6;
        let slot = BUCKETS_S
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS_S.len());
        let mut list = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        let at = match list
            .iter()
            .position(|(m, r, c, _)| m == method && r == route && *c == class)
        {
            Some(i) => i,
            None => {
                list.push((
                    method.to_owned(),
                    route.to_owned(),
                    class,
                    Histogram::default(),
                ));
                list.len() - 1
            }
        };
        let h = &mut list[at].3;
        h.counts[slot] += 1;
        h.sum_us += us;
    }

    fn snapshot(&self) -> BTreeMap<(String, u16), Histogram> {
        let list = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .map(|(m, r, c, h)| ((format!("{m} {r}"), *c), h.clone()))
            .collect()
    }
}

const STATUSES: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Scheduled,
    JobStatus::Running,
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

/// An external fleet's clock as the hub measured it, and its receipts recorded or refused.
fn delivery_clock(s: &mut String, c: &DeliveryClockReport) {
    if let (Some(offset), Some(uncertainty)) = (c.offset_us, c.uncertainty_us) {
        for (name, help, us) in [
            (
                "offset",
                "The external fleet's clock minus the hub's, last measured over the receipts side channel.",
                offset as f64,
            ),
            (
                "uncertainty",
                "How far the true offset may be from the measured one.",
                uncertainty as f64,
            ),
        ] {
            let _ = writeln!(s, "# HELP fleetsim_delivery_clock_{name}_seconds {help}");
            let _ = writeln!(s, "# TYPE fleetsim_delivery_clock_{name}_seconds gauge");
            let _ = writeln!(s, "fleetsim_delivery_clock_{name}_seconds {}", us / 1e6);
        }
    }
    let _ = writeln!(
        s,
        "# HELP fleetsim_delivery_receipts_total An external fleet's delivery receipts: recorded, or refused because the clocks did not agree well enough."
    );
    let _ = writeln!(s, "# TYPE fleetsim_delivery_receipts_total counter");
    for (outcome, n) in [("recorded", c.recorded), ("refused", c.refused)] {
        let _ = writeln!(
            s,
            "fleetsim_delivery_receipts_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
}

/// The exposition text for `view`, the API latency and the throttle's `counts`.
fn exposition(view: &HubView, latency: &Latency, counts: &ThrottleCounts) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# HELP fleetsim_devices Devices in the registry.");
    let _ = writeln!(s, "# TYPE fleetsim_devices gauge");
    let _ = writeln!(s, "fleetsim_devices {}", view.devices);
    let _ = writeln!(
        s,
        "# HELP fleetsim_devices_connected Devices connected now."
    );
    let _ = writeln!(s, "# TYPE fleetsim_devices_connected gauge");
    let _ = writeln!(s, "fleetsim_devices_connected {}", view.connected);

    let _ = writeln!(s, "# HELP fleetsim_jobs Jobs by status and type.");
    let _ = writeln!(s, "# TYPE fleetsim_jobs gauge");
    for status in STATUSES {
        for job_type in ["scheduleDeviceMethod", "scheduleUpdateTwin"] {
            let n = view
                .jobs
                .iter()
                .filter(|j| j.status == status && j.job_type == job_type)
                .count();
            let _ = writeln!(
                s,
                "fleetsim_jobs{{status=\"{}\",type=\"{job_type}\"}} {n}",
                status.name()
            );
        }
    }

    let (mut ok, mut failed, mut running, mut pending) = (0, 0, 0, 0);
    for j in &view.jobs {
        ok += j.stats.succeeded_count;
        failed += j.stats.failed_count;
        running += j.stats.running_count;
        pending += j.stats.pending_count;
    }
    let _ = writeln!(
        s,
        "# HELP fleetsim_job_device_operations Job device operations by outcome (all jobs)."
    );
    let _ = writeln!(s, "# TYPE fleetsim_job_device_operations gauge");
    for (outcome, n) in [
        ("succeeded", ok),
        ("failed", failed),
        ("running", running),
        ("pending", pending),
    ] {
        let _ = writeln!(
            s,
            "fleetsim_job_device_operations{{outcome=\"{outcome}\"}} {n}"
        );
    }

    let t = &view.metrics.totals;
    for (name, help, n) in [
        (
            "dispatched",
            "Job device operations sent to devices.",
            t.ops_dispatched,
        ),
        (
            "done",
            "Job device operations finished (answered, failed or timed out).",
            t.ops_done,
        ),
        ("failed", "Job device operations that failed.", t.failures),
    ] {
        let _ = writeln!(
            s,
            "# HELP fleetsim_job_device_operations_{name}_total {help}"
        );
        let _ = writeln!(
            s,
            "# TYPE fleetsim_job_device_operations_{name}_total counter"
        );
        let _ = writeln!(s, "fleetsim_job_device_operations_{name}_total {n}");
    }

    let _ = writeln!(
        s,
        "# HELP fleetsim_latency_seconds Job device operation latency from the intended time, all jobs, by measure (engine_lag, delivery, round_trip, completion)."
    );
    let _ = writeln!(s, "# TYPE fleetsim_latency_seconds summary");
    for m in Measure::ALL {
        let st = &view.metrics.measure(m).stats;
        let name = m.name();
        for (q, us) in [("0.5", st.p50_us), ("0.9", st.p90_us), ("0.99", st.p99_us)] {
            let _ = writeln!(
                s,
                "fleetsim_latency_seconds{{measure=\"{name}\",quantile=\"{q}\"}} {}",
                us as f64 / 1e6
            );
        }
        let _ = writeln!(
            s,
            "fleetsim_latency_seconds_sum{{measure=\"{name}\"}} {}",
            st.mean_us * st.count as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "fleetsim_latency_seconds_count{{measure=\"{name}\"}} {}",
            st.count
        );
    }

    if let Some(c) = &view.delivery_clock {
        delivery_clock(&mut s, c);
    }

    let _ = writeln!(
        s,
        "# HELP fleetsim_throttle_queued_total Service calls past an allowance that traffic shaping queued."
    );
    let _ = writeln!(s, "# TYPE fleetsim_throttle_queued_total counter");
    let _ = writeln!(s, "fleetsim_throttle_queued_total {}", counts.queued);
    let _ = writeln!(
        s,
        "# HELP fleetsim_throttle_refused_total Service calls refused past an allowance, by IoT Hub error code."
    );
    let _ = writeln!(s, "# TYPE fleetsim_throttle_refused_total counter");
    for (code, n) in counts.refused {
        let _ = writeln!(
            s,
            "fleetsim_throttle_refused_total{{code=\"{}\",name=\"{}\"}} {n}",
            code.number(),
            code.name()
        );
    }

    let _ = writeln!(
        s,
        "# HELP fleetsim_api_request_duration_seconds Service API call latency."
    );
    let _ = writeln!(s, "# TYPE fleetsim_api_request_duration_seconds histogram");
    for ((route, class), h) in latency.snapshot() {
        let labels = format!(
            "route=\"{}\",code=\"{}xx\"",
            route.replace('"', "'"),
            class / 100
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_S.iter().enumerate() {
            cumulative += h.counts[i];
            let _ = writeln!(
                s,
                "fleetsim_api_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += h.counts[BUCKETS_S.len()];
        let _ = writeln!(
            s,
            "fleetsim_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            s,
            "fleetsim_api_request_duration_seconds_sum{{{labels}}} {}",
            h.sum_us as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "fleetsim_api_request_duration_seconds_count{{{labels}}} {cumulative}"
        );
    }
    s
}

/// `GET /metrics` (no auth, as Prometheus scrapes).
pub(crate) async fn render(State(api): State<Arc<Api>>) -> impl IntoResponse {
    let view = api.view.borrow().clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition(&view, &api.latency, &api.limiter.counts()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::error::ErrorCode;
    use crate::hub::JobView;

    #[test]
    fn exposition_counts_jobs_operations_and_latency() {
        let latency = Latency::default();
        latency.record("GET", "/jobs/v2/{id}", 200, 300);
        latency.record("GET", "/jobs/v2/{id}", 200, 40_000_000);
        let view = HubView {
            devices: 10,
            connected: 9,
            jobs: vec![JobView {
                id: "j".into(),
                job_type: "scheduleUpdateTwin",
                status: JobStatus::Running,
                stats: crate::report::DeviceJobStatistics {
                    device_count: 10,
                    succeeded_count: 4,
                    failed_count: 1,
                    running_count: 2,
                    pending_count: 3,
                },
                makespan_ms: 0.0,
                ops_per_s: 0.0,
                errors: Default::default(),
                start_us: 0,
                end_us: None,
                ramp: None,
                tally: Default::default(),
                tripped: None,
            }],
            delivery_clock: Some(DeliveryClockReport {
                offset_us: Some(-250),
                uncertainty_us: Some(75),
                max_uncertainty_us: 90,
                recorded: 7,
                refused: 3,
                refusal: None,
            }),
            ..Default::default()
        };
        let counts = ThrottleCounts {
            queued: 5,
            refused: [
                (ErrorCode::ThrottlingException, 0),
                (ErrorCode::ThrottleBacklogLimitExceeded, 2),
                (ErrorCode::ThrottlingBacklogTimeout, 0),
            ],
        };
        let text = exposition(&view, &latency, &counts);
        for line in [
            "fleetsim_devices_connected 9",
            "fleetsim_jobs{status=\"running\",type=\"scheduleUpdateTwin\"} 1",
            "fleetsim_job_device_operations{outcome=\"pending\"} 3",
            "fleetsim_throttle_queued_total 5",
            "fleetsim_throttle_refused_total{code=\"429002\",name=\"ThrottleBacklogLimitExceeded\"} 2",
            "fleetsim_latency_seconds_count{measure=\"delivery\"} 0",
            "fleetsim_delivery_clock_offset_seconds -0.00025",
            "fleetsim_delivery_clock_uncertainty_seconds 0.000075",
            "fleetsim_delivery_receipts_total{outcome=\"refused\"} 3",
            "fleetsim_api_request_duration_seconds_bucket{route=\"GET /jobs/v2/{id}\",code=\"2xx\",le=\"0.0005\"} 1",
            "fleetsim_api_request_duration_seconds_bucket{route=\"GET /jobs/v2/{id}\",code=\"2xx\",le=\"+Inf\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
