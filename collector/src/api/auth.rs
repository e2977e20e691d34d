//! Bearer tokens and roles. A token is 256 random bits shown once (`user add`); the
//! store keeps only its SHA-256, which is enough for a secret that cannot be guessed (a
//! slow password hash protects low-entropy secrets, which these are not). Every route
//! names the roles it admits: no token or an unknown one is 401, a known token of a role
//! the route does not admit is 403.

use super::audit::AuditNote;
use super::{ApiError, ApiState};
use crate::store::{ApiUser, Role, Store};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ring::rand::SecureRandom;
use std::sync::Arc;
use vedetta_common::identity::{hex, sha256_hex};

/// Prefix of API tokens, so that secret scanners and people recognise them.
pub const TOKEN_PREFIX: &str = "vdt_";

/// A new random token.
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiUser, pub AuditNote);

impl Caller {
    /// Refuses the request (403) unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                self.0.role.as_str()
            )))
        }
    }

    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Tells the audit log how many results the answer holds.
    pub fn results(&self, count: usize) {
        self.1.results(count);
    }

    /// Tells the audit log what this request changed.
    pub fn act(&self, action: &str, detail: serde_json::Value) {
        self.1.act(action, detail);
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer TOKEN`"))?;
        let hash = token_hash(token);
        let user = state
            .read(move |store| store.user_by_token(&hash))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        // The request's audit entry names who made it (see `audit::record_requests`).
        let note = parts
            .extensions
            .get::<AuditNote>()
            .cloned()
            .unwrap_or_default();
        note.caller(&user);
        Ok(Caller(user, note))
    }
}
