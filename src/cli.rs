//! The command line: `fleetsim run | validate | query | compare | merge`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::shard::Shard;
use crate::verdict::compare::parse_tolerance;

/// The exit codes of `fleetsim run`, as `--help` shows them (a macro, for `concat!`).
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 the run completed and every threshold held (and nothing regressed);\n  1 an error (bad scenario, I/O); 2 a threshold was broken; 3 a figure regressed against\n  the baseline beyond the tolerance; 4 an invalid run: the simulator itself was saturated\n  (engine-lag p99 above engine_lag_limit, 1s by default), so its figures say nothing."
    };
}

/// fleetsim: schedule Azure IoT Hub jobs against a simulated fleet and measure them.
#[derive(Debug, Parser)]
#[command(name = "fleetsim", version, about, long_about = None, after_help = exit_codes!())]
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
        after_help = concat!("Examples:\n  fleetsim run scenarios/quickstart.toml\n  fleetsim run scenarios/million.toml --seed 3 --out /tmp/million\n  fleetsim run scenarios/rollout-100k.toml --dry-run\n  fleetsim run scenarios/quickstart.toml --baseline results/quickstart/main --tolerance 5%\n  fleetsim run scenarios/million.toml --shard 0/4 --out /tmp/shard-0\n\nWith no --shard, JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job) and FLEETSIM_SHARDS\ngive it. Results include junit.xml and summary.md.\n\n", exit_codes!())
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

/// How `fleetsim compare` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table; coloured when stdout is a terminal.
    Text,
    /// A Markdown table, for CI step summaries.
    Md,
    /// JSON.
    Json,
}
