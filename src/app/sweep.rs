//! `fleetsim sweep SCENARIO --set KEY=V1,V2 ...`: runs a scenario for every combination of the
//! values given (their cartesian product, the last key varying fastest), several at once in
//! virtual time, and writes what each gave side by side: `sweep.csv`, `sweep.json`, a
//! `report.html` with the figures against the swept values, and each combination's own result
//! directory. Every combination's scenario is made and checked before anything runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::run::{run_until, Progress, RunOptions};
use crate::clock::{ClockMode, Stopwatch};
use crate::html::{self, SweepData, SweepRow};
use crate::hub::throttle::Tier;
use crate::metrics::results::write_atomic;
use crate::scenario::format::Transport;
use crate::scenario::{self, overrides, Scenario};
use crate::shard::Shard;
use crate::units::{fmt_secs, fmt_us};
use crate::verdict::thresholds::Threshold;
use crate::verdict::Exit;

/// What `fleetsim sweep` was asked to do.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Each key with the values it takes, in the order given.
    pub sets: Vec<(String, Vec<String>)>,
    /// Real or virtual time; None: virtual unless the scenario's transport is MQTT.
    pub clock: Option<ClockMode>,
    /// The sweep's directory (default `results/<scenario>/<UTC timestamp>-sweep/`).
    pub out: Option<PathBuf>,
    /// A threshold expression (`"rollout.fw-2-1.makespan < 8h"`) the combinations are held to.
    pub target: Option<String>,
    /// Runs at once (default: the machine's cores, one in real time).
    pub parallel: Option<usize>,
}

/// One combination, ready to run.
struct Plan {
    values: Vec<String>,
    text: String,
    scenario: Scenario,
    /// Its result directory's name inside the sweep's.
    dir: String,
}

/// Parses `KEY=V1,V2,...`.
pub fn parse_set(arg: &str) -> Result<(String, Vec<String>), String> {
    let (key, values) = arg
        .split_once('=')
        .ok_or_else(|| format!("'{arg}' is not KEY=V1,V2,...: such as hub.units=1,2,4"))?;
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
    if key.trim().is_empty() || values.iter().any(String::is_empty) {
        return Err(format!(
            "'{arg}': a key and non-empty values are needed (hub.units=1,2,4)"
        ));
    }
    Ok((key.trim().to_owned(), values))
}

/// Parses a `--target` expression: a `[thresholds]` key, then its condition.
fn parse_target(expr: &str) -> anyhow::Result<Threshold> {
    let expr = expr.trim();
    let split = expr
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '=' | '!'))
        .with_context(|| {
            format!("--target '{expr}': give a figure and a condition, such as 'rollout.fw.makespan < 8h'")
        })?;
    let (key, condition) = expr.split_at(split);
    Threshold::parse(key, condition.trim()).map_err(|e| anyhow::anyhow!("--target '{expr}': {e}"))
}

/// Every combination of `sets`' values, the last key varying fastest.
fn combinations(sets: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    sets.iter().fold(vec![Vec::new()], |acc, (_, values)| {
        acc.iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect()
    })
}

/// A directory name for combination `index` with `values`.
fn dir_name(index: usize, keys: &[String], values: &[String]) -> String {
    let mut name = format!("{:02}", index + 1);
    for (k, v) in keys.iter().zip(values) {
        let _ = write!(name, "_{k}={v}");
    }
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '=' | '-' | '_' | '+' => c,
            _ => '_',
        })
        .collect()
}

/// How much hub a scenario asks for, smallest first: the tier, then its units.
fn hub_size(s: &Scenario) -> (u8, u32) {
    let rank = match s.hub.tier.0 {
        Tier::F1 => 0,
        Tier::S1 => 1,
        Tier::S2 => 2,
        Tier::S3 => 3,
        Tier::Unlimited => 4,
    };
    (rank, s.hub.units)
}

/// `fleetsim sweep`.
pub(crate) fn command(opts: &SweepOptions) -> anyhow::Result<Exit> {
    anyhow::ensure!(
        !opts.sets.is_empty(),
        "give at least one --set KEY=V1,V2,... (such as --set hub.units=1,2,4)"
    );
    let keys: Vec<String> = opts.sets.iter().map(|(k, _)| k.clone()).collect();
    if let Some(k) = keys
        .iter()
        .enumerate()
        .find_map(|(i, k)| keys[..i].contains(k).then_some(k))
    {
        anyhow::bail!("--set {k} is given twice: give its values once, comma-separated");
    }
    let file = opts.scenario.display().to_string();
    let text = std::fs::read_to_string(&opts.scenario)
        .with_context(|| format!("cannot read scenario {file}"))?;
    let base = scenario::parse(&text, &file)?;
    let target = opts.target.as_deref().map(parse_target).transpose()?;
    let plans = combinations(&opts.sets)
        .into_iter()
        .enumerate()
        .map(|(i, values)| {
            let sets: Vec<(String, String)> =
                keys.iter().cloned().zip(values.iter().cloned()).collect();
            let (text, scenario) = overrides::apply(&text, &file, &sets)?;
            Ok(Plan {
                dir: dir_name(i, &keys, &values),
                values,
                text,
                scenario,
            })
        })
        .collect::<anyhow::Result<Vec<Plan>>>()?;

    let clock = opts.clock.unwrap_or(match base.hub.transport {
        Transport::Mqtt => ClockMode::Real,
        Transport::Inproc => ClockMode::Virtual,
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = opts
        .parallel
        .unwrap_or(if clock == ClockMode::Real { 1 } else { cores })
        .clamp(1, plans.len());
    let out = opts.out.clone().unwrap_or_else(|| {
        let dir = scenario::default_out_dir(&base, time::OffsetDateTime::now_utc());
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        dir.with_file_name(format!("{}-sweep", name.unwrap_or_default()))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!(
        "sweep: {} combinations of {} in {} time, {} at once, into {}",
        plans.len(),
        keys.join(", "),
        if clock == ClockMode::Virtual {
            "virtual"
        } else {
            "real"
        },
        parallel,
        out.display()
    );

    let shutdown = CancellationToken::new();
    let watching = super::watch_signals(shutdown.clone())?;
    let stopwatch = Stopwatch::start();
    let rows: Mutex<Vec<Option<SweepRow>>> = Mutex::new(vec![None; plans.len()]);
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    let (next, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= plans.len() || shutdown.is_cancelled() {
                    return;
                }
                let plan = &plans[i];
                let label = describe(&keys, &plan.values);
                eprintln!("sweep [{}/{}] running {label}", i + 1, plans.len());
                match run_one(plan, &out, clock, target.as_ref(), shutdown.clone()) {
                    Ok(Some(row)) => {
                        let done = finished.fetch_add(1, Ordering::SeqCst) + 1;
                        eprintln!(
                            "sweep [{}/{}] {label}: {} ({} finished, {} left)",
                            i + 1,
                            plans.len(),
                            row.verdict,
                            done,
                            plans.len() - done
                        );
                        if let Ok(mut rows) = rows.lock() {
                            rows[i] = Some(row);
                        }
                    }
                    Ok(None) => eprintln!(
                        "sweep [{}/{}] {label}: interrupted, not kept",
                        i + 1,
                        plans.len()
                    ),
                    Err(e) => {
                        shutdown.cancel();
                        if let Ok(mut errors) = errors.lock() {
                            errors.push(e.context(format!("sweep: {label}")));
                        }
                    }
                }
            });
        }
    });
    watching.cancel();

    let rows = rows.into_inner().unwrap_or_default();
    let done: Vec<(&Plan, SweepRow)> = plans
        .iter()
        .zip(rows)
        .filter_map(|(p, r)| Some((p, r?)))
        .collect();
    let smallest = done
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.target_met == Some(true))
        .min_by_key(|(i, (p, _))| (hub_size(&p.scenario), *i))
        .map(|(i, _)| i);
    let data = SweepData {
        scenario: base.name.clone(),
        keys: keys.clone(),
        target: opts.target.clone(),
        rows: done.iter().map(|(_, r)| r.clone()).collect(),
        smallest,
    };
    write_outputs(&out, &data)?;
    print!("{}", table(&data));
    eprintln!(
        "sweep: {} of {} combinations in {:.1} s; wrote {}",
        data.rows.len(),
        plans.len(),
        stopwatch.elapsed().as_secs_f64(),
        out.join(html::FILE_NAME).display()
    );
    if let Some(e) = errors.into_inner().unwrap_or_default().into_iter().next() {
        return Err(e);
    }
    Ok(match (&target, smallest) {
        (Some(_), None) => Exit::Broken,
        _ => Exit::Pass,
    })
}

/// `hub.tier=S3 hub.units=4`.
fn describe(keys: &[String], values: &[String]) -> String {
    keys.iter()
        .zip(values)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs one combination into `out/<its dir>` and judges it; `None` when `shutdown` stopped it.
fn run_one(
    plan: &Plan,
    out: &Path,
    clock: ClockMode,
    target: Option<&Threshold>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SweepRow>> {
    let dir = out.join(&plan.dir);
    let opts = RunOptions {
        seed: None,
        out: Some(dir.clone()),
        progress: Progress::Quiet,
        mqtt: Default::default(),
        state_dir: PathBuf::from(super::DEFAULT_STATE_DIR),
        keep_state: false,
        shard: Shard::ALL,
        scenario_text: Some(plan.text.clone()),
        clock: Some(clock),
        speed: None,
    };
    run_until(&plan.scenario, &opts, shutdown.clone())?;
    if shutdown.is_cancelled() {
        return Ok(None);
    }
    let verdict = super::report::judge(&dir, &plan.scenario.thresholds, None)?;
    let mut row = SweepRow::new(plan.values.clone(), plan.dir.clone(), &verdict);
    row.target_met = target.map(|t| t.figure.value(&verdict.summary).is_some_and(|v| t.holds(v)));
    Ok(Some(row))
}

/// Writes `sweep.csv`, `sweep.json` and `report.html` into `out`.
fn write_outputs(out: &Path, data: &SweepData) -> anyhow::Result<()> {
    write_atomic(&out.join("sweep.json"), &serde_json::to_vec_pretty(data)?)?;
    write_atomic(&out.join("sweep.csv"), csv(data).as_bytes())?;
    write_atomic(
        &out.join(html::FILE_NAME),
        html::sweep_page(data)?.as_bytes(),
    )?;
    Ok(())
}

/// The rollouts, then the jobs, that any row has.
fn columns(data: &SweepData) -> (Vec<String>, Vec<String>) {
    let mut rollouts: Vec<String> = Vec::new();
    let mut jobs: Vec<String> = Vec::new();
    for r in &data.rows {
        for id in r.rollouts.keys() {
            if !rollouts.contains(id) {
                rollouts.push(id.clone());
            }
        }
        for id in r.jobs.keys() {
            if !jobs.contains(id) {
                jobs.push(id.clone());
            }
        }
    }
    (rollouts, jobs)
}

/// A CSV field, quoted when it must be.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `sweep.csv`: one row per combination.
fn csv(data: &SweepData) -> String {
    let (rollouts, jobs) = columns(data);
    let mut head: Vec<String> = data.keys.clone();
    for (kind, ids) in [("rollout", &rollouts), ("job", &jobs)] {
        for id in ids {
            for f in ["makespan_s", "failed_share", "status"] {
                head.push(format!("{kind}.{id}.{f}"));
            }
        }
    }
    head.extend(
        [
            "delivery_p50_ms",
            "delivery_p99_ms",
            "completion_p50_ms",
            "completion_p99_ms",
            "ops_per_s_mean",
            "verdict",
            "target_met",
            "dir",
        ]
        .map(str::to_owned),
    );
    let mut out = head.iter().map(|h| field(h)).collect::<Vec<_>>().join(",") + "\n";
    for r in &data.rows {
        let mut cells: Vec<String> = r.values.clone();
        for (map, ids) in [(&r.rollouts, &rollouts), (&r.jobs, &jobs)] {
            for id in ids {
                match map.get(id) {
                    Some(e) => cells.extend([
                        format!("{:.3}", e.makespan_s),
                        format!("{:.6}", e.failed_share),
                        e.status.clone(),
                    ]),
                    None => cells.extend([String::new(), String::new(), String::new()]),
                }
            }
        }
        cells.extend([
            format!("{:.3}", r.delivery_p50_ms),
            format!("{:.3}", r.delivery_p99_ms),
            format!("{:.3}", r.completion_p50_ms),
            format!("{:.3}", r.completion_p99_ms),
            format!("{:.3}", r.ops_per_s_mean),
            r.verdict.clone(),
            r.target_met.map_or(String::new(), |m| m.to_string()),
            r.dir.clone(),
        ]);
        out += &(cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}

/// The table printed at the end: the values, each rollout's makespan and failed share (each
/// job's when there is no rollout), completion p99, the verdict and the target.
fn table(data: &SweepData) -> String {
    let (rollouts, jobs) = columns(data);
    let (ids, use_rollouts) = if rollouts.is_empty() {
        (jobs, false)
    } else {
        (rollouts, true)
    };
    let mut head: Vec<String> = data.keys.clone();
    for id in &ids {
        head.push(format!("{id} makespan"));
        head.push("failed".to_owned());
    }
    head.extend(["completion p99", "verdict"].map(str::to_owned));
    if data.target.is_some() {
        head.push("target".to_owned());
    }
    let mut rows = vec![head];
    for (i, r) in data.rows.iter().enumerate() {
        let mut cells = r.values.clone();
        for id in &ids {
            let e = if use_rollouts {
                r.rollouts.get(id)
            } else {
                r.jobs.get(id)
            };
            cells.push(e.map_or("-".to_owned(), |e| fmt_secs((e.makespan_s * 1e6) as u64)));
            cells.push(e.map_or("-".to_owned(), |e| {
                format!("{:.2}%", e.failed_share * 100.0)
            }));
        }
        cells.push(fmt_us((r.completion_p99_ms * 1e3) as u64));
        cells.push(r.verdict.clone());
        if data.target.is_some() {
            cells.push(match (r.target_met, data.smallest == Some(i)) {
                (Some(true), true) => "met (smallest)".to_owned(),
                (Some(true), false) => "met".to_owned(),
                _ => "not met".to_owned(),
            });
        }
        rows.push(cells);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    if let Some(target) = &data.target {
        match data.smallest.map(|i| &data.rows[i]) {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "smallest hub that meets '{target}': {}",
                    describe(&data.keys, &r.values)
                );
            }
            None => {
                let _ = writeln!(out, "no combination meets '{target}'");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_and_combine_last_key_fastest() {
        let a = parse_set("hub.tier=S2,S3").unwrap();
        let b = parse_set("hub.units= 1, 2").unwrap();
        assert_eq!(
            b,
            ("hub.units".to_owned(), vec!["1".to_owned(), "2".to_owned()])
        );
        let c = combinations(&[a, b]);
        assert_eq!(c, [["S2", "1"], ["S2", "2"], ["S3", "1"], ["S3", "2"]]);
        assert!(parse_set("hub.units").unwrap_err().contains("KEY=V1,V2"));
        assert!(parse_set("hub.units=1,,2").is_err());
    }

    #[test]
    fn targets_take_the_thresholds_grammar() {
        let t = parse_target("rollout.fw.makespan < 8h").unwrap();
        assert!(t.holds(7.0 * 3600e6) && !t.holds(9.0 * 3600e6));
        let err = parse_target("rollout.fw.nope < 1").unwrap_err().to_string();
        assert!(err.starts_with("--target 'rollout.fw.nope < 1'"), "{err}");
    }

    #[test]
    fn directory_names_keep_the_values_and_nothing_unsafe() {
        let keys = ["hub.tier".to_owned(), "job.j.start".to_owned()];
        let name = dir_name(2, &keys, &["S3".to_owned(), "+1m/x".to_owned()]);
        assert_eq!(name, "03_hub.tier=S3_job.j.start=+1m_x");
    }
}
