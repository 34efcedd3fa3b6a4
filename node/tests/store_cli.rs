//! The store's commands as a user runs them: the real `omega` binary in a
//! child process, its stdout, stderr and exit code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::omega;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, RngCore, SeedableRng};

fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let mut bytes = vec![0_u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A temporary directory with an empty `media/` folder; returns it with the
/// paths of the data directory (not yet created) and the media folder.
fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    (dir, data, media)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses `BLOB  PATH` lines printed by `store ingest`.
fn blob_ids(output: &Output) -> Vec<(String, PathBuf)> {
    stdout(output)
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(blob, path)| (blob.to_string(), PathBuf::from(path)))
        .collect()
}

/// Goal: ingest prints each blob id, stats --json has the documented
/// fields, cat returns the bytes and ranges of them.
#[test]
fn ingest_stats_and_cat() {
    let (_dir, data, media) = workspace();
    let a = random_file(&media, "a.bin", 3 << 20, 1);
    random_file(&media, "b.bin", 1 << 20, 2);
    std::fs::copy(&a, media.join("c.bin")).unwrap();

    let output = omega(&data, &["store", "ingest", media.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let blobs = blob_ids(&output);
    assert_eq!(blobs.len(), 3, "{}", stdout(&output));
    assert_eq!(blobs[0].0, blobs[2].0, "identical files share a blob id");
    assert!(stderr(&output).contains("ingested 3 files"), "{}", stderr(&output));

    let output = omega(&data, &["store", "stats", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for field in [
        "logical_bytes",
        "stored_bytes",
        "chunks",
        "blobs",
        "hot_bytes",
        "cold_bytes",
    ] {
        assert!(stats[field].is_u64(), "stats has {field}: {stats}");
    }
    assert_eq!(stats["logical_bytes"], 7 << 20);
    assert_eq!(stats["stored_bytes"], 4 << 20);
    assert_eq!(stats["blobs"], 2);

    let original = std::fs::read(&a).unwrap();
    let output = omega(&data, &["store", "cat", &blobs[0].0]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout == original, "cat returns the file's bytes");
    let output = omega(&data, &["store", "cat", &blobs[0].0, "--range", "1000-1999"]);
    assert_eq!(output.stdout, &original[1000..2000]);
    let output = omega(&data, &["store", "cat", &blobs[0].0, "--range", "-10"]);
    assert_eq!(output.stdout, &original[original.len() - 10..]);

    let output = omega(&data, &["store", "scrub"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let output = omega(&data, &["store", "gc", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// Goal: bad input is one clear line on stderr and a non-zero exit.
#[test]
fn bad_input_is_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases: [&[&str]; 5] = [
        &["store", "ingest", "/no/such/file.mkv"],
        &["store", "cat", "not-a-blob"],
        &[
            "store",
            "cat",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ],
        &["store", "tier", "run"],
        &["store", "stats", "--hot-bytes-max", "lots"],
    ];
    for args in cases {
        let output = omega(&data, args);
        assert!(!output.status.success(), "{args:?} should fail");
        let errors: Vec<&str> = std::str::from_utf8(&output.stderr)
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("omega: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {}", stderr(&output));
    }
    let output = omega(&data, &["store", "ingest", "/no/such/file.mkv"]);
    assert!(stderr(&output).contains("/no/such/file.mkv"), "{}", stderr(&output));
    // Usage errors too: one line (with clap's tip), exit code 2.
    let output = omega(&data, &["store", "stats", "--jsn"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("omega: error: unexpected argument '--jsn'") && text.contains("--json"),
        "{text}"
    );
    // Help stays help.
    let output = omega(&data, &["store", "stats", "--help"]);
    assert!(output.status.success() && stdout(&output).contains("Usage:"));
}

/// Goal: an ingest SIGKILLed at random points leaves a consistent store:
/// scrub is clean after every kill, and a final full ingest reads back every
/// file byte for byte. Method: seeded kill delays over 10 rounds.
#[test]
fn ingest_survives_sigkill_at_random_points() {
    let (dir, data, media) = workspace();
    let files: Vec<PathBuf> = (0..6)
        .map(|index| random_file(&media, &format!("f{index}.bin"), 6 << 20, 10 + index))
        .collect();
    let config = dir.path().join("omega.toml");
    // Small chunks and many of them make the kill land mid-pack more often.
    std::fs::write(
        &config,
        "[store]\nchunk_min_bytes = 16384\nchunk_avg_bytes = 65536\nchunk_max_bytes = 262144\n",
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for round in 0..10 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_omega"))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["store", "ingest"])
            .arg(&media)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..600)));
        child.kill().unwrap();
        child.wait().unwrap();
        let scrub = omega(
            &data,
            &["--config", config.to_str().unwrap(), "store", "scrub", "--json"],
        );
        assert!(
            scrub.status.success(),
            "round {round}: {}{}",
            stdout(&scrub),
            stderr(&scrub)
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_omega"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["store", "ingest"])
        .arg(&media)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let blobs = blob_ids(&output);
    assert_eq!(blobs.len(), files.len());
    for (blob, path) in blobs {
        let cat = omega(&data, &["store", "cat", &blob]);
        assert!(cat.status.success(), "{}", stderr(&cat));
        assert!(
            cat.stdout == std::fs::read(&path).unwrap(),
            "{} reads back",
            path.display()
        );
    }
    let scrub = omega(&data, &["store", "scrub"]);
    assert!(scrub.status.success(), "{}", stderr(&scrub));
}
