//! The `fleetsim` binary: parse the command line, run, print errors for people, exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use fleetsim::cli::{Cli, Command, Format, MqttArgs};
use fleetsim::hub::mqtt::Listen;
use fleetsim::hub::server::{self, ConnectionStringOptions, HubOptions};
use fleetsim::hub::state::StateDir;
use fleetsim::metrics::merge;
use fleetsim::scenario::runner::devices::{self, MqttOptions};
use fleetsim::scenario::runner::{self, Progress, RunOptions};
use fleetsim::scenario::{self, identities, inspect};
use fleetsim::shard::Shard;
use fleetsim::verdict::thresholds::Thresholds;
use fleetsim::verdict::{self, compare, markdown, Exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // `fleetsim query ... | head`: the reader has what it wanted.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetsim: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `e` is a write to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
            if out.is_terminal() {
                write!(out, "{}", inspect::table(&rows))?;
            } else {
                for row in rows {
                    writeln!(out, "{row}")?;
                }
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
            mqtt,
            state_dir,
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
            let progress = if no_tui || !std::io::stdout().is_terminal() {
                Progress::Lines
            } else {
                Progress::Dashboard { fps }
            };
            let opts = RunOptions {
                seed,
                out,
                progress,
                mqtt: mqtt_options(mqtt),
                state_dir,
                shard,
                scenario_text: Some(std::fs::read_to_string(&scenario)?),
            };
            let outcome = runtime()?
                .block_on(async { runner::run(&s, &opts, shutdown_on_signals()).await })?;
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
        Command::Hub {
            scenario,
            http,
            https,
            hostnames,
            state_dir,
            cert,
            key,
            no_jobs,
            mqtt,
            tui,
            fps,
        } => {
            let opts = HubOptions {
                scenario,
                http: http.0,
                https: https.0,
                hostnames,
                state_dir,
                cert: cert.zip(key),
                no_jobs,
                mqtt: mqtt_options(mqtt),
                dashboard_fps: (tui && std::io::stdout().is_terminal()).then_some(fps),
            };
            runtime()?.block_on(async {
                server::run(&opts, shutdown_on_signals(), |l| {
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices { scenario, fleet } => {
            let s = scenario::load(&scenario)?;
            runtime()?
                .block_on(async { devices::run_fleet(&s, &fleet, shutdown_on_signals()).await })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            scenario,
            state_dir,
            format,
            out,
        } => {
            let s = scenario::load(&scenario)?;
            let state = StateDir::open(&state_dir)
                .with_context(|| format!("cannot use state directory {}", state_dir.display()))?;
            let authority = state.authority(Vec::new())?;
            let n = match &out {
                Some(path) => {
                    let file = private_file(path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    identities::export(&s, &authority, format, &mut w)
                        .with_context(|| format!("cannot write {}", path.display()))?
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    identities::export(&s, &authority, format, &mut w)?
                }
            };
            if let Some(path) = &out {
                eprintln!(
                    "fleetsim: wrote {n} device identities to {}",
                    path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ConnectionString {
            state_dir,
            device,
            policy,
            host,
            sas_token,
        } => {
            let text = server::connection_string(&ConnectionStringOptions {
                state_dir,
                device,
                policy,
                host,
                sas_token_ttl: sas_token,
            })?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Creates (or truncates) `path`, readable by its owner only on Unix: it holds keys.
fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::create(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

fn mqtt_options(args: MqttArgs) -> MqttOptions {
    MqttOptions {
        listen: Listen {
            plain: args.mqtt,
            tls: args.mqtts,
        },
        external_fleet: args.external_fleet,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A token cancelled by Ctrl-C or SIGTERM. Call inside the runtime.
fn shutdown_on_signals() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    on_signal.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    shutdown
}
