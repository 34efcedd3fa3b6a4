//! Checked files: which chunks of a file, as it is now, were read and found
//! to hold their blob's bytes. A server that sends a file's bytes straight
//! from the kernel (`sendfile`) never sees them; it asks here first, and
//! only a chunk not checked before for this file costs a read and a hash.
//!
//! A file is known by its identity (device, inode, size, modification and
//! change time): a file written to or replaced gets a new identity, so
//! every chunk of it is checked again. A chunk that no longer matches
//! forgets the whole file and answers [`StoreError::FileChanged`].
//!
//! Stored blobs (kept segments, relayed files) are served the same way from
//! their hot pack files: each chunk is checked at its place in its pack
//! once ([`Store::blob_file_spans`]). Packs are written once and chunks
//! move only to new packs, so a place checked stays good until the disk
//! itself fails, which scrub finds.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Store;
use crate::error::{Result, StoreError};
use crate::ids::{BlobId, ChunkId, PackId};
use crate::index::Family;
use crate::records::{BlobRecord, ChunkRecord, PackRecord, Tier};

/// Files whose checks are remembered; past this, one is forgotten for each
/// new one (a forgotten file is checked again when next served).
const FILES_MAX: usize = 4096;
/// Manifest entries held for remembered files, in all (about 50 bytes
/// each): files are forgotten until a new one fits.
const ENTRIES_MAX: usize = 1 << 20;

/// Stored chunks whose place was checked; past this, one is forgotten for
/// each new one.
const PLACES_MAX: usize = 65_536;

/// Bytes of a blob lying in a file, to be sent without reading them.
#[derive(Debug, Clone)]
pub struct FileSpan {
    /// The file (a hot pack), open.
    pub file: Arc<File>,
    /// Where the bytes start in it.
    pub offset: u64,
    /// How many.
    pub len: u64,
}

/// A stored chunk at its place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Place {
    chunk: ChunkId,
    pack: PackId,
    offset: u64,
}

/// A file as it is now, and the blob it is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileIdentity {
    blob: BlobId,
    device: u64,
    inode: u64,
    size: u64,
    mtime_ns: i128,
    /// Set by the kernel on every change, and unlike the modification
    /// time not settable by programs (a tag editor that keeps mtime).
    ctime_ns: i128,
}

/// One file's manifest and which of its chunks were found good.
#[derive(Debug)]
struct CheckedFile {
    record: BlobRecord,
    /// One bit per manifest entry.
    good: Mutex<Vec<u64>>,
    /// A chunk was found changed: nothing of this file is good any more,
    /// also for bodies that hold it already.
    changed: std::sync::atomic::AtomicBool,
}

impl CheckedFile {
    fn new(record: BlobRecord) -> CheckedFile {
        let words = record.chunks.len().div_ceil(64);
        CheckedFile {
            record,
            good: Mutex::new(vec![0; words]),
            changed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn good(&self) -> MutexGuard<'_, Vec<u64>> {
        self.good.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The remembered checks of a store (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct FileChecks {
    files: Mutex<RememberedFiles>,
    places: Mutex<std::collections::HashSet<Place>>,
}

/// The remembered files and the manifest entries they hold.
#[derive(Debug, Default)]
struct RememberedFiles {
    by_identity: HashMap<FileIdentity, Arc<CheckedFile>>,
    entries: usize,
}

impl RememberedFiles {
    fn remove(&mut self, identity: &FileIdentity) {
        if let Some(gone) = self.by_identity.remove(identity) {
            self.entries -= gone.record.chunks.len();
        }
    }

    /// Remembers `checked`, forgetting others until it fits the bounds.
    fn insert(&mut self, identity: FileIdentity, checked: Arc<CheckedFile>) {
        let entries = checked.record.chunks.len();
        while self.by_identity.len() >= FILES_MAX || (self.entries + entries > ENTRIES_MAX && self.entries > 0) {
            let Some(forgotten) = self.by_identity.keys().next().copied() else {
                break;
            };
            self.remove(&forgotten);
        }
        self.remove(&identity);
        self.by_identity.insert(identity, checked);
        self.entries += entries;
        debug_assert!(self.by_identity.len() <= FILES_MAX);
    }
}

impl FileChecks {
    fn files(&self) -> MutexGuard<'_, RememberedFiles> {
        self.files.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Forgets `identity`'s checks.
    fn forget(&self, identity: &FileIdentity) {
        self.files().remove(identity);
    }

    fn places(&self) -> MutexGuard<'_, std::collections::HashSet<Place>> {
        self.places.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The checks of one open file as one blob, its identity read once (see
/// [`Store::file_checks`]).
#[derive(Debug, Clone)]
pub struct FileCheck {
    identity: FileIdentity,
    checked: Arc<CheckedFile>,
    path: std::path::PathBuf,
}

impl FileCheck {
    /// The manifest entries that bytes `start..end` touch, by index; an
    /// error outside the blob.
    fn entries(&self, start: u64, end: u64) -> Result<std::ops::Range<usize>> {
        let record = &self.checked.record;
        super::read::check_range(&self.identity.blob, record, start, end)?;
        if start == end {
            return Ok(0..0);
        }
        let first = record.entry_at(start);
        let last = record.entry_at(end - 1);
        Ok(first..last + 1)
    }

    /// Whether every chunk of bytes `start..end` was found good before.
    /// Never reads: a look at a bitmap.
    pub fn is_checked(&self, start: u64, end: u64) -> bool {
        let Ok(entries) = self.entries(start, end) else {
            return false;
        };
        if self.checked.changed.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let good = self.checked.good();
        entries
            .into_iter()
            .all(|index| good[index / 64] & (1 << (index % 64)) != 0)
    }

    /// Checks bytes `start..end` of `file` (the file this check was made
    /// for), reading and hashing each chunk not found good before.
    /// Blocking.
    pub fn check(&self, store: &Store, file: &File, start: u64, end: u64) -> Result<()> {
        let blob = self.identity.blob;
        let changed = || StoreError::FileChanged {
            blob,
            path: self.path.clone(),
        };
        if self.checked.changed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(changed());
        }
        for index in self.entries(start, end)? {
            let (word, bit) = (index / 64, 1_u64 << (index % 64));
            if self.checked.good()[word] & bit != 0 {
                continue;
            }
            let entry = &self.checked.record.chunks[index];
            let mut bytes = vec![0_u8; entry.len as usize];
            let read = file.read_exact_at(&mut bytes, entry.offset);
            if read.is_err() || ChunkId::of(&bytes) != entry.chunk {
                tracing::warn!(%blob, path = %self.path.display(), offset = entry.offset, "file no longer matches its index");
                self.checked.changed.store(true, std::sync::atomic::Ordering::Release);
                store.checks.forget(&self.identity);
                return Err(changed());
            }
            self.checked.good()[word] |= bit;
        }
        Ok(())
    }
}

impl Store {
    /// The checks of `file` (opened from `path`) as bytes of `blob`, kept
    /// for this version of the file: its identity is read now. A file whose
    /// size is not the blob's is [`StoreError::FileChanged`] at once. Each
    /// chunk is then read and hashed the first time [`FileCheck::check`]
    /// meets it only, so a server may send checked ranges without reading
    /// them (zero-copy).
    pub fn file_checks(&self, blob: &BlobId, file: &File, path: &Path) -> Result<FileCheck> {
        let metadata = file.metadata().map_err(|error| StoreError::io("stat", path, error))?;
        let identity = FileIdentity {
            blob: *blob,
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
            ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec()),
        };
        let checked = self.checked_file(identity, path)?;
        Ok(FileCheck {
            identity,
            checked,
            path: path.to_path_buf(),
        })
    }

    /// The remembered checks of `identity`, started (with its blob's
    /// manifest) if there are none.
    fn checked_file(&self, identity: FileIdentity, path: &Path) -> Result<Arc<CheckedFile>> {
        if let Some(checked) = self.checks.files().by_identity.get(&identity) {
            return Ok(Arc::clone(checked));
        }
        let record = self.blob(&identity.blob)?;
        if record.size != identity.size {
            return Err(StoreError::FileChanged {
                blob: identity.blob,
                path: path.to_path_buf(),
            });
        }
        let checked = Arc::new(CheckedFile::new(record));
        self.checks.files().insert(identity, Arc::clone(&checked));
        Ok(checked)
    }
}

impl Store {
    /// Where bytes `start..end` of `blob` lie in hot pack files, adjacent
    /// chunks merged into one span, each chunk checked against its hash the
    /// first time its place is asked for. `None` when some chunk has no hot
    /// copy in a pack file (cold, in place only, quarantined, or packs that
    /// are not files): the caller reads the blob instead, which handles
    /// every case. Blocking.
    pub fn blob_file_spans(&self, blob: &BlobId, start: u64, end: u64) -> Result<Option<Vec<FileSpan>>> {
        let record = self.blob(blob)?;
        super::read::check_range(blob, &record, start, end)?;
        if start == end {
            return Ok(Some(Vec::new()));
        }
        let mut spans: Vec<(PackId, FileSpan)> = Vec::new();
        for entry in &record.chunks[record.entry_at(start)..] {
            if entry.offset >= end {
                break;
            }
            let Some((pack, file, offset)) = self.checked_place(&entry.chunk)? else {
                return Ok(None);
            };
            // The part of this chunk inside start..end.
            let skip = start.saturating_sub(entry.offset);
            let take = (end.min(entry.offset + u64::from(entry.len)) - entry.offset) - skip;
            let from = offset + skip;
            match spans.last_mut() {
                Some((last_pack, last)) if *last_pack == pack && last.offset + last.len == from => last.len += take,
                _ => spans.push((
                    pack,
                    FileSpan {
                        file,
                        offset: from,
                        len: take,
                    },
                )),
            }
        }
        debug_assert_eq!(spans.iter().map(|(_, span)| span.len).sum::<u64>(), end - start);
        Ok(Some(spans.into_iter().map(|(_, span)| span).collect()))
    }

    /// The hot pack file and offset of `chunk`, checked once per place;
    /// `None` when it has no good hot copy in a file.
    fn checked_place(&self, chunk: &ChunkId) -> Result<Option<(PackId, Arc<File>, u64)>> {
        let Some(record) = self.index.get::<ChunkRecord>(Family::Chunks, chunk.as_bytes())? else {
            return Ok(None);
        };
        if self.index.get_raw(Family::Quarantine, chunk.as_bytes())?.is_some() {
            return Ok(None);
        }
        let pack = self.index.get::<PackRecord>(Family::Packs, &record.pack.key())?;
        if pack.is_none_or(|pack| pack.tier != Tier::Hot) {
            return Ok(None);
        }
        let Some(Ok(file)) = self.hot.file(record.pack) else {
            return Ok(None);
        };
        let place = Place {
            chunk: *chunk,
            pack: record.pack,
            offset: record.offset,
        };
        if !self.checks.places().contains(&place) {
            let mut bytes = vec![0_u8; record.len as usize];
            if file.read_exact_at(&mut bytes, record.offset).is_err() || ChunkId::of(&bytes) != *chunk {
                // The read path finds, names and quarantines it.
                return Ok(None);
            }
            let mut places = self.checks.places();
            if places.len() >= PLACES_MAX
                && let Some(forgotten) = places.iter().next().copied()
            {
                places.remove(&forgotten);
            }
            places.insert(place);
        }
        self.lock_policy().record_access(record.pack, chunk);
        Ok(Some((record.pack, file, record.offset)))
    }
}
