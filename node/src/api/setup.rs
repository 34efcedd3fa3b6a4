//! First-run setup: while no user exists, anyone who can reach the node may
//! create the first administrator (the web app's setup page does this).
//! Once a user exists the route refuses, whoever asks: the state machine
//! checks it, so two racing setups cannot both win. A node given its
//! administrator by `OMEGA_ADMIN_USER` and `OMEGA_ADMIN_PASSWORD` never
//! opens setup, not even while that administrator is being created.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use omega_consensus::command::{Command, Response};
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};

use super::auth::{TokenResponse, issue_tokens};
use super::extract::Body;
use super::{ApiError, ApiResult, AppState};
use crate::auth::hash_password;

/// Whether the node still needs its first administrator.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SetupState {
    /// True until a user exists.
    pub needed: bool,
}

/// Whether setup is needed.
#[utoipa::path(get, path = "/api/v1/setup", tag = "setup", responses((status = 200, body = SetupState)))]
pub async fn state(State(state): State<AppState>) -> ApiResult<Json<SetupState>> {
    Ok(Json(SetupState {
        needed: !state.unattended_admin && read::users(state.cluster.tables())?.is_empty(),
    }))
}

/// `POST /api/v1/setup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetupRequest {
    /// The administrator's name (1 to 128 bytes, no control characters).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub username: String,
    /// Its password (1 to 1024 characters).
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// Creates the first administrator and signs it in.
#[utoipa::path(post, path = "/api/v1/setup", tag = "setup", request_body = SetupRequest, responses((status = 201, body = TokenResponse), (status = 400), (status = 409, description = "Setup is done")))]
pub async fn create_admin(
    State(state): State<AppState>,
    Body(request): Body<SetupRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    if state.unattended_admin {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "setup is done by OMEGA_ADMIN_USER and OMEGA_ADMIN_PASSWORD: sign in instead",
        ));
    }
    if !read::users(state.cluster.tables())?.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "setup is done: sign in instead"));
    }
    let password = request.password;
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let response = state
        .cluster
        .write(Command::CreateFirstAdmin {
            name: request.username,
            password_hash,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let id = match response {
        Response::Created(id) => id,
        Response::Rejected(omega_consensus::command::Rejection::Invalid(reason))
            if reason.starts_with("setup is done") =>
        {
            return Err(ApiError::new(StatusCode::CONFLICT, "setup is done: sign in instead"));
        }
        Response::Rejected(rejection) => return Err(rejection.into()),
        other => return Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    };
    let user = read::user(state.cluster.tables(), id)?.ok_or_else(|| ApiError::internal("the user vanished"))?;
    Ok((StatusCode::CREATED, Json(issue_tokens(&state, &user).await?)))
}
