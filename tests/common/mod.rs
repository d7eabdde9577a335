//! What several integration tests share: the release binary, scratch directories, result files.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command};

use serde_json::Value;

/// The fleetsim binary under test.
pub fn fleetsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
}

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback TCP port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An empty scratch directory for test `name` of `suite`, unique to this process.
pub fn workdir(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A JSON file.
pub fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every job of a `summary.json` completed, and its counts add up: each device ended once,
/// none left running or pending.
pub fn counts_add_up(summary: &Value) {
    for j in summary["jobs"].as_array().unwrap() {
        let s = &j["deviceJobStatistics"];
        let n = |k: &str| s[k].as_u64().unwrap();
        assert_eq!(
            n("succeededCount") + n("failedCount"),
            n("deviceCount"),
            "{}: {s}",
            j["jobId"]
        );
        assert_eq!(n("runningCount") + n("pendingCount"), 0, "{s}");
        assert_eq!(j["status"], "completed", "{j}");
    }
}

/// The iothubowner connection string a starting `fleetsim hub` announces on `stdout`, read up
/// to that line; panics if the hub ends its output without one.
pub fn announced_connection_string(stdout: ChildStdout) -> String {
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("fleetsim hub: connection string ")
                .map(str::to_owned)
        })
        .expect("fleetsim hub did not start")
}
