//! Which packs leave the hot tier and which cold chunks come back: a small
//! W-TinyLFU-like policy.
//!
//! Accesses feed a count-min sketch of 4-bit-like saturating counters that is
//! halved every `sample` additions, so old popularity fades (TinyLFU's reset).
//! Demotion picks the packs with the lowest estimated frequency, oldest
//! access first; promotion admits a cold chunk only when it is more popular
//! than the hot pack it would push out, or when the hot tier has room. The
//! policy is deterministic: it takes ticks, not wall-clock time.

use std::collections::HashMap;

use crate::ids::{ChunkId, PackId};

/// Counters saturate at this value (TinyLFU uses 4-bit counters).
const COUNTER_MAX: u8 = 15;

/// Rows of the count-min sketch.
const ROWS: usize = 4;

/// A count-min sketch with periodic halving.
#[derive(Debug, Clone)]
pub struct FrequencySketch {
    counters: Vec<[u8; ROWS]>,
    additions: u64,
    sample: u64,
}

impl FrequencySketch {
    /// A sketch sized for about `capacity` distinct keys.
    pub fn new(capacity: usize) -> Self {
        let width = capacity.clamp(64, 1 << 20).next_power_of_two();
        FrequencySketch {
            counters: vec![[0; ROWS]; width],
            additions: 0,
            sample: 10 * width as u64,
        }
    }

    fn slot(&self, key: u64, row: usize) -> usize {
        // Each row uses a different odd multiplier (Fibonacci-style hashing).
        const SEEDS: [u64; ROWS] = [
            0x9E37_79B9_7F4A_7C15,
            0xC2B2_AE3D_27D4_EB4F,
            0x1656_67B1_9E37_79F9,
            0x85EB_CA77_C2B2_AE63,
        ];
        let mixed = (key ^ (key >> 31)).wrapping_mul(SEEDS[row]);
        (mixed >> 32) as usize & (self.counters.len() - 1)
    }

    /// Counts one access to `key`.
    pub fn increment(&mut self, key: u64) {
        for row in 0..ROWS {
            let slot = self.slot(key, row);
            let counter = &mut self.counters[slot][row];
            *counter = (*counter + 1).min(COUNTER_MAX);
        }
        self.additions += 1;
        if self.additions >= self.sample {
            self.halve();
        }
    }

    /// The estimated number of recent accesses to `key`.
    pub fn estimate(&self, key: u64) -> u8 {
        (0..ROWS)
            .map(|row| self.counters[self.slot(key, row)][row])
            .min()
            .unwrap_or(0)
    }

    fn halve(&mut self) {
        for cell in &mut self.counters {
            for counter in cell.iter_mut() {
                *counter /= 2;
            }
        }
        self.additions /= 2;
    }
}

fn pack_key(pack: PackId) -> u64 {
    pack.0 ^ 0x5041_434B_0000_0000
}

fn chunk_key(chunk: &ChunkId) -> u64 {
    let mut first = [0_u8; 8];
    first.copy_from_slice(&chunk.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The tiering policy's state.
#[derive(Debug, Clone)]
pub struct TierPolicy {
    sketch: FrequencySketch,
    last_access: HashMap<PackId, u64>,
    tick: u64,
}

/// Entries of `last_access` kept at most; older ones are dropped when full.
const LAST_ACCESS_MAX: usize = 1 << 16;

impl Default for TierPolicy {
    fn default() -> Self {
        TierPolicy::new(4096)
    }
}

impl TierPolicy {
    /// A policy sized for about `capacity` distinct packs and hot chunks.
    pub fn new(capacity: usize) -> Self {
        TierPolicy {
            sketch: FrequencySketch::new(capacity),
            last_access: HashMap::new(),
            tick: 0,
        }
    }

    /// Records a read of `chunk`, which lives in `pack`.
    pub fn record_access(&mut self, pack: PackId, chunk: &ChunkId) {
        self.tick += 1;
        self.sketch.increment(pack_key(pack));
        self.sketch.increment(chunk_key(chunk));
        if self.last_access.len() >= LAST_ACCESS_MAX && !self.last_access.contains_key(&pack) {
            let cutoff = self.tick.saturating_sub(LAST_ACCESS_MAX as u64 / 2);
            self.last_access.retain(|_, &mut tick| tick >= cutoff);
        }
        self.last_access.insert(pack, self.tick);
    }

    /// Orders demotion candidates, coldest first: lowest frequency, then
    /// least recently read, then oldest pack.
    pub fn demotion_order(&self, candidates: &[PackId]) -> Vec<PackId> {
        let mut ranked: Vec<(u8, u64, PackId)> = candidates
            .iter()
            .map(|&pack| {
                let recency = self.last_access.get(&pack).copied().unwrap_or(0);
                (self.sketch.estimate(pack_key(pack)), recency, pack)
            })
            .collect();
        ranked.sort();
        ranked.into_iter().map(|(_, _, pack)| pack).collect()
    }

    /// Whether a cold chunk should be copied into the hot tier: always when
    /// there is room, otherwise only when it is read more often than the
    /// pack it would push out (`victim`).
    pub fn admit_promotion(&self, chunk: &ChunkId, hot_has_room: bool, victim: Option<PackId>) -> bool {
        if hot_has_room {
            return true;
        }
        let candidate = self.sketch.estimate(chunk_key(chunk));
        let victim = victim.map_or(0, |pack| self.sketch.estimate(pack_key(pack)));
        candidate > victim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequent_keys_estimate_higher_and_fade() {
        let mut sketch = FrequencySketch::new(64);
        for _ in 0..10 {
            sketch.increment(1);
        }
        sketch.increment(2);
        assert!(sketch.estimate(1) >= 10);
        assert!(sketch.estimate(1) > sketch.estimate(2));
        assert_eq!(sketch.estimate(3), 0);
        // Enough other traffic halves the counters.
        for key in 100..(100 + 10 * 64) {
            sketch.increment(key);
        }
        assert!(sketch.estimate(1) <= 7);
    }

    #[test]
    fn demotes_cold_packs_first() {
        let mut policy = TierPolicy::new(64);
        let chunk = ChunkId::of(b"c");
        for _ in 0..5 {
            policy.record_access(PackId(1), &chunk);
        }
        policy.record_access(PackId(2), &chunk);
        let order = policy.demotion_order(&[PackId(1), PackId(2), PackId(3)]);
        assert_eq!(order, vec![PackId(3), PackId(2), PackId(1)]);
    }

    #[test]
    fn admits_popular_chunks_only_when_full() {
        let mut policy = TierPolicy::new(64);
        let popular = ChunkId::of(b"popular");
        let rare = ChunkId::of(b"rare");
        for _ in 0..4 {
            policy.record_access(PackId(9), &popular);
        }
        assert!(policy.admit_promotion(&rare, true, Some(PackId(1))));
        assert!(!policy.admit_promotion(&rare, false, Some(PackId(9))));
        assert!(policy.admit_promotion(&popular, false, Some(PackId(1))));
    }
}
