//! A member that was removed (`omega cluster remove`) or left (`omega
//! cluster leave`) stops, and its data directory refuses to serve again.
//!
//! Without this a removed node called elections forever (every member
//! refuses it), and a departed node restarted from its old data ran on as a
//! stray. The node learns of its removal in one of two ways: it applies the
//! membership change that drops it, or a member refuses it with
//! [`omega_consensus::quic::REMOVED_NOTICE`] (a removed node is usually cut
//! off before the change reaches it). Either way it writes a marker into
//! its data directory and exits with [`EXIT_DEPARTED`].

use std::path::{Path, PathBuf};

use omega_consensus::model::NodeId;
use omega_consensus::quic::QuicMember;

/// The exit status of a departed node (sysexits' `EX_CONFIG`): the systemd
/// unit names it in `RestartPreventExitStatus`, so that a removed node is
/// not restarted in a loop.
pub const EXIT_DEPARTED: u8 = 78;

/// The node stopped, or refuses to start, because it is no longer a member.
#[derive(Debug)]
pub struct Departed {
    /// This node's id.
    pub node: NodeId,
    /// Its data directory.
    pub data_dir: String,
}

impl std::fmt::Display for Departed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "node {} was removed from the cluster; {} cannot serve again: delete it, then join anew with `omega serve --join HOST` and a token from `omega cluster token` on a member",
            self.node, self.data_dir
        )
    }
}

impl std::error::Error for Departed {}

/// The marker a departed node leaves in its cluster directory.
pub fn marker(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("departed")
}

/// Records that node `node` departed, durably (the marker is what refuses a
/// restart, so it is synced before the node says it stopped).
pub fn record(cluster_dir: &Path, node: NodeId) -> std::io::Result<()> {
    use std::io::Write;
    let path = marker(cluster_dir);
    let mut file = std::fs::File::create(&path)?;
    writeln!(file, "node {node} was removed from the cluster")?;
    file.sync_all()?;
    std::fs::File::open(cluster_dir)?.sync_all()
}

/// True when a marker says this data directory's node departed.
pub fn recorded(cluster_dir: &Path) -> bool {
    marker(cluster_dir).exists()
}

/// Watches whether this node is still a member.
#[derive(Debug)]
pub struct Watch {
    node: NodeId,
    /// This node has been seen in the membership. A joiner replays the
    /// group's history, in which it is absent until its own admission, so
    /// only an absence after a presence means removal.
    seen_in_membership: bool,
}

impl Watch {
    /// For node `node`.
    pub fn new(node: NodeId) -> Watch {
        Watch {
            node,
            seen_in_membership: false,
        }
    }

    /// True once this node is known to be out of the cluster.
    pub fn departed(&mut self, member: &QuicMember) -> bool {
        if member.transport.told_removed() {
            return true;
        }
        let in_membership = member.cluster.is_in_membership(self.node);
        match in_membership {
            Some(true) => {
                self.seen_in_membership = true;
                false
            }
            // A leader that removed itself still finishes the removal (it
            // revokes its own certificate next): it stops once a member
            // refuses it, or once it no longer leads.
            Some(false) => self.seen_in_membership && !member.cluster.is_leader(),
            None => false,
        }
    }
}
