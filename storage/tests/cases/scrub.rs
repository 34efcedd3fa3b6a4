//! Scrub against faults that are not corruption: read errors of the hot
//! directory and of the cold tier, and references whose blob is gone. Each
//! test opens its own store in a temporary directory.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::common::*;
use omega_storage::index::{Change, Family, IndexBackend, RocksIndex};
use omega_storage::{BlobId, Store};

/// Opens a small store whose whole-pack reads fail `failures` times.
fn flaky_store(root: &std::path::Path, failures: u64) -> (Store, Arc<FlakyPacks>) {
    let packs = Arc::new(FlakyPacks::new(&root.join("packs"), failures));
    let store = open_store_on(root, small_config(), Arc::clone(&packs) as _, None);
    (store, packs)
}

/// Goal: a read error that goes away is retried, and nothing is quarantined.
/// Method: the first whole-pack read fails with EIO, later ones succeed.
#[test]
fn scrub_retries_a_transient_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, packs) = flaky_store(&dir.path().join("store"), 0);
    let bytes = random_bytes(200_000, 1);
    let blob = store.ingest_bytes(&bytes, "test:a").unwrap().blob;
    packs.failures_left.store(1, Ordering::SeqCst);
    let report = store.scrub().unwrap();
    assert_eq!(report.quarantined, 0, "{:#?}", report.findings);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(report.io_errors.is_empty(), "{:#?}", report.io_errors);
    assert!(report.chunks_checked > 0);
    assert!(report.is_clean());
    assert_eq!(store.read_all(&blob).unwrap(), bytes);
}

/// Goal: a lasting read error (EIO) is reported as an I/O error, never
/// quarantined: the chunks are sound and still read. Method: every
/// whole-pack read fails; chunk reads do not.
#[test]
fn scrub_reports_a_lasting_read_error_without_quarantining() {
    let dir = tempfile::tempdir().unwrap();
    let (store, packs) = flaky_store(&dir.path().join("store"), 0);
    let bytes = random_bytes(200_000, 2);
    let blob = store.ingest_bytes(&bytes, "test:a").unwrap().blob;
    packs.failures_left.store(u64::MAX, Ordering::SeqCst);
    let report = store.scrub().unwrap();
    assert_eq!(report.quarantined, 0, "{:#?}", report.findings);
    assert_eq!(store.stats().unwrap().quarantined_chunks, 0);
    assert_eq!(store.read_all(&blob).unwrap(), bytes, "the chunks still read");
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.io_errors.len(), 1, "{:#?}", report.io_errors);
    assert!(
        report.io_errors[0].contains("pack 0"),
        "names the pack: {:?}",
        report.io_errors
    );
    assert!(
        !report.is_clean(),
        "a scrub that could not read a pack vouches for nothing"
    );
}

/// Goal: a cold tier that times out is an I/O error, not corruption.
/// Method: after tiering, every whole-pack get of the cold tier fails.
#[test]
fn a_cold_tier_timeout_is_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (cold, _entered, _release) = GatedCold::new();
    let packs = Arc::new(omega_storage::packs::DirPacks::open(&root.join("packs")).unwrap());
    let store = open_store_on(
        &root,
        tiered_config(),
        packs,
        Some(Box::new(SharedCold(Arc::clone(&cold)))),
    );
    let blobs: Vec<(BlobId, Vec<u8>)> = (0..8)
        .map(|seed| {
            let bytes = random_bytes(400_000, 500 + seed);
            (store.ingest_bytes(&bytes, &format!("test:{seed}")).unwrap().blob, bytes)
        })
        .collect();
    let demoted = store.tier_run().unwrap().demoted_packs;
    assert!(demoted > 0);
    cold.fail_gets.store(true, Ordering::SeqCst);
    let report = store.scrub().unwrap();
    assert_eq!(report.quarantined, 0, "{:#?}", report.findings);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.io_errors.len() as u64, demoted, "{:#?}", report.io_errors);
    for (blob, bytes) in &blobs {
        assert_eq!(&store.read_all(blob).unwrap(), bytes);
    }
}

/// Goal: scrub checks every reference against its blob. Method: a reference
/// row naming a blob the index lacks is written behind the store's back.
#[test]
fn scrub_reports_a_reference_to_a_missing_blob() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    {
        let store = Store::open(&root, small_config()).unwrap();
        store.ingest_bytes(&random_bytes(50_000, 3), "test:kept").unwrap();
    }
    let missing = BlobId::of(b"never stored");
    {
        let index = RocksIndex::open(&root.join("index")).unwrap();
        let row = Change {
            family: Family::Refs,
            key: b"test:dangling".to_vec(),
            value: Some(omega_storage::records::encode(&missing)),
        };
        index.commit(vec![row]).unwrap();
    }
    let store = Store::open(&root, small_config()).unwrap();
    let report = store.scrub().unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.kind, "missing_blob");
    assert!(finding.detail.contains("test:dangling"), "{}", finding.detail);
    assert!(finding.detail.contains(&missing.to_string()), "{}", finding.detail);
}
