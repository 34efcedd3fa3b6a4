//! Signed URLs: an item's stream, HLS and image URLs carry a stream token
//! (`?t=`, bound to one user and one item, expiring), so that players and
//! `<img>`/`<video>` elements that send no headers are still authorised.

use axum::http::request::Parts;
use omega_consensus::state_machine::read;
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState, Caller};
use crate::tokens::STREAM_TTL_MS;

/// The `?t=` of signed URLs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// A stream token for this item (instead of a bearer token).
    pub t: Option<String>,
}

/// The caller, from a stream token for `item` or the usual credentials.
pub fn authorize(state: &AppState, parts: &Parts, token: Option<&str>, item: u64) -> ApiResult<Caller> {
    match token {
        Some(token) => {
            let user = state
                .tokens
                .check_stream(token, item, state.clock.now_ms())
                .ok_or_else(|| ApiError::unauthorized("the stream token is invalid or expired"))?;
            read::user(state.cluster.tables(), user)?
                .map(|user| Caller { user })
                .ok_or_else(|| ApiError::unauthorized("the stream token's user is gone"))
        }
        None => Caller::from_parts(parts, state),
    }
}

/// How long the signed URLs of listings stay the same: their tokens expire
/// on the hour, so that a browser's cache keeps working across listings.
const IMAGE_URL_STEP_MS: u64 = 3_600_000;

/// The signed URL of item `item`'s primary image for `user`.
pub fn image_url(state: &AppState, user: u64, item: u64) -> String {
    format!(
        "/api/v1/items/{item}/images/primary?t={}",
        stable_token(state, user, item)
    )
}

/// The signed URL of item `item`'s file for `user`.
pub fn stream_url(state: &AppState, user: u64, item: u64) -> String {
    format!("/api/v1/items/{item}/stream?t={}", stable_token(state, user, item))
}

/// A stream token valid for [`STREAM_TTL_MS`] to one hour more, and the
/// same within an hour.
fn stable_token(state: &AppState, user: u64, item: u64) -> String {
    let now = state.clock.now_ms();
    let expires_ms = (now / IMAGE_URL_STEP_MS + 1) * IMAGE_URL_STEP_MS + STREAM_TTL_MS;
    state.tokens.stream_token_until(user, item, expires_ms)
}
