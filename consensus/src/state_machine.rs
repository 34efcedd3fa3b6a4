//! The replicated state machine, kept in RocksDB tables (not rebuilt in
//! memory: it must hold a million catalog items).
//!
//! Applying writes one batch per call of `apply`, with the applied log id
//! in the same batch, without a sync of its own: the log's next synced
//! append (same database, same WAL) makes it durable, and a node that loses
//! it re-applies from its log. Before a snapshot is taken the WAL is synced,
//! so the log is only ever purged behind durable state.

pub mod read;
pub mod rules;
pub mod snapshot_file;
pub mod tables;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use futures_util::{Stream, TryStreamExt};
use rocksdb::{IteratorMode, WriteBatch};

use self::snapshot_file::{SnapshotReader, SnapshotWriter};
use self::tables::{KvRead, Overlay, Table};
use crate::codec::{decode, encode, io_error};
use crate::command::Response;
use crate::db::Db;
use crate::raft_types::{
    EntryPayload, EntryResponder, LogId, RaftEntry, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta,
    StoredMembership, TypeConfig,
};

/// Key of the last applied log id in [`Table::Meta`].
const APPLIED_KEY: &[u8] = b"applied";
/// Key of the last applied membership in [`Table::Meta`].
const MEMBERSHIP_KEY: &[u8] = b"membership";
/// Present while a snapshot is being loaded: names its file, so that a crash
/// mid-load is finished at the next open.
const INSTALLING_KEY: &[u8] = b"installing";
/// Bytes per write batch when loading a snapshot.
const LOAD_BATCH_BYTES: usize = 4 << 20;
/// Snapshot files kept (the newest ones).
const SNAPSHOTS_KEPT: usize = 2;

/// The state machine handed to openraft.
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: Db,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// Opens the state machine in `db`, keeping snapshots in `snapshot_dir`,
    /// and finishes a snapshot load that a crash interrupted.
    pub fn open(db: Db, snapshot_dir: &Path) -> io::Result<StateMachine> {
        std::fs::create_dir_all(snapshot_dir)?;
        for entry in std::fs::read_dir(snapshot_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        let machine = StateMachine {
            db,
            snapshot_dir: snapshot_dir.to_path_buf(),
        };
        if let Some(name) = machine.db.get(Table::Meta, INSTALLING_KEY)? {
            let name = String::from_utf8(name).map_err(io_error)?;
            tracing::warn!(snapshot = %name, "finishing a snapshot load interrupted by a crash");
            let meta = SnapshotReader::open(File::open(snapshot_dir.join(&name))?)?.1;
            load_snapshot(&machine.db, &snapshot_dir.join(&name), &name, &meta)?;
        }
        Ok(machine)
    }

    /// The database its tables live in (for reads).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The last applied log id and membership.
    pub fn applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        applied_in(&self.db)
    }
}

fn applied_in(tables: &impl KvRead) -> io::Result<(Option<LogId>, StoredMembership)> {
    applied_from(|key| tables.get(Table::Meta, key))
}

/// The applied log id and membership, from a reader of [`Table::Meta`]
/// (the live tables, or a RocksDB snapshot of them).
fn applied_from(meta: impl Fn(&[u8]) -> io::Result<Option<Vec<u8>>>) -> io::Result<(Option<LogId>, StoredMembership)> {
    let applied = match meta(APPLIED_KEY)? {
        Some(bytes) => decode("applied log id", &bytes)?,
        None => None,
    };
    let membership = match meta(MEMBERSHIP_KEY)? {
        Some(bytes) => decode("membership", &bytes)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// Writes an overlay's rows in one batch.
fn write_overlay(db: &Db, writes: std::collections::BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>) -> io::Result<()> {
    let mut batch = WriteBatch::default();
    for ((table, key), value) in writes {
        match value {
            Some(value) => batch.put_cf(db.table(table), key, value),
            None => batch.delete_cf(db.table(table), key),
        }
    }
    db.rocks().write(batch).map_err(io_error)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.applied()
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder, io::Error>> + Unpin + Send,
    {
        let db = self.db.clone();
        let mut overlay = Overlay::new(&db);
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(command) => rules::apply_command(&mut overlay, log_id.index(), command)?,
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    overlay.put(Table::Meta, MEMBERSHIP_KEY, encode(&stored));
                    Response::Done
                }
            };
            overlay.put(Table::Meta, APPLIED_KEY, encode(&Some(log_id)));
            if let Some(responder) = responder {
                responders.push((responder, response));
            }
        }
        write_overlay(&db, overlay.into_writes())?;
        for (responder, response) in responders {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: File) -> Result<(), io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || install(&db, &dir, &meta, snapshot))
            .await
            .map_err(io_error)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || current_snapshot(&dir))
            .await
            .map_err(io_error)?
    }
}

/// Builds snapshots from a consistent view of the tables.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Db,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || build(&db, &dir))
            .await
            .map_err(io_error)?
    }
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    format!(
        "{:020}.snap",
        meta.last_log_id.as_ref().map_or(0, |log_id| log_id.index())
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn build(db: &Db, dir: &Path) -> io::Result<Snapshot> {
    // Everything applied so far becomes durable before openraft may purge
    // the log behind this snapshot.
    db.sync_wal()?;
    let view = db.rocks().snapshot();
    let (last_log_id, last_membership) = applied_from(|key| view.get_cf(db.table(Table::Meta), key).map_err(io_error))?;
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };
    let name = snapshot_name(&meta);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut writer = SnapshotWriter::new(File::create(&tmp)?, &meta)?;
    for table in Table::ALL {
        for item in view.iterator_cf(db.table(table), IteratorMode::Start) {
            let (key, value) = item.map_err(io_error)?;
            if table == Table::Meta && &*key == INSTALLING_KEY {
                continue;
            }
            writer.record(table, &key, &value)?;
        }
    }
    let rows = writer.finish()?;
    std::fs::rename(&tmp, dir.join(&name))?;
    sync_dir(dir)?;
    prune_snapshots(dir)?;
    tracing::info!(snapshot = %name, rows, "built a snapshot");
    Ok(Snapshot {
        meta,
        snapshot: File::open(dir.join(&name))?,
    })
}

/// Snapshot files in `dir`, oldest first.
fn snapshot_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snap") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn prune_snapshots(dir: &Path) -> io::Result<()> {
    let names = snapshot_files(dir)?;
    for name in names.iter().take(names.len().saturating_sub(SNAPSHOTS_KEPT)) {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(())
}

fn current_snapshot(dir: &Path) -> io::Result<Option<Snapshot>> {
    let Some(name) = snapshot_files(dir)?.pop() else {
        return Ok(None);
    };
    let path = dir.join(name);
    let (_, meta) = SnapshotReader::open(File::open(&path)?)?;
    Ok(Some(Snapshot {
        meta,
        snapshot: File::open(&path)?,
    }))
}

fn install(db: &Db, dir: &Path, meta: &SnapshotMeta, mut received: File) -> io::Result<()> {
    use std::io::Seek;
    // Keep a verified copy under our own name first: it is the source of
    // the load, of a load resumed after a crash, and of our next sends.
    let name = snapshot_name(meta);
    let tmp = dir.join(format!("{name}.tmp"));
    received.rewind()?;
    {
        let mut copy = File::create(&tmp)?;
        std::io::copy(&mut received, &mut copy)?;
        copy.sync_all()?;
    }
    let (reader, file_meta) = SnapshotReader::open(File::open(&tmp)?)?;
    if file_meta.last_log_id != meta.last_log_id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot: the file's log id differs from the one announced",
        ));
    }
    reader.verify_to_end()?;
    let path = dir.join(&name);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    load_snapshot(db, &path, &name, meta)?;
    prune_snapshots(dir)
}

/// Replaces the tables with a verified snapshot file's rows.
fn load_snapshot(db: &Db, path: &Path, name: &str, meta: &SnapshotMeta) -> io::Result<()> {
    db.rocks()
        .put_cf(db.table(Table::Meta), INSTALLING_KEY, name.as_bytes())
        .map_err(io_error)?;
    db.sync_wal()?;
    for table in Table::ALL {
        let mut batch = WriteBatch::default();
        for item in db.rocks().iterator_cf(db.table(table), IteratorMode::Start) {
            let (key, _) = item.map_err(io_error)?;
            if table == Table::Meta && &*key == INSTALLING_KEY {
                continue;
            }
            batch.delete_cf(db.table(table), key);
            if batch.size_in_bytes() >= LOAD_BATCH_BYTES {
                db.rocks().write(std::mem::take(&mut batch)).map_err(io_error)?;
            }
        }
        db.rocks().write(batch).map_err(io_error)?;
    }
    let (mut reader, _) = SnapshotReader::open(File::open(path)?)?;
    let mut batch = WriteBatch::default();
    while let Some((table, key, value)) = reader.next_record()? {
        batch.put_cf(db.table(table), key, value);
        if batch.size_in_bytes() >= LOAD_BATCH_BYTES {
            db.rocks().write(std::mem::take(&mut batch)).map_err(io_error)?;
        }
    }
    batch.put_cf(db.table(Table::Meta), APPLIED_KEY, encode(&meta.last_log_id));
    batch.put_cf(db.table(Table::Meta), MEMBERSHIP_KEY, encode(&meta.last_membership));
    batch.delete_cf(db.table(Table::Meta), INSTALLING_KEY);
    db.rocks().write(batch).map_err(io_error)?;
    db.sync_wal()?;
    tracing::info!(snapshot = %name, "installed a snapshot");
    Ok(())
}
