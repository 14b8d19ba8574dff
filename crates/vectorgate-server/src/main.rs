//! `vectorgate`: the gRPC server binary and its operator commands.
//! See `vectorgate --help` and the README's "Server" section.

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use vectorgate_server::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life at info; the operator commands print their
    // own output (an offline resync draws a progress bar) and log warnings.
    let default = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(default);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; the filter comes from `VECTORGATE_LOG`, else `RUST_LOG`,
/// else `default`.
fn init_logging(default: &str) {
    let filter = ["VECTORGATE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .and_then(|v| EnvFilter::try_new(v).ok())
        })
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
