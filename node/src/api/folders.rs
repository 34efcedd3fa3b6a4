//! `GET /api/v1/folders`: the folders on this node's disk, for choosing a
//! library's folders in the web app (administrators only, as in Jellyfin's
//! directory browser).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::extract::QueryParams;
use super::{ApiError, ApiResult, AppState};

/// Folders listed at most.
const FOLDERS_MAX: usize = 2000;

/// `GET /api/v1/folders` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FoldersQuery {
    /// An absolute folder (default `/`).
    #[param(pattern = "^/")]
    pub path: Option<String>,
}

/// A folder.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Folder {
    /// Its name.
    pub name: String,
    /// Its absolute path.
    pub path: String,
}

/// A folder's sub-folders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FolderListing {
    /// The folder listed (resolved: no `..`, no symlinks).
    pub path: String,
    /// Its parent, if it has one.
    pub parent: Option<String>,
    /// Its sub-folders by name (hidden ones left out).
    pub folders: Vec<Folder>,
    /// True when there were more than could be listed.
    pub truncated: bool,
}

/// Lists the sub-folders of a folder on this node.
#[utoipa::path(get, path = "/api/v1/folders", tags = ["libraries", "admin"], security(("bearer" = [])), params(FoldersQuery), responses((status = 200, body = FolderListing), (status = 400), (status = 403, description = "The folder cannot be read"), (status = 404, description = "No such folder on this node")))]
pub async fn list(
    State(_state): State<AppState>,
    _admin: Admin,
    QueryParams(query): QueryParams<FoldersQuery>,
) -> ApiResult<Json<FolderListing>> {
    let requested = query.path.unwrap_or_else(|| "/".into());
    if !requested.starts_with('/') || requested.contains('\0') {
        return Err(ApiError::bad_request(format!("{requested:?} is not an absolute path")));
    }
    let listing = tokio::task::spawn_blocking(move || -> ApiResult<FolderListing> {
        let unlistable = |path: &std::path::Path, error: std::io::Error| {
            let message = format!("{}: {error}", path.display());
            match error.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => ApiError::not_found(message),
                std::io::ErrorKind::PermissionDenied => ApiError::forbidden(message),
                _ => ApiError::bad_request(message),
            }
        };
        let path = std::fs::canonicalize(&requested).map_err(|error| unlistable(requested.as_ref(), error))?;
        let entries = std::fs::read_dir(&path).map_err(|error| unlistable(&path, error))?;
        let mut folders = Vec::new();
        let mut truncated = false;
        for entry in entries.filter_map(Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            if folders.len() == FOLDERS_MAX {
                truncated = true;
                break;
            }
            folders.push(Folder {
                path: entry.path().to_string_lossy().into_owned(),
                name,
            });
        }
        folders.sort_by_key(|folder| folder.name.to_lowercase());
        Ok(FolderListing {
            parent: path.parent().map(|parent| parent.to_string_lossy().into_owned()),
            path: path.to_string_lossy().into_owned(),
            folders,
            truncated,
        })
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(listing))
}
