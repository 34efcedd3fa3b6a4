//! A running member of the control plane: openraft with Omega's log store,
//! state machine and network, and the operations the node needs — writes
//! forwarded to the leader, linearizable or stale reads, membership changes,
//! status — plus the handler of requests from other members.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::command::{Command, Response};
use crate::db::Db;
use crate::log_store::LogStore;
use crate::model::{MemberNode, NodeId};
use crate::network::{Network, PeerRequest, PeerResponse, Transport, TransportError};
use crate::raft_types::{
    ChangeMembers, Config, ForwardToLeader, Instant, Raft, RaftError, ReadPolicy, ServerState, Snapshot, SnapshotMeta,
    SnapshotPolicy, SnapshotResponse, TryAsRef, Vote, metrics_now,
};
use crate::state_machine::StateMachine;

/// Timing of the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Shortest election timeout; each node draws one in [min, max).
    pub election_min: Duration,
    /// Longest election timeout.
    pub election_max: Duration,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so that a briefly absent
    /// follower catches up from the log rather than by snapshot.
    pub keep_behind_snapshot: u64,
}

impl Timing {
    /// Defaults: a dead leader is replaced within about 1 s plus one vote
    /// round; the election timeout is far above a synced append (a few ms).
    pub const DEFAULT: Timing = Timing {
        heartbeat: Duration::from_millis(100),
        election_min: Duration::from_millis(400),
        election_max: Duration::from_millis(800),
        snapshot_every: 20_000,
        keep_behind_snapshot: 1_000,
    };

    /// openraft's configuration for this timing: what every node runs
    /// (and the simulator, so that it checks the same settings).
    pub fn raft_config(&self) -> Result<Config, ClusterError> {
        let config = Config {
            cluster_name: "omega".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            purge_batch_size: 256,
            // A restarted leader stands for election like any node. Left on
            // (openraft's default), a leader that lost power comes back as
            // leader of the same term with its unsynced tail gone, which its
            // followers already hold, and writes different entries under the
            // same log ids: acknowledged writes lost, nodes diverged. The
            // simulator found it (`omega-sim --seed 1` before the fix).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|error| ClusterError::Config(error.to_string()))
    }
}

/// Keeps `directory` equal to the members' addresses in the membership,
/// for as long as `raft` runs.
async fn keep_directory(raft: Raft, directory: crate::network::Directory) {
    use crate::raft_types::WatchReceiver as _;
    let mut metrics = raft.metrics();
    // The channel ends when Raft shuts down; the handle is not kept.
    drop(raft);
    let mut seen = None;
    loop {
        {
            let now = metrics.borrow_and_update();
            let membership = &now.membership_config;
            if seen != Some(*membership.log_id()) {
                seen = Some(*membership.log_id());
                let members = membership
                    .membership()
                    .nodes()
                    .map(|(id, node)| (*id, node.clone()))
                    .collect();
                *directory.write().unwrap_or_else(|poison| poison.into_inner()) = members;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the read began (read index
    /// through the leader). The default.
    Linearizable,
    /// Whatever this node has applied: fast, possibly behind. For browsing.
    Stale,
}

/// Errors of cluster operations.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No leader is known or reachable now; retry later.
    #[error("no leader is reachable: {0}")]
    NoLeader(String),
    /// The leader could not be reached or answered with an error.
    #[error("the leader failed: {0}")]
    Remote(String),
    /// openraft refused or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The timing is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(String),
}

/// Where a member stands, for `cluster status`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Voter or learner.
    pub role: &'static str,
    /// Its Raft address.
    pub cluster_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Last log index known replicated to it (leader only).
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's last log index (leader only).
    pub lag: Option<u64>,
}

/// A node's view of the group, for `cluster status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node_id: NodeId,
    /// Leader, follower, candidate or learner.
    pub state: String,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Commit index.
    pub commit_index: Option<u64>,
    /// Applied index.
    pub applied_index: Option<u64>,
    /// Index of the last snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to this index are purged from the log.
    pub purged_index: Option<u64>,
    /// Members.
    pub members: Vec<MemberStatus>,
}

/// Hops a forwarded request may take before giving up (a leader change
/// mid-forward costs one).
const FORWARD_ATTEMPTS: usize = 8;
/// Deadline of a forwarded client request.
const FORWARD_DEADLINE: Duration = Duration::from_secs(10);
/// How long one AddMember waits for its learner to catch up (within the
/// joiner's deadline of a minute). A learner that has not caught up by
/// then is not promoted: a voter the leader cannot reach (a dead joiner, a
/// wrong advertised address) would stop a small group from committing.
/// The joiner is told to ask again; the learner keeps catching up.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);
/// Marks the answer to an AddMember whose learner is still catching up:
/// the joiner asks again.
pub const CATCHING_UP: &str = "is still catching up";

/// A running member.
#[derive(Debug)]
pub struct Cluster<T: Transport> {
    id: NodeId,
    raft: Raft,
    db: Db,
    transport: Arc<T>,
    /// Held while this node, as leader, changes the membership. openraft
    /// refuses the second step of a change (joint → uniform) when another
    /// change slipped in between, so two nodes joining at once made one of
    /// them fail ("last membership log id mismatch"): changes go one at a
    /// time.
    membership_changes: tokio::sync::Mutex<()>,
}

impl<T: Transport> Cluster<T> {
    /// Opens the database under `dir` (`dir/raft`, `dir/snapshots`) and
    /// starts Raft as node `id`.
    pub async fn start(id: NodeId, dir: &Path, transport: Arc<T>, timing: Timing) -> Result<Self, ClusterError> {
        let db = Db::open(&dir.join("raft"))?;
        let log = LogStore::new(db.clone())?;
        let machine = StateMachine::open(db.clone(), &dir.join("snapshots"))?;
        let config = Arc::new(timing.raft_config()?);
        let directory = crate::network::Directory::default();
        let raft = Raft::new(
            id,
            config,
            Network::new(transport.clone(), directory.clone()),
            log,
            machine,
        )
        .await
        .map_err(|error| ClusterError::Raft(error.to_string()))?;
        tokio::spawn(keep_directory(raft.clone(), directory));
        Ok(Cluster {
            id,
            raft,
            db,
            transport,
            membership_changes: tokio::sync::Mutex::new(()),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle (for metrics and tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state machine's tables, for reads after [`Cluster::read_barrier`].
    pub fn tables(&self) -> &Db {
        &self.db
    }

    /// Makes this node a group of one, if it has never been part of a group.
    pub async fn initialize_single(&self, member: MemberNode) -> Result<(), ClusterError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?
        {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id, member)]);
        self.raft
            .initialize(members)
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))
    }

    /// The leader this node knows of, with its address.
    fn known_leader(&self) -> Option<(NodeId, MemberNode)> {
        let metrics = metrics_now(&self.raft);
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    /// True when node `id` is in the membership (voter or learner), as this
    /// node knows it; also true while this node knows no membership at all
    /// (a joiner before its first append), which has nothing to protect yet
    /// and must hear from the leader.
    pub fn has_member(&self, id: NodeId) -> bool {
        self.is_in_membership(id).unwrap_or(true)
    }

    /// True while this node leads the group.
    pub fn is_leader(&self) -> bool {
        metrics_now(&self.raft).state == ServerState::Leader
    }

    /// Whether node `id` is in the membership as this node knows it; `None`
    /// while it knows no membership at all (a joiner before its first
    /// append).
    pub fn is_in_membership(&self, id: NodeId) -> Option<bool> {
        let metrics = metrics_now(&self.raft);
        let membership = metrics.membership_config.membership();
        membership.nodes().next()?;
        Some(membership.get_node(&id).is_some())
    }

    /// One of the other members, in turn by `attempt`.
    fn other_member(&self, attempt: usize) -> Option<(NodeId, MemberNode)> {
        let metrics = metrics_now(&self.raft);
        let others: Vec<(NodeId, MemberNode)> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        if others.is_empty() {
            return None;
        }
        others.get(attempt % others.len()).cloned()
    }

    /// Member `id`'s entry as this node knows the membership.
    pub fn known_member(&self, id: NodeId) -> Option<MemberNode> {
        let metrics = metrics_now(&self.raft);
        metrics.membership_config.membership().get_node(&id).cloned()
    }

    /// Sends `request` to the leader, following redirects.
    async fn to_leader(&self, request: PeerRequest) -> Result<PeerResponse, ClusterError> {
        let mut leader = self.known_leader();
        let mut last_error = String::from("no leader known");
        for attempt in 0..FORWARD_ATTEMPTS {
            let response = match &leader {
                // A leader without a quorum never commits: its own client
                // requests wait as long as a forwarded one would, no more.
                Some((id, _)) if *id == self.id && request.is_client_request() => {
                    match tokio::time::timeout(FORWARD_DEADLINE, self.handle(request.clone())).await {
                        Ok(response) => response,
                        Err(_) => {
                            return Err(ClusterError::NoLeader(format!(
                                "this leader got no quorum for the request within {FORWARD_DEADLINE:?}"
                            )));
                        }
                    }
                }
                Some((id, _)) if *id == self.id => self.handle(request.clone()).await,
                Some((id, node)) => match self.transport.call(*id, node, request.clone(), FORWARD_DEADLINE).await {
                    Ok(response) => response,
                    Err(error) => {
                        last_error = error.to_string();
                        PeerResponse::NotLeader { leader: None }
                    }
                },
                None => PeerResponse::NotLeader { leader: None },
            };
            match response {
                PeerResponse::NotLeader { leader: Some(next) } => leader = Some(next),
                PeerResponse::NotLeader { leader: None } => {
                    // Wait for an election to settle, then ask our metrics;
                    // knowing none, ask another member, which redirects to
                    // the leader it knows (a member that came back at a new
                    // address hears from no leader until it is recorded).
                    tokio::time::sleep(Duration::from_millis((100 << attempt.min(4)).min(1000))).await;
                    leader = self.known_leader().or_else(|| self.other_member(attempt));
                }
                PeerResponse::Error(text) => return Err(ClusterError::Remote(text)),
                other => return Ok(other),
            }
        }
        Err(ClusterError::NoLeader(last_error))
    }

    /// Replicates `command` and returns the state machine's answer.
    pub async fn write(&self, command: Command) -> Result<Response, ClusterError> {
        match self.to_leader(PeerRequest::ClientWrite(command)).await? {
            PeerResponse::Written { response, log_id } => {
                // Read your writes: a write proxied to the leader is applied
                // here too before it is answered, so that the caller's next
                // read on this node sees it. It is committed either way, so
                // a slow apply is only logged.
                if let Err(error) = self
                    .raft
                    .wait(Some(FORWARD_DEADLINE))
                    .applied_index_at_least(Some(log_id.index), "read your write")
                    .await
                {
                    tracing::warn!(%error, index = log_id.index, "a committed write is not applied here yet");
                }
                Ok(response)
            }
            other => Err(ClusterError::Remote(format!("unexpected answer {other:?}"))),
        }
    }

    /// [`Cluster::status`] with every member's matched index and lag as
    /// the leader sees them, when this node is not the leader (on the
    /// leader, or when the leader does not answer within `within`, this
    /// node's own view).
    pub async fn status_with_lag(&self, within: Duration) -> ClusterStatus {
        let mut status = self.status();
        if status.state == "leader" {
            return status;
        }
        let asked = tokio::time::timeout(within, self.to_leader(PeerRequest::Replication)).await;
        let Ok(Ok(PeerResponse::Replication {
            last_log_index,
            matched,
        })) = asked
        else {
            return status;
        };
        for member in &mut status.members {
            let Some((_, index)) = matched.iter().find(|(id, _)| *id == member.id) else {
                continue;
            };
            member.matched_index = *index;
            member.lag = index.map(|index| last_log_index.unwrap_or(0).saturating_sub(index));
        }
        status
    }

    /// Waits until reads of [`Cluster::tables`] are as fresh as asked.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ClusterError> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        let PeerResponse::ReadIndex(index) = self.to_leader(PeerRequest::ReadIndex).await? else {
            return Err(ClusterError::Remote("unexpected answer to a read index".into()));
        };
        self.raft
            .wait(Some(FORWARD_DEADLINE))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?;
        Ok(())
    }

    /// When a quorum last stood behind this member, as of now, so that its
    /// writes and linearizable reads can succeed. A leader asks its
    /// metrics: when a quorum last acknowledged it, if within `within` (a
    /// group of one always has one: now). Anyone else asks the leader for
    /// a read index within `within`, which a leader can only give with a
    /// quorum behind it (a follower of a leader that lost its quorum hears
    /// heartbeats but gets no answer): the moment it asked. Readiness
    /// follows this.
    pub async fn quorum_contact(&self, within: Duration) -> Result<std::time::Instant, ClusterError> {
        let asked = std::time::Instant::now();
        let metrics = metrics_now(&self.raft);
        if metrics.state == ServerState::Leader {
            let membership = metrics.membership_config.membership();
            if membership.voter_ids().all(|id| id == self.id) {
                return Ok(asked);
            }
            let age = metrics.last_quorum_acked.as_ref().map(|acked| acked.elapsed());
            return match age {
                Some(age) if age < within => Ok(asked.checked_sub(age).unwrap_or(asked)),
                _ => Err(ClusterError::NoLeader(format!(
                    "this leader has not heard from a quorum within {within:?}"
                ))),
            };
        }
        tokio::time::timeout(within, self.read_barrier(Consistency::Linearizable))
            .await
            .map_err(|_| ClusterError::NoLeader(format!("no leader with a quorum answered within {within:?}")))??;
        Ok(asked)
    }

    /// Adds a member (learner, caught up, then voter).
    pub async fn add_member(&self, id: NodeId, member: MemberNode) -> Result<(), ClusterError> {
        match self.to_leader(PeerRequest::AddMember { id, member }).await? {
            PeerResponse::Done => Ok(()),
            other => Err(ClusterError::Remote(format!("unexpected answer {other:?}"))),
        }
    }

    /// Records member `id`'s addresses as `member` says (its recorded
    /// certificate fingerprint stays).
    pub async fn update_member(&self, id: NodeId, member: MemberNode) -> Result<(), ClusterError> {
        match self.to_leader(PeerRequest::UpdateMember { id, member }).await? {
            PeerResponse::Done => Ok(()),
            other => Err(ClusterError::Remote(format!("unexpected answer {other:?}"))),
        }
    }

    /// Removes a member from the group.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        match self.to_leader(PeerRequest::RemoveMember { id }).await? {
            PeerResponse::Done => Ok(()),
            other => Err(ClusterError::Remote(format!("unexpected answer {other:?}"))),
        }
    }

    /// Why Raft stopped, if a fatal error (a storage failure) stopped it.
    /// The process should then exit, so that its supervisor restarts it.
    pub fn fatal_error(&self) -> Option<String> {
        let metrics = metrics_now(&self.raft);
        metrics.running_state.err().map(|fatal| fatal.to_string())
    }

    /// This node's view of the group.
    pub fn status(&self) -> ClusterStatus {
        let metrics = metrics_now(&self.raft);
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(id).cloned())
                    .map(|log_id| log_id.map_or(0, |log_id| log_id.index));
                let matched = if *id == self.id && metrics.state == ServerState::Leader {
                    metrics.last_log_index
                } else {
                    matched
                };
                MemberStatus {
                    id: *id,
                    role: if voters.contains(id) { "voter" } else { "learner" },
                    cluster_addr: node.cluster_addr.clone(),
                    http_addr: node.http_addr.clone(),
                    matched_index: matched,
                    lag: matched.map(|matched| metrics.last_log_index.unwrap_or(0).saturating_sub(matched)),
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            state: format!("{:?}", metrics.state).to_lowercase(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            commit_index: metrics.cluster_committed.map(|log_id| log_id.index),
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
            members,
        }
    }

    fn not_leader(&self) -> PeerResponse {
        PeerResponse::NotLeader {
            leader: self.known_leader().filter(|(id, _)| *id != self.id),
        }
    }

    /// Answers a request from another member (or from this node's own
    /// forwarding when it is the leader).
    pub async fn handle(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::AppendEntries(rpc) => match self.raft.append_entries(rpc).await {
                Ok(response) => PeerResponse::AppendEntries(response),
                Err(error) => PeerResponse::Error(error.to_string()),
            },
            PeerRequest::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(response) => PeerResponse::Vote(response),
                Err(error) => PeerResponse::Error(error.to_string()),
            },
            PeerRequest::ClientWrite(command) => match self.raft.client_write(command).await {
                Ok(written) => PeerResponse::Written {
                    log_id: written.log_id,
                    response: written.data,
                },
                Err(error) => self.failure(&error),
            },
            PeerRequest::ReadIndex => match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
                Ok((read_log_id, _)) => PeerResponse::ReadIndex(read_log_id.index()),
                Err(error) => self.failure(&error),
            },
            // The learner is added and later promoted under the lock (each
            // is a membership change), but catches up outside it: a large
            // state takes a while to send, and another join must not wait
            // for it past its own deadline.
            PeerRequest::AddMember { id, member } => {
                let added = {
                    let _one_at_a_time = self.membership_changes.lock().await;
                    match self.raft.add_learner(id, member, false).await {
                        Ok(added) => added.log_id.index,
                        Err(error) => return self.failure(&error),
                    }
                };
                let caught_up = self
                    .raft
                    .wait(Some(CATCH_UP_WITHIN))
                    .metrics(
                        |metrics| {
                            metrics
                                .replication
                                .as_ref()
                                .and_then(|replication| replication.get(&id).cloned().flatten())
                                .is_some_and(|matched| matched.index >= added)
                        },
                        "new learner caught up",
                    )
                    .await;
                if caught_up.is_err() {
                    return PeerResponse::Error(format!(
                        "node {id} {CATCHING_UP} (to log index {added}); it stays a learner until a later try finds it caught up"
                    ));
                }
                let _one_at_a_time = self.membership_changes.lock().await;
                self.change_voters(ChangeMembers::AddVoterIds([id].into())).await
            }
            PeerRequest::Replication => {
                let status = self.status();
                if status.state != "leader" {
                    return self.not_leader();
                }
                PeerResponse::Replication {
                    last_log_index: status.last_log_index,
                    matched: status
                        .members
                        .iter()
                        .map(|member| (member.id, member.matched_index))
                        .collect(),
                }
            }
            PeerRequest::UpdateMember { id, mut member } => {
                let _one_at_a_time = self.membership_changes.lock().await;
                let Some(recorded) = self.known_member(id) else {
                    return PeerResponse::Error(format!("node {id} is not a member"));
                };
                member.cert_fingerprint = recorded.cert_fingerprint.clone();
                if member == recorded {
                    return PeerResponse::Done;
                }
                self.change_voters(ChangeMembers::SetNodes([(id, member)].into())).await
            }
            // `retain: false` in `change_voters` drops the member entirely,
            // not just from the voters.
            PeerRequest::RemoveMember { id } => {
                let _one_at_a_time = self.membership_changes.lock().await;
                let recorded = self.known_member(id);
                if recorded.is_some() {
                    let removed = self.change_voters(ChangeMembers::RemoveVoters([id].into())).await;
                    if !matches!(removed, PeerResponse::Done) {
                        return removed;
                    }
                } else {
                    // Out of the membership already: a removed leader
                    // stepped down (or stopped) before it could revoke
                    // itself, and the caller asks the new leader to finish.
                    // Ids are the log indexes of admissions, so one not yet
                    // applied here was never a member and is not revoked.
                    let applied = metrics_now(&self.raft).last_applied.map_or(0, |log_id| log_id.index);
                    if id > applied {
                        return PeerResponse::Error(format!("node {id} is not a member"));
                    }
                }
                // Its certificate stays CA-signed: refuse it by name, by its
                // fingerprint when recorded and by its id in any case.
                let fingerprint = recorded
                    .map(|member| member.cert_fingerprint)
                    .filter(|fingerprint| !fingerprint.is_empty())
                    .unwrap_or_else(|| format!("node {id}"));
                match self
                    .raft
                    .client_write(Command::RevokeCertificate { fingerprint, node: id })
                    .await
                {
                    Ok(_) => PeerResponse::Done,
                    Err(error) => self.failure(&error),
                }
            }
        }
    }

    async fn change_voters(&self, change: ChangeMembers) -> PeerResponse {
        match self.raft.change_membership(change, false).await {
            Ok(_) => PeerResponse::Done,
            Err(error) => self.failure(&error),
        }
    }

    /// The answer to a failed openraft call: a redirect when this node is
    /// not the leader, the error otherwise.
    fn failure<E>(&self, error: &RaftError<E>) -> PeerResponse
    where
        E: std::error::Error + TryAsRef<ForwardToLeader>,
    {
        // A node that stopped (a removed leader on its way out) cannot
        // answer; the caller asks another member, as it would a follower.
        if error.forward_to_leader().is_some() || matches!(error, RaftError::Fatal(_)) {
            self.not_leader()
        } else {
            PeerResponse::Error(error.to_string())
        }
    }

    /// Installs a snapshot streamed by the leader (already in a local file).
    pub async fn install_snapshot(
        &self,
        vote: Vote,
        meta: SnapshotMeta,
        data: File,
    ) -> Result<SnapshotResponse, TransportError> {
        self.raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: data })
            .await
            .map_err(|error| TransportError::Network(error.to_string()))
    }

    /// Stops Raft.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        self.raft
            .shutdown()
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))
    }
}
