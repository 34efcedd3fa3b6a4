//! Chaos testing on real processes: N `omega serve` processes, clients
//! adding users and reading them back through the HTTP API and ingesting
//! blobs while [`Fault`]s are injected one at a time (kill, pause,
//! partition, loss, delay, full disk, flipped bytes), then every client
//! history checked against a model ([`history`]) and the healed cluster
//! checked for convergence and for its stored data.
//!
//! - [`cluster`]: the processes, and the faults done to them.
//! - [`net`]: loopback, or a network namespace per node where partitions,
//!   loss and delay are made.
//! - [`disk`]: a tmpfs per node to fill, and pack files to corrupt.
//! - [`http`]: a blocking client whose every request has a deadline.
//! - [`history`]: operations, and the linearizability check for the
//!   workload's grow-only set of unique user names.
//! - [`store`]: ingests under faults, read back and scrubbed after.

pub mod cli;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod http;
pub mod library;
pub mod net;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::cluster::{ADMIN, Node};
use crate::history::{AddOutcome, IdSet, Op, Violation, check};
use crate::net::Network;

/// Why a run could not be carried out (not a violation: those are in the
/// report).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// File system or socket trouble in the harness.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The omega binary would not start.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// A node never became ready.
    #[error("node {node} did not become ready; its log ends:\n{log}")]
    NotReady {
        /// Its data directory.
        node: String,
        /// The end of its log.
        log: String,
    },
    /// An omega command failed.
    #[error("omega failed: {0}")]
    Command(String),
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
}

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL, then a restart on the same data directory.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The network cut in two (often around the leader) or bridged, then
    /// healed (namespaces: root).
    Partition,
    /// A share of the packets between nodes dropped (namespaces: root).
    Loss,
    /// Packets between nodes delayed (namespaces and the netem qdisc).
    Delay,
    /// A node's disk full, then freed (a tmpfs per node: root).
    Disk,
    /// A byte flipped in one of a node's pack files.
    Corrupt,
    /// The founder's library folder gone (as an unmounted NAS), scanned,
    /// then back and scanned again.
    Offline,
}

impl Fault {
    /// Every fault, in the order of their names.
    pub const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Loss,
        Fault::Delay,
        Fault::Disk,
        Fault::Corrupt,
        Fault::Offline,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Loss => "loss",
            Fault::Delay => "delay",
            Fault::Disk => "disk",
            Fault::Corrupt => "corrupt",
            Fault::Offline => "offline",
        }
    }

    /// A fault by name.
    pub fn parse(name: &str) -> Result<Fault, ChaosError> {
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|fault| fault.name()).collect();
                ChaosError::Config(format!("unknown fault {name:?}: use {} or all", names.join(", ")))
            })
    }

    /// True for faults done to the network between nodes.
    pub fn is_network(self) -> bool {
        matches!(self, Fault::Partition | Fault::Loss | Fault::Delay)
    }

    /// The faults this machine can inject: kill, pause, corrupt and
    /// offline anywhere; partition, loss and disk as root with iproute2 and
    /// nftables; delay where the kernel also has netem.
    pub fn available() -> Vec<Fault> {
        let mut faults = vec![Fault::Kill, Fault::Pause, Fault::Corrupt, Fault::Offline];
        if net::Network::namespaces_possible() {
            faults.extend([Fault::Partition, Fault::Loss, Fault::Disk]);
            if net::Network::namespaces(1).is_ok_and(|network| network.can_delay()) {
                faults.push(Fault::Delay);
            }
        }
        faults.sort();
        faults
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `omega` binary.
    pub omega: PathBuf,
    /// Nodes (at least 3: one may be faulted while a majority serves).
    pub nodes: usize,
    /// How long faults are injected.
    pub duration: Duration,
    /// The faults to choose from.
    pub faults: Vec<Fault>,
    /// Seeds the fault schedule and the clients' choices.
    pub seed: u64,
    /// Client threads.
    pub clients: usize,
    /// Extra environment for the omega processes (a planted bug).
    pub env: Vec<(String, String)>,
    /// Keep the nodes' data directories and logs here (else a temporary
    /// folder, removed at the end).
    pub keep: Option<PathBuf>,
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Adds acknowledged.
    pub adds_done: usize,
    /// Adds without a known outcome.
    pub adds_unknown: usize,
    /// Reads answered.
    pub reads: usize,
    /// Faults injected.
    pub faults: usize,
    /// Faults injected, by name.
    pub faults_by_kind: std::collections::BTreeMap<&'static str, usize>,
    /// Nodes restarted because a full disk had stopped them.
    pub disk_restarts: usize,
    /// Reads of blobs on corrupted nodes refused because a chunk failed
    /// its hash (a detection, not a violation).
    pub corrupt_reads_refused: usize,
    /// Corrupt chunks that scrub found on corrupted nodes.
    pub corrupt_chunks_found: usize,
    /// Answers to adds by HTTP status (0: no answer).
    pub add_statuses: std::collections::BTreeMap<u16, usize>,
    /// What broke the model.
    pub violations: Vec<Violation>,
    /// Ingests acknowledged (and read back after healing).
    pub ingests: usize,
    /// Ingests that failed (a node down or its disk full): not checked.
    pub ingests_refused: usize,
    /// What the store checks found.
    pub store_violations: Vec<store::StoreViolation>,
    /// What the library check found: films whose id changed or that
    /// vanished, watch state lost (after kills and offline folders).
    pub library_violations: Vec<String>,
}

impl Report {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.store_violations.is_empty() && self.library_violations.is_empty()
    }
}

/// The names of the workload's users begin with this.
const USER_PREFIX: &str = "chaos-user-";

/// Deadline of each client request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a node may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Runs the workload and the faults; the report says what was found.
pub fn run(config: &Config) -> Result<Report, ChaosError> {
    if config.nodes < 3 {
        return Err(ChaosError::Config("chaos needs at least 3 nodes".into()));
    }
    if config.faults.is_empty() {
        return Err(ChaosError::Config("no faults chosen".into()));
    }
    // Declared first so that it is dropped last: the nodes stop and their
    // disks unmount before their namespaces go.
    let network = if config.faults.iter().any(|fault| fault.is_network()) {
        Network::namespaces(config.nodes)?
    } else {
        Network::loopback()
    };
    if config.faults.contains(&Fault::Delay) && !network.can_delay() {
        return Err(ChaosError::Config(
            "fault \"delay\" needs the kernel's netem qdisc (sch_netem), which this machine lacks".into(),
        ));
    }
    let tmpfs = config.faults.contains(&Fault::Disk);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if tmpfs && unsafe { libc::geteuid() } != 0 {
        return Err(ChaosError::Config(
            "fault \"disk\" needs root: each node's data lives on a small tmpfs".into(),
        ));
    }
    let temporary = tempfile::tempdir()?;
    let root = match &config.keep {
        Some(folder) => {
            std::fs::create_dir_all(folder)?;
            folder.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let settings = root.join("omega.toml");
    // No transcoding (no ffmpeg needed) and short Raft timeouts.
    std::fs::write(
        &settings,
        "[transcode]\nenabled = false\n[library]\nwatch = false\nprobe = false\n[cluster]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n",
    )?;
    let mut nodes = Vec::new();
    for index in 0..config.nodes {
        nodes.push(Node::new(&root, index, &config.env, &network, tmpfs)?);
    }
    // The founder serves a library of its own disk's folder.
    let media = library::create_media(&root)?;
    nodes[0].media = Some(format!("{}:movies", media.display()));
    nodes[0].start(&network, &config.omega, &settings, None, true)?;
    nodes[0].wait_ready(READY_WITHIN)?;
    let first = nodes[0].raft_addr.to_string();
    for index in 1..config.nodes {
        let token = nodes[0].token(&config.omega)?;
        nodes[index].start(&network, &config.omega, &settings, Some((&first, &token)), false)?;
    }
    for node in &nodes {
        node.wait_ready(READY_WITHIN)?;
    }
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(nodes.iter().map(|node| node.http_addr).collect());
    let token = login(&addrs)?;
    let ids = node_ids(&addrs, &token);
    let library = library::Library::prepare(addrs[0], &token, media)?;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..config.clients {
        let (addrs, stop, sequence, token) = (addrs.clone(), stop.clone(), sequence.clone(), token.clone());
        let seed = config.seed.wrapping_add(1 + client as u64);
        clients.push(std::thread::spawn(move || {
            workload(client, seed, &addrs, &token, &stop, &sequence, started)
        }));
    }
    let locks: store::NodeLocks = Arc::new(nodes.iter().map(|_| std::sync::RwLock::new(())).collect());
    let dirs: Vec<PathBuf> = nodes.iter().map(|node| node.dir.clone()).collect();
    let scratch = root.join("ingests");
    std::fs::create_dir_all(&scratch)?;
    let ingester = {
        let (omega, dirs, scratch, locks, stop) = (
            config.omega.clone(),
            dirs.clone(),
            scratch.clone(),
            locks.clone(),
            stop.clone(),
        );
        let seed = config.seed.wrapping_add(1000);
        std::thread::spawn(move || store::ingest_workload(seed, &omega, &dirs, &scratch, &locks, &stop))
    };
    let mut faulter = Faulter {
        config,
        network: &network,
        settings: &settings,
        nodes: &mut nodes,
        locks: &locks,
        addrs: &addrs,
        token: &token,
        ids: &ids,
        library: &library,
        tally: Tally {
            corrupted: vec![false; config.nodes],
            ..Tally::default()
        },
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    while started.elapsed() < config.duration {
        std::thread::sleep(Duration::from_millis(rng.random_range(500..2000)));
        let fault = config.faults[rng.random_range(0..config.faults.len())];
        faulter.inject(fault, &mut rng)?;
    }
    stop.store(true, Ordering::Relaxed);
    let (ingested, ingests_refused) = ingester.join().unwrap_or_default();
    let mut history = Vec::new();
    let mut add_statuses = std::collections::BTreeMap::new();
    for client in clients {
        let (ops, statuses) = client.join().unwrap_or_default();
        history.extend(ops);
        for (status, count) in statuses {
            *add_statuses.entry(status).or_insert(0) += count;
        }
    }
    faulter.heal_all()?;
    let tally = faulter.tally;
    let mut finals = Vec::new();
    for node in &nodes {
        finals.push(final_read(node.http_addr, &token)?);
    }
    let violations = check(&history, &finals);
    let library_violations = library.verify(nodes[0].http_addr, &token);
    let store_check = store::verify(&config.omega, &dirs, &ingested, &tally.corrupted);
    let count = |wanted: AddOutcome| {
        history
            .iter()
            .filter(|op| matches!(op, Op::Add { outcome, .. } if *outcome == wanted))
            .count()
    };
    Ok(Report {
        adds_done: count(AddOutcome::Done),
        adds_unknown: count(AddOutcome::Unknown),
        reads: history.iter().filter(|op| matches!(op, Op::Read { .. })).count(),
        faults: tally.by_kind.values().sum(),
        faults_by_kind: tally.by_kind,
        disk_restarts: tally.disk_restarts,
        add_statuses,
        violations,
        ingests: ingested.len(),
        ingests_refused,
        corrupt_reads_refused: store_check.reads_refused,
        corrupt_chunks_found: store_check.chunks_found,
        store_violations: store_check.violations,
        library_violations,
    })
}

/// What the faults did so far.
#[derive(Debug, Default)]
struct Tally {
    by_kind: std::collections::BTreeMap<&'static str, usize>,
    /// Nodes restarted because a full disk had stopped them.
    disk_restarts: usize,
    /// Per node: whether a byte of its packs was flipped.
    corrupted: Vec<bool>,
}

/// Injects faults one at a time and waits for the cluster to recover
/// from each before the next.
struct Faulter<'a> {
    config: &'a Config,
    network: &'a Network,
    settings: &'a Path,
    nodes: &'a mut Vec<Node>,
    locks: &'a store::NodeLocks,
    addrs: &'a [SocketAddr],
    token: &'a str,
    /// Raft node id of each node.
    ids: &'a [Option<u64>],
    /// The founder's library.
    library: &'a library::Library,
    tally: Tally,
}

/// How long a node whose full disk was freed may take to serve again
/// before it is restarted.
const DISK_RECOVERY: Duration = Duration::from_secs(15);

impl Faulter<'_> {
    fn inject(&mut self, fault: Fault, rng: &mut StdRng) -> Result<(), ChaosError> {
        let victim = rng.random_range(0..self.nodes.len());
        let down_for = Duration::from_millis(rng.random_range(300..2500));
        match fault {
            Fault::Kill => {
                // No ingest may run while a killed node is down, until it
                // is ready again (see NodeLocks).
                let _down = self.locks[victim].write().unwrap_or_else(|poison| poison.into_inner());
                self.nodes[victim].kill();
                std::thread::sleep(down_for);
                self.start(victim)?;
                self.nodes[victim].wait_ready(READY_WITHIN)?;
            }
            Fault::Pause => {
                self.nodes[victim].pause();
                std::thread::sleep(down_for);
                self.nodes[victim].resume();
            }
            Fault::Partition => {
                let sides = partition_sides(rng, self.nodes.len(), self.leader());
                self.network.partition(&sides)?;
                std::thread::sleep(down_for);
                self.network.heal()?;
            }
            Fault::Loss => {
                self.network.lose(rng.random_range(5..=40))?;
                std::thread::sleep(down_for);
                self.network.heal()?;
            }
            Fault::Delay => {
                let millis = rng.random_range(10..200);
                self.network.delay(millis, millis / 2)?;
                std::thread::sleep(down_for);
                self.network.heal()?;
            }
            Fault::Disk => {
                disk::fill(&self.nodes[victim].dir)?;
                std::thread::sleep(down_for);
                disk::unfill(&self.nodes[victim].dir)?;
                self.recover_from_disk(victim)?;
            }
            Fault::Corrupt => {
                if disk::corrupt_pack(&self.nodes[victim].dir, rng)?.is_some() {
                    self.tally.corrupted[victim] = true;
                }
            }
            Fault::Offline => {
                // The library is on the founder's disk: only it scans it.
                self.library.go_offline_and_back(self.addrs[0], self.token, down_for)?;
            }
        }
        *self.tally.by_kind.entry(fault.name()).or_insert(0) += 1;
        // One fault at a time: every node serves again before the next.
        for node in self.nodes.iter() {
            node.wait_ready(READY_WITHIN)?;
        }
        Ok(())
    }

    fn start(&mut self, index: usize) -> Result<(), ChaosError> {
        let (network, omega, settings) = (self.network, &self.config.omega, self.settings);
        self.nodes[index].start(network, omega, settings, None, false)
    }

    /// A node whose storage failed on a full disk may have stopped (Raft
    /// stops on a storage error and the process exits) or be stuck: it
    /// gets [`DISK_RECOVERY`] to serve again, else it is restarted, as a
    /// supervisor would.
    fn recover_from_disk(&mut self, index: usize) -> Result<(), ChaosError> {
        if self.nodes[index].is_up() && self.nodes[index].wait_ready(DISK_RECOVERY).is_ok() {
            return Ok(());
        }
        let _down = self.locks[index].write().unwrap_or_else(|poison| poison.into_inner());
        self.nodes[index].kill();
        self.start(index)?;
        self.tally.disk_restarts += 1;
        self.nodes[index].wait_ready(READY_WITHIN)
    }

    /// After the faults: the network healed, every disk freed, every node
    /// running and ready.
    fn heal_all(&mut self) -> Result<(), ChaosError> {
        self.network.heal()?;
        for index in 0..self.nodes.len() {
            disk::unfill(&self.nodes[index].dir)?;
            if self.nodes[index].is_paused() {
                self.nodes[index].resume();
            }
            if !self.nodes[index].is_up() {
                let _down = self.locks[index].write().unwrap_or_else(|poison| poison.into_inner());
                self.start(index)?;
            }
        }
        for node in self.nodes.iter() {
            node.wait_ready(READY_WITHIN)?;
        }
        Ok(())
    }

    /// The node the cluster's leader runs on, as any node answering knows it.
    fn leader(&self) -> Option<usize> {
        self.addrs.iter().find_map(|addr| {
            let answer = http::request(
                *addr,
                "GET",
                "/api/v1/cluster",
                Some(self.token),
                None,
                Duration::from_secs(1),
            )?;
            let value: Value = serde_json::from_slice(&answer.body).ok()?;
            let leader = value["leader"].as_u64()?;
            self.ids.iter().position(|id| *id == Some(leader))
        })
    }
}

/// How a partition splits `nodes`: the leader (when known) or a random
/// minority cut off from the rest, or two groups that cannot reach each
/// other but both reach one node in the middle (a bridge).
fn partition_sides(rng: &mut StdRng, nodes: usize, leader: Option<usize>) -> Vec<Vec<usize>> {
    debug_assert!(nodes >= 3);
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(rng);
    match (rng.random_range(0..3), leader) {
        (0, Some(leader)) => {
            let rest = (0..nodes).filter(|node| *node != leader).collect();
            vec![vec![leader], rest]
        }
        (0 | 1, _) => {
            let minority = rng.random_range(1..=(nodes - 1) / 2);
            let rest = order.split_off(minority);
            vec![order, rest]
        }
        _ => {
            // order[0] is the bridge, on no side.
            let half = 1 + (nodes - 1) / 2;
            vec![order[1..half].to_vec(), order[half..].to_vec()]
        }
    }
}

/// Each node's Raft id (`GET /api/v1/cluster`), `None` where it did not say.
fn node_ids(addrs: &[SocketAddr], token: &str) -> Vec<Option<u64>> {
    addrs
        .iter()
        .map(|addr| {
            let answer = http::request(*addr, "GET", "/api/v1/cluster", Some(token), None, REQUEST_DEADLINE)?;
            serde_json::from_slice::<Value>(&answer.body).ok()?["node_id"].as_u64()
        })
        .collect()
}

/// An access token for the administrator, from any node (15 minutes: long
/// enough for a run; a longer one logs in again on a 401).
fn login(addrs: &[SocketAddr]) -> Result<String, ChaosError> {
    let body = json!({"username": ADMIN.0, "password": ADMIN.1}).to_string();
    for addr in addrs {
        if let Some(answer) = http::request(*addr, "POST", "/api/v1/auth/login", None, Some(&body), REQUEST_DEADLINE)
            && answer.status == 200
            && let Ok(value) = serde_json::from_slice::<Value>(&answer.body)
            && let Some(token) = value["access_token"].as_str()
        {
            return Ok(token.to_owned());
        }
    }
    Err(ChaosError::Command("the administrator cannot sign in".into()))
}

/// The numbers of the workload's users in a `GET /api/v1/users` answer
/// (`chaos-user-{client}-{number}`).
fn names(body: &[u8]) -> Option<IdSet> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(
        value
            .as_array()?
            .iter()
            .filter_map(|user| {
                user["name"]
                    .as_str()?
                    .strip_prefix(USER_PREFIX)?
                    .rsplit('-')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

fn final_read(addr: SocketAddr, token: &str) -> Result<IdSet, ChaosError> {
    let started = Instant::now();
    loop {
        if let Some(answer) = http::request(addr, "GET", "/api/v1/users", Some(token), None, REQUEST_DEADLINE)
            && answer.status == 200
            && let Some(names) = names(&answer.body)
        {
            return Ok(names);
        }
        if started.elapsed() > READY_WITHIN {
            return Err(ChaosError::Command(format!(
                "node at {addr} never answered the final read"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One client: adds (each a new name) and reads, on random nodes, until
/// told to stop; returns its history.
fn workload(
    client: usize,
    seed: u64,
    addrs: &[SocketAddr],
    token: &str,
    stop: &AtomicBool,
    sequence: &AtomicU64,
    started: Instant,
) -> (Vec<Op>, std::collections::BTreeMap<u16, usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    let now = || started.elapsed().as_nanos();
    while !stop.load(Ordering::Relaxed) {
        let node = rng.random_range(0..addrs.len());
        let addr = addrs[node];
        if rng.random_bool(0.5) {
            let id = sequence.fetch_add(1, Ordering::Relaxed);
            let name = format!("{USER_PREFIX}{client}-{id}");
            let body = json!({"name": name, "password": "chaos-password-1"}).to_string();
            let invoke = now();
            let answer = http::request(
                addr,
                "POST",
                "/api/v1/users",
                Some(token),
                Some(&body),
                REQUEST_DEADLINE,
            );
            let status = answer.map_or(0, |answer| answer.status);
            *statuses.entry(status).or_insert(0) += 1;
            let outcome = match status {
                201 | 409 => AddOutcome::Done,
                _ => AddOutcome::Unknown,
            };
            history.push(Op::Add {
                id,
                invoke,
                complete: now(),
                outcome,
            });
        } else {
            let invoke = now();
            let answer = http::request(addr, "GET", "/api/v1/users", Some(token), None, REQUEST_DEADLINE);
            if let Some(names) = answer
                .filter(|answer| answer.status == 200)
                .and_then(|answer| names(&answer.body))
            {
                history.push(Op::Read {
                    node,
                    invoke,
                    complete: now(),
                    names,
                });
            }
        }
    }
    (history, statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_split_the_nodes_into_disjoint_sides_that_leave_one_majority_or_a_bridge() {
        for nodes in 3..=7 {
            for seed in 0..200 {
                let mut rng = StdRng::seed_from_u64(seed);
                let leader = (seed % 2 == 0).then_some(seed as usize % nodes);
                let sides = partition_sides(&mut rng, nodes, leader);
                assert_eq!(sides.len(), 2);
                assert!(sides.iter().all(|side| !side.is_empty()), "{sides:?}");
                let mut seen: Vec<usize> = sides.iter().flatten().copied().collect();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(
                    seen.len(),
                    sides.iter().map(Vec::len).sum::<usize>(),
                    "disjoint: {sides:?}"
                );
                let bridged = seen.len() == nodes - 1;
                assert!(bridged || seen.len() == nodes, "{sides:?}");
                if !bridged {
                    // A partition that covers everyone leaves a majority
                    // on one side, so the cluster can go on.
                    assert!(sides.iter().any(|side| 2 * side.len() > nodes), "{sides:?}");
                }
            }
        }
    }

    #[test]
    fn faults_parse_by_name_and_unknown_ones_are_refused() {
        for fault in Fault::ALL {
            assert_eq!(Fault::parse(fault.name()).ok(), Some(fault));
        }
        assert!(Fault::parse("meteor").is_err());
    }
}
