//! Who is calling: client keys become tenant ids at the edge; admin keys open `/admin/*`.

use axum::http::{HeaderMap, StatusCode, header};

use crate::{ApiError, ProxyState};

/// The client id of every caller when auth is off.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// Who may score a completion: an admin key any; a client key only its own.
pub(crate) enum Caller {
    Admin,
    Tenant(String),
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Equal bytes, compared in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The position of `token` in `keys`, every key compared (no early exit on a match).
fn key_index(keys: &[String], token: &str) -> Option<usize> {
    keys.iter().enumerate().fold(None, |found, (i, k)| {
        let hit = constant_time_eq(k.as_bytes(), token.as_bytes());
        found.or(hit.then_some(i))
    })
}

fn is_admin(state: &ProxyState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| key_index(&state.settings.admin_keys, t).is_some())
}

/// The caller's tenant id: `key-<i>` for the i-th configured client key (an identity that
/// is not the secret, so it may be kept and logged), [`ANONYMOUS`] with auth off.
pub(crate) fn authorise(state: &ProxyState, headers: &HeaderMap) -> Result<String, ApiError> {
    if state.settings.client_keys.is_empty() {
        return Ok(ANONYMOUS.to_owned());
    }
    match bearer(headers).and_then(|t| key_index(&state.settings.client_keys, t)) {
        Some(i) => Ok(format!("key-{i}")),
        None => Err(ApiError::status(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "missing or invalid bearer token",
        )),
    }
}

/// Admin endpoints take only admin keys and are refused outright when none is configured:
/// a reload is not something an anonymous caller may trigger.
pub(crate) fn authorise_admin(state: &ProxyState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.settings.admin_keys.is_empty() {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled: set AUTOMIX_ADMIN_KEYS",
        ));
    }
    if is_admin(state, headers) {
        return Ok(());
    }
    Err(ApiError::status(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "missing or invalid admin bearer token",
    ))
}

/// An admin key, or else a client (the metrics and feedback endpoints take either).
pub(crate) fn admin_or_client(state: &ProxyState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if is_admin(state, headers) {
        return Ok(Caller::Admin);
    }
    authorise(state, headers).map(Caller::Tenant)
}
