//! A cluster of real `omega serve` processes on loopback, driven by the CLI
//! as an operator would: first node, tokens, joins, SIGKILL of the leader,
//! restart with catch-up by snapshot, removal and replacement, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Node, wait_until};
use common::omega;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn index(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(0)
}

fn voters(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|member| member["role"] == "voter")
        .map(|member| member["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn three_processes_elect_recover_and_replace() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("omega.toml");
    // Frequent snapshots so that a node down for a few dozen writes must
    // catch up by snapshot.
    std::fs::write(&config, "[cluster]\nsnapshot_every = 20\nkeep_behind_snapshot = 2\n").unwrap();

    let mut nodes = [
        Node::new(root.path(), "a"),
        Node::new(root.path(), "b"),
        Node::new(root.path(), "c"),
    ];
    nodes[0].start(&config, None);
    wait_until(
        Duration::from_secs(10),
        || nodes[0].status()["state"] == "leader",
        || nodes[0].log(),
    );
    for joining in 1..3 {
        let token = nodes[0].token();
        let (done, rest) = nodes.split_at_mut(joining);
        rest[0].start(&config, Some((&done[0], &token)));
    }
    wait_until(
        Duration::from_secs(10),
        || voters(&nodes[0].status()).len() == 3,
        || format!("{}", nodes[0].status()),
    );
    for node in &nodes {
        assert_eq!(node.get("/healthz").0, 200);
        wait_until(
            Duration::from_secs(10),
            || node.get("/readyz").0 == 200,
            || node.get("/readyz").1,
        );
    }
    let (code, body) = nodes[0].get("/no/such/route");
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");

    // Writes through any member; names are unique cluster-wide.
    for (index, node) in nodes.iter().enumerate() {
        let output = node.add_user(&format!("user{index}"));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let duplicate = nodes[2].add_user("USER0");
    assert!(!duplicate.status.success());
    let stderr = String::from_utf8_lossy(&duplicate.stderr);
    assert!(
        stderr.starts_with("omega: error:") && stderr.contains("taken") && stderr.lines().count() == 1,
        "{stderr}"
    );

    // SIGKILL the leader: a new one within 3 s, and writes go on.
    let leader = nodes[0].status()["leader"].as_u64().unwrap();
    let dead = nodes
        .iter()
        .position(|node| node.status()["node_id"] == leader)
        .unwrap();
    let dead_applied = index(&nodes[dead].status(), "applied_index");
    nodes[dead].kill();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|index| *index != dead).collect();
    wait_until(
        Duration::from_secs(3),
        || {
            survivors.iter().any(|index| {
                nodes[*index]
                    .try_status()
                    .is_some_and(|status| status["state"] == "leader")
            })
        },
        || "no new leader".into(),
    );
    eprintln!("new leader {:?} after SIGKILL", killed.elapsed());
    let mut written = 0;
    wait_until(
        Duration::from_secs(60),
        || {
            let output = nodes[survivors[written % 2]].add_user(&format!("later{written}"));
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            written += 1;
            written >= 30
                && survivors
                    .iter()
                    .all(|index| index_of(&nodes[*index], "purged_index") > dead_applied)
        },
        || format!("{}", nodes[survivors[0]].status()),
    );

    // The killed node restarts and catches up by snapshot.
    nodes[dead].start(&config, None);
    let target = index(&nodes[survivors[0]].status(), "commit_index");
    wait_until(
        Duration::from_secs(20),
        || index(&nodes[dead].status(), "applied_index") >= target,
        || format!("{}\n{}", nodes[dead].status(), nodes[dead].log()),
    );
    assert!(
        index(&nodes[dead].status(), "snapshot_index") > dead_applied,
        "{}",
        nodes[dead].status()
    );
    let again = nodes[dead].add_user("later0");
    assert!(
        !again.status.success(),
        "the restarted node sees the writes made while it was down"
    );

    // Remove a member and replace it.
    let removed = survivors[1];
    let removed_id = nodes[removed].status()["node_id"].as_u64().unwrap();
    let output = omega(&nodes[dead].dir, &["cluster", "remove", &removed_id.to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    nodes[removed].kill();
    let mut replacement = Node::new(root.path(), "d");
    let token = nodes[dead].token();
    replacement.start(&config, Some((&nodes[dead], &token)));
    let status = nodes[dead].status();
    wait_until(
        Duration::from_secs(10),
        || {
            let ids = voters(&nodes[dead].status());
            ids.len() == 3 && !ids.contains(&removed_id)
        },
        || format!("{status}"),
    );
    assert!(replacement.add_user("grace").status.success());

    // `cluster leave`: the node takes itself out and its process ends.
    let leaving_id = replacement.status()["node_id"].as_u64().unwrap();
    let output = omega(&replacement.dir, &["cluster", "leave"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut child = replacement.child.take().unwrap();
    wait_until(
        Duration::from_secs(10),
        || child.try_wait().unwrap().is_some(),
        || replacement.log(),
    );
    wait_until(
        Duration::from_secs(10),
        || !voters(&nodes[dead].status()).contains(&leaving_id),
        || format!("{}", nodes[dead].status()),
    );
    let gone = omega(&replacement.dir, &["cluster", "status"]);
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(!gone.status.success() && stderr.contains("no running node"), "{stderr}");

    // A data directory of one cluster refuses a token of another.
    let mut other = Node::new(root.path(), "other");
    other.start(&config, None);
    let foreign = other.token();
    let output = Command::new(env!("CARGO_BIN_EXE_omega"))
        .arg("--data-dir")
        .arg(&nodes[removed].dir)
        .args([
            "serve",
            "--cluster-listen",
            &nodes[removed].addr(),
            "--join",
            &other.addr(),
            "--token",
            &foreign,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("belongs to cluster"),
        "{stderr}"
    );
}

fn index_of(node: &Node, field: &str) -> u64 {
    node.try_status().map_or(0, |status| index(&status, field))
}
