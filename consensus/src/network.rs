//! Raft's network, over any [`Transport`]: the seam where the simulator
//! plugs a simulated network and the node plugs QUIC with mutual TLS.
//!
//! Messages between members are [`PeerRequest`]s answered by
//! [`PeerResponse`]s (postcard on the wire); snapshots go as a stream of
//! file bytes. Every call carries a deadline; transports bound sizes.

use std::fs::File;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::model::{MemberNode, NodeId};
use crate::raft_types::{
    AppendEntriesRequest, AppendEntriesResponse, LogId, NetworkError, RPCOption, RaftNetworkFactory, RaftNetworkV2,
    ReplicationClosed, RpcError, Snapshot, SnapshotMeta, SnapshotResponse, StreamingError, TypeConfig, Unreachable,
    Vote, VoteRequest, VoteResponse,
};

/// Largest encoded request or response a transport accepts.
pub const MESSAGE_MAX_BYTES: usize = 64 << 20;

/// A request from one member to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft: replicate entries.
    AppendEntries(AppendEntriesRequest),
    /// Raft: ask for a vote.
    Vote(VoteRequest),
    /// A client write forwarded to the leader.
    ClientWrite(Command),
    /// A follower asks the leader for a read index (linearizable reads).
    ReadIndex,
    /// Add a member: learner first, then voter. Sent to the leader.
    AddMember {
        /// The id the join token's command gave it.
        id: NodeId,
        /// Its addresses and certificate.
        member: MemberNode,
    },
    /// Remove a member from the voters and the cluster. Sent to the leader.
    RemoveMember {
        /// The member.
        id: NodeId,
    },
    /// How far each member's log is replicated, which only the leader
    /// knows: `cluster status` on a follower shows lag too. (Appended last:
    /// variants are encoded by position.)
    Replication,
    /// A member's addresses changed (a new DHCP lease, a rescheduled pod):
    /// record them. Sent to the leader by the member itself on start.
    UpdateMember {
        /// The member.
        id: NodeId,
        /// Its addresses now (its recorded certificate fingerprint stays).
        member: MemberNode,
    },
}

impl PeerRequest {
    /// A client's write or read, which waits for a quorum; not Raft's own
    /// traffic nor a membership change (which may wait for a learner).
    pub fn is_client_request(&self) -> bool {
        matches!(self, PeerRequest::ClientWrite(_) | PeerRequest::ReadIndex)
    }
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To `AppendEntries`.
    AppendEntries(AppendEntriesResponse),
    /// To `Vote`.
    Vote(VoteResponse),
    /// To `ClientWrite`: the entry's log id and the state machine's answer.
    Written {
        /// Where the command landed.
        log_id: LogId,
        /// The state machine's answer.
        response: Response,
    },
    /// To `ReadIndex`: apply through this index before reading.
    ReadIndex(u64),
    /// To membership changes.
    Done,
    /// This node is not the leader; try `leader` if known.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<(NodeId, MemberNode)>,
    },
    /// The request failed.
    Error(String),
    /// To `Replication`: the leader's last log index and, per member, the
    /// last index known replicated to it.
    Replication {
        /// The leader's last log index.
        last_log_index: Option<u64>,
        /// Member id and its matched index.
        matched: Vec<(NodeId, Option<u64>)>,
    },
}

/// Why a transport call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (refused, no route, TLS refused).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke mid-call; retrying may succeed.
    #[error("network: {0}")]
    Network(String),
}

/// Carries requests to other members. Implemented by the QUIC transport and
/// by the simulator's network.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `target` and waits at most `deadline` for the answer.
    fn call(
        &self,
        target: NodeId,
        node: &MemberNode,
        request: PeerRequest,
        deadline: Duration,
    ) -> impl Future<Output = Result<PeerResponse, TransportError>> + Send;

    /// Streams a snapshot file to `target`, which installs it.
    fn send_snapshot(
        &self,
        target: NodeId,
        node: &MemberNode,
        vote: Vote,
        meta: SnapshotMeta,
        data: File,
        deadline: Duration,
    ) -> impl Future<Output = Result<SnapshotResponse, TransportError>> + Send;
}

/// The members' addresses as the membership records them now, shared by
/// every peer client: openraft keeps a replication stream (and the node it
/// was made for) across a change of a member's addresses, so a client looks
/// its peer up here at each call.
pub type Directory = std::sync::Arc<std::sync::RwLock<std::collections::HashMap<NodeId, MemberNode>>>;

/// openraft's network factory over a transport.
#[derive(Debug, Clone)]
pub struct Network<T> {
    transport: std::sync::Arc<T>,
    directory: Directory,
}

impl<T: Transport> Network<T> {
    /// A factory sending through `transport`, to the addresses in
    /// `directory` (or, for a member not in it, those openraft gives).
    pub fn new(transport: std::sync::Arc<T>, directory: Directory) -> Self {
        Network { transport, directory }
    }
}

/// openraft's client of one peer.
#[derive(Debug)]
pub struct PeerClient<T> {
    transport: std::sync::Arc<T>,
    target: NodeId,
    node: MemberNode,
    directory: Directory,
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        PeerClient {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
            directory: self.directory.clone(),
        }
    }
}

fn rpc_error(error: TransportError) -> RpcError {
    match error {
        TransportError::Unreachable(text) => RpcError::Unreachable(Unreachable::from_string(text)),
        TransportError::Timeout(_) | TransportError::Network(_) => {
            RpcError::Network(NetworkError::from_string(error.to_string()))
        }
    }
}

fn unexpected(response: PeerResponse) -> RpcError {
    RpcError::Network(NetworkError::from_string(format!("unexpected answer: {response:?}")))
}

impl<T: Transport> PeerClient<T> {
    /// The peer's addresses as recorded now.
    fn node(&self) -> MemberNode {
        let directory = self.directory.read().unwrap_or_else(|poison| poison.into_inner());
        directory
            .get(&self.target)
            .cloned()
            .unwrap_or_else(|| self.node.clone())
    }

    async fn call(&self, request: PeerRequest, option: &RPCOption) -> Result<PeerResponse, RpcError> {
        self.transport
            .call(self.target, &self.node(), request, option.soft_ttl())
            .await
            .map_err(rpc_error)
    }
}

impl<T: Transport> RaftNetworkV2<TypeConfig> for PeerClient<T> {
    type SnapshotData = File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        match self.call(PeerRequest::AppendEntries(rpc), &option).await? {
            PeerResponse::AppendEntries(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest, option: RPCOption) -> Result<VoteResponse, RpcError> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let node = self.node();
        let send = self.transport.send_snapshot(
            self.target,
            &node,
            vote,
            snapshot.meta,
            snapshot.snapshot,
            option.hard_ttl(),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(|error| match error {
                TransportError::Unreachable(text) => StreamingError::Unreachable(Unreachable::from_string(text)),
                other => StreamingError::Network(NetworkError::from_string(other.to_string())),
            }),
        }
    }
}
