//! The web app in a real browser: `node/web/e2e/app.e2e.mjs` drives
//! headless Chromium (playwright-core) through setup, libraries, playback
//! with resume, music, the admin pages and a viewer's limits, against a
//! real `omega serve` on a generated library. Screenshots of the main pages
//! at desktop and phone widths land in `$CARGO_TARGET_TMPDIR/web-screenshots`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

/// A 20 s H.264 film in Matroska (keyframes every 2 s: remuxed to HLS for
/// a browser), the same in MP4 (played directly), each with an English
/// sidecar subtitle, an empty film file and a two-track album.
fn library(root: &Path) {
    let subtitle = "1\n00:00:00,200 --> 00:00:19,000\nHello from the sidecar\n";
    let film = root.join("films/Test Film (2024)");
    std::fs::create_dir_all(&film).unwrap();
    common::h264_film(&film.join("Test Film (2024).mkv"), "640x360");
    std::fs::write(film.join("Test Film (2024).en.srt"), subtitle).unwrap();
    let direct = root.join("films/Voyage (2023)");
    std::fs::create_dir_all(&direct).unwrap();
    common::h264_film(&direct.join("Voyage (2023).mp4"), "640x360");
    std::fs::write(direct.join("Voyage (2023).en.srt"), subtitle).unwrap();
    // An empty file the scan must report as skipped.
    let empty = root.join("films/Empty Film (2024)");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("Empty Film (2024).mkv"), b"").unwrap();
    common::tagged_album(&root.join("music/Test Artist/Test Album"));
}

#[test]
fn the_web_app_works_in_a_browser() {
    let media = tempfile::tempdir().unwrap();
    library(media.path());
    // No administrator from the environment: the first run is the wizard's.
    let server = Server::start_with(&[], false);
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    let output = Command::new("node")
        .arg("e2e/app.e2e.mjs")
        .current_dir(&web)
        .env("OMEGA_URL", format!("http://127.0.0.1:{}", server.http_port))
        .env("OMEGA_FILMS", media.path().join("films"))
        .env("OMEGA_MUSIC", media.path().join("music"))
        .env("OMEGA_SCREENSHOTS", &screenshots)
        .output()
        .expect("node runs (scripts/setup.sh installs it)");
    let log = server.log();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        output.status.success(),
        "end-to-end test failed\n--- stdout\n{}\n--- stderr\n{}\n--- server log (tail)\n{tail}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("screenshots: {}", screenshots.display());
}
