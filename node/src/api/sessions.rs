//! Ending sign-ins: a user changes its password, signs out everywhere, or
//! an administrator resets someone's password. Each ends every sign-in of
//! the user: refresh tokens and their families are deleted and access
//! tokens issued before are refused (`Command::SignOutEverywhere`), and the
//! Jellyfin apps' device sessions are revoked. API keys the user made and
//! app passwords stay: they are credentials it lists and revokes one by one.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use omega_consensus::command::Command;
use omega_consensus::model::EntityId;
use omega_consensus::state_machine::read;
use serde::Deserialize;

use super::auth::{Admin, Caller, TokenResponse, check_password, issue_tokens};
use super::extract::{Body, PathParam};
use super::{ApiError, ApiResult, AppState};
use crate::ratelimit::Attempt;

/// Hashes a new password (argon2id, off the async threads); a password the
/// policy refuses is a 400.
pub(crate) async fn hash_new_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

/// Ends every sign-in of `user` (see the module's documentation).
async fn sign_out(state: &AppState, user: EntityId) -> ApiResult<()> {
    state
        .write(Command::SignOutEverywhere {
            user,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    for (hash, key) in read::api_keys_of(state.cluster.tables(), user)? {
        if key.name.starts_with(crate::jellyfin::SESSION_LABEL) {
            state.write(Command::RevokeApiKey { hash }).await?;
        }
    }
    Ok(())
}

/// Sets `user`'s password hash.
async fn set_password(state: &AppState, user: EntityId, password_hash: String) -> ApiResult<()> {
    state
        .write(Command::UpdateUser {
            id: user,
            password_hash: Some(password_hash),
            roles: None,
            library_access: None,
            totp_secret: None,
        })
        .await?;
    Ok(())
}

/// `POST /api/v1/auth/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The new one (1 to 1024 characters).
    #[schema(min_length = 1, max_length = 1024)]
    pub new_password: String,
}

/// Changes the caller's password. Every sign-in of the user ends (other
/// browsers, apps and Jellyfin clients must sign in again); this client
/// gets new tokens in the answer. A wrong current password counts as a
/// failed sign-in.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", security(("bearer" = [])), request_body = PasswordChange, responses((status = 200, body = TokenResponse, description = "Changed; new tokens for this client"), (status = 400, description = "The new password is refused"), (status = 401, description = "The current password is wrong"), (status = 429, description = "Too many failures")))]
pub async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    caller: Caller,
    Body(request): Body<PasswordChange>,
) -> ApiResult<Json<TokenResponse>> {
    let now_ms = state.clock.now_ms();
    let attempt = Attempt::new(&caller.user.name, state.client_ip(peer, &headers));
    if let Some(wait) = state.limiter.retry_after(attempt, now_ms) {
        return Err(ApiError::too_many(wait));
    }
    if !check_password(request.current_password, caller.user.password_hash.clone()).await {
        state.limiter.failed(attempt, now_ms);
        return Err(ApiError::unauthorized("the current password is wrong"));
    }
    state.limiter.succeeded(attempt);
    let password_hash = hash_new_password(request.new_password).await?;
    set_password(&state, caller.user.id, password_hash).await?;
    sign_out(&state, caller.user.id).await?;
    let user = read::user(state.cluster.tables(), caller.user.id)?
        .ok_or_else(|| ApiError::unauthorized("the user no longer exists"))?;
    Ok(Json(issue_tokens(&state, &user).await?))
}

/// Ends every sign-in of the caller, this one included.
#[utoipa::path(post, path = "/api/v1/auth/sign-out-everywhere", tag = "auth", security(("bearer" = [])), responses((status = 204), (status = 401)))]
pub async fn sign_out_everywhere(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    sign_out(&state, caller.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/users/{id}/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordReset {
    /// The new password (1 to 1024 characters).
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// Sets a user's password (administrators): every sign-in of that user
/// ends.
#[utoipa::path(put, path = "/api/v1/users/{id}/password", tags = ["users", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), request_body = PasswordReset, responses((status = 204), (status = 400), (status = 404)))]
pub async fn reset_password(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(id): PathParam<u64>,
    Body(request): Body<PasswordReset>,
) -> ApiResult<StatusCode> {
    if read::user(state.cluster.tables(), id)?.is_none() {
        return Err(ApiError::not_found(format!("no user {id}")));
    }
    let password_hash = hash_new_password(request.password).await?;
    set_password(&state, id, password_hash).await?;
    sign_out(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How often the leader purges expired refresh tokens.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// Purge commands one round writes at most (each deletes a bounded batch).
const PURGE_ROUNDS_MAX: usize = 16;

/// Purges expired refresh tokens from the replicated state, on the leader,
/// every [`PURGE_EVERY`], for as long as the node runs: without it every
/// sign-in ever made stayed in the state machine and its snapshots.
pub async fn purge_expired(state: AppState) {
    let mut ticks = tokio::time::interval(PURGE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !state.cluster.is_leader() {
            continue;
        }
        for _ in 0..PURGE_ROUNDS_MAX {
            let command = Command::PurgeExpiredRefreshTokens {
                now_ms: state.clock.now_ms(),
            };
            match state.cluster.write(command).await {
                Ok(omega_consensus::Response::Purged(count))
                    if count as usize >= omega_consensus::model::PURGE_BATCH_MAX => {}
                Ok(omega_consensus::Response::Purged(count)) => {
                    if count > 0 {
                        tracing::info!(count, "purged expired refresh tokens");
                    }
                    break;
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to a purge");
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, "purge of expired refresh tokens failed; next round");
                    break;
                }
            }
        }
    }
}
