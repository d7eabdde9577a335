//! The recorder's interval log (`histograms.hlog` without its header): each closed second's
//! histograms are encoded when `tick` closes it, the open second's only when the results are
//! written.

use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::{JobMetrics, Recorder};
use crate::metrics::histogram::{new_histogram, Bins};
use crate::metrics::{tag, Measure, US_PER_S};

impl Recorder {
    /// The interval-log lines of the closed seconds (no header), or the first error encoding
    /// one of them.
    pub(crate) fn closed_intervals(&self) -> Result<&[u8], &str> {
        match &self.hlog_error {
            Some(e) => Err(e),
            None => Ok(&self.hlog),
        }
    }

    /// Encodes the open second's samples into the log, keeping the first error.
    pub(super) fn encode_closing_interval(&mut self) {
        let encoded = encode_interval(
            &mut self.hlog,
            &mut self.serializer,
            &mut self.scratch,
            &self.open,
            &self.jobs,
            Duration::from_secs(self.open_sec),
            Duration::from_secs(self.interval_s),
        );
        if let Err(e) = encoded {
            self.hlog_error.get_or_insert(e);
        }
    }

    /// Encodes the samples of the open interval (not yet closed by `tick`) as interval-log lines
    /// starting at `open_sec`, lasting until `now_us` (at most one second). Appends nothing when
    /// the open interval holds no sample.
    pub(crate) fn encode_open_interval(
        &self,
        out: &mut Vec<u8>,
        now_us: u64,
    ) -> Result<(), String> {
        if self.open.iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        let start_us = self.open_sec * US_PER_S;
        let len_us = now_us
            .saturating_sub(start_us)
            .clamp(1, self.interval_s * US_PER_S);
        encode_interval(
            out,
            &mut V2DeflateSerializer::new(),
            &mut new_histogram(),
            &self.open,
            &self.jobs,
            Duration::from_micros(start_us),
            Duration::from_micros(len_us),
        )
    }
}

/// Appends one interval's entries: the overall histogram of each measure, then each job's (tags
/// as [`tag`] builds them), skipping empty ones. `scratch` is clobbered.
fn encode_interval(
    out: &mut Vec<u8>,
    serializer: &mut V2DeflateSerializer,
    scratch: &mut Histogram<u64>,
    overall: &[Bins; 4],
    jobs: &[JobMetrics],
    start: Duration,
    duration: Duration,
) -> Result<(), String> {
    let mut writer = IntervalLogWriterBuilder::new()
        .begin_log_with(out, serializer)
        .map_err(|e| e.to_string())?;
    let tagged = Measure::ALL
        .iter()
        .map(|&m| (&overall[m.index()], tag::overall(m)))
        .chain(jobs.iter().flat_map(|j| {
            Measure::ALL
                .iter()
                .map(|&m| (&j.open[m.index()], j.tags[m.index()].as_str()))
        }));
    for (bins, tag) in tagged {
        if bins.is_empty() {
            continue;
        }
        scratch.reset();
        bins.add_to(scratch);
        let tag = Tag::new(tag).ok_or_else(|| format!("invalid interval log tag {tag:?}"))?;
        writer
            .write_histogram(scratch, start, duration, Some(tag))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
