//! Login rate limiting: failed attempts per key (user name, client address)
//! in a sliding window, in a bounded map.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Failures allowed per user name within the window.
pub const FAILURES_PER_NAME: usize = 5;
/// Failures allowed per client address within the window (higher: a
/// household shares one address).
pub const FAILURES_PER_ADDRESS: usize = 30;
/// Failures remembered per key.
const FAILURES_KEPT: usize = FAILURES_PER_ADDRESS;
/// The window.
pub const WINDOW_MS: u64 = 60_000;
/// Keys tracked at most; the oldest are forgotten first.
const KEYS_MAX: usize = 10_000;

/// Counts failures.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl LoginLimiter {
    /// Milliseconds to wait before `key`, allowed `limit` failures per
    /// window, may try again; `None` when allowed.
    pub fn retry_after(&self, key: &str, limit: usize, now_ms: u64) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|poison| poison.into_inner());
        let times = failures.get_mut(key)?;
        while times.front().is_some_and(|at| at + WINDOW_MS <= now_ms) {
            times.pop_front();
        }
        if times.len() < limit {
            return None;
        }
        // The failure that must age out before another attempt.
        times.get(times.len() - limit).map(|first| first + WINDOW_MS - now_ms)
    }

    /// Records a failure of `key`.
    pub fn failed(&self, key: &str, now_ms: u64) {
        let mut failures = self.failures.lock().unwrap_or_else(|poison| poison.into_inner());
        if failures.len() >= KEYS_MAX && !failures.contains_key(key) {
            // Forget the key whose last failure is oldest.
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, times)| times.back().copied().unwrap_or(0))
                .map(|(key, _)| key.clone())
            {
                failures.remove(&oldest);
            }
        }
        let times = failures.entry(key.to_owned()).or_default();
        times.push_back(now_ms);
        while times.len() > FAILURES_KEPT {
            times.pop_front();
        }
    }

    /// Forgets `key`'s failures (after a success).
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let limiter = LoginLimiter::default();
        for at in 0..FAILURES_PER_NAME as u64 {
            assert_eq!(limiter.retry_after("ada", FAILURES_PER_NAME, at), None);
            limiter.failed("ada", at);
        }
        assert_eq!(limiter.retry_after("ada", FAILURES_PER_NAME, 10), Some(WINDOW_MS - 10));
        assert_eq!(limiter.retry_after("ada", FAILURES_PER_ADDRESS, 10), None);
        assert_eq!(limiter.retry_after("bob", FAILURES_PER_NAME, 10), None);
        assert_eq!(limiter.retry_after("ada", FAILURES_PER_NAME, WINDOW_MS + 5), None);
        limiter.succeeded("ada");
        assert_eq!(limiter.retry_after("ada", FAILURES_PER_NAME, 11), None);
    }
}
