//! `omega fetch ITEM --server URL --out FILE`: the client side of the P2P
//! data plane. It asks a node for the item's signed manifest, pulls the
//! pieces from several providers at once (nodes, and clients seeding what
//! they fetched), checks every piece against its BLAKE3 hash and the whole
//! against the blob, and resumes an interrupted fetch from `FILE.part`.
//! With `--seed DURATION` it then serves what it fetched to other clients
//! for that long, announced in the cluster's DHT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use omega_p2p::service::Limits;
use omega_p2p::{FetchOptions, Keypair, Manifest, P2p, P2pConfig, PeerId, PieceSource};
use omega_storage::{BlobId, ChunkId};

use crate::cli::GlobalArgs;

/// `omega fetch` options.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The item's id.
    pub item: u64,
    /// A node's HTTP URL, e.g. http://omega.local:8420.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Where to write the file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// An access token or API key.
    #[arg(long, env = "OMEGA_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: String,
    /// After fetching, serve the file to other clients for this long
    /// (e.g. 30s, 10m).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub seed: Option<Duration>,
    /// Print a JSON report when done: bytes, sources, verify_failures,
    /// seconds.
    #[arg(long)]
    pub json: bool,
    /// This client's QUIC listen address (for seeding).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub listen: std::net::SocketAddr,
}

/// Runs `omega fetch`.
pub fn run(_global: &GlobalArgs, args: FetchArgs) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(fetch(args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Serves pieces of the one blob this client fetched, from its file (or
/// part file while fetching), each verified before it leaves.
struct FilePieces {
    manifest: Manifest,
    members: Vec<PeerId>,
    out: PathBuf,
}

impl PieceSource for FilePieces {
    fn piece(&self, blob: &BlobId, piece: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        if *blob != self.manifest.blob {
            return Ok(None);
        }
        let Some(entry) = self.manifest.pieces.iter().find(|entry| entry.hash == *piece) else {
            return Ok(None);
        };
        let file = match std::fs::File::open(&self.out) {
            Ok(file) => file,
            Err(_) => match std::fs::File::open(omega_p2p::fetch::part_path(&self.out)) {
                Ok(file) => file,
                Err(_) => return Ok(None),
            },
        };
        let mut bytes = vec![0_u8; entry.len as usize];
        if file.read_exact_at(&mut bytes, entry.offset).is_err() || ChunkId::of(&bytes) != *piece {
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains(peer)
    }
}

async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let keypair = Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id();
    let manifest = get_manifest(&args.server, args.item, &args.token, &peer).await?;
    let members = manifest
        .verify()
        .map_err(|why| anyhow::anyhow!("the server's manifest: {why}"))?;
    let source = Arc::new(FilePieces {
        manifest: manifest.clone(),
        members: members.clone(),
        out: args.out.clone(),
    });
    let p2p = P2p::start(
        P2pConfig {
            keypair,
            listen: vec![crate::p2p::quic_multiaddr(args.listen)],
            mdns: false,
            dht_server: false,
            limits: Limits::default(),
        },
        source,
    )
    .await?;
    // Members route the DHT (where seeding is announced).
    for (member, addrs, _) in manifest.route_addrs() {
        if members.contains(&member) {
            p2p.add_server(member, addrs).await?;
        }
    }
    let report = omega_p2p::fetch::fetch(&p2p, &manifest, &args.out, &FetchOptions::default()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let others: u64 = report
            .sources
            .iter()
            .filter(|source| !source.origin)
            .map(|source| source.bytes)
            .sum();
        println!(
            "fetched {} bytes in {:.1}s from {} sources ({} from peers other than the origin), {} verify failures",
            report.bytes,
            report.seconds,
            report.sources.len(),
            others,
            report.verify_failures
        );
    }
    if let Some(seed) = args.seed {
        use std::io::Write;
        std::io::stdout().flush()?;
        p2p.provide(manifest.blob).await?;
        eprintln!("omega: seeding {} as {peer} for {seed:?}", args.out.display());
        tokio::time::sleep(seed).await;
    }
    Ok(())
}

async fn get_manifest(server: &str, item: u64, token: &str, peer: &PeerId) -> anyhow::Result<Manifest> {
    let url = format!(
        "{}/api/v1/items/{item}/manifest?peer={peer}",
        server.trim_end_matches('/')
    );
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let status = answer.status();
    if !status.is_success() {
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let message = body["error"]
            .as_str()
            .or(body["message"].as_str())
            .unwrap_or("no details");
        bail!("{server} answered {status} for item {item}: {message}");
    }
    answer.json().await.context("the manifest is not valid JSON")
}
