//! The budget of HLS segments kept in the store. Each segment made is kept
//! under `hls:SOURCE:RENDITION:PART` so that it is made once; without a
//! budget every rendition ever watched would stay forever. Past
//! `[transcode] segment_cache_max` bytes, whole renditions go, the one used
//! longest ago first (a rendition is played through, so its segments live
//! and die together), down to nine tenths of the budget. Use is tracked in
//! memory: after a restart, renditions not touched since count as oldest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use omega_storage::Store;

/// References of kept segments start with this.
pub const SEGMENT_PREFIX: &str = "hls:";
/// Segment references looked at per trim.
const REFERENCES_MAX: usize = 1_000_000;
/// Renditions whose last use is remembered.
const TRACKED_MAX: usize = 100_000;

/// The budget and what was used when.
#[derive(Debug)]
pub struct SegmentCache {
    max_bytes: u64,
    /// Bytes kept, as of the last trim plus what was added since.
    kept_bytes: AtomicU64,
    /// Each rendition's (reference prefix) last use, on a logical clock.
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    tick: u64,
    last: HashMap<String, u64>,
}

/// What a trim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trimmed {
    /// Renditions dropped.
    pub renditions: usize,
    /// Segment bytes kept before.
    pub before_bytes: u64,
    /// Segment bytes kept after.
    pub after_bytes: u64,
}

/// The rendition a segment reference belongs to: the reference up to and
/// including its last `:`.
pub fn rendition_of(reference: &str) -> &str {
    reference.rfind(':').map_or(reference, |end| &reference[..=end])
}

impl SegmentCache {
    /// A budget of `max_bytes` (0: keep nothing).
    pub fn new(max_bytes: u64) -> SegmentCache {
        SegmentCache {
            max_bytes,
            // Unknown until the first trim, which runs at start.
            kept_bytes: AtomicU64::new(u64::MAX),
            used: Mutex::new(Used::default()),
        }
    }

    /// Whether segments are kept at all.
    pub fn keeps(&self) -> bool {
        self.max_bytes > 0
    }

    /// Notes that the segment under `reference` was read or kept.
    pub fn touch(&self, reference: &str) {
        let mut used = self.lock();
        used.tick += 1;
        let tick = used.tick;
        let rendition = rendition_of(reference);
        if let Some(last) = used.last.get_mut(rendition) {
            *last = tick;
            return;
        }
        if used.last.len() >= TRACKED_MAX {
            // Forget the oldest half: they would be dropped first anyway.
            let mut ticks: Vec<u64> = used.last.values().copied().collect();
            let (_, median, _) = ticks.select_nth_unstable(TRACKED_MAX / 2);
            let median = *median;
            used.last.retain(|_, last| *last > median);
        }
        used.last.insert(rendition.to_owned(), tick);
    }

    /// Counts `bytes` newly kept; true when the budget may be exceeded
    /// (time to trim).
    pub fn added(&self, bytes: u64) -> bool {
        // Saturating: an unknown count (u64::MAX) stays unknown.
        let add = |kept: u64| Some(kept.saturating_add(bytes));
        let before = self
            .kept_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add)
            .unwrap_or_else(|kept| kept);
        let now = before.saturating_add(bytes);
        if now != u64::MAX {
            metrics::gauge!("omega_hls_kept_bytes").set(now as f64);
        }
        now > self.max_bytes
    }

    /// Drops the renditions used longest ago until the kept segments fit in
    /// nine tenths of the budget, then collects garbage.
    pub fn trim(&self, store: &Store) -> omega_storage::Result<Trimmed> {
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut references: HashMap<String, Vec<String>> = HashMap::new();
        let mut sizes_of_blobs: HashMap<omega_storage::BlobId, u64> = HashMap::new();
        for (reference, blob) in store.references(SEGMENT_PREFIX, REFERENCES_MAX)? {
            let size = match sizes_of_blobs.get(&blob) {
                Some(size) => *size,
                None => {
                    let size = store.blob(&blob).map_or(0, |record| record.size);
                    sizes_of_blobs.insert(blob, size);
                    size
                }
            };
            let rendition = rendition_of(&reference).to_owned();
            *sizes.entry(rendition.clone()).or_default() += size;
            references.entry(rendition).or_default().push(reference);
        }
        let before_bytes: u64 = sizes.values().sum();
        let victims = {
            let used = self.lock();
            oldest_past_budget(&sizes, &used.last, self.max_bytes / 10 * 9)
        };
        let mut after_bytes = before_bytes;
        for rendition in &victims {
            for reference in references.get(rendition).into_iter().flatten() {
                store.remove_reference(reference)?;
            }
            after_bytes -= sizes.get(rendition).copied().unwrap_or(0);
            self.lock().last.remove(rendition);
        }
        if !victims.is_empty() {
            store.gc()?;
            tracing::info!(
                renditions = victims.len(),
                before_bytes,
                after_bytes,
                "segment cache over budget: renditions used longest ago dropped"
            );
        }
        self.kept_bytes.store(after_bytes, Ordering::Relaxed);
        metrics::gauge!("omega_hls_kept_bytes").set(after_bytes as f64);
        Ok(Trimmed {
            renditions: victims.len(),
            before_bytes,
            after_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The renditions to drop, used longest ago first (never used: oldest),
/// until what is left of `sizes` fits in `target` bytes.
fn oldest_past_budget(sizes: &HashMap<String, u64>, last_use: &HashMap<String, u64>, target: u64) -> Vec<String> {
    let mut total: u64 = sizes.values().sum();
    if total <= target {
        return Vec::new();
    }
    let mut by_age: Vec<(u64, &String)> = sizes
        .keys()
        .map(|rendition| (last_use.get(rendition).copied().unwrap_or(0), rendition))
        .collect();
    by_age.sort();
    let mut victims = Vec::new();
    for (_, rendition) in by_age {
        if total <= target {
            break;
        }
        total -= sizes[rendition];
        victims.push(rendition.clone());
    }
    victims
}

/// Kept segments' places in the store's pack files remembered in memory,
/// so that a segment served again costs no index read and no hop to a
/// blocking thread. An entry is good while the store's epoch is the one
/// read before its lookup (any index change forgets them all, which also
/// lets go of pack files the store removed).
#[derive(Debug, Default)]
pub struct KeptSpans {
    entries: Mutex<KeptEntries>,
}

#[derive(Debug, Default)]
struct KeptEntries {
    epoch: u64,
    spans: HashMap<String, Vec<omega_storage::FileSpan>>,
}

impl KeptEntries {
    /// Forgets every entry found before `epoch`.
    fn forget_before(&mut self, epoch: u64) {
        if epoch > self.epoch {
            self.spans.clear();
            self.epoch = epoch;
        }
    }
}

/// Segments whose places are remembered; past this, all are forgotten.
const KEPT_SPANS_MAX: usize = 4096;

impl KeptSpans {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptEntries> {
        self.entries.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The places of `reference`, if remembered and the store's epoch is
    /// still `epoch`.
    pub fn get(&self, reference: &str, epoch: u64) -> Option<Vec<omega_storage::FileSpan>> {
        let mut entries = self.lock();
        entries.forget_before(epoch);
        if entries.epoch != epoch {
            return None;
        }
        entries.spans.get(reference).cloned()
    }

    /// Remembers the places of `reference`, found after reading `epoch`.
    pub fn put(&self, reference: &str, epoch: u64, spans: Vec<omega_storage::FileSpan>) {
        let mut entries = self.lock();
        entries.forget_before(epoch);
        if entries.epoch != epoch {
            // Found before a change the entries already know of.
            return;
        }
        if entries.spans.len() >= KEPT_SPANS_MAX {
            entries.spans.clear();
        }
        entries.spans.insert(reference.to_owned(), spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_places_hold_only_while_the_store_epoch_does() {
        let file = std::sync::Arc::new(tempfile::tempfile().unwrap());
        let spans = vec![omega_storage::FileSpan {
            file,
            offset: 0,
            len: 10,
        }];
        let kept = KeptSpans::default();
        kept.put("hls:a:720p:0", 3, spans.clone());
        assert_eq!(kept.get("hls:a:720p:0", 3).map(|spans| spans.len()), Some(1));
        assert!(kept.get("hls:a:720p:1", 3).is_none());
        // A lookup that began before a change the entries know of is dropped.
        kept.put("hls:a:720p:0", 4, spans.clone());
        kept.put("hls:a:720p:1", 3, spans.clone());
        assert!(kept.get("hls:a:720p:1", 4).is_none());
        // A later epoch forgets everything.
        assert!(kept.get("hls:a:720p:0", 5).is_none());
        assert!(kept.get("hls:a:720p:0", 4).is_none());
    }

    #[test]
    fn a_segment_belongs_to_its_rendition() {
        assert_eq!(rendition_of("hls:abc:720p:12"), "hls:abc:720p:");
        assert_eq!(rendition_of("hls:abc:720p:init"), "hls:abc:720p:");
    }

    #[test]
    fn the_renditions_used_longest_ago_go_first_until_the_rest_fits() {
        let sizes: HashMap<String, u64> = [("a:", 40), ("b:", 30), ("c:", 20), ("d:", 10)]
            .map(|(name, size)| (name.to_owned(), size))
            .into();
        let last_use: HashMap<String, u64> = [("a:", 9), ("b:", 3), ("d:", 5)]
            .map(|(name, tick)| (name.to_owned(), tick))
            .into();
        // c was never used since the start: it goes first, then b.
        assert_eq!(oldest_past_budget(&sizes, &last_use, 55), ["c:", "b:"]);
        assert!(oldest_past_budget(&sizes, &last_use, 100).is_empty());
        assert_eq!(oldest_past_budget(&sizes, &last_use, 0).len(), 4);
    }

    #[test]
    fn a_trim_keeps_the_budget_and_the_rendition_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), omega_storage::StoreConfig::default()).unwrap();
        let cache = SegmentCache::new(100_000);
        for rendition in ["old", "mid", "new"] {
            for part in 0..4_u8 {
                let bytes = vec![part.wrapping_add(rendition.len() as u8).wrapping_mul(31); 10_000 + usize::from(part)];
                let reference = format!("hls:src:{rendition}:{part}");
                store
                    .ingest_bytes(&[bytes.as_slice(), rendition.as_bytes()].concat(), &reference)
                    .unwrap();
                cache.touch(&reference);
                cache.added(bytes.len() as u64);
            }
        }
        // 120 kB kept against a budget of 100 kB; "old" is read again, so
        // "mid" is the one used longest ago.
        cache.touch("hls:src:old:0");
        let trimmed = cache.trim(&store).unwrap();
        assert_eq!(trimmed.renditions, 1, "{trimmed:?}");
        assert!(
            trimmed.before_bytes > 120_000 && trimmed.after_bytes <= 90_000,
            "{trimmed:?}"
        );
        assert!(store.resolve_reference("hls:src:mid:0").unwrap().is_none());
        for kept in ["hls:src:old:3", "hls:src:new:0"] {
            assert!(store.resolve_reference(kept).unwrap().is_some(), "{kept} stays");
        }
        assert!(!cache.added(1), "within budget after the trim");
    }
}
