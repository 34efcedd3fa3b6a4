//! The Raft log and vote in RocksDB.
//!
//! An append writes its entries in one batch (readable at once) and hands
//! the flush callback to the WAL syncer, which syncs once for every append
//! queued behind it (group commit) and only then tells openraft the entries
//! are flushed. The vote is synced before `save_vote` returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::codec::{decode, encode, id_key, io_error, key_id};
use crate::db::{CF_LOG, CF_RAFT_META, Db, WeakDb};
use crate::raft_types::{
    Entry, IoFlushed, LogId, LogState, RaftEntry, RaftLogReader, RaftLogStorage, TypeConfig, Vote,
};

const VOTE_KEY: &[u8] = b"vote";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

/// Appends waiting for their sync, at most.
const SYNC_QUEUE_MAX: usize = 4096;

/// The log store handed to openraft.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
    syncer: mpsc::SyncSender<IoFlushed>,
}

impl LogStore {
    /// Opens the log in `db` and starts its WAL syncer thread.
    pub fn new(db: Db) -> io::Result<LogStore> {
        let (syncer, queue) = mpsc::sync_channel::<IoFlushed>(SYNC_QUEUE_MAX);
        let sync_db = db.downgrade();
        std::thread::Builder::new()
            .name("omega-wal-sync".into())
            .spawn(move || run_syncer(&sync_db, &queue))?;
        Ok(LogStore { db, syncer })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        self.db
            .get_meta(key)?
            .map(|bytes| decode(std::str::from_utf8(key).unwrap_or("raft meta"), &bytes))
            .transpose()
    }
}

/// Syncs the WAL for every callback queued, as few times as it can: all
/// callbacks waiting when a sync starts are answered by it.
fn run_syncer(db: &WeakDb, queue: &mpsc::Receiver<IoFlushed>) {
    while let Ok(first) = queue.recv() {
        let mut waiting = vec![first];
        while let Ok(next) = queue.try_recv() {
            waiting.push(next);
        }
        // Held only for the sync: the thread must not keep the database
        // open once its users dropped it.
        let result = match db.upgrade() {
            Some(db) => db.sync_wal(),
            None => Err(io::Error::other("the database was closed")),
        };
        for callback in waiting {
            callback.io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|error| io::Error::new(error.kind(), error.to_string())),
            );
        }
    }
}

fn start_key<RB: RangeBounds<u64>>(range: &RB) -> u64 {
    match range.start_bound() {
        Bound::Included(start) => *start,
        Bound::Excluded(start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = id_key(start_key(&range));
        let mut entries = Vec::new();
        let cf = self.db.cf(CF_LOG);
        for item in self
            .db
            .rocks()
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item.map_err(io_error)?;
            let index = key_id(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode("log entry", &value)?;
            if entry.index() != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry at key {index} has index {}", entry.index()),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        let last = self
            .db
            .rocks()
            .iterator_cf(self.db.cf(CF_LOG), IteratorMode::End)
            .next();
        let last_log_id = match last {
            None => None,
            Some(item) => {
                let (_, value) = item.map_err(io_error)?;
                Some(decode::<Entry>("log entry", &value)?.log_id())
            }
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED_KEY)?;
        Ok(LogState {
            last_log_id: last_log_id.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let db = self.db.clone();
        let bytes = encode(vote);
        tokio::task::spawn_blocking(move || db.put_meta_synced(VOTE_KEY, &bytes))
            .await
            .map_err(io_error)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: it rides on the next synced append. A lost value only
        // delays re-applying until the leader's next heartbeat.
        self.db
            .rocks()
            .put_cf(self.db.cf(CF_RAFT_META), COMMITTED_KEY, encode(&committed))
            .map_err(io_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IoFlushed) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, id_key(entry.index()), encode(&entry));
        }
        self.db.rocks().write(batch).map_err(io_error)?;
        self.syncer
            .send(callback)
            .map_err(|_| io::Error::other("the WAL syncer stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |log_id| log_id.index() + 1);
        // Not synced: entries after `last_log_id` were never committed, and
        // the WAL replays this delete before any later append.
        self.db
            .rocks()
            .delete_range_cf(self.db.cf(CF_LOG), id_key(from), id_key(u64::MAX))
            .map_err(io_error)?;
        // delete_range's end is exclusive: the entry at u64::MAX (never
        // written in practice) goes too.
        self.db
            .rocks()
            .delete_cf(self.db.cf(CF_LOG), id_key(u64::MAX))
            .map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Last purged first: entries at or before it are ignored from then
        // on, so a crash between the two writes leaves no hole.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_RAFT_META), LAST_PURGED_KEY, encode(&log_id));
        batch.delete_range_cf(self.db.cf(CF_LOG), id_key(0), id_key(log_id.index() + 1));
        self.db.rocks().write(batch).map_err(io_error)
    }
}
