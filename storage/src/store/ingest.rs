//! Ingest: a file or a byte string becomes a blob.
//!
//! A file is read twice. The first pass hashes it whole, so that a blob the
//! store already has costs one hash and no chunking. The second pass cuts it
//! into chunks, hashes them in parallel, writes the new ones (stored mode)
//! and hashes the whole again: if the two whole hashes or the file's size and
//! modification time differ, the file changed underneath and nothing is
//! indexed. Order of durability: chunk bytes synced, then the index batch
//! with a synced WAL, then the caller is told.
//!
//! The first pass looks the blob up without the writer lock; gc may collect
//! it before the reference is written, so the commit looks again under the
//! lock and, if it is gone, the ingest takes the full path.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::{PackTxn, Store, WriteState};
use crate::chunker::{ChunkReadError, ChunkerConfig, chunk_reader};
use crate::error::{Result, StoreError};
use crate::ids::{BlobId, ChunkId, Hash32, PackId};
use crate::index::{Batch, Family};
use crate::records::{BlobRecord, ChunkRecord, Counters, FileRecord, ManifestEntry, location_key};

/// Where a blob's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// Chunks are copied into the store and deduplicated.
    Stored,
    /// The user's file is indexed where it is, never copied or modified.
    InPlace,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// The blob's id (BLAKE3 of its content).
    pub blob: BlobId,
    /// The blob's size.
    pub size: u64,
    /// Bytes of new chunks written to the store.
    pub new_bytes: u64,
    /// True when the store already had the blob in this residency.
    pub already_present: bool,
}

/// A file hashed for in-place indexing, ready to commit.
#[derive(Debug)]
struct PreparedInPlace {
    path: PathBuf,
    stamp: FileStamp,
    blob: BlobId,
    size: u64,
    /// Its manifest when the store does not know the blob yet.
    record: Option<BlobRecord>,
}

impl PreparedInPlace {
    /// A prepared file; `chunks` is its manifest when the blob is new.
    fn new(path: &Path, stamp: FileStamp, blob: BlobId, chunks: Option<Vec<ManifestEntry>>) -> PreparedInPlace {
        let record = chunks.map(|chunks| BlobRecord {
            size: stamp.size,
            chunks,
            stored: false,
        });
        debug_assert!(record.as_ref().is_none_or(BlobRecord::is_well_formed));
        PreparedInPlace {
            path: path.to_path_buf(),
            stamp,
            blob,
            size: stamp.size,
            record,
        }
    }
}

/// The identity of a file version: a change to either means new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime_ns: i128,
}

impl FileStamp {
    fn of(path: &Path, file: &File) -> Result<Self> {
        let metadata = file.metadata().map_err(|error| StoreError::io("stat", path, error))?;
        if !metadata.is_file() {
            return Err(StoreError::NotAFile(path.to_path_buf()));
        }
        use std::os::unix::fs::MetadataExt;
        Ok(FileStamp {
            size: metadata.len(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
        })
    }
}

/// Whether preparing a file for in-place indexing chunks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunking {
    /// Only when the store does not know its blob: a known blob costs one
    /// hash.
    IfNew,
    /// Always: the blob the store knew was collected before the commit.
    Always,
}

/// The answer of a commit of one prepared file.
fn one_answer(mut answers: Vec<Result<IngestReport>>) -> Result<IngestReport> {
    debug_assert_eq!(answers.len(), 1, "one answer per prepared file");
    answers
        .pop()
        .unwrap_or_else(|| Err(StoreError::Commit("no answer".into())))
}

/// Files up to this size are indexed in place from one read into memory.
const SMALL_FILE_BYTES: u64 = 8 << 20;

/// Bytes read at a time by the whole-file hash.
const HASH_BLOCK_BYTES: usize = 16 * 1024 * 1024;

/// Hashes everything `reader` yields, calling `progress` with byte counts.
fn hash_reader(mut reader: impl Read, path: &Path, progress: &mut dyn FnMut(u64)) -> Result<(BlobId, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; HASH_BLOCK_BYTES];
    let mut total = 0_u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok((hasher.finalize().into(), total)),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(StoreError::io("read", path, error)),
        };
        hasher.update_rayon(&buffer[..read]);
        total += read as u64;
        progress(read as u64);
    }
}

/// Cuts `reader` into chunks, hashing each chunk and the whole in parallel,
/// and hands every chunk to `on_chunk`. Returns the manifest, the whole
/// hash and the size.
fn chunk_and_hash(
    reader: impl Read,
    config: ChunkerConfig,
    path: &Path,
    progress: &mut dyn FnMut(u64),
    mut on_chunk: impl FnMut(&ManifestEntry, &[u8]) -> Result<()>,
) -> Result<(Vec<ManifestEntry>, BlobId, u64)> {
    let mut whole = blake3::Hasher::new();
    let mut entries = Vec::new();
    let size = chunk_reader(reader, config, |block_offset, block, spans| {
        let ((), hashes) = rayon::join(
            || {
                whole.update_rayon(block);
            },
            || {
                spans
                    .par_iter()
                    .map(|span| Hash32::of(span.bytes(block)))
                    .collect::<Vec<_>>()
            },
        );
        for (span, chunk) in spans.iter().zip(hashes) {
            let entry = ManifestEntry {
                offset: block_offset + span.offset as u64,
                len: span.len as u32,
                chunk,
            };
            on_chunk(&entry, span.bytes(block))?;
            entries.push(entry);
        }
        progress(block.len() as u64);
        Ok::<(), StoreError>(())
    })
    .map_err(|error| match error {
        ChunkReadError::Read(source) => StoreError::io("read", path, source),
        ChunkReadError::Block(error) => error,
    })?;
    Ok((entries, whole.finalize().into(), size))
}

impl Store {
    /// Ingests the file at `path`. The reference `file:<path>` (stored) or
    /// `inplace:<path>` (in place) then names the blob, replacing the blob it
    /// named before. `progress` is called with byte counts as work is done.
    pub fn ingest_file(
        &self,
        path: &Path,
        residency: Residency,
        progress: &mut dyn FnMut(u64),
    ) -> Result<IngestReport> {
        let path = std::path::absolute(path).map_err(|error| StoreError::io("resolve", path, error))?;
        if residency == Residency::InPlace {
            let prepared = self.prepare_in_place(&path, progress, Chunking::IfNew)?;
            return one_answer(self.commit_in_place_retrying(vec![Ok(prepared)]));
        }
        let reference = format!("file:{}", path.display());
        self.ingest_file_as(&path, &reference, progress)
    }

    /// Copies the file at `path` into the store under `reference` (a
    /// derived file whose path does not name it: a job's output).
    pub fn ingest_file_as(&self, path: &Path, reference: &str, progress: &mut dyn FnMut(u64)) -> Result<IngestReport> {
        let path = std::path::absolute(path).map_err(|error| StoreError::io("resolve", path, error))?;
        let mut file = File::open(&path).map_err(|error| StoreError::io("open", &path, error))?;
        let before = FileStamp::of(&path, &file)?;
        let (blob, size) = hash_reader(&mut file, &path, &mut |_| {})?;
        let unchanged = |file: &File| -> Result<()> {
            if size == before.size && FileStamp::of(&path, file)? == before {
                Ok(())
            } else {
                Err(StoreError::ChangedDuringIngest(path.clone()))
            }
        };
        unchanged(&file)?;
        if self.commit_known_blob(blob, reference)? {
            progress(size);
            return Ok(IngestReport {
                blob,
                size,
                new_bytes: 0,
                already_present: true,
            });
        }
        file.rewind().map_err(|error| StoreError::io("seek", &path, error))?;
        self.ingest_stored(&file, &path, Some(blob), reference, progress, &|| unchanged(&file))
    }

    /// Indexes many files in place (`inplace:<path>` references) with one
    /// synced index write for all of them: a library scan of small files
    /// pays one fsync per batch, not one per file. Files are hashed before
    /// the writer lock is taken. One answer per path, in order.
    pub fn index_in_place(&self, paths: &[PathBuf]) -> Vec<Result<IngestReport>> {
        // One path once per batch: the counters are computed against the
        // committed index, not against this batch.
        let mut seen = std::collections::HashSet::new();
        if !paths.iter().all(|path| seen.insert(path)) {
            let mut answers = Vec::with_capacity(paths.len());
            for path in paths {
                answers.extend(self.index_in_place(std::slice::from_ref(path)));
            }
            return answers;
        }
        let prepared = paths
            .par_iter()
            .map(|path| {
                let path = std::path::absolute(path).map_err(|error| StoreError::io("resolve", path, error))?;
                self.prepare_in_place(&path, &mut |_| {}, Chunking::IfNew)
            })
            .collect();
        self.commit_in_place_retrying(prepared)
    }

    /// Commits prepared in-place files. A file left unchunked because the
    /// store knew its blob, whose blob gc collected before the commit, is
    /// prepared again (chunked this time) and committed once more.
    fn commit_in_place_retrying(&self, prepared: Vec<Result<PreparedInPlace>>) -> Vec<Result<IngestReport>> {
        let paths: Vec<Option<PathBuf>> = prepared
            .iter()
            .map(|file| file.as_ref().ok().map(|file| file.path.clone()))
            .collect();
        let mut answers = self.commit_in_place(prepared);
        for (answer, path) in answers.iter_mut().zip(paths) {
            // Only commit_in_place's check under the lock answers BlobNotFound.
            if let (Err(StoreError::BlobNotFound(_)), Some(path)) = (&answer, path) {
                *answer = self
                    .prepare_in_place(&path, &mut |_| {}, Chunking::Always)
                    .and_then(|file| one_answer(self.commit_in_place(vec![Ok(file)])));
            }
        }
        answers
    }

    /// Hashes a file for in-place indexing, chunking it as `chunking` says;
    /// fails if it changes while read.
    fn prepare_in_place(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(u64),
        chunking: Chunking,
    ) -> Result<PreparedInPlace> {
        let mut file = File::open(path).map_err(|error| StoreError::io("open", path, error))?;
        let before = FileStamp::of(path, &file)?;
        if before.size <= SMALL_FILE_BYTES {
            return self.prepare_small_in_place(path, file, before, progress, chunking);
        }
        let (blob, size) = hash_reader(&mut file, path, &mut |_| {})?;
        let unchanged = |file: &File| -> Result<()> {
            if size == before.size && FileStamp::of(path, file)? == before {
                Ok(())
            } else {
                Err(StoreError::ChangedDuringIngest(path.to_path_buf()))
            }
        };
        unchanged(&file)?;
        let record = if chunking == Chunking::IfNew && self.index.get_raw(Family::Blobs, blob.as_bytes())?.is_some() {
            progress(size);
            None
        } else {
            file.rewind().map_err(|error| StoreError::io("seek", path, error))?;
            let (entries, hashed, hashed_size) =
                chunk_and_hash(&mut file, self.meta.chunker, path, progress, |_, _| Ok(()))?;
            if hashed != blob || hashed_size != size {
                return Err(StoreError::ChangedDuringIngest(path.to_path_buf()));
            }
            unchanged(&file)?;
            Some(entries)
        };
        Ok(PreparedInPlace::new(path, before, blob, record))
    }

    /// Stores `bytes` (a derived segment, an image, an upload) under
    /// `reference`, deduplicated against everything already stored.
    pub fn ingest_bytes(&self, bytes: &[u8], reference: &str) -> Result<IngestReport> {
        let blob = BlobId::of(bytes);
        if self.commit_known_blob(blob, reference)? {
            return Ok(IngestReport {
                blob,
                size: bytes.len() as u64,
                new_bytes: 0,
                already_present: true,
            });
        }
        self.ingest_stored(bytes, Path::new("<bytes>"), Some(blob), reference, &mut |_| {}, &|| {
            Ok(())
        })
    }

    /// Removes a reference; the blob it named is collected by `gc` once no
    /// reference names it. Returns the blob it named.
    pub fn remove_reference(&self, reference: &str) -> Result<Option<BlobId>> {
        let mut state = self.lock_writer();
        let Some(old) = self.index.get::<BlobId>(Family::Refs, reference.as_bytes())? else {
            return Ok(None);
        };
        let mut counters = state.counters;
        let mut batch = self.index.batch();
        batch.delete(Family::Refs, reference.as_bytes());
        if let Some(record) = self.index.get::<BlobRecord>(Family::Blobs, old.as_bytes())? {
            counters.logical_bytes = counters.logical_bytes.saturating_sub(record.size);
        }
        if let Some(path) = reference.strip_prefix("inplace:") {
            self.delete_location(&mut batch, &mut counters, &old, Path::new(path))?;
        }
        self.commit(&mut state, batch, counters)?;
        Ok(Some(old))
    }

    /// The blob a reference names.
    pub fn resolve_reference(&self, reference: &str) -> Result<Option<BlobId>> {
        self.index.get::<BlobId>(Family::Refs, reference.as_bytes())
    }

    /// Up to `limit` references that start with `prefix`, in name order,
    /// with the blobs they name.
    pub fn references(&self, prefix: &str, limit: usize) -> Result<Vec<(String, BlobId)>> {
        self.index
            .scan_prefix::<BlobId>(Family::Refs, prefix.as_bytes())
            .take(limit)
            .map(|entry| entry.map(|(key, blob)| (String::from_utf8_lossy(&key).into_owned(), blob)))
            .collect()
    }

    fn has_quarantined_chunk(&self, record: &BlobRecord) -> Result<bool> {
        for (chunk, _) in record.distinct_chunks() {
            if self.index.get_raw(Family::Quarantine, chunk.as_bytes())?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn has_location(&self, blob: &BlobId, path: &Path) -> Result<bool> {
        Ok(self
            .index
            .get_raw(Family::Locations, &location_key(blob, path))?
            .is_some())
    }

    /// Chunks and writes a blob whose bytes the store may not have.
    fn ingest_stored(
        &self,
        reader: impl Read,
        path: &Path,
        expected: Option<BlobId>,
        reference: &str,
        progress: &mut dyn FnMut(u64),
        unchanged: &dyn Fn() -> Result<()>,
    ) -> Result<IngestReport> {
        let mut state = self.lock_writer();
        let mut txn = Store::begin_txn(&state);
        let mut written: HashMap<ChunkId, ChunkRecord> = HashMap::new();
        let mut new_bytes = 0_u64;
        let outcome = chunk_and_hash(reader, self.meta.chunker, path, progress, |entry, bytes| {
            if written.contains_key(&entry.chunk) || self.chunk_is_healthy(&entry.chunk)? {
                return Ok(());
            }
            let (pack, offset) = self.append_chunk(&mut state, &mut txn, bytes)?;
            new_bytes += u64::from(entry.len);
            written.insert(
                entry.chunk,
                ChunkRecord {
                    pack,
                    offset,
                    len: entry.len,
                    refs: 0,
                },
            );
            Ok(())
        })
        .and_then(|(entries, blob, size)| {
            if expected.is_some_and(|expected| expected != blob) {
                return Err(StoreError::ChangedDuringIngest(path.to_path_buf()));
            }
            unchanged()?;
            self.sync_txn(&mut state)?;
            let record = BlobRecord {
                size,
                chunks: entries,
                stored: true,
            };
            debug_assert!(record.is_well_formed());
            self.commit_stored(&mut state, &txn, blob, record, &written, reference)?;
            Ok(IngestReport {
                blob,
                size,
                new_bytes,
                already_present: false,
            })
        });
        if outcome.is_err() {
            self.rollback(&mut state, txn);
        }
        outcome
    }

    /// True when the store holds a good copy of `chunk`.
    pub(super) fn chunk_is_healthy(&self, chunk: &ChunkId) -> Result<bool> {
        Ok(self.index.get_raw(Family::Chunks, chunk.as_bytes())?.is_some()
            && self.index.get_raw(Family::Quarantine, chunk.as_bytes())?.is_none())
    }

    /// Commits a stored blob: chunk records and counts, the manifest, the
    /// reference and the packs written to.
    fn commit_stored(
        &self,
        state: &mut WriteState,
        txn: &PackTxn,
        blob: BlobId,
        record: BlobRecord,
        written: &HashMap<ChunkId, ChunkRecord>,
        reference: &str,
    ) -> Result<()> {
        let mut counters = state.counters;
        let mut batch = self.index.batch();
        let mut live_added: BTreeMap<PackId, u64> = BTreeMap::new();
        let existing = self.index.get::<BlobRecord>(Family::Blobs, blob.as_bytes())?;
        let counted_before = existing.as_ref().is_some_and(|existing| existing.stored);
        for (chunk, len) in record.distinct_chunks() {
            let old = self.index.get::<ChunkRecord>(Family::Chunks, chunk.as_bytes())?;
            let new = written.get(&chunk);
            let mut updated = match (old, new) {
                // A fresh copy replaces a quarantined one (healing): its
                // bytes are live in the new pack, no longer in the old one.
                // (The new pack's share was once left out, so gc dropped a
                // pack that healed chunks pointed into: found by omega-sim.)
                (Some(old), Some(new)) => {
                    *live_added.entry(new.pack).or_default() += u64::from(len);
                    self.move_live_bytes(&mut batch, &mut live_added, old.pack, len)?;
                    batch.delete(Family::Quarantine, chunk.as_bytes());
                    ChunkRecord { refs: old.refs, ..*new }
                }
                (Some(old), None) => old,
                (None, Some(new)) => {
                    counters.chunks += 1;
                    counters.stored_bytes += u64::from(len);
                    *live_added.entry(new.pack).or_default() += u64::from(len);
                    *new
                }
                (None, None) => {
                    return Err(StoreError::MissingChunk { blob, chunk });
                }
            };
            if !counted_before {
                updated.refs += 1;
            }
            batch.put(Family::Chunks, chunk.as_bytes(), &updated);
        }
        if existing.is_none() {
            counters.blobs += 1;
        }
        counters.hot_bytes += txn.touched.values().map(|touched| touched.appended).sum::<u64>();
        self.put_touched_packs(&mut batch, txn, &live_added)?;
        let size = record.size;
        batch.put(Family::Blobs, blob.as_bytes(), &record);
        self.set_reference(&mut batch, &mut counters, reference, blob, size)?;
        self.commit(state, batch, counters)
    }

    /// A quarantined copy stops counting as live bytes of its pack.
    fn move_live_bytes(
        &self,
        batch: &mut Batch<'_>,
        live_added: &mut BTreeMap<PackId, u64>,
        from: PackId,
        len: u32,
    ) -> Result<()> {
        if let Some(mut record) = self
            .index
            .get::<crate::records::PackRecord>(Family::Packs, &from.key())?
        {
            if let Some(added) = live_added.get_mut(&from) {
                // Keep the deltas in one place when the old pack is also
                // appended to in this change.
                *added = added.saturating_sub(u64::from(len));
            } else {
                record.live_bytes = record.live_bytes.saturating_sub(u64::from(len));
                batch.put(Family::Packs, &from.key(), &record);
            }
        }
        Ok(())
    }

    /// Commits an in-place blob and its location.
    /// A small file is read once, into memory, then hashed and (if new)
    /// chunked from there.
    fn prepare_small_in_place(
        &self,
        path: &Path,
        file: File,
        before: FileStamp,
        progress: &mut dyn FnMut(u64),
        chunking: Chunking,
    ) -> Result<PreparedInPlace> {
        let mut bytes = Vec::with_capacity(before.size as usize);
        (&file)
            .take(SMALL_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| StoreError::io("read", path, error))?;
        if bytes.len() as u64 != before.size || FileStamp::of(path, &file)? != before {
            return Err(StoreError::ChangedDuringIngest(path.to_path_buf()));
        }
        let blob = BlobId::of(&bytes);
        let size = before.size;
        progress(size);
        let record = if chunking == Chunking::IfNew && self.index.get_raw(Family::Blobs, blob.as_bytes())?.is_some() {
            None
        } else {
            let chunks = crate::chunker::chunk_slice(&bytes, self.meta.chunker)
                .iter()
                .map(|span| ManifestEntry {
                    offset: span.offset as u64,
                    len: span.len as u32,
                    chunk: Hash32::of(span.bytes(&bytes)),
                })
                .collect();
            Some(chunks)
        };
        Ok(PreparedInPlace::new(path, before, blob, record))
    }

    /// Commits prepared in-place files in one batch. A blob two files
    /// share is recorded once.
    fn commit_in_place(&self, prepared: Vec<Result<PreparedInPlace>>) -> Vec<Result<IngestReport>> {
        let mut state = self.lock_writer();
        let mut counters = state.counters;
        let mut batch = self.index.batch();
        let mut added: std::collections::HashSet<BlobId> = std::collections::HashSet::new();
        let mut answers: Vec<Result<IngestReport>> = Vec::with_capacity(prepared.len());
        for file in prepared {
            let answer = file.and_then(|file| {
                // The file was left unchunked because the store knew its
                // blob; gc may have collected it since.
                if file.record.is_none() && self.index.get_raw(Family::Blobs, file.blob.as_bytes())?.is_none() {
                    return Err(StoreError::BlobNotFound(file.blob));
                }
                let reference = format!("inplace:{}", file.path.display());
                let already_present = file.record.is_none() && self.has_location(&file.blob, &file.path)?;
                if let Some(record) = &file.record
                    && self.index.get_raw(Family::Blobs, file.blob.as_bytes())?.is_none()
                    && added.insert(file.blob)
                {
                    counters.blobs += 1;
                    batch.put(Family::Blobs, file.blob.as_bytes(), record);
                }
                self.put_location(&mut batch, &mut counters, &file.blob, &file.path, file.stamp, file.size)?;
                self.set_reference(&mut batch, &mut counters, &reference, file.blob, file.size)?;
                Ok(IngestReport {
                    blob: file.blob,
                    size: file.size,
                    new_bytes: 0,
                    already_present,
                })
            });
            answers.push(answer);
        }
        if batch.is_empty() {
            return answers;
        }
        match self.commit(&mut state, batch, counters) {
            Ok(()) => answers,
            Err(error) => {
                // Nothing was written: every file that was ready fails with
                // the commit's error.
                let reason = error.to_string();
                answers
                    .into_iter()
                    .map(|answer| answer.and_then(|_| Err(StoreError::Commit(reason.clone()))))
                    .collect()
            }
        }
    }

    /// Points `reference` at a stored blob if the store still holds it whole
    /// under the writer lock: a caller that saw the blob before taking the
    /// lock may have lost it to gc since. `false`: nothing was committed, and
    /// the caller takes the full path (which also writes fresh copies of
    /// quarantined chunks).
    fn commit_known_blob(&self, blob: BlobId, reference: &str) -> Result<bool> {
        let mut state = self.lock_writer();
        let Some(record) = self.index.get::<BlobRecord>(Family::Blobs, blob.as_bytes())? else {
            return Ok(false);
        };
        if !record.stored || self.has_quarantined_chunk(&record)? {
            return Ok(false);
        }
        let mut counters = state.counters;
        let mut batch = self.index.batch();
        self.set_reference(&mut batch, &mut counters, reference, blob, record.size)?;
        self.commit(&mut state, batch, counters)?;
        Ok(true)
    }

    fn put_location(
        &self,
        batch: &mut Batch<'_>,
        counters: &mut Counters,
        blob: &BlobId,
        path: &Path,
        stamp: FileStamp,
        size: u64,
    ) -> Result<()> {
        if !self.has_location(blob, path)? {
            counters.in_place_bytes += size;
        }
        let record = FileRecord {
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
        };
        batch.put(Family::Locations, &location_key(blob, path), &record);
        Ok(())
    }

    fn delete_location(
        &self,
        batch: &mut Batch<'_>,
        counters: &mut Counters,
        blob: &BlobId,
        path: &Path,
    ) -> Result<()> {
        let key = location_key(blob, path);
        if let Some(record) = self.index.get::<FileRecord>(Family::Locations, &key)? {
            counters.in_place_bytes = counters.in_place_bytes.saturating_sub(record.size);
            batch.delete(Family::Locations, &key);
        }
        Ok(())
    }

    /// Points `reference` at `blob`, dropping the in-place location the
    /// reference's old blob had for the same path.
    fn set_reference(
        &self,
        batch: &mut Batch<'_>,
        counters: &mut Counters,
        reference: &str,
        blob: BlobId,
        size: u64,
    ) -> Result<()> {
        let old = self.index.get::<BlobId>(Family::Refs, reference.as_bytes())?;
        if old == Some(blob) {
            return Ok(());
        }
        if let Some(old) = old {
            if let Some(record) = self.index.get::<BlobRecord>(Family::Blobs, old.as_bytes())? {
                counters.logical_bytes = counters.logical_bytes.saturating_sub(record.size);
            }
            if let Some(path) = reference.strip_prefix("inplace:") {
                self.delete_location(batch, counters, &old, Path::new(path))?;
            }
        }
        counters.logical_bytes += size;
        batch.put(Family::Refs, reference.as_bytes(), &blob);
        Ok(())
    }
}
