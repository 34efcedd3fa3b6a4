//! Real swarms on loopback QUIC: a blob fetched from several providers,
//! one of which serves corrupt bytes (detected, banned, re-fetched
//! elsewhere, left out of the next fetch) or vanishes mid-transfer;
//! resumption from a part file; grants enforced; floods, unknown
//! hashes and malformed frames answered without hurting other peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use omega_p2p::service::Limits;
use omega_p2p::wire::{self, Request, Status};
use omega_p2p::{FetchOptions, Grant, Keypair, Manifest, P2p, P2pConfig, PeerId, Piece, PieceSource, Provider};
use omega_storage::{BlobId, ChunkId};
use rand::{RngCore, SeedableRng};

struct MemSource {
    blob: BlobId,
    pieces: HashMap<ChunkId, Vec<u8>>,
    corrupt: bool,
    /// Time taken per piece (a slow provider).
    delay: Duration,
    members: Vec<PeerId>,
}

impl PieceSource for MemSource {
    fn piece(&self, blob: &BlobId, piece: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        if *blob != self.blob {
            return Ok(None);
        }
        // Runs on a blocking thread.
        std::thread::sleep(self.delay);
        Ok(self.pieces.get(piece).map(|bytes| {
            let mut bytes = bytes.clone();
            if self.corrupt {
                bytes[0] ^= 0x55;
            }
            bytes
        }))
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains(peer)
    }
}

struct Fixture {
    data: Vec<u8>,
    blob: BlobId,
    pieces: Vec<Piece>,
    keys: Vec<Keypair>,
}

fn fixture(size: usize, piece_len: usize, members: usize) -> Fixture {
    let mut data = vec![0_u8; size];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
    let pieces = data
        .chunks(piece_len)
        .enumerate()
        .map(|(index, bytes)| Piece {
            hash: ChunkId::of(bytes),
            offset: (index * piece_len) as u64,
            len: bytes.len() as u32,
        })
        .collect();
    Fixture {
        blob: BlobId::of(&data),
        data,
        pieces,
        keys: (0..members).map(|_| Keypair::generate_ed25519()).collect(),
    }
}

fn loopback() -> Vec<omega_p2p::Multiaddr> {
    vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]
}

impl Fixture {
    fn member_ids(&self) -> Vec<PeerId> {
        self.keys.iter().map(|key| key.public().to_peer_id()).collect()
    }

    async fn provider(&self, index: usize, corrupt: bool, limits: Limits) -> P2p {
        self.provider_with(index, corrupt, Duration::ZERO, limits).await
    }

    async fn provider_with(&self, index: usize, corrupt: bool, delay: Duration, limits: Limits) -> P2p {
        let source = MemSource {
            blob: self.blob,
            pieces: self
                .pieces
                .iter()
                .map(|piece| {
                    let start = piece.offset as usize;
                    (piece.hash, self.data[start..start + piece.len as usize].to_vec())
                })
                .collect(),
            corrupt,
            delay,
            members: self.member_ids(),
        };
        P2p::start(
            P2pConfig {
                keypair: self.keys[index].clone(),
                listen: loopback(),
                mdns: false,
                dht_server: true,
                limits,
            },
            Arc::new(source),
        )
        .await
        .unwrap()
    }

    fn manifest(&self, providers: &[(&P2p, bool)], client: &PeerId) -> Manifest {
        let grant = Grant::issue(&self.keys[0], client, &self.blob, omega_p2p::now_ms() + 60_000);
        Manifest::sign(
            &self.keys[0],
            self.blob,
            self.data.len() as u64,
            self.pieces.clone(),
            providers
                .iter()
                .map(|(p2p, origin)| Provider {
                    peer: p2p.peer_id().to_string(),
                    addrs: p2p.listen_addrs().iter().map(ToString::to_string).collect(),
                    origin: *origin,
                })
                .collect(),
            self.member_ids().iter().map(ToString::to_string).collect(),
            grant,
        )
    }
}

async fn client() -> P2p {
    struct Nothing;
    impl PieceSource for Nothing {
        fn piece(&self, _: &BlobId, _: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn is_member(&self, _: &PeerId) -> bool {
            false
        }
    }
    P2p::start(
        P2pConfig {
            keypair: Keypair::generate_ed25519(),
            listen: loopback(),
            mdns: false,
            dht_server: false,
            limits: Limits::default(),
        },
        Arc::new(Nothing),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_comes_from_several_providers_and_a_corrupt_one_is_caught_and_banned() {
    let fixture = fixture(3 << 20, 64 << 10, 3);
    let origin = fixture.provider(0, false, Limits::default()).await;
    let liar = fixture.provider(1, true, Limits::default()).await;
    let honest = fixture.provider(2, false, Limits::default()).await;
    let client = client().await;
    let manifest = fixture.manifest(&[(&origin, true), (&liar, false), (&honest, false)], &client.peer_id());
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("film.mkv");
    let options = FetchOptions {
        batch_bytes: 256 << 10,
        ..FetchOptions::default()
    };
    let report = omega_p2p::fetch::fetch(&client, &manifest, &out, &options)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), fixture.data, "byte-identical");
    assert!(!omega_p2p::fetch::part_path(&out).exists());
    assert!(report.verify_failures >= 1, "{report:?}");
    let by_peer = |p2p: &P2p| {
        report
            .sources
            .iter()
            .find(|source| source.peer == p2p.peer_id().to_string())
            .unwrap()
            .bytes
    };
    assert_eq!(by_peer(&liar), 0, "nothing kept from the liar: {report:?}");
    assert!(by_peer(&honest) > 0 && by_peer(&origin) > 0, "{report:?}");
    assert!(
        by_peer(&origin) * 2 < report.bytes,
        "the origin is spared while a peer serves: {report:?}"
    );
    assert_eq!(by_peer(&origin) + by_peer(&honest), report.bytes);
    // The liar was not asked again after its first bad piece: at most the
    // two batches a worker requests ahead left it.
    let sent_by_liar = liar.traffic()[&client.peer_id()].bytes_out;
    assert!(sent_by_liar <= 2 * (256 << 10), "{:?}", liar.traffic());
    // The penalty outlasts the fetch: the next one leaves the liar out.
    assert!(client.is_penalised(&liar.peer_id()));
    let again = folder.path().join("again.mkv");
    let report = omega_p2p::fetch::fetch(&client, &manifest, &again, &options)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), fixture.data);
    assert!(
        report
            .sources
            .iter()
            .all(|source| source.peer != liar.peer_id().to_string()),
        "{report:?}"
    );
    assert_eq!(report.verify_failures, 0);
    assert_eq!(
        liar.traffic()[&client.peer_id()].bytes_out,
        sent_by_liar,
        "the liar was not asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_vanishing_mid_transfer_leaves_its_pieces_to_the_others() {
    let fixture = fixture(4 << 20, 64 << 10, 2);
    let origin = fixture.provider(0, false, Limits::default()).await;
    // 20 ms a piece: the peer is still at work when it vanishes.
    let vanishing = fixture
        .provider_with(1, false, Duration::from_millis(20), Limits::default())
        .await;
    let client = client().await;
    let manifest = fixture.manifest(&[(&origin, true), (&vanishing, false)], &client.peer_id());
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("film.mkv");
    let options = FetchOptions {
        batch_bytes: 128 << 10,
        piece_within: Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let vanished_id = vanishing.peer_id().to_string();
    let sent_before = {
        let vanishing = vanishing.clone();
        let client_id = client.peer_id();
        tokio::spawn(async move {
            // It vanishes once it has sent something (a loaded machine
            // may take a while to connect).
            let sent = || {
                vanishing
                    .traffic()
                    .get(&client_id)
                    .map_or(0, |traffic| traffic.bytes_out)
            };
            for _ in 0..1000 {
                if sent() > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let sent = sent();
            drop(vanishing);
            sent
        })
    };
    drop(vanishing);
    let report = omega_p2p::fetch::fetch(&client, &manifest, &out, &options)
        .await
        .unwrap();
    assert!(sent_before.await.unwrap() > 0, "the peer vanished mid-transfer");
    assert_eq!(std::fs::read(&out).unwrap(), fixture.data, "byte-identical");
    let from = |peer: &str| {
        report
            .sources
            .iter()
            .find(|source| source.peer == peer)
            .map_or(0, |source| source.bytes)
    };
    assert!(from(&vanished_id) < report.bytes, "{report:?}");
    assert_eq!(
        from(&origin.peer_id().to_string()) + from(&vanished_id),
        report.bytes,
        "{report:?}"
    );
    assert_eq!(report.verify_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_from_its_part_file() {
    let fixture = fixture(1 << 20, 32 << 10, 1);
    let origin = fixture.provider(0, false, Limits::default()).await;
    let client = client().await;
    let manifest = fixture.manifest(&[(&origin, true)], &client.peer_id());
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("song.flac");
    // The first 10 pieces arrived before the interruption; the 11th is torn.
    let mut part = fixture.data[..(10 * (32 << 10)) + 100].to_vec();
    part.extend([0_u8; 1000]);
    std::fs::write(omega_p2p::fetch::part_path(&out), &part).unwrap();
    let report = omega_p2p::fetch::fetch(&client, &manifest, &out, &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.resumed_bytes, 10 * (32 << 10));
    assert_eq!(report.sources[0].bytes, (1 << 20) - (10 * (32 << 10)));
    assert_eq!(std::fs::read(&out).unwrap(), fixture.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_grant_an_outsider_gets_nothing() {
    let fixture = fixture(256 << 10, 32 << 10, 1);
    let origin = fixture.provider(0, false, Limits::default()).await;
    let client = client().await;
    // A grant for someone else.
    let manifest = fixture.manifest(&[(&origin, true)], &Keypair::generate_ed25519().public().to_peer_id());
    let folder = tempfile::tempdir().unwrap();
    let error = omega_p2p::fetch::fetch(&client, &manifest, &folder.path().join("x"), &FetchOptions::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("8 of 8 pieces could not be fetched"),
        "{error}"
    );
    assert_eq!(
        origin.traffic().values().map(|traffic| traffic.bytes_out).sum::<u64>(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_unknown_hashes_and_bad_frames_are_answered_and_others_still_served() {
    let fixture = fixture(512 << 10, 32 << 10, 1);
    // A request costs a token per piece: eight pieces a request against a
    // burst of 64 and 5 a second.
    let limits = Limits {
        pieces_per_second: 5.0,
        burst: 64.0,
        ..Limits::default()
    };
    let origin = fixture.provider(0, false, limits).await;
    let flooder = client().await;
    flooder
        .dial(
            origin.peer_id(),
            origin.listen_addrs().to_vec(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let grant = Grant::issue(
        &fixture.keys[0],
        &flooder.peer_id(),
        &fixture.blob,
        omega_p2p::now_ms() + 60_000,
    );
    let mut stream = flooder.open(origin.peer_id()).await.unwrap();
    let mut busy = 0;
    for _ in 0..60 {
        let pieces: Vec<[u8; 32]> = (0..8)
            .map(|index| {
                if index % 2 == 0 {
                    [9; 32]
                } else {
                    fixture.pieces[0].hash.0
                }
            })
            .collect();
        let request = Request {
            blob: fixture.blob.0,
            grant: Some(grant.clone()),
            pieces,
        };
        wire::write_request(&mut stream, &request).await.unwrap();
        let mut request_busy = false;
        for index in 0..8 {
            let (status, bytes) = wire::read_piece(&mut stream, 32 << 10).await.unwrap();
            match status {
                Status::Busy => request_busy = true,
                Status::NotFound => assert_eq!(index % 2, 0, "unknown hashes are not found"),
                Status::Ok => assert_eq!(bytes.len(), 32 << 10),
                Status::Denied => panic!("the grant is valid"),
            }
        }
        busy += usize::from(request_busy);
    }
    assert!(busy >= 30, "the flood was rate limited: {busy} busy of 60");
    // A frame over the limit: the provider drops the stream.
    let mut bad = flooder.open(origin.peer_id()).await.unwrap();
    bad.write_all(&(1_u32 << 30).to_be_bytes()).await.unwrap();
    bad.flush().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "nothing is answered to a malformed frame");
    // Meanwhile another client is served in full.
    let other = client().await;
    let manifest = fixture.manifest(&[(&origin, true)], &other.peer_id());
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("ok");
    omega_p2p::fetch::fetch(&other, &manifest, &out, &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), fixture.data);
}

/// Goal: strangers on the P2P port cannot starve a member. Method: 16
/// throwaway identities (not members, no grants) each connect to a member
/// and hold as many idle piece streams as one peer may (half a frame
/// sent, so each reaches the provider and waits there); another member
/// then fetches a blob from it, which must arrive byte-identical long
/// before the idle streams would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_holding_streams_do_not_starve_a_member() {
    let fixture = fixture(1 << 20, 32 << 10, 2);
    // Idle streams outlive the test: only admission can free their places.
    let limits = Limits {
        idle: Duration::from_secs(600),
        ..Limits::default()
    };
    let origin = fixture.provider(0, false, limits.clone()).await;
    let member = fixture.provider(1, false, Limits::default()).await;
    let mut strangers = Vec::new();
    let mut held = Vec::new();
    for _ in 0..16 {
        let stranger = client().await;
        let addrs = origin.listen_addrs().to_vec();
        // A connection refused by the provider's limits is as good.
        if stranger
            .dial(origin.peer_id(), addrs, Duration::from_secs(10))
            .await
            .is_ok()
        {
            for _ in 0..limits.max_streams_per_peer {
                let Ok(mut stream) = stranger.open(origin.peer_id()).await else {
                    break;
                };
                let _ = stream.write_all(&[0, 0]).await;
                let _ = stream.flush().await;
                held.push(stream);
            }
        }
        strangers.push(stranger);
    }
    // The provider takes in what reached it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let manifest = fixture.manifest(&[(&origin, true)], &member.peer_id());
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("film.mkv");
    let options = FetchOptions {
        piece_within: Duration::from_secs(10),
        ..FetchOptions::default()
    };
    let fetched = tokio::time::timeout(
        Duration::from_secs(30),
        omega_p2p::fetch::fetch(&member, &manifest, &out, &options),
    )
    .await;
    let report = fetched
        .expect("the member's fetch ends within 30 s")
        .expect("the member is served");
    assert_eq!(std::fs::read(&out).unwrap(), fixture.data, "byte-identical");
    assert_eq!(report.bytes, fixture.data.len() as u64);
    assert!(
        origin.traffic().keys().all(|peer| *peer == member.peer_id()),
        "nothing went to the strangers: {:?}",
        origin.traffic()
    );
    drop((held, strangers));
}

/// Goal: connections from non-members are bounded apart from members'.
/// Method: a provider takes four; 16 throwaway identities dial it and each
/// asks for a piece without a grant; at most four get an answer (Denied),
/// and a member still connects and fetches the blob whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_past_the_guest_connections_are_refused_and_members_still_connect() {
    let fixture = fixture(256 << 10, 32 << 10, 2);
    let limits = Limits {
        max_guest_connections: 4,
        ..Limits::default()
    };
    let origin = fixture.provider(0, false, limits).await;
    let member = fixture.provider(1, false, Limits::default()).await;
    let mut strangers = Vec::new();
    let mut answered = 0;
    for _ in 0..16 {
        let stranger = client().await;
        let addrs = origin.listen_addrs().to_vec();
        let _ = stranger.dial(origin.peer_id(), addrs, Duration::from_secs(10)).await;
        let request = Request {
            blob: fixture.blob.0,
            grant: None,
            pieces: vec![fixture.pieces[0].hash.0],
        };
        let asked = async {
            let mut stream = stranger.open(origin.peer_id()).await.ok()?;
            wire::write_request(&mut stream, &request).await.ok()?;
            wire::read_piece(&mut stream, 32 << 10).await.ok()
        };
        if let Ok(Some((status, _))) = tokio::time::timeout(Duration::from_secs(5), asked).await {
            assert_eq!(status, Status::Denied);
            answered += 1;
        }
        strangers.push(stranger);
    }
    assert!((1..=4).contains(&answered), "{answered} strangers answered");
    let manifest = fixture.manifest(&[(&origin, true)], &member.peer_id());
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("song.flac");
    omega_p2p::fetch::fetch(&member, &manifest, &out, &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), fixture.data);
    drop(strangers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_peers_on_the_topic_signed_by_its_sender_and_oversized_notices_are_refused() {
    let (one, two) = (client().await, client().await);
    for peer in [&one, &two] {
        peer.subscribe("omega/test/1").await.unwrap();
    }
    let mut received = two.gossip();
    one.dial(two.peer_id(), two.listen_addrs().to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    // The subscription travels once the peers are connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while one.publish("omega/test/1", b"hello".to_vec()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the topic never got a peer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.topic, "omega/test/1");
    assert_eq!(message.from, one.peer_id());
    assert_eq!(message.data, b"hello");
    let huge = vec![0_u8; omega_p2p::service::MAX_GOSSIP_BYTES + 1];
    assert!(one.publish("omega/test/1", huge).await.is_err());
}
