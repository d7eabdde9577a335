//! One device's MQTT session on the hub, as a state machine without I/O (in the manner of
//! rumqttc's `state.rs`): packets, hub messages and the passing of time go in, [`Action`]s come
//! out, and the endpoint's pump ([`super::pump`]) performs them for every established
//! connection. (The connection task in [`super::conn`] only runs TLS, CONNECT and authentication
//! before it hands the connection to the pump.)
//!
//! Direct methods follow IoT Hub: a device that has not subscribed to `$iothub/methods/POST/#`
//! is not online for methods. Its requests are held until it subscribes, at most until the
//! call's connect deadline (but at least [`SUBSCRIBE_GRACE_US`] after CONNECT), and then fail
//! 404103. The session remembers the requests it delivered, and forwards only answers to those.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, SubAck, SubscribeReasonCode};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

use crate::clock::Micros;
use crate::hub::twin::Object;
use crate::ids::DeviceIdx;
use crate::link::{FromDevice, OpId, ToDevice};
use crate::mqtt::topics::{self, DevicePublish, Subscription, TopicError};

/// Hub messages held for a device that has not subscribed yet, at most (per kind: method
/// requests, desired notifications). A method request beyond it fails at once (404103); a
/// desired notification beyond it is dropped (the device reads the twin when it subscribes).
const HELD_MAX: usize = 64;

/// Method requests delivered and not yet answered that a session remembers, at most. Beyond it
/// the oldest is forgotten: its answer is then dropped and the engine times it out (504101).
const UNANSWERED_MAX: usize = 64;

/// How long after CONNECT a device may take to subscribe to `$iothub/methods/POST/#` before
/// its method requests fail 404103 DeviceNotOnline, even with `connectTimeoutInSeconds` 0: the
/// SDKs subscribe lazily, right after CONNECT when the application registers its first method
/// handler. Two seconds covers that round trip on a slow link and stays below the shortest
/// response timeout IoT Hub allows (5 s).
pub const SUBSCRIBE_GRACE_US: Micros = 2_000_000;

/// What the pump does next for this session.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write a packet to the device.
    Send(Packet),
    /// Tell the job engine.
    Engine(FromDevice),
    /// A twin request to run against the engine and answer.
    Twin(TwinRequest),
}

/// A device's twin request: the engine's answer makes the device's.
#[derive(Debug)]
pub(crate) enum TwinRequest {
    /// Ask the engine for the twin and answer `rid` with it.
    Get {
        /// The device's request id.
        rid: String,
    },
    /// Apply a reported patch and answer `rid` with the new version.
    Report {
        /// The device's request id.
        rid: String,
        /// The patch.
        patch: Object,
        /// The twin update this report follows, if any.
        ack_of: Option<OpId>,
    },
}

/// Why a session ends (the connection is closed; other sessions are unaffected).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// A QoS 2 publish: IoT Hub refuses them by disconnecting.
    #[error("QoS 2 publish on '{0}' refused")]
    QoS2(String),
    /// A publish to a topic the device may not use.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A second CONNECT, or a packet only a broker sends.
    #[error("unexpected {0} packet from a device")]
    Unexpected(&'static str),
}

/// The device-side subscriptions the hub honours.
#[derive(Debug, Default, Clone, Copy)]
struct Subs {
    methods: bool,
    twin_res: bool,
    desired: bool,
}

/// A method request waiting for the device to subscribe to methods.
#[derive(Debug)]
struct HeldMethod {
    /// When it fails 404103 if the device has not subscribed.
    until: Micros,
    op: OpId,
    method: Arc<str>,
    payload: Arc<Value>,
}

/// One connected device.
#[derive(Debug)]
pub(crate) struct Session {
    device: DeviceIdx,
    id: Arc<str>,
    /// When the device connected.
    connected_us: Micros,
    subs: Subs,
    /// Method requests that arrived before the methods subscription.
    held_methods: Vec<HeldMethod>,
    /// Desired notifications that arrived before the desired subscription.
    held_desired: Vec<ToDevice>,
    /// Method requests delivered and not yet answered, oldest first.
    unanswered: Vec<OpId>,
    /// The last twin update delivered, which the next reported patch acknowledges.
    last_desired_op: Option<OpId>,
}

impl Session {
    /// A session of device `id` (registry index `device`) that connected at `now`.
    pub(crate) fn new(device: DeviceIdx, id: Arc<str>, now: Micros) -> Self {
        Session {
            device,
            id,
            connected_us: now,
            subs: Subs::default(),
            held_methods: Vec::new(),
            held_desired: Vec::new(),
            unanswered: Vec::new(),
            last_desired_op: None,
        }
    }

    /// The device's registry index.
    pub(crate) fn device(&self) -> DeviceIdx {
        self.device
    }

    /// A packet from the device.
    pub(crate) fn on_packet(
        &mut self,
        packet: Packet,
        now: Micros,
        out: &mut Vec<Action>,
    ) -> Result<(), SessionError> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, out),
            Packet::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|f| match topics::parse_filter(&f.path, &self.id) {
                        Some(sub) => {
                            self.subscribe(sub);
                            SubscribeReasonCode::Success(match f.qos {
                                QoS::AtMostOnce => QoS::AtMostOnce,
                                _ => QoS::AtLeastOnce,
                            })
                        }
                        None => SubscribeReasonCode::Failure,
                    })
                    .collect();
                out.push(Action::Send(Packet::SubAck(SubAck::new(s.pkid, codes))));
                self.release_held(now, out);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                for path in &u.topics {
                    match topics::parse_filter(path, &self.id) {
                        Some(Subscription::Methods) => self.subs.methods = false,
                        Some(Subscription::TwinResponses) => self.subs.twin_res = false,
                        Some(Subscription::Desired) => self.subs.desired = false,
                        _ => {}
                    }
                }
                out.push(Action::Send(Packet::UnsubAck(
                    rumqttc::mqttbytes::v4::UnsubAck::new(u.pkid),
                )));
                Ok(())
            }
            Packet::PingReq => {
                out.push(Action::Send(Packet::PingResp));
                Ok(())
            }
            // Acknowledgements of the hub's publishes (the hub publishes at QoS 0) and pings.
            Packet::PubAck(_) | Packet::PingResp => Ok(()),
            Packet::Connect(_) => Err(SessionError::Unexpected("CONNECT")),
            Packet::ConnAck(_) => Err(SessionError::Unexpected("CONNACK")),
            Packet::SubAck(_) => Err(SessionError::Unexpected("SUBACK")),
            Packet::UnsubAck(_) => Err(SessionError::Unexpected("UNSUBACK")),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                Err(SessionError::Unexpected("QoS 2 flow"))
            }
            // DISCONNECT: the pump closes the connection.
            Packet::Disconnect => Ok(()),
        }
    }

    fn subscribe(&mut self, sub: Subscription) {
        match sub {
            Subscription::Methods => self.subs.methods = true,
            Subscription::TwinResponses => self.subs.twin_res = true,
            Subscription::Desired => self.subs.desired = true,
            Subscription::CloudToDevice => {}
        }
    }

    fn on_publish(&mut self, p: Publish, out: &mut Vec<Action>) -> Result<(), SessionError> {
        if p.qos == QoS::ExactlyOnce {
            return Err(SessionError::QoS2(p.topic));
        }
        let what = topics::parse_publish(&p.topic, &self.id)?;
        if p.qos == QoS::AtLeastOnce {
            out.push(Action::Send(Packet::PubAck(PubAck::new(p.pkid))));
        }
        match what {
            DevicePublish::MethodResponse { status, rid } => {
                // Only an answer to a request delivered to this device, once: any other rid (a
                // request never sent, another device's, one answered already) is dropped.
                let sent = topics::op_of_rid(rid)
                    .and_then(|op| self.unanswered.iter().position(|&o| o == op));
                if let Some(i) = sent {
                    let op = self.unanswered.remove(i);
                    let payload = serde_json::from_slice::<Value>(&p.payload)
                        .ok()
                        .map(Box::new);
                    out.push(Action::Engine(FromDevice::MethodResponse {
                        op,
                        device: self.device,
                        status,
                        payload,
                        delivered_us: None,
                    }));
                }
            }
            DevicePublish::TwinGet { rid } => out.push(Action::Twin(TwinRequest::Get {
                rid: rid.to_owned(),
            })),
            DevicePublish::ReportedPatch { rid } => {
                match serde_json::from_slice::<Value>(&p.payload) {
                    Ok(Value::Object(patch)) => out.push(Action::Twin(TwinRequest::Report {
                        rid: rid.to_owned(),
                        patch,
                        ack_of: self.last_desired_op.take(),
                    })),
                    _ => out.push(Action::Send(twin_answer(400, rid, None, Bytes::new()))),
                }
            }
            DevicePublish::Telemetry => {}
        }
        Ok(())
    }

    /// A message from the engine for this device.
    pub(crate) fn on_hub(&mut self, msg: ToDevice, now: Micros, out: &mut Vec<Action>) {
        match msg {
            ToDevice::Method {
                op,
                method,
                payload,
                connect_deadline,
                ..
            } => {
                if self.subs.methods {
                    self.deliver_method(op, &method, &payload, out);
                    return;
                }
                let until = connect_deadline.max(self.connected_us + SUBSCRIBE_GRACE_US);
                let device = self.device;
                if until <= now || self.held_methods.len() >= HELD_MAX {
                    out.push(Action::Engine(FromDevice::MethodUnreachable { op, device }));
                } else {
                    self.held_methods.push(HeldMethod {
                        until,
                        op,
                        method,
                        payload,
                    });
                    out.push(Action::Engine(FromDevice::MethodHeld { op, device }));
                }
            }
            // The pump closes the connection itself.
            ToDevice::Disconnect { .. } => {}
            ToDevice::Desired { .. } if !self.subs.desired => {
                if self.held_desired.len() < HELD_MAX {
                    self.held_desired.push(msg);
                }
            }
            ToDevice::Desired {
                op, version, patch, ..
            } => {
                let mut body = match &*patch {
                    Value::Object(o) => o.clone(),
                    _ => Object::new(),
                };
                body.insert("$version".into(), Value::from(version));
                let body = serde_json::to_vec(&body).unwrap_or_default();
                out.push(publish(topics::desired_patch(version), body.into()));
                // Its delivery is the device's to stamp (a fleetsim fleet's receipts): the hub
                // knows only when it sent it.
                if op.is_some() {
                    self.last_desired_op = op;
                }
            }
        }
    }

    /// Publishes a method request and remembers it until answered.
    fn deliver_method(&mut self, op: OpId, method: &str, payload: &Value, out: &mut Vec<Action>) {
        let topic = topics::method_request(method, &topics::method_rid(op));
        let body = serde_json::to_vec(payload).unwrap_or_default();
        out.push(publish(topic, body.into()));
        if self.unanswered.len() >= UNANSWERED_MAX {
            self.unanswered.remove(0);
        }
        self.unanswered.push(op);
    }

    /// When [`Session::on_time`] next has work: the earliest held method request's deadline.
    pub(crate) fn next_deadline(&self) -> Option<Micros> {
        self.held_methods.iter().map(|h| h.until).min()
    }

    /// Fails the held method requests whose deadline has passed at `now`.
    pub(crate) fn on_time(&mut self, now: Micros, out: &mut Vec<Action>) {
        let device = self.device;
        self.held_methods.retain(|h| {
            let keep = h.until > now;
            if !keep {
                out.push(Action::Engine(FromDevice::MethodUnreachable {
                    op: h.op,
                    device,
                }));
            }
            keep
        });
    }

    /// The session ends: every held method request fails (the device left before subscribing).
    pub(crate) fn close(&mut self, out: &mut Vec<Action>) {
        let device = self.device;
        out.extend(
            self.held_methods
                .drain(..)
                .map(|h| Action::Engine(FromDevice::MethodUnreachable { op: h.op, device })),
        );
    }

    fn release_held(&mut self, now: Micros, out: &mut Vec<Action>) {
        if self.subs.methods {
            for h in std::mem::take(&mut self.held_methods) {
                self.deliver_method(h.op, &h.method, &h.payload, out);
                out.push(Action::Engine(FromDevice::MethodReleased {
                    op: h.op,
                    device: self.device,
                }));
            }
        }
        if self.subs.desired {
            for msg in std::mem::take(&mut self.held_desired) {
                self.on_hub(msg, now, out);
            }
        }
    }
}

/// The answer on `$iothub/twin/res/{status}/?$rid=..[&$version=..]`.
pub(crate) fn twin_answer(status: u16, rid: &str, version: Option<u64>, body: Bytes) -> Packet {
    Packet::Publish(Publish::from_bytes(
        topics::twin_response(status, rid, version),
        QoS::AtMostOnce,
        body,
    ))
}

fn publish(topic: String, payload: Bytes) -> Action {
    Action::Send(Packet::Publish(Publish::from_bytes(
        topic,
        QoS::AtMostOnce,
        payload,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Subscribe;
    use serde_json::json;

    const DEVICE: DeviceIdx = DeviceIdx::new(4);

    fn session() -> Session {
        Session::new(DEVICE, "dev".into(), 0)
    }

    fn method(op: OpId, connect_deadline: Micros) -> ToDevice {
        ToDevice::Method {
            op,
            device: DEVICE,
            method: "reboot".into(),
            payload: Arc::new(json!({"a": 1})),
            connect_deadline,
        }
    }

    fn subscribe(s: &mut Session, filter: &str, now: Micros, out: &mut Vec<Action>) {
        let mut sub = Subscribe::new(filter, QoS::AtLeastOnce);
        sub.pkid = 1;
        s.on_packet(Packet::Subscribe(sub), now, out).unwrap();
    }

    fn answer(s: &mut Session, op: OpId, out: &mut Vec<Action>) {
        let p = Publish::new(
            topics::method_response(200, &topics::method_rid(op)),
            QoS::AtMostOnce,
            b"{}".to_vec(),
        );
        s.on_packet(Packet::Publish(p), 0, out).unwrap();
    }

    /// The engine messages among `out`, as (kind, op).
    fn to_engine(out: &[Action]) -> Vec<(&'static str, OpId)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Engine(FromDevice::MethodResponse { op, device, .. }) => {
                    assert_eq!(*device, DEVICE);
                    Some(("response", *op))
                }
                Action::Engine(FromDevice::MethodHeld { op, .. }) => Some(("held", *op)),
                Action::Engine(FromDevice::MethodReleased { op, .. }) => Some(("released", *op)),
                Action::Engine(FromDevice::MethodUnreachable { op, .. }) => {
                    Some(("unreachable", *op))
                }
                _ => None,
            })
            .collect()
    }

    fn published(out: &[Action]) -> Vec<&str> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send(Packet::Publish(p)) => Some(p.topic.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn methods_wait_for_the_subscription() {
        let mut s = session();
        let mut out = Vec::new();
        let op = OpId::new(1, 2);
        s.on_hub(method(op, 0), 0, &mut out);
        assert_eq!(to_engine(&out), [("held", op)]);
        assert!(published(&out).is_empty());
        out.clear();
        subscribe(&mut s, "$iothub/methods/POST/#", 1_000, &mut out);
        assert!(matches!(&out[0], Action::Send(Packet::SubAck(a))
            if a.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]));
        assert_eq!(
            published(&out),
            [format!(
                "$iothub/methods/POST/reboot/?$rid={}",
                topics::method_rid(op)
            )]
        );
        assert_eq!(to_engine(&out), [("released", op)]);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn answers_reach_the_engine_and_qos1_is_acked() {
        let mut s = session();
        let mut out = Vec::new();
        subscribe(&mut s, "$iothub/methods/POST/#", 0, &mut out);
        s.on_hub(method(OpId::new(1, 2), 0), 0, &mut out);
        out.clear();
        let rid = topics::method_rid(OpId::new(1, 2));
        let mut p = Publish::new(
            topics::method_response(201, &rid),
            QoS::AtLeastOnce,
            b"{\"ok\":true}".to_vec(),
        );
        p.pkid = 9;
        s.on_packet(Packet::Publish(p), 0, &mut out).unwrap();
        assert!(matches!(&out[0], Action::Send(Packet::PubAck(a)) if a.pkid == 9));
        assert!(
            matches!(&out[1], Action::Engine(FromDevice::MethodResponse { status: 201, payload: Some(b), .. })
            if **b == json!({"ok": true}))
        );
    }

    #[test]
    fn only_answers_to_requests_delivered_here_reach_the_engine_once() {
        let mut s = session();
        let mut out = Vec::new();
        subscribe(&mut s, "$iothub/methods/POST/#", 0, &mut out);
        let (mine, theirs) = (OpId::new(0, 7), OpId::new(0, 8));
        s.on_hub(method(mine, 0), 0, &mut out);
        out.clear();
        // Another device's request id (a guess: the hex of a neighbouring op), then a rid that
        // is no op at all: both dropped.
        answer(&mut s, theirs, &mut out);
        let p = Publish::new(
            topics::method_response(200, "not-hex"),
            QoS::AtMostOnce,
            vec![],
        );
        s.on_packet(Packet::Publish(p), 0, &mut out).unwrap();
        assert!(to_engine(&out).is_empty(), "{out:?}");
        answer(&mut s, mine, &mut out);
        assert_eq!(to_engine(&out), [("response", mine)]);
        out.clear();
        answer(&mut s, mine, &mut out);
        assert!(to_engine(&out).is_empty(), "a second answer is dropped");
    }

    #[test]
    fn the_oldest_unanswered_request_is_forgotten_past_the_bound() {
        let mut s = session();
        let mut out = Vec::new();
        subscribe(&mut s, "$iothub/methods/POST/#", 0, &mut out);
        for r in 0..=UNANSWERED_MAX as u32 {
            s.on_hub(method(OpId::new(0, r), 0), 0, &mut out);
        }
        out.clear();
        answer(&mut s, OpId::new(0, 0), &mut out);
        assert!(to_engine(&out).is_empty());
        answer(&mut s, OpId::new(0, 1), &mut out);
        answer(&mut s, OpId::new(0, UNANSWERED_MAX as u32), &mut out);
        assert_eq!(
            to_engine(&out),
            [
                ("response", OpId::new(0, 1)),
                ("response", OpId::new(0, UNANSWERED_MAX as u32))
            ]
        );
    }

    #[test]
    fn without_a_connect_timeout_only_the_grace_after_connect_is_waited() {
        let mut s = session();
        let mut out = Vec::new();
        let early = OpId::new(0, 1);
        s.on_hub(method(early, 500_000), 500_000, &mut out);
        assert_eq!(to_engine(&out), [("held", early)]);
        assert_eq!(s.next_deadline(), Some(SUBSCRIBE_GRACE_US));
        out.clear();
        s.on_time(SUBSCRIBE_GRACE_US - 1, &mut out);
        assert!(out.is_empty());
        s.on_time(SUBSCRIBE_GRACE_US, &mut out);
        assert_eq!(to_engine(&out), [("unreachable", early)]);
        assert_eq!(s.next_deadline(), None);
        // Past the grace, a request with no connect timeout fails at once.
        out.clear();
        let late = OpId::new(0, 2);
        let now = SUBSCRIBE_GRACE_US + 1;
        s.on_hub(method(late, now), now, &mut out);
        assert_eq!(to_engine(&out), [("unreachable", late)]);
    }

    #[test]
    fn a_connect_timeout_holds_past_the_grace_and_closing_fails_what_is_held() {
        let mut s = session();
        let mut out = Vec::new();
        let op = OpId::new(2, 0);
        s.on_hub(method(op, 10_000_000), 3_000_000, &mut out);
        assert_eq!(to_engine(&out), [("held", op)]);
        assert_eq!(s.next_deadline(), Some(10_000_000));
        out.clear();
        s.on_time(9_999_999, &mut out);
        assert!(out.is_empty());
        s.close(&mut out);
        assert_eq!(to_engine(&out), [("unreachable", op)]);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn held_requests_beyond_the_bound_fail_at_once() {
        let mut s = session();
        let mut out = Vec::new();
        for r in 0..=HELD_MAX as u32 {
            s.on_hub(method(OpId::new(0, r), 0), 0, &mut out);
        }
        let kinds = to_engine(&out);
        assert_eq!(kinds.len(), HELD_MAX + 1);
        assert!(kinds[..HELD_MAX].iter().all(|(k, _)| *k == "held"));
        assert_eq!(
            kinds[HELD_MAX],
            ("unreachable", OpId::new(0, HELD_MAX as u32))
        );
    }

    #[test]
    fn qos2_and_foreign_topics_end_the_session() {
        let mut s = session();
        let mut out = Vec::new();
        let p = Publish::new("devices/dev/messages/events/", QoS::ExactlyOnce, vec![]);
        assert!(matches!(
            s.on_packet(Packet::Publish(p), 0, &mut out),
            Err(SessionError::QoS2(_))
        ));
        let p = Publish::new("devices/other/messages/events/", QoS::AtMostOnce, vec![]);
        assert!(matches!(
            s.on_packet(Packet::Publish(p), 0, &mut out),
            Err(SessionError::Topic(_))
        ));
    }

    #[test]
    fn a_bad_reported_patch_is_answered_400() {
        let mut s = session();
        let mut out = Vec::new();
        let p = Publish::new(
            topics::reported_patch("7"),
            QoS::AtMostOnce,
            b"[1]".to_vec(),
        );
        s.on_packet(Packet::Publish(p), 0, &mut out).unwrap();
        assert!(matches!(&out[0], Action::Send(Packet::Publish(p))
            if p.topic == "$iothub/twin/res/400/?$rid=7"));
    }

    #[test]
    fn reported_patches_acknowledge_the_last_desired_update() {
        let mut s = session();
        let mut out = Vec::new();
        let mut sub = Subscribe::new(topics::DESIRED_PATCH.to_owned() + "#", QoS::AtMostOnce);
        sub.pkid = 1;
        s.on_packet(Packet::Subscribe(sub), 0, &mut out).unwrap();
        let op = OpId::new(0, 3);
        s.on_hub(
            ToDevice::Desired {
                op: Some(op),
                device: DEVICE,
                version: 5,
                patch: Arc::new(json!({"fw": "2"})),
            },
            10,
            &mut out,
        );
        assert!(matches!(&out[1], Action::Send(Packet::Publish(p))
            if p.topic == "$iothub/twin/PATCH/properties/desired/?$version=5"
            && serde_json::from_slice::<Value>(&p.payload).unwrap() == json!({"fw": "2", "$version": 5})));
        out.clear();
        let p = Publish::new(
            topics::reported_patch("1"),
            QoS::AtMostOnce,
            b"{\"fw\":\"2\"}".to_vec(),
        );
        s.on_packet(Packet::Publish(p), 0, &mut out).unwrap();
        assert!(
            matches!(&out[0], Action::Twin(TwinRequest::Report { ack_of: Some(o), .. }) if *o == op)
        );
    }
}
