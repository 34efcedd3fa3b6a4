//! Libraries: scanning folders into the catalog.
//!
//! - [`naming`]: the naming conventions of Jellyfin, Plex and Kodi.
//! - [`scan`]: planning a library's items from its folders.
//! - [`run_scan`]: writing a plan through Raft, removing items whose files
//!   are gone.

pub mod naming;
pub mod scan;

use std::collections::BTreeSet;

use omega_consensus::command::{Command, Response};
use omega_consensus::model::{Library, NodeId};
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

/// Items written per command.
const BATCH: usize = 1024;

/// What a scan did.
#[derive(Debug, Serialize)]
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
pub async fn run_scan(cluster: &Cluster<QuicTransport>, library: Library, node: NodeId) -> anyhow::Result<ScanReport> {
    let planned_library = library.clone();
    let plan = tokio::task::spawn_blocking(move || scan::plan(&planned_library, node)).await?;
    let seen: BTreeSet<String> = plan.items.iter().map(|item| item.key.clone()).collect();
    let mut items = 0;
    for batch in plan.items.chunks(BATCH) {
        match cluster
            .write(Command::UpsertItems {
                items: batch.to_vec(),
                now_ms: omega_consensus::clock::Clock::now_ms(&omega_consensus::clock::SystemClock),
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
