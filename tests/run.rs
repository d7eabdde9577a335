//! End to end: `fleetsim run` on a small scenario, as a user runs it, and its result files
//! checked against the JSON Schema kept in the repository.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;

fn run_small(out: &Path, seed: &str) -> Value {
    run_fixture("small", out, seed)
}

/// Runs `tests/fixtures/valid/<name>.toml` with `seed` into `out`; answers its summary.
fn run_fixture(name: &str, out: &Path, seed: &str) -> Value {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/valid")
        .join(format!("{name}.toml"));
    let status = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--no-tui", "--seed", seed, "--out"])
        .arg(out)
        .arg(&scenario)
        .status()
        .unwrap();
    assert!(status.success());
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn small_scenario_runs_and_writes_valid_results() {
    let out = temp_dir("run");
    let summary = run_small(&out, "5");

    let schema: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/summary.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&summary)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    assert_eq!(summary["scenario"], "small");
    assert_eq!(summary["seed"], 5);
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["devices"], 300);
    let jobs = summary["jobs"].as_array().unwrap();
    let ids: Vec<_> = jobs.iter().map(|j| j["jobId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["reboot", "fw-1", "fw-2"]);
    let reboot = &jobs[0]["deviceJobStatistics"];
    assert_eq!(reboot["deviceCount"], 200);
    let failed = reboot["failedCount"].as_u64().unwrap();
    // 5% offline and 10% answering 503: about 29 of 200.
    assert!((10..=50).contains(&failed), "failed {failed}");
    assert_eq!(reboot["succeededCount"].as_u64().unwrap() + failed, 200);
    for fw in &jobs[1..] {
        assert_eq!(fw["status"], "completed");
        assert_eq!(fw["deviceJobStatistics"]["succeededCount"], 100);
    }
    let completion = &summary["histograms"]["completion"];
    assert_eq!(completion["count"], 400);
    for f in [
        "delivery.hgrm",
        "engine_lag.hgrm",
        "round_trip.hgrm",
        "completion.hgrm",
        "histograms.hlog",
        "timeseries.csv",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    assert!(csv.starts_with("second,ops_done,ops_per_s,in_flight,failures,connected,faults\n"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Every delivery has its own instant: a job on 6,000 in-process devices goes out in two
/// dispatch chunks, and the device side takes its batches message by message, so the delivery
/// histogram spreads over the time that takes. (Stamping a whole batch with one reading gave
/// two values: min = p50 and p90 = p99 = max.) Real time, no speed threshold: playing 3,000
/// devices takes well over a microsecond on any machine.
#[test]
fn each_delivery_has_its_own_timestamp() {
    let out = temp_dir("spread");
    std::fs::create_dir_all(&out).unwrap();
    let scenario = out.join("spread.toml");
    std::fs::write(
        &scenario,
        r#"
name = "spread"
seed = 1
duration = "1m"

[hub]
tier = "unlimited"
units = 1

[[cohort]]
name = "all"
count = 6000
id_prefix = "d-"
[cohort.methods.default]
latency = { dist = "fixed", value = "1ms" }

[[job]]
id = "ping"
type = "scheduleDeviceMethod"
start = "+1s"
query = "*"
method = { name = "ping", response_timeout = "30s" }
max_execution = "1m"
"#,
    )
    .unwrap();
    let results = out.join("results");
    let status = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "--no-tui", "--out"])
        .arg(&results)
        .arg(&scenario)
        .status()
        .unwrap();
    assert!(status.success());
    // The run's delivery samples, from its interval log.
    let log = std::fs::read(results.join("histograms.hlog")).unwrap();
    let mut delivery: Option<Histogram<u64>> = None;
    for entry in IntervalLogIterator::new(&log) {
        let Ok(LogEntry::Interval(i)) = entry else {
            continue;
        };
        if i.tag().map(|t| t.as_str()) != Some("delivery") {
            continue;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .unwrap();
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
        match &mut delivery {
            Some(acc) => acc.add(&h).unwrap(),
            None => delivery = Some(h),
        }
    }
    let delivery = delivery.expect("delivery samples in the interval log");
    assert_eq!(delivery.len(), 6000);
    let values: Vec<u64> = delivery
        .iter_recorded()
        .map(|v| v.value_iterated_to())
        .collect();
    assert!(
        values.len() > 2,
        "deliveries spread over more than two values: {values:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_seed_decides_which_devices_fail() {
    let failed = |seed: &str| {
        let out = temp_dir(&format!("seed{seed}"));
        let s = run_small(&out, seed);
        let _ = std::fs::remove_dir_all(&out);
        s["jobs"][0]["deviceJobStatistics"]["failedCount"]
            .as_u64()
            .unwrap()
    };
    let (a, b) = (failed("11"), failed("11"));
    assert_eq!(a, b, "one seed, one outcome");
    let others: Vec<u64> = ["12", "13", "14"].iter().map(|s| failed(s)).collect();
    assert!(
        others.iter().any(|&o| o != a),
        "other seeds give other failures: {a} vs {others:?}"
    );
}

#[test]
fn delivery_and_round_trips_include_the_link() {
    let out = temp_dir("link");
    let summary = run_fixture("link", &out, "3");
    let _ = std::fs::remove_dir_all(&out);
    let stats = |job: &str, measure: &str| {
        let h = &summary["job_histograms"][job][measure];
        let n = |k: &str| {
            h[k].as_u64()
                .unwrap_or_else(|| panic!("{job} {measure} {k}: {h}"))
        };
        (n("count"), n("min_us"))
    };
    // HdrHistogram keeps 3 significant digits: a minimum reads up to 0.1% low.
    for job in ["reboot", "fw"] {
        let (count, min) = stats(job, "delivery");
        assert_eq!(count, 50, "{job}: every device received it");
        assert!(
            min >= 199_800,
            "{job}: delivered after {min} µs, before the downlink's 200 ms"
        );
    }
    let (count, min) = stats("reboot", "round_trip");
    assert_eq!(count, 50);
    assert!(
        min >= 449_500,
        "answered after {min} µs: 200 + 50 + 200 ms at least"
    );
    let (count, min) = stats("fw", "round_trip");
    assert_eq!(count, 50);
    assert!(
        min >= 409_500,
        "acknowledged after {min} µs: 200 + 10 + 200 ms at least"
    );
}

#[test]
fn a_missing_scenario_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", "nope.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read scenario nope.toml"),
        "{stderr}"
    );
}
