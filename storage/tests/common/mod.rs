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
