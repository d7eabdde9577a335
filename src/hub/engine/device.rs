//! What devices and their transports tell the engine: connections, method answers, the
//! transport's word on held method requests, desired-patch deliveries and reported properties,
//! and the device-side requests of a transport (look-up, twin read, reported patch).

use serde_json::{json, Value};

use crate::clock::Micros;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::handle::DeviceCommand;
use crate::hub::jobs::{DeviceError, DeviceStatus, JobKind};
use crate::hub::twin::Object;
use crate::ids::{DeviceIdx, RecordIdx, SlotIdx};
use crate::link::{FromDevice, OpId};
use crate::metrics::Measure;

use super::{metrics_slot, Engine, Target};

impl Engine {
    /// Each message is stamped when the engine takes it, not when its batch arrived: the
    /// messages of a batch wait in it while the ones before are handled.
    pub(super) fn on_device_batch(&mut self, batch: impl IntoIterator<Item = FromDevice>) {
        let mut stamps = self.clock.stamps();
        for msg in batch {
            let now = self.stamp(&mut stamps);
            self.on_device(msg, now);
        }
    }

    /// Lets a device side that runs in the engine's own task act at `now` (see
    /// [`DeviceLink::poll_devices`](crate::link::DeviceLink::poll_devices)) and handles what its
    /// devices sent; answers whether they sent anything, and when its next timer is due.
    pub(super) fn hear_local_devices(&mut self, now: Micros) -> (bool, Option<Micros>) {
        let next = self.link.poll_devices(now, &mut self.inbox);
        if self.inbox.is_empty() {
            return (false, next);
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        self.on_device_batch(inbox.drain(..));
        self.inbox = inbox;
        (true, next)
    }

    fn on_device(&mut self, msg: FromDevice, now: Micros) {
        match msg {
            FromDevice::Connected { device } => {
                self.registry.set_connected(device, true, now);
                self.recorder.set_connected(self.registry.connected());
                self.on_connected(device, now);
            }
            FromDevice::Disconnected { device } => {
                self.registry.set_connected(device, false, now);
                self.recorder.set_connected(self.registry.connected());
            }
            FromDevice::MethodResponse {
                op,
                device,
                status,
                payload,
                delivered_us,
            } => {
                self.registry.touch(device, now);
                match Target::of(op) {
                    Target::Direct(id) => self.direct.answer(id, device, status, payload),
                    Target::Job(s, r) => {
                        self.on_method_response((s, r), device, status, payload, delivered_us, now)
                    }
                }
            }
            FromDevice::MethodHeld { op, device } => match Target::of(op) {
                Target::Direct(id) => self.direct.held(id, device),
                Target::Job(s, r) => {
                    if self.running_record(s, r, device).is_some() {
                        self.held.insert(op);
                    }
                }
            },
            FromDevice::MethodReleased { op, device } => match Target::of(op) {
                Target::Direct(id) => self.direct.released(id, device, now),
                Target::Job(s, r) => self.on_method_released(op, s, r, device, now),
            },
            FromDevice::MethodUnreachable { op, device } => match Target::of(op) {
                Target::Direct(id) => self.direct.unreachable(id, device, &self.registry),
                Target::Job(s, r) => {
                    self.held.remove(&op);
                    if self.running_record(s, r, device).is_some() {
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::NotOnline);
                    }
                }
            },
            FromDevice::DesiredDelivered { op, delivered_us } => {
                if let Some((s, rec)) = self.job_record(op) {
                    let lat = delivered_us.saturating_sub(rec.scheduled_us);
                    self.recorder
                        .record(metrics_slot(s), Measure::Delivery, lat);
                }
            }
            FromDevice::Received { receipts, clock } => self.on_receipts(&receipts, clock),
            FromDevice::Reported {
                device,
                patch,
                ack_of,
            } => {
                if let Value::Object(patch) = &*patch {
                    let _ = self.report(device, patch, ack_of, now);
                }
            }
        }
    }

    /// Merges a device's reported patch, records the acknowledged twin update's round trip, and
    /// answers the new reported `$version`.
    fn report(
        &mut self,
        device: DeviceIdx,
        patch: &Object,
        ack_of: Option<OpId>,
        now: Micros,
    ) -> Result<u64, HubError> {
        let version = self
            .registry
            .update_twin(device, |t| t.patch_reported(patch, now));
        self.registry.touch(device, now);
        self.check_ack(device, now);
        if let Some(op) = ack_of {
            if let Some((s, rec)) = self.job_record(op) {
                let lat = now.saturating_sub(rec.start_us);
                self.recorder
                    .record(metrics_slot(s), Measure::RoundTrip, lat);
            }
        }
        version
    }

    /// Ends `device`'s twin operation awaiting acknowledgement, if any, once its reported
    /// properties hold every desired value the job wrote.
    fn check_ack(&mut self, device: DeviceIdx, now: Micros) {
        let Some(&op) = self.awaiting_ack.get(&device) else {
            return;
        };
        let Target::Job(s, r) = Target::of(op) else {
            return;
        };
        if self.running_record(s, r, device).is_none() {
            self.awaiting_ack.remove(&device);
            return;
        }
        let JobKind::Twin(update) = &self.slots[s].job.request.kind else {
            return;
        };
        let acknowledged = match (&update.desired, self.registry.get(device)) {
            (Some(desired), Some(entry)) => contains(&entry.twin.reported.props, desired),
            _ => false,
        };
        if acknowledged {
            self.awaiting_ack.remove(&device);
            self.finish_op(s, r, now, DeviceStatus::Completed, DeviceError::None);
        }
    }

    /// Answers a device transport's request.
    pub(super) fn on_device_command(&mut self, cmd: DeviceCommand, now: Micros) {
        match cmd {
            DeviceCommand::Lookup(id, reply) => {
                let _ = reply.send(self.registry.lookup(&id));
            }
            DeviceCommand::Twin(device, reply) => {
                let twin = self.registry.get(device).map(|e| {
                    json!({
                        "desired": e.twin.desired.to_device_json(),
                        "reported": e.twin.reported.to_device_json(),
                    })
                });
                self.registry.touch(device, now);
                let _ = reply.send(twin.ok_or_else(|| {
                    HubError::new(ErrorCode::DeviceNotFound, "the device was removed")
                }));
            }
            DeviceCommand::Report {
                device,
                patch,
                ack_of,
                reply,
            } => {
                let version = self.report(device, &patch, ack_of, now);
                self.answer(reply, version);
            }
        }
    }

    fn on_method_released(
        &mut self,
        op: OpId,
        s: SlotIdx,
        r: RecordIdx,
        device: DeviceIdx,
        now: Micros,
    ) {
        if !self.held.remove(&op) {
            return;
        }
        let until = now.saturating_add(self.response_timeout_us(s));
        if let Some(rec) = self.running_record(s, r, device) {
            // The request reached the device only now: its round trip and timeout start here.
            rec.start_us = now;
            self.slots[s].run.inflight.push_back((until, r));
        }
    }

    fn on_method_response(
        &mut self,
        (s, r): (SlotIdx, RecordIdx),
        device: DeviceIdx,
        status: i32,
        payload: Option<Box<Value>>,
        delivered_us: Option<Micros>,
        now: Micros,
    ) {
        // Not in flight to this device: timed out, cancelled, or another device's answer.
        let Some(rec) = self.running_record(s, r, device) else {
            return;
        };
        rec.method_status = status;
        rec.payload = payload;
        let (start, scheduled) = (rec.start_us, rec.scheduled_us);
        let slot = metrics_slot(s);
        self.recorder
            .record(slot, Measure::RoundTrip, now.saturating_sub(start));
        if let Some(delivered) = delivered_us {
            self.recorder
                .record(slot, Measure::Delivery, delivered.saturating_sub(scheduled));
        }
        if (200..300).contains(&status) {
            self.finish_op(s, r, now, DeviceStatus::Completed, DeviceError::None);
        } else {
            self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::DeviceStatus);
        }
    }

    fn on_connected(&mut self, device: DeviceIdx, now: Micros) {
        if let Some(ops) = self.parked_by_device.remove(&device) {
            for (op, connect_deadline) in ops {
                let Target::Job(s, r) = Target::of(op) else {
                    continue;
                };
                let slot = &self.slots[s];
                if slot.record(r).status != DeviceStatus::Scheduled {
                    continue;
                }
                // The device is counted as pending while parked; send_method moves it. Its
                // engine lag was recorded when it was dispatched and parked: once per operation.
                self.send_method(s, r, now, connect_deadline);
            }
        }
        if let Some(op) = self.desired_pending.remove(&device) {
            if let (Some(entry), Target::Job(s, _)) = (self.registry.get(device), Target::of(op)) {
                if let Some(JobKind::Twin(update)) =
                    self.slots.get(s).map(|slot| &slot.job.request.kind)
                {
                    if let Some(desired) = &update.desired {
                        let version = entry.twin.desired.version;
                        let desired = desired.clone();
                        self.notify_desired(device, Some(op), version, &desired);
                    }
                }
            }
        }
        self.direct.on_connected(device, now, &mut *self.link);
    }
}

/// Whether `have` holds every value of `want`, recursively (`null` in `want`: the key is absent).
fn contains(have: &Object, want: &Object) -> bool {
    want.iter().all(|(k, w)| match (have.get(k), w) {
        (None, Value::Null) => true,
        (Some(Value::Object(h)), Value::Object(w)) => contains(h, w),
        (Some(h), w) => h == w,
        (None, _) => false,
    })
}
