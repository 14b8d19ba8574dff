//! The `vectorgate` command line.

use crate::auth;
use crate::config::{self, Config, Overrides};
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::{
    BreakerState, DrainRequest, ForceActiveRequest, ResumeAutoRequest, StatusRequest,
    StatusResponse,
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vectorgate::Metric;

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
        });
        Ok(config)
    }
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
    /// A connected admin client.
    pub async fn connect(&self) -> anyhow::Result<AdminServiceClient<Channel>> {
        let mut endpoint = Endpoint::from_shared(self.addr.clone())
            .with_context(|| format!("invalid address {:?}", self.addr))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
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
        "STORE", "KIND", "ACTIVE", "BREAKER", "HEALTHY", "DRAINED", "FORCED", "LATENCY", "ERROR",
    ];
    let rows: Vec<[String; 9]> = status
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
                s.last_probe_error.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let active = if status.active.is_empty() {
        "none (no store can serve)"
    } else {
        &status.active
    };
    let mut out = format!(
        "manager {}  active {}{}\n",
        status.manager,
        active,
        if status.shutting_down {
            "  (shutting down)"
        } else {
            ""
        }
    );
    out.push_str(&line(&header.map(str::to_owned)));
    for row in &rows {
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
            stores: vec![
                StoreStatus {
                    name: "a".into(),
                    kind: "embedded".into(),
                    breaker: BreakerState::Open.into(),
                    healthy: Some(false),
                    last_probe_error: "disk gone".into(),
                    drained: true,
                    ..StoreStatus::default()
                },
                StoreStatus {
                    name: "b".into(),
                    kind: "embedded".into(),
                    breaker: BreakerState::Closed.into(),
                    healthy: Some(true),
                    last_probe_latency_ms: Some(0.3),
                    active: true,
                    ..StoreStatus::default()
                },
            ],
        };
        let table = status_table(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("active b"), "{table}");
        assert!(lines[1].starts_with("STORE"), "{table}");
        assert!(
            lines[2].contains("open") && lines[2].contains("disk gone"),
            "{table}"
        );
        assert!(
            lines[3].contains('*') && lines[3].contains("0.3 ms"),
            "{table}"
        );
    }
}
