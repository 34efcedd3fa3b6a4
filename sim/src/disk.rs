//! A node's simulated disk: its Raft log, vote and state machine, as the
//! node wrote them and as the last completed sync left them. Like the real
//! node (log and tables share one RocksDB WAL), every write goes into one
//! journal in order, and a sync makes everything written so far durable; it
//! completes after a delay drawn from the run's RNG, and only then are
//! appends reported flushed to openraft. A crash keeps what was synced and,
//! like a write-ahead log whose unsynced tail reached the platter in part,
//! may keep a prefix of the writes since (a torn write: the rest is lost).
//! The vote, a built snapshot and an installed one are synced before they
//! return, as on a real node. A full disk refuses writes.
//!
//! With [`Bug::AckBeforeSync`] appends are reported flushed at once, while
//! their sync still waits: the bug the simulator must catch.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use omega_consensus::command::{Command, Response};
use omega_consensus::model::JobState;
use omega_consensus::state_machine::read;
use omega_consensus::state_machine::rules;
use omega_consensus::state_machine::tables::{MemTables, Overlay, Table};
use openraft::entry::RaftEntry;
use openraft::storage::{LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AsyncRuntime, EntryPayload};

use crate::types::{
    Entry, EntryResponder, IoFlushed, LogId, Runtime, SimConfig, Snapshot, SnapshotMeta, StoredMembership, Vote,
};
use crate::world::Shared;

/// A bug planted on purpose, to show that the simulator finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Appends are acknowledged before they are synced.
    AckBeforeSync,
    /// openraft's default: a restarted leader leads again without an
    /// election (what a real node had until the simulator showed that a
    /// power loss then loses acknowledged writes).
    LeaderRestore,
    /// The state machine accepts a job's completion whatever its fencing
    /// token: a worker whose lease lapsed and was claimed by another still
    /// records its result.
    StaleCompletion,
    /// The store's pack sync does nothing: the index points at chunk bytes
    /// that a crash loses.
    UnsyncedPack,
    /// A P2P viewer takes pieces without checking their hash.
    UnverifiedPieces,
    /// Watch state is read from whichever node is asked, without asking
    /// the leader (ReadIndex) first.
    LocalReads,
}

impl Bug {
    /// Every bug, with its name on the command line.
    pub const ALL: [(Bug, &'static str); 6] = [
        (Bug::AckBeforeSync, "ack-before-sync"),
        (Bug::LeaderRestore, "leader-restore"),
        (Bug::StaleCompletion, "stale-completion"),
        (Bug::UnsyncedPack, "unsynced-pack"),
        (Bug::UnverifiedPieces, "unverified-pieces"),
        (Bug::LocalReads, "local-reads"),
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        Bug::ALL
            .iter()
            .find(|(bug, _)| *bug == self)
            .map_or("unknown", |(_, name)| name)
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.iter().find(|(_, known)| *known == name).map(|(bug, _)| *bug)
    }
}

/// The log's part of a disk.
#[derive(Debug, Clone, Default)]
struct LogData {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

/// The state machine's part of a disk.
#[derive(Debug, Clone, Default)]
pub struct MachineData {
    /// The tables.
    pub tables: MemTables,
    applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

#[derive(Debug, Clone, Default)]
struct Contents {
    log: LogData,
    machine: MachineData,
}

/// One write, as it goes into the journal.
#[derive(Debug, Clone)]
enum Write {
    Vote(Vote),
    Committed(Option<LogId>),
    Append(Vec<Entry>),
    /// Drops the entries from this index on.
    TruncateFrom(u64),
    Purge(LogId),
    /// An entry applied: its table writes, and the membership it set.
    Apply {
        rows: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
        applied: LogId,
        membership: Option<StoredMembership>,
    },
    /// A snapshot built from the tables.
    Snapshot(SnapshotMeta, Vec<u8>),
    /// A snapshot installed in place of the tables.
    Install(MemTables, SnapshotMeta, Vec<u8>),
}

impl Contents {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Vote(vote) => self.log.vote = Some(*vote),
            Write::Committed(committed) => self.log.committed = *committed,
            Write::Append(entries) => {
                for entry in entries {
                    self.log.entries.insert(entry.index(), entry.clone());
                }
            }
            Write::TruncateFrom(from) => {
                let _dropped = self.log.entries.split_off(from);
            }
            Write::Purge(log_id) => {
                self.log.entries = self.log.entries.split_off(&(log_id.index() + 1));
                self.log.purged = Some(*log_id);
            }
            Write::Apply {
                rows,
                applied,
                membership,
            } => {
                self.machine.tables.apply(rows.clone());
                self.machine.applied = Some(*applied);
                if let Some(membership) = membership {
                    self.machine.membership = membership.clone();
                }
            }
            Write::Snapshot(meta, bytes) => self.machine.snapshot = Some((meta.clone(), bytes.clone())),
            Write::Install(tables, meta, bytes) => {
                self.machine.tables = tables.clone();
                self.machine.applied = meta.last_log_id;
                self.machine.membership = meta.last_membership.clone();
                self.machine.snapshot = Some((meta.clone(), bytes.clone()));
            }
        }
    }
}

/// One node's disk, kept across its crashes.
#[derive(Default)]
pub struct Disk {
    written: Contents,
    synced: Contents,
    /// What was written since the last sync, in order.
    journal: Vec<Write>,
    /// Appends waiting for the sync in progress.
    waiting: Vec<IoFlushed>,
    sync_pending: bool,
    /// Bumped by a crash, so that a sync begun before it is void.
    generation: u64,
    /// A full disk refuses writes.
    full: bool,
}

impl Debug for Disk {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Disk")
            .field("written", &self.written)
            .field("synced", &self.synced)
            .field("journal", &self.journal.len())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

/// A disk shared by the node's log store, its state machine and the world.
pub type SharedDisk = Arc<Mutex<Disk>>;

fn lock(disk: &SharedDisk) -> std::sync::MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn full_error() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "no space left on the simulated disk")
}

impl Disk {
    /// Writes since the last sync.
    pub fn unsynced(disk: &SharedDisk) -> usize {
        lock(disk).journal.len()
    }

    /// Loses what was written since the last sync but its first `kept`
    /// writes (power loss; `kept > 0` is a torn write).
    pub fn crash(disk: &SharedDisk, kept: usize) {
        let mut disk = lock(disk);
        let journal = std::mem::take(&mut disk.journal);
        for write in journal.iter().take(kept) {
            disk.synced.apply(write);
        }
        disk.written = disk.synced.clone();
        disk.waiting.clear();
        disk.sync_pending = false;
        disk.generation += 1;
    }

    /// Fills the disk (writes fail) or frees it.
    pub fn set_full(disk: &SharedDisk, full: bool) {
        lock(disk).full = full;
    }

    /// Writes `write`: at once to what the node reads, durable at the
    /// next sync.
    fn write(&mut self, write: Write) -> io::Result<()> {
        if self.full {
            return Err(full_error());
        }
        self.written.apply(&write);
        self.journal.push(write);
        Ok(())
    }

    /// The log ids of the synced log, by index.
    pub fn synced_log(disk: &SharedDisk) -> BTreeMap<u64, LogId> {
        lock(disk)
            .synced
            .log
            .entries
            .iter()
            .map(|(index, entry)| (*index, entry.log_id()))
            .collect()
    }

    /// Reads the tables as the node applied them, without a copy.
    pub fn read_tables<T>(disk: &SharedDisk, read: impl FnOnce(&MemTables) -> T) -> T {
        read(&lock(disk).written.machine.tables)
    }

    /// Makes everything written durable now.
    fn sync_now(&mut self) -> Vec<IoFlushed> {
        for write in std::mem::take(&mut self.journal) {
            self.synced.apply(&write);
        }
        self.sync_pending = false;
        std::mem::take(&mut self.waiting)
    }

    /// Writes `write` and syncs; the appends the sync made durable.
    fn write_synced(&mut self, write: Write) -> io::Result<Vec<IoFlushed>> {
        self.write(write)?;
        Ok(self.sync_now())
    }
}

fn flushed(callbacks: Vec<IoFlushed>) {
    for callback in callbacks {
        callback.io_completed(Ok(()));
    }
}

/// Starts a sync that completes after the disk's latency, unless one is
/// under way (it will carry what was written since).
fn schedule_sync(disk: &SharedDisk, shared: &Arc<Shared>) {
    let generation = {
        let mut locked = lock(disk);
        if locked.sync_pending {
            return;
        }
        locked.sync_pending = true;
        locked.generation
    };
    let delay = shared.sync_delay();
    let disk = disk.clone();
    let _task = Runtime::spawn(async move {
        tokio::time::sleep(delay).await;
        let callbacks = {
            let mut locked = lock(&disk);
            if locked.generation != generation {
                return;
            }
            locked.sync_now()
        };
        flushed(callbacks);
    });
}

/// The log store openraft writes through.
#[derive(Debug, Clone)]
pub struct LogStore {
    disk: SharedDisk,
    shared: Arc<Shared>,
}

impl LogStore {
    /// The log on `disk`.
    pub fn new(disk: SharedDisk, shared: Arc<Shared>) -> LogStore {
        LogStore { disk, shared }
    }
}

impl RaftLogReader<SimConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(start) => Bound::Included(*start),
            Bound::Excluded(start) => Bound::Excluded(*start),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => Bound::Included(*end),
            Bound::Excluded(end) => Bound::Excluded(*end),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(lock(&self.disk)
            .written
            .log
            .entries
            .range((start, end))
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.disk).written.log.vote)
    }
}

impl RaftLogStorage<SimConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<SimConfig>, io::Error> {
        let disk = lock(&self.disk);
        let log = &disk.written.log;
        let last = log.entries.values().next_back().map(RaftEntry::log_id);
        Ok(LogState {
            last_log_id: last.or(log.purged),
            last_purged_log_id: log.purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Synced before it returns, as a real node does (and with it every
        // write before it: one journal).
        let callbacks = lock(&self.disk).write_synced(Write::Vote(*vote))?;
        flushed(callbacks);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        lock(&self.disk).write(Write::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.disk).written.log.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IoFlushed) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        {
            let mut disk = lock(&self.disk);
            disk.write(Write::Append(entries.into_iter().collect()))?;
            if self.shared.bug == Some(Bug::AckBeforeSync) {
                drop(disk);
                callback.io_completed(Ok(()));
            } else {
                disk.waiting.push(callback);
            }
        }
        schedule_sync(&self.disk, &self.shared);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |log_id| log_id.index() + 1);
        lock(&self.disk).write(Write::TruncateFrom(from))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        lock(&self.disk).write(Write::Purge(log_id))
    }
}

/// The state machine: Omega's rules over tables in memory, on the disk.
#[derive(Debug, Clone)]
pub struct Machine {
    disk: SharedDisk,
    bug: Option<Bug>,
}

impl Machine {
    /// The state machine on `disk`, with `bug` planted if it is
    /// [`Bug::StaleCompletion`].
    pub fn new(disk: SharedDisk, bug: Option<Bug>) -> Machine {
        Machine { disk, bug }
    }
}

/// [`Bug::StaleCompletion`]: a completion carries whatever token the job's
/// lease has now, as if the state machine did not compare them.
fn plant_stale_completion(tables: &MemTables, command: &Command) -> Option<Command> {
    let Command::FinishJob {
        job, outcome, now_ms, ..
    } = command
    else {
        return None;
    };
    let current = read::job(tables, *job).ok()??;
    let JobState::Leased { fencing, .. } = current.state else {
        return None;
    };
    Some(Command::FinishJob {
        job: *job,
        fencing,
        outcome: outcome.clone(),
        now_ms: *now_ms,
    })
}

fn encode_tables(tables: &MemTables) -> Vec<u8> {
    let rows: Vec<(u8, &[u8], &[u8])> = tables
        .rows()
        .map(|(table, key, value)| (table.tag(), key, value))
        .collect();
    postcard::to_allocvec(&rows).unwrap_or_default()
}

fn decode_tables(bytes: &[u8]) -> io::Result<MemTables> {
    let rows: Vec<(u8, Vec<u8>, Vec<u8>)> =
        postcard::from_bytes(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    let mut tables = MemTables::default();
    for (tag, key, value) in rows {
        let table = Table::from_tag(tag)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unknown table {tag}")))?;
        tables.insert(table, key, value);
    }
    Ok(tables)
}

impl RaftStateMachine<SimConfig> for Machine {
    type SnapshotData = std::io::Cursor<Vec<u8>>;
    type SnapshotBuilder = Machine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let disk = lock(&self.disk);
        Ok((disk.written.machine.applied, disk.written.machine.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder, io::Error>> + Unpin + Send,
    {
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let mut disk = lock(&self.disk);
            let tables = &disk.written.machine.tables;
            let (response, rows, membership) = match &entry.payload {
                EntryPayload::Blank => (Response::Done, BTreeMap::new(), None),
                EntryPayload::Normal(command) => {
                    let planted = match self.bug {
                        Some(Bug::StaleCompletion) => plant_stale_completion(tables, command),
                        _ => None,
                    };
                    let command = planted.as_ref().unwrap_or(command);
                    let mut overlay = Overlay::new(tables);
                    let response = rules::apply_command(&mut overlay, log_id.index(), command)?;
                    (response, overlay.into_writes(), None)
                }
                EntryPayload::Membership(membership) => (
                    Response::Done,
                    BTreeMap::new(),
                    Some(StoredMembership::new(Some(log_id), membership.clone())),
                ),
            };
            disk.write(Write::Apply {
                rows,
                applied: log_id,
                membership,
            })?;
            if let Some(responder) = responder {
                responders.push((responder, response));
            }
        }
        for (responder, response) in responders {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Self::SnapshotData) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let tables = decode_tables(&bytes)?;
        // Installed snapshots are durable when this returns.
        let callbacks = lock(&self.disk).write_synced(Write::Install(tables, meta.clone(), bytes))?;
        flushed(callbacks);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.disk)
            .written
            .machine
            .snapshot
            .clone()
            .map(|(meta, bytes)| Snapshot {
                meta,
                snapshot: std::io::Cursor::new(bytes),
            }))
    }
}

impl RaftSnapshotBuilder<SimConfig> for Machine {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, bytes, callbacks) = {
            let mut disk = lock(&self.disk);
            let machine = &disk.written.machine;
            let meta = SnapshotMeta {
                last_log_id: machine.applied,
                last_membership: machine.membership.clone(),
            };
            let bytes = encode_tables(&machine.tables);
            // As on a real node, everything applied is synced before the
            // log may be purged behind the snapshot.
            let callbacks = disk.write_synced(Write::Snapshot(meta.clone(), bytes.clone()))?;
            (meta, bytes, callbacks)
        };
        flushed(callbacks);
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(bytes),
        })
    }
}

/// A sync's delay, within the run's disk latency: whole milliseconds, the
/// timer's resolution, so that no deadline is rounded.
pub fn sync_delay(rng: &mut impl rand::Rng, max_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(1..=max_ms.max(1)))
}
