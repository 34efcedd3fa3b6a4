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
    let status = state.cluster.status_with_lag(std::time::Duration::from_secs(2)).await;
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

/// Most peers `GET /api/v1/p2p` lists (those that moved the most).
const P2P_PEERS_LISTED: usize = 100;

/// This node on the P2P data plane: its peer id and addresses, bytes moved
/// with each peer (`peers`: `peer`, `bytes_in`, `bytes_out`), bytes it
/// served as origin or as a relay (`served`), what clients reported
/// getting from the origin and from other peers with the `offload_ratio`
/// (`clients`), and its relay cache (`relay`).
#[utoipa::path(get, path = "/api/v1/p2p", tags = ["admin"], security(("bearer" = [])), responses((status = 200, description = "The P2P figures", body = Object), (status = 403), (status = 404, description = "P2P is off on this node")))]
pub async fn p2p(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    use std::sync::atomic::Ordering::Relaxed;
    caller.require_admin()?;
    let node = state
        .p2p
        .clone()
        .ok_or_else(|| ApiError::not_found("the P2P data plane is off on this node"))?;
    let mut peers: Vec<_> = node.p2p.traffic().into_iter().collect();
    peers.sort_by_key(|(_, moved)| std::cmp::Reverse(moved.bytes_in + moved.bytes_out));
    let peers: Vec<serde_json::Value> = peers
        .into_iter()
        .take(P2P_PEERS_LISTED)
        .map(|(peer, moved)| {
            serde_json::json!({"peer": peer.to_string(), "bytes_in": moved.bytes_in, "bytes_out": moved.bytes_out})
        })
        .collect();
    let (kept_blobs, cache_max) = node.relay.usage();
    let served = &node.served;
    Ok(Json(serde_json::json!({
        "peer_id": node.p2p.peer_id().to_string(),
        "listen_addrs": node.p2p.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "peers": peers,
        "served": {
            "origin_bytes": served.origin.load(Relaxed),
            "relayed_bytes": served.relayed.load(Relaxed),
        },
        "clients": {
            "from_origin_bytes": served.clients_from_origin.load(Relaxed),
            "from_peers_bytes": served.clients_from_peers.load(Relaxed),
            "offload_ratio": served.offload_ratio(),
        },
        "relay": {"kept_blobs": kept_blobs, "cache_max_bytes": cache_max},
    })))
}
