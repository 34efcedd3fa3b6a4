//! P2P routing decisions under faults: a viewer pulls one segment set from
//! several providers at once, and the real [`Schedule`] of
//! `omega_p2p::schedule` decides which provider sends which piece, as in a
//! node's `fetch` (pipelined batches per stream, several streams per
//! provider, a provider dropped when a stream fails, banned at its first
//! bad piece, asked again after "busy").
//!
//! Providers are the cluster's nodes (the origin holds every piece; others
//! hold what they cached), reachable while they run, plus
//! seeding viewers that may lie (send bytes that fail their hash) or
//! vanish. Requests and answers are lost at the network's rate, and a
//! lost one drops the provider for this attempt, as a stream error does.
//! An attempt that ends incomplete is retried with what it has (a resumed
//! fetch), as a player would.
//!
//! Checked: the assembled set is the original, byte for byte; a lying
//! provider is banned at its first bad piece (no second one counted); and
//! the fetch completes once the faults stop.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omega_p2p::schedule::{Outcome, Schedule};
use rand::Rng;
use tokio::sync::Notify;

use crate::disk::Bug;
use crate::nemesis::sometimes;
use crate::world::{Shared, locked};

/// Batches a stream keeps requested ahead (as `fetch` does).
const PIPELINE: usize = 2;
/// Most pieces in one request, and most bytes.
const BATCH_PIECES: usize = 8;
const BATCH_BYTES: u64 = 32 * 1024;
/// The origin's share of the bytes while others can give them.
const ORIGIN_SHARE: f64 = 0.25;
/// How long a stream waits for a piece before it drops the provider.
const PIECE_WITHIN: Duration = Duration::from_secs(2);

/// One provider of the set.
#[derive(Debug, Clone)]
struct Provider {
    /// The node it is, if it is one (else a seeding viewer).
    node: Option<u64>,
    origin: bool,
    /// Which pieces it holds.
    has: Vec<bool>,
    /// Chance it sends bad bytes for a piece.
    lies: f64,
    /// Chance it answers "busy".
    busy: f64,
    /// Longest time to send one piece, in ms.
    slowness_ms: u64,
    /// When a seeding viewer goes away for good, ns into the run.
    vanishes_at: Option<u128>,
}

/// The seed's swarm: the set's pieces and who provides them.
#[derive(Debug)]
pub struct Swarm {
    pieces: Vec<Vec<u8>>,
    providers: Vec<Provider>,
}

impl Swarm {
    /// The seed's draw: a set of 20–80 pieces, the cluster's `nodes` (the
    /// first the origin) and 0–3 seeding viewers, some of them liars.
    pub fn pick(rng: &mut impl Rng, nodes: &[u64], fault_end_ns: u128) -> Swarm {
        let count = rng.random_range(20..80);
        let pieces: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let len = rng.random_range(512..4_096);
                (0..len).map(|_| rng.random()).collect()
            })
            .collect();
        let mut providers = Vec::new();
        for node in nodes {
            let origin = Some(node) == nodes.first();
            let share = if origin { 1.0 } else { rng.random_range(0.0..1.0) };
            providers.push(Provider {
                node: Some(*node),
                origin,
                has: (0..count).map(|_| rng.random_bool(share)).collect(),
                lies: 0.0,
                busy: rng.random_range(0.0..0.2),
                slowness_ms: rng.random_range(1..40),
                vanishes_at: None,
            });
        }
        for _ in 0..rng.random_range(0..4) {
            let share = rng.random_range(0.3..1.0);
            providers.push(Provider {
                node: None,
                origin: false,
                has: (0..count).map(|_| rng.random_bool(share)).collect(),
                lies: sometimes(rng, 0.4, 0.05..0.5),
                busy: rng.random_range(0.0..0.2),
                slowness_ms: rng.random_range(1..60),
                vanishes_at: rng.random_bool(0.3).then(|| rng.random_range(0..fault_end_ns)),
            });
        }
        Swarm { pieces, providers }
    }
}

/// What one attempt shares between its streams.
struct Attempt {
    schedule: Mutex<Schedule>,
    changed: Notify,
    assembled: Mutex<Vec<Option<Vec<u8>>>>,
}

/// A viewer pulling one set after another while the faults last (each
/// from its own swarm), until `stop`; sets `done` once the last is
/// complete. What broke.
pub async fn viewers(shared: &Shared, fault_end_ns: u128, stop: &AtomicBool, done: &AtomicBool) -> Vec<String> {
    let mut violations = Vec::new();
    loop {
        let nodes: Vec<u64> = shared.intended().into_iter().collect();
        let swarm = {
            let mut rng = shared.rng();
            Swarm::pick(&mut *rng, &nodes, fault_end_ns)
        };
        let (found, complete) = viewer(shared, &swarm, stop).await;
        violations.extend(found);
        if !complete || shared.now_ns() >= fault_end_ns {
            break;
        }
    }
    done.store(true, Ordering::Release);
    violations
}

/// Pulls the swarm's set until it is complete or `stop`; what broke, and
/// whether it completed.
async fn viewer(shared: &Shared, swarm: &Swarm, stop: &AtomicBool) -> (Vec<String>, bool) {
    let mut violations = Vec::new();
    let mut assembled: Vec<Option<Vec<u8>>> = vec![None; swarm.pieces.len()];
    let mut attempts = 0;
    while !stop.load(Ordering::Acquire) {
        attempts += 1;
        let origin = swarm
            .providers
            .iter()
            .find(|provider| provider.origin)
            .and_then(|provider| provider.node);
        if origin.is_some_and(|origin| !shared.node_ids().contains(&origin)) {
            // The origin left the cluster (the operator removed it): what
            // no one else holds is gone, as it would be.
            shared.event(format_args!("p2p: the origin was removed; set abandoned"));
            return (violations, true);
        }
        let mut schedule = Schedule::new(
            swarm.pieces.iter().map(|piece| piece.len() as u32).collect(),
            ORIGIN_SHARE,
        );
        for (index, piece) in assembled.iter().enumerate() {
            if piece.is_some() {
                schedule.have(index);
            }
        }
        // Providers reachable now join the attempt (a dial).
        let mut slots = Vec::new();
        for (provider_index, provider) in swarm.providers.iter().enumerate() {
            if reachable(shared, provider) {
                slots.push((schedule.add_peer(provider.origin), provider_index));
            }
        }
        let attempt = std::sync::Arc::new(Attempt {
            schedule: Mutex::new(schedule),
            changed: Notify::new(),
            assembled: Mutex::new(assembled.clone()),
        });
        let streams: usize = {
            let mut rng = shared.rng();
            rng.random_range(1..=3)
        };
        let workers: Vec<_> = slots
            .iter()
            .flat_map(|slot| std::iter::repeat_n(*slot, streams))
            .map(|(slot, provider)| stream(shared, swarm, &attempt, slot, provider))
            .collect();
        futures_util::future::join_all(workers).await;
        assembled.clone_from(&locked(&attempt.assembled));
        let done = {
            let schedule = locked(&attempt.schedule);
            for (slot, provider) in &slots {
                if schedule.verify_failures(*slot) > 1 {
                    violations.push(format!(
                        "p2p: provider {provider} sent {} bad pieces, banned only after",
                        schedule.verify_failures(*slot)
                    ));
                }
            }
            schedule.is_done()
        };
        shared.event(format_args!(
            "p2p attempt {attempts}: {} of {} pieces",
            assembled.iter().filter(|piece| piece.is_some()).count(),
            assembled.len()
        ));
        if done {
            for (index, (got, want)) in assembled.iter().zip(&swarm.pieces).enumerate() {
                if got.as_ref() != Some(want) {
                    violations.push(format!("p2p: piece {index} of the assembled set is not the original"));
                }
            }
            return (violations, true);
        }
        let retry = Duration::from_millis(shared.rng().random_range(100..500));
        tokio::time::sleep(retry).await;
    }
    violations.push(format!(
        "p2p: the set was incomplete after the faults stopped ({attempts} attempts)"
    ));
    (violations, false)
}

/// Whether a provider answers now: its node runs and is not cut off, or,
/// a viewer, it has not gone.
fn reachable(shared: &Shared, provider: &Provider) -> bool {
    match provider.node {
        Some(node) => shared.raft(node).is_some() && !shared.isolated(node),
        None => provider.vanishes_at.is_none_or(|at| shared.now_ns() < at),
    }
}

/// One stream to one provider, until the schedule says stop.
async fn stream(shared: &Shared, swarm: &Swarm, attempt: &Attempt, slot: usize, provider_index: usize) {
    let provider = &swarm.providers[provider_index];
    let mut pending: VecDeque<Vec<usize>> = VecDeque::new();
    loop {
        let changed = attempt.changed.notified();
        let (batches, finished) =
            locked(&attempt.schedule).next_batches(slot, PIPELINE - pending.len(), BATCH_BYTES, BATCH_PIECES);
        pending.extend(batches);
        let Some(batch) = pending.pop_front() else {
            if finished {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
            continue;
        };
        for index in batch {
            let (delay, lost, busy, lie) = {
                let loss = shared.faults().loss;
                let mut rng = shared.rng();
                (
                    Duration::from_millis(rng.random_range(1..=provider.slowness_ms)),
                    rng.random_bool(loss),
                    rng.random_bool(provider.busy),
                    rng.random_bool(provider.lies),
                )
            };
            tokio::time::sleep(delay).await;
            if lost || !reachable(shared, provider) {
                // No answer within the deadline: the stream fails and the
                // provider is dropped from this attempt.
                tokio::time::sleep(PIECE_WITHIN.saturating_sub(delay)).await;
                locked(&attempt.schedule).lost(slot);
                attempt.changed.notify_waiters();
                return;
            }
            let outcome = if !provider.has[index] {
                Outcome::Missing
            } else if busy {
                Outcome::Busy
            } else {
                let mut bytes = swarm.pieces[index].clone();
                if lie && let Some(first) = bytes.first_mut() {
                    *first ^= 0x5a;
                }
                // The viewer checks every piece against its hash (unless
                // the bug planted is that it does not).
                let trusted = shared.bug == Some(Bug::UnverifiedPieces);
                if trusted || blake3::hash(&bytes) == blake3::hash(&swarm.pieces[index]) {
                    locked(&attempt.assembled)[index] = Some(bytes);
                    Outcome::Verified
                } else {
                    Outcome::Corrupt
                }
            };
            let banned = {
                let mut schedule = locked(&attempt.schedule);
                schedule.outcome(slot, index, outcome);
                schedule.is_banned(slot)
            };
            attempt.changed.notify_waiters();
            if banned {
                return;
            }
            if outcome == Outcome::Busy {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
