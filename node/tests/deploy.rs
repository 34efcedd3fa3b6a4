//! The deployment files under `deploy/` (container image, compose file,
//! systemd unit, Kubernetes manifests, Grafana dashboard), checked offline by
//! `scripts/validate_deploy.py`: schemas, cross-references, `systemd-analyze
//! verify` with this build's binary as the unit's `ExecStart`, and the
//! dashboard's metric names against the sources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn deploy_files_validate() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent");
    let output = Command::new("python3")
        .arg(repo.join("scripts/validate_deploy.py"))
        .arg("--omega")
        .arg(env!("CARGO_BIN_EXE_omega"))
        .current_dir(repo)
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "validate_deploy.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}

/// Goal (operating a cluster): the compose file's three nodes, started as
/// the image would start them (its entrypoint, environment, user and
/// healthcheck, this build's binary in place of the image's), elect a
/// leader and are ready. `scripts/compose_local.py` does what Docker would;
/// see its header.
#[test]
fn the_compose_cluster_runs_as_the_image_would() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent");
    let output = Command::new("python3")
        .arg(repo.join("scripts/compose_local.py"))
        .arg("--omega")
        .arg(env!("CARGO_BIN_EXE_omega"))
        .current_dir(repo)
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compose_local.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}
