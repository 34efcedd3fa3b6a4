//! Login rate limiting: failed attempts per (user name, client address) and
//! per client address in a sliding window, in a bounded map.
//!
//! Keyed by the pair, not by the name alone: a stranger guessing a user's
//! password from another address slows only itself, and the user's music
//! apps and readers, signing in from their own addresses, go on working.
//! Keys are BLAKE3 digests, so a client sending megabyte-long names costs
//! 32 bytes per entry; entries age out with the window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures allowed per (user name, address) within the window.
pub const FAILURES_PER_NAME: usize = 5;
/// Failures allowed per client address within the window (higher: a
/// household shares one address).
pub const FAILURES_PER_ADDRESS: usize = 30;
/// Failures remembered per key.
const FAILURES_KEPT: usize = FAILURES_PER_ADDRESS;
/// The window.
pub const WINDOW_MS: u64 = 60_000;
/// Keys tracked at most; past it, those whose failures aged out go first,
/// then the one failed longest ago.
const KEYS_MAX: usize = 10_000;

/// What a failure counts against: a fixed-size digest.
type Key = [u8; 32];

/// Counts failures.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Key, VecDeque<u64>>>,
}

/// The keys of one sign-in attempt, with their limits.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pair: Key,
    address: Key,
}

impl Attempt {
    /// An attempt to sign in as `name` (compared case-insensitively) from
    /// `address`.
    pub fn new(name: &str, address: IpAddr) -> Attempt {
        let address_text = address.to_string();
        let mut pair = blake3::Hasher::new();
        pair.update(b"pair\0");
        pair.update(address_text.as_bytes());
        pair.update(b"\0");
        pair.update(name.to_lowercase().as_bytes());
        let mut by_address = blake3::Hasher::new();
        by_address.update(b"addr\0");
        by_address.update(address_text.as_bytes());
        Attempt {
            pair: *pair.finalize().as_bytes(),
            address: *by_address.finalize().as_bytes(),
        }
    }

    fn limits(self) -> [(Key, usize); 2] {
        [(self.pair, FAILURES_PER_NAME), (self.address, FAILURES_PER_ADDRESS)]
    }
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<u64>>> {
        self.failures.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Milliseconds to wait before `attempt` may be made; `None` when it
    /// may be made now.
    pub fn retry_after(&self, attempt: Attempt, now_ms: u64) -> Option<u64> {
        let mut failures = self.lock();
        attempt
            .limits()
            .into_iter()
            .filter_map(|(key, limit)| {
                let times = failures.get_mut(&key)?;
                while times.front().is_some_and(|at| at.saturating_add(WINDOW_MS) <= now_ms) {
                    times.pop_front();
                }
                if times.len() < limit {
                    return None;
                }
                // The failure that must age out before another attempt.
                times
                    .get(times.len() - limit)
                    .map(|first| first.saturating_add(WINDOW_MS).saturating_sub(now_ms))
            })
            .max()
    }

    /// Records a failed attempt.
    pub fn failed(&self, attempt: Attempt, now_ms: u64) {
        let mut failures = self.lock();
        for (key, _) in attempt.limits() {
            if failures.len() >= KEYS_MAX && !failures.contains_key(&key) {
                make_room(&mut failures, now_ms);
            }
            let times = failures.entry(key).or_default();
            times.push_back(now_ms);
            while times.len() > FAILURES_KEPT {
                times.pop_front();
            }
        }
        debug_assert!(failures.len() <= KEYS_MAX);
    }

    /// Forgets the failures of this name from this address (after a
    /// success); the address's own count stays.
    pub fn succeeded(&self, attempt: Attempt) {
        self.lock().remove(&attempt.pair);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops every key whose failures all aged out; if none did, the key that
/// failed longest ago.
fn make_room(failures: &mut HashMap<Key, VecDeque<u64>>, now_ms: u64) {
    let before = failures.len();
    failures.retain(|_, times| times.back().is_some_and(|last| last.saturating_add(WINDOW_MS) > now_ms));
    if failures.len() < before {
        return;
    }
    if let Some(oldest) = failures
        .iter()
        .min_by_key(|(_, times)| times.back().copied().unwrap_or(0))
        .map(|(key, _)| *key)
    {
        failures.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(address: &str) -> IpAddr {
        address.parse().unwrap()
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let limiter = LoginLimiter::default();
        let ada = Attempt::new("ada", at("10.0.0.1"));
        for time in 0..FAILURES_PER_NAME as u64 {
            assert_eq!(limiter.retry_after(ada, time), None);
            limiter.failed(ada, time);
        }
        assert_eq!(limiter.retry_after(ada, 10), Some(WINDOW_MS - 10));
        assert_eq!(limiter.retry_after(Attempt::new("bob", at("10.0.0.1")), 10), None);
        assert_eq!(
            limiter.retry_after(Attempt::new("ADA", at("10.0.0.1")), 10),
            Some(WINDOW_MS - 10)
        );
        assert_eq!(limiter.retry_after(ada, WINDOW_MS + 5), None);
        limiter.succeeded(ada);
        assert_eq!(limiter.retry_after(ada, 11), None);
    }

    #[test]
    fn a_stranger_cannot_lock_a_user_out_from_another_address() {
        let limiter = LoginLimiter::default();
        let stranger = Attempt::new("ada", at("203.0.113.9"));
        for time in 0..50 {
            limiter.failed(stranger, time);
        }
        assert!(limiter.retry_after(stranger, 60).is_some());
        assert_eq!(limiter.retry_after(Attempt::new("ada", at("192.168.1.20")), 60), None);
    }

    #[test]
    fn an_address_is_limited_across_names() {
        let limiter = LoginLimiter::default();
        for (time, name) in (0..FAILURES_PER_ADDRESS as u64).zip((0..).map(|n| format!("user{n}"))) {
            limiter.failed(Attempt::new(&name, at("10.0.0.7")), time);
        }
        assert!(
            limiter
                .retry_after(Attempt::new("fresh", at("10.0.0.7")), 100)
                .is_some()
        );
        assert_eq!(limiter.retry_after(Attempt::new("fresh", at("10.0.0.8")), 100), None);
    }

    #[test]
    fn memory_is_bounded_whatever_the_names() {
        let limiter = LoginLimiter::default();
        let long_name = "x".repeat(4096);
        for n in 0..(KEYS_MAX as u64 + 500) {
            let address = IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            limiter.failed(Attempt::new(&long_name, address), n);
        }
        assert!(limiter.len() <= KEYS_MAX);
        // Once the window passed, old keys make room all at once.
        limiter.failed(Attempt::new("late", at("10.200.0.1")), 10 * WINDOW_MS);
        assert!(limiter.len() <= 2);
    }
}
