//! `omega bench p2p`: one blob (512 MiB by default, 512 KiB pieces) moved
//! between two peers on loopback over Omega's P2P path (libp2p on QUIC,
//! the piece protocol, every piece verified and written at its offset) and
//! over raw quinn in the same run (one stream, the bytes written to a file
//! as they come, nothing verified, the file synced at the end as Omega's
//! is): the ratio is what libp2p, the protocol and verification cost. The
//! rate of raw quinn without the final sync is printed beside it.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use omega_p2p::service::Limits;
use omega_p2p::{FetchOptions, Keypair, Manifest, P2p, P2pConfig, PeerId, Piece, PieceSource, Provider};
use omega_storage::{BlobId, ChunkId};
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use super::{BenchOutput, median, today, work_dir};

/// `omega bench p2p` options.
#[derive(Debug, clap::Args)]
pub struct P2pBench {
    /// Size of the blob, e.g. 512MiB.
    #[arg(long, default_value = "512MiB")]
    pub size: String,
    /// Runs of each path (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where to write, JSON, recording.
    #[command(flatten)]
    pub output: BenchOutput,
}

/// What the benchmark found (the JSON of `--json`).
#[derive(Debug, Serialize)]
struct Figures {
    /// Median MB/s (10⁶ bytes per second) over the P2P path.
    p2p_mb_s: f64,
    /// Median MB/s over raw quinn, its file synced at the end (a download
    /// that survives a power cut, as the P2P path's).
    quinn_mb_s: f64,
    /// p2p_mb_s / quinn_mb_s.
    ratio: f64,
    /// Median MB/s over raw quinn up to the last byte written, not synced.
    quinn_unsynced_mb_s: f64,
    /// Bytes moved per run.
    bytes: u64,
    /// Runs of each.
    runs: usize,
}

/// Pieces of the blob, from memory.
struct Memory {
    data: Arc<Vec<u8>>,
    pieces: HashMap<ChunkId, (usize, usize)>,
    fetcher: PeerId,
}

impl PieceSource for Memory {
    fn piece(&self, _blob: &BlobId, piece: &ChunkId) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self
            .pieces
            .get(piece)
            .map(|(start, len)| self.data[*start..start + len].to_vec()))
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        *peer == self.fetcher
    }
}

/// Size of each piece (the store's average chunk).
const PIECE_BYTES: usize = 512 << 10;

/// Runs the benchmark.
pub(super) fn run(bench: &P2pBench) -> anyhow::Result<ExitCode> {
    let size = crate::units::parse_bytes(&bench.size).map_err(|error| anyhow::anyhow!("--size: {error}"))?;
    anyhow::ensure!(size > 0 && size <= 8 << 30, "--size must be between 1 byte and 8GiB");
    anyhow::ensure!(bench.runs > 0, "--runs must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let work = work_dir(bench.output.work_dir.as_deref())?;
    let figures = runtime.block_on(measure(size as usize, bench.runs, work.path()))?;
    if bench.output.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "p2p: {:.0} MB/s, raw quinn: {:.0} MB/s, ratio {:.2}; raw quinn without its final sync: {:.0} MB/s, ratio {:.2} ({} MiB, median of {} runs)",
            figures.p2p_mb_s,
            figures.quinn_mb_s,
            figures.ratio,
            figures.quinn_unsynced_mb_s,
            figures.p2p_mb_s / figures.quinn_unsynced_mb_s,
            figures.bytes >> 20,
            figures.runs
        );
    }
    if let Some(path) = &bench.output.record {
        let row = format!(
            "| {} | `omega bench p2p --size {}` | {:.0} | {:.0} ({:.0} unsynced) | {:.2} | {} |",
            today(),
            bench.size,
            figures.p2p_mb_s,
            figures.quinn_mb_s,
            figures.quinn_unsynced_mb_s,
            figures.ratio,
            figures.runs
        );
        super::record::record_row(path, "p2p", &row)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure(size: usize, runs: usize, work: &Path) -> anyhow::Result<Figures> {
    let mut data = vec![0_u8; size];
    rand::rngs::StdRng::seed_from_u64(0x0e9a).fill_bytes(&mut data);
    let data = Arc::new(data);
    let mut p2p_rates = Vec::new();
    let mut quinn_rates = Vec::new();
    let mut unsynced_rates = Vec::new();
    for run in 0..runs {
        let out = work.join(format!("p2p-{run}.bin"));
        p2p_rates.push(p2p_run(&data, &out).await?);
        std::fs::remove_file(&out)?;
        let out = work.join(format!("quinn-{run}.bin"));
        let (synced, unsynced) = quinn_run(&data, &out).await?;
        quinn_rates.push(synced);
        unsynced_rates.push(unsynced);
        std::fs::remove_file(&out)?;
    }
    let (p2p_mb_s, quinn_mb_s) = (median(&p2p_rates), median(&quinn_rates));
    Ok(Figures {
        p2p_mb_s,
        quinn_mb_s,
        ratio: p2p_mb_s / quinn_mb_s,
        quinn_unsynced_mb_s: median(&unsynced_rates),
        bytes: size as u64,
        runs,
    })
}

/// One fetch over the P2P path; MB/s.
async fn p2p_run(data: &Arc<Vec<u8>>, out: &Path) -> anyhow::Result<f64> {
    let fetcher_key = Keypair::generate_ed25519();
    let fetcher_id = fetcher_key.public().to_peer_id();
    let server_key = Keypair::generate_ed25519();
    let mut pieces = Vec::new();
    let mut index = HashMap::new();
    for (number, bytes) in data.chunks(PIECE_BYTES).enumerate() {
        let hash = ChunkId::of(bytes);
        index.insert(hash, (number * PIECE_BYTES, bytes.len()));
        pieces.push(Piece {
            hash,
            offset: (number * PIECE_BYTES) as u64,
            len: u32::try_from(bytes.len())?,
        });
    }
    let listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
    let config = |keypair: Keypair| P2pConfig {
        keypair,
        listen: listen.clone(),
        mdns: false,
        dht_server: true,
        limits: Limits::default(),
    };
    let server = P2p::start(
        config(server_key.clone()),
        Arc::new(Memory {
            data: data.clone(),
            pieces: index,
            fetcher: fetcher_id,
        }),
    )
    .await?;
    let fetcher = P2p::start(
        config(fetcher_key),
        Arc::new(Memory {
            data: Arc::new(Vec::new()),
            pieces: HashMap::new(),
            fetcher: fetcher_id,
        }),
    )
    .await?;
    let manifest = Manifest::sign(
        &server_key,
        BlobId::of(data),
        data.len() as u64,
        pieces,
        vec![Provider {
            peer: server.peer_id().to_string(),
            addrs: server.listen_addrs().iter().map(ToString::to_string).collect(),
            origin: true,
        }],
        vec![server.peer_id().to_string()],
        String::new(),
    );
    let started = Instant::now();
    let report = omega_p2p::fetch::fetch(&fetcher, &manifest, out, &FetchOptions::default()).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.bytes == data.len() as u64, "the fetch came back short");
    Ok(data.len() as f64 / seconds / 1e6)
}

/// One transfer over raw quinn (one stream, self-signed certificate);
/// MB/s with the file synced at the end, and up to its last write.
async fn quinn_run(data: &Arc<Vec<u8>>, out: &Path) -> anyhow::Result<(f64, f64)> {
    use tokio::io::AsyncWriteExt;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let mut server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into())?;
    server_config.transport_config(transport());
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let sender = {
        let data = data.clone();
        tokio::spawn(async move {
            let connection = server.accept().await.context("no connection")?.await?;
            let (mut send, _receive) = connection.accept_bi().await?;
            for block in data.chunks(1 << 20) {
                send.write_all(block).await?;
            }
            send.finish()?;
            // Until the reader has everything (it closes the connection).
            connection.closed().await;
            anyhow::Ok(())
        })
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client_config.transport_config(transport());
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_config);
    let started = Instant::now();
    let connection = client.connect(addr, "localhost")?.await?;
    let (mut send, mut receive) = connection.open_bi().await?;
    // A stream is announced to the peer by its first bytes.
    send.write_all(b"go").await?;
    let mut file = tokio::fs::File::create(out).await?;
    let mut received = 0_usize;
    while let Some(chunk) = receive.read_chunk(1 << 20, true).await? {
        file.write_all(&chunk.bytes).await?;
        received += chunk.bytes.len();
    }
    file.flush().await?;
    let unsynced_seconds = started.elapsed().as_secs_f64();
    file.sync_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    connection.close(0_u32.into(), b"done");
    let _ = sender.await;
    anyhow::ensure!(
        received == data.len(),
        "quinn delivered {received} of {} bytes",
        data.len()
    );
    Ok((
        data.len() as f64 / seconds / 1e6,
        data.len() as f64 / unsynced_seconds / 1e6,
    ))
}

/// The same flow-control windows as the P2P path's QUIC.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    transport.receive_window(quinn::VarInt::from_u32(64 << 20));
    Arc::new(transport)
}
