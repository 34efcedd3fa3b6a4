//! Accounts and library access, for administrators.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use omega_consensus::command::{Command, Response};
use omega_consensus::model::{LibraryAccess, Role};
use omega_consensus::state_machine::read;
use serde::Deserialize;

use super::auth::Admin;
use super::auth::UserView;
use super::extract::{Body, PathParam};
use super::{ApiError, ApiResult, AppState};

/// Every user. A linearizable read: a user whose creation was
/// acknowledged, on any member, is listed by every member after that.
#[utoipa::path(get, path = "/api/v1/users", tags = ["users", "admin"], security(("bearer" = [])), responses((status = 200, body = Vec<UserView>), (status = 403), (status = 503, description = "No leader to confirm the read with")))]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Vec<UserView>>> {
    if !planted_stale_reads() {
        state
            .cluster
            .read_barrier(omega_consensus::Consistency::Linearizable)
            .await?;
    }
    let users = read::users(state.cluster.tables())?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

/// `POST /api/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    /// Unique name; the same field as at login and setup (`name` is
    /// accepted too).
    #[serde(alias = "name")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub username: String,
    /// Password (1 to 1024 characters).
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// Administrator.
    #[serde(default)]
    pub admin: bool,
    /// Libraries it may see; absent for all.
    pub libraries: Option<Vec<u64>>,
}

fn access(libraries: Option<Vec<u64>>) -> LibraryAccess {
    match libraries {
        None => LibraryAccess::All,
        Some(ids) => LibraryAccess::Only(ids.into_iter().collect()),
    }
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tags = ["users", "admin"], security(("bearer" = [])), request_body = NewUser, responses((status = 201, body = UserView), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(request): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let password_hash = super::sessions::hash_new_password(request.password).await?;
    let roles = if request.admin {
        BTreeSet::from([Role::Admin, Role::Viewer])
    } else {
        BTreeSet::from([Role::Viewer])
    };
    let response = state
        .write(Command::CreateUser {
            name: request.username,
            password_hash,
            roles,
            library_access: access(request.libraries),
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let Response::Created(id) = response else {
        return Err(ApiError::internal(format!("unexpected answer {response:?}")));
    };
    let user = read::user(state.cluster.tables(), id)?.ok_or_else(|| ApiError::internal("the new user vanished"))?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Deletes a user (not oneself: an administrator cannot lock the door
/// behind them by accident).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tags = ["users", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 204), (status = 404), (status = 409, description = "The caller is this user")))]
pub async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathParam(id): PathParam<u64>,
) -> ApiResult<StatusCode> {
    if id == caller.user.id {
        return Err(ApiError::new(StatusCode::CONFLICT, "you cannot delete yourself"));
    }
    state.write(Command::DeleteUser { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/users/{id}/access`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AccessRequest {
    /// Libraries it may see; `null` for all.
    pub libraries: Option<Vec<u64>>,
}

/// Sets which libraries a user sees.
#[utoipa::path(put, path = "/api/v1/users/{id}/access", tags = ["users", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), request_body = AccessRequest, responses((status = 204), (status = 404)))]
pub async fn set_access(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(id): PathParam<u64>,
    Body(request): Body<AccessRequest>,
) -> ApiResult<StatusCode> {
    state
        .write(Command::UpdateUser {
            id,
            password_hash: None,
            roles: None,
            library_access: Some(access(request.libraries)),
            totp_secret: None,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A bug planted for the chaos harness to find (`OMEGA_CHAOS_BUG=stale-reads`
/// skips the read barrier above); compiled into test builds only.
fn planted_stale_reads() -> bool {
    cfg!(debug_assertions) && std::env::var("OMEGA_CHAOS_BUG").is_ok_and(|bug| bug == "stale-reads")
}
