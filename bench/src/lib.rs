//! Benchmark helpers shared by the load generator: a collector started from its real
//! binary in a scratch directory, agents enrolled through the real enrollment protocol
//! ([`agents`]), a small client of the HTTPS API and its live stream ([`https`]), process
//! figures read from `/proc`, and the issue 6 measurements ([`campaigns`]: signal to
//! campaign latency under load; [`fanout`]: advisory fan-out to connected agents).
#![forbid(unsafe_code)]

pub mod agents;
pub mod campaigns;
pub mod fanout;
pub mod https;

use anyhow::{Context as _, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A binary built next to this one (`target/release/…`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("binary folder")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --workspace)",
            path.display()
        );
    }
    Ok(path)
}

/// A collector process serving from a scratch data directory.
#[derive(Debug)]
pub struct CollectorProcess {
    pub child: Child,
    pub address: SocketAddr,
    /// The HTTPS API.
    pub https: SocketAddr,
    pub fingerprint: String,
    pub data_dir: PathBuf,
}

impl CollectorProcess {
    /// `init` (if needed) and `serve` in `data_dir`, with org `bench`.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_orgs(data_dir, &["bench".to_owned()])
    }

    /// `init` (if needed, with these organisations) and `serve` in `data_dir`. Both
    /// listeners are on loopback ports of the system's choosing.
    pub fn start_with_orgs(data_dir: &Path, orgs: &[String]) -> anyhow::Result<Self> {
        let binary = sibling_binary("vedetta-collector")?;
        if !data_dir.join("collector.toml").exists() {
            let status = Command::new(&binary)
                .args(["init", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(data_dir)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "collector init failed");
            for org in orgs {
                let status = Command::new(&binary)
                    .args(["org", "add", org, "--data-dir"])
                    .arg(data_dir)
                    .stdout(Stdio::null())
                    .status()?;
                anyhow::ensure!(status.success(), "org add {org} failed");
            }
        }
        let mut child = Command::new(&binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ready: serde_json::Value = serde_json::from_str(&line).context("ready line")?;
        Ok(Self {
            child,
            address: ready["quic"].as_str().context("quic")?.parse()?,
            https: ready["https"].as_str().context("https")?.parse()?,
            fingerprint: ready["ca_fingerprint"]
                .as_str()
                .context("fingerprint")?
                .to_owned(),
            data_dir: data_dir.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new API user of role `analyst` (`user add`, named `user` and this process's id),
    /// and a client of the API with its token.
    pub fn api_client(&self, user: &str) -> anyhow::Result<https::ApiClient> {
        let name = format!("{user}-{}", std::process::id());
        let output = Command::new(sibling_binary("vedetta-collector")?)
            .args([
                "user", "add", &name, "--role", "analyst", "--format", "json",
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let token = answer["token"].as_str().context("token")?;
        let ca = std::fs::read_to_string(self.data_dir.join("ca.crt"))
            .context("reading the collector's ca.crt")?;
        https::ApiClient::new(self.https, &ca, token)
    }
}

/// A collector with `count` organisations: a new one in `scratch` (orgs `org-000`, …), or,
/// given `existing`, the data directory there (e.g. one made by `signals-db.py`) with its
/// first `count` organisations. Returns the collector and the organisations.
pub fn collector_with_orgs(
    existing: Option<&Path>,
    scratch: &Path,
    count: usize,
) -> anyhow::Result<(CollectorProcess, Vec<String>)> {
    use vedetta_collector::store::{SqliteStore, Store};
    match existing {
        Some(dir) => {
            let orgs: Vec<String> = SqliteStore::open(&dir.join("vedetta.db"))?
                .orgs()?
                .into_iter()
                .map(|org| org.id)
                .take(count)
                .collect();
            anyhow::ensure!(
                orgs.len() == count,
                "{} has {} organisations, {count} wanted",
                dir.display(),
                orgs.len()
            );
            Ok((CollectorProcess::start_with_orgs(dir, &orgs)?, orgs))
        }
        None => {
            let orgs: Vec<String> = (0..count).map(|o| format!("org-{o:03}")).collect();
            Ok((CollectorProcess::start_with_orgs(scratch, &orgs)?, orgs))
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory and its peak (KiB), and CPU time used so far (seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_s: f64,
}

pub fn process_figures(pid: u32) -> ProcessFigures {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ProcessFigures {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_s: (ticks(11) + ticks(12)) / 100.0,
    }
}

/// Count, p50, p99 and max of `values`.
pub fn summary(mut values: Vec<f64>) -> serde_json::Value {
    values.sort_by(f64::total_cmp);
    serde_json::json!({
        "count": values.len(),
        "p50": quantile(&values, 0.5),
        "p99": quantile(&values, 0.99),
        "max": values.last().copied().unwrap_or(0.0),
    })
}

/// The value at quantile `q` of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}
