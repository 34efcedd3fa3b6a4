//! How a worker takes part in the job queue, apart from what it runs: which
//! jobs it may claim, how often it renews its lease and when it must give a
//! lease up. A node's worker (`omega-node`'s `jobs`) and the simulator's
//! workers both follow these rules, so the simulator checks the policy the
//! node runs.
//!
//! Safety never rests on clocks: the state machine refuses a renewal or a
//! completion whose fencing token is not the job's latest claim. Clocks
//! (each proposer's own, skewed or jumping) only decide when a job looks
//! free to claim, and so only how soon a stalled job moves on.

use std::time::Duration;

use crate::model::{Job, JobState};

/// Claims a job is tried at most; past that, its claimer records it failed.
pub const ATTEMPTS_MAX: u32 = 5;

/// The jobs a worker may try to claim at `now_ms` (its clock), oldest first:
/// queued ones and those whose lease expired, less those `skip` names.
pub fn claimable(jobs: Vec<Job>, now_ms: u64, skip: impl Fn(&Job) -> bool) -> Vec<Job> {
    let mut free: Vec<Job> = jobs
        .into_iter()
        .filter(|job| match job.state {
            JobState::Queued => true,
            JobState::Leased { expires_ms, .. } => expires_ms <= now_ms,
            JobState::Done { .. } | JobState::Failed { .. } => false,
        })
        .filter(|job| !skip(job))
        .collect();
    free.sort_by_key(|job| job.id);
    free
}

/// Whether a freshly claimed job has been tried too often and is to be
/// recorded failed rather than run again.
pub fn out_of_attempts(job: &Job) -> bool {
    job.attempts > ATTEMPTS_MAX
}

/// How often the holder renews a lease of `lease_ms`: every third of it, so
/// that two renewals may fail before it lapses.
pub fn renew_every(lease_ms: u64) -> Duration {
    Duration::from_millis(lease_ms / 3)
}

/// Whether a holder whose renewals keep failing must stop: its last good
/// renewal was `since_renewed` ago, and the lease has run out since.
pub fn lease_lapsed(since_renewed: Duration, lease_ms: u64) -> bool {
    since_renewed >= Duration::from_millis(lease_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeId;

    fn job(id: u64, state: JobState) -> Job {
        Job {
            id,
            item: 1,
            profile: "720p".into(),
            state,
            attempts: 0,
            created_ms: 0,
        }
    }

    fn leased(node: NodeId, expires_ms: u64) -> JobState {
        JobState::Leased {
            node,
            expires_ms,
            fencing: 7,
        }
    }

    #[test]
    fn queued_and_expired_jobs_are_claimable_oldest_first() {
        let jobs = vec![
            job(4, leased(2, 1_000)),
            job(3, JobState::Queued),
            job(5, leased(2, 1_001)),
            job(
                6,
                JobState::Failed {
                    reason: "x".into(),
                    finished_ms: 0,
                },
            ),
        ];
        let ids: Vec<u64> = claimable(jobs.clone(), 1_000, |_| false)
            .iter()
            .map(|job| job.id)
            .collect();
        assert_eq!(ids, vec![3, 4]);
        let ids: Vec<u64> = claimable(jobs, 1_000, |job| job.id == 3)
            .iter()
            .map(|job| job.id)
            .collect();
        assert_eq!(ids, vec![4]);
    }

    #[test]
    fn leases_are_renewed_thrice_per_length_and_lapse_at_its_end() {
        assert_eq!(renew_every(3_000), Duration::from_secs(1));
        assert!(!lease_lapsed(Duration::from_millis(2_999), 3_000));
        assert!(lease_lapsed(Duration::from_millis(3_000), 3_000));
    }
}
