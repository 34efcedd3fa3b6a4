//! Deterministic simulation of an Omega cluster (issue 7). N nodes run the
//! real openraft and Omega's state machine rules in one process, on
//! simulated time (tokio's paused clock), a simulated network (delay,
//! loss, duplication, reordering, partitions) and simulated disks (a crash
//! loses what was not synced), all from one seed: the same seed replays
//! the same run, event for event.
//!
//! - [`types`]: openraft's types on its seeded runtime.
//! - [`disk`]: a node's log, vote and tables, written and synced.
//! - [`net`]: Raft's messages between nodes.
//! - [`client`]: proposing and reading as a client does; the users workload.
//! - [`watch`]: the catalog, and watch state as registers.
//! - [`linearizable`]: a register linearizability checker (Wing–Gong).
//! - [`jobs`]: job workers on skewed clocks, and what fencing must rule out.
//! - [`membership`]: nodes added, removed and replaced under faults.
//! - [`p2p`]: multi-source fetches routed by the real P2P schedule.
//! - [`store`]: every node's content-addressed store on a simulated disk.
//! - [`nemesis`]: the seed's faults and their injection.
//! - [`check`]: Raft's safety, during the run and at its end.
//! - [`world`]: one run: nodes, workload, nemesis, checks.

pub mod check;
pub mod client;
pub mod disk;
pub mod jobs;
pub mod linearizable;
pub mod membership;
pub mod nemesis;
pub mod net;
pub mod p2p;
pub mod store;
pub mod types;
pub mod watch;
pub mod world;

pub use disk::Bug;
pub use world::{Options, Outcome, run};

/// Runs seeds `seeds` on `jobs` threads (each seed on its own runtime);
/// their outcomes in seed order (an error is a run that could not start).
pub fn run_seeds(seeds: std::ops::Range<u64>, bug: Option<Bug>, jobs: usize) -> Vec<Result<Outcome, String>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let next = Arc::new(AtomicU64::new(seeds.start));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (next, results, end) = (next.clone(), results.clone(), seeds.end);
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let outcome = run(&Options {
                        seed,
                        bug,
                        trace: false,
                    })
                    .map_err(|error| format!("seed {seed}: {error:#}"));
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((seed, outcome));
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    results.sort_by_key(|(seed, _)| *seed);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

/// Threads to run seeds on: the machine's cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
