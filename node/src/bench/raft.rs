//! `omega bench raft`: small replicated writes against three Omega nodes and
//! three etcd nodes (Debian's etcd-server), both on loopback with fsync,
//! at several client counts, for a fixed time each.
//!
//! Omega's clients send `SetWatchState` writes (the app's most frequent
//! write, ~20 bytes) to the leader over the members' QUIC transport with a
//! certificate from the cluster's CA; etcd's clients POST small puts to the
//! leader's JSON gateway (`/v3/kv/put`) over keep-alive HTTP/1.1.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use omega_consensus::command::{Command as RaftCommand, Response};
use omega_consensus::model::{ItemKind, ItemWrite, LibraryAccess, LibraryKind, MemberNode, Role, WatchState};
use omega_consensus::network::{PeerRequest, PeerResponse, Transport};
use omega_consensus::pki::NodeIdentity;
use omega_consensus::quic::QuicTransport;
use serde::Serialize;

use super::http::Http;
use super::{Processes, free_port, percentile, record_row, work_dir};
use crate::control::{ControlRequest, call};

/// Options of `omega bench raft`.
#[derive(Debug, Args)]
pub struct RaftBench {
    /// Seconds of writes per client count and system.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Client counts, comma-separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// Where to work, how to print, where to record.
    #[command(flatten)]
    pub output: super::BenchOutput,
}

/// Figures of one system at one client count.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    writes_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    writes: u64,
}

/// One client count, both systems.
#[derive(Debug, Serialize)]
struct Row {
    clients: usize,
    omega: Figures,
    etcd: Figures,
    ratio: f64,
}

type WriteFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if started.elapsed() > within {
            bail!("{what}: not ready after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the benchmark.
pub(super) fn run(options: &RaftBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(options.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(
        !options.clients.is_empty() && options.clients.iter().all(|clients| (1..=1024).contains(clients)),
        "--clients takes counts from 1 to 1024"
    );
    Command::new("etcd")
        .arg("--version")
        .output()
        .context("etcd is needed as the peer (apt-get install etcd-server)")?;
    let work = work_dir(options.output.work_dir.as_deref())?;
    let mut processes = Processes::default();
    let omega_dirs = start_omega(work.path(), &mut processes)?;
    let etcd_urls = start_etcd(work.path(), &mut processes)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let duration = Duration::from_secs(options.seconds);
    let rows = runtime.block_on(async {
        let omega = OmegaClient::connect(&omega_dirs[0]).await?;
        let etcd_leader = etcd_leader(&etcd_urls).await?;
        let mut rows = Vec::new();
        for &clients in &options.clients {
            let omega_figures = drive(clients, duration, omega.writer()).await?;
            eprintln!(
                "omega {clients:>3} clients: {:.0} writes/s",
                omega_figures.writes_per_second
            );
            let etcd_figures = drive(clients, duration, etcd_writer(etcd_leader)).await?;
            eprintln!(
                "etcd  {clients:>3} clients: {:.0} writes/s",
                etcd_figures.writes_per_second
            );
            rows.push(Row {
                clients,
                ratio: omega_figures.writes_per_second / etcd_figures.writes_per_second,
                omega: omega_figures,
                etcd: etcd_figures,
            });
        }
        anyhow::Ok(rows)
    })?;
    drop(processes);
    print_rows(&rows, options)?;
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: &[Row], options: &RaftBench) -> anyhow::Result<()> {
    if options.output.json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        println!(
            "{:>7}  {:>12} {:>8} {:>8}  {:>12} {:>8} {:>8}  {:>6}",
            "clients", "omega w/s", "p50 ms", "p99 ms", "etcd w/s", "p50 ms", "p99 ms", "ratio"
        );
        for row in rows {
            println!(
                "{:>7}  {:>12.0} {:>8.2} {:>8.2}  {:>12.0} {:>8.2} {:>8.2}  {:>5.2}x",
                row.clients,
                row.omega.writes_per_second,
                row.omega.p50_ms,
                row.omega.p99_ms,
                row.etcd.writes_per_second,
                row.etcd.p50_ms,
                row.etcd.p99_ms,
                row.ratio
            );
        }
        if let Some(last) = rows.last() {
            println!(
                "goal: omega >= etcd writes/s at 64 clients; at {} clients {:.2}x",
                last.clients, last.ratio
            );
        }
    }
    if let Some(path) = &options.output.record {
        let date = super::today();
        for row in rows {
            record_row(
                path,
                "raft",
                &format!(
                    "| {date} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2}x | `omega bench raft --seconds {}` |",
                    row.clients,
                    row.omega.writes_per_second,
                    row.omega.p50_ms,
                    row.omega.p99_ms,
                    row.etcd.writes_per_second,
                    row.etcd.p50_ms,
                    row.etcd.p99_ms,
                    row.ratio,
                    options.seconds
                ),
            )?;
        }
        eprintln!("recorded {} rows in {}", rows.len(), path.display());
    }
    Ok(())
}

/// Runs `clients` loops of writes for `duration`; latencies of every write.
async fn drive(
    clients: usize,
    duration: Duration,
    writer: Arc<dyn Fn(usize, u64) -> WriteFuture + Send + Sync>,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sequence = 0_u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                writer(client, sequence).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                sequence += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("a client task failed")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);

    Ok(Figures {
        writes_per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        writes: latencies.len() as u64,
    })
}

/// Starts three `omega serve` processes (the first creates the cluster, the
/// others join with tokens); returns their data directories.
fn start_omega(work: &Path, processes: &mut Processes) -> anyhow::Result<Vec<PathBuf>> {
    let omega = std::env::current_exe().context("cannot find the omega binary")?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut first_addr = String::new();
    for index in 0..3 {
        let dir = work.join(format!("omega-{index}"));
        std::fs::create_dir_all(&dir)?;
        let addr = format!("127.0.0.1:{}", free_port(true)?);
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let mut command = Command::new(&omega);
        command
            .arg("--data-dir")
            .arg(&dir)
            .args(["serve", "--cluster-listen", &addr])
            .args(["--listen", &format!("127.0.0.1:{}", free_port(false)?)])
            .env_remove("OMEGA_CONFIG")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null());
        if index == 0 {
            first_addr = addr.clone();
        } else {
            let token = call(&dirs[0].join("omega.sock"), &ControlRequest::Token { ttl_ms: 600_000 })?;
            let token = token["token"].as_str().context("no token")?.to_owned();
            command.args(["--join", &first_addr, "--token", &token]);
        }
        processes.0.push(command.spawn().context("cannot start omega serve")?);
        let socket = dir.join("omega.sock");
        wait_for("omega node", Duration::from_secs(30), || {
            call(&socket, &ControlRequest::Status).ok()
        })?;
        dirs.push(dir);
    }
    let socket = dirs[0].join("omega.sock");
    wait_for("three omega voters", Duration::from_secs(30), || {
        let status = call(&socket, &ControlRequest::Status).ok()?;
        let voters = status["members"]
            .as_array()?
            .iter()
            .filter(|member| member["role"] == "voter")
            .count();
        (voters == 3 && status["leader"].is_u64()).then_some(())
    })?;
    Ok(dirs)
}

/// A client of the Omega cluster, writing to its leader.
struct OmegaClient {
    transport: Arc<QuicTransport>,
    leader: (u64, MemberNode),
    user: u64,
    item: u64,
}

impl OmegaClient {
    async fn connect(first: &Path) -> anyhow::Result<OmegaClient> {
        let node = NodeIdentity::load(&first.join("cluster/identity"))?.context("the first node has no identity")?;
        // A certificate from the cluster's CA: the benchmark is a trusted
        // client, as a member forwarding a write would be.
        let client_id = u64::MAX - 1;
        let identity = NodeIdentity {
            node_id: client_id,
            node: node.cluster.issue(client_id)?,
            cluster: node.cluster,
        };
        let transport = Arc::new(QuicTransport::client(&identity)?);
        let socket = first.join("omega.sock");
        let status = tokio::task::spawn_blocking(move || call(&socket, &ControlRequest::Status)).await??;
        let leader_id = status["leader"].as_u64().context("no leader")?;
        let leader_addr = status["members"]
            .as_array()
            .and_then(|members| members.iter().find(|member| member["id"] == leader_id))
            .and_then(|member| member["cluster_addr"].as_str())
            .context("the leader has no address")?;
        let mut client = OmegaClient {
            transport,
            leader: (
                leader_id,
                MemberNode {
                    cluster_addr: leader_addr.to_owned(),
                    ..MemberNode::default()
                },
            ),
            user: 0,
            item: 0,
        };
        client.user = client
            .created(RaftCommand::CreateUser {
                name: "bench".into(),
                password_hash: "-".into(),
                roles: [Role::Viewer].into(),
                library_access: LibraryAccess::All,
                now_ms: 0,
            })
            .await?;
        let library = client
            .created(RaftCommand::CreateLibrary {
                name: "bench".into(),
                kind: LibraryKind::Movies,
                paths: Vec::new(),
                node: leader_id,
                now_ms: 0,
            })
            .await?;
        let item = ItemWrite {
            key: "bench".into(),
            library,
            kind: ItemKind::Movie,
            parent_key: None,
            title: "bench".into(),
            sort_title: "bench".into(),
            year: None,
            index: None,
            metadata: Default::default(),
            media: Vec::new(),
        };
        let response = write(
            &client.transport,
            &client.leader,
            RaftCommand::UpsertItems {
                items: vec![item],
                now_ms: 0,
            },
        )
        .await?;
        let Response::Items(ids) = response else {
            bail!("unexpected answer {response:?}");
        };
        client.item = ids[0];
        Ok(client)
    }

    async fn created(&self, command: RaftCommand) -> anyhow::Result<u64> {
        match write(&self.transport, &self.leader, command).await? {
            Response::Created(id) => Ok(id),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    fn writer(&self) -> Arc<dyn Fn(usize, u64) -> WriteFuture + Send + Sync> {
        let transport = self.transport.clone();
        let leader = self.leader.clone();
        let (user, item) = (self.user, self.item);
        Arc::new(move |_client, sequence| {
            let transport = transport.clone();
            let leader = leader.clone();
            Box::pin(async move {
                let command = RaftCommand::SetWatchState {
                    user,
                    item,
                    state: WatchState {
                        position_ms: sequence,
                        played: false,
                        play_count: 0,
                        updated_ms: sequence,
                    },
                };
                match write(&transport, &leader, command).await? {
                    Response::Done => Ok(()),
                    other => bail!("unexpected answer {other:?}"),
                }
            })
        })
    }
}

async fn write(
    transport: &QuicTransport,
    leader: &(u64, MemberNode),
    command: RaftCommand,
) -> anyhow::Result<Response> {
    let answer = transport
        .call(
            leader.0,
            &leader.1,
            PeerRequest::ClientWrite(command),
            Duration::from_secs(10),
        )
        .await?;
    match answer {
        PeerResponse::Written { response, .. } => Ok(response),
        other => bail!("the leader answered {other:?}"),
    }
}

/// Starts three etcd members with default fsync; returns their client URLs
/// (host:port).
fn start_etcd(work: &Path, processes: &mut Processes) -> anyhow::Result<Vec<SocketAddr>> {
    let members: Vec<(String, u16, u16)> = (0..3)
        .map(|index| Ok((format!("e{index}"), free_port(false)?, free_port(false)?)))
        .collect::<anyhow::Result<_>>()?;
    let initial = members
        .iter()
        .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    for (name, client, peer) in &members {
        let dir = work.join(format!("etcd-{name}"));
        let log = std::fs::File::create(work.join(format!("etcd-{name}.log")))?;
        let child = Command::new("etcd")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "omega-bench",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start etcd")?;
        processes.0.push(child);
    }
    let urls: Vec<SocketAddr> = members
        .iter()
        .map(|(_, client, _)| SocketAddr::from(([127, 0, 0, 1], *client)))
        .collect();
    for url in &urls {
        wait_for("etcd member", Duration::from_secs(30), || {
            let health = std::net::TcpStream::connect(url).ok().and_then(|mut stream| {
                use std::io::{Read, Write};
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                stream
                    .write_all(format!("GET /health HTTP/1.0\r\nHost: {url}\r\n\r\n").as_bytes())
                    .ok()?;
                let mut text = String::new();
                stream.read_to_string(&mut text).ok()?;
                Some(text)
            })?;
            health.contains("\"health\":\"true\"").then_some(())
        })?;
    }
    Ok(urls)
}

/// The etcd member that leads.
async fn etcd_leader(urls: &[SocketAddr]) -> anyhow::Result<SocketAddr> {
    for url in urls {
        let mut connection = Http::connect(*url).await?;
        let (_, body) = connection.post("/v3/maintenance/status", b"{}").await?;
        let status: serde_json::Value = serde_json::from_slice(&body)?;
        if status["header"]["member_id"] == status["leader"] {
            return Ok(*url);
        }
    }
    bail!("no etcd member reports itself as leader")
}

fn etcd_writer(leader: SocketAddr) -> Arc<dyn Fn(usize, u64) -> WriteFuture + Send + Sync> {
    // One keep-alive connection per client, opened on its first write.
    let connections: Arc<Vec<tokio::sync::Mutex<Option<Http>>>> =
        Arc::new((0..1024).map(|_| tokio::sync::Mutex::new(None)).collect());
    Arc::new(move |client, sequence| {
        let connections = connections.clone();
        Box::pin(async move {
            let mut slot = connections[client].lock().await;
            if slot.is_none() {
                *slot = Some(Http::connect(leader).await?);
            }
            let connection = slot.as_mut().context("no connection")?;
            let key = base64_encode(format!("bench/{client}").as_bytes());
            let value = base64_encode(format!("{sequence:020}").as_bytes());
            let body = format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}");
            let (status, answer) = connection.post("/v3/kv/put", body.as_bytes()).await?;
            if status != 200 {
                bail!("etcd answered {status}: {}", String::from_utf8_lossy(&answer));
            }
            Ok(())
        })
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
