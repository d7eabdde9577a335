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
method = { name = "ping", payload = {}, response_timeout = "10s", connect_timeout = "30s" }
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

/// Forwards each line `from` writes to the receiver.
fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

/// Starts `fleetsim devices` on the scenario in `dir` against the hub's MQTT endpoint `mqtt`,
/// sending receipts to `side`.
fn fleet(dir: &Path, mqtt: &str, side: &str) -> std::process::Child {
    fleetsim()
        .args(["devices", "--scenario"])
        .arg(dir.join("delivery.toml"))
        .args(["--hub", mqtt, "--receipts", side, "--for", "60s"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops `child` with SIGTERM and answers what it wrote to stderr; it must exit cleanly.
fn stop(child: std::process::Child) -> String {
    // SAFETY: kill(2) on our own child's pid, with a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn a_fleetsim_devices_fleet_reports_deliveries_over_the_side_channel_with_its_clock_offset() {
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
    let lines = lines_of(hub.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mqtt = address_after(&lines, &mut seen, "MQTT device endpoint on mqtt://");
    let side = address_after(&lines, &mut seen, "receipts side channel on tcp://");
    let fleet = fleet(&dir, &mqtt, &side);
    // The run ends by itself once both jobs have (its duration bounds it).
    let out = hub.wait_with_output().unwrap();
    seen.extend(lines.try_iter());
    let fleet_err = stop(fleet);
    assert!(out.status.success(), "{}", seen.join("\n"));
    assert!(
        fleet_err.contains("receipts go to the hub's side channel"),
        "{fleet_err}"
    );

    let summary = summary(&dir.join("out"));
    check_deliveries(&summary);
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

/// `GET /metrics` of the hub at `http` (HOST:PORT), by hand.
fn metrics(http: &str) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(http).unwrap();
    sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    text
}

/// The value of the exposition line starting with `name ` (or `name{...} `).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn fleetsim_hub_records_an_external_fleets_deliveries_with_its_measured_clock_offset() {
    let dir = workdir("hub");
    let mut hub = fleetsim()
        .args(["hub", "--scenario"])
        .arg(dir.join("delivery.toml"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "off",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .args([
            "--external-fleet",
            "--receipts",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (
        lines_of(hub.stdout.take().unwrap()),
        lines_of(hub.stderr.take().unwrap()),
    );
    let mut seen = Vec::new();
    let http = address_after(&out, &mut seen, "HTTP  on http://");
    let mqtt = address_after(&err, &mut seen, "MQTT device endpoint on mqtt://");
    let side = address_after(&err, &mut seen, "receipts side channel on tcp://");
    let fleet = fleet(&dir, &mqtt, &side);
    // The scenario's jobs: 20 method requests and 20 desired patches, each with its receipt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = metrics(&http);
        if sample(
            &text,
            "fleetsim_delivery_receipts_total{outcome=\"recorded\"}",
        ) == Some(40.0)
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not 40 receipts in 60 s:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        sample(
            &text,
            "fleetsim_latency_seconds_count{measure=\"delivery\"}"
        ),
        Some(40.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "fleetsim_delivery_receipts_total{outcome=\"refused\"}"
        ),
        Some(0.0),
        "{text}"
    );
    let offset = sample(&text, "fleetsim_delivery_clock_offset_seconds").unwrap();
    let uncertainty = sample(&text, "fleetsim_delivery_clock_uncertainty_seconds").unwrap();
    assert!(uncertainty < 0.005, "{text}");
    assert!(offset.abs() <= uncertainty + 0.001, "{text}");
    stop(fleet);
    stop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}
