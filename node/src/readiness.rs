//! Readiness follows quorum: a member is ready while a quorum stands behind
//! it (see [`omega_consensus::Cluster::quorum_contact`]), checked in the
//! background so that `/readyz`, which anyone may call as often as they
//! like, costs the leader nothing.
//!
//! Without it a leader that lost its quorum (three of five members killed)
//! answered every write with 503 for as long as it stayed down while its
//! `/readyz` said 200, and Kubernetes kept sending it traffic.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use omega_consensus::quic::QuicTransport;
use omega_consensus::{Cluster, Timing};

/// When this member last had a quorum behind it.
#[derive(Debug)]
pub struct Readiness {
    last_contact: Mutex<Option<Instant>>,
    /// How long a contact counts.
    window: Duration,
}

impl Readiness {
    /// No contact yet; a contact counts for `window`.
    pub fn new(window: Duration) -> Readiness {
        Readiness {
            last_contact: Mutex::new(None),
            window,
        }
    }

    /// For `timing`: a contact counts for the longest election timeout, so
    /// that a member goes not-ready within two election timeouts of losing
    /// its quorum (one to notice, one for the check in flight).
    pub fn for_timing(timing: &Timing) -> Readiness {
        Readiness::new(timing.election_max)
    }

    /// True while the last contact with a quorum is recent.
    pub fn in_contact(&self) -> bool {
        self.last_contact().is_some_and(|at| at.elapsed() < self.window)
    }

    /// True when this member had a quorum behind it once and has not for
    /// `for_at_least`: a write would wait in vain. False before the first
    /// contact (a node starting up waits for its first election).
    pub fn lost_contact_for(&self, for_at_least: Duration) -> bool {
        self.last_contact().is_some_and(|at| at.elapsed() >= for_at_least)
    }

    /// How long without a quorum before writes are refused at once rather
    /// than left to wait: well past an election (a leader change takes about
    /// one election timeout), so that only a lost quorum trips it.
    pub fn write_refusal_after(&self) -> Duration {
        self.window * 4
    }

    /// When this member last had a quorum behind it.
    pub fn last_contact(&self) -> Option<Instant> {
        *self.last_contact.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records a contact at `at`; an older one than recorded changes nothing.
    fn record_contact(&self, at: Instant) {
        let mut last = self.last_contact.lock().unwrap_or_else(|poison| poison.into_inner());
        *last = Some(last.map_or(at, |last| last.max(at)));
    }
}

/// Checks the quorum every heartbeat or two, for as long as the node runs.
/// A check waits at most the window; the time recorded is when the quorum
/// was last seen (a leader's last acknowledgement, the start of a
/// follower's read), so a slow answer does not stretch readiness.
pub async fn watch(cluster: Arc<Cluster<QuicTransport>>, readiness: Arc<Readiness>, timing: Timing) {
    let period = (timing.heartbeat * 2).min(readiness.window / 2);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match cluster.quorum_contact(readiness.window).await {
            Ok(seen) => readiness.record_contact(seen),
            Err(error) => tracing::debug!(%error, "no quorum contact"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_counts_for_the_window_only() {
        let readiness = Readiness::new(Duration::from_millis(200));
        assert!(!readiness.in_contact(), "no contact yet");
        readiness.record_contact(Instant::now());
        assert!(readiness.in_contact());
        assert!(!readiness.lost_contact_for(Duration::from_millis(100)));
        let stale = Readiness::new(Duration::from_millis(200));
        stale.record_contact(Instant::now() - Duration::from_millis(300));
        assert!(!stale.in_contact());
        assert!(stale.lost_contact_for(Duration::from_millis(100)));
        stale.record_contact(Instant::now() - Duration::from_millis(400));
        assert!(
            stale.lost_contact_for(Duration::from_millis(250)),
            "an older contact changes nothing"
        );
        assert!(!stale.lost_contact_for(Duration::from_millis(350)));
    }
}
