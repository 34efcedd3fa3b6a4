//! Helpers shared by the store's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use omega_storage::{ChunkerConfig, Residency, Store, StoreConfig};
use rand::{RngCore, SeedableRng};

/// Seeded random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0_u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// A store with small chunks (8 KiB average) and small packs.
pub fn small_config() -> StoreConfig {
    StoreConfig {
        chunker: ChunkerConfig::SMALL,
        pack_target_bytes: 256 * 1024,
        ..StoreConfig::default()
    }
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Ingests a file, ignoring progress.
pub fn ingest(store: &Store, path: &Path, residency: Residency) -> omega_storage::IngestReport {
    store.ingest_file(path, residency, &mut |_| {}).unwrap()
}

/// Asserts that scrub finds nothing wrong.
pub fn assert_scrub_clean(store: &Store) {
    let report = store.scrub().unwrap();
    assert!(report.findings.is_empty(), "scrub found: {:#?}", report.findings);
}

/// Runs ffmpeg with `args`, panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed (scripts/setup.sh)");
    assert!(
        output.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Hot packs in a directory whose whole-pack reads (scrub's and demotion's)
/// fail with EIO while `failures_left` is above zero; chunk reads never fail.
#[derive(Debug)]
pub struct FlakyPacks {
    pub inner: omega_storage::packs::DirPacks,
    /// Whole-pack reads still to fail; `u64::MAX` fails them for good.
    pub failures_left: std::sync::atomic::AtomicU64,
}

impl FlakyPacks {
    pub fn new(dir: &Path, failures: u64) -> Self {
        FlakyPacks {
            inner: omega_storage::packs::DirPacks::open(dir).unwrap(),
            failures_left: std::sync::atomic::AtomicU64::new(failures),
        }
    }
}

impl omega_storage::packs::PackBackend for FlakyPacks {
    fn read_at(&self, pack: omega_storage::PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        self.inner.read_at(pack, offset, len)
    }

    fn read_all(&self, pack: omega_storage::PackId) -> std::io::Result<Vec<u8>> {
        use std::sync::atomic::Ordering;
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            if left != u64::MAX {
                self.failures_left.store(left - 1, Ordering::SeqCst);
            }
            return Err(std::io::Error::from_raw_os_error(EIO));
        }
        self.inner.read_all(pack)
    }

    fn list(&self) -> std::io::Result<Vec<(omega_storage::PackId, u64)>> {
        self.inner.list()
    }

    fn remove(&self, pack: omega_storage::PackId) -> std::io::Result<()> {
        self.inner.remove(pack)
    }

    fn truncate(&self, pack: omega_storage::PackId, len: u64) -> std::io::Result<()> {
        self.inner.truncate(pack, len)
    }

    fn create(&self, pack: omega_storage::PackId) -> std::io::Result<Box<dyn omega_storage::packs::PackFile>> {
        self.inner.create(pack)
    }

    fn append_after(
        &self,
        pack: omega_storage::PackId,
        len: u64,
    ) -> std::io::Result<Box<dyn omega_storage::packs::PackFile>> {
        self.inner.append_after(pack, len)
    }
}

/// EIO on Linux (an I/O error, not corruption).
const EIO: i32 = 5;

/// Opens a store in `root` on a RocksDB index, `packs` and `cold`.
pub fn open_store_on(
    root: &Path,
    config: StoreConfig,
    packs: std::sync::Arc<dyn omega_storage::packs::PackBackend>,
    cold: Option<Box<dyn omega_storage::cold::ColdTier>>,
) -> Store {
    std::fs::create_dir_all(root).unwrap();
    let backends = omega_storage::Backends {
        index: Box::new(omega_storage::index::RocksIndex::open(&root.join("index")).unwrap()),
        packs,
        cold,
    };
    Store::open_on(root, config, backends).unwrap()
}

/// A cold tier in memory whose `put` or `get` can be made to wait at a gate
/// (a slow upload or download), or whose `get` can fail (an S3 timeout).
#[derive(Debug)]
pub struct GatedCold {
    inner: omega_storage::cold::ObjectStoreCold,
    /// Puts wait at the gate while set.
    pub gate_puts: std::sync::atomic::AtomicBool,
    /// Whole-pack gets wait at the gate while set.
    pub gate_gets: std::sync::atomic::AtomicBool,
    /// Whole-pack gets fail while set.
    pub fail_gets: std::sync::atomic::AtomicBool,
    /// Told each time a call reaches the gate.
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    /// Released calls pass the gate; each waits at most `GATE_WAIT_MAX`.
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// How long a gated call waits for its release before going on anyway, so
/// that a test of a broken store fails instead of hanging.
pub const GATE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl GatedCold {
    /// The tier, the receiver told when a call reaches the gate, and the
    /// sender that releases one call.
    pub fn new() -> (
        std::sync::Arc<Self>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let cold = GatedCold {
            inner: omega_storage::cold::ObjectStoreCold::open("memory:///", &[]).unwrap(),
            gate_puts: Default::default(),
            gate_gets: Default::default(),
            fail_gets: Default::default(),
            entered: std::sync::Mutex::new(entered_tx),
            release: std::sync::Mutex::new(release_rx),
        };
        (std::sync::Arc::new(cold), entered_rx, release_tx)
    }

    fn wait_at_gate(&self) {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv_timeout(GATE_WAIT_MAX);
    }
}

/// Lets a store own a shared [`GatedCold`].
#[derive(Debug)]
pub struct SharedCold(pub std::sync::Arc<GatedCold>);

impl omega_storage::cold::ColdTier for SharedCold {
    fn put(&self, pack: omega_storage::PackId, bytes: Vec<u8>) -> omega_storage::Result<()> {
        if self.0.gate_puts.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.wait_at_gate();
        }
        self.0.inner.put(pack, bytes)
    }

    fn get(&self, pack: omega_storage::PackId) -> omega_storage::Result<Vec<u8>> {
        if self.0.gate_gets.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.wait_at_gate();
        }
        if self.0.fail_gets.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(omega_storage::StoreError::Cold(format!(
                "get {pack}: request timed out"
            )));
        }
        self.0.inner.get(pack)
    }

    fn get_range(&self, pack: omega_storage::PackId, offset: u64, len: u32) -> omega_storage::Result<Vec<u8>> {
        self.0.inner.get_range(pack, offset, len)
    }

    fn delete(&self, pack: omega_storage::PackId) -> omega_storage::Result<()> {
        self.0.inner.delete(pack)
    }

    fn url(&self) -> &str {
        "memory:///"
    }
}

/// A small store over a hot budget of 1 MiB with a cold tier in memory.
pub fn tiered_config() -> StoreConfig {
    StoreConfig {
        hot_bytes_max: Some(1 << 20),
        cold_url: Some("memory:///".into()),
        ..small_config()
    }
}
