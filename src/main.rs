//! The `fleetsim` binary: parse the command line, run, print errors for people, exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use fleetsim::cli::{Cli, Command};
use fleetsim::hub::mqtt::Listen;
use fleetsim::scenario::runner::devices::{self, FleetOnly, MqttOptions};
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
            no_tui: _,
            dry_run,
            mqtt,
            mqtts,
            external_fleet,
            state_dir,
        } => {
            let s = scenario::load(&scenario)?;
            if dry_run {
                print!("{}", inspect::dry_run(&s)?);
                return Ok(ExitCode::SUCCESS);
            }
            let opts = RunOptions {
                seed,
                out,
                progress: Progress::Lines,
                mqtt: MqttOptions {
                    listen: Listen {
                        plain: mqtt,
                        tls: mqtts,
                    },
                    state_dir,
                    external_fleet,
                },
            };
            let _ = std::io::stderr().is_terminal();
            let outcome =
                with_runtime(|shutdown| async move { runner::run(&s, &opts, shutdown).await })?;
            print!("{}", runner::final_table(&outcome));
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices {
            scenario,
            hub,
            tls,
            ca,
            shard,
            state_dir,
            sources,
            seed,
            ramp,
            stop_after,
        } => {
            let s = scenario::load(&scenario)?;
            let opts = FleetOnly {
                hub,
                tls,
                ca,
                shard,
                state_dir,
                sources,
                seed,
                ramp,
                stop_after,
            };
            with_runtime(|shutdown| async move { devices::run_fleet(&s, &opts, shutdown).await })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `work` on a multi-threaded runtime with a shutdown token that Ctrl-C fires.
fn with_runtime<T, F, Fut>(work: F) -> anyhow::Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        work(shutdown).await
    })
}
