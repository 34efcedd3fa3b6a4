//! Libraries: scanning folders into the catalog.
//!
//! - [`naming`]: the naming conventions of Jellyfin, Plex and Kodi.
//! - [`scan`]: planning a library's items from its folders.
//! - [`probe`]: ffprobe metadata, reused while files are unchanged.
//! - [`sidecar`]: Kodi NFO files and external subtitles beside media.
//! - [`books`]: EPUB, PDF and CBZ metadata.
//! - [`photos`]: EXIF metadata of photos.
//! - [`art`]: posters, covers and thumbnails.
//! - [`enrich`]: probing, EXIF, art and in-place indexing of a plan.
//! - [`music`]: albums and artists from tags.
//! - [`progress`]: a scan's phase and counts.
//! - [`watch`]: rescans when files change.
//! - [`run_scan`]: writing a plan through Raft, keeping the identity of
//!   moved files and removing items whose files are gone.

pub mod art;
pub mod books;
pub mod enrich;
pub mod music;
pub mod naming;
pub mod photos;
pub mod probe;
pub mod progress;
pub mod scan;
pub mod sidecar;
pub mod subprocess;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use omega_consensus::command::{Command, Response};
use omega_consensus::model::{Item, Library, NodeId};
use omega_consensus::quic::QuicTransport;
use omega_consensus::state_machine::read;
use omega_consensus::{Cluster, Consistency};
use omega_storage::Store;
use serde::Serialize;

pub use progress::{Phase, ProgressView, ScanProgress};

/// Guesses a folder's library kind from the files in it: books, photos,
/// audiobooks (`.m4b` or folders of many parts), music, shows (episode
/// names), else movies. `None` when it holds no media.
pub fn detect_kind(folder: &std::path::Path) -> Option<omega_consensus::model::LibraryKind> {
    use omega_consensus::model::LibraryKind;
    let (mut video, mut episodes, mut audio, mut m4b, mut books, mut images) = (0, 0, 0, 0, 0, 0);
    let files = walkdir::WalkDir::new(folder)
        .follow_links(false)
        .max_depth(6)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .take(2000);
    for entry in files {
        let name = entry.file_name().to_string_lossy();
        let Some(extension) = naming::extension(&name) else {
            continue;
        };
        if naming::VIDEO.contains(&extension.as_str()) {
            video += 1;
            if naming::episode_numbers(naming::stem(&name)).is_some() {
                episodes += 1;
            }
        } else if naming::AUDIO.contains(&extension.as_str()) {
            audio += 1;
            if extension == "m4b" {
                m4b += 1;
            }
        } else if naming::BOOK.contains(&extension.as_str()) {
            books += 1;
        } else if naming::IMAGE.contains(&extension.as_str()) {
            images += 1;
        }
    }
    let most = [video, audio, books, images].into_iter().max().unwrap_or(0);
    if most == 0 {
        return None;
    }
    Some(if video == most {
        if episodes * 2 > video {
            LibraryKind::Shows
        } else {
            LibraryKind::Movies
        }
    } else if audio == most {
        if m4b > 0 {
            LibraryKind::Audiobooks
        } else {
            LibraryKind::Music
        }
    } else if books == most {
        LibraryKind::Books
    } else {
        LibraryKind::Photos
    })
}

/// Items written per command.
const BATCH: usize = 1024;

/// What a scan did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScanReport {
    /// The library.
    pub library: u64,
    /// Media files seen.
    pub files: u64,
    /// Items written (added or updated).
    pub items: u64,
    /// Items removed because their files are gone.
    pub removed: u64,
    /// Entries skipped, with why.
    pub skipped: Vec<scan::Skipped>,
    /// Library folders that could not be listed, or came back empty while
    /// the catalog holds items under them: the library is offline there and
    /// those items were kept.
    pub offline: Vec<scan::Skipped>,
    /// Items kept although the scan did not see them, because their folder
    /// could not be listed completely.
    pub kept_unseen: u64,
}

/// What a scan runs with.
#[derive(Debug, Clone)]
pub struct ScanTools {
    /// The node's store: art and the in-place index go there.
    pub store: Option<Arc<Store>>,
    /// Run ffprobe and ffmpeg.
    pub media_tools: bool,
}

/// Scans `library` (its folders are on this node) and writes the catalog.
pub async fn run_scan(
    cluster: &Cluster<QuicTransport>,
    library: Library,
    node: NodeId,
    tools: ScanTools,
    clock: &dyn omega_consensus::clock::Clock,
    progress: Arc<ScanProgress>,
) -> anyhow::Result<ScanReport> {
    let planned_library = library.clone();
    let previous: HashMap<String, Item> = read::library_items(cluster.tables(), library.id)?
        .into_iter()
        .map(|item| (item.fields.key.clone(), item))
        .collect();
    let enrich_tools = tools.clone();
    let enrich_progress = progress.clone();
    let (mut plan, previous, indexed) = tokio::task::spawn_blocking(move || {
        enrich_progress.start(Phase::Walking, 0);
        let mut plan = scan::plan(&planned_library, node);
        keep_identity_by_path(&mut plan, &previous);
        let indexed = enrich::enrich_all(&mut plan, &previous, &enrich_tools, &enrich_progress);
        (plan, previous, indexed)
    })
    .await?;
    let seen: BTreeSet<String> = plan.items.iter().map(|item| item.key.clone()).collect();
    progress.start(Phase::Writing, plan.items.len());
    let mut items = 0;
    for batch in plan.items.chunks(BATCH) {
        match cluster
            .write(Command::UpsertItems {
                items: batch.to_vec(),
                now_ms: clock.now_ms(),
            })
            .await?
        {
            Response::Items(ids) => items += ids.len() as u64,
            Response::Rejected(rejection) => anyhow::bail!("the catalog refused the scan: {rejection}"),
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
        progress.advance(batch.len());
    }
    cluster.read_barrier(Consistency::Linearizable).await?;
    let current = read::library_items(cluster.tables(), library.id)?;
    let offline = offline_roots(&mut plan, &current);
    let unlisted: Vec<&str> = offline
        .iter()
        .map(|root| root.path.as_str())
        .chain(plan.incomplete.iter().map(String::as_str))
        .collect();
    let kept = kept_unseen(&current, &seen, &unlisted);
    let (kept_items, gone): (Vec<Item>, Vec<Item>) = current
        .into_iter()
        .filter(|item| !seen.contains(&item.fields.key))
        .partition(|item| kept.contains(&item.fields.key));
    let gone_keys: Vec<String> = gone.iter().map(|item| item.fields.key.clone()).collect();
    for batch in gone_keys.chunks(BATCH) {
        cluster.write(Command::RemoveItems { keys: batch.to_vec() }).await?;
    }
    if let Some(store) = &tools.store {
        let kept_paths: BTreeSet<&str> = plan
            .items
            .iter()
            .flat_map(|item| item.media.iter().map(|media| media.path.as_str()))
            .chain(
                kept_items
                    .iter()
                    .flat_map(|item| item.fields.media.iter().map(|media| media.path.as_str())),
            )
            .collect();
        release_references(store, &gone, &previous, &indexed, &kept_paths);
    }
    Ok(ScanReport {
        library: library.id,
        files: plan.files,
        items,
        removed: gone.len() as u64,
        skipped: plan.skipped,
        offline,
        kept_unseen: kept_items.len() as u64,
    })
}

/// The library folders to treat as offline: those that could not be listed,
/// and those that came back empty while the catalog holds items under them
/// (an unmounted mount point, a NAS share that is not there). A folder that
/// is really emptied keeps its items until it holds files again or the
/// library is removed, as Jellyfin does; losing watch state is worse.
fn offline_roots(plan: &mut scan::Plan, current: &[Item]) -> Vec<scan::Skipped> {
    let mut offline = std::mem::take(&mut plan.offline);
    for root in std::mem::take(&mut plan.empty_roots) {
        let known = current
            .iter()
            .any(|item| item.fields.media.iter().any(|media| scan::is_under(&media.path, &root)));
        if known {
            offline.push(scan::Skipped {
                path: root,
                reason: "the folder is empty but the library has items there (not mounted?)".to_owned(),
            });
        }
    }
    offline
}

/// Keys of items the scan did not see but must keep: those with a file
/// under a folder that was not listed completely, and their parents (a
/// season and series stay while an episode of theirs does).
fn kept_unseen(current: &[Item], seen: &BTreeSet<String>, unlisted: &[&str]) -> BTreeSet<String> {
    let parent_of: HashMap<&str, &str> = current
        .iter()
        .filter_map(|item| Some((item.fields.key.as_str(), item.fields.parent_key.as_deref()?)))
        .collect();
    let mut kept = BTreeSet::new();
    for item in current {
        let unlisted_file = item
            .fields
            .media
            .iter()
            .any(|media| unlisted.iter().any(|folder| scan::is_under(&media.path, folder)));
        if !unlisted_file {
            continue;
        }
        let mut key = Some(item.fields.key.as_str());
        // Bounded by the depth of the item tree (series → season → episode).
        while let Some(current_key) = key {
            if seen.contains(current_key) || !kept.insert(current_key.to_owned()) {
                break;
            }
            key = parent_of.get(current_key).copied();
        }
    }
    kept
}

/// A file item whose path the previous scan knew under another key (it was
/// matched by content before) keeps that key, and so its id and watch state.
fn keep_identity_by_path(plan: &mut scan::Plan, previous: &HashMap<String, Item>) {
    let by_path: HashMap<&str, &str> = previous
        .values()
        .filter_map(|item| Some((item.fields.media.first()?.path.as_str(), item.fields.key.as_str())))
        .collect();
    let planned: BTreeSet<String> = plan.items.iter().map(|item| item.key.clone()).collect();
    for item in &mut plan.items {
        if previous.contains_key(&item.key) || !item.key.starts_with("file:") {
            continue;
        }
        // An old key a new file at the old path now uses stays with it.
        if let Some(old_key) = item
            .media
            .first()
            .and_then(|media| by_path.get(media.path.as_str()))
            .filter(|old_key| !planned.contains(**old_key))
        {
            let art = plan.art.remove(&item.key);
            item.key = (*old_key).to_owned();
            if let Some(art) = art {
                plan.art.insert(item.key.clone(), art);
            }
        }
    }
}

/// Drops store references nothing in the catalog uses any more: the art
/// of removed items, and the in-place entries of files that are gone or
/// were skipped.
fn release_references(
    store: &Store,
    gone: &[Item],
    previous: &HashMap<String, Item>,
    indexed: &[String],
    kept_paths: &BTreeSet<&str>,
) {
    let known_paths: BTreeSet<&str> = previous
        .values()
        .flat_map(|item| item.fields.media.iter().map(|media| media.path.as_str()))
        .chain(indexed.iter().map(String::as_str))
        .collect();
    let references = gone
        .iter()
        .map(|item| enrich::art_reference(&item.fields.key))
        .chain(known_paths.difference(kept_paths).map(|path| format!("inplace:{path}")));
    for reference in references {
        if let Err(error) = store.remove_reference(&reference) {
            tracing::warn!(%reference, %error, "cannot release a store reference");
        }
    }
}

#[cfg(test)]
mod tests {
    use omega_consensus::model::{ItemKind, MediaRef};

    use super::*;

    fn item(id: u64, key: &str, kind: ItemKind, parent: Option<&str>, path: Option<&str>) -> Item {
        let mut fields = scan::new_item(1, key.to_owned(), kind, parent.map(str::to_owned), key.to_owned());
        fields.media = path
            .map(|path| MediaRef {
                node: 1,
                path: path.to_owned(),
                blob: None,
                size: 1,
            })
            .into_iter()
            .collect();
        Item {
            id,
            parent: None,
            added_ms: 0,
            updated_ms: 0,
            fields,
        }
    }

    #[test]
    fn unseen_items_under_unlisted_folders_stay_with_their_parents() {
        let current = vec![
            item(1, "series:1:night", ItemKind::Series, None, None),
            item(
                2,
                "series:1:night/season:1",
                ItemKind::Season,
                Some("series:1:night"),
                None,
            ),
            item(
                3,
                "file:/tv/Night/S01E01.mkv",
                ItemKind::Episode,
                Some("series:1:night/season:1"),
                Some("/tv/Night/S01E01.mkv"),
            ),
            item(4, "file:/tv2/Gone.mkv", ItemKind::Episode, None, Some("/tv2/Gone.mkv")),
        ];
        let seen = BTreeSet::new();
        let kept = kept_unseen(&current, &seen, &["/tv"]);
        let expected: BTreeSet<String> = ["series:1:night", "series:1:night/season:1", "file:/tv/Night/S01E01.mkv"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        // `/tv2` is not below `/tv`: its item goes.
        assert_eq!(kept, expected);
        // A parent the scan saw is not kept again (and its chain stops).
        let seen: BTreeSet<String> = ["series:1:night/season:1".to_owned()].into();
        assert_eq!(kept_unseen(&current, &seen, &["/tv"]).len(), 1);
    }

    #[test]
    fn an_empty_root_is_offline_only_while_the_catalog_has_items_there() {
        let current = vec![item(
            1,
            "file:/movies/a.mkv",
            ItemKind::Movie,
            None,
            Some("/movies/a.mkv"),
        )];
        let mut plan = scan::Plan {
            empty_roots: vec!["/movies".into(), "/new".into()],
            ..scan::Plan::default()
        };
        let offline = offline_roots(&mut plan, &current);
        assert_eq!(offline.len(), 1);
        assert_eq!(offline[0].path, "/movies");
    }

    #[test]
    fn a_missing_root_is_offline_and_planned_without_items() {
        let library = Library {
            id: 1,
            name: "Movies".into(),
            kind: omega_consensus::model::LibraryKind::Movies,
            paths: vec!["/no/such/folder/anywhere".into()],
            node: 1,
            created_ms: 0,
        };
        let plan = scan::plan(&library, 1);
        assert!(plan.items.is_empty());
        assert_eq!(plan.offline.len(), 1, "{:?}", plan.offline);
        assert!(plan.offline[0].reason.contains("cannot reach"), "{:?}", plan.offline);
    }
}
