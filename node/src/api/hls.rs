//! HLS: `GET /api/v1/items/{id}/hls/master.m3u8`, each rendition's
//! `index.m3u8`, `init.mp4` and `N.m4s`, and subtitles as WebVTT. The
//! master playlist takes the usual bearer token; every URL inside carries a
//! signed stream token (`?t=`), so that players that send no headers still
//! play. Segments go into the store under (source blob, rendition, index):
//! a segment is made once, then served from the store, by any node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use omega_consensus::model::{Item, ItemKind};
use omega_transcode::decision::{ClientProfile, Decision, decide};
use omega_transcode::ladder::{AUDIO, ORIGINAL, Rendition, copy_rendition, ladder};
use omega_transcode::playlist::{self, SubtitleTrack};
use omega_transcode::probe::SourceInfo;
use omega_transcode::segments::SegmentPlan;
use omega_transcode::session::{SessionInput, SessionKey};
use omega_transcode::subtitles::{SubtitleSource, webvtt};
use serde::{Deserialize, Serialize};

use super::extract::{PathParam, QueryParams};
use super::items::visible_item;
use super::signed::{StreamQuery, authorize};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::segment_cache::SEGMENT_PREFIX;
use crate::transcoder::Transcoder;
use crate::zero_copy::ZeroCopy;

/// The query of the master playlist: the stream token, and what the
/// client's playback decision left out.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MasterQuery {
    /// A stream token (instead of a bearer token).
    pub t: Option<String>,
    /// `false` leaves out the `original` rendition (the source's video,
    /// copied): for clients that cannot decode it.
    pub copy: Option<bool>,
    /// Leaves out renditions taller than this (the smallest stays).
    pub max_height: Option<u32>,
    /// Leaves out renditions above this many bits per second (the smallest
    /// stays).
    pub max_bitrate: Option<u64>,
}

/// The caller and the stream token to write into URLs: the request's own
/// (passed on, not renewed, so a leaked URL expires) or a new one.
fn caller_and_token(state: &AppState, parts: &Parts, query: StreamQuery, item: u64) -> ApiResult<(Caller, String)> {
    let caller = authorize(state, parts, query.t.as_deref(), item)?;
    let token = match query.t {
        Some(token) => token,
        None => state.tokens.stream_token(caller.user.id, item, state.clock.now_ms()),
    };
    Ok((caller, token))
}

/// What an HLS request works on.
pub(crate) struct Source {
    pub(crate) item: Item,
    pub(crate) path: PathBuf,
    /// Names the content: the media blob when indexed, else path and stamp.
    pub(crate) id: String,
    pub(crate) info: Arc<SourceInfo>,
    pub(crate) transcoder: Arc<Transcoder>,
}

impl Source {
    /// How `client` plays this source: directly, remuxed (when its video
    /// can be copied into HLS) or transcoded.
    pub(crate) async fn decide(&self, client: &ClientProfile) -> Decision {
        let extension = crate::library::naming::extension(&self.path.to_string_lossy()).unwrap_or_default();
        // `copy_plan` is `None` for a video that cannot be copied.
        let can_copy = self
            .transcoder
            .copy_plan(&self.id, &self.path, &self.info)
            .await
            .is_some();
        decide(&self.info, &extension, client, can_copy)
    }
}

/// A visible item with audio or video, probed, on a node that transcodes.
pub(crate) async fn source(state: &AppState, caller: &Caller, id: u64) -> ApiResult<Source> {
    source_of(state, visible_item(state, caller, id)?).await
}

/// An item with audio or video, probed, on a node that transcodes (for
/// callers that checked access already, or members).
pub(crate) async fn source_of(state: &AppState, item: Item) -> ApiResult<Source> {
    let transcoder = state
        .transcoder
        .clone()
        .ok_or_else(|| ApiError::not_found("transcoding is off on this node ([transcode] enabled = false)"))?;
    if !matches!(
        item.fields.kind,
        ItemKind::Movie | ItemKind::Episode | ItemKind::Track | ItemKind::Audiobook
    ) {
        return Err(ApiError::not_found("this item has no audio or video to stream"));
    }
    let media = super::items::local_media(state, &item)?;
    let path = PathBuf::from(&media.path);
    let source_id = match media.blob {
        Some(blob) => hex::encode(blob),
        None => {
            let stamp = std::fs::metadata(&path)
                .and_then(|metadata| metadata.modified())
                .map(|time| format!("{time:?}"))
                .unwrap_or_default();
            blake3::hash(format!("{}\0{}\0{stamp}", media.path, media.size).as_bytes())
                .to_hex()
                .to_string()
        }
    };
    let info = transcoder.source_info(&source_id, &path).await?;
    Ok(Source {
        item,
        path,
        id: source_id,
        info,
        transcoder,
    })
}

/// The renditions of a source, best first, each with its segments: the
/// copy of its video when it can be made, then the encoded ladder.
async fn renditions(source: &Source) -> Vec<(Rendition, SegmentPlan)> {
    let mut renditions = Vec::new();
    if let Some(copy) = copy_rendition(&source.info)
        && let Some(plan) = source
            .transcoder
            .copy_plan(&source.id, &source.path, &source.info)
            .await
    {
        renditions.push((copy, plan));
    }
    renditions.extend(ladder(&source.info).into_iter().map(|rendition| {
        let grid = SegmentPlan::encoded(source.info.duration_s, rendition.audio_only());
        (rendition, grid)
    }));
    renditions
}

/// The name a rendition's segments are kept and shared under: its name,
/// plus the grid's layout for an encoded rendition, so that a change of the
/// grid (a shorter first segment) never serves a segment cut on the old
/// one. A copy's segments follow the source's keyframes, which the source's
/// id names already.
/// The name alone decides the layout (so that a member holding only the
/// segments, not the file, names them the same): `original` follows the
/// keyframes, `audio` is an even grid, the rest the video grid.
pub(crate) fn rendition_key(name: &str) -> String {
    let tag = match name {
        ORIGINAL => None,
        AUDIO => SegmentPlan::encoded(0.0, true).layout_tag(),
        _ => SegmentPlan::encoded(0.0, false).layout_tag(),
    };
    match tag {
        Some(tag) => format!("{name}~{tag}"),
        None => name.to_owned(),
    }
}

/// The rendition `name` of a source, and its segments.
pub(crate) async fn rendition_named(source: &Source, name: &str) -> ApiResult<(Rendition, SegmentPlan)> {
    renditions(source)
        .await
        .into_iter()
        .find(|(candidate, _)| candidate.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no rendition {name:?}")))
}

fn subtitle_tracks(source: &Source) -> Vec<(SubtitleTrack, SubtitleOrigin)> {
    let mut tracks = Vec::new();
    for stream in source.info.subtitles.iter().filter(|stream| stream.text) {
        tracks.push((
            SubtitleTrack {
                id: format!("e{}", stream.index),
                language: stream.language.clone(),
                name: format!("{} ({})", stream.language, stream.codec),
            },
            SubtitleOrigin::Embedded(stream.index),
        ));
    }
    let folder = source.path.parent().unwrap_or(Path::new("/"));
    let sidecars = source
        .item
        .fields
        .metadata
        .get("external_subtitles")
        .map(String::as_str)
        .unwrap_or_default();
    for (position, entry) in sidecars.split(',').filter(|entry| !entry.is_empty()).enumerate() {
        let (language, name) = entry.split_once(':').unwrap_or(("und", entry));
        // Sidecar names come from the scan of this folder; never a path.
        if name.contains('/') {
            continue;
        }
        tracks.push((
            SubtitleTrack {
                id: format!("x{position}"),
                language: language.to_owned(),
                name: format!("{language} (file)"),
            },
            SubtitleOrigin::Sidecar(folder.join(name)),
        ));
    }
    tracks
}

enum SubtitleOrigin {
    Embedded(u32),
    Sidecar(PathBuf),
}

fn text_response(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The master playlist: every rendition, and text subtitles.
#[utoipa::path(get, path = "/api/v1/items/{id}/hls/master.m3u8", tags = ["playback", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), MasterQuery), responses((status = 200, description = "The master playlist", content_type = "application/vnd.apple.mpegurl"), (status = 404)))]
pub async fn master(
    State(state): State<AppState>,
    PathParam(id): PathParam<u64>,
    QueryParams(query): QueryParams<MasterQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let stream_query = StreamQuery { t: query.t.clone() };
    let (caller, token) = caller_and_token(&state, &parts, stream_query, id)?;
    let item = visible_item(&state, &caller, id)?;
    if let Some(holder) = super::proxy::remote_holder(&state, &item, &parts) {
        return super::proxy::to_holder(&state, holder, &parts).await;
    }
    let source = source_of(&state, item).await?;
    let tracks: Vec<SubtitleTrack> = subtitle_tracks(&source).into_iter().map(|(track, _)| track).collect();
    let mut offered: Vec<Rendition> = renditions(&source)
        .await
        .into_iter()
        .map(|(rendition, _)| rendition)
        .collect();
    let smallest = offered.last().cloned();
    offered.retain(|rendition| {
        let copy_ok = query.copy != Some(false) || !rendition.copy_video;
        let height_ok = match (query.max_height, rendition.size) {
            (Some(max), Some((_, height))) => height <= max,
            _ => true,
        };
        let rate_ok = query.max_bitrate.is_none_or(|max| rendition.bandwidth() <= max);
        copy_ok && height_ok && rate_ok
    });
    if offered.is_empty() {
        offered.extend(smallest);
    }
    let body = playlist::master(&offered, &tracks, &format!("?t={token}"));
    Ok(text_response("application/vnd.apple.mpegurl", body))
}

/// A rendition's playlist, init segment or media segment; or a subtitle
/// track's playlist or WebVTT file (rendition `subtitles`).
#[utoipa::path(get, path = "/api/v1/items/{id}/hls/{rendition}/{file}", tags = ["playback", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), ("rendition" = String, Path, description = "`original` (the source's video, copied), `1080p`, `720p`, …, `audio`, or `subtitles`"), ("file" = String, Path, description = "`index.m3u8`, `init.mp4`, `N.m4s`, or `segments.json` (each segment's BLAKE3 `hash` and `size`, and the members holding them as `sources`: `url`, `node`, `origin`); for subtitles `ID.m3u8` or `ID.vtt`"), StreamQuery), responses((status = 200, description = "The playlist or segment"), (status = 404), (status = 503, description = "Every transcoding slot is busy; see Retry-After")))]
pub async fn file(
    State(state): State<AppState>,
    PathParam((id, rendition, file)): PathParam<(u64, String, String)>,
    QueryParams(query): QueryParams<StreamQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let from_url = query.t.is_some();
    let (caller, token) = caller_and_token(&state, &parts, query, id)?;
    // One player: its stream token (each playback gets its own), or the
    // user when it signs each request with a header instead.
    let viewer = if from_url {
        blake3::hash(token.as_bytes()).to_hex().to_string()
    } else {
        format!("user {}", caller.user.id)
    };
    let item = visible_item(&state, &caller, id)?;
    if let Some(holder) = super::proxy::remote_holder(&state, &item, &parts) {
        return super::proxy::to_holder(&state, holder, &parts).await;
    }
    let source = source_of(&state, item).await?;
    if rendition == "subtitles" {
        return subtitle_file(&source, &file, &token).await;
    }
    if file == "segments.json" {
        return super::segments::list(&state, &source, &rendition).await;
    }
    let (rendition, plan) = rendition_named(&source, &rendition).await?;
    if file == "index.m3u8" {
        return Ok(text_response(
            "application/vnd.apple.mpegurl",
            playlist::variant(&plan, &format!("?t={token}")),
        ));
    }
    let media_type = if rendition.audio_only() {
        "audio/mp4"
    } else {
        "video/mp4"
    };
    let part = if file == "init.mp4" {
        Part::Init
    } else {
        let index = file
            .strip_suffix(".m4s")
            .and_then(|number| number.parse::<u32>().ok())
            .ok_or_else(|| ApiError::not_found(format!("no file {file:?}: use index.m3u8, init.mp4 or N.m4s")))?;
        if index >= plan.count() {
            return Err(ApiError::not_found(format!("segment {index} is past the last")));
        }
        Part::Segment(index)
    };
    let zero_copy = parts.extensions.get::<ZeroCopy>();
    let (body, length) = match segment_bytes(&state, &source, &rendition, &plan, part, &viewer, zero_copy).await? {
        SegmentBytes::InMemory(bytes) => {
            let length = bytes.len() as u64;
            (axum::body::Body::from(bytes), length)
        }
        SegmentBytes::InPacks(spans, zero_copy) => {
            let length = spans.iter().map(|span| span.len).sum::<u64>();
            (crate::zero_copy::spans_body(spans, zero_copy), length)
        }
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, media_type),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, axum::http::HeaderValue::from(length));
    Ok(response)
}

/// A segment's bytes: read into memory, or where they lie in the store's
/// hot pack files, to be sent by `sendfile` on the request's connection.
enum SegmentBytes {
    InMemory(Vec<u8>),
    InPacks(Vec<omega_storage::FileSpan>, ZeroCopy),
}

/// A file of a rendition.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Init,
    Segment(u32),
}

impl Part {
    /// Every file of a rendition with these segments, in playlist order.
    pub(crate) fn all(plan: &SegmentPlan) -> impl Iterator<Item = Part> {
        std::iter::once(Part::Init).chain((0..plan.count()).map(Part::Segment))
    }

    /// Its file name in the rendition's playlist.
    pub(crate) fn file_name(self) -> String {
        match self {
            Part::Init => "init.mp4".to_owned(),
            Part::Segment(index) => format!("{index}.m4s"),
        }
    }

    /// The store reference a made file is kept under.
    pub(crate) fn reference(self, source: &str, rendition: &str) -> String {
        match self {
            Part::Init => format!("{SEGMENT_PREFIX}{source}:{rendition}:init"),
            Part::Segment(index) => format!("{SEGMENT_PREFIX}{source}:{rendition}:{index}"),
        }
    }
}

/// A segment from the store, or made by a session and then stored.
async fn segment_bytes(
    state: &AppState,
    source: &Source,
    rendition: &Rendition,
    plan: &SegmentPlan,
    part: Part,
    viewer: &str,
    zero_copy: Option<&ZeroCopy>,
) -> ApiResult<SegmentBytes> {
    debug_assert_eq!(
        rendition_key(&rendition.name),
        match plan.layout_tag() {
            Some(tag) => format!("{}~{tag}", rendition.name),
            None => rendition.name.clone(),
        },
        "the name gives the plan's layout"
    );
    let reference = part.reference(&source.id, &rendition_key(&rendition.name));
    if let Some(store) = state.store.clone() {
        // The epoch before any lookup: places found are good while it holds.
        let epoch = store.epoch();
        let remembered = zero_copy.and_then(|zero_copy| {
            let spans = source.transcoder.kept_spans.get(&reference, epoch)?;
            Some(SegmentBytes::InPacks(spans, zero_copy.clone()))
        });
        let stored = match remembered {
            Some(remembered) => Ok(Some(remembered)),
            None => {
                let (lookup, zero_copy, transcoder) =
                    (reference.clone(), zero_copy.cloned(), source.transcoder.clone());
                tokio::task::spawn_blocking(move || -> omega_storage::Result<Option<SegmentBytes>> {
                    let Some(blob) = store.resolve_reference(&lookup)? else {
                        return Ok(None);
                    };
                    if let Some(zero_copy) = zero_copy {
                        let size = store.blob(&blob)?.size;
                        if let Some(spans) = store.blob_file_spans(&blob, 0, size)? {
                            transcoder.kept_spans.put(&lookup, epoch, spans.clone());
                            return Ok(Some(SegmentBytes::InPacks(spans, zero_copy)));
                        }
                    }
                    store.read_all(&blob).map(|bytes| Some(SegmentBytes::InMemory(bytes)))
                })
                .await
                .map_err(ApiError::internal)?
            }
        };
        match stored {
            Ok(Some(bytes)) => {
                metrics::counter!("omega_hls_segments_total", "origin" => "store").increment(1);
                if let Some(transcoder) = &state.transcoder {
                    transcoder.segment_read(&reference);
                }
                return Ok(bytes);
            }
            Ok(None) => {}
            // A damaged copy is remade rather than served.
            Err(error) => tracing::warn!(%reference, %error, "stored segment unreadable; making it again"),
        }
    }
    let key = SessionKey {
        source: source.id.clone(),
        rendition: rendition.name.clone(),
    };
    let input = SessionInput {
        path: &source.path,
        info: &source.info,
        rendition,
        plan,
        viewer,
    };
    let bytes = match part {
        Part::Init => source.transcoder.sessions.init(&key, input).await?,
        Part::Segment(index) => source.transcoder.sessions.segment(&key, input, index).await?,
    };
    metrics::counter!("omega_hls_segments_total", "origin" => "transcoded").increment(1);
    if let Some(transcoder) = &state.transcoder {
        transcoder.keep_segment(reference, bytes.clone());
    }
    Ok(SegmentBytes::InMemory(bytes))
}

async fn subtitle_file(source: &Source, file: &str, token: &str) -> ApiResult<Response> {
    let tracks = subtitle_tracks(source);
    let (id, extension) = file
        .rsplit_once('.')
        .ok_or_else(|| ApiError::not_found(format!("no subtitle file {file:?}")))?;
    let (_, origin) = tracks
        .iter()
        .find(|(track, _)| track.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no subtitle track {id:?}")))?;
    match extension {
        "m3u8" => Ok(text_response(
            "application/vnd.apple.mpegurl",
            playlist::subtitle(source.info.duration_s, &format!("{id}.vtt?t={token}")),
        )),
        "vtt" => {
            let subtitle_source = match origin {
                SubtitleOrigin::Embedded(index) => SubtitleSource::Embedded(&source.path, *index),
                SubtitleOrigin::Sidecar(path) => SubtitleSource::Sidecar(path),
            };
            let bytes = webvtt(&source.transcoder.ffmpeg, subtitle_source).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/vtt; charset=utf-8"),
                    (header::CACHE_CONTROL, "private, max-age=3600"),
                ],
                bytes,
            )
                .into_response())
        }
        _ => Err(ApiError::not_found(format!("no subtitle file {file:?}"))),
    }
}

/// How a client should play an item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaybackInfo {
    /// `direct_play`, `remux` or `transcode` (with reasons).
    #[schema(value_type = Object)]
    pub decision: Decision,
    /// The file as it is, with a stream token (usable without headers).
    pub stream_url: String,
    /// The master playlist, with a stream token (usable without headers)
    /// and what the decision allows: the source's video copied for a
    /// remux, encoded renditions within the client's limits otherwise.
    pub hls_url: String,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Text subtitles (embedded and sidecar) as WebVTT, with a stream
    /// token: a `<track>` in direct play; HLS lists the same tracks in its
    /// subtitle group.
    pub subtitles: Vec<SubtitleView>,
}

/// A subtitle track a player can turn on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubtitleView {
    /// Its id (`e2` for the source's stream 2, `x0` for the first sidecar
    /// file).
    pub id: String,
    /// Language tag (`und` when unknown).
    pub language: String,
    /// Name to show.
    pub name: String,
    /// The WebVTT file, with a stream token.
    pub url: String,
}

/// `POST /api/v1/items/{id}/playback` (all fields optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct PlaybackRequest {
    /// What the client plays; a current browser when left out.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "object_or_null")]
    pub client: Option<ClientProfile>,
}

/// An object or null, never an array (serde alone would build a struct
/// from an array of its fields, which the document does not describe).
fn object_or_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<ClientProfile>, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        value @ serde_json::Value::Object(_) => serde_json::from_value(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("client is a JSON object")),
    }
}

/// Decides how the caller's client plays an item: directly, or through HLS.
#[utoipa::path(post, path = "/api/v1/items/{id}/playback", tags = ["playback", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), request_body = PlaybackRequest, responses((status = 200, body = PlaybackInfo), (status = 404)))]
pub async fn playback(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
    parts: Parts,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let request: PlaybackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PlaybackRequest::default()
    } else {
        super::extract::json_body(&body)?
    };
    let item = visible_item(&state, &caller, id)?;
    // The holder probes its file and decides; its URLs work here too.
    if let Some(holder) = super::proxy::remote_holder(&state, &item, &parts) {
        return super::proxy::to_holder_with(&state, holder, &parts, Some(body)).await;
    }
    let source = source_of(&state, item).await?;
    let client = request.client.unwrap_or_else(ClientProfile::browser);
    let decision = source.decide(&client).await;
    let token = state.tokens.stream_token(caller.user.id, id, state.clock.now_ms());
    // The master playlist offers what the decision allows: no copy of a
    // video the client cannot play, nothing above its limits.
    let mut hls_url = format!("/api/v1/items/{id}/hls/master.m3u8?t={token}");
    if matches!(decision, Decision::Transcode { .. }) {
        hls_url.push_str("&copy=false");
    }
    if let Some(max) = client.max_height {
        hls_url.push_str(&format!("&max_height={max}"));
    }
    if let Some(max) = client.max_bitrate {
        hls_url.push_str(&format!("&max_bitrate={max}"));
    }
    Ok((
        StatusCode::OK,
        Json(PlaybackInfo {
            decision,
            stream_url: format!("/api/v1/items/{id}/stream?t={token}"),
            hls_url,
            duration_s: source.info.duration_s,
            subtitles: subtitle_tracks(&source)
                .into_iter()
                .map(|(track, _)| SubtitleView {
                    url: format!("/api/v1/items/{id}/hls/subtitles/{}.vtt?t={token}", track.id),
                    id: track.id,
                    language: track.language,
                    name: track.name,
                })
                .collect(),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::PlaybackRequest;

    #[test]
    fn a_client_profile_is_an_object() {
        let parse = |text: &str| serde_json::from_str::<PlaybackRequest>(text);
        assert!(parse(r#"{"client": []}"#).is_err());
        assert!(parse(r#"{"client": null}"#).is_ok_and(|request| request.client.is_none()));
        assert!(parse("{}").is_ok_and(|request| request.client.is_none()));
        assert!(parse(r#"{"client": {}}"#).is_ok_and(|request| request.client.is_some()));
    }
}
