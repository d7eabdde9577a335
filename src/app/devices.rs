//! `fleetsim devices`: only a scenario's fleet, every device a real MQTT client, against a hub
//! elsewhere (another fleetsim, or IoT Hub), with a status line a second.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::fleet::credentials::{Credentials, PolicyKey};
use crate::fleet::keyfile::KeyFile;
use crate::fleet::mqtt::{self as mqtt_fleet, preflight, FleetStatus, MqttFleetConfig};
use crate::fleet::receipts::{self, SideChannel};
use crate::hub::state::StateDir;
use crate::scenario::{self, build, Scenario};
use crate::shard::Shard;
use crate::verdict::Exit;

use super::wiring::{sources_for, KEEP_ALIVE_S, PER_SOURCE};

/// What `fleetsim devices` was asked to do: only the fleet, against a hub elsewhere.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The hub: HOST[:PORT] (port 8883 with TLS, else 1883); None: the HostName of
    /// `connection_string`.
    pub hub: Option<String>,
    /// Connect over TLS.
    pub tls: bool,
    /// The CA certificate to trust (None: the system's root certificates, and `ca.pem` in
    /// `state_dir` if it is there).
    pub ca: Option<PathBuf>,
    /// Play only the devices whose index is i modulo n.
    pub shard: Shard,
    /// The hub's state directory (device-key secret unless `keys` or `connection_string`; a
    /// fleetsim hub's CA).
    pub state_dir: PathBuf,
    /// Each device signs with its own key from this CSV (deviceId,primaryKey[,secondaryKey]).
    pub keys: Option<PathBuf>,
    /// Every device signs with this shared access policy (it needs DeviceConnect).
    pub connection_string: Option<PolicyKey>,
    /// Local 127.0.0.x source addresses to spread connections over (0: one per 5,000).
    pub sources: u64,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Overrides the scenario's ramp (connections per second).
    pub ramp: Option<u32>,
    /// Stop after this long; None: on Ctrl-C or SIGTERM.
    pub stop_after: Option<std::time::Duration>,
    /// A fleetsim hub's receipts side channel (HOST:PORT): where the devices' delivery
    /// receipts go; None: nowhere.
    pub receipts: Option<String>,
}

/// `fleetsim devices`: runs the fleet of the scenario at `path` until Ctrl-C, SIGTERM or
/// `stop_after`.
pub(crate) fn command(path: &Path, opts: &FleetOptions) -> anyhow::Result<Exit> {
    let s = scenario::load(path)?;
    super::runtime()?
        .block_on(async { run_fleet(&s, opts, super::shutdown_on_signals()).await })?;
    Ok(Exit::Pass)
}

/// Runs only the scenario's fleet over MQTT until `shutdown` (or `stop_after`), printing a
/// status line a second; answers the fleet's final counters.
pub async fn run_fleet(
    scenario: &Scenario,
    opts: &FleetOptions,
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
    let fleet = build::fleet(scenario, seed, Shard::ALL);
    // The scenario's device faults count from when this fleet has connected (as a run's jobs
    // and faults count from when its MQTT fleet has); the hub's own are the hub's to play.
    let faults = fleet.faults.clone();
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
    let side_channel = match &opts.receipts {
        None => None,
        Some(addr) => {
            let side = connect_receipts(addr, &host_name, &credentials, playing(), &clock).await?;
            eprintln!("fleetsim: delivery receipts go to the hub's side channel at {addr}");
            Some(side)
        }
    };
    let config = MqttFleetConfig {
        target,
        host_name,
        tls,
        ramp: opts.ramp.unwrap_or(scenario.hub.ramp),
        sources: source_addrs,
        keep_alive_s: KEEP_ALIVE_S,
        shard: opts.shard,
        credentials,
        receipts: side_channel.as_ref().map(|s| s.sink.clone()),
    };
    // The side channel ends when the fleet (every clone of its sink) has.
    let side_channel = side_channel.map(|s| {
        tokio::spawn(async move {
            if let Err(e) = s.run().await {
                eprintln!("fleetsim: {e}; deliveries are no longer reported");
            }
        })
    });
    let status = Arc::new(FleetStatus::default());
    let stop = shutdown.child_token();
    let rss_before = rss_bytes();
    let task = tokio::spawn(mqtt_fleet::start(
        clock.clone(),
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
                    faults.begin(now);
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
    if let Some(side) = side_channel {
        side.await.context("the receipts side channel failed")?;
    }
    eprintln!("fleetsim: {}", status.line());
    Ok(status)
}

/// Connects to the hub's receipts side channel at `addr` (HOST:PORT), signed in as the first
/// device of `playing` (with the token its MQTT CONNECT would carry).
async fn connect_receipts<'a>(
    addr: &str,
    host_name: &str,
    credentials: &Credentials,
    mut playing: impl Iterator<Item = &'a str>,
    clock: &Clock,
) -> anyhow::Result<SideChannel> {
    let target = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve --receipts {addr} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("--receipts {addr} resolves to no address"))?;
    let device = playing
        .next()
        .context("--receipts: this fleet plays no device to sign in with")?;
    let expiry = clock.wall_at(clock.now_us()).unix_timestamp().max(0) as u64 + 86_400;
    let token = credentials.password(host_name, device, expiry)?;
    Ok(receipts::connect(target, device.to_owned(), token, clock.clone()).await?)
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
