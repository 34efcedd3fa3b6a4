//! The store's error type. Every variant names what it is about (a blob, a
//! chunk, a path) so that a user can act on one line of output.

use std::path::PathBuf;

use crate::ids::{BlobId, ChunkId, PackId};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error, with what was being done and to which path.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The index (RocksDB) failed.
    #[error("index: {0}")]
    Index(String),
    /// Another process holds the store open.
    #[error("the store at {0} is in use by another process (is `omega serve` running?)")]
    Locked(PathBuf),
    /// The store on disk was made by an incompatible version.
    #[error("store at {path} has format {found}, this omega reads format {expected}")]
    Format {
        /// The store directory.
        path: PathBuf,
        /// Format written on disk.
        found: u32,
        /// Format this build understands.
        expected: u32,
    },
    /// A record in the index could not be decoded.
    #[error("index record {what} is damaged: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoder's message.
        detail: String,
    },
    /// No blob has this id.
    #[error("blob {0} not found")]
    BlobNotFound(BlobId),
    /// The range asked for lies outside the blob.
    #[error("range {start}-{end} is outside blob {blob} of {size} bytes")]
    RangeOutOfBounds {
        /// The blob.
        blob: BlobId,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The blob's size.
        size: u64,
    },
    /// A stored chunk's bytes do not hash to its name.
    #[error("blob {blob}: chunk {chunk} in {pack} is corrupt (hash mismatch)")]
    CorruptChunk {
        /// The blob being read.
        blob: BlobId,
        /// The damaged chunk.
        chunk: ChunkId,
        /// Where it lives.
        pack: PackId,
    },
    /// A chunk was quarantined by scrub and has no good copy.
    #[error("blob {blob}: chunk {chunk} is quarantined as corrupt; re-ingest the source to heal it")]
    Quarantined {
        /// The blob being read.
        blob: BlobId,
        /// The quarantined chunk.
        chunk: ChunkId,
    },
    /// A chunk that a manifest names has no stored copy and no in-place file.
    #[error("blob {blob}: chunk {chunk} has no copy in the store")]
    MissingChunk {
        /// The blob being read.
        blob: BlobId,
        /// The missing chunk.
        chunk: ChunkId,
    },
    /// An indexed-in-place file no longer holds the bytes it was indexed with.
    #[error("blob {blob}: file {path} changed on disk since it was indexed")]
    FileChanged {
        /// The blob being read.
        blob: BlobId,
        /// The file that changed.
        path: PathBuf,
    },
    /// A file changed while it was being ingested.
    #[error("{0} changed while it was being ingested; nothing was indexed")]
    ChangedDuringIngest(PathBuf),
    /// A batched index write failed; nothing of the batch was written.
    #[error("the index write failed: {0}")]
    Commit(String),
    /// Only regular files can be ingested.
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// The cold tier failed.
    #[error("cold tier: {0}")]
    Cold(String),
    /// An operation needs a cold tier and none is configured.
    #[error("no cold tier is configured (set store.cold_url)")]
    NoColdTier,
    /// A configuration value is not usable.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Wraps an I/O error with the action and the path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(error: rocksdb::Error) -> Self {
        StoreError::Index(error.into_string())
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
