//! gRPC over TLS (rustls) with a throwaway self-signed certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, record};
use std::process::Command;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vectorgate_server::auth::hash_key;
use vectorgate_server::proto::vector_service_client::VectorServiceClient;
use vectorgate_server::proto::{CountRequest, UpsertRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_grpc_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = generated.cert.pem();
    let cert_path = common::write_file(certs.path(), "server.crt", &cert_pem);
    let key_path = common::write_file(
        certs.path(),
        "server.key",
        &generated.signing_key.serialize_pem(),
    );
    let config = format!(
        r#"
[tls]
cert_path = "{}"
key_path = "{}"

[[api_keys]]
sha256 = "{}"
teams = ["*"]
role = "admin"
"#,
        cert_path.display(),
        key_path.display(),
        hash_key("tls-key"),
    );
    let server = Server::start(Some(&config), &[]);

    let channel = Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&cert_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let mut client = VectorServiceClient::new(channel);
    client
        .upsert(common::req(
            UpsertRequest {
                records: vec![record("tls1", "t1", "d1", "c1", 1)],
                ..Default::default()
            },
            Some("tls-key"),
        ))
        .await
        .unwrap();
    let count = client
        .count(common::req(CountRequest::default(), Some("tls-key")))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 1);

    // Plaintext is not served on a TLS port.
    let plaintext = Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let result = VectorServiceClient::new(channel)
            .count(common::req(CountRequest::default(), Some("tls-key")))
            .await;
        assert!(
            result.is_err(),
            "a plaintext call succeeded on the TLS port"
        );
    }

    // The status command verifies the server with --ca-cert.
    let addr = format!("https://{}", server.grpc);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vectorgate"))
            .args([
                "status",
                "--addr",
                &addr,
                "--api-key",
                "tls-key",
                "--ca-cert",
            ])
            .arg(&cert_path)
            .env_remove("VECTORGATE_API_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("embedded"));
}
