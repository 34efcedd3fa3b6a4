//! The chaos smoke run of the test command: a three-node cluster of real
//! `omega` processes, clients adding and reading users and ingesting blobs
//! while every fault this machine can inject is (kill and pause; flipped
//! pack bytes; as root also partitions, packet loss and full disks; delay
//! where the kernel has netem), every history checked (omega-chaos). Then
//! the same harness against a build with a planted bug (reads that skip
//! the read barrier) must find violations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use omega_chaos::{Config, Fault, run};

fn config(seed: u64, duration: Duration, faults: Vec<Fault>) -> Config {
    Config {
        omega: PathBuf::from(env!("CARGO_BIN_EXE_omega")),
        nodes: 3,
        duration,
        faults,
        seed,
        clients: 3,
        env: Vec::new(),
        keep: None,
    }
}

#[test]
fn a_cluster_under_every_available_fault_keeps_its_histories_and_its_data() {
    let faults = Fault::available();
    println!("faults: {faults:?}");
    let report = run(&config(7, Duration::from_secs(90), faults.clone())).unwrap();
    println!("{report:?}");
    assert!(report.faults >= 20, "{report:?}");
    assert!(
        report.faults_by_kind.len() >= faults.len().min(4),
        "the schedule mixes the faults: {report:?}"
    );
    assert!(
        report.adds_done >= 20 && report.reads >= 20,
        "a real workload ran: {report:?}"
    );
    assert_none(&report.violations);
    assert_none(&report.store_violations);
    assert_none(&report.library_violations);
    assert!(
        report.faults_by_kind.get("offline").is_some_and(|count| *count >= 1),
        "the founder's library went offline at least once: {report:?}"
    );
    assert!(report.ingests >= 10, "blobs were ingested under faults: {report:?}");
}

/// Fails with every one of `found`, one per line.
fn assert_none<T: ToString>(found: &[T]) {
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(lines.is_empty(), "{}", lines.join("\n"));
}

#[test]
fn the_harness_finds_a_planted_stale_read_bug() {
    let mut bugged = config(11, Duration::from_secs(45), vec![Fault::Pause]);
    bugged.env.push(("OMEGA_CHAOS_BUG".into(), "stale-reads".into()));
    let report = run(&bugged).unwrap();
    println!("{report:?}");
    assert!(
        !report.violations.is_empty(),
        "reads without a barrier, from nodes just resumed, must be caught: {report:?}"
    );
}
