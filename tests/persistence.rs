//! A hub that keeps its state, killed with SIGKILL mid-job (issue 16): `fleetsim hub` with a
//! 10,000-device fleet (in a `fleetsim devices` process, over MQTT) runs a method job and a
//! twin job, paced by the S3 tier, while a client patches twins. The test kills the hub three
//! times (a fifth of the way in; after more progress, inside a commit: while the store's writer
//! thread is in a write-class system call, seen in `/proc/PID/task/TID/syscall`; at once after
//! a restart, while the restored state's first batches commit), restarts it on the same ports,
//! and checks that every acknowledged twin write is there with its version, both jobs finish,
//! each job's counts add up to its deviceCount, and no device has two records.
//!
//! With FLEETSIM_SDK_TESTS=1 the official Python service SDK (`tests/sdk/python/
//! persisted_jobs.py`) reads both jobs before the first kill and after the end, over HTTPS on
//! an ephemeral port (the SDK follows the connection string's port; no fixed port is used).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{free_port, Killed};

const DEVICES: usize = 10_000;
const API: &str = "api-version=2021-04-12";

/// 10,000 devices answering methods after 20 ms; S3 with 40 units paces job operations at
/// 2,000 per second hub-wide, so the two jobs take about ten seconds of hub time.
const SCENARIO: &str = r#"
name = "persistence"
seed = 7
duration = "1h"
[hub]
tier = "S3"
units = 40
transport = "mqtt"
[[cohort]]
name = "fleet"
count = 10000
id_prefix = "p-"
[cohort.methods.default]
latency = { dist = "fixed", value = "20ms" }
"#;

/// A running hub: its process, its iothubowner connection string (HTTPS host and port).
struct HubProcess {
    child: Killed,
    connection_string: String,
}

impl HubProcess {
    /// Starts `fleetsim hub` on `dir` with the scenario's fleet expected over MQTT on `mqtt`,
    /// plain HTTP on `http` and HTTPS on an ephemeral port; answers once it listens.
    fn start(dir: &Path, http: u16, mqtt: u16) -> HubProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .arg("hub")
            .arg("--scenario")
            .arg(dir.join("persistence.toml"))
            .args(["--no-jobs", "--external-fleet"])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--https", "127.0.0.1:0"])
            .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
            .arg("--state-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fleetsim runs");
        let connection_string = common::announced_connection_string(child.stdout.take().unwrap());
        HubProcess {
            child: Killed(child),
            connection_string,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill9(self) {
        let mut child = self.child;
        // SAFETY: kill(2) on our own child's pid, with a valid signal.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
        let _ = child.0.wait();
    }

    /// SIGKILL while the store's writer thread is inside a write-class system call, found by
    /// polling the thread's `/proc/PID/task/TID/syscall` for up to `limit`; answers the polls
    /// it took and the call it caught, or None (killed anyway) if it caught none or this
    /// machine is not x86_64.
    ///
    /// The file shows a call only while the thread sleeps in it, "running" while it is on a
    /// CPU, so what is caught is a pwrite64 of the log's frames that waited (most go to the
    /// page cache without sleeping) or the fsync of a checkpoint, which SQLite runs inside the
    /// COMMIT that fills the log past `wal_autocheckpoint` (after its frames are written,
    /// before the writer releases the answers they hold back). The kill follows the reading by
    /// one system call of this process.
    fn kill9_inside_a_commit(self, limit: Duration) -> Option<(u64, &'static str)> {
        if !cfg!(target_arch = "x86_64") {
            eprintln!(
                "kill 2 lands at any instant, not inside a commit: the system call numbers here \
                 are x86_64's"
            );
            self.kill9();
            return None;
        }
        let pid = self.child.0.id();
        let writer = writer_thread(pid).expect("the hub has a fleetsim-store thread");
        let path = format!("/proc/{pid}/task/{writer}/syscall");
        let started = Instant::now();
        let deadline = started + limit;
        let mut polls = 0u64;
        // What the polls saw: "running" (on a CPU), or the number of the call it is blocked in.
        let mut seen = std::collections::BTreeMap::<String, u64>::new();
        let caught = loop {
            polls += 1;
            let text = std::fs::read_to_string(&path).expect("the writer's syscall is readable");
            let first = text.split([' ', '\n']).next().unwrap_or_default();
            *seen.entry(first.to_owned()).or_default() += 1;
            let number = first.parse::<u32>().ok();
            let call = WRITE_SYSCALLS
                .iter()
                .find(|(n, _)| Some(*n) == number)
                .map(|(_, name)| *name);
            if let Some(call) = call {
                // SAFETY: kill(2) on our own child's pid, with a valid signal.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                break Some((polls, call));
            }
            if Instant::now() >= deadline {
                break None;
            }
        };
        self.kill9();
        eprintln!(
            "the writer thread's system calls in {polls} polls over {:.2} s: {seen:?}",
            started.elapsed().as_secs_f64()
        );
        caught
    }
}

/// The write-class system calls of x86_64: a commit appends to the log with pwrite64 (or
/// write, pwritev); a checkpoint syncs with fdatasync or fsync.
const WRITE_SYSCALLS: [(u32, &str); 5] = [
    (1, "write"),
    (18, "pwrite64"),
    (296, "pwritev"),
    (74, "fsync"),
    (75, "fdatasync"),
];

/// The id of the store's writer thread (named `fleetsim-store`) in process `pid`.
fn writer_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "fleetsim-store")
        })
        .and_then(|task| task.file_name().to_str()?.parse().ok())
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
    let host = field("HostName=");
    let host = host.split(':').next().unwrap_or_default();
    fleetsim::sas::generate_token(
        host,
        &field("SharedAccessKey="),
        Some(&field("SharedAccessKeyName=")),
        expiry,
    )
    .unwrap()
}

/// The REST API of the hub on `base`, signed with `token`.
#[derive(Clone)]
struct Rest {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Rest {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut req = self
            .client
            .request(method, format!("{}{path}{sep}{API}", self.base))
            .header("Authorization", &self.token)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn job(&self, id: &str) -> Option<Value> {
        self.send(reqwest::Method::GET, &format!("/jobs/v2/{id}"), None)
            .await
    }

    /// Every device job record of job `id`.
    async fn records(&self, id: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut req = self
                .client
                .post(format!("{}/devices/query?{API}", self.base))
                .header("Authorization", &self.token)
                .header("x-ms-max-item-count", "1000")
                .json(&json!({
                    "query": format!("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{id}'")
                }));
            if let Some(c) = &continuation {
                req = req.header("x-ms-continuation", c);
            }
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "query: {}", resp.status());
            continuation = resp
                .headers()
                .get("x-ms-continuation")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let page: Vec<Value> = resp.json().await.unwrap();
            rows.extend(page);
            if continuation.is_none() {
                return rows;
            }
        }
    }
}

/// Polls `check` every 50 ms until it holds, or panics naming `what` after `limit`.
async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stats(job: &Value) -> (u64, u64, u64, u64, u64) {
    let s = &job["deviceJobStatistics"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    (
        n("deviceCount"),
        n("succeededCount"),
        n("failedCount"),
        n("runningCount"),
        n("pendingCount"),
    )
}

/// Device operations of both jobs that ended.
async fn done(rest: &Rest) -> u64 {
    let mut total = 0;
    for id in ["method-job", "twin-job"] {
        if let Some(job) = rest.job(id).await {
            let (_, ok, failed, _, _) = stats(&job);
            total += ok + failed;
        }
    }
    total
}

/// The official Python service SDK's view of both jobs, when FLEETSIM_SDK_TESTS=1.
fn python_reads_jobs(hub: &HubProcess, dir: &Path) -> Option<Value> {
    if std::env::var("FLEETSIM_SDK_TESTS")
        .ok()
        .is_none_or(|v| v != "1")
    {
        return None;
    }
    let out = Command::new("python3")
        .arg("tests/sdk/python/persisted_jobs.py")
        .args(["method-job", "twin-job"])
        .env("FLEETSIM_CONNECTION_STRING", &hub.connection_string)
        .env("REQUESTS_CA_BUNDLE", dir.join("ca.pem"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python SDK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the script prints JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_job_keeps_every_acknowledged_write_and_finishes_its_jobs() {
    let dir = common::workdir("persistence", "hub");
    std::fs::write(dir.join("persistence.toml"), SCENARIO).unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let mut hub = HubProcess::start(&dir, http, mqtt);
    let rest = Rest {
        client: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{http}"),
        token: token(&hub.connection_string),
    };
    // The fleet outlives every hub: its devices reconnect (with backoff) after each kill.
    let _devices = Killed(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .arg("devices")
            .arg("--scenario")
            .arg(dir.join("persistence.toml"))
            .args(["--hub", &format!("127.0.0.1:{mqtt}"), "--ramp", "20000"])
            .args(["--for", "180s", "--state-dir"])
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .expect("fleetsim devices runs"),
    );
    let connected = async || {
        let Ok(resp) = rest
            .client
            .get(format!("{}/metrics", rest.base))
            .header("Authorization", &rest.token)
            .send()
            .await
        else {
            return 0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("fleetsim_devices_connected "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(30),
        "10,000 devices connected",
        async || connected().await == DEVICES,
    )
    .await;

    // Devices are offline while the hub restarts: the method waits for them to reconnect.
    let method = json!({"jobId": "method-job", "type": "scheduleDeviceMethod", "queryCondition": "*",
        "cloudToDeviceMethod": {"methodName": "ping", "payload": {"n": 1},
            "responseTimeoutInSeconds": 60, "connectTimeoutInSeconds": 120}});
    let twin = json!({"jobId": "twin-job", "type": "scheduleUpdateTwin", "queryCondition": "*",
        "updateTwin": {"etag": "*", "tags": {"wave": "one"}, "properties": {"desired": {"fw": "2.0"}}}});
    for (id, body) in [("method-job", method), ("twin-job", twin)] {
        let created = rest
            .send(reqwest::Method::PUT, &format!("/jobs/v2/{id}"), Some(body))
            .await;
        assert!(created.is_some(), "job {id} was not created");
    }
    let sdk_before = python_reads_jobs(&hub, &dir);

    // A client patches twins throughout, one at a time: each answered write is noted with the
    // version it answered.
    let acked = Arc::new(Mutex::new(Vec::<(usize, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (rest, acked, stop) = (rest.clone(), acked.clone(), stop.clone());
        async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) && k < DEVICES {
                let answer = rest
                    .send(
                        reqwest::Method::PATCH,
                        &format!("/twins/p-{k:04}"),
                        Some(json!({"tags": {"written": k}})),
                    )
                    .await;
                match answer {
                    Some(twin) => {
                        let version = twin["version"].as_u64().unwrap_or(0);
                        acked.lock().unwrap().push((k, version));
                        k += 1;
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    });

    // Kill 1: a fifth of the way in.
    eventually(
        Duration::from_secs(30),
        "4,000 operations done",
        async || done(&rest).await >= 4_000,
    )
    .await;
    eprintln!("kill 1 at {} operations done", done(&rest).await);
    hub.kill9();
    // Kill 2: after 1,500 more operations, inside a commit.
    hub = HubProcess::start(&dir, http, mqtt);
    let after_first = done(&rest).await;
    eventually(
        Duration::from_secs(30),
        "1,500 more operations",
        async || done(&rest).await >= after_first + 1_500,
    )
    .await;
    eprintln!(
        "restarted at {after_first}; kill 2 at {}",
        done(&rest).await
    );
    let caught =
        tokio::task::spawn_blocking(move || hub.kill9_inside_a_commit(Duration::from_secs(20)))
            .await
            .unwrap();
    if cfg!(target_arch = "x86_64") {
        let (polls, call) = caught.expect("the writer thread was never seen inside a write");
        eprintln!("kill 2 inside {call}, after {polls} polls of the writer thread");
    }
    // Kill 3: as soon as the restarted hub listens, while its first batches commit.
    hub = HubProcess::start(&dir, http, mqtt);
    hub.kill9();
    hub = HubProcess::start(&dir, http, mqtt);
    eprintln!("restarted at {} operations done", done(&rest).await);

    let both_ended = async || {
        let mut ended = 0;
        for id in ["method-job", "twin-job"] {
            let status = rest.job(id).await.map(|j| j["status"].clone());
            ended += usize::from(status.is_some_and(|s| s == "completed" || s == "failed"));
        }
        ended == 2
    };
    eventually(Duration::from_secs(45), "both jobs ended", both_ended).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    for id in ["method-job", "twin-job"] {
        let job = rest.job(id).await.unwrap();
        let (count, ok, failed, running, pending) = stats(&job);
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(count, DEVICES as u64, "{job}");
        assert_eq!(ok + failed, count, "{job}");
        assert_eq!((running, pending), (0, 0), "{job}");
        let records = rest.records(id).await;
        let devices: HashSet<&str> = records
            .iter()
            .filter_map(|r| r["deviceId"].as_str())
            .collect();
        assert_eq!(records.len(), DEVICES, "one record per device");
        assert_eq!(devices.len(), DEVICES, "no device counted twice");
        assert!(
            records.iter().all(|r| r["status"] == "completed"),
            "every device operation of {id} succeeded"
        );
    }

    // Every acknowledged write is there, with at least the version it answered.
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} twin writes answered", acked.len());
    assert!(
        acked.len() > 10,
        "only {} twin writes answered",
        acked.len()
    );
    for (k, version) in acked {
        let twin = rest
            .send(reqwest::Method::GET, &format!("/twins/p-{k:04}"), None)
            .await
            .unwrap();
        assert_eq!(twin["tags"]["written"], json!(k), "{twin}");
        assert!(twin["version"].as_u64().unwrap() >= version, "{twin}");
        assert_eq!(twin["tags"]["wave"], "one", "{twin}");
    }

    if let (Some(before), Some(after)) = (sdk_before, python_reads_jobs(&hub, &dir)) {
        eprintln!("the Python SDK read {before} before and {after} after");
        for id in ["method-job", "twin-job"] {
            let (b, a) = (&before[id], &after[id]);
            for key in [
                "job_id",
                "type",
                "created_time",
                "start_time",
                "query_condition",
            ] {
                assert_eq!(b[key], a[key], "{id}.{key} before and after");
            }
            assert_eq!(a["status"], "completed", "{a}");
            assert_eq!(a["device_job_statistics"]["device_count"], DEVICES);
        }
    }
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}
