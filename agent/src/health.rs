//! The agent's own health: uptime, the state of each source, and the spool's figures.
//! Reported three ways: in every heartbeat (errors per source, for `agent list` at the
//! collector), as an `agent_health` signal (stored and queryable like any other, sent
//! periodically and soon after drops), and in `sources.json` in the state directory,
//! which `vedetta-agent status` reads.
//!
//! Each source says what it is doing ([`SourceState`]: running, waiting for a file,
//! failed and why), counts what it reads and the errors it meets; [`SourceTable`] keeps
//! that, with the time passed in, so that it can be tested without a clock.

use crate::spool::SpoolStats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;
use vedetta_common::protocol::Heartbeat;
use vedetta_common::signal::kinds;
use vedetta_common::{Severity, Signal, Timestamp};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the `sources.json` format.
pub const SOURCES_VERSION: u32 = 1;
/// Longest reason or error text kept for a source (journalctl's complaints can be long).
const MAX_TEXT: usize = 512;

/// What kind of source it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// `[[sources.logs]]`: log files; its events are lines.
    Logs,
    /// `[[sources.journald]]`: the systemd journal; its events are journal entries.
    Journald,
    /// `[sources.files]`: file integrity; its events are paths looked at.
    Files,
    /// `[sources.network]`: packet capture; its events are packets.
    Network,
    /// `[sources.host]`: processes; its events are looks at the process table.
    Host,
}

impl SourceKind {
    /// What one event of this kind of source is, in the plural (for people).
    pub fn events_name(self) -> &'static str {
        match self {
            Self::Logs => "lines",
            Self::Journald => "entries",
            Self::Files => "paths",
            Self::Network => "packets",
            Self::Host => "looks",
        }
    }
}

/// What a source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Configured, not reading yet (opening, or a first full scan of the watched files).
    Starting,
    /// Reading what it watches (possibly not all of it: see its reason).
    Running,
    /// Nothing to read yet: no file matches its paths (it starts when one appears).
    Waiting,
    /// Cannot read what it watches: its reason says why. Most sources keep trying.
    Failed,
    /// Stopped with the agent.
    Stopped,
}

impl SourceState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// A configured source, as the agent names it in heartbeats, `agent_health` and
/// `status` (see `crate::sources::configured`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceId {
    pub name: String,
    pub kind: SourceKind,
    /// What it watches, for people (paths, interfaces, journal filters).
    pub watches: String,
}

/// One source's state and figures since the agent started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    #[serde(flatten)]
    pub id: SourceId,
    pub state: SourceState,
    /// Why it is waiting or failed; for a running source, the part of it that is not
    /// (a pattern without file, a path it cannot read). None when all is well.
    pub reason: Option<String>,
    /// When it entered `state`.
    pub since: Timestamp,
    /// Lines, entries, paths, packets or looks (see [`SourceKind`]).
    pub events: u64,
    pub last_event_at: Option<Timestamp>,
    /// Errors met (each counted once per episode, not at every retry).
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

impl SourceHealth {
    fn new(id: SourceId, now: Timestamp) -> Self {
        Self {
            id,
            state: SourceState::Starting,
            reason: None,
            since: now,
            events: 0,
            last_event_at: None,
            errors: 0,
            last_error: None,
            last_error_at: None,
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The sources' state, with the time given by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceTable {
    /// The configured sources, in the configuration's order.
    sources: Vec<SourceHealth>,
    /// Errors counted under names that are no source (`spool`).
    other_errors: BTreeMap<String, u64>,
}

impl SourceTable {
    /// Adds a source (starting); a name already there is kept as it is.
    pub fn register(&mut self, id: SourceId, now: Timestamp) {
        if self.get_mut(&id.name).is_none() {
            self.sources.push(SourceHealth::new(id, now));
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut SourceHealth> {
        self.sources.iter_mut().find(|s| s.id.name == name)
    }

    /// Counts an error of `source`, keeping its text.
    pub fn error(&mut self, source: &str, error: &str, now: Timestamp) {
        match self.get_mut(source) {
            Some(health) => {
                health.errors += 1;
                health.last_error = Some(cut(error, MAX_TEXT));
                health.last_error_at = Some(now);
            }
            None => *self.other_errors.entry(source.to_owned()).or_default() += 1,
        }
    }

    /// Sets what `source` is doing; `since` moves only when the state changes.
    pub fn set_state(
        &mut self,
        source: &str,
        state: SourceState,
        reason: Option<&str>,
        now: Timestamp,
    ) {
        if let Some(health) = self.get_mut(source) {
            if health.state != state {
                health.state = state;
                health.since = now;
            }
            if health.reason.as_deref() != reason {
                health.reason = reason.map(|text| cut(text, MAX_TEXT));
            }
        }
    }

    /// Counts `count` events of `source` (none: nothing changes).
    pub fn events(&mut self, source: &str, count: u64, now: Timestamp) {
        if count == 0 {
            return;
        }
        if let Some(health) = self.get_mut(source) {
            health.events += count;
            health.last_event_at = Some(now);
        }
    }

    pub fn sources(&self) -> &[SourceHealth] {
        &self.sources
    }

    /// Errors per name (sources and others) for the heartbeat, by name; only names that
    /// had errors.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let mut errors: BTreeMap<&str, u64> = self
            .other_errors
            .iter()
            .map(|(name, count)| (name.as_str(), *count))
            .collect();
        for source in self.sources.iter().filter(|s| s.errors > 0) {
            *errors.entry(source.id.name.as_str()).or_default() += source.errors;
        }
        errors
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count))
            .collect()
    }

    /// The report `status` reads, as of `now`.
    pub fn report(&self, now: Timestamp) -> SourcesReport {
        SourcesReport {
            version: SOURCES_VERSION,
            updated_at: now,
            sources: self.sources.clone(),
            other_errors: self.other_errors.clone(),
        }
    }
}

/// `sources.json` in the state directory: what the running agent last said about its
/// sources. Written atomically when something changed, at most every
/// `crate::run::SOURCES_PUBLISH`, and once more when the agent stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesReport {
    pub version: u32,
    pub updated_at: Timestamp,
    pub sources: Vec<SourceHealth>,
    /// Errors counted outside the sources (`spool`: signals that could not be written).
    #[serde(default)]
    pub other_errors: BTreeMap<String, u64>,
}

impl SourcesReport {
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("sources.json")
    }

    /// The report in `state_dir`, if there is one this agent understands.
    pub fn read(state_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(Self::file(state_dir)).ok()?;
        serde_json::from_slice::<Self>(&bytes)
            .ok()
            .filter(|report| report.version == SOURCES_VERSION)
    }
}

#[derive(Debug)]
pub struct Health {
    started: Instant,
    sources: Mutex<SourceTable>,
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
            sources: Mutex::new(SourceTable::default()),
            inventory: Mutex::new(None),
        }
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, SourceTable> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the configured sources (starting), in order.
    pub fn register(&self, sources: &[SourceId]) {
        let now = Timestamp::now();
        let mut table = self.table();
        for id in sources {
            table.register(id.clone(), now);
        }
    }

    /// Counts an error of `source` (e.g. `logs:/var/log/auth.log`), keeping its text
    /// for `status`.
    pub fn source_error(&self, source: &str, error: &dyn std::fmt::Display) {
        self.table()
            .error(source, &error.to_string(), Timestamp::now());
    }

    /// Sets what `source` is doing, and why when it is not simply running.
    pub fn source_state(&self, source: &str, state: SourceState, reason: Option<&str>) {
        self.table()
            .set_state(source, state, reason, Timestamp::now());
    }

    /// Counts `count` events (lines, entries, packets…) read by `source`.
    pub fn source_events(&self, source: &str, count: u64) {
        if count > 0 {
            self.table().events(source, count, Timestamp::now());
        }
    }

    /// Records what the host is, for the next heartbeats.
    pub fn set_inventory(&self, inventory: vedetta_common::protocol::HostInventory) {
        *self.inventory.lock().unwrap_or_else(|p| p.into_inner()) = Some(inventory);
    }

    pub fn source_errors(&self) -> Vec<(String, u64)> {
        self.table().errors()
    }

    /// Writes `sources.json` to `file` (atomically) if the sources changed since the
    /// `last` table written, which it then becomes. Returns whether it wrote.
    pub fn publish_sources(
        &self,
        file: &Path,
        last: &mut Option<SourceTable>,
    ) -> std::io::Result<bool> {
        let table = self.table().clone();
        if last.as_ref() == Some(&table) {
            return Ok(false);
        }
        let json = serde_json::to_vec_pretty(&table.report(Timestamp::now()))
            .map_err(std::io::Error::other)?;
        vedetta_common::files::write_atomic(file, &json, 0o600)?;
        *last = Some(table);
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp(1_800_000_000 * SECOND + seconds * SECOND)
    }

    fn id(name: &str, kind: SourceKind) -> SourceId {
        SourceId {
            name: name.into(),
            kind,
            watches: name.into(),
        }
    }

    #[test]
    fn a_source_moves_through_its_states_and_keeps_its_figures() {
        let mut table = SourceTable::default();
        table.register(id("logs:/var/log/auth.log", SourceKind::Logs), at(0));
        table.register(id("host", SourceKind::Host), at(0));
        let log = "logs:/var/log/auth.log";
        assert_eq!(table.sources()[0].state, SourceState::Starting);

        table.set_state(log, SourceState::Waiting, Some("no file yet"), at(1));
        // The same state again with another reason: `since` stays.
        table.set_state(log, SourceState::Waiting, Some("still no file"), at(5));
        let source = &table.sources()[0];
        assert_eq!((source.state, source.since), (SourceState::Waiting, at(1)));
        assert_eq!(source.reason.as_deref(), Some("still no file"));

        table.set_state(log, SourceState::Running, None, at(7));
        table.events(log, 3, at(8));
        table.events(log, 0, at(9));
        table.error(log, "permission denied", at(10));
        let source = &table.sources()[0];
        assert_eq!(
            (source.state, source.since, source.reason.as_deref()),
            (SourceState::Running, at(7), None)
        );
        assert_eq!((source.events, source.last_event_at), (3, Some(at(8))));
        assert_eq!(
            (
                source.errors,
                source.last_error.as_deref(),
                source.last_error_at
            ),
            (1, Some("permission denied"), Some(at(10)))
        );
        // Registering again changes nothing.
        table.register(id(log, SourceKind::Logs), at(11));
        assert_eq!(table.sources().len(), 2);
        assert_eq!(table.sources()[0].events, 3);
    }

    #[test]
    fn errors_of_sources_and_of_other_parts_reach_the_heartbeat_by_name() {
        let mut table = SourceTable::default();
        table.register(id("network", SourceKind::Network), at(0));
        table.register(id("host", SourceKind::Host), at(0));
        table.error("spool", "disk full", at(1));
        table.error("network", "eth0: interface down", at(1));
        table.error("network", "eth0: interface down", at(2));
        assert_eq!(
            table.errors(),
            [("network".to_owned(), 2), ("spool".to_owned(), 1)]
        );
        let report = table.report(at(3));
        assert_eq!(report.other_errors.get("spool"), Some(&1));
        assert_eq!(report.sources.len(), 2);
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let mut table = SourceTable::default();
        table.register(id("journald:0", SourceKind::Journald), at(0));
        let long = "é".repeat(MAX_TEXT);
        table.set_state("journald:0", SourceState::Failed, Some(&long), at(1));
        let reason = table.sources()[0].reason.clone().unwrap_or_default();
        assert!(reason.len() <= MAX_TEXT && reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_report_is_written_when_something_changed_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = SourcesReport::file(dir.path());
        let health = Health::new();
        health.register(&[id("logs:/x", SourceKind::Logs)]);
        let mut last = None;
        assert!(health.publish_sources(&file, &mut last).expect("write"));
        assert!(!health.publish_sources(&file, &mut last).expect("unchanged"));
        health.source_state("logs:/x", SourceState::Running, None);
        health.source_events("logs:/x", 2);
        assert!(health.publish_sources(&file, &mut last).expect("changed"));
        let report = SourcesReport::read(dir.path()).expect("report");
        assert_eq!(report.sources[0].state, SourceState::Running);
        assert_eq!(report.sources[0].events, 2);
        assert_eq!(report.sources[0].id.kind, SourceKind::Logs);
        // A version this agent does not know is not misread.
        let newer = String::from_utf8(std::fs::read(&file).expect("read"))
            .expect("utf-8")
            .replace("\"version\": 1", "\"version\": 2");
        std::fs::write(&file, newer).expect("write");
        assert!(SourcesReport::read(dir.path()).is_none());
    }
}
