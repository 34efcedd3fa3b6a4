//! `omega bench store`: ingest a corpus with Omega and with restic.
//!
//! The corpus (as issue 2 names it): two identical random files, a copy with
//! 100 bytes inserted after 1 MiB, a media file made by ffmpeg and its remux
//! with changed tags. Each tool ingests it into a fresh repository `runs`
//! times, alternating which goes first; the medians of wall time and the
//! bytes each left on disk are compared. Every Omega run is the command a
//! user types, `omega store ingest`, in a fresh process on a fresh data
//! directory (process start, store creation and the fsync before exit
//! included); the first one, run before anything else touched a store, is
//! also reported on its own as the one-shot figure.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use super::{median, record_row};
use crate::units::format_bytes;

/// Options of `omega bench store`.
#[derive(Debug, Args)]
pub struct StoreBench {
    /// Size of each random file, in MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: u64,
    /// Runs per tool; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where to work, how to print, where to record.
    #[command(flatten)]
    pub output: super::BenchOutput,
}

/// The figures of one run of the benchmark.
#[derive(Debug, Serialize)]
struct StoreBenchResult {
    corpus_bytes: u64,
    omega_seconds: f64,
    omega_stored_bytes: u64,
    restic_seconds: f64,
    restic_stored_bytes: u64,
    time_ratio: f64,
    stored_ratio: f64,
    /// The first Omega command of the benchmark, on its own.
    omega_one_shot_seconds: f64,
    /// It over restic's median.
    one_shot_ratio: f64,
    omega_runs: Vec<f64>,
    restic_runs: Vec<f64>,
}

/// Runs the benchmark.
pub(super) fn run(options: &StoreBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(options.size_mib >= 2, "--size-mib must be at least 2");
    which("restic").context("restic is needed as the peer (apt-get install restic)")?;
    which("ffmpeg").context("ffmpeg is needed to make the media files (apt-get install ffmpeg)")?;
    let work = super::work_dir(options.output.work_dir.as_deref())?;
    let corpus = work.path().join("corpus");
    let corpus_bytes = build_corpus(&corpus, options.size_mib)?;
    eprintln!("corpus: {} in {}", format_bytes(corpus_bytes), corpus.display());

    let omega = std::env::current_exe().context("cannot find the omega binary")?;
    let (mut omega_runs, mut restic_runs) = (Vec::new(), Vec::new());
    let (mut omega_stored, mut restic_stored) = (Vec::new(), Vec::new());
    for run in 0..options.runs {
        let omega_dir = work.path().join(format!("omega-{run}"));
        let restic_dir = work.path().join(format!("restic-{run}"));
        let mut run_omega = || -> anyhow::Result<()> {
            let seconds = time_omega(&omega, &omega_dir, &corpus)?;
            let stored = dir_bytes(&omega_dir);
            omega_stored.push(stored as f64);
            omega_runs.push(seconds);
            eprintln!("run {run}: omega  {seconds:.2} s, {}", format_bytes(stored));
            std::fs::remove_dir_all(&omega_dir).ok();
            Ok(())
        };
        let mut run_restic = || -> anyhow::Result<()> {
            let seconds = time_restic(&restic_dir, &corpus, work.path())?;
            // restic picks a random chunker polynomial per repository, so
            // its stored bytes vary from run to run: compare medians.
            let stored = dir_bytes(&restic_dir);
            restic_stored.push(stored as f64);
            restic_runs.push(seconds);
            eprintln!("run {run}: restic {seconds:.2} s, {}", format_bytes(stored));
            std::fs::remove_dir_all(&restic_dir).ok();
            Ok(())
        };
        if run % 2 == 0 {
            run_omega()?;
            run_restic()?;
        } else {
            run_restic()?;
            run_omega()?;
        }
    }
    // Run 0 starts with Omega: its first command met nothing warmed up.
    let one_shot = omega_runs.first().copied().unwrap_or(f64::NAN);
    let result = StoreBenchResult {
        corpus_bytes,
        omega_seconds: median(&omega_runs),
        omega_stored_bytes: median(&omega_stored) as u64,
        restic_seconds: median(&restic_runs),
        restic_stored_bytes: median(&restic_stored) as u64,
        time_ratio: median(&omega_runs) / median(&restic_runs),
        stored_ratio: median(&omega_stored) / median(&restic_stored),
        omega_one_shot_seconds: one_shot,
        one_shot_ratio: one_shot / median(&restic_runs),
        omega_runs,
        restic_runs,
    };
    print_result(options.output.json, &result)?;
    if let Some(path) = &options.output.record {
        record_row(path, "store", &row(&result, options))?;
        eprintln!("recorded a row in {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_result(json: bool, result: &StoreBenchResult) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
        return Ok(());
    }
    println!("corpus   {}", format_bytes(result.corpus_bytes));
    println!(
        "omega    {:.2} s, {} on disk (medians)",
        result.omega_seconds,
        format_bytes(result.omega_stored_bytes)
    );
    println!(
        "restic   {:.2} s, {} on disk (medians)",
        result.restic_seconds,
        format_bytes(result.restic_stored_bytes)
    );
    println!(
        "ratio    time {:.2}x (goal <= 0.5x), stored {:.2}x (goal <= 1.0x)",
        result.time_ratio, result.stored_ratio
    );
    println!(
        "one-shot the first omega store ingest {:.2} s = {:.2}x restic (goal <= 0.5x)",
        result.omega_one_shot_seconds, result.one_shot_ratio
    );
    Ok(())
}

fn row(result: &StoreBenchResult, options: &StoreBench) -> String {
    let date = super::today();
    format!(
        "| {} | {} | {:.2} s | {:.2} s | {:.2}x | {} | {} | {:.2}x | {} runs, `omega bench store --size-mib {}`; one-shot (the first command) {:.2} s = {:.2}x |",
        date,
        format_bytes(result.corpus_bytes),
        result.omega_seconds,
        result.restic_seconds,
        result.time_ratio,
        format_bytes(result.omega_stored_bytes),
        format_bytes(result.restic_stored_bytes),
        result.stored_ratio,
        options.runs,
        options.size_mib,
        result.omega_one_shot_seconds,
        result.one_shot_ratio,
    )
}

fn which(program: &str) -> anyhow::Result<()> {
    let status = Command::new(program)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(_) => Ok(()),
        Err(error) => bail!("{program}: {error}"),
    }
}

/// Writes the corpus; returns its size.
fn build_corpus(dir: &Path, size_mib: u64) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut random = vec![0_u8; (size_mib << 20) as usize];
    rand::rngs::StdRng::seed_from_u64(2).fill_bytes(&mut random);
    std::fs::write(dir.join("a.bin"), &random)?;
    std::fs::write(dir.join("b.bin"), &random)?;
    let mut shifted = Vec::with_capacity(random.len() + 100);
    shifted.extend_from_slice(&random[..1 << 20]);
    shifted.extend_from_slice(&[0x5a; 100]);
    shifted.extend_from_slice(&random[1 << 20..]);
    std::fs::write(dir.join("c.bin"), &shifted)?;
    drop((random, shifted));
    let media = dir.join("media.mkv");
    run_ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "20",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-b:v",
        "6M",
        "-c:a",
        "aac",
        "-metadata",
        "title=Original",
        &media.to_string_lossy(),
    ])?;
    run_ffmpeg(&[
        "-i",
        &media.to_string_lossy(),
        "-map",
        "0",
        "-c",
        "copy",
        "-metadata",
        "title=Remuxed with new tags",
        "-metadata",
        "comment=omega bench",
        &dir.join("remux.mkv").to_string_lossy(),
    ])?;
    Ok(dir_bytes(dir))
}

fn run_ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error", "-y"]).args(args);
    run_checked(&mut command, "ffmpeg")
}

/// Runs `command` to its end; a failure carries the command's stderr.
fn run_checked(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Runs `command` and returns its wall time in seconds.
fn time_checked(command: &mut Command, what: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    run_checked(command, what)?;
    Ok(started.elapsed().as_secs_f64())
}

fn time_omega(omega: &Path, data_dir: &Path, corpus: &Path) -> anyhow::Result<f64> {
    let mut ingest = Command::new(omega);
    ingest
        .args(["store", "ingest", "--data-dir"])
        .arg(data_dir)
        .arg(corpus)
        .env_remove("OMEGA_CONFIG");
    time_checked(&mut ingest, "omega store ingest")
}

fn time_restic(repository: &Path, corpus: &Path, work: &Path) -> anyhow::Result<f64> {
    let restic = |args: &[&str]| {
        let mut command = Command::new("restic");
        command
            .arg("--repo")
            .arg(repository)
            .args(args)
            .env("RESTIC_PASSWORD", "omega-bench")
            .env("RESTIC_CACHE_DIR", work.join("restic-cache"))
            .stdout(Stdio::null());
        command
    };
    run_checked(&mut restic(&["init", "--quiet"]), "restic init")?;
    time_checked(restic(&["backup", "--quiet"]).arg(corpus), "restic backup")
}

/// Total size of the regular files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}
