//! The command line: `fleetsim run | validate | query | hub | connection-string`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// fleetsim: schedule Azure IoT Hub jobs against a simulated fleet and measure them.
#[derive(Debug, Parser)]
#[command(name = "fleetsim", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario: build the hub and fleet, schedule its jobs, write results.
    #[command(
        after_help = "Examples:\n  fleetsim run scenarios/quickstart.toml\n  fleetsim run scenarios/million.toml --seed 3 --out /tmp/million\n  fleetsim run scenarios/rollout-100k.toml --dry-run\n\nExit codes: 0 the run completed; 1 an error (bad scenario, I/O)."
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
        /// Plain progress lines instead of the dashboard.
        #[arg(long)]
        no_tui: bool,
        /// Print how many devices each job would target and the first ids; run nothing.
        #[arg(long)]
        dry_run: bool,
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
        after_help = "Examples:\n  fleetsim hub\n  fleetsim hub --scenario scenarios/quickstart.toml --https 127.0.0.1:443\n  fleetsim hub --http 127.0.0.1:8080 --https off --state-dir /tmp/hub\n\nPrints where it listens, the CA to trust and the iothubowner connection string. Ctrl-C or SIGTERM stops it.\nExit codes: 0 stopped cleanly; 1 an error (bad scenario, port in use, state directory)."
    )]
    Hub {
        /// A scenario whose fleet the hub hosts in-process (its jobs run too, unless --no-jobs).
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
        /// Where keys and TLS material are kept.
        #[arg(long, default_value = ".fleetsim")]
        state_dir: PathBuf,
        /// Your own server certificate (PEM chain) instead of the generated one; needs --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) of --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Host the scenario's fleet but do not create its jobs.
        #[arg(long)]
        no_jobs: bool,
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
pub struct Listen(pub Option<SocketAddr>);

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
