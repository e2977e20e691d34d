//! Thin binary: arguments, tracing, then the library; errors become exit code 1.
#![forbid(unsafe_code)]

use clap::Parser;
use vedetta_collector::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    // Everything this process creates (keys, databases and their WAL files, state) is
    // for its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    // The demo talks to a person on stdout: keep routine logs out of the way.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours for people at a terminal, plain text for journald and log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match vedetta_collector::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vedetta-collector: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
