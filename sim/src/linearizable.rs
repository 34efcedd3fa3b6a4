//! A linearizability checker for registers, one per key, after Wing and
//! Gong with Lowe's memoization: it looks for an order of the operations
//! that respects real time (an operation answered before another was asked
//! comes first) in which every read returns the last value written. A
//! write whose answer never came may have taken effect at any time after
//! it was asked, or never.
//!
//! The search is exponential in the worst case; histories per key are
//! kept small (at most [`OPS_PER_KEY_MAX`] operations) and the memo of
//! (operations done, value) pairs bounds it in practice.

use std::collections::{BTreeMap, HashSet};

/// Operations on one key the checker accepts (one bit each in the memo).
pub const OPS_PER_KEY_MAX: usize = 64;

/// One operation on a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterOp {
    /// `Some(v)` writes `v`; `None` reads.
    pub write: Option<u64>,
    /// What a read returned (`None`: the register was unset).
    pub read: Option<u64>,
    /// When it was asked.
    pub invoke: u128,
    /// When it was answered; `None`: no answer (a write that may or may
    /// not have taken effect; reads without an answer are not recorded).
    pub complete: Option<u128>,
}

/// Checks every key's history; the keys whose history has no valid order
/// (`what` names a key's register in the message).
pub fn check<K: Ord + std::fmt::Display>(what: &str, histories: &BTreeMap<K, Vec<RegisterOp>>) -> Vec<String> {
    histories
        .iter()
        .filter(|(_, ops)| !linearizable(ops))
        .map(|(key, ops)| {
            format!(
                "{what} {key}: no order of its {} operations explains the reads",
                ops.len()
            )
        })
        .collect()
}

/// Whether `ops` (on one register, starting unset) have a linearization.
pub fn linearizable(ops: &[RegisterOp]) -> bool {
    assert!(
        ops.len() <= OPS_PER_KEY_MAX,
        "at most {OPS_PER_KEY_MAX} operations per key"
    );
    let all: u64 = if ops.len() == 64 {
        u64::MAX
    } else {
        (1 << ops.len()) - 1
    };
    // Operations that must appear: every one that was answered.
    let required: u64 = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.complete.is_some())
        .fold(0, |mask, (index, _)| mask | 1 << index);
    let mut seen: HashSet<(u64, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(u64, Option<u64>)> = vec![(0, None)];
    while let Some((done, value)) = stack.pop() {
        if done & required == required {
            return true;
        }
        if !seen.insert((done, value)) {
            continue;
        }
        // The earliest answer among operations not yet placed: whatever
        // goes next must have been asked before it.
        let horizon = ops
            .iter()
            .enumerate()
            .filter(|(index, _)| done & (1 << index) == 0)
            .filter_map(|(_, op)| op.complete)
            .min()
            .unwrap_or(u128::MAX);
        for (index, op) in ops.iter().enumerate() {
            let bit = 1_u64 << index;
            if done & bit != 0 || op.invoke > horizon {
                continue;
            }
            let next = match op.write {
                Some(written) => Some(written),
                None if op.read == value => value,
                None => continue,
            };
            stack.push((done | bit, next));
        }
        debug_assert!(done & !all == 0);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(value: u64, invoke: u128, complete: Option<u128>) -> RegisterOp {
        RegisterOp {
            write: Some(value),
            read: None,
            invoke,
            complete,
        }
    }

    fn read(value: Option<u64>, invoke: u128, complete: u128) -> RegisterOp {
        RegisterOp {
            write: None,
            read: value,
            invoke,
            complete: Some(complete),
        }
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        assert!(linearizable(&[write(1, 0, Some(10)), read(Some(1), 20, 30)]));
        // Overlapping writes: either order, the read decides.
        assert!(linearizable(&[
            write(1, 0, Some(10)),
            write(2, 5, Some(15)),
            read(Some(1), 20, 30)
        ]));
        // A read during a write may see either value.
        assert!(linearizable(&[
            write(1, 0, Some(10)),
            write(2, 20, Some(40)),
            read(Some(1), 25, 30),
            read(Some(2), 45, 50)
        ]));
        // An unanswered write may never have happened, or happened late.
        assert!(linearizable(&[
            write(1, 0, None),
            read(None, 5, 6),
            read(Some(1), 100, 101)
        ]));
    }

    #[test]
    fn stale_and_impossible_reads_fail() {
        // A read after a completed write sees an older value.
        assert!(!linearizable(&[
            write(1, 0, Some(10)),
            write(2, 20, Some(30)),
            read(Some(1), 40, 50)
        ]));
        // A value never written.
        assert!(!linearizable(&[write(1, 0, Some(10)), read(Some(7), 20, 30)]));
        // Reads going back in time.
        assert!(!linearizable(&[
            write(1, 0, Some(100)),
            read(Some(1), 10, 20),
            read(None, 30, 40)
        ]));
        // An unanswered write seen, then unseen.
        assert!(!linearizable(&[
            write(1, 0, None),
            read(Some(1), 5, 6),
            read(None, 10, 11)
        ]));
    }
}
