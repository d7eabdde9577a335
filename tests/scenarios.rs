//! Scenario fixtures: every file in tests/fixtures/valid parses; every file in
//! tests/fixtures/invalid fails with the message (and position) its first line expects, both
//! through the library and through `fleetsim validate`, which exits 1 without panicking.

use std::path::Path;
use std::process::Command;

fn fixtures(kind: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn valid_fixtures_parse() {
    for f in fixtures("valid") {
        fleetsim::scenario::load(&f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
    }
}

#[test]
fn invalid_fixtures_fail_with_their_expected_message() {
    for f in fixtures("invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ")
            .trim_end();
        let err = fleetsim::scenario::load(&f).unwrap_err().to_string();
        assert!(err.starts_with(&f.display().to_string()), "{err}");
        assert!(
            err.contains(expect),
            "{}: {err:?} lacks {expect:?}",
            f.display()
        );

        let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .arg("validate")
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", f.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expect) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn shipped_scenarios_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for e in std::fs::read_dir(dir).unwrap() {
        let f = e.unwrap().path();
        fleetsim::scenario::load(&f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
    }
}

#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args([
            "query",
            "scenarios/million.toml",
            "SELECT deviceId FROM devices",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fleetsim starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first row");
    assert!(first.contains("deviceId"), "{first}");
    // The reader is gone (like `| head -1`): the rest of the million rows meet a closed pipe.
    let out = child.wait_with_output().expect("fleetsim ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
