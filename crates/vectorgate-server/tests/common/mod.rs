//! Starts the real `vectorgate` binary on free loopback ports with a temp
//! data dir, and talks to it with the generated client.

#![allow(dead_code)]

pub mod pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};
use vectorgate_server::proto::admin_service_client::AdminServiceClient;
use vectorgate_server::proto::vector_service_client::VectorServiceClient;
use vectorgate_server::proto::{self, Record};

/// Generous: a loaded 2-core machine may be compiling next to us.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
pub const DIM: usize = 8;

/// A running server; killed on drop if still running.
pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub dir: TempDir,
    log: PathBuf,
}

/// Why a server did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl Server {
    /// `serve --dim 8` on 127.0.0.1:0 (gRPC and HTTP) with a temp data
    /// dir, plus `config` (TOML, written to a file) and `extra` flags.
    pub fn start(config: Option<&str>, extra: &[&str]) -> Server {
        match Server::try_start(config, extra) {
            Ok(server) => server,
            Err(failure) => panic!(
                "server did not start ({:?}); log:\n{}",
                failure.status, failure.log
            ),
        }
    }

    pub fn try_start(config: Option<&str>, extra: &[&str]) -> Result<Server, StartFailure> {
        Server::try_start_with_env(config, extra, &[])
    }

    /// Like [`Server::try_start`], with `VECTORGATE_*` variables set (any
    /// inherited ones are removed first).
    pub fn try_start_with_env(
        config: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, StartFailure> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_vectorgate"));
        command.arg("serve");
        let has = |flag: &str| extra.contains(&flag);
        if !has("--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !has("--metrics-listen") {
            command.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        if !has("--dim") && !env.iter().any(|(k, _)| *k == "VECTORGATE_DIM") {
            command.args(["--dim", "8"]);
        }
        if !has("--data-dir") {
            command.arg("--data-dir").arg(dir.path().join("data"));
        }
        if let Some(text) = config {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            command.arg("--config").arg(path);
        }
        command.args(extra);
        for (key, _) in std::env::vars() {
            if key.starts_with("VECTORGATE_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        command
            .env("VECTORGATE_LOG", "info,vectorgate=debug")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = command.spawn().unwrap();

        // Read stdout on a thread: the first line announces the addresses;
        // later output is drained so the server never blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(addrs) = line.strip_prefix("vectorgate listening ") {
                        let mut grpc = None;
                        let mut http = None;
                        for part in addrs.split_whitespace() {
                            if let Some(a) = part.strip_prefix("grpc=") {
                                grpc = Some(a.parse().unwrap());
                            } else if let Some(a) = part.strip_prefix("http=") {
                                http = Some(a.parse().unwrap());
                            }
                        }
                        return Ok(Server {
                            child,
                            grpc: grpc.unwrap(),
                            http: http.unwrap(),
                            dir,
                            log,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(StartFailure {
                    status: Some(status),
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure {
                    status: None,
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The data directory (unless `--data-dir` was given).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap()
    }

    pub async fn vectors(&self) -> VectorServiceClient<Channel> {
        VectorServiceClient::new(self.channel().await)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the HTTP port: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- server log ---\n{}\n--- end of server log ---",
                self.log()
            );
        }
    }
}

/// A minimal HTTP/1.1 GET (the server answers with Content-Length).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// A request carrying `authorization: Bearer <key>` when a key is given.
pub fn req<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// A deterministic non-zero vector.
pub fn vector(seed: u32) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((seed as usize * 31 + i * 7) % 17) as f32 + 1.0)
        .collect()
}

pub fn record(id: &str, team: &str, dataset: &str, collection: &str, seed: u32) -> Record {
    Record {
        id: id.to_owned(),
        team_id: team.to_owned(),
        dataset_id: dataset.to_owned(),
        collection_id: collection.to_owned(),
        vector: vector(seed),
        created_at_ms: 0,
        payload_json: String::new(),
    }
}

pub fn recall(team: &str, datasets: &[&str], seed: u32, limit: u32) -> proto::RecallRequest {
    proto::RecallRequest {
        team_id: team.to_owned(),
        dataset_ids: datasets.iter().map(|d| (*d).to_owned()).collect(),
        vector: vector(seed),
        limit,
        ..proto::RecallRequest::default()
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
