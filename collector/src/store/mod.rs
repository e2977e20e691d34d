//! Durable storage behind one interface. SQLite (embedded, WAL) is the first backend;
//! PostgreSQL will follow for several collector nodes sharing one database, so the SQL
//! stays portable (`ON CONFLICT`, BIGINT times in nanoseconds, TEXT ids, no SQLite-only
//! functions in the statements the backends share) and nothing outside this module knows
//! which engine is underneath.

mod audit;
mod correlation;
mod gate;
mod migrations;
mod queries;
mod sqlite;

pub use queries::{Cursor, MAX_PAGE, Page};
pub use sqlite::SqliteStore;

use crate::audit::{AuditHead, AuditRecord, AuditVerification, NewAuditEntry};
use crate::correlate::{Campaign, Event, Incident, Status};
use vedetta_common::protocol::{Ack, Advisory, Batch, Heartbeat};
use vedetta_common::{Indicator, Severity, Signal, Timestamp};

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
    /// The member's own addresses and networks: never correlated as an attacker's.
    pub addresses: Vec<String>,
    /// Days its signals are kept, when it differs from the collector's `[retention]`.
    pub retention_days: Option<u32>,
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

/// Which signals a query wants. Empty fields do not filter. Pages come newest first
/// (by event time) and continue after `cursor`.
#[derive(Debug, Clone, Default)]
pub struct SignalFilter {
    pub org: Option<String>,
    pub agent_id: Option<String>,
    pub kind: Option<String>,
    pub min_severity: Option<Severity>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Signals carrying this indicator value (any type).
    pub indicator: Option<String>,
    pub cursor: Option<Cursor>,
    /// At most this many (0: 1000).
    pub limit: usize,
}

/// Which campaigns a query wants; newest opened first.
#[derive(Debug, Clone, Default)]
pub struct CampaignFilter {
    pub status: Option<Status>,
    /// Campaigns this organisation takes part in.
    pub org: Option<String>,
    pub min_severity: Option<Severity>,
    pub indicator: Option<String>,
    /// Opened at or after (collector time).
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

/// Which incidents a query wants; newest opened first.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<Status>,
    pub org: Option<String>,
    pub min_severity: Option<Severity>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

/// What the collector knows of one indicator value: who saw it, when, doing what.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IndicatorReport {
    pub value: String,
    pub organisations: Vec<IndicatorOrg>,
    pub signals: u64,
    /// Counted over the newest signals only (see `signals`): a very common value is
    /// summarised, not scanned whole.
    pub truncated: bool,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub campaigns: Vec<Campaign>,
    pub advisories: Vec<AdvisoryRecord>,
    pub recent: Vec<StoredSignal>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndicatorOrg {
    pub org: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub signals: u64,
    pub kinds: Vec<String>,
}

/// An advisory as analysts see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdvisoryRecord {
    pub id: String,
    pub seq: u64,
    pub indicator: Indicator,
    pub severity: Severity,
    pub description: String,
    pub published_at: Timestamp,
    pub published_by: String,
    pub expires_at: Timestamp,
    pub withdrawn_at: Option<Timestamp>,
    pub campaign_id: Option<String>,
}

impl AdvisoryRecord {
    /// The advisory as it travels to agents.
    pub fn to_wire(&self) -> Advisory {
        Advisory {
            seq: self.seq,
            id: self.id.clone(),
            indicator: self.indicator.clone(),
            severity: self.severity,
            description: self.description.clone(),
            published_at: self.published_at,
            expires_at: self.expires_at,
            withdrawn: self.withdrawn_at.is_some(),
        }
    }
}

/// A new advisory from an analyst.
#[derive(Debug, Clone)]
pub struct NewAdvisory {
    pub indicator: Indicator,
    pub severity: Severity,
    pub description: String,
    pub expires_at: Timestamp,
    pub published_by: String,
}

/// Roles of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Analyst,
    Auditor,
    /// Sees only its own organisation's signals, and the advisories.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Analyst => "analyst",
            Self::Auditor => "auditor",
            Self::Member => "member",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Admin, Self::Analyst, Self::Auditor, Self::Member]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A person or script of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiUser {
    pub name: String,
    pub role: Role,
    pub org: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Which audit entries a query wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Continues after this entry (the cursor's `at` is a sequence number).
    pub cursor: Option<Cursor>,
    /// Chain order (exports) instead of newest first.
    pub oldest_first: bool,
    /// At most this many (0: 1000).
    pub limit: usize,
}

/// A legal hold: while active, purging spares an organisation's signals (`scope` `org`)
/// or a campaign's (`scope` `campaign`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegalHold {
    pub id: String,
    pub scope: String,
    pub target: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: Timestamp,
    pub released_by: Option<String>,
    pub released_at: Option<Timestamp>,
}

/// What one retention purge did (each organisation's part is also in the audit log).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    pub signals_removed: u64,
    /// Old enough to go, but in a campaign under a legal hold.
    pub signals_kept_for_campaigns: u64,
    /// Organisations skipped whole for a legal hold.
    pub orgs_held: Vec<String>,
}

/// What one group commit did.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// One per batch, in order.
    pub acks: Vec<Ack>,
    /// Campaigns and incidents opened or grown.
    pub events: Vec<Event>,
}

/// Everything the collector keeps. Implementations are used from one thread at a time
/// (`&mut self`): each async task that needs the store borrows a connection of its own.
pub trait Store: Send {
    fn add_org(&mut self, id: &str, name: &str, now: Timestamp) -> Result<(), StoreError>;
    fn orgs(&mut self) -> Result<Vec<Org>, StoreError>;
    /// Declares the organisation's own addresses and networks (replacing the old list).
    fn set_org_addresses(&mut self, id: &str, addresses: &[String]) -> Result<(), StoreError>;

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
    ///
    /// With a correlator set, each new signal is correlated in the same transaction:
    /// campaigns and incidents are committed with the signals that made them.
    fn ingest(&mut self, batches: &[IngestBatch]) -> Result<IngestOutcome, StoreError>;

    /// A page of signals, newest first.
    fn signals(&mut self, filter: &SignalFilter) -> Result<Page<StoredSignal>, StoreError>;
    fn count_signals(&mut self) -> Result<u64, StoreError>;

    /// Closes campaigns and incidents quiet for the correlator's quiet period.
    fn close_quiet(&mut self, now: Timestamp) -> Result<Vec<Event>, StoreError>;
    fn campaigns(&mut self, filter: &CampaignFilter) -> Result<Page<Campaign>, StoreError>;
    fn count_open_campaigns(&mut self) -> Result<u64, StoreError>;
    fn campaign(&mut self, id: &str) -> Result<Option<Campaign>, StoreError>;
    /// The signals of a campaign, newest first, at most `limit`.
    fn campaign_signals(&mut self, id: &str, limit: usize)
    -> Result<Vec<StoredSignal>, StoreError>;
    fn incidents(&mut self, filter: &IncidentFilter) -> Result<Page<Incident>, StoreError>;
    fn indicator(&mut self, value: &str) -> Result<IndicatorReport, StoreError>;

    /// Adds an advisory at the end of the feed.
    fn publish_advisory(
        &mut self,
        advisory: &NewAdvisory,
        now: Timestamp,
    ) -> Result<AdvisoryRecord, StoreError>;
    /// The end of the advisory feed (0 when empty).
    fn max_advisory_seq(&mut self) -> Result<u64, StoreError>;
    /// Withdraws an advisory (it moves to the end of the feed so agents hear of it).
    fn withdraw_advisory(&mut self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Advisories in feed order after `after_seq`, at most `limit`. Expired ones are
    /// left out unless `include_expired`.
    fn advisories(
        &mut self,
        after_seq: u64,
        now: Timestamp,
        include_expired: bool,
        limit: usize,
    ) -> Result<Vec<AdvisoryRecord>, StoreError>;

    fn add_user(&mut self, user: &ApiUser, token_hash: &str) -> Result<(), StoreError>;
    /// The user a token belongs to, if the token is known and not revoked.
    fn user_by_token(&mut self, token_hash: &str) -> Result<Option<ApiUser>, StoreError>;
    fn users(&mut self) -> Result<Vec<ApiUser>, StoreError>;
    fn revoke_user(&mut self, name: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// Sets how long an organisation's signals are kept (`None`: the global setting).
    fn set_org_retention(&mut self, id: &str, days: Option<u32>) -> Result<(), StoreError>;
    /// Appends entries to the audit chain, in order; returns their sequence numbers.
    fn append_audit(&mut self, entries: &[NewAuditEntry]) -> Result<Vec<u64>, StoreError>;
    fn audit_log(&mut self, filter: &AuditFilter) -> Result<Page<AuditRecord>, StoreError>;
    /// Walks the whole chain; with `expected_head`, also checks that it still holds it.
    fn verify_audit(
        &mut self,
        expected_head: Option<AuditHead>,
    ) -> Result<AuditVerification, StoreError>;
    /// Active holds, or all of them.
    fn holds(&mut self, include_released: bool) -> Result<Vec<LegalHold>, StoreError>;
    /// Places a hold; its target (organisation or campaign) must exist.
    fn place_hold(&mut self, hold: &LegalHold) -> Result<(), StoreError>;
    /// Releases an active hold; `None` if there is none with this id.
    fn release_hold(
        &mut self,
        id: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<Option<LegalHold>, StoreError>;
    /// Deletes signals past their organisation's retention (`default_days` when it has
    /// none of its own; 0 keeps forever), sparing held organisations and campaigns, and
    /// records each organisation's purge in the audit chain in `actor`'s name
    /// (`collector` for the scheduled purge).
    fn purge(
        &mut self,
        now: Timestamp,
        default_days: u32,
        actor: &str,
    ) -> Result<PurgeReport, StoreError>;
}
