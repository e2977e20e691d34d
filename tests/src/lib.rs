//! Harness for end-to-end tests: starts the real `vedetta-collector` and `vedetta-agent`
//! binaries in temporary directories on loopback, and waits for things by polling with a
//! deadline (never by sleeping a fixed time).
#![forbid(unsafe_code)]
pub mod browser;

use anyhow::{Context as _, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vedetta_collector::store::{SignalFilter, SqliteStore, Store, StoredSignal};
use vedetta_common::Signal;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The built binary `name`, next to the test executable's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// Polls `condition` until it holds or the deadline passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Sends a signal to a child process.
pub fn send_signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let _ = nix::sys::signal::kill(pid, signal);
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn run_ok(command: &mut Command) -> anyhow::Result<Output> {
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "{:?} failed: {}{}",
            command,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// A background process of ours with its logs in a folder: one log file per start.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    log_dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    fn new(name: &'static str, log_dir: &Path) -> Self {
        Self {
            name,
            log_dir: log_dir.to_owned(),
            child: None,
            starts: 0,
        }
    }

    /// Spawns `command` with its standard error in a new log file.
    fn spawn(&mut self, command: &mut Command) -> &mut Child {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.starts += 1;
        let log = std::fs::File::create(
            self.log_dir
                .join(format!("{}-{}.log", self.name, self.starts)),
        )
        .expect("log file");
        let child = command
            .env("RUST_LOG", format!("info,vedetta_{}=debug", self.name))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.name));
        self.child.insert(child)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM; returns whether the process exited successfully.
    pub fn stop(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        send_signal(&child, nix::sys::signal::Signal::SIGTERM);
        child.wait().expect("wait").success()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// Everything the process logged, over all its starts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.log_dir.join(format!("{}-{n}.log", self.name)))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A collector with its own data directory.
#[derive(Debug)]
pub struct Collector {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub fingerprint: String,
    pub address: Option<SocketAddr>,
    /// The HTTPS API, once started.
    pub https: Option<SocketAddr>,
    pub process: Daemon,
}

/// An answer of the HTTPS API: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// A client of the collector's HTTPS API that trusts only the collector's CA.
#[derive(Debug)]
pub struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    pub fn new(https: SocketAddr, ca_pem: &[u8]) -> Self {
        let agent =
            vedetta_collector::query::https_agent(ca_pem, Some(DEADLINE)).expect("CA certificate");
        Self {
            agent,
            base: format!("https://localhost:{}", https.port()),
        }
    }

    fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("HTTPS request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("response body");
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Answer { status, body }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with an optional bearer token.
    pub fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.get(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::answer(request.call())
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> Answer {
        let mut request = self.agent.post(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::answer(request.send_json(body))
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.delete(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::answer(request.call())
    }

    /// Opens the live stream; the reader yields its lines as they come.
    pub fn stream(&self, token: &str) -> impl BufRead + use<> {
        let response = self
            .agent
            .get(self.url("/api/v1/stream"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("stream");
        assert_eq!(response.status().as_u16(), 200, "stream opened");
        BufReader::new(response.into_body().into_reader())
    }
}

impl Collector {
    /// `init` in a fresh directory.
    pub fn init() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("collector");
        let output = run_ok(
            Command::new(binary("vedetta-collector"))
                .args([
                    "init",
                    "--listen",
                    "127.0.0.1:0",
                    "--http",
                    "127.0.0.1:0",
                    "--format",
                    "json",
                    "--data-dir",
                ])
                .arg(&data_dir),
        )
        .expect("init");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("init json");
        let fingerprint = json["ca_fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_owned();
        let process = Daemon::new("collector", dir.path());
        Self {
            dir,
            data_dir,
            fingerprint,
            address: None,
            https: None,
            process,
        }
    }

    /// A client of this collector's API (started).
    pub fn api(&self) -> Api {
        let ca = std::fs::read(self.data_dir.join("ca.crt")).expect("ca.crt");
        Api::new(self.https.expect("collector started"), &ca)
    }

    /// `user add`: returns the new user's token.
    pub fn user(&self, name: &str, role: &str, org: Option<&str>) -> String {
        let mut args = vec!["user", "add", name, "--role", role];
        if let Some(org) = org {
            args.extend(["--org", org]);
        }
        self.cli(&args).expect("user add")
    }

    /// Runs an admin command against the data directory.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = run_ok(
            Command::new(binary("vedetta-collector"))
                .args(args)
                .arg("--data-dir")
                .arg(&self.data_dir),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    pub fn add_org(&self, org: &str) {
        self.cli(&["org", "add", org]).expect("org add");
    }

    pub fn token(&self, org: &str) -> String {
        self.cli(&["token", "create", "--org", org])
            .expect("token create")
    }

    /// Starts `serve` (on the same port as before, after the first start).
    pub fn start(&mut self) {
        let mut command = Command::new(binary("vedetta-collector"));
        command.arg("serve").arg("--data-dir").arg(&self.data_dir);
        if let Some(address) = self.address {
            command.arg("--listen").arg(address.to_string());
        }
        if let Some(address) = self.https {
            command.arg("--http").arg(address.to_string());
        }
        let child = self.process.spawn(command.stdout(Stdio::piped()));
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let line = receiver.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "collector did not become ready; log: {}",
                self.process.log()
            )
        });
        let ready: serde_json::Value = serde_json::from_str(&line).expect("ready line");
        self.address = Some(
            ready["quic"]
                .as_str()
                .expect("quic")
                .parse()
                .expect("address"),
        );
        self.https = Some(
            ready["https"]
                .as_str()
                .expect("https")
                .parse()
                .expect("https address"),
        );
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        assert!(
            self.process.stop(),
            "collector exits cleanly; log: {}",
            self.process.log()
        );
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Opens the real database file.
    pub fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.data_dir.join("vedetta.db")).expect("open database")
    }

    pub fn signals_of_kind(&self, kind: &str) -> Vec<StoredSignal> {
        self.store()
            .signals(&SignalFilter {
                kind: Some(kind.to_owned()),
                limit: 1_000_000,
                ..SignalFilter::default()
            })
            .expect("query signals")
            .items
            .into_iter()
            // Oldest first, as they happened.
            .rev()
            .collect()
    }
}

/// An agent with its own configuration and state directory.
#[derive(Debug)]
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub process: Daemon,
}

/// Agent settings fast enough for tests.
pub const FAST_AGENT: &str = r#"
state_dir = "state"
[uplink]
heartbeat_interval = "200ms"
connect_timeout = "1s"
reconnect_min = "100ms"
reconnect_max = "500ms"
[health]
interval = "1h"
"#;

/// `base` with the tables and keys of `overrides` laid over it.
fn merge_toml(base: &str, overrides: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (key, value) in from {
            match (into.get_mut(&key), value) {
                (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => {
                    merge(existing, more)
                }
                (_, value) => {
                    into.insert(key, value);
                }
            }
        }
    }
    let mut table: toml::Table = base.parse().expect("base configuration");
    merge(
        &mut table,
        overrides.parse().expect("configuration overrides"),
    );
    table.to_string()
}

impl Agent {
    /// A configured, not yet enrolled agent; `extra` is appended to the configuration.
    pub fn configure(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, merge_toml(FAST_AGENT, extra)).expect("config");
        let process = Daemon::new("agent", dir.path());
        Self {
            dir,
            config,
            process,
        }
    }

    /// Runs `vedetta-agent enroll`, returning its output or error text.
    pub fn try_enroll(
        &self,
        address: SocketAddr,
        token: &str,
        fingerprint: &str,
    ) -> Result<String, String> {
        let output = Command::new(binary("vedetta-agent"))
            .args([
                "enroll",
                "--collector",
                &address.to_string(),
                "--token",
                token,
            ])
            .args(["--ca-fingerprint", fingerprint, "--config"])
            .arg(&self.config)
            .output()
            .expect("run enroll");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Configures and enrolls an agent of `org` with `collector` (which must be running).
    pub fn enrolled(collector: &Collector, org: &str, extra: &str) -> Self {
        let agent = Self::configure(extra);
        let token = collector.token(org);
        agent
            .try_enroll(
                collector.address.expect("collector started"),
                &token,
                &collector.fingerprint,
            )
            .expect("enroll");
        agent
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn agent_id(&self) -> String {
        let text =
            std::fs::read_to_string(self.state_dir().join("enrollment.json")).expect("enrollment");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        json["agent_id"].as_str().expect("agent_id").to_owned()
    }

    pub fn start(&mut self) {
        let mut command = Command::new(binary("vedetta-agent"));
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null());
        self.process.spawn(&mut command);
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGTERM; returns whether the agent exited successfully.
    pub fn stop(&mut self) -> bool {
        self.process.stop()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Queues signals through `vedetta-agent emit`.
    pub fn emit(&self, signals: &[Signal]) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new(binary("vedetta-agent"))
            .args(["emit", "--config"])
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            let mut stdin = child.stdin.take().context("stdin")?;
            for signal in signals {
                writeln!(stdin, "{}", serde_json::to_string(signal)?)?;
            }
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("emit failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// `vedetta-agent status --format json`.
    pub fn status(&self) -> serde_json::Value {
        let output = run_ok(
            Command::new(binary("vedetta-agent"))
                .args(["status", "--format", "json", "--config"])
                .arg(&self.config),
        )
        .expect("status");
        serde_json::from_slice(&output.stdout).expect("status json")
    }
}

/// A running collector with org `acme`, and an agent of `acme` enrolled with it (not
/// started), configured with the test defaults plus `extra`.
pub fn collector_and_agent(extra: &str) -> (Collector, Agent) {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let agent = Agent::enrolled(&collector, "acme", extra);
    (collector, agent)
}

/// `count` distinct test signals.
pub fn test_signals(count: usize, kind: &str) -> Vec<Signal> {
    use vedetta_common::{IndicatorType, Severity, Timestamp};
    (0..count)
        .map(|n| {
            Signal::new(kind, Severity::Medium, Timestamp::now())
                .with_indicator(IndicatorType::Ip, format!("203.0.113.{}", n % 250))
                .with_attribute("n", n as i64)
        })
        .collect()
}

/// Asserts that the store holds exactly `expected` (by id), each once.
pub fn assert_stored_once(stored: &[StoredSignal], expected: &[Signal]) {
    use std::collections::HashMap;
    let mut seen: HashMap<_, usize> = HashMap::new();
    for signal in stored {
        *seen.entry(signal.signal.id).or_default() += 1;
    }
    for signal in expected {
        assert_eq!(
            seen.get(&signal.id).copied(),
            Some(1),
            "signal {} stored {:?} times",
            signal.id,
            seen.get(&signal.id)
        );
    }
    assert_eq!(stored.len(), expected.len(), "unexpected extra signals");
}

/// Raw QUIC clients for tests that play a misbehaving or hostile agent: they hold a real
/// certificate (or none) and speak the wire protocol by hand.
pub mod raw {
    use quinn::ConnectionError;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;
    use vedetta_common::codec::{self, MAX_BATCH_FRAME, MAX_CONTROL_FRAME};
    use vedetta_common::identity::{ALPN, SERVER_NAME};
    use vedetta_common::protocol::{ErrorCode, Message};

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    pub fn pem_certificates(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .expect("read certificates")
            .collect::<Result<_, _>>()
            .expect("parse certificates")
    }

    /// A client that trusts `ca` and presents `identity` (certificate chain and key), if any.
    pub fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> quinn::ClientConfig {
        let ca = pem_certificates(ca).remove(0);
        match identity {
            Some((certificate, key)) => vedetta_agent::tls::session_client(
                ca,
                pem_certificates(certificate),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client config"),
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).expect("root");
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .expect("tls13")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                tls.alpn_protocols = vec![ALPN.to_vec()];
                let crypto =
                    quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
                quinn::ClientConfig::new(std::sync::Arc::new(crypto))
            }
        }
    }

    pub async fn connect(
        address: SocketAddr,
        config: quinn::ClientConfig,
    ) -> Result<quinn::Connection, ConnectionError> {
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(config);
        endpoint
            .connect(address, SERVER_NAME)
            .expect("connect")
            .await
    }

    /// Waits for the collector to close `connection` and returns the close code and reason.
    pub async fn closed_by_collector(
        connection: &quinn::Connection,
    ) -> (Option<ErrorCode>, String) {
        let error = tokio::time::timeout(Duration::from_secs(30), connection.closed())
            .await
            .expect("collector closes the connection");
        match error {
            ConnectionError::ApplicationClosed(close) => (
                ErrorCode::from_close_code(close.error_code.into_inner()),
                String::from_utf8_lossy(&close.reason).into_owned(),
            ),
            other => (None, other.to_string()),
        }
    }

    /// Connects as an enrolled `agent` of `collector`.
    pub async fn connect_as(
        collector: &super::Collector,
        agent: &super::Agent,
    ) -> quinn::Connection {
        let state = agent.state_dir();
        let config = client(
            &collector.data_dir.join("ca.crt"),
            Some((&state.join("agent.crt"), &state.join("agent.key"))),
        );
        connect(collector.address.expect("started"), config)
            .await
            .expect("connect")
    }

    /// Sends one message on a new stream and returns the collector's answer.
    pub async fn exchange(connection: &quinn::Connection, message: &Message) -> Option<Message> {
        let (mut send, mut recv) = connection.open_bi().await.expect("stream");
        codec::write_frame(&mut send, message, MAX_BATCH_FRAME)
            .await
            .expect("write");
        send.finish().expect("finish");
        codec::read_frame(&mut recv, MAX_CONTROL_FRAME)
            .await
            .expect("read")
    }
}

/// `count` failed logins from `source` as sshd logs them (ten make a brute force).
pub fn sshd_failures(source: &str, count: usize) -> String {
    (0..count)
        .map(|n| {
            format!(
                "Failed password for invalid user guest{n} from {source} port {} ssh2\n",
                40_000 + n
            )
        })
        .collect()
}

/// An enrolled agent of `org` following an sshd log of its own (empty for now; lines
/// without a syslog header), and that log's path.
pub fn sshd_log_agent(collector: &Collector, org: &str) -> (Agent, PathBuf) {
    let agent = Agent::enrolled(collector, org, "");
    let log = agent.dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    let config = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!(
            "{config}\n[[sources.logs]]\npaths = [\"{}\"]\nformat = \"plain\"\nprogram = \"sshd\"\nstart_at = \"beginning\"\n",
            log.display()
        ),
    )
    .expect("config");
    (agent, log)
}

/// Appends `text` to a log, as a program writing it would.
pub fn append_log(log: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .expect("open log");
    file.write_all(text.as_bytes()).expect("append");
}
