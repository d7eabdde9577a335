//! The MQTT transport's device side: every virtual device is a real MQTT client with its own
//! connection to the hub (this process's MQTT endpoint, another fleetsim hub, or a real IoT
//! Hub). Devices keep their [`VirtualDevice`](crate::fleet::device::VirtualDevice) state and
//! their cohort's behaviour model; the connections open at a configured ramp rate, spread over
//! several local source addresses.
//!
//! Connecting is rare and async, so it stays in tokio: a device's task dials, runs TLS and
//! CONNECT, and waits out churn downtime and backoff. Established connections are served by one
//! thread, the pump, from one poller: per connection and packet that costs a fraction of a
//! task's wake-ups and timers.
//!
//! - [`client`]: one device's task (dial, TLS, CONNECT, SUBSCRIBE, hand-over, backoff).
//! - [`pump`]: the thread serving every established connection (one poller, one timer heap).
//! - [`session`]: one connected device as data (answers, pings, churn, receipts), as the pump
//!   serves it.
//! - [`preflight`]: descriptors and ports a run needs, checked before the first connection.

pub(crate) mod client;
pub(crate) mod preflight;
pub(crate) mod pump;
pub(crate) mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, Micros};
use crate::fleet::behaviour::CohortModel;
use crate::fleet::credentials::Credentials;
use crate::fleet::faults::{FaultKind, FaultPlan};
use crate::fleet::Fleet;
use crate::link::Receipt;

/// TLS towards the hub.
#[derive(Clone)]
pub(crate) struct TlsClient {
    /// The connector (trusting the hub's CA).
    pub(crate) connector: tokio_rustls::TlsConnector,
    /// The name the hub's certificate must carry.
    pub(crate) server_name: rustls::pki_types::ServerName<'static>,
}

impl TlsClient {
    /// A client trusting the CA certificates in `ca` (PEM), expecting the hub to be `name`.
    pub(crate) fn new(ca: &std::path::Path, name: &str) -> Result<TlsClient, FleetError> {
        let mut roots = rustls::RootCertStore::empty();
        add_pem(&mut roots, ca)?;
        TlsClient::with_roots(roots, name)
    }

    /// A client trusting the system's root certificates (as `rustls-native-certs` finds them:
    /// the OS store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`) and the CA in `extra` (PEM), if given:
    /// for IoT Hub itself, whose certificates a public CA issues.
    pub(crate) fn system(
        extra: Option<&std::path::Path>,
        name: &str,
    ) -> Result<TlsClient, FleetError> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if let Some(ca) = extra {
            add_pem(&mut roots, ca)?;
        }
        if roots.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(|| "the store is empty".to_owned(), |e| e.to_string());
            return Err(FleetError::NoRoots(format!(
                "no system root certificate could be loaded: {why}"
            )));
        }
        TlsClient::with_roots(roots, name)
    }

    fn with_roots(roots: rustls::RootCertStore, name: &str) -> Result<TlsClient, FleetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FleetError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|_| FleetError::Tls(format!("'{name}' is not a valid TLS server name")))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// Adds the certificates of PEM file `ca` to `roots`.
fn add_pem(roots: &mut rustls::RootCertStore, ca: &std::path::Path) -> Result<(), FleetError> {
    let bad = |what: String| FleetError::Ca {
        path: ca.to_owned(),
        what,
    };
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Why the fleet cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    /// The CA file is unusable.
    #[error("cannot use CA file {path}: {what}")]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// `--tls` without `--ca` found no root certificate to trust.
    #[error("{0}; install the system's CA certificates (ca-certificates), set SSL_CERT_FILE, or pass --ca FILE")]
    NoRoots(String),
    /// The TLS configuration cannot be built.
    #[error("TLS towards the hub: {0}")]
    Tls(String),
    /// The thread serving the connections cannot start.
    #[error("cannot start the fleet's connection thread (mqtt-fleet-pump): {0}")]
    Pump(std::io::Error),
}

/// How the fleet reaches the hub.
#[derive(Clone)]
pub(crate) struct MqttFleetConfig {
    /// The hub's MQTT address.
    pub(crate) target: SocketAddr,
    /// The IoT Hub host name devices put in their username and SAS resource.
    pub(crate) host_name: String,
    /// TLS, if the endpoint speaks it.
    pub tls: Option<TlsClient>,
    /// New connections per second while the fleet connects.
    pub ramp: u32,
    /// Local addresses connections are spread over (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// MQTT keep-alive, seconds.
    pub(crate) keep_alive_s: u16,
    /// Which devices this process plays: `(i, n)` plays those whose index is `i` modulo `n`.
    pub shard: crate::shard::Shard,
    /// What each device signs its CONNECT password (a SAS token) with.
    pub(crate) credentials: Credentials,
    /// Where the pump hands the receipts of what devices received, a batch per turn (None:
    /// devices stamp nothing).
    pub(crate) receipts: Option<ReceiptSink>,
}

/// Takes a batch of receipts off the fleet's pump thread: it must not block.
pub(crate) type ReceiptSink = Arc<dyn Fn(Vec<Receipt>) + Send + Sync>;

/// Live counters of the fleet, readable while it runs.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// Devices this process plays that are meant to connect.
    pub(crate) online: AtomicU64,
    /// Connection tasks started so far (the ramp's progress).
    pub(crate) started: AtomicU64,
    /// Devices connected now.
    pub(crate) connected: AtomicU64,
    /// Successful CONNACKs so far (first connections and reconnections).
    pub connects: AtomicU64,
    /// Failed connection attempts.
    pub failed: AtomicU64,
    /// Connections the churn model closed.
    pub(crate) churned: AtomicU64,
    /// Connections lost to errors (or closed by the hub).
    pub(crate) lost: AtomicU64,
    /// Connections a `disconnect` fault dropped.
    pub(crate) dropped: AtomicU64,
    /// Method answers and reported patches sent.
    pub(crate) answers: AtomicU64,
}

impl FleetStatus {
    /// One line for progress output.
    pub fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "mqtt fleet: {}/{} connected ({} started) | connects {} | failed attempts {} | churned {} | lost {} | dropped by faults {} | answers {}",
            g(&self.connected),
            g(&self.online),
            g(&self.started),
            g(&self.connects),
            g(&self.failed),
            g(&self.churned),
            g(&self.lost),
            g(&self.dropped),
            g(&self.answers),
        )
    }
}

/// What every device task and the pump share.
pub(crate) struct Shared {
    config: MqttFleetConfig,
    models: Vec<CohortModel>,
    faults: FaultPlan,
    seed: u64,
    clock: Clock,
    status: Arc<FleetStatus>,
    shutdown: CancellationToken,
    pump: pump::PumpHandle,
}

/// The devices of `fleet` (ids in registry order) that this shard plays and that are meant to
/// connect, with their source addresses.
fn devices(fleet: &mut Fleet, ids: Vec<String>, config: &MqttFleetConfig) -> Vec<client::Device> {
    let devices = std::mem::take(&mut fleet.devices);
    devices
        .into_iter()
        .zip(ids)
        .enumerate()
        .filter(|(idx, (d, _))| config.shard.contains(*idx as u64) && !d.offline)
        .enumerate()
        .map(|(k, (idx, (state, id)))| client::Device {
            idx: idx as u32,
            id: id.into_boxed_str(),
            state,
            source: (!config.sources.is_empty()).then(|| config.sources[k % config.sources.len()]),
        })
        .collect()
}

/// Starts the fleet's pump thread and returns the fleet: a future that connects it at the
/// configured ramp and plays it until `shutdown`; every connection is closed (with DISCONNECT)
/// before the future completes.
pub(crate) fn start(
    clock: Clock,
    mut fleet: Fleet,
    ids: Vec<String>,
    config: MqttFleetConfig,
    status: Arc<FleetStatus>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, FleetError> {
    let devices = devices(&mut fleet, ids, &config);
    status.online.store(devices.len() as u64, Ordering::Relaxed);
    let ramp = config.ramp.max(1) as f64;
    let (pump, inbox) = pump::channel().map_err(FleetError::Pump)?;
    let shared = Arc::new(Shared {
        config,
        models: fleet.models,
        faults: fleet.faults,
        seed: fleet.seed,
        clock,
        status: status.clone(),
        shutdown: shutdown.clone(),
        pump,
    });
    let pumped = pump::spawn(inbox, shared.clone()).map_err(FleetError::Pump)?;
    tokio::spawn(drop_at_faults(shared.clone()));
    // The pump ends with the future, however that ends (even unpolled).
    let owner = PumpOwner(shared.clone());
    Ok(async move {
        let tracker = TaskTracker::new();
        let start = tokio::time::Instant::now();
        for (k, device) in devices.into_iter().enumerate() {
            let due = start + Duration::from_secs_f64(k as f64 / ramp);
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            tracker.spawn(client::run(device, shared.clone()));
            status.started.fetch_add(1, Ordering::Relaxed);
        }
        tracker.close();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tracker.wait() => {}
        }
        // Every connected device comes back from the pump and its task ends; those still
        // dialling end at the shutdown themselves.
        shared.pump.stop();
        tracker.wait().await;
        drop(owner);
        let _ = pumped.await;
    })
}

/// Has the pump drop the connections each `disconnect` fault hits, at its instant of the
/// timeline (once it has begun), until the run stops.
async fn drop_at_faults(shared: Arc<Shared>) {
    let mut disconnects: Vec<(usize, Micros)> = (shared.faults.faults().iter().enumerate())
        .filter(|(_, f)| f.kind == FaultKind::Disconnect)
        .map(|(k, f)| (k, f.start_us))
        .collect();
    disconnects.sort_by_key(|&(_, at)| at);
    if disconnects.is_empty() {
        return;
    }
    let origin = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        origin = shared.faults.begun() => origin,
    };
    for (k, at) in disconnects {
        let at = shared.clock.instant_at(origin.saturating_add(at));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(at) => shared.pump.fault(k),
        }
    }
}

/// Tells the pump to exit when dropped.
struct PumpOwner(Arc<Shared>);

impl Drop for PumpOwner {
    fn drop(&mut self) {
        self.0.pump.exit();
    }
}

/// `n` loopback source addresses from 127.0.0.2 on, for a hub on the loopback network.
pub(crate) fn loopback_sources(n: u8) -> Vec<IpAddr> {
    (0..n.max(1))
        .map(|k| IpAddr::from([127, 0, 0, 2u8.saturating_add(k)]))
        .collect()
}
