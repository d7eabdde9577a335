//! Merging the result directories of a sharded run (`fleetsim run --shard i/n` on each of `n`
//! machines) into one, exactly: the histograms are the sums of the shards' interval logs, bucket
//! for bucket, and every statistic is recomputed from them (percentiles are never averaged).
//!
//! What is added up: histograms, device counts, operations, outliers, the time series second
//! by second (each shard's seconds count from its own start). What is taken across shards: the
//! earliest start, the latest end, the longest elapsed time, and per job the longest makespan
//! (its rate is recomputed over it). A job's status is the shards' common status, or else the
//! first one that is not `completed`. Staged rollouts add up the same way (see
//! [`merged_rollouts`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use super::histogram::{new_histogram, HistogramStats};
use super::results::{
    read_interval_log, read_summary, read_timeseries, write_atomic, write_hgrm, write_summary,
    write_timeseries, MeasureStats, ResultsError, Summary, Throughput,
};
use super::tag::tag_for;
use super::{Measure, SecondRow};
use crate::report::{JobReport, RolloutReport, RolloutStatus, RunReport, Timing};
use crate::shard::Shard;

/// Why shard directories cannot be merged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MergeError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("nothing to merge: give the result directories of the shards")]
    NoDirs,
    #[error("{} is from scenario '{found}' but {} is from '{expected}': only shards of one scenario merge", dir.display(), first.display())]
    OtherScenario {
        dir: PathBuf,
        first: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{}: its scenario.toml differs from the one in {}: the shards ran different scenarios", dir.display(), first.display())]
    OtherScenarioText { dir: PathBuf, first: PathBuf },
    #[error("{}: not a shard (no \"shard\" in summary.json): run each part with --shard i/n", dir.display())]
    NotAShard { dir: PathBuf },
    #[error("{}: shard {found} does not belong with shard {expected} of {}", dir.display(), first.display())]
    OtherShardCount {
        dir: PathBuf,
        first: PathBuf,
        found: Shard,
        expected: Shard,
    },
    #[error("{}: shard {shard} is given twice (also {}): it would be counted twice", dir.display(), other.display())]
    Twice {
        dir: PathBuf,
        other: PathBuf,
        shard: Shard,
    },
    #[error("shard(s) {missing} of {count} are missing: a merge must have every shard")]
    Missing { missing: String, count: u32 },
}

/// One shard's result directory, read.
struct Part {
    dir: PathBuf,
    summary: Summary,
    shard: Shard,
    scenario_text: Option<String>,
}

/// Merges the shard directories `dirs` into `out` (created if missing): `summary.json`, the
/// `.hgrm` files, `histograms.hlog` (every shard's intervals), `timeseries.csv` and, when the
/// shards have one, `scenario.toml`. Returns the merged summary.
pub(crate) fn merge(dirs: &[PathBuf], out: &Path) -> Result<Summary, MergeError> {
    let parts = read_parts(dirs)?;
    let mut histograms: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut intervals = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let path = p.dir.join("histograms.hlog");
        for (tag, h) in read_interval_log(&path)? {
            let acc = histograms.entry(tag.clone()).or_insert_with(new_histogram);
            acc.add(&h).map_err(|e| ResultsError::BadInterval {
                path: path.clone(),
                index: 0,
                tag,
                message: format!("cannot add to the other shards: {e:?}"),
            })?;
        }
        let text = fs::read_to_string(&path).map_err(|source| ResultsError::Read {
            path: path.clone(),
            source,
        })?;
        for line in text.lines() {
            // The first shard's header (comments, start time, column names) heads the log.
            if i == 0 || !(line.starts_with('#') || line.starts_with('"')) {
                intervals.extend_from_slice(line.as_bytes());
                intervals.push(b'\n');
            }
        }
    }
    let mut rows: BTreeMap<u64, SecondRow> = BTreeMap::new();
    for p in &parts {
        for r in read_timeseries(&p.dir.join("timeseries.csv"))? {
            let acc = rows.entry(r.second).or_insert(SecondRow {
                second: r.second,
                ops_done: 0,
                ops_per_s: 0.0,
                in_flight: 0,
                failures: 0,
                connected: 0,
                faults: 0,
            });
            acc.ops_done += r.ops_done;
            acc.ops_per_s += r.ops_per_s;
            acc.in_flight += r.in_flight;
            acc.failures += r.failures;
            acc.connected += r.connected;
            // Every shard ran the same faults.
            acc.faults = acc.faults.max(r.faults);
        }
    }
    let rows: Vec<SecondRow> = rows.into_values().collect();
    let summary = merged_summary(&parts, &histograms, &rows);

    fs::create_dir_all(out).map_err(|source| ResultsError::Write {
        path: out.to_owned(),
        source,
    })?;
    write_summary(out, &summary)?;
    for m in Measure::ALL {
        let h = histograms
            .get(m.name())
            .cloned()
            .unwrap_or_else(new_histogram);
        write_hgrm(out, m, &h)?;
    }
    write_timeseries(out, &rows)?;
    write_atomic(&out.join("histograms.hlog"), &intervals)?;
    if let Some(text) = &parts[0].scenario_text {
        write_atomic(&out.join("scenario.toml"), text.as_bytes())?;
    }
    Ok(summary)
}

/// Reads every directory and checks that they are the distinct shards of one scenario.
fn read_parts(dirs: &[PathBuf]) -> Result<Vec<Part>, MergeError> {
    let mut parts: Vec<Part> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let summary = read_summary(dir)?;
        let shard = summary
            .run
            .shard
            .ok_or_else(|| MergeError::NotAShard { dir: dir.clone() })?;
        let path = dir.join("scenario.toml");
        let scenario_text = fs::read_to_string(&path).ok();
        if let Some(first) = parts.first() {
            let first_dir = first.dir.clone();
            if summary.run.scenario != first.summary.run.scenario {
                return Err(MergeError::OtherScenario {
                    dir: dir.clone(),
                    first: first_dir,
                    found: summary.run.scenario,
                    expected: first.summary.run.scenario.clone(),
                });
            }
            if scenario_text != first.scenario_text {
                return Err(MergeError::OtherScenarioText {
                    dir: dir.clone(),
                    first: first_dir,
                });
            }
            if shard.count != first.shard.count {
                return Err(MergeError::OtherShardCount {
                    dir: dir.clone(),
                    first: first_dir,
                    found: shard,
                    expected: first.shard,
                });
            }
        }
        if let Some(other) = parts.iter().find(|p| p.shard == shard) {
            return Err(MergeError::Twice {
                dir: dir.clone(),
                other: other.dir.clone(),
                shard,
            });
        }
        parts.push(Part {
            dir: dir.clone(),
            summary,
            shard,
            scenario_text,
        });
    }
    let count = parts.first().ok_or(MergeError::NoDirs)?.shard.count;
    let missing: Vec<String> = (0..count)
        .filter(|i| !parts.iter().any(|p| p.shard.index == *i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing {
            missing: missing.join(", "),
            count,
        });
    }
    Ok(parts)
}

/// The merged summary: statistics recomputed from the summed histograms.
fn merged_summary(
    parts: &[Part],
    histograms: &BTreeMap<String, Histogram<u64>>,
    rows: &[SecondRow],
) -> Summary {
    let summaries: Vec<&Summary> = parts.iter().map(|p| &p.summary).collect();
    let first = summaries[0];
    // Outliers are clamped into the histograms' top bucket; their count is carried as a sum.
    let outliers = |job: Option<&str>, m: Measure| -> u64 {
        summaries
            .iter()
            .filter_map(|s| match job {
                None => Some(s.histograms.get(m).outliers),
                Some(id) => s.job_histograms.get(id).map(|h| h.get(m).outliers),
            })
            .sum()
    };
    let stats = |job: Option<&str>| {
        let [engine_lag, delivery, round_trip, completion] = Measure::ALL.map(|m| {
            let tag = tag_for(job, m);
            let o = outliers(job, m);
            histograms.get(&tag).map_or(
                HistogramStats {
                    outliers: o,
                    ..Default::default()
                },
                |h| HistogramStats::of(h, o),
            )
        });
        MeasureStats {
            engine_lag,
            delivery,
            round_trip,
            completion,
        }
    };
    let mut job_ids: Vec<String> = Vec::new();
    for s in &summaries {
        for j in &s.run.jobs {
            if !job_ids.contains(&j.job_id) {
                job_ids.push(j.job_id.clone());
            }
        }
    }
    let jobs: Vec<JobReport> = job_ids
        .iter()
        .filter_map(|id| merged_job(id, &summaries))
        .collect();
    let job_histograms = job_ids
        .iter()
        .filter(|id| summaries.iter().any(|s| s.job_histograms.contains_key(*id)))
        .map(|id| (id.clone(), stats(Some(id))))
        .collect();
    let elapsed_s = summaries.iter().map(|s| s.elapsed_s).fold(0.0, f64::max);
    let sum = |f: fn(&Throughput) -> u64| summaries.iter().map(|s| f(&s.throughput)).sum::<u64>();
    let ops_total = sum(|t| t.ops_total);
    let ops_per_s_mean = if elapsed_s > 0.0 {
        ops_total as f64 / elapsed_s
    } else {
        0.0
    };
    // The last row is a partial second; the peak is over whole seconds.
    let whole = &rows[..rows.len().saturating_sub(1)];
    let ops_per_s_peak = if whole.is_empty() {
        ops_per_s_mean
    } else {
        whole.iter().map(|r| r.ops_per_s).fold(0.0, f64::max)
    };
    Summary {
        schema_version: first.schema_version,
        run: RunReport {
            scenario: first.run.scenario.clone(),
            seed: first.run.seed,
            complete: summaries.iter().all(|s| s.run.complete),
            started_at: summaries
                .iter()
                .map(|s| s.run.started_at.clone())
                .min()
                .unwrap_or_default(),
            ended_at: summaries
                .iter()
                .map(|s| s.run.ended_at.clone())
                .max()
                .unwrap_or_default(),
            devices: summaries.iter().map(|s| s.run.devices).sum(),
            jobs,
            rollouts: merged_rollouts(&summaries),
            faults: first.run.faults.clone(),
            shard: None,
            clock: first.run.clock,
            // The shards ran side by side: the whole took as long as the longest.
            timing: Timing::new(
                (summaries
                    .iter()
                    .map(|s| s.run.timing.simulated_s)
                    .fold(0.0, f64::max)
                    * 1e6) as u64,
                std::time::Duration::from_secs_f64(
                    summaries
                        .iter()
                        .map(|s| s.run.timing.wall_s)
                        .fold(0.0, f64::max),
                ),
            ),
            // Each shard judged its own fleet's clock: see the shards' own summaries.
            delivery_clock: None,
        },
        elapsed_s,
        histograms: stats(None),
        job_histograms,
        throughput: Throughput {
            ops_total,
            failures_total: sum(|t| t.failures_total),
            ops_dispatched: sum(|t| t.ops_dispatched),
            in_flight: sum(|t| t.in_flight),
            ops_per_s_mean,
            ops_per_s_peak,
        },
    }
}

/// Each rollout over the shards that played it (each over its own slice): counts added up;
/// per wave the earliest start, the latest end and the rates added (the shards dispatched side
/// by side); the longest makespan; the status of the worst shard (failed, then aborted) with
/// its reason.
fn merged_rollouts(summaries: &[&Summary]) -> Vec<RolloutReport> {
    let rank = |s: RolloutStatus| match s {
        RolloutStatus::Completed => 0,
        RolloutStatus::Aborted => 1,
        RolloutStatus::Failed => 2,
    };
    let mut out: Vec<RolloutReport> = Vec::new();
    for r in summaries.iter().flat_map(|s| &s.run.rollouts) {
        let Some(m) = out.iter_mut().find(|m| m.id == r.id) else {
            out.push(r.clone());
            continue;
        };
        if rank(r.status) > rank(m.status) {
            m.status = r.status;
            m.reason = r.reason.clone();
        }
        m.devices += r.devices;
        m.succeeded += r.succeeded;
        m.failed += r.failed;
        m.retried += r.retried;
        m.makespan_ms = m.makespan_ms.max(r.makespan_ms);
        for (i, w) in r.waves.iter().enumerate() {
            let Some(mw) = m.waves.get_mut(i) else {
                m.waves.push(w.clone());
                continue;
            };
            mw.devices += w.devices;
            mw.succeeded += w.succeeded;
            mw.failed += w.failed;
            mw.started_s = mw.started_s.min(w.started_s);
            mw.ended_s = match (mw.ended_s, w.ended_s) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            mw.rate_per_minute_at_end = match (mw.rate_per_minute_at_end, w.rate_per_minute_at_end)
            {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }
    out
}

/// Job `id` over every shard that ran it.
fn merged_job(id: &str, summaries: &[&Summary]) -> Option<JobReport> {
    let parts: Vec<&JobReport> = summaries
        .iter()
        .filter_map(|s| s.run.jobs.iter().find(|j| j.job_id == id))
        .collect();
    let first = *parts.first()?;
    let mut out = first.clone();
    out.statistics = Default::default();
    for p in &parts {
        let (a, b) = (&mut out.statistics, &p.statistics);
        a.device_count += b.device_count;
        a.failed_count += b.failed_count;
        a.succeeded_count += b.succeeded_count;
        a.running_count += b.running_count;
        a.pending_count += b.pending_count;
    }
    out.failures = Default::default();
    for (cause, n) in parts.iter().flat_map(|p| &p.failures) {
        *out.failures.entry(cause.clone()).or_default() += n;
    }
    if !parts.iter().all(|p| p.status == first.status) {
        if let Some(p) = parts.iter().find(|p| p.status != "completed") {
            out.status = p.status.clone();
        }
    }
    out.makespan_ms = parts.iter().map(|p| p.makespan_ms).fold(0.0, f64::max);
    let terminal = out.statistics.failed_count + out.statistics.succeeded_count;
    out.ops_per_s = if out.makespan_ms > 0.0 {
        terminal as f64 * 1000.0 / out.makespan_ms
    } else {
        0.0
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{results, JobSlot, Recorder, MAX_US};
    use crate::report::DeviceJobStatistics;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fleetsim-merge-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn report(shard: Option<Shard>, recorder: &Recorder, scenario: &str) -> RunReport {
        let jobs = recorder
            .jobs()
            .map(|(slot, id)| (id, recorder.totals(Some(slot))))
            .map(|(id, j)| JobReport {
                job_id: id.to_owned(),
                job_type: "scheduleDeviceMethod".into(),
                status: "completed".into(),
                statistics: DeviceJobStatistics {
                    device_count: j.done,
                    failed_count: j.failed,
                    succeeded_count: j.done - j.failed,
                    running_count: 0,
                    pending_count: 0,
                },
                makespan_ms: 4000.0,
                ops_per_s: j.done as f64 / 4.0,
                failures: Default::default(),
            })
            .collect();
        RunReport {
            scenario: scenario.into(),
            seed: 1,
            complete: true,
            started_at: "2025-01-02T03:04:05.678Z".into(),
            ended_at: "2025-01-02T03:04:10.178Z".into(),
            devices: recorder.totals(None).done,
            jobs,
            rollouts: Vec::new(),
            faults: Vec::new(),
            shard,
            clock: Default::default(),
            timing: Default::default(),
            delivery_clock: None,
        }
    }

    /// The same samples recorded by three shards (sample `i` in shard `i % 3`) and by one
    /// recorder; values from 1 µs to past the histogram maximum, over several seconds.
    fn recorders() -> (Vec<Recorder>, Recorder) {
        let mut shards: Vec<Recorder> = (0..3).map(|_| Recorder::new()).collect();
        let mut whole = Recorder::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for r in shards.iter_mut().chain([&mut whole]) {
            r.add_job("a");
            r.add_job("b.c");
        }
        for i in 0..6000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let now = i * 700;
            let job = JobSlot((i % 2) as u32);
            let values = Measure::ALL.map(|m| match (x >> (m.index() * 8)) % 100 {
                0 => MAX_US + x % 5000,
                1..=20 => x % 30_000_000,
                _ => x % 40_000,
            });
            for r in [&mut shards[(i % 3) as usize], &mut whole] {
                r.tick(now);
                r.op_dispatched(job);
                for m in Measure::ALL {
                    r.record(job, m, values[m.index()]);
                }
                r.op_done(job, now, i % 31 == 0);
            }
        }
        (shards, whole)
    }

    fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    #[test]
    fn merged_shards_equal_the_histogram_of_all_samples_bucket_for_bucket() {
        let (shards, whole) = recorders();
        let end = 4_500_000;
        let dirs: Vec<PathBuf> = shards
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let dir = temp(&format!("shard{i}"));
                let shard = Shard::new(i as u32, 3);
                results::write(&dir, &report(shard, r, "m"), r, end).unwrap();
                dir
            })
            .collect();
        let out = temp("out");
        let merged = merge(&dirs, &out).unwrap();

        let logged = read_interval_log(&out.join("histograms.hlog")).unwrap();
        let mut tags = 0;
        for slot in [None, Some(JobSlot(0)), Some(JobSlot(1))] {
            for m in Measure::ALL {
                let id = slot.map(|s| whole.job_id(s).to_owned());
                let expected = whole.histogram(slot, m);
                let got = &logged[&tag_for(id.as_deref(), m)];
                assert_eq!(buckets(got), buckets(&expected), "{id:?} {m}");
                assert_eq!(got.len(), 3000 * if slot.is_none() { 2 } else { 1 });
                tags += 1;
            }
        }
        assert_eq!(tags, 12);

        let direct = Summary::new(&report(None, &whole, "m"), &whole, end);
        assert_eq!(merged.histograms, direct.histograms);
        assert_eq!(merged.job_histograms, direct.job_histograms);
        assert_eq!(merged.throughput.ops_total, 6000);
        assert_eq!(merged.throughput.failures_total, whole.totals(None).failed);
        assert_eq!(
            merged.run.jobs[1].statistics.failed_count,
            whole.totals(Some(JobSlot(1))).failed
        );
        assert_eq!(merged.run.shard, None);
        assert_eq!(read_summary(&out).unwrap().run, merged.run);
        let rows = read_timeseries(&out.join("timeseries.csv")).unwrap();
        assert_eq!(rows.last().unwrap().ops_done, 6000);

        // A shard twice, a shard missing, another scenario: refused.
        let twice = [dirs[0].clone(), dirs[1].clone(), dirs[1].clone()];
        assert!(matches!(
            merge(&twice, &temp("x")),
            Err(MergeError::Twice { .. })
        ));
        let missing = merge(&dirs[..2], &temp("x")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "shard(s) 2 of 3 are missing: a merge must have every shard"
        );
        let other = temp("other");
        results::write(
            &other,
            &report(Shard::new(2, 3), &shards[2], "n"),
            &shards[2],
            end,
        )
        .unwrap();
        let e = merge(
            &[dirs[0].clone(), dirs[1].clone(), other.clone()],
            &temp("x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("from scenario 'n'"), "{e}");
        for d in dirs.iter().chain([&out, &other]) {
            let _ = fs::remove_dir_all(d);
        }
    }
}
