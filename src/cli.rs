//! The command line: `fleetsim run | validate | query | hub | devices | keys |
//! connection-string | compare | merge`. Every clap type lives here, with its conversion into
//! the application layer's [`app::Command`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::commands::{CompareFormat, CompareOptions, KeysOptions};
use crate::app::devices::FleetOptions;
use crate::app::hub::{ConnectionStringOptions, HubOptions};
use crate::app::run::{Progress, RunCommand, RunOptions};
use crate::app::sweep::SweepOptions;
use crate::app::wiring::MqttOptions;
use crate::app::{self};
use crate::clock::ClockMode;
use crate::fleet::credentials::PolicyKey;
use crate::hub::mqtt::Listen as MqttListen;
use crate::scenario::identities::KeyFormat;
use crate::shard::Shard;
use crate::verdict::compare::parse_tolerance;

/// The exit codes of `fleetsim run`, as `--help` shows them (a macro, for `concat!`).
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 the run completed and every threshold held (and nothing regressed);\n  1 an error (bad scenario, I/O); 2 a threshold was broken; 3 a figure regressed against\n  the baseline beyond the tolerance; 4 an invalid run: the simulator itself was saturated\n  (engine-lag p99 above engine_lag_limit, 1s by default), so its figures say nothing;\n  5 the hub's job engine died (a fleetsim bug; the error says why, no results are written)."
    };
}

/// fleetsim: schedule Azure IoT Hub jobs against a simulated fleet and measure them.
#[derive(Debug, Parser)]
#[command(name = "fleetsim", version, about, long_about = None, after_help = exit_codes!())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a scenario: build the hub and fleet, schedule its jobs, write results.
    #[command(
        after_help = concat!("Examples:\n  fleetsim run scenarios/quickstart.toml\n  fleetsim run scenarios/million.toml --seed 3 --out /tmp/million\n  fleetsim run scenarios/rollout-100k.toml --dry-run\n  fleetsim run scenarios/quickstart.toml --baseline results/quickstart/main --tolerance 5%\n  fleetsim run scenarios/million.toml --shard 0/4 --out /tmp/shard-0\n  fleetsim run scenarios/quickstart.toml --no-tui\n\nKeys in the dashboard: q quit, ↑/↓ select a job, Tab latency measure, +/- window, c cancel job, p freeze, ? help.\n\nWith no --shard, JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job) and FLEETSIM_SHARDS\ngive it. Results include junit.xml and summary.md.\n\n", exit_codes!())
    )]
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// The result directory (default results/<scenario>/<UTC timestamp>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Plain progress lines instead of the dashboard (the default when stdout is not a
        /// terminal).
        #[arg(long)]
        no_tui: bool,
        /// Dashboard frames per second.
        #[arg(long, default_value_t = crate::tui::DEFAULT_FPS, value_parser = clap::value_parser!(u32).range(1..=60))]
        fps: u32,
        /// Print how many devices each job would target and the first ids; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// The MQTT device endpoint.
        #[command(flatten)]
        mqtt: MqttArgs,
        /// Keep the hub's registry, twins and jobs in DIR/hub.db, with its keys and TLS
        /// material: a run stopped (a crash, Ctrl-C) goes on when started again with the same
        /// DIR. Without it the hub lives in memory and keys go to .fleetsim.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Play only the i-th of n slices of the fleet: devices whose index (in cohort order)
        /// modulo n is i. Merge the shards' results with `fleetsim merge`.
        #[arg(long, value_name = "i/n")]
        shard: Option<Shard>,
        /// Compare the run with this earlier result directory; a regression exits with 3.
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// How much worse than the baseline a figure may be (relative), such as 10%.
        #[arg(long, default_value = "10%", value_parser = parse_tolerance)]
        tolerance: f64,
        /// Real time, or virtual time: a simulated clock that jumps to the next event whenever
        /// nothing is runnable (in-process fleets only). Overrides the scenario's `clock`.
        #[arg(long, value_enum, value_name = "real|virtual")]
        clock: Option<ClockArg>,
        /// In virtual time, run at N times real time (e.g. 600: ten simulated minutes a second)
        /// instead of as fast as the machine allows.
        #[arg(long, value_name = "N", value_parser = parse_speed)]
        speed: Option<f64>,
    },
    /// Compare a run with a baseline run: per histogram percentile and per job.
    #[command(after_help = concat!("Examples:\n  fleetsim compare results/quickstart/main results/quickstart/20250102T030405Z\n  fleetsim compare base run --tolerance 5% --format md >> \"$GITHUB_STEP_SUMMARY\"\n\nPercentiles come from the full histograms in histograms.hlog. A latency change under 1 ms\nis never a regression.\n\n", "Exit codes: 0 no figure is worse than the tolerance; 1 an error; 3 a regression."))]
    Compare {
        /// The baseline result directory.
        baseline: PathBuf,
        /// The result directory to judge.
        run: PathBuf,
        /// How much worse than the baseline a figure may be (relative), such as 10%.
        #[arg(long, default_value = "10%", value_parser = parse_tolerance)]
        tolerance: f64,
        /// Output: a table (coloured on a terminal), Markdown or JSON.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Merge the result directories of a sharded run exactly and judge the whole.
    #[command(after_help = concat!("Example:\n  fleetsim merge /tmp/shard-0 /tmp/shard-1 /tmp/shard-2 /tmp/shard-3 --out /tmp/all\n\nHistograms are added bucket for bucket from the interval logs; every figure and threshold\nis recomputed. Directories from different scenarios, or a shard missing or given twice,\nare refused.\n\n", "Exit codes: 0 every threshold held; 1 an error; 2 a threshold was broken; 4 an invalid run."))]
    Merge {
        /// The shards' result directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged results go.
        #[arg(long)]
        out: PathBuf,
    },
    /// Put one or more runs on one self-contained HTML page: their percentile spectra overlaid,
    /// their jobs, rollouts and throughput side by side, changes against the first highlighted.
    #[command(
        after_help = "Examples:\n  fleetsim report results/rollout-100k/20250102T030405Z\n  fleetsim report results/s1-million/base results/s1-million/next --out compare.html\n\nEvery run also gets its own report.html when it ends. A directory without summary.json is\nrefused. Exit codes: 0 written; 1 an error."
    )]
    Report {
        /// Result directories; the first is the reference the others are compared with.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The page to write (default report.html in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a scenario for every combination of values set at paths into it (capacity planning).
    #[command(
        after_help = "Examples:\n  fleetsim sweep scenarios/s1-million.toml --set hub.tier=S2,S3 --set hub.units=1,2,4,8 \\\n    --target \"rollout.fw-2-1.makespan < 8h\"\n  fleetsim sweep s.toml --set cohort.fleet.methods.reboot.error_rate=0,0.01,0.05\n\nKeys: hub.tier, hub.units, cohort.<name>.count, cohort.<name>.methods.<m>.error_rate,\nrollout.<id>.rate.base_per_minute, job.<id>.start, duration, ... (any key of the scenario;\n[[cohort]], [[rollout]] and [[job]] are named by name or id). Every combination is checked\nbefore anything runs. Writes sweep.csv, sweep.json, report.html and one result directory per\ncombination; Ctrl-C keeps the finished ones.\nExit codes: 0 done (and the target met by some combination); 1 an error; 2 no combination\nmeets the target."
    )]
    Sweep {
        /// The scenario file.
        scenario: PathBuf,
        /// KEY=V1,V2,...: a path into the scenario and the values it takes (repeatable).
        #[arg(long = "set", required = true, value_parser = parse_set)]
        sets: Vec<(String, Vec<String>)>,
        /// Real or virtual time (default virtual, unless the scenario's transport is MQTT).
        #[arg(long, value_enum)]
        clock: Option<ClockArg>,
        /// The sweep's directory (default results/<scenario>/<UTC timestamp>-sweep/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A threshold the combinations are held to, in the [thresholds] grammar, such as
        /// "rollout.fw-2-1.makespan < 8h".
        #[arg(long)]
        target: Option<String>,
        /// Runs at once (default: the cores; 1 in real time).
        #[arg(long)]
        parallel: Option<usize>,
    },
    /// Run only a scenario's fleet, every device an MQTT client, against a hub elsewhere.
    #[command(
        after_help = "Examples:\n  fleetsim run s.toml --mqtt 127.0.0.1:1883 --external-fleet &\n  fleetsim devices --scenario s.toml --hub 127.0.0.1:1883 --for 5m\n  fleetsim devices --scenario s.toml --hub localhost --tls --ca .fleetsim/ca.pem --shard 0/2\n  fleetsim devices --scenario s.toml --keys keys.csv --hub myhub.azure-devices.net --tls\n  fleetsim devices --scenario s.toml --tls --connection-string \"HostName=myhub.azure-devices.net;SharedAccessKeyName=device;SharedAccessKey=...\"\n\nDevice keys: from --keys (see fleetsim keys), from --connection-string (a policy with\nDeviceConnect), or else derived from the hub's secret in --state-dir (share it with the hub).\nExit codes: 0 stopped cleanly; 1 an error (bad scenario, key file, limits too low, CA file)."
    )]
    Devices {
        /// The scenario file (its cohorts and their behaviour).
        #[arg(long)]
        scenario: PathBuf,
        /// Where the fleet connects and how its devices sign.
        #[command(flatten)]
        fleet: DevicesArgs,
    },
    /// Export a scenario's device identities with their keys: a key file for `fleetsim devices
    /// --keys`, or IoT Hub's bulk-import format to create the same fleet on a real hub.
    #[command(
        after_help = "Examples:\n  fleetsim keys --scenario s.toml --out keys.csv\n  fleetsim keys --scenario s.toml --format import --out devices.txt\n\nThe keys derive from the secret in --state-dir (made at first use): the same directory\nexports the same keys, and a fleetsim hub with it accepts them. The files hold secrets\n(written readable by their owner only). Upload devices.txt to a blob container and run an\nimport job (e.g. az iot hub device-identity import) to register the devices on IoT Hub.\nExit codes: 0 written; 1 an error (bad scenario, state directory, output file)."
    )]
    Keys {
        /// The scenario file.
        #[arg(long)]
        scenario: PathBuf,
        /// Where the key secret is kept.
        #[arg(long, default_value = ".fleetsim")]
        state_dir: PathBuf,
        /// csv: deviceId,primaryKey,secondaryKey; import: IoT Hub's bulk-import JSON lines.
        #[arg(long, value_enum, default_value_t = KeysFormat::Csv)]
        format: KeysFormat,
        /// The output file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a scenario file and report the first problem with its line.
    #[command(after_help = "Example:\n  fleetsim validate scenarios/quickstart.toml")]
    Validate {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Build a scenario's fleet (without running its jobs) and run a query on it.
    #[command(
        after_help = "Examples:\n  fleetsim query scenarios/quickstart.toml \"SELECT * FROM devices WHERE tags.building = '43'\"\n  fleetsim query scenarios/quickstart.toml \"SELECT properties.reported.firmware AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.firmware\""
    )]
    Query {
        /// The scenario file.
        scenario: PathBuf,
        /// The query.
        query: String,
    },
    /// Serve the IoT Hub service REST API (HTTP and HTTPS), optionally hosting a scenario's fleet.
    #[command(
        after_help = "Examples:\n  fleetsim hub\n  fleetsim hub --scenario scenarios/quickstart.toml --https 127.0.0.1:443\n  fleetsim hub --http 127.0.0.1:8080 --https off --state-dir /tmp/hub\n\nPrints where it listens, the CA to trust and the iothubowner connection string. Ctrl-C or SIGTERM stops it.\nThe registry, twins and jobs are kept in <state-dir>/hub.db: an answered write survives a crash,\nand a restarted hub continues its jobs (see README, \"A hub that keeps its state\"); --in-memory keeps none.\nExit codes: 0 stopped cleanly; 1 an error (bad scenario, port in use, state directory);\n5 the job engine died (a fleetsim bug), or the store could not commit (a full disk): the error says why,
and the hub stops rather than answer as if alive; started again, it resumes from what was committed."
    )]
    Hub {
        /// A scenario whose fleet the hub hosts in-process (its jobs and rollouts run too,
        /// unless --no-jobs).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Plain HTTP address, or `off`.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: Listen,
        /// HTTPS address, or `off`. The Node service SDK only reaches port 443.
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: Listen,
        /// Another host name for the certificate and connection strings (repeatable).
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Where keys, TLS material and the hub's store (`hub.db`: registry, twins, jobs) are
        /// kept. A restarted hub continues from its store.
        #[arg(long, default_value = ".fleetsim")]
        state_dir: PathBuf,
        /// Keep the registry, twins and jobs in memory only (lost when the hub stops); keys and
        /// TLS material stay in --state-dir.
        #[arg(long)]
        in_memory: bool,
        /// Your own server certificate (PEM chain) instead of the generated one; needs --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) of --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Host the scenario's fleet but do not create its jobs or play its rollouts.
        #[arg(long)]
        no_jobs: bool,
        /// Show the live dashboard (jobs created over REST or by the scenario); q stops the hub.
        #[arg(long)]
        tui: bool,
        /// Dashboard frames per second.
        #[arg(long, default_value_t = crate::tui::DEFAULT_FPS, value_parser = clap::value_parser!(u32).range(1..=60))]
        fps: u32,
        /// The MQTT device endpoint.
        #[command(flatten)]
        mqtt: MqttArgs,
    },
    /// Print a connection string (or SAS token) from a hub's state directory.
    #[command(
        after_help = "Examples:\n  fleetsim connection-string --state-dir .fleetsim\n  fleetsim connection-string --state-dir .fleetsim --device b43-f3-0001\n  fleetsim connection-string --state-dir .fleetsim --policy service --sas-token 3600"
    )]
    ConnectionString {
        /// The hub's state directory.
        #[arg(long, default_value = ".fleetsim")]
        state_dir: PathBuf,
        /// A device's connection string instead of a policy's.
        #[arg(long)]
        device: Option<String>,
        /// The shared access policy.
        #[arg(long, default_value = "iothubowner")]
        policy: String,
        /// HostName to put in it (default: what the last `fleetsim hub` printed).
        #[arg(long)]
        host: Option<String>,
        /// Print a SAS token valid for this many seconds instead.
        #[arg(long, value_name = "SECONDS")]
        sas_token: Option<u64>,
    },
}

/// A listening address, or `off` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        text.parse()
            .map(|a| Listen(Some(a)))
            .map_err(|_| format!("'{text}' is not an address such as 127.0.0.1:8080 (or 'off')"))
    }
}

/// The MQTT device endpoint's flags (`run` and `hub`).
#[derive(Debug, Clone, Args)]
pub(crate) struct MqttArgs {
    /// Serve MQTT over TCP here (e.g. 127.0.0.1:1883).
    #[arg(long, value_name = "ADDR")]
    pub mqtt: Option<SocketAddr>,
    /// Serve MQTT over TLS here (e.g. 0.0.0.0:8883), with the HTTPS certificate's CA.
    #[arg(long, value_name = "ADDR")]
    pub(crate) mqtts: Option<SocketAddr>,
    /// Start no fleet here: the scenario's devices connect over MQTT from elsewhere
    /// (`fleetsim devices`); `run` starts the jobs once they are connected.
    #[arg(long)]
    pub external_fleet: bool,
    /// Listen here (e.g. 127.0.0.1:18832) for an external fleet's delivery receipts
    /// (`fleetsim devices --receipts`): how delivery over MQTT is measured for a fleet in
    /// another process. Needs --mqtt or --mqtts.
    #[arg(long, value_name = "ADDR")]
    pub receipts: Option<SocketAddr>,
}

/// How `fleetsim compare` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A table; coloured when stdout is a terminal.
    Text,
    /// A Markdown table, for CI step summaries.
    Md,
    /// JSON.
    Json,
}

/// `fleetsim run --clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockArg {
    /// Real time.
    Real,
    /// Simulated time, as fast as the machine allows (or at `--speed`).
    Virtual,
}

impl From<ClockArg> for ClockMode {
    fn from(c: ClockArg) -> ClockMode {
        match c {
            ClockArg::Real => ClockMode::Real,
            ClockArg::Virtual => ClockMode::Virtual,
        }
    }
}

/// `--set KEY=V1,V2,...`.
fn parse_set(arg: &str) -> Result<(String, Vec<String>), String> {
    crate::app::sweep::parse_set(arg)
}

/// A speed-up factor: a positive number.
fn parse_speed(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "'{text}' is not a speed; expected a positive number such as 600 (ten simulated minutes a second)"
        )),
    }
}

/// What `fleetsim keys` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeysFormat {
    /// `deviceId,primaryKey,secondaryKey` with a header: the key file of `fleetsim devices --keys`.
    Csv,
    /// IoT Hub's bulk-import format (JSON lines), for an import job.
    Import,
}

/// `fleetsim devices`: where the fleet connects and how its devices sign.
#[derive(Debug, Clone, Args)]
pub(crate) struct DevicesArgs {
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
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub stop_after: Option<std::time::Duration>,
    /// Send the devices' delivery receipts to a fleetsim hub's side channel here, HOST:PORT
    /// (its --receipts): the hub then measures delivery (scheduled → received) and this
    /// fleet's clock offset. What goes to the hub over MQTT is unchanged.
    #[arg(long, value_name = "HOST:PORT")]
    pub receipts: Option<String>,
}

impl From<DevicesArgs> for FleetOptions {
    fn from(a: DevicesArgs) -> Self {
        FleetOptions {
            hub: a.hub,
            tls: a.tls,
            ca: a.ca,
            shard: a.shard,
            state_dir: a.state_dir,
            keys: a.keys,
            connection_string: a.connection_string,
            sources: a.sources,
            seed: a.seed,
            ramp: a.ramp,
            stop_after: a.stop_after,
            receipts: a.receipts,
        }
    }
}

impl From<MqttArgs> for MqttOptions {
    fn from(a: MqttArgs) -> Self {
        MqttOptions {
            listen: MqttListen {
                plain: a.mqtt,
                tls: a.mqtts,
            },
            external_fleet: a.external_fleet,
            receipts: a.receipts,
        }
    }
}

impl Cli {
    /// The command line as the application layer's command.
    pub fn into_command(self) -> app::Command {
        use app::Command as C;
        match self.command {
            Command::Run {
                scenario,
                seed,
                out,
                no_tui,
                fps,
                dry_run,
                mqtt,
                state_dir,
                shard,
                baseline,
                tolerance,
                clock,
                speed,
            } => C::Run(RunCommand {
                scenario,
                dry_run,
                shard,
                no_tui,
                fps,
                baseline: baseline.map(|b| (b, tolerance)),
                run: RunOptions {
                    seed,
                    out,
                    progress: Progress::Lines,
                    mqtt: mqtt.into(),
                    keep_state: state_dir.is_some(),
                    state_dir: state_dir
                        .unwrap_or_else(|| PathBuf::from(crate::app::DEFAULT_STATE_DIR)),
                    shard: Shard::ALL,
                    scenario_text: None,
                    clock: clock.map(ClockMode::from),
                    speed,
                },
            }),
            Command::Compare {
                baseline,
                run,
                tolerance,
                format,
            } => C::Compare(CompareOptions {
                baseline,
                run,
                tolerance,
                format: match format {
                    Format::Text => CompareFormat::Text,
                    Format::Md => CompareFormat::Markdown,
                    Format::Json => CompareFormat::Json,
                },
            }),
            Command::Merge { dirs, out } => C::Merge { dirs, out },
            Command::Report { dirs, out } => C::Report { dirs, out },
            Command::Sweep {
                scenario,
                sets,
                clock,
                out,
                target,
                parallel,
            } => C::Sweep(SweepOptions {
                scenario,
                sets,
                clock: clock.map(ClockMode::from),
                out,
                target,
                parallel,
            }),
            Command::Devices { scenario, fleet } => C::Devices {
                scenario,
                fleet: fleet.into(),
            },
            Command::Keys {
                scenario,
                state_dir,
                format,
                out,
            } => C::Keys(KeysOptions {
                scenario,
                state_dir,
                format: match format {
                    KeysFormat::Csv => KeyFormat::Csv,
                    KeysFormat::Import => KeyFormat::Import,
                },
                out,
            }),
            Command::Validate { scenario } => C::Validate { scenario },
            Command::Query { scenario, query } => C::Query { scenario, query },
            Command::Hub {
                scenario,
                http,
                https,
                hostnames,
                state_dir,
                cert,
                key,
                no_jobs,
                in_memory,
                tui,
                fps,
                mqtt,
            } => C::Hub(HubOptions {
                scenario,
                http: http.0,
                https: https.0,
                hostnames,
                state_dir,
                cert: cert.zip(key),
                no_jobs,
                in_memory,
                mqtt: mqtt.into(),
                dashboard_fps: tui.then_some(fps),
            }),
            Command::ConnectionString {
                state_dir,
                device,
                policy,
                host,
                sas_token,
            } => C::ConnectionString(ConnectionStringOptions {
                state_dir,
                device,
                policy,
                host,
                sas_token_ttl: sas_token,
            }),
        }
    }
}
