//! The node on the P2P data plane: its libp2p identity (kept in the data
//! directory), the pieces it serves (chunks of blobs in its store, each
//! verified as it is read), and the cluster's members as Raft records them
//! (`Command::SetPeer`): members fetch from each other freely, and their
//! keys sign the grants and manifests clients bring.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use omega_consensus::command::Command;
use omega_consensus::state_machine::read;
use omega_p2p::service::Limits;
use omega_p2p::{Keypair, Multiaddr, P2p, P2pConfig, PeerId, PieceSource};
use omega_storage::{BlobId, ChunkId, Store};

use crate::api::AppState;

/// How often the members' P2P records are read again.
const MEMBERS_EVERY: Duration = Duration::from_secs(2);

/// The node's P2P side.
#[derive(Clone, Debug)]
pub struct NodeP2p {
    /// The swarm.
    pub p2p: P2p,
    /// Members' peer ids, as Raft last said.
    pub members: Arc<RwLock<HashSet<PeerId>>>,
    /// The pieces it serves.
    pub index: Arc<PieceIndex>,
    /// What it keeps of what it relays.
    pub relay: Arc<crate::relay::Relay>,
    /// Bytes served, by role, and clients' reports.
    pub served: Arc<Served>,
}

/// Reads the members' peer ids from Raft's table.
pub type MemberReader = Box<dyn Fn() -> HashSet<PeerId> + Send + Sync>;

/// The least time between two reads of the members' table on a miss.
const MISS_REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Where a piece lies: in which stored blob, at what offset.
#[derive(Debug, Clone, Copy)]
struct Location {
    blob: BlobId,
    offset: u64,
    len: u32,
}

/// An id's pieces (a blob's, or a segment set's) by hash.
type PieceMap = Arc<HashMap<ChunkId, Location>>;

/// Ids whose piece maps are kept; past this, blob maps are dropped (they
/// are rebuilt from the store on the next request) and the oldest set
/// goes (the next manifest for it registers it again).
const INDEXED_MAX: usize = 256;

/// A segment set this node serves.
#[derive(Debug)]
struct RegisteredSet {
    id: BlobId,
    pieces: PieceMap,
    /// Pulled from its holder (a replica), not made here.
    relayed: bool,
    /// Its segments (stored blobs).
    segments: Arc<HashSet<BlobId>>,
}

/// The pieces this node serves, by id: blobs (built from the store on
/// first request, so a piece is found without decoding the blob's record
/// each time) and HLS segment sets (registered when a manifest lists
/// them: a set is not one blob in the store but many).
#[derive(Debug, Default)]
pub struct PieceIndex {
    /// Blob maps, and whether this node keeps the blob as a relay.
    blobs: Mutex<HashMap<BlobId, (PieceMap, bool)>>,
    sets: Mutex<std::collections::VecDeque<RegisteredSet>>,
}

impl PieceIndex {
    /// Registers the set `set` made of these stored segments; true when
    /// it was not registered (the first time, or again after it was dropped
    /// for room): the caller then announces it.
    pub fn register_set(
        &self,
        set: BlobId,
        segments: &[(BlobId, &omega_storage::records::BlobRecord)],
        relayed: bool,
    ) -> bool {
        let map: HashMap<ChunkId, Location> = segments
            .iter()
            .flat_map(|(blob, record)| {
                record.chunks.iter().map(|entry| {
                    (
                        entry.chunk,
                        Location {
                            blob: *blob,
                            offset: entry.offset,
                            len: entry.len,
                        },
                    )
                })
            })
            .collect();
        let registered = RegisteredSet {
            id: set,
            pieces: Arc::new(map),
            relayed,
            segments: Arc::new(segments.iter().map(|(blob, _)| *blob).collect()),
        };
        let mut sets = lock(&self.sets);
        let before = sets.len();
        sets.retain(|known| known.id != set);
        let first = sets.len() == before;
        if sets.len() >= INDEXED_MAX {
            sets.pop_front();
        }
        sets.push_back(registered);
        first
    }

    /// True when the set `set` is registered with at least `pieces`
    /// pieces.
    pub fn has_set(&self, set: &BlobId, pieces: usize) -> bool {
        lock(&self.sets)
            .iter()
            .any(|known| known.id == *set && known.pieces.len() >= pieces)
    }

    /// True when `segment` is a stored segment of the registered set `set`.
    pub fn set_has_segment(&self, set: &BlobId, segment: &BlobId) -> bool {
        lock(&self.sets)
            .iter()
            .any(|known| known.id == *set && known.segments.contains(segment))
    }

    /// The pieces served under `id`, and whether this node relays them
    /// (true) or is their origin.
    fn find(&self, store: &Store, relay: &crate::relay::Relay, id: &BlobId) -> Option<(PieceMap, bool)> {
        if let Some(known) = lock(&self.sets).iter().find(|known| known.id == *id) {
            return Some((known.pieces.clone(), known.relayed));
        }
        if let Some(found) = lock(&self.blobs).get(id) {
            return Some(found.clone());
        }
        let record = store.blob(id).ok()?;
        let map: PieceMap = Arc::new(
            record
                .chunks
                .iter()
                .map(|entry| {
                    (
                        entry.chunk,
                        Location {
                            blob: *id,
                            offset: entry.offset,
                            len: entry.len,
                        },
                    )
                })
                .collect(),
        );
        let found = (map, relay.keeps(id));
        let mut blobs = lock(&self.blobs);
        if blobs.len() >= INDEXED_MAX {
            blobs.clear();
        }
        blobs.insert(*id, found.clone());
        Some(found)
    }
}

/// Bytes this node served to peers, and what clients said they got.
#[derive(Debug, Default)]
pub struct Served {
    /// Pieces of what this node holds as origin.
    pub origin: AtomicU64,
    /// Pieces of what it keeps as a relay or replica.
    pub relayed: AtomicU64,
    /// Bytes clients reported getting from the origin.
    pub clients_from_origin: AtomicU64,
    /// Bytes clients reported getting from other peers.
    pub clients_from_peers: AtomicU64,
}

impl Served {
    /// Share of the bytes clients reported that did not come from the
    /// origin (`None` before any report).
    pub fn offload_ratio(&self) -> Option<f64> {
        let origin = self.clients_from_origin.load(Ordering::Relaxed);
        let peers = self.clients_from_peers.load(Ordering::Relaxed);
        let total = origin + peers;
        (total > 0).then(|| peers as f64 / total as f64)
    }

    /// Adds a client's report and updates the offload gauge.
    pub fn client_report(&self, from_origin: u64, from_peers: u64) {
        self.clients_from_origin.fetch_add(from_origin, Ordering::Relaxed);
        self.clients_from_peers.fetch_add(from_peers, Ordering::Relaxed);
        metrics::counter!("omega_p2p_client_bytes_total", "source" => "origin").increment(from_origin);
        metrics::counter!("omega_p2p_client_bytes_total", "source" => "peers").increment(from_peers);
        if let Some(ratio) = self.offload_ratio() {
            metrics::gauge!("omega_p2p_offload_ratio").set(ratio);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves chunks of the store's blobs and segment sets.
struct StorePieces {
    store: Arc<Store>,
    index: Arc<PieceIndex>,
    relay: Arc<crate::relay::Relay>,
    served: Arc<Served>,
    members: Arc<RwLock<HashSet<PeerId>>>,
    /// A peer not in `members` may have joined since the last refresh:
    /// read the table again (at most every [`MISS_REFRESH_EVERY`]).
    read_members: MemberReader,
    refreshed: std::sync::Mutex<std::time::Instant>,
}

impl PieceSource for StorePieces {
    fn piece(&self, blob: &BlobId, piece: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        let Some((map, relayed)) = self.index.find(&self.store, &self.relay, blob) else {
            return Ok(None);
        };
        let Some(place) = map.get(piece) else {
            return Ok(None);
        };
        // read_range verifies every chunk against its hash.
        match self
            .store
            .read_range(&place.blob, place.offset, place.offset + u64::from(place.len))
        {
            Ok(bytes) => {
                let size = bytes.len() as u64;
                if relayed {
                    self.served.relayed.fetch_add(size, Ordering::Relaxed);
                    metrics::counter!("omega_p2p_served_bytes_total", "role" => "relayed").increment(size);
                } else {
                    self.served.origin.fetch_add(size, Ordering::Relaxed);
                    metrics::counter!("omega_p2p_served_bytes_total", "role" => "origin").increment(size);
                }
                Ok(Some(bytes))
            }
            Err(error) => {
                tracing::warn!(%blob, %piece, "cannot serve a piece: {error}");
                Ok(None)
            }
        }
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        if self
            .members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(peer)
        {
            return true;
        }
        {
            let mut refreshed = self.refreshed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if refreshed.elapsed() < MISS_REFRESH_EVERY {
                return false;
            }
            *refreshed = std::time::Instant::now();
        }
        let members = (self.read_members)();
        let found = members.contains(peer);
        *self.members.write().unwrap_or_else(std::sync::PoisonError::into_inner) = members;
        found
    }
}

/// The node's key: made once, kept in `path` (owner-only).
pub fn load_or_create_key(path: &Path) -> anyhow::Result<Keypair> {
    if let Ok(bytes) = std::fs::read(path) {
        return Keypair::from_protobuf_encoding(&bytes).with_context(|| format!("{} is not a P2P key", path.display()));
    }
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair.to_protobuf_encoding().context("cannot encode the P2P key")?;
    omega_consensus::pki::write_private(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(keypair)
}

/// `/ip4/…/udp/PORT/quic-v1` for a socket address.
pub fn quic_multiaddr(addr: SocketAddr) -> Multiaddr {
    use omega_p2p::multiaddr::Protocol;
    Multiaddr::from(addr.ip())
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

/// The peer ids among members' records (unparsable ones skipped).
fn member_ids(peers: &[(u64, omega_consensus::model::Peer)]) -> HashSet<PeerId> {
    peers.iter().filter_map(|(_, peer)| peer.peer_id.parse().ok()).collect()
}

/// The members' peer ids as this node's applied state has them.
pub fn member_reader(cluster: Arc<omega_consensus::Cluster<omega_consensus::quic::QuicTransport>>) -> MemberReader {
    Box::new(move || member_ids(&read::peers(cluster.tables()).unwrap_or_default()))
}

/// Starts the node's swarm on `listen`, serving `store`.
pub async fn start(
    key_path: &Path,
    settings: &crate::config::P2pSettings,
    relay: crate::relay::Relay,
    store: Arc<Store>,
    read_members: MemberReader,
) -> anyhow::Result<NodeP2p> {
    let (listen, mdns) = (settings.listen, settings.mdns);
    let keypair = load_or_create_key(key_path)?;
    let members = Arc::new(RwLock::new(HashSet::new()));
    let index = Arc::new(PieceIndex::default());
    let relay = Arc::new(relay);
    relay.load(&store);
    let store_for_sets = store.clone();
    let served = Arc::new(Served::default());
    let source = Arc::new(StorePieces {
        store,
        index: index.clone(),
        relay: relay.clone(),
        served: served.clone(),
        members: members.clone(),
        read_members,
        refreshed: std::sync::Mutex::new(std::time::Instant::now()),
    });
    let p2p = P2p::start(
        P2pConfig {
            keypair,
            listen: vec![quic_multiaddr(listen)],
            mdns,
            dht_server: true,
            limits: Limits::default(),
        },
        source,
    )
    .await
    .with_context(|| format!("cannot start P2P on {listen}"))?;
    // What the relay cache kept from earlier runs is served again: say so.
    let mut kept = relay.kept();
    kept.extend(crate::relay::restore_sets(&store_for_sets, &index));
    if !kept.is_empty() {
        let p2p = p2p.clone();
        tokio::spawn(async move {
            let count = kept.len();
            for blob in kept {
                if p2p.provide(blob).await.is_err() {
                    return;
                }
            }
            tracing::info!(count, "kept blobs announced again");
        });
    }
    Ok(NodeP2p {
        p2p,
        members,
        index,
        relay,
        served,
    })
}

/// Keeps this node's record in Raft current and the members' set and DHT
/// routes up to date; runs until the node stops.
pub async fn keep_members(state: AppState, node: NodeP2p, node_id: u64) {
    let own = node.p2p.peer_id().to_string();
    let addrs: Vec<String> = node
        .p2p
        .listen_addrs()
        .iter()
        .map(ToString::to_string)
        .take(omega_consensus::model::PEER_ADDRS_MAX)
        .collect();
    let mut routed = HashSet::new();
    let mut interval = tokio::time::interval(MEMBERS_EVERY);
    loop {
        interval.tick().await;
        let Ok(peers) = read::peers(state.cluster.tables()) else {
            continue;
        };
        let recorded = peers
            .iter()
            .any(|(id, peer)| *id == node_id && peer.peer_id == own && peer.addrs == addrs);
        if !recorded && state.cluster.status().leader.is_some() {
            let command = Command::SetPeer {
                node: node_id,
                peer_id: own.clone(),
                addrs: addrs.clone(),
            };
            if let Err(error) = state.write(command).await {
                tracing::debug!("cannot record this node's peer yet: {error:?}");
            }
        }
        for (_, peer) in &peers {
            let Ok(peer_id) = peer.peer_id.parse::<PeerId>() else {
                continue;
            };
            if peer_id != node.p2p.peer_id() && routed.insert((peer_id, peer.addrs.clone())) {
                let addrs = peer.addrs.iter().filter_map(|addr| addr.parse().ok()).collect();
                let _ = node.p2p.add_server(peer_id, addrs).await;
            }
        }
        *node.members.write().unwrap_or_else(std::sync::PoisonError::into_inner) = member_ids(&peers);
    }
}
