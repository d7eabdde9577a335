//! Histogram helpers: one construction for every histogram of a run, the statistics reported in
//! snapshots and `summary.json`, coarse buckets for a bar chart, and the classic `.hgrm` text.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{LOW_US, MAX_US, SIGFIG};

/// A fresh histogram with the run's bounds: 1 µs to 1 h, 3 significant digits, no auto-resize.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOW_US, MAX_US, SIGFIG).expect("constant bounds are valid")
}

/// Statistics of one histogram, in microseconds.
///
/// Every value is derived from the histogram alone (plus the outlier count), so the same numbers
/// come back from a histogram rebuilt out of `histograms.hlog`. Values carry HdrHistogram's
/// quantisation (3 significant digits): percentiles and `max_us` are the highest value
/// equivalent to the recorded one, capped at [`MAX_US`]; `min_us` is the lowest equivalent value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramStats {
    /// Samples recorded (outliers included, at [`MAX_US`]).
    pub count: u64,
    /// Smallest sample (0 when empty).
    pub min_us: u64,
    /// Mean of the samples (0 when empty).
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    /// Largest sample (0 when empty).
    pub max_us: u64,
    /// Samples above [`MAX_US`], recorded as [`MAX_US`].
    pub outliers: u64,
}

impl HistogramStats {
    /// Statistics of `h`; `outliers` is carried through as given.
    pub fn of(h: &Histogram<u64>, outliers: u64) -> HistogramStats {
        if h.is_empty() {
            return HistogramStats {
                outliers,
                ..HistogramStats::default()
            };
        }
        let mut q = [0u64; 5];
        for (slot, v) in q
            .iter_mut()
            .zip(h.value_at_quantiles([0.5, 0.9, 0.99, 0.999, 0.9999]))
        {
            *slot = v.min(MAX_US);
        }
        HistogramStats {
            count: h.len(),
            min_us: h.min().min(MAX_US),
            mean_us: h.mean(),
            p50_us: q[0],
            p90_us: q[1],
            p99_us: q[2],
            p999_us: q[3],
            p9999_us: q[4],
            max_us: h.max().min(MAX_US),
            outliers,
        }
    }
}

/// Upper bounds (inclusive, µs) of the coarse buckets offered for a bar chart; the last bucket
/// ends at [`MAX_US`] and so holds the outliers too.
pub const COARSE_BOUNDS_US: [u64; 19] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000, MAX_US,
];

/// Counts per coarse bucket: `out[i]` counts samples in `(COARSE_BOUNDS_US[i-1],
/// COARSE_BOUNDS_US[i]]` (the first bucket starts at 0). A histogram bin is placed by its lowest
/// equivalent value, so a bin is never split across two buckets.
pub fn coarse_counts(h: &Histogram<u64>) -> [u64; COARSE_BOUNDS_US.len()] {
    let mut out = [0u64; COARSE_BOUNDS_US.len()];
    if h.is_empty() {
        return out;
    }
    for v in h.iter_recorded() {
        let low = h.lowest_equivalent(v.value_iterated_to());
        let i = COARSE_BOUNDS_US
            .iter()
            .position(|&b| low <= b)
            .unwrap_or(COARSE_BOUNDS_US.len() - 1);
        out[i] += v.count_at_value();
    }
    out
}

/// Sub-buckets per bucket for `sigfig` significant digits (HdrHistogram's `subBucketCount`).
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    largest.next_power_of_two()
}

/// The classic HdrHistogram percentile distribution text (`.hgrm`), as Java's
/// `AbstractHistogram.outputPercentileDistribution(out, 5, scale)` prints it and
/// HdrHistogram's plotter reads it: values divided by `scale` (1000.0 turns µs into ms),
/// 5 percentile ticks per half distance.
pub fn percentile_distribution(h: &Histogram<u64>, scale: f64) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q != 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.digits$}, StdDeviation   = {:>12.digits$}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let max = if h.is_empty() { 0 } else { h.max() };
    let _ = writeln!(
        out,
        "#[Max     = {:>12.digits$}, Total count    = {:>12}]",
        max as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_samples() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = HistogramStats::of(&h, 0);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.max_us, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.p9999_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1e-9, "{}", s.mean_us);
    }

    #[test]
    fn stats_of_empty_histogram_are_zero() {
        let s = HistogramStats::of(&new_histogram(), 3);
        assert_eq!(
            s,
            HistogramStats {
                outliers: 3,
                ..HistogramStats::default()
            }
        );
    }

    #[test]
    fn stats_cap_quantised_values_at_max() {
        let mut h = new_histogram();
        h.record(MAX_US).unwrap();
        assert!(
            h.max() > MAX_US,
            "bin's highest equivalent lies above MAX_US"
        );
        let s = HistogramStats::of(&h, 1);
        assert_eq!(s.max_us, MAX_US);
        assert_eq!(s.p50_us, MAX_US);
    }

    #[test]
    fn coarse_counts_place_each_sample_once() {
        let mut h = new_histogram();
        for v in [0, 100, 101, 1_000, 999_999, 1_000_000, 1_100_000, MAX_US] {
            h.record(v).unwrap();
        }
        let c = coarse_counts(&h);
        assert_eq!(c.iter().sum::<u64>(), 8);
        assert_eq!(c[0], 2, "0 and 100 are <= 100");
        assert_eq!(c[1], 1, "101");
        assert_eq!(c[3], 1, "1000");
        assert_eq!(
            c[12], 2,
            "999_999 and 1_000_000 share the (500 ms, 1 s] bucket"
        );
        assert_eq!(c[13], 1, "1_100_000");
        // Bins are placed by their lowest equivalent value: 1_000_001 shares a bin with 1 s.
        assert!(h.lowest_equivalent(1_000_001) <= 1_000_000);
        assert_eq!(c[18], 1, "MAX_US");
    }

    #[test]
    fn hgrm_matches_java_layout() {
        let mut h = new_histogram();
        for v in [500u64, 1_000, 1_500, 2_000] {
            h.record(v).unwrap();
        }
        let text = percentile_distribution(&h, 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.500 0.000000000000          1           1.00"
        );
        let last_row = lines[lines.len() - 4];
        assert_eq!(last_row, "       2.000 1.000000000000          4");
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =        1.250, StdDeviation   =        0.559]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =        2.000, Total count    =            4]"
        );
        assert_eq!(
            lines[lines.len() - 1],
            format!(
                "#[Buckets = {:>12}, SubBuckets     =         2048]",
                h.buckets()
            )
        );
    }
}
