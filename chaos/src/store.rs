//! The store under faults: a client ingests random files into random
//! nodes' stores (`omega store ingest`, through the running node); after
//! healing, every acknowledged blob must read back byte for byte from its
//! node (`omega store cat`), and `omega store scrub` must be clean on every
//! node. An ingest is acknowledged only after the node synced it, so a
//! SIGKILL must never lose one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// An acknowledged ingest.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The node whose store holds it.
    pub node: usize,
    /// Its blob id.
    pub blob: String,
    /// The file ingested (kept to compare with).
    pub file: PathBuf,
}

/// What the store checks found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreViolation {
    /// An acknowledged blob does not read back as it was.
    Lost {
        /// The node.
        node: usize,
        /// The blob.
        blob: String,
        /// What went wrong.
        why: String,
    },
    /// Scrub found problems.
    Scrub {
        /// The node.
        node: usize,
        /// What it said.
        report: String,
    },
}

impl std::fmt::Display for StoreViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreViolation::Lost { node, blob, why } => {
                write!(f, "lost ingest: blob {blob} on node {node}: {why}")
            }
            StoreViolation::Scrub { node, report } => write!(f, "scrub on node {node} is not clean: {report}"),
        }
    }
}

/// Per node, held (shared) by an ingest while it runs and (exclusively) by
/// a fault that kills the node: a CLI started while the node is down would
/// open the store itself and keep the restarting node out.
pub type NodeLocks = Arc<Vec<RwLock<()>>>;

/// Ingests random files (64 KiB to 2 MiB) into random nodes until told to
/// stop; returns what was acknowledged, and how many were not.
pub fn ingest_workload(
    seed: u64,
    omega: &Path,
    dirs: &[PathBuf],
    scratch: &Path,
    locks: &NodeLocks,
    stop: &AtomicBool,
) -> (Vec<Ingested>, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut number = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..800)));
        let node = rng.random_range(0..dirs.len());
        let mut bytes = vec![0_u8; rng.random_range(64 << 10..2 << 20)];
        rng.fill_bytes(&mut bytes);
        let file = scratch.join(format!("ingest-{number}.bin"));
        number += 1;
        if std::fs::write(&file, &bytes).is_err() {
            continue;
        }
        let Ok(_running) = locks[node].read() else { continue };
        let output = Command::new(omega)
            .arg("--data-dir")
            .arg(&dirs[node])
            .args(["store", "ingest"])
            .arg(&file)
            .output();
        let blob = output.ok().filter(|output| output.status.success()).and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .find(|word| word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned)
        });
        match blob {
            Some(blob) => acked.push(Ingested { node, blob, file }),
            // Not acknowledged: it may or may not be there; not checked.
            None => {
                refused += 1;
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    (acked, refused)
}

/// What the store checks found.
#[derive(Debug, Default)]
pub struct StoreCheck {
    /// Lost or wrong data, unclean scrubs.
    pub violations: Vec<StoreViolation>,
    /// Reads on corrupted nodes refused because a chunk failed its hash.
    pub reads_refused: usize,
    /// Corrupt chunks scrub found on corrupted nodes.
    pub chunks_found: usize,
}

/// Reads every acknowledged blob back from its node and scrubs every node.
/// On a node whose packs had a byte flipped (`corrupted`), a read may be
/// refused for a corrupt chunk and scrub may find corrupt chunks; wrong
/// bytes are never allowed.
pub fn verify(omega: &Path, dirs: &[PathBuf], acked: &[Ingested], corrupted: &[bool]) -> StoreCheck {
    let mut check = StoreCheck::default();
    for ingested in acked {
        let expected = std::fs::read(&ingested.file).unwrap_or_default();
        let output = Command::new(omega)
            .arg("--data-dir")
            .arg(&dirs[ingested.node])
            .args(["store", "cat", &ingested.blob])
            .output();
        let why = match output {
            Err(error) => Some(format!("cannot run omega: {error}")),
            Ok(output) if !output.status.success() => {
                let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                if corrupted[ingested.node] && names_corruption(&stderr) {
                    check.reads_refused += 1;
                    None
                } else {
                    Some(stderr)
                }
            }
            Ok(output) if output.stdout != expected => Some(format!(
                "read {} bytes that differ from the {} ingested",
                output.stdout.len(),
                expected.len()
            )),
            Ok(_) => None,
        };
        if let Some(why) = why {
            check.violations.push(StoreViolation::Lost {
                node: ingested.node,
                blob: ingested.blob.clone(),
                why,
            });
        }
    }
    for (node, dir) in dirs.iter().enumerate() {
        match scrub(omega, dir) {
            Ok((kinds, _)) if kinds.is_empty() => {}
            Ok((kinds, _)) if corrupted[node] && kinds.iter().all(|kind| kind == "corrupt_chunk") => {
                check.chunks_found += kinds.len();
            }
            Ok((_, report)) | Err(report) => check.violations.push(StoreViolation::Scrub { node, report }),
        }
    }
    check
}

/// True when a store error says a chunk failed its hash.
fn names_corruption(error: &str) -> bool {
    error.contains("corrupt") || error.contains("quarantined")
}

/// `omega store scrub --json` on one node: the kinds of its findings, and
/// the report as printed; `Err` when it did not run or said nothing.
fn scrub(omega: &Path, dir: &Path) -> Result<(Vec<String>, String), String> {
    let output = Command::new(omega)
        .arg("--data-dir")
        .arg(dir)
        .args(["store", "scrub", "--json"])
        .output()
        .map_err(|error| format!("cannot run omega: {error}"))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|_| printed.clone())?;
    let kinds = report["findings"]
        .as_array()
        .map(|findings| {
            findings
                .iter()
                .filter_map(|finding| finding["kind"].as_str().map(str::to_owned))
                .filter(|kind| kind != "file_changed")
                .collect()
        })
        .unwrap_or_default();
    Ok((kinds, printed))
}
