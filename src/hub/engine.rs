//! The job engine: the one owner of the registry, the twins and every job. It runs as a single
//! task (an actor): API handlers send [`Command`]s, transports send batches of
//! [`FromDevice`] messages, and its own timers start jobs, pace dispatch and expire operations.
//!
//! Per device operation it records the intended time (the job's start, or the throttle slot)
//! and every later step, so queueing inside the hub shows up in the figures.
//!
//! - `dispatch`: the time-driven work: starting jobs, dispatching and pacing their device
//!   operations, timeouts and expiry.
//! - `device`: what devices and their transports send.
//! - `commands`: the API's commands (jobs, queries, twins, direct calls, devices).
//! - `direct`: the direct method calls in progress.
//! - `delivery`: deliveries a fleet stamped (an MQTT fleet's receipts), and the judgement of
//!   another process's clock.
//! - `persist`: a hub with a store: restoring its state, and each turn's changes to save.
//! - `views`: the views and reports the engine publishes.
//! - `slots`: the job table.
//! - `restart`: a hub restart (a scenario's `hub_restart` fault).

mod commands;
mod delivery;
mod device;
mod direct;
mod dispatch;
mod persist;
mod restart;
mod slots;
mod views;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros, Stamps, Stopwatch};
use crate::hub::handle::{Command, HubView};
use crate::hub::jobs::{DeviceError, DeviceRecord, DeviceStatus, Tripped};
use crate::hub::registry::Registry;
use crate::hub::store::{CommitFailed, Journal};
use crate::hub::throttle::{Limits, Pacer};
use crate::ids::{DeviceIdx, IdxMap, IdxSet, RecordIdx, SlotIdx};
use crate::link::{DeviceLink, FromDevice, OpId};
use crate::metrics::{JobSlot, Measure, Recorder};
use crate::report::{DeliveryClockReport, JobReport};

use delivery::Receipts;
use direct::{CallId, DirectCalls, DIRECT_SLOT};
use slots::Slots;

/// Test builds only: creating a job with this id makes the engine panic, so that tests can
/// check what a dead engine leaves behind (`fleetsim hub` and `fleetsim run` stop with
/// `EngineDied`). Since issue 16 no real input is known to kill the engine.
#[cfg(test)]
pub(crate) const TEST_PANIC_JOB_ID: &str = "fleetsim-test-engine-panic";

/// How often the engine publishes a [`HubView`].
const VIEW_EVERY_US: Micros = 100_000;

/// What the engine does after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Sleeps until its next deadline or a message.
    Sleep,
    /// Lets the other tasks run at this instant, then takes another turn.
    Yield,
    /// Moves the virtual clock to its next deadline itself and takes a turn there.
    RunAhead,
}

/// In virtual time, how many turns in a row the engine may run ahead of tokio's clock
/// ([`Clock::run_ahead_to`]) before it parks the runtime anyway.
const RUN_AHEAD_TURNS: u32 = 256;

/// In virtual time, how long an engine with nothing to do sleeps before it looks again: a day
/// of idle simulated time costs 86,400 light turns.
const VIRTUAL_IDLE_US: Micros = 1_000_000;

/// What an operation id names: a job's device operation, or a direct method call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A job's device operation: (slot, record).
    Job(SlotIdx, RecordIdx),
    /// A direct method call.
    Direct(CallId),
}

impl Target {
    fn of(op: OpId) -> Self {
        if op.slot() == DIRECT_SLOT {
            Target::Direct(CallId::of(op))
        } else {
            Target::Job(SlotIdx::new(op.slot()), RecordIdx::new(op.record()))
        }
    }
}

/// The op id of record `r` of the job in slot `s`.
fn job_op(s: SlotIdx, r: RecordIdx) -> OpId {
    OpId::new(s.get(), r.get())
}

/// The metrics slot of the job in slot `s` (job slots and metrics slots are the same).
fn metrics_slot(s: SlotIdx) -> JobSlot {
    JobSlot(s.get())
}

/// What the engine hands back when it stops.
pub struct EngineOutput {
    /// Every measurement.
    pub(crate) recorder: Recorder,
    /// The jobs as reported.
    pub jobs: Vec<JobReport>,
    /// Devices in the registry at the end.
    pub(crate) devices: u64,
    /// How the deliveries stamped with another process's clock were judged, if any came.
    pub(crate) delivery_clock: Option<DeliveryClockReport>,
}

/// The job engine's state.
pub struct Engine {
    clock: Clock,
    limits: Limits,
    registry: Registry,
    slots: Slots,
    recorder: Recorder,
    link: Box<dyn DeviceLink>,
    pacer: Option<Pacer>,
    /// Round-robin cursor over running jobs for paced dispatch.
    cursor: usize,
    /// The jobs a dispatch serves (kept for its capacity).
    dispatching: Vec<SlotIdx>,
    /// Job operations waiting for a device to connect, with their connect deadlines.
    parked_by_device: IdxMap<DeviceIdx, Vec<(OpId, Micros)>>,
    /// Job method operations a transport holds for a device not yet subscribed to methods:
    /// their response timeout waits until the transport releases them.
    held: IdxSet<OpId>,
    /// Desired notifications waiting for a device to connect.
    desired_pending: IdxMap<DeviceIdx, OpId>,
    /// Twin operations of jobs with acknowledged success, waiting for the device to report the
    /// desired values back.
    awaiting_ack: IdxMap<DeviceIdx, OpId>,
    direct: DirectCalls,
    /// Delivery receipts: the notifications they name, and their clocks.
    receipts: Receipts,
    /// What a device side in the engine's own task sent, not handled yet (kept for its capacity).
    inbox: Vec<FromDevice>,
    /// In virtual time, the real time since the last view (views follow the watcher's clock,
    /// not the simulated one, and every change of a job's status); None in real time.
    virtual_views: Option<Stopwatch>,
    /// With a store: where each turn's changes go ([`crate::hub::store`]); None in memory.
    journal: Option<Journal>,
    /// With a store: the jobs created, started or ended this turn.
    jobs_changed: Vec<SlotIdx>,
    /// Whether the jobs it restores wait for [`Command::Release`] (see
    /// [`Engine::holding_restored`]).
    hold_restored: bool,
}

impl Engine {
    /// An engine over `registry`, sending to devices through `link`.
    pub fn new(
        clock: Clock,
        limits: Limits,
        registry: Registry,
        link: Box<dyn DeviceLink>,
    ) -> Self {
        let virtual_views = clock.is_virtual().then(Stopwatch::start);
        Engine {
            clock,
            limits,
            registry,
            slots: Slots::default(),
            recorder: Recorder::new(),
            link,
            pacer: limits.device_ops_per_s().map(Pacer::new),
            cursor: 0,
            dispatching: Vec::new(),
            parked_by_device: IdxMap::default(),
            held: IdxSet::default(),
            desired_pending: IdxMap::default(),
            awaiting_ack: IdxMap::default(),
            direct: DirectCalls::default(),
            receipts: Receipts::default(),
            inbox: Vec::new(),
            // Virtual time may pass far faster than real time: the engine then publishes a view
            // every VIEW_EVERY_US of real time and whenever a job is added or ends (the moments
            // the run loop acts on), instead of every VIEW_EVERY_US of simulated time.
            virtual_views,
            journal: None,
            jobs_changed: Vec::new(),
            hold_restored: false,
        }
    }

    /// Measures in intervals of `interval_s` seconds instead of one (see
    /// [`crate::metrics::interval_for`]).
    pub(crate) fn with_intervals_of(mut self, interval_s: u64) -> Self {
        self.recorder = Recorder::with_interval(interval_s);
        self
    }

    /// The number of jobs and of jobs that ended: a view is due in virtual time when it changes.
    fn jobs_signature(&self) -> (usize, usize) {
        self.slots.iter().fold((0, 0), |(jobs, ended), s| {
            (jobs + 1, ended + usize::from(s.job.status.is_terminal()))
        })
    }

    /// Runs until `shutdown`; returns the measurements and the final job reports. With a
    /// store, a commit that fails ends it at once with the failure: it answers nothing more
    /// (see [`crate::hub::store`]).
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut devices: mpsc::UnboundedReceiver<Vec<FromDevice>>,
        view: watch::Sender<Arc<HubView>>,
        shutdown: CancellationToken,
    ) -> Result<EngineOutput, CommitFailed> {
        let mut next_view = 0;
        let mut viewed_jobs = (0, 0);
        let mut turns: u32 = 0;
        // In virtual time: the simulated instant an idle engine looks again (see below).
        let mut idle_until = Micros::MAX;
        // Whether this turn follows a message (another task may be runnable: it sent it, or
        // waits for the answer), and how many turns in a row ran ahead of tokio's clock.
        let mut after_message = true;
        let mut ran_ahead = 0;
        let cancelled = shutdown.cancelled();
        let timer = tokio::time::sleep_until(self.clock.instant_at(0));
        tokio::pin!(cancelled, timer);
        loop {
            let now = self.clock.now_us();
            self.recorder.tick(now);
            // A device side in this task (the in-process fleet in virtual time) acts first:
            // what its timers did by now comes before the engine's own work at this instant.
            self.hear_local_devices(now);
            let busy = self.step(now);
            self.link.flush();
            self.save_turn();
            let (heard, devices_next) = self.hear_local_devices(now);
            let view_due = match self.virtual_views {
                None => now >= next_view,
                Some(since) => {
                    // A turn in virtual time is often one churn event, and reading the wall
                    // clock cost as much as the rest of it: look at it every 64th turn, and
                    // at each idle look.
                    turns = turns.wrapping_add(1);
                    let jobs = self.jobs_signature();
                    let due = jobs != viewed_jobs
                        || ((turns.is_multiple_of(64) || now >= idle_until)
                            && since.elapsed() >= Duration::from_micros(VIEW_EVERY_US));
                    if due {
                        self.virtual_views = Some(Stopwatch::start());
                        viewed_jobs = jobs;
                    }
                    due
                }
            };
            if view_due {
                view.send_replace(Arc::new(self.view(now)));
                next_view = now + VIEW_EVERY_US;
            }
            let wake = match (busy || heard, self.virtual_views.is_some()) {
                (true, _) => now,
                (false, false) => self.next_deadline().min(next_view),
                // Nothing to do: look again a simulated second later, so that views (and with
                // them a dashboard's clock) keep up while a `--speed` run idles through a soak.
                (false, true) => {
                    idle_until = now + VIRTUAL_IDLE_US;
                    self.next_deadline().min(idle_until)
                }
            };
            let wake = devices_next.map_or(wake, |d| d.min(wake));
            let next = match self.virtual_views {
                None => Next::Sleep,
                // Virtual time moves only to an event's exact instant. Another task may act now
                // (a message came from it or went to it, or the dashboard or a signal has
                // waited long enough): let it, with the clock where it is. Otherwise the next
                // instant is the engine's own unless another task's sleep ends first: take it
                // here, without a park of the runtime.
                Some(_) => {
                    let others = after_message
                        || view_due
                        || ran_ahead >= RUN_AHEAD_TURNS
                        || !commands.is_empty()
                        || !devices.is_empty()
                        || shutdown.is_cancelled();
                    if others || wake <= now {
                        Next::Yield
                    } else if wake == idle_until {
                        // Nothing of its own is due: whatever comes next is another task's.
                        Next::Sleep
                    } else if self.clock.run_ahead_to(wake) {
                        Next::RunAhead
                    } else {
                        Next::Sleep
                    }
                }
            };
            if next == Next::RunAhead {
                ran_ahead += 1;
                continue;
            }
            ran_ahead = 0;
            let yielding = next == Next::Yield;
            if !yielding {
                let wake = self.clock.instant_at(wake);
                if wake != timer.deadline() {
                    timer.as_mut().reset(wake);
                }
            }
            after_message = true;
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                // Answers the writes now saved. After a failed commit, what the engine holds is
                // ahead of the store for good: the ending reports it.
                _ = persist::store_progressed(&mut self.journal) => {
                    if self.journal.as_mut().and_then(Journal::release).is_some() {
                        break;
                    }
                }
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
                _ = tokio::task::yield_now(), if yielding => after_message = false,
                _ = &mut timer, if !yielding => after_message = false,
            }
        }
        let now = self.clock.now_us();
        self.recorder.tick(now);
        self.save_turn();
        if let Some(journal) = self.journal.take() {
            // Waits for the last commit (blocking this task at its end): a hub stopped cleanly
            // has saved everything.
            journal.close()?;
        }
        view.send_replace(Arc::new(self.view(now)));
        Ok(EngineOutput {
            jobs: self.job_reports(now),
            devices: self.registry.len() as u64,
            delivery_clock: self.receipts.report(),
            recorder: self.recorder,
        })
    }

    /// The record `op` names, with its job's slot, if it is a job's.
    fn job_record(&self, op: OpId) -> Option<(SlotIdx, &DeviceRecord)> {
        match Target::of(op) {
            Target::Job(s, r) => Some((s, self.slots.get(s)?.job.records.get(r.usize())?)),
            Target::Direct(_) => None,
        }
    }

    /// The record of job operation `s`/`r` if it is a method operation in flight to `device`:
    /// an answer or a transport's word about anything else (another device, an op that ended)
    /// is ignored.
    fn running_record(
        &mut self,
        s: SlotIdx,
        r: RecordIdx,
        device: DeviceIdx,
    ) -> Option<&mut DeviceRecord> {
        self.slots
            .get_mut(s)?
            .job
            .records
            .get_mut(r.usize())
            .filter(|rec| rec.device == device && rec.status == DeviceStatus::Running)
    }

    /// The time of the next of a run of back-to-back events, with the recorder ticked to it:
    /// every operation the engine dispatches or hears about is stamped when it is handled (see
    /// [`Stamps`]), so a chunk of thousands spreads over the time it really takes instead of
    /// sharing its first instant.
    fn stamp(&mut self, stamps: &mut Stamps) -> Micros {
        let now = stamps.next();
        self.recorder.tick(now);
        now
    }

    /// Ends one device operation and keeps the statistics exact.
    fn finish_op(
        &mut self,
        s: SlotIdx,
        r: RecordIdx,
        now: Micros,
        status: DeviceStatus,
        error: DeviceError,
    ) {
        let job = &mut self.slots[s].job;
        let (was_running, failed) = job.end_op(r.usize(), status, error, now);
        let scheduled = job.records[r.usize()].scheduled_us;
        if let Some(journal) = &mut self.journal {
            journal.push(persist::result(s, r, &job.records[r.usize()]));
        }
        let job = &self.slots[s].job;
        let tripped = job
            .request
            .control
            .abort
            .as_ref()
            .filter(|_| status != DeviceStatus::Canceled)
            .and_then(|abort| {
                let tally = abort.base.plus(&job.tally);
                abort
                    .rules
                    .iter()
                    .find(|rule| rule.trips(&tally))
                    .map(|&rule| Tripped { rule, tally })
            });
        if status != DeviceStatus::Canceled {
            let slot = metrics_slot(s);
            if !was_running {
                self.recorder.op_dispatched(slot);
            }
            self.recorder
                .record(slot, Measure::Completion, now.saturating_sub(scheduled));
            self.recorder.op_done(slot, now, failed);
        }
        if let Some(tripped) = tripped {
            self.slots[s].job.tripped = Some(tripped);
            self.cancel(s, now);
        }
    }
}
