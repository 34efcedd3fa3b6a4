//! The transcode job queue under faults. Every node runs a worker that
//! follows a real node's policy ([`omega_consensus::jobs`]: what it may
//! claim, how often it renews, when it gives up) on its own clock, which the
//! seed skews and the nemesis makes jump. Work takes simulated time; while
//! faults last, some workers stall past their lease just before they
//! finish (a long pause), then try to record their result anyway. Each claim, renewal and
//! completion the cluster answers is recorded with when it was asked and
//! answered, and [`check`] finds in that history what fencing must rule
//! out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omega_consensus::command::{Command, JobOutcome, Response};
use omega_consensus::jobs;
use omega_consensus::model::{EntityId, Job, JobState};
use omega_consensus::state_machine::read;
use rand::Rng;

use crate::client::{CLIENT_TIMEOUT, propose};
use crate::disk::Disk;
use crate::world::{Shared, locked};

/// How long a worker leaves a job it could not finish to others (as a
/// node does, scaled to the simulation's pace).
const RETRY_AFTER: Duration = Duration::from_secs(3);

/// The seed's job workload.
#[derive(Debug, Clone, Copy)]
pub struct JobLoad {
    /// Jobs queued during the faults.
    pub jobs: u32,
    /// Lease length.
    pub lease_ms: u64,
}

impl JobLoad {
    /// The seed's draw.
    pub fn pick(rng: &mut impl Rng) -> JobLoad {
        JobLoad {
            jobs: rng.random_range(2..8),
            lease_ms: rng.random_range(1_000..4_000),
        }
    }
}

/// What a worker asked of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A claim (recorded only when it was granted).
    Claim,
    /// A renewal.
    Renew,
    /// A completion.
    Finish,
}

/// One answered request of a worker.
#[derive(Debug, Clone)]
pub struct JobOp {
    /// What it asked.
    pub ask: Ask,
    /// The job.
    pub job: EntityId,
    /// The worker's node.
    pub node: u64,
    /// The fencing token granted (claim) or given (renewal, completion).
    pub fencing: u64,
    /// Whether the cluster accepted it.
    pub accepted: bool,
    /// When it was asked, simulated ns.
    pub invoke: u128,
    /// When it was answered, simulated ns.
    pub complete: u128,
}

/// Queues `load.jobs` jobs for `item` at random times within `over`,
/// through random nodes. An unanswered enqueue may or may not have
/// applied: the final check counts the jobs the cluster holds.
pub async fn produce(shared: &Shared, item: EntityId, load: JobLoad, over: Duration) {
    for _ in 0..load.jobs {
        let (wait, node) = {
            let ids = shared.node_ids();
            let mut rng = shared.rng();
            let wait = rng.random_range(0..over.as_millis() as u64 / u64::from(load.jobs).max(1));
            (Duration::from_millis(wait), ids[rng.random_range(0..ids.len())])
        };
        tokio::time::sleep(wait).await;
        let command = Command::EnqueueJob {
            item,
            profile: "720p".into(),
            now_ms: shared.wall_ms(node),
        };
        let answer = propose(shared, node, &command, CLIENT_TIMEOUT).await;
        shared.event(format_args!("enqueue via {node}: {answer:?}"));
    }
}

/// Node `node`'s worker, until `stop`.
pub async fn worker(node: u64, shared: &Shared, load: JobLoad, history: &Mutex<Vec<JobOp>>, stop: &AtomicBool) {
    let mut released: BTreeMap<EntityId, tokio::time::Instant> = BTreeMap::new();
    while !stop.load(Ordering::Acquire) {
        let poll = Duration::from_millis(shared.rng().random_range(100..600));
        tokio::time::sleep(poll).await;
        // A crashed node runs no worker; one that restarts starts afresh.
        let (Some(incarnation), Some(disk)) = (shared.incarnation(node), shared.disk(node)) else {
            continue;
        };
        let now = tokio::time::Instant::now();
        released.retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
        let all = Disk::read_tables(&disk, read::jobs).unwrap_or_default();
        let candidates = jobs::claimable(all, shared.wall_ms(node), |job| released.contains_key(&job.id));
        let worker = Worker {
            node,
            incarnation,
            shared,
            load,
            history,
        };
        for job in candidates {
            let command = Command::ClaimJob {
                job: job.id,
                node,
                now_ms: shared.wall_ms(node),
                lease_ms: load.lease_ms,
            };
            match worker.ask(Ask::Claim, job.id, 0, &command).await {
                Some(Response::Lease { fencing, .. }) => {
                    if !worker.run(&job, fencing).await {
                        released.insert(job.id, tokio::time::Instant::now());
                    }
                    break;
                }
                // Another node was first: try the next.
                Some(Response::Rejected(_)) => {}
                _ => break,
            }
        }
    }
}

/// One worker's means: its node, the incarnation it runs in and where it
/// records what it asked.
struct Worker<'a> {
    node: u64,
    incarnation: u64,
    shared: &'a Shared,
    load: JobLoad,
    history: &'a Mutex<Vec<JobOp>>,
}

impl Worker<'_> {
    /// Whether the node still runs the incarnation this worker belongs to.
    fn alive(&self) -> bool {
        self.shared.incarnation(self.node) == Some(self.incarnation)
    }

    /// Asks the cluster through this node and records the answer, unless
    /// the node crashed meanwhile (the process and its worker are gone).
    async fn ask(&self, ask: Ask, job: EntityId, fencing: u64, command: &Command) -> Option<Response> {
        let invoke = self.shared.now_ns();
        let answer = propose(self.shared, self.node, command, CLIENT_TIMEOUT).await;
        if !self.alive() {
            return None;
        }
        let complete = self.shared.now_ns();
        let (accepted, fencing) = match (&answer, ask) {
            (Some(Response::Lease { fencing, .. }), Ask::Claim) => (true, *fencing),
            (Some(Response::Lease { .. } | Response::Done), _) => (true, fencing),
            (Some(_), Ask::Renew | Ask::Finish) => (false, fencing),
            // Unanswered, or a refused claim: nothing to check.
            _ => return answer,
        };
        self.shared.event(format_args!(
            "worker {} {ask:?} job {job} token {fencing}: {}",
            self.node,
            if accepted { "accepted" } else { "refused" }
        ));
        locked(self.history).push(JobOp {
            ask,
            job,
            node: self.node,
            fencing,
            accepted,
            invoke,
            complete,
        });
        answer
    }

    /// Works on `job` under the lease `fencing`, renewing it, and records
    /// the result; whether the cluster took it.
    async fn run(&self, job: &Job, fencing: u64) -> bool {
        let lease_ms = self.load.lease_ms;
        if jobs::out_of_attempts(job) {
            let reason = format!("gave up after {} attempts", job.attempts - 1);
            return self.finish(job.id, fencing, JobOutcome::Failed { reason }).await;
        }
        let (length, stall) = {
            let chance = self.shared.faults().stall;
            let mut rng = self.shared.rng();
            let length = Duration::from_millis(rng.random_range(200..3_000));
            let stall = rng
                .random_bool(chance)
                .then(|| Duration::from_millis(lease_ms + rng.random_range(100..2_000)));
            (length, stall)
        };
        let end = tokio::time::Instant::now() + length;
        let mut renewed = tokio::time::Instant::now();
        loop {
            let next = end.min(tokio::time::Instant::now() + jobs::renew_every(lease_ms));
            tokio::time::sleep_until(next).await;
            if !self.alive() {
                return false;
            }
            if tokio::time::Instant::now() >= end {
                break;
            }
            let renew = Command::RenewLease {
                job: job.id,
                fencing,
                now_ms: self.shared.wall_ms(self.node),
                lease_ms,
            };
            match self.ask(Ask::Renew, job.id, fencing, &renew).await {
                Some(Response::Lease { .. }) => renewed = tokio::time::Instant::now(),
                Some(_) => return false,
                None if jobs::lease_lapsed(renewed.elapsed(), lease_ms) || !self.alive() => return false,
                None => {}
            }
        }
        if let Some(stall) = stall {
            // Paused after its last look at the lease: it will try to
            // record its result all the same, and fencing must refuse it.
            self.shared
                .event(format_args!("worker {} stalls on job {}", self.node, job.id));
            tokio::time::sleep(stall).await;
            if !self.alive() {
                return false;
            }
        }
        self.finish(job.id, fencing, JobOutcome::Done { output: None }).await
    }

    async fn finish(&self, job: EntityId, fencing: u64, outcome: JobOutcome) -> bool {
        let command = Command::FinishJob {
            job,
            fencing,
            outcome,
            now_ms: self.shared.wall_ms(self.node),
        };
        matches!(
            self.ask(Ask::Finish, job, fencing, &command).await,
            Some(Response::Done)
        )
    }
}

/// Whether `job` is done or failed: nothing more will happen to it.
fn finished(job: &Job) -> bool {
    matches!(job.state, JobState::Done { .. } | JobState::Failed { .. })
}

/// Whether every job in `finals` is finished.
pub fn all_finished(finals: &[Job]) -> bool {
    finals.iter().all(finished)
}

/// What fencing must rule out, found in the workers' history, and jobs the
/// cluster still holds unfinished (`finals`: the jobs once it recovered).
///
/// - A claim granted after another was answered gets a larger token (the
///   token is the claim's log index).
/// - A renewal or completion is accepted only under the latest claim: none
///   whose token is stale because a later claim was granted before it was
///   asked.
/// - A job is completed once, by the worker that recorded it, and never
///   claimed again after.
pub fn check(history: &[JobOp], finals: &[Job]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut by_job: BTreeMap<EntityId, Vec<&JobOp>> = BTreeMap::new();
    for op in history {
        by_job.entry(op.job).or_default().push(op);
    }
    for (job, ops) in &by_job {
        let claims: Vec<&&JobOp> = ops.iter().filter(|op| op.ask == Ask::Claim).collect();
        for a in &claims {
            for b in &claims {
                if a.complete < b.invoke && a.fencing >= b.fencing {
                    violations.push(format!(
                        "job {job}: claim by node {} got token {} after a claim by node {} got {}",
                        b.node, b.fencing, a.node, a.fencing
                    ));
                }
            }
        }
        for op in ops.iter().filter(|op| op.ask != Ask::Claim && op.accepted) {
            if let Some(later) = claims
                .iter()
                .find(|claim| claim.fencing > op.fencing && claim.complete < op.invoke)
            {
                violations.push(format!(
                    "job {job}: {:?} by node {} with stale token {} accepted (node {} had claimed it with token {})",
                    op.ask, op.node, op.fencing, later.node, later.fencing
                ));
            }
        }
        let finishes: Vec<&&JobOp> = ops.iter().filter(|op| op.ask == Ask::Finish && op.accepted).collect();
        if finishes.len() > 1 {
            violations.push(format!("job {job}: completed {} times", finishes.len()));
        }
        if let Some(finish) = finishes.first() {
            if let Some(claim) = claims.iter().find(|claim| claim.invoke > finish.complete) {
                violations.push(format!(
                    "job {job}: claimed by node {} after it was completed",
                    claim.node
                ));
            }
            let recorded_by =
                finals
                    .iter()
                    .find(|final_job| final_job.id == *job)
                    .and_then(|final_job| match final_job.state {
                        JobState::Done { node, .. } => Some(node),
                        _ => None,
                    });
            if let Some(recorded_by) = recorded_by
                && recorded_by != finish.node
            {
                violations.push(format!(
                    "job {job}: node {} completed it, the cluster says node {recorded_by} did",
                    finish.node
                ));
            }
        }
    }
    for job in finals {
        if !finished(job) {
            violations.push(format!(
                "job {}: still {} after the faults stopped",
                job.id,
                job.state.name()
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(ask: Ask, node: u64, fencing: u64, accepted: bool, invoke: u128, complete: u128) -> JobOp {
        JobOp {
            ask,
            job: 9,
            node,
            fencing,
            accepted,
            invoke,
            complete,
        }
    }

    fn done(node: u64) -> Job {
        Job {
            id: 9,
            item: 1,
            profile: "720p".into(),
            state: JobState::Done {
                node,
                output: None,
                finished_ms: 0,
            },
            attempts: 2,
            created_ms: 0,
        }
    }

    #[test]
    fn a_lease_handed_on_and_a_refused_stale_completion_pass() {
        let history = [
            op(Ask::Claim, 1, 10, true, 0, 5),
            op(Ask::Claim, 2, 20, true, 50, 60),
            op(Ask::Finish, 1, 10, false, 70, 80),
            op(Ask::Finish, 2, 20, true, 90, 100),
        ];
        assert_eq!(check(&history, &[done(2)]), Vec::<String>::new());
    }

    #[test]
    fn a_stale_completion_accepted_is_found() {
        let history = [
            op(Ask::Claim, 1, 10, true, 0, 5),
            op(Ask::Claim, 2, 20, true, 50, 60),
            op(Ask::Finish, 1, 10, true, 70, 80),
        ];
        let violations = check(&history, &[done(2)]);
        assert!(violations.iter().any(|v| v.contains("stale token")), "{violations:?}");
        assert!(
            violations.iter().any(|v| v.contains("the cluster says")),
            "{violations:?}"
        );
    }

    #[test]
    fn tokens_going_backwards_and_unfinished_jobs_are_found() {
        let history = [op(Ask::Claim, 1, 20, true, 0, 5), op(Ask::Claim, 2, 10, true, 50, 60)];
        let mut queued = done(1);
        queued.state = JobState::Queued;
        let violations = check(&history, &[queued]);
        assert!(violations.iter().any(|v| v.contains("got token 10")), "{violations:?}");
        assert!(violations.iter().any(|v| v.contains("still queued")), "{violations:?}");
    }
}
