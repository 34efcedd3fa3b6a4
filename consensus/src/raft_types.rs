//! Every openraft type Omega uses, in one place: a bump of openraft's
//! version touches this module (docs/decisions/0004-openraft.md).

use crate::command::{Command, Response};
use crate::model::MemberNode;

openraft::declare_raft_types!(
    /// Omega's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = MemberNode,
);

/// A Raft node of Omega.
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
/// openraft's configuration.
pub type Config = openraft::Config;
/// The persisted vote.
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
/// A log entry.
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
/// A log entry's payload.
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
/// A log id: term, leader and index.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A membership configuration.
pub type Membership = openraft::Membership<u64, MemberNode>;
/// A membership with the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Log state reported at open.
pub type LogState = openraft::storage::LogState<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data (a file).
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::fs::File>;
/// Callback for a flushed log append.
pub type IoFlushed = openraft::storage::IOFlushed<TypeConfig>;
/// An entry to apply with the responder of the client that proposed it.
pub type EntryResponder = openraft::storage::EntryResponder<TypeConfig>;
/// Metrics of a node.
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// A storage failure as openraft reports it.
pub type StorageError = openraft::StorageError<TypeConfig>;
/// Request and response types of the RPCs.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// See [`AppendEntriesRequest`].
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
/// See [`AppendEntriesRequest`].
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
/// See [`AppendEntriesRequest`].
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
/// See [`AppendEntriesRequest`].
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
/// The result of a client write.
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
/// Errors of a client write.
pub type ClientWriteError = openraft::error::ClientWriteError<TypeConfig>;
/// Errors of a linearizable read.
pub type LinearizableReadError = openraft::error::LinearizableReadError<TypeConfig>;
/// A Raft API error.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<TypeConfig, E>;
/// An RPC error reported to openraft by the network.
pub type RpcError<E = openraft::error::Infallible> = openraft::error::RPCError<TypeConfig, E>;
/// A snapshot streaming error reported to openraft by the network.
pub type StreamingError = openraft::error::StreamingError<TypeConfig>;

/// A redirect to the leader inside an openraft error.
pub type ForwardToLeader = openraft::error::ForwardToLeader<TypeConfig>;
/// A membership change.
pub type ChangeMembers = openraft::ChangeMembers<u64, MemberNode>;

/// The latest metrics of `raft`.
pub fn metrics_now(raft: &Raft) -> RaftMetrics {
    openraft::async_runtime::watch::WatchReceiver::borrow_watched(&raft.metrics()).clone()
}

/// The trait of openraft's metrics channel (`changed`, `borrow_and_update`).
pub use openraft::async_runtime::watch::WatchReceiver;
pub use openraft::entry::RaftEntry;
pub use openraft::error::{NetworkError, ReplicationClosed, Unreachable};
pub use openraft::network::RPCOption;
pub use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
pub use openraft::{BasicNode, Instant, ReadPolicy, ServerState};
pub use openraft::{RaftNetworkFactory, RaftNetworkV2, SnapshotPolicy, TryAsRef};
