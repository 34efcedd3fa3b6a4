//! The catalog a run works on, and watch state under faults: a library of a
//! few films and a viewer, written before the faults; then clients set the
//! viewer's resume position on random films (each write a new value) and
//! read it back with linearizable reads. Each film's position is a
//! register; [`crate::linearizable`] checks every register's history.
//!
//! A write is proposed once, to the node that leads when it is asked: a
//! client retrying a write whose answer was lost could apply it twice,
//! which a register's history cannot tell from a bug.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use omega_consensus::command::{Command, Response};
use omega_consensus::model::{EntityId, ItemKind, ItemWrite, LibraryAccess, LibraryKind, WatchState};
use omega_consensus::state_machine::read;
use openraft::ReadPolicy;
use rand::Rng;

use crate::client::{CLIENT_TIMEOUT, propose};
use crate::disk::{Bug, Disk};
use crate::linearizable::{OPS_PER_KEY_MAX, RegisterOp};
use crate::world::{Shared, locked};

/// Films in the library: the first is the jobs' item, each one register.
const FILMS: usize = 6;

/// What the run's clients work on.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The films, by id.
    pub films: Vec<EntityId>,
    /// The viewer whose positions are written.
    pub viewer: EntityId,
}

/// Writes the library, its films and the viewer; `None` if the cluster did
/// not answer (it has formed and has no faults yet, so that is a failure).
pub async fn setup(shared: &Shared) -> Option<Catalog> {
    let first = shared.node_ids().first().copied()?;
    let library = Command::CreateLibrary {
        name: "films".into(),
        kind: LibraryKind::Movies,
        paths: vec!["/films".into()],
        node: first,
        now_ms: shared.wall_ms(first),
    };
    let Some(Response::Created(library)) = propose(shared, first, &library, CLIENT_TIMEOUT * 3).await else {
        return None;
    };
    let items = (0..FILMS)
        .map(|index| ItemWrite {
            key: format!("film-{index}"),
            library,
            kind: ItemKind::Movie,
            parent_key: None,
            title: format!("Film {index}"),
            sort_title: format!("film {index}"),
            year: None,
            index: None,
            metadata: BTreeMap::new(),
            media: Vec::new(),
        })
        .collect();
    let upsert = Command::UpsertItems {
        items,
        now_ms: shared.wall_ms(first),
    };
    let Some(Response::Items(films)) = propose(shared, first, &upsert, CLIENT_TIMEOUT * 3).await else {
        return None;
    };
    let viewer = Command::CreateUser {
        name: "viewer".into(),
        password_hash: String::new(),
        roles: BTreeSet::new(),
        library_access: LibraryAccess::All,
        now_ms: 0,
    };
    let Some(Response::Created(viewer)) = propose(shared, first, &viewer, CLIENT_TIMEOUT * 3).await else {
        return None;
    };
    Some(Catalog { films, viewer })
}

/// Watch-state histories, by film.
pub type Histories = BTreeMap<EntityId, Vec<RegisterOp>>;

/// One watch-state client, until `stop`.
pub async fn client(
    shared: &Shared,
    catalog: &Catalog,
    histories: &Mutex<Histories>,
    next: &AtomicU64,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let (think, film, write, node) = {
            let ids = shared.node_ids();
            let mut rng = shared.rng();
            (
                Duration::from_millis(rng.random_range(20..120)),
                catalog.films[rng.random_range(0..catalog.films.len())],
                rng.random_bool(0.5),
                ids[rng.random_range(0..ids.len())],
            )
        };
        tokio::time::sleep(think).await;
        // Each register's history stays small enough to check.
        if locked(histories).get(&film).map_or(0, Vec::len) >= OPS_PER_KEY_MAX {
            continue;
        }
        let invoke = shared.now_ns();
        let op = if write {
            let value = next.fetch_add(1, Ordering::Relaxed) + 1;
            write_once(shared, catalog, film, value, invoke).await
        } else {
            read_position(shared, catalog, film, node, invoke).await
        };
        if let Some(op) = op {
            locked(histories).entry(film).or_default().push(op);
        }
    }
}

/// Sets the viewer's position on `film` to `value`, proposed once to the
/// node that leads now.
async fn write_once(
    shared: &Shared,
    catalog: &Catalog,
    film: EntityId,
    value: u64,
    invoke: u128,
) -> Option<RegisterOp> {
    let (_, leader) = shared.leader()?;
    let command = Command::SetWatchState {
        user: catalog.viewer,
        item: film,
        state: WatchState {
            position_ms: value,
            played: false,
            play_count: 0,
            updated_ms: 0,
        },
    };
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, leader.client_write(command)).await;
    let complete = match answer {
        Ok(Ok(written)) => match written.data {
            Response::Done => Some(shared.now_ns()),
            // Refused: nothing was written.
            _ => return None,
        },
        // No answer, or an error after it may have been appended: it may
        // yet apply.
        _ => None,
    };
    shared.event(format_args!("watch write film {film} = {value}: {complete:?}"));
    Some(RegisterOp {
        write: Some(value),
        read: None,
        invoke,
        complete,
    })
}

/// Reads the viewer's position on `film` through `node`, which must
/// confirm it leads (ReadIndex) and apply up to there first.
async fn read_position(
    shared: &Shared,
    catalog: &Catalog,
    film: EntityId,
    node: u64,
    invoke: u128,
) -> Option<RegisterOp> {
    let raft = shared.raft(node)?;
    let disk = shared.disk(node)?;
    // The planted bug reads whatever the node has applied, leader or not.
    if shared.bug != Some(Bug::LocalReads) {
        let confirmed = tokio::time::timeout(CLIENT_TIMEOUT, raft.ensure_linearizable(ReadPolicy::ReadIndex)).await;
        if !matches!(confirmed, Ok(Ok(_))) {
            return None;
        }
    }
    let position = Disk::read_tables(&disk, |tables| read::watch_state(tables, catalog.viewer, film))
        .ok()?
        .map(|state| state.position_ms);
    let complete = shared.now_ns();
    shared.event(format_args!("watch read film {film} on {node}: {position:?}"));
    Some(RegisterOp {
        write: None,
        read: position,
        invoke,
        complete: Some(complete),
    })
}
