//! Addresses learned for peers (from dials, DHT records and the cluster's
//! table), bounded: clients come and go with a fresh identity each run,
//! so when the table is full the peers used longest ago are forgotten
//! rather than newcomers refused.

use std::collections::HashMap;

use libp2p::{Multiaddr, PeerId};

/// Addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;

/// The table.
#[derive(Debug)]
pub(crate) struct KnownPeers {
    peers: HashMap<PeerId, Known>,
    capacity: usize,
    /// A logical clock: the last use of each peer.
    tick: u64,
}

#[derive(Debug)]
struct Known {
    addrs: Vec<Multiaddr>,
    used: u64,
}

impl KnownPeers {
    /// An empty table of at most `capacity` peers.
    pub(crate) fn new(capacity: usize) -> KnownPeers {
        assert!(capacity >= 8, "a table of a handful of peers would thrash");
        KnownPeers {
            peers: HashMap::new(),
            capacity,
            tick: 0,
        }
    }

    /// Adds `addrs` to `peer`'s (the oldest go past
    /// [`MAX_ADDRS_PER_PEER`]); a full table first forgets the eighth of
    /// its peers used longest ago.
    pub(crate) fn remember(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if self.peers.len() >= self.capacity && !self.peers.contains_key(&peer) {
            self.forget_oldest(self.capacity / 8);
        }
        self.tick += 1;
        let entry = self.peers.entry(peer).or_insert(Known {
            addrs: Vec::new(),
            used: 0,
        });
        entry.used = self.tick;
        for addr in addrs {
            if !entry.addrs.contains(&addr) {
                if entry.addrs.len() >= MAX_ADDRS_PER_PEER {
                    entry.addrs.remove(0);
                }
                entry.addrs.push(addr);
            }
        }
        debug_assert!(self.peers.len() <= self.capacity);
    }

    /// `peer`'s addresses (none when unknown); counts as a use.
    pub(crate) fn addrs(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        self.tick += 1;
        match self.peers.get_mut(peer) {
            Some(known) => {
                known.used = self.tick;
                known.addrs.clone()
            }
            None => Vec::new(),
        }
    }

    fn forget_oldest(&mut self, count: usize) {
        let mut by_use: Vec<(u64, PeerId)> = self.peers.iter().map(|(peer, known)| (known.used, *peer)).collect();
        by_use.sort_unstable();
        for (_, peer) in by_use.into_iter().take(count.max(1)) {
            self.peers.remove(&peer);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().unwrap()
    }

    #[test]
    fn a_full_table_forgets_the_peers_used_longest_ago() {
        let mut known = KnownPeers::new(16);
        let peers: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
        let kept = peers[0];
        known.remember(kept, [addr(1)]);
        for (index, peer) in peers.iter().enumerate().skip(1) {
            known.remember(*peer, [addr(index as u16)]);
            // The first peer stays in use.
            assert_eq!(known.addrs(&kept), [addr(1)]);
            assert!(known.len() <= 16);
        }
        assert_eq!(known.addrs(&peers[39]), [addr(39)], "a newcomer is remembered");
        assert!(known.addrs(&peers[1]).is_empty(), "an idle old peer is forgotten");
    }

    #[test]
    fn a_peer_keeps_its_newest_addresses() {
        let mut known = KnownPeers::new(8);
        let peer = PeerId::random();
        known.remember(peer, (0..12).map(addr));
        known.remember(peer, [addr(11)]);
        assert_eq!(known.addrs(&peer), (4..12).map(addr).collect::<Vec<_>>());
    }
}
