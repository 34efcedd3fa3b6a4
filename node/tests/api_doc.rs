//! docs/api.md is current: a real node's OpenAPI document
//! (`GET /api/v1/openapi.json`) run through `scripts/gen_api_doc.py` gives
//! exactly the committed file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, http_raw};

#[test]
fn api_doc_matches_the_openapi_document() {
    let server = Server::start(&[]);
    let (code, _, body) = http_raw(server.http_port, "GET", "/api/v1/openapi.json", "", b"");
    assert_eq!(code, 200, "openapi.json: {}", String::from_utf8_lossy(&body));
    let document = server.dir.path().join("openapi.json");
    std::fs::write(&document, &body).unwrap();

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let script = repo.join("scripts/gen_api_doc.py");
    let api_md = repo.join("docs/api.md");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&document)
        .arg("--check")
        .arg(&api_md)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "docs/api.md is out of date; regenerate it with \
         `python3 scripts/gen_api_doc.py --url http://HOST:PORT/api/v1/openapi.json -o docs/api.md` \
         (or from a saved document: `python3 scripts/gen_api_doc.py openapi.json -o docs/api.md`)\n\
         stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
