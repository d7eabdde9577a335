//! CI use, end to end through the binary: exit codes of broken thresholds, regressions and
//! invalid runs; junit.xml and summary.md; compare; shards and their exact merge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ci")
        .join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-ci-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `fleetsim ARGS`, with the shard environment cleared unless `env` sets it.
fn fleetsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    cmd.args(args)
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("FLEETSIM_SHARDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn run(scenario: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--no-tui",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    fleetsim(&args, &[])
}

/// The latency fixture with its device latency replaced, written to `dir`.
fn latency_scenario(dir: &Path, latency: &str, extra_threshold: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixture("latency.toml")).unwrap();
    let text = text
        .replace("value = \"10ms\"", &format!("value = \"{latency}\""))
        .replace(
            "[thresholds]\n",
            &format!("[thresholds]\n{extra_threshold}\n"),
        );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("latency-{latency}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A small XML well-formedness check (enough for what junit.xml uses): one declaration, then
/// elements that nest and close properly, quoted attributes, and no bare `<` or `&` in text or
/// attributes. Returns the (name, attributes text) of every start tag.
fn xml_elements(doc: &str) -> Vec<(String, String)> {
    let body = doc
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open]);
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{name}"
            );
            assert_eq!(
                attrs.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            check_text(&attrs.replace('"', ""));
            out.push((name.to_owned(), attrs.to_owned()));
            if !self_closing {
                stack.push(name.to_owned());
            }
        }
        rest = &rest[close + 1..];
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed {stack:?}");
    out
}

fn check_text(text: &str) {
    assert!(
        !text.contains('<') && !text.contains('>'),
        "bare markup in {text:?}"
    );
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
            "{entity}"
        );
    }
}

fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let at = attrs
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || attrs[..*i].ends_with(' '))?
        .0;
    let start = at + key.len();
    Some(&attrs[start..start + attrs[start..].find('"')?])
}

#[test]
fn a_broken_threshold_exits_2_and_aborts_early_with_ci_reports() {
    let out = temp_dir("broken");
    let o = run(&fixture("broken.toml"), &out, &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).contains("verdict: threshold broken (exit code 2)"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("abort_on_fail"));

    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["complete"], false, "abort_on_fail stopped the run");
    assert!(summary["throughput"]["ops_total"].as_u64().unwrap() < 1000);

    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let elements = xml_elements(&junit);
    let cases: Vec<&str> = elements
        .iter()
        .filter(|(n, _)| n == "testcase")
        .map(|(_, a)| attr(a, "name").unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "engine_lag.p99 &lt;= 1.00s",
            "job.reboot.failed_ratio &lt; 0.03",
            "delivery.p99 &lt; 10s"
        ]
    );
    assert_eq!(elements.iter().filter(|(n, _)| n == "failure").count(), 1);
    let root = &elements[0];
    assert_eq!(
        (
            root.0.as_str(),
            attr(&root.1, "tests"),
            attr(&root.1, "failures")
        ),
        ("testsuites", Some("3"), Some("1"))
    );

    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("threshold broken") && md.contains("| `job.reboot.failed_ratio` | `< 0.03` |"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn compare_reports_a_doubled_device_latency_as_a_regression() {
    let dir = temp_dir("compare");
    let (base, slow) = (dir.join("base"), dir.join("slow"));
    // In virtual time both runs give exact figures: the machine's own speed (engine lag in real
    // time varies between runs by milliseconds) cannot make or hide a regression here.
    let o = run(
        &latency_scenario(&dir, "100ms", ""),
        &base,
        &["--clock", "virtual"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    // The run itself, judged against the baseline right after it: exit 3, compare cases in junit.
    let o = run(
        &latency_scenario(&dir, "200ms", ""),
        &slow,
        &[
            "--baseline",
            base.to_str().unwrap(),
            "--tolerance",
            "10%",
            "--clock",
            "virtual",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    let junit = std::fs::read_to_string(slow.join("junit.xml")).unwrap();
    let elements = xml_elements(&junit);
    assert!(elements
        .iter()
        .any(|(n, a)| n == "testsuite" && attr(a, "name") == Some("fleetsim.compare")));
    assert!(elements
        .iter()
        .any(|(n, a)| n == "testcase" && attr(a, "name") == Some("reboot round_trip p50")));
    assert!(std::fs::read_to_string(slow.join("summary.md"))
        .unwrap()
        .contains("Compared with the baseline"));

    let o = fleetsim(
        &[
            "compare",
            base.to_str().unwrap(),
            slow.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(3));
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |job: Value, figure: &str| {
        c["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["job"] == job && r["figure"] == figure)
            .unwrap_or_else(|| panic!("no row {job} {figure}"))
            .clone()
    };
    let p50 = row(Value::Null, "round_trip p50");
    let ratio = p50["run"].as_f64().unwrap() / p50["baseline"].as_f64().unwrap();
    assert!(
        (1.8..=2.2).contains(&ratio),
        "round_trip p50 x{ratio}: {p50}"
    );
    assert_eq!(p50["regression"], true);
    assert_eq!(row(Value::from("reboot"), "makespan")["regression"], true);
    assert_eq!(
        row(Value::from("reboot"), "failed_ratio")["regression"],
        false
    );

    let md = fleetsim(
        &[
            "compare",
            base.to_str().unwrap(),
            slow.to_str().unwrap(),
            "--format",
            "md",
        ],
        &[],
    );
    assert!(
        stdout(&md).contains("| (all) | round_trip p50 |"),
        "{}",
        stdout(&md)
    );
    // Faster than the baseline, or the same run: no regression.
    let o = fleetsim(
        &["compare", slow.to_str().unwrap(), base.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("no regression"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_saturated_simulator_makes_an_invalid_run() {
    let dir = temp_dir("invalid");
    let o = run(
        &latency_scenario(&dir, "10ms", "engine_lag_limit = \"1us\""),
        &dir.join("out"),
        &[],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("INVALID: engine lag p99"),
        "{}",
        stdout(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_merge_into_the_whole_run_and_are_judged() {
    let dir = temp_dir("shards");
    let scenario = fixture("latency.toml");
    let mut dirs = Vec::new();
    for i in 0..3 {
        let out = dir.join(format!("shard-{i}"));
        // Shard 2 gets its slice the way a Kubernetes Indexed Job pod does.
        let o = if i == 2 {
            fleetsim(
                &[
                    "run",
                    "--no-tui",
                    scenario.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ],
                &[("JOB_COMPLETION_INDEX", "2"), ("FLEETSIM_SHARDS", "3")],
            )
        } else {
            run(&scenario, &out, &["--shard", &format!("{i}/3")])
        };
        // throughput.ops_total >= 2000 cannot hold in a third of the fleet: it is left to the merge.
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
        assert!(stdout(&o).contains("skipped"), "{}", stdout(&o));
        let s = json(&out.join("summary.json"));
        assert_eq!(
            (s["shard"]["index"].as_u64(), s["shard"]["count"].as_u64()),
            (Some(i), Some(3))
        );
        assert!((666..=667).contains(&s["devices"].as_u64().unwrap()));
        dirs.push(out);
    }
    let merged = dir.join("merged");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = fleetsim(&args, &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let s = json(&merged.join("summary.json"));
    assert_eq!(s["devices"], 2000);
    assert_eq!(s["throughput"]["ops_total"], 2000);
    assert_eq!(s["jobs"][0]["deviceJobStatistics"]["deviceCount"], 2000);
    assert!(s.get("shard").is_none());
    let schema = json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/summary.schema.json"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    for doc in [s, json(&dirs[0].join("summary.json"))] {
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert!(
        junit.contains("name=\"throughput.ops_total &gt;= 2000\"/>"),
        "{junit}"
    );

    // A shard given twice is refused.
    let o = fleetsim(
        &[
            "merge",
            dirs[0].to_str().unwrap(),
            dirs[0].to_str().unwrap(),
            "--out",
            dir.join("x").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("given twice"));
    let _ = std::fs::remove_dir_all(&dir);
}
