//! Direct method calls in progress: the call table with its deadlines, from invocation (sent at
//! once, or when the device connects within the connect timeout) to the device's answer or the
//! error the caller gets instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde_json::Value;

use crate::clock::Micros;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::handle::Reply;
use crate::hub::jobs::MethodCall;
use crate::hub::registry::Registry;
use crate::ids::DeviceIdx;
use crate::link::{DeviceLink, OpId, ToDevice};

/// The op-id slot of direct method calls (job slots are below it).
pub(super) const DIRECT_SLOT: u32 = u32::MAX;

/// A direct method call's number, the record half of its op id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct CallId(u32);

impl CallId {
    /// The call of op id `op`, whose slot is [`DIRECT_SLOT`].
    pub(super) fn of(op: OpId) -> Self {
        CallId(op.record())
    }

    fn op(self) -> OpId {
        OpId::new(DIRECT_SLOT, self.0)
    }
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

/// The direct method calls in progress.
#[derive(Default)]
pub(super) struct DirectCalls {
    calls: HashMap<CallId, DirectCall>,
    /// (deadline, call), earliest first; stale entries are skipped when due.
    deadlines: BinaryHeap<Reverse<(Micros, CallId)>>,
    seq: u32,
}

impl DirectCalls {
    /// Starts a call to `device`: sent now if it is `connected`, else waiting for it until the
    /// connect timeout.
    pub(super) fn start(
        &mut self,
        device: DeviceIdx,
        connected: bool,
        call: MethodCall,
        reply: Reply<(i32, Value)>,
        now: Micros,
        link: &mut dyn DeviceLink,
    ) {
        let id = CallId(self.seq);
        self.seq = self.seq.wrapping_add(1);
        let connect_deadline = now.saturating_add(call.connect_timeout_us());
        self.calls.insert(
            id,
            DirectCall {
                reply,
                device,
                call,
                connect_deadline,
                stage: Stage::Waiting,
            },
        );
        if connected {
            self.send(id, now, link);
        } else {
            self.deadlines.push(Reverse((connect_deadline, id)));
        }
    }

    fn send(&mut self, id: CallId, now: Micros, link: &mut dyn DeviceLink) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let until = now.saturating_add(call.call.response_timeout_us());
        call.stage = Stage::Sent { until };
        self.deadlines.push(Reverse((until, id)));
        link.send(ToDevice::Method {
            op: id.op(),
            device: call.device,
            method: call.call.name.clone(),
            payload: call.call.payload.clone(),
            connect_deadline: call.connect_deadline,
        });
    }

    /// Sends the calls waiting for `device`, which connected.
    pub(super) fn on_connected(
        &mut self,
        device: DeviceIdx,
        now: Micros,
        link: &mut dyn DeviceLink,
    ) {
        let waiting: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.device == device && c.stage == Stage::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.send(id, now, link);
        }
    }

    /// Fails the calls whose deadline passed: 404103 while waiting for the device to connect,
    /// 504101 when it did not answer in time.
    pub(super) fn expire(&mut self, now: Micros) {
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let err = match self.calls.get(&id) {
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
            if let Some(call) = self.calls.remove(&id) {
                let _ = call.reply.send(Err(err));
            }
        }
    }

    /// The earliest deadline of a call, if any.
    pub(super) fn next_deadline(&self) -> Option<Micros> {
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }

    /// The device's answer: the caller gets it if the call was sent to this device.
    pub(super) fn answer(
        &mut self,
        id: CallId,
        device: DeviceIdx,
        status: i32,
        payload: Option<Box<Value>>,
    ) {
        let sent = self
            .calls
            .get(&id)
            .is_some_and(|c| c.device == device && matches!(c.stage, Stage::Sent { .. }));
        if let Some(call) = sent.then(|| self.calls.remove(&id)).flatten() {
            let _ = call
                .reply
                .send(Ok((status, payload.map(|b| *b).unwrap_or(Value::Null))));
        }
    }

    /// The transport holds the request until the device subscribes: its response timeout
    /// waits.
    pub(super) fn held(&mut self, id: CallId, device: DeviceIdx) {
        if let Some(call) = self.calls.get_mut(&id) {
            if call.device == device && matches!(call.stage, Stage::Sent { .. }) {
                call.stage = Stage::Held;
            }
        }
    }

    /// A held request reached the device: its response timeout starts now.
    pub(super) fn released(&mut self, id: CallId, device: DeviceIdx, now: Micros) {
        if let Some(call) = self.calls.get_mut(&id) {
            if call.device == device && call.stage == Stage::Held {
                let until = now.saturating_add(call.call.response_timeout_us());
                call.stage = Stage::Sent { until };
                self.deadlines.push(Reverse((until, id)));
            }
        }
    }

    /// The device did not subscribe to methods in time: the caller gets 404103.
    pub(super) fn unreachable(&mut self, id: CallId, device: DeviceIdx, registry: &Registry) {
        let waiting = self.calls.get(&id).is_some_and(|c| {
            c.device == device && matches!(c.stage, Stage::Sent { .. } | Stage::Held)
        });
        if let Some(call) = waiting.then(|| self.calls.remove(&id)).flatten() {
            let name = registry.get(device).map_or("?", |e| &*e.id);
            let _ = call.reply.send(Err(HubError::new(
                ErrorCode::DeviceNotOnline,
                format!(
                    "device '{name}' did not subscribe to direct methods \
                     ($iothub/methods/POST/#) within the connect timeout"
                ),
            )));
        }
    }
}
