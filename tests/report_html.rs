//! The HTML reports in a real browser: headless Chromium loads a run's `report.html`, a
//! comparison (`fleetsim report A B`) and a sweep's page (`fleetsim sweep`) with the network
//! off, and the tests read back the DOM the page's script built, the browser's console, and a
//! screenshot.
//!
//! `scripts/test.sh` installs Debian's chromium and sets FLEETSIM_SDK_TESTS=1, which makes
//! these tests mandatory; a bare `cargo test` without chromium skips them with a note.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const CHROMIUM: &str = "chromium";

/// Whether the tests run: chromium is there, or they are mandatory (then its absence fails).
fn browser() -> bool {
    let present = Command::new(CHROMIUM)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present && std::env::var_os("FLEETSIM_SDK_TESTS").is_none() {
        println!("skipped: chromium is not installed (scripts/test.sh installs it)");
        return false;
    }
    assert!(present, "chromium is needed: apt-get install chromium");
    true
}

fn fleetsim(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(args)
        .output()
        .expect("fleetsim starts");
    assert!(
        out.status.success(),
        "fleetsim {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two runs of the quickstart (seeds 7 and 9), their comparison and a sweep, made once for
/// every test of this file.
fn pages() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fleetsim-html-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = |p: &str| dir.join(p).display().to_string();
        let q = "scenarios/quickstart.toml";
        fleetsim(&["run", q, "--clock", "virtual", "--no-tui", "--out", &s("a")]);
        let b = ["run", q, "--clock", "virtual", "--no-tui", "--seed", "9"];
        fleetsim(&[&b[..], &["--out", &s("b")]].concat());
        fleetsim(&["report", &s("a"), &s("b"), "--out", &s("compare.html")]);
        fleetsim(&[
            "sweep",
            q,
            "--set",
            "hub.tier=S1,S3",
            "--set",
            "hub.units=1,2",
            "--target",
            "completion.p99 < 2s",
            "--out",
            &s("sweep"),
        ]);
        dir
    })
}

/// Chromium's flags: headless, no network at all (every host name unresolvable, no proxy,
/// nothing in the background), console messages on stderr.
fn chromium(profile: &Path, extra: &[String], page: &Path) -> Output {
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()));
    let out = cmd.output().expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The page's DOM after its script ran, having checked that the browser's console stayed
/// silent (no error, no warning, no refused load: the page logs nothing when all is well) and
/// that the page reported no error of its own.
fn dom(page: &Path) -> String {
    let profile = page.with_extension("profile");
    let out = chromium(&profile, &["--dump-dom".to_owned()], page);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "{}: console: {console:#?}",
        page.display()
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the script did not finish: {dom:.2000}"
    );
    assert!(
        !dom.contains("id=\"page-error\""),
        "the page reported an error: {dom:.4000}"
    );
    dom
}

/// A screenshot of `page`, checked not blank: a blank page of the same size compresses to a
/// few KB, a drawn one to many times more.
fn screenshot(page: &Path, png: &Path) {
    let blank = png.with_extension("blank.png");
    let shoot = |target: &Path, file: &Path| {
        let profile = file.with_extension("profile");
        chromium(
            &profile,
            &[format!("--screenshot={}", file.display())],
            target,
        );
        std::fs::metadata(file)
            .expect("a screenshot was written")
            .len()
    };
    let empty = png.with_extension("empty.html");
    std::fs::write(&empty, "<!doctype html><title>empty</title>").unwrap();
    let (drawn, nothing) = (shoot(page, png), shoot(&empty, &blank));
    assert!(
        drawn > 5 * nothing && drawn > 50_000,
        "{} looks blank: {drawn} bytes against {nothing} for an empty page",
        png.display()
    );
}

/// What every page must be: loads nothing (no URL in a src, no stylesheet link, the CSP
/// allowing nothing but inline code), charts drawn with axis labels and legends.
fn check_self_contained(html: &str) {
    assert!(html.contains("default-src 'none'"));
    for needle in ["src=\"http", "<link", "@import", "url(http"] {
        assert!(
            !html.contains(needle),
            "the page would load something: {needle}"
        );
    }
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[test]
fn a_run_report_draws_its_verdict_tables_and_charts() {
    if !browser() {
        return;
    }
    let page = pages().join("a/report.html");
    check_self_contained(&std::fs::read_to_string(&page).unwrap());
    let dom = dom(&page);
    assert!(dom.contains("Verdict: passed"), "verdict at the top");
    for job in ["reboot-b43-f3", "firmware-b44"] {
        assert!(dom.contains(job), "job {job} in the tables");
    }
    // Four spectra, throughput, progress: six charts, each a canvas with axes and a legend.
    assert!(count(&dom, "class=\"uplot") >= 6, "charts drawn");
    assert!(count(&dom, "<canvas") >= 6);
    // uPlot draws axes on the canvas; each chart names its axes for screen readers.
    for axes in [
        "delivery latency: latency against percentile",
        "completion latency: latency against percentile",
        "Throughput, failures and operations in flight: operations per second and in flight \
         against time since start",
        "Each job's devices ended (cumulative): devices against time since start",
    ] {
        assert!(
            dom.contains(&format!("aria-label=\"{axes}\"")),
            "axes: {axes}"
        );
    }
    for legend in [
        "all jobs",
        "ops/s",
        "failures/s",
        "in flight",
        "reboot-b43-f3 succeeded",
    ] {
        assert!(
            dom.contains(&format!(">{legend}<")),
            "legend entry {legend}"
        );
    }
    assert!(dom.contains("99.9%"), "percentile ticks");
    assert!(dom.contains("Failures by cause"));
    assert!(dom.contains("504101 GatewayTimeout") || dom.contains("device status 500"));
    screenshot(&page, &pages().join("run.png"));
}

#[test]
fn a_comparison_overlays_runs_and_marks_changes() {
    if !browser() {
        return;
    }
    let page = pages().join("compare.html");
    check_self_contained(&std::fs::read_to_string(&page).unwrap());
    let dom = dom(&page);
    assert!(dom.contains("Comparison of 2 runs"));
    assert!(
        dom.contains(">a<") && dom.contains(">b<"),
        "both runs named"
    );
    assert!(count(&dom, "class=\"uplot") >= 4, "spectra and throughput");
    assert!(dom.contains("reboot-b43-f3"));
    assert!(
        dom.contains("class=\"better\"") || dom.contains("class=\"worse\""),
        "changes against the first run are coloured"
    );
    screenshot(&page, &pages().join("compare.png"));
}

#[test]
fn a_sweep_page_tables_the_combinations_and_plots_them() {
    if !browser() {
        return;
    }
    let dir = pages().join("sweep");
    for f in ["sweep.csv", "sweep.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        5,
        "a header and four combinations: {csv}"
    );
    assert!(csv.starts_with("hub.tier,hub.units,"));
    let page = dir.join("report.html");
    check_self_contained(&std::fs::read_to_string(&page).unwrap());
    let dom = dom(&page);
    assert!(dom.contains("Sweep of quickstart"));
    assert!(
        dom.contains("smallest: hub.tier = S1, hub.units = 1"),
        "the smallest hub named"
    );
    assert!(
        count(&dom, "class=\"uplot") >= 3,
        "figures against the swept values"
    );
    assert!(
        dom.contains("aria-label=\"mean ops/s: operations per second against hub.units\""),
        "x axis: the last numeric key"
    );
    assert!(
        dom.contains(">hub.tier=S1<") && dom.contains(">hub.tier=S3<"),
        "one line per tier"
    );
    assert!(
        dom.contains("01_hub.tier=S1_hub.units=1/report.html"),
        "links to each run"
    );
    screenshot(&page, &pages().join("sweep.png"));
}

#[test]
fn report_refuses_a_directory_that_is_not_a_result() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["report", "scenarios"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scenarios: not a fleetsim result directory"),
        "{err}"
    );
}

#[test]
fn sweep_refuses_an_unknown_key_before_running_anything() {
    let out_dir = std::env::temp_dir().join(format!("fleetsim-sweep-bad-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args([
            "sweep",
            "scenarios/quickstart.toml",
            "--set",
            "hub.units=1,2",
        ])
        .args(["--set", "cohort.nobody.count=5", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--set cohort.nobody.count: no [[cohort]] with name 'nobody'"),
        "{err}"
    );
    assert!(!out_dir.exists(), "nothing ran");
}

/// Ctrl-C during a sweep: the combinations under way stop, the finished ones are written.
#[test]
fn an_interrupted_sweep_keeps_its_finished_rows() {
    use std::io::{BufRead, BufReader};
    let out_dir = std::env::temp_dir().join(format!("fleetsim-sweep-int-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["sweep", "scenarios/rollout-100k.toml", "--parallel", "1"])
        .args(["--set", "hub.units=1,2,3,4,5,6,7,8", "--out"])
        .arg(&out_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let first_done = line.contains("(1 finished, 7 left)");
        seen.push(line);
        if first_done {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("(1 finished")), "{seen:#?}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:#?}");
    let csv = std::fs::read_to_string(out_dir.join("sweep.csv")).unwrap();
    let rows = csv.lines().count() - 1;
    assert!((1..8).contains(&rows), "finished rows only: {csv}");
    assert!(out_dir.join("report.html").is_file());
    assert!(rest
        .iter()
        .any(|l| l.starts_with(&format!("sweep: {rows} of 8 combinations"))));
    let _ = std::fs::remove_dir_all(&out_dir);
}
