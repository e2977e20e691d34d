//! What analysts read, and the advisory feed and API users, for the SQLite backend.
//! Every list is a page: newest first, at most `limit` rows, with an opaque cursor that
//! continues exactly after the last row (keyset pagination: no OFFSET, so page 1,000 of
//! ten million signals costs what page one does).

use super::{
    AdvisoryRecord, ApiUser, CampaignFilter, IncidentFilter, IndicatorOrg, IndicatorReport,
    NewAdvisory, Role, SignalFilter, StoreError, StoredSignal,
};
use crate::correlate::{Campaign, Incident};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use vedetta_common::{Indicator, IndicatorType, Severity, Signal, Timestamp};

/// Where a page ends: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at, self.id))
    }

    /// Reads a cursor given back by a client; anything else is an error to show them.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "malformed cursor".to_owned())?;
        let text = String::from_utf8(bytes).map_err(|_| "malformed cursor".to_owned())?;
        let (at, id) = text.split_once(':').ok_or("malformed cursor")?;
        Ok(Self {
            at: at.parse().map_err(|_| "malformed cursor".to_owned())?,
            id: id.to_owned(),
        })
    }
}

/// A page of results and, if there may be more, the cursor of the next page.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The most rows one page may ask for.
pub const MAX_PAGE: usize = 1000;

/// The API caps pages at [`MAX_PAGE`]; the collector's own callers may ask for more.
pub(super) fn page_size(limit: usize) -> usize {
    if limit == 0 { MAX_PAGE } else { limit }
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

/// Builds `WHERE` clauses with numbered parameters.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) sql: String,
    pub(super) values: Vec<Value>,
}

impl Conditions {
    pub(super) fn push(&mut self, clause: &str, value: impl Into<Value>) {
        self.values.push(value.into());
        let number = self.values.len();
        self.sql.push_str(" AND ");
        self.sql
            .push_str(&clause.replace('?', &format!("?{number}")));
    }

    /// `(time, id) < (cursor)`, for pages sorted newest first. A row-value comparison,
    /// so that the database seeks the index to the cursor instead of filtering rows.
    fn after(&mut self, time: &str, id: &str, cursor: &Option<Cursor>) {
        if let Some(cursor) = cursor {
            self.values.push(cursor.at.into());
            self.values.push(cursor.id.clone().into());
            let n = self.values.len();
            self.sql
                .push_str(&format!(" AND ({time}, {id}) < (?{a}, ?{n})", a = n - 1));
        }
    }
}

pub(super) fn next_cursor<T>(
    items: &[T],
    size: usize,
    key: impl Fn(&T) -> Cursor,
) -> Option<String> {
    (items.len() == size)
        .then(|| items.last().map(|last| key(last).encode()))
        .flatten()
}

fn stored_signal(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode_signal(
    (org, agent_id, received_at, body): (String, String, i64, String),
) -> Result<StoredSignal, StoreError> {
    let signal: Signal = serde_json::from_str(&body).map_err(|e| corrupt("signal body", e))?;
    Ok(StoredSignal {
        org,
        agent_id,
        received_at: Timestamp(received_at),
        signal,
    })
}

pub fn signals(
    connection: &Connection,
    filter: &SignalFilter,
) -> Result<Page<StoredSignal>, StoreError> {
    let size = page_size(filter.limit);
    let mut conditions = Conditions::default();
    // With an indicator, walk that value's index newest first, in the order of the page
    // (its rows carry the signal's time and id), so that the busiest address costs what
    // a rare one does; otherwise the signals' own indexes.
    let (from, time, id) = match &filter.indicator {
        Some(value) => {
            conditions.push("i.value = ?", value.clone());
            (
                "signal_indicators i JOIN signals s ON s.id = i.signal_id",
                "i.last_seen",
                "i.signal_id",
            )
        }
        None => ("signals s", "s.last_seen", "s.id"),
    };
    if let Some(org) = &filter.org {
        conditions.push("s.org = ?", org.clone());
    }
    if let Some(agent) = &filter.agent_id {
        conditions.push("s.agent_id = ?", agent.clone());
    }
    if let Some(kind) = &filter.kind {
        conditions.push("s.kind = ?", kind.clone());
    }
    if let Some(severity) = filter.min_severity {
        conditions.push("s.severity >= ?", i64::from(severity.rank()));
    }
    if let Some(since) = filter.since {
        conditions.push(&format!("{time} >= ?"), since.0);
    }
    if let Some(until) = filter.until {
        conditions.push(&format!("{time} < ?"), until.0);
    }
    conditions.after(time, id, &filter.cursor);
    // A signal's indicators are distinct (see correlation::on_signal), so no DISTINCT.
    let sql = format!(
        "SELECT s.org, s.agent_id, s.received_at, s.body FROM {from}
         WHERE 1 = 1{} ORDER BY {time} DESC, {id} DESC LIMIT {size}",
        conditions.sql
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(conditions.values), stored_signal)?;
    let items = rows
        .map(|row| decode_signal(row?))
        .collect::<Result<Vec<_>, _>>()?;
    let next = next_cursor(&items, size, |s| Cursor {
        at: s.signal.last_seen.0,
        id: s.signal.id.to_string(),
    });
    Ok(Page {
        items,
        next_cursor: next,
    })
}

pub fn campaigns(
    connection: &Connection,
    filter: &CampaignFilter,
) -> Result<Page<Campaign>, StoreError> {
    let size = page_size(filter.limit);
    let mut conditions = Conditions::default();
    if let Some(status) = filter.status {
        conditions.push("status = ?", status.as_str().to_owned());
    }
    if let Some(org) = &filter.org {
        conditions.push(
            "id IN (SELECT campaign_id FROM campaign_orgs WHERE org = ?)",
            org.clone(),
        );
    }
    if let Some(severity) = filter.min_severity {
        conditions.push("severity >= ?", i64::from(severity.rank()));
    }
    if let Some(value) = &filter.indicator {
        conditions.push("indicator_value = ?", value.clone());
    }
    if let Some(since) = filter.since {
        conditions.push("opened_at >= ?", since.0);
    }
    if let Some(until) = filter.until {
        conditions.push("opened_at < ?", until.0);
    }
    conditions.after("opened_at", "id", &filter.cursor);
    let sql = format!(
        "SELECT body FROM campaigns WHERE 1 = 1{} ORDER BY opened_at DESC, id DESC LIMIT {size}",
        conditions.sql
    );
    let items = bodies::<Campaign>(connection, &sql, conditions.values, "campaign")?;
    let next = next_cursor(&items, size, |c| Cursor {
        at: c.opened_at.0,
        id: c.id.clone(),
    });
    Ok(Page {
        items,
        next_cursor: next,
    })
}

pub fn incidents(
    connection: &Connection,
    filter: &IncidentFilter,
) -> Result<Page<Incident>, StoreError> {
    let size = page_size(filter.limit);
    let mut conditions = Conditions::default();
    if let Some(status) = filter.status {
        conditions.push("status = ?", status.as_str().to_owned());
    }
    if let Some(org) = &filter.org {
        conditions.push("org = ?", org.clone());
    }
    if let Some(severity) = filter.min_severity {
        conditions.push("severity >= ?", i64::from(severity.rank()));
    }
    conditions.after("opened_at", "id", &filter.cursor);
    let sql = format!(
        "SELECT body FROM incidents WHERE 1 = 1{} ORDER BY opened_at DESC, id DESC LIMIT {size}",
        conditions.sql
    );
    let items = bodies::<Incident>(connection, &sql, conditions.values, "incident")?;
    let next = next_cursor(&items, size, |i| Cursor {
        at: i.opened_at.0,
        id: i.id.clone(),
    });
    Ok(Page {
        items,
        next_cursor: next,
    })
}

fn bodies<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    sql: &str,
    values: Vec<Value>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params_from_iter(values), |row| row.get::<_, String>(0))?;
    rows.map(|body| serde_json::from_str(&body?).map_err(|e| corrupt(what, e)))
        .collect()
}

pub fn campaign(connection: &Connection, id: &str) -> Result<Option<Campaign>, StoreError> {
    connection
        .prepare_cached("SELECT body FROM campaigns WHERE id = ?1")?
        .query_row([id], |row| row.get::<_, String>(0))
        .optional()?
        .map(|body| serde_json::from_str(&body).map_err(|e| corrupt("campaign", e)))
        .transpose()
}

pub fn campaign_signals(
    connection: &Connection,
    id: &str,
    limit: usize,
) -> Result<Vec<StoredSignal>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT s.org, s.agent_id, s.received_at, s.body FROM campaign_signals c
         JOIN signals s ON s.id = c.signal_id WHERE c.campaign_id = ?1
         ORDER BY s.last_seen DESC, s.id DESC LIMIT {}",
        page_size(limit)
    ))?;
    let rows = statement.query_map([id], stored_signal)?;
    rows.map(|row| decode_signal(row?)).collect()
}

/// Rows of one value read to summarise it; beyond this the report says `truncated`.
const INDICATOR_SCAN: usize = 10_000;

pub fn indicator(connection: &Connection, value: &str) -> Result<IndicatorReport, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT org, kind, first_seen, last_seen FROM signal_indicators WHERE value = ?1
         ORDER BY last_seen DESC LIMIT {INDICATOR_SCAN}"
    ))?;
    let rows = statement.query_map([value], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    let mut orgs: std::collections::BTreeMap<String, IndicatorOrg> = Default::default();
    let mut signals = 0u64;
    for row in rows {
        let (org, kind, first, last) = row?;
        signals += 1;
        let entry = orgs.entry(org.clone()).or_insert_with(|| IndicatorOrg {
            org,
            first_seen: Timestamp(first),
            last_seen: Timestamp(last),
            signals: 0,
            kinds: Vec::new(),
        });
        entry.signals += 1;
        entry.first_seen = entry.first_seen.min(Timestamp(first));
        entry.last_seen = entry.last_seen.max(Timestamp(last));
        if !entry.kinds.contains(&kind) {
            entry.kinds.push(kind);
        }
    }
    let organisations: Vec<IndicatorOrg> = orgs.into_values().collect();
    let campaigns = bodies::<Campaign>(
        connection,
        "SELECT body FROM campaigns WHERE indicator_value = ?1 ORDER BY opened_at DESC LIMIT 100",
        vec![value.to_owned().into()],
        "campaign",
    )?;
    let advisories = advisory_rows(
        connection,
        "WHERE indicator_value = ?1 ORDER BY seq DESC LIMIT 100",
        vec![value.to_owned().into()],
    )?;
    let recent = signals_for(connection, value, 20)?;
    Ok(IndicatorReport {
        value: value.to_owned(),
        first_seen: organisations.iter().map(|o| o.first_seen).min(),
        last_seen: organisations.iter().map(|o| o.last_seen).max(),
        truncated: signals as usize >= INDICATOR_SCAN,
        signals,
        organisations,
        campaigns,
        advisories,
        recent,
    })
}

fn signals_for(
    connection: &Connection,
    value: &str,
    limit: usize,
) -> Result<Vec<StoredSignal>, StoreError> {
    Ok(signals(
        connection,
        &SignalFilter {
            indicator: Some(value.to_owned()),
            limit,
            ..SignalFilter::default()
        },
    )?
    .items)
}

const ADVISORY_COLUMNS: &str = "id, seq, indicator_type, indicator_value, severity, description, \
     published_at, published_by, expires_at, withdrawn_at, campaign_id";

fn advisory_rows(
    connection: &Connection,
    tail: &str,
    values: Vec<Value>,
) -> Result<Vec<AdvisoryRecord>, StoreError> {
    let mut statement =
        connection.prepare_cached(&format!("SELECT {ADVISORY_COLUMNS} FROM advisories {tail}"))?;
    let rows = statement.query_map(params_from_iter(values), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, i64>(8)?,
            row.get::<_, Option<i64>>(9)?,
            row.get::<_, Option<String>>(10)?,
        ))
    })?;
    rows.map(|row| {
        let (
            id,
            seq,
            kind,
            value,
            severity,
            description,
            published,
            by,
            expires,
            withdrawn,
            campaign,
        ) = row?;
        Ok(AdvisoryRecord {
            id,
            seq: u64::try_from(seq).unwrap_or(0),
            indicator: Indicator::new(
                kind.parse::<IndicatorType>()
                    .map_err(|e| corrupt("advisory", e))?,
                value,
            ),
            severity: Severity::from_rank(severity).unwrap_or(Severity::High),
            description,
            published_at: Timestamp(published),
            published_by: by,
            expires_at: Timestamp(expires),
            withdrawn_at: withdrawn.map(Timestamp),
            campaign_id: campaign,
        })
    })
    .collect()
}

pub fn publish_advisory(
    connection: &mut Connection,
    advisory: &NewAdvisory,
    now: Timestamp,
) -> Result<AdvisoryRecord, StoreError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seq = super::correlation::next_advisory_seq(&tx)?;
    let id = format!("ADV-{}", uuid::Uuid::now_v7().simple());
    tx.execute(
        "INSERT INTO advisories (id, seq, indicator_type, indicator_value, severity, description,
             published_at, published_by, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            seq,
            advisory.indicator.kind.as_str(),
            advisory.indicator.value,
            advisory.severity.rank(),
            advisory.description,
            now.0,
            advisory.published_by,
            advisory.expires_at.0
        ],
    )?;
    tx.commit()?;
    Ok(AdvisoryRecord {
        id,
        seq: u64::try_from(seq).unwrap_or(0),
        indicator: advisory.indicator.clone(),
        severity: advisory.severity,
        description: advisory.description.clone(),
        published_at: now,
        published_by: advisory.published_by.clone(),
        expires_at: advisory.expires_at,
        withdrawn_at: None,
        campaign_id: None,
    })
}

pub fn withdraw_advisory(
    connection: &mut Connection,
    id: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seq = super::correlation::next_advisory_seq(&tx)?;
    let changed = tx.execute(
        "UPDATE advisories SET seq = ?1, withdrawn_at = ?2 WHERE id = ?3 AND withdrawn_at IS NULL",
        params![seq, now.0, id],
    )?;
    tx.commit()?;
    Ok(changed == 1)
}

pub fn advisories(
    connection: &Connection,
    after_seq: u64,
    now: Timestamp,
    include_expired: bool,
    limit: usize,
) -> Result<Vec<AdvisoryRecord>, StoreError> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let expiry = if include_expired { i64::MIN } else { now.0 };
    advisory_rows(
        connection,
        &format!(
            "WHERE seq > ?1 AND expires_at > ?2 ORDER BY seq LIMIT {}",
            limit.clamp(1, 100_000)
        ),
        vec![after.into(), expiry.into()],
    )
}

/// name, role, org, created_at, revoked_at.
type UserRow = (String, String, Option<String>, i64, Option<i64>);

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode_user((name, role, org, created, revoked): UserRow) -> Result<ApiUser, StoreError> {
    Ok(ApiUser {
        role: Role::parse(&role).ok_or_else(|| corrupt("user", format!("role {role:?}")))?,
        name,
        org,
        created_at: Timestamp(created),
        revoked_at: revoked.map(Timestamp),
    })
}

/// `NotFound` unless the organisation exists.
pub fn require_org(connection: &Connection, org: &str) -> Result<(), StoreError> {
    let known: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)",
        [org],
        |row| row.get(0),
    )?;
    if known {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("org {org}")))
    }
}

/// Open campaigns, counted.
pub fn count_open_campaigns(connection: &Connection) -> Result<u64, StoreError> {
    let count: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM campaigns WHERE status = 'open'")?
        .query_row([], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub fn add_user(
    connection: &Connection,
    user: &ApiUser,
    token_hash: &str,
) -> Result<(), StoreError> {
    if let Some(org) = &user.org {
        require_org(connection, org)?;
    }
    let inserted = connection.execute(
        "INSERT INTO api_users (name, role, org, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO NOTHING",
        params![user.name, user.role.as_str(), user.org, token_hash, user.created_at.0],
    )?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists(format!("user {}", user.name)));
    }
    Ok(())
}

pub fn user_by_token(
    connection: &Connection,
    token_hash: &str,
) -> Result<Option<ApiUser>, StoreError> {
    connection
        .prepare_cached(
            "SELECT name, role, org, created_at, revoked_at FROM api_users
             WHERE token_hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row([token_hash], user_row)
        .optional()?
        .map(decode_user)
        .transpose()
}

pub fn users(connection: &Connection) -> Result<Vec<ApiUser>, StoreError> {
    let mut statement = connection
        .prepare("SELECT name, role, org, created_at, revoked_at FROM api_users ORDER BY name")?;
    let rows = statement.query_map([], user_row)?;
    rows.map(|row| decode_user(row?)).collect()
}

pub fn revoke_user(
    connection: &Connection,
    name: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let known: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM api_users WHERE name = ?1)",
        [name],
        |row| row.get(0),
    )?;
    connection.execute(
        "UPDATE api_users SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
        params![now.0, name],
    )?;
    Ok(known)
}
