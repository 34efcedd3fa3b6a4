//! The store's index in RocksDB: one column family per kind of record.
//!
//! Every change is a [`Batch`] written with a synced WAL, so that once a
//! commit returns the change survives a crash, and a crash before it leaves
//! no trace of the change.

use std::path::Path;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StoreError};
use crate::records::{decode, encode};

/// The column families of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Store identity, counters and pack counter.
    Meta,
    /// Chunk hash → [`crate::records::ChunkRecord`].
    Chunks,
    /// Blob id → [`crate::records::BlobRecord`] (its manifest).
    Blobs,
    /// Reference name → blob id; a blob no reference names is garbage.
    Refs,
    /// Blob id + path → [`crate::records::FileRecord`] for in-place files.
    Locations,
    /// Pack id → [`crate::records::PackRecord`] (tier state).
    Packs,
    /// Chunk hash → reason, for chunks that scrub found corrupt.
    Quarantine,
}

impl Family {
    const ALL: [Family; 7] = [
        Family::Meta,
        Family::Chunks,
        Family::Blobs,
        Family::Refs,
        Family::Locations,
        Family::Packs,
        Family::Quarantine,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::Meta => "meta",
            Family::Chunks => "chunks",
            Family::Blobs => "blobs",
            Family::Refs => "refs",
            Family::Locations => "locations",
            Family::Packs => "packs",
            Family::Quarantine => "quarantine",
        }
    }
}

/// The RocksDB index.
pub struct Index {
    db: DB,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Index").field("path", &self.db.path()).finish()
    }
}

impl Index {
    /// Opens (or creates) the index in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The index is small next to the data it describes; keep file handles
        // and background work modest so that CLI commands open quickly.
        options.set_max_open_files(512);
        options.set_keep_log_file_num(4);
        options.increase_parallelism(2);
        let families = Family::ALL
            .iter()
            .map(|family| ColumnFamilyDescriptor::new(family.name(), Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|error| {
            let message = error.into_string();
            if message.contains("lock") && (message.contains("unavailable") || message.contains("Resource")) {
                StoreError::Locked(path.to_path_buf())
            } else {
                StoreError::Index(message)
            }
        })?;
        Ok(Index { db })
    }

    fn family(&self, family: Family) -> &ColumnFamily {
        // Invariant: every family in Family::ALL is created at open.
        self.db
            .cf_handle(family.name())
            .unwrap_or_else(|| unreachable!("column family {} is created at open", family.name()))
    }

    /// Reads a raw value.
    pub fn get_raw(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.family(family), key)?)
    }

    /// Reads and decodes a record.
    pub fn get<T: DeserializeOwned>(&self, family: Family, key: &[u8]) -> Result<Option<T>> {
        match self.get_raw(family, key)? {
            None => Ok(None),
            Some(bytes) => decode(|| format!("{}/{}", family.name(), hex::encode(key)), &bytes).map(Some),
        }
    }

    /// Iterates over a whole family in key order, decoding each value.
    pub fn scan<T: DeserializeOwned>(&self, family: Family) -> impl Iterator<Item = Result<(Box<[u8]>, T)>> + '_ {
        self.scan_from(family, &[])
    }

    /// Iterates from `start` onwards in key order.
    pub fn scan_from<'a, T: DeserializeOwned>(
        &'a self,
        family: Family,
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Box<[u8]>, T)>> + 'a {
        let mode = IteratorMode::From(start, Direction::Forward);
        self.db.iterator_cf(self.family(family), mode).map(move |item| {
            let (key, value) = item?;
            let record = decode(|| format!("{}/{}", family.name(), hex::encode(&key)), &value)?;
            Ok((key, record))
        })
    }

    /// Iterates over the keys that start with `prefix`.
    pub fn scan_prefix<'a, T: DeserializeOwned>(
        &'a self,
        family: Family,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<(Box<[u8]>, T)>> + 'a {
        self.scan_from(family, prefix).take_while(move |item| match item {
            Ok((key, _)) => key.starts_with(prefix),
            Err(_) => true,
        })
    }

    /// Writes a batch with a synced WAL: durable once this returns.
    pub fn commit(&self, batch: Batch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch.inner, &options)?;
        Ok(())
    }

    /// Starts an empty batch.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            index: self,
            inner: WriteBatch::default(),
        }
    }
}

/// A set of changes committed atomically by [`Index::commit`].
pub struct Batch<'a> {
    index: &'a Index,
    inner: WriteBatch,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Batch")
            .field("changes", &self.inner.len())
            .finish()
    }
}

impl Batch<'_> {
    /// Puts an encoded record.
    pub fn put<T: Serialize>(&mut self, family: Family, key: &[u8], value: &T) {
        self.inner.put_cf(self.index.family(family), key, encode(value));
    }

    /// Deletes a key.
    pub fn delete(&mut self, family: Family, key: &[u8]) {
        self.inner.delete_cf(self.index.family(family), key);
    }

    /// Number of changes in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}
