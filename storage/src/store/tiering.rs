//! Tiering between the hot directory and the cold object store.
//!
//! Demotion moves whole sealed packs: copy to cold, read back and verify,
//! switch the index, then delete the hot file. A crash before the switch
//! leaves the hot copy authoritative (the cold object is overwritten by the
//! next try); a crash after it leaves a hot file that the next open removes.
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
        let mut state = self.lock_writer();
        let mut report = TierReport {
            hot_bytes_max: budget,
            ..TierReport::default()
        };
        if state.counters.hot_bytes > high {
            // The open pack is committed up to its length; sealing it makes it
            // a candidate like any other.
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
            let order = self.lock_policy().demotion_order(&candidates);
            for pack in order {
                if state.counters.hot_bytes <= low {
                    break;
                }
                report.demoted_bytes += self.demote(&mut state, pack)?;
                report.demoted_packs += 1;
            }
        }
        report.hot_bytes = state.counters.hot_bytes;
        report.cold_bytes = state.counters.cold_bytes;
        Ok(report)
    }

    /// Moves one hot pack to the cold tier; returns its length.
    fn demote(&self, state: &mut WriteState, pack: PackId) -> Result<u64> {
        let cold = self.cold.as_ref().ok_or(StoreError::NoColdTier)?;
        let mut record = self.pack_record(pack)?;
        debug_assert_eq!(record.tier, Tier::Hot);
        let mut bytes = self.hot.read_all(pack)?;
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
        let mut counters = state.counters;
        counters.hot_bytes = counters.hot_bytes.saturating_sub(record.len);
        counters.cold_bytes += record.len;
        record.tier = Tier::Cold;
        let mut batch = self.index.batch();
        batch.put(Family::Packs, &pack.key(), &record);
        self.commit(state, batch, counters)?;
        self.hot.remove(pack)?;
        tracing::info!("demoted {pack} ({} bytes) to {}", record.len, cold.url());
        Ok(record.len)
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
