//! Deliveries a fleet stamped: the receipts an MQTT fleet sends of the method requests and
//! desired notifications its devices received (the hub cannot tell when a device read a
//! publish), recorded in the delivery histogram as the in-process transport's own stamps are.
//! Receipts stamped with another process's clock come with how well that clock agrees with the
//! engine's; a batch whose agreement is too loose for its latencies is refused, and counted.

use crate::clock::Micros;
use crate::ids::{DeviceIdx, IdxMap, SlotIdx};
use crate::link::{ClockAgreement, OpId, Receipt, Received};
use crate::metrics::Measure;
use crate::receipts::agreement;
use crate::report::DeliveryClockReport;

use super::{metrics_slot, Engine};

/// What the engine keeps for receipts.
#[derive(Debug, Default)]
pub(super) struct Receipts {
    /// The twin update each device was last sent, by desired `$version` (a receipt names the
    /// version, not the operation); kept only for a link that does not stamp deliveries.
    desired: IdxMap<DeviceIdx, (u64, OpId)>,
    /// A batch's (job slot, delivery latency), before it is judged (kept for its capacity).
    batch: Vec<(SlotIdx, Micros)>,
    /// A batch's latencies, for the judgement (kept for its capacity).
    latencies: Vec<Micros>,
    /// How the receipts stamped with another clock were judged; None until one comes.
    clock: Option<DeliveryClockReport>,
}

impl Receipts {
    /// What became of the receipts stamped with another clock, if any came.
    pub(super) fn report(&self) -> Option<DeliveryClockReport> {
        self.clock.clone()
    }

    /// Judges a batch of `n` receipts with `latencies` stamped with a clock agreeing as
    /// `clock` says; answers whether to record them.
    fn judge(&mut self, clock: ClockAgreement, n: usize) -> bool {
        let verdict = agreement::judge(clock, &mut self.latencies);
        let report = self.clock.get_or_insert_with(Default::default);
        if clock.uncertainty_us != agreement::UNMEASURED {
            report.offset_us = Some(clock.offset_us);
            report.uncertainty_us = Some(clock.uncertainty_us);
            report.max_uncertainty_us = report.max_uncertainty_us.max(clock.uncertainty_us);
        }
        match verdict {
            Ok(()) => {
                report.recorded += n as u64;
                true
            }
            Err(why) => {
                report.refused += n as u64;
                report.refusal = Some(why.to_string());
                false
            }
        }
    }
}

impl Engine {
    /// Notes that `device` was sent desired `version` for twin update `op`, when the link
    /// leaves its delivery to the fleet's receipts.
    pub(super) fn sent_desired(&mut self, device: DeviceIdx, version: u64, op: OpId) {
        if !self.link.stamps_deliveries() {
            self.receipts.desired.insert(device, (version, op));
        }
    }

    /// Records the deliveries of a batch of receipts (`clock`: how the clock that stamped them
    /// agrees with the engine's; None: it is the engine's own). A receipt of anything but a
    /// job's operation to that device (a direct call, a notification without a job, another
    /// device's) is ignored.
    pub(super) fn on_receipts(&mut self, receipts: &[Receipt], clock: Option<ClockAgreement>) {
        let mut batch = std::mem::take(&mut self.receipts.batch);
        batch.clear();
        for r in receipts {
            let op = match r.what {
                Received::Method(op) => Some(op),
                Received::Desired(version) => match self.receipts.desired.get(&r.device) {
                    Some(&(v, op)) if v == version => {
                        self.receipts.desired.remove(&r.device);
                        Some(op)
                    }
                    _ => None,
                },
            };
            let delivered = op
                .and_then(|op| self.job_record(op))
                .filter(|(_, rec)| rec.device == r.device)
                .map(|(s, rec)| (s, r.at_us.saturating_sub(rec.scheduled_us)));
            batch.extend(delivered);
        }
        let record = match clock {
            None => true,
            Some(clock) => {
                self.receipts.latencies.clear();
                self.receipts
                    .latencies
                    .extend(batch.iter().map(|&(_, lat)| lat));
                self.receipts.judge(clock, batch.len())
            }
        };
        if record {
            for &(s, lat) in &batch {
                self.recorder
                    .record(metrics_slot(s), Measure::Delivery, lat);
            }
        }
        self.receipts.batch = batch;
    }
}
