//! The messages between the hub and the devices, whatever carries them (channels in process,
//! MQTT on a socket). The hub sends [`ToDevice`] through a [`DeviceLink`]; transports send
//! [`FromDevice`] back to the job engine in batches.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::Micros;
use crate::ids::DeviceIdx;

/// Identifies one device operation so its answer finds its record: the engine's job slot in the
/// high half and the record's position in the low half (direct calls use slot `u32::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub u64);

impl OpId {
    /// An op id from a job slot and a record position.
    pub(crate) fn new(slot: u32, record: u32) -> Self {
        OpId(((slot as u64) << 32) | record as u64)
    }

    /// The job slot.
    pub(crate) fn slot(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The record position.
    pub(crate) fn record(self) -> u32 {
        self.0 as u32
    }
}

/// A message from the hub to one device.
#[derive(Debug, Clone)]
pub enum ToDevice {
    /// Invoke a direct method.
    Method {
        /// Echoed in the answer.
        op: OpId,
        /// The target device.
        device: DeviceIdx,
        /// The method name.
        method: Arc<str>,
        /// The request payload.
        payload: Arc<Value>,
        /// The end of the call's connect timeout: until then a transport may hold the request
        /// for a device that is connected but not yet subscribed to methods (see
        /// [`FromDevice::MethodHeld`]); past it the device is not online for methods.
        connect_deadline: Micros,
    },
    /// A desired-properties patch notification.
    Desired {
        /// The twin-update operation being measured, if any.
        op: Option<OpId>,
        /// The target device.
        device: DeviceIdx,
        /// The new desired `$version`.
        version: u64,
        /// The patch (without `$version`).
        patch: Arc<Value>,
    },
    /// The hub closes the device's connection (a hub restart): the device reconnects after
    /// its backoff, as an SDK device does when its connection drops.
    Disconnect {
        /// The device.
        device: DeviceIdx,
    },
}

impl ToDevice {
    /// The device a message is for.
    pub(crate) fn device(&self) -> DeviceIdx {
        match self {
            ToDevice::Method { device, .. }
            | ToDevice::Desired { device, .. }
            | ToDevice::Disconnect { device } => *device,
        }
    }
}

/// A message from a device to the hub.
#[derive(Debug, Clone)]
pub enum FromDevice {
    /// The device connected.
    Connected {
        /// The device.
        device: DeviceIdx,
    },
    /// The device disconnected.
    Disconnected {
        /// The device.
        device: DeviceIdx,
    },
    /// The answer to a direct method.
    MethodResponse {
        /// The operation answered.
        op: OpId,
        /// The device.
        device: DeviceIdx,
        /// The device's status code.
        status: i32,
        /// The device's payload (`None` is JSON null).
        payload: Option<Box<Value>>,
        /// When the device received the request, if the transport knows.
        delivered_us: Option<Micros>,
    },
    /// The transport holds a method request because the device, though connected, has not
    /// subscribed to methods yet: its response timeout waits until [`FromDevice::MethodReleased`].
    /// One of [`FromDevice::MethodReleased`] or [`FromDevice::MethodUnreachable`] follows.
    MethodHeld {
        /// The operation held.
        op: OpId,
        /// The device.
        device: DeviceIdx,
    },
    /// A held method request reached the device (it subscribed): its response timeout starts.
    MethodReleased {
        /// The operation delivered.
        op: OpId,
        /// The device.
        device: DeviceIdx,
    },
    /// The device did not subscribe to methods by the call's connect deadline (or left before
    /// it did): the operation fails 404103 DeviceNotOnline, as for an offline device.
    MethodUnreachable {
        /// The operation.
        op: OpId,
        /// The device.
        device: DeviceIdx,
    },
    /// A desired patch reached the device.
    DesiredDelivered {
        /// The twin-update operation.
        op: OpId,
        /// When it arrived.
        delivered_us: Micros,
    },
    /// What devices received, stamped by the fleet that plays them (a transport that cannot
    /// stamp its deliveries itself: MQTT). `clock` is None when the stamps are this process's
    /// clock; otherwise they were converted from another process's clock with that agreement.
    Received {
        /// The receipts, in the engine's clock.
        receipts: Vec<Receipt>,
        /// How far the stamps can be trusted, if they came from another clock.
        clock: Option<ClockAgreement>,
    },
    /// The device reported properties (`ack_of`: the twin update this acknowledges).
    Reported {
        /// The device.
        device: DeviceIdx,
        /// The reported patch.
        patch: Arc<Value>,
        /// The twin-update operation this report acknowledges.
        ack_of: Option<OpId>,
    },
}

/// What a device received from the hub, as the fleet that plays it can tell from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A method request (its `$rid` names the operation).
    Method(OpId),
    /// A desired-properties notification of this `$version`.
    Desired(u64),
}

/// When a device received a message from the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The device (registry index).
    pub device: DeviceIdx,
    /// What it received.
    pub what: Received,
    /// When.
    pub at_us: Micros,
}

/// How another process's clock agrees with the engine's, as measured over the receipts side
/// channel: its stamps are the engine's time plus `offset_us`, give or take `uncertainty_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAgreement {
    /// The other clock minus the engine's, µs (wall-clock mappings: about 0 on one machine).
    pub offset_us: i64,
    /// How far the true offset may be from `offset_us`, µs (half the exchange's round trip and
    /// a drift allowance since; `u64::MAX`: not measured yet).
    pub uncertainty_us: u64,
}

/// The hub's side of a device transport: where the engine sends messages to devices.
pub trait DeviceLink: Send {
    /// Queues a message; it may be held until [`DeviceLink::flush`].
    fn send(&mut self, msg: ToDevice);
    /// Sends everything queued.
    fn flush(&mut self);
    /// Whether the transport stamps deliveries itself (`delivered_us`, [`FromDevice::DesiredDelivered`]).
    /// One that does not (MQTT: the hub cannot tell when a device received a publish) hears of
    /// them later through [`FromDevice::Received`], which names a desired notification by its
    /// `$version`: the engine then remembers which operation each version it sent carries.
    fn stamps_deliveries(&self) -> bool {
        true
    }
    /// For a device side that runs in the engine's own task (the in-process fleet in virtual
    /// time): lets its devices act at `now` (every timer due by then fires), moves what they sent
    /// into `out`, and answers when its next timer is due. Other transports answer None and leave
    /// `out` alone: their devices reach the engine through its device channel.
    fn poll_devices(&mut self, _now: Micros, _out: &mut Vec<FromDevice>) -> Option<Micros> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_id_round_trips() {
        let op = OpId::new(7, 1_000_000);
        assert_eq!((op.slot(), op.record()), (7, 1_000_000));
        assert_eq!(OpId::new(u32::MAX, 3).slot(), u32::MAX);
    }
}
