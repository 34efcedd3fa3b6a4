//! `omega bench serve`: the bytes a player fetches most, served by a real
//! `omega serve` and by nginx (Debian's, `sendfile on`) from the same files,
//! loaded by wrk in the same run: a movie's direct stream
//! (`/api/v1/items/{id}/stream`, every chunk checked against the blob the
//! scan indexed) and a kept HLS segment (made once, then read from the
//! store). Before timing, Omega's whole answer and a range of it are
//! compared with the file. Prints req/s and p99 latency for both and the
//! ratios (goals: ≥ 0.9× nginx's req/s, p99 ≤ 2× nginx's); medians over
//! `--runs`, the two servers alternating.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use super::http::Http;
use super::{BenchNode, Processes, free_port, median, record_row, work_dir};

/// Options of `omega bench serve`.
#[derive(Debug, Args)]
pub struct ServeBench {
    /// Seconds of load per server and run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Connections wrk keeps open.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Runs (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where to work, how to print, where to record.
    #[command(flatten)]
    pub output: super::BenchOutput,
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Serialize)]
struct Load {
    requests_per_second: f64,
    p99_ms: f64,
}

/// Both servers' medians for one kind of answer.
#[derive(Debug, Serialize)]
struct Compared {
    what: &'static str,
    bytes: u64,
    omega: Load,
    nginx: Load,
    throughput_ratio: f64,
    p99_ratio: f64,
}

/// What is served: Omega's path (with its auth header, if any) and the
/// same bytes' file name under nginx's root.
struct Target {
    what: &'static str,
    omega_path: String,
    omega_header: Option<String>,
    nginx_name: &'static str,
    bytes: u64,
}

/// Runs the benchmark.
pub(super) fn run(options: &ServeBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=600).contains(&options.seconds), "--seconds takes 1 to 600");
    anyhow::ensure!(
        (1..=1000).contains(&options.connections),
        "--connections takes 1 to 1000"
    );
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
    for tool in ["wrk", "nginx"] {
        anyhow::ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|status| status.success()),
            "{tool} is not installed (apt-get install wrk nginx-light)"
        );
    }
    let work = work_dir(options.output.work_dir.as_deref())?;
    let folder = work.path().join("films/Bench Film (2026)");
    std::fs::create_dir_all(&folder)?;
    let source = folder.join("Bench Film (2026).mkv");
    eprintln!("generating a 20 s 1080p source");
    super::transcode::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1920x1080:rate=25:duration=20",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=20",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-b:v",
        "6M",
        "-g",
        "100",
        "-c:a",
        "aac",
        &source.to_string_lossy(),
    ])?;
    let root = work.path().join("nginx-root");
    std::fs::create_dir_all(&root)?;
    std::fs::hard_link(&source, root.join("direct.mkv"))?;
    let config = work.path().join("omega.toml");
    std::fs::write(&config, "[transcode]\nhardware = false\n[library]\nwatch = false\n")?;
    let films = work.path().join("films");
    let node = BenchNode::start(
        &config,
        &work.path().join("data"),
        &work.path().join("serve.log"),
        &["--media".as_ref(), films.as_os_str()],
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let nginx = Nginx::start(work.path(), &root)?;
    let (direct, token) = runtime.block_on(direct_target(&node, &source))?;
    let mut compared = vec![compare(&direct, &node, &nginx, options)?];
    // Made after the direct stream's runs, and timed once its ffmpeg is
    // done, so that no encode competes with either.
    let segment = runtime.block_on(segment_target(&node, &token, &direct.omega_path, &root))?;
    compared.push(compare(&segment, &node, &nginx, options)?);
    print(&compared, options)?;
    Ok(ExitCode::SUCCESS)
}

/// Both servers under wrk for `target`, `--runs` times, alternating.
fn compare(target: &Target, node: &BenchNode, nginx: &Nginx, options: &ServeBench) -> anyhow::Result<Compared> {
    let (mut omega, mut peer) = (Vec::new(), Vec::new());
    let omega_url = format!("http://{}{}", node.addr, target.omega_path);
    let nginx_url = format!("http://127.0.0.1:{}/{}", nginx.port, target.nginx_name);
    for run in 0..options.runs {
        // Alternate which goes first: neither always meets a warm machine.
        let (omega_load, nginx_load) = if run % 2 == 0 {
            let ours = wrk(&omega_url, target.omega_header.as_deref(), options)?;
            (ours, wrk(&nginx_url, None, options)?)
        } else {
            let theirs = wrk(&nginx_url, None, options)?;
            (wrk(&omega_url, target.omega_header.as_deref(), options)?, theirs)
        };
        eprintln!(
            "run {run} {}: Omega {:.0} req/s p99 {:.2} ms, nginx {:.0} req/s p99 {:.2} ms",
            target.what,
            omega_load.requests_per_second,
            omega_load.p99_ms,
            nginx_load.requests_per_second,
            nginx_load.p99_ms
        );
        omega.push(omega_load);
        peer.push(nginx_load);
    }
    let medians = |loads: &[Load]| Load {
        requests_per_second: median(&loads.iter().map(|load| load.requests_per_second).collect::<Vec<_>>()),
        p99_ms: median(&loads.iter().map(|load| load.p99_ms).collect::<Vec<_>>()),
    };
    let (omega, nginx) = (medians(&omega), medians(&peer));
    Ok(Compared {
        what: target.what,
        bytes: target.bytes,
        omega,
        nginx,
        throughput_ratio: omega.requests_per_second / nginx.requests_per_second,
        p99_ratio: omega.p99_ms / nginx.p99_ms,
    })
}

/// Waits for the film and checks Omega's direct stream against the file,
/// whole and a range; the target and an access token.
async fn direct_target(node: &BenchNode, source: &Path) -> anyhow::Result<(Target, String)> {
    let started = Instant::now();
    let token = node.login().await?;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut http = Http::connect(node.addr).await?;
    let item = super::first_movie(&mut http, &auth, started).await?;
    let file = std::fs::read(source)?;
    let stream = format!("/api/v1/items/{item}/stream");
    let (code, whole) = http.get(&stream, &auth).await?;
    anyhow::ensure!(code == 200, "the direct stream answered HTTP {code}");
    anyhow::ensure!(whole == file, "the direct stream differs from the file");
    let (code, part) = http
        .get(&stream, &format!("{auth}Range: bytes=1000000-3999999\r\n"))
        .await?;
    anyhow::ensure!(code == 206, "a ranged direct stream answered HTTP {code}");
    anyhow::ensure!(part == file[1_000_000..4_000_000], "a range differs from the file");
    let target = Target {
        what: "direct stream",
        omega_path: stream,
        omega_header: Some(format!("Authorization: Bearer {token}")),
        nginx_name: "direct.mkv",
        bytes: file.len() as u64,
    };
    Ok((target, token))
}

/// Makes segment 0 of the 720p rendition, waits until it is kept in the
/// store and the node's ffmpeg is done, and copies it under nginx's root.
async fn segment_target(node: &BenchNode, token: &str, stream: &str, root: &Path) -> anyhow::Result<Target> {
    let started = Instant::now();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut http = Http::connect(node.addr).await?;
    let base = stream.replace("/stream", "/hls");
    let (code, master) = http.get(&format!("{base}/master.m3u8"), &auth).await?;
    anyhow::ensure!(code == 200, "the master playlist answered HTTP {code}");
    let master = String::from_utf8_lossy(&master);
    let variant = master
        .lines()
        .find(|line| line.starts_with("720p/"))
        .context("no 720p rendition")?;
    let query = variant.split_once('?').map(|(_, query)| query).unwrap_or_default();
    let segment = format!("{base}/720p/0.m4s?{query}");
    let (code, bytes) = http.get(&segment, "").await?;
    anyhow::ensure!(code == 200, "segment 0 answered HTTP {code}");
    // Kept by a background thread: wait until an answer comes from the store.
    loop {
        let (_, metrics) = http.get("/metrics", "").await?;
        if String::from_utf8_lossy(&metrics).contains("omega_hls_segments_total{origin=\"store\"}") {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("segment 0 was not kept in the store");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, again) = http.get(&segment, "").await?;
        anyhow::ensure!(again == bytes, "segment 0 changed between answers");
    }
    while node.runs_ffmpeg() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the node's ffmpeg did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(root.join("segment.m4s"), &bytes)?;
    Ok(Target {
        what: "kept segment",
        omega_path: segment,
        omega_header: None,
        nginx_name: "segment.m4s",
        bytes: bytes.len() as u64,
    })
}

/// nginx serving `root` on a loopback port; stopped when dropped.
struct Nginx {
    _process: Processes,
    port: u16,
}

impl Nginx {
    fn start(work: &Path, root: &Path) -> anyhow::Result<Nginx> {
        let port = free_port(false)?;
        let prefix = work.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        // As root, nginx's workers would drop to `nobody`, who cannot read
        // the work directory.
        // SAFETY: geteuid only reads the process's credentials.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let temp = prefix.display();
        let config = format!(
            "{user}\nworker_processes auto;\ndaemon off;\npid {temp}/nginx.pid;\nerror_log {temp}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n\
             client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n\
             uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            root.display()
        );
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, config)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx")?;
        let nginx = Nginx {
            _process: Processes(vec![child]),
            port,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start (see {temp}/error.log)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

/// One wrk run against `url` (two threads, `--connections`, `--seconds`).
fn wrk(url: &str, header: Option<&str>, options: &ServeBench) -> anyhow::Result<Load> {
    let mut command = Command::new("wrk");
    command.args(["-t", "2", "-c", &options.connections.to_string()]).args([
        "-d",
        &format!("{}s", options.seconds),
        "--latency",
    ]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text)
}

/// Requests/s and the 99th percentile latency of wrk's `--latency` report;
/// an error if any answer was not 2xx/3xx or a socket failed.
fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut requests_per_second = None;
    let mut p99_ms = None;
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_second = rate.trim().parse::<f64>().ok();
        } else if let Some(latency) = line.strip_prefix("99%") {
            p99_ms = parse_duration_ms(latency.trim());
        } else if line.starts_with("Non-2xx or 3xx responses") || line.starts_with("Socket errors") {
            bail!("wrk saw failures: {line}");
        }
    }
    Ok(Load {
        requests_per_second: requests_per_second.context("wrk printed no Requests/sec")?,
        p99_ms: p99_ms.context("wrk printed no 99% latency")?,
    })
}

/// `123.45us`, `1.23ms`, `1.50s` or `2.00m` in milliseconds.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number * scale)
}

fn print(compared: &[Compared], options: &ServeBench) -> anyhow::Result<()> {
    if options.output.json {
        println!("{}", serde_json::to_string_pretty(compared)?);
    } else {
        for row in compared {
            println!(
                "{:<14} {:.1} MB: Omega {:.0} req/s p99 {:.2} ms, nginx {:.0} req/s p99 {:.2} ms = {:.2}x req/s (goal >= 0.9x), p99 {:.2}x (goal <= 2x)",
                row.what,
                row.bytes as f64 / 1e6,
                row.omega.requests_per_second,
                row.omega.p99_ms,
                row.nginx.requests_per_second,
                row.nginx.p99_ms,
                row.throughput_ratio,
                row.p99_ratio
            );
        }
    }
    if let Some(path) = &options.output.record {
        for row in compared {
            record_row(
                path,
                "serve",
                &format!(
                    "| {} | {} | {:.1} MB | {:.0} | {:.2} ms | {:.0} | {:.2} ms | {:.2}x | {:.2}x | `omega bench serve --seconds {} --connections {} --runs {}` |",
                    super::today(),
                    row.what,
                    row.bytes as f64 / 1e6,
                    row.omega.requests_per_second,
                    row.omega.p99_ms,
                    row.nginx.requests_per_second,
                    row.nginx.p99_ms,
                    row.throughput_ratio,
                    row.p99_ratio,
                    options.seconds,
                    options.connections,
                    options.runs
                ),
            )?;
        }
        eprintln!("recorded rows in {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let report = "Running 2s test @ http://127.0.0.1:1/x\n  2 threads and 32 connections\n  Latency Distribution\n     50%  162.00us\n     99%    1.23ms\n  1234 requests in 2.00s, 19.99GB read\nRequests/sec:    617.00\nTransfer/sec:      9.99GB\n";
        let load = parse_wrk(report).unwrap();
        assert_eq!(load.requests_per_second, 617.0);
        assert!((load.p99_ms - 1.23).abs() < 1e-9);
        assert!(parse_wrk(&format!("{report}  Non-2xx or 3xx responses: 3\n")).is_err());
        assert_eq!(parse_duration_ms("1.50s"), Some(1500.0));
        assert_eq!(parse_duration_ms("250.00us"), Some(0.25));
        assert_eq!(parse_duration_ms("fast"), None);
    }
}
