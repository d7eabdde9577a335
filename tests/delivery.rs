//! Delivery over MQTT (scheduled → received by the device): the MQTT fleet stamps what its
//! devices receive and the hub records it, in one process and from a `fleetsim devices` fleet
//! in another over the receipts side channel. Real TCP and MQTT, `fleetsim` as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// 20 devices over MQTT; a method job, and a twin update whose success is acknowledged (a
/// one-wave rollout: its job `t-w1` ends each operation when the device reports the desired
/// value back). Every device answers its method and acknowledges the desired patch 30 ms after
/// it arrives, so each round trip is at least 30 ms while a delivery on loopback takes a few.
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

/// Both jobs' deliveries: one per device, and each before any round trip ends (the device's
/// 30 ms comes after it received the request).
fn check_deliveries(summary: &Value) {
    for job in ["m", "t-w1"] {
        let h = &summary["job_histograms"][job];
        assert_eq!(h["round_trip"]["count"], 20, "job {job}: {h}");
        assert_eq!(h["delivery"]["count"], 20, "job {job}: {h}");
        let (delivery_max, round_trip_min) = (
            h["delivery"]["max_us"].as_u64().unwrap(),
            h["round_trip"]["min_us"].as_u64().unwrap(),
        );
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
