//! Omega's peer-to-peer data plane: nodes and clients exchange pieces of
//! blobs (the store's content-defined chunks, each named by its BLAKE3
//! hash) over libp2p on QUIC, and a fetch pulls one blob from several
//! providers at once, verifying every piece before it is used or served
//! again.
//!
//! - [`manifest`]: what a fetch needs: a blob's pieces and hashes, who
//!   provides it, and a grant, signed by the node that issued it.
//! - [`grant`]: signed, expiring permissions for non-members, and the
//!   signatures manifests carry.
//! - [`wire`]: the piece protocol's frames, bounded in every dimension.
//! - [`schedule`]: which provider sends which piece; penalties for bad
//!   bytes; no sockets (property-tested).
//! - [`service`]: the libp2p swarm (QUIC, identify, ping, Kademlia, mDNS,
//!   raw streams) serving pieces from a [`PieceSource`] and fetching.
//!   Private beside it: `streams` (serving piece streams, members first),
//!   `admission` (connection bounds that spare members) and `providers`
//!   (the DHT's record store, strangers within a budget).
//! - [`fetch`]: one blob from many providers into a file, resumable.
//!
//! This crate knows nothing of Raft or HTTP: the node tells it who the
//! cluster's members are and where to read pieces.

mod admission;
pub mod fetch;
pub mod grant;
mod known;
pub mod manifest;
pub mod penalty;
mod prefix_hash;
mod providers;
pub mod schedule;
pub mod service;
mod streams;
pub mod wire;

pub use fetch::{FetchOptions, FetchReport, SourceReport};
pub use grant::{Grant, GrantError};
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use manifest::{Manifest, Piece, Provider};
pub use service::{Gossip, P2p, P2pConfig, PieceSource};

/// Why a P2P operation failed.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// Socket or file trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A peer broke the protocol.
    #[error("peer {peer}: {why}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What it did.
        why: String,
    },
    /// The swarm could not start or listen.
    #[error("p2p: {0}")]
    Transport(String),
    /// The manifest is malformed or its signature fails.
    #[error("manifest: {0}")]
    Manifest(String),
    /// No provider could deliver some piece.
    #[error("{missing} of {total} pieces could not be fetched from any provider ({why})")]
    Incomplete {
        /// Pieces missing.
        missing: usize,
        /// Pieces in all.
        total: usize,
        /// The last error seen.
        why: String,
    },
    /// The service has stopped.
    #[error("the p2p service has stopped")]
    Stopped,
}

/// A `Result` with a [`P2pError`].
pub type Result<T, E = P2pError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch by the system clock (grants expire by
/// it; callers that simulate time pass their own).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
