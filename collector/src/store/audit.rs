//! The audit log, retention and legal holds, for the SQLite backend.
//!
//! Appending reads the newest entry and writes the next one inside one immediate
//! transaction, so that every writer (the API's audit writer, the command line, the
//! purge, several collector nodes) extends the same chain in turn.

use super::queries::{Conditions, Cursor, Page, next_cursor, page_size};
use super::{AuditFilter, LegalHold, PurgeReport, StoreError};
use crate::audit::{AuditRecord, GENESIS, NewAuditEntry, Verifier};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use vedetta_common::Timestamp;

const COLUMNS: &str =
    "seq, at, actor, role, action, route, params, status, results, detail, prev_hash, hash";

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        at: Timestamp(row.get(1)?),
        actor: row.get(2)?,
        role: row.get(3)?,
        action: row.get(4)?,
        route: row.get(5)?,
        params: row.get(6)?,
        status: row
            .get::<_, Option<i64>>(7)?
            .and_then(|s| u16::try_from(s).ok()),
        results: row
            .get::<_, Option<i64>>(8)?
            .and_then(|r| u64::try_from(r).ok()),
        detail: row.get(9)?,
        prev_hash: row.get(10)?,
        hash: row.get(11)?,
    })
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Appends `entries` in order inside `tx`; returns their sequence numbers.
pub(super) fn append(
    tx: &Transaction<'_>,
    entries: &[NewAuditEntry],
) -> Result<Vec<u64>, StoreError> {
    let (mut seq, mut prev) = tx
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?
        .map_or((0, GENESIS.to_owned()), |(seq, hash)| {
            (u64::try_from(seq).unwrap_or(0), hash)
        });
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?;
    let mut sequence = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let record = entry.chain(seq, &prev);
        insert.execute(params![
            to_i64(record.seq),
            record.at.0,
            record.actor,
            record.role,
            record.action,
            record.route,
            record.params,
            record.status.map(i64::from),
            record.results.map(to_i64),
            record.detail,
            record.prev_hash,
            record.hash,
        ])?;
        prev = record.hash;
        sequence.push(seq);
    }
    Ok(sequence)
}

/// A page of the log. Newest first, unless `filter.oldest_first` (exports, which follow
/// the chain's order so that an auditor can recompute it).
pub(super) fn page(
    connection: &Connection,
    filter: &AuditFilter,
) -> Result<Page<AuditRecord>, StoreError> {
    let size = page_size(filter.limit);
    let mut conditions = Conditions::default();
    if let Some(actor) = &filter.actor {
        conditions.push("actor = ?", actor.clone());
    }
    if let Some(action) = &filter.action {
        conditions.push("action = ?", action.clone());
    }
    if let Some(since) = filter.since {
        conditions.push("at >= ?", since.0);
    }
    if let Some(until) = filter.until {
        conditions.push("at < ?", until.0);
    }
    // The cursor is an entry's sequence number.
    let (order, after) = if filter.oldest_first {
        ("ASC", "seq > ?")
    } else {
        ("DESC", "seq < ?")
    };
    if let Some(cursor) = &filter.cursor {
        conditions.push(after, cursor.at);
    }
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE 1 = 1{} ORDER BY seq {order} LIMIT {size}",
        conditions.sql
    ))?;
    let items = statement
        .query_map(params_from_iter(conditions.values), record)?
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = next_cursor(&items, size, |last| Cursor {
        at: to_i64(last.seq),
        id: String::new(),
    });
    Ok(Page { items, next_cursor })
}

/// Walks the whole chain in order.
pub(super) fn verify(connection: &Connection, verifier: &mut Verifier) -> Result<(), StoreError> {
    let mut statement =
        connection.prepare(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq"))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        // A row whose columns no longer have their types was altered too: named, not an
        // error of the verification.
        let checked = match record(row) {
            Ok(entry) => verifier.check(&entry),
            Err(error) => {
                let seq = row
                    .get::<_, Value>(0)
                    .ok()
                    .and_then(|value| match value {
                        Value::Integer(n) => u64::try_from(n).ok(),
                        _ => None,
                    })
                    .unwrap_or(0);
                verifier.unreadable(seq, &error.to_string())
            }
        };
        if !checked {
            break;
        }
    }
    Ok(())
}

fn hold(row: &rusqlite::Row<'_>) -> rusqlite::Result<LegalHold> {
    Ok(LegalHold {
        id: row.get(0)?,
        scope: row.get(1)?,
        target: row.get(2)?,
        reason: row.get(3)?,
        placed_by: row.get(4)?,
        placed_at: Timestamp(row.get(5)?),
        released_by: row.get(6)?,
        released_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
    })
}

const HOLD_COLUMNS: &str =
    "id, scope, target, reason, placed_by, placed_at, released_by, released_at";

pub(super) fn holds(connection: &Connection, all: bool) -> Result<Vec<LegalHold>, StoreError> {
    let filter = if all { "" } else { "WHERE released_at IS NULL" };
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {HOLD_COLUMNS} FROM legal_holds {filter} ORDER BY placed_at DESC, id"
    ))?;
    Ok(statement
        .query_map([], hold)?
        .collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn place_hold(tx: &Connection, hold: &LegalHold) -> Result<(), StoreError> {
    let exists = match hold.scope.as_str() {
        "org" => tx
            .query_row("SELECT 1 FROM orgs WHERE id = ?1", [&hold.target], |_| {
                Ok(())
            })
            .optional()?
            .is_some(),
        "campaign" => tx
            .query_row(
                "SELECT 1 FROM campaigns WHERE id = ?1",
                [&hold.target],
                |_| Ok(()),
            )
            .optional()?
            .is_some(),
        other => return Err(StoreError::Corrupt(format!("unknown hold scope {other}"))),
    };
    if !exists {
        return Err(StoreError::NotFound(format!(
            "{} {}",
            hold.scope, hold.target
        )));
    }
    tx.execute(
        &format!(
            "INSERT INTO legal_holds ({HOLD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)"
        ),
        params![
            hold.id,
            hold.scope,
            hold.target,
            hold.reason,
            hold.placed_by,
            hold.placed_at.0
        ],
    )?;
    Ok(())
}

/// Releases an active hold; `None` if there is no such active hold.
pub(super) fn release_hold(
    tx: &Connection,
    id: &str,
    by: &str,
    now: Timestamp,
) -> Result<Option<LegalHold>, StoreError> {
    let changed = tx.execute(
        "UPDATE legal_holds SET released_by = ?2, released_at = ?3
         WHERE id = ?1 AND released_at IS NULL",
        params![id, by, now.0],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    Ok(Some(tx.query_row(
        &format!("SELECT {HOLD_COLUMNS} FROM legal_holds WHERE id = ?1"),
        [id],
        hold,
    )?))
}

/// Signals deleted per transaction, so that ingest is never locked out for long.
const PURGE_CHUNK: usize = 5_000;

const DAY_NS: i64 = 86_400_000_000_000;

/// Deletes, for each organisation, the signals older than its retention (its own
/// `retention_days`, else `default_days`; 0 keeps forever), except those of organisations
/// under a legal hold and those of held campaigns; with each signal go its indicator
/// rows and campaign and incident links. Each chunk of an organisation's purge is
/// recorded in the audit chain in the transaction of its deletions: counts and the time
/// range (event time) of what was removed.
pub(super) fn purge(
    connection: &mut Connection,
    gate: &std::sync::Arc<super::gate::WriteGate>,
    now: Timestamp,
    default_days: u32,
    actor: &str,
) -> Result<PurgeReport, StoreError> {
    let role = if actor == "collector" {
        "system"
    } else {
        "admin"
    };
    let orgs: Vec<(String, Option<i64>)> = connection
        .prepare("SELECT id, retention_days FROM orgs ORDER BY id")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut report = PurgeReport::default();
    for (org, days) in orgs {
        let days = days.unwrap_or(i64::from(default_days));
        if days <= 0 {
            continue;
        }
        let cutoff = now.0.saturating_sub(days.saturating_mul(DAY_NS));
        let mut removed = 0u64;
        let mut kept_for_campaigns = 0u64;
        // Walks the organisation's signals older than the cutoff, oldest first, in
        // chunks; held campaigns' signals are skipped (and counted) by the keyset. Each
        // chunk re-reads the organisation's hold (one placed during a long purge stops
        // it) and records what it removed in the same transaction: nothing is deleted
        // that the chain does not tell of. A signal is old by its event time and by the
        // collector's reception time both, so an agent's wrong clock cannot age it.
        let mut after: (i64, String) = (i64::MIN, String::new());
        loop {
            let _turn = gate.enter();
            let tx =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let held: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM legal_holds
                 WHERE scope = 'org' AND target = ?1 AND released_at IS NULL)",
                [&org],
                |row| row.get(0),
            )?;
            if held {
                report.orgs_held.push(org.clone());
                break;
            }
            let chunk: Vec<(String, i64, String, bool)> = tx
                .prepare_cached(
                    "SELECT s.id, s.last_seen, s.body, EXISTS (
                         SELECT 1 FROM campaign_signals c JOIN legal_holds h
                           ON h.scope = 'campaign' AND h.target = c.campaign_id
                              AND h.released_at IS NULL
                         WHERE c.signal_id = s.id)
                     FROM signals s
                     WHERE s.org = ?1 AND s.last_seen < ?2 AND (s.last_seen, s.id) > (?3, ?4)
                       AND s.received_at < ?2
                     ORDER BY s.last_seen, s.id LIMIT ?5",
                )?
                .query_map(
                    params![org, cutoff, after.0, after.1, to_i64(PURGE_CHUNK as u64)],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )?
                .collect::<Result<_, _>>()?;
            let done = chunk.len() < PURGE_CHUNK;
            if let Some((id, at, _, _)) = chunk.last() {
                after = (*at, id.clone());
            }
            let (mut chunk_removed, mut chunk_kept) = (0u64, 0u64);
            let mut oldest: Option<i64> = None;
            let mut newest: Option<i64> = None;
            for (id, last_seen, body, in_held_campaign) in &chunk {
                if *in_held_campaign {
                    chunk_kept += 1;
                    continue;
                }
                delete_signal(&tx, id, *last_seen, body)?;
                chunk_removed += 1;
                oldest = Some(oldest.map_or(*last_seen, |o: i64| o.min(*last_seen)));
                newest = Some(newest.map_or(*last_seen, |n: i64| n.max(*last_seen)));
            }
            if chunk_removed > 0 {
                let detail = serde_json::json!({
                    "org": org,
                    "retention_days": days,
                    "cutoff": Timestamp(cutoff),
                    "signals_removed": chunk_removed,
                    "oldest_removed": oldest.map(Timestamp),
                    "newest_removed": newest.map(Timestamp),
                    "signals_kept_for_held_campaigns": chunk_kept,
                });
                append(
                    &tx,
                    &[NewAuditEntry::act(
                        now,
                        actor,
                        role,
                        "retention.purge",
                        detail,
                    )],
                )?;
            }
            tx.commit()?;
            removed += chunk_removed;
            kept_for_campaigns += chunk_kept;
            if done {
                break;
            }
        }
        report.signals_removed += removed;
        report.signals_kept_for_campaigns += kept_for_campaigns;
    }
    Ok(report)
}

fn delete_signal(
    tx: &Transaction<'_>,
    id: &str,
    last_seen: i64,
    body: &str,
) -> Result<(), StoreError> {
    // The indicator rows are keyed by value: the signal's body names them.
    if let Ok(signal) = serde_json::from_str::<vedetta_common::Signal>(body) {
        let mut delete = tx.prepare_cached(
            "DELETE FROM signal_indicators WHERE value = ?1 AND last_seen = ?2 AND signal_id = ?3",
        )?;
        for indicator in &signal.indicators {
            delete.execute(params![indicator.value, last_seen, id])?;
        }
    }
    tx.prepare_cached("DELETE FROM campaign_signals WHERE signal_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM incident_signals WHERE signal_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM signals WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::audit::{NewAuditEntry, ProblemKind};
    use crate::correlate::{CorrelationConfig, Correlator};
    use crate::store::{
        AuditFilter, CampaignFilter, IngestBatch, SignalFilter, SqliteStore, Store,
    };
    use std::sync::Arc;
    use vedetta_common::protocol::Batch;
    use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

    const DAY: i64 = 86_400_000_000_000;
    const START: i64 = 1_800_000_000_000_000_000;

    fn signal(org: &str, address: &str, day: i64) -> IngestBatch {
        let at = Timestamp(START + day * DAY);
        IngestBatch {
            org: org.into(),
            agent_id: format!("{org}-agent"),
            received_at: at,
            batch: Batch {
                seq: 1,
                signals: vec![
                    Signal::new("ssh_bruteforce", Severity::High, at)
                        .with_indicator(IndicatorType::Ip, address),
                ],
            },
        }
    }

    fn count(store: &mut SqliteStore, org: &str) -> usize {
        store
            .signals(&SignalFilter {
                org: Some(org.into()),
                ..SignalFilter::default()
            })
            .expect("signals")
            .items
            .len()
    }

    fn purges(store: &mut SqliteStore) -> Vec<serde_json::Value> {
        store
            .audit_log(&AuditFilter {
                action: Some("retention.purge".into()),
                oldest_first: true,
                ..AuditFilter::default()
            })
            .expect("audit")
            .items
            .iter()
            .map(|r| {
                serde_json::from_str(r.detail.as_deref().unwrap_or("null")).expect("test value")
            })
            .collect()
    }

    #[test]
    fn purge_with_a_frozen_clock_spares_held_signals_and_is_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(&dir.path().join("vedetta.db")).expect("open");
        store.set_correlator(Arc::new(
            Correlator::new(CorrelationConfig::default()).expect("config"),
        ));
        for org in ["bank", "city", "shop", "keeper"] {
            store.add_org(org, org, Timestamp(0)).expect("org");
        }
        // Day 0: one address at bank and city (a campaign), and one signal each that
        // belongs to nothing; day 399: a fresh signal at bank.
        store
            .ingest(&[
                signal("bank", "203.0.113.7", 0),
                signal("city", "203.0.113.7", 0),
                signal("bank", "198.51.100.1", 0),
                signal("city", "198.51.100.2", 0),
                signal("shop", "198.51.100.3", 0),
                signal("keeper", "198.51.100.4", 0),
                signal("bank", "198.51.100.5", 399),
            ])
            .expect("ingest");
        let campaign = store
            .campaigns(&CampaignFilter::default())
            .expect("campaigns")
            .items
            .remove(0);
        let now = Timestamp(START + 400 * DAY);
        let hold = |scope: &str, target: &str| crate::store::LegalHold {
            id: format!("HOLD-{target}"),
            scope: scope.into(),
            target: target.into(),
            reason: "case 42".into(),
            placed_by: "alice".into(),
            placed_at: now,
            released_by: None,
            released_at: None,
        };
        store
            .place_hold(&hold("campaign", &campaign.id))
            .expect("hold");
        store.place_hold(&hold("org", "shop")).expect("hold");
        assert!(
            store.place_hold(&hold("org", "nobody")).is_err(),
            "unknown target"
        );
        store.set_org_retention("keeper", Some(0)).expect("forever");

        let report = store.purge(now, 365, "collector").expect("purge");
        assert_eq!(report.signals_removed, 2, "{report:?}");
        assert_eq!(report.signals_kept_for_campaigns, 2);
        assert_eq!(report.orgs_held, ["shop"]);
        assert_eq!(
            count(&mut store, "bank"),
            2,
            "the campaign's and the fresh one"
        );
        assert_eq!(count(&mut store, "city"), 1, "the campaign's");
        assert_eq!(count(&mut store, "shop"), 1, "held");
        assert_eq!(count(&mut store, "keeper"), 1, "kept forever");
        // What went is gone from the indicator index too.
        assert_eq!(store.indicator("198.51.100.1").expect("report").signals, 0);
        assert_eq!(store.indicator("203.0.113.7").expect("report").signals, 2);

        let recorded = purges(&mut store);
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert_eq!(recorded[0]["org"], "bank");
        assert_eq!(recorded[0]["signals_removed"], 1);
        assert_eq!(recorded[0]["signals_kept_for_held_campaigns"], 1);
        assert_eq!(
            recorded[0]["oldest_removed"],
            serde_json::to_value(Timestamp(START)).expect("test value")
        );
        assert_eq!(recorded[1]["org"], "city");

        // Released, the shop's old signal goes at the next run; the chain holds.
        assert!(
            store
                .release_hold("HOLD-shop", "alice", now)
                .expect("release")
                .is_some()
        );
        assert!(
            store
                .release_hold("HOLD-shop", "alice", now)
                .expect("again")
                .is_none()
        );
        let report = store.purge(now, 365, "collector").expect("purge");
        assert_eq!(report.signals_removed, 1);
        assert_eq!(count(&mut store, "shop"), 0);
        assert_eq!(purges(&mut store).len(), 3);
        assert!(store.verify_audit(None).expect("verify").ok);
    }

    #[test]
    fn an_act_and_its_audit_entry_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(&dir.path().join("vedetta.db")).expect("open");
        let entry = |action: &str| {
            NewAuditEntry::act(
                Timestamp(1),
                "cli:root",
                "admin",
                action,
                serde_json::json!({}),
            )
        };
        store.audit_next(entry("org.add"));
        store.add_org("bank", "Bank", Timestamp(1)).expect("org");
        // The same org again fails: its entry goes with it.
        store.audit_next(entry("org.add"));
        assert!(store.add_org("bank", "Bank", Timestamp(2)).is_err());
        store.audit_next(entry("user.revoke"));
        assert!(!store.revoke_user("nobody", Timestamp(3)).expect("revoke"));
        let actions: Vec<String> = store
            .audit_log(&AuditFilter::default())
            .expect("audit")
            .items
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions, ["org.add"]);
        // Nothing left attached for the next act.
        store.add_org("city", "City", Timestamp(4)).expect("org");
        assert_eq!(
            store
                .audit_log(&AuditFilter::default())
                .expect("audit")
                .items
                .len(),
            1
        );
    }

    #[test]
    fn a_campaign_publishing_its_own_advisory_is_on_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(&dir.path().join("vedetta.db")).expect("open");
        let mut config = CorrelationConfig::default();
        config.auto_advisory.enabled = true;
        config.auto_advisory.min_orgs = 2;
        config.auto_advisory.min_severity = Severity::Low;
        store.set_correlator(Arc::new(Correlator::new(config).expect("config")));
        for org in ["bank", "city"] {
            store.add_org(org, org, Timestamp(0)).expect("org");
        }
        store
            .ingest(&[
                signal("bank", "203.0.113.7", 0),
                signal("city", "203.0.113.7", 0),
            ])
            .expect("ingest");
        let advisories = store
            .advisories(0, Timestamp(START), false, 10)
            .expect("advisories");
        assert_eq!(advisories.len(), 1, "{advisories:?}");
        let recorded = store
            .audit_log(&AuditFilter {
                action: Some("advisory.publish".into()),
                ..AuditFilter::default()
            })
            .expect("audit")
            .items;
        assert_eq!(recorded.len(), 1);
        assert_eq!(
            (recorded[0].actor.as_str(), recorded[0].role.as_str()),
            ("correlator", "system")
        );
        assert!(
            recorded[0]
                .detail
                .as_deref()
                .expect("detail")
                .contains(&advisories[0].id)
        );
    }

    #[test]
    fn the_product_cannot_change_the_log_and_the_chain_shows_who_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(&dir.path().join("vedetta.db")).expect("open");
        for n in 0..5 {
            store
                .append_audit(&[NewAuditEntry::act(
                    Timestamp(n),
                    "alice",
                    "admin",
                    "user.add",
                    serde_json::json!({ "user": n }),
                )])
                .expect("append");
        }
        let verdict = store.verify_audit(None).expect("verify");
        assert!(verdict.ok);
        assert_eq!(verdict.head.expect("head").seq, 5);
        let refused = store
            .connection
            .execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", []);
        assert!(
            refused
                .expect_err("refused")
                .to_string()
                .contains("append-only")
        );
        assert!(
            store
                .connection
                .execute("DELETE FROM audit_log", [])
                .is_err()
        );
        // Someone with the file drops the guard and edits.
        store
            .connection
            .execute_batch(
                "DROP TRIGGER audit_log_no_update;
                 UPDATE audit_log SET actor = 'mallory' WHERE seq = 2;",
            )
            .expect("tamper");
        let problem = store
            .verify_audit(None)
            .expect("verify")
            .problem
            .expect("found");
        assert_eq!((problem.seq, problem.kind), (2, ProblemKind::Edited));
        // A value of the wrong type is named too, not an error of the verification.
        store
            .connection
            .execute_batch("UPDATE audit_log SET actor = 'alice', at = 'noon' WHERE seq = 2;")
            .expect("tamper");
        let problem = store
            .verify_audit(None)
            .expect("verify")
            .problem
            .expect("found");
        assert_eq!((problem.seq, problem.kind), (2, ProblemKind::Edited));
        assert!(problem.message.contains("cannot be read"), "{problem:?}");
    }
}
