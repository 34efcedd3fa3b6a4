//! Who may hold a connection to this peer: a bound on handshakes under
//! way, on connections per peer, and on inbound connections from
//! non-members (*guests*) in all. Members are never counted against the
//! guests' bound, so strangers filling it leave the cluster its links.
//!
//! libp2p's `connection_limits` cannot tell members apart, and it keeps an
//! entry per peer ever seen (throwaway identities would grow it without
//! end); here a peer's entry goes with its last connection.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::providers::Membership;

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Inbound handshakes under way (the peer is not known yet).
    pub(crate) pending_inbound_max: usize,
    /// Established inbound connections from non-members.
    pub(crate) guest_inbound_max: usize,
    /// Established connections with one peer, both ways.
    pub(crate) per_peer_max: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Too many handshakes under way.
    #[error("too many inbound handshakes under way")]
    Pending,
    /// Too many non-members connected.
    #[error("too many connections from non-members")]
    Guests,
    /// Too many connections with this peer.
    #[error("too many connections with this peer")]
    Peer,
}

/// The connections counted (no sockets: the behaviour below feeds it).
#[derive(Debug)]
pub(crate) struct Census {
    limits: ConnectionLimits,
    pending_inbound: HashSet<ConnectionId>,
    guests_inbound: HashSet<ConnectionId>,
    per_peer: HashMap<PeerId, HashSet<ConnectionId>>,
}

impl Census {
    pub(crate) fn new(limits: ConnectionLimits) -> Self {
        Census {
            limits,
            pending_inbound: HashSet::new(),
            guests_inbound: HashSet::new(),
            per_peer: HashMap::new(),
        }
    }

    /// An inbound handshake begins.
    pub(crate) fn admit_pending(&mut self, id: ConnectionId) -> Result<(), Refusal> {
        if self.pending_inbound.len() >= self.limits.pending_inbound_max {
            metrics::counter!("omega_p2p_refused_total", "reason" => "pending_connections").increment(1);
            return Err(Refusal::Pending);
        }
        self.pending_inbound.insert(id);
        Ok(())
    }

    /// An inbound handshake ended with `peer` known: may it stay?
    pub(crate) fn admit_inbound(&mut self, id: ConnectionId, peer: &PeerId, member: bool) -> Result<(), Refusal> {
        self.pending_inbound.remove(&id);
        let with_peer = self.per_peer.get(peer).map_or(0, HashSet::len);
        if with_peer >= self.limits.per_peer_max {
            metrics::counter!("omega_p2p_refused_total", "reason" => "peer_connections").increment(1);
            return Err(Refusal::Peer);
        }
        if !member && self.guests_inbound.len() >= self.limits.guest_inbound_max {
            metrics::counter!("omega_p2p_refused_total", "reason" => "guest_connections").increment(1);
            return Err(Refusal::Guests);
        }
        Ok(())
    }

    /// An inbound handshake failed or was refused.
    pub(crate) fn pending_failed(&mut self, id: ConnectionId) {
        self.pending_inbound.remove(&id);
    }

    /// A connection is up; `guest` when a non-member dialled in.
    pub(crate) fn established(&mut self, id: ConnectionId, peer: PeerId, guest: bool) {
        self.pending_inbound.remove(&id);
        if guest {
            self.guests_inbound.insert(id);
        }
        self.per_peer.entry(peer).or_default().insert(id);
    }

    /// A connection is down.
    pub(crate) fn closed(&mut self, id: ConnectionId, peer: &PeerId) {
        self.guests_inbound.remove(&id);
        if let Some(connections) = self.per_peer.get_mut(peer) {
            connections.remove(&id);
            if connections.is_empty() {
                self.per_peer.remove(peer);
            }
        }
    }

    /// Peers with a connection counted.
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.per_peer.len()
    }
}

/// The swarm's side of the [`Census`]: refuses connections past its bounds.
pub(crate) struct Admission {
    census: Census,
    is_member: Membership,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits, is_member: Membership) -> Self {
        Admission {
            census: Census::new(limits),
            is_member,
        }
    }
}

impl NetworkBehaviour for Admission {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.census.admit_pending(id).map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let member = (self.is_member)(&peer);
        self.census
            .admit_inbound(id, &peer, member)
            .map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // This peer chose to dial: counted per peer, never refused.
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(up) => {
                let guest = up.endpoint.is_listener() && !(self.is_member)(&up.peer_id);
                self.census.established(up.connection_id, up.peer_id, guest);
            }
            FromSwarm::ConnectionClosed(down) => self.census.closed(down.connection_id, &down.peer_id),
            FromSwarm::ListenFailure(failure) => self.census.pending_failed(failure.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census() -> Census {
        Census::new(ConnectionLimits {
            pending_inbound_max: 2,
            guest_inbound_max: 3,
            per_peer_max: 2,
        })
    }

    /// Takes in an inbound connection from `peer` as the swarm would.
    fn connect(census: &mut Census, id: usize, peer: PeerId, member: bool) -> Result<(), Refusal> {
        let id = ConnectionId::new_unchecked(id);
        census.admit_pending(id)?;
        census.admit_inbound(id, &peer, member)?;
        census.established(id, peer, !member);
        Ok(())
    }

    #[test]
    fn guests_filling_their_share_leave_members_room() {
        let mut census = census();
        let strangers: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        let admitted = strangers
            .iter()
            .enumerate()
            .filter(|(id, peer)| connect(&mut census, *id, **peer, false).is_ok())
            .count();
        assert_eq!(admitted, 3, "three guests at most");
        assert_eq!(connect(&mut census, 100, PeerId::random(), false), Err(Refusal::Guests));
        let member = PeerId::random();
        assert_eq!(connect(&mut census, 101, member, true), Ok(()));
        assert_eq!(connect(&mut census, 102, member, true), Ok(()));
        assert_eq!(
            connect(&mut census, 103, member, true),
            Err(Refusal::Peer),
            "per peer, members too"
        );
        // A guest leaving frees its place, and forgets its peer.
        census.closed(ConnectionId::new_unchecked(0), &strangers[0]);
        assert_eq!(census.peers(), 3);
        assert_eq!(connect(&mut census, 104, PeerId::random(), false), Ok(()));
    }

    #[test]
    fn handshakes_under_way_are_bounded_and_freed_when_they_end() {
        let mut census = census();
        let (one, two, three) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        assert_eq!(census.admit_pending(one), Ok(()));
        assert_eq!(census.admit_pending(two), Ok(()));
        assert_eq!(census.admit_pending(three), Err(Refusal::Pending));
        census.pending_failed(one);
        assert_eq!(census.admit_pending(three), Ok(()));
        assert_eq!(census.admit_inbound(two, &PeerId::random(), false), Ok(()));
        assert_eq!(census.admit_pending(one), Ok(()));
    }
}
