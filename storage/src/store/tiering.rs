//! Tiering between the hot directory and the cold object store.
//!
//! Demotion moves whole sealed packs: copy to cold (a put is durable when it
//! returns, see [`crate::cold`]), read back and verify, switch the index,
//! then delete the hot file. A crash before the switch leaves the hot copy
//! authoritative (the cold object is overwritten by the next try); a crash
//! after it leaves a hot file that the next open removes.
//!
//! The copy runs without the writer lock, so that ingests go on during an
//! upload; the lock is taken to seal the open pack and pick the candidates,
//! and again for each switch, which first checks that the pack is still the
//! hot pack that was copied (gc may have dropped it meanwhile).
//! Promotion copies one cold chunk into the open hot pack when the policy
//! admits it, with the same order: bytes synced, then the index switched.

use serde::Serialize;

use super::{Store, WriteState};
use crate::error::{Result, StoreError};
use crate::ids::{ChunkId, PackId};
use crate::index::Family;
use crate::records::{ChunkRecord, PackRecord, Tier};

/// What a tiering pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TierReport {
    /// Packs moved to the cold tier.
    pub demoted_packs: u64,
    /// Bytes moved to the cold tier.
    pub demoted_bytes: u64,
    /// Hot bytes after the pass.
    pub hot_bytes: u64,
    /// Cold bytes after the pass.
    pub cold_bytes: u64,
    /// The hot budget.
    pub hot_bytes_max: u64,
}

impl Store {
    fn hot_budget(&self) -> Result<(u64, u64, u64)> {
        let budget = self
            .config
            .hot_bytes_max
            .ok_or_else(|| StoreError::Config("store.hot_bytes_max is not set".into()))?;
        let high = budget / 100 * u64::from(self.config.high_watermark_percent);
        let low = budget / 100 * u64::from(self.config.low_watermark_percent);
        Ok((budget, high, low))
    }

    /// Demotes the coldest packs while the hot tier is above its high
    /// watermark, down to the low watermark.
    pub fn tier_run(&self) -> Result<TierReport> {
        let (budget, high, low) = self.hot_budget()?;
        if self.cold.is_none() {
            return Err(StoreError::NoColdTier);
        }
        let mut report = TierReport {
            hot_bytes_max: budget,
            ..TierReport::default()
        };
        for pack in self.demotion_candidates(high)? {
            if self.lock_writer().counters.hot_bytes <= low {
                break;
            }
            if let Some(len) = self.demote(pack)? {
                report.demoted_bytes += len;
                report.demoted_packs += 1;
            }
        }
        let counters = self.lock_writer().counters;
        report.hot_bytes = counters.hot_bytes;
        report.cold_bytes = counters.cold_bytes;
        Ok(report)
    }

    /// The hot packs, coldest first, when the hot tier is above `high`;
    /// none otherwise.
    fn demotion_candidates(&self, high: u64) -> Result<Vec<PackId>> {
        let mut state = self.lock_writer();
        if state.counters.hot_bytes <= high {
            return Ok(Vec::new());
        }
        // The open pack is committed up to its length; sealing it makes it a
        // candidate like any other (later appends go to a new pack).
        state.open = None;
        let mut candidates = Vec::new();
        for item in self.index.scan::<PackRecord>(Family::Packs) {
            let (key, record) = item?;
            if record.tier == Tier::Hot
                && let Some(pack) = PackId::from_key(&key)
            {
                candidates.push(pack);
            }
        }
        Ok(self.lock_policy().demotion_order(&candidates))
    }

    /// Moves one sealed hot pack to the cold tier; returns its length, or
    /// `None` when the pack is no longer the hot pack it was (gc dropped it,
    /// another run demoted it).
    fn demote(&self, pack: PackId) -> Result<Option<u64>> {
        let cold = self.cold.as_ref().ok_or(StoreError::NoColdTier)?;
        let Some(record) = self.hot_record(pack)? else {
            return Ok(None);
        };
        let mut bytes = match self.hot.read_all(pack) {
            Ok(bytes) => bytes,
            // gc may have dropped the pack since its record was read.
            Err(_) if self.hot_record(pack)?.is_none() => return Ok(None),
            Err(error) => return Err(error),
        };
        if (bytes.len() as u64) < record.len {
            return Err(StoreError::Corrupt {
                what: format!("{pack}"),
                detail: format!("file holds {} of {} committed bytes", bytes.len(), record.len),
            });
        }
        bytes.truncate(record.len as usize);
        let digest = blake3::hash(&bytes);
        cold.put(pack, bytes)?;
        let copied = cold.get(pack)?;
        if blake3::hash(&copied) != digest {
            return Err(StoreError::Cold(format!(
                "{pack}: the cold copy does not match; the hot copy is kept"
            )));
        }
        self.switch_to_cold(pack, record.len)
    }

    /// The record of `pack` if it is a hot pack.
    fn hot_record(&self, pack: PackId) -> Result<Option<PackRecord>> {
        let record = self.index.get::<PackRecord>(Family::Packs, &pack.key())?;
        Ok(record.filter(|record| record.tier == Tier::Hot))
    }

    /// Under the writer lock: if `pack` is still the hot pack of `len`
    /// bytes that was copied, records it as cold and deletes the hot file.
    fn switch_to_cold(&self, pack: PackId, len: u64) -> Result<Option<u64>> {
        let mut state = self.lock_writer();
        let current = self.index.get::<PackRecord>(Family::Packs, &pack.key())?;
        let mut record = match current {
            // Its live bytes may have shrunk meanwhile (gc); its bytes did not.
            Some(record) if record.tier == Tier::Hot && record.len == len => record,
            Some(_) => return Ok(None),
            None => {
                drop(state);
                self.delete_orphan_copy(pack);
                return Ok(None);
            }
        };
        let mut counters = state.counters;
        counters.hot_bytes = counters.hot_bytes.saturating_sub(record.len);
        counters.cold_bytes += record.len;
        record.tier = Tier::Cold;
        let mut batch = self.index.batch();
        batch.put(Family::Packs, &pack.key(), &record);
        self.commit(&mut state, batch, counters)?;
        self.hot.remove(pack)?;
        if let Some(cold) = &self.cold {
            tracing::info!("demoted {pack} ({} bytes) to {}", record.len, cold.url());
        }
        Ok(Some(record.len))
    }

    /// Deletes the cold copy of a pack gc dropped during its upload; a copy
    /// left behind only costs room (ids are never reused).
    fn delete_orphan_copy(&self, pack: PackId) {
        if let Some(cold) = &self.cold
            && let Err(error) = cold.delete(pack)
        {
            tracing::warn!(%error, "could not delete the cold copy of dropped {pack}");
        }
    }

    /// Copies a verified cold chunk into the hot tier if the policy admits
    /// it. Failures are logged: the read that triggered it already succeeded.
    pub(super) fn maybe_promote(&self, chunk: &ChunkId, from: PackId, bytes: &[u8]) {
        let Some(budget) = self.config.hot_bytes_max else {
            return;
        };
        let mut state = self.lock_writer();
        let low = budget / 100 * u64::from(self.config.low_watermark_percent);
        let has_room = state.counters.hot_bytes + bytes.len() as u64 <= low;
        let victim = state.open.as_ref().map(|open| open.pack());
        if !self.lock_policy().admit_promotion(chunk, has_room, victim) {
            return;
        }
        if let Err(error) = self.promote(&mut state, chunk, from, bytes) {
            tracing::warn!(%chunk, %error, "promotion to the hot tier failed");
        }
    }

    fn promote(&self, state: &mut WriteState, chunk: &ChunkId, from: PackId, bytes: &[u8]) -> Result<()> {
        // The chunk may have moved since it was read.
        let Some(record) = self.index.get::<ChunkRecord>(Family::Chunks, chunk.as_bytes())? else {
            return Ok(());
        };
        if record.pack != from {
            return Ok(());
        }
        let mut txn = Store::begin_txn(state);
        let outcome = (|| {
            let (pack, offset) = self.append_chunk(state, &mut txn, bytes)?;
            self.sync_txn(state)?;
            let mut counters = state.counters;
            counters.hot_bytes += bytes.len() as u64;
            let mut batch = self.index.batch();
            let mut old = self.pack_record(from)?;
            old.live_bytes = old.live_bytes.saturating_sub(u64::from(record.len));
            batch.put(Family::Packs, &from.key(), &old);
            let live_added = std::collections::BTreeMap::from([(pack, u64::from(record.len))]);
            self.put_touched_packs(&mut batch, &txn, &live_added)?;
            batch.put(
                Family::Chunks,
                chunk.as_bytes(),
                &ChunkRecord { pack, offset, ..record },
            );
            self.commit(state, batch, counters)
        })();
        if outcome.is_err() {
            self.rollback(state, txn);
        }
        outcome
    }
}

#[cfg(test)]
mod tiering_test;
