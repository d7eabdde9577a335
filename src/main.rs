//! The `fleetsim` binary: parse the command line, run the command, print errors for people, exit
//! with the code the command's outcome maps to.

use std::process::ExitCode;

use clap::Parser;

use fleetsim::app;
use fleetsim::cli::Cli;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match app::execute(Cli::parse().into_command()) {
        Ok(exit) => ExitCode::from(exit.code()),
        // `fleetsim query ... | head`: the reader has what it wanted.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetsim: error: {e:#}");
            ExitCode::from(app::error_exit_code(&e))
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
