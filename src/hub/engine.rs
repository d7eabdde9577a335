//! The job engine: the one owner of the registry, the twins and every job. It runs as a single
//! task (an actor): API handlers send [`Command`]s, transports send batches of
//! [`FromDevice`] messages, and its own timers start jobs, pace dispatch and expire operations.
//!
//! Per device operation it records the intended time (the job's start, or the throttle slot)
//! and every later step, so queueing inside the hub shows up in the figures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::handle::{Command, DeviceCommand, HubView, JobView, Reply, TwinWrite};
use crate::hub::jobs::{
    DeviceError, DeviceRecord, DeviceStatus, Job, JobKind, JobRequest, JobStatus, MethodCall,
};
use crate::hub::registry::{twin_json, Registry};
use crate::hub::throttle::{Limits, Pacer};
use crate::hub::twin::Object;
use crate::ids::DeviceIdx;
use crate::link::{DeviceLink, FromDevice, OpId, ToDevice};
use crate::metrics::{JobSlot, Measure, Recorder};
use crate::query::{parse_condition, parse_query, Document, Plan, Source};
use crate::report::{DeviceJobStatistics, JobReport};

/// Device operations dispatched per engine step before it looks at its mailboxes again.
const DISPATCH_CHUNK: usize = 4096;
/// How often the engine publishes a [`HubView`].
const VIEW_EVERY_US: Micros = 100_000;
/// The op-id slot of direct method calls.
const DIRECT_SLOT: u32 = u32::MAX;

/// A job's dispatch state.
#[derive(Debug, Default)]
struct JobRun {
    /// Next record to dispatch.
    next: usize,
    /// Dispatched method operations awaiting an answer: (deadline, record), deadlines ascending.
    inflight: VecDeque<(Micros, u32)>,
    /// Operations waiting for their device to connect: (deadline, record), ascending.
    parked: VecDeque<(Micros, u32)>,
}

struct Slot {
    job: Job,
    run: JobRun,
}

/// A direct method call in progress.
struct DirectCall {
    reply: Reply<(i32, Value)>,
    device: DeviceIdx,
    call: MethodCall,
    /// The end of the call's connect timeout.
    connect_deadline: Micros,
    stage: Stage,
}

/// Where a direct method call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the device to connect, until the connect deadline (then 404103).
    Waiting,
    /// Sent; the device must answer by `until` (then 504101).
    Sent {
        /// The response deadline.
        until: Micros,
    },
    /// Held by the transport until the device subscribes to methods; the transport says when
    /// it is delivered or given up.
    Held,
}

/// What the engine hands back when it stops.
pub struct EngineOutput {
    /// Every measurement.
    pub recorder: Recorder,
    /// The jobs as reported.
    pub jobs: Vec<JobReport>,
    /// Devices in the registry at the end.
    pub devices: u64,
}

/// The job engine's state.
pub struct Engine {
    clock: Clock,
    limits: Limits,
    registry: Registry,
    slots: Vec<Slot>,
    /// Slots of the jobs not yet ended, in creation order: the only ones with timed work, so
    /// the engine's step does not grow with the job history.
    active: Vec<u32>,
    by_id: HashMap<String, u32>,
    recorder: Recorder,
    link: Box<dyn DeviceLink>,
    pacer: Option<Pacer>,
    /// Round-robin cursor over running jobs for paced dispatch.
    cursor: usize,
    /// Job operations waiting for a device to connect, with their connect deadlines.
    parked_by_device: HashMap<DeviceIdx, Vec<(OpId, Micros)>>,
    /// Job method operations a transport holds for a device not yet subscribed to methods:
    /// their response timeout waits until the transport releases them.
    held: HashSet<OpId>,
    /// Desired notifications waiting for a device to connect.
    desired_pending: HashMap<DeviceIdx, OpId>,
    direct: HashMap<u32, DirectCall>,
    direct_deadlines: BinaryHeap<Reverse<(Micros, u32)>>,
    direct_seq: u32,
}

impl Engine {
    /// An engine over `registry`, sending to devices through `link`.
    pub fn new(
        clock: Clock,
        limits: Limits,
        registry: Registry,
        link: Box<dyn DeviceLink>,
    ) -> Self {
        Engine {
            clock,
            limits,
            registry,
            slots: Vec::new(),
            active: Vec::new(),
            by_id: HashMap::new(),
            recorder: Recorder::new(),
            link,
            pacer: limits.device_ops_per_s().map(Pacer::new),
            cursor: 0,
            parked_by_device: HashMap::new(),
            held: HashSet::new(),
            desired_pending: HashMap::new(),
            direct: HashMap::new(),
            direct_deadlines: BinaryHeap::new(),
            direct_seq: 0,
        }
    }

    /// Runs until `shutdown`; returns the measurements and the final job reports.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut devices: mpsc::UnboundedReceiver<Vec<FromDevice>>,
        view: watch::Sender<Arc<HubView>>,
        shutdown: CancellationToken,
    ) -> EngineOutput {
        let mut next_view = 0;
        loop {
            let now = self.clock.now_us();
            self.recorder.tick(now);
            let busy = self.step(now);
            self.link.flush();
            if now >= next_view {
                view.send_replace(Arc::new(self.view(now)));
                next_view = now + VIEW_EVERY_US;
            }
            let wake = if busy {
                now
            } else {
                self.next_deadline().min(next_view)
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(batch) = devices.recv() => {
                    self.on_device_batch(batch);
                    // Take what else is waiting, a bounded amount, before the next step.
                    for _ in 0..64 {
                        match devices.try_recv() {
                            Ok(batch) => self.on_device_batch(batch),
                            Err(_) => break,
                        }
                    }
                }
                Some(cmd) = commands.recv() => self.on_command(cmd),
                _ = tokio::time::sleep_until(self.clock.instant_at(wake)) => {}
            }
        }
        let now = self.clock.now_us();
        self.recorder.tick(now);
        view.send_replace(Arc::new(self.view(now)));
        EngineOutput {
            jobs: self.job_reports(now),
            devices: self.registry.len() as u64,
            recorder: self.recorder,
        }
    }

    /// The registry (read-only), for tests and views.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    // ----- time-driven work -----------------------------------------------------------------

    /// Does all work due at `now`; returns true when dispatch work remains runnable at once.
    fn step(&mut self, now: Micros) -> bool {
        for i in 0..self.active.len() {
            self.advance_job(self.active[i], now);
        }
        let slots = &self.slots;
        self.active
            .retain(|&s| !slots[s as usize].job.status.is_terminal());
        self.expire_direct(now);
        self.dispatch(now)
    }

    fn advance_job(&mut self, s: u32, now: Micros) {
        let job = &mut self.slots[s as usize].job;
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

    fn start_job(&mut self, s: u32, now: Micros) {
        let text = self.slots[s as usize].job.request.query_condition.clone();
        let cond = match parse_condition(&text) {
            Ok(c) => c,
            Err(e) => {
                let job = &mut self.slots[s as usize].job;
                job.status = JobStatus::Failed;
                job.end_us = Some(now);
                job.failure_reason = Some(format!("invalid queryCondition: {e}"));
                return;
            }
        };
        let targets = self.registry.select(&cond);
        let job = &mut self.slots[s as usize].job;
        job.records = targets
            .iter()
            .filter_map(|&d| self.registry.get(d).map(|e| (d, e.id.clone())))
            .map(|(device, device_id)| DeviceRecord {
                device_id,
                device,
                status: DeviceStatus::Pending,
                error: DeviceError::None,
                method_status: 0,
                scheduled_us: job.start_us,
                start_us: 0,
                end_us: 0,
                payload: None,
            })
            .collect();
        job.stats = DeviceJobStatistics {
            device_count: job.records.len() as u64,
            pending_count: job.records.len() as u64,
            ..Default::default()
        };
        job.status = JobStatus::Running;
        self.finish_job_if_done(s, now);
    }

    /// Fails timed-out operations and, past the job's max execution time, everything not reached.
    fn expire_ops(&mut self, s: u32, now: Micros) {
        let response_timeout = self.response_timeout_us(s);
        loop {
            let run = &mut self.slots[s as usize].run;
            match run.inflight.front() {
                Some(&(deadline, r)) if deadline <= now => {
                    run.inflight.pop_front();
                    let rec = &self.slots[s as usize].job.records[r as usize];
                    // A held operation's timeout has not started; a released one has a later
                    // deadline, queued when it was released.
                    let current = rec.status == DeviceStatus::Running
                        && deadline >= rec.start_us + response_timeout
                        && !self.held.contains(&OpId::new(s, r));
                    if current {
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Timeout);
                    }
                }
                _ => break,
            }
        }
        loop {
            let run = &mut self.slots[s as usize].run;
            match run.parked.front() {
                Some(&(deadline, r)) if deadline <= now => {
                    run.parked.pop_front();
                    if self.slots[s as usize].job.records[r as usize].status
                        == DeviceStatus::Scheduled
                    {
                        self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::NotOnline);
                    }
                }
                _ => break,
            }
        }
        let job = &self.slots[s as usize].job;
        let expires = job.start_us + job.request.max_execution_s * 1_000_000;
        if now >= expires && job.stats.pending_count > 0 {
            let slot = &mut self.slots[s as usize];
            slot.run.next = slot.job.records.len();
            for r in 0..slot.job.records.len() as u32 {
                let status = self.slots[s as usize].job.records[r as usize].status;
                if matches!(status, DeviceStatus::Pending | DeviceStatus::Scheduled) {
                    self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Expired);
                }
            }
        }
    }

    fn finish_job_if_done(&mut self, s: u32, now: Micros) {
        let job = &mut self.slots[s as usize].job;
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
    }

    /// Dispatches due operations; true when more could go at once.
    fn dispatch(&mut self, now: Micros) -> bool {
        let running: Vec<u32> = self
            .active
            .iter()
            .copied()
            .filter(|&s| {
                let slot = &self.slots[s as usize];
                slot.job.status == JobStatus::Running && slot.run.next < slot.job.records.len()
            })
            .collect();
        if running.is_empty() {
            return false;
        }
        let mut budget = DISPATCH_CHUNK;
        match self.pacer.take() {
            None => {
                for &s in &running {
                    while budget > 0 {
                        let slot = &mut self.slots[s as usize];
                        if slot.run.next >= slot.job.records.len() {
                            break;
                        }
                        let r = slot.run.next as u32;
                        slot.run.next += 1;
                        let scheduled = slot.job.start_us;
                        self.dispatch_op(s, r, scheduled, now);
                        budget -= 1;
                    }
                }
                budget == 0
            }
            Some(mut pacer) => {
                let mut more = false;
                while budget > 0 {
                    let s = running[self.cursor % running.len()];
                    let slot = &mut self.slots[s as usize];
                    if slot.run.next >= slot.job.records.len() {
                        self.cursor += 1;
                        if running.iter().all(|&s| {
                            let slot = &self.slots[s as usize];
                            slot.run.next >= slot.job.records.len()
                        }) {
                            break;
                        }
                        continue;
                    }
                    let Some(at) = pacer.take(now, slot.job.start_us) else {
                        break;
                    };
                    let r = slot.run.next as u32;
                    slot.run.next += 1;
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

    fn dispatch_op(&mut self, s: u32, r: u32, scheduled: Micros, now: Micros) {
        let slot = &mut self.slots[s as usize];
        let rec = &mut slot.job.records[r as usize];
        rec.scheduled_us = scheduled;
        let device = rec.device;
        let op = OpId::new(s, r);
        self.recorder.record(
            JobSlot(s),
            Measure::EngineLag,
            now.saturating_sub(scheduled),
        );
        let Some(entry) = self.registry.get(device) else {
            self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::Rejected);
            return;
        };
        match &slot.job.request.kind {
            JobKind::Method(call) => {
                let connect_deadline = now + call.connect_timeout_s as Micros * 1_000_000;
                if entry.connected {
                    let (method, payload) = (call.name.clone(), call.payload.clone());
                    let deadline = now + call.response_timeout_s as Micros * 1_000_000;
                    self.send_method(s, r, now, deadline);
                    self.link.send(ToDevice::Method {
                        op,
                        device,
                        method,
                        payload,
                        connect_deadline,
                    });
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
                        let rec = &mut self.slots[s as usize].job.records[r as usize];
                        rec.start_us = now;
                        self.finish_op(s, r, now, DeviceStatus::Completed, DeviceError::None);
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

    /// Marks a method operation dispatched (it is about to be sent).
    fn send_method(&mut self, s: u32, r: u32, now: Micros, deadline: Micros) {
        let slot = &mut self.slots[s as usize];
        let rec = &mut slot.job.records[r as usize];
        rec.status = DeviceStatus::Running;
        rec.start_us = now;
        slot.job.stats.pending_count -= 1;
        slot.job.stats.running_count += 1;
        slot.run.inflight.push_back((deadline, r));
        self.recorder.op_dispatched(JobSlot(s));
    }

    fn notify_desired(
        &mut self,
        device: DeviceIdx,
        op: Option<OpId>,
        version: u64,
        patch: &Object,
    ) {
        let connected = self.registry.get(device).is_some_and(|e| e.connected);
        if connected {
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

    /// Ends one device operation and keeps the statistics exact.
    fn finish_op(&mut self, s: u32, r: u32, now: Micros, status: DeviceStatus, error: DeviceError) {
        let job = &mut self.slots[s as usize].job;
        let rec = &mut job.records[r as usize];
        let was_running = rec.status == DeviceStatus::Running;
        rec.status = status;
        rec.error = error;
        rec.end_us = now;
        let scheduled = rec.scheduled_us;
        let method_status = rec.method_status;
        if was_running {
            job.stats.running_count -= 1;
        } else {
            job.stats.pending_count -= 1;
        }
        let failed = status != DeviceStatus::Completed;
        if failed {
            job.stats.failed_count += 1;
            job.errors.count(error, method_status);
        } else {
            job.stats.succeeded_count += 1;
        }
        job.last_done_us = job.last_done_us.max(now);
        if status != DeviceStatus::Canceled {
            if !was_running {
                self.recorder.op_dispatched(JobSlot(s));
            }
            self.recorder.record(
                JobSlot(s),
                Measure::Completion,
                now.saturating_sub(scheduled),
            );
            self.recorder.op_done(JobSlot(s), now, failed);
        }
    }

    fn expire_direct(&mut self, now: Micros) {
        while let Some(&Reverse((deadline, id))) = self.direct_deadlines.peek() {
            if deadline > now {
                break;
            }
            self.direct_deadlines.pop();
            let err = match self.direct.get(&id) {
                Some(c) if c.stage == Stage::Waiting && c.connect_deadline <= now => {
                    HubError::new(ErrorCode::DeviceNotOnline, "the device is not online")
                }
                Some(DirectCall {
                    stage: Stage::Sent { until },
                    ..
                }) if *until <= now => HubError::new(
                    ErrorCode::GatewayTimeout,
                    "the device did not answer within the response timeout",
                ),
                // Gone, held, or an earlier stage's deadline.
                _ => continue,
            };
            if let Some(call) = self.direct.remove(&id) {
                let _ = call.reply.send(Err(err));
            }
        }
    }

    /// The earliest time the engine has timed work.
    fn next_deadline(&self) -> Micros {
        let mut next = Micros::MAX;
        for slot in self.active.iter().map(|&s| &self.slots[s as usize]) {
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
                        next = next.min(job.start_us + job.request.max_execution_s * 1_000_000);
                    }
                    if slot.run.next < job.records.len() {
                        if let Some(p) = &self.pacer {
                            next = next.min(p.next_open(job.start_us));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(Reverse((d, _))) = self.direct_deadlines.peek() {
            next = next.min(*d);
        }
        next
    }

    // ----- device messages ------------------------------------------------------------------

    fn on_device_batch(&mut self, batch: Vec<FromDevice>) {
        let now = self.clock.now_us();
        self.recorder.tick(now);
        for msg in batch {
            self.on_device(msg, now);
        }
    }

    fn on_device(&mut self, msg: FromDevice, now: Micros) {
        match msg {
            FromDevice::Connected { device } => {
                self.registry.set_connected(device, true, now);
                self.on_connected(device, now);
            }
            FromDevice::Disconnected { device } => {
                self.registry.set_connected(device, false, now);
            }
            FromDevice::MethodResponse {
                op,
                device,
                status,
                payload,
                delivered_us,
            } => {
                self.registry.touch(device, now);
                if op.slot() == DIRECT_SLOT {
                    let id = op.record();
                    let sent = self.direct.get(&id).is_some_and(|c| {
                        c.device == device && matches!(c.stage, Stage::Sent { .. })
                    });
                    if let Some(call) = sent.then(|| self.direct.remove(&id)).flatten() {
                        let _ = call
                            .reply
                            .send(Ok((status, payload.map(|b| *b).unwrap_or(Value::Null))));
                    }
                    return;
                }
                self.on_method_response(op, device, status, payload, delivered_us, now);
            }
            FromDevice::MethodHeld { op, device } => self.on_method_held(op, device),
            FromDevice::MethodReleased { op, device } => self.on_method_released(op, device, now),
            FromDevice::MethodUnreachable { op, device } => {
                self.on_method_unreachable(op, device, now)
            }
            FromDevice::DesiredDelivered { op, delivered_us } => {
                if let Some(rec) = self.record(op) {
                    let lat = delivered_us.saturating_sub(rec.scheduled_us);
                    self.recorder
                        .record(JobSlot(op.slot()), Measure::Delivery, lat);
                }
            }
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
        if let Some(op) = ack_of {
            if let Some(rec) = self.record(op) {
                let lat = now.saturating_sub(rec.start_us);
                self.recorder
                    .record(JobSlot(op.slot()), Measure::RoundTrip, lat);
            }
        }
        version
    }

    /// Answers a device transport's request.
    fn on_device_command(&mut self, cmd: DeviceCommand, now: Micros) {
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
                let _ = reply.send(self.report(device, &patch, ack_of, now));
            }
        }
    }

    fn record(&self, op: OpId) -> Option<&DeviceRecord> {
        self.slots
            .get(op.slot() as usize)?
            .job
            .records
            .get(op.record() as usize)
    }

    /// The job record of `op` if it is a method operation in flight to `device`: an answer or
    /// a transport's word about anything else (another device, an op that ended) is ignored.
    fn running_record(&mut self, op: OpId, device: DeviceIdx) -> Option<&mut DeviceRecord> {
        self.slots
            .get_mut(op.slot() as usize)?
            .job
            .records
            .get_mut(op.record() as usize)
            .filter(|rec| rec.device == device && rec.status == DeviceStatus::Running)
    }

    /// The response timeout of job `s`'s method call (0 for twin jobs).
    fn response_timeout_us(&self, s: u32) -> Micros {
        match &self.slots[s as usize].job.request.kind {
            JobKind::Method(call) => call.response_timeout_s as Micros * 1_000_000,
            JobKind::Twin(_) => 0,
        }
    }

    fn on_method_held(&mut self, op: OpId, device: DeviceIdx) {
        if op.slot() == DIRECT_SLOT {
            if let Some(call) = self.direct.get_mut(&op.record()) {
                if call.device == device && matches!(call.stage, Stage::Sent { .. }) {
                    call.stage = Stage::Held;
                }
            }
        } else if self.running_record(op, device).is_some() {
            self.held.insert(op);
        }
    }

    fn on_method_released(&mut self, op: OpId, device: DeviceIdx, now: Micros) {
        if op.slot() == DIRECT_SLOT {
            let id = op.record();
            if let Some(call) = self.direct.get_mut(&id) {
                if call.device == device && call.stage == Stage::Held {
                    let until = now + call.call.response_timeout_s as Micros * 1_000_000;
                    call.stage = Stage::Sent { until };
                    self.direct_deadlines.push(Reverse((until, id)));
                }
            }
            return;
        }
        if !self.held.remove(&op) {
            return;
        }
        let until = now + self.response_timeout_us(op.slot());
        if let Some(rec) = self.running_record(op, device) {
            // The request reached the device only now: its round trip and timeout start here.
            rec.start_us = now;
            self.slots[op.slot() as usize]
                .run
                .inflight
                .push_back((until, op.record()));
        }
    }

    fn on_method_unreachable(&mut self, op: OpId, device: DeviceIdx, now: Micros) {
        if op.slot() == DIRECT_SLOT {
            let id = op.record();
            let waiting = self.direct.get(&id).is_some_and(|c| {
                c.device == device && matches!(c.stage, Stage::Sent { .. } | Stage::Held)
            });
            if let Some(call) = waiting.then(|| self.direct.remove(&id)).flatten() {
                let name = self.registry.get(device).map_or("?", |e| &*e.id);
                let _ = call.reply.send(Err(HubError::new(
                    ErrorCode::DeviceNotOnline,
                    format!(
                        "device '{name}' did not subscribe to direct methods \
                         ($iothub/methods/POST/#) within the connect timeout"
                    ),
                )));
            }
            return;
        }
        self.held.remove(&op);
        if self.running_record(op, device).is_some() {
            let (s, r) = (op.slot(), op.record());
            self.finish_op(s, r, now, DeviceStatus::Failed, DeviceError::NotOnline);
        }
    }

    fn on_method_response(
        &mut self,
        op: OpId,
        device: DeviceIdx,
        status: i32,
        payload: Option<Box<Value>>,
        delivered_us: Option<Micros>,
        now: Micros,
    ) {
        let (s, r) = (op.slot(), op.record());
        // Not in flight to this device: timed out, cancelled, or another device's answer.
        let Some(rec) = self.running_record(op, device) else {
            return;
        };
        rec.method_status = status;
        rec.payload = payload;
        let (start, scheduled) = (rec.start_us, rec.scheduled_us);
        self.recorder
            .record(JobSlot(s), Measure::RoundTrip, now.saturating_sub(start));
        if let Some(delivered) = delivered_us {
            self.recorder.record(
                JobSlot(s),
                Measure::Delivery,
                delivered.saturating_sub(scheduled),
            );
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
                let (s, r) = (op.slot(), op.record());
                let slot = &self.slots[s as usize];
                if slot.job.records[r as usize].status != DeviceStatus::Scheduled {
                    continue;
                }
                if let JobKind::Method(call) = &slot.job.request.kind {
                    let (method, payload) = (call.name.clone(), call.payload.clone());
                    let deadline = now + call.response_timeout_s as Micros * 1_000_000;
                    // The device is counted as pending while parked; send_method moves it.
                    self.send_method(s, r, now, deadline);
                    self.recorder.record(JobSlot(s), Measure::EngineLag, 0);
                    self.link.send(ToDevice::Method {
                        op,
                        device,
                        method,
                        payload,
                        connect_deadline,
                    });
                }
            }
        }
        if let Some(op) = self.desired_pending.remove(&device) {
            if let (Some(entry), Some(slot)) = (
                self.registry.get(device),
                self.slots.get(op.slot() as usize),
            ) {
                if let JobKind::Twin(update) = &slot.job.request.kind {
                    if let Some(desired) = &update.desired {
                        let version = entry.twin.desired.version;
                        let desired = desired.clone();
                        self.notify_desired(device, Some(op), version, &desired);
                    }
                }
            }
        }
        let waiting: Vec<u32> = self
            .direct
            .iter()
            .filter(|(_, c)| c.device == device && c.stage == Stage::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.send_direct(id, now);
        }
    }

    fn send_direct(&mut self, id: u32, now: Micros) {
        let Some(call) = self.direct.get_mut(&id) else {
            return;
        };
        let until = now + call.call.response_timeout_s as Micros * 1_000_000;
        call.stage = Stage::Sent { until };
        self.direct_deadlines.push(Reverse((until, id)));
        self.link.send(ToDevice::Method {
            op: OpId::new(DIRECT_SLOT, id),
            device: call.device,
            method: call.call.name.clone(),
            payload: call.call.payload.clone(),
            connect_deadline: call.connect_deadline,
        });
    }

    // ----- commands -------------------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now_us();
        match cmd {
            Command::CreateJob(req, reply) => {
                let _ = reply.send(self.create_job(*req, now));
            }
            Command::GetJob(id, reply) => {
                let _ = reply.send(
                    self.slot_of(&id)
                        .map(|s| self.slots[s as usize].job.to_json(&self.clock)),
                );
            }
            Command::CancelJob(id, reply) => {
                let _ = reply.send(self.cancel_job(&id, now));
            }
            Command::ListJobs(job_type, status, reply) => {
                let list = self
                    .slots
                    .iter()
                    .map(|s| &s.job)
                    .filter(|j| job_type.is_none_or(|t| j.request.kind.type_name() == t))
                    .filter(|j| status.is_none_or(|st| j.status == st))
                    .map(|j| j.to_json(&self.clock))
                    .collect();
                let _ = reply.send(Ok(list));
            }
            Command::Query(text, reply) => {
                let _ = reply.send(self.query(&text));
            }
            Command::GetTwin(id, reply) => {
                let twin = self.registry.lookup(&id).map(|d| self.twin_json(d));
                let _ = reply.send(twin);
            }
            Command::WriteTwin {
                id,
                mode,
                body,
                if_match,
                reply,
            } => {
                let _ = reply.send(self.write_twin(&id, mode, &body, if_match.as_deref(), now));
            }
            Command::InvokeMethod(id, call, reply) => self.invoke_method(&id, call, reply, now),
            Command::AddDevice(id, twin, reply) => {
                let added = self.registry.add(&id, *twin).map(|d| self.twin_json(d));
                let _ = reply.send(added);
            }
            Command::RemoveDevice(id, reply) => {
                let removed = self
                    .registry
                    .remove(&id)
                    .map(|e| twin_json(&e, &self.clock));
                let _ = reply.send(removed);
            }
            Command::Report(reply) => {
                let _ = reply.send(Ok(self.job_reports(now)));
            }
            Command::Device(cmd) => self.on_device_command(cmd, now),
        }
    }

    fn twin_json(&self, device: DeviceIdx) -> Value {
        self.registry
            .get(device)
            .map(|e| twin_json(e, &self.clock))
            .unwrap_or(Value::Null)
    }

    fn slot_of(&self, id: &str) -> Result<u32, HubError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| HubError::new(ErrorCode::JobNotFound, format!("no job with id '{id}'")))
    }

    fn create_job(&mut self, req: JobRequest, now: Micros) -> Result<Value, HubError> {
        if self.by_id.contains_key(&req.job_id) {
            return Err(HubError::new(
                ErrorCode::JobAlreadyExists,
                format!("a job with id '{}' already exists", req.job_id),
            ));
        }
        if let Some(limit) = self.limits.concurrent_jobs() {
            let active = self
                .active
                .iter()
                .filter(|&&s| !self.slots[s as usize].job.status.is_terminal())
                .count();
            if active >= limit {
                return Err(HubError::new(
                    ErrorCode::ThrottlingMaxActiveJobCountExceeded,
                    format!(
                        "the {} tier allows {limit} active job(s); {active} are active",
                        self.limits.tier
                    ),
                ));
            }
        }
        let start_us = req
            .start_time
            .map_or(now, |t| self.clock.us_at_wall(t).max(now));
        let s = self.slots.len() as u32;
        let slot = self.recorder.add_job(&req.job_id);
        debug_assert_eq!(slot.0, s, "metrics slots follow job slots");
        self.by_id.insert(req.job_id.clone(), s);
        let job = Job {
            request: req,
            status: JobStatus::Queued,
            created_us: now,
            start_us,
            end_us: None,
            last_done_us: 0,
            failure_reason: None,
            status_message: None,
            stats: DeviceJobStatistics::default(),
            records: Vec::new(),
            errors: Default::default(),
        };
        let answer = job.to_json(&self.clock);
        self.slots.push(Slot {
            job,
            run: JobRun::default(),
        });
        self.active.push(s);
        Ok(answer)
    }

    fn cancel_job(&mut self, id: &str, now: Micros) -> Result<Value, HubError> {
        let s = self.slot_of(id)?;
        if !self.slots[s as usize].job.status.is_terminal() {
            for r in 0..self.slots[s as usize].job.records.len() as u32 {
                if !self.slots[s as usize].job.records[r as usize]
                    .status
                    .is_terminal()
                {
                    self.finish_op(s, r, now, DeviceStatus::Canceled, DeviceError::None);
                }
            }
            let slot = &mut self.slots[s as usize];
            slot.run = JobRun {
                next: slot.job.records.len(),
                ..Default::default()
            };
            slot.job.status = JobStatus::Cancelled;
            slot.job.end_us = Some(now);
        }
        Ok(self.slots[s as usize].job.to_json(&self.clock))
    }

    fn query(&mut self, text: &str) -> Result<Vec<Value>, HubError> {
        let query =
            parse_query(text).map_err(|e| HubError::invalid(format!("invalid query: {e}")))?;
        match query.source() {
            Source::Devices => {
                let selected = self.registry.select(query.condition());
                let docs: Vec<_> = selected
                    .iter()
                    .filter_map(|&d| self.registry.doc(d))
                    .collect();
                Ok(query.project(docs.iter()))
            }
            Source::DeviceJobs => {
                let only_job = match query.condition().plan() {
                    Plan::Equals { path, value } if path.last().is_some_and(|p| p == "jobId") => {
                        value.as_str().map(str::to_owned)
                    }
                    _ => None,
                };
                let mut rows = Vec::new();
                for slot in &self.slots {
                    if only_job
                        .as_deref()
                        .is_some_and(|j| j != slot.job.request.job_id)
                    {
                        continue;
                    }
                    for rec in &slot.job.records {
                        let doc = slot.job.record_json(rec, &self.clock);
                        if query.condition().matches(&JobRecordDoc(&doc)) {
                            rows.push(doc);
                        }
                    }
                }
                let docs: Vec<JobRecordDoc> = rows.iter().map(JobRecordDoc).collect();
                Ok(query.project(docs.iter()))
            }
        }
    }

    fn write_twin(
        &mut self,
        id: &str,
        mode: TwinWrite,
        body: &Value,
        if_match: Option<&str>,
        now: Micros,
    ) -> Result<Value, HubError> {
        let device = self.registry.lookup(id)?;
        let entry = self
            .registry
            .get(device)
            .ok_or_else(|| HubError::new(ErrorCode::DeviceNotFound, id))?;
        if let Some(tag) = if_match {
            if !entry.twin.etag_matches(tag) {
                return Err(HubError::new(
                    ErrorCode::PreconditionFailed,
                    format!(
                        "If-Match {tag} does not match the twin's etag \"{}\"",
                        entry.twin.etag()
                    ),
                ));
            }
        }
        let obj = body
            .as_object()
            .ok_or_else(|| HubError::invalid("the twin must be a JSON object"))?;
        let tags = section(obj.get("tags"), "tags")?;
        let desired = section(
            obj.get("properties").and_then(|p| p.get("desired")),
            "properties.desired",
        )?;
        let desired_version = self.registry.update_twin(device, |twin| match mode {
            TwinWrite::Patch => {
                if let Some(tags) = &tags {
                    twin.patch_tags(tags, now)?;
                }
                desired
                    .as_ref()
                    .map(|d| twin.patch_desired(d, now))
                    .transpose()
            }
            TwinWrite::Replace => {
                twin.replace(
                    tags.clone().unwrap_or_default(),
                    desired.clone().unwrap_or_default(),
                    now,
                )?;
                Ok(Some(twin.desired.version))
            }
        })?;
        if let (Some(version), Some(desired)) = (desired_version, desired) {
            self.notify_desired(device, None, version, &desired);
        }
        Ok(self.twin_json(device))
    }

    fn invoke_method(
        &mut self,
        id: &str,
        call: MethodCall,
        reply: Reply<(i32, Value)>,
        now: Micros,
    ) {
        let device = match self.registry.lookup(id) {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let connected = self.registry.get(device).is_some_and(|e| e.connected);
        if !connected && call.connect_timeout_s == 0 {
            let _ = reply.send(Err(HubError::new(
                ErrorCode::DeviceNotOnline,
                format!("device '{id}' is not online"),
            )));
            return;
        }
        let seq = self.direct_seq;
        self.direct_seq = self.direct_seq.wrapping_add(1);
        let connect_deadline = now + call.connect_timeout_s as Micros * 1_000_000;
        self.direct.insert(
            seq,
            DirectCall {
                reply,
                device,
                call,
                connect_deadline,
                stage: Stage::Waiting,
            },
        );
        if connected {
            self.send_direct(seq, now);
        } else {
            self.direct_deadlines.push(Reverse((connect_deadline, seq)));
        }
    }

    // ----- views ----------------------------------------------------------------------------

    fn job_makespan(job: &Job, now: Micros) -> (f64, f64) {
        if job.stats.device_count == 0 || job.start_us > now {
            return (0.0, 0.0);
        }
        let end = if job.status.is_terminal() {
            job.last_done_us.max(job.start_us)
        } else {
            now
        };
        let span_us = end.saturating_sub(job.start_us);
        let done = job.stats.succeeded_count + job.stats.failed_count;
        let ops = if span_us > 0 {
            done as f64 / (span_us as f64 / 1e6)
        } else {
            0.0
        };
        (span_us as f64 / 1000.0, ops)
    }

    fn job_reports(&self, now: Micros) -> Vec<JobReport> {
        self.slots
            .iter()
            .map(|s| {
                let (makespan_ms, ops_per_s) = Self::job_makespan(&s.job, now);
                JobReport {
                    job_id: s.job.request.job_id.clone(),
                    job_type: s.job.request.kind.type_name().to_owned(),
                    status: s.job.status.name().to_owned(),
                    statistics: s.job.stats,
                    makespan_ms,
                    ops_per_s,
                }
            })
            .collect()
    }

    fn view(&mut self, now: Micros) -> HubView {
        let metrics = self.recorder.snapshot(now);
        HubView {
            now_us: now,
            devices: self.registry.len() as u64,
            connected: self.registry.connected(),
            jobs: self
                .slots
                .iter()
                .map(|s| {
                    let (makespan_ms, ops_per_s) = Self::job_makespan(&s.job, now);
                    JobView {
                        id: s.job.request.job_id.clone(),
                        job_type: s.job.request.kind.type_name(),
                        status: s.job.status,
                        stats: s.job.stats,
                        makespan_ms,
                        ops_per_s,
                        errors: s.job.errors.clone(),
                    }
                })
                .collect(),
            metrics,
        }
    }
}

/// A twin section from a write body: absent, or an object.
fn section(v: Option<&Value>, what: &str) -> Result<Option<Object>, HubError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(other) => Err(HubError::invalid(format!(
            "{what} is {other}; expected an object"
        ))),
    }
}

/// A device job record seen by the query language: paths may carry the `devices.jobs.` prefix.
struct JobRecordDoc<'a>(&'a Value);

impl Document for JobRecordDoc<'_> {
    fn resolve(&self, path: &[&str]) -> Option<std::borrow::Cow<'_, Value>> {
        let path = match path {
            ["devices", "jobs", rest @ ..] => rest,
            other => other,
        };
        self.0.resolve(path)
    }

    fn to_json(&self) -> Value {
        self.0.clone()
    }
}
