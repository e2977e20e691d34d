//! Correlation state in SQLite: what the ingest transaction does for each new signal,
//! and the closing of quiet campaigns and incidents. The decisions are the correlator's
//! ([`crate::correlate`]); this module only reads their inputs and writes their results,
//! inside the caller's transaction, so the signal, its sightings and the campaign it
//! joins are committed together or not at all.

use super::StoreError;
use crate::correlate::{
    Campaign, ChainKey, Correlator, Event, Incident, OrgSighting, SignalView, Status, StepSignal,
};
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::BTreeSet;
use vedetta_common::protocol::MAX_ADVISORY_TEXT;
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| corrupt("encoding", error))
}

/// A signal just inserted, with the identity the collector gave it.
pub(super) struct NewSignal<'a> {
    pub org: &'a str,
    pub agent_id: &'a str,
    pub id: &'a str,
    pub signal: &'a Signal,
}

/// Records the indicators of a newly stored signal and correlates it. Returns the news.
pub(super) fn on_signal(
    tx: &Transaction<'_>,
    correlator: Option<&Correlator>,
    now: Timestamp,
    stored: NewSignal<'_>,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let NewSignal {
        org,
        agent_id,
        id: signal_id,
        signal,
    } = stored;
    let mut seen = BTreeSet::new();
    // One index row per value and signal, whatever its types: the signal pages walk this
    // index and must not list a signal twice.
    let mut values = BTreeSet::new();
    {
        let mut index = tx.prepare_cached(
            "INSERT INTO signal_indicators
                 (value, last_seen, signal_id, type, org, kind, severity, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for indicator in &signal.indicators {
            if indicator.kind == IndicatorType::Port || !seen.insert(indicator) {
                continue;
            }
            if !values.insert(indicator.value.as_str()) {
                continue;
            }
            index.execute(params![
                indicator.value,
                signal.last_seen.0,
                signal_id,
                indicator.kind.as_str(),
                org,
                signal.kind,
                signal.severity.rank(),
                signal.first_seen.0
            ])?;
        }
    }
    let Some(correlator) = correlator else {
        return Ok(());
    };
    let view = SignalView {
        org,
        agent_id,
        kind: &signal.kind,
        severity: signal.severity,
        first_seen: signal.first_seen,
        last_seen: signal.last_seen,
    };
    for indicator in seen.into_iter().filter(|i| correlator.correlates(i)) {
        let kind = indicator.kind.as_str();
        let value = indicator.value.as_str();
        record_sighting(tx, now, kind, value, view)?;
        let sightings = sightings(tx, kind, value)?;
        let open: Option<Campaign> = tx
            .prepare_cached(
                "SELECT body FROM campaigns
                 WHERE indicator_type = ?1 AND indicator_value = ?2 AND status = 'open'",
            )?
            .query_row(params![kind, value], |row| row.get::<_, String>(0))
            .optional()?
            .map(|body| serde_json::from_str(&body).map_err(|error| corrupt("campaign", error)))
            .transpose()?;
        let was_open = open.is_some();
        let had_advisory = open
            .as_ref()
            .is_some_and(|campaign| correlator.wants_advisory(campaign));
        let Some((campaign, event)) =
            correlator.observe(now, || new_id("CMP"), indicator, view, &sightings, open)
        else {
            continue;
        };
        save_campaign(tx, &campaign)?;
        if was_open {
            tx.prepare_cached(
                "INSERT INTO campaign_signals (campaign_id, signal_id) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![campaign.id, signal_id])?;
        } else {
            // The signals that made the campaign, from every organisation in it.
            let since = correlator.window_start(campaign.first_seen);
            let mut link = tx.prepare_cached(
                "INSERT INTO campaign_signals (campaign_id, signal_id)
                 SELECT ?1, signal_id FROM signal_indicators
                 WHERE value = ?2 AND type = ?3 AND org = ?4 AND last_seen >= ?5
                 ON CONFLICT DO NOTHING",
            )?;
            for part in &campaign.orgs {
                link.execute(params![campaign.id, value, kind, part.org, since.0])?;
            }
        }
        if !had_advisory && correlator.wants_advisory(&campaign) {
            publish_for_campaign(tx, correlator, now, &campaign)?;
        }
        events.extend(event);
    }
    for rule in correlator.chains_advanced_by(&signal.kind) {
        let key = match rule.key {
            ChainKey::Source => match signal
                .indicators
                .iter()
                .find(|i| i.kind == IndicatorType::Ip)
            {
                Some(indicator) => indicator.value.clone(),
                None => continue,
            },
            ChainKey::Host => agent_id.to_owned(),
        };
        let kinds: Vec<&str> = rule.steps.iter().flatten().map(String::as_str).collect();
        let since = correlator.window_start(signal.last_seen);
        let history = chain_history(tx, rule.key, org, &key, &kinds, since)?;
        let open: Option<Incident> = tx
            .prepare_cached(
                "SELECT body FROM incidents
                 WHERE org = ?1 AND chain = ?2 AND key_value = ?3 AND status = 'open'",
            )?
            .query_row(params![org, rule.name, key], |row| row.get::<_, String>(0))
            .optional()?
            .map(|body| serde_json::from_str(&body).map_err(|error| corrupt("incident", error)))
            .transpose()?;
        let steps: Vec<StepSignal> = history.iter().map(|(_, step)| step.clone()).collect();
        let Some((incident, event)) =
            correlator.chain(now, || new_id("INC"), rule, (org, &key), &steps, open)
        else {
            continue;
        };
        save_incident(tx, &incident)?;
        let mut link = tx.prepare_cached(
            "INSERT INTO incident_signals (incident_id, signal_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?;
        for (id, _) in &history {
            link.execute(params![incident.id, id])?;
        }
        events.extend(event);
    }
    Ok(())
}

fn record_sighting(
    tx: &Transaction<'_>,
    now: Timestamp,
    kind: &str,
    value: &str,
    view: SignalView<'_>,
) -> Result<(), StoreError> {
    let existing: Option<String> = tx
        .prepare_cached("SELECT kinds FROM sightings WHERE type = ?1 AND value = ?2 AND org = ?3")?
        .query_row(params![kind, value, view.org], |row| row.get(0))
        .optional()?;
    let mut kinds: BTreeSet<String> = existing
        .map(|text| serde_json::from_str(&text).unwrap_or_default())
        .unwrap_or_default();
    // A bounded set: kinds are a short vocabulary, but agents choose them.
    if kinds.len() < 32 {
        kinds.insert(view.kind.to_owned());
    }
    tx.prepare_cached(
        "INSERT INTO sightings (type, value, org, first_seen, last_seen, signals, kinds, max_severity, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)
         ON CONFLICT (type, value, org) DO UPDATE SET
             first_seen = MIN(first_seen, excluded.first_seen),
             last_seen = MAX(last_seen, excluded.last_seen),
             signals = signals + 1,
             kinds = excluded.kinds,
             max_severity = MAX(max_severity, excluded.max_severity),
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        kind,
        value,
        view.org,
        view.first_seen.0,
        view.last_seen.0,
        to_json(&kinds)?,
        view.severity.rank(),
        now.0
    ])?;
    Ok(())
}

/// Every organisation's sightings of one indicator (one row per organisation).
pub(super) fn sightings(
    tx: &rusqlite::Connection,
    kind: &str,
    value: &str,
) -> Result<Vec<OrgSighting>, StoreError> {
    let mut statement = tx.prepare_cached(
        "SELECT org, first_seen, last_seen, signals, kinds, max_severity
         FROM sightings WHERE type = ?1 AND value = ?2 ORDER BY org",
    )?;
    let rows = statement.query_map(params![kind, value], |row| {
        Ok(OrgSighting {
            org: row.get(0)?,
            first_seen: Timestamp(row.get(1)?),
            last_seen: Timestamp(row.get(2)?),
            signals: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
            kinds: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
            max_severity: Severity::from_rank(row.get(5)?).unwrap_or(Severity::Info),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest signals of a chain's kinds read to decide it. Chains are decided as each
/// signal arrives, so an incident opens while its history is short; past this many, a
/// long brute force costs what a short one does and the open incident keeps the steps
/// that scrolled out (see `Correlator::chain`).
const CHAIN_HISTORY: usize = 256;

fn chain_history(
    tx: &Transaction<'_>,
    key_type: ChainKey,
    org: &str,
    key: &str,
    kinds: &[&str],
    since: Timestamp,
) -> Result<Vec<(String, StepSignal)>, StoreError> {
    let placeholders = (0..kinds.len())
        .map(|i| format!("?{}", i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match key_type {
        // The source's rows of the indicator table carry all a step needs: no signal
        // is read.
        ChainKey::Source => format!(
            "SELECT signal_id, kind, severity, first_seen, last_seen FROM signal_indicators
             WHERE value = ?1 AND type = 'ip' AND org = ?2 AND last_seen >= ?3
               AND kind IN ({placeholders})
             ORDER BY last_seen DESC LIMIT {CHAIN_HISTORY}"
        ),
        ChainKey::Host => format!(
            "SELECT id, kind, severity, first_seen, last_seen FROM signals
             WHERE agent_id = ?1 AND org = ?2 AND last_seen >= ?3 AND kind IN ({placeholders})
             ORDER BY last_seen DESC LIMIT {CHAIN_HISTORY}"
        ),
    };
    let mut values: Vec<rusqlite::types::Value> =
        vec![key.to_owned().into(), org.to_owned().into(), since.0.into()];
    values.extend(
        kinds
            .iter()
            .map(|k| rusqlite::types::Value::from((*k).to_owned())),
    );
    let mut statement = tx.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
        Ok((
            row.get::<_, String>(0)?,
            StepSignal {
                kind: row.get(1)?,
                severity: Severity::from_rank(row.get(2)?).unwrap_or(Severity::Info),
                first_seen: Timestamp(row.get(3)?),
                last_seen: Timestamp(row.get(4)?),
            },
        ))
    })?;
    let mut history: Vec<(String, StepSignal)> = rows.collect::<Result<_, _>>()?;
    history.reverse();
    Ok(history)
}

pub(super) fn save_campaign(
    tx: &rusqlite::Connection,
    campaign: &Campaign,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO campaigns (id, indicator_type, indicator_value, status, severity, score,
             org_count, signals, first_seen, last_seen, opened_at, updated_at, closed_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, severity = excluded.severity,
             score = excluded.score, org_count = excluded.org_count, signals = excluded.signals,
             first_seen = excluded.first_seen, last_seen = excluded.last_seen,
             updated_at = excluded.updated_at, closed_at = excluded.closed_at, body = excluded.body",
    )?
    .execute(params![
        campaign.id,
        campaign.indicator.kind.as_str(),
        campaign.indicator.value,
        campaign.status.as_str(),
        campaign.severity.rank(),
        campaign.score,
        campaign.orgs.len() as i64,
        i64::try_from(campaign.signals).unwrap_or(i64::MAX),
        campaign.first_seen.0,
        campaign.last_seen.0,
        campaign.opened_at.0,
        campaign.updated_at.0,
        campaign.closed_at.map(|t| t.0),
        to_json(campaign)?,
    ])?;
    let mut member = tx.prepare_cached(
        "INSERT INTO campaign_orgs (campaign_id, org) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for part in &campaign.orgs {
        member.execute(params![campaign.id, part.org])?;
    }
    Ok(())
}

pub(super) fn save_incident(
    tx: &rusqlite::Connection,
    incident: &Incident,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO incidents (id, org, chain, key_type, key_value, status, severity,
             first_seen, last_seen, opened_at, updated_at, closed_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, severity = excluded.severity,
             first_seen = excluded.first_seen, last_seen = excluded.last_seen,
             updated_at = excluded.updated_at, closed_at = excluded.closed_at, body = excluded.body",
    )?
    .execute(params![
        incident.id,
        incident.org,
        incident.chain,
        incident.key_type.as_str(),
        incident.key,
        incident.status.as_str(),
        incident.severity.rank(),
        incident.first_seen.0,
        incident.last_seen.0,
        incident.opened_at.0,
        incident.updated_at.0,
        incident.closed_at.map(|t| t.0),
        to_json(incident)?,
    ])?;
    Ok(())
}

/// The next position in the advisory feed (the caller holds the write lock).
pub(super) fn next_advisory_seq(tx: &rusqlite::Connection) -> Result<i64, StoreError> {
    Ok(tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM advisories",
        [],
        |row| row.get(0),
    )?)
}

fn publish_for_campaign(
    tx: &Transaction<'_>,
    correlator: &Correlator,
    now: Timestamp,
    campaign: &Campaign,
) -> Result<(), StoreError> {
    let ttl = i64::try_from(correlator.config().auto_advisory.expires_after.as_nanos())
        .unwrap_or(i64::MAX);
    let mut description = format!(
        "Seen by {} organisations ({}); campaign {}",
        campaign.orgs.len(),
        campaign
            .kinds
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        campaign.id
    );
    description.truncate(MAX_ADVISORY_TEXT);
    let seq = next_advisory_seq(tx)?;
    let id = new_id("ADV");
    tx.execute(
        "INSERT INTO advisories (id, seq, indicator_type, indicator_value, severity, description,
             published_at, published_by, expires_at, campaign_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'correlator', ?8, ?9)",
        params![
            id,
            seq,
            campaign.indicator.kind.as_str(),
            campaign.indicator.value,
            campaign.severity.rank(),
            description,
            now.0,
            now.0.saturating_add(ttl),
            campaign.id
        ],
    )?;
    // Published to every agent by the collector itself: on record like an analyst's.
    super::audit::append(
        tx,
        &[crate::audit::NewAuditEntry::act(
            now,
            "correlator",
            "system",
            "advisory.publish",
            serde_json::json!({
                "id": id,
                "indicator": campaign.indicator,
                "severity": campaign.severity,
                "campaign": campaign.id,
            }),
        )],
    )?;
    Ok(())
}

/// Closes the campaigns and incidents that went quiet, and forgets sightings too old to
/// matter. Safe to run on several nodes at once: each row closes once.
pub(super) fn close_quiet(
    tx: &Transaction<'_>,
    correlator: &Correlator,
    now: Timestamp,
) -> Result<Vec<Event>, StoreError> {
    let before = correlator.quiet_before(now);
    let mut events = Vec::new();
    let quiet_campaigns: Vec<String> = tx
        .prepare_cached("SELECT body FROM campaigns WHERE status = 'open' AND updated_at <= ?1")?
        .query_map([before.0], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for body in quiet_campaigns {
        let mut campaign: Campaign =
            serde_json::from_str(&body).map_err(|error| corrupt("campaign", error))?;
        campaign.status = Status::Closed;
        campaign.closed_at = Some(now);
        save_campaign(tx, &campaign)?;
        events.push(Event::CampaignClosed { campaign });
    }
    let quiet_incidents: Vec<String> = tx
        .prepare_cached("SELECT body FROM incidents WHERE status = 'open' AND updated_at <= ?1")?
        .query_map([before.0], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for body in quiet_incidents {
        let mut incident: Incident =
            serde_json::from_str(&body).map_err(|error| corrupt("incident", error))?;
        incident.status = Status::Closed;
        incident.closed_at = Some(now);
        save_incident(tx, &incident)?;
        events.push(Event::IncidentClosed { incident });
    }
    // A sighting untouched for a window and a quiet period can start nothing new.
    let horizon = Timestamp(correlator.window_start(before).0);
    tx.execute("DELETE FROM sightings WHERE updated_at < ?1", [horizon.0])?;
    Ok(events)
}
