//! Comparing a run with a baseline run: latency percentiles from the full histograms of both
//! interval logs (not the rounded `summary.json`), overall and per job, and per job its makespan,
//! rate and failed share. A figure is a regression when it is worse than the baseline by more
//! than the tolerance (relative) and by more than a noise floor (absolute).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::thresholds::show_value;
use crate::metrics::results::ResultsError;
use crate::metrics::results::{read_interval_log, read_summary, Summary};
use crate::metrics::tag::tag_for;
use crate::metrics::{Measure, MAX_US};
use crate::report::JobReport;

/// A latency change smaller than this (µs) is never a regression: below it, scheduling jitter
/// and histogram quantisation dominate.
pub(crate) const TIME_NOISE_FLOOR_US: f64 = 1000.0;
/// A failed share that grows by less than this (absolute) is never a regression.
pub(crate) const RATIO_NOISE_FLOOR: f64 = 0.001;

/// The percentiles compared per histogram, with their labels.
const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

/// The kind of a compared figure, which decides its direction and noise floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A time in µs; higher is worse.
    Time,
    /// A rate; lower is worse.
    Rate,
    /// A share between 0 and 1; higher is worse.
    Ratio,
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    /// The job, or `None` for the whole run.
    pub(crate) job: Option<String>,
    /// Such as `delivery p99`, `makespan`, `ops_per_s`.
    pub(crate) figure: String,
    pub(crate) kind: Kind,
    pub(crate) baseline: f64,
    pub(crate) run: f64,
    /// `(run - baseline) / baseline`; `None` when the baseline is 0.
    pub(crate) change: Option<f64>,
    /// Worse than the baseline by more than the tolerance and the noise floor.
    pub(crate) regression: bool,
}

impl Row {
    fn new(
        job: Option<&str>,
        figure: String,
        kind: Kind,
        baseline: f64,
        run: f64,
        tolerance: f64,
    ) -> Row {
        let change = (baseline != 0.0).then(|| (run - baseline) / baseline);
        let worse_by = match kind {
            Kind::Time | Kind::Ratio => run - baseline,
            Kind::Rate => baseline - run,
        };
        let floor = match kind {
            Kind::Time => TIME_NOISE_FLOOR_US,
            Kind::Ratio => RATIO_NOISE_FLOOR,
            Kind::Rate => 0.0,
        };
        let regression = worse_by > floor && worse_by > tolerance * baseline.abs();
        Row {
            job: job.map(str::to_owned),
            figure,
            kind,
            baseline,
            run,
            change,
            regression,
        }
    }

    /// `job` or `run` for people.
    pub(crate) fn scope(&self) -> &str {
        self.job.as_deref().unwrap_or("(all)")
    }

    /// A value of this row for people.
    pub(crate) fn show(&self, value: f64) -> String {
        show_value(self.kind == Kind::Time, value)
    }

    /// The change for people: `+12.3%`, or `new` when the baseline is 0.
    pub(crate) fn show_change(&self) -> String {
        match self.change {
            Some(c) => format!("{:+.1}%", c * 100.0),
            None if self.run == 0.0 => "+0.0%".into(),
            None => "new".into(),
        }
    }

    /// `regression`, `better`, `worse` (within tolerance) or `same`.
    pub(crate) fn verdict(&self) -> &'static str {
        let higher_is_worse = self.kind != Kind::Rate;
        if self.regression {
            "regression"
        } else if self.run == self.baseline {
            "same"
        } else if (self.run > self.baseline) == higher_is_worse {
            "worse"
        } else {
            "better"
        }
    }
}

/// A run compared with a baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Comparison {
    /// The baseline directory.
    pub(crate) baseline: String,
    /// The compared run's directory.
    pub(crate) run: String,
    /// Relative tolerance (0.1 for 10%).
    pub(crate) tolerance: f64,
    pub(crate) rows: Vec<Row>,
}

impl Comparison {
    /// The rows that regressed.
    pub(crate) fn regressions(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.regression)
    }

    /// A table for a terminal; regressions red, improvements green when `colour`.
    pub(crate) fn text(&self, colour: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "baseline {}  run {}  tolerance {:.1}%",
            self.baseline,
            self.run,
            self.tolerance * 100.0
        );
        let _ = writeln!(
            s,
            "{:<24} {:<18} {:>11} {:>11} {:>9}  verdict",
            "job", "figure", "baseline", "run", "change"
        );
        for r in &self.rows {
            let verdict = r.verdict();
            let paint = match (colour, verdict) {
                (true, "regression") => "\x1b[1;31m",
                (true, "worse") => "\x1b[33m",
                (true, "better") => "\x1b[32m",
                _ => "",
            };
            let reset = if paint.is_empty() { "" } else { "\x1b[0m" };
            let _ = writeln!(
                s,
                "{:<24} {:<18} {:>11} {:>11} {paint}{:>9}  {verdict}{reset}",
                r.scope(),
                r.figure,
                r.show(r.baseline),
                r.show(r.run),
                r.show_change()
            );
        }
        let n = self.regressions().count();
        let _ = writeln!(
            s,
            "{}",
            if n == 0 {
                "no regression".to_owned()
            } else {
                format!("{n} regression(s) beyond the tolerance")
            }
        );
        s
    }
}

/// Parses a tolerance: `10%` or `0.1`.
pub(crate) fn parse_tolerance(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "bad tolerance '{text}'; expected a percentage such as 10% (or 0.1)"
        )),
    }
}

/// Compares the result directory `run` with `baseline`.
pub(crate) fn compare(
    baseline: &Path,
    run: &Path,
    tolerance: f64,
) -> Result<Comparison, ResultsError> {
    let (base_h, run_h) = (
        read_interval_log(&baseline.join("histograms.hlog"))?,
        read_interval_log(&run.join("histograms.hlog"))?,
    );
    let (base_s, run_s) = (read_summary(baseline)?, read_summary(run)?);
    Ok(Comparison {
        baseline: baseline.display().to_string(),
        run: run.display().to_string(),
        tolerance,
        rows: rows(&base_h, &run_h, &base_s, &run_s, tolerance),
    })
}

fn rows(
    base_h: &BTreeMap<String, Histogram<u64>>,
    run_h: &BTreeMap<String, Histogram<u64>>,
    base_s: &Summary,
    run_s: &Summary,
    tolerance: f64,
) -> Vec<Row> {
    let mut out = Vec::new();
    let latency = |job: Option<&str>, out: &mut Vec<Row>| {
        for m in Measure::ALL {
            let tag = tag_for(job, m);
            let (Some(b), Some(r)) = (base_h.get(&tag), run_h.get(&tag)) else {
                continue;
            };
            for (label, q) in QUANTILES {
                let (bv, rv) = (quantile(b, q), quantile(r, q));
                out.push(Row::new(
                    job,
                    format!("{m} {label}"),
                    Kind::Time,
                    bv,
                    rv,
                    tolerance,
                ));
            }
        }
    };
    latency(None, &mut out);
    out.push(Row::new(
        None,
        "ops_per_s_mean".into(),
        Kind::Rate,
        base_s.throughput.ops_per_s_mean,
        run_s.throughput.ops_per_s_mean,
        tolerance,
    ));
    for j in &run_s.run.jobs {
        let Some(b) = base_s.run.jobs.iter().find(|b| b.job_id == j.job_id) else {
            continue;
        };
        let id = Some(j.job_id.as_str());
        latency(id, &mut out);
        let failed = |j: &JobReport| {
            let s = &j.statistics;
            s.failed_count as f64 / s.device_count.max(1) as f64
        };
        for (figure, kind, bv, rv) in [
            (
                "makespan",
                Kind::Time,
                b.makespan_ms * 1e3,
                j.makespan_ms * 1e3,
            ),
            ("ops_per_s", Kind::Rate, b.ops_per_s, j.ops_per_s),
            ("failed_ratio", Kind::Ratio, failed(b), failed(j)),
        ] {
            out.push(Row::new(id, figure.into(), kind, bv, rv, tolerance));
        }
    }
    out
}

/// The value at quantile `q` of `h` (µs, capped at [`MAX_US`]); 0 when empty.
fn quantile(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q).min(MAX_US) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_and_direction() {
        assert_eq!(parse_tolerance("10%"), Ok(0.1));
        assert_eq!(parse_tolerance("0.25"), Ok(0.25));
        assert!(parse_tolerance("-5%").is_err());
        assert!(parse_tolerance("lots").is_err());

        let slower = Row::new(
            None,
            "delivery p50".into(),
            Kind::Time,
            10_000.0,
            20_000.0,
            0.1,
        );
        assert!(slower.regression);
        assert_eq!(
            (slower.show_change().as_str(), slower.verdict()),
            ("+100.0%", "regression")
        );
        let jitter = Row::new(None, "engine_lag p50".into(), Kind::Time, 5.0, 9.0, 0.1);
        assert!(!jitter.regression, "under the noise floor");
        let within = Row::new(
            None,
            "delivery p50".into(),
            Kind::Time,
            100_000.0,
            105_000.0,
            0.1,
        );
        assert_eq!(within.verdict(), "worse");
        let faster = Row::new(None, "ops_per_s".into(), Kind::Rate, 1000.0, 1500.0, 0.1);
        assert_eq!(faster.verdict(), "better");
        let slower = Row::new(None, "ops_per_s".into(), Kind::Rate, 1000.0, 800.0, 0.1);
        assert!(slower.regression);
    }
}
