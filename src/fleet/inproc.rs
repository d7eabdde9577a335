//! The in-process transport: the hub's messages travel over channels in batches, and one task
//! plays every virtual device, holding future answers in a timer heap. No sockets, no task per
//! device: this is what reaches a million devices.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::fleet::behaviour::MethodOutcome;
use crate::fleet::device::DesiredOutcome;
use crate::fleet::Fleet;
use crate::ids::DeviceIdx;
use crate::link::{DeviceLink, FromDevice, OpId, ToDevice};

/// Messages per batch sent to the hub at most.
const BATCH: usize = 4096;

/// The hub's end of the in-process transport.
pub struct InProcLink {
    buf: Vec<ToDevice>,
    tx: mpsc::UnboundedSender<Vec<ToDevice>>,
}

impl InProcLink {
    /// A link sending to `tx`.
    pub fn new(tx: mpsc::UnboundedSender<Vec<ToDevice>>) -> Self {
        InProcLink {
            buf: Vec::new(),
            tx,
        }
    }
}

impl DeviceLink for InProcLink {
    fn send(&mut self, msg: ToDevice) {
        self.buf.push(msg);
        if self.buf.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            // A closed channel means the fleet has stopped: the run is ending.
            let _ = self.tx.send(std::mem::take(&mut self.buf));
        }
    }
}

#[derive(Debug)]
enum Event {
    Answer {
        op: OpId,
        device: DeviceIdx,
        status: i32,
        delivered: Micros,
    },
    Ack {
        op: Option<OpId>,
        device: DeviceIdx,
        patch: Arc<Value>,
    },
    Disconnect(DeviceIdx),
    Reconnect(DeviceIdx),
}

#[derive(Debug)]
struct Timer {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: the heap pops the earliest timer first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The device side of the in-process transport: plays every device of a fleet.
pub(crate) struct InProcFleet {
    fleet: Fleet,
    clock: Clock,
    timers: BinaryHeap<Timer>,
    seq: u64,
    out: Vec<FromDevice>,
    to_hub: mpsc::UnboundedSender<Vec<FromDevice>>,
}

impl InProcFleet {
    /// Plays `fleet`, answering the hub on `to_hub`.
    pub(crate) fn new(
        fleet: Fleet,
        clock: Clock,
        to_hub: mpsc::UnboundedSender<Vec<FromDevice>>,
    ) -> Self {
        InProcFleet {
            fleet,
            clock,
            timers: BinaryHeap::new(),
            seq: 0,
            out: Vec::with_capacity(BATCH),
            to_hub,
        }
    }

    /// Connects every device that is not offline for good. Call it before the hub takes any
    /// command, so that a job starting at once finds its devices connected.
    pub(crate) fn connect_online(&mut self) {
        let now = self.clock.now_us();
        for idx in (0..self.fleet.devices.len() as u32).map(DeviceIdx::new) {
            if !self.fleet.devices[idx.usize()].offline {
                self.connect(idx, now);
            }
        }
        self.flush();
    }

    /// Serves the hub until `shutdown` or the hub goes away.
    pub(crate) async fn run(
        mut self,
        mut from_hub: mpsc::UnboundedReceiver<Vec<ToDevice>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let now = self.clock.now_us();
            self.fire_due(now);
            self.flush();
            let next = self.timers.peek().map(|t| self.clock.instant_at(t.at));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                batch = from_hub.recv() => match batch {
                    Some(batch) => self.on_batch(batch),
                    None => break,
                },
                _ = async { tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)).await }, if next.is_some() => {}
            }
        }
    }

    fn push(&mut self, at: Micros, event: Event) {
        self.seq += 1;
        self.timers.push(Timer {
            at,
            seq: self.seq,
            event,
        });
    }

    fn emit(&mut self, msg: FromDevice) {
        self.out.push(msg);
        if self.out.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            let _ = self
                .to_hub
                .send(std::mem::replace(&mut self.out, Vec::with_capacity(BATCH)));
        }
    }

    fn connect(&mut self, idx: DeviceIdx, now: Micros) {
        let (seed, fleet) = (self.fleet.seed, &mut self.fleet);
        let dev = &mut fleet.devices[idx.usize()];
        dev.connected = true;
        let next = dev.next_disconnect(&fleet.models[dev.cohort as usize], seed, idx.get());
        self.emit(FromDevice::Connected { device: idx });
        if let Some(after) = next {
            self.push(now + after, Event::Disconnect(idx));
        }
    }

    fn on_batch(&mut self, batch: Vec<ToDevice>) {
        let seed = self.fleet.seed;
        let mut stamps = self.clock.stamps();
        for msg in batch {
            // Each device's own instant of receipt: the batch's later messages wait while the
            // earlier devices are played.
            let now = stamps.next();
            match msg {
                ToDevice::Method {
                    op, device, method, ..
                } => {
                    let Some(dev) = self.fleet.devices.get_mut(device.usize()) else {
                        continue;
                    };
                    if !dev.connected {
                        continue; // lost in a disconnect: the hub times it out
                    }
                    let model = &self.fleet.models[dev.cohort as usize];
                    match dev.on_method(model, &method, seed, device.get()) {
                        MethodOutcome::Silent => {}
                        MethodOutcome::Answer { after: 0, status } => {
                            self.emit(answer(op, device, status, now))
                        }
                        MethodOutcome::Answer { after, status } => self.push(
                            now + after,
                            Event::Answer {
                                op,
                                device,
                                status,
                                delivered: now,
                            },
                        ),
                    }
                }
                ToDevice::Desired {
                    op, device, patch, ..
                } => {
                    let Some(dev) = self.fleet.devices.get_mut(device.usize()) else {
                        continue;
                    };
                    if !dev.connected {
                        continue;
                    }
                    let model = &self.fleet.models[dev.cohort as usize];
                    let outcome = dev.on_desired(model, seed, device.get());
                    if let Some(op) = op {
                        self.emit(FromDevice::DesiredDelivered {
                            op,
                            delivered_us: now,
                        });
                    }
                    if let DesiredOutcome::Ack(after) = outcome {
                        self.push(now + after, Event::Ack { op, device, patch });
                    }
                }
            }
        }
    }

    fn fire_due(&mut self, now: Micros) {
        while self.timers.peek().is_some_and(|t| t.at <= now) {
            let Some(timer) = self.timers.pop() else {
                break;
            };
            let seed = self.fleet.seed;
            match timer.event {
                Event::Answer {
                    op,
                    device,
                    status,
                    delivered,
                } => {
                    if self.fleet.devices[device.usize()].connected {
                        self.emit(answer(op, device, status, delivered));
                    }
                }
                Event::Ack { op, device, patch } => {
                    if self.fleet.devices[device.usize()].connected {
                        self.emit(FromDevice::Reported {
                            device,
                            patch,
                            ack_of: op,
                        });
                    }
                }
                Event::Disconnect(device) => {
                    let fleet = &mut self.fleet;
                    let dev = &mut fleet.devices[device.usize()];
                    dev.connected = false;
                    let down = dev.downtime(&fleet.models[dev.cohort as usize], seed, device.get());
                    self.emit(FromDevice::Disconnected { device });
                    self.push(timer.at + down, Event::Reconnect(device));
                }
                Event::Reconnect(device) => self.connect(device, timer.at),
            }
        }
    }
}

fn answer(op: OpId, device: DeviceIdx, status: i32, delivered: Micros) -> FromDevice {
    FromDevice::MethodResponse {
        op,
        device,
        status,
        payload: None,
        delivered_us: Some(delivered),
    }
}
