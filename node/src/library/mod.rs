//! Libraries: scanning folders into the catalog.
//!
//! - [`naming`]: the naming conventions of Jellyfin, Plex and Kodi.
//! - [`scan`]: planning a library's items from its folders.
//! - [`probe`]: ffprobe metadata, reused while files are unchanged.
//! - [`sidecar`]: Kodi NFO files and external subtitles beside media.
//! - [`books`]: EPUB metadata.
//! - [`run_scan`]: writing a plan through Raft, removing items whose files
//!   are gone.

pub mod books;
pub mod naming;
pub mod probe;
pub mod scan;
pub mod sidecar;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use omega_consensus::command::{Command, Response};
use omega_consensus::model::{Item, ItemKind, ItemWrite, Library, NodeId};
use omega_consensus::quic::QuicTransport;
use omega_consensus::state_machine::read;
use omega_consensus::{Cluster, Consistency};
use serde::Serialize;

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

/// Kinds whose files ffprobe describes.
fn probed(kind: ItemKind) -> bool {
    matches!(
        kind,
        ItemKind::Movie | ItemKind::Episode | ItemKind::Track | ItemKind::Audiobook
    )
}

/// Probes every planned media item in parallel, reusing the previous scan's
/// results for files whose size and mtime are unchanged. Items whose files
/// ffprobe cannot read are dropped from the plan and reported.
fn probe_all(plan: &mut scan::Plan, previous: &HashMap<String, Item>) {
    let items = std::mem::take(&mut plan.items);
    let workers = std::thread::available_parallelism()
        .map_or(2, |count| count.get() * 2)
        .min(16);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Probed>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let outcome = probe_item(item, previous.get(&item.key));
                    *results[index].lock().unwrap_or_else(|poison| poison.into_inner()) = Some(outcome);
                }
            });
        }
    });
    for result in results {
        if let Some((item, skipped)) = result.into_inner().unwrap_or_else(|poison| poison.into_inner()) {
            plan.items.extend(item);
            plan.skipped.extend(skipped);
        }
    }
}

/// The probed item (or `None` when no file of it is readable) and the files
/// skipped.
type Probed = (Option<ItemWrite>, Vec<scan::Skipped>);

fn probe_item(item: &ItemWrite, previous: Option<&Item>) -> Probed {
    let mut item = item.clone();
    if !probed(item.kind) || item.media.is_empty() {
        return (Some(item), Vec::new());
    }
    let stamps: Vec<String> = item
        .media
        .iter()
        .map(|media| {
            probe::mtime_ns(std::path::Path::new(&media.path))
                .map_or_else(String::new, |ns| format!("{}:{ns}", media.size))
        })
        .collect();
    let stamp = stamps.join(",");
    if let Some(previous) = previous
        && previous.fields.metadata.get("file_stamp") == Some(&stamp)
    {
        // Unchanged files: keep what was probed before, under what the
        // planner set now.
        let mut metadata = previous.fields.metadata.clone();
        metadata.extend(item.metadata);
        item.metadata = metadata;
        apply_tags(&mut item);
        return (Some(item), Vec::new());
    }
    let mut skipped = Vec::new();
    let mut total_ms = 0_u64;
    let mut first = None;
    let mut kept = Vec::new();
    for media in std::mem::take(&mut item.media) {
        match probe::probe(std::path::Path::new(&media.path)) {
            Ok(metadata) => {
                total_ms += metadata
                    .get("duration_ms")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .unwrap_or(0);
                first.get_or_insert(metadata);
                kept.push(media);
            }
            Err(reason) => skipped.push(scan::Skipped {
                path: media.path.clone(),
                reason,
            }),
        }
    }
    let Some(mut metadata) = first else {
        return (None, skipped);
    };
    if kept.len() > 1 {
        metadata.insert("duration_ms".into(), total_ms.to_string());
    }
    metadata.insert("file_stamp".into(), stamp);
    metadata.extend(std::mem::take(&mut item.metadata));
    item.metadata = metadata;
    apply_tags(&mut item);
    item.media = kept;
    // Unreadable parts of a book are reported; the readable ones stay.
    (Some(item), skipped)
}

/// A track's embedded title tag beats its file name.
fn apply_tags(item: &mut ItemWrite) {
    if item.kind == ItemKind::Track
        && let Some(title) = item.metadata.get("tag_title").filter(|title| !title.trim().is_empty())
    {
        item.title = title.trim().to_owned();
        item.sort_title = naming::sort_title(&item.title);
    }
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
}

/// Scans `library` (its folders are on this node) and writes the catalog.
pub async fn run_scan(
    cluster: &Cluster<QuicTransport>,
    library: Library,
    node: NodeId,
    probe_media: bool,
    clock: &dyn omega_consensus::clock::Clock,
) -> anyhow::Result<ScanReport> {
    let planned_library = library.clone();
    let previous: HashMap<String, Item> = read::library_items(cluster.tables(), library.id)?
        .into_iter()
        .map(|item| (item.fields.key.clone(), item))
        .collect();
    let plan = tokio::task::spawn_blocking(move || {
        let mut plan = scan::plan(&planned_library, node);
        if probe_media {
            probe_all(&mut plan, &previous);
        }
        plan
    })
    .await?;
    let seen: BTreeSet<String> = plan.items.iter().map(|item| item.key.clone()).collect();
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
    }
    cluster.read_barrier(Consistency::Linearizable).await?;
    let gone: Vec<String> = read::library_items(cluster.tables(), library.id)?
        .into_iter()
        .map(|item| item.fields.key)
        .filter(|key| !seen.contains(key))
        .collect();
    for batch in gone.chunks(BATCH) {
        cluster.write(Command::RemoveItems { keys: batch.to_vec() }).await?;
    }
    Ok(ScanReport {
        library: library.id,
        files: plan.files,
        items,
        removed: gone.len() as u64,
        skipped: plan.skipped,
    })
}
