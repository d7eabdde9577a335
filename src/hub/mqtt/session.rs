//! One device's MQTT session on the hub, as a state machine without I/O (in the manner of
//! rumqttc's `state.rs`): packets and hub messages go in, [`Action`]s come out, and the
//! connection task in [`super::conn`] performs them.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, SubAck, SubscribeReasonCode};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

use crate::clock::Micros;
use crate::hub::registry::DeviceIdx;
use crate::hub::twin::Object;
use crate::link::{FromDevice, OpId, ToDevice};
use crate::mqtt::topics::{self, DevicePublish, Subscription, TopicError};

/// Hub messages held for a device that has not subscribed yet, at most.
const HELD_MAX: usize = 64;

/// What the connection task does next.
#[derive(Debug)]
pub enum Action {
    /// Write a packet to the device.
    Send(Packet),
    /// Tell the job engine.
    Engine(FromDevice),
    /// Ask the engine for the twin and answer `rid` with it.
    TwinGet {
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
pub enum SessionError {
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

/// One connected device.
#[derive(Debug)]
pub struct Session {
    device: DeviceIdx,
    id: Arc<str>,
    subs: Subs,
    /// Hub messages that arrived before the matching subscription.
    held: Vec<ToDevice>,
    /// The last twin update delivered, which the next reported patch acknowledges.
    last_desired_op: Option<OpId>,
}

impl Session {
    /// A session of device `id` (registry index `device`).
    pub fn new(device: DeviceIdx, id: Arc<str>) -> Self {
        Session {
            device,
            id,
            subs: Subs::default(),
            held: Vec::new(),
            last_desired_op: None,
        }
    }

    /// The device's registry index.
    pub fn device(&self) -> DeviceIdx {
        self.device
    }

    /// A packet from the device.
    pub fn on_packet(
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
            // DISCONNECT is handled by the connection task.
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
                // An answer to a request this hub never sent is dropped.
                if let Some(op) = topics::op_of_rid(rid) {
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
            DevicePublish::TwinGet { rid } => out.push(Action::TwinGet {
                rid: rid.to_owned(),
            }),
            DevicePublish::ReportedPatch { rid } => {
                match serde_json::from_slice::<Value>(&p.payload) {
                    Ok(Value::Object(patch)) => out.push(Action::Report {
                        rid: rid.to_owned(),
                        patch,
                        ack_of: self.last_desired_op.take(),
                    }),
                    _ => out.push(Action::Send(twin_answer(400, rid, None, Bytes::new()))),
                }
            }
            DevicePublish::Telemetry => {}
        }
        Ok(())
    }

    /// A message from the engine for this device.
    pub fn on_hub(&mut self, msg: ToDevice, now: Micros, out: &mut Vec<Action>) {
        let ready = match &msg {
            ToDevice::Method { .. } => self.subs.methods,
            ToDevice::Desired { .. } => self.subs.desired,
        };
        if !ready {
            // The SDKs subscribe lazily: hold a few until they do; the engine times out the rest.
            if self.held.len() < HELD_MAX {
                self.held.push(msg);
            }
            return;
        }
        match msg {
            ToDevice::Method {
                op,
                method,
                payload,
                ..
            } => {
                let topic = topics::method_request(&method, &topics::method_rid(op));
                let body = serde_json::to_vec(&*payload).unwrap_or_default();
                out.push(publish(topic, body.into()));
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
                if let Some(op) = op {
                    self.last_desired_op = Some(op);
                    out.push(Action::Engine(FromDevice::DesiredDelivered {
                        op,
                        delivered_us: now,
                    }));
                }
            }
        }
    }

    fn release_held(&mut self, now: Micros, out: &mut Vec<Action>) {
        if self.held.is_empty() {
            return;
        }
        for msg in std::mem::take(&mut self.held) {
            self.on_hub(msg, now, out);
        }
    }
}

/// The answer on `$iothub/twin/res/{status}/?$rid=..[&$version=..]`.
pub fn twin_answer(status: u16, rid: &str, version: Option<u64>, body: Bytes) -> Packet {
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

    fn session() -> Session {
        Session::new(4, "dev".into())
    }

    fn method(op: OpId) -> ToDevice {
        ToDevice::Method {
            op,
            device: 4,
            method: "reboot".into(),
            payload: Arc::new(json!({"a": 1})),
        }
    }

    #[test]
    fn methods_wait_for_the_subscription() {
        let mut s = session();
        let mut out = Vec::new();
        s.on_hub(method(OpId::new(1, 2)), 0, &mut out);
        assert!(out.is_empty());
        let mut sub = Subscribe::new("$iothub/methods/POST/#", QoS::AtLeastOnce);
        sub.pkid = 1;
        s.on_packet(Packet::Subscribe(sub), 0, &mut out).unwrap();
        assert!(matches!(&out[0], Action::Send(Packet::SubAck(a))
            if a.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]));
        let Action::Send(Packet::Publish(p)) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(
            p.topic,
            format!(
                "$iothub/methods/POST/reboot/?$rid={}",
                topics::method_rid(OpId::new(1, 2))
            )
        );
    }

    #[test]
    fn answers_reach_the_engine_and_qos1_is_acked() {
        let mut s = session();
        let mut out = Vec::new();
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
                device: 4,
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
        assert!(matches!(&out[0], Action::Report { ack_of: Some(o), .. } if *o == op));
    }
}
