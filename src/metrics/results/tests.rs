use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::metrics::histogram::new_histogram;
use crate::metrics::tag::{parse_tag, tag_for};
use crate::metrics::MAX_US;
use crate::report::{DeviceJobStatistics, FaultWindow, JobReport};

/// A fresh, unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "fleetsim-results-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn report() -> RunReport {
    let job = |id: &str, n: u64| JobReport {
        job_id: id.to_owned(),
        job_type: "scheduleDeviceMethod".to_owned(),
        status: "completed".to_owned(),
        statistics: DeviceJobStatistics {
            device_count: n,
            failed_count: 1,
            succeeded_count: n - 1,
            running_count: 0,
            pending_count: 0,
        },
        makespan_ms: 5400.0,
        ops_per_s: n as f64 / 5.4,
        failures: [("504101 GatewayTimeout".to_owned(), 1)].into(),
    };
    RunReport {
        scenario: "unit".to_owned(),
        seed: 42,
        complete: true,
        started_at: "2025-01-02T03:04:05.678Z".to_owned(),
        ended_at: "2025-01-02T03:04:11.178Z".to_owned(),
        devices: 2000,
        jobs: vec![job("job-1", 1200), job("job 2,odd%id", 800)],
        rollouts: Vec::new(),
        // A window over seconds 1 and 2, and an instant in second 4.
        faults: vec![
            FaultWindow {
                kind: "partition".into(),
                target: "all devices".into(),
                detail: String::new(),
                start_s: 1.5,
                end_s: 2.5,
            },
            FaultWindow {
                kind: "hub_restart".into(),
                target: "the hub".into(),
                detail: String::new(),
                start_s: 4.0,
                end_s: 4.0,
            },
        ],
        shard: None,
        clock: Default::default(),
        timing: Default::default(),
        delivery_clock: None,
    }
}

/// Every sample a run recorded (before clamping), per (job index, measure).
struct Run {
    recorder: Recorder,
    samples: Vec<[Vec<u64>; 4]>,
    now_us: u64,
}

/// A deterministic run over 5.5 s with two jobs, a 2 s gap without events, and outliers.
fn run() -> Run {
    let mut recorder = Recorder::new();
    let slots = [recorder.add_job("job-1"), recorder.add_job("job 2,odd%id")];
    let mut samples: Vec<[Vec<u64>; 4]> = vec![Default::default(), Default::default()];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut now = 0u64;
    for i in 0..2000u64 {
        now = if i < 1200 {
            i * 1_500
        } else {
            3_700_000 + (i - 1200) * 2_250
        };
        recorder.tick(now);
        let j = (i % 2) as usize;
        recorder.op_dispatched(slots[j]);
        for m in Measure::ALL {
            let r = next();
            let v = match r % 100 {
                0 => MAX_US + r % 1000, // outlier
                1..=10 => r % 10_000_000,
                _ => r % 50_000,
            };
            recorder.record(slots[j], m, v);
            samples[j][m.index()].push(v);
        }
        recorder.op_done(slots[j], now, i % 97 == 0);
    }
    assert!(now < 5_500_000);
    Run {
        recorder,
        samples,
        now_us: 5_500_000,
    }
}

fn histogram_of<'a>(values: impl IntoIterator<Item = &'a u64>) -> Histogram<u64> {
    let mut h = new_histogram();
    for &v in values {
        h.record(v.min(MAX_US)).unwrap();
    }
    h
}

#[test]
fn results_dir_has_every_file_and_consistent_counts() {
    let dir = TempDir::new("contents");
    let run = run();
    write(&dir.0, &report(), &run.recorder, run.now_us).unwrap();

    let mut names: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "completion.hgrm",
            "delivery.hgrm",
            "engine_lag.hgrm",
            "histograms.hlog",
            "job_progress.json",
            "round_trip.hgrm",
            "summary.json",
            "timeseries.csv"
        ],
        "no temporary file left behind"
    );
    let progress = read_job_progress(&dir.0).unwrap();
    let mut ended = 0;
    for (id, rows) in &progress {
        let totals = run
            .recorder
            .totals(run.recorder.jobs().find(|j| j.1 == id).map(|j| j.0));
        let &[last_s, succeeded, failed] = rows.last().unwrap();
        assert_eq!(
            (succeeded + failed, failed),
            (totals.done, totals.failed),
            "{id}"
        );
        assert!(last_s <= 6, "rows end by the run's end: {last_s}");
        assert!(rows
            .windows(2)
            .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]));
        ended += succeeded + failed;
    }
    assert_eq!(ended, 2000);

    let summary: Summary =
        serde_json::from_slice(&fs::read(dir.0.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.run, report());
    assert_eq!(summary.schema_version, SUMMARY_SCHEMA_VERSION);
    assert_eq!(summary.elapsed_s, 5.5);
    assert_eq!(summary.throughput.ops_total, 2000);
    assert_eq!(summary.throughput.ops_dispatched, 2000);
    assert_eq!(summary.throughput.in_flight, 0);
    assert_eq!(
        summary.throughput.failures_total,
        (0..2000).filter(|i| i % 97 == 0).count() as u64
    );
    assert!((summary.throughput.ops_per_s_mean - 2000.0 / 5.5).abs() < 1e-9);
    assert_eq!(
        summary.throughput.ops_per_s_peak, 667.0,
        "second 0 holds 667 ops"
    );
    let keys: Vec<&str> = summary.job_histograms.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["job 2,odd%id", "job-1"]);
    for m in Measure::ALL {
        let overall = summary.histograms.get(m);
        assert_eq!(overall.count, 2000);
        let per_job: u64 = summary
            .job_histograms
            .values()
            .map(|s| s.get(m).count)
            .sum();
        assert_eq!(per_job, 2000);
        let outliers: u64 = summary
            .job_histograms
            .values()
            .map(|s| s.get(m).outliers)
            .sum();
        assert_eq!(overall.outliers, outliers);
        let expected_outliers = run
            .samples
            .iter()
            .flat_map(|s| &s[m.index()])
            .filter(|&&v| v > MAX_US)
            .count() as u64;
        assert_eq!(overall.outliers, expected_outliers);
        assert!(overall.outliers > 0, "the run has outliers in {m}");
        assert_eq!(overall.max_us, MAX_US);

        let hgrm = fs::read_to_string(dir.0.join(format!("{}.hgrm", m.name()))).unwrap();
        let footer = hgrm
            .lines()
            .find(|l| l.starts_with("#[Max"))
            .expect("a #[Max ...] footer line");
        let total: u64 = footer
            .rsplit('=')
            .next()
            .unwrap()
            .trim_end_matches(']')
            .trim()
            .parse()
            .unwrap();
        assert_eq!(total, overall.count, "{footer}");
        let last_row = hgrm.lines().rfind(|l| !l.starts_with('#')).unwrap();
        let fields: Vec<&str> = last_row.split_whitespace().collect();
        assert_eq!(
            fields.len(),
            3,
            "the 100% row has no 1/(1-p) column: {last_row}"
        );
        assert_eq!(fields[1], "1.000000000000");
        assert_eq!(fields[2], "2000");
    }

    let csv = fs::read_to_string(dir.0.join("timeseries.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "second,ops_done,ops_per_s,in_flight,failures,connected,faults"
    );
    assert_eq!(lines.len(), 1 + 6, "5.5 s: six rows");
    assert_eq!(lines[1], "0,667,667.000,0,7,0,0");
    let faults: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(
        faults,
        ["0", "1", "1", "0", "1", "0"],
        "the windows by second"
    );
    let rows = read_timeseries(&dir.0.join("timeseries.csv")).unwrap();
    assert_eq!(rows[2].faults, 1, "read back");
    assert_eq!(
        lines[3].split(',').nth(2),
        Some("0.000"),
        "second 2 is in the gap"
    );
    let done: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "ops_done is cumulative"
    );
    assert_eq!(*done.last().unwrap(), 2000);
}

#[test]
fn interval_log_adds_up_to_the_recorded_samples() {
    let dir = TempDir::new("hlog");
    let run = run();
    write(&dir.0, &report(), &run.recorder, run.now_us).unwrap();
    let path = dir.0.join("histograms.hlog");
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("#[StartTime: 1735787045.678"),
        "{}",
        &text[..400]
    );
    assert!(text.contains("#[BaseTime: 1735787045.678"));
    assert!(text.contains("\nTag=delivery,0.000,1.000,"));
    assert!(text.contains("\nTag=job/job%202%2Codd%25id/delivery,"));
    assert!(
        text.contains("\nTag=delivery,5.000,0.500,"),
        "the partial last second"
    );

    let logged = read_interval_log(&path).unwrap();
    assert_eq!(logged.len(), 4 * 3, "4 measures x (overall + 2 jobs)");
    let ids = ["job-1", "job 2,odd%id"];
    for m in Measure::ALL {
        let all = histogram_of(run.samples.iter().flat_map(|s| &s[m.index()]));
        let from_log = &logged[&tag_for(None, m)];
        assert_eq!(from_log.len(), 2000);
        assert!(*from_log == all, "{m}: log differs from the samples");
        assert!(run.recorder.histogram(None, m) == all);
        let a: Vec<_> = from_log
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let b: Vec<_> = all
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(a, b, "{m}: bucket for bucket");
        for (j, id) in ids.iter().enumerate() {
            let tag = tag_for(Some(id), m);
            assert_eq!(parse_tag(&tag), Some((Some(id.to_string()), m)));
            let expected = histogram_of(&run.samples[j][m.index()]);
            assert!(
                logged[&tag] == expected,
                "{tag}: log differs from the samples"
            );
        }
    }
}

#[test]
fn read_interval_log_reports_bad_input_with_the_file() {
    let dir = TempDir::new("badlog");
    fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("bad.hlog");
    fs::write(&path, "#comment\nTag=x,0.000,1.000,1.000,not*base64\n").unwrap();
    let e = read_interval_log(&path).unwrap_err();
    assert!(
        matches!(e, ResultsError::BadInterval { index: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("bad.hlog"), "{e}");
    fs::write(&path, "this is not a log\n").unwrap();
    let e = read_interval_log(&path).unwrap_err();
    assert!(matches!(e, ResultsError::LogParse { offset: 0, .. }), "{e}");
    let e = read_interval_log(&dir.0.join("missing.hlog")).unwrap_err();
    assert!(matches!(e, ResultsError::Read { .. }), "{e}");
}

#[test]
fn empty_run_writes_valid_files() {
    let dir = TempDir::new("empty");
    let mut rep = report();
    rep.jobs.clear();
    rep.started_at = "not a time".to_owned();
    write(&dir.0, &rep, &Recorder::new(), 0).unwrap();
    let csv = fs::read_to_string(dir.0.join("timeseries.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1, "header only");
    let hgrm = fs::read_to_string(dir.0.join("delivery.hgrm")).unwrap();
    assert!(hgrm.contains("Total count    =            0]"), "{hgrm}");
    let hlog = fs::read_to_string(dir.0.join("histograms.hlog")).unwrap();
    assert!(hlog.contains("is not RFC 3339"));
    assert!(read_interval_log(&dir.0.join("histograms.hlog"))
        .unwrap()
        .is_empty());
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.0.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["histograms"]["delivery"]["count"], 0);
    assert_eq!(summary["throughput"]["ops_per_s_mean"], 0.0);
}

fn schema_validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/summary.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema itself is valid")
}

fn errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

#[test]
fn summary_json_validates_against_the_schema() {
    let validator = schema_validator();
    for (name, recorder, now) in [
        ("full", run().recorder, 5_500_000),
        ("empty", Recorder::new(), 0),
    ] {
        let dir = TempDir::new(name);
        write(&dir.0, &report(), &recorder, now).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.0.join("summary.json")).unwrap()).unwrap();
        let errs = errors(&validator, &doc);
        assert!(errs.is_empty(), "{name}: {errs:#?}");
    }
}

#[test]
fn broken_summaries_fail_the_schema() {
    let validator = schema_validator();
    let dir = TempDir::new("broken");
    let run = run();
    write(&dir.0, &report(), &run.recorder, run.now_us).unwrap();
    let good: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.0.join("summary.json")).unwrap()).unwrap();
    assert!(validator.is_valid(&good));

    type Breaker = fn(&mut serde_json::Value);
    let breakers: [(&str, Breaker); 7] = [
        ("histograms missing", |d| {
            d.as_object_mut().unwrap().remove("histograms");
        }),
        ("a measure missing", |d| {
            d["histograms"]
                .as_object_mut()
                .unwrap()
                .remove("round_trip");
        }),
        ("count is a string", |d| {
            d["histograms"]["delivery"]["count"] = "12".into()
        }),
        ("negative percentile", |d| {
            d["histograms"]["delivery"]["p99_us"] = (-1).into()
        }),
        ("job without jobId", |d| {
            d["jobs"][0].as_object_mut().unwrap().remove("jobId");
        }),
        ("unknown field", |d| {
            d["throughput"]["ops_per_minute"] = 1.into()
        }),
        ("bad job histogram", |d| {
            d["job_histograms"]["job-1"]["completion"]["max_us"] = "x".into()
        }),
    ];
    for (what, breaker) in breakers {
        let mut doc = good.clone();
        breaker(&mut doc);
        assert!(!validator.is_valid(&doc), "{what}: still valid");
    }
}
