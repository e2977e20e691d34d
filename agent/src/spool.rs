//! The durable, bounded, crash-safe queue of signals waiting for the collector.
//!
//! It is an SQLite database (WAL, `synchronous=FULL`): a signal pushed is on disk before
//! `push` returns, and a crash at any point leaves a consistent queue. Signals are grouped
//! into numbered batches when sent; a batch keeps its number and content until the
//! collector acknowledges it, so a resend after a crash is recognised as one. Only then
//! are its signals deleted.
//!
//! When the queue holds more than `max_signals`, the oldest signals of the lowest severity
//! are dropped first (never ones already in a batch, nor the agent's own health reports,
//! which carry the news of the loss), and the drops are counted by severity, persistently,
//! for the health report. Several processes may push (`emit`).
//!
//! Bad data never blocks the queue: a signal that fails validation is refused at `push`
//! (counted), and a stored row that cannot be read back is moved to `dead_letters`
//! (counted) instead of failing its batch forever.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;
use vedetta_common::signal::kinds;
use vedetta_common::{Severity, Signal, Timestamp};

/// Version of the spool's schema, in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("spool holds a corrupt signal (seq {seq}): {message}")]
    Corrupt { seq: i64, message: String },
    #[error(
        "spool schema version {0} is newer than this agent knows ({SCHEMA_VERSION}); upgrade the agent"
    )]
    TooNew(i64),
}

/// The queue. One value per thread; open more for other threads or processes.
#[derive(Debug)]
pub struct Spool {
    connection: Connection,
    max_signals: u64,
}

/// A batch ready to send: its sequence number and signals.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledBatch {
    pub seq: u64,
    pub signals: Vec<Signal>,
}

/// Figures for health reports and `status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SpoolStats {
    /// Signals waiting (batched or not).
    pub depth: u64,
    /// Of which already in unacknowledged batches.
    pub in_batches: u64,
    pub drops_total: u64,
    /// Drops per severity, lowest first.
    pub drops_by_severity: Vec<(String, u64)>,
    pub acked_total: u64,
    pub last_ack_at: Option<Timestamp>,
    /// Signals refused at push because they failed validation.
    pub invalid_total: u64,
    /// Stored rows that could not be read back, set aside in `dead_letters`.
    pub dead_letters: u64,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub stored: u64,
    /// Signals refused because they failed validation (never stored).
    pub invalid: u64,
    /// Signals dropped to respect the bound (older ones, or these if they rank lowest).
    pub dropped: u64,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS signals (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        severity  INTEGER NOT NULL,
        body      TEXT NOT NULL,
        batch     INTEGER,
        -- 1 for the agent's own health reports, which trimming never drops
        keep      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS signals_by_batch ON signals (batch, keep, severity, seq);
    CREATE TABLE IF NOT EXISTS dead_letters (
        seq        INTEGER PRIMARY KEY,
        body       TEXT NOT NULL,
        error      TEXT NOT NULL,
        moved_at   INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS batches (
        seq         INTEGER PRIMARY KEY,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS counters (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    );
";

fn counter_name(severity: Severity) -> String {
    format!("drops_{}", severity.as_str())
}

impl Spool {
    pub fn open(path: &Path, max_signals: u64) -> Result<Self, SpoolError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(SpoolError::TooNew(version));
        }
        connection.execute_batch(SCHEMA)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            connection,
            max_signals,
        })
    }

    /// Stores `signals` durably, then trims the queue to its bound.
    pub fn push(&mut self, signals: &[Signal]) -> Result<PushOutcome, SpoolError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = 0;
        let mut invalid = 0;
        {
            let mut insert = transaction
                .prepare_cached("INSERT INTO signals (severity, body, keep) VALUES (?1, ?2, ?3)")?;
            let mut count = transaction.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('invalid_total', 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1",
            )?;
            for signal in signals {
                let body = match signal.validate() {
                    Ok(()) => serde_json::to_string(signal).ok(),
                    Err(_) => None,
                };
                let Some(body) = body else {
                    invalid += 1;
                    count.execute([])?;
                    continue;
                };
                let keep = signal.kind == kinds::AGENT_HEALTH;
                insert.execute(params![signal.severity.rank(), body, keep])?;
                stored += 1;
            }
        }
        let depth: i64 =
            transaction.query_row("SELECT COUNT(*) FROM signals", [], |row| row.get(0))?;
        let excess = u64::try_from(depth)
            .unwrap_or(0)
            .saturating_sub(self.max_signals);
        let mut dropped = 0;
        if excess > 0 {
            let victims: Vec<(i64, i64)> = {
                let mut select = transaction.prepare_cached(
                    "SELECT seq, severity FROM signals WHERE batch IS NULL AND keep = 0
                     ORDER BY severity, seq LIMIT ?1",
                )?;
                select
                    .query_map([i64::try_from(excess).unwrap_or(i64::MAX)], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<Result<_, _>>()?
            };
            let mut delete = transaction.prepare_cached("DELETE FROM signals WHERE seq = ?1")?;
            let mut count = transaction.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1",
            )?;
            for (seq, severity) in victims {
                delete.execute([seq])?;
                let severity = Severity::from_rank(severity).unwrap_or(Severity::Info);
                count.execute([counter_name(severity)])?;
                count.execute(["drops_total"])?;
                dropped += 1;
            }
        }
        transaction.commit()?;
        Ok(PushOutcome {
            stored,
            invalid,
            dropped,
        })
    }

    /// Reads a batch's signals; rows that cannot be decoded are moved to `dead_letters`.
    fn load_batch(&mut self, seq: u64) -> Result<SpooledBatch, SpoolError> {
        let rows: Vec<(i64, String)> = {
            let mut select = self
                .connection
                .prepare_cached("SELECT seq, body FROM signals WHERE batch = ?1 ORDER BY seq")?;
            select
                .query_map([seq as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut signals = Vec::with_capacity(rows.len());
        for (row_seq, body) in rows {
            match serde_json::from_str::<Signal>(&body)
                .map_err(|error| error.to_string())
                .and_then(|signal| {
                    signal
                        .validate()
                        .map(|()| signal)
                        .map_err(|e| e.to_string())
                }) {
                Ok(signal) => signals.push(signal),
                Err(error) => {
                    tracing::error!(seq = row_seq, %error, "unreadable signal moved to dead_letters");
                    let transaction = self.connection.transaction()?;
                    transaction.execute(
                        "INSERT INTO dead_letters (seq, body, error, moved_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (seq) DO NOTHING",
                        params![row_seq, body, error, Timestamp::now().0],
                    )?;
                    transaction.execute("DELETE FROM signals WHERE seq = ?1", [row_seq])?;
                    transaction.execute(
                        "INSERT INTO counters (name, value) VALUES ('dead_letters', 1)
                         ON CONFLICT (name) DO UPDATE SET value = value + 1",
                        [],
                    )?;
                    transaction.commit()?;
                }
            }
        }
        Ok(SpooledBatch { seq, signals })
    }

    /// Gives a batch's signals back to the queue (the batch was refused as it is, e.g. too
    /// large for the collector): they will be sent again in new, smaller batches. Safe,
    /// because the collector deduplicates by signal id.
    pub fn release(&mut self, seq: u64) -> Result<(), SpoolError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute(
            "UPDATE signals SET batch = NULL WHERE batch = ?1",
            [seq as i64],
        )?;
        transaction.execute("DELETE FROM batches WHERE seq = ?1", [seq as i64])?;
        transaction.commit()?;
        Ok(())
    }

    /// Batches formed earlier and not yet acknowledged, oldest first: they are resent
    /// with the same number and content after a reconnection or a restart.
    pub fn unacknowledged(&mut self) -> Result<Vec<SpooledBatch>, SpoolError> {
        let seqs: Vec<i64> = {
            let mut select = self
                .connection
                .prepare_cached("SELECT seq FROM batches ORDER BY seq")?;
            select
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        seqs.into_iter()
            .map(|seq| self.load_batch(seq as u64))
            .collect()
    }

    /// Forms the next batch from waiting signals, oldest first, of at most `max_signals`
    /// signals and about `max_bytes` of encoded signals (at least one signal, which the
    /// signal limits keep far below a frame); `None` if nothing waits.
    pub fn next_batch(
        &mut self,
        max_signals: usize,
        max_bytes: usize,
    ) -> Result<Option<SpooledBatch>, SpoolError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut last_included = None;
        {
            let mut select = transaction.prepare_cached(
                "SELECT seq, length(CAST(body AS BLOB)) FROM signals WHERE batch IS NULL ORDER BY seq LIMIT ?1",
            )?;
            let mut rows = select.query([max_signals as i64])?;
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let length: i64 = row.get(1)?;
                bytes += usize::try_from(length).unwrap_or(usize::MAX);
                if last_included.is_some() && bytes > max_bytes {
                    break;
                }
                last_included = Some(seq);
            }
        }
        let Some(last_included) = last_included else {
            return Ok(None);
        };
        let last: i64 = transaction.query_row(
            "SELECT COALESCE(MAX(value), 0) FROM counters WHERE name = 'batch_seq'",
            [],
            |row| row.get(0),
        )?;
        let seq = last + 1;
        transaction.execute(
            "INSERT INTO counters (name, value) VALUES ('batch_seq', ?1)
             ON CONFLICT (name) DO UPDATE SET value = ?1",
            [seq],
        )?;
        transaction.execute(
            "INSERT INTO batches (seq, created_at) VALUES (?1, ?2)",
            params![seq, Timestamp::now().0],
        )?;
        transaction.execute(
            "UPDATE signals SET batch = ?1 WHERE batch IS NULL AND seq <= ?2",
            params![seq, last_included],
        )?;
        transaction.commit()?;
        self.load_batch(seq as u64).map(Some)
    }

    /// The collector committed batch `seq`: forget it and its signals.
    pub fn acknowledge(&mut self, seq: u64) -> Result<u64, SpoolError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = transaction.execute("DELETE FROM signals WHERE batch = ?1", [seq as i64])?;
        transaction.execute("DELETE FROM batches WHERE seq = ?1", [seq as i64])?;
        for (name, value) in [
            ("acked_total", removed as i64),
            ("last_ack_at", Timestamp::now().0),
        ] {
            let sql = if name == "acked_total" {
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + ?2"
            } else {
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = ?2"
            };
            transaction.execute(sql, params![name, value])?;
        }
        transaction.commit()?;
        Ok(removed as u64)
    }

    fn counter(&self, name: &str) -> Result<Option<i64>, SpoolError> {
        Ok(self
            .connection
            .query_row(
                "SELECT value FROM counters WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?)
    }

    pub fn stats(&mut self) -> Result<SpoolStats, SpoolError> {
        let (depth, in_batches): (i64, i64) =
            self.connection
                .query_row("SELECT COUNT(*), COUNT(batch) FROM signals", [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
        let mut drops_by_severity = Vec::new();
        for severity in Severity::ALL {
            let value = self.counter(&counter_name(severity))?.unwrap_or(0);
            drops_by_severity.push((severity.as_str().to_owned(), value as u64));
        }
        Ok(SpoolStats {
            depth: depth as u64,
            in_batches: in_batches as u64,
            drops_total: self.counter("drops_total")?.unwrap_or(0) as u64,
            drops_by_severity,
            acked_total: self.counter("acked_total")?.unwrap_or(0) as u64,
            last_ack_at: self.counter("last_ack_at")?.map(Timestamp),
            invalid_total: self.counter("invalid_total")?.unwrap_or(0) as u64,
            dead_letters: self.counter("dead_letters")?.unwrap_or(0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(severity: Severity, n: i64) -> Signal {
        Signal::new("test_signal", severity, Timestamp(n))
    }

    #[test]
    fn batches_survive_reopening_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.db");
        let signals: Vec<Signal> = (0..25).map(|n| signal(Severity::High, n)).collect();
        {
            let mut spool = Spool::open(&path, 1000).expect("open");
            spool.push(&signals).expect("push");
            let first = spool
                .next_batch(10, usize::MAX)
                .expect("batch")
                .expect("some");
            assert_eq!(first.seq, 1);
            assert_eq!(first.signals, signals[..10]);
        }
        let mut spool = Spool::open(&path, 1000).expect("reopen");
        let pending = spool.unacknowledged().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].signals, signals[..10]);
        let second = spool
            .next_batch(10, usize::MAX)
            .expect("batch")
            .expect("some");
        assert_eq!((second.seq, second.signals.len()), (2, 10));
        assert_eq!(spool.acknowledge(1).expect("ack"), 10);
        let stats = spool.stats().expect("stats");
        assert_eq!(
            (stats.depth, stats.in_batches, stats.acked_total),
            (15, 10, 10)
        );
        assert!(stats.last_ack_at.is_some());
        // Sequence numbers are never reused, even after every batch was acknowledged.
        spool.acknowledge(2).expect("ack");
        let third = spool
            .next_batch(100, usize::MAX)
            .expect("batch")
            .expect("some");
        assert_eq!((third.seq, third.signals.len()), (3, 5));
        spool.acknowledge(3).expect("ack");
        assert_eq!(spool.next_batch(100, usize::MAX).expect("batch"), None);
        // The byte budget splits batches, but never below one signal.
        spool.push(&signals[..3]).expect("push");
        assert_eq!(
            spool
                .next_batch(100, 1)
                .expect("batch")
                .expect("some")
                .signals
                .len(),
            1
        );
        assert_eq!(
            spool
                .next_batch(100, usize::MAX)
                .expect("batch")
                .expect("some")
                .signals
                .len(),
            2
        );
    }

    #[test]
    fn bad_signals_never_block_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&dir.path().join("spool.db"), 100).expect("open");
        let good = signal(Severity::High, 1);
        let not_a_number = signal(Severity::High, 2).with_attribute("rate", f64::NAN);
        let outcome = spool.push(&[good.clone(), not_a_number]).expect("push");
        assert_eq!((outcome.stored, outcome.invalid), (1, 1));
        // A row damaged on disk is set aside; its batch still goes out.
        spool.push(&[signal(Severity::High, 3)]).expect("push");
        spool
            .connection
            .execute(
                "UPDATE signals SET body = '{broken' WHERE seq = (SELECT MAX(seq) FROM signals)",
                [],
            )
            .expect("damage");
        let batch = spool
            .next_batch(10, usize::MAX)
            .expect("batch")
            .expect("some");
        assert_eq!(batch.signals, vec![good]);
        let stats = spool.stats().expect("stats");
        assert_eq!(
            (stats.invalid_total, stats.dead_letters, stats.depth),
            (1, 1, 1)
        );
        // A refused batch goes back to the queue and is re-formed.
        spool.release(batch.seq).expect("release");
        assert!(spool.unacknowledged().expect("pending").is_empty());
        let again = spool
            .next_batch(10, usize::MAX)
            .expect("batch")
            .expect("some");
        assert_eq!(again.signals, batch.signals);
        assert!(again.seq > batch.seq);
    }

    #[test]
    fn health_reports_are_never_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&dir.path().join("spool.db"), 10).expect("open");
        let health = Signal::new(kinds::AGENT_HEALTH, Severity::Info, Timestamp(0));
        spool.push(std::slice::from_ref(&health)).expect("push");
        let critical: Vec<Signal> = (0..20).map(|n| signal(Severity::Critical, n)).collect();
        spool.push(&critical).expect("push");
        let kept = spool
            .next_batch(100, usize::MAX)
            .expect("batch")
            .expect("some")
            .signals;
        assert_eq!(kept[0], health);
        assert_eq!(spool.stats().expect("stats").drops_total, 11);
    }

    #[test]
    fn when_full_the_oldest_lowest_severity_signals_go_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&dir.path().join("spool.db"), 10).expect("open");
        let high: Vec<Signal> = (0..5).map(|n| signal(Severity::High, n)).collect();
        let low: Vec<Signal> = (0..5).map(|n| signal(Severity::Low, n)).collect();
        spool.push(&high).expect("push");
        spool.push(&low).expect("push");
        let info: Vec<Signal> = (10..13).map(|n| signal(Severity::Info, n)).collect();
        let outcome = spool.push(&info).expect("push");
        assert_eq!(outcome.dropped, 3);
        let critical = vec![
            signal(Severity::Critical, 20),
            signal(Severity::Critical, 21),
        ];
        assert_eq!(spool.push(&critical).expect("push").dropped, 2);
        let kept = spool
            .next_batch(100, usize::MAX)
            .expect("batch")
            .expect("some")
            .signals;
        assert_eq!(kept.len(), 10);
        // The two oldest low ones went; all high and critical stayed.
        assert_eq!(&kept[..5], &high[..]);
        assert_eq!(&kept[5..8], &low[2..]);
        assert_eq!(&kept[8..], &critical[..]);
        let stats = spool.stats().expect("stats");
        assert_eq!(stats.drops_total, 5);
        assert_eq!(stats.drops_by_severity[0], ("info".to_owned(), 3));
        assert_eq!(stats.drops_by_severity[1], ("low".to_owned(), 2));
    }
}
