//! A hub engine and a scenario's devices started together, for `fleetsim run` and `fleetsim
//! hub`. The device side is the in-process fleet, or the hub's MQTT endpoint with the MQTT fleet
//! (`[hub] transport = "mqtt"`), or the endpoint alone for a fleet in other processes (`fleetsim
//! devices`) and for SDK devices; the engine's [`DeviceLink`] is built accordingly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::fleet::credentials::Credentials;
use crate::fleet::faults::FaultPlan;
use crate::fleet::inproc::{InProcFleet, InProcLink, LocalFleet};
use crate::fleet::mqtt::{self as mqtt_fleet, preflight, FleetStatus, MqttFleetConfig};
use crate::fleet::Fleet;
use crate::hub::auth::Authority;
use crate::hub::mqtt::{self, Endpoint, Listen, MqttLink, Sessions};
use crate::hub::receipts::{self, ReceiptsEndpoint};
use crate::hub::state::StateDir;
use crate::hub::store::{CommitFailed, Store};
use crate::hub::throttle::{Limits, RateLimiter};
use crate::hub::{Engine, EngineOutput, Hub, HubView};
use crate::link::{DeviceLink, FromDevice, ToDevice};
use crate::metrics;
use crate::scenario::format::Transport;
use crate::scenario::{build, Scenario};
use crate::shard::Shard;

/// Host names the hub answers to (SAS resources and the TLS certificate).
pub(crate) const HOST_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
/// MQTT keep-alive of fleet devices, seconds (the Python SDK's).
pub(crate) use crate::fleet::faults::KEEP_ALIVE_S;
/// Outgoing connections per loopback source address the fleet aims for.
pub(crate) const PER_SOURCE: u64 = 5_000;

/// The MQTT side of a run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct MqttOptions {
    /// Where the endpoint listens (a scenario with `transport = "mqtt"` and no address listens
    /// on an ephemeral loopback port).
    pub listen: Listen,
    /// The scenario's devices run elsewhere (`fleetsim devices`): start no fleet here.
    pub external_fleet: bool,
    /// Where to listen for an external fleet's delivery receipts (`fleetsim devices
    /// --receipts`); None: deliveries over MQTT are measured only for a fleet in this process.
    pub receipts: Option<SocketAddr>,
}

/// Whether a run of `scenario` with `opts` serves MQTT.
pub(crate) fn serves_mqtt(scenario: &Scenario, opts: &MqttOptions) -> bool {
    scenario.hub.transport == Transport::Mqtt
        || opts.listen.plain.is_some()
        || opts.listen.tls.is_some()
}

/// The keys and TLS material the MQTT endpoint and a local MQTT fleet use.
#[derive(Clone)]
pub struct Security {
    /// The hub's keys.
    pub auth: Arc<Authority>,
    /// The TLS acceptor (`--mqtts`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The CA certificate a local fleet trusts over TLS.
    pub ca: Option<PathBuf>,
}

impl Security {
    /// From a state directory (made if missing), for [`HOST_NAMES`]; TLS material only when
    /// `tls` is asked for.
    pub fn from_state_dir(
        dir: &std::path::Path,
        clock: Clock,
        tls: bool,
    ) -> anyhow::Result<Security> {
        let state = StateDir::open(dir)
            .with_context(|| format!("cannot use state directory {}", dir.display()))?;
        let names: Vec<String> = HOST_NAMES.iter().map(|s| s.to_string()).collect();
        let auth = Arc::new(state.authority(names.clone())?);
        let (tls, ca) = if tls {
            let material = state.tls(None, &names, clock.wall_at(clock.now_us()))?;
            (Some(crate::tls::acceptor(&material)?), material.ca_path)
        } else {
            (None, None)
        };
        Ok(Security { auth, tls, ca })
    }
}

/// A hub engine and a scenario's devices (in process, or over MQTT), running as tasks.
pub struct Running {
    /// The handle API calls and the job feeder use.
    pub hub: Hub,
    /// The engine's published view.
    pub view: watch::Receiver<Arc<HubView>>,
    /// The tier's allowances for service calls and device twin traffic (see [`RateLimiter`]).
    pub limiter: Arc<RateLimiter>,
    stop: CancellationToken,
    engine: EngineTask,
    devices: DeviceSide,
}

/// The job engine ended although nobody asked it to stop: the hub cannot answer as if alive.
/// `fleetsim hub` and `fleetsim run` stop and exit with [`crate::verdict::Exit::EngineDied`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineDied {
    /// It panicked (or returned, or its task was cancelled): what it held is lost. Holds what
    /// happened to it, with a panic's message.
    #[error(
        "the hub's job engine died: {0}; the hub stopped (its jobs and measurements are lost)"
    )]
    Crashed(String),
    /// Its store could not commit: it stopped rather than answer from a memory its store no
    /// longer matches; the store keeps what was committed.
    #[error(transparent)]
    Store(CommitFailed),
}

impl EngineDied {
    /// Why a finished engine task ended, when nobody asked it to stop.
    fn of<T>(ended: Result<Result<T, CommitFailed>, tokio::task::JoinError>) -> Self {
        let why = match ended {
            Ok(Ok(_)) => "it returned before it was asked to stop".to_owned(),
            Ok(Err(failed)) => return EngineDied::Store(failed),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(a panic without a message)".to_owned());
                format!("it panicked: {message}")
            }
            Err(_) => "its task was cancelled".to_owned(),
        };
        EngineDied::Crashed(why)
    }
}

/// The engine's task, or why it died once [`EngineTask::died`] saw it end.
enum EngineTask {
    Running(JoinHandle<Result<EngineOutput, CommitFailed>>),
    Died(EngineDied),
}

impl EngineTask {
    /// Resolves when the engine ends before [`EngineTask::output`] asks it to (cancel-safe:
    /// wait on it in a `select!`); pending forever once it has resolved.
    async fn died(&mut self) -> EngineDied {
        let EngineTask::Running(handle) = self else {
            return std::future::pending().await;
        };
        let died = EngineDied::of(handle.await);
        *self = EngineTask::Died(died.clone());
        died
    }

    /// The engine's output once it stopped (after the stop token fired), or why it died (its
    /// store may fail as it stops, too).
    async fn output(self) -> Result<EngineOutput, EngineDied> {
        match self {
            EngineTask::Running(handle) => match handle.await {
                Ok(Ok(output)) => Ok(output),
                failed => Err(EngineDied::of(failed)),
            },
            EngineTask::Died(died) => Err(died),
        }
    }
}

impl Running {
    /// Where the MQTT endpoint listens: (TCP, TLS).
    pub fn mqtt_addrs(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        self.devices.mqtt_addrs()
    }

    /// Stops the engine and the devices; answers the engine's measurements and job reports, or
    /// [`EngineDied`] if the engine had died.
    pub async fn stop(self) -> anyhow::Result<EngineOutput> {
        self.stop.cancel();
        let output = self.engine.output().await;
        self.devices.join().await?;
        Ok(output?)
    }

    /// Resolves if the engine dies (ends before [`Running::stop`]): see [`EngineDied`].
    /// Cancel-safe; [`Running::stop`] still stops the devices afterwards.
    pub(crate) async fn engine_died(&mut self) -> EngineDied {
        self.engine.died().await
    }

    /// Begins the fleet's fault timeline at `at` (µs of the clock), the instant the run's jobs
    /// count from, unless it has begun (the in-process fleet begins it as it connects).
    pub(crate) fn begin_faults(&self, at: Micros) {
        self.devices.faults.begin(at);
    }

    /// Waits (printing progress) until the devices expected over MQTT are connected, the wait
    /// bound passes, or `shutdown`; answers the clock reading then (0 when nothing to wait for).
    pub(crate) async fn await_devices(
        &mut self,
        clock: &Clock,
        ramp: u32,
        shutdown: &CancellationToken,
    ) -> Micros {
        let expected = self.devices.expect_connected;
        if expected == 0 {
            return 0;
        }
        let bound = clock.now_us() + connect_wait(expected, ramp);
        let mut next_line = 0;
        loop {
            let now = clock.now_us();
            let connected = self.view.borrow_and_update().connected;
            if connected >= expected || now >= bound || shutdown.is_cancelled() {
                eprintln!(
                    "fleetsim: {connected}/{expected} MQTT devices connected after {:.1}s",
                    now as f64 / 1e6
                );
                return now;
            }
            if now >= next_line {
                match &self.devices.fleet_status {
                    Some(s) => eprintln!("[{:>6.1}s] {}", now as f64 / 1e6, s.line()),
                    None => eprintln!(
                        "[{:>6.1}s] {connected}/{expected} devices connected",
                        now as f64 / 1e6
                    ),
                }
                next_line = now + 1_000_000;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                // The engine died: the run's loop sees it too, and stops.
                changed = self.view.changed() => if changed.is_err() { return now },
                _ = clock.sleep_until(now + 100_000) => {}
            }
        }
    }
}

/// How long a run waits for `n` MQTT devices connecting at `ramp` per second.
fn connect_wait(n: u64, ramp: u32) -> Micros {
    let ramp_us = n.saturating_mul(1_000_000) / ramp.max(1) as u64;
    2 * ramp_us + 30_000_000
}

/// Builds `scenario`'s registry and fleet (with `seed`) and starts the engine over them, with
/// `limits` (the scenario's own unless overridden by the caller), and the device side `mqtt`
/// asks for (`security`: keys and TLS, needed when MQTT is served).
pub async fn start(
    scenario: &Scenario,
    seed: u64,
    shard: Shard,
    clock: Clock,
    limits: Limits,
    mqtt: &MqttOptions,
    security: Option<Security>,
) -> anyhow::Result<Running> {
    start_keeping(
        scenario, seed, shard, clock, limits, mqtt, security, None, false,
    )
    .await
}

/// [`start`], with the hub's state kept in `store` (if given): the store's devices win over the
/// scenario's, and its jobs continue; with `hold_restored`, once [`crate::hub::Hub::release`]
/// says so (see [`Engine::holding_restored`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_keeping(
    scenario: &Scenario,
    seed: u64,
    shard: Shard,
    clock: Clock,
    limits: Limits,
    mqtt: &MqttOptions,
    security: Option<Security>,
    store: Option<Store>,
    hold_restored: bool,
) -> anyhow::Result<Running> {
    let registry = build::registry(scenario, clock.clone(), shard);
    let (from_dev_tx, from_dev_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (view_tx, view_rx) = watch::channel(Arc::<HubView>::default());
    let stop = CancellationToken::new();
    let hub = Hub::new(cmd_tx);
    let limiter = Arc::new(RateLimiter::new(limits));

    let ends = HubSide {
        clock: clock.clone(),
        hub: hub.clone(),
        to_engine: from_dev_tx,
        stop: stop.clone(),
        limiter: limiter.clone(),
    };
    let (link, devices) = start_devices(scenario, seed, shard, mqtt, security, ends).await?;
    let origin = clock.origin();
    let mut engine = Engine::new(clock, limits, registry, link)
        .with_intervals_of(metrics::interval_for(scenario.duration.micros()));
    if let Some(store) = store {
        let path = store.path().to_owned();
        let (journal, saved) = store
            .start(origin)
            .with_context(|| format!("cannot start the hub's store {}", path.display()))?;
        if hold_restored {
            engine = engine.holding_restored();
        }
        engine = engine.with_store(journal, saved);
    }
    let engine = EngineTask::Running(tokio::spawn(engine.run(
        cmd_rx,
        from_dev_rx,
        view_tx,
        stop.clone(),
    )));
    Ok(Running {
        hub,
        view: view_rx,
        limiter,
        stop,
        engine,
        devices,
    })
}

/// The limits a scenario's `[hub]` asks for.
pub(crate) fn limits(scenario: &Scenario) -> Limits {
    Limits {
        tier: scenario.hub.tier.0,
        units: scenario.hub.units,
        throttle: scenario.hub.throttle.0,
    }
}

/// The engine's ends the device side connects to.
pub(crate) struct HubSide {
    /// The run's clock.
    pub(crate) clock: Clock,
    /// The engine's handle.
    pub hub: Hub,
    /// The engine's device channel.
    pub(crate) to_engine: mpsc::UnboundedSender<Vec<FromDevice>>,
    /// Stops the devices.
    pub(crate) stop: CancellationToken,
    /// The tier's allowances, shared with the service API: devices' twin reads and reported
    /// patches count against the same buckets.
    pub limiter: Arc<RateLimiter>,
}

/// What [`start`] set up (beside the engine's link).
pub(crate) struct DeviceSide {
    /// Devices expected to connect over MQTT before jobs start (0: do not wait).
    pub(crate) expect_connected: u64,
    /// The MQTT fleet's counters, when it runs here.
    pub(crate) fleet_status: Option<Arc<FleetStatus>>,
    /// The fleet's faults: their timeline begins when the run's jobs' does.
    pub(crate) faults: FaultPlan,
    fleet_task: Option<JoinHandle<()>>,
    endpoint: Option<mqtt::Running>,
    /// The receipts side channel's listener.
    receipts: Option<JoinHandle<()>>,
}

impl DeviceSide {
    /// Where the MQTT endpoint listens: (TCP, TLS).
    pub(crate) fn mqtt_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.endpoint
            .as_ref()
            .map_or((None, None), |e| (e.plain, e.tls))
    }

    /// Waits for the fleet and the endpoint to stop (after the stop token fired).
    pub(crate) async fn join(self) -> anyhow::Result<()> {
        if let Some(t) = self.fleet_task {
            t.await.context("the fleet task failed")?;
        }
        if let Some(e) = self.endpoint {
            e.join().await;
        }
        if let Some(r) = self.receipts {
            r.await.context("the receipts side channel failed")?;
        }
        Ok(())
    }
}

/// Starts the device side of `scenario`; answers the engine's link and the running parts.
async fn start_devices(
    scenario: &Scenario,
    seed: u64,
    shard: Shard,
    opts: &MqttOptions,
    security: Option<Security>,
    hub_side: HubSide,
) -> anyhow::Result<(Box<dyn DeviceLink>, DeviceSide)> {
    let HubSide {
        clock,
        hub,
        to_engine: from_dev,
        stop,
        limiter,
    } = hub_side;
    let fleet = build::fleet(scenario, seed, shard);
    let faults = fleet.faults.clone();
    let mqtt_fleet = scenario.hub.transport == Transport::Mqtt;
    let mut listen = opts.listen.clone();
    if mqtt_fleet && !opts.external_fleet && listen.plain.is_none() && listen.tls.is_none() {
        listen.plain = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    if listen.plain.is_none() && listen.tls.is_none() {
        if opts.external_fleet || opts.receipts.is_some() {
            anyhow::bail!(
                "--external-fleet and --receipts need --mqtt or --mqtts: the devices must reach the hub somehow"
            );
        }
        let mut side = DeviceSide {
            expect_connected: 0,
            fleet_status: None,
            faults,
            fleet_task: None,
            endpoint: None,
            receipts: None,
        };
        if clock.is_virtual() {
            // In virtual time the devices play in the engine's own task: a churn event is then
            // one turn of one task, not a wake-up of two.
            return Ok((Box::new(LocalFleet::new(fleet, clock)), side));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        side.fleet_task = Some(spawn_inproc(fleet, clock, from_dev, rx, stop));
        return Ok((Box::new(InProcLink::new(tx)), side));
    }

    let online = (fleet.devices.len() - fleet.offline()) as u64;
    let local_fleet = mqtt_fleet && !opts.external_fleet;
    let sources = online.div_ceil(PER_SOURCE).max(1);
    let expected = if mqtt_fleet { online } else { 0 };
    let report = preflight::check(preflight::Need {
        sockets: if local_fleet { 2 * online } else { expected },
        outgoing: if local_fleet { online } else { 0 },
        sources,
    })?;
    eprintln!("fleetsim: {report}");

    let security = security.context("serving MQTT needs the hub's keys (a state directory)")?;
    let authority = security.auth.clone();
    let sessions = Arc::new(Sessions::default());
    let endpoint = Arc::new(Endpoint {
        hub: hub.clone(),
        to_engine: from_dev.clone(),
        sessions: sessions.clone(),
        auth: authority.clone(),
        clock: clock.clone(),
        limiter,
    });
    let running = mqtt::start(&listen, security.tls.clone(), endpoint, stop.clone()).await?;
    for (scheme, addr) in [("mqtt", running.plain), ("mqtts", running.tls)] {
        if let Some(addr) = addr {
            eprintln!("fleetsim: MQTT device endpoint on {scheme}://{addr}");
        }
    }
    let receipts = match opts.receipts {
        None => None,
        Some(addr) => {
            let side = Arc::new(ReceiptsEndpoint {
                auth: authority.clone(),
                clock: clock.clone(),
                to_engine: from_dev.clone(),
            });
            let (bound, task) = receipts::start(addr, side, stop.clone())
                .await
                .with_context(|| format!("cannot listen for delivery receipts on {addr}"))?;
            eprintln!("fleetsim: delivery receipts side channel on tcp://{bound}");
            Some(task)
        }
    };

    let (fallback, fleet_task, fleet_status): (Option<Box<dyn DeviceLink>>, _, _) = if local_fleet {
        let status = Arc::new(FleetStatus::default());
        let target = running.plain.or(running.tls).context("no MQTT listener")?;
        let tls = match running.plain {
            Some(_) => None,
            None => Some(mqtt_fleet::TlsClient::new(
                security
                    .ca
                    .as_deref()
                    .context("a local fleet over TLS needs the hub's CA")?,
                HOST_NAMES[0],
            )?),
        };
        let config = MqttFleetConfig {
            target,
            host_name: HOST_NAMES[0].to_owned(),
            tls,
            ramp: scenario.hub.ramp,
            sources: sources_for(target.ip(), sources),
            keep_alive_s: KEEP_ALIVE_S,
            shard: Shard::ALL,
            credentials: Credentials::Hub(authority.keyring()),
            // The fleet reads this process's clock: its receipts go straight to the engine.
            receipts: Some(Arc::new(move |receipts| {
                let _ = from_dev.send(vec![FromDevice::Received {
                    receipts,
                    clock: None,
                }]);
            })),
        };
        let ids = build::device_ids(scenario).collect();
        let task = tokio::spawn(mqtt_fleet::start(
            clock,
            fleet,
            ids,
            config,
            status.clone(),
            stop,
        )?);
        (None, Some(task), Some(status))
    } else if mqtt_fleet {
        (None, None, None)
    } else {
        // SDK devices over MQTT beside the in-process fleet.
        let (tx, rx) = mpsc::unbounded_channel();
        let task = spawn_inproc(fleet, clock, from_dev, rx, stop);
        let link: Box<dyn DeviceLink> = Box::new(InProcLink::new(tx));
        (Some(link), Some(task), None)
    };
    let side = DeviceSide {
        expect_connected: expected,
        fleet_status,
        faults,
        fleet_task,
        endpoint: Some(running),
        receipts,
    };
    Ok((Box::new(MqttLink::new(sessions, fallback)), side))
}

/// Loopback source addresses for a loopback target; none (the kernel's choice) otherwise.
pub(crate) fn sources_for(target: IpAddr, n: u64) -> Vec<IpAddr> {
    if target.is_loopback() {
        mqtt_fleet::loopback_sources(n.min(200) as u8)
    } else {
        Vec::new()
    }
}

/// Starts the in-process fleet: its devices connect before this returns (before the hub takes
/// any command), so a job starting at once finds them connected.
fn spawn_inproc(
    fleet: Fleet,
    clock: Clock,
    from_dev: mpsc::UnboundedSender<Vec<FromDevice>>,
    rx: mpsc::UnboundedReceiver<Vec<ToDevice>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut devices = InProcFleet::new(fleet, clock, from_dev);
    devices.connect_online();
    tokio::spawn(devices.run(rx, stop))
}
