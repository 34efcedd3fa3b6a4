//! The node's consensus database: one RocksDB holding the Raft log, the
//! vote, and the state machine's tables.
//!
//! One database, one WAL: the log's synced appends also make every earlier
//! state-machine write durable, so applying need not sync on its own.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options};

use crate::codec::io_error;
use crate::state_machine::tables::{KvRead, Table};

/// Column family of log entries, keyed by big-endian index.
pub const CF_LOG: &str = "raft_log";
/// Column family of the vote, last purged and committed log ids, and the
/// node's identity.
pub const CF_RAFT_META: &str = "raft_meta";

/// The consensus database.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DB>,
    dir: PathBuf,
}

impl Db {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> io::Result<Db> {
        std::fs::create_dir_all(dir)?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The info log is for RocksDB's developers; keep it small.
        options.set_max_log_file_size(1 << 20);
        options.set_keep_log_file_num(2);
        let mut families = vec![
            ColumnFamilyDescriptor::new(CF_LOG, Options::default()),
            ColumnFamilyDescriptor::new(CF_RAFT_META, Options::default()),
        ];
        families.extend(
            Table::ALL
                .iter()
                .map(|table| ColumnFamilyDescriptor::new(table.cf_name(), Options::default())),
        );
        let inner = DB::open_cf_descriptors(&options, dir, families).map_err(|error| {
            let text = error.to_string();
            if text.contains("lock") {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{}: the database is in use by another process ({text})", dir.display()),
                )
            } else {
                io::Error::other(format!("cannot open {}: {text}", dir.display()))
            }
        })?;
        Ok(Db {
            inner: Arc::new(inner),
            dir: dir.to_path_buf(),
        })
    }

    /// The database's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The RocksDB handle.
    pub(crate) fn rocks(&self) -> &DB {
        &self.inner
    }

    /// A column family that [`Db::open`] created.
    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Invariant: `open` creates every family this crate names.
        self.inner
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is created at open"))
    }

    /// The column family of a state-machine table.
    pub(crate) fn table(&self, table: Table) -> &ColumnFamily {
        self.cf(table.cf_name())
    }

    /// A handle that does not keep the database open.
    pub fn downgrade(&self) -> WeakDb {
        WeakDb {
            inner: Arc::downgrade(&self.inner),
            dir: self.dir.clone(),
        }
    }

    /// Syncs the WAL: every write made before this call is durable after it.
    pub fn sync_wal(&self) -> io::Result<()> {
        self.inner.flush_wal(true).map_err(io_error)
    }

    /// A raft-meta value.
    pub fn get_meta(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.inner.get_cf(self.cf(CF_RAFT_META), key).map_err(io_error)
    }

    /// Writes a raft-meta value and syncs it.
    pub fn put_meta_synced(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.inner
            .put_cf_opt(self.cf(CF_RAFT_META), key, value, &options)
            .map_err(io_error)
    }
}

impl Db {
    /// Calls `visit` with each row whose key starts with `prefix`, in key
    /// order, without collecting them; stops when `visit` returns false.
    pub fn for_each_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> io::Result<()> {
        for item in self.inner.prefix_iterator_cf(self.table(table), prefix) {
            let (key, value) = item.map_err(io_error)?;
            if !key.starts_with(prefix) || !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }
}

/// A [`Db`] that does not keep RocksDB open: background threads hold this,
/// so the database closes (and its threads stop) when its users are gone,
/// not at process exit, where RocksDB's threads would race the exit.
#[derive(Debug, Clone)]
pub struct WeakDb {
    inner: std::sync::Weak<DB>,
    dir: PathBuf,
}

impl WeakDb {
    /// The database, if it is still open.
    pub fn upgrade(&self) -> Option<Db> {
        self.inner.upgrade().map(|inner| Db {
            inner,
            dir: self.dir.clone(),
        })
    }
}

impl KvRead for Db {
    fn get(&self, table: Table, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.inner.get_cf(self.table(table), key).map_err(io_error)
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::new();
        self.for_each_prefix(table, prefix, |key, value| {
            rows.push((key.to_vec(), value.to_vec()));
            true
        })?;
        Ok(rows)
    }
}
