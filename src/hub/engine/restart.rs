//! A hub restart (a scenario's `hub_restart` fault): the hub's endpoints drop every device
//! connection and its engine starts again from its state. A hub with a store commits what it
//! changed, reads the store back and goes on from that, exactly as a hub started again on its
//! state directory would (see `persist`). A hub in memory goes on from the state it holds:
//! jobs keep their status, records and statistics, and twins their versions and etags.
//!
//! In memory, an operation in flight has no recorded answer, so it is sent again: a method operation waits
//! for its device to reconnect within the job's connect timeout, counted from the restart (with
//! `connectTimeoutInSeconds` 0 it fails 404103 DeviceNotOnline at once, as for any device not
//! online when its job reaches it), and a twin update awaiting its acknowledgement notifies the
//! device again when it reconnects. A device may so see a method twice; it is counted once.
//! Direct method calls in flight time out.

use crate::clock::Micros;
use crate::hub::handle::Restarted;
use crate::hub::jobs::{DeviceError, DeviceStatus, JobKind, JobStatus};
use crate::ids::{DeviceIdx, RecordIdx};
use crate::link::ToDevice;

use super::{job_op, metrics_slot, Engine};

impl Engine {
    /// Restarts the hub at `now` (see [`Command::Restart`](crate::hub::handle::Command)).
    pub(super) fn restart(&mut self, now: Micros) -> Restarted {
        // The second before ends with the devices it had.
        self.recorder.tick(now);
        for device in (0..self.registry.len() as u32).map(DeviceIdx::new) {
            if self.registry.set_connected(device, false, now) {
                self.link.send(ToDevice::Disconnect { device });
            }
        }
        self.recorder.set_connected(0);
        let unreadable = match self.reload() {
            Some(Ok((devices, jobs))) => {
                self.link.flush();
                return Restarted::FromStore { devices, jobs };
            }
            Some(Err(e)) => Some(e.to_string()),
            None => None,
        };
        for i in 0..self.slots.active().len() {
            let s = self.slots.active()[i];
            if self.slots[s].job.status != JobStatus::Running {
                continue;
            }
            let connect_us = match &self.slots[s].job.request.kind {
                JobKind::Method(call) => Some(call.connect_timeout_us()),
                JobKind::Twin(_) => None,
            };
            for r in RecordIdx::all(self.slots[s].job.records.len()) {
                let rec = self.slots[s].record(r);
                if rec.status != DeviceStatus::Running {
                    continue;
                }
                let (device, op) = (rec.device, job_op(s, r));
                match connect_us {
                    Some(0) => {
                        self.held.remove(&op);
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::NotOnline);
                    }
                    Some(connect_us) => {
                        self.held.remove(&op);
                        let deadline = now.saturating_add(connect_us);
                        let slot = &mut self.slots[s];
                        slot.record_mut(r).status = DeviceStatus::Scheduled;
                        slot.job.stats.running_count -= 1;
                        slot.job.stats.pending_count += 1;
                        slot.run.parked.push_back((deadline, r));
                        self.recorder.op_recalled(metrics_slot(s));
                        self.parked_by_device
                            .entry(device)
                            .or_default()
                            .push((op, deadline));
                    }
                    None => {
                        self.desired_pending.insert(device, op);
                    }
                }
            }
        }
        self.link.flush();
        match unreadable {
            Some(why) => Restarted::StoreUnreadable(why),
            None => Restarted::FromMemory,
        }
    }
}
