//! `omega bench …`: benchmarks run as commands, each printing its figures
//! and its ratio to a peer measured in the same run, and able to record a row
//! in `docs/benchmarks.md`.

mod http;
mod raft;
mod record;
mod scan;
mod store;

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
}

/// Runs a benchmark.
pub fn run(_global: &GlobalArgs, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Store(bench) => store::run(&bench),
        BenchCommand::Raft(bench) => raft::run(&bench),
        BenchCommand::Scan(bench) => scan::run(&bench),
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
