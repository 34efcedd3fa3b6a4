//! The node's HTTP server: health and readiness today; the API and web app
//! grow here (issue 4). Errors are JSON with the right status.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use omega_consensus::Cluster;
use omega_consensus::quic::QuicTransport;
use serde_json::json;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This node's Raft member.
    pub cluster: Arc<Cluster<QuicTransport>>,
}

/// A JSON error with its status.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// Alive: the process answers and Raft has not stopped.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.cluster.fatal_error() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(fatal) => error(StatusCode::SERVICE_UNAVAILABLE, format!("raft stopped: {fatal}")),
    }
}

/// Ready: a leader is known and this node applied everything committed, so
/// its reads are current.
async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.cluster.status();
    let caught_up = status.applied_index >= status.commit_index;
    let ready = status.leader.is_some() && caught_up && state.cluster.fatal_error().is_none();
    let body = json!({
        "ready": ready,
        "node_id": status.node_id,
        "leader": status.leader,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
