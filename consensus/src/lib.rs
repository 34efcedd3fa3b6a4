//! Omega's control plane: users, libraries, the catalog, watch state,
//! transcode jobs and membership, replicated by openraft with the log and the
//! state machine in one RocksDB.
//!
//! - [`raft_types`]: every openraft type, behind one module.
//! - [`command`] and [`model`]: the versioned commands and the records.
//! - [`log_store`]: the log and vote, synced by group commit.
//! - [`state_machine`]: tables, rules, reads and streamed snapshots.
//! - [`db`]: the one RocksDB both live in.

pub mod clock;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod db;
pub mod jobs;
pub mod local_net;
pub mod log_store;
pub mod model;
pub mod network;
pub mod pki;
pub mod quic;
pub mod raft_types;
pub mod state_machine;

pub use cluster::{Cluster, ClusterError, ClusterStatus, Consistency, Timing};
pub use command::{Command, JobOutcome, Rejection, Response};
pub use db::Db;
pub use log_store::LogStore;
pub use state_machine::StateMachine;
