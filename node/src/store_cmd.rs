//! `omega store …`: the store's commands.
//!
//! While a node runs on the data directory (its RocksDB is locked), each
//! command is sent to it over the control socket and runs there; otherwise
//! the command opens the store itself. Output meant for scripts goes to
//! stdout (blob ids, JSON); progress and summaries go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use omega_storage::{BlobId, Residency, Store};
use serde::{Deserialize, Serialize};

use crate::control::{ControlRequest, call};

use crate::cli::{GlobalArgs, one_line};
use crate::units::{format_bytes, format_rate};

/// The store's commands.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum StoreCommand {
    /// Ingest files (directories are walked). Prints each blob id.
    Ingest {
        /// Index files where they are instead of copying them into the store.
        #[arg(long)]
        in_place: bool,
        /// Files or directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Store-wide figures.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a blob (or a byte range of it) to stdout.
    Cat {
        /// The blob id (64 hex digits).
        blob: String,
        /// Bytes START-END (inclusive, as in HTTP ranges); START- and -N work too.
        #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
        range: Option<String>,
    },
    /// Verify every stored chunk; quarantine and report corrupt ones.
    Scrub {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove unreferenced blobs and chunks; compact packs.
    Gc {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tiering between the hot directory and the cold object store.
    #[command(subcommand)]
    Tier(TierCommand),
}

/// `omega store tier …`.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierCommand {
    /// Demote the coldest packs until the hot tier is under its budget.
    Run {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Bytes of a blob read per control-socket round trip by `cat`.
const REMOTE_READ_BYTES: u64 = 4 << 20;

/// Runs a store command: through the running node if there is one.
pub fn run(global: &GlobalArgs, command: StoreCommand) -> anyhow::Result<ExitCode> {
    let config = global.config()?;
    let socket = config.data_dir.join("omega.sock");
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        global.refuse_node_settings()?;
        return remote(&socket, command);
    }
    let store = Store::open(&config.store_dir(), config.store.clone())
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    if let StoreCommand::Cat { blob, range } = &command {
        return cat(&store, blob, range.as_deref());
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    execute(&store, command, &mut stdout, &mut stderr, true)
}

/// What a node answers to a store command run for a client.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteOutput {
    /// What the command wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Its exit status.
    pub success: bool,
}

/// Runs `command` on this node's store for a client, capturing its output.
pub fn execute_for_client(store: &Store, command: StoreCommand) -> anyhow::Result<RemoteOutput> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = execute(store, command, &mut stdout, &mut stderr, false)?;
    Ok(RemoteOutput {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        success: code == ExitCode::SUCCESS,
    })
}

fn remote(socket: &std::path::Path, command: StoreCommand) -> anyhow::Result<ExitCode> {
    let command = match command {
        StoreCommand::Cat { blob, range } => return remote_cat(socket, &blob, range.as_deref()),
        // The node's working directory is not ours.
        StoreCommand::Ingest { in_place, paths } => StoreCommand::Ingest {
            in_place,
            paths: paths
                .iter()
                .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
                .collect(),
        },
        other => other,
    };
    let answer = call(socket, &ControlRequest::Store { command })?;
    let output: RemoteOutput = serde_json::from_value(answer).context("the node's answer is not understood")?;
    print!("{}", output.stdout);
    eprint!("{}", output.stderr);
    Ok(if output.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn remote_cat(socket: &std::path::Path, blob: &str, range: Option<&str>) -> anyhow::Result<ExitCode> {
    let blob: BlobId = blob.parse()?;
    let size = call(socket, &ControlRequest::StoreBlobSize { blob: blob.to_string() })?
        .as_u64()
        .context("the node's answer is not a size")?;
    let (mut start, end) = match range {
        Some(range) => parse_range(range, size)?,
        None => (0, size),
    };
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    while start < end {
        let stop = end.min(start + REMOTE_READ_BYTES);
        let answer = call(
            socket,
            &ControlRequest::StoreRead {
                blob: blob.to_string(),
                start,
                end: stop,
            },
        )?;
        let encoded = answer.as_str().context("the node's answer is not bytes")?;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)?;
        anyhow::ensure!(bytes.len() as u64 == stop - start, "the node sent a short read");
        match stdout.write_all(&bytes) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other.context("cannot write to stdout")?,
        }
        start = stop;
    }
    match stdout.flush() {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS).context("cannot write to stdout"),
    }
}

/// Runs a store command other than `cat`, writing to `out` and `err`;
/// `progress` draws a progress bar on the terminal.
fn execute(
    store: &Store,
    command: StoreCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Ingest { in_place, paths } => ingest(store, in_place, &paths, out, err, progress),
        StoreCommand::Stats { json } => {
            let stats = store.stats()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                let ratio = stats.dedup_ratio().unwrap_or(1.0);
                writeln!(out, "logical   {}", format_bytes(stats.logical_bytes))?;
                writeln!(
                    out,
                    "stored    {} in {} chunks (dedup {ratio:.2}x)",
                    format_bytes(stats.stored_bytes),
                    stats.chunks
                )?;
                writeln!(out, "in place  {}", format_bytes(stats.in_place_bytes))?;
                writeln!(out, "blobs     {}", stats.blobs)?;
                writeln!(
                    out,
                    "hot       {} in {} packs",
                    format_bytes(stats.hot_bytes),
                    stats.hot_packs
                )?;
                writeln!(
                    out,
                    "cold      {} in {} packs",
                    format_bytes(stats.cold_bytes),
                    stats.cold_packs
                )?;
                writeln!(out, "quarantined chunks {}", stats.quarantined_chunks)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Cat { .. } => anyhow::bail!("cat streams to stdout; it does not run here"),
        StoreCommand::Scrub { json } => {
            let report = store.scrub()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                for finding in &report.findings {
                    writeln!(out, "{}: {}", finding.kind, finding.detail)?;
                }
                // Not corruption: read again later (nothing was quarantined).
                for error in &report.io_errors {
                    writeln!(out, "unreadable (not verified, not quarantined): {error}")?;
                }
                writeln!(
                    err,
                    "scrub: {} chunks ({}) verified, {} problems, {} newly quarantined, {} packs unreadable",
                    report.chunks_checked,
                    format_bytes(report.bytes_checked),
                    report.findings.len(),
                    report.quarantined,
                    report.io_errors.len()
                )?;
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        StoreCommand::Gc { json } => {
            let report = store.gc()?;
            print_report(out, json, &report, || {
                format!(
                    "gc: removed {} blobs, {} chunks, {} packs; compacted {} packs; reclaimed {}",
                    report.blobs_removed,
                    report.chunks_removed,
                    report.packs_removed,
                    report.packs_compacted,
                    format_bytes(report.bytes_reclaimed)
                )
            })
        }
        StoreCommand::Tier(TierCommand::Run { json }) => {
            let report = store.tier_run()?;
            print_report(out, json, &report, || {
                format!(
                    "tier: demoted {} packs ({}); hot {} of {} budget, cold {}",
                    report.demoted_packs,
                    format_bytes(report.demoted_bytes),
                    format_bytes(report.hot_bytes),
                    format_bytes(report.hot_bytes_max),
                    format_bytes(report.cold_bytes)
                )
            })
        }
    }
}

fn print_report<T: serde::Serialize>(
    out: &mut dyn Write,
    json: bool,
    report: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        writeln!(out, "{}", text())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Expands directories into the regular files under them, in name order.
fn expand_paths(paths: &[PathBuf], failures: &mut Vec<String>) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    for path in paths {
        let walker = walkdir::WalkDir::new(path).follow_links(false).sort_by_file_name();
        for entry in walker {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    let size = entry.metadata().map(|metadata| metadata.len()).unwrap_or(0);
                    files.push((entry.into_path(), size));
                }
                Ok(entry) if entry.path_is_symlink() && entry.depth() == 0 => match std::fs::metadata(entry.path()) {
                    Ok(metadata) if metadata.is_file() => files.push((entry.into_path(), metadata.len())),
                    Ok(_) => failures.push(format!("{}: not a regular file", entry.path().display())),
                    Err(error) => failures.push(format!("{}: {error}", entry.path().display())),
                },
                Ok(_) => {}
                Err(error) => {
                    let shown = error.path().unwrap_or(path).display().to_string();
                    let reason = error.io_error().map_or_else(|| error.to_string(), ToString::to_string);
                    failures.push(format!("cannot read {shown}: {reason}"));
                }
            }
        }
    }
    files
}

fn ingest(
    store: &Store,
    in_place: bool,
    paths: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> anyhow::Result<ExitCode> {
    let residency = if in_place {
        Residency::InPlace
    } else {
        Residency::Stored
    };
    let mut failures = Vec::new();
    let files = expand_paths(paths, &mut failures);
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    let bar = if progress {
        progress_bar(total)
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let (mut ingested, mut bytes, mut new_bytes) = (0_u64, 0_u64, 0_u64);
    for (path, size) in &files {
        let mut done = 0_u64;
        let outcome = store.ingest_file(path, residency, &mut |step| {
            done += step;
            bar.inc(step);
        });
        bar.inc(size.saturating_sub(done));
        match outcome {
            Ok(report) => {
                ingested += 1;
                bytes += report.size;
                new_bytes += report.new_bytes;
                bar.suspend(|| writeln!(out, "{}  {}", report.blob, path.display()))?;
            }
            Err(error) => failures.push(format!("{}: {}", path.display(), one_line(&error.into()))),
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    for failure in &failures {
        writeln!(err, "omega: error: {failure}")?;
    }
    writeln!(
        err,
        "ingested {ingested} files, {} in {seconds:.2} s ({}), {} new bytes stored{}",
        format_bytes(bytes),
        format_rate(bytes, seconds),
        format_bytes(new_bytes),
        if in_place { " (indexed in place)" } else { "" },
    )?;
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}") {
        bar.set_style(style);
    }
    bar
}

/// Parses `START-END` (inclusive), `START-` or `-SUFFIX` against `size`
/// into a half-open range.
pub fn parse_range(text: &str, size: u64) -> anyhow::Result<(u64, u64)> {
    let (start, end) = text
        .split_once('-')
        .with_context(|| format!("range {text:?} is not START-END"))?;
    let number = |value: &str| -> anyhow::Result<u64> {
        value
            .trim()
            .parse::<u64>()
            .with_context(|| format!("range {text:?}: {value:?} is not a number"))
    };
    let (first, last_exclusive) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => anyhow::bail!("range {text:?} is empty"),
        (true, false) => {
            let suffix = number(end)?.min(size);
            (size - suffix, size)
        }
        (false, true) => (number(start)?, size),
        (false, false) => {
            let (first, last) = (number(start)?, number(end)?);
            anyhow::ensure!(first <= last, "range {text:?} ends before it starts");
            (first, last.saturating_add(1).min(size))
        }
    };
    anyhow::ensure!(
        first < size || (first == 0 && size == 0),
        "range {text:?} starts past the end ({size} bytes)"
    );
    Ok((first, last_exclusive))
}

fn cat(store: &Store, blob: &str, range: Option<&str>) -> anyhow::Result<ExitCode> {
    let blob: BlobId = blob.parse()?;
    let record = store.blob(&blob)?;
    let (start, end) = match range {
        Some(range) => parse_range(range, record.size)?,
        None => (0, record.size),
    };
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    store.read_range_to(&blob, start, end, &mut stdout)?;
    match stdout.flush() {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_http_semantics() {
        assert_eq!(parse_range("0-9", 100).unwrap(), (0, 10));
        assert_eq!(parse_range("90-", 100).unwrap(), (90, 100));
        assert_eq!(parse_range("-10", 100).unwrap(), (90, 100));
        assert_eq!(parse_range("95-200", 100).unwrap(), (95, 100));
        assert!(parse_range("100-", 100).is_err());
        assert!(parse_range("9-3", 100).is_err());
        assert!(parse_range("a-b", 100).is_err());
        assert!(parse_range("", 100).is_err());
    }
}
