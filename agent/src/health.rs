//! The agent's own health: uptime, errors per source, and the spool's figures. Reported
//! twice: in every heartbeat (for `agent list` at the collector) and as an `agent_health`
//! signal (stored and queryable like any other), sent periodically and soon after drops.

use crate::spool::SpoolStats;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;
use vedetta_common::protocol::Heartbeat;
use vedetta_common::signal::kinds;
use vedetta_common::{Severity, Signal, Timestamp};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug)]
pub struct Health {
    started: Instant,
    source_errors: Mutex<BTreeMap<String, u64>>,
    /// The host, once the host source has looked.
    inventory: Mutex<Option<vedetta_common::protocol::HostInventory>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            source_errors: Mutex::new(BTreeMap::new()),
            inventory: Mutex::new(None),
        }
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts an error of `source` (e.g. `logs:/var/log/auth.log`).
    pub fn source_error(&self, source: &str) {
        let mut errors = self.source_errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(source.to_owned()).or_default() += 1;
    }

    /// Records what the host is, for the next heartbeats.
    pub fn set_inventory(&self, inventory: vedetta_common::protocol::HostInventory) {
        *self.inventory.lock().unwrap_or_else(|p| p.into_inner()) = Some(inventory);
    }

    pub fn source_errors(&self) -> Vec<(String, u64)> {
        let errors = self.source_errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn heartbeat(&self, spool: &SpoolStats) -> Heartbeat {
        Heartbeat {
            agent_version: AGENT_VERSION.to_owned(),
            uptime_s: self.uptime_s(),
            spool_depth: spool.depth,
            drops_total: spool.drops_total,
            source_errors: self.source_errors(),
            sent_at: Timestamp::now(),
            inventory: self
                .inventory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// The `agent_health` signal. Its severity rises with trouble, so that it is not the
    /// first thing dropped when the spool is full of more important signals.
    pub fn signal(&self, spool: &SpoolStats, new_drops: u64) -> Signal {
        let errors = self.source_errors();
        let error_total: u64 = errors.iter().map(|(_, n)| n).sum();
        let severity = if new_drops > 0 {
            Severity::Medium
        } else if error_total > 0 {
            Severity::Low
        } else {
            Severity::Info
        };
        let mut signal = Signal::new(kinds::AGENT_HEALTH, severity, Timestamp::now())
            .with_attribute("agent_version", AGENT_VERSION)
            .with_attribute("uptime_s", self.uptime_s())
            .with_attribute("spool_depth", spool.depth)
            .with_attribute("drops_total", spool.drops_total)
            .with_attribute("drops_since_last_report", new_drops)
            .with_attribute("source_errors_total", error_total);
        for (severity, drops) in &spool.drops_by_severity {
            if *drops > 0 {
                signal = signal.with_attribute(&format!("drops_{severity}"), *drops);
            }
        }
        for (source, count) in errors.iter().take(32) {
            signal = signal.with_attribute(&format!("errors:{source}"), *count);
        }
        signal
    }
}
