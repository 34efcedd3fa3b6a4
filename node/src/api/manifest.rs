//! `GET /api/v1/items/{id}/manifest`: what a client needs to pull an
//! item's file over the P2P data plane: its pieces with their BLAKE3
//! hashes, who provides them (the node holding the file, and peers the DHT
//! knows to have cached it), the members whose keys may sign, and a grant
//! for the asking peer, all signed by this node. Any node answers: the
//! piece list comes from its own store, else from the holder.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use omega_consensus::state_machine::read;
use omega_p2p::{Grant, Manifest, PeerId, Piece, Provider};
use omega_storage::{BlobId, ChunkId};
use serde::Deserialize;

use super::extract::{PathParam, QueryParams};
use super::items::visible_item;
use super::signed::authorize;
use super::{ApiError, ApiResult, AppState};
use crate::tokens::STREAM_TTL_MS;

/// How long the DHT is asked for providers.
const PROVIDERS_WITHIN: Duration = Duration::from_millis(1500);
/// Most peers (other than the holder) a manifest lists.
const PROVIDERS_MAX: usize = 16;

/// The asking peer, and a stream token in place of a bearer token.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ManifestQuery {
    /// The libp2p peer id of the fetching client (required): the grant is
    /// for it. Checked after the caller, so that a missing token is a 401.
    pub peer: Option<String>,
    /// A stream token for this item (instead of a bearer token).
    pub t: Option<String>,
}

/// A signed manifest of the item's file for the peer `peer`: `blob`,
/// `size`, `pieces` (`hash`, `offset`, `len`), `providers` (`peer`,
/// `addrs`, `origin`), `members`, `routes` (members and their addresses),
/// `grant`, `issuer_key`, `signature`.
#[utoipa::path(get, path = "/api/v1/items/{id}/manifest", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), ManifestQuery), responses((status = 200, description = "The signed manifest", body = Object), (status = 400), (status = 404), (status = 409, description = "The file is not indexed yet"), (status = 503, description = "P2P is off on this node")))]
pub async fn manifest(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ManifestQuery>,
    parts: Parts,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<Manifest>> {
    let caller = authorize(&state, &parts, query.t.as_deref(), id)?;
    let item = visible_item(&state, &caller, id)?;
    let node = state.p2p.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the P2P data plane is off on this node",
        )
    })?;
    let peer = query
        .peer
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("peer is required: the libp2p peer id the grant is for"))?;
    let peer: PeerId = peer
        .parse()
        .map_err(|_| ApiError::bad_request(format!("peer {peer:?} is not a libp2p peer id")))?;
    let media = item
        .fields
        .media
        .first()
        .ok_or_else(|| ApiError::not_found("this item has no file"))?;
    let blob = BlobId::from(blake3::Hash::from_bytes(media.blob.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "the item's file is not indexed yet: try again after the scan",
        )
    })?));
    let (size, pieces, here) = pieces(&state, media.node, &blob).await?;

    let members = read::peers(state.cluster.tables())?;
    let mut providers = Vec::new();
    let own = node.p2p.peer_id();
    if here {
        providers.push(Provider {
            peer: own.to_string(),
            addrs: node.p2p.listen_addrs().iter().map(ToString::to_string).collect(),
            origin: media.node == state.cluster.id(),
        });
    }
    if media.node != state.cluster.id()
        && let Some((_, holder)) = members.iter().find(|(id, _)| *id == media.node)
    {
        providers.push(Provider {
            peer: holder.peer_id.clone(),
            addrs: holder.addrs.clone(),
            origin: true,
        });
    }
    let found = node.p2p.providers(blob, PROVIDERS_WITHIN).await.unwrap_or_default();
    for (provider, addrs) in found.into_iter().take(PROVIDERS_MAX) {
        let listed = providers.iter().any(|known| known.peer == provider.to_string());
        if provider == peer || listed || addrs.is_empty() {
            continue;
        }
        providers.push(Provider {
            peer: provider.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            origin: false,
        });
    }
    let grant = Grant::issue(node.p2p.keypair(), &peer, &blob, state.clock.now_ms() + STREAM_TTL_MS);
    // From the applied table, not a cached set: a client seeding for a
    // while must trust every member that may sign its peers' grants.
    let mut member_ids: Vec<String> = members.iter().map(|(_, member)| member.peer_id.clone()).collect();
    if !member_ids.contains(&own.to_string()) {
        member_ids.push(own.to_string());
    }
    let routes = members
        .iter()
        .map(|(id, member)| Provider {
            peer: member.peer_id.clone(),
            addrs: member.addrs.clone(),
            origin: *id == media.node,
        })
        .collect();
    Ok(Json(Manifest {
        routes,
        ..Manifest::sign(node.p2p.keypair(), blob, size, pieces, providers, member_ids, grant)
    }))
}

/// The blob's size and pieces, from this node's store (`true`) or from
/// the node holding the file (`false`).
async fn pieces(state: &AppState, holder: u64, blob: &BlobId) -> ApiResult<(u64, Vec<Piece>, bool)> {
    if let Some(store) = &state.store
        && let Ok(record) = store.blob(blob)
    {
        let pieces = record
            .chunks
            .iter()
            .map(|entry| Piece {
                hash: entry.chunk,
                offset: entry.offset,
                len: entry.len,
            })
            .collect();
        return Ok((record.size, pieces, true));
    }
    if holder == state.cluster.id() {
        return Err(ApiError::not_found("the item's file is not in this node's store"));
    }
    let http_addr = crate::jobs::owner_http(state, holder).map_err(|error| ApiError::not_found(error.to_string()))?;
    let token = state.tokens.node_token(state.cluster.id(), state.clock.now_ms());
    let manifest = crate::remote::blob_manifest(&http_addr, &token, &blob.to_string())
        .await
        .map_err(|error| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, format!("{error:#}")))?;
    let pieces = manifest
        .chunks
        .iter()
        .map(|chunk| {
            let hash: ChunkId = chunk
                .hash
                .parse()
                .map_err(|_| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "the holder sent a bad chunk hash"))?;
            Ok(Piece {
                hash,
                offset: chunk.offset,
                len: chunk.len,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((manifest.size, pieces, false))
}
