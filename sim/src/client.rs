//! Talking to the simulated cluster as a client does: a write goes to one
//! node and follows its leader hints; a read asks a node to confirm it
//! leads (ReadIndex), then reads its tables. Also the users workload: adds
//! of `u{id}` and reads of every user, recorded for the history checker.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use omega_chaos::history::{AddOutcome, IdSet, Op};
use omega_consensus::command::{Command, Response};
use omega_consensus::model::LibraryAccess;
use omega_consensus::state_machine::read;
use omega_consensus::state_machine::tables::MemTables;
use openraft::ReadPolicy;
use rand::Rng;

use crate::disk::Disk;
use crate::world::{Shared, locked};

/// How long a client waits for one answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client waits before it tries again.
const BACKOFF: Duration = Duration::from_millis(50);

/// Proposes `command` through node `first`, following leader hints, until
/// the cluster answers or `timeout` passes. `None`: no answer, so the
/// command may or may not have applied.
pub async fn propose(shared: &Shared, first: u64, command: &Command, timeout: Duration) -> Option<Response> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut node = first;
    while tokio::time::Instant::now() < deadline {
        let Some(raft) = shared.raft(node) else {
            tokio::time::sleep(BACKOFF).await;
            node = shared.next_node(node);
            continue;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, raft.client_write(command.clone())).await {
            Ok(Ok(written)) => return Some(written.data),
            Ok(Err(error)) => match error.forward_to_leader().map(|forward| forward.leader_id) {
                Some(Some(leader)) if leader != node => node = leader,
                // This node knows no leader (an election, or it has not
                // joined yet): another may.
                Some(None) => {
                    tokio::time::sleep(BACKOFF).await;
                    node = shared.next_node(node);
                }
                // Proposed and then lost (it may yet apply): wait, then
                // try again.
                _ => tokio::time::sleep(BACKOFF).await,
            },
            Err(_) => return None,
        }
    }
    None
}

/// The users workload: adds and linearizable reads until `stop`.
pub async fn users_loop(
    client: usize,
    shared: &Shared,
    history: &Mutex<Vec<Op>>,
    next_add: &AtomicU64,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let (think, add, node) = {
            let ids = shared.node_ids();
            let mut rng = shared.rng();
            (
                Duration::from_millis(rng.random_range(5..60)),
                rng.random_bool(0.6),
                ids[rng.random_range(0..ids.len())],
            )
        };
        tokio::time::sleep(think).await;
        let invoke = shared.now_ns();
        if add {
            let id = next_add.fetch_add(1, Ordering::Relaxed);
            let outcome = match propose(shared, node, &add_user(id), CLIENT_TIMEOUT).await {
                // Taken means an earlier try of this very add applied.
                Some(Response::Created(_) | Response::Rejected(_)) => AddOutcome::Done,
                _ => AddOutcome::Unknown,
            };
            let complete = shared.now_ns();
            shared.event(format_args!("client {client} add {id} {outcome:?}"));
            locked(history).push(Op::Add {
                id,
                invoke,
                complete,
                outcome,
            });
        } else if let Some(names) = read_users(shared, node).await {
            let complete = shared.now_ns();
            shared.event(format_args!("client {client} read node {node}"));
            locked(history).push(Op::Read {
                node: node as usize,
                invoke,
                complete,
                names,
            });
        }
    }
}

fn add_user(id: u64) -> Command {
    Command::CreateUser {
        name: format!("u{id}"),
        password_hash: String::new(),
        roles: BTreeSet::new(),
        library_access: LibraryAccess::All,
        now_ms: 0,
    }
}

/// A linearizable read of the users on `node` (it must lead).
async fn read_users(shared: &Shared, node: u64) -> Option<IdSet> {
    let raft = shared.raft(node)?;
    let read = tokio::time::timeout(CLIENT_TIMEOUT, raft.ensure_linearizable(ReadPolicy::ReadIndex)).await;
    match read {
        Ok(Ok(_)) => shared.disk(node).map(|disk| Disk::read_tables(&disk, names)),
        _ => None,
    }
}

/// The add ids among the users in `tables` (users named `u{id}`).
pub fn names(tables: &MemTables) -> IdSet {
    let mut set = IdSet::default();
    for user in read::users(tables).unwrap_or_default() {
        if let Some(id) = user.name.strip_prefix('u').and_then(|id| id.parse().ok()) {
            set.insert(id);
        }
    }
    set
}
