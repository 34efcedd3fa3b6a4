//! Raft's safety, checked as the run goes and at its end: one leader per
//! term; on every node purged ≤ snapshot ≤ applied ≤ committed; and log
//! matching over what the disks synced.

use std::collections::BTreeMap;

use openraft::ServerState;

use crate::disk::{Disk, SharedDisk};
use crate::types::{LogId, Raft, RaftMetrics};
use crate::world::Shared;

/// What the checks saw so far.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Leaders seen, by term.
    leaders: BTreeMap<u64, u64>,
    /// What broke.
    pub violations: Vec<String>,
}

impl Invariants {
    /// Checks every running node now.
    pub fn step(&mut self, shared: &Shared, rafts: &[(u64, Raft)]) {
        for (id, raft) in rafts {
            let id = *id;
            let metrics = metrics(raft);
            if metrics.state == ServerState::Leader {
                let term = metrics.current_term;
                match self.leaders.get(&term) {
                    Some(other) if *other != id => self
                        .violations
                        .push(format!("two leaders in term {term}: nodes {other} and {id}")),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, id);
                        shared.event(format_args!("leader {id} term {term}"));
                    }
                }
            }
            let index = |log_id: &Option<LogId>| log_id.as_ref().map(|log_id| log_id.index);
            let (purged, snapshot, applied, committed) = (
                index(&metrics.purged),
                index(&metrics.snapshot),
                index(&metrics.last_applied),
                index(&metrics.local_committed),
            );
            if !(purged <= snapshot && snapshot <= applied && applied <= committed) {
                self.violations.push(format!(
                    "node {id}: purged {purged:?} ≤ snapshot {snapshot:?} ≤ applied {applied:?} ≤ committed {committed:?} fails"
                ));
            }
        }
    }
}

/// A node's metrics now.
pub fn metrics(raft: &Raft) -> RaftMetrics {
    openraft::async_runtime::watch::WatchReceiver::borrow_watched(&raft.metrics()).clone()
}

/// Nodes agree on every entry their synced logs share (log matching):
/// differing entries are allowed only as an unsynced, uncommitted tail,
/// after which nothing agrees.
pub fn log_matching(disks: &BTreeMap<u64, SharedDisk>) -> Vec<String> {
    let logs: Vec<(u64, BTreeMap<u64, LogId>)> = disks.iter().map(|(id, disk)| (*id, Disk::synced_log(disk))).collect();
    let mut violations = Vec::new();
    for (position, (a, log_a)) in logs.iter().enumerate() {
        for (b, log_b) in &logs[position + 1..] {
            let first_difference = log_a
                .iter()
                .filter_map(|(index, id)| log_b.get(index).map(|other| (index, id, other)))
                .filter(|(_, id, other)| id != other)
                .map(|(index, ..)| *index)
                .min();
            if let Some(index) = first_difference {
                let later_agree = log_a
                    .range(index..)
                    .any(|(later, id)| log_b.get(later) == Some(id) && *later > index);
                if later_agree {
                    violations.push(format!(
                        "log matching: nodes {a} and {b} differ at {index} but agree later"
                    ));
                }
            }
        }
    }
    violations
}
