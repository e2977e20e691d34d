//! The auditors' side of the API: the audit log and its verification, legal holds, and
//! the exports (STIX 2.1 for campaigns, NDJSON and CSV for signals and the audit log).
//!
//! Exports stream: each page is read on a pooled connection, written out, and the
//! connection returned before the next, so that an export of millions of rows holds
//! neither a connection nor more than a page of memory for long.

use super::auth::Caller;
use super::routes::{page_limit, parse_cursor, parse_optional_time};
use super::{ApiError, ApiState};
use crate::audit::{AuditHead, AuditRecord};
use crate::correlate::Status;
use crate::export;
use crate::store::{
    AuditFilter, CampaignFilter, Cursor, LegalHold, MAX_PAGE, Page, Role, SignalFilter,
    SqliteStore, Store, StoreError,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;
use vedetta_common::Timestamp;

const AUDITORS: &[Role] = &[Role::Admin, Role::Auditor];

/// How an answer is written: one JSON page, or a whole export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Ndjson,
    Csv,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// What an export task sends: a chunk, or the error that cut the export short (the
/// response is then aborted, so that a client never takes a cut export for a whole one).
type Chunk = Result<Vec<u8>, std::io::Error>;

fn cut_short(what: &str, error: &ApiError) -> std::io::Error {
    tracing::warn!(error = %error.message, "{what} export stopped");
    std::io::Error::other(format!("{what} export stopped: {}", error.message))
}

/// A streamed download: chunks arrive on `chunks` until the sender is dropped.
fn download(format: Format, name: &str, chunks: mpsc::Receiver<Chunk>) -> Response {
    let body = futures_util::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    });
    let extension = match format {
        Format::Csv => "csv",
        _ => "ndjson",
    };
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{extension}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// A kind of record an export pages through, and how each is written.
struct Records<T> {
    /// For the log and the file name: `signals`, `audit`.
    name: &'static str,
    columns: &'static [&'static str],
    csv: fn(&T) -> Vec<String>,
    json: fn(&T) -> serde_json::Value,
}

/// Streams every record that `page` returns, page after page along the cursor from
/// `start` (at most `max` when given): each page is read on a pooled connection given back before the
/// next, so an export of millions of rows holds neither a connection nor more than a page.
fn stream<T: Send + 'static>(
    state: &Arc<ApiState>,
    format: Format,
    records: Records<T>,
    (start, max): (Option<Cursor>, Option<usize>),
    page: impl Fn(&mut SqliteStore, Option<Cursor>, usize) -> Result<Page<T>, StoreError>
    + Clone
    + Send
    + 'static,
) -> Response {
    let (sender, chunks) = mpsc::channel(4);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let (mut sent, mut cursor) = (0usize, start);
        let mut header = Some(records.columns).filter(|_| format == Format::Csv);
        loop {
            let limit = MAX_PAGE.min(max.map_or(usize::MAX, |m| m - sent));
            if limit == 0 {
                break;
            }
            let (fetch, after) = (page.clone(), cursor.take());
            let items = match state.read(move |store| fetch(store, after, limit)).await {
                Ok(items) => items,
                Err(error) => {
                    let _ = sender.send(Err(cut_short(records.name, &error))).await;
                    break;
                }
            };
            sent += items.items.len();
            let chunk = match format {
                Format::Csv => {
                    let rows: Vec<Vec<String>> = items.items.iter().map(records.csv).collect();
                    export::csv_rows(header.take(), &rows)
                }
                _ => ndjson(items.items.iter().map(records.json)),
            };
            if sender.send(Ok(chunk)).await.is_err() {
                break;
            }
            match items.next_cursor.as_deref().map(Cursor::decode) {
                Some(Ok(next)) => cursor = Some(next),
                _ => break,
            }
        }
    });
    download(format, records.name, chunks)
}

/// Streams every signal `filter` selects (at most `max` when given), newest page first.
pub fn export_signals(
    state: &Arc<ApiState>,
    caller: &Caller,
    format: Format,
    filter: SignalFilter,
    max: Option<usize>,
) -> Response {
    caller.act(
        "export.signals",
        serde_json::json!({ "format": format_name(format) }),
    );
    let records = Records {
        name: "signals",
        columns: &export::SIGNAL_COLUMNS,
        csv: export::signal_record,
        json: |signal| serde_json::to_value(signal).unwrap_or_default(),
    };
    let start = filter.cursor.clone();
    stream(
        state,
        format,
        records,
        (start, max),
        move |store, cursor, limit| {
            store.signals(&SignalFilter {
                cursor,
                limit,
                ..filter.clone()
            })
        },
    )
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Ndjson => "ndjson",
        Format::Csv => "csv",
    }
}

fn ndjson<T: serde::Serialize>(items: impl Iterator<Item = T>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        if serde_json::to_writer(&mut out, &item).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    format: Option<Format>,
}

pub async fn audit_log(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(AUDITORS)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let format = query.format.unwrap_or(Format::Json);
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        since: parse_optional_time("since", query.since.as_deref())?,
        until: parse_optional_time("until", query.until.as_deref())?,
        cursor: parse_cursor(query.cursor.as_ref())?,
        oldest_first: format != Format::Json,
        limit: page_limit(query.limit),
    };
    if format == Format::Json {
        let page = state.read(move |store| store.audit_log(&filter)).await?;
        caller.results(page.items.len());
        let items: Vec<serde_json::Value> = page.items.iter().map(|r| r.to_json()).collect();
        return Ok(
            Json(serde_json::json!({ "items": items, "next_cursor": page.next_cursor }))
                .into_response(),
        );
    }
    caller.act(
        "export.audit",
        serde_json::json!({ "format": format_name(format) }),
    );
    let records = Records {
        name: "audit",
        columns: &export::AUDIT_COLUMNS,
        csv: export::audit_record,
        json: AuditRecord::to_json,
    };
    let start = filter.cursor.clone();
    Ok(stream(
        &state,
        format,
        records,
        (start, None),
        move |store, cursor, limit| {
            store.audit_log(&AuditFilter {
                cursor,
                limit,
                ..filter.clone()
            })
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// `SEQ:HASH` recorded earlier: the chain must still hold it.
    head: Option<String>,
}

pub async fn audit_verify(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::audit::AuditVerification>, ApiError> {
    caller.require(AUDITORS)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let head = query
        .head
        .as_deref()
        .map(AuditHead::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("head: {e}")))?;
    let verdict = state.read(move |store| store.verify_audit(head)).await?;
    caller.act(
        "audit.verify",
        serde_json::json!({ "ok": verdict.ok, "entries": verdict.entries }),
    );
    Ok(Json(verdict))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldsQuery {
    /// Also list released holds.
    all: Option<bool>,
}

pub async fn holds(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<HoldsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(AUDITORS)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let all = query.all.unwrap_or(false);
    let holds = state.read(move |store| store.holds(all)).await?;
    caller.results(holds.len());
    Ok(Json(serde_json::json!({
        "items": holds,
        "retention_days": state.retention.retention_days,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    org: Option<String>,
    campaign: Option<String>,
    reason: String,
}

/// Longest reason a hold may carry.
const MAX_REASON: usize = 512;

/// Checks a hold's target and reason; shared by the API and the command line.
pub fn new_hold(
    org: Option<String>,
    campaign: Option<String>,
    reason: &str,
    by: &str,
    now: Timestamp,
) -> Result<LegalHold, String> {
    let (scope, target) = match (org, campaign) {
        (Some(org), None) => ("org", org),
        (None, Some(campaign)) => ("campaign", campaign),
        _ => {
            return Err(
                "a hold is on one organisation or one campaign: give org or campaign".into(),
            );
        }
    };
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(format!(
            "reason: 1 to {MAX_REASON} bytes, no control characters (say why: the case, the request)"
        ));
    }
    Ok(LegalHold {
        id: format!("HOLD-{}", uuid::Uuid::now_v7().simple()),
        scope: scope.to_owned(),
        target,
        reason: reason.to_owned(),
        placed_by: by.to_owned(),
        placed_at: now,
        released_by: None,
        released_at: None,
    })
}

pub async fn place_hold(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Result<Json<HoldRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<LegalHold>), ApiError> {
    caller.require(&[Role::Admin])?;
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let hold = new_hold(
        request.org,
        request.campaign,
        &request.reason,
        &caller.0.name,
        Timestamp::now(),
    )
    .map_err(ApiError::bad_request)?;
    let placed = hold.clone();
    state.read(move |store| store.place_hold(&placed)).await?;
    caller.act(
        "hold.place",
        serde_json::to_value(&hold).unwrap_or_default(),
    );
    Ok((StatusCode::CREATED, Json(hold)))
}

pub async fn release_hold(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LegalHold>, ApiError> {
    caller.require(&[Role::Admin])?;
    let by = caller.0.name.clone();
    let released = state
        .read(move |store| store.release_hold(&id, &by, Timestamp::now()))
        .await?
        .ok_or_else(|| ApiError::not_found("no active hold with this id"))?;
    caller.act(
        "hold.release",
        serde_json::to_value(&released).unwrap_or_default(),
    );
    Ok(Json(released))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StixQuery {
    /// One campaign; otherwise the campaigns of `status` (default open).
    campaign: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn stix(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<StixQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Analyst, Role::Auditor])?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let campaigns = match query.campaign {
        Some(id) => {
            let campaign = state
                .read(move |store| store.campaign(&id))
                .await?
                .ok_or_else(|| ApiError::not_found("no such campaign"))?;
            vec![campaign]
        }
        None => {
            let status = match query.status.as_deref() {
                None => Some(Status::Open),
                Some("all") => None,
                Some(text) => Some(Status::parse(text).ok_or_else(|| {
                    ApiError::bad_request("status: expected open, closed or all")
                })?),
            };
            let filter = CampaignFilter {
                status,
                limit: page_limit(query.limit),
                ..CampaignFilter::default()
            };
            state
                .read(move |store| store.campaigns(&filter))
                .await?
                .items
        }
    };
    caller.act(
        "export.stix",
        serde_json::json!({
            "campaigns": campaigns.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        }),
    );
    caller.results(campaigns.len());
    let bundle = export::stix_bundle(&campaigns, "Vedetta collector", Timestamp::now());
    Ok((
        [(header::CONTENT_TYPE, "application/stix+json;version=2.1")],
        Json(bundle),
    )
        .into_response())
}
