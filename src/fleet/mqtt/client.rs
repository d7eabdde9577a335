//! One virtual device's connection as a real MQTT client: dials (from its source address),
//! runs TLS, CONNECT and SUBSCRIBE in the IoT Hub dialect with rumqttc's packet codec, then
//! hands the established connection to the [`pump`](super::pump), which serves the
//! [`session`](super::session) until it ends. Churn and `disconnect` faults close the connection
//! for real; lost or dropped connections come back with jittered exponential backoff
//! ([`faults::reconnect_wait`]), and a device cut off by a partition dials only when it ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;

use crate::fleet::credentials::CredentialsError;
use crate::fleet::device::VirtualDevice;
use crate::fleet::faults;
use crate::fleet::mqtt::session::Ended;
use crate::fleet::mqtt::Shared;
use crate::mqtt::stream::Stream;
use crate::mqtt::topics;
use crate::mqtt::wire::{Wire, WireError};

/// How long dialling, TLS and CONNACK may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest packet a device accepts: a 128 KB method payload with its topic.
const MAX_PACKET: usize = 128 * 1024 + 1024;

/// Why a connection attempt or a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The socket or the protocol failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The hub refused the CONNECT.
    #[error("the hub refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The hub answered CONNECT with something else.
    #[error("expected CONNACK, got another packet")]
    NoConnAck,
    /// The device cannot sign its password.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// One device of the MQTT fleet.
pub(crate) struct Device {
    /// Registry index (and behaviour-model index).
    pub(crate) idx: u32,
    /// The device id (client id).
    pub(crate) id: Box<str>,
    /// Its behaviour state.
    pub(crate) state: VirtualDevice,
    /// The local address it connects from, if bound.
    pub(crate) source: Option<std::net::IpAddr>,
}

/// Plays `device` until the run stops: connect, hand the connection to the pump, and
/// reconnect after churn (its downtime), or after backoff when the connection was lost or
/// dropped or an attempt failed. While a partition cuts the device off, it waits for its end.
pub(crate) async fn run(mut device: Device, shared: Arc<Shared>) {
    // Failed attempts in a row, and the device's drops so far (each salts its backoff's draw).
    let (mut attempt, mut drops) = (0u32, 0u32);
    loop {
        let now = shared.clock.now_us();
        let (idx, cohort) = (device.idx, device.state.cohort);
        if let Some(end) = shared
            .faults
            .partitioned_until(now, shared.seed, idx, cohort)
        {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                // Jittered: the devices it cut off do not all dial at its last instant.
                _ = tokio::time::sleep(Duration::from_micros(
                    end - now + faults::reconnect_wait(shared.seed, idx, drops, 0),
                )) => continue,
            }
        }
        // Boxed: the dial's state lives only while dialling, not in every parked device task.
        let attempt_result = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, Box::pin(dial(&device, &shared))) => r,
        };
        let pause = match attempt_result {
            Ok(Ok(stream)) => {
                attempt = 0;
                // The pump stops with the run and sends every device back first: no need to
                // watch for shutdown here (an error means the pump is gone).
                let Ok(over) = shared.pump.adopt(stream, device).await else {
                    return;
                };
                device = over.device;
                match over.ended {
                    Ended::Shutdown => return,
                    Ended::Churn => {
                        let model = &shared.models[device.state.cohort as usize];
                        device.state.downtime(model, shared.seed, device.idx)
                    }
                    Ended::Lost | Ended::Fault => {
                        drops = device.state.drop_connection();
                        faults::reconnect_wait(shared.seed, device.idx, drops, 0)
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                shared.status.failed.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                faults::reconnect_wait(shared.seed, device.idx, drops, attempt)
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_micros(pause)) => {}
        }
    }
}

/// Dials the hub from the device's source address, runs TLS if configured, connects and
/// subscribes; answers the connection ready for the pump.
async fn dial(device: &Device, shared: &Shared) -> Result<Stream, ClientError> {
    let target = shared.config.target;
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(WireError::from)?;
    if let Some(ip) = device.source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(WireError::from)?;
    }
    socket.set_nodelay(true).map_err(WireError::from)?;
    let tcp = socket.connect(target).await.map_err(WireError::from)?;
    let stream = match &shared.config.tls {
        None => {
            let mut wire = Wire::new(tcp, MAX_PACKET);
            handshake(&mut wire, device, shared).await?;
            Stream::from_wire(wire).map_err(WireError::from)?
        }
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.server_name.clone(), tcp)
                .await
                .map_err(WireError::from)?;
            let mut wire = Wire::new(stream, MAX_PACKET);
            handshake(&mut wire, device, shared).await?;
            Stream::from_wire(wire).map_err(WireError::from)?
        }
    };
    Ok(stream)
}

/// CONNECT with the IoT Hub username and a SAS token, then subscribe to methods and desired
/// patches (QoS 0, as the Node SDK does).
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    device: &Device,
    shared: &Shared,
) -> Result<(), ClientError> {
    let config = &shared.config;
    let mut connect = Connect::new(&*device.id);
    connect.keep_alive = config.keep_alive_s;
    connect.clean_session = false;
    connect.set_login(
        format!("{}/{}/?api-version=2021-04-12", config.host_name, device.id),
        password(device, shared)?,
    );
    wire.queue(&Packet::Connect(connect));
    let mut subscribe = Subscribe::new(format!("{}#", topics::METHODS_POST), QoS::AtMostOnce);
    subscribe.add(format!("{}#", topics::DESIRED_PATCH), QoS::AtMostOnce);
    subscribe.pkid = 1;
    wire.flush().await?;
    match wire.next_packet().await? {
        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
        Packet::ConnAck(ack) => return Err(ClientError::Refused(ack.code)),
        _ => return Err(ClientError::NoConnAck),
    }
    wire.queue(&Packet::Subscribe(subscribe));
    wire.flush().await?;
    Ok(())
}

/// The device's SAS token, valid a day.
fn password(device: &Device, shared: &Shared) -> Result<String, CredentialsError> {
    let now = shared.clock.wall_at(shared.clock.now_us()).unix_timestamp();
    let expiry = now.max(0) as u64 + 86_400;
    let config = &shared.config;
    config
        .credentials
        .password(&config.host_name, &device.id, expiry)
}
