//! A Rust client of the `vectorgate` gRPC server, using the generated stubs
//! that `vectorgate-server` exports (`vectorgate_server::proto`): upserts a
//! few records, recalls, counts, and prints what the server answered.
//!
//! ```sh
//! # a server (dimension 8 here; the client's --dim must match the server's)
//! cargo run --release -p vectorgate-server -- serve --data-dir /tmp/vg-example --dim 8
//! # the client
//! cargo run --release --example grpc_client -- --dim 8
//! cargo run --release --example grpc_client -- --addr http://10.0.0.5:50051 --api-key "$KEY" --dim 1536
//! ```
//!
//! With API keys configured on the server, pass a `write` key (`--api-key`
//! or `VECTORGATE_API_KEY`); it is sent as `authorization: Bearer <key>` on
//! every call. The records have fixed ids, so running it twice replaces
//! them (the count stays the same).

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Endpoint;
use vectorgate_server::proto::vector_service_client::VectorServiceClient;
use vectorgate_server::proto::{CountRequest, RecallRequest, Record, UpsertRequest};

#[derive(Debug, Parser)]
#[command(about = "Upserts, recalls and counts through vectorgate's gRPC API")]
struct Args {
    /// Server address (`http://`; the server's default is 127.0.0.1:50051).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "VECTORGATE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The server's index dimension (`vectorgate serve` defaults to 1536).
    #[arg(long, default_value_t = 1536)]
    dim: usize,
    /// Team the records belong to.
    #[arg(long, default_value = "example-team")]
    team: String,
}

/// Adds `authorization: Bearer <key>` to every request when a key is set.
#[derive(Clone)]
struct ApiKey(Option<MetadataValue<Ascii>>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A unit vector along axis `i` with a little of axis `i + 1`: records are
/// distinct and each recall has an obvious best hit.
fn vector(dim: usize, i: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[i % dim] = 1.0;
    v[(i + 1) % dim] += 0.25;
    v
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Turns a failed call into a message naming the call and the gRPC code.
fn failed(call: &'static str) -> impl FnOnce(tonic::Status) -> String {
    move |status| format!("{call} failed: {:?}: {}", status.code(), status.message())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.dim < 2 {
        return Err("--dim must be at least 2".into());
    }
    let key = match &args.api_key {
        Some(key) => Some(
            format!("Bearer {key}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| "the API key is not valid ASCII")?,
        ),
        None => None,
    };
    let channel = Endpoint::from_shared(args.addr.clone())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
    let mut client = VectorServiceClient::with_interceptor(channel, ApiKey(key));

    let texts = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let records: Vec<Record> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| Record {
            id: format!("grpc-example-{i}"),
            team_id: args.team.clone(),
            dataset_id: "kb-1".into(),
            collection_id: format!("file-{}", i % 2),
            vector: vector(args.dim, i),
            created_at_ms: 0, // "now"
            payload_json: format!(r#"{{"text": "{text}"}}"#),
        })
        .collect();
    let upserted = client
        .upsert(UpsertRequest {
            records,
            ..Default::default()
        })
        .await
        .map_err(failed("Upsert"))?
        .into_inner();
    println!(
        "upserted {} records: {:?}",
        upserted.ids.len(),
        upserted.ids
    );

    let recalled = client
        .recall(RecallRequest {
            team_id: args.team.clone(),
            dataset_ids: vec!["kb-1".into()],
            vector: vector(args.dim, 2),
            limit: 3,
            with_payload: true,
            ..RecallRequest::default()
        })
        .await
        .map_err(failed("Recall"))?
        .into_inner();
    println!(
        "recall (closest to {:?}): served_by {:?}, {} hits",
        texts[2],
        recalled.served_by,
        recalled.hits.len()
    );
    for hit in &recalled.hits {
        println!(
            "  {:<16} dataset {} collection {} score {:.4} payload {}",
            hit.id, hit.dataset_id, hit.collection_id, hit.score, hit.payload_json
        );
    }

    let team = client
        .count(CountRequest {
            team_id: args.team.clone(),
            ..CountRequest::default()
        })
        .await
        .map_err(failed("Count"))?
        .into_inner();
    let dataset = client
        .count(CountRequest {
            team_id: args.team.clone(),
            dataset_id: "kb-1".into(),
            collection_id: "file-0".into(),
        })
        .await
        .map_err(failed("Count"))?
        .into_inner();
    println!(
        "count: {} records in team {:?}, {} in kb-1/file-0",
        team.count, args.team, dataset.count
    );
    Ok(())
}
