//! Every API call is recorded in the audit chain before its answer leaves: who (the
//! token's user, or `anonymous`), their role, the route and its query parameters, the
//! status, how many results, and for acts what they changed.
//!
//! Handlers learn nothing of the recording but what they add to the request's
//! [`AuditNote`] (the caller, found by the [`super::auth::Caller`] extractor; a result
//! count; a named act and its detail). Entries go to one writer thread that appends
//! whatever has queued up in one transaction (group commit), so a burst of requests costs
//! one fsync rather than one each. An answer whose entry could not be written is replaced
//! by a 503: no access goes unrecorded.

use super::ApiState;
use crate::audit::NewAuditEntry;
use crate::store::{ApiUser, SqliteStore, Store, StoreError};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tracing::error;
use vedetta_common::Timestamp;

/// Entries waiting for the writer; past this, requests wait for room.
const QUEUE: usize = 4096;
/// Most entries appended in one transaction.
const GROUP: usize = 512;

type Pending = (NewAuditEntry, oneshot::Sender<Result<u64, String>>);

/// The handle requests use to append to the chain.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    sender: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the writer thread on its own connection. It ends when every handle is gone.
    pub fn start(mut store: SqliteStore) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (sender, mut receiver) = mpsc::channel::<Pending>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = receiver.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < GROUP {
                        match receiver.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    let entries: Vec<NewAuditEntry> =
                        group.iter().map(|(entry, _)| entry.clone()).collect();
                    match store.append_audit(&entries) {
                        Ok(sequence) => {
                            for ((_, reply), seq) in group.into_iter().zip(sequence) {
                                let _ = reply.send(Ok(seq));
                            }
                        }
                        Err(error) => {
                            error!(%error, entries = entries.len(), "cannot append to the audit log");
                            for (_, reply) in group {
                                let _ = reply.send(Err(error.to_string()));
                            }
                        }
                    }
                }
            })?;
        Ok((Self { sender }, thread))
    }

    /// Appends one entry; returns its sequence number once committed.
    pub async fn record(&self, entry: NewAuditEntry) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((entry, reply))
            .await
            .map_err(|_| StoreError::Corrupt("the audit writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the audit writer has stopped".into()))?
            .map_err(StoreError::Corrupt)
    }
}

#[derive(Debug, Default)]
struct Note {
    user: Option<ApiUser>,
    results: Option<u64>,
    action: Option<String>,
    detail: Option<serde_json::Value>,
}

/// What a request's handler adds to its audit entry.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<Note>>);

impl AuditNote {
    fn with<T>(&self, change: impl FnOnce(&mut Note) -> T) -> T {
        change(&mut self.0.lock().unwrap_or_else(|poison| poison.into_inner()))
    }

    pub(super) fn caller(&self, user: &ApiUser) {
        self.with(|note| note.user = Some(user.clone()));
    }

    /// How many results the answer holds.
    pub fn results(&self, count: usize) {
        self.with(|note| note.results = Some(u64::try_from(count).unwrap_or(u64::MAX)));
    }

    /// Names the act and what it changed (`advisory.publish`, the advisory).
    pub fn act(&self, action: &str, detail: serde_json::Value) {
        self.with(|note| {
            note.action = Some(action.to_owned());
            note.detail = Some(detail);
        });
    }
}

/// Longest text kept of one query value or of a path; what is cut is said, with its
/// length and SHA-256, so that the entry still identifies the request.
const MAX_TEXT: usize = 512;
/// Most query parameters kept per request.
const MAX_PARAMS: usize = 32;

/// A text from the request as the log keeps it: API tokens pasted into a URL by mistake
/// are replaced by their hash, long texts cut.
fn kept(text: &str) -> String {
    if let Some(start) = text.find(super::auth::TOKEN_PREFIX) {
        let redacted = format!(
            "{}[token redacted, sha256 {}]",
            kept(&text[..start]),
            vedetta_common::identity::sha256_hex(&text.as_bytes()[start..])
        );
        return redacted;
    }
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}[cut: {} bytes in all, sha256 {}]",
        &text[..end],
        text.len(),
        vedetta_common::identity::sha256_hex(text.as_bytes())
    )
}

/// The query string as a JSON object (a repeated name keeps every value, in a list).
fn query_params(query: Option<&str>) -> Option<serde_json::Value> {
    let query = query.filter(|q| !q.is_empty())?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_else(|_| {
        // Not form-encoded: kept as it came, so that even a malformed request is on record.
        vec![("_raw".to_owned(), query.to_owned())]
    });
    let total = pairs.len();
    let mut object = serde_json::Map::new();
    for (name, value) in pairs.into_iter().take(MAX_PARAMS) {
        let (name, value) = (kept(&name), kept(&value));
        match object.get_mut(&name) {
            Some(serde_json::Value::Array(values)) => values.push(value.into()),
            Some(first) => *first = serde_json::Value::Array(vec![first.take(), value.into()]),
            None => {
                object.insert(name, value.into());
            }
        }
    }
    if total > MAX_PARAMS {
        object.insert(
            "_cut".to_owned(),
            format!("{total} parameters in all").into(),
        );
    }
    Some(serde_json::Value::Object(object))
}

/// Records every request under `/api/v1/` (the description of the API itself aside).
///
/// The handler and the recording run in a task of their own: a client that hangs up
/// after sending a write cannot cancel the recording of what the write did.
pub async fn record_requests(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let params = query_params(request.uri().query());
    let note = AuditNote::default();
    request.extensions_mut().insert(note.clone());
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        let Note {
            user,
            results,
            action,
            detail,
        } = note.with(std::mem::take);
        let (actor, role) = match &user {
            Some(user) => (user.name.clone(), user.role.as_str().to_owned()),
            None => ("anonymous".to_owned(), "none".to_owned()),
        };
        let action = action.unwrap_or_else(|| {
            if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
                "api.read".into()
            } else {
                "api.write".into()
            }
        });
        let entry = NewAuditEntry {
            at: Timestamp::now(),
            actor,
            role,
            action,
            route: Some(format!("{method} {}", kept(&path))),
            params,
            status: Some(response.status().as_u16()),
            results,
            detail,
        };
        match state.audit.record(entry).await {
            Ok(_) => response,
            Err(error) => {
                error!(%error, route = %kept(&path), "request not recorded in the audit log; answer withheld");
                super::ApiError::unavailable(
                    "the request could not be recorded in the audit log, so it is not answered",
                )
                .into_response()
            }
        }
    });
    task.await.unwrap_or_else(|error| {
        error!(%error, "API request task failed");
        super::ApiError::internal("the request failed; see the collector's log").into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_become_an_object() {
        assert_eq!(query_params(None), None);
        assert_eq!(
            query_params(Some("org=bank&kind=a&kind=b&since=24h")).expect("test value"),
            serde_json::json!({"org": "bank", "kind": ["a", "b"], "since": "24h"})
        );
        assert_eq!(
            query_params(Some("indicator=203.0.113.7%2F32")).expect("test value"),
            serde_json::json!({"indicator": "203.0.113.7/32"})
        );
    }

    #[test]
    fn what_is_kept_of_a_request_is_bounded_and_never_a_token() {
        let huge = "x".repeat(70_000);
        let params = query_params(Some(&format!("q={huge}"))).expect("params");
        let kept_value = params["q"].as_str().expect("text");
        assert!(kept_value.len() < 700, "{} bytes kept", kept_value.len());
        assert!(kept_value.contains("70000 bytes in all"));
        let many: Vec<String> = (0..100).map(|n| format!("p{n}=1")).collect();
        let params = query_params(Some(&many.join("&"))).expect("params");
        assert_eq!(params.as_object().expect("object").len(), MAX_PARAMS + 1);
        let token = format!("{}{}", super::super::auth::TOKEN_PREFIX, "ab".repeat(32));
        let params = query_params(Some(&format!("token={token}"))).expect("params");
        assert!(!params.to_string().contains(&token), "{params}");
        assert!(params["token"].as_str().expect("text").contains("redacted"));
    }
}
