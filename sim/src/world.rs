//! One simulated run: N nodes running the real openraft and Omega's state
//! machine rules on simulated disks and a simulated network; clients adding
//! users and reading them back; every node's job worker claiming, renewing
//! and completing transcode jobs on its own (skewed) clock; and a nemesis
//! injecting the faults the seed picked (swarm testing), then a fault-free
//! phase in which the cluster must recover and every job finish.
//! Everything runs on one thread on tokio's paused clock inside openraft's
//! seeded runtime, so a seed replays exactly; the trace hash says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use omega_chaos::history::{self, IdSet};
use omega_consensus::Timing;
use omega_consensus::model::{Job, MemberNode};
use omega_consensus::state_machine::read;
use omega_storage::Store;
use openraft::{AsyncRuntime, Config, ServerState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{self, Invariants, metrics};
use crate::client;
use crate::disk::{Bug, Disk, LogStore, Machine, SharedDisk};
use crate::jobs::{self, JobLoad};
use crate::membership;
use crate::nemesis::{CLOCK_OFF_MAX_MS, Faults};
use crate::net::Net;
use crate::p2p;
use crate::store::{self, StoreDisk, StoreModel};
use crate::types::{Raft, RaftMetrics, Runtime};
use crate::{linearizable, watch};

/// How long faults are injected (simulated time).
const FAULT_PHASE: Duration = Duration::from_secs(12);
/// How long the cluster has to recover once faults stop.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How long clients keep working once the faults stop.
const CLIENTS_INTO_RECOVERY: Duration = Duration::from_secs(2);
/// Clients adding and reading users at once.
const CLIENTS: usize = 3;
/// Clients setting and reading watch state at once.
const WATCH_CLIENTS: usize = 2;
/// Invariants are checked this often.
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// Wall-clock time at the start of every run (2027-01-15), so that clocks
/// set back stay after the epoch.
const EPOCH_MS: i64 = 1_800_000_000_000;

/// What a run is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The seed: everything else follows from it.
    pub seed: u64,
    /// A bug to plant.
    pub bug: Option<Bug>,
    /// Keep the event trace (its hash is always computed).
    pub trace: bool,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Everything that broke an invariant or the clients' history.
    pub violations: Vec<String>,
    /// BLAKE3 of the event trace: the same seed gives the same hash.
    pub trace_hash: String,
    /// The trace, when asked for.
    pub trace: Vec<String>,
    /// Simulated time the run covered.
    pub simulated: Duration,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Client operations recorded (users and jobs).
    pub operations: usize,
    /// Jobs the cluster held at the end (all finished, unless a violation
    /// says otherwise).
    pub jobs: usize,
    /// Faults injected.
    pub faults: usize,
    /// The seed's mix of faults, in words.
    pub mix: String,
}

#[derive(Debug)]
struct Trace {
    hasher: blake3::Hasher,
    lines: Option<Vec<String>>,
}

/// A node of the run: its disk (kept across crashes), its Raft while it
/// runs, and its clock.
#[derive(Debug)]
struct NodeSlot {
    disk: SharedDisk,
    raft: Option<Raft>,
    /// Its store's disk, and the store while the node runs.
    store_disk: StoreDisk,
    store: Option<Arc<Store>>,
    /// Bumped at every start: work begun in an earlier one is void.
    incarnation: u64,
    /// How far its wall clock is from true time.
    clock_off_ms: i64,
}

/// What every part of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// The planted bug, if any.
    pub bug: Option<Bug>,
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    nodes: Mutex<BTreeMap<u64, NodeSlot>>,
    /// Disks of nodes removed from the cluster, for the log checks.
    retired: Mutex<BTreeMap<u64, SharedDisk>>,
    /// The voters the operator wants.
    intended: Mutex<BTreeSet<u64>>,
    pub(crate) cut: Mutex<BTreeSet<(u64, u64)>>,
    trace: Mutex<Trace>,
    started: tokio::time::Instant,
}

/// Locks `mutex`; a panic elsewhere ends the run anyway.
pub fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The run's RNG (one stream: the order of draws is deterministic).
    pub fn rng(&self) -> MutexGuard<'_, StdRng> {
        locked(&self.rng)
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        *locked(&self.faults)
    }

    /// Whether messages from `a` reach `b`.
    pub fn linked(&self, a: u64, b: u64) -> bool {
        !locked(&self.cut).contains(&(a, b))
    }

    /// Whether node `id` is cut off from every other node (paused, or a
    /// leader isolated): a viewer outside cannot reach it either.
    pub fn isolated(&self, id: u64) -> bool {
        let others: Vec<u64> = self.node_ids().into_iter().filter(|other| *other != id).collect();
        let cut = locked(&self.cut);
        !others.is_empty() && others.iter().all(|other| cut.contains(&(id, *other)))
    }

    /// Node `id`'s Raft, when it runs.
    pub fn raft(&self, id: u64) -> Option<Raft> {
        locked(&self.nodes).get(&id).and_then(|node| node.raft.clone())
    }

    /// Node `id`'s store, while it runs.
    pub fn store(&self, id: u64) -> Option<Arc<Store>> {
        locked(&self.nodes).get(&id).and_then(|node| node.store.clone())
    }

    /// Node `id`'s store disk.
    pub fn store_disk(&self, id: u64) -> Option<StoreDisk> {
        locked(&self.nodes).get(&id).map(|node| node.store_disk.clone())
    }

    /// Node `id`'s disk.
    pub fn disk(&self, id: u64) -> Option<SharedDisk> {
        locked(&self.nodes).get(&id).map(|node| node.disk.clone())
    }

    /// The voters the operator wants.
    pub fn intended(&self) -> BTreeSet<u64> {
        locked(&self.intended).clone()
    }

    /// Sets the voters the operator wants.
    pub fn set_intended(&self, voters: BTreeSet<u64>) {
        *locked(&self.intended) = voters;
    }

    /// Takes node `id` out of the run (its removal was committed): its
    /// Raft, to shut down; its disk stays for the log checks.
    pub fn retire(&self, id: u64) -> Option<Raft> {
        let slot = locked(&self.nodes).remove(&id)?;
        locked(&self.retired).insert(id, slot.disk);
        slot.raft
    }

    /// The disks of every node that ever ran, retired ones too.
    pub fn all_disks(&self) -> BTreeMap<u64, SharedDisk> {
        let mut disks = self.disks();
        disks.extend(locked(&self.retired).iter().map(|(id, disk)| (*id, disk.clone())));
        disks
    }

    /// Every node's disk.
    pub fn disks(&self) -> BTreeMap<u64, SharedDisk> {
        locked(&self.nodes)
            .iter()
            .map(|(id, node)| (*id, node.disk.clone()))
            .collect()
    }

    /// The running nodes' Rafts.
    pub fn rafts(&self) -> Vec<(u64, Raft)> {
        locked(&self.nodes)
            .iter()
            .filter_map(|(id, node)| node.raft.clone().map(|raft| (*id, raft)))
            .collect()
    }

    /// The node that leads now, if one does, and its Raft.
    pub fn leader(&self) -> Option<(u64, Raft)> {
        self.rafts()
            .into_iter()
            .find(|(_, raft)| metrics(raft).state == ServerState::Leader)
    }

    /// Node `id`'s incarnation while it runs.
    pub fn incarnation(&self, id: u64) -> Option<u64> {
        locked(&self.nodes)
            .get(&id)
            .filter(|node| node.raft.is_some())
            .map(|node| node.incarnation)
    }

    /// Every node of the run, running or not.
    pub fn node_ids(&self) -> Vec<u64> {
        locked(&self.nodes).keys().copied().collect()
    }

    /// The node after `id`, round the ring: where a client tries next.
    pub fn next_node(&self, id: u64) -> u64 {
        let nodes = locked(&self.nodes);
        nodes
            .range(id + 1..)
            .chain(nodes.iter())
            .map(|(next, _)| *next)
            .next()
            .unwrap_or(id)
    }

    /// Node `id`'s wall clock, milliseconds since the Unix epoch.
    pub fn wall_ms(&self, id: u64) -> u64 {
        let off = locked(&self.nodes).get(&id).map_or(0, |node| node.clock_off_ms);
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX / 2);
        u64::try_from(EPOCH_MS + elapsed + off).unwrap_or(0)
    }

    /// Moves node `id`'s clock by `jump` ms, within
    /// ±[`CLOCK_OFF_MAX_MS`] of true time; how far off it is now.
    pub fn jump_clock(&self, id: u64, jump: i64) -> i64 {
        let mut nodes = locked(&self.nodes);
        let Some(node) = nodes.get_mut(&id) else { return 0 };
        node.clock_off_ms = (node.clock_off_ms + jump).clamp(-CLOCK_OFF_MAX_MS, CLOCK_OFF_MAX_MS);
        node.clock_off_ms
    }

    /// How long the next sync takes.
    pub fn sync_delay(&self) -> Duration {
        let max = self.faults().disk_max_ms;
        crate::disk::sync_delay(&mut *self.rng(), max)
    }

    /// Records an event in the trace.
    pub fn event(&self, what: fmt::Arguments<'_>) {
        let line = format!("{:>10} {what}", self.started.elapsed().as_micros());
        let mut trace = locked(&self.trace);
        trace.hasher.update(line.as_bytes());
        trace.hasher.update(b"\n");
        if let Some(lines) = &mut trace.lines {
            lines.push(line);
        }
    }

    /// Simulated time since the run began, in nanoseconds.
    pub fn now_ns(&self) -> u128 {
        self.started.elapsed().as_nanos()
    }
}

/// Runs one seed to its end.
pub fn run(options: &Options) -> anyhow::Result<Outcome> {
    // tokio draws random numbers too (its watch channels pick a waiter
    // list at random): seeded from the run's seed as well.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&options.seed.to_le_bytes()))
        .build()?;
    let options = options.clone();
    let seed = options.seed;
    runtime.block_on(Runtime::scope(seed, simulate(options)))
}

/// The cluster as the nemesis and the checks see it.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
    /// Crashed nodes and when they come back.
    pub(crate) down: BTreeMap<u64, tokio::time::Instant>,
    /// Paused nodes and when they answer again.
    pub(crate) paused: BTreeMap<u64, tokio::time::Instant>,
    /// Nodes whose disk is full, and when it has room again.
    pub(crate) full: BTreeMap<u64, tokio::time::Instant>,
    invariants: Invariants,
    pub(crate) faults_injected: usize,
    /// Nodes added so far, and the id of the first.
    pub(crate) added: u64,
    pub(crate) first_added: u64,
}

/// A node's openraft settings: a real node's ([`Timing::DEFAULT`]), but
/// for snapshots taken far more often, so that runs install and purge
/// behind them.
fn config(bug: Option<Bug>) -> anyhow::Result<Arc<Config>> {
    let timing = Timing {
        snapshot_every: 150,
        keep_behind_snapshot: 20,
        ..Timing::DEFAULT
    };
    let mut config = timing.raft_config()?;
    if bug == Some(Bug::LeaderRestore) {
        config.enable_leader_restore = Some(true);
    }
    Ok(Arc::new(config))
}

impl Cluster {
    /// Starts node `id` on its disk (a new one the first time).
    pub async fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let config = config(self.shared.bug)?;
        let disk = {
            let skew = self.shared.faults().skew_max_ms as i64;
            let clock_off_ms = if skew > 0 {
                self.shared.rng().random_range(-skew..=skew)
            } else {
                0
            };
            let mut nodes = locked(&self.shared.nodes);
            let node = nodes.entry(id).or_insert_with(|| NodeSlot {
                disk: SharedDisk::default(),
                raft: None,
                store_disk: StoreDisk::new(self.shared.bug),
                store: None,
                incarnation: 0,
                clock_off_ms,
            });
            (node.disk.clone(), node.store_disk.clone())
        };
        let (disk, store_disk) = disk;
        // The store repairs what the crash left before the node serves.
        let store = match store_disk.unfailing(|| store::open(id, &store_disk)) {
            Ok(store) => Some(Arc::new(store)),
            Err(error) => {
                self.invariants
                    .violations
                    .push(format!("store of node {id} did not open: {error}"));
                None
            }
        };
        let raft = Raft::new(
            id,
            config,
            Net::new(id, self.shared.clone()),
            LogStore::new(disk.clone(), self.shared.clone()),
            Machine::new(disk, self.shared.bug),
        )
        .await
        .map_err(|error| anyhow::anyhow!("node {id} cannot start: {error}"))?;
        if let Some(node) = locked(&self.shared.nodes).get_mut(&id) {
            node.raft = Some(raft);
            node.store = store;
            node.incarnation += 1;
        }
        self.shared.event(format_args!("start {id}"));
        Ok(())
    }

    /// Stops node `id` and loses what its disk had not synced (but for a
    /// prefix, when the seed tears writes); it comes back at `until`.
    pub async fn crash(&mut self, id: u64, until: tokio::time::Instant) {
        let (raft, disk, store_disk) = match locked(&self.shared.nodes).get_mut(&id) {
            Some(node) => {
                node.store = None;
                (node.raft.take(), Some(node.disk.clone()), Some(node.store_disk.clone()))
            }
            None => (None, None, None),
        };
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        let torn = self.shared.faults().torn;
        if let Some(store_disk) = store_disk {
            store_disk.crash(&mut *self.shared.rng(), torn);
        }
        let mut kept = 0;
        if let Some(disk) = disk {
            let unsynced = Disk::unsynced(&disk);
            kept = {
                let mut rng = self.shared.rng();
                if unsynced > 0 && rng.random_bool(torn) {
                    rng.random_range(0..=unsynced)
                } else {
                    0
                }
            };
            Disk::crash(&disk, kept);
        }
        self.down.insert(id, until);
        self.shared
            .event(format_args!("crash {id} (kept {kept} unsynced writes)"));
    }

    /// Nodes whose Raft stopped on an error (a full disk), or whose store's
    /// disk failed, go down like a crashed process, and come back once
    /// their disk has room.
    pub async fn reap_failed(&mut self) {
        let failed: Vec<u64> = self
            .shared
            .rafts()
            .into_iter()
            .filter(|(id, raft)| {
                metrics(raft).running_state.is_err() || self.shared.store_disk(*id).is_some_and(|disk| disk.failed())
            })
            .map(|(id, _)| id)
            .collect();
        for id in failed {
            let until = self
                .full
                .get(&id)
                .copied()
                .unwrap_or_else(tokio::time::Instant::now)
                .max(tokio::time::Instant::now() + Duration::from_millis(100));
            self.shared.event(format_args!("node {id} stopped on a disk error"));
            self.crash(id, until).await;
        }
    }

    fn check(&mut self) {
        let rafts = self.shared.rafts();
        self.invariants.step(&self.shared, &rafts);
    }
}

/// The nodes whose time in `waiting` is up.
pub fn due(waiting: &BTreeMap<u64, tokio::time::Instant>, now: tokio::time::Instant) -> Vec<u64> {
    waiting
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(id, _)| *id)
        .collect()
}

/// What the run's workload tasks share.
struct Workload {
    users: Arc<Mutex<Vec<history::Op>>>,
    jobs: Arc<Mutex<Vec<jobs::JobOp>>>,
    stop_users: Arc<AtomicBool>,
    stop_jobs: Arc<AtomicBool>,
    /// What each node's store clients were told.
    stores: Arc<Mutex<BTreeMap<u64, StoreModel>>>,
    /// What the store clients and the P2P viewer found broken as they went.
    found: Arc<Mutex<Vec<String>>>,
    /// Stops the membership operator.
    stop_operator: Arc<AtomicBool>,
    /// Watch-state histories, by film.
    watch: Arc<Mutex<watch::Histories>>,
    /// Set once the P2P viewer's last set is complete.
    p2p_done: Arc<AtomicBool>,
    tasks: Vec<<Runtime as AsyncRuntime>::JoinHandle<()>>,
}

impl Workload {
    fn start(
        shared: &Arc<Shared>,
        catalog: Option<watch::Catalog>,
        load: JobLoad,
        node_ids: std::ops::RangeInclusive<u64>,
    ) -> Workload {
        let mut workload = Workload {
            users: Arc::default(),
            jobs: Arc::default(),
            stop_users: Arc::default(),
            stop_jobs: Arc::default(),
            stores: Arc::default(),
            found: Arc::default(),
            stop_operator: Arc::default(),
            p2p_done: Arc::default(),
            watch: Arc::default(),
            tasks: Vec::new(),
        };
        let (viewer, stop, done, violations) = (
            shared.clone(),
            workload.stop_jobs.clone(),
            workload.p2p_done.clone(),
            workload.found.clone(),
        );
        let fault_end_ns = shared.now_ns() + FAULT_PHASE.as_nanos();
        workload.tasks.push(Runtime::spawn(async move {
            let found = p2p::viewers(&viewer, fault_end_ns, &stop, &done).await;
            locked(&violations).extend(found);
        }));
        let (operator, stop) = (shared.clone(), workload.stop_operator.clone());
        workload.tasks.push(Runtime::spawn(async move {
            membership::operator(&operator, &stop).await;
        }));
        let next_add = Arc::new(AtomicU64::new(0));
        for client in 0..CLIENTS {
            let (shared, history, next_add, stop) = (
                shared.clone(),
                workload.users.clone(),
                next_add.clone(),
                workload.stop_users.clone(),
            );
            workload.tasks.push(Runtime::spawn(async move {
                client::users_loop(client, &shared, &history, &next_add, &stop).await;
            }));
        }
        let Some(catalog) = catalog else { return workload };
        let item = catalog.films[0];
        let next_position = Arc::new(AtomicU64::new(0));
        for _ in 0..WATCH_CLIENTS {
            let (shared, catalog, histories, next, stop) = (
                shared.clone(),
                catalog.clone(),
                workload.watch.clone(),
                next_position.clone(),
                workload.stop_users.clone(),
            );
            workload.tasks.push(Runtime::spawn(async move {
                watch::client(&shared, &catalog, &histories, &next, &stop).await;
            }));
        }
        let producer = shared.clone();
        workload.tasks.push(Runtime::spawn(async move {
            jobs::produce(&producer, item, load, FAULT_PHASE / 2).await;
        }));
        // Every node that may run gets a worker and a store client, idle
        // while it does not run.
        for node in node_ids.clone() {
            let (shared, models, violations, stop) = (
                shared.clone(),
                workload.stores.clone(),
                workload.found.clone(),
                workload.stop_jobs.clone(),
            );
            workload.tasks.push(Runtime::spawn(async move {
                store_client(node, &shared, &models, &violations, &stop).await;
            }));
        }
        for node in node_ids {
            let (shared, history, stop) = (shared.clone(), workload.jobs.clone(), workload.stop_jobs.clone());
            workload.tasks.push(Runtime::spawn(async move {
                jobs::worker(node, &shared, load, &history, &stop).await;
            }));
        }
        workload
    }

    async fn stop(self) -> Finished {
        self.stop_users.store(true, Ordering::Release);
        self.stop_jobs.store(true, Ordering::Release);
        self.stop_operator.store(true, Ordering::Release);
        let mut panicked = 0;
        for task in self.tasks {
            if task.await.is_err() {
                panicked += 1;
            }
        }
        let users = std::mem::take(&mut *locked(&self.users));
        let jobs = std::mem::take(&mut *locked(&self.jobs));
        let stores = std::mem::take(&mut *locked(&self.stores));
        let mut violations = std::mem::take(&mut *locked(&self.found));
        if panicked > 0 {
            violations.push(format!(
                "{panicked} client tasks panicked (the real code under them did)"
            ));
        }
        let watch = std::mem::take(&mut *locked(&self.watch));
        Finished {
            users,
            jobs,
            stores,
            watch,
            violations,
        }
    }
}

/// What the workload recorded, once it stopped.
struct Finished {
    users: Vec<history::Op>,
    jobs: Vec<jobs::JobOp>,
    stores: BTreeMap<u64, StoreModel>,
    watch: watch::Histories,
    violations: Vec<String>,
}

/// Node `node`'s store client, until `stop`: a move at a time while the
/// node runs; after each restart, first checks what the store kept.
async fn store_client(
    node: u64,
    shared: &Shared,
    models: &Mutex<BTreeMap<u64, StoreModel>>,
    violations: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let pieces = store::pieces(&mut *shared.rng());
    let mut seen = None;
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(store::think(shared)).await;
        let (Some(incarnation), Some(store), Some(disk)) =
            (shared.incarnation(node), shared.store(node), shared.store_disk(node))
        else {
            continue;
        };
        let mut models = locked(models);
        let model = models.entry(node).or_default();
        let found = if seen == Some(incarnation) {
            store::step(node, shared, &store, &disk, model, &pieces)
        } else {
            seen = Some(incarnation);
            disk.unfailing(|| store::verify(node, &store, &disk, model))
        };
        locked(violations).extend(found);
    }
}

async fn simulate(options: Options) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let nodes: u64 = if rng.random_bool(0.5) { 3 } else { 5 };
    let faults = Faults::pick(&mut rng);
    let load = JobLoad::pick(&mut rng);
    let shared = Arc::new(Shared {
        bug: options.bug,
        rng: Mutex::new(StdRng::seed_from_u64(rng.random())),
        faults: Mutex::new(faults),
        nodes: Mutex::new(BTreeMap::new()),
        retired: Mutex::new(BTreeMap::new()),
        intended: Mutex::new((1..=nodes).collect()),
        cut: Mutex::new(BTreeSet::new()),
        trace: Mutex::new(Trace {
            hasher: blake3::Hasher::new(),
            lines: options.trace.then(Vec::new),
        }),
        started: tokio::time::Instant::now(),
    });
    shared.event(format_args!(
        "seed {} nodes {nodes} {}; {load:?}",
        options.seed,
        faults.describe()
    ));
    let members: BTreeMap<u64, MemberNode> = (1..=nodes).map(|id| (id, membership::member(id))).collect();
    let mut cluster = Cluster {
        shared: shared.clone(),
        down: BTreeMap::new(),
        paused: BTreeMap::new(),
        full: BTreeMap::new(),
        invariants: Invariants::default(),
        faults_injected: 0,
        added: 0,
        first_added: nodes + 1,
    };
    for id in 1..=nodes {
        cluster.start_node(id).await?;
    }
    if let Some(first) = shared.raft(1) {
        first
            .initialize(members.clone())
            .await
            .map_err(|error| anyhow::anyhow!("cannot initialize: {error}"))?;
    }
    // Faults begin once the cluster has formed (a real cluster is formed
    // by one node, then joined): every node applied the membership.
    let formed_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while !converged_now(&cluster) {
        if tokio::time::Instant::now() > formed_by {
            anyhow::bail!("the cluster did not form within 10 s");
        }
        tokio::time::sleep(CHECK_EVERY).await;
        cluster.check();
    }
    let catalog = watch::setup(&shared).await;
    if catalog.is_none() {
        cluster
            .invariants
            .violations
            .push("the library, its films and the viewer were not written before the faults".into());
    }
    shared.event(format_args!("formed"));
    let workload = Workload::start(&shared, catalog, load, 1..=nodes + membership::ADDED_MAX);

    // Faults, checked every step.
    let fault_end = tokio::time::Instant::now() + FAULT_PHASE;
    let mut next_fault = tokio::time::Instant::now();
    while tokio::time::Instant::now() < fault_end {
        tokio::time::sleep(CHECK_EVERY).await;
        cluster.check();
        cluster.reap_failed().await;
        cluster.retire_removed().await;
        if tokio::time::Instant::now() >= next_fault {
            cluster.inject(&faults).await?;
            next_fault = tokio::time::Instant::now() + Duration::from_millis(shared.rng().random_range(100..1500));
        }
    }

    // Recovery: no more faults; everyone back. Clients stop after a
    // while; workers go on until every job is finished.
    *locked(&shared.faults) = faults.none();
    cluster.heal();
    cluster.free_disks();
    for id in shared.node_ids() {
        if let Some(disk) = shared.store_disk(id) {
            disk.clear_failpoint();
        }
    }
    cluster.reap_failed().await;
    let down: Vec<u64> = cluster.down.keys().copied().collect();
    for id in down {
        cluster.down.remove(&id);
        cluster.start_node(id).await?;
    }
    shared.event(format_args!("recovery"));
    let recovery_started = tokio::time::Instant::now();
    let recovery_end = recovery_started + RECOVERY_LIMIT;
    let mut converged = false;
    while tokio::time::Instant::now() < recovery_end {
        tokio::time::sleep(CHECK_EVERY * 10).await;
        cluster.check();
        cluster.reap_failed().await;
        cluster.restart_due().await?;
        cluster.retire_removed().await;
        if recovery_started.elapsed() < CLIENTS_INTO_RECOVERY {
            continue;
        }
        workload.stop_users.store(true, Ordering::Release);
        if converged_now(&cluster)
            && jobs::all_finished(&final_jobs(&shared))
            && workload.p2p_done.load(Ordering::Acquire)
        {
            converged = true;
            break;
        }
    }
    let Finished {
        users,
        jobs: job_ops,
        stores: store_models,
        watch: watch_histories,
        violations: found,
    } = workload.stop().await;
    // One more write through the leader makes every earlier entry
    // committed and applied on all nodes once they converge.
    if converged {
        converged = settle(&cluster).await;
    }
    let mut violations = std::mem::take(&mut cluster.invariants.violations);
    if !converged {
        violations.push(format!(
            "the cluster did not converge, finish its jobs and serve its sets within {RECOVERY_LIMIT:?} after the faults"
        ));
    }
    let disks = shared.disks();
    let finals: Vec<IdSet> = disks
        .values()
        .map(|disk| Disk::read_tables(disk, client::names))
        .collect();
    let finished = final_jobs(&shared);
    violations.extend(history::check(&users, &finals).iter().map(ToString::to_string));
    violations.extend(jobs::check(&job_ops, &finished));
    violations.extend(check::log_matching(&shared.all_disks()));
    violations.extend(found);
    violations.extend(linearizable::check("watch position on film", &watch_histories));
    violations.extend(final_stores(&shared, &store_models));
    // Not under the lock: messages in flight look nodes up while these
    // shut down.
    let running: Vec<Raft> = {
        let mut nodes = locked(&shared.nodes);
        nodes.values_mut().filter_map(|node| node.raft.take()).collect()
    };
    for raft in running {
        let _ = raft.shutdown().await;
    }
    let trace = locked(&shared.trace);
    Ok(Outcome {
        seed: options.seed,
        violations,
        trace_hash: trace.hasher.finalize().to_hex().to_string(),
        trace: trace.lines.clone().unwrap_or_default(),
        simulated: shared.started.elapsed(),
        nodes: shared.node_ids().len(),
        operations: users.len() + job_ops.len() + watch_histories.values().map(Vec::len).sum::<usize>(),
        jobs: finished.len(),
        faults: cluster.faults_injected,
        mix: format!("{}; {load:?}", faults.describe()),
    })
}

/// Every running node's store: what its clients were told reads back, and
/// scrub finds it sound.
fn final_stores(shared: &Shared, models: &BTreeMap<u64, StoreModel>) -> Vec<String> {
    let mut violations = Vec::new();
    for (node, model) in models {
        let (Some(store), Some(disk)) = (shared.store(*node), shared.store_disk(*node)) else {
            continue;
        };
        violations.extend(store::verify(*node, &store, &disk, model));
        match store.scrub() {
            Ok(report) if !report.is_clean() && !disk.damaged() => {
                violations.push(format!("store of node {node}: scrub found {:?}", report.findings));
            }
            Ok(_) => {}
            Err(error) => violations.push(format!("store of node {node}: scrub failed: {error}")),
        }
    }
    violations
}

/// The jobs as the leader (or else the first node) applied them.
fn final_jobs(shared: &Shared) -> Vec<Job> {
    let disk = shared
        .leader()
        .map(|(id, _)| id)
        .or_else(|| shared.node_ids().first().copied())
        .and_then(|id| shared.disk(id));
    disk.map(|disk| Disk::read_tables(&disk, |tables| read::jobs(tables).unwrap_or_default()))
        .unwrap_or_default()
}

/// There is a leader, the membership is the one intended, and every node
/// runs and applied the same last entry.
fn converged_now(cluster: &Cluster) -> bool {
    let rafts = cluster.shared.rafts();
    let intended = cluster.shared.intended();
    if rafts.len() != cluster.shared.node_ids().len()
        || cluster.shared.node_ids().into_iter().ne(intended.iter().copied())
    {
        return false;
    }
    let Some((_, leader_raft)) = cluster.shared.leader() else {
        return false;
    };
    let seen = membership::view(&leader_raft);
    if seen.voters != intended || seen.nodes != intended || !seen.committed {
        return false;
    }
    let all: Vec<RaftMetrics> = rafts.iter().map(|(_, raft)| metrics(raft)).collect();
    let leader = metrics(&leader_raft);
    all.iter()
        .all(|metrics| metrics.last_applied == leader.local_committed && metrics.last_applied.is_some())
}

/// Writes one blank entry through the leader and waits until every node
/// applied it.
async fn settle(cluster: &Cluster) -> bool {
    let Some((_, leader)) = cluster.shared.leader() else {
        return false;
    };
    let Ok(Ok(written)) = tokio::time::timeout(Duration::from_secs(5), leader.write_blank()).await else {
        return false;
    };
    let target = written.log_id.index;
    for _ in 0..100 {
        let done = cluster.shared.rafts().iter().all(|(_, raft)| {
            metrics(raft)
                .last_applied
                .as_ref()
                .is_some_and(|log_id| log_id.index >= target)
        });
        if done {
            return true;
        }
        tokio::time::sleep(CHECK_EVERY * 10).await;
    }
    false
}
