//! Maintenance: garbage collection and scrub.
//!
//! `gc` removes blobs that no reference names, drops the chunks that only
//! they used, deletes empty packs and rewrites hot packs that are mostly
//! garbage. `scrub` reads every stored chunk in both tiers and checks it
//! against its hash, quarantines the bad ones, and checks the index against
//! itself (reference counts, pack fill, counters).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{PackTxn, Store, WriteState};
use crate::error::Result;
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
    /// `unreadable_pack`, `index` or `file_changed`.
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
}

impl ScrubReport {
    /// True when the store's own data is sound. In-place files that their
    /// owner changed are reported but do not make the store unclean.
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|finding| finding.kind == "file_changed")
    }

    fn find(&mut self, kind: &'static str, detail: String) {
        tracing::warn!(kind, "{detail}");
        self.findings.push(ScrubFinding { kind, detail });
    }
}

/// Hot packs whose live share is below this percentage are rewritten by gc.
const COMPACT_LIVE_PERCENT: u64 = 50;

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
    /// compacts mostly-garbage hot packs.
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

    /// Rewrites the live chunks of mostly-garbage hot packs into the open
    /// pack, then drops the old packs.
    fn compact_packs(&self, state: &mut WriteState, report: &mut GcReport) -> Result<()> {
        let open = state.open.as_ref().map(|open| open.pack());
        let sparse: BTreeMap<PackId, PackRecord> = self
            .pack_records()?
            .into_iter()
            .filter(|(pack, record)| {
                record.tier == Tier::Hot
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
        let mut state = self.lock_writer();
        let mut report = ScrubReport::default();
        let packs: BTreeMap<PackId, PackRecord> = self.pack_records()?.into_iter().collect();
        let mut by_pack: BTreeMap<PackId, Vec<(ChunkId, ChunkRecord)>> = BTreeMap::new();
        for item in self.index.scan::<ChunkRecord>(Family::Chunks) {
            let (key, record) = item?;
            let Some(chunk) = ChunkId::from_slice(&key) else {
                report.find("index", format!("chunk key {} is not a hash", hex::encode(&key)));
                continue;
            };
            by_pack.entry(record.pack).or_default().push((chunk, record));
        }
        let mut bad = Vec::new();
        for (pack, chunks) in &by_pack {
            let Some(pack_record) = packs.get(pack) else {
                report.find(
                    "index",
                    format!(
                        "{} chunks point into {pack}, which the index does not know",
                        chunks.len()
                    ),
                );
                bad.extend(chunks.iter().map(|(chunk, _)| (*chunk, format!("{pack} is unknown"))));
                continue;
            };
            self.scrub_pack(*pack, pack_record, chunks, &mut report, &mut bad);
        }
        self.check_index(&packs, &by_pack, &state.counters, &mut report)?;
        self.check_locations(&mut report)?;
        if !bad.is_empty() {
            let mut batch = self.index.batch();
            for (chunk, reason) in &bad {
                if self.index.get_raw(Family::Quarantine, chunk.as_bytes())?.is_none() {
                    report.quarantined += 1;
                }
                batch.put(Family::Quarantine, chunk.as_bytes(), reason);
            }
            let counters = state.counters;
            self.commit(&mut state, batch, counters)?;
        }
        Ok(report)
    }

    /// Reads one pack whole and verifies each of its chunks.
    fn scrub_pack(
        &self,
        pack: PackId,
        record: &PackRecord,
        chunks: &[(ChunkId, ChunkRecord)],
        report: &mut ScrubReport,
        bad: &mut Vec<(ChunkId, String)>,
    ) {
        let bytes = match record.tier {
            Tier::Hot => self.hot.read_all(pack),
            Tier::Cold => match &self.cold {
                Some(cold) => cold.get(pack),
                None => Err(crate::error::StoreError::NoColdTier),
            },
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(error) => {
                report.find("unreadable_pack", format!("{pack} cannot be read: {error}"));
                bad.extend(chunks.iter().map(|(chunk, _)| (*chunk, format!("{pack} unreadable"))));
                return;
            }
        };
        for (chunk, chunk_record) in chunks {
            let start = chunk_record.offset as usize;
            let end = start + chunk_record.len as usize;
            if end > bytes.len() || chunk_record.offset + u64::from(chunk_record.len) > record.len {
                report.find("missing_chunk", format!("chunk {chunk} lies past the end of {pack}"));
                bad.push((*chunk, format!("missing from {pack}")));
                continue;
            }
            report.chunks_checked += 1;
            report.bytes_checked += u64::from(chunk_record.len);
            if ChunkId::of(&bytes[start..end]) != *chunk {
                report.find(
                    "corrupt_chunk",
                    format!("chunk {chunk} in {pack} at offset {start} is corrupt"),
                );
                bad.push((*chunk, format!("corrupt in {pack}")));
            }
        }
    }

    /// Recomputes reference counts, pack fill and counters from the records
    /// and compares them with what the index holds.
    fn check_index(
        &self,
        packs: &BTreeMap<PackId, PackRecord>,
        by_pack: &BTreeMap<PackId, Vec<(ChunkId, ChunkRecord)>>,
        counters: &Counters,
        report: &mut ScrubReport,
    ) -> Result<()> {
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
        for (pack, pack_chunks) in by_pack {
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
