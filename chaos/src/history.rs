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

use std::fmt;

/// A set of add ids (the workload numbers its adds 0, 1, 2, …): one bit
/// each, so that thousands of reads of thousands of names stay small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    /// Adds `id`.
    pub fn insert(&mut self, id: u64) {
        let word = (id / 64) as usize;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
    }

    /// Whether `id` is in.
    pub fn contains(&self, id: u64) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }

    /// The ids in, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(index, word)| {
            (0..64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| index as u64 * 64 + bit)
        })
    }

    /// An id in `self` but not in `other`, if any.
    pub fn first_missing_from(&self, other: &IdSet) -> Option<u64> {
        self.iter().find(|id| !other.contains(*id))
    }

    /// Whether both hold the same ids.
    pub fn same_as(&self, other: &IdSet) -> bool {
        let longest = self.words.len().max(other.words.len());
        (0..longest).all(|index| self.words.get(index).unwrap_or(&0) == other.words.get(index).unwrap_or(&0))
    }
}

impl FromIterator<u64> for IdSet {
    fn from_iter<I: IntoIterator<Item = u64>>(ids: I) -> IdSet {
        let mut set = IdSet::default();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

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
    /// An add of the name numbered `id`.
    Add {
        /// The name's number.
        id: u64,
        /// When it was sent.
        invoke: u128,
        /// When its answer came (or the client gave up).
        complete: u128,
        /// How it ended.
        outcome: AddOutcome,
    },
    /// A read that returned the names numbered `names`.
    Read {
        /// The node read from.
        node: usize,
        /// When it was sent.
        invoke: u128,
        /// When its answer came.
        complete: u128,
        /// What it returned.
        names: IdSet,
    },
}

/// A way the history breaks the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A read missed an add acknowledged before it began.
    StaleRead {
        /// The missing name's number.
        name: u64,
        /// The node that answered.
        node: usize,
    },
    /// A read returned a name nobody had begun to add.
    Phantom {
        /// The name's number.
        name: u64,
    },
    /// A later read returned less than an earlier one.
    WentBack {
        /// A name (number) the earlier read had.
        name: u64,
        /// The node of the later read.
        node: usize,
    },
    /// An acknowledged add is missing on a node after the faults stopped.
    LostWrite {
        /// The name's number.
        name: u64,
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
            Violation::Phantom { name } => write!(f, "phantom: add {name} was read before anyone began it"),
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
/// faults stopped and the cluster healed). Time: O(reads × adds / 64) for
/// the set comparisons, O(reads × log reads) for the real-time order.
pub fn check(history: &[Op], finals: &[IdSet]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut acked: Vec<(u64, u128)> = Vec::new();
    let mut invoked_at: std::collections::HashMap<u64, u128> = std::collections::HashMap::new();
    let mut reads: Vec<(usize, u128, u128, &IdSet)> = Vec::new();
    for op in history {
        match op {
            Op::Add {
                id,
                invoke,
                complete,
                outcome,
            } => {
                invoked_at.insert(*id, *invoke);
                if *outcome == AddOutcome::Done {
                    acked.push((*id, *complete));
                }
            }
            Op::Read {
                node,
                invoke,
                complete,
                names,
            } => reads.push((*node, *invoke, *complete, names)),
        }
    }
    acked.sort_by_key(|(_, complete)| *complete);
    reads.sort_by_key(|read| read.1);
    let full = |violations: &Vec<Violation>| violations.len() >= REPORTED_MAX;
    for &(node, invoke, complete, names) in &reads {
        for &(id, _) in acked.iter().take_while(|(_, acked_at)| *acked_at < invoke) {
            if !names.contains(id) {
                violations.push(Violation::StaleRead { name: id, node });
            }
        }
        for id in names.iter() {
            if invoked_at.get(&id).is_none_or(|begun| *begun >= complete) {
                violations.push(Violation::Phantom { name: id });
            }
        }
        if full(&violations) {
            return violations;
        }
    }
    // Real-time order between reads: the read that ended last before each
    // read began must be a subset of it.
    let mut by_complete: Vec<&(usize, u128, u128, &IdSet)> = reads.iter().collect();
    by_complete.sort_by_key(|read| read.2);
    let mut next = 0;
    let mut latest: Option<&IdSet> = None;
    for &(node, invoke, _, names) in &reads {
        while next < by_complete.len() && by_complete[next].2 < invoke {
            latest = Some(by_complete[next].3);
            next += 1;
        }
        if let Some(earlier) = latest
            && let Some(id) = earlier.first_missing_from(names)
        {
            violations.push(Violation::WentBack { name: id, node });
            if full(&violations) {
                return violations;
            }
        }
    }
    for (node, names) in finals.iter().enumerate() {
        for &(id, _) in &acked {
            if !names.contains(id) {
                violations.push(Violation::LostWrite { name: id, node });
            }
        }
        if node > 0 && !finals[0].same_as(names) {
            violations.push(Violation::Diverged { a: 0, b: node });
        }
    }
    violations.truncate(REPORTED_MAX);
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: u64, invoke: u128, complete: u128, outcome: AddOutcome) -> Op {
        Op::Add {
            id,
            invoke,
            complete,
            outcome,
        }
    }

    fn read(node: usize, invoke: u128, complete: u128, names: &[u64]) -> Op {
        Op::Read {
            node,
            invoke,
            complete,
            names: names.iter().copied().collect(),
        }
    }

    fn set(names: &[u64]) -> IdSet {
        names.iter().copied().collect()
    }

    #[test]
    fn a_correct_history_passes() {
        let history = [
            add(1, 0, 10, AddOutcome::Done),
            read(0, 5, 8, &[]),
            read(1, 11, 12, &[1]),
            add(2, 13, 20, AddOutcome::Unknown),
            read(2, 14, 15, &[1, 2]),
        ];
        assert_eq!(check(&history, &[set(&[1, 2]), set(&[1, 2])]), []);
        // An unknown add may also never appear.
        let history = [add(2, 0, 5, AddOutcome::Unknown), read(0, 6, 7, &[])];
        assert_eq!(check(&history, &[set(&[])]), []);
    }

    #[test]
    fn id_sets_hold_what_was_put_in() {
        let set: IdSet = [3, 64, 200].into_iter().collect();
        assert!(set.contains(64) && !set.contains(65) && !set.contains(10_000));
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 64, 200]);
        let smaller: IdSet = [3].into_iter().collect();
        assert_eq!(set.first_missing_from(&smaller), Some(64));
        assert!(smaller.same_as(&[3].into_iter().collect()));
        assert!(!smaller.same_as(&set));
    }

    #[test]
    fn each_kind_of_violation_is_found() {
        let stale = [add(1, 0, 10, AddOutcome::Done), read(1, 11, 12, &[])];
        assert!(matches!(check(&stale, &[set(&[1])])[0], Violation::StaleRead { .. }));
        let phantom = [read(0, 0, 1, &[9]), add(9, 2, 3, AddOutcome::Done)];
        assert!(matches!(check(&phantom, &[set(&[9])])[0], Violation::Phantom { .. }));
        let back = [
            add(1, 0, 1, AddOutcome::Unknown),
            read(0, 2, 3, &[1]),
            read(1, 4, 5, &[]),
        ];
        assert!(matches!(check(&back, &[set(&[1])])[0], Violation::WentBack { .. }));
        let lost = [add(1, 0, 1, AddOutcome::Done)];
        assert!(matches!(check(&lost, &[set(&[])])[0], Violation::LostWrite { .. }));
        let diverged = check(&[], &[set(&[1]), set(&[])]);
        assert!(matches!(diverged[0], Violation::Diverged { .. }));
    }

    use proptest::prelude::*;

    /// A correct execution: operations take effect at distinct points in
    /// time, each inside its own interval; reads return what was added
    /// before their point.
    fn execution(plan: &[(bool, u8, u8)]) -> Vec<Op> {
        let mut history = Vec::new();
        let mut state = IdSet::default();
        let mut next_id = 0;
        for (point, (is_add, before, after)) in plan.iter().enumerate() {
            let point = 1000 * (point as u128 + 1);
            let (invoke, complete) = (point - u128::from(*before), point + u128::from(*after));
            if *is_add {
                state.insert(next_id);
                history.push(add(next_id, invoke, complete, AddOutcome::Done));
                next_id += 1;
            } else {
                history.push(Op::Read {
                    node: 0,
                    invoke,
                    complete,
                    names: state.clone(),
                });
            }
        }
        history
    }

    proptest! {
        /// Every correct execution passes; dropping an acknowledged add from
        /// a later read is always caught.
        #[test]
        fn correct_executions_pass_and_lost_adds_are_caught(plan in proptest::collection::vec((any::<bool>(), 0_u8..200, 0_u8..200), 1..60)) {
            let history = execution(&plan);
            let finals: IdSet = history
                .iter()
                .filter_map(|op| match op { Op::Add { id, .. } => Some(*id), Op::Read { .. } => None })
                .collect();
            prop_assert_eq!(check(&history, &[finals.clone(), finals.clone()]), vec![]);
            // Corrupt the last read that follows a completed add.
            let mut corrupted = history.clone();
            let target = corrupted.iter().rposition(|op| matches!(op, Op::Read { names, .. } if names.iter().next().is_some()));
            if let Some(target) = target
                && let Op::Read { names, .. } = &mut corrupted[target]
            {
                let first = names.iter().next().unwrap_or_default();
                *names = names.iter().filter(|id| *id != first).collect();
                prop_assert!(!check(&corrupted, std::slice::from_ref(&finals)).is_empty());
            }
        }
    }
}
