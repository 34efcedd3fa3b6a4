//! The node's HTTP server: health and readiness, and the REST API under
//! `/api/v1` (see [`crate::api`]). Every error is JSON with its status.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::api::ApiError;
pub use crate::api::AppState;

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::telemetry::render))
        .nest("/api/v1", crate::api::router())
        .merge(crate::subsonic::router())
        .merge(crate::opds::router())
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::jellyfin::intercept,
        ))
        .layer(axum::middleware::from_fn(crate::telemetry::track))
        .with_state(state)
}

/// True once start-up is over (see [`AppState::started`]).
fn started(state: &AppState) -> bool {
    state.started.load(std::sync::atomic::Ordering::Acquire)
}

/// Alive: start-up is over, the process answers and Raft has not stopped.
/// A script that waits for it can sign in and use the control socket.
async fn healthz(State(state): State<AppState>) -> Response {
    if let Some(fatal) = state.cluster.fatal_error() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("raft stopped: {fatal}")).into_response();
    }
    if !started(&state) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting", "error": "the node is starting" })),
        )
            .into_response();
    }
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready: start-up is over, a quorum stands behind this member (see
/// [`crate::readiness`]) and it applied everything committed, so its
/// writes can succeed and its reads are current.
async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.cluster.status();
    let caught_up = status.applied_index >= status.commit_index;
    let quorum = state.readiness.in_contact();
    let fatal = state.cluster.fatal_error();
    let ready = started(&state) && status.leader.is_some() && quorum && caught_up && fatal.is_none();
    let mut body = json!({
        "ready": ready,
        "started": started(&state),
        "node_id": status.node_id,
        "leader": status.leader,
        "quorum": quorum,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
    });
    if !ready {
        body["error"] = json!(not_ready_because(started(&state), quorum, caught_up, fatal.as_deref()));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Why a member is not ready, in words, the first reason that applies.
fn not_ready_because(started: bool, quorum: bool, caught_up: bool, fatal: Option<&str>) -> String {
    match (fatal, started, quorum, caught_up) {
        (Some(fatal), ..) => format!("raft stopped: {fatal}"),
        (None, false, ..) => "the node is starting".to_owned(),
        (None, true, false, _) => "no quorum of members is reachable".to_owned(),
        (None, true, true, false) => "catching up with the cluster".to_owned(),
        (None, true, true, true) => "no leader is known".to_owned(),
    }
}
