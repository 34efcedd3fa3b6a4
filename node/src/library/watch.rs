//! Watching library folders: a change under a library's folder marks it
//! dirty, and once its folders have been quiet for a while it is rescanned
//! (incrementally). The set of watched folders follows the catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

/// How often the watched set is compared with the catalog, and dirty
/// libraries checked for quiet.
const TICK: Duration = Duration::from_millis(250);
/// How often the watched folders are re-read from the catalog.
const RESYNC: Duration = Duration::from_secs(5);

/// Library folders as the catalog has them: (library id, folders).
pub type Folders = Vec<(u64, Vec<String>)>;

#[derive(Debug, Default)]
struct Shared {
    /// Watched roots and their library.
    roots: Vec<(PathBuf, u64)>,
    /// Libraries with changes, and when the last one came.
    dirty: BTreeMap<u64, Instant>,
}

/// Why the watcher asks for a rescan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Files changed under a watched folder, which has been quiet since.
    Changed,
    /// A folder that could not be watched (missing, unreadable) can be now.
    FolderBack,
}

/// Runs until the task is dropped: keeps watches on the folders `folders`
/// returns, and calls `rescan` for a library `quiet` after its last change
/// or when one of its folders comes back.
pub async fn run(
    folders: impl Fn() -> Folders + Send + 'static,
    rescan: impl Fn(u64, Why) + Send + 'static,
    quiet: Duration,
) -> notify::Result<()> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let events = shared.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let mut shared = events.lock().unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        let hits: Vec<u64> = event
            .paths
            .iter()
            .filter_map(|path| {
                shared
                    .roots
                    .iter()
                    .find(|(root, _)| path.starts_with(root))
                    .map(|(_, library)| *library)
            })
            .collect();
        for library in hits {
            shared.dirty.insert(library, now);
        }
    })?;
    let mut watched: BTreeMap<PathBuf, u64> = BTreeMap::new();
    // Folders that could not be watched (offline): tried again at every
    // resync, warned about once.
    let mut unwatchable: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    let mut last_sync: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        if last_sync.is_none_or(|at| at.elapsed() >= RESYNC) {
            last_sync = Some(Instant::now());
            let wanted: BTreeMap<PathBuf, u64> = folders()
                .into_iter()
                .flat_map(|(library, paths)| paths.into_iter().map(move |path| (PathBuf::from(path), library)))
                .collect();
            for path in watched.keys().filter(|path| !wanted.contains_key(*path)) {
                let _ = watcher.unwatch(path);
            }
            watched.retain(|path, _| wanted.contains_key(path));
            unwatchable.retain(|path| wanted.contains_key(path));
            for (path, library) in &wanted {
                if watched.contains_key(path) {
                    continue;
                }
                match watcher.watch(path, RecursiveMode::Recursive) {
                    Ok(()) => {
                        watched.insert(path.clone(), *library);
                        if unwatchable.remove(path) {
                            tracing::info!(path = %path.display(), "a library folder is back; rescanning");
                            rescan(*library, Why::FolderBack);
                        }
                    }
                    Err(error) => {
                        if unwatchable.insert(path.clone()) {
                            tracing::warn!(path = %path.display(), %error, "cannot watch a library folder");
                        }
                    }
                }
            }
            let mut shared = shared.lock().unwrap_or_else(|poison| poison.into_inner());
            shared.roots = watched.iter().map(|(path, library)| (path.clone(), *library)).collect();
        }
        let due: Vec<u64> = {
            let mut shared = shared.lock().unwrap_or_else(|poison| poison.into_inner());
            let due: Vec<u64> = shared
                .dirty
                .iter()
                .filter(|(_, last)| last.elapsed() >= quiet)
                .map(|(library, _)| *library)
                .collect();
            for library in &due {
                shared.dirty.remove(library);
            }
            due
        };
        for library in due {
            tracing::info!(library, "files changed; rescanning");
            rescan(library, Why::Changed);
        }
    }
}
