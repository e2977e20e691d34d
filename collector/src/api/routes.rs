//! The routes. [`ROUTES`] is the one list of what the API serves: the router is built
//! from it, and the OpenAPI test compares it with `openapi.json`.

use super::auth::Caller;
use super::governance::{self, Format};
use super::{ApiError, ApiState, OPENAPI, metrics};
use crate::correlate::Status;
use crate::store::{
    CampaignFilter, Cursor, IncidentFilter, NewAdvisory, Page, Role, SignalFilter, Store,
};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vedetta_common::duration::parse_duration;
use vedetta_common::protocol::MAX_ADVISORY_TEXT;
use vedetta_common::{Indicator, IndicatorType, Severity, Timestamp};

/// Every route: method and path.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/signals"),
    ("GET", "/api/v1/campaigns"),
    ("GET", "/api/v1/campaigns/{id}"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/indicators/{value}"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/advisories"),
    ("POST", "/api/v1/advisories"),
    ("DELETE", "/api/v1/advisories/{id}"),
    ("GET", "/api/v1/stream"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/verify"),
    ("GET", "/api/v1/holds"),
    ("POST", "/api/v1/holds"),
    ("DELETE", "/api/v1/holds/{id}"),
    ("GET", "/api/v1/export/stix"),
];

const READERS: &[Role] = &[Role::Admin, Role::Analyst];

fn handler(method: &str, path: &str) -> MethodRouter<Arc<ApiState>> {
    match (method, path) {
        ("GET", "/healthz") => get(healthz),
        ("GET", "/metrics") => get(metrics::metrics),
        ("GET", "/api/v1/openapi.json") => get(openapi),
        ("GET", "/api/v1/whoami") => get(whoami),
        ("GET", "/api/v1/signals") => get(signals),
        ("GET", "/api/v1/campaigns") => get(campaigns),
        ("GET", "/api/v1/campaigns/{id}") => get(campaign),
        ("GET", "/api/v1/incidents") => get(incidents),
        ("GET", "/api/v1/indicators/{value}") => get(indicator),
        ("GET", "/api/v1/agents") => get(agents),
        ("GET", "/api/v1/advisories") => get(advisories),
        ("POST", "/api/v1/advisories") => post(publish),
        ("DELETE", "/api/v1/advisories/{id}") => delete(withdraw),
        ("GET", "/api/v1/stream") => get(stream),
        ("GET", "/api/v1/audit") => get(governance::audit_log),
        ("GET", "/api/v1/audit/verify") => get(governance::audit_verify),
        ("GET", "/api/v1/holds") => get(governance::holds),
        ("POST", "/api/v1/holds") => post(governance::place_hold),
        ("DELETE", "/api/v1/holds/{id}") => delete(governance::release_hold),
        ("GET", "/api/v1/export/stix") => get(governance::stix),
        _ => unreachable!("ROUTES names a route without a handler: {method} {path}"),
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    let mut paths: BTreeMap<&str, MethodRouter<Arc<ApiState>>> = BTreeMap::new();
    for (method, path) in ROUTES {
        let route = handler(method, path);
        let merged = match paths.remove(path) {
            Some(existing) => existing.merge(route),
            None => route,
        };
        paths.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, route) in paths {
        router = router.route(path, route);
    }
    // The fallback goes under the audit layer too: a probe of unknown API paths is on
    // record like any other request.
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            super::audit::record_requests,
        ))
        .merge(crate::dashboard::router())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(
    State(state): State<Arc<ApiState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    match response.status() {
        StatusCode::UNAUTHORIZED => {
            state.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        StatusCode::FORBIDDEN => {
            state.metrics.forbidden.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Who the token belongs to: the dashboard shows the pages of the caller's role.
async fn whoami(caller: Caller) -> Json<serde_json::Value> {
    let user = caller.0;
    Json(serde_json::json!({ "name": user.name, "role": user.role, "org": user.org }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A time in a query: RFC 3339, or a duration meaning that long ago (`24h`).
fn parse_time(name: &str, text: &str) -> Result<Timestamp, ApiError> {
    if let Ok(at) = Timestamp::parse_rfc3339(text) {
        return Ok(at);
    }
    let ago = parse_duration(text).map_err(|_| {
        ApiError::bad_request(format!(
            "{name}: expected an RFC 3339 time or a duration such as 24h, got {text:?}"
        ))
    })?;
    let nanos = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
    Ok(Timestamp(Timestamp::now().0.saturating_sub(nanos)))
}

pub(super) fn parse_optional_time(
    name: &str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| parse_time(name, t)).transpose()
}

fn parse_min_severity(text: Option<&str>) -> Result<Option<Severity>, ApiError> {
    text.map(parse_severity).transpose()
}

/// Rows a list answers with: 100 unless asked, never more than a page may hold.
pub(super) fn page_limit(asked: Option<usize>) -> usize {
    asked.unwrap_or(100).clamp(1, crate::store::MAX_PAGE)
}

fn parse_severity(text: &str) -> Result<Severity, ApiError> {
    Severity::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "severity: expected info, low, medium, high or critical, got {text:?}"
            ))
        })
}

pub(super) fn parse_cursor(text: Option<&String>) -> Result<Option<Cursor>, ApiError> {
    text.map(|t| Cursor::decode(t).map_err(|e| ApiError::bad_request(format!("cursor: {e}"))))
        .transpose()
}

fn parse_status(text: Option<&str>) -> Result<Option<Status>, ApiError> {
    match text {
        None | Some("all") => Ok(None),
        Some(text) => Status::parse(text)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("status: expected open, closed or all")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalQuery {
    since: Option<String>,
    until: Option<String>,
    org: Option<String>,
    agent: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    indicator: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    /// `ndjson` or `csv`: every matching signal (at most `limit`), as a download.
    format: Option<Format>,
}

async fn signals(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<SignalQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Analyst, Role::Auditor, Role::Member])?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut org = query.org.clone();
    if caller.role() == Role::Member {
        let own = caller.0.org.clone();
        match (&org, &own) {
            (Some(asked), Some(own)) if asked != own => {
                return Err(ApiError::forbidden(
                    "a member sees only its own organisation's signals",
                ));
            }
            (_, None) => return Err(ApiError::forbidden("this member token names no org")),
            _ => org = own,
        }
    }
    let filter = SignalFilter {
        org,
        agent_id: query.agent,
        kind: query.kind,
        min_severity: parse_min_severity(query.severity.as_deref())?,
        since: parse_optional_time("since", query.since.as_deref())?,
        until: parse_optional_time("until", query.until.as_deref())?,
        indicator: query.indicator,
        cursor: parse_cursor(query.cursor.as_ref())?,
        limit: page_limit(query.limit),
    };
    match query.format.unwrap_or(Format::Json) {
        Format::Json => {
            let page = state.read(move |store| store.signals(&filter)).await?;
            caller.results(page.items.len());
            Ok(Json(page).into_response())
        }
        format => Ok(governance::export_signals(
            &state,
            &caller,
            format,
            filter,
            query.limit,
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignQuery {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    org: Option<String>,
    severity: Option<String>,
    indicator: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn campaigns(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<CampaignQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::correlate::Campaign>>, ApiError> {
    caller.require(READERS)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = CampaignFilter {
        status: parse_status(query.status.as_deref())?,
        org: query.org,
        min_severity: parse_min_severity(query.severity.as_deref())?,
        indicator: query.indicator,
        since: parse_optional_time("since", query.since.as_deref())?,
        until: parse_optional_time("until", query.until.as_deref())?,
        cursor: parse_cursor(query.cursor.as_ref())?,
        limit: page_limit(query.limit),
    };
    let page = state.read(move |store| store.campaigns(&filter)).await?;
    caller.results(page.items.len());
    Ok(Json(page))
}

async fn campaign(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(READERS)?;
    let (campaign, signals) = state
        .read(move |store| {
            let campaign = store.campaign(&id)?;
            let signals = match &campaign {
                Some(_) => store.campaign_signals(&id, 100)?,
                None => Vec::new(),
            };
            Ok((campaign, signals))
        })
        .await?;
    let campaign = campaign.ok_or_else(|| ApiError::not_found("no such campaign"))?;
    caller.results(1 + signals.len());
    Ok(Json(
        serde_json::json!({ "campaign": campaign, "signals": signals }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentQuery {
    status: Option<String>,
    org: Option<String>,
    severity: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn incidents(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::correlate::Incident>>, ApiError> {
    caller.require(READERS)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = IncidentFilter {
        status: parse_status(query.status.as_deref())?,
        org: query.org,
        min_severity: parse_min_severity(query.severity.as_deref())?,
        cursor: parse_cursor(query.cursor.as_ref())?,
        limit: page_limit(query.limit),
    };
    let page = state.read(move |store| store.incidents(&filter)).await?;
    caller.results(page.items.len());
    Ok(Json(page))
}

async fn indicator(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(value): Path<String>,
) -> Result<Json<crate::store::IndicatorReport>, ApiError> {
    caller.require(READERS)?;
    let value = normalise_lookup(&value);
    let report = state.read(move |store| store.indicator(&value)).await?;
    caller.results(usize::try_from(report.signals).unwrap_or(usize::MAX));
    Ok(Json(report))
}

/// Lookups are by the stored spelling: hashes and names in lower case.
fn normalise_lookup(value: &str) -> String {
    let value = value.trim();
    if value.parse::<std::net::IpAddr>().is_ok() {
        value.to_owned()
    } else {
        value.trim_end_matches('.').to_ascii_lowercase()
    }
}

async fn agents(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(READERS)?;
    let agents = state.read(|store| store.agents()).await?;
    caller.results(agents.len());
    Ok(Json(serde_json::json!({ "items": agents })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvisoryQuery {
    /// Also list expired and withdrawn advisories.
    all: Option<bool>,
    /// Advisories after this feed position.
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn advisories(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    query: Result<Query<AdvisoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::store::AdvisoryRecord>>, ApiError> {
    caller.require(&[Role::Admin, Role::Analyst, Role::Member])?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let all = query.all.unwrap_or(false);
    let after = match &query.cursor {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("cursor: malformed"))?,
        None => 0,
    };
    let size = page_limit(query.limit);
    let now = Timestamp::now();
    let rows = state
        .read(move |store| store.advisories(after, now, all, size))
        .await?;
    let next_cursor = (rows.len() == size)
        .then(|| rows.last().map(|a| a.seq.to_string()))
        .flatten();
    let items = rows
        .into_iter()
        .filter(|a| all || a.withdrawn_at.is_none())
        .collect::<Vec<_>>();
    caller.results(items.len());
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    indicator: Indicator,
    severity: Severity,
    #[serde(default)]
    description: String,
    /// How long it stays in force (`7d`, the default), or:
    expires_in: Option<String>,
    /// when it stops (RFC 3339).
    expires_at: Option<String>,
}

/// The longest an advisory may stay in force.
const MAX_ADVISORY_LIFE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks an indicator an analyst publishes and spells it as agents match it.
pub fn normalise_indicator(indicator: &Indicator) -> Result<Indicator, String> {
    let value = indicator.value.trim();
    let normal = match indicator.kind {
        IndicatorType::Ip => value
            .parse::<std::net::IpAddr>()
            .map_err(|_| format!("{value:?} is not an IP address"))?
            .to_string(),
        IndicatorType::Cidr => value
            .parse::<ipnet::IpNet>()
            .map_err(|_| format!("{value:?} is not a network (CIDR)"))?
            .trunc()
            .to_string(),
        IndicatorType::Domain => {
            let name = value.trim_end_matches('.').to_ascii_lowercase();
            let valid = name.len() <= 253
                && name.contains('.')
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(format!("{value:?} is not a domain name"));
            }
            name
        }
        IndicatorType::Sha256 => {
            if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{value:?} is not a SHA-256 (64 hex digits)"));
            }
            value.to_ascii_lowercase()
        }
        IndicatorType::Url => {
            if value.is_empty() || value.len() > 2048 || value.chars().any(char::is_control) {
                return Err("a URL of 1 to 2048 printable characters is expected".into());
            }
            value.to_owned()
        }
        IndicatorType::User | IndicatorType::Port => {
            return Err(format!(
                "{} indicators cannot be advised (agents pseudonymise or do not match them)",
                indicator.kind.as_str()
            ));
        }
    };
    Ok(Indicator::new(indicator.kind, normal))
}

async fn publish(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Result<Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<crate::store::AdvisoryRecord>), ApiError> {
    caller.require(READERS)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let indicator = normalise_indicator(&request.indicator).map_err(ApiError::bad_request)?;
    if request.description.len() > MAX_ADVISORY_TEXT
        || request.description.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "description: at most {MAX_ADVISORY_TEXT} bytes, no control characters"
        )));
    }
    let now = Timestamp::now();
    let expires_at = match (&request.expires_in, &request.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give expires_in or expires_at, not both",
            ));
        }
        (Some(text), None) => {
            let life = parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?;
            if life > MAX_ADVISORY_LIFE {
                return Err(ApiError::bad_request("expires_in: at most 365d"));
            }
            Timestamp(
                now.0
                    .saturating_add(i64::try_from(life.as_nanos()).unwrap_or(i64::MAX)),
            )
        }
        (None, Some(text)) => Timestamp::parse_rfc3339(text)
            .map_err(|e| ApiError::bad_request(format!("expires_at: {e}")))?,
        (None, None) => Timestamp(now.0 + 7 * 24 * 3600 * 1_000_000_000),
    };
    if expires_at <= now {
        return Err(ApiError::bad_request(
            "the advisory would already be expired",
        ));
    }
    let advisory = NewAdvisory {
        indicator,
        severity: request.severity,
        description: request.description,
        expires_at,
        published_by: caller.0.name.clone(),
    };
    let record = state
        .read(move |store| store.publish_advisory(&advisory, now))
        .await?;
    state.feed.advance(record.seq);
    state
        .metrics
        .advisories_published
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(advisory = %record.id, by = %record.published_by, "advisory published");
    caller.act(
        "advisory.publish",
        serde_json::json!({
            "id": record.id,
            "indicator": record.indicator,
            "severity": record.severity,
            "expires_at": record.expires_at,
        }),
    );
    Ok((StatusCode::CREATED, Json(record)))
}

async fn withdraw(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(READERS)?;
    let now = Timestamp::now();
    let withdrawing = id.clone();
    let (withdrawn, latest) = state
        .read(move |store| {
            Ok((
                store.withdraw_advisory(&id, now)?,
                store.max_advisory_seq()?,
            ))
        })
        .await?;
    if !withdrawn {
        return Err(ApiError::not_found("no such advisory in force"));
    }
    caller.act(
        "advisory.withdraw",
        serde_json::json!({ "id": withdrawing }),
    );
    state.feed.advance(latest);
    Ok(StatusCode::NO_CONTENT)
}

/// Server-sent events: each campaign and incident opened, grown or closed, as JSON.
async fn stream(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require(READERS)?;
    let receiver = state.events.subscribe();
    state.metrics.stream_clients.fetch_add(1, Ordering::Relaxed);
    let guard = StreamGuard(Arc::clone(&state));
    let events =
        futures_util::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
            let event = match receiver.recv().await {
                Ok(event) => SseEvent::default()
                    .event(event.name())
                    .json_data(&*event)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{missed}}}"))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(event), (receiver, guard)))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Counts stream clients down when their stream is dropped.
struct StreamGuard(Arc<ApiState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0
            .metrics
            .stream_clients
            .fetch_sub(1, Ordering::Relaxed);
    }
}
