//! `collector.toml` in the data directory: written by `init`, read by `serve`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use vedetta_common::duration::serde_human;

pub const FILE_NAME: &str = "collector.toml";

/// The collector's configuration. Every key is optional except `listen`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// UDP address of the QUIC endpoint that agents connect and enroll to.
    pub listen: SocketAddr,
    /// TCP address of the HTTP API and dashboard.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub correlation: crate::correlate::CorrelationConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// `[retention]`: how long signals are kept. An organisation may have its own
/// (`vedetta-collector org retention ORG --days N`); legal holds suspend purging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a signal is kept after its last event; 0 keeps signals forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// How often the purge runs. Each run is recorded in the audit log.
    #[serde(default = "default_purge_every", with = "serde_human")]
    pub purge_every: Duration,
}

fn default_retention_days() -> u32 {
    365
}
fn default_purge_every() -> Duration {
    Duration::from_secs(3600)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retention_days: default_retention_days(),
            purge_every: default_purge_every(),
        }
    }
}

/// `[api]`: the HTTPS API and its live stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Extra host names and addresses the API's certificate is valid for (besides
    /// localhost, the loopback addresses and the `http` address).
    #[serde(default)]
    pub tls_names: Vec<String>,
    /// A certificate chain (PEM) the operator provides for the API instead of one from
    /// the collector's CA, e.g. from the organisation's own PKI. With `tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<std::path::PathBuf>,
    /// The private key (PEM) of `tls_certificate`; keep it readable by the service only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Database connections serving API reads at once.
    #[serde(default = "default_read_connections")]
    pub read_connections: usize,
    /// How often the advisory feed looks for advisories published by other nodes.
    #[serde(default = "default_feed_poll", with = "serde_human")]
    pub feed_poll: Duration,
    /// How often quiet campaigns and incidents are closed.
    #[serde(default = "default_close_every", with = "serde_human")]
    pub close_every: Duration,
}

fn default_read_connections() -> usize {
    4
}
fn default_feed_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_close_every() -> Duration {
    Duration::from_secs(60)
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            tls_names: Vec::new(),
            tls_certificate: None,
            tls_key: None,
            read_connections: default_read_connections(),
            feed_poll: default_feed_poll(),
            close_every: default_close_every(),
        }
    }
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

/// Limits of the ingest path: everything an agent can make the collector hold is bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Most signals accepted in one batch (at most 5000); agents are told at connection.
    #[serde(default = "default_max_batch_signals")]
    pub max_batch_signals: usize,
    /// Streams one agent connection may have open at once (bounds memory per agent).
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// A connection with no traffic (agents heartbeat) for this long is closed.
    #[serde(default = "default_idle_timeout", with = "serde_human")]
    pub idle_timeout: Duration,
    /// How long a stream may take to deliver its first frame (a batch, or hello).
    #[serde(default = "default_frame_timeout", with = "serde_human")]
    pub frame_timeout: Duration,
    /// Bytes of batch frames being received or committed at once, over all agents;
    /// beyond this, agents wait (their streams are not read).
    #[serde(default = "default_memory_budget")]
    pub memory_budget_bytes: usize,
    /// How often revocations made by `agent revoke` are applied to live connections.
    #[serde(default = "default_revocation_poll", with = "serde_human")]
    pub revocation_poll: Duration,
    /// MiB of database pages the ingest writer keeps in memory: more means fewer reads
    /// of the indexes it updates for every signal.
    #[serde(default = "default_writer_cache_mib")]
    pub writer_cache_mib: u32,
}

fn default_writer_cache_mib() -> u32 {
    256
}

fn default_max_batch_signals() -> usize {
    5_000
}
fn default_max_streams() -> u32 {
    16
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_frame_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_memory_budget() -> usize {
    256 * 1024 * 1024
}
fn default_revocation_poll() -> Duration {
    Duration::from_secs(1)
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_signals: default_max_batch_signals(),
            max_streams_per_connection: default_max_streams(),
            idle_timeout: default_idle_timeout(),
            frame_timeout: default_frame_timeout(),
            memory_budget_bytes: default_memory_budget(),
            revocation_poll: default_revocation_poll(),
            writer_cache_mib: default_writer_cache_mib(),
        }
    }
}

impl CollectorConfig {
    pub fn new(listen: SocketAddr, http: SocketAddr) -> Self {
        Self {
            listen,
            http,
            ingest: IngestConfig::default(),
            api: ApiConfig::default(),
            correlation: crate::correlate::CorrelationConfig::default(),
            retention: RetentionConfig::default(),
        }
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            anyhow::anyhow!(
                "cannot read {}: {error} (run `vedetta-collector init --data-dir {}` first)",
                path.display(),
                data_dir.display()
            )
        })?;
        toml::from_str(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# Vedetta collector configuration (written by `vedetta-collector init`).\n{}",
            toml::to_string_pretty(self).unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back_and_unknown_keys_are_refused() {
        let config = CollectorConfig::new("127.0.0.1:4433".parse().expect("addr"), default_http());
        let back: CollectorConfig = toml::from_str(&config.to_toml()).expect("parse");
        assert_eq!(back.listen, config.listen);
        assert_eq!(back.ingest.idle_timeout, Duration::from_secs(90));
        let error =
            toml::from_str::<CollectorConfig>("listen = \"127.0.0.1:1\"\nlisten_port = 3\n")
                .expect_err("unknown key");
        assert!(error.to_string().contains("listen_port"), "{error}");
    }
}
