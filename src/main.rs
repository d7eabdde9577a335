//! The `fleetsim` binary: parse the command line, run, print errors for people, exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use fleetsim::cli::{Cli, Command};
use fleetsim::scenario::runner::{self, Progress, RunOptions};
use fleetsim::scenario::{self, inspect};

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
            no_tui,
            fps,
            dry_run,
        } => {
            let s = scenario::load(&scenario)?;
            if dry_run {
                print!("{}", inspect::dry_run(&s)?);
                return Ok(ExitCode::SUCCESS);
            }
            let progress = if no_tui || !std::io::stdout().is_terminal() {
                Progress::Lines
            } else {
                Progress::Dashboard { fps }
            };
            let opts = RunOptions {
                seed,
                out,
                progress,
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
            Ok(ExitCode::SUCCESS)
        }
    }
}
