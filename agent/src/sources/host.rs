//! The host: what it is (an inventory for the heartbeat) and what runs on it
//! (`suspicious_process`: known miner names, programs run from world-writable
//! directories or deleted from disk after starting, a process pinning a CPU for long).
//!
//! One `sysinfo::System` is kept and only what is needed is refreshed: process CPU
//! times and executables, at `interval`.

use crate::health::{Health, SourceState};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
use tokio::sync::mpsc;
use tracing::info;
use vedetta_common::duration::serde_human;
use vedetta_common::protocol::HostInventory;
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

/// `[sources.host]` of the agent configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// How often the processes are looked at.
    #[serde(default = "default_interval", with = "serde_human")]
    pub interval: Duration,
    /// Process names of cryptocurrency miners (compared without case), besides the
    /// built-in list.
    #[serde(default)]
    pub miner_names: Vec<String>,
    /// A process above this share of one CPU (percent)…
    #[serde(default = "default_cpu_percent")]
    pub cpu_percent: f32,
    /// …for this long is reported.
    #[serde(default = "default_cpu_for", with = "serde_human")]
    pub cpu_for: Duration,
    /// Programs run from under these are suspicious.
    #[serde(default = "default_exec_dirs")]
    pub exec_dirs: Vec<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            miner_names: Vec::new(),
            cpu_percent: default_cpu_percent(),
            cpu_for: default_cpu_for(),
            exec_dirs: default_exec_dirs(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_cpu_percent() -> f32 {
    90.0
}
fn default_cpu_for() -> Duration {
    Duration::from_secs(600)
}
fn default_exec_dirs() -> Vec<PathBuf> {
    ["/tmp", "/var/tmp", "/dev/shm"].map(PathBuf::from).to_vec()
}

/// The name the host source is reported under.
pub const SOURCE_NAME: &str = "host";

/// Names of well-known miners (and of the droppers that install them).
const MINERS: &[&str] = &[
    "xmrig",
    "xmr-stak",
    "xmr-stak-cpu",
    "minerd",
    "cpuminer",
    "cpuminer-multi",
    "cgminer",
    "bfgminer",
    "ethminer",
    "nbminer",
    "t-rex",
    "phoenixminer",
    "lolminer",
    "nanominer",
    "teamredminer",
    "gminer",
    "srbminer",
    "srbminer-multi",
    "kdevtmpfsi",
    "kinsing",
    "xmrigdaemon",
    "xmrminer",
    "sysrv",
    "skidmap",
    "watchbog",
];

/// Largest executable hashed for the indicator.
const HASH_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What this host is. Cheap: read once at start.
pub fn inventory() -> HostInventory {
    let mut system = System::new();
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    HostInventory {
        os: System::long_os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        memory_mib: system.total_memory() / (1024 * 1024),
    }
}

/// Why a process looks wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MinerName,
    RunFromDropDir,
    DeletedExecutable,
    PinsCpu,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Self::MinerName => "miner_name",
            Self::RunFromDropDir => "run_from_drop_dir",
            Self::DeletedExecutable => "deleted_executable",
            Self::PinsCpu => "pins_cpu",
        }
    }
}

/// The host source's state.
#[derive(Debug)]
pub struct HostSource {
    config: HostConfig,
    miners: HashSet<String>,
    system: System,
    /// Since when each process (pid, start time) has been above the CPU threshold.
    busy_since: HashMap<(Pid, u64), Instant>,
    /// What was already reported of each process.
    reported: HashMap<(Pid, u64), HashSet<Reason>>,
}

impl HostSource {
    pub fn new(config: &HostConfig) -> Self {
        let miners = MINERS
            .iter()
            .map(|name| (*name).to_owned())
            .chain(config.miner_names.iter().map(|name| name.to_lowercase()))
            .collect();
        Self {
            config: config.clone(),
            miners,
            system: System::new(),
            busy_since: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// Looks at the processes once; returns the signals about new findings.
    pub fn look(&mut self) -> Vec<Signal> {
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_cpu()
                .with_exe(UpdateKind::OnlyIfNotSet)
                .with_cmd(UpdateKind::OnlyIfNotSet),
        );
        let now = Instant::now();
        let mut alive = HashSet::new();
        let mut out = Vec::new();
        for (pid, process) in self.system.processes() {
            // Threads are listed as processes too: the process is enough.
            if process.thread_kind().is_some() {
                continue;
            }
            let key = (*pid, process.start_time());
            alive.insert(key);
            let name = process.name().to_string_lossy().to_lowercase();
            let mut reasons = Vec::new();
            let stratum = process
                .cmd()
                .iter()
                .any(|arg| arg.to_string_lossy().contains("stratum+"));
            if self.miners.contains(&name) || stratum {
                reasons.push(Reason::MinerName);
            }
            // The kernel's view of the executable: " (deleted)" when it is gone.
            let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let exe = link.as_ref().map(|path| {
                let text = path.to_string_lossy();
                match text.strip_suffix(" (deleted)") {
                    Some(stripped) => (PathBuf::from(stripped), true),
                    None => (path.clone(), false),
                }
            });
            if let Some((path, deleted)) = &exe {
                if self
                    .config
                    .exec_dirs
                    .iter()
                    .any(|dir| path.starts_with(dir))
                {
                    reasons.push(Reason::RunFromDropDir);
                }
                // Gone from disk, and not replaced by a newer version (a package
                // upgrade leaves running programs "deleted" too).
                if *deleted && !path.exists() {
                    reasons.push(Reason::DeletedExecutable);
                }
            }
            if process.cpu_usage() >= self.config.cpu_percent {
                let since = *self.busy_since.entry(key).or_insert(now);
                if now.duration_since(since) >= self.config.cpu_for {
                    reasons.push(Reason::PinsCpu);
                }
            } else {
                self.busy_since.remove(&key);
            }
            let reported = self.reported.entry(key).or_default();
            let new: Vec<Reason> = reasons
                .iter()
                .copied()
                .filter(|reason| !reported.contains(reason))
                .collect();
            if new.is_empty() {
                continue;
            }
            reported.extend(new.iter().copied());
            out.push(signal(
                *pid,
                &name,
                exe.as_ref().map(|(path, _)| path.as_path()),
                &reasons,
                process.cpu_usage(),
            ));
        }
        // Forget processes that ended.
        self.busy_since.retain(|key, _| alive.contains(key));
        self.reported.retain(|key, _| alive.contains(key));
        out
    }
}

/// The SHA-256 of a process's executable, read through `/proc` (it works even when the
/// file was deleted from disk).
fn executable_hash(pid: Pid) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(format!("/proc/{pid}/exe")).ok()?;
    // The hash of a part would be a false indicator: too large, no hash.
    if file.metadata().ok()?.len() > HASH_MAX_BYTES {
        return None;
    }
    let mut reader = file.take(HASH_MAX_BYTES);
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => context.update(&buffer[..read]),
            Err(_) => return None,
        }
    }
    Some(vedetta_common::identity::hex(context.finish().as_ref()))
}

fn signal(pid: Pid, name: &str, exe: Option<&Path>, reasons: &[Reason], cpu: f32) -> Signal {
    let severe = reasons.iter().any(|r| *r != Reason::PinsCpu);
    let mut signal = Signal::new(
        "suspicious_process",
        if severe {
            Severity::High
        } else {
            Severity::Medium
        },
        Timestamp::now(),
    )
    .with_attribute("process", name.chars().take(64).collect::<String>())
    .with_attribute("pid", u64::from(pid.as_u32()))
    .with_attribute(
        "reasons",
        reasons
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(","),
    )
    .with_attribute("cpu_percent", f64::from(cpu.round()));
    signal.mitre = Some(
        if reasons.contains(&Reason::MinerName) || reasons.contains(&Reason::PinsCpu) {
            "T1496"
        } else if reasons.contains(&Reason::DeletedExecutable) {
            "T1070.004"
        } else {
            "T1059"
        }
        .into(),
    );
    if let Some(exe) = exe {
        // A path: pseudonymised by the privacy filter unless the member shares paths.
        signal = signal.with_attribute("path", exe.to_string_lossy().into_owned());
    }
    if let Some(hash) = executable_hash(pid) {
        signal = signal.with_indicator(IndicatorType::Sha256, hash);
    }
    signal
}

/// Runs the source until `stop` is set.
pub fn run(
    mut source: HostSource,
    signals: mpsc::Sender<Signal>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    info!(
        interval_s = source.config.interval.as_secs_f64(),
        "host source started"
    );
    health.source_state(SOURCE_NAME, SourceState::Running, None);
    while !stop.load(Ordering::Relaxed) {
        let found = source.look();
        health.source_events(SOURCE_NAME, 1);
        for signal in found {
            let _ = signals.blocking_send(signal);
        }
        crate::sources::sleep_unless_stopped(&stop, source.config.interval);
    }
    info!("host source stopped");
}
