//! `omega bench scan --items N`: a synthetic movie library of N files is
//! scanned by a real `omega serve` (names only: ffprobe is off, as the issue
//! allows for synthetic files), then item-list pages are fetched over HTTP.
//! Prints items/s indexed and p50/p99 list latency against the goals
//! (≥ 2,000 items/s, p99 < 50 ms); there is no packaged peer to run.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use super::http::Http;
use super::{BenchNode, percentile, record_row, work_dir};

/// Options of `omega bench scan`.
#[derive(Debug, Args)]
pub struct ScanBench {
    /// Files in the synthetic library.
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    /// List requests to time.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Where to work, how to print, where to record.
    #[command(flatten)]
    pub output: super::BenchOutput,
}

#[derive(Debug, Serialize)]
struct ScanFigures {
    items: usize,
    scan_seconds: f64,
    items_per_second: f64,
    list_p50_ms: f64,
    list_p99_ms: f64,
}

fn build_library(root: &Path, items: usize) -> anyhow::Result<()> {
    for index in 0..items {
        let folder = root.join(format!("{:03}", index / 1000));
        if index % 1000 == 0 {
            std::fs::create_dir_all(&folder)?;
        }
        let year = 1950 + index % 70;
        std::fs::write(folder.join(format!("Film {index:06} ({year}).mkv")), b"synthetic")?;
    }
    Ok(())
}

/// Runs the benchmark.
pub(super) fn run(options: &ScanBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        options.items > 0 && options.items <= 2_000_000,
        "--items takes 1 to 2000000"
    );
    anyhow::ensure!(options.queries > 0, "--queries must be at least 1");
    let work = work_dir(options.output.work_dir.as_deref())?;
    let library = work.path().join("films");
    eprintln!("building a library of {} files", options.items);
    build_library(&library, options.items)?;
    let config = work.path().join("omega.toml");
    std::fs::write(&config, "[library]\nprobe = false\n")?;
    let node = BenchNode::start(&config, &work.path().join("data"), &work.path().join("serve.log"), &[])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(measure(options, &library, &node))?;
    print(&figures, options)?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(options: &ScanBench, library: &Path, node: &BenchNode) -> anyhow::Result<ScanFigures> {
    let token = node.login().await?;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut http = Http::connect(node.addr).await?;
    let body = serde_json::json!({ "name": "Films", "type": "movies", "paths": [library] }).to_string();
    let scan_started = Instant::now();
    let (code, answer) = http
        .request("POST", "/api/v1/libraries", &auth, body.as_bytes())
        .await?;
    if code != 201 {
        bail!("creating the library failed: {}", String::from_utf8_lossy(&answer));
    }
    let id = serde_json::from_slice::<serde_json::Value>(&answer)?["id"]
        .as_u64()
        .context("no library id")?;
    loop {
        let (_, status) = http.get(&format!("/api/v1/libraries/{id}/scan"), &auth).await?;
        let status: serde_json::Value = serde_json::from_slice(&status)?;
        match status["state"].as_str() {
            Some("done") => break,
            Some("failed") => bail!("the scan failed: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let scan_seconds = scan_started.elapsed().as_secs_f64();
    eprintln!("scanned {} files in {scan_seconds:.2} s", options.items);
    let mut latencies = Vec::with_capacity(options.queries);
    for query in 0..options.queries {
        // Pages across the whole library, both orders.
        let offset = (query * 7_919) % options.items.max(1);
        let order = if query % 2 == 0 { "asc" } else { "desc" };
        let path = format!("/api/v1/items?type=movie&limit=100&offset={offset}&order={order}");
        let sent = Instant::now();
        let (code, page) = http.get(&path, &auth).await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        if code != 200 {
            bail!("listing failed: {}", String::from_utf8_lossy(&page));
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(ScanFigures {
        items: options.items,
        scan_seconds,
        items_per_second: options.items as f64 / scan_seconds,
        list_p50_ms: percentile(&latencies, 0.50),
        list_p99_ms: percentile(&latencies, 0.99),
    })
}

fn print(figures: &ScanFigures, options: &ScanBench) -> anyhow::Result<()> {
    if options.output.json {
        println!("{}", serde_json::to_string_pretty(figures)?);
    } else {
        println!(
            "scan   {} items in {:.2} s = {:.0} items/s (goal >= 2000, {:.1}x)",
            figures.items,
            figures.scan_seconds,
            figures.items_per_second,
            figures.items_per_second / 2000.0
        );
        println!(
            "list   p50 {:.2} ms, p99 {:.2} ms over {} pages of 100 (goal p99 < 50 ms, {:.2}x)",
            figures.list_p50_ms,
            figures.list_p99_ms,
            options.queries,
            figures.list_p99_ms / 50.0
        );
    }
    if let Some(path) = &options.output.record {
        record_row(
            path,
            "scan",
            &format!(
                "| {} | {} | {:.2} s | {:.0} | {:.1}x | {:.2} ms | {:.2} ms | {:.2}x | `omega bench scan --items {}`, ffprobe off |",
                super::today(),
                figures.items,
                figures.scan_seconds,
                figures.items_per_second,
                figures.items_per_second / 2000.0,
                figures.list_p50_ms,
                figures.list_p99_ms,
                figures.list_p99_ms / 50.0,
                figures.items
            ),
        )?;
        eprintln!("recorded a row in {}", path.display());
    }
    Ok(())
}
