//! `omega bench transcode`: a generated 60 s 1080p source is made into a
//! 720p HLS rendition twice per run: by a real `omega serve` (a player's
//! requests once the scan is over: master, init, then every segment in
//! order) and by a plain ffmpeg command for the same rendition. Prints the
//! time from the master request to Omega's first segment (goal < 0.5 s)
//! and both total wall times (goal: Omega at most 1.05× plain ffmpeg);
//! medians over `--runs`.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use super::http::Http;
use super::{BenchNode, median, record_row, work_dir};

/// Options of `omega bench transcode`.
#[derive(Debug, Args)]
pub struct TranscodeBench {
    /// Source length in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Runs (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where to work, how to print, where to record.
    #[command(flatten)]
    pub output: super::BenchOutput,
}

#[derive(Debug, Serialize)]
struct TranscodeFigures {
    seconds: u32,
    runs: usize,
    first_segment_s: f64,
    omega_total_s: f64,
    ffmpeg_total_s: f64,
    ratio: f64,
}

/// Runs ffmpeg quietly with `args`.
pub(super) fn ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .stdin(Stdio::null())
        .status()
        .context("cannot run ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg {args:?} failed");
    }
    Ok(())
}

/// The plain ffmpeg command for the same rendition Omega makes.
fn plain_ffmpeg(source: &Path, out: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(out)?;
    let started = Instant::now();
    ffmpeg(&[
        "-i",
        &source.to_string_lossy(),
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "high",
        "-vf",
        "scale=1280:720,format=yuv420p",
        "-b:v",
        "2800000",
        "-maxrate",
        "4200000",
        "-bufsize",
        "5600000",
        "-force_key_frames",
        "expr:gte(t,n_forced*4)",
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-b:a",
        "128000",
        "-f",
        "hls",
        "-hls_time",
        "4",
        "-hls_segment_type",
        "fmp4",
        "-hls_list_size",
        "0",
        &out.join("index.m3u8").to_string_lossy(),
    ])?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the benchmark.
pub(super) fn run(options: &TranscodeBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((8..=3600).contains(&options.seconds), "--seconds takes 8 to 3600");
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
    let work = work_dir(options.output.work_dir.as_deref())?;
    let folder = work.path().join("films/Bench Film (2026)");
    std::fs::create_dir_all(&folder)?;
    let source = folder.join("Bench Film (2026).mkv");
    eprintln!("generating a {} s 1080p source", options.seconds);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=1920x1080:rate=25:duration={}", options.seconds),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:duration={}", options.seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "250",
        "-c:a",
        "aac",
        &source.to_string_lossy(),
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (mut first, mut omega, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..options.runs {
        // Alternate which goes first, so that neither always meets a warm
        // (or a throttled) machine.
        let plain_dir = work.path().join(format!("plain-{run}"));
        let (ffmpeg_s, (first_s, omega_s)) = if run % 2 == 0 {
            let plain = plain_ffmpeg(&source, &plain_dir)?;
            (plain, runtime.block_on(omega_run(work.path(), run, options.seconds))?)
        } else {
            let omega = runtime.block_on(omega_run(work.path(), run, options.seconds))?;
            (plain_ffmpeg(&source, &plain_dir)?, omega)
        };
        eprintln!("run {run}: first segment {first_s:.2} s, Omega {omega_s:.2} s, ffmpeg {ffmpeg_s:.2} s");
        first.push(first_s);
        omega.push(omega_s);
        plain.push(ffmpeg_s);
    }
    let figures = TranscodeFigures {
        seconds: options.seconds,
        runs: options.runs,
        first_segment_s: median(&first),
        omega_total_s: median(&omega),
        ffmpeg_total_s: median(&plain),
        ratio: median(&omega) / median(&plain),
    };
    print(&figures, options)?;
    Ok(ExitCode::SUCCESS)
}

/// One Omega run on a fresh node: (time to first segment, total).
async fn omega_run(work: &Path, run: usize, seconds: u32) -> anyhow::Result<(f64, f64)> {
    let config = work.join("omega.toml");
    std::fs::write(&config, "[transcode]\nhardware = false\n[library]\nwatch = false\n")?;
    let data = work.join(format!("data-{run}"));
    let films = work.join("films");
    let node = BenchNode::start(
        &config,
        &data,
        &work.join(format!("serve-{run}.log")),
        &["--media".as_ref(), films.as_os_str()],
    )?;
    let started = Instant::now();
    let token = node.login().await?;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut http = Http::connect(node.addr).await?;
    let item = super::first_movie(&mut http, &auth, started).await?;
    super::scans_done(&mut http, &auth, started).await?;
    let base = format!("/api/v1/items/{item}/hls");
    let asked = Instant::now();
    let fetch = |code: u16, body: &[u8], what: &str| -> anyhow::Result<()> {
        if code != 200 {
            bail!("{what}: HTTP {code}: {}", String::from_utf8_lossy(body));
        }
        Ok(())
    };
    let (code, master) = http.get(&format!("{base}/master.m3u8"), &auth).await?;
    fetch(code, &master, "master")?;
    let master_s = asked.elapsed().as_secs_f64();
    let master = String::from_utf8_lossy(&master);
    let variant = master
        .lines()
        .find(|line| line.starts_with("720p/"))
        .context("no 720p rendition")?
        .to_owned();
    let query = variant
        .split_once('?')
        .map(|(_, query)| query.to_owned())
        .unwrap_or_default();
    let (code, body) = http.get(&format!("{base}/720p/init.mp4?{query}"), "").await?;
    fetch(code, &body, "init")?;
    let init_s = asked.elapsed().as_secs_f64();
    let (code, body) = http.get(&format!("{base}/720p/0.m4s?{query}"), "").await?;
    fetch(code, &body, "segment 0")?;
    let first_segment = asked.elapsed().as_secs_f64();
    eprintln!("  master {master_s:.3} s, init {init_s:.3} s, segment 0 {first_segment:.3} s");
    let (code, playlist) = http.get(&format!("{base}/{variant}"), "").await?;
    fetch(code, &playlist, "variant")?;
    let segments = String::from_utf8_lossy(&playlist)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .count();
    anyhow::ensure!(segments as u32 >= seconds / 4, "only {segments} segments listed");
    for index in 1..segments {
        let (code, body) = http.get(&format!("{base}/720p/{index}.m4s?{query}"), "").await?;
        fetch(code, &body, &format!("segment {index}"))?;
    }
    Ok((first_segment, asked.elapsed().as_secs_f64()))
}

fn print(figures: &TranscodeFigures, options: &TranscodeBench) -> anyhow::Result<()> {
    if options.output.json {
        println!("{}", serde_json::to_string_pretty(figures)?);
    } else {
        println!(
            "first segment  {:.2} s (goal < 0.5 s, {:.2}x)",
            figures.first_segment_s,
            figures.first_segment_s / 0.5
        );
        println!(
            "total          Omega {:.2} s, plain ffmpeg {:.2} s = {:.3}x (goal <= 1.05x)",
            figures.omega_total_s, figures.ffmpeg_total_s, figures.ratio
        );
    }
    if let Some(path) = &options.output.record {
        record_row(
            path,
            "transcode",
            &format!(
                "| {} | {} s 1080p → 720p | {:.2} s | {:.2} s | {:.2} s | {:.3}x | `omega bench transcode --runs {}`, libx264 veryfast, medians of {}; first segment 0.5 s, probe and keyframes analysed at scan |",
                super::today(),
                figures.seconds,
                figures.first_segment_s,
                figures.omega_total_s,
                figures.ffmpeg_total_s,
                figures.ratio,
                options.runs,
                options.runs
            ),
        )?;
        eprintln!("recorded a row in {}", path.display());
    }
    Ok(())
}
