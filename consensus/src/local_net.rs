//! An in-process network between members of one process: the transport of
//! the in-process cluster tests and the base of the simulator's network.
//! Links can be cut and nodes taken down.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::model::{MemberNode, NodeId};
use crate::network::{PeerRequest, PeerResponse, Transport, TransportError};
use crate::raft_types::{SnapshotMeta, SnapshotResponse, Vote};

#[derive(Debug, Default)]
struct Switch {
    nodes: BTreeMap<NodeId, Weak<Cluster<LocalTransport>>>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The network all members of a process share.
#[derive(Debug, Clone, Default)]
pub struct LocalNet {
    switch: Arc<Mutex<Switch>>,
}

impl LocalNet {
    /// A network with no members.
    pub fn new() -> Self {
        LocalNet::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Switch> {
        self.switch.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The transport node `id` sends through.
    pub fn transport(&self, id: NodeId) -> Arc<LocalTransport> {
        Arc::new(LocalTransport {
            from: id,
            net: self.clone(),
        })
    }

    /// Connects a started member.
    pub fn attach(&self, cluster: &Arc<Cluster<LocalTransport>>) {
        self.lock().nodes.insert(cluster.id(), Arc::downgrade(cluster));
    }

    /// Disconnects a member (as if its process died).
    pub fn detach(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts or restores both directions between `a` and `b`.
    pub fn set_link(&self, a: NodeId, b: NodeId, up: bool) {
        let mut switch = self.lock();
        for pair in [(a, b), (b, a)] {
            if up {
                switch.cut.remove(&pair);
            } else {
                switch.cut.insert(pair);
            }
        }
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<Arc<Cluster<LocalTransport>>, TransportError> {
        let switch = self.lock();
        if switch.cut.contains(&(from, to)) {
            return Err(TransportError::Unreachable(format!("link {from} -> {to} is cut")));
        }
        switch
            .nodes
            .get(&to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| TransportError::Unreachable(format!("node {to} is down")))
    }
}

/// One member's end of a [`LocalNet`].
#[derive(Debug)]
pub struct LocalTransport {
    from: NodeId,
    net: LocalNet,
}

impl Transport for LocalTransport {
    async fn call(
        &self,
        target: NodeId,
        _node: &MemberNode,
        request: PeerRequest,
        deadline: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let peer = self.net.route(self.from, target)?;
        tokio::time::timeout(deadline, peer.handle(request))
            .await
            .map_err(|_| TransportError::Timeout(deadline))
    }

    async fn send_snapshot(
        &self,
        target: NodeId,
        _node: &MemberNode,
        vote: Vote,
        meta: SnapshotMeta,
        data: File,
        deadline: Duration,
    ) -> Result<SnapshotResponse, TransportError> {
        let peer = self.net.route(self.from, target)?;
        tokio::time::timeout(deadline, peer.install_snapshot(vote, meta, data))
            .await
            .map_err(|_| TransportError::Timeout(deadline))?
    }
}
