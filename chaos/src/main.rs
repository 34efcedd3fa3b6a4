//! `omega-chaos`: faults against a live cluster of real `omega` processes
//! while clients work; prints what it did and every violation, and exits
//! non-zero on any.
//!
//! ```text
//! cargo run -p omega-chaos -- --nodes 3 --duration 60s --faults kill,pause,partition,disk --seed 7
//! ```
//!
//! Partition, loss, delay and disk need root (network namespaces, nftables,
//! a tmpfs per node); `--faults all` picks every fault this machine can do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use omega_chaos::{Config, Fault, run};

/// Chaos testing of real omega processes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Nodes in the cluster (at least 3).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long faults are injected, e.g. 60s or 5m.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    duration: Duration,
    /// Faults to inject, comma-separated: kill, pause, partition, loss,
    /// delay, disk, corrupt; or `all` (every one this machine can do).
    #[arg(long, default_value = "kill,pause")]
    faults: String,
    /// Seed of the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client threads.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// The omega binary (default: `omega` beside this program).
    #[arg(long)]
    omega: Option<PathBuf>,
    /// Keep the nodes' data directories and logs in this folder.
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s or 5m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("{text:?} is not a duration like 60s or 5m")),
    }
}

/// Under `cargo run` (which sets `CARGO`), builds the `omega` binary of
/// the same profile first, so that `cargo run -p omega-chaos` tests the
/// current sources.
fn build_omega_under_cargo(folder: &std::path::Path) -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet", "-p", "omega-node", "--bin", "omega"]);
    if folder.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let status = command.status().context("cannot run cargo to build omega")?;
    anyhow::ensure!(status.success(), "building omega failed");
    Ok(())
}

fn main() -> ExitCode {
    match main_result() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("omega-chaos: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn main_result() -> anyhow::Result<ExitCode> {
    let args = match omega_chaos::cli::parse_or_exit::<Args>("omega-chaos") {
        Ok(args) => args,
        Err(code) => return Ok(code),
    };
    let faults = if args.faults.trim() == "all" {
        Fault::available()
    } else {
        args.faults
            .split(',')
            .map(|name| Fault::parse(name.trim()))
            .collect::<Result<Vec<_>, _>>()?
    };
    let omega = match args.omega {
        Some(path) => path,
        None => {
            let folder = std::env::current_exe()?
                .parent()
                .context("this program has no folder")?
                .to_path_buf();
            build_omega_under_cargo(&folder)?;
            folder.join("omega")
        }
    };
    if !omega.exists() {
        anyhow::bail!(
            "no omega binary at {}: build it first (cargo build -p omega-node)",
            omega.display()
        );
    }
    let config = Config {
        omega,
        nodes: args.nodes,
        duration: args.duration,
        faults,
        seed: args.seed,
        clients: args.clients,
        env: Vec::new(),
        keep: args.keep,
    };
    let report = run(&config)?;
    println!(
        "ops: {} adds acknowledged, {} adds unknown, {} reads; faults injected: {}; violations: {}",
        report.adds_done,
        report.adds_unknown,
        report.reads,
        report.faults,
        report.violations.len()
    );
    println!("faults by kind: {:?}", report.faults_by_kind);
    println!("answers to adds by status (0: none): {:?}", report.add_statuses);
    println!(
        "store: {} ingests acknowledged and checked, {} refused; {} reads refused and {} corrupt chunks found on corrupted nodes; {} restarts after a full disk; {} store violations",
        report.ingests,
        report.ingests_refused,
        report.corrupt_reads_refused,
        report.corrupt_chunks_found,
        report.disk_restarts,
        report.store_violations.len()
    );
    for violation in &report.violations {
        println!("violation: {violation}");
    }
    for violation in &report.store_violations {
        println!("violation: {violation}");
    }
    println!("library: {} violations", report.library_violations.len());
    for violation in &report.library_violations {
        println!("violation: {violation}");
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
