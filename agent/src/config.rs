//! The agent's TOML configuration. Every field's doc comment is the user's documentation;
//! unknown keys are errors (a typo must not silently disable a setting).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vedetta_common::duration::serde_human;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the agent keeps its key, certificates, spool and read positions. A relative
    /// path is relative to the configuration file's folder.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// A folder of `*.toml` rule files that add to the built-in rules or replace one of
    /// them (same `id`). A relative path is relative to the configuration file's folder.
    #[serde(default)]
    pub rules_dir: Option<PathBuf>,
    #[serde(default)]
    pub collector: CollectorSection,
    #[serde(default)]
    pub spool: SpoolSection,
    #[serde(default)]
    pub uplink: UplinkSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub sources: SourcesSection,
    /// Indicators matched by every source besides those the collector pushes.
    #[serde(default)]
    pub advisories: AdvisoriesSection,
    #[serde(default)]
    pub detection: DetectionSection,
    #[serde(default)]
    pub privacy: crate::privacy::PrivacyConfig,
}

/// What the agent watches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSection {
    /// Log files to follow (`[[sources.logs]]`).
    #[serde(default)]
    pub logs: Vec<LogSourceConfig>,
    /// The systemd journal (`[[sources.journald]]`).
    #[serde(default)]
    pub journald: Vec<crate::sources::journald::JournaldConfig>,
    /// File integrity and ransomware (`[sources.files]`).
    #[serde(default)]
    pub files: Option<crate::sources::files::FilesConfig>,
    /// Packets: scans, floods, advisories, DNS tunnels (`[sources.network]`).
    #[serde(default)]
    pub network: Option<crate::sources::network::NetworkConfig>,
    /// Processes: miners, programs run from /tmp or deleted (`[sources.host]`).
    #[serde(default)]
    pub host: Option<crate::sources::host::HostConfig>,
}

/// `[advisories]`: the member's own lists of indicators. The collector's advisories
/// need no configuration: they arrive with the connection and are kept in `state_dir`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoriesSection {
    /// Files of indicators to match, one JSON object a line: `{"type": "ip" | "cidr" |
    /// "domain" | "sha256", "value": "…", "advisory": "…", "severity": "high"}`, with
    /// optional `"expires_at"` (RFC 3339) and `"description"`. Edits are picked up
    /// within a second; a missing file matches nothing until it exists. A relative path
    /// is relative to the configuration file's folder.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// One group of log files of one format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSourceConfig {
    /// Files or glob patterns (`/var/log/nginx/*.log`); rotated files are followed.
    pub paths: Vec<String>,
    /// `syslog` (classic, ISO 8601 or RFC 5424, detected per line), `nginx` (also
    /// Apache: combined or common), `journald-json`, or `plain` (bare messages, as
    /// `sshd -E FILE` writes them).
    #[serde(default = "default_format")]
    pub format: crate::sources::logs::format::Format,
    /// For `plain` files: the program that writes them.
    #[serde(default = "default_program")]
    pub program: String,
    /// UTC offset of timestamps that carry none (classic syslog), e.g. `+01:00`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// Where to start in files found at the very first start: `end` (only what is
    /// written from now on) or `beginning`. Files that appear later (rotation, new
    /// files matching a pattern) are always read from their beginning.
    #[serde(default = "default_start_at")]
    pub start_at: StartAt,
    /// Longer lines are cut to this many bytes (and counted).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

fn default_format() -> crate::sources::logs::format::Format {
    crate::sources::logs::format::Format::Syslog
}
fn default_program() -> String {
    "sshd".into()
}
fn default_utc_offset() -> String {
    "Z".into()
}
fn default_start_at() -> StartAt {
    StartAt::End
}
fn default_max_line_bytes() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    End,
    Beginning,
}

/// How detections are reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSection {
    /// Least time between two updates of an ongoing attack's signal.
    #[serde(default = "default_update_every", with = "serde_human")]
    pub update_every: Duration,
    /// Most sources (or users) each rule tracks at once; beyond, the least recently
    /// seen are forgotten. Bounds the agent's memory under a flood of addresses.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_update_every() -> Duration {
    Duration::from_secs(600)
}
fn default_max_keys() -> usize {
    50_000
}

impl Default for DetectionSection {
    fn default() -> Self {
        Self {
            update_every: default_update_every(),
            max_keys: default_max_keys(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/vedetta-agent")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSection {
    /// `HOST:PORT` of the collector. When absent, the address used at enrollment.
    pub address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Most signals kept on disk while the collector is unreachable. When full, the
    /// oldest signals of the lowest severity are dropped first, and the loss is counted
    /// and reported in the agent's health signal and heartbeat.
    #[serde(default = "default_max_signals")]
    pub max_signals: u64,
}

fn default_max_signals() -> u64 {
    100_000
}

impl Default for SpoolSection {
    fn default() -> Self {
        Self {
            max_signals: default_max_signals(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// Most signals in one batch.
    #[serde(default = "default_batch_max")]
    pub batch_max_signals: usize,
    /// Batches sent but not yet acknowledged, at most.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How often the agent tells the collector it is alive (and how it is).
    #[serde(default = "default_heartbeat", with = "serde_human")]
    pub heartbeat_interval: Duration,
    /// How long one connection attempt may take before it counts as failed.
    #[serde(default = "default_connect_timeout", with = "serde_human")]
    pub connect_timeout: Duration,
    /// First wait before reconnecting; doubles up to `reconnect_max`, with jitter.
    #[serde(default = "default_reconnect_min", with = "serde_human")]
    pub reconnect_min: Duration,
    #[serde(default = "default_reconnect_max", with = "serde_human")]
    pub reconnect_max: Duration,
    /// On SIGTERM, how long the agent keeps delivering what is spooled before it exits
    /// (what is not delivered stays in the spool for next time).
    #[serde(default = "default_shutdown_grace", with = "serde_human")]
    pub shutdown_grace: Duration,
}

fn default_batch_max() -> usize {
    500
}
fn default_in_flight() -> usize {
    8
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(5)
}

impl Default for UplinkSection {
    fn default() -> Self {
        Self {
            batch_max_signals: default_batch_max(),
            max_in_flight: default_in_flight(),
            heartbeat_interval: default_heartbeat(),
            connect_timeout: default_connect_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// How often the agent sends an `agent_health` signal (uptime, spool, drops, source
    /// errors). One is also sent soon after signals are dropped.
    #[serde(default = "default_health_interval", with = "serde_human")]
    pub interval: Duration,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            interval: default_health_interval(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    /// Reads and checks a configuration file; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if config.state_dir.is_relative() {
            config.state_dir = base.join(&config.state_dir);
        }
        for file in &mut config.advisories.files {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|error| error.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let uplink = &self.uplink;
        if uplink.batch_max_signals == 0 || uplink.batch_max_signals > 5_000 {
            return Err("uplink.batch_max_signals must be between 1 and 5000".into());
        }
        if uplink.max_in_flight == 0 || uplink.max_in_flight > 64 {
            return Err("uplink.max_in_flight must be between 1 and 64".into());
        }
        if uplink.reconnect_min.is_zero() || uplink.reconnect_min > uplink.reconnect_max {
            return Err("uplink.reconnect_min must be above zero and at most reconnect_max".into());
        }
        if uplink.heartbeat_interval < Duration::from_millis(100) {
            return Err("uplink.heartbeat_interval must be at least 100ms".into());
        }
        if self.spool.max_signals < 10 {
            return Err("spool.max_signals must be at least 10".into());
        }
        if self.health.interval < Duration::from_millis(100) {
            return Err("health.interval must be at least 100ms".into());
        }
        for (index, source) in self.sources.logs.iter().enumerate() {
            if source.paths.is_empty() {
                return Err(format!("sources.logs[{index}].paths is empty"));
            }
            crate::sources::logs::format::time::parse_offset(&source.utc_offset)
                .map_err(|e| format!("sources.logs[{index}].utc_offset: {e}"))?;
            if !(256..=16 * 1024 * 1024).contains(&source.max_line_bytes) {
                return Err(format!(
                    "sources.logs[{index}].max_line_bytes must be between 256 and 16777216"
                ));
            }
        }
        if self.detection.max_keys < 100 {
            return Err("detection.max_keys must be at least 100".into());
        }
        for network in &self.privacy.internal_networks {
            crate::privacy::Network::parse(network)
                .map_err(|e| format!("privacy.internal_networks: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_configuration_is_valid() {
        let text = include_str!("../../packaging/agent.toml");
        let config = AgentConfig::parse(text).expect("shipped config");
        assert_eq!(config.spool.max_signals, 100_000);
    }

    #[test]
    fn errors_are_precise() {
        let error = AgentConfig::parse("[spool]\nmax_signal = 5\n").expect_err("typo");
        assert!(
            error.contains("max_signal") && error.contains("line 2"),
            "{error}"
        );
        let error = AgentConfig::parse("[uplink]\nheartbeat_interval = \"5 parsecs\"\n")
            .expect_err("bad duration");
        assert!(
            error.contains("heartbeat_interval") || error.contains("line 2"),
            "{error}"
        );
        let error = AgentConfig::parse("[uplink]\nmax_in_flight = 0\n").expect_err("range");
        assert!(error.contains("max_in_flight"), "{error}");
    }
}
