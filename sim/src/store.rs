//! Every node's content-addressed store, on a simulated disk. The store is
//! the real [`omega_storage::Store`] (ingest with deduplication,
//! references, gc with compaction, tiering to a cold tier and promotion
//! back, scrub, and the repair at open); only its index, packs and cold
//! tier live in memory here, the index's commits durable when they return
//! (a synced WAL), pack bytes only once synced.
//!
//! Faults: a crash of the node crashes its store, losing pack bytes written
//! since the last sync, or keeping some of them, or leaving zeros in their
//! place (a torn write); a failpoint makes the disk fail from its k-th
//! operation on, as if the process died in the middle of an ingest, a gc
//! or a demotion, after which the node crashes; and a synced byte of a
//! pack or a cold object may be flipped (a bad sector).
//!
//! The workload is a node's: ingests under references, removals, reads,
//! gc, tiering, scrub, and a relay cache kept within its budget by
//! [`Store::trim_references`], as a node keeps what it relays.
//!
//! Checked, after every reopen and at the end: every reference whose
//! ingest was acknowledged (and not removed since) resolves to its blob and
//! reads back byte for byte (on a damaged disk, or fails naming a damaged
//! chunk: never other bytes); one whose ingest or removal failed either
//! does or is gone; and at the end scrub finds an undamaged store sound.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omega_storage::cold::ColdTier;
use omega_storage::index::{Change, Family, IndexBackend, Rows};
use omega_storage::packs::{PackBackend, PackFile};
use omega_storage::{Backends, BlobId, ChunkerConfig, PackId, Store, StoreConfig, StoreError};
use rand::Rng;

use crate::disk::Bug;
use crate::world::{Shared, locked};

/// Bytes of the pieces blobs are made of (shared pieces deduplicate).
const PIECE_BYTES: std::ops::Range<usize> = 300..3_000;
/// Distinct pieces per node.
const PIECES: usize = 12;
/// The relay cache: its references, budget and how many are looked at.
const RELAY_PREFIX: &str = "relay:";
const RELAY_MAX: u64 = 24 * 1024;
const RELAY_KEPT_MAX: usize = 10_000;

/// What is on one node's store disk, kept across its crashes.
#[derive(Debug, Default)]
struct DiskState {
    rows: BTreeMap<(Family, Vec<u8>), Vec<u8>>,
    packs: BTreeMap<PackId, Pack>,
    cold: BTreeMap<PackId, Vec<u8>>,
    /// Operations left before the disk fails (a failpoint).
    ops_left: Option<u32>,
    /// The disk failed: every operation fails until the node crashes.
    failed: bool,
    /// [`Bug::UnsyncedPack`]: a pack's sync does nothing.
    lying_sync: bool,
    /// A synced byte was damaged (a bad sector): reads of the chunk it
    /// falls in must fail, never return other bytes.
    damaged: bool,
}

#[derive(Debug, Default, Clone)]
struct Pack {
    bytes: Vec<u8>,
    synced: usize,
}

impl DiskState {
    /// Counts one operation against the failpoint.
    fn operate(&mut self) -> std::io::Result<()> {
        if let Some(left) = &mut self.ops_left {
            if *left == 0 {
                self.failed = true;
                self.ops_left = None;
            } else {
                *left -= 1;
            }
        }
        if self.failed {
            return Err(std::io::Error::other("the simulated disk failed"));
        }
        Ok(())
    }

    fn pack(&mut self, pack: PackId) -> std::io::Result<&mut Pack> {
        self.packs
            .get_mut(&pack)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{pack} missing")))
    }
}

/// One node's store disk: its index, hot packs and cold tier.
#[derive(Debug, Clone, Default)]
pub struct StoreDisk {
    state: Arc<Mutex<DiskState>>,
}

impl StoreDisk {
    /// A new, empty disk, with `bug` planted if it is [`Bug::UnsyncedPack`].
    pub fn new(bug: Option<Bug>) -> StoreDisk {
        let disk = StoreDisk::default();
        locked(&disk.state).lying_sync = bug == Some(Bug::UnsyncedPack);
        disk
    }

    /// The backends a store opens on.
    pub fn backends(&self) -> Backends {
        Backends {
            index: Box::new(self.clone()),
            packs: Arc::new(self.clone()),
            cold: Some(Box::new(SimCold(self.clone()))),
        }
    }

    /// Whether a failpoint made the disk fail.
    pub fn failed(&self) -> bool {
        locked(&self.state).failed
    }

    /// Flips one synced byte of a hot pack or a cold object (a bad sector
    /// or a bit flip at rest); where, in words, if there was one.
    pub fn damage(&self, rng: &mut impl Rng) -> Option<String> {
        let mut state = locked(&self.state);
        let mut places: Vec<(bool, PackId, usize)> = state
            .packs
            .iter()
            .filter(|(_, pack)| pack.synced > 0)
            .map(|(id, pack)| (true, *id, pack.synced))
            .collect();
        places.extend(
            state
                .cold
                .iter()
                .filter(|(_, bytes)| !bytes.is_empty())
                .map(|(id, bytes)| (false, *id, bytes.len())),
        );
        if places.is_empty() {
            return None;
        }
        let (hot, pack, len) = places[rng.random_range(0..places.len())];
        let offset = rng.random_range(0..len);
        let flip = rng.random_range(1..=255_u8);
        let byte = if hot {
            state.packs.get_mut(&pack).and_then(|file| file.bytes.get_mut(offset))
        } else {
            state.cold.get_mut(&pack).and_then(|bytes| bytes.get_mut(offset))
        };
        *byte? ^= flip;
        state.damaged = true;
        Some(format!("{} {pack} byte {offset}", if hot { "hot" } else { "cold" }))
    }

    /// Whether a byte was ever damaged.
    pub fn damaged(&self) -> bool {
        locked(&self.state).damaged
    }

    /// Runs `check` with no failpoint armed (the checker's reads are not
    /// the workload's), then arms it again.
    pub fn unfailing<T>(&self, check: impl FnOnce() -> T) -> T {
        let armed = locked(&self.state).ops_left.take();
        let result = check();
        let mut state = locked(&self.state);
        if state.ops_left.is_none() {
            state.ops_left = armed;
        }
        result
    }

    /// Takes back a failpoint that has not fired.
    pub fn clear_failpoint(&self) {
        locked(&self.state).ops_left = None;
    }

    /// Fails the disk after `ops` more operations.
    pub fn fail_after(&self, ops: u32) {
        locked(&self.state).ops_left = Some(ops);
    }

    /// The node crashed: unsynced pack bytes are lost, but for a prefix
    /// (`torn`: some of them, or zeros in their place). The failpoint is
    /// cleared for the next start.
    pub fn crash(&self, rng: &mut impl Rng, torn: f64) {
        let mut state = locked(&self.state);
        state.failed = false;
        state.ops_left = None;
        for pack in state.packs.values_mut() {
            let unsynced = pack.bytes.len() - pack.synced;
            let kept = if unsynced > 0 && rng.random_bool(torn) {
                rng.random_range(0..=unsynced)
            } else {
                0
            };
            pack.bytes.truncate(pack.synced + kept);
            if kept > 0 && rng.random_bool(0.5) {
                // The length reached the disk, the bytes did not.
                pack.bytes[pack.synced..].fill(0);
            }
            pack.synced = pack.bytes.len();
        }
    }
}

impl IndexBackend for StoreDisk {
    fn get(&self, family: Family, key: &[u8]) -> omega_storage::Result<Option<Vec<u8>>> {
        let mut state = locked(&self.state);
        state.operate().map_err(index_error)?;
        Ok(state.rows.get(&(family, key.to_vec())).cloned())
    }

    fn scan_from<'a>(&'a self, family: Family, start: &[u8]) -> Rows<'a> {
        let mut state = locked(&self.state);
        if let Err(error) = state.operate() {
            return Box::new(std::iter::once(Err(index_error(error))));
        }
        // A copy: the caller iterates after the lock is let go.
        let rows: Vec<(Box<[u8]>, Vec<u8>)> = state
            .rows
            .range((family, start.to_vec())..)
            .take_while(|((row_family, _), _)| *row_family == family)
            .map(|((_, key), value)| (key.clone().into_boxed_slice(), value.clone()))
            .collect();
        Box::new(rows.into_iter().map(Ok))
    }

    fn commit(&self, changes: Vec<Change>) -> omega_storage::Result<()> {
        let mut state = locked(&self.state);
        state.operate().map_err(index_error)?;
        for change in changes {
            let key = (change.family, change.key);
            match change.value {
                Some(value) => state.rows.insert(key, value),
                None => state.rows.remove(&key),
            };
        }
        Ok(())
    }
}

fn index_error(error: std::io::Error) -> StoreError {
    StoreError::Index(error.to_string())
}

impl PackBackend for StoreDisk {
    fn read_at(&self, pack: PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let mut state = locked(&self.state);
        state.operate()?;
        let bytes = &state.pack(pack)?.bytes;
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        bytes
            .get(start..start + len as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short pack"))
    }

    fn read_all(&self, pack: PackId) -> std::io::Result<Vec<u8>> {
        let mut state = locked(&self.state);
        state.operate()?;
        Ok(state.pack(pack)?.bytes.clone())
    }

    fn list(&self) -> std::io::Result<Vec<(PackId, u64)>> {
        let mut state = locked(&self.state);
        state.operate()?;
        Ok(state
            .packs
            .iter()
            .map(|(pack, file)| (*pack, file.bytes.len() as u64))
            .collect())
    }

    fn remove(&self, pack: PackId) -> std::io::Result<()> {
        let mut state = locked(&self.state);
        state.operate()?;
        state.packs.remove(&pack);
        Ok(())
    }

    fn truncate(&self, pack: PackId, len: u64) -> std::io::Result<()> {
        let mut state = locked(&self.state);
        state.operate()?;
        let file = state.pack(pack)?;
        file.bytes
            .resize(usize::try_from(len).map_err(std::io::Error::other)?, 0);
        file.synced = file.bytes.len();
        Ok(())
    }

    fn create(&self, pack: PackId) -> std::io::Result<Box<dyn PackFile>> {
        let mut state = locked(&self.state);
        state.operate()?;
        if state.packs.contains_key(&pack) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{pack} exists"),
            ));
        }
        state.packs.insert(pack, Pack::default());
        Ok(Box::new(SimPackFile {
            disk: self.clone(),
            pack,
        }))
    }

    fn append_after(&self, pack: PackId, len: u64) -> std::io::Result<Box<dyn PackFile>> {
        let mut state = locked(&self.state);
        state.operate()?;
        let file = state.pack(pack)?;
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        if file.bytes.len() != len {
            // Cut and synced, as a node does.
            file.bytes.resize(len, 0);
            file.synced = len;
        }
        Ok(Box::new(SimPackFile {
            disk: self.clone(),
            pack,
        }))
    }
}

/// A pack open for appending on the simulated disk.
#[derive(Debug)]
struct SimPackFile {
    disk: StoreDisk,
    pack: PackId,
}

impl PackFile for SimPackFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = locked(&self.disk.state);
        state.operate()?;
        let file = state.pack(self.pack)?;
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        if file.bytes.len() < start + bytes.len() {
            file.bytes.resize(start + bytes.len(), 0);
        }
        file.bytes[start..start + bytes.len()].copy_from_slice(bytes);
        // Rewriting synced bytes makes them unsynced again.
        file.synced = file.synced.min(start);
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let mut state = locked(&self.disk.state);
        state.operate()?;
        let lying = state.lying_sync;
        let file = state.pack(self.pack)?;
        if !lying {
            file.synced = file.bytes.len();
        }
        Ok(())
    }
}

/// The cold tier: an object store, durable when a call returns.
#[derive(Debug)]
struct SimCold(StoreDisk);

impl SimCold {
    fn with<T>(&self, pack: PackId, read: impl FnOnce(&Vec<u8>) -> T) -> omega_storage::Result<T> {
        let mut state = locked(&self.0.state);
        state.operate().map_err(|error| cold_error(pack, error))?;
        state.cold.get(&pack).map(read).ok_or_else(|| {
            cold_error(
                pack,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not in the cold tier"),
            )
        })
    }
}

fn cold_error(pack: PackId, error: std::io::Error) -> StoreError {
    StoreError::io("cold", Path::new("sim-cold").join(pack.file_name()), error)
}

impl ColdTier for SimCold {
    fn put(&self, pack: PackId, bytes: Vec<u8>) -> omega_storage::Result<()> {
        let mut state = locked(&self.0.state);
        state.operate().map_err(|error| cold_error(pack, error))?;
        state.cold.insert(pack, bytes);
        Ok(())
    }

    fn get(&self, pack: PackId) -> omega_storage::Result<Vec<u8>> {
        self.with(pack, Clone::clone)
    }

    fn get_range(&self, pack: PackId, offset: u64, len: u32) -> omega_storage::Result<Vec<u8>> {
        let range = self.with(pack, |bytes| {
            let start = offset as usize;
            bytes.get(start..start + len as usize).map(<[u8]>::to_vec)
        })?;
        range.ok_or_else(|| {
            cold_error(
                pack,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short pack"),
            )
        })
    }

    fn delete(&self, pack: PackId) -> omega_storage::Result<()> {
        let mut state = locked(&self.0.state);
        state.operate().map_err(|error| cold_error(pack, error))?;
        state.cold.remove(&pack);
        Ok(())
    }

    fn url(&self) -> &str {
        "sim://cold"
    }
}

/// A store small enough that a run fills packs, compacts them and moves
/// them between tiers: tiny chunks, packs and hot budget.
fn config() -> StoreConfig {
    StoreConfig {
        chunker: ChunkerConfig {
            min_bytes: 64,
            avg_bytes: 256,
            max_bytes: 1024,
        },
        hot_bytes_max: Some(48 * 1024),
        high_watermark_percent: 90,
        low_watermark_percent: 60,
        cold_url: Some("sim://cold".into()),
        cold_options: Vec::new(),
        pack_target_bytes: 8 * 1024,
    }
}

/// Opens node `node`'s store on `disk`, repairing what a crash left.
pub fn open(node: u64, disk: &StoreDisk) -> omega_storage::Result<Store> {
    let root = Path::new("/sim").join(format!("node-{node}")).join("store");
    Store::open_on(&root, config(), disk.backends())
}

/// What one node's clients were told about its store.
#[derive(Debug, Default)]
pub struct StoreModel {
    /// References acknowledged, with their content.
    acked: BTreeMap<String, Vec<u8>>,
    /// References whose ingest or removal failed: present with this
    /// content, or absent.
    maybe: BTreeMap<String, Vec<u8>>,
    next: u64,
}

/// The references of a node's store that must (or may) read back, checked
/// against `store`; what does not.
pub fn verify(node: u64, store: &Store, disk: &StoreDisk, model: &StoreModel) -> Vec<String> {
    let mut violations = Vec::new();
    for (name, content) in &model.acked {
        if let Err(problem) = reads_back(store, disk, name, content) {
            violations.push(format!("store of node {node}: acknowledged {name}: {problem}"));
        }
    }
    for (name, content) in &model.maybe {
        match store.resolve_reference(name) {
            Ok(None) => {}
            Ok(Some(_)) => {
                if let Err(problem) = reads_back(store, disk, name, content) {
                    violations.push(format!("store of node {node}: {name} (outcome unknown): {problem}"));
                }
            }
            Err(error) => violations.push(format!("store of node {node}: {name}: {error}")),
        }
    }
    violations
}

/// Whether `name` reads back as `content`. On a disk with a damaged byte a
/// read may instead fail naming the damaged chunk: a read never returns
/// other bytes.
fn reads_back(store: &Store, disk: &StoreDisk, name: &str, content: &[u8]) -> Result<(), String> {
    let blob = store
        .resolve_reference(name)
        .map_err(|error| error.to_string())?
        .ok_or("the reference is gone")?;
    if blob != BlobId::of(content) {
        return Err(format!("names {blob}, not its content"));
    }
    let read = match store.read_range(&blob, 0, content.len() as u64) {
        Ok(read) => read,
        Err(error) if disk.damaged() && damage_reported(&error) => return Ok(()),
        Err(error) => return Err(format!("a chunk is missing or damaged: {error}")),
    };
    if read != content {
        return Err("read back different bytes".into());
    }
    Ok(())
}

/// Whether `error` says a chunk's bytes are damaged (as they may be after
/// [`StoreDisk::damage`]).
fn damage_reported(error: &StoreError) -> bool {
    matches!(error, StoreError::CorruptChunk { .. } | StoreError::Quarantined { .. })
}

/// The pieces node `node`'s blobs are made of.
pub fn pieces(rng: &mut impl Rng) -> Vec<Vec<u8>> {
    (0..PIECES)
        .map(|_| {
            let len = rng.random_range(PIECE_BYTES);
            (0..len).map(|_| rng.random()).collect()
        })
        .collect()
}

/// One move of node `node`'s store client: ingest, remove, read back, gc,
/// tier or scrub. A failure while the disk is sound is a violation; one
/// after the disk failed is what a crash mid-operation looks like, and the
/// node is about to go down.
pub fn step(
    node: u64,
    shared: &Shared,
    store: &Store,
    disk: &StoreDisk,
    model: &mut StoreModel,
    pieces: &[Vec<u8>],
) -> Vec<String> {
    let (op, pick, content) = {
        let mut rng = shared.rng();
        let op = rng.random_range(0..100);
        let pick = rng.random::<u64>();
        let parts = rng.random_range(1..=5);
        let content: Vec<u8> = (0..parts)
            .flat_map(|_| pieces[rng.random_range(0..pieces.len())].iter().copied())
            .collect();
        (op, pick, content)
    };
    let mut violations = Vec::new();
    let mut failed = |what: &str, error: &StoreError| {
        // A failed disk, or damage the store reported as such, is expected.
        let expected = disk.failed() || (disk.damaged() && damage_reported(error));
        if !expected {
            violations.push(format!("store of node {node}: {what} failed on a sound disk: {error}"));
        }
    };
    let acked: Vec<String> = model.acked.keys().cloned().collect();
    let chosen = (!acked.is_empty()).then(|| acked[(pick % acked.len() as u64) as usize].clone());
    match op {
        0..40 => {
            let name = format!("r{node}-{}", model.next);
            model.next += 1;
            match store.ingest_bytes(&content, &name) {
                Ok(_) => {
                    model.acked.insert(name, content);
                }
                Err(error) => {
                    failed("ingest", &error);
                    model.maybe.insert(name, content);
                }
            }
        }
        40..50 => {
            // A node keeping what it relayed: a cache under `relay:`, the
            // oldest dropped past its budget (as `omega-node`'s relay).
            let name = format!("{RELAY_PREFIX}{:016}", model.next);
            model.next += 1;
            let kept = store
                .ingest_bytes(&content, &name)
                .and_then(|_| store.trim_references(RELAY_PREFIX, RELAY_MAX, RELAY_KEPT_MAX));
            match kept {
                Ok(_) if !disk.failed() => violations.extend(
                    disk.unfailing(|| relay_within_budget(store, disk, &name, &content))
                        .err()
                        .map(|problem| format!("store of node {node}: relay cache: {problem}")),
                ),
                Ok(_) => {}
                Err(error) => failed("relay keep", &error),
            }
        }
        50..62 => {
            if let Some(name) = chosen {
                let content = model.acked.remove(&name).unwrap_or_default();
                if let Err(error) = store.remove_reference(&name) {
                    failed("remove", &error);
                    model.maybe.insert(name, content);
                }
            }
        }
        62..85 => {
            if let Some(name) = chosen
                && !disk.failed()
                && let Some(content) = model.acked.get(&name)
                && let Err(problem) = reads_back(store, disk, &name, content)
                && !disk.failed()
            {
                violations.push(format!("store of node {node}: acknowledged {name}: {problem}"));
            }
        }
        85..93 => {
            if let Err(error) = store.gc() {
                failed("gc", &error);
            }
        }
        93..98 => {
            if let Err(error) = store.tier_run() {
                failed("tiering", &error);
            }
        }
        _ => match store.scrub() {
            Ok(report) if !report.is_clean() && !disk.failed() && !disk.damaged() => {
                violations.push(format!("store of node {node}: scrub found {:?}", report.findings));
            }
            Ok(_) => {}
            Err(error) => failed("scrub", &error),
        },
    }
    shared.event(format_args!("store {node} op {op}"));
    violations
}

/// Whether the relay cache is within its budget and still holds `newest`
/// (which fits it), reading back as `content`.
fn relay_within_budget(store: &Store, disk: &StoreDisk, newest: &str, content: &[u8]) -> Result<(), String> {
    let kept = store
        .references(RELAY_PREFIX, RELAY_KEPT_MAX)
        .map_err(|error| error.to_string())?;
    let mut total = 0;
    for (_, blob) in &kept {
        total += store.blob(blob).map_err(|error| error.to_string())?.size;
    }
    if total > RELAY_MAX {
        return Err(format!("{total} bytes kept, over its {RELAY_MAX}"));
    }
    if content.len() as u64 <= RELAY_MAX {
        reads_back(store, disk, newest, content).map_err(|problem| format!("the newest entry: {problem}"))?;
    }
    Ok(())
}

/// How long a store client waits between moves.
pub fn think(shared: &Shared) -> Duration {
    Duration::from_millis(shared.rng().random_range(20..200))
}
