//! `omega bench …`: benchmarks run as commands, each printing its figures
//! and its ratio to a peer measured in the same run, and able to record a row
//! in `docs/benchmarks.md`.

mod http;
mod p2p;
mod raft;
mod record;
mod scan;
mod serve;
mod store;
mod transcode;

use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::GlobalArgs;

pub use record::record_row;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest a dedup corpus with Omega and with restic.
    Store(store::StoreBench),
    /// Small replicated writes: three Omega nodes against three etcd nodes.
    Raft(raft::RaftBench),
    /// Index a synthetic library and time item-list pages.
    Scan(scan::ScanBench),
    /// A 720p HLS rendition of a 1080p source: Omega against plain ffmpeg.
    Transcode(transcode::TranscodeBench),
    /// One blob between two peers: the P2P path against raw quinn.
    P2p(p2p::P2pBench),
    /// A direct stream and a kept HLS segment: Omega against nginx.
    Serve(serve::ServeBench),
}

/// Runs a benchmark.
pub fn run(_global: &GlobalArgs, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Store(bench) => store::run(&bench),
        BenchCommand::Raft(bench) => raft::run(&bench),
        BenchCommand::Scan(bench) => scan::run(&bench),
        BenchCommand::Transcode(bench) => transcode::run(&bench),
        BenchCommand::P2p(bench) => p2p::run(&bench),
        BenchCommand::Serve(bench) => serve::run(&bench),
    }
}

/// Today's date, `YYYY-MM-DD`, for recorded rows (empty if `date` fails).
pub fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|date| date.trim().to_owned())
        .unwrap_or_default()
}

/// What every benchmark takes: where to work, JSON output, and the
/// benchmarks file to record a row in.
#[derive(Debug, clap::Args)]
pub struct BenchOutput {
    /// Where to work (generated inputs, nodes' data) [default: the temp dir].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Insert a row in this benchmarks file (docs/benchmarks.md).
    #[arg(long, value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,
}

/// A node of one started for a benchmark, with the administrator `bench`;
/// killed when dropped.
struct BenchNode {
    _process: Processes,
    /// Its HTTP address.
    addr: std::net::SocketAddr,
}

impl BenchNode {
    /// Starts `omega serve` with `config` and `data`, logging to `log`,
    /// with `extra` serve arguments.
    fn start(
        config: &std::path::Path,
        data: &std::path::Path,
        log: &std::path::Path,
        extra: &[&std::ffi::OsStr],
    ) -> anyhow::Result<BenchNode> {
        use anyhow::Context;
        let http_port = free_port(false)?;
        let log = std::fs::File::create(log)?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--listen", &format!("127.0.0.1:{http_port}")])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port(true)?)])
            .args(extra)
            .env("OMEGA_ADMIN_USER", "bench")
            .env("OMEGA_ADMIN_PASSWORD", "bench-password")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("cannot start omega serve")?;
        Ok(BenchNode {
            _process: Processes(vec![child]),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], http_port)),
        })
    }

    /// Whether the node has an ffmpeg child running (an encode).
    fn runs_ffmpeg(&self) -> bool {
        let Some(node) = self._process.0.first() else {
            return false;
        };
        std::process::Command::new("pgrep")
            .args(["-P", &node.id().to_string(), "ffmpeg"])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Signs in as `bench` once the node answers; the access token.
    async fn login(&self) -> anyhow::Result<String> {
        use anyhow::Context;
        let started = std::time::Instant::now();
        loop {
            if let Ok(mut http) = http::Http::connect(self.addr).await
                && let Ok((200, body)) = http
                    .post(
                        "/api/v1/auth/login",
                        br#"{"username":"bench","password":"bench-password"}"#,
                    )
                    .await
            {
                let body: serde_json::Value = serde_json::from_slice(&body)?;
                return Ok(body["access_token"].as_str().context("no token")?.to_owned());
            }
            if started.elapsed() > std::time::Duration::from_secs(60) {
                anyhow::bail!("the node did not start");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The id of the first movie the node lists, once its scan found one
/// (within two minutes of `started`).
async fn first_movie(http: &mut http::Http, auth: &str, started: std::time::Instant) -> anyhow::Result<u64> {
    loop {
        let (_, page) = http.get("/api/v1/items?type=movie", auth).await?;
        let page: serde_json::Value = serde_json::from_slice(&page)?;
        if let Some(id) = page["items"][0]["id"].as_u64() {
            return Ok(id);
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            anyhow::bail!("the film was not scanned");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until every library's scan is over (its files analysed for
/// streaming too), as a user who presses play after the scan.
async fn scans_done(http: &mut http::Http, auth: &str, started: std::time::Instant) -> anyhow::Result<()> {
    let (_, libraries) = http.get("/api/v1/libraries", auth).await?;
    let libraries: serde_json::Value = serde_json::from_slice(&libraries)?;
    for id in libraries
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|library| library["id"].as_u64())
    {
        loop {
            let (_, status) = http.get(&format!("/api/v1/libraries/{id}/scan"), auth).await?;
            let status: serde_json::Value = serde_json::from_slice(&status)?;
            match status["state"].as_str() {
                Some("done") => break,
                Some("failed") => anyhow::bail!("the scan failed: {status}"),
                _ if started.elapsed() > std::time::Duration::from_secs(120) => {
                    anyhow::bail!("the scan did not finish: {status}")
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

/// A fresh work directory, inside `parent` when given (removed on drop).
fn work_dir(parent: Option<&std::path::Path>) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    match parent {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("cannot create a work directory")
}

/// Child processes (nodes, peers) killed when dropped, so that a failed
/// benchmark leaves none behind.
#[derive(Debug, Default)]
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that was free a moment ago (UDP for QUIC, else TCP).
fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    })
}

/// The value at `share` (0..1) of `sorted` values; NaN when empty.
fn percentile(sorted: &[f64], share: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * share) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
