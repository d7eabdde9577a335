//! One connected device's session as data, served by the [`pump`](super::pump): what the
//! device does with the hub's publishes (method answers and reported patches, each after its
//! simulated latency, asked of its [`VirtualDevice`] exactly as the in-process transport does),
//! when it pings, and when its churn model drops it. No I/O of its own: it queues packets on
//! its connection's [`Stream`] and tells the pump when it next needs the time.
//!
//! Where the fleet reports receipts (see [`crate::receipts`]), a device stamps each method
//! request and desired notification as it sees it, into the pump's [`Outbox`].
//!
//! A cohort with a link model ([`LinkModel`](crate::fleet::behaviour::LinkModel)) puts the
//! device behind a simulated network: a publish from the hub waits its downlink latency before
//! the device sees it, the device's answer waits its own latency plus the uplink latency before
//! it is sent, and a message lost either way is dropped (the hub times the method out, or never
//! sees the acknowledgement). The socket itself is the hub's side of that network.
//!
//! The scenario's faults ([`FaultPlan`](crate::fleet::faults::FaultPlan)) act here as in
//! process: a disconnect ends the session at its instant ([`Ended::Fault`], from the pump); a
//! partition makes
//! the device deaf and mute (what arrives is dropped, answers and pings are not sent, so the hub
//! closes the session after 1.5 keep-alives); a latency fault adds to both ways of the trip; an
//! errors fault fails methods.
//!
//! [`VirtualDevice`]: crate::fleet::device::VirtualDevice

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

use crate::clock::Micros;
use crate::fleet::behaviour::{MethodOutcome, Trip};
use crate::fleet::device::DesiredOutcome;
use crate::fleet::mqtt::client::Device;
use crate::fleet::mqtt::Shared;
use crate::ids::DeviceIdx;
use crate::link::{Receipt, Received};
use crate::mqtt::stream::Stream;
use crate::mqtt::topics::{self, HubPublish};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The run is stopping.
    Shutdown,
    /// The device's churn model disconnected it.
    Churn,
    /// The connection failed (closed by the hub, a socket or protocol error).
    Lost,
    /// A `disconnect` fault dropped it.
    Fault,
}

/// What waits for its simulated latency to pass: an answer, or a publish from the hub still on
/// the device's link.
enum Answer {
    /// A publish from the hub that reaches the device when due.
    Arrival {
        /// The publish.
        publish: Publish,
        /// The uplink latency of the device's answer to it (None: lost).
        up: Option<Micros>,
    },
    /// A method answer.
    Method {
        /// The device's status.
        status: i32,
        /// The request id it answers.
        rid: Box<str>,
    },
    /// A reported patch acknowledging a desired one.
    Report {
        /// Its request id.
        rid: u32,
        /// The reported properties.
        body: Bytes,
    },
}

/// What the pump's sessions make besides the bytes they queue: method answers go out through
/// one reused packet (answering a method then allocates nothing), and receipts of what devices
/// received gather until the end of the pump's turn.
pub(crate) struct Outbox {
    answer: Packet,
    /// Whether to stamp receipts at all (the fleet reports them somewhere).
    stamping: bool,
    /// The receipts of this turn.
    pub(crate) receipts: Vec<Receipt>,
}

impl Outbox {
    /// An outbox; `stamping`: whether devices stamp what they receive.
    pub(crate) fn new(stamping: bool) -> Self {
        Outbox {
            answer: publish(String::new(), Bytes::from_static(b"null")),
            stamping,
            receipts: Vec::new(),
        }
    }

    /// Queues the answer `status` to request `rid` on `out`.
    fn send(&mut self, out: &mut Stream, status: i32, rid: &str) {
        if let Packet::Publish(p) = &mut self.answer {
            topics::write_method_response(&mut p.topic, status, rid);
        }
        out.queue(&self.answer);
    }

    /// Device `idx` received `what` at `now`.
    fn received(&mut self, idx: u32, what: Option<Received>, now: Micros) {
        if let (true, Some(what)) = (self.stamping, what) {
            self.receipts.push(Receipt {
                device: DeviceIdx::new(idx),
                what,
                at_us: now,
            });
        }
    }
}

/// A connected device: its state, its answers in waiting and its next ping and disconnect.
pub(crate) struct Session {
    device: Device,
    /// Answers waiting for their latency to pass, earliest first (equal times in arrival
    /// order). Rarely more than one or two.
    later: Vec<(Micros, Answer)>,
    /// The request id of the last reported patch.
    report_rid: u32,
    ping_at: Micros,
    /// When the churn model drops the connection (`Micros::MAX`: never).
    churn_at: Micros,
}

impl Session {
    /// `device` has just connected (CONNACK received, SUBSCRIBE sent) at `now`.
    pub(crate) fn open(mut device: Device, shared: &Shared, now: Micros) -> Session {
        let model = &shared.models[device.state.cohort as usize];
        device.state.connected = true;
        shared.status.connected.fetch_add(1, Ordering::Relaxed);
        shared.status.connects.fetch_add(1, Ordering::Relaxed);
        let churn_at = device
            .state
            .next_disconnect(model, shared.seed, device.idx)
            .map_or(Micros::MAX, |us| now.saturating_add(us));
        Session {
            device,
            later: Vec::new(),
            report_rid: 0,
            ping_at: now.saturating_add(keep_alive(shared)),
            churn_at,
        }
    }

    /// Whether fault `k` of the plan hits this device.
    pub(crate) fn hit_by(&self, k: usize, shared: &Shared) -> bool {
        let (idx, cohort) = (self.device.idx, self.device.state.cohort);
        shared.faults.hits(k, shared.seed, idx, cohort)
    }

    /// Acts on a packet from the hub: a method request or a desired patch is answered as the
    /// device's behaviour model says, at once or later (behind a link, it first waits out its
    /// downlink latency, or is lost). Returns whether it queued output.
    pub(crate) fn on_packet(
        &mut self,
        packet: Packet,
        now: Micros,
        shared: &Shared,
        out: &mut Stream,
        outbox: &mut Outbox,
    ) -> bool {
        let Packet::Publish(p) = packet else {
            return false;
        };
        if self.cut_off(now, shared) {
            return false; // a partition: nothing gets through
        }
        let (seed, idx) = (shared.seed, self.device.idx);
        let cohort = self.device.state.cohort;
        let added = shared.faults.added_latency(now, seed, idx, cohort);
        let model = &shared.models[cohort as usize];
        let up = match (&model.link, added) {
            (None, 0) => Some(0),
            (link, added) => {
                // Only what the device acts on crosses the link (answers to its own twin
                // requests are nothing to it).
                if !matches!(
                    topics::parse_hub_publish(&p.topic),
                    Some(HubPublish::Method { .. } | HubPublish::Desired { .. })
                ) {
                    return false;
                }
                let trip = match link {
                    Some(link) => self.device.state.on_link(link, seed, idx),
                    None => Trip {
                        down: Some(0),
                        up: Some(0),
                    },
                };
                match trip.down.map(|down| down.saturating_add(added)) {
                    None => return false, // lost on the way down
                    Some(0) => trip.up,
                    Some(down) => {
                        let arrival = Answer::Arrival {
                            publish: p,
                            up: trip.up.map(|up| up.saturating_add(added)),
                        };
                        self.hold(now.saturating_add(down), arrival);
                        return false;
                    }
                }
            }
        };
        self.see(p, up, now, shared, out, outbox)
    }

    /// The device sees publish `p` at `now`; its answer takes `up` more to reach the hub (None:
    /// lost). Returns whether it queued output.
    fn see(
        &mut self,
        p: Publish,
        up: Option<Micros>,
        now: Micros,
        shared: &Shared,
        out: &mut Stream,
        outbox: &mut Outbox,
    ) -> bool {
        let (seed, idx) = (shared.seed, self.device.idx);
        let cohort = self.device.state.cohort;
        let model = &shared.models[cohort as usize];
        match topics::parse_hub_publish(&p.topic) {
            Some(HubPublish::Method { name, rid }) => {
                let op = topics::op_of_rid(rid).map(Received::Method);
                outbox.received(idx, op, now);
                let fail = shared.faults.error_rate(now, seed, idx, cohort);
                match (
                    self.device.state.on_method(model, name, seed, idx, fail),
                    up,
                ) {
                    (MethodOutcome::Silent, _) | (_, None) => false,
                    (MethodOutcome::Answer { after: 0, status }, Some(0)) => {
                        outbox.send(out, status, rid);
                        shared.status.answers.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    (MethodOutcome::Answer { after, status }, Some(up)) => {
                        let rid = rid.into();
                        let at = now.saturating_add(after).saturating_add(up);
                        self.hold(at, Answer::Method { status, rid });
                        false
                    }
                }
            }
            Some(HubPublish::Desired { version }) => {
                outbox.received(idx, version.map(Received::Desired), now);
                self.on_desired(&p, up, now, shared, out, outbox)
            }
            Some(HubPublish::TwinResponse { .. }) | None => false,
        }
    }

    /// The device sees desired patch `p` at `now` and acknowledges it as its model says.
    fn on_desired(
        &mut self,
        p: &Publish,
        up: Option<Micros>,
        now: Micros,
        shared: &Shared,
        out: &mut Stream,
        outbox: &mut Outbox,
    ) -> bool {
        let (seed, idx) = (shared.seed, self.device.idx);
        let model = &shared.models[self.device.state.cohort as usize];
        match (self.device.state.on_desired(model, seed, idx), up) {
            (DesiredOutcome::Ack(after), Some(up)) => {
                self.report_rid = self.report_rid.wrapping_add(1);
                let report = Answer::Report {
                    rid: self.report_rid,
                    body: reported_body(&p.payload),
                };
                if after == 0 && up == 0 {
                    send(report, shared, out, outbox);
                    true
                } else {
                    self.hold(now.saturating_add(after).saturating_add(up), report);
                    false
                }
            }
            (DesiredOutcome::Drop, _) | (_, None) => false,
        }
    }

    /// Does what is due at `now`: the answers whose latency has passed go out, publishes whose
    /// downlink latency has passed reach the device, a ping when the keep-alive has passed
    /// (none of it while a partition cuts the device off: it is lost); `Some(Churn)` when the
    /// churn model drops the connection now.
    pub(crate) fn on_time(
        &mut self,
        now: Micros,
        shared: &Shared,
        out: &mut Stream,
        outbox: &mut Outbox,
    ) -> Option<Ended> {
        if self.churn_at <= now {
            return Some(Ended::Churn);
        }
        let cut_off = self.cut_off(now, shared);
        // One at a time: what reaches the device may be answered at once or held in its turn.
        while self.later.first().is_some_and(|(at, _)| *at <= now) {
            match self.later.remove(0).1 {
                _ if cut_off => {}
                Answer::Arrival { publish, up } => {
                    self.see(publish, up, now, shared, out, outbox);
                }
                a => send(a, shared, out, outbox),
            }
        }
        if self.ping_at <= now {
            if !cut_off {
                out.queue(&Packet::PingReq);
            }
            self.ping_at = now.saturating_add(keep_alive(shared));
        }
        None
    }

    /// The next time the session needs [`Session::on_time`].
    pub(crate) fn next_deadline(&self) -> Micros {
        let answer = self.later.first().map_or(Micros::MAX, |(at, _)| *at);
        self.ping_at.min(self.churn_at).min(answer)
    }

    /// Whether a partition cuts the device off at `now`.
    fn cut_off(&self, now: Micros, shared: &Shared) -> bool {
        let (idx, cohort) = (self.device.idx, self.device.state.cohort);
        shared
            .faults
            .partitioned_until(now, shared.seed, idx, cohort)
            .is_some()
    }

    /// Ends the session: DISCONNECT is queued unless the connection failed, the fleet's
    /// counters learn how it ended, and the device comes back (answers still waiting are
    /// dropped with the connection).
    pub(crate) fn close(mut self, ended: Ended, shared: &Shared, out: &mut Stream) -> Device {
        if ended != Ended::Lost {
            out.queue(&Packet::Disconnect);
        }
        self.device.state.connected = false;
        let status = &shared.status;
        status.connected.fetch_sub(1, Ordering::Relaxed);
        match ended {
            Ended::Shutdown => {}
            Ended::Churn => {
                status.churned.fetch_add(1, Ordering::Relaxed);
            }
            Ended::Lost => {
                status.lost.fetch_add(1, Ordering::Relaxed);
            }
            Ended::Fault => {
                status.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.device
    }

    /// Keeps `a` until `at`, after the answers due no later.
    fn hold(&mut self, at: Micros, a: Answer) {
        let k = self.later.partition_point(|(t, _)| *t <= at);
        self.later.insert(k, (at, a));
    }
}

/// The keep-alive, µs.
fn keep_alive(shared: &Shared) -> Micros {
    shared.config.keep_alive_s.max(1) as Micros * 1_000_000
}

/// Queues answer `a` on `out` and counts it.
fn send(a: Answer, shared: &Shared, out: &mut Stream, outbox: &mut Outbox) {
    match a {
        // Not an answer: the caller hands arrivals to the device instead.
        Answer::Arrival { .. } => return,
        Answer::Method { status, rid } => outbox.send(out, status, &rid),
        Answer::Report { rid, body } => {
            out.queue(&publish(topics::reported_patch(&rid.to_string()), body));
        }
    }
    shared.status.answers.fetch_add(1, Ordering::Relaxed);
}

/// A desired notification's body without its `$version`: what the device reports back.
fn reported_body(payload: &[u8]) -> Bytes {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut o)) => {
            o.remove("$version");
            Bytes::from(serde_json::to_vec(&o).unwrap_or_default())
        }
        _ => Bytes::from_static(b"{}"),
    }
}

fn publish(topic: String, payload: Bytes) -> Packet {
    Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, payload))
}
