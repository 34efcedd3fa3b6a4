//! Libraries through the HTTP API of a real node: `--media` folders are
//! scanned by naming conventions, the catalog is browsed, files stream with
//! exact ranges, and library permissions hold on items and streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, ffmpeg, tiny_clip};
use serde_json::{Value, json};

fn put(root: &Path, relative: &str, source: &Path) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(source, path).unwrap();
}

/// Movies, a show with two seasons and specials, an album; plus traps.
fn media_tree(root: &Path) {
    let clip = root.join("clip.mkv");
    tiny_clip(&clip);
    let two_audio = root.join("two-audio.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=5",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660",
        "-t",
        "1",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:1",
        "language=fra",
        two_audio.to_str().unwrap(),
    ]);
    let tone = root.join("tone.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "1",
        tone.to_str().unwrap(),
    ]);
    let movies = root.join("movies");
    put(&movies, "Alien (1979)/Alien (1979).mkv", &two_audio);
    std::fs::write(
        movies.join("Random Bytes (2000).mkv"),
        (0..50_000_u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let whole = std::fs::read(&clip).unwrap();
    std::fs::write(movies.join("Truncated (2001).mkv"), &whole[..whole.len().min(200)]).unwrap();
    put(&movies, "Blade.Runner.1982.1080p.BluRay.mkv", &clip);
    put(&movies, "Amélie (2001)/Amélie.mkv", &clip);
    std::fs::write(
        movies.join("Amélie (2001)/Amélie.nfo"),
        "<movie><title>Le Fabuleux Destin d'Amélie Poulain</title><year>2001</year><plot>Paris, 1997.</plot></movie>",
    )
    .unwrap();
    std::fs::write(
        movies.join("Alien (1979)/Alien (1979).en.srt"),
        "1\n00:00:00,000 --> 00:00:01,000\nHello\n",
    )
    .unwrap();
    std::fs::write(movies.join("empty.mkv"), b"").unwrap();
    std::fs::write(movies.join("notes.txt"), b"not media").unwrap();
    std::os::unix::fs::symlink(&movies, movies.join("loop")).unwrap();
    let shows = root.join("shows");
    put(&shows, "The Show (2019)/Season 01/The Show - S01E01 - Pilot.mkv", &clip);
    put(&shows, "The Show (2019)/Season 01/The Show S01E02E03.mkv", &clip);
    put(&shows, "The Show (2019)/Season 02/The Show S02E01.mkv", &clip);
    put(&shows, "The Show (2019)/Specials/The Show S00E01.mkv", &clip);
    let music = root.join("music");
    let tagged = root.join("tagged.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330",
        "-t",
        "1",
        "-metadata",
        "title=Overture (tagged)",
        tagged.to_str().unwrap(),
    ]);
    put(&music, "The Artist/First Album (2020)/01 Intro.mp3", &tagged);
    put(&music, "The Artist/First Album (2020)/02 Second Song.mp3", &tone);
}

fn items(server: &Server, token: &str, query: &str) -> Value {
    let (code, body) = server.request("GET", &format!("/api/v1/items?{query}"), Some(token), None);
    assert_eq!(code, 200, "{body}");
    body
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["title"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn scanned_libraries_browse_stream_and_respect_access() {
    let media = tempfile::tempdir().unwrap();
    media_tree(media.path());
    let root = media.path();
    let server = Server::start(&[
        "--media",
        root.join("movies").to_str().unwrap(),
        "--media",
        root.join("shows").to_str().unwrap(),
        "--media",
        &format!("{}:music", root.join("music").display()),
    ]);
    let admin = server.login("admin", "admin-password");

    let library = |kind: &str| server.library(&admin, kind);
    let (movies, shows, music) = (library("movies"), library("shows"), library("music"));
    server.wait_for_scans(&admin, &[movies, shows, music], Duration::from_secs(20));
    let (_, status) = server.request("GET", &format!("/api/v1/libraries/{movies}/scan"), Some(&admin), None);
    let skipped = status["report"]["skipped"].to_string();
    assert!(
        skipped.contains("empty.mkv") && skipped.contains("empty file"),
        "{status}"
    );

    // Movies by folder and scene names; the symlink loop is not followed.
    let page = items(&server, &admin, "type=movie");
    assert_eq!(
        titles(&page),
        ["Alien", "Blade Runner", "Le Fabuleux Destin d'Amélie Poulain"],
        "{page}"
    );
    assert_eq!(page["items"][2]["metadata"]["overview"], "Paris, 1997.");
    assert_eq!(
        page["items"][0]["metadata"]["external_subtitles"],
        "en:Alien (1979).en.srt"
    );
    let years: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["year"].as_u64().unwrap())
        .collect();
    assert_eq!(years, [1979, 1982, 2001]);
    let metadata = &page["items"][0]["metadata"];
    assert_eq!(
        (metadata["video_codec"].as_str(), metadata["width"].as_str()),
        (Some("h264"), Some("64")),
        "{metadata}"
    );
    assert_eq!(metadata["audio_languages"], "eng,fra", "{metadata}");
    let duration: u64 = metadata["duration_ms"].as_str().unwrap().parse().unwrap();
    assert!((900..=1200).contains(&duration), "{duration}");

    // The show: series → seasons (with specials) → episodes, multi-episode.
    let series = items(&server, &admin, "type=series");
    assert_eq!(titles(&series), ["The Show"]);
    let series_id = series["items"][0]["id"].as_u64().unwrap();
    let seasons = items(&server, &admin, &format!("parent={series_id}&sort=index"));
    assert_eq!(titles(&seasons), ["Specials", "Season 1", "Season 2"]);
    let season_one = seasons["items"][1]["id"].as_u64().unwrap();
    let episodes = items(&server, &admin, &format!("parent={season_one}&sort=index"));
    // An episode keeps the title its file name gives.
    assert_eq!(titles(&episodes), ["Pilot", "The Show S01E02"]);
    assert_eq!(episodes["items"][1]["metadata"]["episode_end"], "3");

    // Music: artist → album → numbered tracks.
    let tracks = items(&server, &admin, "type=track&sort=index");
    assert_eq!(
        titles(&tracks),
        ["Overture (tagged)", "Second Song"],
        "the title tag beats the file name"
    );
    assert_eq!(tracks["items"][1]["index"], 2);
    assert_eq!(tracks["items"][0]["metadata"]["audio_codecs"], "mp3");
    let album = items(&server, &admin, "type=album");
    assert_eq!(
        (titles(&album), album["items"][0]["year"].as_u64()),
        (vec!["First Album".to_owned()], Some(2020))
    );

    // Search, paging, bad parameters.
    assert_eq!(titles(&items(&server, &admin, "search=blade")), ["Blade Runner"]);
    let paged = items(&server, &admin, "type=movie&limit=1&offset=1");
    assert_eq!(
        (titles(&paged), paged["total"].as_u64()),
        (vec!["Blade Runner".to_owned()], Some(3))
    );
    let (code, _) = server.request("GET", "/api/v1/items?type=spaceship", Some(&admin), None);
    assert_eq!(code, 400);
    let (code, _) = server.request("GET", "/api/v1/items/..%2F..%2Fetc%2Fpasswd/stream", Some(&admin), None);
    assert_eq!(code, 400);

    // Direct play: exact bytes, ranges, ETag, 416.
    let alien = page["items"][0]["id"].as_u64().unwrap();
    let file = std::fs::read(root.join("movies/Alien (1979)/Alien (1979).mkv")).unwrap();
    let size = file.len();
    let stream = format!("/api/v1/items/{alien}/stream");
    let (code, head, body) = server.get_bytes(&stream, &admin, "");
    assert_eq!((code, body.as_slice()), (200, file.as_slice()));
    assert!(
        head.contains("video/x-matroska") && head.to_lowercase().contains("accept-ranges: bytes"),
        "{head}"
    );
    let etag = head
        .lines()
        .find_map(|line| line.strip_prefix("etag: ").or_else(|| line.strip_prefix("ETag: ")))
        .unwrap()
        .to_owned();
    for (range, expected) in [
        ("bytes=0-99", &file[..100]),
        ("bytes=100-", &file[100..]),
        ("bytes=-50", &file[size - 50..]),
        (&format!("bytes=10-{}", size + 1000)[..], &file[10..]),
    ] {
        let (code, head, body) = server.get_bytes(&stream, &admin, &format!("Range: {range}\r\n"));
        assert_eq!(code, 206, "{range}: {head}");
        assert_eq!(body, expected, "{range}");
        assert!(head.to_lowercase().contains(&format!("/{size}")), "{head}");
    }
    let (code, head, _) = server.get_bytes(&stream, &admin, &format!("Range: bytes={size}-\r\n"));
    assert_eq!(code, 416);
    assert!(
        head.to_lowercase().contains(&format!("content-range: bytes */{size}")),
        "{head}"
    );
    let (code, _, body) = server.get_bytes(&stream, &admin, "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n");
    assert_eq!((code, body.len()), (200, size));
    let (code, _, body) = server.get_bytes(&stream, &admin, &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"));
    assert_eq!((code, body.len()), (206, 10));
    let (code, _, _) = server.get_bytes(&stream, &admin, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(code, 304);

    // Watch state: resume position, played, per user.
    let (code, _) = server.request(
        "POST",
        &format!("/api/v1/items/{alien}/progress"),
        Some(&admin),
        Some(&json!({ "position_ms": 42_000 })),
    );
    assert_eq!(code, 200);
    let (_, detail) = server.request("GET", &format!("/api/v1/items/{alien}"), Some(&admin), None);
    assert_eq!(detail["user_data"]["position_ms"], 42_000, "{detail}");
    // "Continue watching" holds the film, not a song left half-way.
    let track = tracks["items"][0]["id"].as_u64().unwrap();
    let (code, _) = server.request(
        "POST",
        &format!("/api/v1/items/{track}/progress"),
        Some(&admin),
        Some(&json!({ "position_ms": 5_000 })),
    );
    assert_eq!(code, 200);
    let (_, resume) = server.request("GET", "/api/v1/items/resume", Some(&admin), None);
    let resumed: Vec<u64> = resume["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["id"].as_u64())
        .collect();
    assert_eq!(resumed, [alien], "{resume}");
    let (_, ended) = server.request(
        "POST",
        &format!("/api/v1/items/{alien}/progress"),
        Some(&admin),
        Some(&json!({ "position_ms": 60_000, "played": true })),
    );
    assert_eq!(
        (
            ended["played"].as_bool(),
            ended["play_count"].as_u64(),
            ended["position_ms"].as_u64()
        ),
        (Some(true), Some(1), Some(0))
    );
    let (code, unplayed) = server.request("DELETE", &format!("/api/v1/items/{alien}/played"), Some(&admin), None);
    assert_eq!((code, unplayed["played"].as_bool()), (200, Some(false)));

    // A user who may see only the music library sees nothing else.
    let (code, _) = server.request(
        "POST",
        "/api/v1/users",
        Some(&admin),
        Some(&json!({ "name": "kid", "password": "kid-password", "libraries": [music] })),
    );
    assert_eq!(code, 201);
    let kid = server.login("kid", "kid-password");
    let visible = items(&server, &kid, "");
    assert!(
        visible["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["library"] == music),
        "{visible}"
    );
    assert_eq!(visible["total"], 4);
    let (code, _) = server.request("GET", &format!("/api/v1/items/{alien}"), Some(&kid), None);
    assert_eq!(code, 404);
    let (code, _, _) = server.get_bytes(&stream, &kid, "");
    assert_eq!(code, 404);
    let (code, _) = server.request("POST", &format!("/api/v1/items/{alien}/played"), Some(&kid), None);
    assert_eq!(code, 404);
    let track = visible["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "track")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let (_, detail) = server.request("GET", &format!("/api/v1/items/{track}"), Some(&kid), None);
    assert_eq!(detail["user_data"]["played"], false, "watch state is per user");
    let (code, kid_libraries) = server.request("GET", "/api/v1/libraries", Some(&kid), None);
    assert_eq!((code, kid_libraries.as_array().map(Vec::len)), (200, Some(1)));
    assert!(kid_libraries[0].get("paths").is_none(), "paths are for administrators");
    let (code, _) = server.request("POST", &format!("/api/v1/libraries/{movies}/scan"), Some(&kid), None);
    assert_eq!(code, 403);

    // A rescan after a file is removed drops its item.
    std::fs::remove_file(root.join("movies/Blade.Runner.1982.1080p.BluRay.mkv")).unwrap();
    let (code, _) = server.request("POST", &format!("/api/v1/libraries/{movies}/scan"), Some(&admin), None);
    assert_eq!(code, 202);
    let started = Instant::now();
    while titles(&items(&server, &admin, "type=movie")).len() != 2 {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn library_view(server: &Server, token: &str, id: u64) -> Value {
    let (code, libraries) = server.request("GET", "/api/v1/libraries", Some(token), None);
    assert_eq!(code, 200, "{libraries}");
    libraries
        .as_array()
        .unwrap()
        .iter()
        .find(|library| library["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no library {id} in {libraries}"))
}

/// (title, id) of every movie, by title.
/// A node serving `folder` as its one library of `kind` (`movies`,
/// `music`), its first scan done: the node, the administrator's token and
/// the library's id.
fn scanned(folder: &Path, kind: &str) -> (Server, String, u64) {
    let media = format!("{}:{kind}", folder.display());
    let server = Server::start(&["--media", &media]);
    let token = server.login("admin", "admin-password");
    let library = server.library(&token, kind);
    server.wait_for_scans(&token, &[library], Duration::from_secs(60));
    (server, token, library)
}

fn movie_ids(server: &Server, token: &str) -> Vec<(String, u64)> {
    let page = items(server, token, "type=movie&limit=100");
    let mut ids: Vec<(String, u64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["title"].as_str().unwrap().to_owned(), item["id"].as_u64().unwrap()))
        .collect();
    ids.sort();
    ids
}

/// Starts a scan of `library`, waits for it to finish; its status.
fn rescan(server: &Server, token: &str, library: u64) -> Value {
    let (code, body) = server.request("POST", &format!("/api/v1/libraries/{library}/scan"), Some(token), None);
    assert_eq!(code, 202, "{body}");
    server.wait_for_scans(token, &[library], Duration::from_secs(60));
    server
        .request("GET", &format!("/api/v1/libraries/{library}/scan"), Some(token), None)
        .1
}

/// Goal (hardening): a library folder that is missing, unmounted (an empty
/// mount point) or gone at a restart removes nothing: the library is shown
/// offline (API and /metrics), and once the folder is back every item keeps
/// its id and watch state. Failed before the fix: the rescan removed every
/// item (and the node refused to start with the folder missing).
#[test]
fn an_offline_library_folder_removes_nothing_and_comes_back_with_the_same_ids() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("Movies");
    let clip = media.path().join("clip.mkv");
    tiny_clip(&clip);
    put(&movies, "Harbor Lights (2019)/Harbor Lights (2019).mkv", &clip);
    put(&movies, "Night Train (2021)/Night Train (2021).mkv", &clip);
    let (mut server, token, library) = scanned(&movies, "movies");
    let before = movie_ids(&server, &token);
    assert_eq!(before.len(), 2, "{before:?}");
    let watched = before[0].1;
    let (code, body) = server.request(
        "POST",
        &format!("/api/v1/items/{watched}/progress"),
        Some(&token),
        Some(&json!({ "position_ms": 42_000 })),
    );
    assert!(code == 200 || code == 204, "{code} {body}");

    // The NAS goes away: the folder is missing.
    let away = media.path().join("Movies.away");
    std::fs::rename(&movies, &away).unwrap();
    let status = rescan(&server, &token, library);
    assert_eq!(status["report"]["removed"], 0, "{status}");
    assert_eq!(
        status["report"]["offline"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(movie_ids(&server, &token), before);
    let view = library_view(&server, &token, library);
    assert_eq!(view["offline"], true, "{view}");
    assert!(view["offline_folders"][0]["reason"].is_string(), "{view}");
    let (_, metrics) = server.request("GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(&format!("omega_library_offline{{library=\"{library}\"}} 1")),
        "{metrics}"
    );

    // A restart with the folder still missing: the node starts anyway.
    server.restart();
    let token = server.login("admin", "admin-password");
    server.wait_for_scans(&token, &[library], Duration::from_secs(60));
    assert_eq!(movie_ids(&server, &token), before);
    assert!(server.log().contains("is not a folder now"), "{}", server.log());

    // An empty mount point where the folder was: still offline.
    std::fs::create_dir(&movies).unwrap();
    let status = rescan(&server, &token, library);
    assert_eq!(status["report"]["removed"], 0, "{status}");
    assert_eq!(movie_ids(&server, &token), before);
    assert_eq!(library_view(&server, &token, library)["offline"], true);

    // The folder comes back: the node notices by itself, and every item
    // keeps its id and its watch state.
    std::fs::remove_dir(&movies).unwrap();
    std::fs::rename(&away, &movies).unwrap();
    let started = Instant::now();
    while library_view(&server, &token, library)["offline"] == true {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still offline: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.wait_for_scans(&token, &[library], Duration::from_secs(60));
    assert_eq!(movie_ids(&server, &token), before);
    let (code, detail) = server.request("GET", &format!("/api/v1/items/{watched}"), Some(&token), None);
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["user_data"]["position_ms"], 42_000, "{detail}");
    // A file really deleted from a listed folder is still removed.
    std::fs::remove_dir_all(movies.join("Night Train (2021)")).unwrap();
    let status = rescan(&server, &token, library);
    assert_eq!(status["report"]["removed"], 1, "{status}");
}

/// A WAV file whose header claims a byte rate of one: a 2 MiB file that
/// "lasts" 2,097,152 s (24 days).
fn crafted_wav(path: &Path) {
    let data = vec![0_u8; 2 << 20];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    for field in [
        16_u32.to_le_bytes().as_slice(),
        &1_u16.to_le_bytes(),
        &1_u16.to_le_bytes(),
    ] {
        bytes.extend_from_slice(field);
    }
    // Sample rate 1, byte rate 1, block align 1, 8 bits.
    bytes.extend_from_slice(&1_u32.to_le_bytes());
    bytes.extend_from_slice(&1_u32.to_le_bytes());
    bytes.extend_from_slice(&1_u16.to_le_bytes());
    bytes.extend_from_slice(&8_u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

/// Goal (hardening): a file whose container claims what no real file has
/// (here a 24-day duration) is refused at scan with a reason, so no
/// playlist is ever planned for it. Failed before the fix: it was scanned
/// without warning, and a variant playlist request made the node allocate
/// gigabytes and abort.
#[test]
fn a_crafted_duration_is_refused_at_scan_with_a_reason() {
    let media = tempfile::tempdir().unwrap();
    let music = media.path().join("Music");
    common::tagged_album(&music.join("Test Artist").join("Test Album"));
    crafted_wav(&music.join("Test Artist").join("Test Album").join("03 - Forever.wav"));
    let (server, token, library) = scanned(&music, "music");
    let (_, status) = server.request("GET", &format!("/api/v1/libraries/{library}/scan"), Some(&token), None);
    let skipped = status["report"]["skipped"].as_array().cloned().unwrap_or_default();
    assert!(
        skipped.iter().any(
            |entry| entry["path"].as_str().is_some_and(|path| path.ends_with("Forever.wav"))
                && entry["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains("implausible duration"))
        ),
        "{status}"
    );
    let tracks = titles(&items(&server, &token, "type=track&limit=100"));
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    let (code, _) = server.request("GET", "/healthz", None, None);
    assert_eq!(code, 200);
}

/// Goal (hardening): a playback position past the longest plausible file
/// is refused (400) on every protocol, and the saved position stays.
/// Failed before the fix: `u64::MAX` ticks were saved and wrapped (or
/// overflowed) when the Jellyfin API read them back.
#[test]
fn positions_past_any_real_file_are_refused_on_every_protocol() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("Movies");
    let clip = media.path().join("clip.mkv");
    tiny_clip(&clip);
    put(&movies, "Short (2020)/Short (2020).mkv", &clip);
    let (server, token, _) = scanned(&movies, "movies");
    let id = movie_ids(&server, &token)[0].1;
    let progress = format!("/api/v1/items/{id}/progress");
    let (code, body) = server.request("POST", &progress, Some(&token), Some(&json!({ "position_ms": 5_000 })));
    assert_eq!(code, 200, "{body}");
    let (code, body) = server.request(
        "POST",
        &progress,
        Some(&token),
        Some(&json!({ "position_ms": u64::MAX })),
    );
    assert_eq!(code, 400, "{body}");
    let jellyfin_body = json!({ "ItemId": format!("{id:032x}"), "PositionTicks": u64::MAX }).to_string();
    let (code, head, body) = common::http_raw(
        server.http_port,
        "POST",
        "/Sessions/Playing/Progress",
        &format!("X-Emby-Token: {token}\r\nContent-Type: application/json\r\n"),
        jellyfin_body.as_bytes(),
    );
    assert_eq!(code, 400, "{head} {}", String::from_utf8_lossy(&body));
    let (code, detail) = server.request("GET", &format!("/api/v1/items/{id}"), Some(&token), None);
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["user_data"]["position_ms"], 5_000, "{detail}");
}

/// One keep-alive connection sending requests one after another; each
/// answer is read by its Content-Length.
struct KeepAlive {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl KeepAlive {
    fn open(port: u16) -> KeepAlive {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        KeepAlive {
            reader: std::io::BufReader::new(stream),
        }
    }

    /// The status, the head (lower case) and the body.
    fn send(&mut self, method: &str, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
        use std::io::{BufRead, Read, Write};
        write!(
            self.reader.get_mut(),
            "{method} {path} HTTP/1.1\r\nHost: omega\r\n{headers}\r\n"
        )
        .unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line.to_lowercase());
        }
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        let mut body = vec![0_u8; if method == "HEAD" { 0 } else { length }];
        self.reader.read_exact(&mut body).unwrap();
        (code, head, body)
    }
}

/// Goal: a direct stream over several zero-copy spans (`sendfile`, 2 MiB
/// each) gives exactly the file's bytes, whole and in ranges across span
/// boundaries, for requests one after another on one keep-alive connection
/// (HEAD among them), as a kept HLS segment does; after the file changes,
/// no answer gives bytes the file does not hold.
#[test]
fn direct_streams_and_kept_segments_go_zero_copy_byte_for_byte() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("Movies");
    let film = movies.join("Large (2020)/Large (2020).mkv");
    std::fs::create_dir_all(film.parent().unwrap()).unwrap();
    common::h264_film(&film, "1920x1080");
    let mut file = std::fs::read(&film).unwrap();
    let size = file.len();
    assert!(size > 5 << 20, "the film spans three 2 MiB spans: {size} bytes");
    let (server, token, _) = scanned(&movies, "movies");
    let id = movie_ids(&server, &token)[0].1;
    let stream = format!("/api/v1/items/{id}/stream");
    let auth = format!("Authorization: Bearer {token}\r\n");

    let mut connection = KeepAlive::open(server.http_port);
    let boundary = 2 << 20;
    for round in 0..2 {
        let (code, _, body) = connection.send("GET", &stream, &auth);
        assert_eq!(code, 200, "round {round}");
        assert!(body == file, "round {round}: the whole file differs");
        let range = format!("{auth}Range: bytes={}-{}\r\n", boundary - 1000, 2 * boundary + 5);
        let (code, head, body) = connection.send("GET", &stream, &range);
        assert_eq!(code, 206, "{head}");
        assert!(
            body == file[boundary - 1000..=2 * boundary + 5],
            "round {round}: a range differs"
        );
        let (code, head, body) = connection.send("HEAD", &stream, &auth);
        assert_eq!((code, body.len()), (200, 0));
        assert!(head.contains(&format!("content-length: {size}")), "{head}");
        let (code, _, body) = connection.send("GET", &stream, &format!("{auth}Range: bytes=-10\r\n"));
        assert_eq!((code, body.as_slice()), (206, &file[size - 10..]));
    }

    // A kept segment: made once, then sent from the store's pack file.
    let (code, _, master) = connection.send("GET", &format!("/api/v1/items/{id}/hls/master.m3u8"), &auth);
    assert_eq!(code, 200);
    let master = String::from_utf8(master).unwrap();
    let variant = master.lines().find(|line| line.starts_with("360p/")).unwrap();
    let query = variant.split_once('?').unwrap().1;
    let segment = format!("/api/v1/items/{id}/hls/360p/1.m4s?{query}");
    let (code, _, made) = connection.send("GET", &segment, "");
    assert_eq!(code, 200);
    let started = Instant::now();
    loop {
        let (_, _, metrics) = connection.send("GET", "/metrics", "");
        if String::from_utf8_lossy(&metrics).contains("omega_hls_segments_total{origin=\"store\"}") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the segment was not kept");
        std::thread::sleep(Duration::from_millis(200));
        let (code, _, again) = connection.send("GET", &segment, "");
        assert_eq!((code, again == made), (200, true));
    }
    for _ in 0..3 {
        let (code, _, kept) = connection.send("GET", &segment, "");
        assert_eq!(
            (code, kept == made),
            (200, true),
            "a kept segment differs from the one made"
        );
    }

    // The file changes in place (same size): an answer is refused (409,
    // cut off) or, once the watcher has rescanned it, the new bytes.
    file[size / 2] ^= 0xff;
    file[100] ^= 0xff;
    std::fs::write(&film, &file).unwrap();
    let (code, head, body) = common::http_raw(server.http_port, "GET", &stream, &auth, b"");
    match code {
        409 => assert!(
            String::from_utf8_lossy(&body).contains("changed since it was scanned"),
            "{head}"
        ),
        200 => assert!(
            body.len() < size || body == file,
            "a changed file gave bytes it does not hold"
        ),
        other => panic!("HTTP {other}: {head}"),
    }
}

/// Goal (web app's first hour): search ignores accents and case the same
/// way in the REST API, Jellyfin's `SearchTerm` and Subsonic's `search3`:
/// "zoe", "UMIT" find "Zoë & Ümit". Failed before: each compared lower
/// case only.
#[test]
fn searches_ignore_accents_on_every_protocol() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("Movies");
    let music = media.path().join("Music");
    let clip = media.path().join("clip.mkv");
    tiny_clip(&clip);
    put(&movies, "Zoë & Ümit (2021)/Zoë & Ümit (2021).mkv", &clip);
    put(&movies, "Zed (2020)/Zed (2020).mkv", &clip);
    let song = music.join("Artist/Album/01 Song.mp3");
    std::fs::create_dir_all(song.parent().unwrap()).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=2",
        "-metadata",
        "title=Zoë & Ümit",
        "-metadata",
        "artist=Artist",
        "-metadata",
        "album=Album",
        song.to_str().unwrap(),
    ]);
    let (movies_arg, music_arg) = (
        format!("{}:movies", movies.display()),
        format!("{}:music", music.display()),
    );
    let server = Server::start(&["--media", &movies_arg, "--media", &music_arg]);
    let token = server.login("admin", "admin-password");
    let libraries = [server.library(&token, "movies"), server.library(&token, "music")];
    server.wait_for_scans(&token, &libraries, Duration::from_secs(60));

    for needle in ["zoe", "UMIT", "Zoë", "%C3%BCmit"] {
        let page = items(&server, &token, &format!("type=movie&search={needle}"));
        assert_eq!(titles(&page), ["Zoë & Ümit"], "REST search {needle}");
    }
    let (code, _, body) = common::http_raw(
        server.http_port,
        "GET",
        "/Items?Recursive=true&IncludeItemTypes=Movie&SearchTerm=umit",
        &format!("X-Emby-Token: {token}\r\n"),
        b"",
    );
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["Items"][0]["Name"], "Zoë & Ümit", "{answer}");
    assert_eq!(answer["Items"].as_array().unwrap().len(), 1, "{answer}");
    let (code, _, body) = common::http_raw(
        server.http_port,
        "GET",
        "/rest/search3?u=admin&p=admin-password&f=json&v=1.16.1&c=t&query=zoe",
        "",
        b"",
    );
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{answer}");
    let songs = &answer["subsonic-response"]["searchResult3"]["song"];
    assert_eq!(songs[0]["title"], "Zoë & Ümit", "{answer}");
}

/// Goal (web app's first hour): a scan reports each file it skipped with
/// why: an empty film and a corrupt one (random bytes) among good ones.
#[test]
fn scans_report_skipped_files_with_reasons() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("Movies");
    let clip = media.path().join("clip.mkv");
    tiny_clip(&clip);
    put(&movies, "Good (2020)/Good (2020).mkv", &clip);
    std::fs::create_dir_all(movies.join("Empty (2021)")).unwrap();
    std::fs::write(movies.join("Empty (2021)/Empty (2021).mkv"), b"").unwrap();
    std::fs::create_dir_all(movies.join("Corrupt (2022)")).unwrap();
    let noise: Vec<u8> = (0..200_000_u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(movies.join("Corrupt (2022)/Corrupt (2022).mkv"), noise).unwrap();
    let (server, token, library) = scanned(&movies, "movies");
    let (code, status) = server.request("GET", &format!("/api/v1/libraries/{library}/scan"), Some(&token), None);
    assert_eq!(code, 200, "{status}");
    let skipped = status["report"]["skipped"].as_array().unwrap();
    for name in ["Empty (2021).mkv", "Corrupt (2022).mkv"] {
        let entry = skipped
            .iter()
            .find(|entry| entry["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} is not reported as skipped: {status}"));
        assert!(!entry["reason"].as_str().unwrap().is_empty(), "{entry}");
    }
    assert_eq!(titles(&items(&server, &token, "type=movie")), ["Good"]);
}
