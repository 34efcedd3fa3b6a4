//! One budget for every ffmpeg and ffprobe process of this OS process:
//! probes, keyframe scans, subtitle conversions, HLS sessions, audio
//! streams, offline encodes (and the scanner's probes and thumbnails in
//! `node`). Each holds a [`ProcessPermit`] for as long as its child runs, so
//! a burst of requests can never run more than [`ProcessBudget::max`]
//! processes at once: the rest wait a bounded time, then are told "busy".
//!
//! Processes are a resource of the whole OS process (like its file
//! descriptors), so the budget is one per process: [`processes`]. Its size
//! is set once at start ([`ProcessBudget::set_max`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Result, TranscodeError};

/// How long a process waits for a place before it is refused.
pub const WAIT: Duration = Duration::from_secs(10);

/// The processes allowed at once, and those running.
#[derive(Debug)]
pub struct ProcessBudget {
    semaphore: Arc<Semaphore>,
    max: AtomicUsize,
}

/// A place in the budget, held while a child process runs.
#[derive(Debug)]
pub struct ProcessPermit {
    _permit: OwnedSemaphorePermit,
}

impl Drop for ProcessPermit {
    fn drop(&mut self) {
        metrics::gauge!("omega_media_processes").decrement(1.0);
    }
}

/// The default size: two processes per core and four more, so that a small
/// machine still serves a few players while it probes.
fn default_max() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) * 2 + 4
}

/// This OS process's budget.
pub fn processes() -> &'static ProcessBudget {
    static BUDGET: OnceLock<ProcessBudget> = OnceLock::new();
    BUDGET.get_or_init(|| ProcessBudget::new(default_max()))
}

impl ProcessBudget {
    /// A budget of `max` processes (at least one).
    pub fn new(max: usize) -> ProcessBudget {
        let max = max.max(1);
        ProcessBudget {
            semaphore: Arc::new(Semaphore::new(max)),
            max: AtomicUsize::new(max),
        }
    }

    /// Processes allowed at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Processes running now.
    pub fn running(&self) -> usize {
        self.max().saturating_sub(self.semaphore.available_permits())
    }

    /// Resizes the budget (at start, from the configuration). Shrinking
    /// takes effect as running processes end.
    pub fn set_max(&self, max: usize) {
        let max = max.max(1);
        let before = self.max.swap(max, Ordering::AcqRel);
        if max > before {
            self.semaphore.add_permits(max - before);
        } else if before > max {
            let mut left = before - max;
            // Permits in use are taken back as they come home.
            while left > 0 {
                let forgotten = self.semaphore.forget_permits(left);
                if forgotten == 0 {
                    let semaphore = self.semaphore.clone();
                    let remaining = left;
                    tokio::spawn(async move {
                        if let Ok(permits) = semaphore.acquire_many_owned(remaining as u32).await {
                            permits.forget();
                        }
                    });
                    break;
                }
                left -= forgotten;
            }
        }
    }

    fn permit(permit: OwnedSemaphorePermit) -> ProcessPermit {
        metrics::gauge!("omega_media_processes").increment(1.0);
        ProcessPermit { _permit: permit }
    }

    /// A place, waiting at most [`WAIT`].
    pub async fn acquire(&self) -> Result<ProcessPermit> {
        match tokio::time::timeout(WAIT, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(ProcessBudget::permit(permit)),
            _ => Err(self.busy()),
        }
    }

    /// A place now, or busy.
    pub fn try_acquire(&self) -> Result<ProcessPermit> {
        self.semaphore
            .clone()
            .try_acquire_owned()
            .map(ProcessBudget::permit)
            .map_err(|_| self.busy())
    }

    /// A place for a thread outside the async runtime (the scanner's
    /// workers), waiting at most [`WAIT`].
    pub fn acquire_blocking(&self) -> Result<ProcessPermit> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(permit) = self.try_acquire() {
                return Ok(permit);
            }
            if Instant::now() >= deadline {
                return Err(self.busy());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn busy(&self) -> TranscodeError {
        metrics::counter!("omega_media_processes_refused_total").increment(1);
        TranscodeError::ProcessesBusy(self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_more_than_the_budget_at_once() {
        let budget = ProcessBudget::new(2);
        let first = budget.try_acquire().unwrap();
        let _second = budget.acquire().await.unwrap();
        assert_eq!(budget.running(), 2);
        assert!(matches!(budget.try_acquire(), Err(TranscodeError::ProcessesBusy(2))));
        drop(first);
        assert!(budget.try_acquire().is_ok());
        budget.set_max(5);
        assert_eq!(budget.max(), 5);
        let more: Vec<ProcessPermit> = (0..4).map(|_| budget.try_acquire().unwrap()).collect();
        assert!(budget.try_acquire().is_err());
        drop(more);
        budget.set_max(1);
        assert_eq!(budget.max(), 1);
    }
}
