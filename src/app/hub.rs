//! `fleetsim hub`: the emulated hub as a long-running server. Opens the state directory (keys,
//! TLS material, and the store that keeps registry, twins and jobs unless `--in-memory`), starts the engine (with a scenario's in-process fleet and jobs, if given),
//! serves the REST API over HTTP and/or HTTPS, and stops cleanly when told to.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, ClockMode};
use crate::hub::api::{self, Api};
use crate::hub::auth::Authority;
use crate::hub::state::StateDir;
use crate::hub::store::Store;
use crate::sas::generate_token;
use crate::scenario::format::{Dur, HubSpec};
use crate::scenario::{self, Scenario};
use crate::shard::Shard;
use crate::tls;
use crate::tui::{self, Dashboard};
use crate::verdict::Exit;

use super::faults::FaultTimeline;
use super::feeder::JobFeeder;
use super::rollouts::Rollouts;
use super::wiring::{self, MqttOptions, Security};

/// Where the last `fleetsim hub` said it can be reached, for `fleetsim connection-string`.
pub(crate) const ENDPOINT_FILE: &str = "endpoint.json";

/// What `fleetsim hub` was asked to do.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// A scenario whose fleet (and jobs) the hub hosts.
    pub scenario: Option<PathBuf>,
    /// Plain HTTP address.
    pub(crate) http: Option<SocketAddr>,
    /// HTTPS address.
    pub(crate) https: Option<SocketAddr>,
    /// Extra host names (the first one goes into connection strings).
    pub(crate) hostnames: Vec<String>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The user's own certificate and key, instead of the generated ones.
    pub(crate) cert: Option<(PathBuf, PathBuf)>,
    /// Host the scenario's fleet but do not create its jobs.
    pub(crate) no_jobs: bool,
    /// Keep registry, twins and jobs in memory only, not in the state directory's store.
    pub(crate) in_memory: bool,
    /// Show the live dashboard at this many frames per second (when stdout is a terminal).
    pub(crate) dashboard_fps: Option<u32>,
    /// The MQTT device endpoint (and whether the scenario's fleet runs elsewhere).
    pub mqtt: MqttOptions,
}

/// Where a started hub listens.
#[derive(Debug, Clone)]
pub(crate) struct Listening {
    /// Plain HTTP.
    pub(crate) http: Option<SocketAddr>,
    /// HTTPS.
    pub(crate) https: Option<SocketAddr>,
    /// The CA clients should trust (None with the user's own certificate).
    pub ca: Option<PathBuf>,
    /// `HostName=...;SharedAccessKeyName=iothubowner;SharedAccessKey=...`.
    pub connection_string: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    host_name: String,
}

/// The `HostName` connection strings carry: the host, with the HTTPS port unless it is 443
/// (the Node service SDK ignores ports; Python follows them).
fn connection_host(host: &str, https: Option<SocketAddr>) -> String {
    match https {
        Some(a) if a.port() != 443 => format!("{host}:{}", a.port()),
        _ => host.to_owned(),
    }
}

/// The hub's trusted names: localhost, 127.0.0.1 and the user's.
fn names(extra: &[String]) -> Vec<String> {
    let mut names = extra.to_vec();
    for n in wiring::HOST_NAMES {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            names.push(n.to_owned());
        }
    }
    names
}

/// An empty scenario: a hub with no fleet and no jobs.
fn empty_scenario() -> Scenario {
    Scenario {
        name: "hub".into(),
        seed: 0,
        duration: Dur::ZERO,
        clock: ClockMode::Real,
        hub: HubSpec::default(),
        cohorts: Vec::new(),
        jobs: Vec::new(),
        rollouts: Vec::new(),
        faults: Vec::new(),
        threshold_table: Default::default(),
        thresholds: Default::default(),
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        let hint = if addr.port() < 1024 {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        } else {
            ""
        };
        format!("cannot listen for {what} on {addr}{hint}")
    })
}

/// `fleetsim hub`: serves until Ctrl-C or SIGTERM, after printing where it listens, the CA to
/// trust and the iothubowner connection string.
pub(crate) fn command(opts: &HubOptions) -> anyhow::Result<Exit> {
    // The dashboard only on a terminal.
    let opts = HubOptions {
        dashboard_fps: opts
            .dashboard_fps
            .filter(|_| std::io::stdout().is_terminal()),
        ..opts.clone()
    };
    super::runtime()?.block_on(async {
        run(&opts, super::shutdown_on_signals(), |l| {
            if let Some(a) = l.http {
                println!("fleetsim hub: HTTP  on http://{a}");
            }
            if let Some(a) = l.https {
                println!("fleetsim hub: HTTPS on https://{a}");
            }
            if let Some(ca) = &l.ca {
                println!("fleetsim hub: CA certificate {}", ca.display());
            }
            println!("fleetsim hub: connection string {}", l.connection_string);
            let _ = std::io::stdout().flush();
        })
        .await
    })?;
    eprintln!("fleetsim hub: stopped");
    Ok(Exit::Pass)
}

/// Runs the hub until `shutdown`; calls `ready` once it listens.
pub(crate) async fn run(
    opts: &HubOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    let scenario = match &opts.scenario {
        Some(path) => scenario::load(path)?,
        None => empty_scenario(),
    };
    if scenario.clock == ClockMode::Virtual {
        anyhow::bail!(
            "{}: clock = \"virtual\" cannot be served: `fleetsim hub` answers real sockets in real \
             time; run the scenario with `fleetsim run` for virtual time, or set clock = \"real\"",
            opts.scenario.as_deref().unwrap_or(Path::new("scenario")).display()
        );
    }
    let state = StateDir::open(&opts.state_dir)
        .with_context(|| format!("cannot use state directory {}", opts.state_dir.display()))?;
    let store = match opts.in_memory {
        true => None,
        false => Some(Store::open(&opts.state_dir).context("cannot open the hub's store")?),
    };
    // A hub with a store counts time from its first start: every time it saved keeps its
    // meaning (a scheduled job's start, a job's maximum execution time).
    let clock = match store.as_ref().and_then(Store::origin) {
        Some(origin) => Clock::resume(origin),
        None => Clock::start(),
    };
    if let Some(store) = &store {
        let (devices, jobs) = store.held();
        eprintln!(
            "fleetsim hub: state in {} ({devices} devices, {jobs} jobs kept)",
            store.path().display()
        );
    }
    let names = names(&opts.hostnames);
    let auth = Arc::new(state.authority(names.clone())?);
    let http = match opts.http {
        Some(a) => Some(bind(a, "HTTP").await?),
        None => None,
    };
    let https = match opts.https {
        Some(a) => Some(bind(a, "HTTPS").await?),
        None => None,
    };
    let material = state.tls(
        opts.cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        &names,
        clock.wall_at(clock.now_us()),
    )?;
    let acceptor = tls::acceptor(&material)?;

    let limits = wiring::limits(&scenario);
    let security = wiring::serves_mqtt(&scenario, &opts.mqtt).then(|| Security {
        auth: auth.clone(),
        tls: Some(acceptor.clone()),
        ca: material.ca_path.clone(),
    });
    let mut running = wiring::start_keeping(
        &scenario,
        scenario.seed,
        Shard::ALL,
        clock.clone(),
        limits,
        &opts.mqtt,
        security,
        store,
        false,
    )
    .await?;
    let api = Api::new(
        running.hub.clone(),
        auth.clone(),
        state.clone(),
        clock.clone(),
        running.limiter.clone(),
        running.view.clone(),
    );
    let app = api::router(api);

    let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
    let host = connection_host(auth.hostname(), https_addr);
    write_endpoint(&state, &host)?;
    let listening = Listening {
        http: http.as_ref().and_then(|l| l.local_addr().ok()),
        https: https_addr,
        ca: material.ca_path.clone(),
        connection_string: auth
            .service_connection_string(&host, "iothubowner")
            .unwrap_or_default(),
    };
    ready(&listening);
    // The dashboard stops the hub when the user quits it, and closes when the hub stops.
    let dashboard = opts.dashboard_fps.map(|fps| {
        let header = tui::Header {
            scenario: scenario.name.clone(),
            seed: Some(scenario.seed),
            duration_us: None,
            transport: "hub",
            virtual_time: None,
        };
        Dashboard::spawn(
            running.view.clone(),
            running.hub.clone(),
            header,
            shutdown.clone(),
            fps,
        )
    });

    let mut servers = tokio::task::JoinSet::new();
    if let Some(l) = http {
        servers.spawn(api::serve(l, None, app.clone(), shutdown.clone()));
    }
    if let Some(l) = https {
        servers.spawn(api::serve(l, Some(acceptor), app, shutdown.clone()));
    }
    if !opts.no_jobs {
        let mut feeder = JobFeeder::new(&scenario);
        let plans = scenario::build::rollout_plans(&scenario, scenario.seed);
        let tier_per_minute = limits.device_ops_per_s().map(|per_s| per_s * 60.0);
        let mut rollouts = Rollouts::new(plans, 0, tier_per_minute);
        running.begin_faults(0);
        let mut faults = FaultTimeline::new(&scenario, 0);
        let hub = running.hub.clone();
        let stop = shutdown.clone();
        let mut view = running.view.clone();
        servers.spawn(async move {
            while feeder.pending() || rollouts.pending() || faults.next_at().is_some() {
                let current = view.borrow_and_update().clone();
                let now = clock.now_us();
                for (job, why) in feeder.create_due(&hub, &clock, now, &current).await {
                    eprintln!("fleetsim: job '{job}' refused: {why}");
                }
                for line in rollouts.advance(&hub, &clock, now, &current).await {
                    eprintln!("fleetsim: {line}");
                }
                for line in faults.advance(&hub, now).await {
                    eprintln!("fleetsim: {line}");
                }
                let next = [feeder.next_at(), rollouts.next_at(), faults.next_at()]
                    .into_iter()
                    .flatten()
                    .min();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    // Jobs with `after` wait for a view that shows their predecessor ended.
                    changed = view.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(clock.instant_at(next.unwrap_or(now))),
                        if next.is_some() => {}
                }
            }
        });
    }
    // A dead engine would leave servers answering 403 "shutting down" to every call: stop
    // them, and the process, with the reason instead.
    let died = tokio::select! {
        _ = shutdown.cancelled() => None,
        died = running.engine_died() => Some(died),
    };
    shutdown.cancel();
    while servers.join_next().await.is_some() {}
    let stopped = running.stop().await;
    if let Some(d) = dashboard {
        let message = match (&died, &stopped) {
            (Some(died), _) => format!("error: {died}"),
            (None, Err(e)) => format!("error: {e:#}"),
            (None, Ok(_)) => "the hub has stopped".to_owned(),
        };
        d.finish(message).await?;
    }
    stopped?;
    Ok(())
}

fn write_endpoint(state: &StateDir, host: &str) -> anyhow::Result<()> {
    let path = state.path().join(ENDPOINT_FILE);
    let text = serde_json::to_string(&Endpoint {
        host_name: host.to_owned(),
    })?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// What `fleetsim connection-string` prints.
#[derive(Debug, Clone)]
pub struct ConnectionStringOptions {
    /// The state directory.
    pub state_dir: PathBuf,
    /// A device's connection string instead of a policy's.
    pub(crate) device: Option<String>,
    /// The policy (default iothubowner).
    pub(crate) policy: String,
    /// The host name (default: what the last `fleetsim hub` printed).
    pub(crate) host: Option<String>,
    /// Print a SAS token valid this many seconds instead of a connection string.
    pub(crate) sas_token_ttl: Option<u64>,
}

/// The connection string (or SAS token) asked for, read from an existing state directory.
pub(crate) fn connection_string(opts: &ConnectionStringOptions) -> anyhow::Result<String> {
    if !opts.state_dir.join(crate::hub::state::KEYS_FILE).exists() {
        anyhow::bail!(
            "{} has no keys yet; start `fleetsim hub --state-dir {}` once first",
            opts.state_dir.display(),
            opts.state_dir.display()
        );
    }
    let state = StateDir::open(&opts.state_dir)?;
    let host = match &opts.host {
        Some(h) => h.clone(),
        None => read_endpoint(state.path()).unwrap_or_else(|| "localhost".into()),
    };
    let auth: Authority = state.authority(names(&[]))?;
    if let Some(ttl) = opts.sas_token_ttl {
        let expiry = (Clock::start().wall_at(0).unix_timestamp().max(0) as u64) + ttl;
        let bare = host.split(':').next().unwrap_or(&host);
        let token = match &opts.device {
            Some(d) => generate_token(
                &format!("{bare}/devices/{d}"),
                &auth.device_keys(d).primary_key,
                None,
                expiry,
            ),
            None => {
                let p = policy(&auth, &opts.policy)?;
                generate_token(bare, &p.primary_key, Some(&p.key_name), expiry)
            }
        };
        return token.context("the key in the state directory is not base64");
    }
    Ok(match &opts.device {
        Some(d) => auth.device_connection_string(&host, d),
        None => {
            policy(&auth, &opts.policy)?;
            auth.service_connection_string(&host, &opts.policy)
                .unwrap_or_default()
        }
    })
}

fn policy<'a>(auth: &'a Authority, name: &str) -> anyhow::Result<&'a crate::hub::auth::Policy> {
    auth.policy(name).with_context(|| {
        let known: Vec<&str> = auth
            .policies()
            .iter()
            .map(|p| p.key_name.as_str())
            .collect();
        format!("no policy '{name}'; the hub has {}", known.join(", "))
    })
}

fn read_endpoint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(ENDPOINT_FILE)).ok()?;
    serde_json::from_str::<Endpoint>(&text)
        .ok()
        .map(|e| e.host_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_host_keeps_non_default_ports() {
        let a: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(connection_host("localhost", Some(a)), "localhost");
        assert_eq!(connection_host("localhost", Some(b)), "localhost:8443");
        assert_eq!(
            names(&["Hub.Test".into()]),
            ["Hub.Test", "localhost", "127.0.0.1"]
        );
    }

    /// Issue 16: a hub whose engine dies stops serving and returns [`wiring::EngineDied`] with
    /// the reason, instead of answering every call with 403 "the hub is shutting down". The
    /// job with [`crate::hub::engine::TEST_PANIC_JOB_ID`] makes a test build's engine panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_whose_engine_dies_stops_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("fleetsim-hub-dies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scenario = dir.join("dies.toml");
        std::fs::write(
            &scenario,
            format!(
                "name = \"dies\"\nduration = \"1h\"\n[[cohort]]\nname = \"a\"\ncount = 2\n\
                 id_prefix = \"d-\"\n[[job]]\nid = \"{}\"\ntype = \"scheduleDeviceMethod\"\n\
                 start = \"+1s\"\nquery = \"*\"\nmethod = {{ name = \"ping\" }}\n",
                crate::hub::engine::TEST_PANIC_JOB_ID
            ),
        )
        .unwrap();
        let opts = HubOptions {
            scenario: Some(scenario),
            http: Some("127.0.0.1:0".parse().unwrap()),
            https: None,
            hostnames: Vec::new(),
            state_dir: dir.clone(),
            cert: None,
            no_jobs: false,
            in_memory: true,
            dashboard_fps: None,
            mqtt: Default::default(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let hub = tokio::spawn(async move {
            run(&opts, CancellationToken::new(), |l| {
                let _ = tx.send(l.http);
            })
            .await
        });
        let addr = rx.await.unwrap().unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), hub)
            .await
            .expect("the hub went on serving with a dead engine")
            .unwrap();
        let error = ended.unwrap_err();
        let died = error.downcast_ref::<wiring::EngineDied>();
        assert!(
            matches!(died, Some(wiring::EngineDied::Crashed(why)) if why.contains("asks a test build to panic")),
            "{error:#}"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the REST API still listens"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
