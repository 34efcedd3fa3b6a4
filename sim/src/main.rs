//! `omega-sim`: runs seeds of the simulated cluster and prints a summary;
//! `--seed S` replays one run (with `--trace`, event by event). Every
//! failure prints the command that replays it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use omega_sim::{Bug, Options, Outcome};

/// Deterministic simulation of an Omega cluster.
#[derive(Debug, Parser)]
#[command(name = "omega-sim", version)]
struct Cli {
    /// Runs this many seeds, from `--start`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Replays one seed (instead of `--seeds`).
    #[arg(long)]
    seed: Option<u64>,
    /// With `--seed`: prints the run's events.
    #[arg(long)]
    trace: bool,
    /// Runs at once (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Plants a bug, to show the simulator finds it: `ack-before-sync`,
    /// `leader-restore`, `stale-completion`, `unsynced-pack`,
    /// `unverified-pieces`, `local-reads`.
    #[arg(long, value_parser = parse_bug, hide = true)]
    plant_bug: Option<Bug>,
}

fn parse_bug(text: &str) -> Result<Bug, String> {
    Bug::from_name(text).ok_or_else(|| {
        let known: Vec<&str> = Bug::ALL.iter().map(|(_, name)| *name).collect();
        format!("unknown bug {text:?}: one of {}", known.join(", "))
    })
}

fn replay_command(seed: u64, bug: Option<Bug>) -> String {
    let bug = bug
        .map(|bug| format!(" --plant-bug {}", bug.name()))
        .unwrap_or_default();
    format!("cargo run --release -p omega-sim -- --seed {seed}{bug} --trace")
}

fn main() -> ExitCode {
    let cli = match omega_chaos::cli::parse_or_exit::<Cli>("omega-sim") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(seed) = cli.seed {
        let options = Options {
            seed,
            bug: cli.plant_bug,
            trace: cli.trace,
        };
        return match omega_sim::run(&options) {
            Ok(outcome) => {
                for line in &outcome.trace {
                    println!("{line}");
                }
                report(&outcome, cli.plant_bug)
            }
            Err(error) => {
                eprintln!("omega-sim: error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    run_many(&cli)
}

fn report(outcome: &Outcome, bug: Option<Bug>) -> ExitCode {
    println!(
        "seed {}: {} nodes, {} operations, {} jobs, {} faults, {:.1} s simulated, trace {} ({})",
        outcome.seed,
        outcome.nodes,
        outcome.operations,
        outcome.jobs,
        outcome.faults,
        outcome.simulated.as_secs_f64(),
        &outcome.trace_hash[..16],
        outcome.mix
    );
    if outcome.violations.is_empty() {
        return ExitCode::SUCCESS;
    }
    for violation in &outcome.violations {
        println!("  violation: {violation}");
    }
    println!("  replay: {}", replay_command(outcome.seed, bug));
    ExitCode::FAILURE
}

fn run_many(cli: &Cli) -> ExitCode {
    let started = Instant::now();
    let end = cli.start.saturating_add(cli.seeds);
    let jobs = cli.jobs.unwrap_or_else(omega_sim::default_jobs);
    let results = omega_sim::run_seeds(cli.start..end, cli.plant_bug, jobs);
    let wall = started.elapsed();
    let mut failed = Vec::new();
    let mut simulated = Duration::ZERO;
    let mut cluster_seconds = 0.0;
    for result in &results {
        match result {
            Ok(outcome) => {
                simulated += outcome.simulated;
                cluster_seconds += outcome.simulated.as_secs_f64();
                if !outcome.violations.is_empty() {
                    failed.push(outcome);
                }
            }
            Err(error) => println!("error: {error}"),
        }
    }
    for outcome in &failed {
        println!("seed {} failed: {}", outcome.seed, outcome.violations.join("; "));
        println!("  replay: {}", replay_command(outcome.seed, cli.plant_bug));
    }
    let errors = results.iter().filter(|result| result.is_err()).count();
    let passed = results.len() - failed.len() - errors;
    let per_wall = simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    println!(
        "{} seeds ({}..{}): {passed} passed, {} failed, {errors} errors; {:.0} s simulated in {:.1} s wall: {:.0} simulated s per wall s, {:.1} cluster-minutes per wall s",
        results.len(),
        cli.start,
        end,
        failed.len(),
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        per_wall,
        cluster_seconds / 60.0 / wall.as_secs_f64().max(1e-9),
    );
    if failed.is_empty() && errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
