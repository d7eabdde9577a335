//! A run's result directory, each file written atomically (temp file + rename):
//!
//! - `summary.json`: the [`RunReport`] fields, then histogram statistics overall and per job and
//!   the throughput ([`Summary`]; schema in `schema/summary.schema.json`).
//! - `<measure>.hgrm` per measure (overall): HdrHistogram's percentile distribution text, values
//!   in milliseconds.
//! - `histograms.hlog`: HdrHistogram interval log, one-second intervals (the last one possibly
//!   partial), V2 deflate histograms in µs, tagged `<measure>` (overall) and
//!   `job/<jobId>/<measure>` (per job, the id escaped: see [`tag`](super::tag)). Empty histograms
//!   are not written. Adding up every interval of a tag gives back the run's histogram exactly
//!   ([`read_interval_log`]).
//! - `timeseries.csv`: `second,ops_done,ops_per_s,in_flight,failures,connected,faults`, one row
//!   per second ([`Recorder::timeseries`]): `connected` counts the devices connected at its end,
//!   `faults` the scenario's faults active during it.
//! - `job_progress.json`: per job id, its cumulative `[second, succeeded, failed]` at the end of
//!   each second in which it ended operations ([`Recorder::job_progress`]); absent in merged and
//!   older results.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::histogram::{percentile_distribution, HistogramStats};
use super::{tag, Measure, Recorder, SecondRow, US_PER_S};
use crate::report::RunReport;

/// Version of the `summary.json` layout; bumped on any incompatible change.
pub(crate) const SUMMARY_SCHEMA_VERSION: u32 = 1;
/// `.hgrm` values are µs divided by this: milliseconds.
pub(crate) const HGRM_SCALE: f64 = 1000.0;

/// Errors writing or reading result files. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: not a fleetsim result file: {source}", path.display())]
    BadSummary {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: line {line}: bad time series row {text:?}", path.display())]
    BadTimeseries {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("cannot encode the interval log {}: {message}", path.display())]
    Encode { path: PathBuf, message: String },
    #[error("{}: not an interval log: cannot parse the line at byte {offset}", path.display())]
    LogParse { path: PathBuf, offset: usize },
    #[error("{}: interval {index} (tag {tag:?}): {message}", path.display())]
    BadInterval {
        path: PathBuf,
        index: usize,
        tag: String,
        message: String,
    },
}

/// The statistics of the four measures, keyed by measure name in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasureStats {
    pub engine_lag: HistogramStats,
    pub delivery: HistogramStats,
    pub round_trip: HistogramStats,
    pub completion: HistogramStats,
}

impl MeasureStats {
    fn from_fn(mut f: impl FnMut(Measure) -> HistogramStats) -> Self {
        MeasureStats {
            engine_lag: f(Measure::EngineLag),
            delivery: f(Measure::Delivery),
            round_trip: f(Measure::RoundTrip),
            completion: f(Measure::Completion),
        }
    }

    /// The statistics of `m`.
    pub(crate) fn get(&self, m: Measure) -> &HistogramStats {
        match m {
            Measure::EngineLag => &self.engine_lag,
            Measure::Delivery => &self.delivery,
            Measure::RoundTrip => &self.round_trip,
            Measure::Completion => &self.completion,
        }
    }
}

/// Run-wide throughput in `summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Operations that reached a terminal state.
    pub ops_total: u64,
    /// Of those, the ones that failed.
    pub failures_total: u64,
    /// Operations dispatched.
    pub ops_dispatched: u64,
    /// Dispatched and not done when the results were written.
    pub in_flight: u64,
    /// `ops_total` over the elapsed time.
    pub ops_per_s_mean: f64,
    /// Most operations done in one whole second (the mean for a run shorter than one second).
    pub ops_per_s_peak: f64,
}

/// The content of `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run report's fields, at the top level, unchanged.
    #[serde(flatten)]
    pub run: RunReport,
    /// Seconds from the run's start to when the results were written.
    pub elapsed_s: f64,
    /// Overall, all jobs.
    pub histograms: MeasureStats,
    /// Per job id.
    pub job_histograms: BTreeMap<String, MeasureStats>,
    pub throughput: Throughput,
}

impl Summary {
    /// The summary of `recorder` at `now_us`, with `report`'s fields.
    pub(crate) fn new(report: &RunReport, recorder: &Recorder, now_us: u64) -> Summary {
        let totals = recorder.totals(None);
        Summary {
            schema_version: SUMMARY_SCHEMA_VERSION,
            run: report.clone(),
            elapsed_s: now_us as f64 / US_PER_S as f64,
            histograms: MeasureStats::from_fn(|m| recorder.stats(None, m)),
            job_histograms: recorder
                .jobs()
                .map(|(slot, id)| {
                    let stats = MeasureStats::from_fn(|m| recorder.stats(Some(slot), m));
                    (id.to_owned(), stats)
                })
                .collect(),
            throughput: Throughput {
                ops_total: totals.done,
                failures_total: totals.failed,
                ops_dispatched: totals.dispatched,
                in_flight: totals.in_flight,
                ops_per_s_mean: recorder.ops_per_s_mean(now_us),
                ops_per_s_peak: recorder.ops_per_s_peak(now_us),
            },
        }
    }
}

/// Writes the run's result directory `dir` (created if missing): `summary.json`, one `.hgrm`
/// per measure, `histograms.hlog`, `timeseries.csv`, each atomically. `now_us` is the time the
/// results describe (the end of the run, or of the part of it that ran).
pub(crate) fn write(
    dir: &Path,
    report: &RunReport,
    recorder: &Recorder,
    now_us: u64,
) -> Result<(), ResultsError> {
    fs::create_dir_all(dir).map_err(|source| ResultsError::Write {
        path: dir.to_owned(),
        source,
    })?;

    write_summary(dir, &Summary::new(report, recorder, now_us))?;
    for m in Measure::ALL {
        write_hgrm(dir, m, &recorder.histogram(None, m))?;
    }

    let mut rows = recorder.timeseries(now_us);
    let step = recorder.interval_s() as f64;
    for r in &mut rows {
        let from = r.second as f64;
        r.faults = report
            .faults
            .iter()
            .filter(|w| w.overlaps(from, from + step))
            .count() as u32;
    }
    write_timeseries(dir, &rows)?;
    write_job_progress(dir, &recorder.job_progress(now_us))?;

    let path = dir.join("histograms.hlog");
    let log = interval_log(report, recorder, now_us).map_err(|message| ResultsError::Encode {
        path: path.clone(),
        message,
    })?;
    write_atomic(&path, &log)
}

/// Writes `summary` as `dir/summary.json`.
pub(crate) fn write_summary(dir: &Path, summary: &Summary) -> Result<(), ResultsError> {
    let path = dir.join("summary.json");
    let mut json = serde_json::to_vec_pretty(summary).map_err(|source| ResultsError::Json {
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomic(&path, &json)
}

/// The header line of `timeseries.csv`.
pub(crate) const TIMESERIES_HEADER: &str =
    "second,ops_done,ops_per_s,in_flight,failures,connected,faults";

/// The header line of `timeseries.csv` in results written before it had `connected` and
/// `faults`: still read.
const TIMESERIES_HEADER_V1: &str = "second,ops_done,ops_per_s,in_flight,failures";

/// Reads a `timeseries.csv`.
pub(crate) fn read_timeseries(path: &Path) -> Result<Vec<SecondRow>, ResultsError> {
    let text = fs::read_to_string(path).map_err(|source| ResultsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line == TIMESERIES_HEADER || line == TIMESERIES_HEADER_V1 || line.is_empty() {
            continue;
        }
        let bad = || ResultsError::BadTimeseries {
            path: path.to_owned(),
            line: n + 1,
            text: line.to_owned(),
        };
        let f: Vec<&str> = line.split(',').collect();
        let (&[second, ops_done, ops_per_s, in_flight, failures], rest) =
            f.split_at(5.min(f.len()))
        else {
            return Err(bad());
        };
        let (connected, faults) = match rest {
            [] => (0, 0),
            [connected, faults] => (
                connected.parse().map_err(|_| bad())?,
                faults.parse().map_err(|_| bad())?,
            ),
            _ => return Err(bad()),
        };
        out.push(SecondRow {
            second: second.parse().map_err(|_| bad())?,
            ops_done: ops_done.parse().map_err(|_| bad())?,
            ops_per_s: ops_per_s.parse().map_err(|_| bad())?,
            in_flight: in_flight.parse().map_err(|_| bad())?,
            failures: failures.parse().map_err(|_| bad())?,
            connected,
            faults,
        });
    }
    Ok(out)
}

/// Writes `rows` as `dir/timeseries.csv`.
pub(crate) fn write_timeseries(dir: &Path, rows: &[SecondRow]) -> Result<(), ResultsError> {
    let mut csv = format!("{TIMESERIES_HEADER}\n");
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{:.3},{},{},{},{}",
            r.second, r.ops_done, r.ops_per_s, r.in_flight, r.failures, r.connected, r.faults
        );
    }
    write_atomic(&dir.join("timeseries.csv"), csv.as_bytes())
}

/// Each job's cumulative `[second, succeeded, failed]` rows, by job id (`job_progress.json`).
pub(crate) type JobProgress = BTreeMap<String, Vec<[u64; 3]>>;

fn write_job_progress(dir: &Path, progress: &[(&str, Vec<[u64; 3]>)]) -> Result<(), ResultsError> {
    let path = dir.join("job_progress.json");
    let map: BTreeMap<&str, &Vec<[u64; 3]>> = progress.iter().map(|(id, r)| (*id, r)).collect();
    let json = serde_json::to_vec(&map).map_err(|source| ResultsError::Json {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &json)
}

/// Reads `job_progress.json` of the result directory `dir`; empty when the file is absent
/// (merged shards, older results).
pub(crate) fn read_job_progress(dir: &Path) -> Result<JobProgress, ResultsError> {
    let path = dir.join("job_progress.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|source| ResultsError::BadSummary { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobProgress::new()),
        Err(source) => Err(ResultsError::Read { path, source }),
    }
}

/// Writes the overall histogram of `m` as `dir/<measure>.hgrm`.
pub(crate) fn write_hgrm(dir: &Path, m: Measure, h: &Histogram<u64>) -> Result<(), ResultsError> {
    let text = percentile_distribution(h, HGRM_SCALE);
    write_atomic(&dir.join(format!("{}.hgrm", m.name())), text.as_bytes())
}

/// The whole interval log: header, the closed seconds, then the open (partial) one.
fn interval_log(report: &RunReport, recorder: &Recorder, now_us: u64) -> Result<Vec<u8>, String> {
    let closed = recorder.closed_intervals().map_err(str::to_owned)?;
    let mut out = Vec::with_capacity(closed.len() + 1024);
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(&format!(
            "fleetsim interval log, scenario {:?}",
            report.scenario
        ))
        .add_comment("values in microseconds; one-second intervals since the run started")
        .add_comment(tag::HEADER_COMMENT);
    match time::OffsetDateTime::parse(
        &report.started_at,
        &time::format_description::well_known::Rfc3339,
    ) {
        Ok(t) => {
            let t = std::time::SystemTime::from(t);
            builder.with_start_time(t).with_base_time(t);
        }
        Err(_) => {
            builder.add_comment(&format!(
                "started_at {:?} is not RFC 3339: no StartTime/BaseTime",
                report.started_at
            ));
        }
    }
    // Only the header is written through this writer; the bodies are already encoded.
    builder
        .begin_log_with(&mut out, &mut V2DeflateSerializer::new())
        .map_err(|e| e.to_string())?;
    out.extend_from_slice(closed);
    recorder.encode_open_interval(&mut out, now_us)?;
    Ok(out)
}

/// Reads an interval log and adds up all intervals per tag (an untagged interval counts under
/// `""`): the histograms a run (or several runs' logs, one after another) recorded.
pub(crate) fn read_interval_log(
    path: &Path,
) -> Result<BTreeMap<String, Histogram<u64>>, ResultsError> {
    let bytes = fs::read(path).map_err(|source| ResultsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut out: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut deserializer = Deserializer::new();
    let mut raw = Vec::new();
    let mut index = 0usize;
    for entry in IntervalLogIterator::new(&bytes) {
        let interval = match entry {
            Ok(LogEntry::Interval(i)) => i,
            Ok(_) => continue,
            Err(hdrhistogram::serialization::interval_log::LogIteratorError::ParseError {
                offset,
            }) => {
                return Err(ResultsError::LogParse {
                    path: path.to_owned(),
                    offset,
                })
            }
        };
        let tag = interval.tag().map(|t| t.as_str()).unwrap_or("").to_owned();
        let bad = |message: String| ResultsError::BadInterval {
            path: path.to_owned(),
            index,
            tag: tag.clone(),
            message,
        };
        raw.clear();
        base64::engine::general_purpose::STANDARD
            .decode_vec(interval.encoded_histogram(), &mut raw)
            .map_err(|e| bad(format!("bad base64: {e}")))?;
        let h: Histogram<u64> = deserializer
            .deserialize(&mut &raw[..])
            .map_err(|e| bad(format!("bad histogram: {e:?}")))?;
        match out.get_mut(&tag) {
            Some(acc) => acc
                .add(&h)
                .map_err(|e| bad(format!("cannot add to earlier intervals: {e:?}")))?,
            None => {
                out.insert(tag.clone(), h);
            }
        }
        index += 1;
    }
    Ok(out)
}

/// Reads `summary.json` of the result directory `dir`.
pub(crate) fn read_summary(dir: &Path) -> Result<Summary, ResultsError> {
    let path = dir.join("summary.json");
    let bytes = fs::read(&path).map_err(|source| ResultsError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ResultsError::BadSummary { path, source })
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    let err = |source| ResultsError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests;
