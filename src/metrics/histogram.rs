//! Histogram helpers: one construction for every histogram of a run, the statistics reported in
//! snapshots and `summary.json`, coarse buckets for a bar chart, and the classic `.hgrm` text.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{LOW_US, MAX_US, SIGFIG};

/// A fresh histogram with the run's bounds: 1 µs to 1 h, 3 significant digits, no auto-resize.
pub(crate) fn new_histogram() -> Histogram<u64> {
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
    pub(crate) fn of(h: &Histogram<u64>, outliers: u64) -> HistogramStats {
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

/// Number of bins of a run histogram: HdrHistogram's `distinct_values()` for 1 µs to 1 h at 3
/// significant digits (22 buckets + 1, times 1024 half sub-buckets).
pub(crate) const BINS: usize = 23_552;
/// log2 of half the sub-bucket count (2048 sub-buckets for 3 significant digits).
const HALF_MAG: u32 = 10;
/// `64 - unit magnitude (0) - HALF_MAG - 1`, as HdrHistogram computes it.
const LZ_BASE: u32 = 53;
/// Values below this fall in bucket 0.
const SUB_BUCKET_MASK: u64 = 2047;

/// The bin of `v` (`v <= MAX_US`): exactly HdrHistogram's counts index for the run's bounds, so
/// counts kept in [`Bins`] move into a `Histogram` without loss.
#[inline]
pub(crate) fn bin_index(v: u64) -> usize {
    let bucket = LZ_BASE - (v | SUB_BUCKET_MASK).leading_zeros();
    let sub = (v >> bucket) as usize;
    ((bucket as usize + 1) << HALF_MAG) + sub - (1 << HALF_MAG)
}

/// Bucket of bin `i` (the log2 of its width).
fn bin_bucket(i: usize) -> u32 {
    ((i >> HALF_MAG) as u32).saturating_sub(1)
}

/// Lowest value of bin `i` (HdrHistogram's `lowest_equivalent`).
pub(crate) fn bin_low(i: usize) -> u64 {
    let bucket = bin_bucket(i);
    let mut sub = (i as u64 & ((1 << HALF_MAG) - 1)) + (1 << HALF_MAG);
    if i >> HALF_MAG == 0 {
        sub -= 1 << HALF_MAG;
    }
    sub << bucket
}

/// Highest value of bin `i` (HdrHistogram's `highest_equivalent`).
pub(crate) fn bin_high(i: usize) -> u64 {
    bin_low(i) + (1u64 << bin_bucket(i)) - 1
}

/// Middle value of bin `i` (HdrHistogram's `median_equivalent`, which its mean uses).
fn bin_median(i: usize) -> u64 {
    bin_low(i) + ((1u64 << bin_bucket(i)) >> 1)
}

/// Plain counts per bin, for the hot path: recording is one increment, with none of
/// `Histogram::record`'s bookkeeping. Moved into a `Histogram` with [`Bins::add_to`].
///
/// The bins also keep the lowest and highest bin they hold samples in (two `min`/`max` per
/// sample, no branch), so that summaries, sums and clears walk only that range: a run's
/// latencies usually span a few thousand of the 23,552 bins, and the engine summarises eight
/// histograms ten times a second.
///
/// The 184 KiB of counts are allocated with the first sample: a hub keeps eight `Bins` per
/// job, and most jobs a REST client creates may never measure anything (measured before: a
/// hub's memory grew by 1.6 MB per job created over REST, 2.3 GB after 1,440 of them).
#[derive(Clone)]
pub(crate) struct Bins {
    counts: Box<[u64]>,
    total: u64,
    /// Lowest bin with a sample; `BINS` when empty.
    lo: usize,
    /// Highest bin with a sample; 0 when empty.
    hi: usize,
}

impl Default for Bins {
    fn default() -> Self {
        Self::new()
    }
}

impl Bins {
    /// All bins at zero (none allocated yet).
    pub(crate) fn new() -> Bins {
        Bins {
            counts: Box::default(),
            total: 0,
            lo: BINS,
            hi: 0,
        }
    }

    /// Allocates the counts, all at zero, unless they are.
    #[inline]
    fn allocate(&mut self) {
        if self.counts.is_empty() {
            self.counts = vec![0; BINS].into_boxed_slice();
        }
    }

    /// The count of bin `i` (0 before the first sample).
    fn count(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// Counts one sample in bin `i` (from [`bin_index`]).
    #[inline]
    pub(crate) fn record_bin(&mut self, i: usize) {
        self.allocate();
        self.counts[i] += 1;
        self.total += 1;
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i);
    }

    /// Samples counted.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The bins that may hold samples: every nonzero bin lies in it (empty when there is none).
    fn occupied(&self) -> std::ops::Range<usize> {
        if self.total == 0 {
            0..0
        } else {
            self.lo..self.hi + 1
        }
    }

    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: &Bins) {
        if other.total == 0 {
            return;
        }
        self.allocate();
        let range = other.occupied();
        for (a, b) in self.counts[range.clone()]
            .iter_mut()
            .zip(&other.counts[range])
        {
            *a += *b;
        }
        self.total += other.total;
        self.lo = self.lo.min(other.lo);
        self.hi = self.hi.max(other.hi);
    }

    /// Sets every bin to zero.
    pub(crate) fn clear(&mut self) {
        if self.total != 0 {
            let range = self.occupied();
            self.counts[range].fill(0);
            self.total = 0;
            self.lo = BINS;
            self.hi = 0;
        }
    }

    /// Adds these counts to `h` (a histogram from [`new_histogram`]).
    pub(crate) fn add_to(&self, h: &mut Histogram<u64>) {
        let range = self.occupied();
        for (i, &c) in self.counts[range.clone()].iter().enumerate() {
            if c != 0 {
                h.record_n(bin_low(range.start + i), c)
                    .expect("a bin's value lies within the histogram's bounds");
            }
        }
    }

    /// A histogram of these counts.
    #[cfg(test)]
    pub(crate) fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        self.add_to(&mut h);
        h
    }
}

/// The bins that may hold samples in any of `parts` (empty when none holds one).
fn occupied(parts: &[&Bins]) -> std::ops::Range<usize> {
    let held = parts.iter().filter(|b| b.total != 0);
    match (held.clone().map(|b| b.lo).min(), held.map(|b| b.hi).max()) {
        (Some(lo), Some(hi)) => lo..hi + 1,
        _ => 0..0,
    }
}

/// Statistics of the sum of `parts` (e.g. a job's closed seconds and its open one), computed
/// straight from the bins: equal to [`HistogramStats::of`] the summed histogram, without building
/// it. Walks only the bins between the lowest and the highest sample.
pub(crate) fn stats_of_bins(parts: &[&Bins], outliers: u64) -> HistogramStats {
    summarise_bins(parts, outliers).0
}

/// Counts per coarse bucket of the sum of `parts`: `out[i]` counts samples in
/// `(COARSE_BOUNDS_US[i-1], COARSE_BOUNDS_US[i]]` (the first bucket starts at 0). A bin is
/// placed by its lowest equivalent value, so a bin is never split across two buckets.
#[cfg(test)]
pub(crate) fn coarse_counts_of_bins(parts: &[&Bins]) -> [u64; COARSE_BOUNDS_US.len()] {
    summarise_bins(parts, 0).1
}

/// [`stats_of_bins`] and the coarse bucket counts in one walk over the occupied bins (what a
/// snapshot needs of each histogram). An empty sum needs no walk: a hub with thousands of jobs
/// without samples (say, jobs on no device) must not pay for them at every snapshot.
pub(crate) fn summarise_bins(
    parts: &[&Bins],
    outliers: u64,
) -> (HistogramStats, [u64; COARSE_BOUNDS_US.len()]) {
    let mut coarse = [0u64; COARSE_BOUNDS_US.len()];
    let total: u64 = parts.iter().map(|b| b.total).sum();
    if total == 0 {
        let stats = HistogramStats {
            outliers,
            ..HistogramStats::default()
        };
        return (stats, coarse);
    }
    let count = |i: usize| parts.iter().map(|b| b.count(i)).sum::<u64>();
    let quantiles = [0.5, 0.9, 0.99, 0.999, 0.9999];
    let targets = quantiles.map(|q: f64| ((q * total as f64).ceil() as u64).max(1));
    let mut q = [0u64; 5];
    let mut next_q = 0;
    let (mut first, mut last) = (None, 0);
    let mut running = 0u64;
    let mut mean = 0.0_f64;
    let mut bucket = 0;
    for i in occupied(parts) {
        let c = count(i);
        if c == 0 {
            continue;
        }
        first.get_or_insert(i);
        last = i;
        running += c;
        mean += bin_median(i) as f64 * c as f64 / total as f64;
        while next_q < q.len() && running >= targets[next_q] {
            q[next_q] = bin_high(i).min(MAX_US);
            next_q += 1;
        }
        let low = bin_low(i);
        while bucket + 1 < coarse.len() && low > COARSE_BOUNDS_US[bucket] {
            bucket += 1;
        }
        coarse[bucket] += c;
    }
    let stats = HistogramStats {
        count: total,
        min_us: bin_low(first.unwrap_or(0)).min(MAX_US),
        mean_us: mean,
        p50_us: q[0],
        p90_us: q[1],
        p99_us: q[2],
        p999_us: q[3],
        p9999_us: q[4],
        max_us: bin_high(last).min(MAX_US),
        outliers,
    };
    (stats, coarse)
}

/// Upper bounds (inclusive, µs) of the coarse buckets offered for a bar chart; the last bucket
/// ends at [`MAX_US`] and so holds the outliers too.
pub(crate) const COARSE_BOUNDS_US: [u64; 19] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000, MAX_US,
];

/// Counts per coarse bucket: `out[i]` counts samples in `(COARSE_BOUNDS_US[i-1],
/// COARSE_BOUNDS_US[i]]` (the first bucket starts at 0). A histogram bin is placed by its lowest
/// equivalent value, so a bin is never split across two buckets. The tests' reference for
/// [`coarse_counts_of_bins`].
#[cfg(test)]
pub(crate) fn coarse_counts(h: &Histogram<u64>) -> [u64; COARSE_BOUNDS_US.len()] {
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
pub(crate) fn percentile_distribution(h: &Histogram<u64>, scale: f64) -> String {
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
    fn bins_match_hdrhistogram_indexing() {
        let h = new_histogram();
        assert_eq!(h.distinct_values(), BINS);
        assert_eq!(bin_index(MAX_US), BINS - 332, "MAX_US's bin");
        for i in 0..BINS {
            let low = bin_low(i);
            assert_eq!(bin_index(low), i, "bin {i}");
            assert_eq!(h.lowest_equivalent(low), low, "bin {i}");
            assert_eq!(h.highest_equivalent(low), bin_high(i), "bin {i}");
            assert_eq!(h.median_equivalent(low), bin_median(i), "bin {i}");
            if low > MAX_US {
                break;
            }
        }
        let mut x: u64 = 12345;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % (MAX_US + 1)) >> (x % 30);
            assert_eq!(bin_low(bin_index(v)), h.lowest_equivalent(v), "value {v}");
        }
    }

    #[test]
    fn stats_of_bins_equal_stats_of_the_histogram() {
        let mut x: u64 = 777;
        let mut a = Bins::new();
        let mut b = Bins::new();
        let mut h = new_histogram();
        for n in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match x % 50 {
                0 => MAX_US,
                1 => 0,
                2..=5 => x % 100_000_000,
                _ => x % 20_000,
            };
            h.record(v).unwrap();
            if n % 3 == 0 { &mut a } else { &mut b }.record_bin(bin_index(v));
            if n % 9_999 == 0 {
                let direct = HistogramStats::of(&h, 4);
                assert_eq!(stats_of_bins(&[&a, &b], 4), direct, "after {n}");
                assert_eq!(coarse_counts_of_bins(&[&a, &b]), coarse_counts(&h));
            }
        }
        let mut sum = a.clone();
        sum.add(&b);
        assert!(
            sum.to_histogram() == h,
            "bins move into a histogram exactly"
        );
        assert_eq!(sum.len(), 50_000);
        sum.clear();
        assert!(sum.is_empty() && sum.to_histogram().is_empty());
    }

    /// Bins allocate their counts with their first sample (a hub keeps eight per job), and
    /// empty ones still sum, summarise and clear like zeros.
    #[test]
    fn bins_allocate_with_their_first_sample() {
        let mut a = Bins::new();
        let empty = Bins::new();
        a.add(&empty);
        a.clear();
        assert!(a.counts.is_empty() && empty.counts.is_empty());
        assert_eq!(stats_of_bins(&[&a, &empty], 2).outliers, 2);
        a.record_bin(bin_index(500));
        assert_eq!(a.counts.len(), BINS);
        let mut sum = Bins::new();
        sum.add(&a);
        assert_eq!((sum.counts.len(), sum.len()), (BINS, 1));
        assert_eq!(stats_of_bins(&[&empty, &a], 0).count, 1);
    }

    /// The walks limited to the occupied bins (summaries, sums, clears, histograms) give what
    /// the whole histogram gives, as ranges move: cleared bins, a sum across distant ranges, an
    /// empty part beside a full one.
    #[test]
    fn occupied_ranges_give_the_full_results() {
        let check = |parts: &[&Bins], what: &str| {
            let mut h = new_histogram();
            for b in parts {
                for (i, &c) in b.counts.iter().enumerate() {
                    if c != 0 {
                        h.record_n(bin_low(i), c).unwrap();
                    }
                }
            }
            assert_eq!(stats_of_bins(parts, 0), HistogramStats::of(&h, 0), "{what}");
            assert_eq!(coarse_counts_of_bins(parts), coarse_counts(&h), "{what}");
            let mut via_add_to = new_histogram();
            for b in parts {
                b.add_to(&mut via_add_to);
            }
            assert!(via_add_to == h, "{what}: add_to");
        };
        let empty = Bins::new();
        let mut open = Bins::new();
        let mut closed = Bins::new();
        for v in [900, 1_000, 1_100] {
            open.record_bin(bin_index(v));
        }
        check(&[&closed, &open], "closed empty");
        check(&[&open, &empty], "empty part last");
        closed.add(&open);
        open.clear();
        assert!(
            open.counts.iter().all(|&c| c == 0),
            "clear zeroes its range"
        );
        for v in [3, 40_000_000, 7] {
            open.record_bin(bin_index(v));
        }
        check(&[&closed, &open], "ranges apart");
        check(&[&open], "after clear, the new range only");
        closed.add(&open);
        open.clear();
        check(&[&closed, &open], "all closed");
        open.record_bin(bin_index(MAX_US));
        open.record_bin(bin_index(0));
        check(&[&empty, &open], "both ends");
        let mut sum = Bins::new();
        sum.add(&closed);
        sum.add(&open);
        check(&[&sum], "sum");
        assert_eq!(
            stats_of_bins(&[&sum], 0),
            stats_of_bins(&[&closed, &open], 0)
        );
        sum.clear();
        assert!(sum.counts.iter().all(|&c| c == 0) && sum.is_empty());
        check(&[&sum, &empty], "cleared sum");
    }

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
