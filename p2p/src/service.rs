//! The libp2p swarm: QUIC, identify, ping, Kademlia (provider records per
//! blob, never per chunk: a record store holds a bounded number of keys),
//! optional mDNS for the LAN, gossipsub for small signed notices among
//! the cluster (what is popular, that a job is waiting), and raw streams
//! for the piece protocol ([`crate::wire`]).
//!
//! One task owns the swarm and takes [`Command`]s over a bounded channel;
//! another accepts piece streams and serves each in its own task
//! ([`crate::streams`]: members first, strangers only with a grant).
//! A stranger cannot exhaust a member: connections from non-members are
//! bounded apart from members' ([`crate::admission`]), and the DHT keeps
//! their provider records within a budget of their own
//! ([`crate::providers`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, Swarm, gossipsub, identify, kad, mdns, ping};
use omega_storage::{BlobId, ChunkId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::admission::{Admission, ConnectionLimits};
use crate::known::KnownPeers;
use crate::penalty::Penalties;
use crate::providers::{Membership, ProviderLimits, ProviderStore};
use crate::streams::Server;
use crate::wire::{self, PROTOCOL};
use crate::{P2pError, Result};

/// Kademlia's protocol name: Omega's own DHT, apart from IPFS's.
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/kad/1");
/// identify's protocol version.
const IDENTIFY_VERSION: &str = "/omega/1";
/// Commands waiting for the swarm task.
const COMMAND_QUEUE: usize = 256;
/// Keys members (this node among them) may have provider records for
/// (blobs and segment sets).
const MAX_PROVIDED_KEYS: usize = 100_000;
/// How long a provider record stays without being announced again.
const PROVIDER_TTL: Duration = Duration::from_secs(30 * 60);
/// Largest gossip message: notices are small.
pub const MAX_GOSSIP_BYTES: usize = 16 * 1024;
/// Gossip messages a slow reader may fall behind by before it loses some.
const GOSSIP_QUEUE: usize = 256;

/// A gossip message received.
#[derive(Debug, Clone)]
pub struct Gossip {
    /// Its topic.
    pub topic: String,
    /// The peer that signed it.
    pub from: PeerId,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Where a node reads the pieces it serves, and who may have them.
pub trait PieceSource: Send + Sync + 'static {
    /// The bytes of `piece` of `blob`, verified against its hash, when
    /// this peer has them.
    fn piece(&self, blob: &BlobId, piece: &ChunkId) -> std::io::Result<Option<Vec<u8>>>;

    /// True for the cluster's members: they need no grant, and their keys
    /// sign grants.
    fn is_member(&self, peer: &PeerId) -> bool;
}

/// Bounds on what others can make this peer do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Piece streams served at once, from all peers.
    pub max_streams: usize,
    /// Of those, streams served at once to non-members (with a grant): the
    /// rest stay for members.
    pub max_guest_streams: usize,
    /// Non-members' streams waiting for their first request (no place is
    /// taken before its grant passes).
    pub max_unverified_streams: usize,
    /// How long a non-member's stream may wait before its first request.
    pub first_request: Duration,
    /// Piece streams served at once to one peer.
    pub max_streams_per_peer: usize,
    /// Pieces per second one peer may ask for, sustained (a request
    /// costs one token per piece it names, found or not).
    pub pieces_per_second: f64,
    /// Pieces one peer may ask for in a burst; at least
    /// [`wire::MAX_PIECES_PER_REQUEST`], so that any request can pass.
    pub burst: f64,
    /// A stream with no request for this long is closed.
    pub idle: Duration,
    /// Inbound connection handshakes under way at once.
    pub max_pending_connections: usize,
    /// Inbound connections from non-members at once (members are not
    /// counted).
    pub max_guest_connections: usize,
    /// Connections with one peer, both ways.
    pub max_connections_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 256,
            max_guest_streams: 128,
            max_unverified_streams: 64,
            first_request: Duration::from_secs(10),
            max_streams_per_peer: 16,
            pieces_per_second: 10_000.0,
            burst: 20_000.0,
            idle: Duration::from_secs(30),
            // A QUIC handshake is over within a round trip or two.
            max_pending_connections: 256,
            // A client dials each member once; a node serves many.
            max_guest_connections: 1024,
            // Two peers dialling each other at once make two.
            max_connections_per_peer: 4,
        }
    }
}

/// How to start a peer.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Its identity.
    pub keypair: Keypair,
    /// QUIC addresses to listen on (`/ip4/…/udp/PORT/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Find peers on the LAN by mDNS.
    pub mdns: bool,
    /// Serve the DHT (nodes) rather than only query it (clients).
    pub dht_server: bool,
    /// Bounds on inbound work.
    pub limits: Limits,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First: a refused connection is refused before the others set up.
    admission: Admission,
    stream: libp2p_stream::Behaviour,
    kad: kad::Behaviour<ProviderStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    gossipsub: gossipsub::Behaviour,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
    AddServer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    Provide {
        blob: BlobId,
    },
    Unprovide {
        blob: BlobId,
    },
    Providers {
        blob: BlobId,
        /// The records this peer stores, at once.
        local: oneshot::Sender<HashSet<PeerId>>,
        /// Those and what the DHT query finds, when it ends.
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    Subscribe {
        topic: String,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
}

/// Bytes moved, per peer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of verified pieces received from the peer.
    pub bytes_in: u64,
    /// Bytes of pieces sent to the peer.
    pub bytes_out: u64,
}

struct Inner {
    keypair: Keypair,
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    /// Addresses learned per peer (identify, dials, mDNS), for manifests.
    known: Arc<Mutex<KnownPeers>>,
    traffic: Arc<Mutex<HashMap<PeerId, Traffic>>>,
    /// Peers that sent bad bytes, left out of fetches for a while.
    penalties: Mutex<Penalties>,
    gossip: broadcast::Sender<Gossip>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A running peer; cheap to clone. Dropping the last clone stops it.
#[derive(Clone)]
pub struct P2p {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for P2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2p")
            .field("peer_id", &self.inner.peer_id)
            .field("listen_addrs", &self.inner.listen_addrs)
            .finish()
    }
}

impl P2p {
    /// Starts the swarm, listens, and serves pieces from `source`. Returns
    /// once every listener has an address.
    pub async fn start(config: P2pConfig, source: Arc<dyn PieceSource>) -> Result<P2p> {
        if config.limits.burst < wire::MAX_PIECES_PER_REQUEST as f64 {
            return Err(P2pError::Transport(format!(
                "a burst of {} pieces is below one full request ({})",
                config.limits.burst,
                wire::MAX_PIECES_PER_REQUEST
            )));
        }
        let peer_id = config.keypair.public().to_peer_id();
        let is_member: Membership = {
            let source = source.clone();
            Arc::new(move |peer: &PeerId| source.is_member(peer))
        };
        let mut swarm = build_swarm(&config, is_member)?;
        let mut listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|error| P2pError::Transport(format!("cannot listen on {addr}: {error}")))?;
            listeners.insert(id);
        }
        let mut listen_addrs = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        while !listeners.is_empty() {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        listeners.remove(&listener_id);
                        swarm.add_external_address(address.clone());
                        listen_addrs.push(address);
                    }
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        return Err(P2pError::Transport(format!("a listener closed: {reason:?}")));
                    }
                    SwarmEvent::ListenerError { error, .. } => {
                        return Err(P2pError::Transport(format!("a listener failed: {error}")));
                    }
                    _ => {}
                },
                () = &mut deadline => return Err(P2pError::Transport("no listen address within 10 s".into())),
            }
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control
            .accept(PROTOCOL)
            .map_err(|error| P2pError::Transport(error.to_string()))?;
        let known = Arc::new(Mutex::new(KnownPeers::new(MAX_KNOWN_PEERS)));
        let traffic = Arc::new(Mutex::new(HashMap::new()));
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (gossip, _) = broadcast::channel(GOSSIP_QUEUE);
        let driver = Driver {
            swarm,
            pending_dials: HashMap::new(),
            queries: HashMap::new(),
            known: known.clone(),
            gossip: gossip.clone(),
        };
        let server = Server::new(source, config.limits.clone(), traffic.clone());
        let tasks = vec![
            tokio::spawn(driver.run(receiver)),
            tokio::spawn(server.accept(incoming)),
        ];
        tracing::info!(%peer_id, addrs = ?listen_addrs, "p2p listening");
        Ok(P2p {
            inner: Arc::new(Inner {
                keypair: config.keypair,
                peer_id,
                listen_addrs,
                commands,
                control,
                known,
                traffic,
                penalties: Mutex::new(Penalties::new(MAX_PENALTIES)),
                gossip,
                tasks,
            }),
        })
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// This peer's key (it signs grants and manifests).
    pub fn keypair(&self) -> &Keypair {
        &self.inner.keypair
    }

    /// The addresses it listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.inner.listen_addrs
    }

    /// Connects to `peer` at one of `addrs` (already connected: at once).
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>, within: Duration) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Dial { peer, addrs, reply }).await?;
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(P2pError::Protocol {
                peer: peer.to_string(),
                why: format!("cannot connect: {why}"),
            }),
            Ok(Err(_)) => Err(P2pError::Stopped),
            Err(_) => Err(P2pError::Protocol {
                peer: peer.to_string(),
                why: format!("no connection within {within:?}"),
            }),
        }
    }

    /// Adds a DHT server (a cluster member) to route through.
    pub async fn add_server(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        self.send(Command::AddServer { peer, addrs }).await
    }

    /// Announces in the DHT that this peer provides `blob`.
    pub async fn provide(&self, blob: BlobId) -> Result<()> {
        self.send(Command::Provide { blob }).await
    }

    /// Stops announcing `blob` (this peer no longer holds it); records
    /// already stored elsewhere lapse within their time to live.
    pub async fn unprovide(&self, blob: BlobId) -> Result<()> {
        self.send(Command::Unprovide { blob }).await
    }

    /// The peers the DHT knows to provide `blob` (not this one), with the
    /// addresses this peer learned for them; waits at most `within`.
    pub async fn providers(&self, blob: BlobId, within: Duration) -> Result<Vec<(PeerId, Vec<Multiaddr>)>> {
        let (local, local_answer) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        self.send(Command::Providers { blob, local, reply }).await?;
        let mut peers = local_answer.await.map_err(|_| P2pError::Stopped)?;
        // A query that outlasts `within` (a slow or vanished peer on its
        // path) leaves the records stored here, which every provider in
        // reach has sent to this peer if it is a DHT server.
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(found)) => peers.extend(found),
            Ok(Err(_)) => return Err(P2pError::Stopped),
            Err(_) => tracing::debug!(%blob, "the providers query outlasted {within:?}"),
        }
        let mut found: Vec<(PeerId, Vec<Multiaddr>)> = peers
            .into_iter()
            .filter(|peer| *peer != self.inner.peer_id)
            .map(|peer| (peer, self.addresses_of(&peer)))
            .collect();
        found.sort();
        Ok(found)
    }

    /// Joins the gossip topic `topic`: its messages then arrive on every
    /// [`P2p::gossip`] receiver.
    pub async fn subscribe(&self, topic: &str) -> Result<()> {
        self.send(Command::Subscribe {
            topic: topic.to_owned(),
        })
        .await
    }

    /// Publishes `data` (at most [`MAX_GOSSIP_BYTES`], signed by this
    /// peer) on `topic`. An error when no peer has joined the topic.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish {
            topic: topic.to_owned(),
            data,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| P2pError::Stopped)?
            .map_err(|why| P2pError::Transport(format!("cannot publish on {topic}: {why}")))
    }

    /// Gossip messages from now on, of every topic joined. A receiver
    /// that falls more than a few hundred behind loses the oldest.
    pub fn gossip(&self) -> broadcast::Receiver<Gossip> {
        self.inner.gossip.subscribe()
    }

    /// The addresses learned for `peer`.
    pub fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        lock(&self.inner.known).addrs(peer)
    }

    /// Opens a piece stream to `peer` (dialling it through known addresses
    /// when not connected).
    pub async fn open(&self, peer: PeerId) -> Result<Stream> {
        let mut control = self.inner.control.clone();
        control
            .open_stream(peer, PROTOCOL)
            .await
            .map_err(|error| P2pError::Protocol {
                peer: peer.to_string(),
                why: format!("cannot open a piece stream: {error}"),
            })
    }

    /// Bytes moved with each peer so far (the most active
    /// [`MAX_TRAFFIC_PEERS`]).
    pub fn traffic(&self) -> HashMap<PeerId, Traffic> {
        lock(&self.inner.traffic).clone()
    }

    /// Leaves `peer`, which sent bytes failing their hash, out of fetches
    /// for [`crate::penalty::PENALTY`].
    pub fn penalise(&self, peer: PeerId) {
        lock(&self.inner.penalties).penalise(peer, Instant::now());
    }

    /// True while `peer` is left out for sending bad bytes.
    pub fn is_penalised(&self, peer: &PeerId) -> bool {
        lock(&self.inner.penalties).is_penalised(peer, Instant::now())
    }

    /// Counts verified bytes received from `peer`.
    pub(crate) fn count_in(&self, peer: &PeerId, bytes: u64) {
        add_traffic(&self.inner.traffic, *peer, bytes, 0);
        metrics::counter!("omega_p2p_bytes_in_total").increment(bytes);
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.inner.commands.send(command).await.map_err(|_| P2pError::Stopped)
    }
}

/// Peers whose traffic is kept apart; past this, the peer that moved the
/// least is forgotten (metrics keep the totals, without a label per peer:
/// clients come and go).
const MAX_TRAFFIC_PEERS: usize = 1024;

pub(crate) fn add_traffic(traffic: &Mutex<HashMap<PeerId, Traffic>>, peer: PeerId, bytes_in: u64, bytes_out: u64) {
    let mut traffic = lock(traffic);
    if traffic.len() >= MAX_TRAFFIC_PEERS && !traffic.contains_key(&peer) {
        let least = traffic
            .iter()
            .min_by_key(|(_, moved)| moved.bytes_in + moved.bytes_out)
            .map(|(peer, _)| *peer);
        if let Some(least) = least {
            traffic.remove(&least);
        }
    }
    let entry = traffic.entry(peer).or_default();
    entry.bytes_in += bytes_in;
    entry.bytes_out += bytes_out;
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it usable.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn build_swarm(config: &P2pConfig, is_member: Membership) -> Result<Swarm<Behaviour>> {
    let peer_id = config.keypair.public().to_peer_id();
    let mdns_on = config.mdns;
    let connection_limits = ConnectionLimits {
        pending_inbound_max: config.limits.max_pending_connections,
        guest_inbound_max: config.limits.max_guest_connections,
        per_peer_max: config.limits.max_connections_per_peer,
    };
    let transport_error = |error: &dyn std::fmt::Display| P2pError::Transport(error.to_string());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic_config(|mut quic| {
            // Larger flow-control windows than the defaults (10/15 MB):
            // a worker keeps a 4 MiB batch in flight per stream.
            quic.max_stream_data = 16 << 20;
            quic.max_connection_data = 64 << 20;
            quic
        })
        .with_behaviour(
            |key| -> std::result::Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let provider_limits = ProviderLimits {
                    member_keys_max: MAX_PROVIDED_KEYS,
                    ..ProviderLimits::default()
                };
                let store = ProviderStore::new(peer_id, is_member.clone(), provider_limits);
                let mut kad_config = kad::Config::new(KAD_PROTOCOL);
                // A record stored here lives PROVIDER_TTL (a seeding client
                // that stopped drops out of manifests within it); a live
                // provider announces again at half of it.
                kad_config
                    .set_provider_record_ttl(Some(PROVIDER_TTL))
                    .set_provider_publication_interval(Some(PROVIDER_TTL / 2));
                let kad = kad::Behaviour::with_config(peer_id, store, kad_config);
                let identify = identify::Behaviour::new(identify::Config::new(IDENTIFY_VERSION.into(), key.public()));
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
                } else {
                    None
                };
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .build()?;
                let gossipsub =
                    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_config)?;
                Ok(Behaviour {
                    admission: Admission::new(connection_limits, is_member.clone()),
                    stream: libp2p_stream::Behaviour::new(),
                    kad,
                    identify,
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                    gossipsub,
                })
            },
        )
        .map_err(|error| transport_error(&error))?
        .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mode = if config.dht_server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    };
    swarm.behaviour_mut().kad.set_mode(Some(mode));
    Ok(swarm)
}

/// The task that owns the swarm.
struct Driver {
    swarm: Swarm<Behaviour>,
    pending_dials: HashMap<PeerId, Vec<oneshot::Sender<std::result::Result<(), String>>>>,
    queries: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    known: Arc<Mutex<KnownPeers>>,
    gossip: broadcast::Sender<Gossip>,
}

/// Peers whose penalties are remembered.
const MAX_PENALTIES: usize = 4096;
/// Peers whose addresses are remembered.
const MAX_KNOWN_PEERS: usize = 10_000;

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
            }
        }
    }

    fn remember(&self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        lock(&self.known).remember(peer, addrs);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { peer, addrs, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                self.remember(peer, addrs.iter().cloned());
                let options = DialOpts::peer_id(peer).addresses(addrs).build();
                match self.swarm.dial(options) {
                    Ok(()) => self.pending_dials.entry(peer).or_default().push(reply),
                    Err(error) => {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
            }
            Command::AddServer { peer, addrs } => {
                self.remember(peer, addrs.iter().cloned());
                for addr in addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            Command::Provide { blob } => {
                if let Err(error) = self.swarm.behaviour_mut().kad.start_providing(key(&blob)) {
                    tracing::warn!(%blob, "cannot announce a blob: {error}");
                }
            }
            Command::Unprovide { blob } => self.swarm.behaviour_mut().kad.stop_providing(&key(&blob)),
            Command::Providers { blob, local, reply } => {
                // Records stored here carry the providers' addresses, which
                // a DHT query's answer does not hand on.
                use libp2p::kad::store::RecordStore;
                let own = *self.swarm.local_peer_id();
                let records = self.swarm.behaviour_mut().kad.store_mut().providers(&key(&blob));
                let mut found = HashSet::new();
                for record in records {
                    if record.provider != own {
                        self.remember(record.provider, record.addresses);
                        found.insert(record.provider);
                    }
                }
                let _ = local.send(found.clone());
                let id = self.swarm.behaviour_mut().kad.get_providers(key(&blob));
                self.queries.insert(id, (found, reply));
            }
            Command::Subscribe { topic } => {
                if let Err(error) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&gossipsub::IdentTopic::new(&topic))
                {
                    tracing::warn!(%topic, "cannot join a gossip topic: {error}");
                }
            }
            Command::Publish { topic, data, reply } => {
                let outcome = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(gossipsub::IdentTopic::new(&topic), data)
                    .map(|_| ())
                    .map_err(|error| error.to_string());
                let _ = reply.send(outcome);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                if endpoint.is_dialer() {
                    self.remember(peer_id, [endpoint.get_remote_address().clone()]);
                }
                for reply in self.pending_dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
                metrics::gauge!("omega_p2p_peers").set(self.swarm.connected_peers().count() as f64);
            }
            SwarmEvent::ConnectionClosed { .. } => {
                metrics::gauge!("omega_p2p_peers").set(self.swarm.connected_peers().count() as f64);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                for reply in self.pending_dials.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                let serves_dht = info.protocols.contains(&KAD_PROTOCOL);
                self.remember(peer_id, info.listen_addrs.iter().cloned());
                if serves_dht {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.remember(peer, [addr.clone()]);
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            })) => self.on_providers(id, result, step.last),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                // Strict validation: every message is signed by its source.
                if let Some(from) = message.source {
                    let _ = self.gossip.send(Gossip {
                        topic: message.topic.as_str().to_owned(),
                        from,
                        data: message.data,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_providers(&mut self, id: kad::QueryId, result: kad::GetProvidersResult, last: bool) {
        let finished = match result {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                if let Some((found, _)) = self.queries.get_mut(&id) {
                    found.extend(providers);
                }
                last
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
        };
        if finished && let Some((found, reply)) = self.queries.remove(&id) {
            let _ = reply.send(found);
        }
    }
}

/// The DHT key of a blob.
fn key(blob: &BlobId) -> kad::RecordKey {
    kad::RecordKey::new(&blob.0)
}
