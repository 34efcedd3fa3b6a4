//! Demotion to a `file://` cold tier: the cold object is durable before the
//! hot copy is deleted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cold::{FsSync, LocalSync, ObjectStoreCold};
use crate::ids::PackId;
use crate::index::RocksIndex;
use crate::packs::{DirPacks, PackBackend, PackFile};
use crate::{Backends, BlobId, ChunkerConfig, Store, StoreConfig};

/// What the seams saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    FileSynced(PathBuf),
    DirSynced(PathBuf),
    HotRemoved(PackId),
}

type Events = Arc<Mutex<Vec<Event>>>;

/// Syncs for real and notes each sync.
#[derive(Debug)]
struct RecordingSync(Events);

impl LocalSync for RecordingSync {
    fn sync_file(&self, path: &Path) -> std::io::Result<()> {
        FsSync.sync_file(path)?;
        self.0.lock().unwrap().push(Event::FileSynced(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        FsSync.sync_dir(path)?;
        self.0.lock().unwrap().push(Event::DirSynced(path.to_path_buf()));
        Ok(())
    }
}

/// Hot packs in a directory that note each removal.
#[derive(Debug)]
struct RecordingPacks(DirPacks, Events);

impl PackBackend for RecordingPacks {
    fn read_at(&self, pack: PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        self.0.read_at(pack, offset, len)
    }

    fn read_all(&self, pack: PackId) -> std::io::Result<Vec<u8>> {
        self.0.read_all(pack)
    }

    fn list(&self) -> std::io::Result<Vec<(PackId, u64)>> {
        self.0.list()
    }

    fn remove(&self, pack: PackId) -> std::io::Result<()> {
        self.1.lock().unwrap().push(Event::HotRemoved(pack));
        self.0.remove(pack)
    }

    fn truncate(&self, pack: PackId, len: u64) -> std::io::Result<()> {
        self.0.truncate(pack, len)
    }

    fn create(&self, pack: PackId) -> std::io::Result<Box<dyn PackFile>> {
        self.0.create(pack)
    }

    fn append_after(&self, pack: PackId, len: u64) -> std::io::Result<Box<dyn PackFile>> {
        self.0.append_after(pack, len)
    }
}

fn config(cold_url: &str) -> StoreConfig {
    StoreConfig {
        chunker: ChunkerConfig::SMALL,
        pack_target_bytes: 256 * 1024,
        hot_bytes_max: Some(1 << 20),
        cold_url: Some(cold_url.to_string()),
        ..StoreConfig::default()
    }
}

/// Seeded pseudo-random bytes (BLAKE3's extendable output).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0_u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    bytes
}

/// Goal: demotion to a `file://` tier deletes a hot pack only after its cold
/// object and the object's directory are durable. Method: the cold tier's
/// syncs and the hot removals go through recording seams; then a power cut
/// is simulated by deleting every cold object never synced, and every blob
/// must still read after reopening.
#[test]
fn a_local_cold_object_is_durable_before_the_hot_copy_goes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let cold_dir = dir.path().join("cold");
    let cold_url = format!("file://{}", cold_dir.display());
    let events: Events = Arc::default();
    let blobs: Vec<(BlobId, Vec<u8>)> = {
        let backends = Backends {
            index: Box::new(RocksIndex::open(&root.join("index")).unwrap()),
            packs: Arc::new(RecordingPacks(
                DirPacks::open(&root.join("packs")).unwrap(),
                Arc::clone(&events),
            )),
            cold: Some(Box::new(
                ObjectStoreCold::open_with_sync(&cold_url, &[], Arc::new(RecordingSync(Arc::clone(&events)))).unwrap(),
            )),
        };
        let store = Store::open_on(&root, config(&cold_url), backends).unwrap();
        let blobs = (0..12)
            .map(|seed| {
                let bytes = random_bytes(400_000, seed);
                (store.ingest_bytes(&bytes, &format!("test:{seed}")).unwrap().blob, bytes)
            })
            .collect();
        assert!(store.tier_run().unwrap().demoted_packs > 0);
        blobs
    };
    let events = events.lock().unwrap().clone();
    let cold_packs = cold_dir.join("packs");

    // The power cut: a cold object whose file was never synced is lost.
    for entry in std::fs::read_dir(&cold_packs).unwrap() {
        let path = entry.unwrap().path();
        if !events.contains(&Event::FileSynced(path.clone())) {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let store = Store::open(&root, config(&cold_url)).unwrap();
    assert!(store.stats().unwrap().cold_packs > 0);
    for (blob, bytes) in &blobs {
        match store.read_all(blob) {
            Ok(read) => assert!(&read == bytes, "blob {blob} reads back different bytes"),
            Err(error) => panic!("blob {blob} was lost in a power cut after demotion: {error}"),
        }
    }

    // The order: object synced, then its directory, then the hot removal.
    for (at, event) in events.iter().enumerate() {
        let Event::HotRemoved(pack) = event else {
            continue;
        };
        let before = &events[..at];
        let synced = before
            .iter()
            .position(|seen| *seen == Event::FileSynced(cold_packs.join(pack.file_name())))
            .unwrap_or_else(|| panic!("{pack} was removed from the hot tier before its cold object was synced"));
        assert!(
            before[synced..].contains(&Event::DirSynced(cold_packs.clone())),
            "{pack} was removed from the hot tier before the cold directory was synced"
        );
    }
}

/// Goal (operating a cluster): a cold blob read back into the hot tier and
/// demoted again is not kept twice in the cold tier: gc compacts the old
/// cold pack, whose copy of it is dead. Failed before the fix: the cold tier
/// held both copies after gc (gc compacted hot packs only).
#[test]
fn gc_reclaims_the_cold_copy_left_by_a_read_back_and_a_second_demotion() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let cold_url = format!("file://{}", dir.path().join("cold").display());
    let with_budget = |hot_bytes_max: u64| StoreConfig {
        hot_bytes_max: Some(hot_bytes_max),
        ..config(&cold_url)
    };
    // One pack: most of it blob `read`, a little blob `kept`; all demoted.
    let read_bytes = random_bytes(200_000, 1);
    let (read, kept) = {
        let store = Store::open(&root, with_budget(1024)).unwrap();
        let read = store.ingest_bytes(&read_bytes, "test:read").unwrap().blob;
        let kept = store.ingest_bytes(&random_bytes(40_000, 2), "test:kept").unwrap().blob;
        store.tier_run().unwrap();
        assert_eq!(store.stats().unwrap().hot_bytes, 0);
        (read, kept)
    };
    // Read back with room in the hot tier: its chunks are promoted.
    {
        let store = Store::open(&root, with_budget(64 << 20)).unwrap();
        assert!(store.read_all(&read).unwrap() == read_bytes);
        assert!(store.stats().unwrap().hot_bytes > 0, "nothing was promoted");
    }
    // Demoted again, then collected: one cold copy of each chunk.
    let store = Store::open(&root, with_budget(1024)).unwrap();
    store.tier_run().unwrap();
    let duplicated = store.stats().unwrap();
    assert!(duplicated.cold_bytes > duplicated.stored_bytes, "{duplicated:?}");
    store.gc().unwrap();
    store.tier_run().unwrap();
    let stats = store.stats().unwrap();
    assert!(
        (stats.cold_bytes + stats.hot_bytes) * 10 < stats.stored_bytes * 12,
        "the cold tier keeps a dead copy after gc: {stats:?}"
    );
    assert!(store.read_all(&read).unwrap() == read_bytes);
    assert!(store.read_all(&kept).is_ok());
    let scrub = store.scrub().unwrap();
    assert!(scrub.is_clean(), "{scrub:?}");
}
