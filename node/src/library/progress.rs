//! A scan's progress: its phase and counts, readable at any time (scan
//! status) and pushed to a listener (the events WebSocket) at phase changes
//! and at most every [`PUSH_INTERVAL`] within a phase.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Least time between two pushes within a phase.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(250);

/// What a scan is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Walking the folders.
    Walking,
    /// Reading media, tags, EXIF; making art.
    Probing,
    /// Hashing new files into the store's index.
    Indexing,
    /// Writing the catalog through Raft.
    Writing,
    /// Probing films and episodes and listing their keyframes for
    /// streaming (kept on disk), so that playback starts at once.
    Analysing,
}

/// A scan's progress at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProgressView {
    /// The phase.
    pub phase: Phase,
    /// Units done in this phase.
    pub done: u64,
    /// Units in this phase.
    pub total: u64,
}

/// Receives progress.
pub type Listener = Box<dyn Fn(ProgressView) + Send + Sync>;

/// Progress of one scan, shared by its workers.
pub struct ScanProgress {
    phase: Mutex<(Phase, Instant)>,
    done: AtomicU64,
    total: AtomicU64,
    listener: Listener,
}

impl std::fmt::Debug for ScanProgress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ScanProgress")
            .field("now", &self.view())
            .finish()
    }
}

impl ScanProgress {
    /// Progress that tells `listener`.
    pub fn new(listener: Listener) -> ScanProgress {
        ScanProgress {
            phase: Mutex::new((Phase::Walking, Instant::now())),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            listener,
        }
    }

    /// Progress that tells no one.
    pub fn silent() -> ScanProgress {
        ScanProgress::new(Box::new(|_| {}))
    }

    /// Where the scan is.
    pub fn view(&self) -> ProgressView {
        let phase = self.phase.lock().unwrap_or_else(|poison| poison.into_inner()).0;
        ProgressView {
            phase,
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }

    /// Enters `phase` with `total` units to do.
    pub fn start(&self, phase: Phase, total: usize) {
        {
            let mut current = self.phase.lock().unwrap_or_else(|poison| poison.into_inner());
            *current = (phase, Instant::now());
            self.done.store(0, Ordering::Relaxed);
            self.total.store(total as u64, Ordering::Relaxed);
        }
        (self.listener)(self.view());
    }

    /// Records `count` more units done.
    pub fn advance(&self, count: usize) {
        self.done.fetch_add(count as u64, Ordering::Relaxed);
        let due = {
            let mut current = self.phase.lock().unwrap_or_else(|poison| poison.into_inner());
            let due = current.1.elapsed() >= PUSH_INTERVAL;
            if due {
                current.1 = Instant::now();
            }
            due
        };
        if due {
            (self.listener)(self.view());
        }
    }
}
