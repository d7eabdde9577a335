//! A hub with a store ([`crate::hub::store`]): the state it restores when it starts, the
//! changes of each turn it hands to the store, and the answers to writes, held back until the
//! store has committed them.
//!
//! A commit that fails ends the engine's loop ([`store_failed`]): it answers nothing more, and
//! its run ends with the failure.
//!
//! On restart a running job continues: its device records with a saved result keep it, and the
//! others are pending again and are dispatched (an operation in flight at the crash is sent
//! again: at least once, counted once). Scheduled jobs keep their start, ended jobs stay as
//! they were, and twins keep their versions (so their etags continue).

use std::collections::HashSet;

use crate::clock::Micros;
use crate::hub::error::HubError;
use crate::hub::handle::Reply;
use crate::hub::jobs::{DeviceRecord, DeviceStatus, Job, JobStatus};
use crate::hub::registry::DeviceEntry;
use crate::hub::store::{
    Change, DeviceRow, JobHeader, Journal, Saved, SavedJob, SavedResult, StoreError,
};
use crate::ids::{DeviceIdx, RecordIdx, SlotIdx};
use crate::report::DeviceJobStatistics;

use super::slots::Slots;
use super::Engine;

/// The change that saves record `rec` of job `s`, which has just ended.
pub(super) fn result(s: SlotIdx, r: RecordIdx, rec: &DeviceRecord) -> Change {
    Change::Result(
        s.get(),
        SavedResult {
            record: r.get(),
            status: rec.status,
            error: rec.error,
            method_status: rec.method_status,
            scheduled_us: rec.scheduled_us,
            start_us: rec.start_us,
            end_us: rec.end_us,
            payload: rec.payload.clone(),
        },
    )
}

/// Device `d`'s row as the store keeps it.
fn device_row(d: DeviceIdx, e: &DeviceEntry) -> DeviceRow {
    DeviceRow {
        id: e.id.clone(),
        seq: d.get().into(),
        twin: e.twin.clone(),
        enabled: e.enabled,
    }
}

/// Resolves when the engine's store has committed more or failed; pending forever without a
/// store.
pub(super) async fn store_progressed(journal: &mut Option<Journal>) {
    match journal {
        Some(journal) => journal.progressed().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// This engine with the state `saved` holds (the store's devices win over the registry's
    /// initial ones), saving every change from now on through `journal`.
    pub(crate) fn with_store(mut self, journal: Journal, saved: Saved) -> Self {
        let now = self.clock.now_us();
        self.recorder = std::mem::take(&mut self.recorder).starting_at(now);
        if let Some(pacer) = &mut self.pacer {
            pacer.open_from(now);
        }
        self.restore(saved);
        self.journal = Some(journal);
        self
    }

    /// This engine, holding the device operations of the jobs it restores until
    /// [`Command::Release`](crate::hub::handle::Command): a resumed run releases them once its
    /// devices are connected, so that an operation sent again does not find its device not yet
    /// back (with `connectTimeoutInSeconds` 0 it would fail at once).
    pub(crate) fn holding_restored(mut self) -> Self {
        self.hold_restored = true;
        self
    }

    /// Dispatches the held restored jobs' operations from `now` on.
    pub(super) fn release_restored(&mut self, now: Micros) {
        self.hold_restored = false;
        for i in 0..self.slots.active().len() {
            let s = self.slots.active()[i];
            let run = &mut self.slots[s].run;
            if run.ready_from == Micros::MAX {
                run.ready_from = now;
            }
        }
    }

    /// A restart from the store (with one; None without): commits what this turn changed,
    /// reads the whole store back, and makes it the engine's state in place of what it held.
    /// Jobs and their device records are the saved ones (an operation in flight has no saved
    /// result: it is pending again and is dispatched again), and operations waiting for a
    /// device or an acknowledgement are forgotten with them. Measurements go on. Answers the
    /// devices and jobs read back.
    pub(super) fn reload(&mut self) -> Option<Result<(usize, usize), StoreError>> {
        self.journal.as_ref()?;
        self.save_turn();
        let saved = match self.journal.as_mut()?.reload() {
            Ok(saved) => saved,
            Err(e) => return Some(Err(e)),
        };
        let held = (saved.devices.len(), saved.jobs.len());
        // The operations in flight go back to waiting, in the measurements too.
        for &s in self.slots.active() {
            let slot = &self.slots[s];
            let running = slot
                .job
                .records
                .iter()
                .filter(|r| r.status == DeviceStatus::Running)
                .count();
            for _ in 0..running {
                self.recorder.op_recalled(super::metrics_slot(s));
            }
        }
        self.slots = Slots::default();
        self.cursor = 0;
        self.dispatching.clear();
        self.parked_by_device.clear();
        self.held.clear();
        self.desired_pending.clear();
        self.awaiting_ack.clear();
        self.restore(saved);
        Some(Ok(held))
    }

    /// Makes `saved` the engine's devices and jobs: the store's devices win over the
    /// registry's, and devices the store does not hold yet are noted to be saved.
    fn restore(&mut self, saved: Saved) {
        let mut saved_ids = HashSet::with_capacity(saved.devices.len());
        for device in saved.devices {
            match (self.registry.lookup(&device.id), device.twin) {
                (Ok(d), Some((twin, enabled))) => self.registry.restore(d, twin, enabled),
                (Ok(_), None) => {
                    let _ = self.registry.remove(&device.id);
                }
                (Err(_), Some((twin, enabled))) => {
                    if let Ok(d) = self.registry.add(&device.id, twin.clone()) {
                        self.registry.restore(d, twin, enabled);
                    }
                }
                (Err(_), None) => {}
            }
            saved_ids.insert(device.id);
        }
        // Devices the store does not hold yet (a scenario's, at the first start) are saved too,
        // so that the store alone is the whole registry.
        let unsaved: Vec<DeviceIdx> = self
            .registry
            .iter()
            .filter(|(_, e)| !saved_ids.contains(&*e.id))
            .map(|(d, _)| d)
            .collect();
        self.registry.note_changes().devices.extend(unsaved);
        for job in saved.jobs {
            self.restore_job(job);
        }
    }

    fn restore_job(&mut self, saved: SavedJob) {
        let SavedJob {
            header,
            targets,
            results,
        } = saved;
        let slot = self.recorder.add_job(&header.request.job_id);
        debug_assert_eq!(slot, super::metrics_slot(self.slots.next_slot()));
        let mut job = Job::new(header.request, &self.clock, header.created_us);
        job.start_us = header.start_us;
        job.end_us = header.end_us;
        job.failure_reason = header.failure_reason;
        job.status = header.status;
        match targets {
            Some(targets) => {
                job.records = targets
                    .into_iter()
                    .map(|id| {
                        // A device deleted since: its operation fails as rejected.
                        let device =
                            (self.registry.lookup(&id)).unwrap_or(DeviceIdx::new(u32::MAX));
                        DeviceRecord::pending(device, id.into(), job.start_us)
                    })
                    .collect();
                job.stats = DeviceJobStatistics {
                    device_count: job.records.len() as u64,
                    pending_count: job.records.len() as u64,
                    ..Default::default()
                };
                job.ramp = job.request.control.ramp;
                for r in results {
                    let Some(rec) = job.records.get_mut(r.record as usize) else {
                        continue;
                    };
                    rec.method_status = r.method_status;
                    rec.payload = r.payload;
                    rec.scheduled_us = r.scheduled_us;
                    rec.start_us = r.start_us;
                    job.end_op(r.record as usize, r.status, r.error, r.end_us);
                }
            }
            // Saved before it started: it starts (again) at its start time.
            None if !job.status.is_terminal() => job.status = JobStatus::Queued,
            None => {}
        }
        let s = self.slots.push(job);
        // Dispatch passes over its records with a result (`Slot::take_next`).
        if self.slots[s].job.status.is_terminal() {
            self.slots[s].stop_dispatch();
        }
        self.slots[s].run.ready_from = match self.hold_restored {
            true => Micros::MAX,
            false => self.clock.now_us(),
        };
    }

    /// Notes that job `s` was created, started or ended this turn (with a store).
    pub(super) fn job_changed(&mut self, s: SlotIdx) {
        if self.journal.is_some() {
            self.jobs_changed.push(s);
        }
    }

    /// Saves the devices job `s` targets, now that it started (with a store).
    pub(super) fn save_targets(&mut self, s: SlotIdx) {
        if let Some(journal) = &mut self.journal {
            let ids = self.slots[s]
                .job
                .records
                .iter()
                .map(|r| r.device_id.clone())
                .collect();
            journal.push(Change::Targets(s.get(), ids));
        }
    }

    /// Hands this turn's changes to the store (with one).
    pub(super) fn save_turn(&mut self) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        if let Some(mut changes) = self.registry.take_changes() {
            for id in changes.removed {
                journal.push(Change::Removed(id));
            }
            changes.devices.sort_unstable();
            changes.devices.dedup();
            for d in changes.devices {
                if let Some(e) = self.registry.get(d) {
                    journal.push(Change::Device(device_row(d, e)));
                }
            }
        }
        self.jobs_changed.sort_unstable();
        self.jobs_changed.dedup();
        for s in self.jobs_changed.drain(..) {
            let job = &self.slots[s].job;
            journal.push(Change::Job(Box::new(JobHeader {
                slot: s.get(),
                request: job.request.clone(),
                status: job.status,
                created_us: job.created_us,
                start_us: job.start_us,
                end_us: job.end_us,
                failure_reason: job.failure_reason.clone(),
            })));
        }
        if journal.wants_snapshot(self.registry.len()) {
            let devices = self
                .registry
                .iter()
                .map(|(d, e)| device_row(d, e))
                .collect();
            journal.snapshot(devices);
        }
        journal.flush();
    }

    /// Answers a write: at once in memory, or once the store has committed this turn's changes.
    pub(super) fn answer<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        answer: Result<T, HubError>,
    ) {
        match (&mut self.journal, answer) {
            (Some(journal), Ok(value)) => journal.defer(Box::new(move |saved| {
                let _ = reply.send(saved.map(|()| value));
            })),
            (_, answer) => {
                let _ = reply.send(answer);
            }
        }
    }
}
