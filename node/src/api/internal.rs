//! Routes members call on each other (not for clients, not in the OpenAPI
//! document): a blob's chunk manifest and its bytes, so that a worker on
//! another node can fetch a source and check every chunk against its BLAKE3
//! name; and the signed manifest of an HLS rendition's segment set, for a
//! member that replicates a popular one. Callers prove membership with a node token (`X-Omega-Node`),
//! signed with the cluster's key, naming a current member.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{PathParam, QueryParams};
use super::{ApiError, ApiResult, AppState};

/// The header carrying a node token.
pub const NODE_HEADER: &str = "x-omega-node";
/// Largest range served per request.
const RANGE_MAX_BYTES: u64 = 16 << 20;

/// Checks the caller is a current member; its node id.
fn member(state: &AppState, headers: &HeaderMap) -> ApiResult<u64> {
    let token = headers
        .get(NODE_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("members only"))?;
    let node = state
        .tokens
        .check_node(token, state.clock.now_ms())
        .ok_or_else(|| ApiError::unauthorized("the node token is invalid or expired"))?;
    if !state.cluster.status().members.iter().any(|member| member.id == node) {
        return Err(ApiError::forbidden(format!("node {node} is not a member")));
    }
    Ok(node)
}

fn store(state: &AppState) -> ApiResult<std::sync::Arc<omega_storage::Store>> {
    state
        .store
        .clone()
        .ok_or_else(|| ApiError::not_found("this node has no store"))
}

fn blob_id(text: &str) -> ApiResult<omega_storage::BlobId> {
    text.parse()
        .map_err(|_| ApiError::bad_request("a blob id is 64 hex digits"))
}

/// A chunk of a blob.
#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestChunk {
    /// First byte within the blob.
    pub offset: u64,
    /// Length.
    pub len: u32,
    /// BLAKE3 of its bytes, hex.
    pub hash: String,
}

/// A blob's manifest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Its size.
    pub size: u64,
    /// Its chunks in order.
    pub chunks: Vec<ManifestChunk>,
}

/// `GET /api/v1/internal/blobs/{blob}/manifest`.
pub async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParam(blob): PathParam<String>,
) -> ApiResult<Json<Manifest>> {
    member(&state, &headers)?;
    let blob = blob_id(&blob)?;
    let record = store(&state)?
        .blob(&blob)
        .map_err(|error| ApiError::not_found(error.to_string()))?;
    Ok(Json(Manifest {
        size: record.size,
        chunks: record
            .chunks
            .iter()
            .map(|entry| ManifestChunk {
                offset: entry.offset,
                len: entry.len,
                hash: entry.chunk.to_string(),
            })
            .collect(),
    }))
}

/// `GET /api/v1/internal/blobs/{blob}` parameters.
#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// `GET /api/v1/internal/blobs/{blob}?start=&end=`: bytes of a blob, read
/// (and verified) by this node's store.
pub async fn bytes(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParam(blob): PathParam<String>,
    QueryParams(range): QueryParams<RangeQuery>,
) -> ApiResult<Response> {
    member(&state, &headers)?;
    if range.end < range.start || range.end - range.start > RANGE_MAX_BYTES {
        return Err(ApiError::bad_request("ranges are at most 16 MiB"));
    }
    let blob = blob_id(&blob)?;
    let store = store(&state)?;
    let bytes = tokio::task::spawn_blocking(move || store.read_range(&blob, range.start, range.end))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::not_found(error.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `GET /api/v1/internal/items/{id}/sets/{rendition}` parameters.
#[derive(Debug, Deserialize)]
pub struct SetQuery {
    /// The calling member's libp2p peer id.
    pub peer: String,
}

/// `GET /api/v1/internal/items/{id}/sets/{rendition}?peer=`: the signed
/// manifest of a rendition's segment set, from the node holding the file.
pub async fn set_manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParam((id, rendition)): PathParam<(u64, String)>,
    QueryParams(query): QueryParams<SetQuery>,
) -> ApiResult<Json<omega_p2p::Manifest>> {
    member(&state, &headers)?;
    let node = state
        .p2p
        .clone()
        .ok_or_else(|| ApiError::not_found("the P2P data plane is off on this node"))?;
    let peer: omega_p2p::PeerId = query
        .peer
        .parse()
        .map_err(|_| ApiError::bad_request("peer is not a libp2p peer id"))?;
    let item = omega_consensus::state_machine::read::item(state.cluster.tables(), id)?
        .ok_or_else(|| ApiError::not_found(format!("no item {id}")))?;
    let source = super::hls::source_of(&state, item).await?;
    super::manifest::rendition_manifest(&state, &node, &source, peer, &rendition).await
}
