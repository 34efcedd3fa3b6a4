//! What ffprobe said of each source, kept on disk by the source's id (its
//! content address, or its path and modification time): the probe's JSON
//! and the video's keyframe times. A master playlist then needs neither
//! probe nor keyframe scan, even after a restart, once a scan has analysed
//! its library. A cache only: a file lost or torn is probed again, so
//! writes are atomic (a rename) but not synced.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sources analysed at most; past it, the oldest half is dropped.
const SOURCES_MAX: usize = 50_000;
/// The largest file read back (a probe of many streams, a long film's
/// keyframes: 10 hours at one keyframe a second is about 400 KB).
const FILE_MAX: u64 = 8 << 20;

/// A folder of analyses.
#[derive(Debug)]
pub struct SourceAnalysis {
    dir: PathBuf,
    /// Files in `dir`, counted at open and on each new one (so that the
    /// folder is listed only when it may be full).
    files: AtomicUsize,
}

/// Which analysis of a source.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Probe,
    Keyframes,
}

impl SourceAnalysis {
    /// Analyses under `dir` (made if missing).
    pub fn open(dir: &Path) -> std::io::Result<SourceAnalysis> {
        std::fs::create_dir_all(dir)?;
        let files = std::fs::read_dir(dir)?.count();
        Ok(SourceAnalysis {
            dir: dir.to_path_buf(),
            files: AtomicUsize::new(files),
        })
    }

    fn path(&self, id: &str, kind: Kind) -> Option<PathBuf> {
        // Ids are hex digests; anything else never names a file.
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        let extension = match kind {
            Kind::Probe => "probe.json",
            Kind::Keyframes => "keyframes",
        };
        Some(self.dir.join(format!("{id}.{extension}")))
    }

    fn read(&self, id: &str, kind: Kind) -> Option<Vec<u8>> {
        let path = self.path(id, kind)?;
        let size = std::fs::metadata(&path).ok()?.len();
        (size <= FILE_MAX).then(|| std::fs::read(&path).ok()).flatten()
    }

    fn write(&self, id: &str, kind: Kind, bytes: &[u8]) {
        let Some(path) = self.path(id, kind) else { return };
        if bytes.len() as u64 > FILE_MAX {
            return;
        }
        if !path.exists() && self.files.fetch_add(1, Ordering::Relaxed) + 1 > SOURCES_MAX * 2 {
            self.make_room();
        }
        // A temporary file of its own, so that two writers of one source
        // never rename a half-written file into place.
        let written = tempfile::NamedTempFile::new_in(&self.dir).and_then(|mut temporary| {
            std::io::Write::write_all(&mut temporary, bytes)?;
            temporary.persist(&path).map(drop).map_err(|error| error.error)
        });
        if let Err(error) = written {
            tracing::debug!(path = %path.display(), %error, "cannot keep a source's analysis");
        }
    }

    /// Keeps the folder under [`SOURCES_MAX`] sources (two files each):
    /// the half written longest ago goes.
    fn make_room(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        files.sort();
        let dropped = files.len() / 2;
        for (_, path) in files.iter().take(dropped) {
            let _ = std::fs::remove_file(path);
        }
        self.files.store(files.len() - dropped, Ordering::Relaxed);
    }

    /// The ffprobe JSON kept for source `id`.
    pub fn probe(&self, id: &str) -> Option<Vec<u8>> {
        self.read(id, Kind::Probe)
    }

    /// Keeps the ffprobe JSON of source `id`.
    pub fn keep_probe(&self, id: &str, json: &[u8]) {
        self.write(id, Kind::Probe, json);
    }

    /// The keyframe times kept for source `id` (seconds, ascending).
    pub fn keyframes(&self, id: &str) -> Option<Vec<f64>> {
        let text = String::from_utf8(self.read(id, Kind::Keyframes)?).ok()?;
        text.lines().map(|line| line.parse::<f64>().ok()).collect()
    }

    /// Keeps the keyframe times of source `id`.
    pub fn keep_keyframes(&self, id: &str, keyframes: &[f64]) {
        let text: String = keyframes.iter().map(|time| format!("{time}\n")).collect();
        self.write(id, Kind::Keyframes, text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::SourceAnalysis;

    #[test]
    fn analyses_come_back_as_kept_and_odd_ids_name_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let analysis = SourceAnalysis::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        assert!(analysis.probe("ab12").is_none());
        analysis.keep_probe("ab12", b"{\"streams\":[]}");
        analysis.keep_keyframes("ab12", &[0.0, 2.002, 4.1]);
        assert_eq!(analysis.probe("ab12").as_deref(), Some(&b"{\"streams\":[]}"[..]));
        assert_eq!(analysis.keyframes("ab12"), Some(vec![0.0, 2.002, 4.1]));
        analysis.keep_probe("../escape", b"x");
        assert!(analysis.probe("../escape").is_none());
        assert_eq!(std::fs::read_dir(dir.path()).map(Iterator::count).unwrap_or(0), 2);
    }
}
