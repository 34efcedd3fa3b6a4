//! Enriching a planned scan: ffprobe for audio and video, EXIF for photos,
//! artwork into the store, and media files indexed in place by the store.
//! Work is reused for files whose size and mtime are unchanged since the
//! previous scan, so a rescan of an unchanged library runs no tool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use omega_consensus::model::{Item, ItemKind, ItemWrite};
use omega_storage::Store;

use super::ScanTools;
use super::art::{self, Source};
use super::progress::{Phase, ScanProgress};
use super::{naming, photos, probe, scan};

/// Metadata entry holding the primary image's blob id (hex).
pub const IMAGE_PRIMARY: &str = "image_primary";
/// Metadata entry holding the stamps (size:mtime) of an item's files and art.
const FILE_STAMP: &str = "file_stamp";
/// Files indexed in place per store commit.
const INDEX_BATCH: usize = 256;

/// Kinds whose files ffprobe describes.
fn probed(kind: ItemKind) -> bool {
    matches!(
        kind,
        ItemKind::Movie | ItemKind::Episode | ItemKind::Track | ItemKind::Audiobook
    )
}

/// Enriches a plan: items whose files are unchanged since the previous
/// scan reuse what it found; new media files are indexed in place (so that
/// a moved file is recognised by its content and keeps its item); the rest
/// are probed in parallel. Albums without art take their first track's
/// cover. Returns the paths indexed in place by this scan.
pub fn enrich_all(
    plan: &mut scan::Plan,
    previous: &HashMap<String, Item>,
    tools: &ScanTools,
    progress: &ScanProgress,
) -> Vec<String> {
    let mut done = Vec::new();
    let mut pending = Vec::new();
    // Per pending item: whether it may be reused once indexed (its files
    // are unchanged; only its blob was missing).
    let mut recheck = Vec::new();
    for item in std::mem::take(&mut plan.items) {
        let art = plan.art.get(&item.key).map(PathBuf::as_path);
        match reuse(&item, previous.get(&item.key), art) {
            // A file the store could not index before is tried again.
            Some(reused) if tools.store.is_some() && reused.media.iter().any(|media| media.blob.is_none()) => {
                pending.push(reused);
                recheck.push(true);
            }
            Some(reused) => done.push(reused),
            None => {
                pending.push(item);
                recheck.push(false);
            }
        }
    }
    let indexed = match &tools.store {
        Some(store) => index_in_place(&mut pending, store, progress),
        None => Vec::new(),
    };
    for moved in keep_identity_by_content(&mut pending, &done, previous, &mut plan.art) {
        recheck[moved] = true;
    }
    let mut still_pending = Vec::new();
    for (item, recheck) in pending.into_iter().zip(recheck) {
        // Only an item that moved, or that only lacked its blob, can match
        // the previous scan now; the others are known to need probing.
        let art = plan.art.get(&item.key).map(PathBuf::as_path);
        match recheck.then(|| reuse(&item, previous.get(&item.key), art)).flatten() {
            Some(reused) => done.push(reused),
            None => still_pending.push(item),
        }
    }
    progress.start(Phase::Probing, still_pending.len());
    let workers = std::thread::available_parallelism()
        .map_or(2, |count| count.get() * 2)
        .min(16);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Enriched>>> = still_pending.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(still_pending.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = still_pending.get(index) else { break };
                    let art = plan.art.get(&item.key).map(PathBuf::as_path);
                    let outcome = enrich(item, art, tools);
                    *results[index].lock().unwrap_or_else(|poison| poison.into_inner()) = Some(outcome);
                    progress.advance(1);
                }
            });
        }
    });
    plan.items = done;
    for result in results {
        if let Some((item, skipped)) = result.into_inner().unwrap_or_else(|poison| poison.into_inner()) {
            plan.items.extend(item);
            plan.skipped.extend(skipped);
        }
    }
    // Parents were planned before their children; keep that order.
    plan.items.sort_by_key(|item| planned_order(item.kind));
    super::music::group_by_tags(&mut plan.items);
    inherit_album_art(&mut plan.items);
    indexed
}

/// Parents before children: the catalog resolves a parent key when the
/// child is written.
fn planned_order(kind: ItemKind) -> u8 {
    match kind {
        ItemKind::Series | ItemKind::Artist => 0,
        ItemKind::Season | ItemKind::Album => 1,
        _ => 2,
    }
}

/// A new file whose content is that of a previous item whose file is gone
/// moved: it keeps the old item's key, and so its id, watch state and
/// history. Returns the positions in `pending` of the items that moved.
fn keep_identity_by_content(
    pending: &mut [ItemWrite],
    done: &[ItemWrite],
    previous: &HashMap<String, Item>,
    art: &mut BTreeMap<String, PathBuf>,
) -> Vec<usize> {
    let planned: std::collections::BTreeSet<&str> = pending.iter().chain(done).map(|item| item.key.as_str()).collect();
    let mut gone_by_blob: HashMap<(ItemKind, [u8; 32]), String> = HashMap::new();
    for item in previous.values() {
        if planned.contains(item.fields.key.as_str()) || item.fields.media.len() != 1 {
            continue;
        }
        if let Some(blob) = item.fields.media[0].blob {
            gone_by_blob.insert((item.fields.kind, blob), item.fields.key.clone());
        }
    }
    let mut moved = Vec::new();
    for (position, item) in pending.iter_mut().enumerate() {
        if previous.contains_key(&item.key) || item.media.len() != 1 {
            continue;
        }
        if let Some(blob) = item.media[0].blob
            && let Some(old_key) = gone_by_blob.remove(&(item.kind, blob))
        {
            tracing::info!(from = %old_key, to = %item.key, "a moved file keeps its item");
            if let Some(folder_art) = art.remove(&item.key) {
                art.insert(old_key.clone(), folder_art);
            }
            item.key = old_key;
            moved.push(position);
        }
    }
    moved
}

/// The enriched item (or `None` when no file of it is readable) and the
/// files skipped.
type Enriched = (Option<ItemWrite>, Vec<scan::Skipped>);

/// `size:mtime` of a file, or empty when it cannot be read.
fn stamp(path: &Path, size: Option<u64>) -> String {
    let size = size.or_else(|| std::fs::metadata(path).ok().map(|metadata| metadata.len()));
    match (size, probe::mtime_ns(path)) {
        (Some(size), Some(ns)) => format!("{size}:{ns}"),
        _ => String::new(),
    }
}

/// The stamps of an item's files and art: `size:mtime` each.
fn file_stamp(item: &ItemWrite, art_file: Option<&Path>) -> String {
    let mut stamps: Vec<String> = item
        .media
        .iter()
        .map(|media| stamp(Path::new(&media.path), Some(media.size)))
        .collect();
    if let Some(art_file) = art_file {
        stamps.push(format!("art={}", stamp(art_file, None)));
    }
    stamps.join(",")
}

/// The planned item with what `previous` found, when its files (and art)
/// are unchanged: the stamps match (a moved file keeps its size and mtime).
fn reuse(planned: &ItemWrite, previous: Option<&Item>, art_file: Option<&Path>) -> Option<ItemWrite> {
    let previous = previous?;
    if previous.fields.metadata.get(FILE_STAMP) != Some(&file_stamp(planned, art_file)) {
        return None;
    }
    let mut item = planned.clone();
    let mut metadata = previous.fields.metadata.clone();
    metadata.extend(std::mem::take(&mut item.metadata));
    item.metadata = metadata;
    // Equal stamps mean the same files in the same order (a moved file
    // keeps its size and mtime).
    for (media, old) in item.media.iter_mut().zip(&previous.fields.media) {
        media.blob = media.blob.or(old.blob);
    }
    apply_tags(&mut item);
    Some(item)
}

fn enrich(planned: &ItemWrite, art_file: Option<&Path>, tools: &ScanTools) -> Enriched {
    let mut item = planned.clone();
    let file_stamp = file_stamp(&item, art_file);
    let mut skipped = Vec::new();
    if probed(item.kind) && tools.media_tools && !item.media.is_empty() {
        let mut total_ms = 0_u64;
        let mut first = None;
        let mut kept = Vec::new();
        for media in std::mem::take(&mut item.media) {
            match probe::probe(Path::new(&media.path)) {
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
        // Unreadable parts of a book are reported; the readable ones stay.
        let Some(mut metadata) = first else {
            return (None, skipped);
        };
        if kept.len() > 1 {
            metadata.insert("duration_ms".into(), total_ms.to_string());
        }
        metadata.extend(std::mem::take(&mut item.metadata));
        item.metadata = metadata;
        item.media = kept;
    }
    if item.kind == ItemKind::Photo
        && let Some(media) = item.media.first()
    {
        let exif = photos::read_exif(Path::new(&media.path));
        if let Some(year) = exif.get("taken_at").and_then(|taken| taken.get(..4)?.parse().ok()) {
            item.year = Some(year);
        }
        item.metadata.extend(exif);
    }
    if let Some(store) = &tools.store
        && let Some(source) = art_source(&item, art_file, tools.media_tools)
    {
        match make_art(&source, tools.media_tools) {
            Ok(bytes) => match store.ingest_bytes(&bytes, &art_reference(&item.key)) {
                Ok(report) => {
                    item.metadata.insert(IMAGE_PRIMARY.into(), report.blob.to_string());
                }
                Err(error) => tracing::warn!(item = %item.key, %error, "cannot store artwork"),
            },
            // Missing art is not a reason to skip the item.
            Err(reason) => tracing::debug!(item = %item.key, %reason, "no artwork"),
        }
    }
    item.metadata.insert(FILE_STAMP.into(), file_stamp);
    apply_tags(&mut item);
    (Some(item), skipped)
}

/// The store reference that keeps an item's art alive.
pub fn art_reference(key: &str) -> String {
    format!("art:{key}")
}

/// Where an item's art comes from: its folder image, else the photo itself,
/// an audio file's embedded cover, or a frame of a video.
fn art_source(item: &ItemWrite, art_file: Option<&Path>, media_tools: bool) -> Option<Source> {
    if let Some(art_file) = art_file {
        return Some(Source::Image(art_file.to_path_buf()));
    }
    let media = PathBuf::from(&item.media.first()?.path);
    match item.kind {
        ItemKind::Photo => Some(Source::Image(media)),
        ItemKind::Track | ItemKind::Audiobook if item.metadata.contains_key("embedded_art") => {
            Some(Source::Embedded(media))
        }
        ItemKind::Movie | ItemKind::Episode if media_tools && item.metadata.contains_key("video_codec") => {
            let duration = item.metadata.get("duration_ms").and_then(|ms| ms.parse().ok());
            Some(Source::Frame {
                path: media,
                at_ms: art::frame_time_ms(duration),
            })
        }
        _ => None,
    }
}

/// A thumbnail made by ffmpeg; without media tools, a JPEG or PNG folder
/// image is kept as it is.
fn make_art(source: &Source, media_tools: bool) -> Result<Vec<u8>, String> {
    if media_tools {
        return art::thumbnail(source);
    }
    match source {
        Source::Image(path)
            if naming::extension(&path.to_string_lossy())
                .is_some_and(|ext| matches!(ext.as_str(), "jpg" | "jpeg" | "png")) =>
        {
            let size = std::fs::metadata(path).map_err(|error| error.to_string())?.len();
            if size > 16 << 20 {
                return Err("image too large to keep without resizing".into());
            }
            std::fs::read(path).map_err(|error| error.to_string())
        }
        _ => Err("making thumbnails needs ffmpeg".into()),
    }
}

/// Indexes in place, through the store, every media file whose blob is not
/// known yet, in batches that share one index commit. Returns the paths
/// indexed.
fn index_in_place(items: &mut [ItemWrite], store: &Store, progress: &ScanProgress) -> Vec<String> {
    let pending: Vec<(usize, usize)> = items
        .iter()
        .enumerate()
        .flat_map(|(item, planned)| {
            planned
                .media
                .iter()
                .enumerate()
                .filter(|(_, media)| media.blob.is_none())
                .map(move |(media, _)| (item, media))
        })
        .collect();
    progress.start(Phase::Indexing, pending.len());
    let mut indexed = Vec::new();
    for batch in pending.chunks(INDEX_BATCH) {
        let paths: Vec<PathBuf> = batch
            .iter()
            .map(|&(item, media)| PathBuf::from(&items[item].media[media].path))
            .collect();
        let answers = store.index_in_place(&paths);
        for (&(item, media), answer) in batch.iter().zip(answers) {
            let media = &mut items[item].media[media];
            match answer {
                Ok(report) => {
                    media.blob = Some(*report.blob.as_bytes());
                    indexed.push(media.path.clone());
                }
                // The item stays in the catalog; only its content address
                // is missing until the next scan.
                Err(error) => tracing::debug!(path = %media.path, %error, "cannot index in place"),
            }
        }
        progress.advance(batch.len());
    }
    indexed
}

/// An album without folder art takes the cover of its first track that has
/// one.
fn inherit_album_art(items: &mut [ItemWrite]) {
    let mut track_art: BTreeMap<String, (Option<u32>, String)> = BTreeMap::new();
    for item in items.iter().filter(|item| item.kind == ItemKind::Track) {
        if let (Some(album), Some(image)) = (&item.parent_key, item.metadata.get(IMAGE_PRIMARY)) {
            let candidate = (item.index, image.clone());
            let entry = track_art.entry(album.clone()).or_insert_with(|| candidate.clone());
            if candidate.0 < entry.0 {
                *entry = candidate;
            }
        }
    }
    for album in items.iter_mut().filter(|item| item.kind == ItemKind::Album) {
        if !album.metadata.contains_key(IMAGE_PRIMARY)
            && let Some((_, image)) = track_art.get(&album.key)
        {
            album.metadata.insert(IMAGE_PRIMARY.into(), image.clone());
        }
    }
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
