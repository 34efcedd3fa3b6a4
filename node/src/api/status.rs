//! What administrators see of the machinery: the cluster (members, leader,
//! how far each is behind) and this node's store (tiers, dedup).

use axum::Json;
use axum::extract::State;

use super::{ApiError, ApiResult, AppState, Caller};

/// This node's view of the cluster: its state, the leader, the term, log
/// indexes, and every member with its role, addresses and lag (lag is
/// known on the leader only).
#[utoipa::path(get, path = "/api/v1/cluster", tags = ["admin"], security(("bearer" = [])), responses((status = 200, description = "The cluster's status", body = Object), (status = 403)))]
pub async fn cluster(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    caller.require_admin()?;
    let status = state.cluster.status();
    Ok(Json(serde_json::to_value(status).map_err(ApiError::internal)?))
}

/// This node's store: logical and stored bytes (their ratio is what dedup
/// saves), chunks, blobs, hot and cold tiers, bytes indexed in place, and
/// quarantined chunks.
#[utoipa::path(get, path = "/api/v1/store", tags = ["admin"], security(("bearer" = [])), responses((status = 200, description = "The store's figures", body = Object), (status = 403), (status = 404)))]
pub async fn store(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    caller.require_admin()?;
    let store = state
        .store
        .clone()
        .ok_or_else(|| ApiError::not_found("this node has no store"))?;
    let stats = tokio::task::spawn_blocking(move || store.stats())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let ratio = stats.dedup_ratio();
    let mut value = serde_json::to_value(stats).map_err(ApiError::internal)?;
    if let (Some(object), Some(ratio)) = (value.as_object_mut(), ratio) {
        object.insert("dedup_ratio".into(), serde_json::json!(ratio));
    }
    Ok(Json(value))
}
