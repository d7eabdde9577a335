//! The command line: `fleetsim run | validate | query`.

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
        after_help = "Examples:\n  fleetsim run scenarios/quickstart.toml\n  fleetsim run scenarios/million.toml --seed 3 --out /tmp/million\n  fleetsim run scenarios/rollout-100k.toml --dry-run\n  fleetsim run scenarios/quickstart.toml --no-tui\n\nKeys in the dashboard: q quit, ↑/↓ select a job, Tab latency measure, +/- window, c cancel job, p freeze, ? help.\n\nExit codes: 0 the run completed; 1 an error (bad scenario, I/O)."
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
