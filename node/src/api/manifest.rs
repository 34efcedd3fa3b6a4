//! `GET /api/v1/items/{id}/manifest`: what a client needs to pull an
//! item's file over the P2P data plane: its pieces with their BLAKE3
//! hashes, who provides them (the node holding the file, and peers the DHT
//! knows to have cached it), the members whose keys may sign, and a grant
//! for the asking peer, all signed by this node. Any node answers: the
//! piece list comes from its own store, else from the holder. With
//! `rendition`, the node holding the file answers with that HLS
//! rendition's segment set: the segments made so far, each with its hash
//! and pieces, and the names of the rest (a client gets those from the
//! origin over HTTP, which makes them).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use omega_consensus::state_machine::read;
use omega_p2p::manifest::Segment;
use omega_p2p::{Grant, Manifest, PeerId, Piece, Provider};
use omega_storage::BlobId;
use serde::Deserialize;

use super::extract::{PathParam, QueryParams};
use super::hls::Part;
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
    #[param(required = true, pattern = "^[1-9A-HJ-NP-Za-km-z]{40,64}$")]
    pub peer: Option<String>,
    /// A stream token for this item (instead of a bearer token).
    pub t: Option<String>,
    /// An HLS rendition (`original`, `720p`, `audio`, …): the manifest of
    /// its segments instead of the file's.
    pub rendition: Option<String>,
}

/// A signed manifest for the peer `peer`: of the item's file (`blob`,
/// `size`, `pieces` (`hash`, `offset`, `len`), `providers` (`peer`,
/// `addrs`, `origin`), `members`, `routes` (members and their addresses),
/// `grant`, `issuer_key`, `signature`); or, with `rendition`, of that HLS
/// rendition's segment set, which adds `segments` (`name`, `hash`,
/// `offset`, `size`; `hash` is null for a segment not made yet).
#[utoipa::path(get, path = "/api/v1/items/{id}/manifest", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), ManifestQuery), responses((status = 200, description = "The signed manifest", body = Object), (status = 400), (status = 404), (status = 409, description = "The file is not indexed yet"), (status = 503, description = "P2P is off on this node")))]
pub async fn manifest(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ManifestQuery>,
    parts: Parts,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Response> {
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
    if let Some(rendition) = query.rendition.as_deref() {
        // The holder makes the segments, signs their manifest and counts
        // the viewer.
        // Its answer, manifest or error, goes back as it came.
        if let Some(holder) = super::proxy::remote_holder(&state, &item, &parts) {
            return super::proxy::to_holder(&state, holder, &parts).await;
        }
        let source = super::hls::source_of(&state, item).await?;
        let manifest = rendition_manifest(&state, &node, &source, peer, rendition).await?;
        state.popularity.hit(
            &state,
            crate::gossip::Popular::Set {
                item: id,
                rendition: rendition.to_owned(),
                holder: state.cluster.id(),
            },
            &peer.to_string(),
        );
        return Ok(manifest.into_response());
    }
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
    if here {
        providers.push(own_provider(&node, media.node == state.cluster.id()));
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
    let listed = Listing {
        id: blob,
        size,
        pieces,
        segments: Vec::new(),
        providers,
    };
    state.popularity.hit(
        &state,
        crate::gossip::Popular::Blob {
            blob: blob.0,
            holder: media.node,
        },
        &peer.to_string(),
    );
    finish(&state, &node, listed, &members, peer, media.node)
        .await
        .map(IntoResponse::into_response)
}

/// What a manifest lists before the providers the DHT knows, the members
/// and the grant are added and it is signed.
pub(crate) struct Listing {
    /// The blob, or the segment set.
    pub(crate) id: BlobId,
    size: u64,
    pieces: Vec<Piece>,
    pub(crate) segments: Vec<Segment>,
    providers: Vec<Provider>,
}

fn own_provider(node: &crate::p2p::NodeP2p, origin: bool) -> Provider {
    Provider {
        peer: node.p2p.peer_id().to_string(),
        addrs: node.p2p.listen_addrs().iter().map(ToString::to_string).collect(),
        origin,
    }
}

/// Adds the peers the DHT knows to provide `listed.id`, the members, the
/// routes and a grant for `peer`; signs.
async fn finish(
    state: &AppState,
    node: &crate::p2p::NodeP2p,
    mut listed: Listing,
    members: &[(u64, omega_consensus::model::Peer)],
    peer: PeerId,
    holder: u64,
) -> ApiResult<Json<Manifest>> {
    let found = node
        .p2p
        .providers(listed.id, PROVIDERS_WITHIN)
        .await
        .unwrap_or_default();
    for (provider, addrs) in found.into_iter().take(PROVIDERS_MAX) {
        let listed_already = listed.providers.iter().any(|known| known.peer == provider.to_string());
        if provider == peer || listed_already || addrs.is_empty() {
            continue;
        }
        listed.providers.push(Provider {
            peer: provider.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            origin: false,
        });
    }
    let grant = Grant::issue(
        node.p2p.keypair(),
        &peer,
        &listed.id,
        state.clock.now_ms() + STREAM_TTL_MS,
    );
    // From the applied table, not a cached set: a client seeding for a
    // while must trust every member that may sign its peers' grants.
    let own = node.p2p.peer_id().to_string();
    let mut member_ids: Vec<String> = members.iter().map(|(_, member)| member.peer_id.clone()).collect();
    if !member_ids.contains(&own) {
        member_ids.push(own);
    }
    let routes = members
        .iter()
        .map(|(id, member)| Provider {
            peer: member.peer_id.clone(),
            addrs: member.addrs.clone(),
            origin: *id == holder,
        })
        .collect();
    Ok(Json(Manifest {
        routes,
        ..Manifest::sign_set(
            node.p2p.keypair(),
            listed.id,
            listed.size,
            listed.pieces,
            listed.segments,
            listed.providers,
            member_ids,
            grant,
        )
    }))
}

/// The id of a rendition's segment set: it names content, since the
/// source's id does.
pub(crate) fn set_id(source: &str, rendition: &str) -> BlobId {
    BlobId::of(format!("omega-hls-set\0{source}\0{rendition}").as_bytes())
}

/// The manifest of a rendition's segment set, from the node that makes
/// its segments (the one holding the file): the segments made so far,
/// with their pieces, and the names of the rest.
pub(crate) async fn rendition_manifest(
    state: &AppState,
    node: &crate::p2p::NodeP2p,
    source: &super::hls::Source,
    peer: PeerId,
    name: &str,
) -> ApiResult<Json<Manifest>> {
    let mut listed = set_listing(state, node, source, name).await?;
    listed.providers.push(own_provider(node, true));
    let members = read::peers(state.cluster.tables())?;
    finish(state, node, listed, &members, peer, state.cluster.id()).await
}

/// A rendition's segment set as this node (the one making its segments)
/// has it: registered for serving, announced the first time.
pub(crate) async fn set_listing(
    state: &AppState,
    node: &crate::p2p::NodeP2p,
    source: &super::hls::Source,
    name: &str,
) -> ApiResult<Listing> {
    let (rendition, plan) = super::hls::rendition_named(source, name).await?;
    let store = state
        .store
        .clone()
        .ok_or_else(|| ApiError::not_found("this node keeps no store, so it shares no segments"))?;
    let key = super::hls::rendition_key(&rendition.name);
    let set = set_id(&source.id, &key);
    let files: Vec<(String, String)> = Part::all(&plan)
        .map(|part| (part.file_name(), part.reference(&source.id, &key)))
        .collect();
    let index = node.index.clone();
    let (listed, first) = tokio::task::spawn_blocking(move || -> omega_storage::Result<_> {
        let mut pieces = Vec::new();
        let mut segments = Vec::new();
        let mut records = Vec::new();
        let mut offset = 0;
        for (name, reference) in files {
            let stored = match store.resolve_reference(&reference)? {
                Some(blob) => store
                    .blob(&blob)
                    .ok()
                    .filter(|record| record.size > 0)
                    .map(|record| (blob, record)),
                None => None,
            };
            let Some((blob, record)) = stored else {
                segments.push(Segment {
                    name,
                    hash: None,
                    offset: 0,
                    size: 0,
                });
                continue;
            };
            pieces.extend(record.chunks.iter().map(|entry| Piece {
                hash: entry.chunk,
                offset: offset + entry.offset,
                len: entry.len,
            }));
            segments.push(Segment {
                name,
                hash: Some(blob),
                offset,
                size: record.size,
            });
            offset += record.size;
            records.push((blob, record));
        }
        let refs: Vec<_> = records.iter().map(|(blob, record)| (*blob, record)).collect();
        let first = index.register_set(set, &refs, false);
        Ok((
            Listing {
                id: set,
                size: offset,
                pieces,
                segments,
                providers: Vec::new(),
            },
            first,
        ))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if first {
        // Announced once per set: clients that seed it find this node
        // through the same record.
        let p2p = node.p2p.clone();
        tokio::spawn(async move {
            if let Err(error) = p2p.provide(set).await {
                tracing::debug!(%set, "cannot announce a segment set: {error}");
            }
        });
    }
    Ok(listed)
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
    let (size, pieces) = crate::relay::holder_pieces(state, holder, blob)
        .await
        .map_err(|error| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, format!("{error:#}")))?;
    // A client asked this node: it fetches the file from the holder and
    // its peers, keeps it and provides it to the next.
    crate::relay::cache_in_background(state, *blob, holder);
    Ok((size, pieces, false))
}

/// Largest byte count one fetch report may claim (a 1 TiB file).
const REPORTED_MAX: u64 = 1 << 40;

/// What a client got, and from where.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FetchReportBody {
    /// Bytes from the node holding the file.
    pub from_origin: u64,
    /// Bytes from other peers (nodes that cached it, seeding clients).
    pub from_peers: u64,
}

/// A client's report of a fetch: bytes from the origin and from other
/// peers. They make the cluster's offload ratio (`GET /api/v1/p2p`,
/// `omega_p2p_offload_ratio`).
#[utoipa::path(post, path = "/api/v1/items/{id}/fetch-report", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), request_body = FetchReportBody, responses((status = 204), (status = 400), (status = 404)))]
pub async fn fetch_report(
    State(state): State<AppState>,
    caller: super::Caller,
    PathParam(id): PathParam<u64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    visible_item(&state, &caller, id)?;
    let report: FetchReportBody = super::extract::json_body(&body)?;
    if report.from_origin > REPORTED_MAX || report.from_peers > REPORTED_MAX {
        return Err(ApiError::bad_request("a report counts at most 1 TiB from each side"));
    }
    let node = state.p2p.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the P2P data plane is off on this node",
        )
    })?;
    node.served.client_report(report.from_origin, report.from_peers);
    Ok(axum::http::StatusCode::NO_CONTENT)
}
