//! End to end: the dashboard in a tmux pseudo-terminal. `fleetsim run`: watches the jobs table
//! fill and the run finish, presses q, and finds the terminal restored and the results written.
//! `fleetsim hub --tui`: creates a job over REST, watches it complete, clicks its row, presses q
//! and finds the hub stopped. Needs tmux (`scripts/test.sh` installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::Duration;

use serde_json::json;

/// A private tmux server running one command in a pane, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a `width`×`height` pane of a new tmux server named after `tag`.
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("fleetsim-{tag}-{}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let started = tmux.cmd(&[
            "new-session",
            "-d",
            "-x",
            &w,
            "-y",
            &h,
            "-s",
            "run",
            command,
        ]);
        assert!(started.status.success(), "{started:?}");
        tmux
    }

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

    /// A tmux format variable of the pane, e.g. `#{mouse_any_flag}`.
    fn pane(&self, format: &str) -> String {
        let out = self.cmd(&["display-message", "-p", "-t", "run", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
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

    /// Clicks the left button on the screen cell (`column`, `row`), 0-based, as a terminal in
    /// SGR mouse mode reports it.
    fn click(&self, column: usize, row: usize) {
        for end in ['M', 'm'] {
            let report = format!("\x1b[<0;{};{}{end}", column + 1, row + 1);
            let hex: Vec<String> = report.bytes().map(|b| format!("{b:02x}")).collect();
            let mut args = vec!["send-keys", "-t", "run", "-H"];
            args.extend(hex.iter().map(String::as_str));
            self.cmd(&args);
        }
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
    let tmux = Tmux::start("tui", 100, 30, &command);

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
    let tmux = Tmux::start("tui-q", 80, 24, &command);
    tmux.wait_for("the reboot job", |s| s.contains("reboot"));
    assert_eq!(tmux.pane("#{mouse_any_flag}"), "1", "mouse reporting on");
    // Ctrl-C arrives as a key in raw mode and quits like q.
    tmux.cmd(&["send-keys", "-t", "run", "C-c"]);
    let screen = tmux.wait_for("fleetsim to exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(tmux.pane("#{mouse_any_flag}"), "0", "mouse reporting off");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["scenario"], "dashboard");
    let _ = std::fs::remove_dir_all(&out);
}

/// The screen cell (column, row) where `needle` starts, if it is on `screen`.
fn cell_of(screen: &str, needle: &str) -> Option<(usize, usize)> {
    screen.lines().enumerate().find_map(|(row, line)| {
        let i = line.find(needle)?;
        Some((line[..i].chars().count(), row))
    })
}

#[test]
fn hub_dashboard_shows_a_job_created_over_rest_and_q_stops_the_hub() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_fleetsim");
    let state = std::env::temp_dir().join(format!("fleetsim-test-tui-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let command = format!(
        "{bin} hub --scenario {} --no-jobs --http 127.0.0.1:{port} --https off --state-dir {} \
         --tui; echo EXIT=$?; sleep 60",
        root.join("tests/fixtures/valid/small.toml").display(),
        state.display()
    );
    let tmux = Tmux::start("tui-hub", 100, 30, &command);
    tmux.wait_for("the hub's dashboard", |s| {
        s.contains("scenario small") && s.contains("transport hub") && s.contains("300 devices")
    });
    assert_eq!(tmux.pane("#{mouse_any_flag}"), "1", "mouse reporting on");

    let token = Command::new(bin)
        .args(["connection-string", "--sas-token", "600", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap();
    let job = json!({
        "jobId": "rest-reboot", "type": "scheduleDeviceMethod",
        "queryCondition": "tags.building = '43'",
        "cloudToDeviceMethod": {"methodName": "reboot", "responseTimeoutInSeconds": 5},
        "maxExecutionTimeInSeconds": 60
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created = runtime
        .block_on(
            reqwest::Client::new()
                .put(format!(
                    "http://127.0.0.1:{port}/jobs/v2/rest-reboot?api-version=2021-04-12"
                ))
                .header("Authorization", token.trim())
                .json(&job)
                .send(),
        )
        .unwrap();
    assert_eq!(created.status(), 200, "{created:?}");

    let screen = tmux.wait_for("the job to complete", |s| {
        s.contains("job rest-reboot completed")
    });
    let (column, row) = cell_of(&screen, "rest-reboot").unwrap();
    assert!(
        screen.lines().nth(row).unwrap().contains("completed"),
        "{screen}"
    );
    assert!(screen.contains("latency: delivery · all jobs"), "{screen}");
    tmux.click(column + 2, row);
    tmux.wait_for("the click to select the job", |s| {
        s.contains("latency: delivery · rest-reboot") && s.contains("errors · rest-reboot")
    });

    tmux.cmd(&["send-keys", "-t", "run", "q"]);
    let screen = tmux.wait_for("the hub to exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("fleetsim hub: stopped"), "{screen}");
    assert_eq!(tmux.pane("#{mouse_any_flag}"), "0", "mouse reporting off");
    let _ = std::fs::remove_dir_all(&state);
}
