//! Catalog items: listing with filters, sorting and pages; details; and the
//! direct stream of an item's file with Range, If-Range and ETag.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use omega_consensus::command::Command;
use omega_consensus::model::{Item, ItemKind, WatchState};
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};

use super::extract::{Body, PathParam, QueryParams};
use super::libraries::can_see;
use super::signed::{StreamQuery, authorize};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::events::Event;
use crate::library::enrich::IMAGE_PRIMARY;
use crate::library::probe::Chapter;
use crate::zero_copy::{RangeCheck, ZeroCopy};

/// Largest page.
const LIMIT_MAX: usize = 500;

/// The API name of an item kind.
pub fn kind_name(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Movie => "movie",
        ItemKind::Series => "series",
        ItemKind::Season => "season",
        ItemKind::Episode => "episode",
        ItemKind::Artist => "artist",
        ItemKind::Album => "album",
        ItemKind::Track => "track",
        ItemKind::Audiobook => "audiobook",
        ItemKind::Book => "book",
        ItemKind::Photo => "photo",
    }
}

fn parse_kind(name: &str) -> Option<ItemKind> {
    ItemKind::ALL.into_iter().find(|kind| kind_name(*kind) == name)
}

/// A file of an item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MediaView {
    /// Size in bytes.
    pub size: u64,
    /// Container, from the extension.
    pub container: Option<String>,
    /// Path on its node (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The node whose disk holds it.
    pub node: u64,
    /// Its content address in the store (BLAKE3, hex), once indexed.
    pub blob: Option<String>,
}

/// An item as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    /// Id.
    pub id: u64,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Title.
    pub title: String,
    /// Sort title.
    pub sort_title: String,
    /// Year.
    pub year: Option<u16>,
    /// Episode, track or season number.
    pub index: Option<u32>,
    /// Parent item.
    pub parent: Option<u64>,
    /// Library.
    pub library: u64,
    /// Other metadata.
    pub metadata: BTreeMap<String, String>,
    /// Chapters (video and audiobooks).
    pub chapters: Vec<Chapter>,
    /// Where its primary image is, when it has one: a signed URL, usable
    /// without headers (`<img src>`).
    pub image: Option<String>,
    /// Its file, when it has one: a signed URL, usable without headers
    /// (`<a download>`, `<audio src>`).
    pub stream_url: Option<String>,
    /// Files.
    pub media: Vec<MediaView>,
    /// When it was added, milliseconds since the epoch.
    pub added_ms: u64,
    /// The caller's progress on it.
    pub user_data: UserData,
}

/// A user's progress on an item.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct UserData {
    /// Resume position in milliseconds (0: from the start).
    pub position_ms: u64,
    /// Played to the end at least once.
    pub played: bool,
    /// Times played to the end.
    pub play_count: u32,
    /// Marked as a favourite.
    pub favorite: bool,
}

impl From<WatchState> for UserData {
    fn from(state: WatchState) -> UserData {
        UserData {
            position_ms: state.position_ms,
            played: state.played,
            play_count: state.play_count,
            favorite: false,
        }
    }
}

/// An item as `caller` sees it: with its progress, and its image URL
/// signed for it (so that `<img>` elements need no headers).
pub(crate) fn view_for(state: &AppState, caller: &Caller, item: &Item) -> ApiResult<ItemView> {
    let mut view = view(item, caller.is_admin());
    if view.image.is_some() {
        view.image = Some(super::signed::image_url(state, caller.user.id, item.id));
    }
    if !item.fields.media.is_empty() {
        view.stream_url = Some(super::signed::stream_url(state, caller.user.id, item.id));
    }
    if let Some(watch) = read::watch_state(state.cluster.tables(), caller.user.id, item.id)? {
        view.user_data = watch.into();
    }
    view.user_data.favorite = read::favorite(state.cluster.tables(), caller.user.id, item.id)?.is_some();
    Ok(view)
}

/// Metadata entries kept out of the API's `metadata` map: internal, or
/// shown as typed fields.
const UNLISTED_METADATA: &[&str] = &["file_stamp", "chapters", IMAGE_PRIMARY];

fn view(item: &Item, admin: bool) -> ItemView {
    let chapters = item
        .fields
        .metadata
        .get("chapters")
        .and_then(|json| serde_json::from_str::<Vec<Chapter>>(json).ok())
        .unwrap_or_default();
    let image = item
        .fields
        .metadata
        .contains_key(IMAGE_PRIMARY)
        .then(|| format!("/api/v1/items/{}/images/primary", item.id));
    ItemView {
        id: item.id,
        kind: kind_name(item.fields.kind),
        title: item.fields.title.clone(),
        sort_title: item.fields.sort_title.clone(),
        year: item.fields.year,
        index: item.fields.index,
        parent: item.parent,
        library: item.fields.library,
        metadata: item
            .fields
            .metadata
            .iter()
            .filter(|(key, _)| !UNLISTED_METADATA.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        chapters,
        image,
        stream_url: None,
        media: item
            .fields
            .media
            .iter()
            .map(|media| MediaView {
                size: media.size,
                container: crate::library::naming::extension(&media.path),
                path: admin.then(|| media.path.clone()),
                node: media.node,
                blob: media.blob.map(hex::encode),
            })
            .collect(),
        added_ms: item.added_ms,
        user_data: UserData::default(),
    }
}

/// `GET /api/v1/items` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Item kind.
    #[serde(rename = "type")]
    #[param(pattern = "^(movie|series|season|episode|artist|album|track|audiobook|book|photo)$")]
    pub kind: Option<String>,
    /// Parent item id.
    pub parent: Option<u64>,
    /// Library id.
    pub library: Option<u64>,
    /// Case-insensitive text in the title.
    pub search: Option<String>,
    /// What the items are ordered by (default `title`).
    #[param(inline)]
    pub sort: Option<SortKey>,
    /// `asc` (default) or `desc`.
    #[param(inline)]
    pub order: Option<SortOrder>,
    /// Page size (default 100, at most 500).
    pub limit: Option<usize>,
    /// Items to skip.
    pub offset: Option<usize>,
    /// `true`: only the caller's favourites.
    pub favorite: Option<bool>,
}

/// What a list of items is ordered by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    /// The sort title.
    #[default]
    Title,
    /// When it was added.
    Added,
    /// Its year.
    Year,
    /// Its number (track, episode).
    Index,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

/// A page of items.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemPage {
    /// The items.
    pub items: Vec<ItemView>,
    /// Matches in all.
    pub total: usize,
    /// Skipped.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
}

/// Lists the items the caller may see.
#[utoipa::path(get, path = "/api/v1/items", tag = "items", security(("bearer" = [])), params(ListQuery), responses((status = 200, body = ItemPage), (status = 400)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<ItemPage>> {
    let kind = match query.kind.as_deref() {
        Some(name) => Some(parse_kind(name).ok_or_else(|| {
            ApiError::bad_request(
                "type is one of movie, series, season, episode, artist, album, track, audiobook, book, photo",
            )
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, LIMIT_MAX);
    let offset = query.offset.unwrap_or(0);
    let search = query.search.as_deref().map(crate::text::search_fold);
    let tables = state.cluster.tables();
    let descending = query.order.unwrap_or_default() == SortOrder::Desc;
    let sort = query.sort.unwrap_or_default();
    // The common browse — one kind, by title, no parent or search — pages
    // through the title index without loading the others.
    if let Some(kind) = kind
        && query.parent.is_none()
        && search.is_none()
        && query.favorite.is_none()
        && sort == SortKey::Title
    {
        let visible = |library: u64| can_see(&caller, library) && query.library.is_none_or(|id| id == library);
        let (page, total) = read::items_by_title(tables, kind, visible, offset, limit, descending)?;
        let items = page
            .iter()
            .map(|item| view_for(&state, &caller, item))
            .collect::<ApiResult<Vec<_>>>()?;
        return Ok(Json(ItemPage {
            items,
            total,
            offset,
            limit,
        }));
    }
    let favorites: Option<std::collections::HashSet<u64>> = match query.favorite {
        Some(wanted) => Some(
            read::favorites(tables, caller.user.id)?
                .into_iter()
                .map(|(item, _)| item)
                .collect(),
        )
        .filter(|_| wanted),
        None => None,
    };
    let mut items = Vec::new();
    for library in read::libraries(tables)? {
        if !can_see(&caller, library.id) || query.library.is_some_and(|id| id != library.id) {
            continue;
        }
        for item in read::library_items(tables, library.id)? {
            let matches = kind.is_none_or(|kind| item.fields.kind == kind)
                && favorites.as_ref().is_none_or(|favorites| favorites.contains(&item.id))
                && query.parent.is_none_or(|parent| item.parent == Some(parent))
                && search
                    .as_deref()
                    .is_none_or(|needle| crate::text::search_matches(&item.fields.title, needle));
            if matches {
                items.push(item);
            }
        }
    }
    match sort {
        SortKey::Title => items.sort_by(|a, b| a.fields.sort_title.cmp(&b.fields.sort_title).then(a.id.cmp(&b.id))),
        SortKey::Added => items.sort_by_key(|item| (item.added_ms, item.id)),
        SortKey::Year => items.sort_by_key(|item| (item.fields.year, item.id)),
        SortKey::Index => items.sort_by_key(|item| (item.fields.index, item.id)),
    }
    if descending {
        items.reverse();
    }
    let total = items.len();
    let page = items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|item| view_for(&state, &caller, item))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(ItemPage {
        items: page,
        total,
        offset,
        limit,
    }))
}

/// An item the caller may see, or 404 (existence is not revealed).
pub(crate) fn visible_item(state: &AppState, caller: &Caller, id: u64) -> ApiResult<Item> {
    read::item(state.cluster.tables(), id)?
        .filter(|item| can_see(caller, item.fields.library))
        .ok_or_else(|| ApiError::not_found("no such item"))
}

/// One item.
#[utoipa::path(get, path = "/api/v1/items/{id}", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = ItemView), (status = 404)))]
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<ItemView>> {
    let item = visible_item(&state, &caller, id)?;
    Ok(Json(view_for(&state, &caller, &item)?))
}

/// Most in-progress items listed by `resume`.
const RESUME_MAX: usize = 50;

/// What the caller has started and not finished (position past zero, not
/// played since), most recently watched first: "continue watching". Music
/// tracks are left out: a song left half-way is not something to continue
/// (films, episodes and audiobooks are).
#[utoipa::path(get, path = "/api/v1/items/resume", tags = ["items"], security(("bearer" = [])), params(PageQuery), responses((status = 200, body = ItemPage)))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ItemPage>> {
    let limit = query.limit.unwrap_or(20).clamp(1, RESUME_MAX);
    let offset = query.offset.unwrap_or(0);
    let tables = state.cluster.tables();
    let mut started: Vec<(u64, u64)> = read::watch_states(tables, caller.user.id)?
        .into_iter()
        .filter(|(_, watch)| watch.position_ms > 0)
        .map(|(item, watch)| (watch.updated_ms, item))
        .collect();
    started.sort_unstable_by(|a, b| b.cmp(a));
    let mut items = Vec::new();
    for (_, id) in started {
        let continued = read::item(tables, id)?
            .filter(|item| can_see(&caller, item.fields.library) && item.fields.kind != ItemKind::Track);
        if let Some(item) = continued {
            items.push(item);
        }
    }
    let total = items.len();
    let page = items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|item| view_for(&state, &caller, item))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(ItemPage {
        items: page,
        total,
        offset,
        limit,
    }))
}

/// `GET /api/v1/items/{id}/children` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (default 100, at most 500).
    pub limit: Option<usize>,
    /// Items to skip.
    pub offset: Option<usize>,
}

/// An item's children (seasons of a series, episodes of a season, albums of
/// an artist, tracks of an album) in their order: by number, then title.
#[utoipa::path(get, path = "/api/v1/items/{id}/children", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), PageQuery), responses((status = 200, body = ItemPage), (status = 404)))]
pub async fn children(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<ItemPage>> {
    let parent = visible_item(&state, &caller, id)?;
    let limit = query.limit.unwrap_or(100).clamp(1, LIMIT_MAX);
    let offset = query.offset.unwrap_or(0);
    let mut items: Vec<Item> = read::library_items(state.cluster.tables(), parent.fields.library)?
        .into_iter()
        .filter(|item| item.parent == Some(parent.id))
        .collect();
    items.sort_by(|a, b| {
        (a.fields.index.is_none(), a.fields.index, &a.fields.sort_title, a.id).cmp(&(
            b.fields.index.is_none(),
            b.fields.index,
            &b.fields.sort_title,
            b.id,
        ))
    });
    let total = items.len();
    let page = items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|item| view_for(&state, &caller, item))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(ItemPage {
        items: page,
        total,
        offset,
        limit,
    }))
}

/// An item's image: `primary` (poster, cover, thumbnail), a JPEG from the
/// store. Conditional requests by ETag (the blob id) get 304.
#[utoipa::path(get, path = "/api/v1/items/{id}/images/{kind}", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), ("kind" = String, Path, description = "`primary`"), StreamQuery), responses((status = 200, description = "The image", content_type = "image/jpeg"), (status = 304), (status = 404)))]
pub async fn image(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<StreamQuery>,
    parts: Parts,
    PathParam((id, kind)): PathParam<(u64, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller = authorize(&state, &parts, query.t.as_deref(), id)?;
    let item = visible_item(&state, &caller, id)?;
    if kind != "primary" {
        return Err(ApiError::not_found(format!("no {kind:?} image: images are primary")));
    }
    serve_image(&state, &item, &headers).await
}

/// An item's primary image from the store, with its blob id as ETag. The
/// caller has checked that the requester may see `item`.
pub(crate) async fn serve_image(state: &AppState, item: &Item, headers: &HeaderMap) -> ApiResult<Response> {
    let blob = item
        .fields
        .metadata
        .get(IMAGE_PRIMARY)
        .and_then(|hex| hex.parse::<omega_storage::BlobId>().ok())
        .ok_or_else(|| ApiError::not_found("this item has no image"))?;
    let store = state
        .store
        .clone()
        .ok_or_else(|| ApiError::not_found("this node keeps no images"))?;
    let etag = format!("\"{blob}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let bytes = tokio::task::spawn_blocking(move || store.read_all(&blob))
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?
        .map_err(|error| ApiError::not_found(format!("the image is unavailable: {error}")))?;
    let content_type = if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /api/v1/items/{id}/progress`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// Where playback is, in milliseconds.
    pub position_ms: u64,
    /// True when playback reached the end.
    #[serde(default)]
    pub played: bool,
}

/// The largest playback position accepted: the longest plausible media
/// file (`omega_transcode::probe::DURATION_MAX_S`).
pub const POSITION_MAX_MS: u64 = omega_transcode::probe::DURATION_MAX_S as u64 * 1000;

pub(crate) async fn save_watch(
    state: &AppState,
    caller: &Caller,
    item: u64,
    change: impl FnOnce(&mut WatchState),
) -> ApiResult<Json<UserData>> {
    let mut watch = read::watch_state(state.cluster.tables(), caller.user.id, item)?.unwrap_or_default();
    change(&mut watch);
    // Checked here, where every protocol's report arrives: no real file is
    // longer, and a larger number would overflow clients' tick counts.
    if watch.position_ms > POSITION_MAX_MS {
        return Err(ApiError::bad_request(format!(
            "a playback position is at most {POSITION_MAX_MS} ms"
        )));
    }
    watch.updated_ms = state.clock.now_ms();
    state
        .write(Command::SetWatchState {
            user: caller.user.id,
            item,
            state: watch.clone(),
        })
        .await?;
    state.events.publish(Event::Playback {
        user: caller.user.id,
        item,
        position_ms: watch.position_ms,
        played: watch.played,
    });
    let mut data = UserData::from(watch);
    data.favorite = read::favorite(state.cluster.tables(), caller.user.id, item)?.is_some();
    Ok(Json(data))
}

/// Reports playback progress: the resume position, or the end of playback
/// (`played`: counted, and the resume position cleared).
#[utoipa::path(post, path = "/api/v1/items/{id}/progress", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), request_body = Progress, responses((status = 200, body = UserData), (status = 400, description = "A position past the longest plausible file"), (status = 404)))]
pub async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
    Body(request): Body<Progress>,
) -> ApiResult<Json<UserData>> {
    visible_item(&state, &caller, id)?;
    save_watch(&state, &caller, id, |watch| {
        if request.played {
            watch.played = true;
            watch.play_count = watch.play_count.saturating_add(1);
            watch.position_ms = 0;
        } else {
            watch.position_ms = request.position_ms;
        }
    })
    .await
}

/// Marks an item played.
#[utoipa::path(post, path = "/api/v1/items/{id}/played", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = UserData), (status = 404)))]
pub async fn mark_played(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<UserData>> {
    set_played(&state, &caller, id, true).await
}

/// Marks an item unplayed.
#[utoipa::path(delete, path = "/api/v1/items/{id}/played", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = UserData), (status = 404)))]
pub async fn mark_unplayed(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<UserData>> {
    set_played(&state, &caller, id, false).await
}

/// Marks an item as a favourite.
#[utoipa::path(post, path = "/api/v1/items/{id}/favorite", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = UserData), (status = 404)))]
pub async fn mark_favorite(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<UserData>> {
    set_favorite(&state, &caller, id, true).await
}

/// Unmarks an item as a favourite.
#[utoipa::path(delete, path = "/api/v1/items/{id}/favorite", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = UserData), (status = 404)))]
pub async fn unmark_favorite(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<UserData>> {
    set_favorite(&state, &caller, id, false).await
}

/// Marks a visible item as a favourite or not (the same marks Subsonic's
/// `star` and Jellyfin's favourites set).
pub(crate) async fn set_favorite(
    state: &AppState,
    caller: &Caller,
    id: u64,
    favorite: bool,
) -> ApiResult<Json<UserData>> {
    visible_item(state, caller, id)?;
    state
        .write(Command::SetFavorite {
            user: caller.user.id,
            item: id,
            favorite,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let tables = state.cluster.tables();
    let mut data: UserData = read::watch_state(tables, caller.user.id, id)?
        .unwrap_or_default()
        .into();
    data.favorite = favorite;
    Ok(Json(data))
}

/// Marks a visible item played or not, clearing its resume position.
async fn set_played(state: &AppState, caller: &Caller, id: u64, played: bool) -> ApiResult<Json<UserData>> {
    visible_item(state, caller, id)?;
    save_watch(state, caller, id, |watch| {
        watch.played = played;
        watch.position_ms = 0;
    })
    .await
}

/// The item's file on this node's disk, or 404.
pub(crate) fn local_media<'a>(state: &AppState, item: &'a Item) -> ApiResult<&'a omega_consensus::model::MediaRef> {
    item.fields
        .media
        .iter()
        .find(|media| media.node == state.cluster.id())
        .ok_or_else(|| ApiError::not_found("this item has no file on this node"))
}

/// A byte range asked for by a Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole file.
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Unsatisfiable: 416.
    Unsatisfiable,
}

/// Parses a Range header against a file of `size` bytes. Multiple ranges
/// are served as the whole file (allowed by RFC 9110).
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => last
            .parse::<u64>()
            .ok()
            .and_then(|count| (count > 0 && size > 0).then(|| (size.saturating_sub(count), size - 1))),
        // `N-`: from N to the end.
        (false, true) => first
            .parse::<u64>()
            .ok()
            .filter(|start| *start < size)
            .map(|start| (start, size - 1)),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(start), Ok(end)) if start <= end && start < size => Some((start, end.min(size - 1))),
            _ => None,
        },
        (true, true) => None,
    };
    parsed.map_or(RangeRequest::Unsatisfiable, |(start, end)| {
        RangeRequest::Part(start, end)
    })
}

/// Streams the item's file: Range (single), If-Range, ETag, If-None-Match.
#[utoipa::path(get, path = "/api/v1/items/{id}/stream", tags = ["items", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id"), StreamQuery), responses((status = 200, description = "The whole file"), (status = 206, description = "The requested range"), (status = 304), (status = 404), (status = 409, description = "The file no longer holds the bytes its scan indexed: scan its library again"), (status = 416)))]
pub async fn stream(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<StreamQuery>,
    parts: Parts,
    PathParam(id): PathParam<u64>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller = authorize(&state, &parts, query.t.as_deref(), id)?;
    let item = visible_item(&state, &caller, id)?;
    if let Some(holder) = super::proxy::remote_holder(&state, &item, &parts) {
        // The read path: this node's store (hot, then cold), kept from an
        // earlier relay; else the holder, while the blob is cached here in
        // the background from the peers providing it.
        if let Some(kept) = serve_kept(&state, &item, &headers).await? {
            return Ok(kept);
        }
        if let Some(blob) = item.fields.media.first().and_then(|media| media.blob) {
            crate::relay::cache_in_background(&state, omega_storage::Hash32(blob), holder);
        }
        return super::proxy::to_holder(&state, holder, &parts).await;
    }
    serve_file(&state, &item, &headers, parts.extensions.get::<ZeroCopy>()).await
}

/// An item's file as it is: Range (single), If-Range, ETag, If-None-Match.
/// The caller has checked that the requester may see `item`. On a
/// zero-copy connection (see [`crate::zero_copy`]) the bytes go by
/// `sendfile`; either way every chunk is first checked against the blob the
/// scan indexed, once per version of the file (`Store::file_checks`).
pub(crate) async fn serve_file(
    state: &AppState,
    item: &Item,
    headers: &HeaderMap,
    zero_copy: Option<&ZeroCopy>,
) -> ApiResult<Response> {
    let media = local_media(state, item)?;
    let path = std::path::PathBuf::from(&media.path);
    let store = state.store.clone();
    let blob = media.blob.map(omega_storage::Hash32);
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|_| ApiError::not_found("the item's file is missing"))?;
        let metadata = file.metadata()?;
        // The checks of this version of the file against the blob its scan
        // indexed, when there is a store and the scan indexed it.
        let check = match (store, blob) {
            (Some(store), Some(blob)) => {
                let check = store.file_checks(&blob, &file, &path).map_err(changed_file)?;
                Some(std::sync::Arc::new(StoreCheck { store, check }))
            }
            _ => None,
        };
        Ok::<_, ApiError>((file, metadata, check))
    })
    .await
    .map_err(ApiError::internal)?;
    let (file, metadata, check) = opened?;
    let size = metadata.len();
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |elapsed| elapsed.as_nanos());
    let etag = format!("\"{size:x}-{modified:x}\"");
    let content_type = mime(media.path.as_str());
    let zero_copy = zero_copy.cloned();
    serve_ranged(headers, size, etag, content_type, |start, length| async move {
        let file = std::sync::Arc::new(file);
        // The first span is checked before the answer starts, so that a
        // file changed since its scan is a clear error, not a cut-off body.
        if let Some(check) = check.clone() {
            let reader = file.clone();
            let first_end = start + length.min(crate::zero_copy::SPAN_MAX as u64);
            tokio::task::spawn_blocking(move || check.check.check(&check.store, &reader, start, first_end))
                .await
                .map_err(ApiError::internal)?
                .map_err(changed_file)?;
        }
        let check = check.map(|check| check as std::sync::Arc<dyn RangeCheck>);
        Ok(crate::zero_copy::file_body(file, start, length, zero_copy, check))
    })
    .await
}

/// The store's checks of an in-place file, as a direct stream asks them.
struct StoreCheck {
    store: std::sync::Arc<omega_storage::Store>,
    check: omega_storage::FileCheck,
}

impl RangeCheck for StoreCheck {
    fn is_checked(&self, from: u64, to: u64) -> bool {
        self.check.is_checked(from, to)
    }

    fn check(&self, file: &std::fs::File, from: u64, to: u64) -> std::io::Result<()> {
        self.check
            .check(&self.store, file, from, to)
            .map_err(|error| match error {
                omega_storage::StoreError::FileChanged { .. } => std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    changed_file(error).message().to_owned(),
                ),
                other => std::io::Error::other(other.to_string()),
            })
    }
}

/// A file that no longer holds the bytes its scan indexed (or whose blob
/// the store forgot) is a conflict; any other store error is internal.
fn changed_file(error: omega_storage::StoreError) -> ApiError {
    match error {
        omega_storage::StoreError::FileChanged { .. } | omega_storage::StoreError::BlobNotFound(_) => ApiError::new(
            StatusCode::CONFLICT,
            format!("the item's file changed since it was scanned; scan its library again ({error})"),
        ),
        other => ApiError::internal(other),
    }
}

/// An item's file from this node's store (kept as a relay: the file is on
/// another member), ranged as [`serve_file`] serves it; `None` when the
/// store does not hold all of it.
pub(crate) async fn serve_kept(state: &AppState, item: &Item, headers: &HeaderMap) -> ApiResult<Option<Response>> {
    let (Some(store), Some(media)) = (state.store.clone(), item.fields.media.first()) else {
        return Ok(None);
    };
    let Some(blob) = media.blob.map(omega_storage::Hash32) else {
        return Ok(None);
    };
    let record = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.blob(&blob).ok())
            .await
            .map_err(ApiError::internal)?
    };
    let Some(record) = record.filter(|record| record.stored) else {
        return Ok(None);
    };
    metrics::counter!("omega_relay_total", "via" => "store").increment(1);
    // The content's hash is a strong validator.
    let etag = format!("\"{blob}\"");
    let content_type = mime(media.path.as_str());
    let response = serve_ranged(headers, record.size, etag, content_type, |start, length| async move {
        Ok(blob_body(store, blob, start, start + length))
    })
    .await?;
    Ok(Some(response))
}

/// Bytes read from the store per step of a blob's body.
const BLOB_STEP: u64 = 4 << 20;

/// Bytes `start..end` of `blob` from `store` as a streamed body, read in
/// bounded steps on blocking threads (each verified by the store).
pub(crate) fn blob_body(
    store: std::sync::Arc<omega_storage::Store>,
    blob: omega_storage::BlobId,
    start: u64,
    end: u64,
) -> HttpBody {
    let steps = futures_util::stream::unfold(start, move |from| {
        let store = store.clone();
        async move {
            if from >= end {
                return None;
            }
            let to = (from + BLOB_STEP).min(end);
            let read = tokio::task::spawn_blocking(move || store.read_range(&blob, from, to)).await;
            let bytes = match read {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(error)) => Err(std::io::Error::other(error.to_string())),
                Err(error) => Err(std::io::Error::other(error.to_string())),
            };
            Some((bytes, to))
        }
    });
    HttpBody::from_stream(steps)
}

/// Answers a GET of `size` bytes tagged `etag`: 304 for a matching
/// If-None-Match, the range of a Range header (unless If-Range names
/// another version), 416 outside it; `body(start, length)` gives the bytes.
async fn serve_ranged<F, Fut>(
    headers: &HeaderMap,
    size: u64,
    etag: String,
    content_type: &str,
    body: F,
) -> ApiResult<Response>
where
    F: FnOnce(u64, u64) -> Fut,
    Fut: std::future::Future<Output = ApiResult<HttpBody>>,
{
    let header_text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    if header_text(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    // If-Range: serve the range only if the file is still the one the
    // client has part of; otherwise the whole file.
    let range_header = match header_text(header::IF_RANGE) {
        Some(tag) if tag.trim() != etag => None,
        _ => header_text(header::RANGE),
    };
    let (status, start, length) = match parse_range(range_header, size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            let mut response =
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "the range is outside the file").into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let mut response = Response::new(body(start, length).await?);
    *response.status_mut() = status;
    let set = |response: &mut Response, name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    };
    set(&mut response, header::CONTENT_LENGTH, length.to_string());
    set(&mut response, header::ACCEPT_RANGES, "bytes".into());
    set(&mut response, header::ETAG, etag);
    set(&mut response, header::CONTENT_TYPE, content_type.into());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut response,
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + length - 1),
        );
    }
    Ok(response)
}

/// The media type of a file, from its extension.
pub(crate) fn mime(path: &str) -> &'static str {
    match crate::library::naming::extension(path).as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("mkv") => "video/x-matroska",
        Some("webm") => "video/webm",
        Some("mov") => "video/quicktime",
        Some("avi") => "video/x-msvideo",
        Some("ts" | "m2ts") => "video/mp2t",
        Some("mp3") => "audio/mpeg",
        Some("flac") => "audio/flac",
        Some("m4a" | "m4b") => "audio/mp4",
        Some("ogg" | "opus") => "audio/ogg",
        Some("wav") => "audio/wav",
        Some("epub") => "application/epub+zip",
        Some("pdf") => "application/pdf",
        Some("cbz") => "application/vnd.comicbook+zip",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), RangeRequest::Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeRequest::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeRequest::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeRequest::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), RangeRequest::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=x-y"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Full);
    }

    proptest! {
        /// Any header either selects bytes inside the file or is refused.
        #[test]
        fn ranges_stay_inside_the_file(header in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0_u64..5000) {
            match parse_range(Some(&header), size) {
                RangeRequest::Part(start, end) => prop_assert!(start <= end && end < size),
                RangeRequest::Full | RangeRequest::Unsatisfiable => {}
            }
        }
    }
}
