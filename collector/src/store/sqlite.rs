//! The SQLite backend: one database file in the data directory, WAL journal, and
//! `synchronous=FULL` so that a commit (and therefore an ack) survives power loss, not
//! just a crash of the process. Throughput comes from group commit in the ingest writer,
//! which puts many batches in one transaction, not from weaker durability.

use super::migrations::{MIGRATIONS, latest};
use super::{
    AgentRecord, IngestBatch, Org, SignalFilter, Store, StoreError, StoredSignal, TokenRefusal,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;
use vedetta_common::protocol::{Ack, Heartbeat};
use vedetta_common::{Signal, Timestamp};

#[derive(Debug)]
pub struct SqliteStore {
    connection: Connection,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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
        let mut store = Self { connection };
        store.migrate(path)?;
        Ok(store)
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
        let inserted = self.connection.execute(
            "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
            params![id, name, now.0],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!("org {id}")));
        }
        Ok(())
    }

    fn orgs(&mut self) -> Result<Vec<Org>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT id, name, created_at FROM orgs ORDER BY id")?;
        let orgs = statement
            .query_map([], |row| {
                Ok(Org {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: Timestamp(row.get(2)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(orgs)
    }

    fn create_enrollment_token(
        &mut self,
        token_hash: &str,
        org: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let known: bool = self.connection.query_row(
            "SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)",
            [org],
            |row| row.get(0),
        )?;
        if !known {
            return Err(StoreError::NotFound(format!("org {org}")));
        }
        self.connection.execute(
            "INSERT INTO enrollment_tokens (token_hash, org, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, org, now.0, expires_at.0],
        )?;
        Ok(())
    }

    fn enroll_agent(
        &mut self,
        token_hash: &str,
        now: Timestamp,
        issue: &mut dyn FnMut(&str) -> Result<AgentRecord, String>,
    ) -> Result<Result<AgentRecord, TokenRefusal>, StoreError> {
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
        let known: bool = self.connection.query_row(
            "SELECT EXISTS (SELECT 1 FROM agents WHERE id = ?1)",
            [id],
            |row| row.get(0),
        )?;
        self.connection.execute(
            "UPDATE agents SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            params![now.0, id],
        )?;
        Ok(known)
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

    fn ingest(&mut self, batches: &[IngestBatch]) -> Result<Vec<Ack>, StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut acks = Vec::with_capacity(batches.len());
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
        Ok(acks)
    }

    fn signals(&mut self, filter: &SignalFilter) -> Result<Vec<StoredSignal>, StoreError> {
        let mut sql =
            String::from("SELECT org, agent_id, received_at, body FROM signals WHERE 1 = 1");
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        let mut condition = |clause: &str, value: rusqlite::types::Value| {
            values.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", values.len()));
        };
        if let Some(org) = &filter.org {
            condition("org =", org.clone().into());
        }
        if let Some(agent) = &filter.agent_id {
            condition("agent_id =", agent.clone().into());
        }
        if let Some(kind) = &filter.kind {
            condition("kind =", kind.clone().into());
        }
        if let Some(severity) = filter.min_severity {
            condition("severity >=", i64::from(severity.rank()).into());
        }
        if let Some(since) = filter.since {
            condition("last_seen >=", since.0.into());
        }
        if let Some(until) = filter.until {
            condition("last_seen <", until.0.into());
        }
        let limit = if filter.limit == 0 {
            1000
        } else {
            filter.limit
        };
        sql.push_str(&format!(" ORDER BY last_seen, id LIMIT {limit}"));
        let mut statement = self.connection.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut signals = Vec::new();
        for row in rows {
            let (org, agent_id, received_at, body) = row?;
            let signal: Signal = serde_json::from_str(&body)
                .map_err(|error| StoreError::Corrupt(format!("signal body: {error}")))?;
            signals.push(StoredSignal {
                org,
                agent_id,
                received_at: Timestamp(received_at),
                signal,
            });
        }
        Ok(signals)
    }

    fn count_signals(&mut self) -> Result<u64, StoreError> {
        let count: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM signals", [], |row| row.get(0))?;
        Ok(from_i64(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            .expect("ingest");
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
            .expect("query");
        assert_eq!(stored.len(), 10);
        assert_eq!(stored[0].signal, signals[0]);
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
}
