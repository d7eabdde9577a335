//! The verdict on a run, for CI: its thresholds ([`thresholds`]), an optional comparison with a
//! baseline run ([`compare`]), whether the run is valid at all, the process exit code, and the
//! reports CI systems read: `junit.xml` ([`junit`]) and `summary.md` ([`markdown`]).

pub(crate) mod compare;
pub(crate) mod junit;
pub(crate) mod markdown;
pub(crate) mod thresholds;

use std::path::Path;

use compare::Comparison;
use thresholds::{Outcome, Thresholds};

use crate::metrics::results::{read_summary, write_atomic, ResultsError, Summary};

/// How a run ends for CI, in order of precedence: an invalid run says nothing, so it wins over
/// a broken threshold, which wins over a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every threshold held and nothing regressed: exit code 0.
    Pass,
    /// A threshold was broken: exit code 2.
    Broken,
    /// A figure regressed against the baseline beyond the tolerance: exit code 3.
    Regression,
    /// The simulator itself was saturated (engine lag beyond its limit): exit code 4.
    Invalid,
    /// The hub's job engine died (a fleetsim bug, or the hub's store could not commit: the
    /// error says what and why; no results are written): exit code 5. Never a verdict on
    /// results, it ends `fleetsim run` and `fleetsim hub` as an error.
    EngineDied,
}

impl Exit {
    /// The process exit code (1 is left to errors).
    pub fn code(self) -> u8 {
        match self {
            Exit::Pass => 0,
            Exit::Broken => 2,
            Exit::Regression => 3,
            Exit::Invalid => 4,
            Exit::EngineDied => 5,
        }
    }

    /// A headline for people.
    pub(crate) fn headline(self) -> &'static str {
        match self {
            Exit::Pass => "passed",
            Exit::Broken => "threshold broken",
            Exit::Regression => "regression against the baseline",
            Exit::Invalid => "invalid run (simulator saturated)",
            Exit::EngineDied => "the hub's job engine died",
        }
    }
}

/// Everything decided about one run.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    /// The run's summary the verdict was taken on.
    pub summary: Summary,
    /// The engine-lag limit the run was held to (µs).
    pub(crate) engine_lag_limit_us: u64,
    /// Why the run is invalid, if it is.
    pub(crate) invalid: Option<String>,
    /// Each threshold, in file order.
    pub(crate) thresholds: Vec<Outcome>,
    /// The comparison with a baseline, when one was given.
    pub(crate) comparison: Option<Comparison>,
}

impl Verdict {
    /// The verdict on `summary` under `thresholds`, with an optional comparison.
    pub(crate) fn new(
        summary: Summary,
        thresholds: &Thresholds,
        comparison: Option<Comparison>,
    ) -> Verdict {
        Verdict {
            engine_lag_limit_us: thresholds.engine_lag_limit.as_micros() as u64,
            invalid: thresholds::invalid_because(thresholds, &summary),
            thresholds: thresholds::evaluate(thresholds, &summary),
            comparison,
            summary,
        }
    }

    /// How the run ends.
    pub(crate) fn exit(&self) -> Exit {
        if self.invalid.is_some() {
            Exit::Invalid
        } else if self.thresholds.iter().any(|t| !t.held) {
            Exit::Broken
        } else if self
            .comparison
            .as_ref()
            .is_some_and(|c| c.regressions().next().is_some())
        {
            Exit::Regression
        } else {
            Exit::Pass
        }
    }

    /// Lines for a terminal: the invalidity, each threshold, and the headline.
    pub(crate) fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if let Some(why) = &self.invalid {
            let _ = writeln!(s, "INVALID: {why}");
        }
        for t in &self.thresholds {
            let _ = writeln!(
                s,
                "threshold {:<40} {:<12} actual {:<10} {}",
                t.key,
                t.condition,
                t.actual.as_deref().unwrap_or("(no data)"),
                if t.skipped {
                    "skipped (a count in one shard: fleetsim merge judges it)"
                } else if t.held {
                    "held"
                } else {
                    "BROKEN"
                }
            );
        }
        let exit = self.exit();
        let _ = writeln!(
            s,
            "verdict: {} (exit code {})",
            exit.headline(),
            exit.code()
        );
        s
    }
}

/// Judges the result directory `dir` under `thresholds` (and against `baseline` with its
/// tolerance, when given), and writes `junit.xml` and `summary.md` into it.
pub(crate) fn judge(
    dir: &Path,
    thresholds: &Thresholds,
    baseline: Option<(&Path, f64)>,
) -> Result<Verdict, ResultsError> {
    let comparison = baseline
        .map(|(base, tolerance)| compare::compare(base, dir, tolerance))
        .transpose()?;
    let verdict = Verdict::new(read_summary(dir)?, thresholds, comparison);
    write_atomic(&dir.join("junit.xml"), junit::report(&verdict).as_bytes())?;
    write_atomic(
        &dir.join("summary.md"),
        markdown::summary(&verdict).as_bytes(),
    )?;
    Ok(verdict)
}
