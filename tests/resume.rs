//! `fleetsim run --state-dir` (issue 16): the run's hub keeps its state in the directory's
//! store, so a run killed with SIGKILL mid-job goes on when started again with the same
//! directory: the job it had created is not created again, its device records with a result
//! keep it, operations in flight are sent again, and a job not created yet is created when due. A store of another run, or a resume the scenario cannot
//! make, is refused with what to do.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

mod common;

use common::{counts_add_up, fleetsim, json, workdir};

/// 400 in-process devices answering in 1–3 s: a method job at once, a twin job scheduled for
/// +6 s (both created at the start), and a method job created once the first one ends.
const SCENARIO: &str = r#"
name = "resumable"
seed = 11
duration = "2m"
[hub]
tier = "S3"
units = 10
[[cohort]]
name = "d"
count = 400
id_prefix = "r"
[cohort.methods.default]
latency = { dist = "uniform", min = "1s", max = "3s" }
[[job]]
id = "reboot"
type = "scheduleDeviceMethod"
start = "+0s"
query = "*"
# Not online at the instant an operation reaches it: the device fails. The resumed run sends
# its operations again only once its devices are back, so none fails.
method = { name = "reboot", response_timeout = "10s", connect_timeout = "0s" }
[[job]]
id = "firmware"
type = "scheduleUpdateTwin"
start = "+6s"
query = "*"
twin = { desired = { firmware = "2.0" } }
[[job]]
id = "check"
type = "scheduleDeviceMethod"
after = "reboot"
query = "*"
method = { name = "check", response_timeout = "10s" }
"#;

/// The `ops N/M` of a progress line.
fn ops(line: &str) -> Option<(u64, u64)> {
    let rest = line.split(" | ops ").nth(1)?;
    let (done, total) = rest.split(' ').next()?.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

#[test]
fn a_run_killed_mid_job_goes_on_from_its_state_dir() {
    let dir = workdir("resume", "killed");
    let scenario = dir.join("resumable.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let state = dir.join("state");
    let args = |out: &str| {
        let mut c = fleetsim();
        c.args(["run", "--no-tui", "--state-dir"])
            .arg(&state)
            .arg("--out")
            .arg(dir.join(out))
            .arg(&scenario);
        c
    };

    // The first start: killed once some of the method job's operations ended and others are
    // in flight.
    let mut first = args("first").stderr(Stdio::piped()).spawn().unwrap();
    let stderr = first.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        seen.push(line.clone());
        if ops(&line).is_some_and(|(done, total)| done > 0 && done < total) {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid, with a valid signal.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    let status = first.wait().unwrap();
    assert!(status.code().is_none(), "killed, not ended: {seen:?}");
    let killed_at = seen.last().and_then(|l| ops(l)).expect("a progress line");
    assert!(!dir.join("first/summary.json").exists());
    let restarted = time::OffsetDateTime::now_utc();

    // The second start goes on from the store.
    let o = args("second").output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("resuming from") && log.contains("2 jobs kept"),
        "{log}"
    );
    assert!(!log.contains("refused"), "no job is created twice: {log}");
    let summary = json(&dir.join("second/summary.json"));
    counts_add_up(&summary);
    let jobs = summary["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{summary}");
    for j in jobs {
        let s = &j["deviceJobStatistics"];
        assert_eq!(s["deviceCount"], 400, "{j}");
        assert_eq!(s["succeededCount"], 400, "{j}");
    }
    // The run counts from its first start, which the report gives as its start.
    let started = time::OffsetDateTime::parse(
        summary["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        started < restarted,
        "started {started}, restarted {restarted}; killed at {killed_at:?}"
    );

    // A third start finds every job ended: it has nothing left to do.
    let o = args("third").output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("3 jobs kept"), "{log}");
    counts_add_up(&json(&dir.join("third/summary.json")));

    // Another scenario on the same state: refused, with what to do.
    let other = dir.join("other.toml");
    std::fs::write(&other, SCENARIO.replace("resumable", "other")).unwrap();
    let o = fleetsim()
        .args(["run", "--no-tui", "--state-dir"])
        .arg(&state)
        .arg(&other)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("holds the state of a run of scenario 'resumable'")
            && e.contains("choose another --state-dir"),
        "{e}"
    );

    // A scenario with a fault timeline cannot go on from an earlier start.
    let faulty = format!("{SCENARIO}\n[[fault]]\nat = \"+1s\"\nkind = \"hub_restart\"\n");
    std::fs::write(&scenario, faulty).unwrap();
    let o = args("faulty").output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("[[fault]]") && e.contains("cannot go on"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_state_dir_needs_real_time() {
    let dir = workdir("resume", "virtual");
    let scenario = dir.join("s.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let o = fleetsim()
        .args(["run", "--no-tui", "--clock", "virtual", "--state-dir"])
        .arg(dir.join("state"))
        .arg(&scenario)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("cannot run in virtual time") && e.contains("--state-dir"),
        "{e}"
    );
    assert!(!dir.join("state/hub.db").exists(), "nothing was created");
    let _ = std::fs::remove_dir_all(&dir);
}
