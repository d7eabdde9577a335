//! Virtual time: runs on a simulated clock give exact, reproducible answers, and the runs that
//! need real time are refused with a clear error.

use std::path::{Path, PathBuf};

use fleetsim::app::run::{self, Progress, RunOptions};
use fleetsim::clock::ClockMode;
use fleetsim::scenario;
use fleetsim::shard::Shard;
use serde_json::Value;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-virtual-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(out: &Path, clock: Option<ClockMode>) -> RunOptions {
    RunOptions {
        seed: None,
        out: Some(out.to_owned()),
        progress: Progress::Quiet,
        mqtt: Default::default(),
        state_dir: out.join("state"),
        keep_state: false,
        shard: Shard::ALL,
        scenario_text: None,
        clock,
        speed: None,
    }
}

/// Latencies, silence, errors, offline devices and churn: every source of randomness and of
/// timers the in-process fleet has.
const BUSY: &str = r#"
name = "busy"
seed = 5
duration = "10m"
[hub]
tier = "S1"
units = 2
[[cohort]]
name = "a"
count = 3000
id_prefix = "a-"
tags = { ring = "one" }
offline = 0.03
churn = { disconnects_per_hour = 20, downtime = { dist = "exponential", mean = "5s" } }
[cohort.methods.reboot]
latency = { dist = "lognormal", median = "80ms", p99 = "900ms" }
error_rate = 0.05
no_response = 0.01
[cohort.twin]
ack_latency = { dist = "uniform", min = "10ms", max = "400ms" }
failure_rate = 0.02
[[job]]
id = "reboot"
type = "scheduleDeviceMethod"
start = "+1s"
query = "tags.ring = 'one'"
method = { name = "reboot", response_timeout = "5s", connect_timeout = "10s" }
[[job]]
id = "fw"
type = "scheduleUpdateTwin"
start = "+30s"
query = "*"
twin = { desired = { firmware = "2" } }
"#;

/// `summary.json` without the fields that measure real time.
fn summary_without_wall(dir: &Path) -> Value {
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let map = v.as_object_mut().unwrap();
    assert!(map
        .remove("wall_s")
        .is_some_and(|w| w.as_f64().unwrap() > 0.0));
    assert!(map.remove("speedup").is_some());
    v
}

#[test]
fn a_virtual_run_is_byte_identical_when_repeated() {
    let s = scenario::parse(BUSY, "busy.toml").unwrap();
    let (a, b) = (temp_dir("a"), temp_dir("b"));
    let first = run::run_blocking(&s, &options(&a, Some(ClockMode::Virtual))).unwrap();
    // Load the machine's other core meanwhile: the simulated order of events must not care.
    let spin = std::thread::spawn(|| {
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        x
    });
    let second = run::run_blocking(&s, &options(&b, Some(ClockMode::Virtual))).unwrap();
    spin.join().unwrap();
    assert!(first.report.complete && second.report.complete);

    for file in [
        "histograms.hlog",
        "timeseries.csv",
        "engine_lag.hgrm",
        "delivery.hgrm",
        "round_trip.hgrm",
        "completion.hgrm",
    ] {
        let (x, y) = (
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs between two runs of the same seed");
    }
    let summary = summary_without_wall(&a);
    assert_eq!(summary, summary_without_wall(&b));
    assert_eq!(summary["clock"], "virtual");
    assert_eq!(summary["started_at"], "2000-01-01T00:00:00.000Z");
    // The run stops when the last job ends, in simulated time: far more than the wall time.
    assert!(summary["simulated_s"].as_f64().unwrap() > 30.0);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_paced_job_takes_its_exact_simulated_time() {
    // 2,000 devices at S1's 10 device operations per second: 200 s, give or take one slot.
    let s = scenario::parse(
        r#"
        name = "paced"
        duration = "1h"
        clock = "virtual"
        [hub]
        tier = "S1"
        [[cohort]]
        name = "a"
        count = 2000
        id_prefix = "p-"
        [[job]]
        id = "ping"
        type = "scheduleDeviceMethod"
        start = "+5s"
        query = "*"
        method = { name = "ping" }
        max_execution = "1h"
        "#,
        "paced.toml",
    )
    .unwrap();
    let out = temp_dir("paced");
    let outcome = run::run_blocking(&s, &options(&out, None)).unwrap();
    let job = &outcome.report.jobs[0];
    assert_eq!(job.statistics.succeeded_count, 2000);
    assert!(
        (199_900.0..=200_100.0).contains(&job.makespan_ms),
        "makespan {} ms",
        job.makespan_ms
    );
    // Each operation is dispatched the moment its throttle slot opens: in virtual time the
    // simulator's own work takes no time, so engine lag is zero.
    let lag = outcome
        .summary
        .measure(fleetsim::metrics::Measure::EngineLag);
    assert_eq!((lag.stats.count, lag.stats.max_us), (2000, 0));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn simulated_time_resolves_microseconds() {
    // Round trips of 1-2 ms: a clock that moved in whole milliseconds (tokio's timer does) would
    // measure only 1,000 and 2,000 µs.
    let s = scenario::parse(
        r#"
        name = "fine"
        duration = "1h"
        clock = "virtual"
        [hub]
        tier = "S3"
        [[cohort]]
        name = "a"
        count = 2000
        id_prefix = "f-"
        [cohort.methods.ping]
        latency = { dist = "uniform", min = "1ms", max = "2ms" }
        [[job]]
        id = "ping"
        type = "scheduleDeviceMethod"
        start = "+1s"
        query = "*"
        method = { name = "ping" }
        "#,
        "fine.toml",
    )
    .unwrap();
    let out = temp_dir("fine");
    let outcome = run::run_blocking(&s, &options(&out, None)).unwrap();
    let rt = outcome
        .summary
        .measure(fleetsim::metrics::Measure::RoundTrip);
    assert_eq!(rt.stats.count, 2000);
    assert!(
        (1_100..=1_900).contains(&rt.stats.p50_us) && !rt.stats.p50_us.is_multiple_of(1000),
        "round trip p50 {} µs",
        rt.stats.p50_us
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_job_after_another_waits_for_its_end() {
    // S1 allows one active job: the twin update is created only once the method job ended,
    // and starts 30 s after that. 200 devices at 10 per second: 20 s each.
    let s = scenario::parse(
        r#"
        name = "sequence"
        duration = "1h"
        clock = "virtual"
        [hub]
        tier = "S1"
        [[cohort]]
        name = "a"
        count = 200
        id_prefix = "s-"
        [[job]]
        id = "ping"
        type = "scheduleDeviceMethod"
        start = "+5s"
        query = "*"
        method = { name = "ping" }
        [[job]]
        id = "fw"
        type = "scheduleUpdateTwin"
        after = "ping"
        start = "+30s"
        query = "*"
        twin = { desired = { fw = "2" } }
        "#,
        "sequence.toml",
    )
    .unwrap();
    let out = temp_dir("sequence");
    let outcome = run::run_blocking(&s, &options(&out, None)).unwrap();
    assert!(outcome.report.complete);
    let ids: Vec<&str> = outcome
        .report
        .jobs
        .iter()
        .map(|j| j.job_id.as_str())
        .collect();
    assert_eq!(ids, ["ping", "fw"]);
    assert!(outcome.report.jobs.iter().all(|j| j.status == "completed"));
    // 5 s + 20 s + 30 s + 20 s, give or take a slot each.
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let simulated = summary["simulated_s"].as_f64().unwrap();
    assert!(
        (74.5..=75.5).contains(&simulated),
        "simulated {simulated} s"
    );

    let e = scenario::parse(
        r#"
        name = "bad"
        duration = "1m"
        [[job]]
        id = "fw"
        type = "scheduleUpdateTwin"
        after = "nope"
        query = "*"
        twin = { desired = { fw = "2" } }
        "#,
        "bad.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("after = 'nope' names no earlier job"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn real_sockets_refuse_virtual_time() {
    let s = scenario::parse(
        "name = \"m\"\nduration = \"1m\"\n[hub]\ntransport = \"mqtt\"\n",
        "m.toml",
    )
    .unwrap();
    let out = temp_dir("mqtt");
    let e = run::run_blocking(&s, &options(&out, Some(ClockMode::Virtual))).unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("cannot run in virtual time") && text.contains("transport"),
        "{text}"
    );

    let s = scenario::parse("name = \"r\"\nduration = \"1m\"\n", "r.toml").unwrap();
    let mut opts = options(&out, Some(ClockMode::Real));
    opts.speed = Some(600.0);
    let e = run::run_blocking(&s, &opts).unwrap_err();
    assert!(
        format!("{e:#}").contains("--speed paces virtual time"),
        "{e:#}"
    );
}

#[test]
fn the_hub_refuses_a_virtual_scenario() {
    let dir = temp_dir("hub");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("v.toml");
    std::fs::write(
        &file,
        "name = \"v\"\nduration = \"1m\"\nclock = \"virtual\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args([
            "hub",
            "--http",
            "127.0.0.1:0",
            "--https",
            "off",
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .arg("--scenario")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clock = \"virtual\" cannot be served"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
