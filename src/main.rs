//! The `fleetsim` binary: parse the command line, run, print errors for people, exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use fleetsim::cli::{Cli, Command, Format};
use fleetsim::metrics::merge;
use fleetsim::scenario::runner::{self, Progress, RunOptions};
use fleetsim::scenario::{self, inspect};
use fleetsim::shard::Shard;
use fleetsim::verdict::thresholds::Thresholds;
use fleetsim::verdict::{self, compare, markdown, Exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fleetsim: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { scenario } => {
            let s = scenario::load(&scenario)?;
            let devices: u64 = s.cohorts.iter().map(|c| c.count).sum();
            println!(
                "{}: ok ({} cohorts, {devices} devices, {} jobs)",
                scenario.display(),
                s.cohorts.len(),
                s.jobs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { scenario, query } => {
            let s = scenario::load(&scenario)?;
            let rows = inspect::query(&s, &query)?;
            let mut out = std::io::stdout().lock();
            for row in rows {
                writeln!(out, "{row}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            scenario,
            seed,
            out,
            no_tui: _,
            dry_run,
            shard,
            baseline,
            tolerance,
        } => {
            let s = scenario::load(&scenario)?;
            let shard = Shard::resolve(shard)?;
            if dry_run {
                print!("{}", inspect::dry_run(&s)?);
                return Ok(ExitCode::SUCCESS);
            }
            let opts = RunOptions {
                seed,
                out,
                progress: Progress::Lines,
                shard,
                scenario_text: Some(std::fs::read_to_string(&scenario)?),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let outcome = rt.block_on(async {
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        on_signal.cancel();
                    }
                });
                runner::run(&s, &opts, shutdown).await
            })?;
            print!("{}", runner::final_table(&outcome));
            let baseline = baseline.as_deref().map(|b| (b, tolerance));
            let verdict = verdict::judge(&outcome.dir, &s.thresholds, baseline)?;
            if let Some(c) = &verdict.comparison {
                print!("{}", c.text(std::io::stdout().is_terminal()));
            }
            print!("{}", verdict.text());
            Ok(ExitCode::from(verdict.exit().code()))
        }
        Command::Compare {
            baseline,
            run,
            tolerance,
            format,
        } => {
            let c = compare::compare(&baseline, &run, tolerance)?;
            match format {
                Format::Text => print!("{}", c.text(std::io::stdout().is_terminal())),
                Format::Md => print!("{}", markdown::comparison(&c)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&c)?),
            }
            let exit = match c.regressions().next() {
                Some(_) => Exit::Regression,
                None => Exit::Pass,
            };
            Ok(ExitCode::from(exit.code()))
        }
        Command::Merge { dirs, out } => {
            merge::merge(&dirs, &out)?;
            let scenario_file = out.join("scenario.toml");
            let thresholds = match scenario_file.is_file() {
                true => scenario::load(&scenario_file)?.thresholds,
                false => Thresholds::default(),
            };
            let verdict = verdict::judge(&out, &thresholds, None)?;
            println!("merged {} shards into {}", dirs.len(), out.display());
            print!("{}", verdict.text());
            Ok(ExitCode::from(verdict.exit().code()))
        }
    }
}
