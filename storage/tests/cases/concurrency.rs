//! Races between writers: gc against an ingest of the same bytes, and ingests
//! while a tiering or scrub run waits on a slow cold tier. Each test opens its
//! own store in a temporary directory.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::*;
use omega_storage::Store;

/// Rounds of the gc race at most.
const RACE_ROUNDS_MAX: u64 = 10_000;

/// The gc race stops after this long, so that a slow disk keeps the test
/// short; a few hundred rounds are enough to lose the race often (the
/// store without the fix lost it in round 1).
const RACE_DURATION_MAX: Duration = Duration::from_secs(3);

/// How long an ingest may take while another run waits on the cold tier.
const INGEST_WAIT_MAX: Duration = Duration::from_secs(5);

/// Goal: an ingest that returns Ok has committed a reference to a blob that
/// exists, even while another thread collects that very blob. Method: each
/// round, one thread removes the previous round's reference (the blob's last)
/// and runs gc while the main thread ingests the same bytes under a new
/// reference; after both finish (a barrier; the remover never touches the new
/// reference) the new reference must read back byte-identical.
#[test]
fn gc_never_collects_a_blob_an_ingest_just_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store"), small_config()).unwrap());
    let bytes = random_bytes(20_000, 7);
    check_gc_race(
        &store,
        &bytes,
        |round| format!("test:round-{round}"),
        |store, round| store.ingest_bytes(&bytes, &format!("test:round-{round}")),
    );
}

/// Goal: the same for files indexed in place, which are not chunked when the
/// store knows their blob. Method: two files with the same bytes are indexed
/// in turn (an in-place reference is named by its path); each round removes
/// the other file's reference and collects.
#[test]
fn gc_never_collects_a_blob_an_in_place_index_just_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store"), small_config()).unwrap());
    let bytes = random_bytes(20_000, 8);
    let files = Arc::new([write_file(dir.path(), "a", &bytes), write_file(dir.path(), "b", &bytes)]);
    let file = move |round: u64| files[(round % 2) as usize].clone();
    let reference = {
        let file = file.clone();
        move |round| format!("inplace:{}", file(round).display())
    };
    check_gc_race(&store, &bytes, reference, |store, round| {
        store.index_in_place(&[file(round)]).pop().unwrap()
    });
}

/// Races `ingest` of `bytes` (as `reference(round)`) against removing the
/// previous round's reference and gc, and checks each acknowledged round.
fn check_gc_race(
    store: &Arc<Store>,
    bytes: &[u8],
    reference: impl Fn(u64) -> String + Send + Sync + Clone + 'static,
    ingest: impl Fn(&Store, u64) -> omega_storage::Result<omega_storage::IngestReport>,
) {
    ingest(store, 0).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (store, barrier, stop, reference) = (
            Arc::clone(store),
            Arc::clone(&barrier),
            Arc::clone(&stop),
            reference.clone(),
        );
        std::thread::spawn(move || {
            for round in 1.. {
                barrier.wait();
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                store.remove_reference(&reference(round - 1)).unwrap();
                store.gc().unwrap();
                barrier.wait();
            }
        })
    };
    let started = Instant::now();
    let mut rounds = 0;
    for round in 1..=RACE_ROUNDS_MAX {
        if started.elapsed() > RACE_DURATION_MAX {
            break;
        }
        barrier.wait();
        let acknowledged = ingest(store, round);
        barrier.wait();
        let report = acknowledged.unwrap();
        let blob = store.resolve_reference(&reference(round)).unwrap();
        assert_eq!(blob, Some(report.blob), "round {round}: the acknowledged reference");
        match store.read_all(&report.blob) {
            Ok(read) => assert!(read == bytes, "round {round}: the blob reads back different bytes"),
            Err(error) => panic!("round {round}: an acknowledged ingest does not read back: {error}"),
        }
        rounds = round;
    }
    stop.store(true, Ordering::SeqCst);
    barrier.wait();
    collector.join().unwrap();
    eprintln!("{rounds} rounds in {:?}", started.elapsed());
    assert!(rounds >= 20, "too few rounds to mean anything: {rounds}");
    assert_scrub_clean(store);
}

/// Runs `ingest` on its own thread; true when it finished within
/// `INGEST_WAIT_MAX`.
fn ingest_finishes(store: &Arc<Store>, seed: u64) -> bool {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let store = Arc::clone(store);
    std::thread::spawn(move || {
        let result = store.ingest_bytes(&random_bytes(50_000, seed), &format!("test:during-{seed}"));
        let _ = done_tx.send(result.map(|report| report.blob));
    });
    match done_rx.recv_timeout(INGEST_WAIT_MAX) {
        Ok(result) => {
            result.unwrap();
            true
        }
        Err(_) => false,
    }
}

/// Fills a tiered store above its high watermark.
fn fill_over_budget(store: &Store) -> Vec<(omega_storage::BlobId, Vec<u8>)> {
    (0..8)
        .map(|seed| {
            let bytes = random_bytes(400_000, 300 + seed);
            let report = store.ingest_bytes(&bytes, &format!("test:{seed}")).unwrap();
            (report.blob, bytes)
        })
        .collect()
}

/// A tiered store at `root` whose cold tier can be made to wait at a gate;
/// the gate tells `entered` when a call reaches it and waits for `release`.
fn gated_store(
    root: &std::path::Path,
) -> (
    Arc<Store>,
    Arc<GatedCold>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (cold, entered, release) = GatedCold::new();
    let packs = Arc::new(omega_storage::packs::DirPacks::open(&root.join("packs")).unwrap());
    let store = Arc::new(open_store_on(
        root,
        tiered_config(),
        packs,
        Some(Box::new(SharedCold(Arc::clone(&cold)))),
    ));
    (store, cold, entered, release)
}

/// Goal: tiering does not hold the store's writer lock across an upload, so
/// ingests go on while a pack is copied to a slow cold tier. Method: the
/// cold tier's put waits at a gate; while it waits, an ingest must finish.
#[test]
fn an_ingest_completes_while_tiering_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cold, entered, release) = gated_store(&dir.path().join("store"));
    let blobs = fill_over_budget(&store);
    cold.gate_puts.store(true, Ordering::SeqCst);
    let tiering = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.tier_run())
    };
    entered
        .recv_timeout(GATE_WAIT_MAX)
        .expect("tiering reaches the cold tier");
    let finished = ingest_finishes(&store, 1);
    cold.gate_puts.store(false, Ordering::SeqCst);
    let _ = release.send(());
    let report = tiering.join().unwrap().unwrap();
    assert!(finished, "an ingest waited for a tiering upload");
    assert!(report.demoted_packs > 0, "{report:?}");
    for (blob, bytes) in &blobs {
        assert_eq!(&store.read_all(blob).unwrap(), bytes);
    }
    assert_scrub_clean(&store);
}

/// Goal: scrub does not hold the store's writer lock across its run, so
/// ingests go on while it reads a cold pack. Method: after tiering, the cold
/// tier's whole-pack get waits at a gate; while it waits, an ingest must
/// finish.
#[test]
fn an_ingest_completes_while_scrub_reads_a_cold_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cold, entered, release) = gated_store(&dir.path().join("store"));
    fill_over_budget(&store);
    assert!(store.tier_run().unwrap().demoted_packs > 0);
    cold.gate_gets.store(true, Ordering::SeqCst);
    let scrub = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.scrub())
    };
    entered
        .recv_timeout(GATE_WAIT_MAX)
        .expect("scrub reaches the cold tier");
    let finished = ingest_finishes(&store, 2);
    cold.gate_gets.store(false, Ordering::SeqCst);
    // Release every waiting get.
    for _ in 0..64 {
        let _ = release.send(());
    }
    let report = scrub.join().unwrap().unwrap();
    assert!(finished, "an ingest waited for a scrub");
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.quarantined, 0);
}
