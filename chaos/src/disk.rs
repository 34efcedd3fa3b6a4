//! Disk faults: a node's data directory on its own small tmpfs, filled to
//! the last byte (ENOSPC) and emptied again, and bytes flipped in the
//! store's pack files (bit rot).
//!
//! A full disk must cost availability only: nothing acknowledged is lost,
//! and once space is back the node serves again (after a restart, if its
//! storage stopped it). A flipped byte must never be served: a read of the
//! chunk fails and scrub reports it.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::Rng;

use crate::ChaosError;

/// Size of each node's tmpfs.
pub const TMPFS_BYTES: u64 = 512 << 20;
/// The file that fills a disk.
const FILLER: &str = "chaos-filler";

/// Mounts a tmpfs of `bytes` on `dir` (created if missing).
pub fn mount_tmpfs(dir: &Path, bytes: u64) -> Result<(), ChaosError> {
    std::fs::create_dir_all(dir)?;
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .output()?;
    if !output.status.success() {
        return Err(ChaosError::Command(format!(
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Unmounts what [`mount_tmpfs`] mounted (lazily: a process that still
/// holds a file there does not keep it mounted).
pub fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).output();
}

/// Fills the file system under `dir` until a write fails with no space
/// left; returns the bytes written.
pub fn fill(dir: &Path) -> Result<u64, ChaosError> {
    let mut file = std::fs::File::create(dir.join(FILLER))?;
    let block = vec![0_u8; 1 << 20];
    let mut written = 0_u64;
    // Bounded: the tmpfs holds TMPFS_BYTES, so this ends in ENOSPC well
    // before the cap; the cap guards against a disk that never fills.
    while written < 2 * TMPFS_BYTES {
        match file.write(&block) {
            Ok(0) => break,
            Ok(count) => written += count as u64,
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(written)
}

/// Frees what [`fill`] took.
pub fn unfill(dir: &Path) -> Result<(), ChaosError> {
    match std::fs::remove_file(dir.join(FILLER)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
        _ => Ok(()),
    }
}

/// A byte flipped in a pack file.
#[derive(Debug, Clone)]
pub struct Flip {
    /// The pack file.
    pub pack: PathBuf,
    /// The byte's offset.
    pub offset: u64,
}

/// Flips one random byte of one random hot pack file of the store under
/// the data directory `dir`; `None` when it has no non-empty pack yet.
pub fn corrupt_pack(dir: &Path, rng: &mut impl Rng) -> Result<Option<Flip>, ChaosError> {
    let mut packs = Vec::new();
    collect_files(&dir.join("store").join("packs"), &mut packs)?;
    packs.retain(|(_, len)| *len > 0);
    packs.sort();
    if packs.is_empty() {
        return Ok(None);
    }
    let (pack, len) = packs.swap_remove(rng.random_range(0..packs.len()));
    let offset = rng.random_range(0..len);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&pack)?;
    let mut byte = [0_u8; 1];
    file.read_exact_at(&mut byte, offset)?;
    // Any nonzero mask changes the byte.
    byte[0] ^= rng.random_range(1..=255_u8);
    file.write_all_at(&byte, offset)?;
    file.sync_all()?;
    Ok(Some(Flip { pack, offset }))
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<(), ChaosError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(())
}
