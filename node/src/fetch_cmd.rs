//! `omega fetch ITEM --server URL --out FILE [--rendition NAME]`: the
//! client side of the P2P data plane. It asks a node for the item's signed
//! manifest, pulls the pieces from several providers at once (nodes, and
//! clients seeding what they fetched), checks every piece against its
//! BLAKE3 hash and the whole against the blob, and resumes an interrupted
//! fetch from `FILE.part`. With `--rendition` it fetches that HLS
//! rendition's segments instead: those the origin has made from peers,
//! the rest from the origin over HTTP. With `--seed DURATION` it then
//! serves what it fetched to other clients for that long, announced in
//! the cluster's DHT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use omega_p2p::{FetchOptions, Keypair};

use crate::cli::GlobalArgs;
use crate::p2p_client::{self, ClientPieces, Served, Server};

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
    /// An HLS rendition (e.g. original, 720p, audio) instead of the file:
    /// its segments in playlist order, one fragmented MP4 that plays.
    #[arg(long, value_name = "NAME", value_parser = crate::p2p_client::parse_rendition)]
    pub rendition: Option<String>,
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
    /// This client's QUIC listen address (for seeding); named as `serve`
    /// and `play` name theirs (`--listen` is kept as an alias).
    #[arg(
        long = "p2p-listen",
        visible_alias = "listen",
        value_name = "ADDR",
        default_value = "0.0.0.0:0"
    )]
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

/// How often a seeding client of a rendition asks for the manifest again,
/// to serve segments whose hashes the origin has published since.
const REFRESH_EVERY: Duration = Duration::from_secs(3);

async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let keypair = Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id();
    let server = Server::new(&args.server, &args.token)?;
    let rendition = args.rendition.as_deref();
    let (manifest, members) = server.manifest(args.item, &peer, rendition).await?;
    let pieces = ClientPieces::new(members.clone());
    let p2p = p2p_client::start(args.listen, pieces.clone(), &manifest, &members, keypair).await?;
    let (mut report, placed) = match rendition {
        None => {
            pieces.serve(manifest.blob, Served::whole(&manifest, &args.out));
            let report = omega_p2p::fetch::fetch(&p2p, &manifest, &args.out, &FetchOptions::default()).await?;
            (report, None)
        }
        Some(rendition) => {
            let fetched =
                p2p_client::fetch_rendition(&p2p, &pieces, &server, args.item, rendition, &manifest, &args.out).await?;
            (fetched.report, Some(fetched.placed))
        }
    };
    if let (Some(rendition), Some(placed)) = (rendition, &placed) {
        // Segments that came over HTTP are checked once the origin
        // publishes their hashes: now for those it already has.
        report.verify_failures += refresh(&server, &pieces, args.item, &peer, rendition, placed, &args.out).await?;
    }
    server.report(args.item, &report).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let others = report.bytes_from(false);
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
        let until = tokio::time::Instant::now() + seed;
        match (rendition, &placed) {
            (Some(rendition), Some(placed)) => {
                while tokio::time::Instant::now() + REFRESH_EVERY < until {
                    tokio::time::sleep(REFRESH_EVERY).await;
                    if let Err(error) = refresh(&server, &pieces, args.item, &peer, rendition, placed, &args.out).await
                    {
                        tracing::info!("cannot refresh the manifest: {error:#}");
                    }
                }
                tokio::time::sleep_until(until).await;
            }
            _ => tokio::time::sleep_until(until).await,
        }
    }
    Ok(())
}

/// Asks for the rendition's manifest again and serves every segment whose
/// published hash matches the bytes this client holds; returns how many
/// differ (each is reported, and not served).
async fn refresh(
    server: &Server,
    pieces: &ClientPieces,
    item: u64,
    peer: &omega_p2p::PeerId,
    rendition: &str,
    placed: &[p2p_client::Placed],
    out: &std::path::Path,
) -> anyhow::Result<u64> {
    let (manifest, members) = server.manifest(item, peer, Some(rendition)).await?;
    pieces.trust(members);
    let (served, differ) = p2p_client::served_from(&manifest, placed, out);
    pieces.serve(manifest.blob, served);
    for name in &differ {
        eprintln!("omega: segment {name} from the origin does not match its published hash; not serving it");
    }
    Ok(differ.len() as u64)
}
