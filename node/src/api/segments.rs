//! HLS segments for browsers, from several nodes. A browser cannot join
//! the libp2p swarm, so the web app's loader pulls segments over HTTP
//! instead, from every member that holds them, and checks each against
//! its BLAKE3 hash before the player gets it:
//!
//! - `GET /api/v1/items/{id}/hls/{rendition}/segments.json`, on the node
//!   making the rendition: each segment's hash and size (`null` while not
//!   made), and the members holding the set (`url`, `node`, `origin`).
//! - `GET /api/v1/items/{id}/segments/{rendition}/{hash}` on any of them:
//!   one segment by hash. The URL carries its stream token and the answer
//!   allows any origin: the web app is served by one node and reads from
//!   the others.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use omega_consensus::state_machine::read;
use omega_storage::BlobId;
use serde::Serialize;

use super::extract::{PathParam, QueryParams};
use super::hls::Source;
use super::items::visible_item;
use super::signed::{StreamQuery, authorize};
use super::{ApiError, ApiResult, AppState};

/// How long the DHT is asked for the members holding a set.
const PROVIDERS_WITHIN: Duration = Duration::from_millis(800);

/// One segment of a rendition.
#[derive(Debug, Serialize)]
struct SegmentEntry {
    name: String,
    /// BLAKE3 of its bytes, hex; `null` while not made.
    hash: Option<String>,
    size: u64,
}

/// A member holding the rendition's segments.
#[derive(Debug, Serialize)]
struct SegmentSource {
    /// Its HTTP base URL; empty for the node that answered.
    url: String,
    /// Its node id.
    node: u64,
    /// True for the node holding the item's file.
    origin: bool,
}

#[derive(Debug, Serialize)]
struct SegmentList {
    set: String,
    segments: Vec<SegmentEntry>,
    sources: Vec<SegmentSource>,
}

/// `segments.json` of a rendition, answered by the node making it.
pub(crate) async fn list(state: &AppState, source: &Source, rendition: &str) -> ApiResult<Response> {
    let node = state
        .p2p
        .clone()
        .ok_or_else(|| ApiError::not_found("the P2P data plane is off on this node"))?;
    let listed = super::manifest::set_listing(state, &node, source, rendition).await?;
    let own = state.cluster.id();
    let mut sources = vec![SegmentSource {
        url: String::new(),
        node: own,
        origin: true,
    }];
    let peers = read::peers(state.cluster.tables())?;
    let members = state.cluster.status().members;
    let found = node
        .p2p
        .providers(listed.id, PROVIDERS_WITHIN)
        .await
        .unwrap_or_default();
    for (peer, _) in found {
        let Some((id, _)) = peers.iter().find(|(_, known)| known.peer_id == peer.to_string()) else {
            // A client seeding over P2P: browsers cannot reach it.
            continue;
        };
        let Some(member) = members.iter().find(|member| member.id == *id && member.id != own) else {
            continue;
        };
        sources.push(SegmentSource {
            url: format!("http://{}", member.http_addr),
            node: *id,
            origin: false,
        });
    }
    let segments = listed
        .segments
        .iter()
        .map(|segment| SegmentEntry {
            name: segment.name.clone(),
            hash: segment.hash.map(|hash| hash.to_string()),
            size: segment.size,
        })
        .collect();
    let body = SegmentList {
        set: listed.id.to_string(),
        segments,
        sources,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response())
}

/// One segment of an item's rendition by its hash, from this node's store,
/// when this node holds that rendition's segments (it makes them, or
/// replicated them).
#[utoipa::path(get, path = "/api/v1/items/{id}/segments/{rendition}/{hash}", tags = ["playback", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), ("rendition" = String, Path, description = "The rendition"), ("hash" = String, Path, description = "The segment's BLAKE3 hash (64 hex digits), from `segments.json`", pattern = "^[0-9a-fA-F]{64}$"), StreamQuery), responses((status = 200, description = "The segment (any origin may read it)", content_type = "video/mp4"), (status = 400), (status = 404, description = "This node does not hold that segment")))]
pub async fn by_hash(
    State(state): State<AppState>,
    PathParam((id, rendition, hash)): PathParam<(u64, String, String)>,
    QueryParams(query): QueryParams<StreamQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = authorize(&state, &parts, query.t.as_deref(), id)?;
    let item = visible_item(&state, &caller, id)?;
    let hash: BlobId = hash
        .parse()
        .map_err(|_| ApiError::bad_request("a segment hash is 64 hex digits"))?;
    let media_blob = item
        .fields
        .media
        .first()
        .and_then(|media| media.blob)
        .ok_or_else(|| ApiError::not_found("this item has no indexed file"))?;
    let key = super::hls::rendition_key(&rendition);
    let set = super::manifest::set_id(&hex::encode(media_blob), &key);
    let (Some(node), Some(store)) = (state.p2p.clone(), state.store.clone()) else {
        return Err(ApiError::not_found("this node shares no segments"));
    };
    // Only segments of this item's rendition: a token for one item reads
    // nothing else by hash.
    if !node.index.set_has_segment(&set, &hash) {
        return Err(ApiError::not_found("this node does not hold that segment"));
    }
    let bytes = tokio::task::spawn_blocking(move || store.read_all(&hash))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::not_found(format!("the segment is unreadable here: {error}")))?;
    metrics::counter!("omega_segments_by_hash_total").increment(1);
    // A rendition browsers play through members counts as used (any of
    // its references names it).
    if let Some(transcoder) = &state.transcoder {
        let reference = super::hls::Part::Init.reference(&hex::encode(media_blob), &key);
        transcoder.segment_read(&reference);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        bytes,
    )
        .into_response())
}
