//! Staged rollouts on the virtual clock: the exact makespan of a rate ramp, an abort that trips
//! at the right device count and leaves later waves uncreated, retries that bring a 30% timeout
//! share down to about 2.7%, acknowledged success with silent devices, the dry run's waves,
//! and the shipped scenarios judged on their rollout thresholds.

use std::path::{Path, PathBuf};

use fleetsim::app::run::{self, Progress, RunOptions};
use fleetsim::clock::ClockMode;
use fleetsim::scenario;
use fleetsim::shard::Shard;
use serde_json::Value;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-rollout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `text` in virtual time; answers `summary.json`.
fn run_virtual(name: &str, text: &str) -> Value {
    let s = scenario::parse(text, &format!("{name}.toml")).unwrap();
    let dir = temp_dir(name);
    let opts = RunOptions {
        seed: None,
        out: Some(dir.clone()),
        progress: Progress::Quiet,
        mqtt: Default::default(),
        state_dir: dir.join("state"),
        keep_state: false,
        shard: Shard::ALL,
        scenario_text: None,
        clock: Some(ClockMode::Virtual),
        speed: None,
    };
    let outcome = run::run_blocking(&s, &opts).unwrap();
    assert!(outcome.report.complete, "{name} did not complete");
    let summary = read(&dir.join("summary.json"));
    let _ = std::fs::remove_dir_all(&dir);
    summary
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn job_ids(summary: &Value) -> Vec<&str> {
    summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect()
}

fn schema_accepts(summary: &Value) {
    let schema = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/summary.schema.json"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(summary)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_rate_ramp_takes_exactly_its_steps() {
    // 1,000 at 600/min (100 s), 1,000 at 1,200 (50 s), 1,000 at 2,400 (25 s), 1,000 at 4,800
    // (12.5 s), then 6,000 at the 6,000/min cap (60 s): 247.5 s.
    let summary = run_virtual(
        "ramp",
        r#"
name = "ramp"
seed = 1
duration = "2h"
[[cohort]]
name = "a"
count = 10000
id_prefix = "a-"
[[rollout]]
id = "fw"
type = "scheduleUpdateTwin"
query = "*"
twin = { desired = { firmware = "2.1.0" } }
waves = ["100%"]
rate = { base_per_minute = 600, increment_factor = 2.0, notified = 1000, max_per_minute = 6000 }
"#,
    );
    schema_accepts(&summary);
    let r = &summary["rollouts"][0];
    assert_eq!(r["status"], "completed");
    assert_eq!(r["makespan_ms"], 247_500.0);
    assert_eq!(r["succeeded"], 10_000);
    let w = &r["waves"][0];
    assert_eq!(w["jobId"], "fw-w1");
    assert_eq!(w["ended_s"], 247.5);
    assert_eq!(w["rate_per_minute_at_end"], 6000.0);
    assert_eq!(summary["jobs"][0]["makespan_ms"], 247_500.0);
}

#[test]
fn the_rate_carries_over_waves_and_soak_separates_them() {
    // 100 devices at 60/min, doubling every 50 notified: wave 1 (10 devices) takes 10 s, soaks
    // 30 s; wave 2 (90) goes 40 at 60/min (40 s), then 50 at 120/min (25 s).
    let summary = run_virtual(
        "carry",
        r#"
name = "carry"
seed = 2
duration = "1h"
[[cohort]]
name = "a"
count = 100
id_prefix = "a-"
[[rollout]]
id = "c"
type = "scheduleUpdateTwin"
query = "*"
twin = { desired = { firmware = "2" } }
start = "+5s"
waves = ["10%", "100%"]
soak = "30s"
rate = { base_per_minute = 60, increment_factor = 2.0, notified = 50 }
"#,
    );
    let r = &summary["rollouts"][0];
    let waves = r["waves"].as_array().unwrap();
    assert_eq!(waves[0]["devices"], 10);
    assert_eq!(waves[0]["started_s"], 5.0);
    assert_eq!(waves[0]["ended_s"], 15.0);
    assert_eq!(waves[1]["started_s"], 45.0);
    assert_eq!(waves[1]["ended_s"], 45.0 + 40.0 + 25.0);
    assert_eq!(waves[1]["rate_per_minute_at_end"], 240.0);
    assert_eq!(r["makespan_ms"], 105_000.0);
}

#[test]
fn an_abort_trips_at_the_right_count_and_creates_no_later_wave() {
    // Wave 1: 500 good devices. Wave 2: 100 bad ones, failing at once. 5% of ended devices is
    // first reached at 27 failures (27 / 527 = 5.12%; 26 / 526 = 4.94%).
    let summary = run_virtual(
        "abort",
        r#"
name = "abort"
seed = 3
duration = "1h"
[[cohort]]
name = "good"
count = 500
id_prefix = "g-"
tags = { ring = "early" }
[[cohort]]
name = "bad"
count = 100
id_prefix = "b-"
tags = { ring = "bad" }
[cohort.methods.update]
error_rate = 1.0
error_status = 500
[[cohort]]
name = "late"
count = 400
id_prefix = "l-"
tags = { ring = "late" }
[[rollout]]
id = "fw"
type = "scheduleDeviceMethod"
query = "*"
method = { name = "update" }
waves = ["tags.ring = 'early'", "tags.ring = 'bad'", "*"]
abort = [ { failure = "rejected", threshold = "5%", min_executed = 200 } ]
"#,
    );
    schema_accepts(&summary);
    let r = &summary["rollouts"][0];
    assert_eq!(r["status"], "aborted");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("rejected 27 of 527 ended devices (5.12%)"),
        "{reason}"
    );
    assert!(reason.contains("wave 2 (fw-w2) was cancelled"), "{reason}");
    assert_eq!(job_ids(&summary), vec!["fw-w1", "fw-w2"], "no third wave");
    let w2 = &summary["jobs"][1];
    assert_eq!(w2["status"], "cancelled");
    // IoT Hub counts the cancelled devices failed; the rollout counts only those that failed.
    assert_eq!(w2["deviceJobStatistics"]["failedCount"], 100);
    assert_eq!(r["waves"][1]["failed"], 27);
    assert_eq!(r["waves"][1]["succeeded"], 0);
    assert_eq!(r["waves"].as_array().unwrap().len(), 2);
    assert_eq!(r["failed"], 27);
    assert_eq!(r["succeeded"], 500);
}

#[test]
fn retries_bring_a_thirty_percent_timeout_share_to_about_three_percent() {
    let summary = run_virtual(
        "retry",
        r#"
name = "retry"
seed = 4
duration = "2h"
[[cohort]]
name = "a"
count = 10000
id_prefix = "a-"
[cohort.methods.update]
latency = { dist = "fixed", value = "100ms" }
no_response = 0.3
[[rollout]]
id = "fw"
type = "scheduleDeviceMethod"
query = "*"
method = { name = "update", response_timeout = "5s" }
waves = ["100%"]
retry = [ { failure = "timed_out", times = 2, backoff = "1m" } ]
"#,
    );
    schema_accepts(&summary);
    let r = &summary["rollouts"][0];
    assert_eq!(r["status"], "completed");
    assert_eq!(job_ids(&summary), vec!["fw-w1", "fw-w1-r1", "fw-w1-r2"]);
    let failed = r["failed"].as_u64().unwrap();
    assert!(
        (220..=320).contains(&failed),
        "failed {failed}, expected about 270"
    );
    assert_eq!(r["succeeded"].as_u64().unwrap() + failed, 10_000);
    let first = summary["jobs"][0]["deviceJobStatistics"]["failedCount"]
        .as_u64()
        .unwrap();
    let second = summary["jobs"][1]["deviceJobStatistics"]["deviceCount"]
        .as_u64()
        .unwrap();
    assert_eq!(
        first, second,
        "the first retry takes every timed-out device"
    );
    assert!((2800..=3200).contains(&first), "{first}");
    let third = summary["jobs"][2]["deviceJobStatistics"]["deviceCount"]
        .as_u64()
        .unwrap();
    assert_eq!(r["retried"].as_u64().unwrap(), second + third);
    // Each retry starts a minute after the try before ended (5 s timeout): 0 + 5 + 60 + 5 +
    // 60 + 5.
    assert_eq!(r["makespan_ms"], 135_000.0);
}

#[test]
fn acknowledged_success_waits_for_the_report_and_times_out_silent_devices() {
    let summary = run_virtual(
        "ack",
        r#"
name = "ack"
seed = 5
duration = "1h"
[[cohort]]
name = "talks"
count = 90
id_prefix = "t-"
[cohort.twin]
ack_latency = { dist = "fixed", value = "2s" }
[[cohort]]
name = "silent"
count = 10
id_prefix = "s-"
[cohort.twin]
failure_rate = 1.0
[[rollout]]
id = "fw"
type = "scheduleUpdateTwin"
query = "*"
twin = { desired = { firmware = "2.1.0" } }
waves = ["100%"]
success = "acknowledged"
ack_timeout = "1m"
abort = [ { failure = "timed_out", threshold = "50%", min_executed = 1 } ]
"#,
    );
    let r = &summary["rollouts"][0];
    assert_eq!(r["status"], "completed");
    assert_eq!(r["succeeded"], 90);
    assert_eq!(r["failed"], 10);
    // The silent devices fail when their minute is up.
    assert_eq!(r["makespan_ms"], 60_000.0);
    let acked = &summary["job_histograms"]["fw-w1"]["round_trip"];
    assert_eq!(acked["count"], 90);
}

#[test]
fn written_success_does_not_wait_for_silent_devices() {
    let summary = run_virtual(
        "written",
        r#"
name = "written"
seed = 5
duration = "1h"
[[cohort]]
name = "silent"
count = 10
id_prefix = "s-"
[cohort.twin]
failure_rate = 1.0
[[rollout]]
id = "fw"
type = "scheduleUpdateTwin"
query = "*"
twin = { desired = { firmware = "2.1.0" } }
waves = ["100%"]
"#,
    );
    let r = &summary["rollouts"][0];
    assert_eq!(
        (r["succeeded"].as_u64(), r["makespan_ms"].as_f64()),
        (Some(10), Some(0.0))
    );
}

#[test]
fn bad_rollout_keys_are_refused_with_where_and_what() {
    let base = r#"
name = "bad"
duration = "1m"
[[cohort]]
name = "a"
count = 1
id_prefix = "a-"
[[rollout]]
id = "fw"
type = "scheduleUpdateTwin"
query = "*"
twin = { desired = { firmware = "2" } }
"#;
    let cases = [
        ("waves = [\"10%\", \"5%\"]", 13, "wave \"5%\" is not above the wave before it"),
        ("waves = [\"tags.x = \"]", 13, "is neither a share such as \"10%\" nor a WHERE clause"),
        ("waves = [\"*\"]\nsuccess = \"maybe\"", 14, "expected \"written\" or \"acknowledged\""),
        ("waves = [\"*\"]\nack_timeout = \"1m\"", 14, "ack_timeout applies only with success = \"acknowledged\""),
        ("waves = [\"*\"]\nrate = { base_per_minute = 10, increment_factor = 9 }", 14, "increment_factor 9 is outside 1.1..5"),
        ("waves = [\"*\"]\nrate = { base_per_minute = 10, increment_factor = 2 }", 14, "give `notified` or `succeeded`"),
        ("waves = [\"*\"]\nabort = [ { failure = \"slow\", threshold = \"5%\" } ]", 14, "failure \"slow\" is unknown; expected failed, timed_out, not_online, rejected or all"),
        ("waves = [\"*\"]\nabort = [ { failure = \"failed\", threshold = \"0%\" } ]", 14, "abort threshold 0% would abort at once"),
        ("waves = [\"*\"]\nabort = [ { failure = \"failed\", threshold = \"0.05\" } ]", 14, "'0.05' is not a percentage"),
        ("waves = [\"*\"]\nretry = [ { failure = \"timed_out\", times = 0 } ]", 14, "retry times = 0; expected 1 to 10"),
        ("waves = [\"*\"]\n[thresholds]\n\"rollout.nope.makespan\" = \"< 1s\"", 15, "names rollout 'nope', which the scenario does not have; its rollouts are: fw"),
        ("waves = [\"*\"]\n[[job]]\nid = \"fw-w1\"\ntype = \"scheduleUpdateTwin\"\nquery = \"*\"\ntwin = { tags = { a = \"1\" } }", 9, "its job id 'fw-w1' is taken by another job"),
    ];
    for (extra, line, expected) in cases {
        let text = format!("{base}{extra}\n");
        let err = scenario::parse(&text, "bad.toml").unwrap_err().to_string();
        assert!(err.contains(expected), "{extra}: {err}");
        assert!(
            err.starts_with(&format!("bad.toml:{line}:")),
            "{extra}: {err}"
        );
    }
}

#[test]
fn the_dry_run_lists_each_waves_size_and_first_ids() {
    let dry_run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", "scenarios/rollout-100k.toml", "--dry-run"])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = dry_run(&[]);
    assert!(
        text.contains(
            "rollout fw-2-1 (scheduleUpdateTwin, starts +10.0s): 100000 devices in 3 waves\n  \
             fw-2-1-w1: 2000 devices [ra-0000, ra-0001, ra-0002, ra-0003, ra-0004, ...]\n  \
             fw-2-1-w2: 8000 devices [dev-00003, dev-00044, dev-00053, dev-00058, dev-00072, ...]\n  \
             fw-2-1-w3: 90000 devices [dev-00000, dev-00001, dev-00002, dev-00004, dev-00005, ...]\n"
        ),
        "{text}"
    );
    let other = dry_run(&["--seed", "12"]);
    assert!(
        other.contains("fw-2-1-w2: 8000 devices [dev-00004,"),
        "{other}"
    );
}

#[test]
fn the_shipped_rollouts_run_in_seconds_and_are_judged_on_their_thresholds() {
    let run = |scenario: &str, name: &str| {
        let dir = temp_dir(name);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", scenario, "--clock", "virtual", "--no-tui", "--out"])
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let summary = read(&dir.join("summary.json"));
        let _ = std::fs::remove_dir_all(&dir);
        (out.status.code(), stdout, summary)
    };
    let (code, stdout, summary) = run("scenarios/abort-demo.toml", "abort-demo");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("threshold rollout.install-3-0.aborted              < 1          actual 1          BROKEN"),
        "{stdout}"
    );
    assert_eq!(job_ids(&summary), vec!["install-3-0-w1", "install-3-0-w2"]);
    schema_accepts(&summary);

    let (code, stdout, summary) = run("scenarios/rollout-100k.toml", "rollout-100k");
    assert_eq!(code, Some(0), "{stdout}");
    for held in ["aborted", "waves_completed", "failed_ratio"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("rollout.fw-2-1.{held} ")))
            .unwrap_or_else(|| panic!("no {held} threshold in {stdout}"));
        assert!(line.ends_with("held"), "{line}");
    }
    let r = &summary["rollouts"][0];
    assert_eq!(
        (r["devices"].as_u64(), r["status"].as_str()),
        (Some(100_000), Some("completed"))
    );
    let sizes: Vec<u64> = r["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["devices"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![2000, 8000, 90_000]);
    // The tier (S3, 4 units) paces at 12,000 a minute, whatever the ramp asks.
    assert_eq!(r["waves"][2]["rate_per_minute_at_end"], 12_000.0);
    schema_accepts(&summary);
}

#[test]
fn sharded_rollouts_merge_into_one() {
    let dirs: Vec<PathBuf> = (0..2).map(|i| temp_dir(&format!("shard-{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", "scenarios/abort-demo.toml", "--no-tui", "--shard"])
            .arg(format!("{i}/2"))
            .arg("--out")
            .arg(dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(dir.join("summary.json").exists(), "{out:?}");
    }
    let merged = temp_dir("merged");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .arg("merge")
        .args(&dirs)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("rollout.install-3-0.aborted"), "{stdout}");
    let shards: Vec<Value> = dirs.iter().map(|d| read(&d.join("summary.json"))).collect();
    let summary = read(&merged.join("summary.json"));
    schema_accepts(&summary);
    let r = &summary["rollouts"][0];
    assert_eq!(r["devices"], 10_000);
    assert_eq!(r["status"], "aborted");
    let sum = |key: &str| -> u64 {
        shards
            .iter()
            .map(|s| s["rollouts"][0][key].as_u64().unwrap())
            .sum()
    };
    assert_eq!(r["failed"].as_u64(), Some(sum("failed")));
    assert_eq!(r["waves"][0]["devices"], 200);
    for d in dirs.iter().chain([&merged]) {
        let _ = std::fs::remove_dir_all(d);
    }
}
