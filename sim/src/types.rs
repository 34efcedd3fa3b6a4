//! The simulator's openraft types: Omega's commands, answers and member
//! records (the same as `omega_consensus::raft_types`), on openraft's
//! seeded runtime, so that election timeouts and tick jitter come from the
//! run's seed and not from the OS.

use omega_consensus::command::{Command, Response};
use omega_consensus::model::MemberNode;

/// Tokio with openraft's seeded RNG: every task spawned through it (and
/// every random draw inside openraft) derives from the seed in scope.
pub type Runtime = openraft_rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;

openraft::declare_raft_types!(
    /// Omega's Raft types on the seeded runtime.
    pub SimConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = MemberNode,
        // Standard Raft: one leader per term, which the simulator checks.
        // (A node's default, openraft's "advanced" ids, lets two nodes
        // lead in one term by design; the storage and rules under test are
        // the same either way.)
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = Runtime,
);

/// A simulated node's Raft.
pub type Raft = openraft::Raft<SimConfig, crate::disk::Machine>;
/// A log entry.
pub type Entry = <SimConfig as openraft::RaftTypeConfig>::Entry;
/// The persisted vote.
pub type Vote = <SimConfig as openraft::RaftTypeConfig>::Vote;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<SimConfig>;
/// A membership with the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<SimConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<SimConfig>;
/// A snapshot: the tables, encoded, in memory.
pub type Snapshot = openraft::alias::SnapshotOf<SimConfig, std::io::Cursor<Vec<u8>>>;
/// Callback for a flushed log append.
pub type IoFlushed = openraft::storage::IOFlushed<SimConfig>;
/// An entry to apply, with the responder of the client that proposed it.
pub type EntryResponder = openraft::storage::EntryResponder<SimConfig>;
/// Metrics of a node.
pub type RaftMetrics = openraft::RaftMetrics<SimConfig>;
/// An RPC error reported to openraft.
pub type RpcError = openraft::error::RPCError<SimConfig>;
/// A snapshot streaming error.
pub type StreamingError = openraft::error::StreamingError<SimConfig>;
