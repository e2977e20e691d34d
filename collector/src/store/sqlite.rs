//! The SQLite backend: one database file in the data directory, WAL journal, and
//! `synchronous=FULL` so that a commit (and therefore an ack) survives power loss, not
//! just a crash of the process. Throughput comes from group commit in the ingest writer,
//! which puts many batches in one transaction, not from weaker durability.

use super::gate::WriteGate;
use super::migrations::{MIGRATIONS, latest};
use super::queries;
use super::{
    AdvisoryRecord, AgentRecord, ApiUser, CampaignFilter, IncidentFilter, IndicatorReport,
    IngestBatch, IngestOutcome, NewAdvisory, Org, Page, SignalFilter, Store, StoreError,
    StoredSignal, TokenRefusal,
};
use super::{AuditFilter, LegalHold, PurgeReport, audit};
use crate::audit::{AuditHead, AuditRecord, AuditVerification, NewAuditEntry, Verifier};
use crate::correlate::{Campaign, Correlator, Event, Incident};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vedetta_common::Timestamp;
use vedetta_common::protocol::{Ack, Heartbeat};

#[derive(Debug)]
pub struct SqliteStore {
    pub(super) connection: Connection,
    /// Set on the connection that ingests: new signals are correlated as they commit.
    pub(super) correlator: Option<Arc<Correlator>>,
    /// Turns among this process's writers of the same file (see `gate`).
    gate: Arc<WriteGate>,
    /// Audit entries to commit with the next administrative act (see `audit_next`).
    pending_audit: Vec<NewAuditEntry>,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An act that found nothing to act on: `None` rather than an error (the audited
/// transaction was rolled back, so its entry went with it).
fn unless_missing<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        // Several processes (serve, the admin CLI) share the file: wait for locks a while
        // instead of failing at once.
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Self {
            connection,
            correlator: None,
            gate: WriteGate::of(path),
            pending_audit: Vec::new(),
        };
        store.migrate(path)?;
        Ok(store)
    }

    /// Lets this connection keep up to `mib` MiB of the database in its own page cache
    /// (SQLite's default is 2 MiB). The ingest writer touches the signal, indicator and
    /// sighting indexes of every signal: with the default most of its time went to reading
    /// pages back from the kernel (BENCHMARKS.md, issue 6).
    pub fn set_cache_mib(&mut self, mib: u32) -> Result<(), StoreError> {
        self.connection
            .pragma_update(None, "cache_size", -(i64::from(mib) * 1024))?;
        Ok(())
    }

    /// Correlates every signal this connection ingests from now on.
    pub fn set_correlator(&mut self, correlator: Arc<Correlator>) {
        self.correlator = Some(correlator);
    }

    pub fn correlator(&self) -> Option<&Arc<Correlator>> {
        self.correlator.as_ref()
    }

    /// Attaches an audit entry to the next administrative act of this connection (adding
    /// an organisation, a user, a token, a hold...): both commit in one transaction, or
    /// neither does, so no act goes unrecorded and no record tells of an act that failed.
    pub fn audit_next(&mut self, entry: NewAuditEntry) {
        self.pending_audit.push(entry);
    }

    /// Runs an administrative act in one immediate transaction with the entries attached
    /// by `audit_next` (dropped if the act fails).
    fn audited<T>(
        &mut self,
        act: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pending = std::mem::take(&mut self.pending_audit);
        let _turn = self.gate.enter();
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = act(&tx)?;
        audit::append(&tx, &pending)?;
        tx.commit()?;
        Ok(value)
    }

    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        self.connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )?;
        let current: i64 = self.connection.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )?;
        if current > latest() {
            return Err(StoreError::SchemaTooNew {
                path: path.display().to_string(),
                found: current,
                known: latest(),
            });
        }
        for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have migrated while we waited for the lock.
            let done: bool = transaction.query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |row| row.get(0),
            )?;
            if !done {
                transaction.execute_batch(statements)?;
                transaction.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, Timestamp::now().0],
                )?;
            }
            transaction.commit()?;
        }
        Ok(())
    }

    fn row_to_agent(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRecord> {
        let source_errors: Option<String> = row.get(12)?;
        Ok(AgentRecord {
            id: row.get(0)?,
            org: row.get(1)?,
            label: row.get(2)?,
            cert_fingerprint: row.get(3)?,
            enrolled_at: Timestamp(row.get(4)?),
            revoked_at: row.get::<_, Option<i64>>(5)?.map(Timestamp),
            last_seen: row.get::<_, Option<i64>>(6)?.map(Timestamp),
            agent_version: row.get(7)?,
            uptime_s: row.get::<_, Option<i64>>(8)?.map(from_i64),
            spool_depth: row.get::<_, Option<i64>>(9)?.map(from_i64),
            drops_total: row.get::<_, Option<i64>>(10)?.map(from_i64),
            source_errors: source_errors
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default(),
            inventory: row
                .get::<_, Option<String>>(13)?
                .and_then(|text| serde_json::from_str(&text).ok()),
        })
    }
}

const AGENT_COLUMNS: &str = "id, org, label, cert_fingerprint, enrolled_at, revoked_at, last_seen, \
     agent_version, uptime_s, spool_depth, drops_total, last_batch_seq, source_errors, inventory";

impl Store for SqliteStore {
    fn add_org(&mut self, id: &str, name: &str, now: Timestamp) -> Result<(), StoreError> {
        self.audited(|connection| {
            let inserted = connection.execute(
                "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
                params![id, name, now.0],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(format!("org {id}")));
            }
            Ok(())
        })
    }

    fn orgs(&mut self) -> Result<Vec<Org>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT id, name, created_at, addresses, retention_days FROM orgs ORDER BY id",
        )?;
        let orgs = statement
            .query_map([], |row| {
                Ok(Org {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: Timestamp(row.get(2)?),
                    addresses: serde_json::from_str(&row.get::<_, String>(3)?).unwrap_or_default(),
                    retention_days: row
                        .get::<_, Option<i64>>(4)?
                        .and_then(|days| u32::try_from(days).ok()),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(orgs)
    }

    fn set_org_addresses(&mut self, id: &str, addresses: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_string(addresses)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.audited(|connection| {
            let updated = connection.execute(
                "UPDATE orgs SET addresses = ?1 WHERE id = ?2",
                params![json, id],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!("org {id}")));
            }
            Ok(())
        })
    }

    fn set_org_retention(&mut self, id: &str, days: Option<u32>) -> Result<(), StoreError> {
        self.audited(|connection| {
            let updated = connection.execute(
                "UPDATE orgs SET retention_days = ?1 WHERE id = ?2",
                params![days.map(i64::from), id],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!("org {id}")));
            }
            Ok(())
        })
    }

    fn create_enrollment_token(
        &mut self,
        token_hash: &str,
        org: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.audited(|connection| {
            queries::require_org(connection, org)?;
            connection.execute(
                "INSERT INTO enrollment_tokens (token_hash, org, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash, org, now.0, expires_at.0],
            )?;
            Ok(())
        })
    }

    fn enroll_agent(
        &mut self,
        token_hash: &str,
        now: Timestamp,
        issue: &mut dyn FnMut(&str) -> Result<AgentRecord, String>,
    ) -> Result<Result<AgentRecord, TokenRefusal>, StoreError> {
        let _turn = self.gate.enter();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let token: Option<(String, i64, Option<i64>)> = transaction
            .query_row(
                "SELECT org, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?1",
                [token_hash],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let org = match token {
            None => return Ok(Err(TokenRefusal::Unknown)),
            Some((_, _, Some(_))) => return Ok(Err(TokenRefusal::AlreadyUsed)),
            Some((_, expires_at, None)) if expires_at <= now.0 => {
                return Ok(Err(TokenRefusal::Expired));
            }
            Some((org, _, None)) => org,
        };
        let agent = match issue(&org) {
            Ok(agent) => agent,
            Err(reason) => return Ok(Err(TokenRefusal::Rejected(reason))),
        };
        transaction.execute(
            "INSERT INTO agents (id, org, label, cert_fingerprint, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![agent.id, agent.org, agent.label, agent.cert_fingerprint, agent.enrolled_at.0],
        )?;
        transaction.execute(
            "UPDATE enrollment_tokens SET used_at = ?1, agent_id = ?2 WHERE token_hash = ?3",
            params![now.0, agent.id, token_hash],
        )?;
        transaction.commit()?;
        Ok(Ok(agent))
    }

    fn agent(&mut self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        Ok(self
            .connection
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
                [id],
                Self::row_to_agent,
            )
            .optional()?)
    }

    fn agents(&mut self) -> Result<Vec<AgentRecord>, StoreError> {
        let mut statement = self.connection.prepare(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY org, id"
        ))?;
        let agents = statement
            .query_map([], Self::row_to_agent)?
            .collect::<Result<_, _>>()?;
        Ok(agents)
    }

    fn revoke_agent(&mut self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let revoked = self.audited(|connection| {
            let known: bool = connection.query_row(
                "SELECT EXISTS (SELECT 1 FROM agents WHERE id = ?1)",
                [id],
                |row| row.get(0),
            )?;
            if !known {
                return Err(StoreError::NotFound(format!("agent {id}")));
            }
            connection.execute(
                "UPDATE agents SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![now.0, id],
            )?;
            Ok(())
        });
        Ok(unless_missing(revoked)?.is_some())
    }

    fn revoked_agents(&mut self) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT id FROM agents WHERE revoked_at IS NOT NULL")?;
        let ids = statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    fn record_heartbeat(
        &mut self,
        agent_id: &str,
        heartbeat: &Heartbeat,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.enter();
        let errors = serde_json::to_string(&heartbeat.source_errors)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let inventory = heartbeat
            .inventory
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.connection.execute(
            "UPDATE agents SET last_seen = ?1, agent_version = ?2, uptime_s = ?3, spool_depth = ?4,
                 drops_total = ?5, source_errors = ?6, inventory = coalesce(?7, inventory)
             WHERE id = ?8",
            params![
                now.0,
                heartbeat.agent_version,
                to_i64(heartbeat.uptime_s),
                to_i64(heartbeat.spool_depth),
                to_i64(heartbeat.drops_total),
                errors,
                inventory,
                agent_id
            ],
        )?;
        Ok(())
    }

    fn ingest(&mut self, batches: &[IngestBatch]) -> Result<IngestOutcome, StoreError> {
        let _turn = self.gate.enter();
        let correlator = self.correlator.clone();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut acks = Vec::with_capacity(batches.len());
        let mut events = Vec::new();
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO signals (id, org, agent_id, kind, severity, first_seen, last_seen, count, received_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
            )?;
            let mut owner =
                transaction.prepare_cached("SELECT agent_id FROM signals WHERE id = ?1")?;
            let mut progress = transaction.prepare_cached(
                "UPDATE agents SET last_batch_seq = ?1, last_seen = ?2 WHERE id = ?3 AND last_batch_seq < ?1",
            )?;
            let mut id_text = uuid::Uuid::encode_buffer();
            for item in batches {
                let mut ack = Ack {
                    seq: item.batch.seq,
                    accepted: 0,
                    duplicates: 0,
                    rejected: 0,
                };
                for signal in &item.batch.signals {
                    if signal.validate().is_err() {
                        ack.rejected += 1;
                        continue;
                    }
                    let body = serde_json::to_string(signal)
                        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                    let id = &*signal.id.0.hyphenated().encode_lower(&mut id_text);
                    let inserted = insert.execute(params![
                        id,
                        item.org,
                        item.agent_id,
                        signal.kind,
                        signal.severity.rank(),
                        signal.first_seen.0,
                        signal.last_seen.0,
                        to_i64(signal.count),
                        item.received_at.0,
                        body,
                    ])?;
                    if inserted == 1 {
                        ack.accepted += 1;
                        super::correlation::on_signal(
                            &transaction,
                            correlator.as_deref(),
                            item.received_at,
                            super::correlation::NewSignal {
                                org: &item.org,
                                agent_id: &item.agent_id,
                                id,
                                signal,
                            },
                            &mut events,
                        )?;
                    } else {
                        // A resend by the same agent is a duplicate; an id that another
                        // agent already used is refused, so that no agent can shadow
                        // another's signals by reusing their ids.
                        let stored_by: String = owner.query_row([id], |row| row.get(0))?;
                        if stored_by == item.agent_id {
                            ack.duplicates += 1;
                        } else {
                            ack.rejected += 1;
                        }
                    }
                }
                progress.execute(params![
                    to_i64(item.batch.seq),
                    item.received_at.0,
                    item.agent_id
                ])?;
                acks.push(ack);
            }
        }
        transaction.commit()?;
        Ok(IngestOutcome { acks, events })
    }

    fn count_signals(&mut self) -> Result<u64, StoreError> {
        let count: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM signals", [], |row| row.get(0))?;
        Ok(from_i64(count))
    }

    fn signals(&mut self, filter: &SignalFilter) -> Result<Page<StoredSignal>, StoreError> {
        queries::signals(&self.connection, filter)
    }

    fn close_quiet(&mut self, now: Timestamp) -> Result<Vec<Event>, StoreError> {
        let _turn = self.gate.enter();
        let Some(correlator) = self.correlator.clone() else {
            return Ok(Vec::new());
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let events = super::correlation::close_quiet(&transaction, &correlator, now)?;
        transaction.commit()?;
        Ok(events)
    }

    fn campaigns(&mut self, filter: &CampaignFilter) -> Result<Page<Campaign>, StoreError> {
        queries::campaigns(&self.connection, filter)
    }

    fn count_open_campaigns(&mut self) -> Result<u64, StoreError> {
        queries::count_open_campaigns(&self.connection)
    }

    fn campaign(&mut self, id: &str) -> Result<Option<Campaign>, StoreError> {
        queries::campaign(&self.connection, id)
    }

    fn campaign_signals(
        &mut self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<StoredSignal>, StoreError> {
        queries::campaign_signals(&self.connection, id, limit)
    }

    fn incidents(&mut self, filter: &IncidentFilter) -> Result<Page<Incident>, StoreError> {
        queries::incidents(&self.connection, filter)
    }

    fn indicator(&mut self, value: &str) -> Result<IndicatorReport, StoreError> {
        queries::indicator(&self.connection, value)
    }

    fn publish_advisory(
        &mut self,
        advisory: &NewAdvisory,
        now: Timestamp,
    ) -> Result<AdvisoryRecord, StoreError> {
        let _turn = self.gate.enter();
        queries::publish_advisory(&mut self.connection, advisory, now)
    }

    fn max_advisory_seq(&mut self) -> Result<u64, StoreError> {
        let seq: i64 = self.connection.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM advisories",
            [],
            |row| row.get(0),
        )?;
        Ok(from_i64(seq))
    }

    fn withdraw_advisory(&mut self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let _turn = self.gate.enter();
        queries::withdraw_advisory(&mut self.connection, id, now)
    }

    fn advisories(
        &mut self,
        after_seq: u64,
        now: Timestamp,
        include_expired: bool,
        limit: usize,
    ) -> Result<Vec<AdvisoryRecord>, StoreError> {
        queries::advisories(&self.connection, after_seq, now, include_expired, limit)
    }

    fn add_user(&mut self, user: &ApiUser, token_hash: &str) -> Result<(), StoreError> {
        self.audited(|connection| queries::add_user(connection, user, token_hash))
    }

    fn user_by_token(&mut self, token_hash: &str) -> Result<Option<ApiUser>, StoreError> {
        queries::user_by_token(&self.connection, token_hash)
    }

    fn users(&mut self) -> Result<Vec<ApiUser>, StoreError> {
        queries::users(&self.connection)
    }

    fn revoke_user(&mut self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        let revoked = self.audited(|connection| {
            if queries::revoke_user(connection, name, now)? {
                Ok(())
            } else {
                Err(StoreError::NotFound(format!("user {name}")))
            }
        });
        Ok(unless_missing(revoked)?.is_some())
    }

    fn append_audit(&mut self, entries: &[NewAuditEntry]) -> Result<Vec<u64>, StoreError> {
        let _turn = self.gate.enter();
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sequence = audit::append(&tx, entries)?;
        tx.commit()?;
        Ok(sequence)
    }

    fn audit_log(&mut self, filter: &AuditFilter) -> Result<Page<AuditRecord>, StoreError> {
        audit::page(&self.connection, filter)
    }

    fn verify_audit(
        &mut self,
        expected_head: Option<AuditHead>,
    ) -> Result<AuditVerification, StoreError> {
        // One read transaction: a consistent snapshot while writers go on appending.
        let tx = self.connection.transaction()?;
        let mut verifier = Verifier::new(expected_head);
        audit::verify(&tx, &mut verifier)?;
        tx.commit()?;
        Ok(verifier.finish())
    }

    fn holds(&mut self, include_released: bool) -> Result<Vec<LegalHold>, StoreError> {
        audit::holds(&self.connection, include_released)
    }

    fn place_hold(&mut self, hold: &LegalHold) -> Result<(), StoreError> {
        self.audited(|connection| audit::place_hold(connection, hold))
    }

    fn release_hold(
        &mut self,
        id: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<Option<LegalHold>, StoreError> {
        let released = self.audited(|connection| {
            audit::release_hold(connection, id, by, now)?
                .ok_or_else(|| StoreError::NotFound(format!("hold {id}")))
        });
        unless_missing(released)
    }

    fn purge(
        &mut self,
        now: Timestamp,
        default_days: u32,
        actor: &str,
    ) -> Result<PurgeReport, StoreError> {
        audit::purge(&mut self.connection, &self.gate, now, default_days, actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SignalFilter;
    use vedetta_common::protocol::Batch;
    use vedetta_common::{Severity, Signal};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("vedetta.db")).expect("open");
        (dir, store)
    }

    fn agent(org: &str, id: &str) -> AgentRecord {
        AgentRecord::enrolled(
            id.into(),
            org.into(),
            "host".into(),
            "00".into(),
            Timestamp(1),
        )
    }

    #[test]
    fn tokens_are_one_time_and_expire() {
        let (_dir, mut store) = store();
        store.add_org("acme", "ACME", Timestamp(0)).expect("org");
        assert!(matches!(
            store.add_org("acme", "again", Timestamp(0)),
            Err(StoreError::AlreadyExists(_))
        ));
        store
            .create_enrollment_token("h1", "acme", Timestamp(0), Timestamp(100))
            .expect("token");
        store
            .create_enrollment_token("h2", "acme", Timestamp(0), Timestamp(100))
            .expect("token");
        assert!(
            store
                .create_enrollment_token("h3", "nobody", Timestamp(0), Timestamp(100))
                .is_err()
        );
        let mut issue = |org: &str| Ok(agent(org, "a1"));
        let first = store
            .enroll_agent("h1", Timestamp(50), &mut issue)
            .expect("db");
        assert_eq!(first.expect("accepted").org, "acme");
        let again = store
            .enroll_agent("h1", Timestamp(51), &mut |org| Ok(agent(org, "a2")))
            .expect("db");
        assert_eq!(again, Err(TokenRefusal::AlreadyUsed));
        let late = store
            .enroll_agent("h2", Timestamp(100), &mut |org| Ok(agent(org, "a3")))
            .expect("db");
        assert_eq!(late, Err(TokenRefusal::Expired));
        let unknown = store
            .enroll_agent("zz", Timestamp(1), &mut |org| Ok(agent(org, "a4")))
            .expect("db");
        assert_eq!(unknown, Err(TokenRefusal::Unknown));
        assert_eq!(store.agents().expect("agents").len(), 1);
    }

    #[test]
    fn ingest_is_exactly_once_by_signal_id() {
        let (_dir, mut store) = store();
        store.add_org("acme", "ACME", Timestamp(0)).expect("org");
        store
            .enroll_agent("missing", Timestamp(0), &mut |org| Ok(agent(org, "a1")))
            .expect("db")
            .expect_err("no token");
        let signals: Vec<Signal> = (0..10)
            .map(|i| Signal::new("ssh_bruteforce", Severity::High, Timestamp(i)))
            .collect();
        let batch = |seq, signals: Vec<Signal>| IngestBatch {
            org: "acme".into(),
            agent_id: "a1".into(),
            received_at: Timestamp(5),
            batch: Batch { seq, signals },
        };
        let mut invalid = Signal::new("Bad Kind", Severity::Low, Timestamp(0));
        invalid.count = 1;
        let acks = store
            .ingest(&[
                batch(1, signals[..6].to_vec()),
                batch(2, [signals[4..].to_vec(), vec![invalid]].concat()),
            ])
            .expect("ingest")
            .acks;
        assert_eq!((acks[0].accepted, acks[0].duplicates), (6, 0));
        assert_eq!(
            (acks[1].accepted, acks[1].duplicates, acks[1].rejected),
            (4, 2, 1)
        );
        assert_eq!(store.count_signals().expect("count"), 10);
        let stored = store
            .signals(&SignalFilter {
                org: Some("acme".into()),
                ..SignalFilter::default()
            })
            .expect("query")
            .items;
        assert_eq!(stored.len(), 10);
        // Newest first.
        assert_eq!(stored[0].signal, signals[9]);
    }

    #[test]
    fn revocation_is_remembered() {
        let (_dir, mut store) = store();
        store.add_org("acme", "ACME", Timestamp(0)).expect("org");
        store
            .create_enrollment_token("h", "acme", Timestamp(0), Timestamp(100))
            .expect("token");
        store
            .enroll_agent("h", Timestamp(1), &mut |org| Ok(agent(org, "a1")))
            .expect("db")
            .expect("ok");
        assert!(store.revoke_agent("a1", Timestamp(2)).expect("revoke"));
        assert!(!store.revoke_agent("nope", Timestamp(2)).expect("revoke"));
        assert_eq!(
            store.revoked_agents().expect("revoked"),
            vec!["a1".to_string()]
        );
        assert_eq!(
            store.agent("a1").expect("agent").expect("known").revoked_at,
            Some(Timestamp(2))
        );
    }

    #[test]
    fn reopening_keeps_data_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vedetta.db");
        SqliteStore::open(&path)
            .expect("open")
            .add_org("acme", "A", Timestamp(0))
            .expect("org");
        let mut again = SqliteStore::open(&path).expect("reopen");
        assert_eq!(again.orgs().expect("orgs").len(), 1);
        again
            .connection
            .execute("INSERT INTO schema_migrations VALUES (999, 0)", [])
            .expect("bump");
        drop(again);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }

    fn correlating_store(path: &Path) -> SqliteStore {
        let mut store = SqliteStore::open(path).expect("open");
        store.set_correlator(Arc::new(
            Correlator::new(crate::correlate::CorrelationConfig::default()).expect("config"),
        ));
        store
    }

    fn attack(org: &str, kind: &str, address: &str, minute: i64) -> IngestBatch {
        let at = Timestamp(1_800_000_000_000_000_000 + minute * 60_000_000_000);
        IngestBatch {
            org: org.into(),
            agent_id: format!("{org}-agent"),
            received_at: at,
            batch: Batch {
                seq: 1,
                signals: vec![
                    Signal::new(kind, Severity::High, at)
                        .with_indicator(vedetta_common::IndicatorType::Ip, address),
                ],
            },
        }
    }

    #[test]
    fn campaigns_form_across_organisations_survive_reopening_and_close_when_quiet() {
        use crate::correlate::{Event, Status};
        use crate::store::{CampaignFilter, IncidentFilter};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vedetta.db");
        let mut store = correlating_store(&path);
        let first = store
            .ingest(&[
                attack("bank", "ssh_bruteforce", "203.0.113.7", 0),
                attack("bank", "ssh_bruteforce", "198.51.100.1", 0),
                attack("city", "port_scan", "10.0.0.5", 1),
            ])
            .expect("ingest");
        assert!(first.events.is_empty(), "{:?}", first.events);
        let second = store
            .ingest(&[attack("city", "web_scan", "203.0.113.7", 2)])
            .expect("ingest");
        let Some(Event::CampaignOpened { campaign }) = second.events.first() else {
            panic!("no campaign: {:?}", second.events);
        };
        assert_eq!(campaign.org_names(), ["bank", "city"]);
        assert_eq!(campaign.signals, 2);
        let id = campaign.id.clone();
        drop(store);

        // A restart: the state is in the file.
        let mut store = correlating_store(&path);
        let third = store
            .ingest(&[attack("hospital", "ssh_bruteforce", "203.0.113.7", 3)])
            .expect("ingest");
        assert!(
            matches!(third.events.as_slice(), [Event::CampaignGrew { campaign }] if campaign.id == id)
        );
        let campaign = store.campaign(&id).expect("read").expect("stored");
        assert_eq!(campaign.org_names(), ["bank", "city", "hospital"]);
        assert_eq!(campaign.severity, Severity::Critical);
        assert_eq!(store.campaign_signals(&id, 100).expect("signals").len(), 3);
        let open = store
            .campaigns(&CampaignFilter {
                status: Some(Status::Open),
                org: Some("hospital".into()),
                ..CampaignFilter::default()
            })
            .expect("campaigns");
        assert_eq!(open.items.len(), 1);
        let report = store.indicator("203.0.113.7").expect("indicator");
        assert_eq!(report.organisations.len(), 3);
        assert_eq!(report.campaigns.len(), 1);

        // A chain inside one organisation: scan then brute force from one address.
        let chain = store
            .ingest(&[
                attack("city", "port_scan", "192.0.2.50", 10),
                attack("city", "ssh_bruteforce", "192.0.2.50", 11),
            ])
            .expect("ingest");
        assert!(
            chain
                .events
                .iter()
                .any(|e| matches!(e, Event::IncidentOpened { incident } if incident.org == "city")),
            "{:?}",
            chain.events
        );
        assert_eq!(
            store
                .incidents(&IncidentFilter::default())
                .expect("incidents")
                .items
                .len(),
            1
        );

        // Two days without news.
        let later = Timestamp(1_800_000_000_000_000_000 + 49 * 3_600_000_000_000);
        let closed = store.close_quiet(later).expect("close");
        assert_eq!(closed.len(), 2, "{closed:?}");
        assert_eq!(
            store.campaign(&id).expect("read").expect("kept").status,
            Status::Closed
        );
        assert!(store.close_quiet(later).expect("again").is_empty());
    }

    #[test]
    fn pages_continue_exactly_after_their_cursor() {
        let (_dir, mut store) = store();
        let signals: Vec<Signal> = (0..25)
            .map(|i| Signal::new("port_scan", Severity::Low, Timestamp(i / 2)))
            .collect();
        store
            .ingest(&[IngestBatch {
                org: "acme".into(),
                agent_id: "a1".into(),
                received_at: Timestamp(5),
                batch: Batch {
                    seq: 1,
                    signals: signals.clone(),
                },
            }])
            .expect("ingest");
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .signals(&SignalFilter {
                    limit: 10,
                    cursor: cursor.clone(),
                    ..SignalFilter::default()
                })
                .expect("page");
            seen.extend(page.items.iter().map(|s| s.signal.id));
            match page.next_cursor {
                Some(next) => cursor = Some(crate::store::Cursor::decode(&next).expect("cursor")),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 25);
        assert!(crate::store::Cursor::decode("not a cursor").is_err());
    }
}
