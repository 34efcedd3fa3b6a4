//! The P2P data plane on real processes: three `omega serve` nodes (each
//! with `--p2p-listen` beside `--listen` and `--cluster-listen`) and three
//! `omega fetch` clients on loopback. The first two clients fetch the film
//! and seed it; the third gets most of its bytes from peers other than the
//! origin; every piece is verified and every copy is byte-identical. Then
//! the same for the film's `original` HLS rendition (`--rendition`), and
//! `omega play` serves that rendition locally from peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{Node, cluster, film, http, json_of, wait_until};
use serde_json::{Value, json};

fn p2p_args(port: u16) -> Vec<String> {
    vec!["--p2p-listen".into(), format!("127.0.0.1:{port}")]
}

/// `omega fetch ITEM` against `node`, seeding for `seed`; its JSON report
/// once the file is fetched, and the process (still seeding).
fn fetch(node: &Node, item: u64, token: &str, out: &std::path::Path, seed: &str) -> (Value, Child) {
    fetch_with(node, item, token, out, seed, &[])
}

fn fetch_with(
    node: &Node,
    item: u64,
    token: &str,
    out: &std::path::Path,
    seed: &str,
    extra: &[&str],
) -> (Value, Child) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["fetch", &item.to_string()])
        .args(["--server", &format!("http://127.0.0.1:{}", node.http_port)])
        .arg("--out")
        .arg(out)
        .args(extra)
        .args(["--json", "--seed", seed, "--p2p-listen", "127.0.0.1:0"])
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
fn the_third_client_gets_most_of_the_film_and_its_segments_from_peers_and_every_copy_is_identical() {
    let root = tempfile::tempdir().unwrap();
    film(root.path(), 40);
    // The holder transcodes (it makes the rendition's segments); the
    // others need not.
    let first_config = root.path().join("omega-a.toml");
    std::fs::write(&first_config, "[library]\nwatch = false\n").unwrap();
    let config = root.path().join("omega.toml");
    std::fs::write(&config, "[transcode]\nenabled = false\n[library]\nwatch = false\n").unwrap();
    let ports: Vec<Vec<String>> = (0..3).map(|_| p2p_args(common::cluster::free_port())).collect();
    let (mut nodes, admin, item) = cluster(root.path(), &first_config, &config, &ports);
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
    // Node b was asked for a file it does not hold: it fetched the file
    // from its peers, kept it, and now provides it itself.
    let b_port = ports[1][1].rsplit(':').next().unwrap().to_owned();
    wait_until(
        Duration::from_secs(30),
        || {
            let (_, manifest) = json_of(http(
                &nodes[1],
                "GET",
                &format!("/api/v1/items/{item}/manifest?peer=12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
                Some(&admin),
                None,
            ));
            manifest["providers"].as_array().is_some_and(|providers| {
                providers.iter().any(|provider| {
                    provider["origin"] == false && provider["addrs"].to_string().contains(&format!("/udp/{b_port}/"))
                })
            })
        },
        || nodes[1].log(),
    );
    // Node b now streams the film from its own store: the ETag names the
    // content's hash (the holder's names its size and time).
    let (code, head, body) = common::http_raw(
        nodes[1].http_port,
        "GET",
        &format!("/api/v1/items/{item}/stream"),
        &format!("Authorization: Bearer {admin}\r\nRange: bytes=1000-200999\r\n"),
        b"",
    );
    assert_eq!(code, 206, "{head}");
    assert!(body == original[1000..201000], "the kept copy's range differs");
    let etag = format!("etag: \"{}\"", blake3::hash(&original).to_hex());
    assert!(head.to_lowercase().contains(&etag), "{head}");
    let metrics = String::from_utf8(http(&nodes[1], "GET", "/metrics", None, None).1).unwrap();
    assert!(metrics.contains("omega_relay_total{via=\"peers\"}"), "{metrics}");
    assert!(metrics.contains("omega_relay_total{via=\"store\"}"), "{metrics}");
    // Each client reported what it got to the node it asked; node b relays.
    let (code, figures) = json_of(http(&nodes[1], "GET", "/api/v1/p2p", Some(&admin), None));
    assert_eq!(code, 200, "{figures}");
    assert!(
        figures["clients"]["offload_ratio"]
            .as_f64()
            .is_some_and(|ratio| ratio > 0.5),
        "{figures}"
    );
    assert!(figures["relay"]["kept_blobs"].as_u64() >= Some(1), "{figures}");
    assert!(!figures["peers"].as_array().unwrap().is_empty(), "{figures}");
    let (_, figures) = json_of(http(&nodes[0], "GET", "/api/v1/p2p", Some(&admin), None));
    assert!(figures["served"]["origin_bytes"].as_u64() > Some(0), "{figures}");
    let bad = json!({"from_origin": 1_u64 << 50, "from_peers": 0});
    assert_eq!(
        http(
            &nodes[1],
            "POST",
            &format!("/api/v1/items/{item}/fetch-report"),
            Some(&admin),
            Some(&bad)
        )
        .0,
        400
    );
    let c_port = ports[2][1].rsplit(':').next().unwrap().to_owned();
    let by_hash = renditions(&nodes, &admin, item, root.path(), [&b_port, &c_port]);
    // A replica restarted serves the set again: what it is made of was
    // kept with its segments.
    nodes[1].stop();
    let args_b: Vec<&str> = ports[1].iter().map(String::as_str).collect();
    nodes[1].start_with(&config, None, &args_b, false);
    let auth = format!("Authorization: Bearer {admin}\r\n");
    wait_until(
        Duration::from_secs(20),
        || common::http_raw(nodes[1].http_port, "GET", &by_hash, &auth, b"").0 == 200,
        || nodes[1].log(),
    );
}

/// The film's `original` rendition (its video copied into HLS segments),
/// as the origin serves it over HTTP: each file by name, in order.
fn origin_segments(node: &Node, admin: &str, item: u64, names: &[String]) -> Vec<(String, Vec<u8>)> {
    names
        .iter()
        .map(|name| {
            let (code, bytes) = http(
                node,
                "GET",
                &format!("/api/v1/items/{item}/hls/original/{name}"),
                Some(admin),
                None,
            );
            assert_eq!(code, 200, "{name}: {}", String::from_utf8_lossy(&bytes));
            (name.clone(), bytes)
        })
        .collect()
}

/// The rendition manifest's segments: names, and how many have hashes.
fn segment_names(node: &Node, admin: &str, item: u64) -> (Vec<String>, usize) {
    let (code, manifest) = json_of(http(
        node,
        "GET",
        &format!(
            "/api/v1/items/{item}/manifest?peer=12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN&rendition=original"
        ),
        Some(admin),
        None,
    ));
    if code != 200 {
        return (Vec::new(), 0);
    }
    let segments = manifest["segments"].as_array().cloned().unwrap_or_default();
    let names = segments
        .iter()
        .map(|segment| segment["name"].as_str().unwrap().to_owned())
        .collect();
    let hashed = segments.iter().filter(|segment| segment["hash"].is_string()).count();
    (names, hashed)
}

/// `omega play ITEM --rendition original` against `node`: the process and
/// the port of its local HLS server.
fn play(node: &Node, item: u64, token: &str) -> (Child, u16) {
    let mut player = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["play", &item.to_string(), "--rendition", "original"])
        .args(["--server", &format!("http://127.0.0.1:{}", node.http_port)])
        .args(["--p2p-listen", "127.0.0.1:0"])
        .env("OMEGA_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(player.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let port: u16 = url
        .trim()
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/master.m3u8"))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("omega play printed {url:?}"));
    (player, port)
}

/// A 200 answer's body from a player's local server.
fn get_from(port: u16, path: &str) -> Vec<u8> {
    let (code, _, body) = common::http_raw(port, "GET", path, "", b"");
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    body
}

/// Three clients fetch the `original` rendition's segments; a fourth plays
/// it through `omega play`.
/// Returns the path of a segment by hash, which node b serves as a replica.
fn renditions(nodes: &[Node; 3], admin: &str, item: u64, root: &std::path::Path, other_ports: [&str; 2]) -> String {
    // The copy plan (the film's keyframes) is listed in the background.
    let mut names = Vec::new();
    wait_until(
        Duration::from_secs(30),
        || {
            names = segment_names(&nodes[0], admin, item).0;
            names.len() >= 3
        },
        || nodes[0].log(),
    );
    // Bad input: an unknown rendition, also through a node without the
    // file.
    let (code, error) = json_of(http(
        &nodes[0],
        "GET",
        &format!(
            "/api/v1/items/{item}/manifest?peer=12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN&rendition=4320p"
        ),
        Some(admin),
        None,
    ));
    assert_eq!(code, 404, "{error}");
    let (code, error) = json_of(http(
        &nodes[1],
        "GET",
        &format!(
            "/api/v1/items/{item}/manifest?peer=12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN&rendition=4320p"
        ),
        Some(admin),
        None,
    ));
    assert_eq!(code, 404, "through a node without the file: {error}");
    // Any node serves the item's stream and HLS tree: those without the
    // file pass the request to the holder.
    let (code, master) = http(
        &nodes[2],
        "GET",
        &format!("/api/v1/items/{item}/hls/master.m3u8"),
        Some(admin),
        None,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&master));
    assert!(String::from_utf8_lossy(&master).contains("original/index.m3u8"));
    let (code, _, part) = common::http_raw(
        nodes[1].http_port,
        "GET",
        &format!("/api/v1/items/{item}/stream"),
        &format!("Authorization: Bearer {admin}\r\nRange: bytes=100-199\r\n"),
        b"",
    );
    assert_eq!(code, 206);
    let film = std::fs::read(root.join("films/Job Film (2024)/Job Film (2024).mkv")).unwrap();
    assert!(part == film[100..200]);

    // A player that starts before any segment is made gets the first over
    // HTTP; it asks for the manifest again later (below).
    let (mut early, early_port) = play(&nodes[0], item, admin);
    get_from(early_port, "/original/index.m3u8");
    let first_name = format!("/original/{}", names[0]);
    get_from(early_port, &first_name);

    let outs: Vec<_> = (1..=3).map(|n| root.join(format!("client-{n}.mp4"))).collect();
    let rendition = ["--rendition", "original"];
    // Nothing is made yet: the first client gets every segment from the
    // origin over HTTP, which makes and keeps them.
    let (first, mut seeder_one) = fetch_with(&nodes[0], item, admin, &outs[0], "120s", &rendition);
    assert_eq!(first["verify_failures"], 0, "{first}");
    wait_until(
        Duration::from_secs(30),
        || segment_names(&nodes[0], admin, item).1 == names.len(),
        || nodes[0].log(),
    );
    // The first client serves a segment once the origin publishes its hash
    // (it asks every 3 s).
    std::thread::sleep(Duration::from_secs(4));
    // The others ask other nodes: rendition manifests come from the holder
    // through them.
    let (second, mut seeder_two) = fetch_with(&nodes[1], item, admin, &outs[1], "120s", &rendition);
    let (third, mut last) = fetch_with(&nodes[2], item, admin, &outs[2], "0s", &rendition);
    let origin: Vec<u8> = origin_segments(&nodes[0], admin, item, &names)
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    for out in &outs {
        assert!(
            std::fs::read(out).unwrap() == origin,
            "{} differs from the origin's segments",
            out.display()
        );
    }
    println!("rendition: first {first}\nsecond {second}\nthird {third}");
    let (others, total) = from_others(&third);
    assert_eq!(total, origin.len() as u64);
    assert_eq!(third["verify_failures"], 0, "{third}");
    assert!(
        others * 100 >= total * 60,
        "at least 60% of the segment bytes from peers other than the origin: {others} of {total}: {third}"
    );

    // `omega play` serves the rendition locally, from peers.
    let (mut player, port) = play(&nodes[0], item, admin);
    let get = |path: &str| get_from(port, path);
    let master = String::from_utf8(get("/master.m3u8")).unwrap();
    assert!(
        master.contains("original/index.m3u8\n") && !master.contains("t="),
        "{master}"
    );
    let variant = String::from_utf8(get("/original/index.m3u8")).unwrap();
    assert!(variant.contains("init.mp4") && !variant.contains("?t="), "{variant}");
    for (name, bytes) in origin_segments(&nodes[0], admin, item, &names) {
        assert!(get(&format!("/original/{name}")) == bytes, "{name} differs");
    }
    let stats: Value = serde_json::from_slice(&get("/stats.json")).unwrap();
    assert_eq!(stats["p2p_segments"].as_u64(), Some(names.len() as u64), "{stats}");
    // The early player's manifest named no segment; asked again, it names
    // them all, and the rest come from peers.
    for (name, bytes) in origin_segments(&nodes[0], admin, item, &names[1..]) {
        assert!(
            get_from(early_port, &format!("/original/{name}")) == bytes,
            "{name} differs"
        );
    }
    let stats: Value = serde_json::from_slice(&get_from(early_port, "/stats.json")).unwrap();
    assert_eq!(stats["http_segments"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["p2p_segments"].as_u64(), Some(names.len() as u64 - 1), "{stats}");
    let _ = early.kill();
    let _ = early.wait();
    let (code, _, _) = common::http_raw(port, "GET", "/original/..%2Fsecret", "", b"");
    assert_eq!(code, 404);
    for child in [&mut seeder_one, &mut seeder_two, &mut last, &mut player] {
        let _ = child.kill();
        let _ = child.wait();
    }

    // More than three viewers asked the holder for the rendition: it is
    // popular, and the two other members (`[p2p] replicas = 2`) pulled it
    // ahead of demand and provide it, with every client gone.
    wait_until(
        Duration::from_secs(30),
        || {
            let (_, manifest) = json_of(http(
                &nodes[0],
                "GET",
                &format!(
                    "/api/v1/items/{item}/manifest?peer=12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN&rendition=original"
                ),
                Some(admin),
                None,
            ));
            let providers = manifest["providers"].to_string();
            other_ports
                .iter()
                .all(|port| providers.contains(&format!("/udp/{port}/")))
        },
        || format!("{}\n----\n{}", nodes[1].log(), nodes[2].log()),
    );
    // Browsers: segments.json names the members holding the rendition, and
    // each serves a segment by its hash to any origin.
    let (code, listing) = json_of(http(
        &nodes[0],
        "GET",
        &format!("/api/v1/items/{item}/hls/original/segments.json"),
        Some(admin),
        None,
    ));
    assert_eq!(code, 200, "{listing}");
    let sources = listing["sources"].as_array().unwrap();
    assert!(sources.len() >= 3, "the origin and both replicas: {listing}");
    let segment = &listing["segments"][1];
    let hash = segment["hash"].as_str().unwrap();
    let expected = &origin_segments(&nodes[0], admin, item, &names[1..2])[0].1;
    let path = format!("/api/v1/items/{item}/segments/original/{hash}");
    let auth = format!("Authorization: Bearer {admin}\r\n");
    // A replica that pulled the rendition while the holder was still
    // making it pulls it again a while later.
    let mut answer = (0, String::new(), Vec::new());
    wait_until(
        Duration::from_secs(40),
        || {
            answer = common::http_raw(nodes[1].http_port, "GET", &path, &auth, b"");
            answer.0 == 200
        },
        || nodes[1].log(),
    );
    let (code, headers, bytes) = answer;
    assert_eq!(code, 200);
    assert!(&bytes == expected, "a replica serves the segment's bytes");
    assert!(
        headers.to_ascii_lowercase().contains("access-control-allow-origin: *"),
        "{headers}"
    );
    let unknown = format!("/api/v1/items/{item}/segments/original/{}", "0".repeat(64));
    assert_eq!(http(&nodes[1], "GET", &unknown, Some(admin), None).0, 404);
    assert_eq!(http(&nodes[1], "GET", &path, None, None).0, 401);

    let fourth = root.join("client-4.mp4");
    let (report, mut child) = fetch_with(&nodes[0], item, admin, &fourth, "0s", &rendition);
    let _ = child.wait();
    assert!(std::fs::read(&fourth).unwrap() == origin);
    let (others, total) = from_others(&report);
    assert!(others * 100 >= total * 60, "replicas served most: {report}");
    let relayed: u64 = nodes[1..]
        .iter()
        .map(|node| {
            let (_, figures) = json_of(http(node, "GET", "/api/v1/p2p", Some(admin), None));
            figures["served"]["relayed_bytes"].as_u64().unwrap()
        })
        .sum();
    assert!(relayed > 0, "the replicas count what they served");
    path
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
