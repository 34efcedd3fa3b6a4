//! Chaos testing on real processes: N `omega serve` processes on loopback,
//! clients adding users and reading them back through the HTTP API while
//! nodes are killed and restarted or paused and resumed, then every client
//! history checked against a model ([`history`]) and the healed cluster
//! checked for convergence.
//!
//! - [`cluster`]: the processes and the faults done to them.
//! - [`http`]: a blocking client whose every request has a deadline.
//! - [`history`]: operations, and the linearizability check for the
//!   workload's grow-only set of unique user names.
//! - [`store`]: ingests under faults, read back and scrubbed after.
//!
//! Network partitions, loss and delay (network namespaces, `tc netem`) and
//! disk faults are not built yet: [`Fault::parse`] refuses them by name.

pub mod cluster;
pub mod history;
pub mod http;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::cluster::{ADMIN, Node};
use crate::history::{AddOutcome, IdSet, Op, Violation, check};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same data directory.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
}

impl Fault {
    /// A fault by name (`kill`, `pause`).
    pub fn parse(name: &str) -> Result<Fault, ChaosError> {
        match name {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            "partition" | "loss" | "delay" | "disk" | "corrupt" => Err(ChaosError::Config(format!(
                "fault {name:?} is not built yet: use kill and pause"
            ))),
            other => Err(ChaosError::Config(format!("unknown fault {other:?}: use kill, pause"))),
        }
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
    /// Answers to adds by HTTP status (0: no answer).
    pub add_statuses: std::collections::BTreeMap<u16, usize>,
    /// What broke the model.
    pub violations: Vec<Violation>,
    /// Ingests acknowledged (and read back after healing).
    pub ingests: usize,
    /// What the store checks found.
    pub store_violations: Vec<store::StoreViolation>,
}

impl Report {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.store_violations.is_empty()
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
        "[transcode]\nenabled = false\n[library]\nwatch = false\n[cluster]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n",
    )?;
    let mut nodes = Vec::new();
    for index in 0..config.nodes {
        nodes.push(Node::new(&root, &format!("node-{index}"), &config.env)?);
    }
    nodes[0].start(&config.omega, &settings, None, true)?;
    nodes[0].wait_ready(READY_WITHIN)?;
    let first = nodes[0].raft_addr();
    for index in 1..config.nodes {
        let token = nodes[0].token(&config.omega)?;
        nodes[index].start(&config.omega, &settings, Some((&first, &token)), false)?;
    }
    for node in &nodes {
        node.wait_ready(READY_WITHIN)?;
    }
    let ports: Arc<Vec<u16>> = Arc::new(nodes.iter().map(|node| node.http_port).collect());
    let token = login(&ports)?;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..config.clients {
        let (ports, stop, sequence, token) = (ports.clone(), stop.clone(), sequence.clone(), token.clone());
        let seed = config.seed.wrapping_add(1 + client as u64);
        clients.push(std::thread::spawn(move || {
            workload(client, seed, &ports, &token, &stop, &sequence, started)
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
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut faults = 0;
    while started.elapsed() < config.duration {
        std::thread::sleep(Duration::from_millis(rng.random_range(500..2000)));
        let victim = rng.random_range(0..nodes.len());
        let fault = config.faults[rng.random_range(0..config.faults.len())];
        let down_for = Duration::from_millis(rng.random_range(300..2500));
        // No ingest may run while a killed node is down, until it is ready
        // again (see NodeLocks).
        let _down = (fault == Fault::Kill).then(|| locks[victim].write().unwrap_or_else(|poison| poison.into_inner()));
        match fault {
            Fault::Kill => {
                nodes[victim].kill();
                std::thread::sleep(down_for);
                nodes[victim].start(&config.omega, &settings, None, false)?;
            }
            Fault::Pause => {
                nodes[victim].pause();
                std::thread::sleep(down_for);
                nodes[victim].resume();
            }
        }
        faults += 1;
        // One fault at a time: wait for the victim before the next.
        nodes[victim].wait_ready(READY_WITHIN)?;
    }
    stop.store(true, Ordering::Relaxed);
    let ingested = ingester.join().unwrap_or_default();
    let mut history = Vec::new();
    let mut add_statuses = std::collections::BTreeMap::new();
    for client in clients {
        let (ops, statuses) = client.join().unwrap_or_default();
        history.extend(ops);
        for (status, count) in statuses {
            *add_statuses.entry(status).or_insert(0) += count;
        }
    }
    // Heal: every node up and ready, then each lists the users.
    for node in &mut nodes {
        if node.is_paused() {
            node.resume();
        }
        if !node.is_up() {
            node.start(&config.omega, &settings, None, false)?;
        }
    }
    for node in &nodes {
        node.wait_ready(READY_WITHIN)?;
    }
    let mut finals = Vec::new();
    for node in &nodes {
        finals.push(final_read(node.http_port, &token)?);
    }
    let violations = check(&history, &finals);
    let store_violations = store::verify(&config.omega, &dirs, &ingested);
    let adds_done = history
        .iter()
        .filter(|op| {
            matches!(
                op,
                Op::Add {
                    outcome: AddOutcome::Done,
                    ..
                }
            )
        })
        .count();
    let adds_unknown = history
        .iter()
        .filter(|op| {
            matches!(
                op,
                Op::Add {
                    outcome: AddOutcome::Unknown,
                    ..
                }
            )
        })
        .count();
    let reads = history.iter().filter(|op| matches!(op, Op::Read { .. })).count();
    Ok(Report {
        adds_done,
        adds_unknown,
        reads,
        faults,
        add_statuses,
        violations,
        ingests: ingested.len(),
        store_violations,
    })
}

/// An access token for the administrator, from any node (15 minutes: long
/// enough for a run; a longer one logs in again on a 401).
fn login(ports: &[u16]) -> Result<String, ChaosError> {
    let body = json!({"username": ADMIN.0, "password": ADMIN.1}).to_string();
    for port in ports {
        if let Some(answer) = http::request(*port, "POST", "/api/v1/auth/login", None, Some(&body), REQUEST_DEADLINE)
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

fn final_read(port: u16, token: &str) -> Result<IdSet, ChaosError> {
    let started = Instant::now();
    loop {
        if let Some(answer) = http::request(port, "GET", "/api/v1/users", Some(token), None, REQUEST_DEADLINE)
            && answer.status == 200
            && let Some(names) = names(&answer.body)
        {
            return Ok(names);
        }
        if started.elapsed() > READY_WITHIN {
            return Err(ChaosError::Command(format!(
                "node on port {port} never answered the final read"
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
    ports: &[u16],
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
        let node = rng.random_range(0..ports.len());
        let port = ports[node];
        if rng.random_bool(0.5) {
            let id = sequence.fetch_add(1, Ordering::Relaxed);
            let name = format!("{USER_PREFIX}{client}-{id}");
            let body = json!({"name": name, "password": "chaos-password-1"}).to_string();
            let invoke = now();
            let answer = http::request(
                port,
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
            let answer = http::request(port, "GET", "/api/v1/users", Some(token), None, REQUEST_DEADLINE);
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
