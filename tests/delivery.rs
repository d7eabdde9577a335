//! Delivery over MQTT (scheduled → received by the device): the MQTT fleet stamps what its
//! devices receive and the hub records it, in one process and from a `fleetsim devices` fleet
//! in another over the receipts side channel. Real TCP and MQTT, `fleetsim` as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// 20 devices over MQTT; a method job, and a twin update whose success is acknowledged (a
/// one-wave rollout: its job `t-w1` ends each operation when the device reports the desired
/// value back). The devices sit behind a simulated link of 10 ms each way, and each answers its
/// method and acknowledges the desired patch 30 ms after it arrives: a delivery takes 10 ms and
/// a bit, a round trip at least 50 ms. (Deliveries of a millisecond or less, as loopback gives
/// without a link, are shorter than ten times the clock uncertainty the side channel measures
/// on a busy machine, 50 to 150 µs: the hub refuses to record them from another process.)
const SCENARIO: &str = r#"
name = "delivery"
seed = 3
duration = "60s"
[hub]
transport = "mqtt"
ramp = 1000
[[cohort]]
name = "d"
count = 20
id_prefix = "dlv-"
[cohort.methods.default]
latency = { dist = "fixed", value = "30ms" }
[cohort.twin]
ack_latency = { dist = "fixed", value = "30ms" }
[cohort.link]
latency = { dist = "fixed", value = "10ms" }
[[job]]
id = "m"
type = "scheduleDeviceMethod"
start = "+1s"
query = "*"
method = { name = "ping", payload = {}, response_timeout = "10s" }
[[rollout]]
id = "t"
type = "scheduleUpdateTwin"
start = "+2s"
query = "*"
twin = { desired = { fw = "2" } }
waves = ["*"]
success = "acknowledged"
ack_timeout = "20s"
"#;

/// A fresh directory for one test, with the scenario in it.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-delivery-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("delivery.toml"), SCENARIO).unwrap();
    dir
}

fn fleetsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
}

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// Both jobs' deliveries: one per device, each at least the link's 10 ms, and each before any
/// round trip ends (the device's 30 ms comes after it received the request).
fn check_deliveries(summary: &Value) {
    for job in ["m", "t-w1"] {
        let h = &summary["job_histograms"][job];
        assert_eq!(h["round_trip"]["count"], 20, "job {job}: {h}");
        assert_eq!(h["delivery"]["count"], 20, "job {job}: {h}");
        let (delivery_max, round_trip_min) = (
            h["delivery"]["max_us"].as_u64().unwrap(),
            h["round_trip"]["min_us"].as_u64().unwrap(),
        );
        let delivery_min = h["delivery"]["min_us"].as_u64().unwrap();
        assert!(delivery_min >= 10_000, "job {job}: {h}");
        assert!(
            delivery_max <= round_trip_min,
            "job {job}: a delivery ({delivery_max} µs) took longer than a round trip ({round_trip_min} µs)"
        );
    }
}

#[test]
fn an_mqtt_fleet_in_process_stamps_the_delivery_of_methods_and_desired_patches() {
    let dir = workdir("inproc");
    let out = fleetsim()
        .args(["run", "--no-tui", "--out"])
        .arg(dir.join("out"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg(dir.join("delivery.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary(&dir.join("out"));
    check_deliveries(&summary);
    // One clock: nothing to judge.
    assert!(summary.get("delivery_clock").is_none(), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for the line of `lines` containing `marker` and answers the address after it.
fn address_after(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    marker: &str,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(line) = seen.iter().find(|l| l.contains(marker)) {
            let at = line.find(marker).unwrap() + marker.len();
            return line[at..].trim().to_owned();
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no '{marker}' line within 60 s; the hub said:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn a_fleetsim_devices_fleet_reports_deliveries_over_the_side_channel_with_its_clock_offset() {
    use std::io::BufRead;
    use std::process::Stdio;

    let dir = workdir("external");
    let mut hub = fleetsim()
        .args([
            "run",
            "--no-tui",
            "--external-fleet",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .args(["--receipts", "127.0.0.1:0", "--out"])
        .arg(dir.join("out"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg(dir.join("delivery.toml"))
        .stdout(Stdio::piped())
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
    let mut seen = Vec::new();
    let mqtt = address_after(&lines, &mut seen, "MQTT device endpoint on mqtt://");
    let side = address_after(&lines, &mut seen, "receipts side channel on tcp://");
    let fleet = fleetsim()
        .args(["devices", "--scenario"])
        .arg(dir.join("delivery.toml"))
        .args(["--hub", &mqtt, "--receipts", &side, "--for", "60s"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run ends by itself once both jobs have (its duration bounds it).
    let out = hub.wait_with_output().unwrap();
    seen.extend(lines.try_iter());
    // SAFETY: kill(2) on our own child's pid, with a valid signal.
    unsafe { libc::kill(fleet.id() as i32, libc::SIGTERM) };
    let fleet_out = fleet.wait_with_output().unwrap();
    let fleet_err = String::from_utf8_lossy(&fleet_out.stderr);
    assert!(out.status.success(), "{}", seen.join("\n"));
    assert!(fleet_out.status.success(), "{fleet_err}");
    assert!(
        fleet_err.contains("receipts go to the hub's side channel"),
        "{fleet_err}"
    );

    let summary = summary(&dir.join("out"));
    check_deliveries(&summary);
    let clock = &summary["delivery_clock"];
    assert_eq!(clock["recorded"], 40, "{clock}");
    assert_eq!(clock["refused"], 0, "{clock}");
    // One machine, one monotonic clock: the offset is the two processes' readings of the wall
    // clock at their start, within the measurement's uncertainty of zero.
    let offset = clock["offset_us"].as_i64().unwrap();
    let uncertainty = clock["uncertainty_us"].as_u64().unwrap();
    assert!(uncertainty < 5_000, "{clock}");
    assert!(offset.unsigned_abs() <= uncertainty + 1_000, "{clock}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("delivery clock: fleet offset"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}
