//! A new connection's task: reads CONNECT and checks the device's credentials, opens its
//! [`Session`], answers CONNACK, and hands the connection to the [`pump`](super::pump), which
//! serves it from then on. Also the twin requests the pump runs as tasks ([`answer_twin`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use tokio_util::sync::CancellationToken;

use crate::hub::mqtt::pump::Adopted;
use crate::hub::mqtt::session::{twin_answer, Session, TwinRequest};
use crate::hub::mqtt::{Endpoint, MAX_PACKET};
use crate::hub::throttle::Metered;
use crate::ids::DeviceIdx;
use crate::link::FromDevice;
use crate::mqtt::stream::{Handover, Stream};
use crate::mqtt::wire::Wire;

/// How long a new connection has to send CONNECT (and to finish the TLS handshake).
pub(crate) const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Admits one connection and hands it to the pump; gives up at `shutdown`.
pub(crate) async fn run<S: Handover>(
    stream: S,
    endpoint: Arc<Endpoint>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = admit_and_hand_over(stream, &endpoint) => {}
    }
}

async fn admit_and_hand_over<S: Handover>(stream: S, endpoint: &Endpoint) {
    let mut wire = Wire::new(stream, MAX_PACKET);
    let connect = match tokio::time::timeout(CONNECT_WAIT, wire.next_packet()).await {
        Ok(Ok(Packet::Connect(c))) => c,
        _ => return,
    };
    let device = match admit(endpoint, &connect).await {
        Ok(device) => device,
        Err(code) => {
            wire.queue(&Packet::ConnAck(ConnAck::new(code, false)));
            wire.close().await;
            return;
        }
    };
    let Some(pump) = endpoint.sessions.pump() else {
        return;
    };
    let generation = endpoint.sessions.open(device);
    wire.queue(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )));
    let session = Session::new(
        device,
        connect.client_id.as_str().into(),
        endpoint.clock.now_us(),
    );
    let flushed = wire.flush().await.map_err(io::Error::other);
    match flushed.and_then(|_| Stream::from_wire(wire)) {
        Ok(stream) => {
            // The pump has the session before the engine hears of it: every message the
            // engine sends the device from then on finds it there.
            pump.adopt(Adopted {
                stream,
                session,
                generation,
                keep_alive_s: connect.keep_alive,
            });
            let _ = endpoint
                .to_engine
                .send(vec![FromDevice::Connected { device }]);
        }
        Err(_) => {
            endpoint.sessions.close(device, generation);
        }
    }
}

/// Checks CONNECT: a known device id as client id, an IoT Hub username naming that device
/// (`{host}/{deviceId}/?api-version=...`, parsed loosely: versions and extra parameters vary by
/// SDK), and an unexpired SAS token signed by the device's key or a policy with DeviceConnect.
async fn admit(endpoint: &Endpoint, connect: &Connect) -> Result<DeviceIdx, ConnectReturnCode> {
    let id = connect.client_id.as_str();
    let login = connect
        .login
        .as_ref()
        .ok_or(ConnectReturnCode::NotAuthorized)?;
    let mut parts = login.username.split('/');
    let (host, named) = (parts.next().unwrap_or_default(), parts.next());
    if id.is_empty() || named != Some(id) {
        return Err(ConnectReturnCode::NotAuthorized);
    }
    let now = endpoint.clock.wall_at(endpoint.clock.now_us());
    endpoint
        .auth
        .verify_device_token(&login.password, host, id, now)
        .map_err(|_| ConnectReturnCode::NotAuthorized)?;
    endpoint
        .hub
        .device_index(id)
        .await
        .map_err(|_| ConnectReturnCode::NotAuthorized)
}

/// Runs a twin request of `device` against the engine and makes the device's answer: the twin
/// for a GET, the new version for a reported patch, or the error's status (429 past the tier's
/// allowance).
pub(crate) async fn answer_twin(
    endpoint: &Endpoint,
    device: DeviceIdx,
    request: TwinRequest,
) -> Packet {
    match request {
        TwinRequest::Get { rid } => {
            let twin = match endpoint.meter(Metered::TwinRead).await {
                Ok(()) => endpoint.hub.device_twin(device).await,
                Err(e) => Err(e),
            };
            match twin {
                Ok(doc) => twin_answer(
                    200,
                    &rid,
                    None,
                    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
                ),
                Err(e) => twin_answer(e.code.http_status(), &rid, None, Bytes::new()),
            }
        }
        TwinRequest::Report { rid, patch, ack_of } => {
            let version = match endpoint.meter(Metered::TwinUpdate).await {
                Ok(()) => endpoint.hub.report_properties(device, patch, ack_of).await,
                Err(e) => Err(e),
            };
            match version {
                Ok(version) => twin_answer(204, &rid, Some(version), Bytes::new()),
                Err(e) => twin_answer(e.code.http_status(), &rid, None, Bytes::new()),
            }
        }
    }
}
