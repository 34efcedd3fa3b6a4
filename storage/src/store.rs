//! The store: opening and recovery, the write state every change goes
//! through, and the figures it reports. Ingest, reads, tiering and
//! maintenance live in the child modules.
//!
//! **Invariant:** every change to the index is made while holding
//! [`Store::writer`], so read-modify-write of records (reference counts, pack
//! fill, counters) never races. Reads take no lock.

mod checks;
mod ingest;
mod maintain;
mod read;
mod tiering;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

pub use checks::{FileCheck, FileSpan};
pub use ingest::{IngestReport, Residency};
pub use maintain::{GcReport, ScrubFinding, ScrubReport};
pub use tiering::TierReport;

use crate::chunker::ChunkerConfig;
use crate::cold::{ColdTier, ObjectStoreCold};
use crate::error::{Result, StoreError};
use crate::ids::PackId;
use crate::index::{Batch, Family, Index, IndexBackend, RocksIndex};
use crate::packs::{DirPacks, HotPacks, PACK_TARGET_BYTES, PackBackend, PackWriter};
use crate::policy::TierPolicy;
use crate::records::{Counters, FORMAT_VERSION, PackRecord, StoreMeta, Tier};

const META_STORE: &[u8] = b"store";
const META_COUNTERS: &[u8] = b"counters";
const META_NEXT_PACK: &[u8] = b"next_pack";

/// How a store is set up. Chunk limits apply only when a store is created.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Chunk limits for a new store.
    pub chunker: ChunkerConfig,
    /// Budget of the hot tier; `None` keeps everything hot.
    pub hot_bytes_max: Option<u64>,
    /// Demotion starts above this share of the budget.
    pub high_watermark_percent: u8,
    /// Demotion stops at this share of the budget.
    pub low_watermark_percent: u8,
    /// The cold tier (`file:///...` or `s3://bucket/prefix`).
    pub cold_url: Option<String>,
    /// Options of the cold tier (e.g. `aws_endpoint`, `aws_allow_http`).
    pub cold_options: Vec<(String, String)>,
    /// A pack is sealed once it reaches this size.
    pub pack_target_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            chunker: ChunkerConfig::MEDIA,
            hot_bytes_max: None,
            high_watermark_percent: 90,
            low_watermark_percent: 75,
            cold_url: None,
            cold_options: Vec::new(),
            pack_target_bytes: PACK_TARGET_BYTES,
        }
    }
}

impl StoreConfig {
    fn validate(&self) -> Result<()> {
        self.chunker.validate().map_err(StoreError::Config)?;
        if self.pack_target_bytes == 0 {
            return Err(StoreError::Config("pack_target_bytes must be positive".into()));
        }
        if self.low_watermark_percent > self.high_watermark_percent || self.high_watermark_percent > 100 {
            return Err(StoreError::Config("watermarks must satisfy low <= high <= 100".into()));
        }
        Ok(())
    }
}

/// What a store keeps its index, packs and cold tier on.
#[derive(Debug)]
pub struct Backends {
    /// The index.
    pub index: Box<dyn IndexBackend>,
    /// The hot packs.
    pub packs: Arc<dyn PackBackend>,
    /// The cold tier, when `cold_url` names one (otherwise opened from the
    /// URL).
    pub cold: Option<Box<dyn ColdTier>>,
}

/// Store-wide figures.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StoreStats {
    /// Sum of the sizes of referenced blobs.
    pub logical_bytes: u64,
    /// Bytes of distinct stored chunks.
    pub stored_bytes: u64,
    /// Distinct stored chunks.
    pub chunks: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Bytes of packs in the hot tier.
    pub hot_bytes: u64,
    /// Bytes of packs in the cold tier.
    pub cold_bytes: u64,
    /// Bytes of blobs indexed in place.
    pub in_place_bytes: u64,
    /// Packs in the hot tier.
    pub hot_packs: u64,
    /// Packs in the cold tier.
    pub cold_packs: u64,
    /// Chunks quarantined by scrub.
    pub quarantined_chunks: u64,
}

impl StoreStats {
    /// What deduplication saves: the bytes of blobs copied into the store
    /// (indexed-in-place ones take no room here) over the bytes of their
    /// distinct chunks; `None` while nothing is stored.
    pub fn dedup_ratio(&self) -> Option<f64> {
        let copied = self.logical_bytes.saturating_sub(self.in_place_bytes);
        (self.stored_bytes > 0).then(|| copied as f64 / self.stored_bytes as f64)
    }
}

/// The state that changes to the store go through (see the module invariant).
#[derive(Debug)]
struct WriteState {
    open: Option<PackWriter>,
    next_pack: u64,
    counters: Counters,
}

/// The content-addressed store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    index: Index,
    hot: HotPacks,
    cold: Option<Box<dyn ColdTier>>,
    meta: StoreMeta,
    config: StoreConfig,
    writer: Mutex<WriteState>,
    policy: Mutex<TierPolicy>,
    /// Chunks of in-place files found good (see [`checks`]).
    checks: checks::FileChecks,
}

impl Store {
    /// Opens the store in `root`, creating it if needed, and repairs what an
    /// interrupted write left behind.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(root).map_err(|error| StoreError::io("create", root, error))?;
        let backends = Backends {
            index: Box::new(RocksIndex::open(&root.join("index"))?),
            packs: Arc::new(DirPacks::open(&root.join("packs"))?),
            cold: None,
        };
        Store::open_on(root, config, backends)
    }

    /// Opens the store on `backends` (named as if in `root`), and repairs
    /// what an interrupted write left behind. The simulator opens stores on
    /// simulated disks this way.
    pub fn open_on(root: &Path, config: StoreConfig, backends: Backends) -> Result<Self> {
        config.validate()?;
        let index = Index::on(backends.index);
        let hot = HotPacks::on(&root.join("packs"), backends.packs);
        let mut meta = match index.get::<StoreMeta>(Family::Meta, META_STORE)? {
            Some(meta) => meta,
            None => StoreMeta {
                format: FORMAT_VERSION,
                chunker: config.chunker,
                cold_url: None,
            },
        };
        if meta.format != FORMAT_VERSION {
            return Err(StoreError::Format {
                path: root.to_path_buf(),
                found: meta.format,
                expected: FORMAT_VERSION,
            });
        }
        let cold_url = resolve_cold_url(&index, &meta, config.cold_url.as_deref())?;
        let cold = match (&cold_url, backends.cold) {
            (Some(_), Some(given)) => Some(given),
            (Some(url), None) => Some(Box::new(ObjectStoreCold::open(url, &config.cold_options)?) as Box<dyn ColdTier>),
            (None, _) => None,
        };
        meta.cold_url = cold_url;
        let mut batch = index.batch();
        batch.put(Family::Meta, META_STORE, &meta);
        index.commit(batch)?;

        let counters = index.get::<Counters>(Family::Meta, META_COUNTERS)?.unwrap_or_default();
        let stored_next = index.get::<u64>(Family::Meta, META_NEXT_PACK)?.unwrap_or(0);
        let (open, next_pack) = recover_packs(&index, &hot, stored_next, config.pack_target_bytes)?;
        Ok(Store {
            root: root.to_path_buf(),
            index,
            hot,
            cold,
            meta,
            config,
            writer: Mutex::new(WriteState {
                open,
                next_pack,
                counters,
            }),
            policy: Mutex::new(TierPolicy::default()),
            checks: checks::FileChecks::default(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The chunk limits this store was created with.
    pub fn chunker(&self) -> ChunkerConfig {
        self.meta.chunker
    }

    /// The cold tier's URL, if one is in use.
    pub fn cold_url(&self) -> Option<&str> {
        self.meta.cold_url.as_deref()
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriteState> {
        // A panic while holding the lock leaves the on-disk state consistent
        // (the index only changes by whole batches), so the lock is reusable.
        self.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock_policy(&self) -> MutexGuard<'_, TierPolicy> {
        self.policy.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Changes whenever the store's index changes (a reference, a chunk's
    /// place, a pack's tier): where-bytes-lie answers such as
    /// [`Store::blob_file_spans`] may be cached while it stays the same.
    pub fn epoch(&self) -> u64 {
        self.index.epoch()
    }

    /// Store-wide figures.
    pub fn stats(&self) -> Result<StoreStats> {
        let counters = self.lock_writer().counters;
        let (mut hot_packs, mut cold_packs) = (0, 0);
        for item in self.index.scan::<PackRecord>(Family::Packs) {
            match item?.1.tier {
                Tier::Hot => hot_packs += 1,
                Tier::Cold => cold_packs += 1,
            }
        }
        let quarantined_chunks = self.index.scan::<String>(Family::Quarantine).count() as u64;
        Ok(StoreStats {
            logical_bytes: counters.logical_bytes,
            stored_bytes: counters.stored_bytes,
            chunks: counters.chunks,
            blobs: counters.blobs,
            hot_bytes: counters.hot_bytes,
            cold_bytes: counters.cold_bytes,
            in_place_bytes: counters.in_place_bytes,
            hot_packs,
            cold_packs,
            quarantined_chunks,
        })
    }

    /// Commits `batch` together with the new counters and pack counter. On
    /// failure the in-memory counters are left as they were.
    fn commit(&self, state: &mut WriteState, mut batch: Batch<'_>, counters: Counters) -> Result<()> {
        batch.put(Family::Meta, META_COUNTERS, &counters);
        batch.put(Family::Meta, META_NEXT_PACK, &state.next_pack);
        self.index.commit(batch)?;
        state.counters = counters;
        Ok(())
    }

    /// Appends a chunk to the open pack, opening a new pack when the current
    /// one is full, and notes what was written in `txn`.
    fn append_chunk(&self, state: &mut WriteState, txn: &mut PackTxn, bytes: &[u8]) -> Result<(PackId, u64)> {
        let len = bytes.len() as u64;
        let full = state
            .open
            .as_ref()
            .is_none_or(|open| !open.is_empty() && open.len() + len > self.config.pack_target_bytes);
        if full {
            if let Some(mut sealed) = state.open.take() {
                sealed.sync()?;
            }
            let pack = PackId(state.next_pack);
            state.next_pack += 1;
            state.open = Some(self.hot.create(pack)?);
            txn.created.push(pack);
        }
        let Some(open) = state.open.as_mut() else {
            unreachable!("a pack was opened above");
        };
        let offset = open.append(bytes)?;
        let touched = txn.touched.entry(open.pack()).or_default();
        touched.len = open.len();
        touched.appended += len;
        Ok((open.pack(), offset))
    }

    /// Makes the appended bytes of `txn` durable.
    fn sync_txn(&self, state: &mut WriteState) -> Result<()> {
        match state.open.as_mut() {
            Some(open) => open.sync(),
            None => Ok(()),
        }
    }

    /// Undoes the appends of `txn`: created packs go, the pack that was open
    /// at the start goes back to its committed length.
    fn rollback(&self, state: &mut WriteState, txn: PackTxn) {
        state.open = None;
        for pack in &txn.created {
            if let Err(error) = self.hot.remove(*pack) {
                tracing::warn!(%error, "rollback could not remove {pack}; it is removed at next open");
            }
        }
        if let Some((pack, len)) = txn.start {
            match self.hot.reopen(pack, len) {
                Ok(writer) => state.open = Some(writer),
                Err(error) => tracing::warn!(%error, "rollback could not reopen {pack}"),
            }
        }
    }

    /// Starts a transaction of appends from the current open pack.
    fn begin_txn(state: &WriteState) -> PackTxn {
        PackTxn {
            start: state.open.as_ref().map(|open| (open.pack(), open.len())),
            created: Vec::new(),
            touched: BTreeMap::new(),
        }
    }

    /// Adds the pack records that `txn` changed to `batch`.
    fn put_touched_packs(
        &self,
        batch: &mut Batch<'_>,
        txn: &PackTxn,
        live_added: &BTreeMap<PackId, u64>,
    ) -> Result<()> {
        for (pack, touched) in &txn.touched {
            let mut record = self
                .index
                .get::<PackRecord>(Family::Packs, &pack.key())?
                .unwrap_or(PackRecord {
                    tier: Tier::Hot,
                    len: 0,
                    live_bytes: 0,
                });
            debug_assert_eq!(record.tier, Tier::Hot, "only hot packs are appended to");
            record.len = touched.len;
            record.live_bytes += live_added.get(pack).copied().unwrap_or(0);
            assert!(record.live_bytes <= record.len, "{pack}: live bytes exceed its length");
            batch.put(Family::Packs, &pack.key(), &record);
        }
        Ok(())
    }
}

/// Appends made by one change, to commit or to roll back.
#[derive(Debug, Default)]
struct PackTxn {
    /// The open pack and its length when the change began.
    start: Option<(PackId, u64)>,
    /// Packs created by the change.
    created: Vec<PackId>,
    /// Packs appended to: their new length and the bytes appended.
    touched: BTreeMap<PackId, Touched>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Touched {
    len: u64,
    appended: u64,
}

/// Decides which cold tier URL to use: the configured one, or the one the
/// store already used. Changing it while cold packs exist would lose them.
fn resolve_cold_url(index: &Index, meta: &StoreMeta, configured: Option<&str>) -> Result<Option<String>> {
    match (meta.cold_url.as_deref(), configured) {
        (None, configured) => Ok(configured.map(str::to_string)),
        (Some(used), None) => Ok(Some(used.to_string())),
        (Some(used), Some(configured)) if used == configured => Ok(Some(used.to_string())),
        (Some(used), Some(configured)) => {
            for item in index.scan::<PackRecord>(Family::Packs) {
                if item?.1.tier == Tier::Cold {
                    return Err(StoreError::Config(format!(
                        "cold_url {configured:?} differs from {used:?}, which still holds packs"
                    )));
                }
            }
            Ok(Some(configured.to_string()))
        }
    }
}

/// Brings the hot directory in line with the index after a crash: files the
/// index never learned of are removed, bytes past a pack's committed length
/// are cut, hot copies of packs already moved to cold are removed. Returns the
/// pack to keep appending to and the next pack id.
fn recover_packs(
    index: &Index,
    hot: &HotPacks,
    stored_next: u64,
    pack_target_bytes: u64,
) -> Result<(Option<PackWriter>, u64)> {
    let mut records = BTreeMap::new();
    for item in index.scan::<PackRecord>(Family::Packs) {
        let (key, record) = item?;
        let pack = PackId::from_key(&key).ok_or_else(|| StoreError::Corrupt {
            what: "packs key".into(),
            detail: hex::encode(&key),
        })?;
        records.insert(pack, record);
    }
    let mut next_pack = stored_next;
    for (pack, file_len) in hot.list()? {
        next_pack = next_pack.max(pack.0 + 1);
        match records.get(&pack) {
            None => {
                tracing::info!("removing {pack}: written by an interrupted change");
                hot.remove(pack)?;
            }
            Some(record) if record.tier == Tier::Cold => {
                tracing::info!("removing hot copy of {pack}: it was moved to the cold tier");
                hot.remove(pack)?;
            }
            Some(record) if file_len > record.len => {
                tracing::info!("cutting {pack} back to its committed {} bytes", record.len);
                hot.truncate(pack, record.len)?;
            }
            Some(record) if file_len < record.len => {
                tracing::warn!("{pack} is shorter than its committed length; run `omega store scrub`");
            }
            Some(_) => {}
        }
    }
    if let Some((&last, _)) = records.iter().next_back() {
        next_pack = next_pack.max(last.0 + 1);
    }
    // Keep filling the newest hot pack if it has room.
    let open = match records.iter().next_back() {
        Some((&pack, record)) if record.tier == Tier::Hot && record.len < pack_target_bytes => {
            match hot.reopen(pack, record.len) {
                Ok(writer) => Some(writer),
                Err(error) => {
                    tracing::warn!(%error, "cannot append to {pack}; starting a new pack");
                    None
                }
            }
        }
        _ => None,
    };
    Ok((open, next_pack))
}
