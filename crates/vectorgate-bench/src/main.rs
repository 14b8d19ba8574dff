//! `vectorgate-bench`: benchmarks that compare configurations side by side,
//! interleaved in one run (the machines this runs on are shared and noisy,
//! so only ratios measured together mean anything).
//!
//! ```text
//! cargo run --release -p vectorgate-bench -- replication
//! cargo run --release -p vectorgate-bench -- overhead
//! cargo run --release -p vectorgate-bench -- failover
//! cargo run --release -p vectorgate-bench -- backends
//! cargo run --release -p vectorgate-bench -- soak
//! cargo run --release -p vectorgate-bench -- noisy-neighbor
//! ```
//!
//! Each benchmark prints a table and writes JSON under `bench-results/`
//! (`failover` also a PNG chart). None of them is a test: nothing here
//! asserts a timing.

mod backends;
mod chart;
mod failover;
mod load;
mod noisy;
mod overhead;
mod replication;
mod report;
mod soak;
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
    /// Recall and upsert through the manager (replication off, async) versus
    /// hand-written sqlx + pgvector, on the same PostgreSQL table.
    Overhead(overhead::Args),
    /// PostgreSQL SIGKILLed and restarted under load: what clients see.
    /// Kills the machine's PostgreSQL (and restarts it).
    Failover(failover::Args),
    /// Recall QPS and recall@k of every backend on the same data.
    Backends(backends::Args),
    /// Constant mixed load for a long time with PostgreSQL killed every few
    /// minutes: memory, journal size and tasks, minute by minute.
    /// Kills the machine's PostgreSQL (and restarts it).
    Soak(soak::Args),
    /// One team floods writes while another recalls, through the server,
    /// with per-team admission control on and off.
    NoisyNeighbor(noisy::Args),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replication(args) => replication::run(args).await,
        Command::Overhead(args) => overhead::run(args).await,
        Command::Failover(args) => failover::run(args).await,
        Command::Backends(args) => backends::run(args).await,
        Command::Soak(args) => soak::run(args).await,
        Command::NoisyNeighbor(args) => noisy::run(args).await,
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
