//! The hub's MQTT device endpoint in the IoT Hub dialect (device twins, direct methods and
//! SAS sign-in on IoT Hub's topics): MQTT 3.1.1 over TCP or
//! TLS, one session per device, and the [`MqttLink`] through which the job engine reaches
//! devices connected here (and, for every other device, the in-process fleet).
//!
//! - [`session`]: one device's session as a state machine without I/O.
//! - [`conn`]: a new connection's task: TLS, CONNECT and authentication, then hand-over.
//! - [`pump`]: the thread that serves every established connection from one poller.

pub(crate) mod conn;
pub(crate) mod pump;
pub mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::hub::auth::Authority;
use crate::hub::error::HubError;
use crate::hub::throttle::{Metered, RateLimiter};
use crate::hub::Hub;
use crate::ids::DeviceIdx;
use crate::link::{DeviceLink, FromDevice, ToDevice};

/// Largest packet a device may send: IoT Hub's 256 KB message limit plus topic and headers.
pub(crate) const MAX_PACKET: usize = 256 * 1024 + 4096;

/// The live sessions, by device (their generations), and the [`pump`] that serves them: the
/// [`MqttLink`] sends a device's messages there when the device has a session.
///
/// A `std::sync::Mutex`, never held across an `.await`, taken once per engine batch.
#[derive(Default)]
pub(crate) struct Sessions {
    by_device: Mutex<HashMap<DeviceIdx, u64>>,
    next_gen: AtomicU64,
    pump: OnceLock<pump::PumpHandle>,
}

impl Sessions {
    /// Registers a session for `device`, replacing any earlier one (the pump closes it when
    /// the new one arrives); returns its generation.
    fn open(&self, device: DeviceIdx) -> u64 {
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(device, generation);
        generation
    }

    /// Removes the session if it is still the device's current one; returns whether it was.
    fn close(&self, device: DeviceIdx, generation: u64) -> bool {
        let mut map = self.lock();
        match map.get(&device) {
            Some(&g) if g == generation => {
                map.remove(&device);
                true
            }
            _ => false,
        }
    }

    /// The pump, once the endpoint has started.
    fn pump(&self) -> Option<&pump::PumpHandle> {
        self.pump.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceIdx, u64>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.by_device.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine's link when an MQTT endpoint runs: messages for a device with an MQTT session
/// go to that session, the others to `fallback` (the in-process fleet), if any.
pub(crate) struct MqttLink {
    buf: Vec<ToDevice>,
    sessions: Arc<Sessions>,
    fallback: Option<Box<dyn DeviceLink>>,
}

impl MqttLink {
    /// A link routing to `sessions`, and to `fallback` for devices without one.
    pub(crate) fn new(sessions: Arc<Sessions>, fallback: Option<Box<dyn DeviceLink>>) -> Self {
        MqttLink {
            buf: Vec::new(),
            sessions,
            fallback,
        }
    }
}

impl DeviceLink for MqttLink {
    fn send(&mut self, msg: ToDevice) {
        self.buf.push(msg);
    }

    fn stamps_deliveries(&self) -> bool {
        false
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut to_pump = Vec::with_capacity(self.buf.len());
        {
            let map = self.sessions.lock();
            for msg in self.buf.drain(..) {
                if map.contains_key(&msg.device()) {
                    to_pump.push(msg);
                } else if let Some(fallback) = &mut self.fallback {
                    fallback.send(msg);
                }
            }
        }
        if let (false, Some(pump)) = (to_pump.is_empty(), self.sessions.pump()) {
            pump.deliver(to_pump);
        }
        if let Some(fallback) = &mut self.fallback {
            fallback.flush();
        }
    }
}

/// What every connection of the endpoint shares.
pub(crate) struct Endpoint {
    /// The job engine.
    pub(crate) hub: Hub,
    /// Where device messages go (the engine's device channel).
    pub(crate) to_engine: mpsc::UnboundedSender<Vec<FromDevice>>,
    /// The live sessions.
    pub(crate) sessions: Arc<Sessions>,
    /// The hub's keys: CONNECT passwords are SAS tokens it verifies.
    pub(crate) auth: Arc<Authority>,
    /// The run's clock.
    pub(crate) clock: Clock,
    /// The tier's allowances: twin reads and reported patches are metered (429 past them).
    pub(crate) limiter: Arc<RateLimiter>,
}

impl Endpoint {
    /// Counts one `op` of a device against the tier's allowance: shaped or refused past it
    /// as the hub's throttle model says.
    pub(crate) async fn meter(&self, op: Metered) -> Result<(), HubError> {
        self.limiter.pass(op, 1.0, &self.clock).await
    }
}

/// Accepts MQTT connections on `listener` (over TLS when `tls` is given) until `shutdown`,
/// then closes every session and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    endpoint: Arc<Endpoint>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (endpoint, stop, tls) = (endpoint.clone(), shutdown.clone(), tls.clone());
        tracker.spawn(async move {
            match tls {
                None => conn::run(stream, endpoint, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(conn::CONNECT_WAIT, acceptor.accept(stream)).await;
                    if let Ok(Ok(stream)) = handshake {
                        conn::run(stream, endpoint, stop).await;
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Where the endpoint listens.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// MQTT over TCP (`--mqtt`).
    pub plain: Option<SocketAddr>,
    /// MQTT over TLS (`--mqtts`).
    pub tls: Option<SocketAddr>,
}

/// A running endpoint: its bound addresses and its listener tasks.
pub(crate) struct Running {
    /// The bound TCP address, if any.
    pub plain: Option<SocketAddr>,
    /// The bound TLS address, if any.
    pub tls: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits for the listeners (and their sessions) to end after shutdown.
    pub(crate) async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointError {
    /// The pump thread or its poller could not start.
    #[error("cannot start the MQTT endpoint's event loop: {0}")]
    Pump(std::io::Error),
    /// A listen address is taken or not ours.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `--mqtts` without TLS material.
    #[error("--mqtts {0} needs TLS material (a certificate and key)")]
    NoTls(SocketAddr),
}

/// Binds the listeners of `listen` and serves them until `shutdown`.
pub(crate) async fn start(
    listen: &Listen,
    tls: Option<tokio_rustls::TlsAcceptor>,
    endpoint: Arc<Endpoint>,
    shutdown: CancellationToken,
) -> Result<Running, EndpointError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Bind { addr, source })
    };
    let plain = match listen.plain {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let secure = match listen.tls {
        Some(addr) => {
            let acceptor = tls.ok_or(EndpointError::NoTls(addr))?;
            Some((bind(addr).await?, acceptor))
        }
        None => None,
    };
    let (pump, pump_done) = pump::start(endpoint.clone()).map_err(EndpointError::Pump)?;
    if endpoint.sessions.pump.set(pump.clone()).is_err() {
        pump.stop();
        return Err(EndpointError::Pump(std::io::Error::other(
            "these sessions are served by an endpoint already",
        )));
    }
    let mut running = Running {
        plain: plain.as_ref().and_then(|l| l.local_addr().ok()),
        tls: secure.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        tasks: Vec::new(),
    };
    let stop = shutdown.clone();
    running.tasks.push(tokio::spawn(async move {
        stop.cancelled().await;
        pump.stop();
        let _ = pump_done.await;
    }));
    if let Some(l) = plain {
        let task = serve(l, None, endpoint.clone(), shutdown.clone());
        running.tasks.push(tokio::spawn(task));
    }
    if let Some((l, acceptor)) = secure {
        let task = serve(l, Some(acceptor), endpoint, shutdown);
        running.tasks.push(tokio::spawn(task));
    }
    Ok(running)
}
