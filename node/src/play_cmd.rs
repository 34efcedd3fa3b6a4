//! `omega play ITEM --server URL`: peer-assisted playback. It serves the
//! item's HLS tree on a local address and hands its URL to a player (or
//! prints it). Playlists come from the server; each segment the origin
//! has made comes from peers (the rendition's segment set is pulled in
//! playlist order in the background, every piece and segment verified by
//! its BLAKE3 hash), the rest from the origin over HTTP (checked against
//! its hash when the origin published one). With `--seed`, the client
//! serves what it holds to other clients while it plays.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Args;
use omega_p2p::manifest::Segment;
use omega_p2p::{FetchOptions, Keypair, Manifest, P2p, PeerId};
use omega_storage::BlobId;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::p2p_client::{self, ClientPieces, Served, Server, parse_rendition};

/// How long a segment waits for its pieces before the origin is asked.
const PIECES_WITHIN: Duration = Duration::from_secs(20);
/// How often the cache file is looked at while a segment waits.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// `omega play` options.
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The item's id.
    pub item: u64,
    /// A node's HTTP URL, e.g. http://omega.local:8420.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// An access token or API key.
    #[arg(long, env = "OMEGA_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: String,
    /// Offer only this rendition (e.g. original, 720p, audio); by default
    /// the player chooses among all the server offers.
    #[arg(long, value_name = "NAME", value_parser = parse_rendition)]
    pub rendition: Option<String>,
    /// Where the local HLS server listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// This client's QUIC listen address.
    #[arg(long = "p2p-listen", value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub p2p_listen: SocketAddr,
    /// Serve the segments this client holds to other clients while it
    /// plays (announced in the cluster's DHT).
    #[arg(long)]
    pub seed: bool,
    /// A player to start with the local URL as its last argument (e.g.
    /// mpv, vlc); without it the URL is printed and served until
    /// interrupted.
    #[arg(long, value_name = "COMMAND")]
    pub player: Option<String>,
}

/// Runs `omega play`.
pub fn run(_global: &GlobalArgs, args: PlayArgs) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(play(args))
}

/// What playback has pulled, and from where (`GET /stats.json` locally).
#[derive(Debug, Default, Serialize)]
struct Stats {
    /// Segment bytes from peers, verified.
    p2p_bytes: AtomicU64,
    /// Segment bytes from the origin over HTTP.
    http_bytes: AtomicU64,
    /// Segments served from peers' pieces.
    p2p_segments: AtomicU64,
    /// Segments served from HTTP.
    http_segments: AtomicU64,
}

/// A rendition's manifest is asked for again, when a segment it does not
/// hash is wanted, this long after it was last asked for (plus a second
/// per 128 MiB of the set, which a new pull hashes again): the origin
/// makes segments as they are first played, so a manifest fetched early
/// names few of them.
const REFRESH_AFTER: Duration = Duration::from_secs(3);

/// A rendition being pulled into the cache.
struct Pulled {
    manifest: Manifest,
    path: PathBuf,
    /// The background fetch has ended (done or failed).
    ended: Arc<AtomicBool>,
    /// When its manifest was asked for.
    asked: std::time::Instant,
}

impl Pulled {
    /// The hashed segment named `file`, when this manifest has one.
    fn hashed(&self, file: &str) -> Option<&Segment> {
        self.manifest
            .segments
            .iter()
            .find(|segment| segment.name == file && segment.hash.is_some())
    }

    /// Worth asking for the manifest again for `file`: the pull is over,
    /// the manifest does not hash `file`, and it is not new.
    fn stale_for(&self, file: &str) -> bool {
        let after = REFRESH_AFTER + Duration::from_secs(self.manifest.size >> 27);
        self.ended.load(Ordering::Acquire) && self.hashed(file).is_none() && self.asked.elapsed() >= after
    }
}

struct Player {
    item: u64,
    server: Server,
    peer: PeerId,
    listen: SocketAddr,
    seed: bool,
    keypair: Keypair,
    p2p: tokio::sync::OnceCell<P2p>,
    pieces: Arc<ClientPieces>,
    cache: tempfile::TempDir,
    pulled: tokio::sync::Mutex<HashMap<String, Arc<Pulled>>>,
    /// Pulls started, to name their files.
    pulls: AtomicU64,
    master: String,
    stats: Stats,
}

async fn play(args: PlayArgs) -> anyhow::Result<std::process::ExitCode> {
    let server = Server::new(&args.server, &args.token)?;
    let master = server.hls_text(args.item, "master.m3u8").await?;
    let master = match &args.rendition {
        Some(name) => only_rendition(&master, name)?,
        None => master,
    };
    let keypair = Keypair::generate_ed25519();
    let player = Arc::new(Player {
        item: args.item,
        server,
        peer: keypair.public().to_peer_id(),
        listen: args.p2p_listen,
        seed: args.seed,
        keypair,
        p2p: tokio::sync::OnceCell::new(),
        pieces: ClientPieces::new(Vec::new()),
        cache: tempfile::Builder::new()
            .prefix("omega-play-")
            .tempdir()
            .context("cannot make a cache folder")?,
        pulled: tokio::sync::Mutex::new(HashMap::new()),
        pulls: AtomicU64::new(0),
        master: strip_tokens(&master),
        stats: Stats::default(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = format!("http://{}/master.m3u8", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/master.m3u8", axum::routing::get(master_playlist))
        .route("/stats.json", axum::routing::get(stats))
        .route("/{rendition}/{file}", axum::routing::get(file))
        .with_state(player.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!("the local HLS server stopped: {error}");
        }
    });
    {
        use std::io::Write;
        println!("{url}");
        std::io::stdout().flush()?;
    }
    let code = match &args.player {
        Some(command) => {
            let mut words = command.split_whitespace();
            let program = words.next().context("--player is empty")?;
            let status = tokio::process::Command::new(program)
                .args(words)
                .arg(&url)
                .status()
                .await
                .with_context(|| format!("cannot start the player {program:?}"))?;
            std::process::ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
        }
        None => {
            tokio::signal::ctrl_c().await?;
            std::process::ExitCode::SUCCESS
        }
    };
    eprintln!(
        "omega: played {} segments from peers ({} bytes) and {} from the origin over HTTP ({} bytes)",
        player.stats.p2p_segments.load(Ordering::Relaxed),
        player.stats.p2p_bytes.load(Ordering::Relaxed),
        player.stats.http_segments.load(Ordering::Relaxed),
        player.stats.http_bytes.load(Ordering::Relaxed),
    );
    Ok(code)
}

/// The master playlist with only the rendition `name` (its
/// `#EXT-X-STREAM-INF` line and URI); other tags stay.
fn only_rendition(master: &str, name: &str) -> anyhow::Result<String> {
    let mut kept = Vec::new();
    let mut offered = Vec::new();
    let mut pending_info: Option<&str> = None;
    for line in master.lines() {
        if line.starts_with("#EXT-X-STREAM-INF") {
            pending_info = Some(line);
            continue;
        }
        if let Some(info) = pending_info.take() {
            let rendition = line.split('/').next().unwrap_or_default();
            offered.push(rendition.to_owned());
            if rendition == name {
                kept.push(info);
                kept.push(line);
            }
            continue;
        }
        kept.push(line);
    }
    if !offered.iter().any(|offer| offer == name) {
        bail!(
            "the server offers no rendition {name:?} for this item (it offers {})",
            offered.join(", ")
        );
    }
    Ok(kept.join("\n") + "\n")
}

/// A playlist without the server's stream tokens: the local server needs
/// none, and its URLs then stay valid for as long as it runs.
fn strip_tokens(playlist: &str) -> String {
    let mut out = String::with_capacity(playlist.len());
    for line in playlist.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("?t=") {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            let end = after.find('"').unwrap_or(after.len());
            rest = &after[end..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// A JSON error for the player's log.
fn error_response(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn master_playlist(State(player): State<Arc<Player>>) -> Response {
    playlist_response(player.master.clone())
}

async fn stats(State(player): State<Arc<Player>>) -> Response {
    axum::Json(&player.stats).into_response()
}

fn playlist_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// A file name a playlist may name.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_'))
}

async fn file(
    State(player): State<Arc<Player>>,
    axum::extract::Path((rendition, file)): axum::extract::Path<(String, String)>,
) -> Response {
    if parse_rendition(&rendition).is_err() || !plain_file_name(&file) {
        return error_response(StatusCode::NOT_FOUND, format!("no file {rendition}/{file}"));
    }
    let path = format!("{rendition}/{file}");
    if file.ends_with(".m3u8") {
        return match player.server.hls_text(player.item, &path).await {
            Ok(text) => playlist_response(strip_tokens(&text)),
            Err(error) => error_response(StatusCode::BAD_GATEWAY, format!("{error:#}")),
        };
    }
    let content_type = match file.rsplit_once('.').map(|(_, extension)| extension) {
        Some("vtt") => "text/vtt; charset=utf-8",
        _ => "video/mp4",
    };
    let bytes = if rendition == "subtitles" {
        player.server.hls_bytes(player.item, &path).await
    } else {
        player.segment(&rendition, &file).await
    };
    match bytes {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(error) => error_response(StatusCode::BAD_GATEWAY, format!("{error:#}")),
    }
}

impl Player {
    /// A segment: from the rendition's pulled pieces when the origin had
    /// made it, else (or when no peer delivers it in time) from the origin
    /// over HTTP.
    async fn segment(&self, rendition: &str, file: &str) -> anyhow::Result<Vec<u8>> {
        let mut expected = None;
        let mut pulled = self.pull(rendition).await;
        if let Ok(current) = &pulled
            && current.stale_for(file)
        {
            pulled = self.refresh(rendition, current).await;
        }
        let mut current = None;
        match pulled {
            Ok(pulled) => {
                if let Some(segment) = pulled.hashed(file) {
                    if let Some(bytes) = wait_for(&pulled, segment).await {
                        self.stats.p2p_segments.fetch_add(1, Ordering::Relaxed);
                        self.stats.p2p_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        return Ok(bytes);
                    }
                    expected = segment.hash;
                }
                current = Some(pulled);
            }
            Err(error) => tracing::info!("no peers for {rendition}: {error:#}"),
        }
        let bytes = self.server.hls_bytes(self.item, &format!("{rendition}/{file}")).await?;
        if let (Some(expected), Some(current)) = (expected, current) {
            let got = BlobId::of(&bytes);
            if got != expected {
                // The origin may have made the segment again since that
                // manifest (its cache let the first copy go): ask for the
                // manifest again before refusing the bytes.
                let fresh = self.refresh(rendition, &current).await?;
                let now_expected = fresh.hashed(file).and_then(|segment| segment.hash);
                anyhow::ensure!(
                    now_expected.is_none_or(|hash| hash == got),
                    "{rendition}/{file} from the server is {got}, not the {expected} its manifest names"
                );
            }
        }
        self.stats.http_segments.fetch_add(1, Ordering::Relaxed);
        self.stats.http_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// The rendition's segment set, pulled in the background from the
    /// first time it is asked for.
    async fn pull(&self, rendition: &str) -> anyhow::Result<Arc<Pulled>> {
        self.pull_from(rendition, None).await
    }

    /// Asks for the rendition's manifest again in place of `stale` (unless
    /// another request did already); the new pull keeps the pieces the old
    /// one brought that the new manifest places at the same offsets (the
    /// origin adds segments in playlist order, so most stay put).
    async fn refresh(&self, rendition: &str, stale: &Arc<Pulled>) -> anyhow::Result<Arc<Pulled>> {
        let replaced = {
            let mut pulled = self.pulled.lock().await;
            let current = pulled.get(rendition).is_some_and(|current| Arc::ptr_eq(current, stale));
            if current {
                pulled.remove(rendition);
            }
            current
        };
        self.pull_from(rendition, replaced.then_some(stale.path.as_path()))
            .await
    }

    /// [`Player::pull`], resuming from the file of an earlier pull.
    async fn pull_from(&self, rendition: &str, earlier: Option<&Path>) -> anyhow::Result<Arc<Pulled>> {
        let mut pulled = self.pulled.lock().await;
        if let Some(known) = pulled.get(rendition) {
            return Ok(known.clone());
        }
        let (manifest, members) = self.server.manifest(self.item, &self.peer, Some(rendition)).await?;
        self.pieces.trust(members.clone());
        let p2p = self
            .p2p
            .get_or_try_init(|| {
                p2p_client::start(
                    self.listen,
                    self.pieces.clone(),
                    &manifest,
                    &members,
                    self.keypair.clone(),
                )
            })
            .await?
            .clone();
        // A fresh pull of a rendition writes apart from an older one that
        // may still be running.
        let pull = self.pulls.fetch_add(1, Ordering::Relaxed);
        let path = self.cache.path().join(format!("{rendition}-{pull}.set"));
        if let Some(earlier) = earlier {
            // Whole or partial, the earlier file becomes this pull's part
            // file: the fetch keeps every piece of it that verifies.
            let part = omega_p2p::fetch::part_path(&path);
            let _moved = std::fs::rename(earlier, &part)
                .or_else(|_| std::fs::rename(omega_p2p::fetch::part_path(earlier), &part));
        }
        let ended = Arc::new(AtomicBool::new(manifest.pieces.is_empty()));
        let entry = Arc::new(Pulled {
            manifest: manifest.clone(),
            path: path.clone(),
            ended: ended.clone(),
            asked: std::time::Instant::now(),
        });
        if !manifest.pieces.is_empty() {
            let seed = self.seed;
            if seed {
                self.pieces.serve(manifest.blob, Served::whole(&manifest, &path));
            }
            tokio::spawn(async move {
                match omega_p2p::fetch::fetch(&p2p, &manifest, &path, &FetchOptions::default()).await {
                    Ok(report) => {
                        tracing::info!(bytes = report.bytes, sources = report.sources.len(), "rendition pulled");
                        if seed {
                            let _ = p2p.provide(manifest.blob).await;
                        }
                    }
                    Err(error) => tracing::warn!("pulling the rendition from peers failed: {error}"),
                }
                ended.store(true, Ordering::Release);
            });
        }
        pulled.insert(rendition.to_owned(), entry.clone());
        Ok(entry)
    }
}

/// The segment's bytes once the pull has brought them and they match its
/// hash; `None` if the pull ends or [`PIECES_WITHIN`] passes first.
async fn wait_for(pulled: &Pulled, segment: &Segment) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + PIECES_WITHIN;
    loop {
        let ended = pulled.ended.load(Ordering::Acquire);
        if let Some(bytes) = read_verified(&pulled.path, segment) {
            return Some(bytes);
        }
        if ended || tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The segment's bytes from the set file (or its part file) when they
/// match the segment's hash.
fn read_verified(path: &Path, segment: &Segment) -> Option<Vec<u8>> {
    let hash: BlobId = segment.hash?;
    let file = std::fs::File::open(path)
        .or_else(|_| std::fs::File::open(omega_p2p::fetch::part_path(path)))
        .ok()?;
    let mut bytes = vec![0_u8; usize::try_from(segment.size).ok()?];
    file.read_exact_at(&mut bytes, segment.offset).ok()?;
    (BlobId::of(&bytes) == hash).then_some(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"subtitles/e2.m3u8?t=abc\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\noriginal/index.m3u8?t=abc\n#EXT-X-STREAM-INF:BANDWIDTH=2\n720p/index.m3u8?t=abc\n";

    #[test]
    fn playlists_lose_their_tokens_and_one_rendition_can_be_kept() {
        let stripped = strip_tokens(MASTER);
        assert!(!stripped.contains("t=abc"), "{stripped}");
        assert!(stripped.contains("URI=\"subtitles/e2.m3u8\""), "{stripped}");
        assert!(stripped.contains("\n720p/index.m3u8\n"), "{stripped}");
        let only = only_rendition(MASTER, "720p").unwrap();
        assert!(!only.contains("original"), "{only}");
        assert!(only.contains("BANDWIDTH=2\n720p/index.m3u8"), "{only}");
        assert!(only.contains("subtitles"), "{only}");
        let missing = only_rendition(MASTER, "1080p").unwrap_err().to_string();
        assert!(missing.contains("original, 720p"), "{missing}");
    }

    #[test]
    fn only_plain_file_names_are_served() {
        assert!(plain_file_name("12.m4s"));
        assert!(plain_file_name("init.mp4"));
        assert!(!plain_file_name(".."));
        assert!(!plain_file_name("a/b"));
        assert!(!plain_file_name(""));
    }
}
