//! Where the agent's observations come from. Each source turns what it watches into
//! events for the detectors: log files and their formats (`logs`), the systemd journal
//! (`journald`), watched files (`files`), packets (`network`) and processes (`host`).
//! Each runs on a thread of its own until the agent's stop flag is set, and tells the
//! agent's [`Health`](crate::health::Health) what it is doing under the name
//! [`configured`] gives it.

pub mod files;
pub mod host;
pub mod journald;
pub mod logs;
pub mod network;

use crate::config::AgentConfig;
use crate::health::{SourceId, SourceKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The sources of a configuration, in its order, named as the agent reports them (in
/// heartbeats, `agent_health` and `status`).
pub fn configured(config: &AgentConfig) -> Vec<SourceId> {
    let mut sources = Vec::new();
    for log in &config.sources.logs {
        sources.push(SourceId {
            name: logs::live::source_name(log),
            kind: SourceKind::Logs,
            watches: log.paths.join(", "),
        });
    }
    for (index, journal) in config.sources.journald.iter().enumerate() {
        sources.push(SourceId {
            name: journald::source_name(index),
            kind: SourceKind::Journald,
            watches: journald::describe(journal),
        });
    }
    if let Some(files) = &config.sources.files {
        let paths: Vec<String> = files
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        sources.push(SourceId {
            name: files::SOURCE_NAME.into(),
            kind: SourceKind::Files,
            watches: paths.join(", "),
        });
    }
    if let Some(network) = &config.sources.network {
        let mut watches = if network.interfaces.is_empty() {
            "every interface that is up, loopback aside".to_owned()
        } else {
            network.interfaces.join(", ")
        };
        if network.promiscuous {
            watches.push_str(" (promiscuous)");
        }
        sources.push(SourceId {
            name: network::SOURCE_NAME.into(),
            kind: SourceKind::Network,
            watches,
        });
    }
    if let Some(host) = &config.sources.host {
        sources.push(SourceId {
            name: host::SOURCE_NAME.into(),
            kind: SourceKind::Host,
            watches: format!("processes, every {:?}", host.interval),
        });
    }
    sources
}

/// Waits `total` (a backoff, the time to the next look), returning early once `stop` is
/// set, so that a source thread never delays the agent's shutdown by more than 100 ms.
pub fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
