//! The application layer: what each command does, wired from the layers below. A run, a hub
//! process and a fleet-only process are built here from a scenario and the options the command
//! line gave ([`crate::cli`] turns its flags into a [`Command`]); progress lines, final tables
//! and the terminal are this layer's business, never a domain module's.

pub(crate) mod commands;
pub mod devices;
pub(crate) mod faults;
pub(crate) mod feeder;
pub(crate) mod hub;
pub(crate) mod report;
pub(crate) mod resume;
pub(crate) mod rollouts;
pub mod run;
pub mod sweep;
pub mod wiring;

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::verdict::Exit;

/// Where keys, TLS material and a hub's store go unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = ".fleetsim";

/// One command, with its options.
#[derive(Debug)]
pub enum Command {
    /// `fleetsim run`.
    Run(run::RunCommand),
    /// `fleetsim validate SCENARIO`.
    Validate {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// `fleetsim query SCENARIO QUERY`.
    Query {
        /// The scenario file.
        scenario: PathBuf,
        /// The IoT Hub query.
        query: String,
    },
    /// `fleetsim compare`.
    Compare(commands::CompareOptions),
    /// `fleetsim merge DIR... --out DIR`.
    Merge {
        /// The shards' result directories.
        dirs: Vec<PathBuf>,
        /// Where the merged results go.
        out: PathBuf,
    },
    /// `fleetsim report DIR... [--out FILE]`.
    Report {
        /// The result directories, the reference first.
        dirs: Vec<PathBuf>,
        /// The page to write (default `report.html`).
        out: Option<PathBuf>,
    },
    /// `fleetsim sweep`.
    Sweep(sweep::SweepOptions),
    /// `fleetsim hub`.
    Hub(hub::HubOptions),
    /// `fleetsim devices`.
    Devices {
        /// The scenario file (its cohorts and their behaviour).
        scenario: PathBuf,
        /// Where the fleet connects and how its devices sign.
        fleet: devices::FleetOptions,
    },
    /// `fleetsim keys`.
    Keys(commands::KeysOptions),
    /// `fleetsim connection-string`.
    ConnectionString(hub::ConnectionStringOptions),
}

/// Carries out `command`; answers how it ended (an error is exit code 1).
pub fn execute(command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Run(cmd) => run::command(cmd),
        Command::Validate { scenario } => commands::validate(&scenario),
        Command::Query { scenario, query } => commands::query(&scenario, &query),
        Command::Compare(opts) => commands::compare(&opts),
        Command::Merge { dirs, out } => commands::merge(&dirs, &out),
        Command::Report { dirs, out } => report::command(&dirs, out.as_deref()),
        Command::Sweep(opts) => sweep::command(&opts),
        Command::Hub(opts) => hub::command(&opts),
        Command::Devices { scenario, fleet } => devices::command(&scenario, &fleet),
        Command::Keys(opts) => commands::keys(&opts),
        Command::ConnectionString(opts) => {
            println!("{}", hub::connection_string(&opts)?);
            Ok(Exit::Pass)
        }
    }
}

/// The exit code of a command that failed: [`Exit::EngineDied`]'s when the hub's job engine
/// died ([`wiring::EngineDied`] anywhere in the chain), 1 for every other error.
pub fn error_exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|c| c.is::<wiring::EngineDied>()) {
        Exit::EngineDied.code()
    } else {
        1
    }
}

/// A multi-threaded tokio runtime with every driver.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM, watched from a thread with a small runtime of its
/// own (for a run whose runtime has no I/O driver); cancel the answered token to end the watch.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<CancellationToken> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    let done = CancellationToken::new();
    let end = done.clone();
    std::thread::spawn(move || {
        runtime.block_on(async {
            let signalled = shutdown_on_signals();
            tokio::select! {
                _ = signalled.cancelled() => shutdown.cancel(),
                _ = end.cancelled() => {}
            }
        })
    });
    Ok(done)
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
