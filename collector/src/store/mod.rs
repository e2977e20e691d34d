//! Durable storage behind one interface. SQLite (embedded, WAL) is the first backend;
//! PostgreSQL will follow for several collector nodes sharing one database, so the SQL
//! stays portable (`ON CONFLICT`, BIGINT times in nanoseconds, TEXT ids, no SQLite-only
//! functions in the statements the backends share) and nothing outside this module knows
//! which engine is underneath.

mod migrations;
mod sqlite;

pub use sqlite::SqliteStore;

use vedetta_common::protocol::{Ack, Batch, Heartbeat};
use vedetta_common::{Severity, Signal, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database at {path} is at schema version {found}, newer than this build knows ({known}); upgrade the collector"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// An organisation taking part in the partnership.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// An enrolled agent as the collector knows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentRecord {
    pub id: String,
    pub org: String,
    pub label: String,
    pub cert_fingerprint: String,
    pub enrolled_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub agent_version: Option<String>,
    pub uptime_s: Option<u64>,
    pub spool_depth: Option<u64>,
    pub drops_total: Option<u64>,
    pub source_errors: Vec<(String, u64)>,
    /// The host, as its agent last described it.
    pub inventory: Option<vedetta_common::protocol::HostInventory>,
}

impl AgentRecord {
    /// A newly enrolled agent: nothing heard from it yet.
    pub fn enrolled(
        id: String,
        org: String,
        label: String,
        cert_fingerprint: String,
        at: Timestamp,
    ) -> Self {
        Self {
            id,
            org,
            label,
            cert_fingerprint,
            enrolled_at: at,
            revoked_at: None,
            last_seen: None,
            agent_version: None,
            uptime_s: None,
            spool_depth: None,
            drops_total: None,
            source_errors: Vec::new(),
            inventory: None,
        }
    }
}

/// Why an enrollment token was not accepted. Each reason is told to the agent as is:
/// the token is a one-time secret, so naming the reason reveals nothing useful.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("unknown enrollment token")]
    Unknown,
    #[error("enrollment token already used")]
    AlreadyUsed,
    #[error("enrollment token expired")]
    Expired,
    #[error("{0}")]
    Rejected(String),
}

/// A signal batch received from an authenticated agent, waiting to be committed.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub org: String,
    pub agent_id: String,
    pub received_at: Timestamp,
    pub batch: Batch,
}

/// A stored signal with the identity the collector attached to it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredSignal {
    pub org: String,
    pub agent_id: String,
    pub received_at: Timestamp,
    #[serde(flatten)]
    pub signal: Signal,
}

/// Which signals a query wants. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct SignalFilter {
    pub org: Option<String>,
    pub agent_id: Option<String>,
    pub kind: Option<String>,
    pub min_severity: Option<Severity>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
}

/// Everything the collector keeps. Implementations are used from one thread at a time
/// (`&mut self`): each async task that needs the store borrows a connection of its own.
pub trait Store: Send {
    fn add_org(&mut self, id: &str, name: &str, now: Timestamp) -> Result<(), StoreError>;
    fn orgs(&mut self) -> Result<Vec<Org>, StoreError>;

    /// Keeps the hash of a new one-time enrollment token.
    fn create_enrollment_token(
        &mut self,
        token_hash: &str,
        org: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Atomically: checks the token, asks `issue(org)` for the agent to record (signing its
    /// certificate), records it and marks the token used. Nothing is kept if `issue` fails.
    fn enroll_agent(
        &mut self,
        token_hash: &str,
        now: Timestamp,
        issue: &mut dyn FnMut(&str) -> Result<AgentRecord, String>,
    ) -> Result<Result<AgentRecord, TokenRefusal>, StoreError>;

    fn agent(&mut self, id: &str) -> Result<Option<AgentRecord>, StoreError>;
    fn agents(&mut self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Marks the agent revoked; false if it was unknown. Revoking twice keeps the first time.
    fn revoke_agent(&mut self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Ids of every revoked agent.
    fn revoked_agents(&mut self) -> Result<Vec<String>, StoreError>;
    fn record_heartbeat(
        &mut self,
        agent_id: &str,
        heartbeat: &Heartbeat,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Commits all `batches` in one transaction and returns one ack per batch, in order.
    /// Signals already stored (same id) are counted as duplicates, not stored again.
    ///
    /// Deduplication is by signal id, not by batch sequence number: acks can return out
    /// of order, and an agent whose spool was recreated starts its numbering again, so
    /// "sequence already seen" would drop new signals. A resent batch carries the same
    /// ids and is recognised just as well; `last_batch_seq` is kept for operators.
    fn ingest(&mut self, batches: &[IngestBatch]) -> Result<Vec<Ack>, StoreError>;

    fn signals(&mut self, filter: &SignalFilter) -> Result<Vec<StoredSignal>, StoreError>;
    fn count_signals(&mut self) -> Result<u64, StoreError>;
}
