//! The engine's job table: every job ever created in its slot (a job's slot is also its
//! metrics slot), its dispatch state, the jobs not yet ended, and the look-up by job id of the
//! jobs the hub still keeps: an ended job is forgotten [`JOB_HISTORY_US`] after its end, as
//! IoT Hub's job history is (its measurements stay in the run's report).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::{Index, IndexMut};

use crate::clock::{secs_us, Micros};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::jobs::{DeviceRecord, Job};
use crate::ids::{RecordIdx, SlotIdx};

/// How long the hub keeps an ended job: "Job history is retained up to 30 days"
/// (https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling#other-limits).
pub(super) const JOB_HISTORY_US: Micros = secs_us(30 * 86_400);

/// A job's dispatch state.
#[derive(Debug, Default)]
pub(super) struct JobRun {
    /// Next record to dispatch.
    pub(super) next: usize,
    /// Dispatched method operations awaiting an answer: (deadline, record), deadlines ascending.
    pub(super) inflight: VecDeque<(Micros, RecordIdx)>,
    /// Operations waiting for their device to connect: (deadline, record), ascending.
    pub(super) parked: VecDeque<(Micros, RecordIdx)>,
    /// No operation is due before this: when a restored job was restored, so that the hub's
    /// downtime does not count as the lag of the operations it dispatches then.
    pub(super) ready_from: Micros,
}

/// One job and its dispatch state.
pub(super) struct Slot {
    pub(super) job: Job,
    pub(super) run: JobRun,
    /// Past its history: the hub no longer shows it.
    pub(super) forgotten: bool,
}

impl Slot {
    /// Record `r`.
    pub(super) fn record(&self, r: RecordIdx) -> &DeviceRecord {
        &self.job.records[r.usize()]
    }

    /// Record `r`, to change.
    pub(super) fn record_mut(&mut self, r: RecordIdx) -> &mut DeviceRecord {
        &mut self.job.records[r.usize()]
    }

    /// Whether records remain to dispatch.
    pub(super) fn undispatched(&self) -> bool {
        self.run.next < self.job.records.len()
    }

    /// The next record to dispatch, now counted as dispatched. Records that already ended are
    /// passed over (a restored job's, with a saved result).
    pub(super) fn take_next(&mut self) -> Option<RecordIdx> {
        while self.undispatched() {
            let r = RecordIdx::new(self.run.next as u32);
            self.run.next += 1;
            if !self.record(r).status.is_terminal() {
                return Some(r);
            }
        }
        None
    }

    /// Leaves nothing to dispatch or await: the job is over.
    pub(super) fn stop_dispatch(&mut self) {
        self.run = JobRun {
            next: self.job.records.len(),
            ..Default::default()
        };
    }
}

/// Every job, by slot.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    /// Slots of the jobs not yet ended, in creation order: the only ones with timed work, so
    /// the engine's step does not grow with the job history.
    active: Vec<SlotIdx>,
    /// Ended jobs still kept, in the order their end was seen.
    ended: VecDeque<SlotIdx>,
    /// The jobs kept, by id.
    by_id: HashMap<String, SlotIdx>,
    /// The ids of the jobs forgotten.
    forgotten_ids: HashSet<String>,
}

impl Slots {
    /// The slot the next job will take.
    pub(super) fn next_slot(&self) -> SlotIdx {
        SlotIdx::new(self.slots.len() as u32)
    }

    /// Adds a job in the next slot; it is active.
    pub(super) fn push(&mut self, job: Job) -> SlotIdx {
        let s = self.next_slot();
        self.by_id.insert(job.request.job_id.clone(), s);
        self.slots.push(Slot {
            job,
            run: JobRun::default(),
            forgotten: false,
        });
        self.active.push(s);
        s
    }

    /// Whether a job has id `id`.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Whether a job with id `id` was forgotten (past its history).
    pub(super) fn forgot(&self, id: &str) -> bool {
        self.forgotten_ids.contains(id)
    }

    /// The slot of job `id`, or 404 JobNotFound.
    pub(super) fn find(&self, id: &str) -> Result<SlotIdx, HubError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| HubError::new(ErrorCode::JobNotFound, format!("no job with id '{id}'")))
    }

    /// Slot `s`, if there is one.
    pub(super) fn get(&self, s: SlotIdx) -> Option<&Slot> {
        self.slots.get(s.usize())
    }

    /// Slot `s`, if there is one, to change.
    pub(super) fn get_mut(&mut self, s: SlotIdx) -> Option<&mut Slot> {
        self.slots.get_mut(s.usize())
    }

    /// Every job, in creation order, forgotten ones too (for measurements and views).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    /// The jobs the hub keeps, in creation order (what its API shows).
    pub(super) fn kept(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.forgotten)
    }

    /// The jobs not yet ended (as of the last [`Slots::retain_active`]), in creation order.
    pub(super) fn active(&self) -> &[SlotIdx] {
        &self.active
    }

    /// Moves the ended jobs among the active ones to the history, and forgets the jobs that
    /// ended [`JOB_HISTORY_US`] before `now` (their ids are free again).
    pub(super) fn retain_active(&mut self, now: Micros) {
        let (slots, ended) = (&self.slots, &mut self.ended);
        self.active.retain(|&s| {
            let over = slots[s.usize()].job.status.is_terminal();
            if over {
                ended.push_back(s);
            }
            !over
        });
        while let Some(&s) = self.ended.front() {
            let slot = &mut self.slots[s.usize()];
            if slot.job.end_us.unwrap_or(0).saturating_add(JOB_HISTORY_US) > now {
                break;
            }
            slot.forgotten = true;
            let id = &slot.job.request.job_id;
            self.by_id.remove(id);
            self.forgotten_ids.insert(id.clone());
            self.ended.pop_front();
        }
    }
}

impl Index<SlotIdx> for Slots {
    type Output = Slot;

    fn index(&self, s: SlotIdx) -> &Slot {
        &self.slots[s.usize()]
    }
}

impl IndexMut<SlotIdx> for Slots {
    fn index_mut(&mut self, s: SlotIdx) -> &mut Slot {
        &mut self.slots[s.usize()]
    }
}
