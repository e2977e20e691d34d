//! The analysts' HTTPS API (axum): JSON under `/api/v1`, bearer tokens with roles
//! ([`auth`]), a live stream of campaigns and incidents ([`routes::stream`]), Prometheus
//! `/metrics` and `/healthz`, and the OpenAPI description it is tested against
//! (`openapi.json`, served at `/api/v1/openapi.json`).
//!
//! TLS 1.3 only, with a certificate of the collector's own CA for the names people use
//! (`[api] tls_names`): tokens never cross a network in clear.

pub mod audit;
pub mod auth;
pub mod governance;
mod metrics;
mod routes;

use crate::correlate::Event;
use crate::feed::AdvisoryFeed;
use crate::ingest::IngestContext;
use crate::store::{SqliteStore, StoreError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, broadcast};

pub use routes::ROUTES;

/// The OpenAPI 3.1 description of this API, kept true by `collector/tests/api.rs`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Connections for API reads: a few, so that one slow query does not stall the others,
/// and bounded, so that a burst of requests queues instead of opening files.
#[derive(Debug)]
pub struct ReadPool {
    connections: Mutex<Vec<SqliteStore>>,
    available: Semaphore,
}

impl ReadPool {
    pub fn open(database: &Path, size: usize) -> Result<Self, StoreError> {
        let connections = (0..size.max(1))
            .map(|_| SqliteStore::open(database))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            available: Semaphore::new(connections.len()),
            connections: Mutex::new(connections),
        })
    }
}

/// Counters of the API, for `/metrics`.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub forbidden: AtomicU64,
    pub advisories_published: AtomicU64,
    pub stream_clients: AtomicU64,
}

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    pool: ReadPool,
    pub events: broadcast::Sender<Arc<Event>>,
    pub feed: AdvisoryFeed,
    pub ingest: Arc<IngestContext>,
    pub metrics: ApiMetrics,
    pub audit: audit::AuditWriter,
    /// The collector's `[retention]` setting, shown with holds.
    pub retention: crate::config::RetentionConfig,
}

impl ApiState {
    pub fn new(
        pool: ReadPool,
        events: broadcast::Sender<Arc<Event>>,
        feed: AdvisoryFeed,
        ingest: Arc<IngestContext>,
        audit: audit::AuditWriter,
        retention: crate::config::RetentionConfig,
    ) -> Self {
        Self {
            pool,
            events,
            feed,
            ingest,
            metrics: ApiMetrics::default(),
            audit,
            retention,
        }
    }

    /// Runs `work` on a pooled connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .pool
            .available
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("shutting down"))?;
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut store = {
                let mut connections = state
                    .pool
                    .connections
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                connections.pop()
            }
            .ok_or_else(|| ApiError::unavailable("no database connection free"))?;
            let result = work(&mut store);
            state
                .pool
                .connections
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .push(store);
            result.map_err(ApiError::from)
        })
        .await
        .map_err(|error| ApiError::internal(format!("query task failed: {error}")))?
    }
}

/// An error answered as `{"error": "…"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::AlreadyExists(what) => {
                Self::new(StatusCode::CONFLICT, format!("{what} already exists"))
            }
            other => {
                // Details stay in the collector's log, not in the answer.
                tracing::error!(error = %other, "API query failed");
                Self::internal("the collector could not answer; see its log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The whole API as an axum router.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    routes::router(state)
}

/// A rustls server configuration for the API: TLS 1.3 only, HTTP/1.1.
pub fn tls_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
