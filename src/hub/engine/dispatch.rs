//! The engine's time-driven work: starting jobs at their start time, dispatching their device
//! operations (at once, or paced by the tier's rate, round-robin over the running jobs), and
//! failing operations whose response or connect timeout passed, or that the job's maximum
//! execution time left unreached.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::{secs_us, Micros};
use crate::hub::jobs::{DeviceError, DeviceRecord, DeviceStatus, JobKind, JobStatus};
use crate::hub::twin::Object;
use crate::ids::{DeviceIdx, RecordIdx, SlotIdx};
use crate::link::{OpId, ToDevice};
use crate::metrics::Measure;
use crate::query::parse_condition;
use crate::report::DeviceJobStatistics;

use super::slots::Slot;
use super::{job_op, metrics_slot, Engine};

/// Device operations dispatched per engine step before it looks at its mailboxes again.
const DISPATCH_CHUNK: usize = 4096;

impl Engine {
    /// Does all work due at `now`; returns true when dispatch work remains runnable at once.
    pub(super) fn step(&mut self, now: Micros) -> bool {
        for i in 0..self.slots.active().len() {
            self.advance_job(self.slots.active()[i], now);
        }
        self.slots.retain_active(now);
        self.direct.expire(now);
        self.dispatch()
    }

    /// The earliest time the engine has timed work.
    pub(super) fn next_deadline(&self) -> Micros {
        let mut next = Micros::MAX;
        for slot in self.slots.active().iter().map(|&s| &self.slots[s]) {
            let job = &slot.job;
            match job.status {
                JobStatus::Queued | JobStatus::Scheduled => next = next.min(job.start_us),
                JobStatus::Running => {
                    if let Some(&(d, _)) = slot.run.inflight.front() {
                        next = next.min(d);
                    }
                    if let Some(&(d, _)) = slot.run.parked.front() {
                        next = next.min(d);
                    }
                    if job.stats.pending_count > 0 {
                        next = next.min(job.expires_us());
                    }
                    if slot.undispatched() {
                        let ready = ready_us(slot);
                        next = next.min(match &self.pacer {
                            Some(p) => p.next_open(ready),
                            None => ready,
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some(d) = self.direct.next_deadline() {
            next = next.min(d);
        }
        next
    }

    fn advance_job(&mut self, s: SlotIdx, now: Micros) {
        let job = &mut self.slots[s].job;
        match job.status {
            JobStatus::Queued if job.start_us > now => job.status = JobStatus::Scheduled,
            JobStatus::Queued | JobStatus::Scheduled if job.start_us <= now => {
                self.start_job(s, now)
            }
            JobStatus::Running => {
                self.expire_ops(s, now);
                self.finish_job_if_done(s, now);
            }
            _ => {}
        }
    }

    fn start_job(&mut self, s: SlotIdx, now: Micros) {
        let text = self.slots[s].job.request.query_condition.clone();
        let cond = match parse_condition(&text) {
            Ok(c) => c,
            Err(e) => {
                let job = &mut self.slots[s].job;
                job.status = JobStatus::Failed;
                job.end_us = Some(now);
                job.failure_reason = Some(format!("invalid queryCondition: {e}"));
                self.job_changed(s);
                return;
            }
        };
        let targets = match &self.slots[s].job.request.control.devices {
            Some(devices) => devices.to_vec(),
            None => self.registry.select(&cond),
        };
        let job = &mut self.slots[s].job;
        job.ramp = job.request.control.ramp;
        if let Some(ramp) = job.ramp.as_mut() {
            ramp.start(job.start_us);
        }
        job.records = targets
            .iter()
            .filter_map(|&d| self.registry.get(d).map(|e| (d, e.id.clone())))
            .map(|(device, device_id)| DeviceRecord::pending(device, device_id, job.start_us))
            .collect();
        job.stats = DeviceJobStatistics {
            device_count: job.records.len() as u64,
            pending_count: job.records.len() as u64,
            ..Default::default()
        };
        job.status = JobStatus::Running;
        self.job_changed(s);
        self.save_targets(s);
        self.finish_job_if_done(s, now);
    }

    /// Fails timed-out operations and, past the job's max execution time, everything not reached.
    fn expire_ops(&mut self, s: SlotIdx, now: Micros) {
        let response_timeout = self.response_timeout_us(s);
        loop {
            let slot = &mut self.slots[s];
            match slot.run.inflight.front() {
                Some(&(deadline, r)) if deadline <= now => {
                    slot.run.inflight.pop_front();
                    let rec = slot.record(r);
                    // A held operation's timeout has not started; a released one has a later
                    // deadline, queued when it was released.
                    let current = rec.status == DeviceStatus::Running
                        && deadline >= rec.start_us.saturating_add(response_timeout)
                        && !self.held.contains(&job_op(s, r));
                    if current {
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Timeout);
                    }
                }
                _ => break,
            }
        }
        loop {
            let slot = &mut self.slots[s];
            match slot.run.parked.front() {
                Some(&(deadline, r)) if deadline <= now => {
                    slot.run.parked.pop_front();
                    if slot.record(r).status == DeviceStatus::Scheduled {
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::NotOnline);
                    }
                }
                _ => break,
            }
        }
        let job = &self.slots[s].job;
        let expires = job.expires_us();
        if now >= expires && job.stats.pending_count > 0 {
            let slot = &mut self.slots[s];
            slot.run.next = slot.job.records.len();
            for r in RecordIdx::all(slot.job.records.len()) {
                let status = self.slots[s].record(r).status;
                if matches!(status, DeviceStatus::Pending | DeviceStatus::Scheduled) {
                    self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Expired);
                }
            }
        }
    }

    fn finish_job_if_done(&mut self, s: SlotIdx, now: Micros) {
        let job = &mut self.slots[s].job;
        if job.status != JobStatus::Running
            || job.stats.pending_count > 0
            || job.stats.running_count > 0
        {
            return;
        }
        job.end_us = Some(now);
        if job.errors.expired > 0 {
            job.status = JobStatus::Failed;
            job.failure_reason = Some(format!(
                "maxExecutionTimeInSeconds ({} s) ended before {} of {} devices were reached",
                job.request.max_execution_s, job.errors.expired, job.stats.device_count
            ));
        } else {
            job.status = JobStatus::Completed;
        }
        self.job_changed(s);
    }

    /// The response timeout of job `s`'s method call, or its twin acknowledgement timeout (0
    /// for twin jobs that succeed when written).
    pub(super) fn response_timeout_us(&self, s: SlotIdx) -> Micros {
        let request = &self.slots[s].job.request;
        match &request.kind {
            JobKind::Method(call) => call.response_timeout_us(),
            JobKind::Twin(_) => secs_us(request.control.ack_timeout_s.unwrap_or(0)),
        }
    }

    /// Dispatches due operations, each stamped when it is dispatched; true when more could go
    /// at once.
    fn dispatch(&mut self) -> bool {
        // The list is kept for its capacity: the engine steps at every event.
        let mut running = std::mem::take(&mut self.dispatching);
        running.clear();
        running.extend(self.slots.active().iter().copied().filter(|&s| {
            let slot = &self.slots[s];
            slot.job.status == JobStatus::Running && slot.undispatched()
        }));
        let more = !running.is_empty() && self.dispatch_over(&running);
        self.dispatching = running;
        more
    }

    /// Dispatches the due operations of the `running` jobs (not empty).
    fn dispatch_over(&mut self, running: &[SlotIdx]) -> bool {
        let mut budget = DISPATCH_CHUNK;
        let mut stamps = self.clock.stamps();
        match self.pacer.take() {
            None => {
                for &s in running {
                    while budget > 0 {
                        let now = self.stamp(&mut stamps);
                        let slot = &mut self.slots[s];
                        let ready = ready_us(slot);
                        if ready > now {
                            break;
                        }
                        let Some(r) = slot.take_next() else {
                            break;
                        };
                        self.dispatch_op(s, r, ready, now);
                        budget -= 1;
                    }
                }
                budget == 0
            }
            Some(mut pacer) => {
                let mut more = false;
                while budget > 0 {
                    let now = self.stamp(&mut stamps);
                    let s = running[self.cursor % running.len()];
                    let slot = &mut self.slots[s];
                    let ready = ready_us(slot);
                    if !slot.undispatched() || ready > now {
                        self.cursor += 1;
                        let idle = |s: &SlotIdx| {
                            let slot = &self.slots[*s];
                            !slot.undispatched() || ready_us(slot) > now
                        };
                        if running.iter().all(idle) {
                            break;
                        }
                        continue;
                    }
                    let Some(at) = pacer.take(now, ready) else {
                        break;
                    };
                    let Some(r) = slot.take_next() else {
                        break;
                    };
                    self.cursor += 1;
                    self.dispatch_op(s, r, at, now);
                    budget -= 1;
                    more = budget == 0;
                }
                self.pacer = Some(pacer);
                more
            }
        }
    }

    fn dispatch_op(&mut self, s: SlotIdx, r: RecordIdx, scheduled: Micros, now: Micros) {
        let slot = &mut self.slots[s];
        if let Some(ramp) = slot.job.ramp.as_mut() {
            // Exactly on its slot unless something later (the tier) held the device back.
            let slot_us = ramp.next_us();
            ramp.notified(if scheduled as f64 > slot_us.ceil() {
                scheduled as f64
            } else {
                slot_us
            });
        }
        let rec = &mut slot.job.records[r.usize()];
        rec.scheduled_us = scheduled;
        let device = rec.device;
        let op = job_op(s, r);
        self.recorder.record(
            metrics_slot(s),
            Measure::EngineLag,
            now.saturating_sub(scheduled),
        );
        if self.registry.get(device).is_none() {
            self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Rejected);
            return;
        }
        match &slot.job.request.kind {
            JobKind::Method(call) => {
                let connect_deadline = now.saturating_add(call.connect_timeout_us());
                if self.registry.is_connected(device) {
                    self.send_method(s, r, now, connect_deadline);
                } else if call.connect_timeout_s == 0 {
                    self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::NotOnline);
                } else {
                    rec.status = DeviceStatus::Scheduled;
                    slot.run.parked.push_back((connect_deadline, r));
                    self.parked_by_device
                        .entry(device)
                        .or_default()
                        .push((op, connect_deadline));
                }
            }
            JobKind::Twin(update) => {
                let update = update.clone();
                let applied = self.registry.update_twin(device, |twin| {
                    if let Some(tags) = &update.tags {
                        twin.patch_tags(tags, now)?;
                    }
                    match &update.desired {
                        Some(desired) => twin.patch_desired(desired, now).map(Some),
                        None => Ok(None),
                    }
                });
                match applied {
                    Ok(version) => {
                        self.slots[s].record_mut(r).start_us = now;
                        let ack_us = self.response_timeout_us(s);
                        if ack_us > 0 && update.desired.is_some() {
                            self.await_ack(s, r, now + ack_us);
                        } else {
                            self.finish_op(s, r, now, DeviceStatus::Completed, DeviceError::None);
                        }
                        if let (Some(version), Some(desired)) = (version, update.desired) {
                            self.notify_desired(device, Some(op), version, &desired);
                        }
                    }
                    Err(_) => {
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Rejected)
                    }
                }
            }
        }
    }

    /// Keeps twin operation `s`/`r` running until its device reports the desired values back,
    /// or fails it `timed_out` at `deadline`.
    fn await_ack(&mut self, s: SlotIdx, r: RecordIdx, deadline: Micros) {
        let slot = &mut self.slots[s];
        let rec = slot.record_mut(r);
        rec.status = DeviceStatus::Running;
        let device = rec.device;
        slot.job.stats.pending_count -= 1;
        slot.job.stats.running_count += 1;
        slot.run.inflight.push_back((deadline, r));
        self.recorder.op_dispatched(metrics_slot(s));
        self.awaiting_ack.insert(device, job_op(s, r));
    }

    /// Sends method job `s`'s request to record `r`'s device at `now`: the record runs until the
    /// call's response timeout, and the device may take until `connect_deadline` to subscribe.
    pub(super) fn send_method(
        &mut self,
        s: SlotIdx,
        r: RecordIdx,
        now: Micros,
        connect_deadline: Micros,
    ) {
        let slot = &mut self.slots[s];
        let JobKind::Method(call) = &slot.job.request.kind else {
            return;
        };
        let (method, payload) = (call.name.clone(), call.payload.clone());
        let deadline = now.saturating_add(call.response_timeout_us());
        let rec = slot.record_mut(r);
        rec.status = DeviceStatus::Running;
        rec.start_us = now;
        let device = rec.device;
        slot.job.stats.pending_count -= 1;
        slot.job.stats.running_count += 1;
        slot.run.inflight.push_back((deadline, r));
        self.recorder.op_dispatched(metrics_slot(s));
        self.link.send(ToDevice::Method {
            op: job_op(s, r),
            device,
            method,
            payload,
            connect_deadline,
        });
    }

    /// Sends a desired patch to `device` if it is connected; a job's patch (`op`) waits for the
    /// device to connect otherwise.
    pub(super) fn notify_desired(
        &mut self,
        device: DeviceIdx,
        op: Option<OpId>,
        version: u64,
        patch: &Object,
    ) {
        let connected = self.registry.is_connected(device);
        if connected {
            if let Some(op) = op {
                self.sent_desired(device, version, op);
            }
            self.link.send(ToDevice::Desired {
                op,
                device,
                version,
                patch: Arc::new(Value::Object(patch.clone())),
            });
        } else if let Some(op) = op {
            self.desired_pending.insert(device, op);
        }
    }
}

/// When the next device of the job in `slot` may be dispatched: its start, or its rate's next
/// slot, and not before a restored job was restored.
fn ready_us(slot: &Slot) -> Micros {
    let job = &slot.job;
    let ready = match &job.ramp {
        Some(ramp) => (ramp.next_us().ceil() as Micros).max(job.start_us),
        None => job.start_us,
    };
    ready.max(slot.run.ready_from)
}
