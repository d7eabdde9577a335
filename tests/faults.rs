//! `[[fault]]` timelines end to end: a bad day in virtual time replays byte for byte and shows
//! in the results; a hub restart over real MQTT resumes its job; a reconnect storm of a 15,000
//! device MQTT fleet (another process, real socket closes and reconnections) loses no record.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

mod common;

use common::{counts_add_up, fleetsim, json};

fn workdir(name: &str) -> PathBuf {
    common::workdir("faults", name)
}

/// `fleetsim run` of `scenario` into `out`; panics with its output if it fails.
fn run(scenario: &Path, out: &Path, extra: &[&str]) -> String {
    let o = fleetsim()
        .args(["run", "--no-tui", "--out"])
        .arg(out)
        .args(extra)
        .arg(scenario)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    stderr
}

/// The `connected` column of a result directory's `timeseries.csv`.
fn connected(out: &Path) -> Vec<u64> {
    let csv = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    (csv.lines().skip(1))
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect()
}

fn failed(summary: &Value, job: &str) -> u64 {
    let j = summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobId"] == job)
        .unwrap();
    j["deviceJobStatistics"]["failedCount"].as_u64().unwrap()
}

#[test]
fn a_bad_day_replays_byte_for_byte_and_shows_its_faults_in_the_results() {
    let dir = workdir("bad-day");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/bad-day.toml");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let log = run(&scenario, &a, &[]);
    run(&scenario, &b, &[]);
    for file in ["timeseries.csv", "histograms.hlog", "job_progress.json"] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs between two runs of one seed"
        );
    }
    let summary = json(&a.join("summary.json"));
    counts_add_up(&summary);
    let kinds: Vec<&str> = (summary["faults"].as_array().unwrap().iter())
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "disconnect",
            "partition",
            "hub_restart",
            "latency",
            "errors"
        ]
    );
    // The partition cuts off 30% of b44's 8,000 devices: their methods time out.
    assert!(
        (2_200..2_600).contains(&failed(&summary, "health-5")),
        "{summary}"
    );
    // The restart at +125 s: devices still cut off cannot come back within the connect timeout;
    // every other device reconnects and its operation is sent again.
    assert_eq!(failed(&summary, "health-7"), failed(&summary, "health-5"));
    // The errors fault fails 30% of b43's 12,000 devices' methods.
    assert!(
        (3_300..3_900).contains(&failed(&summary, "health-14")),
        "{summary}"
    );
    for quiet in ["health-1", "health-2", "health-3", "health-11", "health-15"] {
        assert_eq!(failed(&summary, quiet), 0, "{quiet}");
    }
    let csv = std::fs::read_to_string(a.join("timeseries.csv")).unwrap();
    let rows: Vec<Vec<u64>> = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|f| f.parse::<f64>().unwrap() as u64)
                .collect()
        })
        .collect();
    let row = |s: usize| &rows[s];
    assert_eq!(row(60)[5], 20_000, "all connected between faults");
    assert_eq!(row(60)[6], 0, "no fault active at 60 s");
    assert_eq!(row(100)[6], 1, "the partition");
    assert_eq!(row(125)[6], 2, "the partition and the restart");
    assert!(
        row(150)[5] < 20_000 - 2_000,
        "cut-off devices stay away: {:?}",
        row(150)
    );
    assert_eq!(
        row(205)[5],
        20_000,
        "back after the partition: {:?}",
        row(205)
    );
    assert!(log.contains("fault: the hub restarts (+125s)"), "{log}");
    assert!(
        log.contains("fault begins: partition 30% of cohort b44"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const RESTART: &str = r#"
name = "restart-over-mqtt"
seed = 3
duration = "60s"
[hub]
transport = "mqtt"
[[cohort]]
name = "d"
count = 300
id_prefix = "d"
[cohort.methods.default]
latency = { dist = "uniform", min = "1s", max = "3s" }
[[job]]
id = "slow"
type = "scheduleDeviceMethod"
start = "+0s"
query = "*"
method = { name = "m", response_timeout = "10s", connect_timeout = "30s" }
[[fault]]
at = "+1500ms"
kind = "hub_restart"
"#;

#[test]
fn a_hub_restart_over_mqtt_drops_every_connection_and_resumes_the_job() {
    let dir = workdir("restart");
    std::fs::write(dir.join("restart.toml"), RESTART).unwrap();
    let log = run(
        &dir.join("restart.toml"),
        &dir.join("out"),
        &["--state-dir", dir.join("state").to_str().unwrap()],
    );
    let summary = json(&dir.join("out/summary.json"));
    counts_add_up(&summary);
    // Answers in flight at the restart were lost with their connections; the hub sent those
    // operations again when the devices reconnected, and every device answered.
    assert_eq!(failed(&summary, "slow"), 0, "{summary}\n{log}");
    let connected = connected(&dir.join("out"));
    assert!(
        connected.iter().any(|&n| n < 300),
        "the restart shows: {connected:?}"
    );
    assert_eq!(connected.last(), Some(&300), "{connected:?}");
    // `--state-dir` keeps the hub's state: it restarted from its store, not from memory.
    assert!(
        log.contains("fault: the hub restarts from its store: 300 devices, 1 jobs"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const STORM: &str = r#"
name = "storm"
seed = 5
duration = "2m"
[hub]
transport = "mqtt"
ramp = 5000
[[cohort]]
name = "all"
count = 15000
id_prefix = "s"
[cohort.methods.default]
latency = { dist = "uniform", min = "1s", max = "6s" }
[[job]]
id = "through-the-storm"
type = "scheduleDeviceMethod"
start = "+1s"
query = "*"
method = { name = "m", response_timeout = "10s", connect_timeout = "30s" }
[[fault]]
at = "+3s"
kind = "disconnect"
share = 1.0
"#;

#[test]
fn a_reconnect_storm_of_15000_mqtt_devices_loses_no_record() {
    use std::io::BufRead;
    let dir = workdir("storm");
    let scenario = dir.join("storm.toml");
    std::fs::write(&scenario, STORM).unwrap();
    // The hub (with the job) in one process, the 15,000 devices in another: a process may hold
    // 20,000 descriptors, not both ends of 15,000 connections.
    let mut hub = fleetsim()
        .args([
            "run",
            "--no-tui",
            "--external-fleet",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg(&scenario)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = hub.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let marker = "MQTT device endpoint on mqtt://";
    let mut seen = Vec::new();
    let mqtt = loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no endpoint line: {}", seen.join("\n")));
        if let Some(at) = line.find(marker) {
            break line[at + marker.len()..].trim().to_owned();
        }
        seen.push(line);
    };
    let fleet = fleetsim()
        .args(["devices", "--scenario"])
        .arg(&scenario)
        .args(["--hub", &mqtt, "--for", "90s", "--state-dir"])
        .arg(dir.join("state"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run ends by itself when its job has (its duration bounds it).
    let out = hub.wait_with_output().unwrap();
    seen.extend(lines.try_iter());
    // SAFETY: kill(2) on our own child's pid, with a valid signal.
    unsafe { libc::kill(fleet.id() as i32, libc::SIGTERM) };
    let fleet_out = fleet.wait_with_output().unwrap();
    let fleet_err = String::from_utf8_lossy(&fleet_out.stderr);
    assert!(out.status.success(), "{}\n{fleet_err}", seen.join("\n"));

    let summary = json(&dir.join("out/summary.json"));
    counts_add_up(&summary);
    let stats = &summary["jobs"][0]["deviceJobStatistics"];
    assert_eq!(stats["deviceCount"], 15_000, "{stats}");
    // Every connection was closed and opened again for real.
    let last = fleet_err.lines().rfind(|l| l.contains("dropped by faults"));
    let dropped: u64 = last
        .and_then(|l| l.split("dropped by faults ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{fleet_err}"));
    assert_eq!(dropped, 15_000, "{fleet_err}");
    let connected = connected(&dir.join("out"));
    let peak = connected
        .iter()
        .position(|&n| n == 15_000)
        .expect("all connected once");
    assert!(
        connected[peak..].iter().any(|&n| n < 15_000),
        "the storm shows at the hub: {connected:?}"
    );
    // The devices come back by themselves. How many are back when the job ends depends on
    // how fast this machine serves 15,000 TLS-less reconnections under load (attempts that
    // fail double their backoff), so only the recovery itself is asserted.
    let (low, at) = (connected[peak..].iter().enumerate())
        .map(|(i, &n)| (n, peak + i))
        .min()
        .unwrap();
    assert!(
        connected[at..].iter().any(|&n| n > low),
        "devices reconnect after the storm: {connected:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
