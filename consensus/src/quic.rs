//! Raft over QUIC (quinn) with mutual TLS (rustls, ring).
//!
//! Every member's certificate is signed by the cluster CA; a connection
//! without one may only ask to join (with a signed token); any other request
//! on it is refused. Each request is one bidirectional stream: `[kind u8]
//! [len u32 LE][postcard]`, answered with postcard bytes and FIN. A snapshot
//! is a header frame followed by the file's bytes; QUIC flow control is the
//! backpressure. Sizes are bounded and every call has a deadline.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::command::{Command, Response};
use crate::model::{MemberNode, NodeId};
use crate::network::{MESSAGE_MAX_BYTES, PeerRequest, PeerResponse, Transport, TransportError};
use crate::pki::{CLUSTER_SERVER_NAME, ClusterCa, NodeIdentity, PkiError, TokenClaims};
use crate::raft_types::{SnapshotMeta, SnapshotResponse, Vote};
use crate::state_machine::snapshot_file::SnapshotReader;

const ALPN: &[u8] = b"omega-raft/1";
const KIND_PEER: u8 = 1;
const KIND_JOIN: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
/// Largest snapshot accepted.
const SNAPSHOT_MAX_BYTES: u64 = 256 << 30;
/// Deadline of a request handled by the server.
const SERVE_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline of receiving and installing a snapshot.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Connection attempts give up after this long.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// A request's frame (head and payload) must arrive within this.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// The largest join request (a token is a few hundred bytes).
const JOIN_MAX_BYTES: usize = 16 << 10;
/// Connections without a member certificate open at once; more are closed.
const STRANGER_CONNECTIONS_MAX: usize = 32;
/// Streams one such connection may have open at once.
const STRANGER_STREAMS_MAX: u32 = 4;
/// Bytes a peer may have in flight to this node per stream and per
/// connection (QUIC flow control): what an unread stream can make it hold.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// See [`STREAM_WINDOW_BYTES`].
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Errors setting up QUIC.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// Joining failed.
    #[error("join: {0}")]
    Join(String),
}

fn tls_error(error: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(error.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &ClusterCa) -> Result<Arc<rustls::RootCertStore>, QuicError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.ca.cert_der.clone()))
        .map_err(tls_error)?;
    Ok(Arc::new(roots))
}

fn private_key(der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

fn chain(identity: &NodeIdentity) -> Vec<CertificateDer<'static>> {
    vec![
        CertificateDer::from(identity.node.cert_der.clone()),
        CertificateDer::from(identity.cluster.ca.cert_der.clone()),
    ]
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config.max_concurrent_bidi_streams(256_u32.into());
    // quinn's connection window is unbounded by default: bound what a peer
    // can make this node buffer.
    config.stream_receive_window(STREAM_WINDOW_BYTES.into());
    config.receive_window(CONNECTION_WINDOW_BYTES.into());
    config.keep_alive_interval(Some(Duration::from_secs(2)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        config.max_idle_timeout(Some(idle));
    }
    Arc::new(config)
}

/// The server side: members with a CA-signed certificate, or strangers who
/// may only join.
fn server_config(identity: &NodeIdentity) -> Result<quinn::ServerConfig, QuicError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&identity.cluster)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(identity), private_key(&identity.node.key_der))
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// The client side of a member: verifies peers by the CA, presents its own
/// certificate.
fn member_client_config(identity: &NodeIdentity) -> Result<quinn::ClientConfig, QuicError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots(&identity.cluster)?)
        .with_client_auth_cert(chain(identity), private_key(&identity.node.key_der))
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// Verifies a server by the CA whose fingerprint a join token names: the
/// joiner has no CA yet, so it pins the one the token vouches for.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| blake3::hash(cert).as_bytes() == &self.fingerprint)
            .ok_or_else(|| rustls::Error::General("the server is not of the cluster the token names".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| rustls::Error::General(error.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn joiner_client_config(fingerprint: [u8; 32]) -> Result<quinn::ClientConfig, QuicError> {
    let verifier = Arc::new(PinnedCa {
        fingerprint,
        provider: provider(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// A join request: the token, and nothing else is trusted.
#[derive(Debug, Serialize, Deserialize)]
struct JoinRequest {
    token: String,
}

/// The answer to a join: the new node's identity (CA included), or why not.
type JoinResponse = Result<NodeIdentity, String>;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(kind);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, TransportError> {
    let bytes = postcard::to_stdvec(value).map_err(|error| TransportError::Network(error.to_string()))?;
    if bytes.len() > MESSAGE_MAX_BYTES {
        return Err(TransportError::Network(format!(
            "a message of {} bytes exceeds the {MESSAGE_MAX_BYTES}-byte bound",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn network(error: impl std::fmt::Display) -> TransportError {
    TransportError::Network(error.to_string())
}

/// Sends one framed request on a new stream and reads the answer.
async fn round_trip<R: serde::de::DeserializeOwned>(
    connection: &quinn::Connection,
    kind: u8,
    payload: &[u8],
) -> Result<R, TransportError> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(network)?;
    send.write_all(&frame(kind, payload)).await.map_err(network)?;
    send.finish().map_err(network)?;
    let bytes = recv.read_to_end(MESSAGE_MAX_BYTES).await.map_err(network)?;
    postcard::from_bytes(&bytes).map_err(network)
}

/// Asks a member at `addr` to admit this node with `token`; returns the new
/// identity. The member is authenticated by the CA the token pins.
pub async fn join(addr: SocketAddr, token: &str) -> Result<NodeIdentity, QuicError> {
    let (claims, _, _) = TokenClaims::parse_unverified(token).map_err(|error| QuicError::Join(error.to_string()))?;
    let local: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(tls_error)?;
    let endpoint = quinn::Endpoint::client(local).map_err(|source| QuicError::Bind { addr: local, source })?;
    let connecting = endpoint
        .connect_with(joiner_client_config(claims.ca_fingerprint)?, addr, CLUSTER_SERVER_NAME)
        .map_err(|error| QuicError::Join(error.to_string()))?;
    let connection = tokio::time::timeout(CONNECT_DEADLINE, connecting)
        .await
        .map_err(|_| QuicError::Join(format!("no answer from {addr}")))?
        .map_err(|error| QuicError::Join(format!("{addr}: {error}")))?;
    let request = postcard::to_stdvec(&JoinRequest {
        token: token.to_owned(),
    })
    .map_err(tls_error)?;
    let response: JoinResponse = tokio::time::timeout(SERVE_DEADLINE, round_trip(&connection, KIND_JOIN, &request))
        .await
        .map_err(|_| QuicError::Join("the member did not answer in time".into()))?
        .map_err(|error| QuicError::Join(error.to_string()))?;
    connection.close(0_u32.into(), b"joined");
    endpoint.wait_idle().await;
    response.map_err(QuicError::Join)
}

/// The QUIC endpoint of a member: its server and its client connections.
#[derive(Debug)]
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    /// Open connections by member, with the address text they were opened
    /// for (a member whose recorded address changes is dialled anew).
    connections: Mutex<HashMap<NodeId, (String, quinn::Connection)>>,
    /// Set once a member answered that this node was removed from the
    /// cluster (see [`REMOVED_NOTICE`]).
    told_removed: std::sync::atomic::AtomicBool,
}

impl QuicTransport {
    /// Binds `listen` with `identity`'s certificate.
    pub fn bind(listen: SocketAddr, identity: &NodeIdentity) -> Result<QuicTransport, QuicError> {
        let mut endpoint = quinn::Endpoint::server(server_config(identity)?, listen)
            .map_err(|source| QuicError::Bind { addr: listen, source })?;
        endpoint.set_default_client_config(member_client_config(identity)?);
        Ok(QuicTransport {
            endpoint,
            connections: Mutex::new(HashMap::new()),
            told_removed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A client-only endpoint (no server): for tools that talk to members
    /// with a certificate issued by the cluster's CA, such as `bench raft`.
    pub fn client(identity: &NodeIdentity) -> Result<QuicTransport, QuicError> {
        let local: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut endpoint = quinn::Endpoint::client(local).map_err(|source| QuicError::Bind { addr: local, source })?;
        endpoint.set_default_client_config(member_client_config(identity)?);
        Ok(QuicTransport {
            endpoint,
            connections: Mutex::new(HashMap::new()),
            told_removed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    fn cached(&self, target: NodeId, addr: &str) -> Option<quinn::Connection> {
        let connections = self.connections.lock().unwrap_or_else(|poison| poison.into_inner());
        connections
            .get(&target)
            .filter(|(cached_addr, connection)| cached_addr == addr && connection.close_reason().is_none())
            .map(|(_, connection)| connection.clone())
    }

    async fn connection(&self, target: NodeId, node: &MemberNode) -> Result<quinn::Connection, TransportError> {
        if let Some(connection) = self.cached(target, &node.cluster_addr) {
            return Ok(connection);
        }
        let addr = resolve(&node.cluster_addr).await?;
        let connecting = self
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|error| TransportError::Unreachable(error.to_string()))?;
        let connection = tokio::time::timeout(CONNECT_DEADLINE, connecting)
            .await
            .map_err(|_| TransportError::Unreachable(format!("no answer from {addr}")))?
            .map_err(|error| TransportError::Unreachable(format!("{addr}: {error}")))?;
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(target, (node.cluster_addr.clone(), connection.clone()));
        Ok(connection)
    }

    fn forget(&self, target: NodeId) {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&target);
    }

    /// True once a member refused this node because it was removed from
    /// the cluster (`omega cluster remove`, or `leave` on this node). Only a
    /// member that applied the removal says so: a node still in the
    /// membership is never told.
    pub fn told_removed(&self) -> bool {
        self.told_removed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.endpoint.close(0_u32.into(), b"shutdown");
    }
}

impl Transport for QuicTransport {
    async fn call(
        &self,
        target: NodeId,
        node: &MemberNode,
        request: PeerRequest,
        deadline: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let payload = encode(&request)?;
        let result = tokio::time::timeout(deadline, async {
            let connection = self.connection(target, node).await?;
            round_trip::<PeerResponse>(&connection, KIND_PEER, &payload).await
        })
        .await
        .unwrap_or(Err(TransportError::Timeout(deadline)));
        match &result {
            Err(_) => self.forget(target),
            Ok(PeerResponse::Error(text)) if text.contains(REMOVED_NOTICE) => {
                self.told_removed.store(true, std::sync::atomic::Ordering::Release);
            }
            Ok(_) => {}
        }
        result
    }

    async fn send_snapshot(
        &self,
        target: NodeId,
        node: &MemberNode,
        vote: Vote,
        meta: SnapshotMeta,
        data: File,
        deadline: Duration,
    ) -> Result<SnapshotResponse, TransportError> {
        let header = encode(&(vote, meta))?;
        let result = tokio::time::timeout(deadline, async {
            let connection = self.connection(target, node).await?;
            let (mut send, mut recv) = connection.open_bi().await.map_err(network)?;
            send.write_all(&frame(KIND_SNAPSHOT, &header)).await.map_err(network)?;
            let mut file = tokio::fs::File::from_std(data);
            file.rewind().await.map_err(network)?;
            let mut buffer = vec![0_u8; 1 << 20];
            loop {
                let read = file.read(&mut buffer).await.map_err(network)?;
                if read == 0 {
                    break;
                }
                // Waits while the receiver's flow-control window is full.
                send.write_all(&buffer[..read]).await.map_err(network)?;
            }
            send.finish().map_err(network)?;
            let bytes = recv.read_to_end(MESSAGE_MAX_BYTES).await.map_err(network)?;
            let answer: Result<SnapshotResponse, String> = postcard::from_bytes(&bytes).map_err(network)?;
            answer.map_err(TransportError::Network)
        })
        .await
        .unwrap_or(Err(TransportError::Timeout(deadline)));
        if result.is_err() {
            self.forget(target);
        }
        result
    }
}

/// Makes a newly admitted node a voting member: asks the member at `via`
/// (following redirects to the leader) to add it as a learner, wait until it
/// caught up, and promote it. The node's Raft must be serving already.
pub async fn become_member(
    transport: &QuicTransport,
    via: SocketAddr,
    id: NodeId,
    member: MemberNode,
) -> Result<(), TransportError> {
    /// Target id for an address whose node id is not known.
    const UNKNOWN: NodeId = u64::MAX;
    let mut target = MemberNode {
        cluster_addr: via.to_string(),
        ..MemberNode::default()
    };
    let mut last = String::from("no answer");
    for attempt in 0..8_u32 {
        let request = PeerRequest::AddMember {
            id,
            member: member.clone(),
        };
        let answer = transport.call(UNKNOWN, &target, request, SERVE_DEADLINE).await;
        transport.forget(UNKNOWN);
        match answer {
            Ok(PeerResponse::Done) => return Ok(()),
            Ok(PeerResponse::NotLeader {
                leader: Some((_, leader)),
            }) => target = leader,
            Ok(PeerResponse::NotLeader { leader: None }) => last = "no leader yet".into(),
            // Another node is joining at the same moment (compose starts
            // two at once): one membership change at a time, so wait.
            Ok(PeerResponse::Error(error)) if error.contains("undergoing a configuration change") => last = error,
            // A large state takes more than one try to send.
            Ok(PeerResponse::Error(error)) if error.contains(crate::cluster::CATCHING_UP) => last = error,
            Ok(PeerResponse::Error(error)) => return Err(TransportError::Network(error)),
            Ok(other) => return Err(TransportError::Network(format!("unexpected answer {other:?}"))),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    Err(TransportError::Unreachable(last))
}

/// A member's recorded cluster address: an IP and port, or a host name and
/// port, looked up at each new connection (so that a name follows a member
/// whose IP changes: a rescheduled pod, a new DHCP lease).
async fn resolve(text: &str) -> Result<SocketAddr, TransportError> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    tokio::time::timeout(CONNECT_DEADLINE, tokio::net::lookup_host(text))
        .await
        .map_err(|_| TransportError::Unreachable(format!("{text}: the name did not resolve in time")))?
        .map_err(|error| TransportError::Unreachable(format!("{text}: {error}")))?
        .next()
        .ok_or_else(|| TransportError::Unreachable(format!("{text}: the name has no address")))
}

/// What the server needs besides the cluster: the CA (to admit joiners),
/// the clock, and where incoming snapshots are written.
#[derive(Debug, Clone)]
pub struct ServerContext {
    /// The cluster's CA.
    pub ca: ClusterCa,
    /// Wall clock for token expiry.
    pub clock: Arc<dyn Clock>,
    /// Directory for incoming snapshot files.
    pub incoming_dir: PathBuf,
}

/// Accepts connections until the endpoint closes.
pub async fn serve(cluster: Arc<Cluster<QuicTransport>>, transport: Arc<QuicTransport>, context: ServerContext) {
    let context = Arc::new(context);
    let strangers = Arc::new(tokio::sync::Semaphore::new(STRANGER_CONNECTIONS_MAX));
    while let Some(incoming) = transport.endpoint.accept().await {
        let cluster = cluster.clone();
        let context = context.clone();
        let strangers = strangers.clone();
        tokio::spawn(async move {
            let connection = match tokio::time::timeout(CONNECT_DEADLINE, incoming).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // rustls verified any certificate presented against the CA.
            let fingerprint = peer_fingerprint(&connection);
            let node = peer_node_id(&connection);
            let member = fingerprint.is_some() && node.is_some();
            // A peer without a member certificate may only join: few such
            // connections at once, few streams each.
            let _stranger_place = if member {
                None
            } else {
                let Ok(place) = strangers.try_acquire_owned() else {
                    connection.close(1_u32.into(), b"busy");
                    return;
                };
                connection.set_max_concurrent_bi_streams(STRANGER_STREAMS_MAX.into());
                Some(place)
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                let cluster = cluster.clone();
                let context = context.clone();
                let fingerprint = fingerprint.clone();
                tokio::spawn(async move {
                    // Checked per request: a member removed while connected
                    // is refused from its removal on.
                    let standing = match (member, fingerprint, node) {
                        (true, Some(fingerprint), Some(id)) => standing(&cluster, &fingerprint, id),
                        _ => Standing::Stranger,
                    };
                    if let Err(error) = serve_stream(&cluster, &context, standing, send, recv).await {
                        tracing::debug!(%error, "request failed");
                    }
                });
            }
        });
    }
}

/// Part of the refusal a removed node receives; its transport watches for
/// it (see [`QuicTransport::told_removed`]), so that it stops instead of
/// calling elections forever.
pub const REMOVED_NOTICE: &str = "was removed from the cluster";

/// What a peer with a CA-signed certificate may do on this port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// A member: every request.
    Member,
    /// A member once, removed since: refused, and told so.
    Removed(NodeId),
    /// Anyone else: only a join.
    Stranger,
}

/// The standing of the peer whose certificate has `fingerprint` and names
/// node `id`. It may speak as a member while it is in the membership as
/// this node knows it, or a join token admitted it, and it was never
/// removed. A certificate alone proves only that some holder of the CA key
/// (every member, and every removed one) signed it. A member that lags
/// behind a new node's admission refuses it until it catches up, as if the
/// link between them were down for that while.
fn standing(cluster: &Cluster<QuicTransport>, fingerprint: &str, id: NodeId) -> Standing {
    let tables = cluster.tables();
    // The membership first: it is in memory, and the revoked table is read
    // only for peers outside it (a member never has a revoked id, as ids
    // are not reused and removal takes it out of the membership).
    if cluster.has_member(id) && !crate::state_machine::read::is_revoked(tables, fingerprint).unwrap_or(true) {
        return Standing::Member;
    }
    let revoked = crate::state_machine::read::is_node_revoked(tables, id).unwrap_or(false)
        || crate::state_machine::read::is_revoked(tables, fingerprint).unwrap_or(false);
    if revoked {
        return Standing::Removed(id);
    }
    if crate::state_machine::read::was_admitted(tables, id).unwrap_or(false) {
        Standing::Member
    } else {
        Standing::Stranger
    }
}

/// The node id the peer's certificate names (`CN=omega node N`), if any.
fn peer_node_id(connection: &quinn::Connection) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    crate::pki::node_id_of_common_name(&common_name)
}

/// BLAKE3 (hex) of the certificate the peer presented, if any.
fn peer_fingerprint(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|leaf| blake3::hash(leaf).to_hex().to_string())
}

async fn serve_stream(
    cluster: &Cluster<QuicTransport>,
    context: &ServerContext,
    standing: Standing,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), TransportError> {
    let member = standing == Standing::Member;
    let mut head = [0_u8; 5];
    tokio::time::timeout(READ_DEADLINE, recv.read_exact(&mut head))
        .await
        .map_err(|_| network("no request head within the read deadline"))?
        .map_err(network)?;
    let kind = head[0];
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    // Who may send what is decided before any payload is read or allocated.
    let refusal = match (kind, member) {
        (KIND_JOIN, _) if len > JOIN_MAX_BYTES => Some(format!("a join request of {len} bytes is too large")),
        (KIND_JOIN, _) => None,
        (_, false) => Some(match standing {
            Standing::Removed(id) => format!("refused: node {id} {REMOVED_NOTICE}"),
            _ => "refused: no valid cluster certificate".to_owned(),
        }),
        _ if len > MESSAGE_MAX_BYTES => Some(format!("a request of {len} bytes is too large")),
        _ => None,
    };
    if let Some(refusal) = refusal {
        let _ = recv.stop(1_u32.into());
        if kind == KIND_JOIN {
            let answer: JoinResponse = Err(refusal);
            return reply(&mut send, &answer).await;
        }
        return reply(&mut send, &PeerResponse::Error(refusal)).await;
    }
    let mut payload = vec![0_u8; len];
    tokio::time::timeout(READ_DEADLINE, recv.read_exact(&mut payload))
        .await
        .map_err(|_| network("the request did not arrive within the read deadline"))?
        .map_err(network)?;
    match (kind, member) {
        (KIND_JOIN, _) => {
            let answer = match postcard::from_bytes::<JoinRequest>(&payload) {
                Ok(request) => tokio::time::timeout(SERVE_DEADLINE, admit(cluster, context, &request.token))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into())),
                Err(error) => Err(format!("malformed join request: {error}")),
            };
            reply(&mut send, &answer).await
        }
        // Refused above; answered again rather than trusted to stay so.
        (_, false) => {
            reply(
                &mut send,
                &PeerResponse::Error("refused: no valid cluster certificate".into()),
            )
            .await
        }
        (KIND_PEER, true) => {
            let answer = match postcard::from_bytes::<PeerRequest>(&payload) {
                Ok(request) => tokio::time::timeout(SERVE_DEADLINE, cluster.handle(request))
                    .await
                    .unwrap_or_else(|_| PeerResponse::Error("timed out".into())),
                Err(error) => PeerResponse::Error(format!("malformed request: {error}")),
            };
            reply(&mut send, &answer).await
        }
        (KIND_SNAPSHOT, true) => {
            let answer = match postcard::from_bytes::<(Vote, SnapshotMeta)>(&payload) {
                Ok((vote, meta)) => tokio::time::timeout(
                    SNAPSHOT_DEADLINE,
                    receive_snapshot(cluster, context, vote, meta, &mut recv),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
                Err(error) => Err(format!("malformed snapshot header: {error}")),
            };
            reply(&mut send, &answer).await
        }
        (other, true) => reply(&mut send, &PeerResponse::Error(format!("unknown request kind {other}"))).await,
    }
}

async fn reply<T: Serialize>(send: &mut quinn::SendStream, answer: &T) -> Result<(), TransportError> {
    let bytes = postcard::to_stdvec(answer).map_err(network)?;
    send.write_all(&bytes).await.map_err(network)?;
    send.finish().map_err(network)
}

async fn receive_snapshot(
    cluster: &Cluster<QuicTransport>,
    context: &ServerContext,
    vote: Vote,
    meta: SnapshotMeta,
    recv: &mut quinn::RecvStream,
) -> Result<SnapshotResponse, String> {
    let path = context
        .incoming_dir
        .join(format!("incoming-{:016x}.tmp", rand::random::<u64>()));
    let result = async {
        // Read and write: the state machine reads it back to install it.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| error.to_string())?;
        let mut total = 0_u64;
        while let Some(chunk) = recv
            .read_chunk(1 << 20, true)
            .await
            .map_err(|error| error.to_string())?
        {
            total += chunk.bytes.len() as u64;
            if total > SNAPSHOT_MAX_BYTES {
                let _ = recv.stop(1_u32.into());
                return Err(format!("a snapshot over {SNAPSHOT_MAX_BYTES} bytes is refused"));
            }
            file.write_all(&chunk.bytes).map_err(|error| error.to_string())?;
        }
        file.sync_all().map_err(|error| error.to_string())?;
        // A damaged file is refused here, as a failed send the leader
        // retries; handed to Raft it would be a fatal storage error.
        let check = path.clone();
        tokio::task::spawn_blocking(move || {
            let (reader, _) = SnapshotReader::open(File::open(&check)?)?;
            reader.verify_to_end()
        })
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
        file.rewind().map_err(|error| error.to_string())?;
        cluster
            .install_snapshot(vote, meta, file)
            .await
            .map_err(|error| error.to_string())
    }
    .await;
    let _ = std::fs::remove_file(&path);
    result
}

/// Admits a joining node: checks the token, records its use (which gives
/// the node id), and issues the node's certificate.
async fn admit(cluster: &Cluster<QuicTransport>, context: &ServerContext, token: &str) -> JoinResponse {
    let now_ms = context.clock.now_ms();
    let claims = context
        .ca
        .verify_token(token, now_ms)
        .map_err(|error: PkiError| error.to_string())?;
    let response = cluster
        .write(Command::ConsumeJoinToken {
            token_id: claims.token_id,
            expires_ms: claims.expires_ms,
            now_ms,
        })
        .await
        .map_err(|error| error.to_string())?;
    let node_id = match response {
        Response::NodeId(id) => id,
        Response::Rejected(rejection) => return Err(rejection.to_string()),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let node = context.ca.issue(node_id).map_err(|error| error.to_string())?;
    tracing::info!(node_id, "admitted a node");
    Ok(NodeIdentity {
        node_id,
        cluster: context.ca.clone(),
        node,
    })
}

/// A member running over QUIC: its cluster handle, its endpoint, and the
/// task serving other members.
#[derive(Debug)]
pub struct QuicMember {
    /// The Raft member.
    pub cluster: Arc<Cluster<QuicTransport>>,
    /// Its endpoint.
    pub transport: Arc<QuicTransport>,
    /// The address it listens on.
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl QuicMember {
    /// Binds `listen`, opens the member's state under `dir` and starts
    /// serving. `dir` holds `raft/` and `snapshots/`.
    pub async fn start(
        identity: &NodeIdentity,
        listen: SocketAddr,
        dir: &std::path::Path,
        timing: crate::cluster::Timing,
        clock: Arc<dyn Clock>,
    ) -> Result<QuicMember, crate::cluster::ClusterError> {
        let transport = Arc::new(
            QuicTransport::bind(listen, identity)
                .map_err(|error| crate::cluster::ClusterError::Config(error.to_string()))?,
        );
        let addr = transport.local_addr()?;
        let cluster = Arc::new(Cluster::start(identity.node_id, dir, transport.clone(), timing).await?);
        let context = ServerContext {
            ca: identity.cluster.clone(),
            clock,
            incoming_dir: dir.join("snapshots"),
        };
        let server = tokio::spawn(serve(cluster.clone(), transport.clone(), context));
        Ok(QuicMember {
            cluster,
            transport,
            addr,
            server,
        })
    }

    /// What other members need to reach this one.
    pub fn member_node(&self, identity: &NodeIdentity, http_addr: String) -> MemberNode {
        MemberNode {
            cluster_addr: self.addr.to_string(),
            http_addr,
            p2p_peer_id: None,
            cert_fingerprint: identity.node.fingerprint(),
        }
    }

    /// Stops Raft and the endpoint.
    pub async fn shutdown(&self) -> Result<(), crate::cluster::ClusterError> {
        let result = self.cluster.shutdown().await;
        self.transport.close();
        self.server.abort();
        result
    }
}

#[cfg(test)]
mod tests;
