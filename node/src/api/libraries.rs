//! Libraries: list (what the caller may see), create and delete
//! (administrators), scan and scan status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use omega_consensus::command::{Command, Response};
use omega_consensus::model::{ItemKind, Library, LibraryAccess, LibraryKind};
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::extract::{Body, PathParam};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::events::Event;
use crate::library::progress::Phase;
use crate::library::scan::Skipped;
use crate::library::{ProgressView, ScanProgress, ScanReport, ScanTools, run_scan};

/// A library as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LibraryView {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `movies`, `shows`, `music`, `audiobooks`, `books` or `photos`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Folders (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// The node whose disk holds them.
    pub node: u64,
    /// True when the last scan on this node could not list one of its
    /// folders (missing, unmounted, unreadable): its items there are kept
    /// and come back when the folder does.
    pub offline: bool,
    /// Which folders, and why (administrators only, when offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline_folders: Option<Vec<Skipped>>,
}

/// The API name of a library kind.
pub fn kind_name(kind: LibraryKind) -> &'static str {
    match kind {
        LibraryKind::Movies => "movies",
        LibraryKind::Shows => "shows",
        LibraryKind::Music => "music",
        LibraryKind::Audiobooks => "audiobooks",
        LibraryKind::Books => "books",
        LibraryKind::Photos => "photos",
    }
}

/// The library kind of an API name.
pub fn parse_kind(name: &str) -> Option<LibraryKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "movies" | "movie" => LibraryKind::Movies,
        "shows" | "tv" | "series" => LibraryKind::Shows,
        "music" => LibraryKind::Music,
        "audiobooks" | "audiobook" => LibraryKind::Audiobooks,
        "books" | "book" => LibraryKind::Books,
        "photos" | "photo" => LibraryKind::Photos,
        _ => return None,
    })
}

fn view(library: &Library, admin: bool, scans: &Scans) -> LibraryView {
    let offline = scans.offline(library.id);
    LibraryView {
        id: library.id,
        name: library.name.clone(),
        kind: kind_name(library.kind),
        paths: admin.then(|| library.paths.clone()),
        node: library.node,
        offline: !offline.is_empty(),
        offline_folders: (admin && !offline.is_empty()).then_some(offline),
    }
}

/// True when `caller` may see library `id`.
pub fn can_see(caller: &Caller, id: u64) -> bool {
    match &caller.user.library_access {
        LibraryAccess::All => true,
        LibraryAccess::Only(ids) => ids.contains(&id),
    }
}

/// The libraries the caller may see.
#[utoipa::path(get, path = "/api/v1/libraries", tag = "libraries", security(("bearer" = [])), responses((status = 200, body = Vec<LibraryView>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<LibraryView>>> {
    let libraries = read::libraries(state.cluster.tables())?;
    Ok(Json(
        libraries
            .iter()
            .filter(|library| can_see(&caller, library.id))
            .map(|library| view(library, caller.is_admin(), &state.scans))
            .collect(),
    ))
}

/// `POST /api/v1/libraries`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewLibrary {
    /// Unique name: 1 to 128 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Kind of media.
    #[serde(rename = "type")]
    #[schema(pattern = "^(movies|shows|music|audiobooks|books|photos)$")]
    pub kind: String,
    /// Absolute folder paths on this node (1 to 64).
    #[schema(min_items = 1, max_items = 64)]
    pub paths: Vec<String>,
}

/// Probes the library's films and episodes on this node and lists their
/// keyframes, kept on disk by the transcoder ([`Phase::Analysing`]): a
/// player's first master playlist then waits for neither. One file at a
/// time; files analysed before cost a file read each.
async fn analyse_for_streaming(state: &AppState, library: u64, progress: &ScanProgress) {
    let Some(transcoder) = state.transcoder.clone() else {
        return;
    };
    let Ok(items) = read::library_items(state.cluster.tables(), library) else {
        return;
    };
    let videos: Vec<_> = items
        .into_iter()
        .filter(|item| matches!(item.fields.kind, ItemKind::Movie | ItemKind::Episode))
        .filter(|item| item.fields.media.iter().any(|media| media.node == state.cluster.id()))
        .collect();
    progress.start(Phase::Analysing, videos.len());
    for item in videos {
        let id = item.id;
        match super::hls::source_of(state, item).await {
            Ok(source) => {
                if let Err(error) = transcoder.analyse(&source.id, &source.path).await {
                    tracing::debug!(item = id, %error, "cannot analyse for streaming");
                }
            }
            Err(error) => tracing::debug!(item = id, ?error, "cannot analyse for streaming"),
        }
        progress.advance(1);
    }
}

/// Checks that every path is an absolute, readable folder.
pub fn check_paths(paths: &[String]) -> ApiResult<()> {
    if paths.is_empty() || paths.len() > 64 {
        return Err(ApiError::bad_request("a library has 1 to 64 folders"));
    }
    for path in paths {
        let as_path = std::path::Path::new(path);
        if !as_path.is_absolute() || path.contains('\0') {
            return Err(ApiError::bad_request(format!("{path:?} is not an absolute path")));
        }
        if std::fs::read_dir(as_path).is_err() {
            return Err(ApiError::bad_request(format!(
                "{path:?} is not a readable folder on this node"
            )));
        }
    }
    Ok(())
}

/// Creates a library on this node's disk and starts its first scan.
#[utoipa::path(post, path = "/api/v1/libraries", tags = ["libraries", "admin"], security(("bearer" = [])), request_body = NewLibrary, responses((status = 201, body = LibraryView), (status = 400), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(request): Body<NewLibrary>,
) -> ApiResult<(StatusCode, Json<LibraryView>)> {
    let kind = parse_kind(&request.kind)
        .ok_or_else(|| ApiError::bad_request("type is one of movies, shows, music, audiobooks, books, photos"))?;
    check_paths(&request.paths)?;
    let response = state
        .write(Command::CreateLibrary {
            name: request.name,
            kind,
            paths: request.paths,
            node: state.cluster.id(),
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let Response::Created(id) = response else {
        return Err(ApiError::internal(format!("unexpected answer {response:?}")));
    };
    let library =
        read::library(state.cluster.tables(), id)?.ok_or_else(|| ApiError::internal("the library vanished"))?;
    start_scan(&state, library.clone())?;
    Ok((StatusCode::CREATED, Json(view(&library, true, &state.scans))))
}

/// Deletes a library and its items.
#[utoipa::path(delete, path = "/api/v1/libraries/{id}", tags = ["libraries", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 204), (status = 404)))]
pub async fn remove(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(id): PathParam<u64>,
) -> ApiResult<StatusCode> {
    state.write(Command::DeleteLibrary { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a library's scan stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ScanStatus {
    /// No scan since this node started.
    Idle,
    /// Running.
    Running {
        /// Its phase and counts.
        progress: ProgressView,
    },
    /// Finished.
    Done {
        /// What it did.
        #[schema(value_type = ScanReport)]
        report: Arc<ScanReport>,
    },
    /// Failed.
    Failed {
        /// Why.
        error: String,
    },
}

#[derive(Debug)]
enum ScanSlot {
    Running {
        progress: Arc<ScanProgress>,
        /// Files changed while it ran: scan again when it ends.
        again: bool,
    },
    Ended(ScanStatus),
}

/// Scan states of the libraries this node scans.
#[derive(Debug, Default)]
pub struct Scans {
    states: Mutex<HashMap<u64, ScanSlot>>,
    /// Folders the last finished scan of each library could not list.
    offline: Mutex<HashMap<u64, Vec<Skipped>>>,
}

impl Scans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ScanSlot>> {
        self.states.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The folders of library `library` that its last scan could not list
    /// (empty when it is online or was never scanned here).
    pub fn offline(&self, library: u64) -> Vec<Skipped> {
        self.offline
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&library)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a scan of library `library` is running.
    pub fn is_running(&self, library: u64) -> bool {
        matches!(self.lock().get(&library), Some(ScanSlot::Running { .. }))
    }

    /// Records what a finished scan found offline, for the API and metrics.
    fn set_offline(&self, library: u64, folders: Vec<Skipped>) {
        metrics::gauge!("omega_library_offline", "library" => library.to_string()).set(if folders.is_empty() {
            0.0
        } else {
            1.0
        });
        self.offline
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(library, folders);
    }

    /// Where library `library`'s scan stands.
    pub fn get(&self, library: u64) -> ScanStatus {
        match self.lock().get(&library) {
            None => ScanStatus::Idle,
            Some(ScanSlot::Running { progress, .. }) => ScanStatus::Running {
                progress: progress.view(),
            },
            Some(ScanSlot::Ended(status)) => status.clone(),
        }
    }
}

/// Starts a scan of `library` in the background. If one runs, another
/// follows it (files changed while it ran).
pub fn start_scan(state: &AppState, library: Library) -> ApiResult<()> {
    if library.node != state.cluster.id() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("library {} is on node {}; scan it there", library.id, library.node),
        ));
    }
    let id = library.id;
    let events = state.events.clone();
    let progress = Arc::new(ScanProgress::new(Box::new(move |view: ProgressView| {
        events.publish(Event::ScanProgress {
            library: id,
            phase: view.phase,
            done: view.done,
            total: view.total,
        });
    })));
    {
        let mut states = state.scans.lock();
        if let Some(ScanSlot::Running { again, .. }) = states.get_mut(&id) {
            *again = true;
            return Ok(());
        }
        states.insert(
            id,
            ScanSlot::Running {
                progress: progress.clone(),
                again: false,
            },
        );
    }
    let state = state.clone();
    tokio::spawn(async move {
        let node = state.cluster.id();
        let tools = ScanTools {
            store: state.store.clone(),
            media_tools: state.probe_media,
        };
        let outcome = run_scan(
            &state.cluster,
            library,
            node,
            tools,
            state.clock.as_ref(),
            progress.clone(),
        )
        .await;
        let (status, event) = match outcome {
            Ok(report) => {
                tracing::info!(
                    library = id,
                    files = report.files,
                    items = report.items,
                    "scan finished"
                );
                for folder in &report.offline {
                    tracing::warn!(library = id, folder = %folder.path, reason = %folder.reason, "library folder offline; its items are kept");
                }
                state.scans.set_offline(id, report.offline.clone());
                analyse_for_streaming(&state, id, &progress).await;
                let event = Event::ScanFinished {
                    library: id,
                    items: report.items,
                    removed: report.removed,
                    skipped: report.skipped.len() as u64,
                    offline: report.offline.len() as u64,
                    error: None,
                };
                (
                    ScanStatus::Done {
                        report: Arc::new(report),
                    },
                    event,
                )
            }
            Err(error) => {
                tracing::warn!(library = id, %error, "scan failed");
                let error = crate::cli::one_line(&error);
                let event = Event::ScanFinished {
                    library: id,
                    items: 0,
                    removed: 0,
                    skipped: 0,
                    offline: 0,
                    error: Some(error.clone()),
                };
                (ScanStatus::Failed { error }, event)
            }
        };
        let again = {
            let mut states = state.scans.lock();
            let again = matches!(states.get(&id), Some(ScanSlot::Running { again: true, .. }));
            states.insert(id, ScanSlot::Ended(status));
            again
        };
        state.events.publish(event);
        if again
            && let Ok(Some(library)) = read::library(state.cluster.tables(), id)
            && let Err(error) = start_scan(&state, library)
        {
            tracing::warn!(library = id, ?error, "cannot rescan");
        }
    });
    Ok(())
}

/// Starts a scan (administrators).
#[utoipa::path(post, path = "/api/v1/libraries/{id}/scan", tags = ["libraries", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 202, body = ScanStatus), (status = 404)))]
pub async fn scan(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(id): PathParam<u64>,
) -> ApiResult<(StatusCode, Json<ScanStatus>)> {
    let library = read::library(state.cluster.tables(), id)?.ok_or_else(|| ApiError::not_found("no such library"))?;
    start_scan(&state, library)?;
    Ok((StatusCode::ACCEPTED, Json(state.scans.get(id))))
}

/// Where the library's scan stands.
#[utoipa::path(get, path = "/api/v1/libraries/{id}/scan", tags = ["libraries", "library-scoped"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = ScanStatus), (status = 404)))]
pub async fn scan_status(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<ScanStatus>> {
    if !can_see(&caller, id) || read::library(state.cluster.tables(), id)?.is_none() {
        return Err(ApiError::not_found("no such library"));
    }
    Ok(Json(state.scans.get(id)))
}
