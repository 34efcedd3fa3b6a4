//! The REST API and its OpenAPI document agree: schemathesis (installed by
//! `scripts/setup.sh`) generates requests from `/api/v1/openapi.json`,
//! valid and invalid ones, against a node with a scanned film, and checks
//! that every answer is described by the document (status, content type,
//! body schema, headers), that nothing answers 5xx, that every request the
//! document allows is taken and every one it forbids is refused. The run is
//! seeded and bounded, so it is the same run each time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, tiny_clip};
use serde_json::json;

/// Test cases per operation and phase.
const EXAMPLES: &str = "25";

/// Where `scripts/setup.sh` puts schemathesis, unless `OMEGA_SCHEMATHESIS`
/// names another.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("OMEGA_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let installed = PathBuf::from(home).join(".cache/omega-venv/bin/schemathesis");
    assert!(
        installed.exists(),
        "schemathesis is not installed at {}: run scripts/setup.sh (or set OMEGA_SCHEMATHESIS)",
        installed.display()
    );
    installed
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let schemathesis = schemathesis();
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("movies");
    let doomed = media.path().join("doomed");
    std::fs::create_dir_all(&movies).unwrap();
    std::fs::create_dir_all(&doomed).unwrap();
    tiny_clip(&movies.join("Conformance (2001).mkv"));
    let server = Server::start(&["--media", &format!("{}:movies", movies.display())]);
    let admin = server.login("admin", "admin-password");
    let item = server.first_item(&admin, "movie");
    let library = server.library(&admin, "movies");
    let (code, created) = server.request(
        "POST",
        "/api/v1/libraries",
        Some(&admin),
        Some(&json!({"name": "Doomed", "type": "photos", "paths": [doomed.display().to_string()]})),
    );
    assert_eq!(code, 201, "{created}");
    let doomed_library = created["id"].as_u64().unwrap();

    let template = include_str!("conformance/schemathesis.toml");
    let config = server.dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        template
            .replace("@ITEM@", &item.to_string())
            .replace("@LIBRARY@", &library.to_string())
            .replace("@DOOMED@", &doomed_library.to_string()),
    )
    .unwrap();
    let output = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("http://127.0.0.1:{}/api/v1/openapi.json", server.http_port),
        ])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args(["--phases", "examples,coverage,fuzzing", "--workers", "2", "--seed", "1"])
        .args([
            "--max-examples",
            EXAMPLES,
            "--generation-database",
            "none",
            "--no-color",
        ])
        .current_dir(server.dir.path())
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found answers the document does not describe:\n{report}\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    // The run reached the film: its routes did more than answer 404.
    assert!(report.contains("passed"), "{report}");
}
