//! The data a page shows, as the page's script reads it: built from a result directory's files
//! (`summary.json`, `histograms.hlog`, `timeseries.csv`, `job_progress.json`) and a verdict.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{check_result_dir, HtmlError};
use crate::metrics::results::{
    read_interval_log, read_job_progress, read_timeseries, JobProgress, Summary,
};
use crate::metrics::tag::parse_tag;
use crate::metrics::Measure;
use crate::verdict::compare::Row;
use crate::verdict::thresholds::Outcome;
use crate::verdict::Verdict;

/// Points of a percentile spectrum per decade of `1 / (1 - p)`.
const POINTS_PER_DECADE: u32 = 10;
/// The spectrum ends at 99.9999 % (`1 / (1 - p)` = 10⁶).
const DECADES: u32 = 6;

/// One run as a page shows it.
#[derive(Debug, Serialize)]
pub(crate) struct RunData {
    /// What the run goes by on the page (its directory's name).
    pub(crate) label: String,
    /// `summary.json` as written.
    pub(crate) summary: Summary,
    verdict: VerdictData,
    /// Per measure name: the overall spectrum and each job's.
    spectra: BTreeMap<&'static str, Spectra>,
    timeseries: Timeseries,
    /// Each job's cumulative `[second, succeeded, failed]`.
    progress: JobProgress,
}

/// The verdict's parts a page shows.
#[derive(Debug, Serialize)]
struct VerdictData {
    headline: &'static str,
    exit_code: u8,
    invalid: Option<String>,
    thresholds: Vec<Outcome>,
    /// Rows of the baseline comparison, when the run had one.
    comparison: Vec<Row>,
}

/// A measure's spectra: latency (ms) at `1 / (1 - p)` = 10^(k / [`POINTS_PER_DECADE`]), k from
/// 0; `None` past what the samples can tell (`1 / (1 - p)` above their count).
#[derive(Debug, Default, Serialize)]
struct Spectra {
    all: Vec<Option<f64>>,
    jobs: BTreeMap<String, Vec<Option<f64>>>,
}

/// `timeseries.csv` by column.
#[derive(Debug, Default, Serialize)]
struct Timeseries {
    second: Vec<u64>,
    ops_per_s: Vec<f64>,
    in_flight: Vec<u64>,
    failures: Vec<u64>,
    connected: Vec<u64>,
}

impl RunData {
    /// The run in `dir`, judged by `verdict`, shown as `label`.
    pub(crate) fn read(dir: &Path, label: String, verdict: &Verdict) -> Result<RunData, HtmlError> {
        check_result_dir(dir)?;
        let mut spectra: BTreeMap<&'static str, Spectra> = BTreeMap::new();
        for (tag, h) in read_interval_log(&dir.join("histograms.hlog"))? {
            let Some((job, measure)) = parse_tag(&tag) else {
                continue;
            };
            let entry = spectra.entry(measure.name()).or_default();
            match job {
                None => entry.all = spectrum(&h),
                Some(id) => {
                    entry.jobs.insert(id, spectrum(&h));
                }
            }
        }
        let mut timeseries = Timeseries::default();
        for r in read_timeseries(&dir.join("timeseries.csv"))? {
            timeseries.second.push(r.second);
            timeseries.ops_per_s.push(r.ops_per_s);
            timeseries.in_flight.push(r.in_flight);
            timeseries.failures.push(r.failures);
            timeseries.connected.push(r.connected);
        }
        let exit = verdict.exit();
        Ok(RunData {
            label,
            summary: verdict.summary.clone(),
            verdict: VerdictData {
                headline: exit.headline(),
                exit_code: exit.code(),
                invalid: verdict.invalid.clone(),
                thresholds: verdict.thresholds.clone(),
                comparison: verdict
                    .comparison
                    .as_ref()
                    .map(|c| c.rows.clone())
                    .unwrap_or_default(),
            },
            spectra,
            timeseries,
            progress: read_job_progress(dir)?,
        })
    }
}

/// The spectrum of `h` in milliseconds (see [`Spectra`]).
fn spectrum(h: &Histogram<u64>) -> Vec<Option<f64>> {
    let count = h.len() as f64;
    (0..=DECADES * POINTS_PER_DECADE)
        .map(|k| {
            let x = 10f64.powf(f64::from(k) / f64::from(POINTS_PER_DECADE));
            (count > 0.0 && x <= count.max(1.0))
                .then(|| h.value_at_quantile(1.0 - 1.0 / x) as f64 / 1000.0)
        })
        .collect()
}

/// A sweep: the keys set, one row per combination, and the target.
#[derive(Debug, Serialize)]
pub(crate) struct SweepData {
    /// The scenario's name.
    pub(crate) scenario: String,
    /// The keys set, in the order given.
    pub(crate) keys: Vec<String>,
    /// The `--target` expression, if any.
    pub(crate) target: Option<String>,
    /// The combinations in order.
    pub(crate) rows: Vec<SweepRow>,
    /// The first row (fewest tier and units) that met the target.
    pub(crate) smallest: Option<usize>,
}

/// One combination of a sweep and what its run gave.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct SweepRow {
    /// The value of each key, as given.
    pub(crate) values: Vec<String>,
    /// The combination's result directory, relative to the sweep's.
    pub(crate) dir: String,
    /// Per job id: makespan (s), failed share, status.
    pub(crate) jobs: BTreeMap<String, Ending>,
    /// Per rollout id: makespan (s), failed share, status.
    pub(crate) rollouts: BTreeMap<String, Ending>,
    pub(crate) delivery_p50_ms: f64,
    pub(crate) delivery_p99_ms: f64,
    pub(crate) completion_p50_ms: f64,
    pub(crate) completion_p99_ms: f64,
    pub(crate) ops_per_s_mean: f64,
    /// The verdict's headline (`passed`, `threshold broken`, ...).
    pub(crate) verdict: String,
    /// Whether the `--target` held (`None` without a target).
    pub(crate) target_met: Option<bool>,
}

/// Makespan, failed share and status of a job or rollout.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Ending {
    pub(crate) makespan_s: f64,
    pub(crate) failed_share: f64,
    pub(crate) status: String,
}

impl SweepRow {
    /// The row of the run `summary`, its values and directory given.
    pub(crate) fn new(values: Vec<String>, dir: String, verdict: &Verdict) -> SweepRow {
        let s = &verdict.summary;
        let share = |failed: u64, devices: u64| {
            if devices == 0 {
                0.0
            } else {
                failed as f64 / devices as f64
            }
        };
        let ms = |us: u64| us as f64 / 1000.0;
        SweepRow {
            values,
            dir,
            jobs: s
                .run
                .jobs
                .iter()
                .map(|j| {
                    let o = Ending {
                        makespan_s: j.makespan_ms / 1000.0,
                        failed_share: share(j.statistics.failed_count, j.statistics.device_count),
                        status: j.status.clone(),
                    };
                    (j.job_id.clone(), o)
                })
                .collect(),
            rollouts: s
                .run
                .rollouts
                .iter()
                .map(|r| {
                    let o = Ending {
                        makespan_s: r.makespan_ms / 1000.0,
                        failed_share: share(r.failed, r.devices),
                        status: r.status.name().to_owned(),
                    };
                    (r.id.clone(), o)
                })
                .collect(),
            delivery_p50_ms: ms(s.histograms.get(Measure::Delivery).p50_us),
            delivery_p99_ms: ms(s.histograms.get(Measure::Delivery).p99_us),
            completion_p50_ms: ms(s.histograms.get(Measure::Completion).p50_us),
            completion_p99_ms: ms(s.histograms.get(Measure::Completion).p99_us),
            ops_per_s_mean: s.throughput.ops_per_s_mean,
            verdict: verdict.exit().headline().to_owned(),
            target_met: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::new_histogram;

    #[test]
    fn a_spectrum_reads_percentiles_and_stops_where_the_samples_do() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = spectrum(&h);
        assert_eq!(s.len(), 61);
        let at = |k: usize| s[k].unwrap();
        assert!((at(0) - 1.0).abs() < 0.01, "p0: {}", at(0));
        assert!(
            (at(3) - 500.0).abs() < 3.0,
            "p50 (1/(1-p) = 10^0.3 ≈ 2): {}",
            at(3)
        );
        assert!((at(10) - 900.0).abs() < 1.0, "p90: {}", at(10));
        assert!((at(20) - 990.0).abs() < 1.0, "p99: {}", at(20));
        assert!(
            s[30].is_some() && s[31].is_none(),
            "1,000 samples tell up to p99.9"
        );
        assert!(spectrum(&new_histogram()).iter().all(Option::is_none));
    }
}
