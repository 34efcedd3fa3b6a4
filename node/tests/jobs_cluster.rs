//! Offline transcode jobs on three real processes: a job queued with
//! `omega transcode` is claimed by a worker that must fetch the source from
//! the node holding it (verified chunk by chunk); SIGKILL of the lease
//! holder mid-job lets the other worker take over once the lease expires,
//! and the job ends with exactly one result, which plays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Node, cluster, film, http, json_of, login, node_id, wait_until};
use common::omega;
use serde_json::{Value, json};

/// Waits for job `id` to end; its view.
fn wait_for_job(nodes: &[Node; 3], admin: &str, id: u64, within: Duration) -> Value {
    let mut finished = Value::Null;
    wait_until(
        within,
        || {
            let (_, job) = json_of(http(&nodes[0], "GET", &format!("/api/v1/jobs/{id}"), Some(admin), None));
            finished = job.clone();
            job["state"] == "done" || job["state"] == "failed"
        },
        || nodes.iter().map(Node::log).collect::<Vec<_>>().join("\n----\n"),
    );
    finished
}

/// The output of a done job, from the node that made it.
fn job_output(nodes: &[Node; 3], job: &Value) -> Vec<u8> {
    let maker = nodes
        .iter()
        .find(|node| Some(node_id(node)) == job["node"].as_u64())
        .unwrap();
    let token = login(maker);
    let (code, bytes) = http(
        maker,
        "GET",
        &format!("/api/v1/jobs/{}/output", job["id"]),
        Some(&token),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), job["output"].as_str().unwrap());
    bytes
}

/// (decoded video frames, duration) of an MP4, and what decoding it
/// reports (nothing for a clean file).
fn facts(dir: &Path, name: &str, bytes: &[u8]) -> (u64, f64, String) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames:format=duration", "-of", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let facts: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let frames = facts["streams"][0]["nb_read_frames"].as_str().unwrap().parse().unwrap();
    let duration = facts["format"]["duration"].as_str().unwrap().parse().unwrap();
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let mut report = String::from_utf8_lossy(&decode.stderr).into_owned();
    if !decode.status.success() {
        report.push_str("ffmpeg failed");
    }
    (frames, duration, report)
}

#[test]
fn a_killed_lease_holder_hands_the_job_to_another_node() {
    let root = tempfile::tempdir().unwrap();
    film(root.path(), 20);
    // The node holding the film runs no worker: the job must travel.
    let holder_config = root.path().join("holder.toml");
    std::fs::write(
        &holder_config,
        "[transcode]\nworker = false\n[library]\nwatch = false\n",
    )
    .unwrap();
    // Workers read at twice real time, so that a job lasts ~10 s.
    let worker_config = root.path().join("worker.toml");
    std::fs::write(
        &worker_config,
        "[transcode]\nlease_ms = 3000\nread_rate = 2.0\n[library]\nwatch = false\n",
    )
    .unwrap();
    let (mut nodes, admin, item) = cluster(root.path(), &holder_config, &worker_config, &[]);

    // Bad input first: an unknown profile is refused, one line.
    let output = omega(&nodes[0].dir, &["transcode", &item.to_string(), "--profile", "8k"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("profile"));

    let output = omega(
        &nodes[0].dir,
        &["transcode", &item.to_string(), "--profile", "360p", "--json"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = job["id"].as_u64().unwrap();
    let job_path = format!("/api/v1/jobs/{id}");

    // Wait for a worker to hold it and get going, then kill that worker.
    let mut holder = 0;
    wait_until(
        Duration::from_secs(30),
        || {
            let (_, job) = json_of(http(&nodes[0], "GET", &job_path, Some(&admin), None));
            holder = job["node"].as_u64().unwrap_or(0);
            job["state"] == "leased"
        },
        || nodes[1].log() + &nodes[2].log(),
    );
    let ids: Vec<u64> = nodes.iter().map(node_id).collect();
    assert_ne!(holder, ids[0], "the holder of the film runs no worker");
    let victim = ids.iter().position(|id| *id == holder).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    nodes[victim].kill();
    let survivor = if victim == 1 { 2 } else { 1 };

    // The other worker takes over once the lease expires and finishes.
    let finished = wait_for_job(&nodes, &admin, id, Duration::from_secs(120));
    assert_eq!(finished["state"], "done", "{finished}");
    assert_eq!(finished["node"].as_u64(), Some(ids[survivor]), "{finished}");
    assert_eq!(finished["attempts"], 2, "{finished}");
    let output_blob = finished["output"].as_str().unwrap().to_owned();

    // The killed node comes back; the job keeps its one result.
    nodes[victim].start(&worker_config, None);
    std::thread::sleep(Duration::from_secs(3));
    let (_, job) = json_of(http(&nodes[0], "GET", &job_path, Some(&admin), None));
    assert_eq!((&job["state"], &job["output"]), (&json!("done"), &json!(output_blob)));

    // The output plays: 20 s at 640x360, from the node that made it.
    let (code, _) = http(&nodes[0], "GET", &format!("{job_path}/output"), Some(&admin), None);
    assert_eq!(code, 409, "the output is on another node");
    let bytes = job_output(&nodes, &job);
    let (frames, duration, clean) = facts(root.path(), "out.mp4", &bytes);
    assert_eq!(frames, 500);
    assert!((duration - 20.0).abs() < 0.2, "{duration}");
    assert!(clean.is_empty(), "{clean}");
}

/// Goal: a job split over the cluster's nodes yields a file whose duration
/// and decoded frame count equal a single-node encode's.
#[test]
fn a_chunked_job_matches_a_single_node_encode() {
    let root = tempfile::tempdir().unwrap();
    film(root.path(), 24);
    // Every node works; reading at 4x real time spreads the chunks.
    let config = root.path().join("omega.toml");
    std::fs::write(&config, "[transcode]\nread_rate = 4.0\n[library]\nwatch = false\n").unwrap();
    let (nodes, admin, item) = cluster(root.path(), &config, &config, &[]);
    let item = item.to_string();
    let queue_profile = |profile: &str, extra: &[&str]| -> u64 {
        let mut args = vec!["transcode", item.as_str(), "--profile", profile, "--json"];
        args.extend_from_slice(extra);
        let output = omega(&nodes[0].dir, &args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let queue = |extra: &[&str]| queue_profile("360p", extra);
    let join = queue(&["--chunks", "3"]);
    let whole = queue(&[]);
    let hevc = queue_profile("360p-hevc", &[]);
    let vp9 = queue_profile("360p-vp9", &[]);
    let joined = wait_for_job(&nodes, &admin, join, Duration::from_secs(180));
    assert_eq!(joined["state"], "done", "{joined}");
    let single = wait_for_job(&nodes, &admin, whole, Duration::from_secs(180));
    assert_eq!(single["state"], "done", "{single}");
    // The chunks' own jobs, and who made them.
    let chunk_ids: Vec<u64> = joined["profile"]
        .as_str()
        .unwrap()
        .split_once("#join:")
        .unwrap()
        .1
        .split(',')
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(chunk_ids.len(), 3);
    let makers: std::collections::BTreeSet<u64> = chunk_ids
        .iter()
        .map(|id| {
            let (_, chunk) = json_of(http(
                &nodes[0],
                "GET",
                &format!("/api/v1/jobs/{id}"),
                Some(&admin),
                None,
            ));
            assert_eq!(chunk["state"], "done", "{chunk}");
            chunk["node"].as_u64().unwrap()
        })
        .collect();
    assert!(makers.len() >= 2, "the chunks were made on one node: {makers:?}");
    let (joined_frames, joined_duration, clean) = facts(root.path(), "joined.mp4", &job_output(&nodes, &joined));
    let (single_frames, single_duration, _) = facts(root.path(), "single.mp4", &job_output(&nodes, &single));
    assert_eq!(joined_frames, single_frames, "decoded frames");
    assert_eq!(joined_frames, 600);
    assert!(
        (joined_duration - single_duration).abs() < 0.05,
        "{joined_duration} vs {single_duration}"
    );
    assert!(clean.is_empty(), "the joined file decodes without an error: {clean}");

    // HEVC and VP9 where asked.
    for (id, codec) in [(hevc, "hevc"), (vp9, "vp9")] {
        let job = wait_for_job(&nodes, &admin, id, Duration::from_secs(180));
        assert_eq!(job["state"], "done", "{job}");
        let path = root.path().join(format!("{codec}.mp4"));
        std::fs::write(&path, job_output(&nodes, &job)).unwrap();
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,height",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), format!("{codec},360"));
    }
}
