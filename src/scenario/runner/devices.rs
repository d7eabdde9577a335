//! The device side of a run: the in-process fleet, or the hub's MQTT endpoint with the MQTT
//! fleet (`[hub] transport = "mqtt"`), or the endpoint alone for a fleet in other processes
//! (`fleetsim devices`) and for SDK devices. Builds the engine's [`DeviceLink`] accordingly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::fleet::credentials::{Credentials, PolicyKey};
use crate::fleet::inproc::{InProcFleet, InProcLink};
use crate::fleet::keyfile::KeyFile;
use crate::fleet::mqtt::{self as mqtt_fleet, preflight, FleetStatus, MqttFleetConfig};
use crate::fleet::Fleet;
use crate::hub::auth::Authority;
use crate::hub::mqtt::{self, Endpoint, Listen, MqttLink, Sessions};
use crate::hub::state::StateDir;
use crate::hub::throttle::RateLimiter;
use crate::hub::Hub;
use crate::link::{DeviceLink, FromDevice, ToDevice};
use crate::scenario::format::Transport;
use crate::scenario::{build, Scenario};
use crate::shard::Shard;

/// Host names the hub answers to (SAS resources and the TLS certificate).
pub const HOST_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
/// MQTT keep-alive of fleet devices, seconds (the Python SDK's).
const KEEP_ALIVE_S: u16 = 60;
/// Outgoing connections per loopback source address the fleet aims for.
const PER_SOURCE: u64 = 5_000;

/// The MQTT side of a run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct MqttOptions {
    /// Where the endpoint listens (a scenario with `transport = "mqtt"` and no address listens
    /// on an ephemeral loopback port).
    pub listen: Listen,
    /// The scenario's devices run elsewhere (`fleetsim devices`): start no fleet here.
    pub external_fleet: bool,
}

/// Whether a run of `scenario` with `opts` serves MQTT.
pub fn serves_mqtt(scenario: &Scenario, opts: &MqttOptions) -> bool {
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

/// The engine's ends the device side connects to.
pub struct HubSide {
    /// The run's clock.
    pub clock: Clock,
    /// The engine's handle.
    pub hub: Hub,
    /// The engine's device channel.
    pub to_engine: mpsc::UnboundedSender<Vec<FromDevice>>,
    /// Stops the devices.
    pub stop: CancellationToken,
    /// The tier's allowances, shared with the service API: devices' twin reads and reported
    /// patches count against the same buckets.
    pub limiter: Arc<RateLimiter>,
}

/// What [`start`] set up (beside the engine's link).
pub struct DeviceSide {
    /// Devices expected to connect over MQTT before jobs start (0: do not wait).
    pub expect_connected: u64,
    /// The MQTT fleet's counters, when it runs here.
    pub fleet_status: Option<Arc<FleetStatus>>,
    fleet_task: Option<JoinHandle<()>>,
    endpoint: Option<mqtt::Running>,
}

impl DeviceSide {
    /// Where the MQTT endpoint listens: (TCP, TLS).
    pub fn mqtt_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.endpoint
            .as_ref()
            .map_or((None, None), |e| (e.plain, e.tls))
    }

    /// Waits for the fleet and the endpoint to stop (after the stop token fired).
    pub async fn join(self) -> anyhow::Result<()> {
        if let Some(t) = self.fleet_task {
            t.await.context("the fleet task failed")?;
        }
        if let Some(e) = self.endpoint {
            e.join().await;
        }
        Ok(())
    }
}

/// Starts the device side of `scenario`; answers the engine's link and the running parts.
pub async fn start(
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
    let fleet = Fleet::new(scenario, seed, shard);
    let mqtt_fleet = scenario.hub.transport == Transport::Mqtt;
    let mut listen = opts.listen.clone();
    if mqtt_fleet && !opts.external_fleet && listen.plain.is_none() && listen.tls.is_none() {
        listen.plain = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    if listen.plain.is_none() && listen.tls.is_none() {
        if opts.external_fleet {
            anyhow::bail!(
                "--external-fleet needs --mqtt or --mqtts: the devices must reach the hub somehow"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = spawn_inproc(fleet, clock, from_dev, rx, stop);
        let side = DeviceSide {
            expect_connected: 0,
            fleet_status: None,
            fleet_task: Some(task),
            endpoint: None,
        };
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
        clock,
        limiter,
    });
    let running = mqtt::start(&listen, security.tls.clone(), endpoint, stop.clone()).await?;
    for (scheme, addr) in [("mqtt", running.plain), ("mqtts", running.tls)] {
        if let Some(addr) = addr {
            eprintln!("fleetsim: MQTT device endpoint on {scheme}://{addr}");
        }
    }

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
        fleet_task,
        endpoint: Some(running),
    };
    Ok((Box::new(MqttLink::new(sessions, fallback)), side))
}

/// Loopback source addresses for a loopback target; none (the kernel's choice) otherwise.
pub fn sources_for(target: IpAddr, n: u64) -> Vec<IpAddr> {
    if target.is_loopback() {
        mqtt_fleet::loopback_sources(n.min(200) as u8)
    } else {
        Vec::new()
    }
}

/// `fleetsim devices`: only the fleet, against a hub elsewhere (its command-line options).
#[derive(Debug, Clone, clap::Args)]
pub struct FleetOnly {
    /// The hub: HOST[:PORT] (port 8883 with --tls, else 1883); default: the HostName of
    /// --connection-string.
    #[arg(long, required_unless_present = "connection_string")]
    pub hub: Option<String>,
    /// Connect over TLS.
    #[arg(long)]
    pub tls: bool,
    /// The CA certificate to trust (default: the system's root certificates, and ca.pem in
    /// --state-dir if it is there).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Play only the devices whose index is i modulo n.
    #[arg(long, value_name = "i/n", default_value = "0/1")]
    pub shard: Shard,
    /// The hub's state directory (device-key secret unless --keys or --connection-string;
    /// a fleetsim hub's CA).
    #[arg(long, default_value = ".fleetsim")]
    pub state_dir: PathBuf,
    /// Each device signs with its own key from this CSV (deviceId,primaryKey[,secondaryKey]),
    /// e.g. from `fleetsim keys`; a device of the fleet missing from it is an error.
    #[arg(long, value_name = "FILE", conflicts_with = "connection_string")]
    pub keys: Option<PathBuf>,
    /// Every device signs with this shared access policy (it needs DeviceConnect):
    /// "HostName=..;SharedAccessKeyName=..;SharedAccessKey=..".
    #[arg(long, value_name = "STRING")]
    pub connection_string: Option<PolicyKey>,
    /// Local 127.0.0.x source addresses to spread connections over (0: one per 5,000).
    #[arg(long, default_value_t = 0)]
    pub sources: u64,
    /// Overrides the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overrides the scenario's ramp (connections per second).
    #[arg(long)]
    pub ramp: Option<u32>,
    /// Stop after this long (e.g. 90s, 10m); default: on Ctrl-C or SIGTERM.
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub stop_after: Option<std::time::Duration>,
}

/// Runs only the scenario's fleet over MQTT until `shutdown` (or `stop_after`), printing a
/// status line a second; answers the fleet's final counters.
pub async fn run_fleet(
    scenario: &Scenario,
    opts: &FleetOnly,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<FleetStatus>> {
    let clock = Clock::start();
    let seed = opts.seed.unwrap_or(scenario.seed);
    let hub = match (&opts.hub, &opts.connection_string) {
        (Some(hub), _) => hub.clone(),
        (None, Some(policy)) => policy.host_name.clone(),
        (None, None) => anyhow::bail!(
            "give the hub with --hub HOST[:PORT], or --connection-string (its HostName is the hub)"
        ),
    };
    let default_port = if opts.tls { 8883 } else { 1883 };
    let (host, port) = match hub.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (
            h.to_owned(),
            p.parse()
                .with_context(|| format!("bad port in --hub {hub}"))?,
        ),
        _ => (hub.clone(), default_port),
    };
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve --hub {hub}"))?
        .next()
        .with_context(|| format!("--hub {hub} resolves to no address"))?;
    let host_name = opts
        .connection_string
        .as_ref()
        .map_or_else(|| host.clone(), |p| p.host_name.clone());
    let credentials = match (&opts.keys, &opts.connection_string) {
        (Some(path), _) => Credentials::Keys(Arc::new(KeyFile::load(path)?)),
        (None, Some(policy)) => Credentials::Policy(policy.clone()),
        (None, None) => {
            let state = StateDir::open(&opts.state_dir)?;
            Credentials::Hub(state.authority(vec![host_name.clone()])?.keyring())
        }
    };
    let tls = if opts.tls {
        Some(match &opts.ca {
            Some(ca) => mqtt_fleet::TlsClient::new(ca, &host)?,
            None => {
                let ca = opts.state_dir.join(crate::tls::CA_CERT);
                mqtt_fleet::TlsClient::system(ca.is_file().then_some(ca.as_path()), &host)?
            }
        })
    } else {
        None
    };
    let fleet = Fleet::new(scenario, seed, Shard::ALL);
    let ids: Vec<String> = build::device_ids(scenario).collect();
    let playing = || {
        fleet
            .devices
            .iter()
            .zip(&ids)
            .enumerate()
            .filter(|(idx, (d, _))| opts.shard.contains(*idx as u64) && !d.offline)
            .map(|(_, (_, id))| id.as_str())
    };
    credentials.check(playing())?;
    let mine = playing().count() as u64;
    let sources = match opts.sources {
        0 => mine.div_ceil(PER_SOURCE).max(1),
        k => k,
    };
    let source_addrs = sources_for(target.ip(), sources);
    let report = preflight::check(preflight::Need {
        sockets: mine,
        outgoing: mine,
        sources: source_addrs.len().max(1) as u64,
    })?;
    eprintln!("fleetsim: {report}");
    let config = MqttFleetConfig {
        target,
        host_name,
        tls,
        ramp: opts.ramp.unwrap_or(scenario.hub.ramp),
        sources: source_addrs,
        keep_alive_s: KEEP_ALIVE_S,
        shard: opts.shard,
        credentials,
    };
    let status = Arc::new(FleetStatus::default());
    let stop = shutdown.child_token();
    let rss_before = rss_bytes();
    let task = tokio::spawn(mqtt_fleet::start(
        clock,
        fleet,
        ids,
        config,
        status.clone(),
        stop.clone(),
    )?);
    let end = opts.stop_after.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let (mut ramped, mut next_line) = (false, 0);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let now = clock.now_us();
                if now >= next_line {
                    eprintln!("[{:>6.1}s] {}", now as f64 / 1e6, status.line());
                    next_line = now + 1_000_000;
                }
                let connected = status.connected.load(std::sync::atomic::Ordering::Relaxed);
                if !ramped && mine > 0 && connected >= mine {
                    ramped = true;
                    let secs = now as f64 / 1e6;
                    let rss = rss_bytes().saturating_sub(rss_before);
                    eprintln!(
                        "fleetsim: ramp done: {connected} connections in {secs:.2}s = {:.0} connections/s; fleet memory +{:.1} MB RSS = {:.2} KB per device",
                        connected as f64 / secs,
                        rss as f64 / 1e6,
                        rss as f64 / 1024.0 / connected as f64,
                    );
                }
                if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
                    break;
                }
            }
        }
    }
    stop.cancel();
    task.await.context("the fleet task failed")?;
    eprintln!("fleetsim: {}", status.line());
    Ok(status)
}

/// This process's resident set size (0 where /proc is missing).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
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
