//! `/metrics` of a running node: the metric families operators chart
//! (Raft, the store, transcoding, jobs, HTTP) are there, and every answer
//! carries a request id (the client's, or a new one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, http_raw, tiny_clip};

#[test]
fn metrics_cover_every_subsystem_and_requests_carry_ids() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("movies");
    std::fs::create_dir_all(&movies).unwrap();
    tiny_clip(&movies.join("Clip (2020).mkv"));
    let server = Server::start(&["--media", &format!("{}:movies", movies.display())]);
    let admin = server.login("admin", "admin-password");
    let library = server.library(&admin, "movies");
    server.wait_for_scans(&admin, &[library], std::time::Duration::from_secs(30));
    // A request of each kind, so that its counters exist.
    let (code, _) = server.request("GET", "/api/v1/items", Some(&admin), None);
    assert_eq!(code, 200);
    let (code, head, _) = http_raw(
        server.http_port,
        "GET",
        "/healthz",
        "X-Request-Id: trace-me-42\r\n",
        b"",
    );
    assert_eq!(code, 200);
    assert!(head.to_lowercase().contains("x-request-id: trace-me-42"), "{head}");
    let (_, head, _) = http_raw(server.http_port, "GET", "/healthz", "", b"");
    assert!(head.to_lowercase().contains("x-request-id: "), "a new id: {head}");

    let (code, _, body) = http_raw(server.http_port, "GET", "/metrics", "", b"");
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    for family in [
        // Raft: term, indexes, apply lag, leadership and its changes.
        "omega_raft_term",
        "omega_raft_commit_index",
        "omega_raft_applied_index",
        "omega_raft_apply_lag",
        "omega_raft_is_leader",
        "omega_raft_members",
        "omega_raft_leader_changes_total",
        // The store: bytes per tier, dedup, scrub findings.
        "omega_store_bytes{tier=\"hot\"}",
        "omega_store_bytes{tier=\"cold\"}",
        "omega_store_bytes{tier=\"in_place\"}",
        "omega_store_logical_bytes",
        "omega_store_dedup_ratio",
        "omega_store_quarantined_chunks",
        // Transcoding: sessions, on-the-fly audio, the job queue.
        "omega_transcode_sessions",
        "omega_transcode_audio_streams",
        "omega_jobs{state=\"queued\"}",
        // HTTP by route and status, with latency.
        "omega_http_requests_total{method=\"GET\",route=\"/api/v1/items\",status=\"200\"}",
        "omega_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }
}
