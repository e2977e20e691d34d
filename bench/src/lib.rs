//! Benchmark helpers shared by the load generator: a collector started from its real
//! binary in a scratch directory, agents enrolled through the real enrollment protocol,
//! and process figures read from `/proc`.
#![forbid(unsafe_code)]

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
    pub fingerprint: String,
    pub data_dir: PathBuf,
}

impl CollectorProcess {
    /// `init` (if needed) and `serve` in `data_dir`, with org `bench`.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let binary = sibling_binary("vedetta-collector")?;
        if !data_dir.join("collector.toml").exists() {
            let status = Command::new(&binary)
                .args(["init", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(data_dir)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "collector init failed");
            let status = Command::new(&binary)
                .args(["org", "add", "bench", "--data-dir"])
                .arg(data_dir)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "org add failed");
        }
        let mut child = Command::new(&binary)
            .args(["serve", "--data-dir"])
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

/// The value at quantile `q` of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}
