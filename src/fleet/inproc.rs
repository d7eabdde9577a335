//! The in-process transport: the hub's messages travel over channels in batches, and one task
//! plays every virtual device, holding future answers in a timer heap. No sockets, no task per
//! device: this is what reaches a million devices.
//!
//! A cohort with a link model ([`LinkModel`](crate::fleet::behaviour::LinkModel)) has its
//! messages held in the same heap: a message from the hub reaches the device after its downlink
//! latency (the `delivered_us` the device reports is that moment), the device's answer reaches
//! the hub after the device's own latency plus the uplink latency, and a message lost either way
//! is simply never acted on or never answered.
//!
//! The scenario's faults ([`FaultPlan`](crate::fleet::faults::FaultPlan)) act here too: a
//! disconnect drops the devices it hits at its instant (they reconnect after their backoff), a
//! partition loses every message to and from them and costs them their session after the
//! session timeout, a latency fault adds to each message's trip, an errors fault fails methods.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::fleet::behaviour::{MethodOutcome, Trip};
use crate::fleet::device::DesiredOutcome;
use crate::fleet::faults::{self, FaultKind, SESSION_TIMEOUT_US};
use crate::fleet::Fleet;
use crate::ids::DeviceIdx;
use crate::link::{DeviceLink, FromDevice, OpId, ToDevice};

mod timers;

use timers::Timers;

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

/// What a timer does when it fires. Those about a device carry the connection they belong to
/// (see [`VirtualDevice::connection`](crate::fleet::device::VirtualDevice::connection)): one
/// that has since dropped takes them with it.
#[derive(Debug)]
enum Event {
    Answer {
        op: OpId,
        device: DeviceIdx,
        status: i32,
        delivered: Micros,
        connection: u32,
    },
    Ack {
        op: Option<OpId>,
        device: DeviceIdx,
        patch: Arc<Value>,
        connection: u32,
    },
    /// The churn model drops the connection.
    Disconnect(DeviceIdx, u32),
    /// The device, disconnected on that connection, connects again.
    Reconnect(DeviceIdx, u32),
    /// Fault `k` acts: a disconnect drops its devices; a partition, past the session timeout,
    /// costs its devices their sessions.
    Fault(u32),
    /// A message reaches its device after its downlink latency (boxed: links are the rare
    /// case, and the heap's entries stay small without them).
    Arrive(Box<Arrival>),
}

/// A message on its way down a device's link.
#[derive(Debug)]
struct Arrival {
    msg: ToDevice,
    /// The uplink latency of the device's answer (None: lost).
    up: Option<Micros>,
    /// The device's connection it was sent on: a disconnect loses it.
    connection: u32,
}

/// The device side of the in-process transport: plays every device of a fleet.
pub(crate) struct InProcFleet {
    fleet: Fleet,
    clock: Clock,
    timers: Timers<Event>,
    /// What the devices sent and the hub has not taken yet.
    out: Vec<FromDevice>,
    /// Where batches of `out` go; None when the engine takes them itself ([`LocalFleet`]).
    to_hub: Option<mpsc::UnboundedSender<Vec<FromDevice>>>,
}

impl InProcFleet {
    /// Plays `fleet`, answering the hub on `to_hub`.
    pub(crate) fn new(
        fleet: Fleet,
        clock: Clock,
        to_hub: mpsc::UnboundedSender<Vec<FromDevice>>,
    ) -> Self {
        Self::sending_to(fleet, clock, Some(to_hub))
    }

    /// Plays `fleet`, its batches going to `to_hub` (None: the engine takes them itself).
    fn sending_to(
        fleet: Fleet,
        clock: Clock,
        to_hub: Option<mpsc::UnboundedSender<Vec<FromDevice>>>,
    ) -> Self {
        InProcFleet {
            fleet,
            clock,
            timers: Timers::default(),
            out: Vec::new(),
            to_hub,
        }
    }

    /// Connects every device that is not offline for good, begins the faults' timeline now
    /// (the in-process fleet is connected at once) and sets their timers. Call it before the
    /// hub takes any command, so that a job starting at once finds its devices connected.
    pub(crate) fn connect_online(&mut self) {
        let now = self.clock.now_us();
        self.fleet.faults.begin(now);
        let origin = self.fleet.faults.origin().unwrap_or(now);
        for idx in (0..self.fleet.devices.len() as u32).map(DeviceIdx::new) {
            if !self.fleet.devices[idx.usize()].offline {
                self.connect(idx, now);
            }
        }
        for (k, f) in self.fleet.faults.faults().iter().enumerate() {
            let at = match f.kind {
                FaultKind::Disconnect => Some(f.start_us),
                FaultKind::Partition => Some(f.start_us.saturating_add(SESSION_TIMEOUT_US))
                    .filter(|&timeout| timeout < f.end_us),
                FaultKind::Latency(_) | FaultKind::Errors(_) => None,
            };
            if let Some(at) = at {
                self.timers
                    .push(origin.saturating_add(at), Event::Fault(k as u32));
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
        let cancelled = shutdown.cancelled();
        let timer = tokio::time::sleep_until(self.clock.instant_at(0));
        tokio::pin!(cancelled, timer);
        loop {
            let now = self.clock.now_us();
            self.fire_due(now);
            self.flush();
            let next = self.timers.next_at().map(|at| self.clock.instant_at(at));
            if let Some(next) = next.filter(|&n| n != timer.deadline()) {
                timer.as_mut().reset(next);
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                batch = from_hub.recv() => match batch {
                    Some(batch) => self.on_batch(batch),
                    None => break,
                },
                _ = &mut timer, if next.is_some() => {}
            }
        }
    }

    fn push(&mut self, at: Micros, event: Event) {
        self.timers.push(at, event);
    }

    fn emit(&mut self, msg: FromDevice) {
        self.out.push(msg);
        if self.out.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let (false, Some(to_hub)) = (self.out.is_empty(), &self.to_hub) {
            // The next batch is likely about this one's size (often one message: a timer
            // fired); a batch of BATCH's capacity each time cost more in the allocator than
            // everything else the fleet does for it.
            let next = Vec::with_capacity(self.out.len());
            let _ = to_hub.send(std::mem::replace(&mut self.out, next));
        }
    }

    fn connect(&mut self, idx: DeviceIdx, now: Micros) {
        let (seed, fleet) = (self.fleet.seed, &mut self.fleet);
        let dev = &mut fleet.devices[idx.usize()];
        dev.connected = true;
        let next = dev.next_disconnect(&fleet.models[dev.cohort as usize], seed, idx.get());
        let connection = dev.connection();
        self.emit(FromDevice::Connected { device: idx });
        if let Some(after) = next {
            self.push(now + after, Event::Disconnect(idx, connection));
        }
    }

    /// The connection of `idx` drops at `now` (a fault, or the hub closed it): the hub hears of
    /// it if `tell_hub`, and the device reconnects after its backoff.
    fn drop_connection(&mut self, idx: DeviceIdx, now: Micros, tell_hub: bool) {
        let dev = &mut self.fleet.devices[idx.usize()];
        if !dev.connected {
            return;
        }
        let drops = dev.drop_connection();
        let connection = dev.connection();
        if tell_hub {
            self.emit(FromDevice::Disconnected { device: idx });
        }
        let wait = faults::reconnect_wait(self.fleet.seed, idx.get(), drops, 0);
        self.push(now + wait, Event::Reconnect(idx, connection));
    }

    /// Fault `k` acts at `now` on the connected devices it hits (a disconnect, or a partition
    /// past the session timeout): they drop, and reconnect when they can.
    fn on_fault(&mut self, k: usize, now: Micros) {
        let seed = self.fleet.seed;
        for idx in 0..self.fleet.devices.len() as u32 {
            let dev = &self.fleet.devices[idx as usize];
            if dev.connected && self.fleet.faults.hits(k, seed, idx, dev.cohort) {
                self.drop_connection(DeviceIdx::new(idx), now, true);
            }
        }
    }

    /// Whether a partition cuts device `idx` off at `now`.
    fn cut_off(&self, idx: DeviceIdx, now: Micros) -> bool {
        let dev = &self.fleet.devices[idx.usize()];
        self.fleet
            .faults
            .partitioned_until(now, self.fleet.seed, idx.get(), dev.cohort)
            .is_some()
    }

    fn on_batch(&mut self, batch: impl IntoIterator<Item = ToDevice>) {
        let seed = self.fleet.seed;
        let mut stamps = self.clock.stamps();
        for msg in batch {
            // Each device's own instant of receipt: the batch's later messages wait while the
            // earlier devices are played.
            let now = stamps.next();
            let device = msg.device();
            if let ToDevice::Disconnect { .. } = msg {
                // The hub already knows: it closed the connection.
                self.drop_connection(device, now, false);
                continue;
            }
            let Some(dev) = self.fleet.devices.get(device.usize()) else {
                continue;
            };
            if !dev.connected || self.cut_off(device, now) {
                continue; // lost in a disconnect or a partition: the hub times it out
            }
            let cohort = dev.cohort;
            let added = self
                .fleet
                .faults
                .added_latency(now, seed, device.get(), cohort);
            let dev = &mut self.fleet.devices[device.usize()];
            let trip = match &self.fleet.models[cohort as usize].link {
                None => Trip {
                    down: Some(0),
                    up: Some(0),
                },
                Some(link) => dev.on_link(link, seed, device.get()),
            };
            let (Some(down), up) = (trip.down, trip.up) else {
                continue; // lost on the way down
            };
            let (down, up) = (down + added, up.map(|up| up + added));
            if down > 0 {
                let arrival = Arrival {
                    msg,
                    up,
                    connection: dev.connection(),
                };
                self.push(now + down, Event::Arrive(Box::new(arrival)));
                continue;
            }
            self.deliver(msg, up, now);
        }
    }

    /// `msg` reaches its connected device at `now`; whatever the device sends back takes `up`
    /// more to reach the hub (None: it is lost on the way).
    fn deliver(&mut self, msg: ToDevice, up: Option<Micros>, now: Micros) {
        let seed = self.fleet.seed;
        match msg {
            ToDevice::Method {
                op, device, method, ..
            } => {
                let dev = &mut self.fleet.devices[device.usize()];
                let fail = self
                    .fleet
                    .faults
                    .error_rate(now, seed, device.get(), dev.cohort);
                let model = &self.fleet.models[dev.cohort as usize];
                let connection = dev.connection();
                match (dev.on_method(model, &method, seed, device.get(), fail), up) {
                    (MethodOutcome::Silent, _) | (_, None) => {}
                    (MethodOutcome::Answer { after: 0, status }, Some(0)) => {
                        self.emit(answer(op, device, status, now))
                    }
                    (MethodOutcome::Answer { after, status }, Some(up)) => self.push(
                        now + after + up,
                        Event::Answer {
                            op,
                            device,
                            status,
                            delivered: now,
                            connection,
                        },
                    ),
                }
            }
            ToDevice::Desired {
                op, device, patch, ..
            } => {
                let dev = &mut self.fleet.devices[device.usize()];
                let model = &self.fleet.models[dev.cohort as usize];
                let outcome = dev.on_desired(model, seed, device.get());
                let connection = dev.connection();
                if let Some(op) = op {
                    self.emit(FromDevice::DesiredDelivered {
                        op,
                        delivered_us: now,
                    });
                }
                if let (DesiredOutcome::Ack(after), Some(up)) = (outcome, up) {
                    let ack = Event::Ack {
                        op,
                        device,
                        patch,
                        connection,
                    };
                    self.push(now + after + up, ack);
                }
            }
            // Handled as the batch arrives.
            ToDevice::Disconnect { .. } => {}
        }
    }

    fn fire_due(&mut self, now: Micros) {
        while self.timers.next_at().is_some_and(|at| at <= now) {
            let Some((at, event)) = self.timers.pop() else {
                break;
            };
            let seed = self.fleet.seed;
            match event {
                Event::Answer {
                    op,
                    device,
                    status,
                    delivered,
                    connection,
                } => {
                    if self.on_connection(device, connection, now) {
                        self.emit(answer(op, device, status, delivered));
                    }
                }
                Event::Ack {
                    op,
                    device,
                    patch,
                    connection,
                } => {
                    if self.on_connection(device, connection, now) {
                        self.emit(FromDevice::Reported {
                            device,
                            patch,
                            ack_of: op,
                        });
                    }
                }
                Event::Disconnect(device, connection) => {
                    let fleet = &mut self.fleet;
                    let dev = &mut fleet.devices[device.usize()];
                    if !dev.connected || dev.connection() != connection {
                        continue; // that connection has already dropped
                    }
                    dev.connected = false;
                    let down = dev.downtime(&fleet.models[dev.cohort as usize], seed, device.get());
                    let connection = dev.connection();
                    self.emit(FromDevice::Disconnected { device });
                    self.push(at + down, Event::Reconnect(device, connection));
                }
                Event::Reconnect(device, connection) => {
                    let dev = &self.fleet.devices[device.usize()];
                    if dev.connected || dev.connection() != connection {
                        continue;
                    }
                    let cohort = dev.cohort;
                    let partition =
                        self.fleet
                            .faults
                            .partitioned_until(at, seed, device.get(), cohort);
                    match partition {
                        // Cut off: it gets through when the partition ends.
                        Some(end) => {
                            let wait = faults::reconnect_wait(seed, device.get(), connection, 0);
                            self.push(end + wait, Event::Reconnect(device, connection));
                        }
                        None => self.connect(device, at),
                    }
                }
                Event::Fault(k) => self.on_fault(k as usize, at),
                Event::Arrive(arrival) => {
                    let Arrival {
                        msg,
                        up,
                        connection,
                    } = *arrival;
                    if self.on_connection(msg.device(), connection, now) {
                        self.deliver(msg, up, now);
                    }
                }
            }
        }
    }
}

impl InProcFleet {
    /// Whether `device` is still on `connection` and reachable at `now`: what was on its way
    /// over it arrives.
    fn on_connection(&self, device: DeviceIdx, connection: u32, now: Micros) -> bool {
        let dev = &self.fleet.devices[device.usize()];
        dev.connected && dev.connection() == connection && !self.cut_off(device, now)
    }
}

/// The in-process fleet in the engine's own task, as the engine's link (virtual time): the engine
/// hands it messages and polls it for what its devices send and when their next timer is due. No
/// channel, no second task: a churn event costs one turn of one task instead of a wake-up of
/// each, and a simulated day of a million devices has millions of them.
pub(crate) struct LocalFleet {
    devices: InProcFleet,
    /// Messages from the hub not yet delivered (until [`DeviceLink::flush`]).
    inbox: Vec<ToDevice>,
}

impl LocalFleet {
    /// Plays `fleet`; its online devices connect at once (the engine hears it first thing).
    pub(crate) fn new(fleet: Fleet, clock: Clock) -> Self {
        let mut devices = InProcFleet::sending_to(fleet, clock, None);
        devices.connect_online();
        LocalFleet {
            devices,
            inbox: Vec::new(),
        }
    }
}

impl DeviceLink for LocalFleet {
    fn send(&mut self, msg: ToDevice) {
        self.inbox.push(msg);
    }

    fn flush(&mut self) {
        if !self.inbox.is_empty() {
            let mut inbox = std::mem::take(&mut self.inbox);
            self.devices.on_batch(inbox.drain(..));
            self.inbox = inbox;
        }
    }

    fn poll_devices(&mut self, now: Micros, out: &mut Vec<FromDevice>) -> Option<Micros> {
        self.devices.fire_due(now);
        out.append(&mut self.devices.out);
        self.devices.timers.next_at()
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::fleet::behaviour::{CohortModel, Latency, LinkModel, MethodModel};
    use crate::fleet::faults::{DeviceFault, FaultPlan};
    use crate::shard::Shard;

    /// Methods answered 200 after `method_us`, twin patches acknowledged after `ack_us`,
    /// behind `link`.
    fn cohort(method_us: Micros, ack_us: Micros, link: Option<LinkModel>) -> CohortModel {
        let default = MethodModel {
            latency: Latency::fixed(method_us),
            error_rate: 0.0,
            error_status: 500,
            no_response: 0.0,
            ok_status: 200,
        };
        let methods = HashMap::from([("default".to_owned(), default)]);
        CohortModel::new(methods, Latency::fixed(ack_us), 0.0, 0.0, None).with_link(link)
    }

    fn link(one_way_us: Micros, loss: f64) -> Option<LinkModel> {
        Some(LinkModel {
            latency: Latency::fixed(one_way_us),
            loss,
        })
    }

    /// The hub's ends of a running fleet of `n` devices of `model`.
    struct Bench {
        clock: Clock,
        to_fleet: mpsc::UnboundedSender<Vec<ToDevice>>,
        from_fleet: mpsc::UnboundedReceiver<Vec<FromDevice>>,
        _stop: tokio_util::sync::DropGuard,
    }

    fn bench(model: CohortModel, n: u64) -> Bench {
        bench_with_faults(model, n, Vec::new())
    }

    /// A bench whose fleet plays `faults` (their timeline begins as it connects, at 0).
    fn bench_with_faults(model: CohortModel, n: u64, faults: Vec<DeviceFault>) -> Bench {
        let clock = Clock::start();
        let (to_hub, from_fleet) = mpsc::unbounded_channel();
        let (to_fleet, from_hub) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let mut fleet = InProcFleet::new(
            Fleet::new(vec![(model, n)], 1, Shard::ALL).with_faults(FaultPlan::new(faults)),
            clock.clone(),
            to_hub,
        );
        fleet.connect_online();
        tokio::spawn(fleet.run(from_hub, stop.clone()));
        Bench {
            clock,
            to_fleet,
            from_fleet,
            _stop: stop.drop_guard(),
        }
    }

    impl Bench {
        /// The next message to the hub other than a connection, and when it came.
        async fn next(&mut self) -> (Micros, FromDevice) {
            loop {
                let batch = tokio::time::timeout(Duration::from_secs(3600), self.from_fleet.recv())
                    .await
                    .expect("the fleet sends something")
                    .expect("the fleet runs");
                let now = self.clock.now_us();
                if let Some(m) = batch
                    .into_iter()
                    .find(|m| !matches!(m, FromDevice::Connected { .. }))
                {
                    return (now, m);
                }
            }
        }

        /// Whether the fleet sends anything but connections within `secs`.
        async fn silent_for(&mut self, secs: u64) -> bool {
            tokio::time::timeout(Duration::from_secs(secs), self.next())
                .await
                .is_err()
        }

        fn method(&self, device: u32, record: u32) -> Micros {
            let now = self.clock.now_us();
            let msg = ToDevice::Method {
                op: OpId::new(0, record),
                device: DeviceIdx::new(device),
                method: "reboot".into(),
                payload: Arc::new(json!({})),
                connect_deadline: now,
            };
            self.to_fleet.send(vec![msg]).unwrap();
            now
        }

        fn desired(&self, device: u32, record: u32) -> Micros {
            let msg = ToDevice::Desired {
                op: Some(OpId::new(0, record)),
                device: DeviceIdx::new(device),
                version: 2,
                patch: Arc::new(json!({"fw": "2"})),
            };
            self.to_fleet.send(vec![msg]).unwrap();
            self.clock.now_us()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_link_answers_come_at_once() {
        let mut b = bench(cohort(0, 0, None), 1);
        let sent = b.method(0, 1);
        let (at, got) = b.next().await;
        assert_eq!(at, sent);
        assert!(matches!(
            got,
            FromDevice::MethodResponse { status: 200, delivered_us: Some(d), .. } if d == sent
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_method_crosses_the_link_both_ways() {
        // 200 ms each way, 50 ms on the device.
        let mut b = bench(cohort(50_000, 0, link(200_000, 0.0)), 1);
        let sent = b.method(0, 1);
        let (at, got) = b.next().await;
        let FromDevice::MethodResponse {
            status,
            delivered_us: Some(delivered),
            ..
        } = got
        else {
            panic!("expected a method answer, got {got:?}");
        };
        assert_eq!(status, 200);
        assert_eq!(
            delivered - sent,
            200_000,
            "the device sees it after the downlink"
        );
        assert_eq!(at - sent, 450_000, "down, the device's 50 ms, up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_desired_patch_is_delivered_after_the_downlink_and_acknowledged_after_the_uplink() {
        let mut b = bench(cohort(0, 30_000, link(200_000, 0.0)), 1);
        let sent = b.desired(0, 1);
        let (at, got) = b.next().await;
        assert!(
            matches!(got, FromDevice::DesiredDelivered { delivered_us, .. } if delivered_us == sent + 200_000),
            "{got:?}"
        );
        assert_eq!(at - sent, 200_000);
        let (at, got) = b.next().await;
        assert!(
            matches!(
                got,
                FromDevice::Reported {
                    ack_of: Some(_),
                    ..
                }
            ),
            "{got:?}"
        );
        assert_eq!(at - sent, 430_000, "down, the device's 30 ms, up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_losing_everything_delivers_and_answers_nothing() {
        let mut b = bench(cohort(0, 0, link(100_000, 1.0)), 4);
        for d in 0..4 {
            b.method(d, d);
            b.desired(d, 10 + d);
        }
        assert!(
            b.silent_for(60).await,
            "nothing delivered, answered or acknowledged"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lossy_link_loses_its_share_and_the_seed_decides_which() {
        let answered = || async {
            let mut b = bench(cohort(0, 0, link(0, 0.3)), 1000);
            for d in 0..1000 {
                b.method(d, d);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut devices = Vec::new();
            while let Ok(batch) = b.from_fleet.try_recv() {
                devices.extend(batch.into_iter().filter_map(|m| match m {
                    FromDevice::MethodResponse { device, .. } => Some(device),
                    _ => None,
                }));
            }
            devices
        };
        let a = answered().await;
        let n = a.len();
        // Lost down or up: 1 - 0.7² = 51% lost; 490 answered, sd 16.
        assert!((420..560).contains(&n), "answered {n}");
        assert_eq!(a, answered().await, "same seed, same losses");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_in_flight_is_lost_with_its_connection() {
        let model = CohortModel::new(
            HashMap::new(),
            Latency::fixed(0),
            0.0,
            0.0,
            Some(crate::fleet::behaviour::Churn {
                disconnects_per_hour: 3.6e6, // every millisecond or so
                downtime: Latency::fixed(1),
            }),
        )
        .with_link(link(1_000_000, 0.0));
        let mut b = bench(model, 1);
        let sent = b.method(0, 1);
        let mut answered = false;
        while b.clock.now_us() < sent + 3_000_000 {
            let (_, m) = b.next().await;
            answered |= matches!(m, FromDevice::MethodResponse { .. });
        }
        assert!(
            !answered,
            "the device reconnected, but the request was on its old connection"
        );
    }

    /// A fault of `kind` on every device from `start_s` to `end_s`.
    fn fault(kind: FaultKind, start_s: u64, end_s: u64, share: f64) -> DeviceFault {
        DeviceFault {
            kind,
            start_us: start_s * 1_000_000,
            end_us: end_s * 1_000_000,
            cohort: None,
            share,
        }
    }

    /// Every message to the hub until `until_us`, with when it came.
    async fn all_until(b: &mut Bench, until_us: Micros) -> Vec<(Micros, FromDevice)> {
        let mut out = Vec::new();
        while b.clock.now_us() < until_us {
            let left = Duration::from_micros(until_us - b.clock.now_us());
            match tokio::time::timeout(left, b.from_fleet.recv()).await {
                Ok(Some(batch)) => {
                    let now = b.clock.now_us();
                    out.extend(batch.into_iter().map(|m| (now, m)));
                }
                _ => break,
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnect_storm_drops_its_share_at_its_instant_and_they_come_back() {
        let faults = vec![fault(FaultKind::Disconnect, 10, 10, 0.5)];
        let mut b = bench_with_faults(cohort(0, 0, None), 1000, faults);
        let seen = all_until(&mut b, 20_000_000).await;
        let dropped: Vec<Micros> = seen
            .iter()
            .filter(|(_, m)| matches!(m, FromDevice::Disconnected { .. }))
            .map(|&(at, _)| at)
            .collect();
        let back: Vec<Micros> = seen
            .iter()
            .filter(|(at, m)| *at > 0 && matches!(m, FromDevice::Connected { .. }))
            .map(|&(at, _)| at)
            .collect();
        // Binomial: 500 ± 5 sd.
        assert!(
            (420..580).contains(&dropped.len()),
            "dropped {}",
            dropped.len()
        );
        assert!(dropped.iter().all(|&at| at == 10_000_000), "all at once");
        assert_eq!(back.len(), dropped.len(), "every one reconnects");
        // The first backoff: 250 ms × 0.5–1.5 (tokio's timer rounds up to the millisecond).
        assert!(
            back.iter()
                .all(|&at| (10_125_000..=10_376_000).contains(&at)),
            "{:?}",
            &back[..5]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_loses_messages_then_the_session_then_reconnects_after_it() {
        // Cut off from 10 s to 200 s: longer than the 90 s session timeout.
        let faults = vec![fault(FaultKind::Partition, 10, 200, 1.0)];
        let mut b = bench_with_faults(cohort(0, 0, None), 1, faults);
        tokio::time::sleep(Duration::from_secs(20)).await;
        b.method(0, 1);
        let seen = all_until(&mut b, 300_000_000).await;
        let kinds: Vec<(Micros, &str)> = seen
            .iter()
            // The first connection, heard now.
            .skip(1)
            .map(|(at, m)| {
                let kind = match m {
                    FromDevice::Connected { .. } => "connected",
                    FromDevice::Disconnected { .. } => "disconnected",
                    _ => "other",
                };
                (*at, kind)
            })
            .collect();
        assert_eq!(
            kinds.len(),
            2,
            "no answer, a timeout, a reconnection: {kinds:?}"
        );
        assert_eq!(kinds[0], (100_000_000, "disconnected"), "10 s + 90 s");
        assert_eq!(kinds[1].1, "connected");
        assert!(
            (200_125_000..=200_376_000).contains(&kinds[1].0),
            "{kinds:?}"
        );
        // Healed: answered again.
        let sent = b.method(0, 2);
        let (at, got) = b.next().await;
        assert_eq!(at, sent);
        assert!(matches!(
            got,
            FromDevice::MethodResponse { status: 200, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_partition_loses_messages_but_keeps_the_session() {
        let faults = vec![fault(FaultKind::Partition, 10, 30, 1.0)];
        let mut b = bench_with_faults(cohort(0, 0, None), 1, faults);
        tokio::time::sleep(Duration::from_secs(15)).await;
        b.method(0, 1);
        assert!(b.silent_for(60).await, "lost, and no disconnection");
        let sent = b.method(0, 2);
        assert_eq!(b.next().await.0, sent, "answered after it healed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_latency_fault_adds_to_both_ways_only_while_it_lasts() {
        let faults = vec![fault(FaultKind::Latency(300_000), 10, 20, 1.0)];
        let mut b = bench_with_faults(cohort(50_000, 0, None), 1, faults);
        tokio::time::sleep(Duration::from_secs(12)).await;
        let sent = b.method(0, 1);
        let (at, got) = b.next().await;
        assert_eq!(
            at - sent,
            650_000,
            "300 ms down, 50 ms on the device, 300 ms up"
        );
        assert!(matches!(
            got,
            FromDevice::MethodResponse { delivered_us: Some(d), .. } if d == sent + 300_000
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let sent = b.method(0, 2);
        assert_eq!(
            b.next().await.0 - sent,
            50_000,
            "over: the device's own latency"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_errors_fault_fails_its_share_of_methods_while_it_lasts() {
        let faults = vec![fault(FaultKind::Errors(0.3), 10, 20, 1.0)];
        let mut b = bench_with_faults(cohort(0, 0, None), 2000, faults);
        async fn failed(b: &mut Bench) -> usize {
            for d in 0..2000 {
                b.method(d, d);
            }
            let mut failed = 0;
            for _ in 0..2000 {
                if let FromDevice::MethodResponse { status: 500, .. } = b.next().await.1 {
                    failed += 1;
                }
            }
            failed
        }
        assert_eq!(failed(&mut b).await, 0, "before it");
        tokio::time::sleep(Duration::from_secs(12)).await;
        let during = failed(&mut b).await;
        // Binomial: 600 ± 4.9 sd.
        assert!((500..700).contains(&during), "failed {during}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(failed(&mut b).await, 0, "after it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_hub_closing_a_connection_brings_the_device_back_after_its_backoff() {
        let mut b = bench(cohort(0, 0, None), 1);
        b.to_fleet
            .send(vec![ToDevice::Disconnect {
                device: DeviceIdx::new(0),
            }])
            .unwrap();
        let start = b.clock.now_us();
        let seen = all_until(&mut b, start + 1_000_000).await;
        let back: Vec<Micros> = seen
            .iter()
            .filter(|(at, m)| *at > start && matches!(m, FromDevice::Connected { .. }))
            .map(|&(at, _)| at - start)
            .collect();
        assert_eq!(back.len(), 1, "{seen:?}");
        assert!((125_000..=376_000).contains(&back[0]), "{back:?}");
        assert!(
            !seen
                .iter()
                .any(|(_, m)| matches!(m, FromDevice::Disconnected { .. })),
            "the hub knows already"
        );
    }
}
