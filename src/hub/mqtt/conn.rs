//! The connection task of one device: reads CONNECT and checks the device's credentials, opens
//! its [`Session`], then moves packets between the socket, the session and the job engine until
//! the device leaves, breaks the protocol, misses its keep-alive, or is replaced.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::mqtt::session::{twin_answer, Action, Session};
use crate::hub::mqtt::{Endpoint, MAX_PACKET};
use crate::hub::registry::DeviceIdx;
use crate::hub::throttle::Metered;
use crate::link::FromDevice;
use crate::mqtt::wire::{Wire, WireError};

/// How long a new connection has to send CONNECT (and to finish the TLS handshake).
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The keep-alive timer of a device that asked for none (keep-alive 0): a year.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// Serves one connection until it ends or `shutdown` fires.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    endpoint: Arc<Endpoint>,
    shutdown: CancellationToken,
) {
    let mut wire = Wire::new(stream, MAX_PACKET);
    let connect = match tokio::time::timeout(CONNECT_WAIT, wire.next_packet()).await {
        Ok(Ok(Packet::Connect(c))) => c,
        _ => return,
    };
    let device = match admit(&endpoint, &connect).await {
        Ok(device) => device,
        Err(code) => {
            wire.queue(&Packet::ConnAck(ConnAck::new(code, false)));
            wire.close().await;
            return;
        }
    };
    let (generation, rx) = endpoint.sessions.open(device);
    wire.queue(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )));
    let _ = endpoint
        .to_engine
        .send(vec![FromDevice::Connected { device }]);
    let mut session = Session::new(
        device,
        connect.client_id.as_str().into(),
        endpoint.clock.now_us(),
    );
    let _ = serve(&mut wire, &mut session, rx, &endpoint, &connect, &shutdown).await;
    let mut actions = Vec::new();
    session.close(&mut actions);
    let mut last: Vec<FromDevice> = actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Engine(msg) => Some(msg),
            _ => None,
        })
        .collect();
    if endpoint.sessions.close(device, generation) {
        last.push(FromDevice::Disconnected { device });
    }
    if !last.is_empty() {
        let _ = endpoint.to_engine.send(last);
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

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    session: &mut Session,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::link::ToDevice>,
    endpoint: &Endpoint,
    connect: &Connect,
    shutdown: &CancellationToken,
) -> Result<(), WireError> {
    // MQTT 3.1.1 §3.1.2.10: the server closes after one and a half keep-alive periods of silence.
    // One timer serves the keep-alive and the session's held requests. It is not moved per
    // packet: when the keep-alive check comes due and the device spoke since, the check moves
    // to one period after the last packet.
    let period = match connect.keep_alive {
        0 => NEVER,
        s => Duration::from_millis(s as u64 * 1500),
    };
    let mut last_heard = Instant::now();
    let mut keep_alive_due = last_heard + period;
    let timer = tokio::time::sleep_until(keep_alive_due);
    let stop = shutdown.cancelled();
    tokio::pin!(timer, stop);
    let mut actions = Vec::new();
    let mut to_engine = Vec::new();
    loop {
        wire.flush().await?;
        let wake = session.next_deadline().map_or(keep_alive_due, |us| {
            keep_alive_due.min(endpoint.clock.instant_at(us))
        });
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = &mut timer => {
                let now = Instant::now();
                if keep_alive_due <= now {
                    if last_heard + period <= now {
                        return Ok(());
                    }
                    keep_alive_due = last_heard + period;
                }
                session.on_time(endpoint.clock.now_us(), &mut actions);
            }
            msg = rx.recv() => {
                // None: a newer connection of the same device replaced this one.
                let Some(msg) = msg else { return Ok(()) };
                let now = endpoint.clock.now_us();
                session.on_hub(msg, now, &mut actions);
                while let Ok(msg) = rx.try_recv() {
                    session.on_hub(msg, now, &mut actions);
                }
            }
            read = wire.fill() => {
                read?;
                last_heard = Instant::now();
                let now = endpoint.clock.now_us();
                while let Some(packet) = wire.parse()? {
                    if packet == Packet::Disconnect {
                        perform(wire, session, &mut actions, &mut to_engine, endpoint).await;
                        return Ok(());
                    }
                    if session.on_packet(packet, now, &mut actions).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        perform(wire, session, &mut actions, &mut to_engine, endpoint).await;
    }
}

/// Performs the session's actions: packets to the wire, messages to the engine, and the twin
/// requests that need the engine's answer.
async fn perform<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    session: &Session,
    actions: &mut Vec<Action>,
    to_engine: &mut Vec<FromDevice>,
    endpoint: &Endpoint,
) {
    for action in actions.drain(..) {
        match action {
            Action::Send(packet) => wire.queue(&packet),
            Action::Engine(msg) => to_engine.push(msg),
            Action::TwinGet { rid } => {
                let twin = match endpoint.meter(Metered::TwinRead) {
                    Ok(()) => endpoint.hub.device_twin(session.device()).await,
                    Err(e) => Err(e),
                };
                let answer = match twin {
                    Ok(doc) => twin_answer(
                        200,
                        &rid,
                        None,
                        Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
                    ),
                    Err(e) => twin_answer(e.code.http_status(), &rid, None, Bytes::new()),
                };
                wire.queue(&answer);
            }
            Action::Report { rid, patch, ack_of } => {
                let version = match endpoint.meter(Metered::TwinUpdate) {
                    Ok(()) => {
                        endpoint
                            .hub
                            .report_properties(session.device(), patch, ack_of)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let answer = match version {
                    Ok(version) => twin_answer(204, &rid, Some(version), Bytes::new()),
                    Err(e) => twin_answer(e.code.http_status(), &rid, None, Bytes::new()),
                };
                wire.queue(&answer);
            }
        }
    }
    if !to_engine.is_empty() {
        let _ = endpoint.to_engine.send(std::mem::take(to_engine));
    }
}
