//! The store's index: one family per kind of record, in RocksDB (one
//! column family each) or, in the simulator, in memory behind the same
//! [`IndexBackend`].
//!
//! Every change is a [`Batch`] committed atomically and durably (RocksDB:
//! a synced WAL), so that once a commit returns the change survives a
//! crash, and a crash before it leaves no trace of the change.

use std::path::Path;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StoreError};
use crate::records::{decode, encode};

/// The column families of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// Every family.
    pub const ALL: [Family; 7] = [
        Family::Meta,
        Family::Chunks,
        Family::Blobs,
        Family::Refs,
        Family::Locations,
        Family::Packs,
        Family::Quarantine,
    ];

    /// Its name (RocksDB's column family).
    pub fn name(self) -> &'static str {
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

/// One change of a [`Batch`]: a row written, or deleted (`value: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The family.
    pub family: Family,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` deletes the row.
    pub value: Option<Vec<u8>>,
}

/// Rows of one family, in key order.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<(Box<[u8]>, Vec<u8>)>> + 'a>;

/// Where the index's rows live: RocksDB on a node ([`RocksIndex`]), memory
/// on a simulated disk. A commit is atomic and durable when it returns.
pub trait IndexBackend: Send + Sync + std::fmt::Debug {
    /// Reads one row.
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The rows of `family` from `start` on, in key order.
    fn scan_from<'a>(&'a self, family: Family, start: &[u8]) -> Rows<'a>;
    /// Applies `changes` atomically and durably.
    fn commit(&self, changes: Vec<Change>) -> Result<()>;
}

/// The index on RocksDB.
pub struct RocksIndex {
    db: DB,
}

impl std::fmt::Debug for RocksIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RocksIndex")
            .field("path", &self.db.path())
            .finish()
    }
}

impl RocksIndex {
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
        Ok(RocksIndex { db })
    }

    fn family(&self, family: Family) -> &ColumnFamily {
        // Invariant: every family in Family::ALL is created at open.
        self.db
            .cf_handle(family.name())
            .unwrap_or_else(|| unreachable!("column family {} is created at open", family.name()))
    }
}

impl IndexBackend for RocksIndex {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.family(family), key)?)
    }

    fn scan_from<'a>(&'a self, family: Family, start: &[u8]) -> Rows<'a> {
        let mode = IteratorMode::From(start, Direction::Forward);
        Box::new(self.db.iterator_cf(self.family(family), mode).map(|item| {
            item.map(|(key, value)| (key, value.into_vec()))
                .map_err(StoreError::from)
        }))
    }

    /// A batch with a synced WAL: durable once this returns.
    fn commit(&self, changes: Vec<Change>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for change in changes {
            let family = self.family(change.family);
            match change.value {
                Some(value) => batch.put_cf(family, change.key, value),
                None => batch.delete_cf(family, change.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }
}

/// The index: typed records over a backend.
#[derive(Debug)]
pub struct Index {
    backend: Box<dyn IndexBackend>,
    /// Commits so far (see [`Index::epoch`]).
    epoch: std::sync::atomic::AtomicU64,
}

impl Index {
    /// Opens (or creates) the RocksDB index in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Index::on(Box::new(RocksIndex::open(path)?)))
    }

    /// The index on `backend`.
    pub fn on(backend: Box<dyn IndexBackend>) -> Self {
        Index {
            backend,
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Changes with every commit that changes something (and only then):
    /// an answer read from the index stays true while this is unchanged.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads a raw value.
    pub fn get_raw(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.backend.get(family, key)
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
        self.backend.scan_from(family, start).map(move |item| {
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

    /// Commits a batch: atomic, and durable once this returns.
    pub fn commit(&self, batch: Batch) -> Result<()> {
        if batch.changes.is_empty() {
            return Ok(());
        }
        // After the write lands: a reader that saw an epoch before reading
        // the index keeps its answer only while no commit came after it.
        let committed = self.backend.commit(batch.changes);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        committed
    }

    /// Starts an empty batch.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            changes: Vec::new(),
            _index: std::marker::PhantomData,
        }
    }
}

/// A set of changes committed atomically by [`Index::commit`].
#[derive(Debug)]
pub struct Batch<'a> {
    changes: Vec<Change>,
    _index: std::marker::PhantomData<&'a Index>,
}

impl Batch<'_> {
    /// Puts an encoded record.
    pub fn put<T: Serialize>(&mut self, family: Family, key: &[u8], value: &T) {
        self.changes.push(Change {
            family,
            key: key.to_vec(),
            value: Some(encode(value)),
        });
    }

    /// Deletes a key.
    pub fn delete(&mut self, family: Family, key: &[u8]) {
        self.changes.push(Change {
            family,
            key: key.to_vec(),
            value: None,
        });
    }

    /// Number of changes in the batch.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True when the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}
