//! One simulated run: N nodes running the real openraft and Omega's state
//! machine rules on simulated disks and a simulated network, clients
//! adding users and reading them back, and a nemesis injecting the faults
//! the seed picked (swarm testing), then a fault-free phase in which the
//! cluster must recover. Everything runs on one thread on tokio's paused
//! clock inside openraft's seeded runtime, so a seed replays exactly; the
//! trace hash says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use omega_chaos::history::{self, AddOutcome, IdSet, Op};
use omega_consensus::command::{Command, Response};
use omega_consensus::model::{LibraryAccess, MemberNode};
use omega_consensus::state_machine::read;
use openraft::{AsyncRuntime, Config, ReadPolicy, ServerState, SnapshotPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::disk::{Bug, Disk, LogStore, Machine, SharedDisk};
use crate::net::Net;
use crate::types::{LogId, Raft, RaftMetrics, Runtime};

/// How long faults are injected (simulated time).
const FAULT_PHASE: Duration = Duration::from_secs(12);
/// How long the cluster has to recover once faults stop.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How long clients keep working once the faults stop.
const CLIENTS_INTO_RECOVERY: Duration = Duration::from_secs(2);
/// Clients working at once.
const CLIENTS: usize = 3;
/// How long a client waits for one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Invariants are checked this often.
const CHECK_EVERY: Duration = Duration::from_millis(10);

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
    /// Client operations recorded.
    pub operations: usize,
    /// Faults injected.
    pub faults: usize,
    /// The seed's mix of faults, in words.
    pub mix: String,
}

/// The faults a run injects, and how often (swarm testing: each seed picks
/// its own mix).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Chance a message is lost.
    pub loss: f64,
    /// Chance a request is delivered twice.
    pub duplication: f64,
    /// Longest one-way delay, in microseconds.
    pub delay_max_us: u64,
    /// Longest sync, in milliseconds.
    pub disk_max_ms: u64,
    /// Weights of the nemesis's moves.
    pub crash: u32,
    /// Every node loses power at once.
    pub power_loss: u32,
    /// A partition (the leader isolated, or a random cut).
    pub partition: u32,
    /// A node stops answering for a while (a pause).
    pub pause: u32,
    /// Links heal.
    pub heal: u32,
}

impl Faults {
    fn pick(rng: &mut StdRng) -> Faults {
        let on = |rng: &mut StdRng, weight: u32| if rng.random_bool(0.7) { weight } else { 0 };
        Faults {
            loss: if rng.random_bool(0.5) {
                rng.random_range(0.0..0.15)
            } else {
                0.0
            },
            duplication: if rng.random_bool(0.3) {
                rng.random_range(0.0..0.1)
            } else {
                0.0
            },
            delay_max_us: rng.random_range(200..30_000),
            disk_max_ms: rng.random_range(1..40),
            crash: on(rng, 3),
            power_loss: on(rng, 1),
            partition: on(rng, 3),
            pause: on(rng, 2),
            heal: 4,
        }
    }

    /// A healthy network and disk.
    fn none(self) -> Faults {
        Faults {
            loss: 0.0,
            duplication: 0.0,
            delay_max_us: 2_000,
            disk_max_ms: self.disk_max_ms.min(5),
            crash: 0,
            power_loss: 0,
            partition: 0,
            pause: 0,
            heal: 0,
        }
    }

    fn describe(&self) -> String {
        format!(
            "loss {:.0}%, duplication {:.0}%, delay ≤{} ms, sync ≤{} ms, weights crash {} power-loss {} partition {} pause {}",
            self.loss * 100.0,
            self.duplication * 100.0,
            self.delay_max_us / 1000,
            self.disk_max_ms,
            self.crash,
            self.power_loss,
            self.partition,
            self.pause
        )
    }
}

#[derive(Debug)]
struct Trace {
    hasher: blake3::Hasher,
    lines: Option<Vec<String>>,
}

/// What every part of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// The planted bug, if any.
    pub bug: Option<Bug>,
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    rafts: Mutex<BTreeMap<u64, Raft>>,
    cut: Mutex<BTreeSet<(u64, u64)>>,
    trace: Mutex<Trace>,
    started: tokio::time::Instant,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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

    /// Node `id`'s Raft, when it runs.
    pub fn raft(&self, id: u64) -> Option<Raft> {
        locked(&self.rafts).get(&id).cloned()
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

    fn now_ns(&self) -> u128 {
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

/// The cluster: its disks (kept across crashes) and what runs.
struct Cluster {
    shared: Arc<Shared>,
    disks: BTreeMap<u64, SharedDisk>,
    members: BTreeMap<u64, MemberNode>,
    /// Crashed nodes and when they come back.
    down: BTreeMap<u64, tokio::time::Instant>,
    /// Paused nodes and when they answer again.
    paused: BTreeMap<u64, tokio::time::Instant>,
    /// Leaders seen, by term.
    leaders: BTreeMap<u64, u64>,
    violations: Vec<String>,
    faults_injected: usize,
}

fn config(rng: &mut StdRng, bug: Option<Bug>) -> anyhow::Result<Arc<Config>> {
    let election_min = rng.random_range(250..400);
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: election_min,
        election_timeout_max: election_min + 200,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(150),
        max_in_snapshot_log_to_keep: 20,
        purge_batch_size: 16,
        // Off, as on a real node (`omega_consensus::cluster`): see there why.
        enable_leader_restore: Some(bug == Some(Bug::LeaderRestore)),
        ..Config::default()
    };
    Ok(Arc::new(config.validate()?))
}

impl Cluster {
    async fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let config = config(&mut self.shared.rng(), self.shared.bug)?;
        let disk = self.disks.entry(id).or_default().clone();
        let raft = Raft::new(
            id,
            config,
            Net::new(id, self.shared.clone()),
            LogStore::new(disk.clone(), self.shared.clone()),
            Machine::new(disk),
        )
        .await
        .map_err(|error| anyhow::anyhow!("node {id} cannot start: {error}"))?;
        locked(&self.shared.rafts).insert(id, raft);
        self.shared.event(format_args!("start {id}"));
        Ok(())
    }

    async fn crash(&mut self, id: u64, until: tokio::time::Instant) {
        let raft = locked(&self.shared.rafts).remove(&id);
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        if let Some(disk) = self.disks.get(&id) {
            Disk::crash(disk);
        }
        self.down.insert(id, until);
        self.shared.event(format_args!("crash {id}"));
    }

    fn cut_off(&self, side: &BTreeSet<u64>) {
        let mut cut = locked(&self.shared.cut);
        for a in self.members.keys() {
            for b in self.members.keys() {
                if side.contains(a) != side.contains(b) {
                    cut.insert((*a, *b));
                }
            }
        }
    }

    fn heal(&mut self) {
        locked(&self.shared.cut).clear();
        self.paused.clear();
        self.shared.event(format_args!("heal"));
    }

    fn leader(&self) -> Option<u64> {
        locked(&self.shared.rafts).iter().find_map(|(id, raft)| {
            let metrics = metrics(raft);
            (metrics.state == ServerState::Leader).then_some(*id)
        })
    }

    /// One move of the nemesis.
    async fn inject(&mut self, faults: &Faults) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        // Crashed nodes come back, paused ones answer again, on time.
        for id in due(&self.down, now) {
            self.down.remove(&id);
            self.start_node(id).await?;
        }
        for id in due(&self.paused, now) {
            self.paused.remove(&id);
            locked(&self.shared.cut).retain(|(a, b)| *a != id && *b != id);
            self.shared.event(format_args!("resume {id}"));
        }
        let weights = [
            faults.crash,
            faults.power_loss,
            faults.partition,
            faults.pause,
            faults.heal,
        ];
        let total: u32 = weights.iter().sum();
        if total == 0 {
            return Ok(());
        }
        let (mut pick, down_for, ids) = {
            let mut rng = self.shared.rng();
            let pick = rng.random_range(0..total);
            let down_for = Duration::from_millis(rng.random_range(100..3000));
            let ids: Vec<u64> = self.members.keys().copied().collect();
            (pick, down_for, ids)
        };
        let mut choice = 0;
        for (index, weight) in weights.iter().enumerate() {
            if pick < *weight {
                choice = index;
                break;
            }
            pick -= weight;
        }
        match choice {
            0 => {
                let running: Vec<u64> = ids.iter().copied().filter(|id| !self.down.contains_key(id)).collect();
                if running.is_empty() {
                    return Ok(());
                }
                let id = running[self.shared.rng().random_range(0..running.len())];
                self.crash(id, now + down_for).await;
                self.faults_injected += 1;
            }
            1 => {
                for id in ids {
                    if !self.down.contains_key(&id) {
                        self.crash(id, now + down_for).await;
                    }
                }
                self.shared.event(format_args!("power loss"));
                self.faults_injected += 1;
            }
            2 => {
                let leader = self.leader();
                let side: BTreeSet<u64> = {
                    let mut rng = self.shared.rng();
                    match leader {
                        Some(leader) if rng.random_bool(0.5) => [leader].into(),
                        _ => ids.iter().copied().filter(|_| rng.random_bool(0.5)).collect(),
                    }
                };
                self.cut_off(&side);
                self.shared.event(format_args!("partition {side:?}"));
                self.faults_injected += 1;
            }
            3 => {
                let id = ids[self.shared.rng().random_range(0..ids.len())];
                self.cut_off(&[id].into());
                self.paused.insert(id, now + down_for);
                self.shared.event(format_args!("pause {id}"));
                self.faults_injected += 1;
            }
            _ => self.heal(),
        }
        Ok(())
    }

    /// Checks what must hold at every step: one leader per term, and on
    /// each node purged ≤ snapshot ≤ applied ≤ committed.
    fn check(&mut self) {
        let rafts: Vec<(u64, Raft)> = locked(&self.shared.rafts)
            .iter()
            .map(|(id, raft)| (*id, raft.clone()))
            .collect();
        for (id, raft) in rafts {
            let metrics = metrics(&raft);
            if metrics.state == ServerState::Leader {
                let term = metrics.current_term;
                match self.leaders.get(&term) {
                    Some(other) if *other != id => self
                        .violations
                        .push(format!("two leaders in term {term}: nodes {other} and {id}")),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, id);
                        self.shared.event(format_args!("leader {id} term {term}"));
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

/// The nodes whose time in `waiting` is up.
fn due(waiting: &BTreeMap<u64, tokio::time::Instant>, now: tokio::time::Instant) -> Vec<u64> {
    waiting
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(id, _)| *id)
        .collect()
}

fn metrics(raft: &Raft) -> RaftMetrics {
    openraft::async_runtime::watch::WatchReceiver::borrow_watched(&raft.metrics()).clone()
}

fn member(id: u64) -> MemberNode {
    MemberNode {
        cluster_addr: format!("sim-{id}"),
        http_addr: format!("sim-{id}"),
        p2p_peer_id: None,
        cert_fingerprint: String::new(),
    }
}

async fn simulate(options: Options) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let nodes: u64 = if rng.random_bool(0.5) { 3 } else { 5 };
    let faults = Faults::pick(&mut rng);
    let shared = Arc::new(Shared {
        bug: options.bug,
        rng: Mutex::new(StdRng::seed_from_u64(rng.random())),
        faults: Mutex::new(faults),
        rafts: Mutex::new(BTreeMap::new()),
        cut: Mutex::new(BTreeSet::new()),
        trace: Mutex::new(Trace {
            hasher: blake3::Hasher::new(),
            lines: options.trace.then(Vec::new),
        }),
        started: tokio::time::Instant::now(),
    });
    shared.event(format_args!(
        "seed {} nodes {nodes} {}",
        options.seed,
        faults.describe()
    ));
    let members: BTreeMap<u64, MemberNode> = (1..=nodes).map(|id| (id, member(id))).collect();
    let mut cluster = Cluster {
        shared: shared.clone(),
        disks: BTreeMap::new(),
        members: members.clone(),
        down: BTreeMap::new(),
        paused: BTreeMap::new(),
        leaders: BTreeMap::new(),
        violations: Vec::new(),
        faults_injected: 0,
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
    shared.event(format_args!("formed"));

    let history = Arc::new(Mutex::new(Vec::new()));
    let next_add = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (shared, history, next_add, stop) = (shared.clone(), history.clone(), next_add.clone(), stop.clone());
        let disks = cluster.disks.clone();
        clients.push(Runtime::spawn(async move {
            client_loop(client, &shared, &disks, &history, &next_add, &stop).await;
        }));
    }

    // Faults, checked every step.
    let fault_end = tokio::time::Instant::now() + FAULT_PHASE;
    let mut next_fault = tokio::time::Instant::now();
    while tokio::time::Instant::now() < fault_end {
        tokio::time::sleep(CHECK_EVERY).await;
        cluster.check();
        if tokio::time::Instant::now() >= next_fault {
            cluster.inject(&faults).await?;
            next_fault = tokio::time::Instant::now() + Duration::from_millis(shared.rng().random_range(100..1500));
        }
    }

    // Recovery: no more faults; everyone back.
    *locked(&shared.faults) = faults.none();
    cluster.heal();
    let down: Vec<u64> = cluster.down.keys().copied().collect();
    for id in down {
        cluster.down.remove(&id);
        cluster.start_node(id).await?;
    }
    shared.event(format_args!("recovery"));
    let recovery_end = tokio::time::Instant::now() + RECOVERY_LIMIT;
    let mut converged = false;
    while tokio::time::Instant::now() < recovery_end {
        tokio::time::sleep(CHECK_EVERY * 10).await;
        cluster.check();
        if tokio::time::Instant::now() + RECOVERY_LIMIT < recovery_end + CLIENTS_INTO_RECOVERY {
            // Clients keep working for the first part of recovery.
            continue;
        }
        stop.store(true, Ordering::Release);
        if converged_now(&cluster) {
            converged = true;
            break;
        }
    }
    stop.store(true, Ordering::Release);
    for client in clients {
        let _ = client.await;
    }
    // One more write through the leader makes every earlier entry
    // committed and applied on all nodes once they converge.
    if converged {
        converged = settle(&cluster).await;
    }
    if !converged {
        cluster.violations.push(format!(
            "the cluster did not converge within {RECOVERY_LIMIT:?} after the faults"
        ));
    }

    let finals: Vec<IdSet> = cluster.disks.values().map(|disk| names(&Disk::tables(disk))).collect();
    let history = std::mem::take(&mut *locked(&history));
    let mut violations = cluster.violations.clone();
    violations.extend(history::check(&history, &finals).iter().map(ToString::to_string));
    violations.extend(log_matching(&cluster));
    // Not under the lock: messages in flight look nodes up while these
    // shut down.
    let running: Vec<Raft> = std::mem::take(&mut *locked(&shared.rafts)).into_values().collect();
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
        nodes: nodes as usize,
        operations: history.len(),
        faults: cluster.faults_injected,
        mix: faults.describe(),
    })
}

/// Every node applied the same last entry, and there is a leader.
fn converged_now(cluster: &Cluster) -> bool {
    let rafts = locked(&cluster.shared.rafts);
    if rafts.len() != cluster.members.len() {
        return false;
    }
    let all: Vec<RaftMetrics> = rafts.values().map(metrics).collect();
    let leader = all.iter().find(|metrics| metrics.state == ServerState::Leader);
    let Some(leader) = leader else { return false };
    all.iter()
        .all(|metrics| metrics.last_applied == leader.local_committed && metrics.last_applied.is_some())
}

/// Writes one blank entry through the leader and waits until every node
/// applied it.
async fn settle(cluster: &Cluster) -> bool {
    let Some(leader) = cluster.leader().and_then(|id| cluster.shared.raft(id)) else {
        return false;
    };
    let Ok(Ok(written)) = tokio::time::timeout(Duration::from_secs(5), leader.write_blank()).await else {
        return false;
    };
    let target = written.log_id.index;
    for _ in 0..100 {
        let done = locked(&cluster.shared.rafts).values().all(|raft| {
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

/// Nodes agree on every entry their synced logs share (log matching).
fn log_matching(cluster: &Cluster) -> Vec<String> {
    let logs: Vec<(u64, BTreeMap<u64, LogId>)> = cluster
        .disks
        .iter()
        .map(|(id, disk)| (*id, Disk::synced_log(disk)))
        .collect();
    let mut violations = Vec::new();
    for (position, (a, log_a)) in logs.iter().enumerate() {
        for (b, log_b) in &logs[position + 1..] {
            // Entries at or below both nodes' common committed point must
            // be the same; a follower may hold an uncommitted tail.
            let common = log_a
                .iter()
                .filter_map(|(index, id)| log_b.get(index).map(|other| (index, id, other)))
                .filter(|(_, id, other)| id != other)
                .map(|(index, ..)| *index)
                .min();
            if let Some(index) = common {
                // Differing entries are allowed only as an unsynced,
                // uncommitted tail: nothing after them may agree.
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

/// The add ids among the users in `tables` (users named `u{id}`).
fn names(tables: &omega_consensus::state_machine::tables::MemTables) -> IdSet {
    let mut set = IdSet::default();
    for user in read::users(tables).unwrap_or_default() {
        if let Some(id) = user.name.strip_prefix('u').and_then(|id| id.parse().ok()) {
            set.insert(id);
        }
    }
    set
}

async fn client_loop(
    client: usize,
    shared: &Arc<Shared>,
    disks: &BTreeMap<u64, SharedDisk>,
    history: &Mutex<Vec<Op>>,
    next_add: &AtomicU64,
    stop: &AtomicBool,
) {
    let ids: Vec<u64> = disks.keys().copied().collect();
    while !stop.load(Ordering::Acquire) {
        let (think, add, node) = {
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
            let outcome = add_user(shared, ids.len() as u64, node, id).await;
            let complete = shared.now_ns();
            shared.event(format_args!("client {client} add {id} {outcome:?}"));
            locked(history).push(Op::Add {
                id,
                invoke,
                complete,
                outcome,
            });
        } else if let Some(names) = read_users(shared, disks, node).await {
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

/// Adds user `u{id}` through whichever node leads; `Done` once the
/// cluster answered (a refusal as taken means an earlier try applied).
async fn add_user(shared: &Shared, nodes: u64, first: u64, id: u64) -> AddOutcome {
    let command = Command::CreateUser {
        name: format!("u{id}"),
        password_hash: String::new(),
        roles: BTreeSet::new(),
        library_access: LibraryAccess::All,
        now_ms: 0,
    };
    let deadline = tokio::time::Instant::now() + CLIENT_TIMEOUT;
    let mut node = first;
    while tokio::time::Instant::now() < deadline {
        let Some(raft) = shared.raft(node) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            node = node % nodes + 1;
            continue;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, raft.client_write(command.clone())).await {
            Ok(Ok(written)) => {
                return match written.data {
                    Response::Created(_) | Response::Rejected(_) => AddOutcome::Done,
                    _ => AddOutcome::Unknown,
                };
            }
            Ok(Err(error)) => {
                if let Some(forward) = error.forward_to_leader() {
                    match forward.leader_id {
                        Some(leader) => node = leader,
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                } else {
                    // Proposed somewhere, then lost: it may yet apply.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(_) => return AddOutcome::Unknown,
        }
    }
    // An attempt may have reached a leader: the add may have applied.
    AddOutcome::Unknown
}

/// A linearizable read of the users on `node` (it must lead).
async fn read_users(shared: &Shared, disks: &BTreeMap<u64, SharedDisk>, node: u64) -> Option<IdSet> {
    let raft = shared.raft(node)?;
    let read = tokio::time::timeout(CLIENT_TIMEOUT, raft.ensure_linearizable(ReadPolicy::ReadIndex)).await;
    match read {
        Ok(Ok(_)) => disks.get(&node).map(|disk| names(&Disk::tables(disk))),
        _ => None,
    }
}
