//! Integration tests of the store through its public API: deduplication,
//! ranged reads, corruption, tiering (local and S3), garbage collection and
//! bad input. Each test opens its own store in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

// Races and scrub faults: one test binary for the crate (fewer links).
#[path = "cases/concurrency.rs"]
mod concurrency;
#[path = "cases/scrub.rs"]
mod scrub;

use std::sync::OnceLock;

use common::*;
use omega_storage::{BlobId, ChunkerConfig, Residency, Store, StoreConfig, StoreError};
use proptest::prelude::*;

/// Goal: a second identical file adds no stored bytes, and a copy with 100
/// bytes inserted near its start adds under 2%. Method: 128 MiB of random
/// bytes with the media chunk limits (1 MiB average).
#[test]
fn identical_and_shifted_copies_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), StoreConfig::default()).unwrap();
    let original = random_bytes(128 << 20, 1);
    let a = write_file(dir.path(), "a.bin", &original);
    let b = write_file(dir.path(), "b.bin", &original);
    let mut shifted = original[..1 << 20].to_vec();
    shifted.extend_from_slice(&[7_u8; 100]);
    shifted.extend_from_slice(&original[1 << 20..]);
    let c = write_file(dir.path(), "c.bin", &shifted);

    let first = ingest(&store, &a, Residency::Stored);
    assert_eq!(first.new_bytes, original.len() as u64);
    let stored_after_first = store.stats().unwrap().stored_bytes;

    let second = ingest(&store, &b, Residency::Stored);
    assert_eq!(second.blob, first.blob);
    assert_eq!(second.new_bytes, 0);
    assert_eq!(
        store.stats().unwrap().stored_bytes,
        stored_after_first,
        "identical file adds 0 stored bytes"
    );

    let third = ingest(&store, &c, Residency::Stored);
    let added = store.stats().unwrap().stored_bytes - stored_after_first;
    assert_eq!(added, third.new_bytes);
    assert!(
        (added as f64) < 0.02 * shifted.len() as f64,
        "shifted copy added {added} bytes, over 2% of {}",
        shifted.len()
    );
    assert_eq!(store.read_range(&third.blob, 0, shifted.len() as u64).unwrap(), shifted);
    let stats = store.stats().unwrap();
    assert_eq!(stats.logical_bytes, 2 * original.len() as u64 + shifted.len() as u64);
    assert_eq!(stats.blobs, 2);
    assert_scrub_clean(&store);
}

/// Goal: the remux of a real media file with changed tags dedups most of its
/// media data. Method: ffmpeg makes a Matroska file from lavfi sources, then
/// remuxes it with new tags; 64 KiB average chunks suit its ~6 MB size.
#[test]
fn remux_with_new_tags_deduplicates_media_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        chunker: ChunkerConfig {
            min_bytes: 16 << 10,
            avg_bytes: 64 << 10,
            max_bytes: 256 << 10,
        },
        ..StoreConfig::default()
    };
    let store = Store::open(&dir.path().join("store"), config).unwrap();
    let media = dir.path().join("media.mkv");
    let remux = dir.path().join("remux.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300",
        "-t",
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-b:v",
        "5M",
        "-c:a",
        "aac",
        "-metadata",
        "title=Original",
        media.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-i",
        media.to_str().unwrap(),
        "-map",
        "0",
        "-c",
        "copy",
        "-metadata",
        "title=A much longer title after remux",
        "-metadata",
        "comment=tags changed",
        remux.to_str().unwrap(),
    ]);
    let original = ingest(&store, &media, Residency::Stored);
    let copy = ingest(&store, &remux, Residency::Stored);
    assert_ne!(original.blob, copy.blob, "the remux differs at byte level");
    let share_new = copy.new_bytes as f64 / copy.size as f64;
    assert!(share_new < 0.2, "remux stored {:.0}% new bytes", share_new * 100.0);
    assert_eq!(
        store.read_range(&copy.blob, 0, copy.size).unwrap(),
        std::fs::read(&remux).unwrap()
    );
}

/// A store, its directory and the blobs in it with their bytes.
type Fixture = (tempfile::TempDir, Store, Vec<(BlobId, Vec<u8>)>);

/// The blobs that the ranged-read property reads: made once per test binary.
fn range_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
        let mut blobs = Vec::new();
        for (seed, len) in [(1_u64, 0_usize), (2, 1), (3, 5_000), (4, 300_000), (5, 1_000_000)] {
            let bytes = random_bytes(len, seed);
            let report = store.ingest_bytes(&bytes, &format!("test:{seed}")).unwrap();
            blobs.push((report.blob, bytes));
        }
        // One blob in place too, read through its file.
        let bytes = random_bytes(700_000, 6);
        let path = write_file(dir.path(), "in-place.bin", &bytes);
        let report = ingest(&store, &path, Residency::InPlace);
        blobs.push((report.blob, bytes));
        (dir, store, blobs)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any range of any blob reads back exactly the source bytes.
    #[test]
    fn any_range_equals_the_source(which in 0_usize..6, a in any::<u64>(), b in any::<u64>()) {
        let (_, store, blobs) = range_fixture();
        let (blob, bytes) = &blobs[which];
        let len = bytes.len() as u64;
        let (start, end) = if len == 0 { (0, 0) } else {
            let (x, y) = (a % (len + 1), b % (len + 1));
            (x.min(y), x.max(y))
        };
        prop_assert_eq!(store.read_range(blob, start, end).unwrap(), &bytes[start as usize..end as usize]);
        let past = store.read_range(blob, start, len + 1);
        prop_assert!(matches!(past, Err(StoreError::RangeOutOfBounds { .. })), "reads past the end are refused");
    }
}

/// Goal: one flipped byte in a stored chunk makes reads of that blob fail
/// with an error that names it, scrub reports and quarantines it, no read
/// returns wrong bytes, and re-ingesting the source heals the store.
#[test]
fn a_flipped_byte_is_caught_named_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let bytes = random_bytes(200_000, 9);
    let blob = {
        let store = Store::open(&store_dir, small_config()).unwrap();
        store.ingest_bytes(&bytes, "test:victim").unwrap().blob
    };
    // Flip one byte in the middle of the only pack.
    let pack = std::fs::read_dir(store_dir.join("packs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut pack_bytes = std::fs::read(&pack).unwrap();
    pack_bytes[100_000] ^= 0x01;
    std::fs::write(&pack, &pack_bytes).unwrap();

    let store = Store::open(&store_dir, small_config()).unwrap();
    let error = store.read_range(&blob, 0, bytes.len() as u64).unwrap_err();
    assert!(
        matches!(error, StoreError::CorruptChunk { blob: named, .. } if named == blob),
        "{error}"
    );
    assert!(
        error.to_string().contains(&blob.to_string()),
        "the error names the blob: {error}"
    );
    // Ranges that avoid the bad chunk still read; none returns wrong bytes.
    let mut good_ranges = 0;
    for start in (0..bytes.len() as u64).step_by(4_000) {
        match store.read_range(&blob, start, start + 1) {
            Ok(read) => {
                assert_eq!(read, &bytes[start as usize..start as usize + 1]);
                good_ranges += 1;
            }
            Err(error) => assert!(matches!(error, StoreError::CorruptChunk { .. })),
        }
    }
    assert!(good_ranges > 0);

    let report = store.scrub().unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.quarantined, 1);
    assert!(
        report.findings.iter().any(|finding| finding.kind == "corrupt_chunk"),
        "{:?}",
        report.findings
    );
    let error = store.read_range(&blob, 0, bytes.len() as u64).unwrap_err();
    assert!(matches!(error, StoreError::Quarantined { .. }), "{error}");
    assert_eq!(store.stats().unwrap().quarantined_chunks, 1);

    // Re-ingesting the same content writes a fresh copy of the bad chunk.
    store.ingest_bytes(&bytes, "test:healer").unwrap();
    assert_eq!(store.read_range(&blob, 0, bytes.len() as u64).unwrap(), bytes);
    assert_eq!(store.stats().unwrap().quarantined_chunks, 0);
    let report = store.scrub().unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
}

/// Ingests `count` distinct blobs of `len` bytes; returns them.
fn fill(store: &Store, count: u64, len: usize) -> Vec<(BlobId, Vec<u8>)> {
    (0..count)
        .map(|seed| {
            let bytes = random_bytes(len, 100 + seed);
            let report = store.ingest_bytes(&bytes, &format!("test:{seed}")).unwrap();
            (report.blob, bytes)
        })
        .collect()
}

/// Demotes with a budget smaller than the data, then checks every read.
fn check_tiering(config: StoreConfig) {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let config = StoreConfig {
        hot_bytes_max: Some(1 << 20),
        ..config
    };
    let blobs = {
        let store = Store::open(&store_dir, config.clone()).unwrap();
        let blobs = fill(&store, 12, 400_000);
        let report = store.tier_run().unwrap();
        assert!(report.demoted_packs > 0);
        let stats = store.stats().unwrap();
        assert!(
            stats.hot_bytes <= (1 << 20) * 75 / 100,
            "hot tier under its low watermark: {stats:?}"
        );
        assert!(stats.cold_bytes > 0);
        assert_eq!(stats.hot_bytes + stats.cold_bytes, stats.stored_bytes, "{stats:?}");
        blobs
    };
    // Reopen: the cold URL is remembered and every read still succeeds,
    // promoting what the policy admits.
    let store = Store::open(
        &store_dir,
        StoreConfig {
            cold_url: None,
            ..config
        },
    )
    .unwrap();
    for _ in 0..2 {
        for (blob, bytes) in &blobs {
            assert_eq!(&store.read_range(blob, 0, bytes.len() as u64).unwrap(), bytes);
        }
    }
    assert_scrub_clean(&store);
    store.tier_run().unwrap();
    assert_scrub_clean(&store);
}

/// Goal: with a hot budget smaller than the data, every read succeeds, on the
/// local filesystem backend.
#[test]
fn reads_succeed_with_a_small_hot_tier_on_a_local_cold_tier() {
    let cold = tempfile::tempdir().unwrap();
    let url = format!("file://{}", cold.path().display());
    check_tiering(StoreConfig {
        cold_url: Some(url),
        ..small_config()
    });
}

/// Goal: the same on a real S3-compatible server (moto, started on loopback by
/// scripts/test.sh, which sets OMEGA_TEST_S3_ENDPOINT).
#[test]
fn reads_succeed_with_a_small_hot_tier_on_s3() {
    let Ok(endpoint) = std::env::var("OMEGA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the S3 test (scripts/test.sh starts moto)"
        );
        eprintln!("OMEGA_TEST_S3_ENDPOINT is not set; run scripts/test.sh for the S3 test");
        return;
    };
    let bucket = format!("omega-test-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    check_tiering(StoreConfig {
        cold_url: Some(format!("s3://{bucket}/cluster-a")),
        cold_options: options
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        ..small_config()
    });
}

/// Creates a bucket with a bare HTTP PUT (moto accepts unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "create bucket: {response}");
}

/// Goal: blobs that no reference names are collected with their chunks and
/// packs, and shared chunks survive.
#[test]
fn gc_removes_unreferenced_data_and_keeps_shared_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let shared = random_bytes(600_000, 1);
    let mut longer = shared.clone();
    longer.extend_from_slice(&random_bytes(600_000, 2));
    let kept = store.ingest_bytes(&shared, "test:kept").unwrap();
    store.ingest_bytes(&longer, "test:dropped").unwrap();
    let _ = fill(&store, 3, 300_000);
    for seed in 0..3 {
        store.remove_reference(&format!("test:{seed}")).unwrap();
    }
    store.remove_reference("test:dropped").unwrap();
    assert_eq!(
        store.references("test:", 10).unwrap(),
        vec![("test:kept".to_owned(), kept.blob)]
    );
    assert!(store.references("nothing:", 10).unwrap().is_empty());
    let before = store.stats().unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.blobs_removed, 4);
    assert!(report.chunks_removed > 0);
    assert!(report.packs_removed + report.packs_compacted > 0, "{report:?}");
    let after = store.stats().unwrap();
    assert_eq!(after.blobs, 1);
    assert!(after.hot_bytes < before.hot_bytes);
    assert_eq!(after.logical_bytes, shared.len() as u64);
    assert_eq!(store.read_range(&kept.blob, 0, shared.len() as u64).unwrap(), shared);
    assert_scrub_clean(&store);
    // A second pass finds nothing more.
    assert_eq!(store.gc().unwrap().blobs_removed, 0);
}

/// Goal: a cache of references (`relay:` on a node) stays within its
/// budget, the oldest names going first, and other references are left.
#[test]
fn trimming_a_cache_drops_its_oldest_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let other = store.ingest_bytes(&random_bytes(50_000, 9), "file:other").unwrap();
    for age in 0..4_u64 {
        store
            .ingest_bytes(&random_bytes(100_000, 20 + age), &format!("cache:{age:04}"))
            .unwrap();
    }
    let dropped = store.trim_references("cache:", 250_000, 100).unwrap();
    assert_eq!(dropped.len(), 2);
    let kept: Vec<String> = store
        .references("cache:", 100)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(kept, vec!["cache:0002".to_owned(), "cache:0003".to_owned()]);
    assert_eq!(store.resolve_reference("file:other").unwrap(), Some(other.blob));
    assert_eq!(
        store.stats().unwrap().blobs,
        3,
        "what the dropped names held was collected"
    );
    // Within budget: nothing more goes.
    assert!(store.trim_references("cache:", 250_000, 100).unwrap().is_empty());
}

/// Goal: an in-place file is read through and verified; once its owner
/// changes it, reads fail with an error that names the file, and scrub
/// reports it without calling the store unclean.
#[test]
fn in_place_files_are_verified_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let bytes = random_bytes(150_000, 3);
    let path = write_file(dir.path(), "movie.mkv", &bytes);
    let report = ingest(&store, &path, Residency::InPlace);
    assert_eq!(report.new_bytes, 0);
    let stats = store.stats().unwrap();
    assert_eq!((stats.stored_bytes, stats.in_place_bytes), (0, bytes.len() as u64));
    assert_eq!(store.read_range(&report.blob, 0, bytes.len() as u64).unwrap(), bytes);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file is untouched");

    let mut changed = bytes.clone();
    changed[70_000] ^= 0xff;
    std::fs::write(&path, &changed).unwrap();
    let error = store.read_range(&report.blob, 0, bytes.len() as u64).unwrap_err();
    assert!(matches!(error, StoreError::FileChanged { .. }), "{error}");
    assert!(error.to_string().contains("movie.mkv"));
    let scrub = store.scrub().unwrap();
    assert!(scrub.is_clean());
    assert!(scrub.findings.iter().any(|finding| finding.kind == "file_changed"));

    // Re-indexing moves the reference and the location to the new content.
    let again = ingest(&store, &path, Residency::InPlace);
    assert_ne!(again.blob, report.blob);
    assert_eq!(store.read_range(&again.blob, 0, changed.len() as u64).unwrap(), changed);
    assert_eq!(store.stats().unwrap().in_place_bytes, changed.len() as u64);
    assert_scrub_clean(&store);
}

/// Goal: a file sent without being read (zero-copy) is checked against its
/// blob once, chunk by chunk; a file changed since (new modification time)
/// is checked again and refused, naming the file; a range outside the
/// blob is an error.
#[test]
fn checked_file_ranges_are_remembered_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let bytes = random_bytes(200_000, 4);
    let path = write_file(dir.path(), "movie.mkv", &bytes);
    let blob = ingest(&store, &path, Residency::InPlace).blob;
    let size = bytes.len() as u64;
    let check_file_range = |blob, file: &std::fs::File, start, end| {
        store
            .file_checks(blob, file, &path)
            .and_then(|check| check.check(&store, file, start, end))
    };
    let file = std::fs::File::open(&path).unwrap();
    check_file_range(&blob, &file, 1_000, 90_000).unwrap();
    check_file_range(&blob, &file, 0, size).unwrap();
    check_file_range(&blob, &file, size, size).unwrap();
    let outside = check_file_range(&blob, &file, 0, size + 1).unwrap_err();
    assert!(matches!(outside, StoreError::RangeOutOfBounds { .. }), "{outside}");

    // A write in place: same inode, new modification time.
    let mut changed = bytes.clone();
    changed[150_000] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, &changed).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // Chunks away from the change still hold the blob's bytes.
    check_file_range(&blob, &file, 0, 10_000).unwrap();
    let error = check_file_range(&blob, &file, 0, size).unwrap_err();
    assert!(matches!(error, StoreError::FileChanged { .. }), "{error}");
    assert!(error.to_string().contains("movie.mkv"));
    // An edit that puts the old modification time back (as tag editors
    // may) is still seen: the change time differs.
    let file = std::fs::File::open(&path).unwrap();
    let fresh = ingest(&store, &path, Residency::InPlace).blob;
    check_file_range(&fresh, &file, 0, size).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut edited = changed.clone();
    edited[190_000] ^= 0xff;
    std::fs::write(&path, &edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let error = check_file_range(&fresh, &file, 0, size).unwrap_err();
    assert!(matches!(error, StoreError::FileChanged { .. }), "{error}");
    // A truncated file is refused without a read.
    std::fs::write(&path, &bytes[..1000]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let error = check_file_range(&blob, &file, 0, 10).unwrap_err();
    assert!(matches!(error, StoreError::FileChanged { .. }), "{error}");
}

/// Goal: a stored blob's bytes are found in its hot pack files as spans
/// that hold exactly the asked range (adjacent chunks merged), checked
/// once; a blob with a chunk only in place has no spans.
#[test]
fn stored_blobs_lie_in_pack_file_spans() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let bytes = random_bytes(300_000, 5);
    let blob = store.ingest_bytes(&bytes, "cache:segment").unwrap().blob;
    let read_spans = |start: u64, end: u64| -> Vec<u8> {
        let spans = store.blob_file_spans(&blob, start, end).unwrap().expect("hot spans");
        let mut out = Vec::new();
        for span in spans {
            let mut part = vec![0_u8; span.len as usize];
            span.file.read_exact_at(&mut part, span.offset).unwrap();
            out.extend_from_slice(&part);
        }
        out
    };
    assert_eq!(read_spans(0, 300_000), bytes);
    assert_eq!(read_spans(12_345, 250_001), bytes[12_345..250_001]);
    assert!(read_spans(7, 7).is_empty());
    let spans = store.blob_file_spans(&blob, 0, 300_000).unwrap().unwrap();
    let chunks = store.blob(&blob).unwrap().chunks.len();
    assert!(
        spans.len() < chunks,
        "adjacent chunks are merged: {} spans for {chunks} chunks",
        spans.len()
    );
    assert!(store.blob_file_spans(&blob, 0, 300_001).is_err());

    let in_place = write_file(dir.path(), "film.mkv", &random_bytes(50_000, 6));
    let only_there = ingest(&store, &in_place, Residency::InPlace).blob;
    assert!(store.blob_file_spans(&only_there, 0, 50_000).unwrap().is_none());
}

/// Goal: a batch of in-place files commits once, counts a blob two files
/// share once, and fails only the files that cannot be read.
#[test]
fn in_place_batches_count_shared_blobs_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let bytes = random_bytes(90_000, 4);
    let a = write_file(dir.path(), "a.flac", &bytes);
    let b = write_file(dir.path(), "b.flac", &bytes);
    let c = write_file(dir.path(), "c.flac", &random_bytes(40_000, 5));
    let missing = dir.path().join("missing.flac");
    let answers = store.index_in_place(&[a.clone(), b, missing, c]);
    assert_eq!(answers.len(), 4);
    assert!(matches!(answers[2], Err(StoreError::Io { .. })), "{:?}", answers[2]);
    let blob = answers[0].as_ref().unwrap().blob;
    assert_eq!(answers[1].as_ref().unwrap().blob, blob);
    let stats = store.stats().unwrap();
    assert_eq!(stats.blobs, 2);
    assert_eq!(stats.in_place_bytes, 2 * 90_000 + 40_000);
    assert_eq!(store.read_range(&blob, 0, 90_000).unwrap(), bytes);
    // Indexing again changes nothing and says so.
    let again = store.index_in_place(&[a]);
    assert!(again[0].as_ref().unwrap().already_present);
    assert_eq!(store.stats().unwrap().in_place_bytes, 2 * 90_000 + 40_000);
    assert_scrub_clean(&store);
}

/// Goal: bad input gets a clear error and leaves the store consistent.
#[test]
fn bad_paths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let missing = store.ingest_file(&dir.path().join("nope.mkv"), Residency::Stored, &mut |_| {});
    assert!(matches!(missing, Err(StoreError::Io { .. })));
    assert!(missing.unwrap_err().to_string().contains("nope.mkv"));
    let directory = store.ingest_file(dir.path(), Residency::Stored, &mut |_| {});
    assert!(
        matches!(directory, Err(StoreError::NotAFile(_)) | Err(StoreError::Io { .. })),
        "{directory:?}"
    );
    let unknown = BlobId::of(b"never stored");
    assert!(matches!(
        store.read_range(&unknown, 0, 1),
        Err(StoreError::BlobNotFound(_))
    ));
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert_scrub_clean(&store);
}

/// Goal: a file that keeps changing while it is ingested is refused with
/// nothing half-indexed. Method: a thread appends to the file until the
/// ingest returns.
#[test]
fn a_file_changing_during_ingest_is_refused() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), small_config()).unwrap();
    let path = write_file(dir.path(), "growing.bin", &random_bytes(4 << 20, 4));
    let done = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            let extra = random_bytes(4096, 5);
            while !done.load(Ordering::Relaxed) {
                file.write_all(&extra).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        let outcome = store.ingest_file(&path, Residency::Stored, &mut |_| {});
        done.store(true, Ordering::Relaxed);
        outcome
    });
    assert!(
        matches!(outcome, Err(StoreError::ChangedDuringIngest(_))),
        "{outcome:?}"
    );
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.blobs, stats.chunks, stats.stored_bytes, stats.hot_bytes),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_scrub_clean(&store);
    // The store stays usable.
    store.ingest_bytes(b"still works", "test:after").unwrap();
    assert_scrub_clean(&store);
}

/// Goal: a full disk is a clear error, nothing is half-indexed and the store
/// stays usable. Method: the store lives on a 32 MiB tmpfs (needs root,
/// which CI has); a 40 MiB blob cannot fit.
#[test]
fn a_full_disk_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("small");
    std::fs::create_dir(&mount_point).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run the full-disk test"
        );
        eprintln!("cannot mount a tmpfs (not root?); skipping the full-disk test");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount_point);
    let store = Store::open(&mount_point.join("store"), small_config()).unwrap();
    let small = random_bytes(300_000, 1);
    let kept = store.ingest_bytes(&small, "test:small").unwrap();
    let error = store.ingest_bytes(&random_bytes(40 << 20, 2), "test:big").unwrap_err();
    assert!(error.to_string().contains("No space left"), "{error}");
    let stats = store.stats().unwrap();
    assert_eq!(stats.blobs, 1, "nothing half-indexed: {stats:?}");
    assert_eq!(store.read_range(&kept.blob, 0, small.len() as u64).unwrap(), small);
    assert_scrub_clean(&store);
    drop(store);
    let store = Store::open(&mount_point.join("store"), small_config()).unwrap();
    store.ingest_bytes(b"after the failure", "test:after").unwrap();
    assert_scrub_clean(&store);
}
