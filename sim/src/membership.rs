//! Membership changes under faults. The nemesis changes the set of voters
//! the operator wants (a node added, removed, or replaced by a new one) and
//! starts new nodes empty; an operator task then moves the cluster there
//! one step at a time, as `omega serve --join` and `omega node remove` do
//! on a real node (a learner first, then a voter; a voter removed
//! entirely), through whichever node leads, and tries again after every
//! failure. A node is stopped for good once its removal is committed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omega_consensus::model::MemberNode;
use openraft::ChangeMembers;
use rand::Rng;

use crate::check::metrics;
use crate::types::Raft;
use crate::world::{Cluster, Shared, locked};

/// Fewest and most voters the operator wants.
const VOTERS_MIN: usize = 3;
const VOTERS_MAX: usize = 6;
/// New nodes a run adds at most.
pub const ADDED_MAX: u64 = 4;
/// How long one membership call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's record in the membership.
pub fn member(id: u64) -> MemberNode {
    MemberNode {
        cluster_addr: format!("sim-{id}"),
        http_addr: format!("sim-{id}"),
        p2p_peer_id: None,
        cert_fingerprint: String::new(),
    }
}

/// The membership as one node sees it: voters, and every node (learners
/// too), and whether it is committed (applied) there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The voters (of every config, while a change is joint).
    pub voters: BTreeSet<u64>,
    /// Voters and learners.
    pub nodes: BTreeSet<u64>,
    /// Whether the node applied the entry that set it.
    pub committed: bool,
}

/// How `raft` sees the membership.
pub fn view(raft: &Raft) -> View {
    let metrics = metrics(raft);
    let stored = &metrics.membership_config;
    let voters = stored
        .membership()
        .get_joint_config()
        .iter()
        .flatten()
        .copied()
        .collect();
    let nodes = stored.nodes().map(|(id, _)| *id).collect();
    let committed = match (stored.log_id(), &metrics.last_applied) {
        (Some(set), Some(applied)) => set.index <= applied.index,
        (None, _) => true,
        (Some(_), None) => false,
    };
    View {
        voters,
        nodes,
        committed,
    }
}

impl Cluster {
    /// The nemesis's membership move: add a node, remove one, or replace
    /// one by a new node, unless a change is under way.
    pub async fn change_membership(&mut self) -> anyhow::Result<bool> {
        let intended = self.shared.intended();
        let Some((_, raft)) = self.shared.leader() else {
            return Ok(false);
        };
        let seen = view(&raft);
        if seen.voters != intended || seen.nodes != intended || !seen.committed {
            return Ok(false);
        }
        let (add, remove) = {
            let mut rng = self.shared.rng();
            let can_add = intended.len() < VOTERS_MAX && self.added < ADDED_MAX;
            let can_remove = intended.len() > VOTERS_MIN;
            let ids: Vec<u64> = intended.iter().copied().collect();
            let victim = ids[rng.random_range(0..ids.len())];
            match rng.random_range(0..3) {
                0 if can_add => (true, None),
                1 if can_remove => (false, Some(victim)),
                _ if self.added < ADDED_MAX => (true, Some(victim)),
                _ => (false, None),
            }
        };
        let mut next = intended.clone();
        if add {
            self.added += 1;
            let id = self.first_added + self.added - 1;
            next.insert(id);
            self.start_node(id).await?;
        }
        if let Some(victim) = remove {
            next.remove(&victim);
        }
        if next == intended {
            return Ok(false);
        }
        self.shared.event(format_args!("operator wants {next:?}"));
        self.shared.set_intended(next);
        Ok(true)
    }

    /// Stops for good the nodes whose removal the leader committed.
    pub async fn retire_removed(&mut self) {
        let intended = self.shared.intended();
        let Some((_, raft)) = self.shared.leader() else { return };
        let seen = view(&raft);
        if !seen.committed {
            return;
        }
        let gone: Vec<u64> = self
            .shared
            .node_ids()
            .into_iter()
            .filter(|id| !intended.contains(id) && !seen.nodes.contains(id))
            .collect();
        for id in gone {
            self.down.remove(&id);
            self.paused.remove(&id);
            locked(&self.shared.cut).retain(|(a, b)| *a != id && *b != id);
            if let Some(raft) = self.shared.retire(id) {
                let _ = raft.shutdown().await;
            }
            self.shared.event(format_args!("retired {id}"));
        }
    }
}

/// The operator: until `stop`, moves the cluster's membership one step
/// towards what is intended, through the leader.
pub async fn operator(shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let wait = Duration::from_millis(shared.rng().random_range(100..400));
        tokio::time::sleep(wait).await;
        let intended = shared.intended();
        let Some((leader_id, raft)) = shared.leader() else {
            continue;
        };
        let seen = view(&raft);
        if !seen.committed {
            continue;
        }
        let step = if let Some(missing) = intended.difference(&seen.voters).next().copied() {
            if seen.nodes.contains(&missing) {
                Step::Promote(missing)
            } else {
                Step::AddLearner(missing)
            }
        } else if let Some(extra) = seen.voters.difference(&intended).next().copied() {
            Step::RemoveVoter(extra)
        } else if let Some(extra) = seen.nodes.difference(&intended).next().copied() {
            Step::RemoveLearner(extra)
        } else {
            continue;
        };
        let outcome = match step {
            Step::AddLearner(id) => tokio::time::timeout(CALL_TIMEOUT, raft.add_learner(id, member(id), true))
                .await
                .map(|result| result.map(|_| ()).map_err(|error| error.to_string())),
            Step::Promote(id) => change(&raft, ChangeMembers::AddVoterIds([id].into())).await,
            Step::RemoveVoter(id) => change(&raft, ChangeMembers::RemoveVoters([id].into())).await,
            Step::RemoveLearner(id) => change(&raft, ChangeMembers::RemoveNodes([id].into())).await,
        };
        let outcome = match outcome {
            Ok(Ok(())) => "done".to_string(),
            Ok(Err(error)) => error,
            Err(_) => "timed out".to_string(),
        };
        shared.event(format_args!("operator via {leader_id}: {step:?}: {outcome}"));
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    AddLearner(u64),
    Promote(u64),
    RemoveVoter(u64),
    RemoveLearner(u64),
}

async fn change(
    raft: &Raft,
    change: ChangeMembers<u64, MemberNode>,
) -> Result<Result<(), String>, tokio::time::error::Elapsed> {
    // `retain: false`: a removed voter leaves the membership entirely.
    tokio::time::timeout(CALL_TIMEOUT, raft.change_membership(change, false))
        .await
        .map(|result| result.map(|_| ()).map_err(|error| error.to_string()))
}
