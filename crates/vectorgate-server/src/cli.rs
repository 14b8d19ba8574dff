//! The `vectorgate` command line.

use crate::auth;
use crate::config::{self, Config, Overrides};
use crate::lock::{DataDirLock, LockError};
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::{
    BreakerState, DrainRequest, ForceActiveRequest, RedriveRequest, ResumeAutoRequest,
    ResyncRequest, ResyncResult, StatusRequest, StatusResponse,
};
use crate::resync::{self, Plan, Stores};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vectorgate::{Metric, VectorManager};

/// vectorgate: the vector-store layer that keeps answering when its database fails.
#[derive(Debug, Parser)]
#[command(name = "vectorgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (default: embedded store in ./vectorgate-data,
    /// 127.0.0.1:50051, metrics on 127.0.0.1:9464).
    Serve(ServeArgs),
    /// Print the SHA-256 of an API key, for `[[api_keys]] sha256 = ...`.
    /// Reads the key from stdin when not given (keeps it out of shell history).
    HashKey(HashKeyArgs),
    /// Print a commented example configuration.
    ConfigExample,
    /// Print every store's state (AdminService.Status) as a table.
    Status(ClientArgs),
    /// Take a store out of rotation until `resume-auto` (admin key).
    Drain {
        /// Store name.
        store: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Route every request to this store first until `resume-auto` (admin key).
    ForceActive {
        /// Store name.
        store: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Clear every operator override (admin key).
    ResumeAuto(ClientArgs),
    /// Copy every record of one store into another, then compare per-team
    /// counts; exits non-zero when a team's counts differ. Online through a
    /// running server (`--addr`, admin key), or offline on a config file
    /// (`--config`) while no server runs on its data directory.
    Resync(ResyncArgs),
    /// Re-apply the journal entries a store refused (its dead letters) (admin key).
    Redrive {
        /// Store name.
        #[arg(long)]
        store: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `vectorgate serve` options. Flags override `VECTORGATE_*` variables,
/// which override the config file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file (`vectorgate config-example` prints one).
    #[arg(long, env = "VECTORGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, env = "VECTORGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// HTTP address for /metrics, /healthz, /readyz [default: 127.0.0.1:9464].
    #[arg(long, env = "VECTORGATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the embedded store(s) [default: ./vectorgate-data].
    #[arg(long, env = "VECTORGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Vector dimension [default: 1536].
    #[arg(long, env = "VECTORGATE_DIM", value_name = "N")]
    pub dim: Option<u32>,
    /// Similarity metric: cosine, inner_product or l2 [default: cosine].
    #[arg(long, env = "VECTORGATE_METRIC", value_name = "METRIC", value_parser = parse_metric)]
    pub metric: Option<Metric>,
    /// Time in-flight calls get to finish after SIGTERM/SIGINT [default: 30000].
    #[arg(long, env = "VECTORGATE_DRAIN_TIMEOUT_MS", value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Allow serving without API keys on a non-loopback address.
    #[arg(long, env = "VECTORGATE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Allow /metrics and /readyz on a non-loopback address.
    #[arg(long, env = "VECTORGATE_INSECURE_METRICS_LISTEN")]
    pub insecure_metrics_listen: bool,
}

fn parse_metric(text: &str) -> Result<Metric, String> {
    Metric::parse(text).ok_or_else(|| format!("{text:?} is not cosine, inner_product or l2"))
}

impl ServeArgs {
    /// The configuration: file (if any), then overrides.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(&Overrides {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            data_dir: self.data_dir.clone(),
            dim: self.dim,
            metric: self.metric,
            drain_timeout_ms: self.drain_timeout_ms,
            insecure_no_auth: self.insecure_no_auth,
            insecure_metrics_listen: self.insecure_metrics_listen,
        });
        Ok(config)
    }
}

/// `vectorgate resync` options.
#[derive(Debug, Clone, Args)]
pub struct ResyncArgs {
    /// Source store name.
    #[arg(long, value_name = "STORE")]
    pub from: String,
    /// Target store name.
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// Records per page, 1..=1000 [default: 1000].
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
    /// Offline: run the resync in this process on the stores and journal of
    /// this configuration (the file `serve` uses; `--addr`, `--api-key` and
    /// `--ca-cert` are then unused). Refused while a server runs on its data
    /// directory. Without it, the resync goes through the server at `--addr`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Offline: the data directory, as `serve --data-dir`.
    #[arg(long, env = "VECTORGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Offline: the vector dimension, as `serve --dim`.
    #[arg(long, env = "VECTORGATE_DIM", value_name = "N")]
    pub dim: Option<u32>,
    /// Offline: the metric, as `serve --metric`.
    #[arg(long, env = "VECTORGATE_METRIC", value_name = "METRIC", value_parser = parse_metric)]
    pub metric: Option<Metric>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vectorgate hash-key` options.
#[derive(Debug, Clone, Args)]
pub struct HashKeyArgs {
    /// The key (read from stdin when omitted).
    pub key: Option<String>,
    /// Generate a new random key and print it with its digest.
    #[arg(long, conflicts_with = "key")]
    pub generate: bool,
}

/// How the admin subcommands reach a server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address (`https://` for TLS).
    #[arg(
        long,
        env = "VECTORGATE_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "VECTORGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) to verify the server's TLS certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl ClientArgs {
    /// A connected admin client; every call has 30 s.
    pub async fn connect(&self) -> anyhow::Result<AdminServiceClient<Channel>> {
        self.connect_with_timeout(Some(Duration::from_secs(30)))
            .await
    }

    /// A connected admin client whose calls have `timeout` (`None`: no
    /// limit, for a resync's stream).
    pub async fn connect_with_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> anyhow::Result<AdminServiceClient<Channel>> {
        let mut endpoint = Endpoint::from_shared(self.addr.clone())
            .with_context(|| format!("invalid address {:?}", self.addr))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if self.addr.starts_with("https://") || self.ca_cert.is_some() {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read CA certificate {}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        Ok(AdminServiceClient::new(channel))
    }

    /// Wraps a message in a request carrying the API key, if any.
    pub fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(key) = &self.api_key {
            let value = format!("Bearer {key}")
                .parse()
                .context("the API key is not valid ASCII")?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Runs the command line; the process exits non-zero on error.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    run_command(cli).map_err(readable)
}

/// A server's refusal as `Code: message` rather than tonic's debug form.
fn readable(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<tonic::Status>() {
        Some(status) => anyhow::anyhow!("{:?}: {}", status.code(), status.message()),
        None => error,
    }
}

fn run_command(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.load()?;
            runtime()?.block_on(crate::server::run(config))
        }
        Command::HashKey(args) => hash_key(&args),
        Command::ConfigExample => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::Status(client) => runtime()?.block_on(async {
            let status = client
                .connect()
                .await?
                .status(client.request(StatusRequest {})?)
                .await?
                .into_inner();
            print!("{}", status_table(&status));
            Ok(())
        }),
        Command::Drain { store, client } => runtime()?.block_on(async {
            let reply = client
                .connect()
                .await?
                .drain(client.request(DrainRequest { store })?)
                .await?
                .into_inner();
            print!("{}", status_table(&reply.status.unwrap_or_default()));
            Ok(())
        }),
        Command::ForceActive { store, client } => runtime()?.block_on(async {
            let reply = client
                .connect()
                .await?
                .force_active(client.request(ForceActiveRequest { store })?)
                .await?
                .into_inner();
            print!("{}", status_table(&reply.status.unwrap_or_default()));
            Ok(())
        }),
        Command::ResumeAuto(client) => runtime()?.block_on(async {
            let reply = client
                .connect()
                .await?
                .resume_auto(client.request(ResumeAutoRequest {})?)
                .await?
                .into_inner();
            print!("{}", status_table(&reply.status.unwrap_or_default()));
            Ok(())
        }),
        Command::Resync(args) => match &args.config {
            Some(path) => resync_offline(&args, path),
            None => runtime()?.block_on(resync_online(&args)),
        },
        Command::Redrive { store, client } => runtime()?.block_on(async {
            let reply = client
                .connect()
                .await?
                .redrive_dead_letters(client.request(RedriveRequest {
                    store: store.clone(),
                })?)
                .await?
                .into_inner();
            println!(
                "store {store}: {} dead letters accepted, {} still refused",
                reply.accepted, reply.still_refused
            );
            if reply.still_refused > 0 {
                bail!(
                    "{} dead letters of {store} are still refused (see the server log for why); they are kept",
                    reply.still_refused
                );
            }
            Ok(())
        }),
    }
}

/// `vectorgate resync --addr`: the AdminService.Resync stream, with a
/// progress bar, then the verification table.
async fn resync_online(args: &ResyncArgs) -> anyhow::Result<()> {
    let client = &args.client;
    let mut stream = client
        .connect_with_timeout(None)
        .await?
        .resync(client.request(ResyncRequest {
            from: args.from.clone(),
            to: args.to.clone(),
            page_size: args.page_size,
        })?)
        .await?
        .into_inner();
    let mut view = ProgressView::new(&args.from, &args.to);
    while let Some(message) = stream.message().await? {
        view.update(message.copied, message.total, message.done);
        if let Some(result) = message.result {
            view.finish();
            return report_resync(&args.from, &args.to, &result);
        }
    }
    view.finish();
    bail!("the server ended the resync without a result; see its log")
}

/// `vectorgate resync --config`: the manager of `serve`, in this process,
/// under the data directory lock.
fn resync_offline(args: &ResyncArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let mut config = Config::from_file(path)?;
    config.apply(&Overrides {
        data_dir: args.data_dir.clone(),
        dim: args.dim,
        metric: args.metric,
        ..Overrides::default()
    });
    config.check()?;
    let _lock = match DataDirLock::acquire(&config.data_dir, "resync") {
        Ok(lock) => lock,
        Err(error @ LockError::Held { .. }) => {
            let addr = error
                .holder_addr()
                .map_or_else(|| format!("http://{}", config.listen), str::to_owned);
            bail!(
                "{error}: a vectorgate server is running on the data directory {}, and it owns the journal. \
                 Resync through it instead: vectorgate resync --addr {addr} [--api-key KEY] --from {} --to {}",
                config.data_dir.display(),
                args.from,
                args.to
            )
        }
        Err(LockError::Io(error)) => return Err(error),
    };
    let _journal_lock = crate::server::lock_journal(&config, "resync")?;
    runtime()?.block_on(async {
        let opened = crate::server::open_stores(&config).await?;
        let manager = VectorManager::start(config.manager_config(), opened.clone())
            .await
            .context("cannot start the store manager")?;
        let stores = Stores::new(opened);
        let mut view = ProgressView::new(&args.from, &args.to);
        let outcome = async {
            let plan = Plan::new(
                &stores,
                &config.data_dir,
                &args.from,
                &args.to,
                args.page_size,
            )?;
            resync::source_ready(&manager, &plan.from)
                .await
                .map_err(anyhow::Error::msg)?;
            let outcome = resync::run(&manager, &stores, &plan, |progress| {
                view.update(progress.copied, progress.total, progress.done);
            })
            .await?;
            anyhow::Ok(outcome)
        }
        .await;
        // Persists the journal cursors (the target's, after its replay).
        manager.shutdown().await;
        view.finish();
        report_resync(&args.from, &args.to, &outcome?.to_proto())
    })
}

/// Prints the verification table; an error when a team's counts differ.
fn report_resync(from: &str, to: &str, result: &ResyncResult) -> anyhow::Result<()> {
    print!("{}", resync_table(from, to, result));
    if result.mismatched_teams > 0 {
        bail!(
            "{} of {} teams have different counts in {from} and {to}",
            result.mismatched_teams,
            result.teams.len()
        );
    }
    Ok(())
}

/// The outcome of a resync: a summary line, then per-team counts.
pub fn resync_table(from: &str, to: &str, result: &ResyncResult) -> String {
    let mut out = format!(
        "resync {from} -> {to}: {} records copied ({} by this run); {} journal entries written during the copy replayed from the journal\n",
        result.copied, result.copied_now, result.journal_entries_during_copy
    );
    if !result.caught_up {
        out.push_str(
            "note: the target had not replayed the whole journal when counted, so its counts may lag (see `vectorgate status`)\n",
        );
    }
    let header = ["TEAM", "SOURCE", "TARGET", "CHECK"].map(str::to_owned);
    let rows: Vec<[String; 4]> = result
        .teams
        .iter()
        .map(|t| {
            let check = if t.source == t.target {
                "ok".to_owned()
            } else {
                format!("DIFFERS by {}", t.source.abs_diff(t.target))
            };
            [
                t.team_id.clone(),
                t.source.to_string(),
                t.target.to_string(),
                check,
            ]
        })
        .collect();
    out.push_str(&table(&header, &rows));
    let teams = result.teams.len();
    if result.mismatched_teams == 0 {
        out.push_str(&format!("{teams} teams, every count matches\n"));
    } else {
        out.push_str(&format!(
            "{teams} teams, {} with different counts\n",
            result.mismatched_teams
        ));
    }
    out
}

/// A progress bar on a terminal; a line every few seconds otherwise.
struct ProgressView {
    bar: ProgressBar,
    label: String,
    started: bool,
    done: bool,
    last_line: Option<Instant>,
}

impl ProgressView {
    fn new(from: &str, to: &str) -> ProgressView {
        let bar = ProgressBar::new(0);
        let template = "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records, {rate}, ETA {eta} {msg}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.with_key(
                "rate",
                |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    // Whole records per second (the default shows 4 decimals).
                    let _ = write!(out, "{}/s", HumanCount(state.per_sec() as u64));
                },
            ));
        }
        bar.set_prefix(format!("{from} -> {to}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        ProgressView {
            bar,
            label: format!("{from} -> {to}"),
            started: false,
            done: false,
            last_line: None,
        }
    }

    fn update(&mut self, copied: u64, total: u64, done: bool) {
        // Live writes may copy more records than were counted at the start.
        self.bar.set_length(total.max(copied));
        self.bar.set_position(copied);
        if !self.started {
            // A resumed copy starts with what earlier runs copied: the rate
            // and ETA count from here.
            self.bar.reset_eta();
            self.started = true;
        }
        let newly_done = done && !self.done;
        if newly_done {
            self.done = true;
            self.bar
                .set_message("copied; the target replays the journal, then counts are compared");
        }
        if self.bar.is_hidden() {
            let due = self
                .last_line
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(2));
            if due || newly_done {
                eprintln!("resync {}: {copied}/{total} records copied", self.label);
                self.last_line = Some(Instant::now());
            }
        }
    }

    /// Stops the bar where it is (also on drop, e.g. when the stream fails).
    fn finish(&self) {
        if !self.bar.is_finished() {
            self.bar.disable_steady_tick();
            self.bar.abandon();
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        self.finish();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn hash_key(args: &HashKeyArgs) -> anyhow::Result<()> {
    if args.generate {
        let key = auth::generate_key();
        println!("key:    {key}");
        println!("sha256: {}", auth::hash_key(&key));
        return Ok(());
    }
    let key = match &args.key {
        Some(key) => key.clone(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the key from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    anyhow::ensure!(!key.is_empty(), "the key is empty");
    println!("{}", auth::hash_key(&key));
    Ok(())
}

/// The status as a fixed-width table.
pub fn status_table(status: &StatusResponse) -> String {
    let header = [
        "STORE", "KIND", "ACTIVE", "BREAKER", "HEALTHY", "DRAINED", "FORCED", "LATENCY", "IN_SYNC",
        "LAG", "DEAD", "ERROR",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 12]> = status
        .stores
        .iter()
        .map(|s| {
            let breaker = match BreakerState::try_from(s.breaker) {
                Ok(BreakerState::Closed) => "closed",
                Ok(BreakerState::Open) => "open",
                Ok(BreakerState::HalfOpen) => "half_open",
                _ => "?",
            };
            let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
            let lag = if s.lag_entries == 0 {
                "0".to_owned()
            } else {
                format!("{} ({:.1} s)", s.lag_entries, s.lag_seconds)
            };
            [
                s.name.clone(),
                s.kind.clone(),
                if s.active {
                    "*".to_owned()
                } else {
                    String::new()
                },
                breaker.to_owned(),
                s.healthy.map_or_else(|| "unknown".to_owned(), yes_no),
                yes_no(s.drained),
                yes_no(s.forced),
                s.last_probe_latency_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms")),
                if s.resync_pending {
                    "no (resync pending)".to_owned()
                } else {
                    yes_no(s.in_sync)
                },
                lag,
                s.dead_letters.to_string(),
                if s.resync_pending && !s.hold_reason.is_empty() {
                    format!("held: {}", s.hold_reason)
                } else {
                    s.last_probe_error.clone()
                },
            ]
        })
        .collect();
    let active = if status.active.is_empty() {
        "none (no store can serve)"
    } else {
        &status.active
    };
    let mut out = format!(
        "manager {}  active {}  replication {}  committed_seq {}{}\n",
        status.manager,
        active,
        if status.replication.is_empty() {
            "?"
        } else {
            &status.replication
        },
        status.committed_seq,
        if status.shutting_down {
            "  (shutting down)"
        } else {
            ""
        }
    );
    out.push_str(&table(&header, &rows));
    out
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; N]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::proto::StoreStatus;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "vectorgate",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/d",
            "--dim",
            "8",
            "--metric",
            "l2",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.load().unwrap();
        assert_eq!(config.index.dim, 8);
        assert_eq!(config.index.metric, Metric::L2);
        assert_eq!(config.listen.port(), 0);
        assert!(Cli::try_parse_from(["vectorgate", "serve", "--metric", "hamming"]).is_err());
    }

    #[test]
    fn table_lists_every_store() {
        let status = StatusResponse {
            manager: "vectorgate".into(),
            active: "b".into(),
            shutting_down: false,
            replication: "async".into(),
            committed_seq: 42,
            stores: vec![
                StoreStatus {
                    name: "a".into(),
                    kind: "embedded".into(),
                    breaker: BreakerState::Open.into(),
                    healthy: Some(false),
                    last_probe_error: "disk gone".into(),
                    drained: true,
                    lag_entries: 7,
                    lag_seconds: 3.25,
                    dead_letters: 2,
                    ..StoreStatus::default()
                },
                StoreStatus {
                    name: "b".into(),
                    kind: "embedded".into(),
                    breaker: BreakerState::Closed.into(),
                    healthy: Some(true),
                    last_probe_latency_ms: Some(0.3),
                    active: true,
                    in_sync: true,
                    ..StoreStatus::default()
                },
            ],
        };
        let table = status_table(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("active b"), "{table}");
        assert!(lines[0].contains("replication async"), "{table}");
        assert!(lines[0].contains("committed_seq 42"), "{table}");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "STORE", "KIND", "ACTIVE", "BREAKER", "HEALTHY", "DRAINED", "FORCED", "LATENCY",
                "IN_SYNC", "LAG", "DEAD", "ERROR"
            ],
            "{table}"
        );
        assert!(
            lines[2].contains("open") && lines[2].contains("disk gone"),
            "{table}"
        );
        assert!(lines[2].contains("7 (3.2 s)"), "{table}");
        // Columns line up: IN_SYNC, LAG and DEAD start where their headers do.
        for (name, value_a, value_b) in [
            ("IN_SYNC", "no", "yes"),
            ("LAG", "7", "0"),
            ("DEAD", "2", "0"),
        ] {
            let at = lines[1].find(name).unwrap();
            assert!(lines[2][at..].starts_with(value_a), "{name}: {table}");
            assert!(lines[3][at..].starts_with(value_b), "{name}: {table}");
        }
        assert!(
            lines[3].contains('*') && lines[3].contains("0.3 ms"),
            "{table}"
        );
    }

    #[test]
    fn resync_table_shows_every_team_and_the_differences() {
        let team = |id: &str, source, target| crate::proto::TeamCount {
            team_id: id.into(),
            source,
            target,
        };
        let mut result = ResyncResult {
            copied_now: 5,
            copied: 12,
            journal_entries_during_copy: 3,
            caught_up: true,
            teams: vec![team("t1", 10, 10), team("team-2", 2, 2)],
            mismatched_teams: 0,
        };
        let table = resync_table("pg", "local", &result);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("pg -> local")
                && lines[0].contains("12 records copied (5 by this run)"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("TEAM    SOURCE  TARGET  CHECK"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("t1      10      10      ok"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("team-2  2       2       ok"),
            "{table}"
        );
        assert_eq!(lines[4], "2 teams, every count matches", "{table}");
        assert!(report_resync("pg", "local", &result).is_ok());

        result.teams[1].target = 1;
        result.mismatched_teams = 1;
        result.caught_up = false;
        let table = resync_table("pg", "local", &result);
        assert!(
            table.contains("note: the target had not replayed"),
            "{table}"
        );
        assert!(table.contains("DIFFERS by 1"), "{table}");
        assert!(table.contains("1 with different counts"), "{table}");
        let error = report_resync("pg", "local", &result)
            .unwrap_err()
            .to_string();
        assert!(error.contains("1 of 2 teams"), "{error}");
    }

    #[test]
    fn resync_is_online_unless_given_a_config() {
        let cli = Cli::try_parse_from([
            "vectorgate",
            "resync",
            "--from",
            "a",
            "--to",
            "b",
            "--page-size",
            "50",
        ])
        .unwrap();
        let Command::Resync(args) = cli.command else {
            panic!("not resync")
        };
        assert!(args.config.is_none());
        assert_eq!(args.page_size, Some(50));
        let cli = Cli::try_parse_from([
            "vectorgate",
            "resync",
            "--config",
            "/etc/vg.toml",
            "--from",
            "a",
            "--to",
            "b",
        ])
        .unwrap();
        let Command::Resync(args) = cli.command else {
            panic!("not resync")
        };
        assert_eq!(args.config, Some(PathBuf::from("/etc/vg.toml")));
        assert!(Cli::try_parse_from(["vectorgate", "resync", "--from", "a"]).is_err());
        let cli = Cli::try_parse_from(["vectorgate", "redrive", "--store", "b", "--api-key", "k"])
            .unwrap();
        assert!(matches!(cli.command, Command::Redrive { store, .. } if store == "b"));
    }
}
