//! End to end: `fleetsim run` with its dashboard in a tmux pseudo-terminal. Watches the jobs
//! table fill and the run finish, presses q, and finds the terminal restored and the results
//! written. Needs tmux (`scripts/test.sh` installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::Duration;

/// A private tmux server, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is needed for this test: apt-get install -y tmux (scripts/test.sh does)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "run"]).stdout).into_owned()
    }

    /// Polls the screen until `done` holds, for up to a minute.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        for _ in 0..600 {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; the screen:\n{}",
            self.screen()
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn dashboard_shows_the_run_and_quits_with_results_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("fleetsim-test-tui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let command = format!(
        "{} run --out {} {}; echo EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_fleetsim"),
        out.display(),
        root.join("tests/fixtures/valid/dashboard.toml").display()
    );
    let tmux = Tmux {
        socket: format!("fleetsim-tui-{}", std::process::id()),
    };
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        "run",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");

    let screen = tmux.wait_for("the jobs table", |s| {
        s.contains("scenario dashboard") && s.contains("reboot") && s.contains("fw-2")
    });
    assert!(screen.contains("seed 7"), "{screen}");
    assert!(screen.contains("transport in-process"), "{screen}");
    let screen = tmux.wait_for("the run to finish", |s| s.contains("FINISHED"));
    assert!(screen.contains("completed"), "{screen}");
    assert!(screen.contains("results written to"), "{screen}");
    assert!(
        out.join("summary.json").is_file(),
        "written before the dashboard says so"
    );

    tmux.cmd(&["send-keys", "-t", "run", "q"]);
    let screen = tmux.wait_for("fleetsim to exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    // The terminal is back to normal: the final table printed after the dashboard.
    assert!(screen.contains("results: "), "{screen}");
    assert!(out.join("summary.json").is_file());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["jobs"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn q_stops_the_run_early_and_results_are_still_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("fleetsim-test-tui-q-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let command = format!(
        "{} run --out {} {}; echo EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_fleetsim"),
        out.display(),
        root.join("tests/fixtures/valid/dashboard.toml").display()
    );
    let tmux = Tmux {
        socket: format!("fleetsim-tui-q-{}", std::process::id()),
    };
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "-s",
        "run",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    tmux.wait_for("the reboot job", |s| s.contains("reboot"));
    // Ctrl-C arrives as a key in raw mode and quits like q.
    tmux.cmd(&["send-keys", "-t", "run", "C-c"]);
    let screen = tmux.wait_for("fleetsim to exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["scenario"], "dashboard");
    let _ = std::fs::remove_dir_all(&out);
}
