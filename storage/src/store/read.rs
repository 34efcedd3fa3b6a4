//! Reads: any byte range of a blob, chunk by chunk, each chunk verified
//! against its hash before a byte of it is returned.
//!
//! A chunk is read from its stored copy (hot pack, else cold pack) or from an
//! in-place file. A copy that fails verification is passed over for the next
//! one; when none is good the error names the blob, the chunk and where the
//! bad copy was. A cold chunk read often enough is promoted to the hot tier.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::Store;
use crate::error::{Result, StoreError};
use crate::ids::{BlobId, ChunkId, PackId};
use crate::index::Family;
use crate::records::{BlobRecord, ChunkRecord, FileRecord, ManifestEntry, PackRecord, Tier, split_location_key};

impl Store {
    /// The manifest of a blob.
    pub fn blob(&self, blob: &BlobId) -> Result<BlobRecord> {
        self.index
            .get::<BlobRecord>(Family::Blobs, blob.as_bytes())?
            .ok_or(StoreError::BlobNotFound(*blob))
    }

    /// Reads bytes `start..end` of a blob.
    pub fn read_range(&self, blob: &BlobId, start: u64, end: u64) -> Result<Vec<u8>> {
        let record = self.blob(blob)?;
        self.read_in(blob, &record, start, end)
    }

    /// Reads all of a blob (its record looked up once).
    pub fn read_all(&self, blob: &BlobId) -> Result<Vec<u8>> {
        let record = self.blob(blob)?;
        self.read_in(blob, &record, 0, record.size)
    }

    fn read_in(&self, blob: &BlobId, record: &BlobRecord, start: u64, end: u64) -> Result<Vec<u8>> {
        check_range(blob, record, start, end)?;
        let mut out = Vec::with_capacity((end - start) as usize);
        self.for_each_piece(blob, record, start, end, |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })?;
        debug_assert_eq!(out.len() as u64, end - start);
        Ok(out)
    }

    /// Writes bytes `start..end` of a blob to `writer`, one chunk at a time.
    pub fn read_range_to(&self, blob: &BlobId, start: u64, end: u64, writer: &mut dyn Write) -> Result<u64> {
        let record = self.blob(blob)?;
        check_range(blob, &record, start, end)?;
        let mut written = 0_u64;
        self.for_each_piece(blob, &record, start, end, |piece| {
            writer
                .write_all(piece)
                .map_err(|error| StoreError::io("write", PathBuf::from("<output>"), error))?;
            written += piece.len() as u64;
            Ok(())
        })?;
        Ok(written)
    }

    fn for_each_piece(
        &self,
        blob: &BlobId,
        record: &BlobRecord,
        start: u64,
        end: u64,
        mut on_piece: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if start == end {
            return Ok(());
        }
        let first = record.entry_at(start);
        for entry in &record.chunks[first..] {
            if entry.offset >= end {
                break;
            }
            let bytes = self.read_chunk(blob, entry)?;
            let from = start.saturating_sub(entry.offset) as usize;
            let to = ((end - entry.offset) as usize).min(bytes.len());
            on_piece(&bytes[from..to])?;
        }
        Ok(())
    }

    /// Reads one chunk of `blob`, verified.
    pub(super) fn read_chunk(&self, blob: &BlobId, entry: &ManifestEntry) -> Result<Vec<u8>> {
        let mut first_error = None;
        if let Some(record) = self.index.get::<ChunkRecord>(Family::Chunks, entry.chunk.as_bytes())? {
            if self
                .index
                .get_raw(Family::Quarantine, entry.chunk.as_bytes())?
                .is_some()
            {
                first_error = Some(StoreError::Quarantined {
                    blob: *blob,
                    chunk: entry.chunk,
                });
            } else {
                match self.read_stored_chunk(blob, &entry.chunk, &record) {
                    Ok(bytes) => return Ok(bytes),
                    Err(error) => first_error = Some(error),
                }
            }
        }
        match self.read_in_place_chunk(blob, entry) {
            Ok(Some(bytes)) => return Ok(bytes),
            Ok(None) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
        Err(first_error.unwrap_or(StoreError::MissingChunk {
            blob: *blob,
            chunk: entry.chunk,
        }))
    }

    fn read_stored_chunk(&self, blob: &BlobId, chunk: &ChunkId, record: &ChunkRecord) -> Result<Vec<u8>> {
        let (bytes, tier) = self.read_pack_bytes(chunk, record)?;
        if ChunkId::of(&bytes) != *chunk {
            tracing::error!(%blob, %chunk, pack = %record.pack, "stored chunk failed verification");
            return Err(StoreError::CorruptChunk {
                blob: *blob,
                chunk: *chunk,
                pack: record.pack,
            });
        }
        self.lock_policy().record_access(record.pack, chunk);
        if tier == Tier::Cold {
            self.maybe_promote(chunk, record.pack, &bytes);
        }
        Ok(bytes)
    }

    /// Reads a stored chunk's bytes, unverified, from whichever tier holds
    /// its pack. A pack demoted between the lookup and the read is read again
    /// from its new tier.
    pub(super) fn read_pack_bytes(&self, chunk: &ChunkId, record: &ChunkRecord) -> Result<(Vec<u8>, Tier)> {
        let pack = self.pack_record(record.pack)?;
        if pack.tier == Tier::Hot {
            match self.hot.read_at(record.pack, record.offset, record.len) {
                Ok(bytes) => return Ok((bytes, Tier::Hot)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(%chunk, "hot pack vanished during read; retrying from the index");
                    let record = self
                        .index
                        .get::<ChunkRecord>(Family::Chunks, chunk.as_bytes())?
                        .ok_or_else(|| StoreError::Index(format!("chunk {chunk} was removed during a read")))?;
                    return self.read_cold_bytes(&record).map(|bytes| (bytes, Tier::Cold));
                }
                Err(error) => return Err(StoreError::io("read", self.hot.path(record.pack), error)),
            }
        }
        self.read_cold_bytes(record).map(|bytes| (bytes, Tier::Cold))
    }

    fn read_cold_bytes(&self, record: &ChunkRecord) -> Result<Vec<u8>> {
        let pack = self.pack_record(record.pack)?;
        if pack.tier == Tier::Hot {
            return self
                .hot
                .read_at(record.pack, record.offset, record.len)
                .map_err(|error| StoreError::io("read", self.hot.path(record.pack), error));
        }
        let cold = self.cold.as_ref().ok_or(StoreError::NoColdTier)?;
        cold.get_range(record.pack, record.offset, record.len)
    }

    pub(super) fn pack_record(&self, pack: PackId) -> Result<PackRecord> {
        self.index
            .get::<PackRecord>(Family::Packs, &pack.key())?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("packs/{pack}"),
                detail: "a chunk points into a pack the index does not know".into(),
            })
    }

    /// Tries each in-place file of `blob`. `Ok(None)`: the blob has none.
    fn read_in_place_chunk(&self, blob: &BlobId, entry: &ManifestEntry) -> Result<Option<Vec<u8>>> {
        let mut first_error = None;
        for item in self.index.scan_prefix::<FileRecord>(Family::Locations, blob.as_bytes()) {
            let (key, _) = item?;
            let Some((_, path)) = split_location_key(&key) else {
                continue;
            };
            let mut bytes = vec![0_u8; entry.len as usize];
            let read = std::fs::File::open(&path).and_then(|file| file.read_exact_at(&mut bytes, entry.offset));
            match read {
                Ok(()) if ChunkId::of(&bytes) == entry.chunk => return Ok(Some(bytes)),
                Ok(()) | Err(_) => {
                    tracing::warn!(%blob, path = %path.display(), "in-place file no longer matches its index");
                    first_error.get_or_insert(StoreError::FileChanged { blob: *blob, path });
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }
}

/// An error unless `start..end` lies within `blob` (described by `record`).
pub(super) fn check_range(blob: &BlobId, record: &BlobRecord, start: u64, end: u64) -> Result<()> {
    if start > end || end > record.size {
        return Err(StoreError::RangeOutOfBounds {
            blob: *blob,
            start,
            end,
            size: record.size,
        });
    }
    Ok(())
}
