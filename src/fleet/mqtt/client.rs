//! One virtual device as a real MQTT client: a thin adapter that dials (from its source
//! address), speaks the IoT Hub dialect with rumqttc's packet codec, and asks its
//! [`VirtualDevice`] what to do with each request, exactly as the in-process transport does.
//! Churn closes the connection for real; lost connections come back with jittered exponential
//! backoff.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio::time::Instant;

use crate::fleet::behaviour::MethodOutcome;
use crate::fleet::credentials::CredentialsError;
use crate::fleet::device::{DesiredOutcome, VirtualDevice};
use crate::fleet::mqtt::Shared;
use crate::mqtt::topics::{self, HubPublish};
use crate::mqtt::wire::{Wire, WireError};

/// The first retry delay after a failed connection; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long dialling, TLS and CONNACK may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest packet a device accepts: a 128 KB method payload with its topic.
const MAX_PACKET: usize = 128 * 1024 + 1024;

/// Why a connection attempt or a session ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket or the protocol failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The hub refused the CONNECT.
    #[error("the hub refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The hub answered CONNECT with something else.
    #[error("expected CONNACK, got another packet")]
    NoConnAck,
    /// Dialling, TLS or CONNACK took too long.
    #[error("no CONNACK within {0:?}")]
    Timeout(Duration),
    /// The device cannot sign its password.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// How a session ended normally.
enum Ended {
    /// The run is stopping.
    Shutdown,
    /// The device's churn model disconnected it.
    Churn,
}

/// One device of the MQTT fleet.
pub struct Device {
    /// Registry index (and behaviour-model index).
    pub idx: u32,
    /// The device id (client id).
    pub id: Box<str>,
    /// Its behaviour state.
    pub state: VirtualDevice,
    /// The local address it connects from, if bound.
    pub source: Option<std::net::IpAddr>,
}

/// Plays `device` until the run stops: connect, serve, and reconnect after churn or failures.
pub async fn run(mut device: Device, shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut jitter = SmallRng::seed_from_u64(shared.seed ^ device.idx as u64);
    loop {
        let attempt = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, dial(&device, &shared)) => r,
        };
        let pause = match attempt {
            Ok(Ok(conn)) => {
                backoff = BACKOFF_MIN;
                let ended = match conn {
                    Conn::Plain(wire) => session(wire, &mut device, &shared).await,
                    Conn::Tls(wire) => session(*wire, &mut device, &shared).await,
                };
                device.state.connected = false;
                shared.status.connected.fetch_sub(1, Ordering::Relaxed);
                match ended {
                    Ok(Ended::Shutdown) => return,
                    Ok(Ended::Churn) => {
                        shared.status.churned.fetch_add(1, Ordering::Relaxed);
                        let model = &shared.models[device.state.cohort as usize];
                        let down = device.state.downtime(model, shared.seed, device.idx);
                        Duration::from_micros(down)
                    }
                    Err(_) => {
                        shared.status.lost.fetch_add(1, Ordering::Relaxed);
                        backoff
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                shared.status.failed.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.mul_f64(jitter.gen_range(0.5..1.5));
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

enum Conn {
    Plain(Wire<tokio::net::TcpStream>),
    Tls(Box<Wire<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

/// Dials the hub from the device's source address, runs TLS if configured, and connects.
async fn dial(device: &Device, shared: &Shared) -> Result<Conn, ClientError> {
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
    match &shared.config.tls {
        None => {
            let mut wire = Wire::new(tcp, MAX_PACKET);
            handshake(&mut wire, device, shared).await?;
            Ok(Conn::Plain(wire))
        }
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.server_name.clone(), tcp)
                .await
                .map_err(WireError::from)?;
            let mut wire = Wire::new(stream, MAX_PACKET);
            handshake(&mut wire, device, shared).await?;
            Ok(Conn::Tls(Box::new(wire)))
        }
    }
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

/// Serves one connection: answers requests as the device's behaviour model says, pings, and
/// disconnects when the churn model says so.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut wire: Wire<S>,
    device: &mut Device,
    shared: &Shared,
) -> Result<Ended, ClientError> {
    let (seed, idx) = (shared.seed, device.idx);
    let model = &shared.models[device.state.cohort as usize];
    device.state.connected = true;
    shared.status.connected.fetch_add(1, Ordering::Relaxed);
    shared.status.connects.fetch_add(1, Ordering::Relaxed);
    let keep_alive = Duration::from_secs(shared.config.keep_alive_s.max(1) as u64);
    let churn_at = device
        .state
        .next_disconnect(model, seed, idx)
        .map(|us| Instant::now() + Duration::from_micros(us));
    let mut ping_at = Instant::now() + keep_alive;
    // Answers waiting for their latency to pass: (due, packet). Rarely more than one or two.
    let mut later: Vec<(Instant, Packet)> = Vec::new();
    let mut report_rid: u32 = 0;
    // One timer and one shutdown waiter for the whole session, re-armed only when the next
    // wake-up moves: registering them afresh per packet costs more than answering.
    let timer = tokio::time::sleep_until(ping_at);
    let stop = shared.shutdown.cancelled();
    tokio::pin!(timer, stop);
    loop {
        wire.flush().await?;
        let mut wake = ping_at;
        for at in churn_at.iter().chain(later.iter().map(|(at, _)| at)) {
            wake = wake.min(*at);
        }
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            _ = &mut stop => {
                wire.queue(&Packet::Disconnect);
                wire.close().await;
                return Ok(Ended::Shutdown);
            }
            read = wire.fill() => {
                read?;
                let now = Instant::now();
                while let Some(packet) = wire.parse()? {
                    let Packet::Publish(p) = packet else { continue };
                    match topics::parse_hub_publish(&p.topic) {
                        Some(HubPublish::Method { name, rid }) => {
                            match device.state.on_method(model, name, seed, idx) {
                                MethodOutcome::Silent => {}
                                MethodOutcome::Answer { after, status } => {
                                    let answer = publish(topics::method_response(status, rid), Bytes::from_static(b"null"));
                                    later.push((now + Duration::from_micros(after), answer));
                                }
                            }
                        }
                        Some(HubPublish::Desired) => {
                            if let DesiredOutcome::Ack(after) = device.state.on_desired(model, seed, idx) {
                                report_rid = report_rid.wrapping_add(1);
                                let body = reported_body(&p.payload);
                                let report = publish(topics::reported_patch(&report_rid.to_string()), body);
                                later.push((now + Duration::from_micros(after), report));
                            }
                        }
                        Some(HubPublish::TwinResponse { .. }) | None => {}
                    }
                }
            }
            _ = &mut timer => {}
        }
        let now = Instant::now();
        if churn_at.is_some_and(|at| at <= now) {
            wire.queue(&Packet::Disconnect);
            wire.close().await;
            return Ok(Ended::Churn);
        }
        let mut i = 0;
        while i < later.len() {
            if later[i].0 <= now {
                let (_, packet) = later.swap_remove(i);
                wire.queue(&packet);
                shared.status.answers.fetch_add(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
        if ping_at <= now {
            wire.queue(&Packet::PingReq);
            ping_at = now + keep_alive;
        }
    }
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
