//! The P2P data plane on real processes: three `omega serve` nodes (each
//! with `--p2p-listen` beside `--listen` and `--cluster-listen`) and three
//! `omega fetch` clients on loopback. The first two clients fetch the film
//! and seed it; the third gets most of its bytes from peers other than the
//! origin; every piece is verified and every copy is byte-identical.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{Node, cluster, film, http, json_of, wait_until};
use serde_json::Value;

fn p2p_args(port: u16) -> Vec<String> {
    vec!["--p2p-listen".into(), format!("127.0.0.1:{port}")]
}

/// `omega fetch ITEM` against `node`, seeding for `seed`; its JSON report
/// once the file is fetched, and the process (still seeding).
fn fetch(node: &Node, item: u64, token: &str, out: &std::path::Path, seed: &str) -> (Value, Child) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["fetch", &item.to_string()])
        .args(["--server", &format!("http://127.0.0.1:{}", node.http_port)])
        .arg("--out")
        .arg(out)
        .args(["--json", "--seed", seed, "--listen", "127.0.0.1:0"])
        .env("OMEGA_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.trim().is_empty(),
        "omega fetch printed nothing: {:?}",
        child.wait()
    );
    (serde_json::from_str(&line).unwrap(), child)
}

fn from_others(report: &Value) -> (u64, u64) {
    let sources = report["sources"].as_array().unwrap();
    let others = sources
        .iter()
        .filter(|source| source["origin"] == false)
        .map(|source| source["bytes"].as_u64().unwrap())
        .sum();
    (others, report["bytes"].as_u64().unwrap())
}

#[test]
fn the_third_client_gets_most_of_the_film_from_peers_and_every_copy_is_identical() {
    let root = tempfile::tempdir().unwrap();
    film(root.path(), 40);
    let config = root.path().join("omega.toml");
    std::fs::write(&config, "[transcode]\nenabled = false\n[library]\nwatch = false\n").unwrap();
    let ports: Vec<Vec<String>> = (0..3).map(|_| p2p_args(common::cluster::free_port())).collect();
    let (nodes, admin, item) = cluster(root.path(), &config, &config, &ports);
    let original = std::fs::read(root.path().join("films/Job Film (2024)/Job Film (2024).mkv")).unwrap();

    // Every member has recorded its peer, so manifests list all of them.
    wait_until(
        Duration::from_secs(20),
        || {
            let (code, manifest) = json_of(http(
                &nodes[1],
                "GET",
                &format!("/api/v1/items/{item}/manifest?peer=12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
                Some(&admin),
                None,
            ));
            code == 200 && manifest["routes"].as_array().map_or(0, Vec::len) == 3
        },
        || nodes.iter().map(Node::log).collect::<Vec<_>>().join("\n----\n"),
    );
    // Bad input: a peer id that is not one, an unknown item.
    let (code, error) = json_of(http(
        &nodes[0],
        "GET",
        &format!("/api/v1/items/{item}/manifest?peer=nope"),
        Some(&admin),
        None,
    ));
    assert_eq!(code, 400, "{error}");
    let (code, _) = json_of(http(
        &nodes[0],
        "GET",
        "/api/v1/items/999999/manifest?peer=nope",
        Some(&admin),
        None,
    ));
    assert_eq!(code, 404);

    let outs: Vec<_> = (1..=3).map(|n| root.path().join(format!("client-{n}.mkv"))).collect();
    let (first, mut seeder_one) = fetch(&nodes[0], item, &admin, &outs[0], "120s");
    assert_eq!(first["verify_failures"], 0);
    assert_eq!(first["bytes"].as_u64().unwrap(), original.len() as u64);
    let (second, mut seeder_two) = fetch(&nodes[1], item, &admin, &outs[1], "120s");
    let (third, mut last) = fetch(&nodes[2], item, &admin, &outs[2], "0s");
    for out in &outs {
        assert!(
            std::fs::read(out).unwrap() == original,
            "{} differs from the film",
            out.display()
        );
    }
    let (others, total) = from_others(&third);
    println!("first {first}\nsecond {second}\nthird {third}");
    assert_eq!(third["verify_failures"], 0, "{third}");
    assert!(
        third["sources"].as_array().unwrap().len() >= 3,
        "the third client pulled from the origin and both seeders: {third}"
    );
    assert!(
        others * 100 >= total * 60,
        "at least 60% from peers other than the origin: {others} of {total}: {third}"
    );
    let (others_two, total_two) = from_others(&second);
    assert!(others_two > 0, "the second client already used the first: {second}");
    assert!(others_two <= total_two);
    for child in [&mut seeder_one, &mut seeder_two, &mut last] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn the_p2p_benchmark_reports_both_paths_and_their_ratio() {
    let output = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["bench", "p2p", "--size", "8MiB", "--runs", "1", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: Value = serde_json::from_slice(&output.stdout).unwrap();
    for field in ["p2p_mb_s", "quinn_mb_s", "ratio"] {
        assert!(figures[field].as_f64().is_some_and(|value| value > 0.0), "{figures}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["bench", "p2p", "--size", "lots"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(String::from_utf8_lossy(&refused.stderr).lines().count(), 1, "one line");
}
