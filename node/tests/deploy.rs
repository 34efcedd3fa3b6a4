//! The deployment files under `deploy/` (container image, compose file,
//! systemd unit, Kubernetes manifests, Grafana dashboard), checked offline by
//! `scripts/validate_deploy.py`: schemas, cross-references, `systemd-analyze
//! verify` with this build's binary as the unit's `ExecStart`, and the
//! dashboard's metric names against the sources; and the compose file's and
//! the StatefulSet's clusters run as their orchestrators would run them, by
//! `scripts/deploy_local.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// Runs `python3 scripts/SCRIPT --omega <this build's binary> ARGS` from the
/// repository root and asserts that it succeeds; prints its report.
fn script_passes(script: &str, args: &[&str]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent");
    let output = Command::new("python3")
        .arg(repo.join("scripts").join(script))
        .arg("--omega")
        .arg(env!("CARGO_BIN_EXE_omega"))
        .args(args)
        .current_dir(repo)
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}

#[test]
fn deploy_files_validate() {
    script_passes("validate_deploy.py", &[]);
}

/// Goal (operating a cluster): the compose file's three nodes, started as
/// the image would start them (its entrypoint, environment, user and
/// healthcheck, this build's binary in place of the image's) in compose's
/// order, elect a leader and are ready. `scripts/deploy_local.py` does what
/// Docker would; see its header.
#[test]
fn the_compose_cluster_runs_as_the_image_would() {
    script_passes("deploy_local.py", &["compose"]);
}

/// Goal (operating a cluster): the StatefulSet's three pods, each through
/// the ConfigMap's prepare.sh as init container and then the image, started
/// all at once as `podManagementPolicy: Parallel` does, with the join tokens
/// put in Secret omega-join by the operator, form a cluster and pass their
/// readiness probes.
#[test]
fn the_kubernetes_statefulset_starts_as_the_cluster_would_start_it() {
    script_passes("deploy_local.py", &["kubernetes"]);
}
