//! Playlists: a user's items in order, private or public. The same
//! playlists are Subsonic's (`getPlaylists`, `createPlaylist`, …). A
//! playlist shows only the items its reader may see; items that are gone
//! are skipped.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use omega_consensus::command::{Command, Response};
use omega_consensus::model::Playlist;
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};

use super::extract::{Body, PathParam};
use super::items::{ItemView, view_for, visible_item};
use super::{ApiError, ApiResult, AppState, Caller};

/// A playlist as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaylistView {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its owner's id.
    pub owner: u64,
    /// Its owner's name.
    pub owner_name: String,
    /// Other users may see it.
    pub public: bool,
    /// Items the caller may see in it.
    pub item_count: usize,
    /// Their total duration, milliseconds.
    pub duration_ms: u64,
    /// Created, milliseconds since the epoch.
    pub created_ms: u64,
    /// Last changed.
    pub updated_ms: u64,
}

/// A playlist with its items.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaylistDetail {
    /// The playlist.
    #[serde(flatten)]
    pub playlist: PlaylistView,
    /// Its items the caller may see, in order.
    pub items: Vec<ItemView>,
}

/// `POST /api/v1/playlists`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePlaylist {
    /// Its name: 1 to 200 printable characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Items, in order (at most 10,000).
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub items: Vec<u64>,
    /// Other users may see it.
    #[serde(default)]
    pub public: bool,
}

/// `PUT /api/v1/playlists/{id}`: what is given replaces what it had.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdatePlaylist {
    /// A new name: 1 to 200 printable characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: Option<String>,
    /// New items, in order (at most 10,000).
    #[schema(max_items = 10000)]
    pub items: Option<Vec<u64>>,
    /// New visibility.
    pub public: Option<bool>,
}

/// The playlists `caller` may see: its own and public ones whose owner
/// still exists.
pub(crate) fn visible_playlists(state: &AppState, caller: &Caller) -> ApiResult<Vec<Playlist>> {
    let tables = state.cluster.tables();
    let mut playlists = Vec::new();
    for playlist in read::playlists(tables)? {
        if (playlist.owner == caller.user.id || playlist.public) && read::user(tables, playlist.owner)?.is_some() {
            playlists.push(playlist);
        }
    }
    playlists.sort_by_key(|playlist| (playlist.name.to_lowercase(), playlist.id));
    Ok(playlists)
}

/// A playlist `caller` may see, or 404.
pub(crate) fn visible_playlist(state: &AppState, caller: &Caller, id: u64) -> ApiResult<Playlist> {
    read::playlist(state.cluster.tables(), id)?
        .filter(|playlist| playlist.owner == caller.user.id || playlist.public)
        .ok_or_else(|| ApiError::not_found("no such playlist"))
}

/// The items of `playlist` that `caller` may see, in order.
pub(crate) fn playlist_items(
    state: &AppState,
    caller: &Caller,
    playlist: &Playlist,
) -> ApiResult<Vec<omega_consensus::model::Item>> {
    let mut items = Vec::new();
    for id in &playlist.items {
        if let Ok(item) = visible_item(state, caller, *id) {
            items.push(item);
        }
    }
    Ok(items)
}

pub(crate) fn view(state: &AppState, caller: &Caller, playlist: &Playlist) -> ApiResult<PlaylistView> {
    let items = playlist_items(state, caller, playlist)?;
    let duration_ms = items
        .iter()
        .filter_map(|item| item.fields.metadata.get("duration_ms")?.parse::<u64>().ok())
        .sum();
    let owner_name = read::user(state.cluster.tables(), playlist.owner)?
        .map(|user| user.name)
        .unwrap_or_default();
    Ok(PlaylistView {
        id: playlist.id,
        name: playlist.name.clone(),
        owner: playlist.owner,
        owner_name,
        public: playlist.public,
        item_count: items.len(),
        duration_ms,
        created_ms: playlist.created_ms,
        updated_ms: playlist.updated_ms,
    })
}

/// Each of `items` must be visible to `caller`.
fn check_items(state: &AppState, caller: &Caller, items: &[u64]) -> ApiResult<()> {
    for id in items {
        visible_item(state, caller, *id).map_err(|_| ApiError::not_found(format!("no item {id}")))?;
    }
    Ok(())
}

/// The caller's playlists and the public ones.
#[utoipa::path(get, path = "/api/v1/playlists", tag = "playlists", security(("bearer" = [])), responses((status = 200, body = [PlaylistView])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<PlaylistView>>> {
    let playlists = visible_playlists(&state, &caller)?;
    Ok(Json(
        playlists
            .iter()
            .map(|playlist| view(&state, &caller, playlist))
            .collect::<ApiResult<Vec<_>>>()?,
    ))
}

/// Creates a playlist of the caller.
#[utoipa::path(post, path = "/api/v1/playlists", tag = "playlists", security(("bearer" = [])), request_body = CreatePlaylist, responses((status = 201, body = PlaylistView), (status = 400), (status = 404)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<CreatePlaylist>,
) -> ApiResult<(StatusCode, Json<PlaylistView>)> {
    check_items(&state, &caller, &request.items)?;
    let response = state
        .write(Command::CreatePlaylist {
            owner: caller.user.id,
            name: request.name,
            items: request.items,
            public: request.public,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let Response::Created(id) = response else {
        return Err(ApiError::internal(format!("CreatePlaylist answered {response:?}")));
    };
    let playlist = visible_playlist(&state, &caller, id)?;
    Ok((StatusCode::CREATED, Json(view(&state, &caller, &playlist)?)))
}

/// A playlist with the items the caller may see.
#[utoipa::path(get, path = "/api/v1/playlists/{id}", tag = "playlists", security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = PlaylistDetail), (status = 404)))]
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<PlaylistDetail>> {
    let playlist = visible_playlist(&state, &caller, id)?;
    let items = playlist_items(&state, &caller, &playlist)?
        .iter()
        .map(|item| view_for(&state, &caller, item))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(PlaylistDetail {
        playlist: view(&state, &caller, &playlist)?,
        items,
    }))
}

/// Changes one of the caller's playlists.
#[utoipa::path(put, path = "/api/v1/playlists/{id}", tag = "playlists", security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), request_body = UpdatePlaylist, responses((status = 200, body = PlaylistView), (status = 400), (status = 404)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
    Body(request): Body<UpdatePlaylist>,
) -> ApiResult<Json<PlaylistView>> {
    if let Some(items) = &request.items {
        check_items(&state, &caller, items)?;
    }
    state
        .write(Command::UpdatePlaylist {
            id,
            owner: caller.user.id,
            name: request.name,
            items: request.items,
            public: request.public,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let playlist = visible_playlist(&state, &caller, id)?;
    Ok(Json(view(&state, &caller, &playlist)?))
}

/// Deletes one of the caller's playlists.
#[utoipa::path(delete, path = "/api/v1/playlists/{id}", tag = "playlists", security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 204), (status = 404)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<StatusCode> {
    state
        .write(Command::DeletePlaylist {
            id,
            owner: caller.user.id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
