//! The client side of the P2P data plane, shared by `omega fetch` and
//! `omega play`: the server's signed manifests, the pieces a client serves
//! to its peers (from the files it fetched, each piece verified before it
//! leaves), an HLS rendition's segments fetched over P2P where their hashes
//! are known and from the origin over HTTP where they are not made yet.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use omega_p2p::service::Limits;
use omega_p2p::{FetchOptions, FetchReport, Keypair, Manifest, P2p, P2pConfig, PeerId, PieceSource, SourceReport};
use omega_storage::{BlobId, ChunkId};

/// Largest HLS file taken over HTTP (a segment of a 4K remux at a high
/// rate is tens of MiB).
const MAX_HTTP_SEGMENT: u64 = 256 << 20;
/// Tries of an HTTP segment the origin is too busy to make.
const BUSY_TRIES: u32 = 20;

/// What a client serves under one id (a blob or a segment set): where each
/// piece lies in which file.
#[derive(Debug, Default, Clone)]
pub struct Served {
    /// Pieces by hash: file, offset, length.
    pieces: HashMap<ChunkId, (Arc<PathBuf>, u64, u32)>,
}

impl Served {
    /// Every piece of `manifest` at its own offset in `path` (or, while it
    /// is fetched, in its part file).
    pub fn whole(manifest: &Manifest, path: &Path) -> Served {
        let path = Arc::new(path.to_path_buf());
        Served {
            pieces: manifest
                .pieces
                .iter()
                .map(|piece| (piece.hash, (path.clone(), piece.offset, piece.len)))
                .collect(),
        }
    }
}

/// The pieces this client serves, verified as they are read.
#[derive(Debug)]
pub struct ClientPieces {
    served: RwLock<HashMap<BlobId, Served>>,
    members: RwLock<Vec<PeerId>>,
}

impl ClientPieces {
    /// Serves nothing yet; trusts `members` to sign grants.
    pub fn new(members: Vec<PeerId>) -> Arc<ClientPieces> {
        Arc::new(ClientPieces {
            served: RwLock::new(HashMap::new()),
            members: RwLock::new(members),
        })
    }

    /// Serves `served` under `id` (replacing what was served under it).
    pub fn serve(&self, id: BlobId, served: Served) {
        self.served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, served);
    }

    /// Trusts these members (a later manifest may list more).
    pub fn trust(&self, members: Vec<PeerId>) {
        *self.members.write().unwrap_or_else(std::sync::PoisonError::into_inner) = members;
    }
}

impl PieceSource for ClientPieces {
    fn piece(&self, blob: &BlobId, piece: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        let place = self
            .served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(blob)
            .and_then(|served| served.pieces.get(piece).cloned());
        let Some((path, offset, len)) = place else {
            return Ok(None);
        };
        let file = match std::fs::File::open(path.as_ref()) {
            Ok(file) => file,
            Err(_) => match std::fs::File::open(omega_p2p::fetch::part_path(&path)) {
                Ok(file) => file,
                Err(_) => return Ok(None),
            },
        };
        let mut bytes = vec![0_u8; len as usize];
        if file.read_exact_at(&mut bytes, offset).is_err() || ChunkId::of(&bytes) != *piece {
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(peer)
    }
}

/// A node's HTTP API, as a client with a token reaches it.
#[derive(Clone)]
pub struct Server {
    /// Its URL, without a trailing slash.
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        formatter
            .debug_struct("Server")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The node at `url`, reached with `token`.
    pub fn new(url: &str, token: &str) -> anyhow::Result<Server> {
        Ok(Server {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(120))
                .build()?,
        })
    }

    /// GETs `path`, whatever the answer.
    async fn send_get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))
    }

    /// GETs `path`; an answer other than 2xx is an error with the server's
    /// message.
    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let answer = self.send_get(path).await?;
        let status = answer.status();
        if status.is_success() {
            return Ok(answer);
        }
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let message = body["error"]
            .as_str()
            .or(body["message"].as_str())
            .unwrap_or("no details");
        bail!("{} answered {status} for {path}: {message}", self.url)
    }

    /// The signed manifest of `item` (of its `rendition`'s segments when
    /// given) for `peer`, verified; and the members it names.
    pub async fn manifest(
        &self,
        item: u64,
        peer: &PeerId,
        rendition: Option<&str>,
    ) -> anyhow::Result<(Manifest, Vec<PeerId>)> {
        let mut path = format!("/api/v1/items/{item}/manifest?peer={peer}");
        if let Some(rendition) = rendition {
            path.push_str(&format!("&rendition={rendition}"));
        }
        let manifest: Manifest = self
            .get(&path)
            .await?
            .json()
            .await
            .context("the manifest is not valid JSON")?;
        let members = manifest
            .verify()
            .map_err(|why| anyhow::anyhow!("the server's manifest: {why}"))?;
        if rendition.is_some() && manifest.segments.is_empty() {
            bail!("the server's manifest lists no segments");
        }
        Ok((manifest, members))
    }

    /// A playlist or other text of `item`'s HLS tree (`master.m3u8`,
    /// `NAME/index.m3u8`).
    pub async fn hls_text(&self, item: u64, file: &str) -> anyhow::Result<String> {
        let answer = self.get(&format!("/api/v1/items/{item}/hls/{file}")).await?;
        Ok(String::from_utf8_lossy(&bounded_body(answer, 1 << 20).await?).into_owned())
    }

    /// A file of `item`'s HLS tree as bytes (made by the origin if it was
    /// not yet); waits while every transcoding slot is busy.
    pub async fn hls_bytes(&self, item: u64, file: &str) -> anyhow::Result<Vec<u8>> {
        let path = format!("/api/v1/items/{item}/hls/{file}");
        for _ in 1..BUSY_TRIES {
            let answer = self.send_get(&path).await?;
            if answer.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let wait = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(2)
                    .clamp(1, 10);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            if !answer.status().is_success() {
                // The same request again, for the server's message.
                break;
            }
            return bounded_body(answer, MAX_HTTP_SEGMENT).await;
        }
        let answer = self.get(&path).await?;
        bounded_body(answer, MAX_HTTP_SEGMENT).await
    }
}

impl Server {
    /// Tells the server what a fetch got from the origin and from other
    /// peers (it counts toward the cluster's offload ratio); best effort.
    pub async fn report(&self, item: u64, report: &FetchReport) {
        let (from_origin, from_peers) = (report.bytes_from(true), report.bytes_from(false));
        let sent = self
            .http
            .post(format!("{}/api/v1/items/{item}/fetch-report", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "from_origin": from_origin, "from_peers": from_peers }))
            .send()
            .await;
        if let Err(error) = sent.and_then(reqwest::Response::error_for_status) {
            tracing::debug!("the fetch report was not taken: {error}");
        }
    }
}

/// A rendition name as `--rendition` takes it (they go into URLs as
/// they are).
pub fn parse_rendition(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '-' || character == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a rendition name (e.g. original, 720p, audio)"))
    }
}

/// The body, refused past `max` bytes.
async fn bounded_body(mut answer: reqwest::Response, max: u64) -> anyhow::Result<Vec<u8>> {
    if answer.content_length().is_some_and(|length| length > max) {
        bail!("the server sent a file larger than {max} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.context("the server's answer broke off")? {
        if (body.len() + chunk.len()) as u64 > max {
            bail!("the server sent a file larger than {max} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Starts a client's swarm on `listen` serving `pieces`, with the members
/// the manifest routes through (they route the DHT where seeding is
/// announced).
pub async fn start(
    listen: std::net::SocketAddr,
    pieces: Arc<ClientPieces>,
    manifest: &Manifest,
    members: &[PeerId],
    keypair: Keypair,
) -> anyhow::Result<P2p> {
    let p2p = P2p::start(
        P2pConfig {
            keypair,
            listen: vec![crate::p2p::quic_multiaddr(listen)],
            mdns: false,
            dht_server: false,
            limits: Limits::default(),
        },
        pieces,
    )
    .await?;
    for (member, addrs, _) in manifest.route_addrs() {
        if members.contains(&member) {
            p2p.add_server(member, addrs).await?;
        }
    }
    Ok(p2p)
}

/// Where one file of a fetched rendition lies in the assembled file.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Its name in the playlist.
    pub name: String,
    /// Its first byte in the assembled file.
    pub offset: u64,
    /// Its size.
    pub size: u64,
    /// BLAKE3 of its bytes as received.
    pub hash: BlobId,
}

/// A rendition fetched into one file: its files in playlist order
/// (`init.mp4`, then every segment: a fragmented MP4 that plays as it is).
#[derive(Debug)]
pub struct FetchedRendition {
    /// What the fetch did; HTTP bytes are one more source, the origin.
    pub report: FetchReport,
    /// Where each file lies.
    pub placed: Vec<Placed>,
}

/// The file next to `out` that a set's pieces are fetched into.
fn set_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".set");
    out.with_file_name(name)
}

/// Fetches `rendition` of `item` into `out`: the segments `manifest`
/// hashes from peers (each piece and each segment verified), the rest
/// from the origin over HTTP, all in playlist order.
pub async fn fetch_rendition(
    p2p: &P2p,
    pieces: &ClientPieces,
    server: &Server,
    item: u64,
    rendition: &str,
    manifest: &Manifest,
    out: &Path,
) -> anyhow::Result<FetchedRendition> {
    let started = std::time::Instant::now();
    let set = set_path(out);
    let mut report = if manifest.pieces.is_empty() {
        FetchReport {
            bytes: 0,
            sources: Vec::new(),
            verify_failures: 0,
            seconds: 0.0,
            resumed_bytes: 0,
        }
    } else {
        pieces.serve(manifest.blob, Served::whole(manifest, &set));
        omega_p2p::fetch::fetch(p2p, manifest, &set, &FetchOptions::default()).await?
    };
    let set_file = if manifest.pieces.is_empty() {
        None
    } else {
        Some(std::fs::File::open(&set).with_context(|| format!("cannot open {}", set.display()))?)
    };
    let part = omega_p2p::fetch::part_path(out);
    let file = std::fs::File::create(&part).with_context(|| format!("cannot write {}", part.display()))?;
    let mut placed = Vec::with_capacity(manifest.segments.len());
    let mut offset = 0_u64;
    let mut from_http = 0_u64;
    for segment in &manifest.segments {
        let bytes = match (segment.hash, &set_file) {
            (Some(_), Some(set_file)) => {
                let mut bytes = vec![0_u8; usize::try_from(segment.size)?];
                set_file.read_exact_at(&mut bytes, segment.offset)?;
                bytes
            }
            _ => {
                let bytes = server.hls_bytes(item, &format!("{rendition}/{}", segment.name)).await?;
                from_http += bytes.len() as u64;
                bytes
            }
        };
        let hash = BlobId::of(&bytes);
        // Fetched pieces were verified one by one and as segments; this
        // checks the copy out of the set file.
        if let Some(expected) = segment.hash
            && expected != hash
        {
            bail!("segment {} is not what the manifest says", segment.name);
        }
        file.write_all_at(&bytes, offset)?;
        placed.push(Placed {
            name: segment.name.clone(),
            offset,
            size: bytes.len() as u64,
            hash,
        });
        offset += bytes.len() as u64;
    }
    file.sync_all()?;
    std::fs::rename(&part, out).with_context(|| format!("cannot write {}", out.display()))?;
    pieces.serve(manifest.blob, served_from(manifest, &placed, out).0);
    if set_file.is_some() {
        let _ = std::fs::remove_file(&set);
    }
    if from_http > 0 {
        let origin = manifest.providers.iter().find(|provider| provider.origin);
        report.sources.push(SourceReport {
            peer: origin.map(|provider| provider.peer.clone()).unwrap_or_default(),
            addr: server.url.clone(),
            bytes: from_http,
            origin: true,
        });
    }
    report.bytes = offset;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(FetchedRendition { report, placed })
}

/// What a client that assembled `placed` into `out` can serve of the set
/// `manifest` describes: the pieces of each segment whose hash the
/// manifest gives and whose bytes match it. Also the names of segments
/// whose bytes differ from the manifest's hash.
pub fn served_from(manifest: &Manifest, placed: &[Placed], out: &Path) -> (Served, Vec<String>) {
    let path = Arc::new(out.to_path_buf());
    let mut served = Served::default();
    let mut differ = Vec::new();
    let by_name: HashMap<&str, &Placed> = placed.iter().map(|placed| (placed.name.as_str(), placed)).collect();
    let mut pieces = manifest.pieces.iter().peekable();
    for (segment, hash) in manifest.hashed_segments() {
        let end = segment.offset + segment.size;
        let inside: Vec<_> = std::iter::from_fn(|| pieces.next_if(|piece| piece.offset < end)).collect();
        let Some(placed) = by_name.get(segment.name.as_str()) else {
            continue;
        };
        if placed.hash != hash {
            differ.push(segment.name.clone());
            continue;
        }
        for piece in inside {
            let at = placed.offset + (piece.offset - segment.offset);
            served.pieces.insert(piece.hash, (path.clone(), at, piece.len));
        }
    }
    (served, differ)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use omega_p2p::Piece;
    use omega_p2p::manifest::Segment;

    use super::*;

    #[test]
    fn a_client_serves_the_pieces_of_the_segments_it_holds_at_their_place_in_its_file() {
        // The set holds segments 0 and 2 (1 was not made when the manifest
        // was signed); the client's file holds init, 0, 1, 2.
        let bytes = b"seg0seg2";
        let keypair = Keypair::generate_ed25519();
        let segment = |name: &str, offset: u64| Segment {
            name: name.into(),
            hash: Some(BlobId::of(&bytes[offset as usize..offset as usize + 4])),
            offset,
            size: 4,
        };
        let manifest = Manifest::sign_set(
            &keypair,
            BlobId::of(b"set"),
            8,
            vec![
                Piece {
                    hash: ChunkId::of(b"seg0"),
                    offset: 0,
                    len: 4,
                },
                Piece {
                    hash: ChunkId::of(b"seg2"),
                    offset: 4,
                    len: 4,
                },
            ],
            vec![
                segment("0.m4s", 0),
                Segment {
                    name: "1.m4s".into(),
                    hash: None,
                    offset: 0,
                    size: 0,
                },
                segment("2.m4s", 4),
            ],
            Vec::new(),
            vec![keypair.public().to_peer_id().to_string()],
            String::new(),
        );
        let placed = |name: &str, offset: u64, content: &[u8]| Placed {
            name: name.into(),
            offset,
            size: content.len() as u64,
            hash: BlobId::of(content),
        };
        let file = [
            placed("init.mp4", 0, b"init"),
            placed("0.m4s", 4, b"seg0"),
            placed("1.m4s", 8, b"seg1"),
            placed("2.m4s", 12, b"seg2"),
        ];
        let (served, differ) = served_from(&manifest, &file, Path::new("/out"));
        assert!(differ.is_empty());
        assert_eq!(served.pieces[&ChunkId::of(b"seg0")].1, 4);
        assert_eq!(served.pieces[&ChunkId::of(b"seg2")].1, 12);

        let mut wrong = file.clone();
        wrong[3].hash = BlobId::of(b"else");
        let (served, differ) = served_from(&manifest, &wrong, Path::new("/out"));
        assert_eq!(differ, vec!["2.m4s".to_owned()]);
        assert_eq!(served.pieces.len(), 1);
    }
}
