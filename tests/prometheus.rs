//! `/metrics` in the Prometheus ecosystem: starts `fleetsim hub` (the `sdk-hub` fleet, plain
//! HTTP on a loopback port), checks its exposition with `promtool check metrics`, starts a real
//! Prometheus server (loopback, temporary directory) scraping the hub every second, runs a
//! method job over REST, and reads back through Prometheus's HTTP query API the job's device
//! operations, a latency quantile, and every panel query of `deploy/grafana-dashboard.json`.
//!
//! `scripts/test.sh` installs Debian's `prometheus` and sets FLEETSIM_SDK_TESTS=1, which makes
//! this test mandatory; a bare `cargo test` without Prometheus installed skips it with a note.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{free_port, Killed};

/// Starts the hub; returns it, its HTTP base and its iothubowner connection string.
fn start_hub(state: &Path) -> (Killed, String, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["hub", "--scenario", "tests/fixtures/sdk-hub.toml"])
        .args(["--http", &http, "--https", "off", "--state-dir"])
        .arg(state)
        .stdout(Stdio::piped())
        .spawn()
        .expect("fleetsim runs");
    let connection_string = common::announced_connection_string(child.stdout.take().unwrap());
    (Killed(child), format!("http://{http}"), connection_string)
}

/// A service SAS token for the connection string's policy.
fn token(connection_string: &str) -> String {
    let field = |name: &str| {
        connection_string
            .split(';')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} missing in {connection_string}"))
            .to_owned()
    };
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    fleetsim::sas::generate_token(
        &field("HostName="),
        &field("SharedAccessKey="),
        Some(&field("SharedAccessKeyName=")),
        expiry,
    )
    .unwrap()
}

/// Polls `expr` through Prometheus's query API until `accept` takes its result (a non-empty
/// vector), or panics after 30 s.
async fn poll(prometheus: &str, expr: &str, accept: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
        {
            last = r.json().await.unwrap_or(Value::Null);
            if let Some(rows) = last["data"]["result"].as_array() {
                if !rows.is_empty() && accept(rows) {
                    return rows.clone();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("Prometheus never answered {expr} as expected; last answer: {last}");
}

fn value(row: &Value) -> f64 {
    row["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_hub_and_the_dashboard_finds_data() {
    let mandatory = std::env::var("FLEETSIM_SDK_TESTS").is_ok_and(|v| v == "1");
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            !mandatory,
            "promtool is missing; scripts/test.sh installs Debian's prometheus"
        );
        eprintln!("note: Prometheus not installed (scripts/test.sh installs it); skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("fleetsim-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_hub, hub, connection_string) = start_hub(&dir.join("state"));
    let client = reqwest::Client::new();

    // The exposition passes Prometheus's own checker.
    let text = client
        .get(format!("{hub}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A Prometheus server scraping the hub every second, bounded by this test's life.
    let web = format!("127.0.0.1:{}", free_port());
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fleetsim\n    static_configs:\n      - targets: ['{}']\n",
            hub.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs"),
    );
    let prometheus = format!("http://{web}");

    // A method job over the 20 devices of the fleet.
    let job = json!({
        "jobId": "prom-1", "type": "scheduleDeviceMethod", "queryCondition": "*",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 30}
    });
    let created = client
        .put(format!("{hub}/jobs/v2/prom-1?api-version=2021-04-12"))
        .header("authorization", token(&connection_string))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{:?}", created.text().await);

    // The job's device operations and a latency quantile, read back through Prometheus.
    let done = poll(
        &prometheus,
        "fleetsim_job_device_operations_done_total",
        |rows| value(&rows[0]) >= 20.0,
    )
    .await;
    assert_eq!(value(&done[0]), 20.0, "{done:?}");
    let p99 = poll(
        &prometheus,
        "fleetsim_latency_seconds{measure=\"completion\",quantile=\"0.99\"}",
        |rows| value(&rows[0]) > 0.0,
    )
    .await;
    assert!(value(&p99[0]) < 30.0, "{p99:?}");
    poll(&prometheus, "fleetsim_jobs{status=\"completed\"}", |rows| {
        rows.iter().any(|r| value(r) == 1.0)
    })
    .await;

    // Every panel of the shipped dashboard finds data.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana-dashboard.json").unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(
        panels.len() >= 6,
        "jobs, ops/s, latency, throttling, connections"
    );
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            poll(&prometheus, expr, |_| true).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
