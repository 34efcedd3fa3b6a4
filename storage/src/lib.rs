//! Omega's content-addressed store.
//!
//! Blobs are cut into content-defined chunks (FastCDC, pinned version); a
//! chunk is named by its BLAKE3 hash, a blob by the BLAKE3 hash of its whole
//! content, and a manifest lists a blob's chunks with their offsets. A blob is
//! kept in one of two residencies:
//!
//! - **in place**: a user's media file is indexed where it lies and never
//!   copied or modified; every read verifies the chunk it touches;
//! - **stored**: chunk bytes are appended to pack files, deduplicated by hash
//!   and counted by reference, and tiered between a hot directory and a cold
//!   object store.
//!
//! # Layout
//! - [`chunker`]: FastCDC over blocks, with cut points equal to a whole pass.
//! - [`ids`]: hashes and pack ids.
//! - [`records`]: what the index holds, encoded with postcard.
//! - [`index`]: the index's families and atomic, durable batches (RocksDB,
//!   or any [`index::IndexBackend`]).
//! - [`packs`]: hot pack files and their append protocol (a directory, or
//!   any [`packs::PackBackend`]).
//! - [`cold`]: the cold tier over `object_store`.
//! - [`policy`]: which packs are demoted and which chunks promoted.
//! - [`store`]: the [`Store`] itself: ingest, reads, tiering, gc and scrub.
//!
//! **Architecture invariant:** this crate knows nothing of Raft, libp2p or
//! HTTP. Its callers name blobs and hold references; it keeps bytes safe.

pub mod chunker;
pub mod cold;
pub mod error;
pub mod ids;
pub mod index;
pub mod packs;
pub mod policy;
pub mod records;
pub mod store;

pub use chunker::ChunkerConfig;
pub use error::{Result, StoreError};
pub use ids::{BlobId, ChunkId, Hash32, PackId};
pub use store::{
    Backends, FileCheck, FileSpan, GcReport, IngestReport, Residency, ScrubFinding, ScrubReport, Store, StoreConfig,
    StoreStats, TierReport,
};
