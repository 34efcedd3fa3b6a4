//! Maintenance: garbage collection and scrub.
//!
//! `gc` removes blobs that no reference names, drops the chunks that only
//! they used, deletes empty packs and rewrites hot packs that are mostly
//! garbage. `scrub` reads every stored chunk in both tiers and checks it
//! against its hash, quarantines the bad ones, and checks the index against
//! itself (references, reference counts, pack fill, counters).
//!
//! Scrub reads and verifies packs without the writer lock, so that ingests go
//! on during a run; it takes the lock per pack to quarantine (only chunks that
//! still live where they were read) and once for the index's own check. Only
//! a hash mismatch or missing bytes quarantine a chunk: a pack that cannot be
//! read (EIO, EMFILE, a timeout) is tried again and then reported as an I/O
//! error, its chunks left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::{PackTxn, Store, WriteState};
use crate::error::{Result, StoreError};
use crate::ids::{BlobId, ChunkId, PackId};
use crate::index::Family;
use crate::records::{BlobRecord, ChunkRecord, Counters, FileRecord, PackRecord, Tier, split_location_key};

/// What `gc` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs removed because no reference named them.
    pub blobs_removed: u64,
    /// Chunks removed because no stored blob used them.
    pub chunks_removed: u64,
    /// Packs deleted because they held nothing live.
    pub packs_removed: u64,
    /// Packs rewritten because they were mostly garbage.
    pub packs_compacted: u64,
    /// Pack bytes given back.
    pub bytes_reclaimed: u64,
}

/// One problem found by scrub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScrubFinding {
    /// What kind of problem: `corrupt_chunk`, `missing_chunk`,
    /// `missing_blob`, `index` or `file_changed`.
    pub kind: &'static str,
    /// A sentence saying what is wrong and where.
    pub detail: String,
}

/// What `scrub` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScrubReport {
    /// Stored chunks read and verified.
    pub chunks_checked: u64,
    /// Bytes read and verified.
    pub bytes_checked: u64,
    /// Chunks newly quarantined.
    pub quarantined: u64,
    /// Every problem found.
    pub findings: Vec<ScrubFinding>,
    /// Packs that could not be read, even after retries (an I/O error, a
    /// timeout of the cold tier): a sentence each. Their chunks were not
    /// verified, and not quarantined either.
    pub io_errors: Vec<String>,
}

impl ScrubReport {
    /// True when the store's own data is verified sound. In-place files that
    /// their owner changed are reported but do not make the store unclean; a
    /// pack that could not be read does, since nothing vouches for it.
    pub fn is_clean(&self) -> bool {
        self.io_errors.is_empty() && self.findings.iter().all(|finding| finding.kind == "file_changed")
    }

    fn find(&mut self, kind: &'static str, detail: String) {
        tracing::warn!(kind, "{detail}");
        self.findings.push(ScrubFinding { kind, detail });
    }
}

/// Hot packs whose live share is below this percentage are rewritten by gc.
const COMPACT_LIVE_PERCENT: u64 = 50;

/// Reads of one pack scrub tries before it reports an I/O error.
const SCRUB_READ_TRIES: u32 = 3;

/// Scrub waits this long times the number of failed tries before reading a
/// pack again (EMFILE and EIO under load often pass; S3 retries inside
/// object_store already).
const SCRUB_RETRY_DELAY_MS: u64 = 20;

/// The stored chunks, grouped by the pack they point into.
type ChunksByPack = BTreeMap<PackId, Vec<(ChunkId, ChunkRecord)>>;

/// How reading a pack for scrub ended.
#[derive(Debug)]
enum PackRead {
    /// The pack's record and its bytes.
    Read(PackRecord, Vec<u8>),
    /// The index has no record of the pack.
    Unknown,
    /// Every try failed; the last error.
    Failed(StoreError),
}

/// A chunk that looked bad when its pack was read; quarantined only if it
/// still lives where it was read once the writer lock is held.
#[derive(Debug)]
struct Suspect {
    chunk: ChunkId,
    record: ChunkRecord,
    /// The finding's kind and sentence; `None` when the index check reports
    /// the problem (a pack the index does not know).
    finding: Option<(&'static str, String)>,
    /// Kept in the quarantine row.
    reason: String,
}

/// Verifies each chunk of `pack` against the pack's bytes; returns the ones
/// whose bytes are missing or do not match their hash.
fn verify_chunks(
    pack: PackId,
    record: &PackRecord,
    bytes: &[u8],
    chunks: &[(ChunkId, ChunkRecord)],
    report: &mut ScrubReport,
) -> Vec<Suspect> {
    let mut suspects = Vec::new();
    for (chunk, chunk_record) in chunks {
        let start = chunk_record.offset as usize;
        let end = start + chunk_record.len as usize;
        if end > bytes.len() || chunk_record.offset + u64::from(chunk_record.len) > record.len {
            suspects.push(Suspect {
                chunk: *chunk,
                record: *chunk_record,
                finding: Some(("missing_chunk", format!("chunk {chunk} lies past the end of {pack}"))),
                reason: format!("missing from {pack}"),
            });
            continue;
        }
        report.chunks_checked += 1;
        report.bytes_checked += u64::from(chunk_record.len);
        if ChunkId::of(&bytes[start..end]) != *chunk {
            suspects.push(Suspect {
                chunk: *chunk,
                record: *chunk_record,
                finding: Some((
                    "corrupt_chunk",
                    format!("chunk {chunk} in {pack} at offset {start} is corrupt"),
                )),
                reason: format!("corrupt in {pack}"),
            });
        }
    }
    suspects
}

impl Store {
    /// Keeps the references under `prefix` (a cache: callers put the time
    /// in the name, so name order is age order) to blobs totalling at most
    /// `max_bytes`, dropping the oldest of the first `limit` first, then
    /// collects what they named if any went. The blobs whose references
    /// were dropped.
    pub fn trim_references(&self, prefix: &str, max_bytes: u64, limit: usize) -> Result<Vec<BlobId>> {
        let kept = self.references(prefix, limit)?;
        let mut sizes = Vec::with_capacity(kept.len());
        for (_, blob) in &kept {
            sizes.push(self.blob(blob).map(|record| record.size).unwrap_or(0));
        }
        let mut total: u64 = sizes.iter().sum();
        let mut dropped = Vec::new();
        for ((reference, _), size) in kept.iter().zip(sizes) {
            if total <= max_bytes {
                break;
            }
            if let Some(blob) = self.remove_reference(reference)? {
                dropped.push(blob);
            }
            total -= size;
        }
        if !dropped.is_empty() {
            self.gc()?;
        }
        Ok(dropped)
    }

    /// Removes unreferenced blobs, unused chunks and empty packs, and
    /// compacts mostly-garbage packs (cold ones into the hot tier).
    pub fn gc(&self) -> Result<GcReport> {
        let mut state = self.lock_writer();
        let mut report = GcReport::default();
        let live: HashSet<BlobId> = self
            .index
            .scan::<BlobId>(Family::Refs)
            .map(|item| item.map(|(_, blob)| blob))
            .collect::<Result<_>>()?;
        let mut dead = Vec::new();
        for item in self.index.scan::<BlobRecord>(Family::Blobs) {
            let (key, record) = item?;
            if let Some(blob) = BlobId::from_slice(&key)
                && !live.contains(&blob)
            {
                dead.push((blob, record));
            }
        }
        for (blob, record) in dead {
            report.chunks_removed += self.remove_blob(&mut state, &blob, &record)?;
            report.blobs_removed += 1;
        }
        self.remove_empty_packs(&mut state, &mut report)?;
        self.compact_packs(&mut state, &mut report)?;
        Ok(report)
    }

    /// Removes one blob, its locations and its chunk references in one batch.
    /// Returns the number of chunks it was the last user of.
    fn remove_blob(&self, state: &mut WriteState, blob: &BlobId, record: &BlobRecord) -> Result<u64> {
        let mut counters = state.counters;
        let mut batch = self.index.batch();
        let mut removed = 0;
        let mut pack_live: BTreeMap<PackId, u64> = BTreeMap::new();
        if record.stored {
            for (chunk, len) in record.distinct_chunks() {
                let Some(mut chunk_record) = self.index.get::<ChunkRecord>(Family::Chunks, chunk.as_bytes())? else {
                    continue;
                };
                chunk_record.refs = chunk_record.refs.saturating_sub(1);
                if chunk_record.refs == 0 {
                    batch.delete(Family::Chunks, chunk.as_bytes());
                    batch.delete(Family::Quarantine, chunk.as_bytes());
                    *pack_live.entry(chunk_record.pack).or_default() += u64::from(len);
                    counters.chunks = counters.chunks.saturating_sub(1);
                    counters.stored_bytes = counters.stored_bytes.saturating_sub(u64::from(len));
                    removed += 1;
                } else {
                    batch.put(Family::Chunks, chunk.as_bytes(), &chunk_record);
                }
            }
        }
        for (pack, freed) in pack_live {
            if let Some(mut pack_record) = self.index.get::<PackRecord>(Family::Packs, &pack.key())? {
                pack_record.live_bytes = pack_record.live_bytes.saturating_sub(freed);
                batch.put(Family::Packs, &pack.key(), &pack_record);
            }
        }
        for item in self.index.scan_prefix::<FileRecord>(Family::Locations, blob.as_bytes()) {
            let (key, file) = item?;
            counters.in_place_bytes = counters.in_place_bytes.saturating_sub(file.size);
            batch.delete(Family::Locations, &key);
        }
        batch.delete(Family::Blobs, blob.as_bytes());
        counters.blobs = counters.blobs.saturating_sub(1);
        self.commit(state, batch, counters)?;
        Ok(removed)
    }

    fn pack_records(&self) -> Result<Vec<(PackId, PackRecord)>> {
        let mut packs = Vec::new();
        for item in self.index.scan::<PackRecord>(Family::Packs) {
            let (key, record) = item?;
            if let Some(pack) = PackId::from_key(&key) {
                packs.push((pack, record));
            }
        }
        Ok(packs)
    }

    fn remove_empty_packs(&self, state: &mut WriteState, report: &mut GcReport) -> Result<()> {
        let open = state.open.as_ref().map(|open| open.pack());
        for (pack, record) in self.pack_records()? {
            if record.live_bytes > 0 || Some(pack) == open {
                continue;
            }
            self.drop_pack(state, pack, &record)?;
            report.packs_removed += 1;
            report.bytes_reclaimed += record.len;
        }
        Ok(())
    }

    /// Removes an empty pack's record, then its file or object.
    fn drop_pack(&self, state: &mut WriteState, pack: PackId, record: &PackRecord) -> Result<()> {
        debug_assert_eq!(record.live_bytes, 0, "only empty packs are dropped");
        let mut counters: Counters = state.counters;
        match record.tier {
            Tier::Hot => counters.hot_bytes = counters.hot_bytes.saturating_sub(record.len),
            Tier::Cold => counters.cold_bytes = counters.cold_bytes.saturating_sub(record.len),
        }
        let mut batch = self.index.batch();
        batch.delete(Family::Packs, &pack.key());
        self.commit(state, batch, counters)?;
        match record.tier {
            Tier::Hot => self.hot.remove(pack),
            Tier::Cold => match &self.cold {
                Some(cold) => cold.delete(pack),
                None => Ok(()),
            },
        }
    }

    /// Rewrites the live chunks of mostly-garbage packs into the open pack,
    /// then drops the old packs. Cold packs too, while the cold tier is
    /// configured: a cold chunk read back into the hot tier and demoted
    /// again leaves a dead copy in its old cold pack, and without this the
    /// cold tier kept every such duplicate (the next tiering pass moves
    /// the rewritten chunks back to the cold tier).
    fn compact_packs(&self, state: &mut WriteState, report: &mut GcReport) -> Result<()> {
        let open = state.open.as_ref().map(|open| open.pack());
        let cold_readable = self.cold.is_some();
        let sparse: BTreeMap<PackId, PackRecord> = self
            .pack_records()?
            .into_iter()
            .filter(|(pack, record)| {
                (record.tier == Tier::Hot || cold_readable)
                    && Some(*pack) != open
                    && record.live_bytes * 100 < record.len * COMPACT_LIVE_PERCENT
            })
            .collect();
        if sparse.is_empty() {
            return Ok(());
        }
        let mut by_pack: BTreeMap<PackId, Vec<(ChunkId, ChunkRecord)>> = BTreeMap::new();
        for item in self.index.scan::<ChunkRecord>(Family::Chunks) {
            let (key, record) = item?;
            if sparse.contains_key(&record.pack)
                && let Some(chunk) = ChunkId::from_slice(&key)
            {
                by_pack.entry(record.pack).or_default().push((chunk, record));
            }
        }
        for (pack, pack_record) in sparse {
            let chunks = by_pack.remove(&pack).unwrap_or_default();
            let mut txn = Store::begin_txn(state);
            let outcome = self.copy_live_chunks(state, &mut txn, &chunks).and_then(|moved| {
                self.sync_txn(state)?;
                // New copies, appended packs and the old pack's fill change in
                // one batch.
                let mut counters = state.counters;
                counters.hot_bytes += txn.touched.values().map(|touched| touched.appended).sum::<u64>();
                let mut live_added = BTreeMap::new();
                let mut batch = self.index.batch();
                for (chunk, record) in &moved {
                    *live_added.entry(record.pack).or_default() += u64::from(record.len);
                    batch.put(Family::Chunks, chunk.as_bytes(), record);
                }
                self.put_touched_packs(&mut batch, &txn, &live_added)?;
                let moved_bytes: u64 = moved.values().map(|record| u64::from(record.len)).sum();
                let old = PackRecord {
                    live_bytes: pack_record.live_bytes.saturating_sub(moved_bytes),
                    ..pack_record
                };
                batch.put(Family::Packs, &pack.key(), &old);
                self.commit(state, batch, counters)?;
                Ok((old, moved.len() == chunks.len()))
            });
            match outcome {
                Ok((old, all_moved)) => {
                    // A chunk that failed verification stays, and so does its
                    // pack, for scrub to report.
                    if all_moved {
                        self.drop_pack(state, pack, &old)?;
                        report.packs_compacted += 1;
                        report.bytes_reclaimed += pack_record.len.saturating_sub(pack_record.live_bytes);
                    }
                }
                Err(error) => {
                    self.rollback(state, txn);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn copy_live_chunks(
        &self,
        state: &mut WriteState,
        txn: &mut PackTxn,
        chunks: &[(ChunkId, ChunkRecord)],
    ) -> Result<HashMap<ChunkId, ChunkRecord>> {
        let mut moved = HashMap::with_capacity(chunks.len());
        for (chunk, record) in chunks {
            let (bytes, _) = self.read_pack_bytes(chunk, record)?;
            if ChunkId::of(&bytes) != *chunk {
                // A corrupt chunk is left where it is for scrub to report.
                continue;
            }
            let (pack, offset) = self.append_chunk(state, txn, &bytes)?;
            moved.insert(
                *chunk,
                ChunkRecord {
                    pack,
                    offset,
                    ..*record
                },
            );
        }
        Ok(moved)
    }
}

impl Store {
    /// Verifies every stored chunk in both tiers, quarantines corrupt ones and
    /// checks the index's own consistency.
    pub fn scrub(&self) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        // Keys that are not hashes are reported by the index check below.
        let (by_pack, _) = self.chunks_by_pack()?;
        for (pack, chunks) in &by_pack {
            self.scrub_pack(*pack, chunks, &mut report)?;
        }
        {
            // Counters and records must come from one moment: no change
            // lands while the index is checked against itself.
            let state = self.lock_writer();
            self.check_index(&state.counters, &mut report)?;
            self.check_references(&mut report)?;
        }
        self.check_locations(&mut report)?;
        Ok(report)
    }

    /// The stored chunks by pack, and the chunk keys that are not hashes.
    fn chunks_by_pack(&self) -> Result<(ChunksByPack, Vec<String>)> {
        let mut by_pack = ChunksByPack::new();
        let mut bad_keys = Vec::new();
        for item in self.index.scan::<ChunkRecord>(Family::Chunks) {
            let (key, record) = item?;
            match ChunkId::from_slice(&key) {
                Some(chunk) => by_pack.entry(record.pack).or_default().push((chunk, record)),
                None => bad_keys.push(hex::encode(&key)),
            }
        }
        Ok((by_pack, bad_keys))
    }

    /// Reads one pack whole (without the writer lock), verifies each of its
    /// chunks, and quarantines the bad ones that the lock confirms.
    fn scrub_pack(&self, pack: PackId, chunks: &[(ChunkId, ChunkRecord)], report: &mut ScrubReport) -> Result<()> {
        let suspects = match self.read_pack_for_scrub(pack)? {
            PackRead::Read(record, bytes) => verify_chunks(pack, &record, &bytes, chunks, report),
            PackRead::Unknown => chunks
                .iter()
                .map(|(chunk, record)| Suspect {
                    chunk: *chunk,
                    record: *record,
                    finding: None,
                    reason: format!("{pack} is unknown"),
                })
                .collect(),
            PackRead::Failed(error) => {
                let sentence = format!("{pack} could not be read ({SCRUB_READ_TRIES} tries): {error}");
                tracing::warn!("{sentence}");
                report.io_errors.push(sentence);
                return Ok(());
            }
        };
        if suspects.is_empty() {
            return Ok(());
        }
        self.quarantine_confirmed(suspects, report)
    }

    /// Reads a pack from the tier its record names, trying again after a
    /// read error. The record is read afresh on each try: the pack may have
    /// moved to the cold tier, or gone, since the last.
    fn read_pack_for_scrub(&self, pack: PackId) -> Result<PackRead> {
        let mut tries = 1;
        loop {
            let Some(record) = self.index.get::<PackRecord>(Family::Packs, &pack.key())? else {
                return Ok(PackRead::Unknown);
            };
            let bytes = match record.tier {
                Tier::Hot => self.hot.read_all(pack),
                Tier::Cold => match &self.cold {
                    Some(cold) => cold.get(pack),
                    None => Err(StoreError::NoColdTier),
                },
            };
            match bytes {
                Ok(bytes) => return Ok(PackRead::Read(record, bytes)),
                Err(error) if tries >= SCRUB_READ_TRIES => return Ok(PackRead::Failed(error)),
                Err(error) => tracing::debug!(%pack, tries, %error, "scrub could not read a pack; trying again"),
            }
            std::thread::sleep(Duration::from_millis(SCRUB_RETRY_DELAY_MS * u64::from(tries)));
            tries += 1;
        }
    }

    /// Quarantines the suspects that, under the writer lock, still live
    /// where they were read. Pack ids are never reused and committed pack
    /// bytes never change, so what was read there is what is there; a chunk
    /// that moved (compaction, healing) or went (gc) since is left alone.
    fn quarantine_confirmed(&self, suspects: Vec<Suspect>, report: &mut ScrubReport) -> Result<()> {
        let mut state = self.lock_writer();
        let mut batch = self.index.batch();
        for suspect in suspects {
            let current = self
                .index
                .get::<ChunkRecord>(Family::Chunks, suspect.chunk.as_bytes())?;
            let still_there = current.is_some_and(|current| {
                (current.pack, current.offset, current.len)
                    == (suspect.record.pack, suspect.record.offset, suspect.record.len)
            });
            if !still_there {
                continue;
            }
            if let Some((kind, detail)) = suspect.finding {
                report.find(kind, detail);
            }
            if self
                .index
                .get_raw(Family::Quarantine, suspect.chunk.as_bytes())?
                .is_none()
            {
                report.quarantined += 1;
            }
            batch.put(Family::Quarantine, suspect.chunk.as_bytes(), &suspect.reason);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let counters = state.counters;
        self.commit(&mut state, batch, counters)
    }

    /// Reports references that name a blob the index does not have.
    fn check_references(&self, report: &mut ScrubReport) -> Result<()> {
        for item in self.index.scan::<BlobId>(Family::Refs) {
            let (key, blob) = item?;
            if self.index.get_raw(Family::Blobs, blob.as_bytes())?.is_none() {
                report.find(
                    "missing_blob",
                    format!(
                        "reference {} names blob {blob}, which the index does not have",
                        String::from_utf8_lossy(&key)
                    ),
                );
            }
        }
        Ok(())
    }

    /// Recomputes reference counts, pack fill and counters from the records
    /// and compares them with what the index holds.
    fn check_index(&self, counters: &Counters, report: &mut ScrubReport) -> Result<()> {
        let packs: BTreeMap<PackId, PackRecord> = self.pack_records()?.into_iter().collect();
        let (by_pack, bad_keys) = self.chunks_by_pack()?;
        for key in bad_keys {
            report.find("index", format!("chunk key {key} is not a hash"));
        }
        for (pack, chunks) in &by_pack {
            if !packs.contains_key(pack) {
                report.find(
                    "index",
                    format!(
                        "{} chunks point into {pack}, which the index does not know",
                        chunks.len()
                    ),
                );
            }
        }
        let mut expected_refs: HashMap<ChunkId, u64> = HashMap::new();
        let mut blobs = 0_u64;
        for item in self.index.scan::<BlobRecord>(Family::Blobs) {
            let (key, record) = item?;
            blobs += 1;
            if !record.is_well_formed() {
                report.find(
                    "index",
                    format!("manifest of blob {} does not tile its size", hex::encode(&key)),
                );
            }
            if record.stored {
                for (chunk, _) in record.distinct_chunks() {
                    *expected_refs.entry(chunk).or_default() += 1;
                }
            }
        }
        let mut chunks = 0_u64;
        let mut stored_bytes = 0_u64;
        for (pack, pack_chunks) in &by_pack {
            let live: u64 = pack_chunks.iter().map(|(_, record)| u64::from(record.len)).sum();
            if let Some(pack_record) = packs.get(pack)
                && pack_record.live_bytes != live
            {
                report.find(
                    "index",
                    format!(
                        "{pack} records {} live bytes, its chunks hold {live}",
                        pack_record.live_bytes
                    ),
                );
            }
            for (chunk, record) in pack_chunks {
                chunks += 1;
                stored_bytes += u64::from(record.len);
                let expected = expected_refs.remove(chunk).unwrap_or(0);
                if record.refs != expected {
                    report.find(
                        "index",
                        format!(
                            "chunk {chunk} counts {} references, manifests make {expected}",
                            record.refs
                        ),
                    );
                }
            }
        }
        for chunk in expected_refs.keys() {
            report.find(
                "missing_chunk",
                format!("chunk {chunk} is named by a stored manifest but has no record"),
            );
        }
        let hot: u64 = packs
            .values()
            .filter(|record| record.tier == Tier::Hot)
            .map(|record| record.len)
            .sum();
        let cold: u64 = packs
            .values()
            .filter(|record| record.tier == Tier::Cold)
            .map(|record| record.len)
            .sum();
        let recomputed = [
            ("blobs", blobs, counters.blobs),
            ("chunks", chunks, counters.chunks),
            ("stored_bytes", stored_bytes, counters.stored_bytes),
            ("hot_bytes", hot, counters.hot_bytes),
            ("cold_bytes", cold, counters.cold_bytes),
        ];
        for (name, actual, counted) in recomputed {
            if actual != counted {
                report.find(
                    "index",
                    format!("counter {name} is {counted}, the records make {actual}"),
                );
            }
        }
        Ok(())
    }

    /// Reports in-place files whose size or modification time changed.
    fn check_locations(&self, report: &mut ScrubReport) -> Result<()> {
        for item in self.index.scan::<FileRecord>(Family::Locations) {
            let (key, record) = item?;
            let Some((blob, path)) = split_location_key(&key) else {
                continue;
            };
            let changed = match std::fs::metadata(&path) {
                Ok(metadata) => {
                    use std::os::unix::fs::MetadataExt;
                    let mtime_ns = i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
                    metadata.len() != record.size || mtime_ns != record.mtime_ns
                }
                Err(_) => true,
            };
            if changed {
                report.find(
                    "file_changed",
                    format!(
                        "{} (blob {blob}) changed or vanished since it was indexed",
                        path.display()
                    ),
                );
            }
        }
        Ok(())
    }
}
