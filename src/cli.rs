//! The command line: `fleetsim run | devices | validate | query`.

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
        /// Serve the MQTT device endpoint over TCP here (e.g. 127.0.0.1:1883).
        #[arg(long, value_name = "ADDR")]
        mqtt: Option<SocketAddr>,
        /// Serve the MQTT device endpoint over TLS here (e.g. 0.0.0.0:8883).
        #[arg(long, value_name = "ADDR")]
        mqtts: Option<SocketAddr>,
        /// Run no fleet here: the scenario's devices connect over MQTT from elsewhere
        /// (`fleetsim devices`), and jobs start once they are connected.
        #[arg(long)]
        external_fleet: bool,
        /// Keys and TLS material.
        #[arg(long, default_value = ".fleetsim")]
        state_dir: PathBuf,
    },
    /// Run only a scenario's fleet, every device an MQTT client, against a hub elsewhere.
    #[command(
        after_help = "Examples:\n  fleetsim run scenarios/mqtt-15k.toml --mqtt 127.0.0.1:1883 --external-fleet &\n  fleetsim devices --scenario scenarios/mqtt-15k.toml --hub 127.0.0.1:1883\n  fleetsim devices --scenario s.toml --hub localhost --tls --ca .fleetsim/ca.pem --shard 0/2\n\nDevice keys derive from the hub's secret in --state-dir (shared with the hub)."
    )]
    Devices {
        /// The scenario file (its cohorts and behaviour).
        #[arg(long)]
        scenario: PathBuf,
        /// The hub: HOST[:PORT] (port 8883 with --tls, else 1883).
        #[arg(long)]
        hub: String,
        /// Connect over TLS.
        #[arg(long)]
        tls: bool,
        /// The CA certificate to trust (default: ca.pem in --state-dir).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Play only the devices whose index is i modulo n.
        #[arg(long, value_name = "i/n", value_parser = parse_shard, default_value = "0/1")]
        shard: (u32, u32),
        /// The hub's state directory (device-key secret, CA).
        #[arg(long, default_value = ".fleetsim")]
        state_dir: PathBuf,
        /// Local 127.0.0.x source addresses to spread connections over (0: one per 5,000).
        #[arg(long, default_value_t = 0)]
        sources: u64,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the scenario's ramp (connections per second).
        #[arg(long)]
        ramp: Option<u32>,
        /// Stop after this long (e.g. 90s, 10m); default: on Ctrl-C.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        stop_after: Option<std::time::Duration>,
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
}

fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("expected i/n with i < n (e.g. 0/4), got '{text}'");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::scenario::format::parse_duration(text)
}
