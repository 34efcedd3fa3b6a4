//! Client histories and their check. The workload's model is a set of user
//! names that only grows, each name added once: a history is linearizable
//! when there is an order of its operations, consistent with real time,
//! in which every read returns exactly the names added before it. For a
//! grow-only set of unique adds that is the case exactly when
//!
//! 1. no read misses an add acknowledged before the read began (no stale
//!    read, no lost write);
//! 2. no read returns a name whose add began after the read ended (no
//!    phantom);
//! 3. reads that follow one another in real time return growing sets;
//! 4. after the faults, every acknowledged add is on every node.
//!
//! Adds whose answer was lost (a timeout, a killed node) may or may not
//! have happened: they are never required, only allowed.

use std::collections::BTreeSet;
use std::fmt;

/// What an add came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Acknowledged (201), or refused as already there (409: an earlier
    /// attempt of the same add was applied).
    Done,
    /// No answer, or an error: it may have been applied.
    Unknown,
}

/// One operation of a client, with its real-time interval (nanoseconds
/// since the run began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An add of `name`.
    Add {
        /// The name.
        name: String,
        /// When it was sent.
        invoke: u128,
        /// When its answer came (or the client gave up).
        complete: u128,
        /// How it ended.
        outcome: AddOutcome,
    },
    /// A read that returned `names`.
    Read {
        /// The node read from.
        node: usize,
        /// When it was sent.
        invoke: u128,
        /// When its answer came.
        complete: u128,
        /// What it returned.
        names: BTreeSet<String>,
    },
}

/// A way the history breaks the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A read missed an add acknowledged before it began.
    StaleRead {
        /// The missing name.
        name: String,
        /// The node that answered.
        node: usize,
    },
    /// A read returned a name nobody had begun to add.
    Phantom {
        /// The name.
        name: String,
    },
    /// A later read returned less than an earlier one.
    WentBack {
        /// A name the earlier read had.
        name: String,
        /// The node of the later read.
        node: usize,
    },
    /// An acknowledged add is missing on a node after the faults stopped.
    LostWrite {
        /// The name.
        name: String,
        /// The node without it.
        node: usize,
    },
    /// Nodes disagree after the faults stopped.
    Diverged {
        /// The first node.
        a: usize,
        /// The other.
        b: usize,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StaleRead { name, node } => {
                write!(
                    f,
                    "stale read: node {node} missed {name}, acknowledged before the read began"
                )
            }
            Violation::Phantom { name } => write!(f, "phantom: {name} was read before anyone added it"),
            Violation::WentBack { name, node } => {
                write!(
                    f,
                    "went back: node {node} no longer had {name}, which an earlier read returned"
                )
            }
            Violation::LostWrite { name, node } => {
                write!(f, "lost write: {name} was acknowledged, node {node} lacks it")
            }
            Violation::Diverged { a, b } => write!(f, "diverged: nodes {a} and {b} list different users"),
        }
    }
}

/// At most this many violations are reported (one is enough to fail).
const REPORTED_MAX: usize = 20;

/// Checks `history` and the final reads (`finals[node]`, taken after the
/// faults stopped and the cluster healed).
pub fn check(history: &[Op], finals: &[BTreeSet<String>]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let acked: Vec<(&str, u128)> = history
        .iter()
        .filter_map(|op| match op {
            Op::Add {
                name,
                complete,
                outcome: AddOutcome::Done,
                ..
            } => Some((name.as_str(), *complete)),
            _ => None,
        })
        .collect();
    let invoked: Vec<(&str, u128)> = history
        .iter()
        .filter_map(|op| match op {
            Op::Add { name, invoke, .. } => Some((name.as_str(), *invoke)),
            _ => None,
        })
        .collect();
    let mut reads: Vec<(usize, u128, u128, &BTreeSet<String>)> = history
        .iter()
        .filter_map(|op| match op {
            Op::Read {
                node,
                invoke,
                complete,
                names,
            } => Some((*node, *invoke, *complete, names)),
            Op::Add { .. } => None,
        })
        .collect();
    reads.sort_by_key(|read| read.1);
    for &(node, invoke, complete, names) in &reads {
        for (name, acked_at) in &acked {
            if *acked_at < invoke && !names.contains(*name) {
                violations.push(Violation::StaleRead {
                    name: (*name).to_owned(),
                    node,
                });
            }
        }
        for name in names {
            let begun = invoked
                .iter()
                .any(|(added, invoked_at)| added == name && *invoked_at < complete);
            if !begun {
                violations.push(Violation::Phantom { name: name.clone() });
            }
        }
    }
    // Real-time order between reads: the latest read that ended before
    // each read began must be a subset of it.
    for (index, &(node, invoke, _, names)) in reads.iter().enumerate() {
        let before = reads[..index]
            .iter()
            .filter(|read| read.2 < invoke)
            .max_by_key(|read| read.2);
        if let Some(&(_, _, _, earlier)) = before
            && let Some(name) = earlier.difference(names).next()
        {
            violations.push(Violation::WentBack {
                name: name.clone(),
                node,
            });
        }
    }
    for (node, names) in finals.iter().enumerate() {
        for (name, _) in &acked {
            if !names.contains(*name) {
                violations.push(Violation::LostWrite {
                    name: (*name).to_owned(),
                    node,
                });
            }
        }
        if node > 0 && finals[0] != *names {
            violations.push(Violation::Diverged { a: 0, b: node });
        }
    }
    violations.truncate(REPORTED_MAX);
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(name: &str, invoke: u128, complete: u128, outcome: AddOutcome) -> Op {
        Op::Add {
            name: name.into(),
            invoke,
            complete,
            outcome,
        }
    }

    fn read(node: usize, invoke: u128, complete: u128, names: &[&str]) -> Op {
        Op::Read {
            node,
            invoke,
            complete,
            names: names.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_correct_history_passes() {
        let history = [
            add("a", 0, 10, AddOutcome::Done),
            read(0, 5, 8, &[]),
            read(1, 11, 12, &["a"]),
            add("b", 13, 20, AddOutcome::Unknown),
            read(2, 14, 15, &["a", "b"]),
        ];
        assert_eq!(check(&history, &[set(&["a", "b"]), set(&["a", "b"])]), []);
        // An unknown add may also never appear.
        let history = [add("b", 0, 5, AddOutcome::Unknown), read(0, 6, 7, &[])];
        assert_eq!(check(&history, &[set(&[])]), []);
    }

    #[test]
    fn each_kind_of_violation_is_found() {
        let stale = [add("a", 0, 10, AddOutcome::Done), read(1, 11, 12, &[])];
        assert!(matches!(check(&stale, &[set(&["a"])])[0], Violation::StaleRead { .. }));
        let phantom = [read(0, 0, 1, &["x"]), add("x", 2, 3, AddOutcome::Done)];
        assert!(matches!(check(&phantom, &[set(&["x"])])[0], Violation::Phantom { .. }));
        let back = [
            add("a", 0, 1, AddOutcome::Unknown),
            read(0, 2, 3, &["a"]),
            read(1, 4, 5, &[]),
        ];
        assert!(matches!(check(&back, &[set(&["a"])])[0], Violation::WentBack { .. }));
        let lost = [add("a", 0, 1, AddOutcome::Done)];
        assert!(matches!(check(&lost, &[set(&[])])[0], Violation::LostWrite { .. }));
        let diverged = check(&[], &[set(&["a"]), set(&[])]);
        assert!(matches!(diverged[0], Violation::Diverged { .. }));
    }
}
