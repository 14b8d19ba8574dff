//! `vectorgate-bench`: benchmarks that compare configurations side by side,
//! interleaved in one run (the machines this runs on are shared and noisy,
//! so only ratios measured together mean anything).
//!
//! ```text
//! cargo run --release -p vectorgate-bench -- replication
//! ```
//!
//! Each benchmark prints a table and writes JSON under `bench-results/`.

mod replication;
mod report;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vectorgate-bench",
    about = "vectorgate benchmarks, measured side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upsert throughput through the manager with replication off, async and sync.
    Replication(replication::Args),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replication(args) => replication::run(args).await,
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
