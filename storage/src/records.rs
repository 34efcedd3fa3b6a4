//! The records kept in the index, encoded with postcard.
//!
//! Keys are raw bytes (hashes, big-endian pack ids, UTF-8 names); values are
//! these structs. A change to any of them is a change of [`FORMAT_VERSION`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerConfig;
use crate::error::{Result, StoreError};
use crate::ids::{BlobId, ChunkId, PackId};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Where a stored chunk's bytes live, and how many stored blobs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// The pack that holds the bytes.
    pub pack: PackId,
    /// First byte within the pack.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// Number of stored blobs whose manifest names this chunk (each blob once).
    pub refs: u64,
}

/// One entry of a manifest: the chunk at `offset` of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// First byte of the chunk within the blob.
    pub offset: u64,
    /// Length of the chunk.
    pub len: u32,
    /// The chunk's name.
    pub chunk: ChunkId,
}

/// A blob: its size, its chunks in order, and whether the store holds its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Total size in bytes.
    pub size: u64,
    /// Chunks in order; they tile `0..size` exactly.
    pub chunks: Vec<ManifestEntry>,
    /// True when every chunk has a stored copy counted in its `refs`.
    pub stored: bool,
}

impl BlobRecord {
    /// Checks that the entries tile `0..size` with no gap or overlap.
    pub fn is_well_formed(&self) -> bool {
        let mut expected = 0_u64;
        for entry in &self.chunks {
            if entry.offset != expected || entry.len == 0 {
                return false;
            }
            expected += u64::from(entry.len);
        }
        expected == self.size
    }

    /// Index of the entry that holds byte `offset` (which must be < size).
    pub fn entry_at(&self, offset: u64) -> usize {
        debug_assert!(offset < self.size);
        self.chunks
            .partition_point(|entry| entry.offset + u64::from(entry.len) <= offset)
    }

    /// The distinct chunks of this blob, each with its length.
    pub fn distinct_chunks(&self) -> Vec<(ChunkId, u32)> {
        let mut seen = std::collections::HashSet::with_capacity(self.chunks.len());
        self.chunks
            .iter()
            .filter(|entry| seen.insert(entry.chunk))
            .map(|entry| (entry.chunk, entry.len))
            .collect()
    }
}

/// Which tier holds a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// A file in the hot directory.
    Hot,
    /// An object in the cold object store.
    Cold,
}

/// A pack's tier and fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    /// Where the pack lives.
    pub tier: Tier,
    /// Committed length; bytes past it are garbage from an interrupted write.
    pub len: u64,
    /// Bytes of chunks that the index still points at.
    pub live_bytes: u64,
}

/// An in-place location of a blob: a user's file, never copied or modified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size when indexed.
    pub size: u64,
    /// Modification time when indexed, in nanoseconds since the epoch.
    pub mtime_ns: i128,
}

/// Store-wide counters, kept in one record and updated in every commit batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Sum of the sizes of the blobs named by references (what users put in).
    pub logical_bytes: u64,
    /// Bytes of distinct stored chunks.
    pub stored_bytes: u64,
    /// Number of distinct stored chunks.
    pub chunks: u64,
    /// Number of blobs.
    pub blobs: u64,
    /// Bytes of packs in the hot tier (including garbage awaiting gc).
    pub hot_bytes: u64,
    /// Bytes of packs in the cold tier.
    pub cold_bytes: u64,
    /// Bytes of blobs indexed in place (counted once per file).
    pub in_place_bytes: u64,
}

/// Store identity and contract, written once at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    /// On-disk format.
    pub format: u32,
    /// Chunk limits chosen at creation.
    pub chunker: ChunkerConfig,
    /// The cold tier's URL once one was used (credentials are never stored).
    pub cold_url: Option<String>,
}

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: postcard only fails on writers that run out of room or on
    // types serde cannot describe; a Vec grows and our records are plain data.
    postcard::to_stdvec(value).unwrap_or_else(|error| unreachable!("postcard encode: {error}"))
}

/// Decodes a record, naming `what` in the error.
pub fn decode<T: DeserializeOwned>(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Corrupt {
        what: what(),
        detail: error.to_string(),
    })
}

/// Key of a location: the blob id followed by the file's path bytes.
pub fn location_key(blob: &BlobId, path: &std::path::Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut key = Vec::with_capacity(32 + path.as_os_str().len());
    key.extend_from_slice(blob.as_bytes());
    key.extend_from_slice(path.as_os_str().as_bytes());
    key
}

/// Splits a location key into its blob and path.
pub fn split_location_key(key: &[u8]) -> Option<(BlobId, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    if key.len() <= 32 {
        return None;
    }
    let blob = BlobId::from_slice(&key[..32])?;
    Some((
        blob,
        std::path::Path::new(std::ffi::OsStr::from_bytes(&key[32..])).to_path_buf(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(lens: &[u32]) -> Vec<ManifestEntry> {
        let mut offset = 0;
        lens.iter()
            .enumerate()
            .map(|(index, &len)| {
                let entry = ManifestEntry {
                    offset,
                    len,
                    chunk: ChunkId::of(&index.to_le_bytes()),
                };
                offset += u64::from(len);
                entry
            })
            .collect()
    }

    proptest! {
        #[test]
        fn blob_records_round_trip(lens in proptest::collection::vec(1_u32..5_000_000, 0..200), stored in any::<bool>()) {
            let chunks = entries(&lens);
            let size = lens.iter().map(|&len| u64::from(len)).sum();
            let record = BlobRecord { size, chunks, stored };
            prop_assert!(record.is_well_formed());
            let decoded: BlobRecord = decode(|| "test".into(), &encode(&record)).unwrap();
            prop_assert_eq!(&decoded, &record);
            for (index, entry) in record.chunks.iter().enumerate() {
                prop_assert_eq!(record.entry_at(entry.offset), index);
                prop_assert_eq!(record.entry_at(entry.offset + u64::from(entry.len) - 1), index);
            }
        }

        #[test]
        fn damaged_records_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<BlobRecord>(|| "test".into(), &bytes);
            let _ = decode::<ChunkRecord>(|| "test".into(), &bytes);
            let _ = decode::<PackRecord>(|| "test".into(), &bytes);
        }
    }

    #[test]
    fn gaps_are_not_well_formed() {
        let mut record = BlobRecord {
            size: 30,
            chunks: entries(&[10, 20]),
            stored: true,
        };
        assert!(record.is_well_formed());
        record.chunks[1].offset = 11;
        assert!(!record.is_well_formed());
    }

    #[test]
    fn location_keys_round_trip() {
        let blob = BlobId::of(b"x");
        let path = std::path::Path::new("/media/Movies/Alien (1979)/Alien.mkv");
        let (parsed_blob, parsed_path) = split_location_key(&location_key(&blob, path)).unwrap();
        assert_eq!(parsed_blob, blob);
        assert_eq!(parsed_path, path);
    }
}
