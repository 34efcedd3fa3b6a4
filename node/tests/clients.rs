//! Existing clients against a real node: the client libraries the apps use
//! (py-sonic for Subsonic) drive `omega serve` on a generated library, and
//! the protocols' own rules hold: credentials, per-library access, bad
//! input answered in each protocol's error shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, ffmpeg, http_raw};
use serde_json::{Value, json};

/// The test album with a folder cover; returns the first track's path.
fn music(root: &Path) -> PathBuf {
    let album = root.join("Test Artist/Test Album");
    common::tagged_album(&album);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=300x300:duration=1",
        "-frames:v",
        "1",
        album.join("cover.jpg").to_str().unwrap(),
    ]);
    album.join("01 - First Tone.mp3")
}

/// A user who may see no library: `outsider` / `outsider-password`.
fn add_outsider(server: &Server, admin: &str) {
    let (code, _) = server.request(
        "POST",
        "/api/v1/users",
        Some(admin),
        Some(&json!({"name": "outsider", "password": "outsider-password", "libraries": []})),
    );
    assert_eq!(code, 201);
}

fn wait_for_tracks(server: &Server, token: &str, count: u64) {
    let started = Instant::now();
    loop {
        let (_, page) = server.request("GET", "/api/v1/items?type=track", Some(token), None);
        if page["total"] == count {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Subsonic call with a plain password, as JSON.
fn subsonic(server: &Server, query: &str) -> (u16, Value) {
    let (code, _, body) = http_raw(server.http_port, "GET", &format!("/rest/{query}"), "", b"");
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (code, value["subsonic-response"].clone())
}

#[test]
fn subsonic_clients_browse_stream_and_scrobble() {
    let media = tempfile::tempdir().unwrap();
    let first_track = music(&media.path().join("music"));
    let server = Server::start(&["--media", &format!("{}:music", media.path().join("music").display())]);
    let admin = server.login("admin", "admin-password");
    wait_for_tracks(&server, &admin, 2);

    // An app password, shown once; listed without its secret.
    let (code, created) = server.request(
        "POST",
        "/api/v1/auth/app-passwords",
        Some(&admin),
        Some(&json!({"name": "py-sonic"})),
    );
    assert_eq!(code, 201, "{created}");
    let app_password = created["password"].as_str().unwrap().to_owned();
    let (_, listed) = server.request("GET", "/api/v1/auth/app-passwords", Some(&admin), None);
    assert_eq!(listed[0]["name"], "py-sonic");
    assert!(listed[0].get("password").is_none(), "{listed}");

    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/subsonic.py"))
        .env("OMEGA_PORT", server.http_port.to_string())
        .env("OMEGA_USER", "admin")
        .env("OMEGA_APP_PASSWORD", &app_password)
        .env("OMEGA_TRACK_FILE", &first_track)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "py-sonic failed\n{}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );

    // The playlist made through Subsonic is Omega's own.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let playlist = stdout
        .lines()
        .find_map(|line| line.strip_prefix("playlist "))
        .unwrap()
        .to_owned();
    let (code, detail) = server.request("GET", &format!("/api/v1/playlists/{playlist}"), Some(&admin), None);
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["name"], "Road trip 2");
    assert_eq!(detail["items"].as_array().unwrap().len(), 2, "{detail}");
    let (code, _) = server.request("DELETE", &format!("/api/v1/playlists/{playlist}"), Some(&admin), None);
    assert_eq!(code, 204);
    let (code, _) = server.request(
        "POST",
        "/api/v1/playlists",
        Some(&admin),
        Some(&json!({"name": "", "items": []})),
    );
    assert_eq!(code, 400, "an empty name is refused");
    let (code, _) = server.request(
        "POST",
        "/api/v1/playlists",
        Some(&admin),
        Some(&json!({"name": "x", "items": [987654321]})),
    );
    assert_eq!(code, 404, "an unknown item is refused");

    // The scrobble is the watch state Omega's own API shows.
    let (_, tracks) = server.request("GET", "/api/v1/items?type=track&sort=index", Some(&admin), None);
    assert_eq!(tracks["items"][0]["user_data"]["play_count"], 1, "{tracks}");

    // XML by default, with the namespace.
    let plain = format!("u=admin&p={app_password}");
    let (code, _, body) = http_raw(server.http_port, "GET", &format!("/rest/ping.view?{plain}"), "", b"");
    let text = String::from_utf8(body).unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("xmlns=\"http://subsonic.org/restapi\"") && text.contains("status=\"ok\""),
        "{text}"
    );

    // Bad input: the envelope with Subsonic's codes.
    let (_, answer) = subsonic(&server, "ping?f=json");
    assert_eq!(answer["error"]["code"], 40, "no credentials: {answer}");
    let (_, answer) = subsonic(&server, "ping?f=json&u=admin&t=00&s=salt");
    assert_eq!(answer["error"]["code"], 40, "{answer}");
    let (_, answer) = subsonic(&server, "ping?f=json&u=admin&p=enc:zz");
    assert_eq!(answer["error"]["code"], 40, "{answer}");
    let (code, answer) = subsonic(&server, &format!("getPodcasts?f=json&{plain}"));
    assert_eq!((code, answer["status"].as_str()), (501, Some("failed")), "{answer}");
    let (_, answer) = subsonic(&server, &format!("getAlbum?f=json&{plain}"));
    assert_eq!(answer["error"]["code"], 10, "{answer}");
    let (_, answer) = subsonic(&server, &format!("getAlbum?f=json&id=nonsense&{plain}"));
    assert_eq!(answer["error"]["code"], 70, "{answer}");
    let (_, answer) = subsonic(
        &server,
        &format!("getAlbumList2?f=json&type=newest&size=99999999&{plain}"),
    );
    assert_eq!(answer["status"], "ok", "a huge size is capped: {answer}");
    let (_, answer) = subsonic(&server, &format!("getAlbumList2?f=json&type=newest&size=-4&{plain}"));
    assert_eq!(answer["error"]["code"], 0, "{answer}");
    // Paths under /rest that name no method, and other HTTP methods, get
    // the envelope too.
    for (method, path, status) in [
        ("GET", "/rest/a/b?f=json", 404),
        ("GET", "/rest?f=json", 404),
        ("PUT", "/rest/ping?f=json", 405),
    ] {
        let (code, _, body) = http_raw(server.http_port, method, path, "", b"");
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code, status, "{method} {path}: {answer}");
        assert_eq!(answer["subsonic-response"]["status"], "failed", "{answer}");
    }

    // The account password works while the account has no TOTP.
    let (_, answer) = subsonic(&server, "ping?f=json&u=admin&p=admin-password");
    assert_eq!(answer["status"], "ok", "{answer}");

    // A user without access to the music library sees none of it.
    add_outsider(&server, &admin);
    let outsider = "u=outsider&p=outsider-password";
    let (_, answer) = subsonic(&server, &format!("getArtists?f=json&{outsider}"));
    assert_eq!(answer["artists"]["index"], json!([]), "{answer}");
    let (_, answer) = subsonic(&server, &format!("search3?f=json&query=&{outsider}"));
    assert_eq!(answer["searchResult3"]["song"], json!([]), "{answer}");
    let track_id = tracks["items"][0]["id"].as_u64().unwrap();
    let (_, answer) = subsonic(&server, &format!("getSong?f=json&id={track_id}&{outsider}"));
    assert_eq!(answer["error"]["code"], 70, "{answer}");
    let (code, _, body) = http_raw(
        server.http_port,
        "GET",
        &format!("/rest/stream?id={track_id}&{outsider}"),
        "",
        b"",
    );
    assert!(
        code == 200 && String::from_utf8_lossy(&body).contains("code=\"70\""),
        "no bytes for an outsider"
    );

    // Revoked app passwords stop working.
    let id = created["id"].as_u64().unwrap();
    let (code, _) = server.request(
        "DELETE",
        &format!("/api/v1/auth/app-passwords/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(code, 204);
    let (_, answer) = subsonic(&server, &format!("ping?f=json&u=admin&p={app_password}"));
    assert_eq!(answer["error"]["code"], 40, "{answer}");
}

#[test]
fn opds_readers_browse_search_and_download() {
    let media = tempfile::tempdir().unwrap();
    let shelf = media.path().join("books");
    common::books::books(&shelf);
    let server = Server::start(&["--media", &format!("{}:books", shelf.display())]);
    let admin = server.login("admin", "admin-password");
    let started = Instant::now();
    loop {
        let (_, page) = server.request("GET", "/api/v1/items?type=book", Some(&admin), None);
        if page["total"] == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, created) = server.request(
        "POST",
        "/api/v1/auth/app-passwords",
        Some(&admin),
        Some(&json!({"name": "reader"})),
    );
    assert_eq!(code, 201);
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/opds.py"))
        .env("OMEGA_PORT", server.http_port.to_string())
        .env("OMEGA_USER", "admin")
        .env("OMEGA_APP_PASSWORD", created["password"].as_str().unwrap())
        .env("OMEGA_EPUB", shelf.join("petit-prince.epub"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "feedparser failed\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );

    // Bad input and access: malformed Basic, a wrong password, a reader
    // without access, a book id that is not a book.
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {token}\r\n")
    };
    let (code, head, _) = http_raw(server.http_port, "GET", "/opds", "Authorization: Basic !!!\r\n", b"");
    assert_eq!(code, 401);
    assert!(head.to_lowercase().contains("www-authenticate: basic"), "{head}");
    let (code, _, _) = http_raw(server.http_port, "GET", "/opds", &basic("admin", "wrong"), b"");
    assert_eq!(code, 401);
    add_outsider(&server, &admin);
    let outsider = basic("outsider", "outsider-password");
    let (code, _, body) = http_raw(server.http_port, "GET", "/opds/books", &outsider, b"");
    assert_eq!(code, 200);
    assert!(
        !String::from_utf8_lossy(&body).contains("<entry>"),
        "an outsider sees no books"
    );
    let (_, books) = server.request("GET", "/api/v1/items?type=book", Some(&admin), None);
    let id = books["items"][0]["id"].as_u64().unwrap();
    let (code, _, _) = http_raw(
        server.http_port,
        "GET",
        &format!("/opds/books/{id}/file/0"),
        &outsider,
        b"",
    );
    assert_eq!(code, 404);
    let (code, _, _) = http_raw(
        server.http_port,
        "GET",
        "/opds/books/99999/file/0",
        &basic("admin", "admin-password"),
        b"",
    );
    assert_eq!(code, 404);
    let huge = "x".repeat(300);
    let (code, _, _) = http_raw(
        server.http_port,
        "GET",
        &format!("/opds/search?q={huge}"),
        &basic("admin", "admin-password"),
        b"",
    );
    assert_eq!(code, 400);
}

#[test]
fn jellyfin_clients_sign_in_browse_play_and_report() {
    let media = tempfile::tempdir().unwrap();
    let folder = media.path().join("films/Test Film (2024)");
    std::fs::create_dir_all(&folder).unwrap();
    let film = folder.join("Test Film (2024).mkv");
    common::h264_film(&film, "320x240");
    let server = Server::start(&["--media", &format!("{}:movies", media.path().join("films").display())]);
    let admin = server.login("admin", "admin-password");
    let started = Instant::now();
    let film_id = loop {
        let (_, page) = server.request("GET", "/api/v1/items?type=movie", Some(&admin), None);
        if page["total"] == 1 && page["items"][0]["image"].is_string() {
            break page["items"][0]["id"].as_u64().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/jellyfin.py"))
        .env("OMEGA_PORT", server.http_port.to_string())
        .env("OMEGA_USER", "admin")
        .env("OMEGA_PASSWORD", "admin-password")
        .env("OMEGA_FILM", &film)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "jellyfin-apiclient-python failed\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    // The progress reported through Jellyfin's API is Omega's watch state.
    let reported = stdout
        .lines()
        .last()
        .unwrap()
        .strip_prefix("progress-item ")
        .unwrap()
        .to_owned();
    assert_eq!(u64::from_str_radix(&reported, 16).unwrap(), film_id);
    let (_, item) = server.request("GET", &format!("/api/v1/items/{film_id}"), Some(&admin), None);
    assert_eq!(item["user_data"]["position_ms"], 7300, "{item}");
    assert_eq!(item["user_data"]["favorite"], true, "{item}");

    // Case-insensitive paths, query keys and every token placement.
    let (code, _, body) = http_raw(
        server.http_port,
        "POST",
        "/users/authenticatebyname",
        "Content-Type: application/json\r\nX-Emby-Authorization: MediaBrowser Client=\"curl\", Device=\"test\", DeviceId=\"1\", Version=\"1\"\r\n",
        br#"{"Username":"admin","Pw":"admin-password"}"#,
    );
    assert_eq!(code, 200);
    let login: Value = serde_json::from_slice(&body).unwrap();
    let token = login["AccessToken"].as_str().unwrap().to_owned();
    for (path, headers) in [
        ("/USERS/ME".to_owned(), format!("X-Emby-Token: {token}\r\n")),
        ("/Users/Me".to_owned(), format!("X-MediaBrowser-Token: {token}\r\n")),
        (
            "/users/me".to_owned(),
            format!("Authorization: MediaBrowser Client=\"x\", Token=\"{token}\"\r\n"),
        ),
        (format!("/Users/Me?ApiKey={token}"), String::new()),
        (format!("/users/me?API_KEY={token}"), String::new()),
    ] {
        let (code, _, body) = http_raw(server.http_port, "GET", &path, &headers, b"");
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    // Bad input: no token, a bad id, a huge limit, an unknown route.
    let auth = format!("X-Emby-Token: {token}\r\n");
    let (code, _, _) = http_raw(server.http_port, "GET", "/Users/Me", "", b"");
    assert_eq!(code, 401);
    let (code, _, _) = http_raw(
        server.http_port,
        "GET",
        "/Users/Me",
        "Authorization: MediaBrowser Token=\"nope\"\r\n",
        b"",
    );
    assert_eq!(code, 401);
    let (code, _, _) = http_raw(server.http_port, "GET", "/Items/not-an-id", &auth, b"");
    assert_eq!(code, 404);
    let (code, _, body) = http_raw(
        server.http_port,
        "GET",
        "/Items?Recursive=true&Limit=99999999&StartIndex=0",
        &auth,
        b"",
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (code, _, _) = http_raw(server.http_port, "GET", "/Items?Limit=-1", &auth, b"");
    assert_eq!(code, 400);
    let (code, _, _) = http_raw(server.http_port, "GET", "/LiveTv/Channels", &auth, b"");
    assert_eq!(code, 501);
    let (code, _, _) = http_raw(server.http_port, "POST", "/Users/AuthenticateByName", "", b"{not json");
    assert_eq!(code, 400);

    // A user without access to the films sees none of them.
    add_outsider(&server, &admin);
    let (_, _, body) = http_raw(
        server.http_port,
        "POST",
        "/Users/AuthenticateByName",
        "Content-Type: application/json\r\n",
        br#"{"Username":"outsider","Pw":"outsider-password"}"#,
    );
    let outsider: Value = serde_json::from_slice(&body).unwrap();
    let outsider = format!("X-Emby-Token: {}\r\n", outsider["AccessToken"].as_str().unwrap());
    let (_, _, body) = http_raw(server.http_port, "GET", "/Items?Recursive=true", &outsider, b"");
    let listed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["TotalRecordCount"], 0, "{listed}");
    let hex = format!("{film_id:032x}");
    let (code, _, _) = http_raw(server.http_port, "GET", &format!("/Items/{hex}"), &outsider, b"");
    assert_eq!(code, 404);
    let (code, _, _) = http_raw(
        server.http_port,
        "GET",
        &format!("/Items/{hex}/Download"),
        &outsider,
        b"",
    );
    assert_eq!(code, 404);

    // A second sign-in from the same device replaces its token.
    let device = "Content-Type: application/json\r\nX-Emby-Authorization: MediaBrowser Client=\"curl\", Device=\"test\", DeviceId=\"1\", Version=\"1\"\r\n";
    let (code, _, body) = http_raw(
        server.http_port,
        "POST",
        "/Users/AuthenticateByName",
        device,
        br#"{"Username":"admin","Pw":"admin-password"}"#,
    );
    assert_eq!(code, 200);
    let again: Value = serde_json::from_slice(&body).unwrap();
    let auth = format!("X-Emby-Token: {}\r\n", again["AccessToken"].as_str().unwrap());
    let (code, _, _) = http_raw(
        server.http_port,
        "GET",
        "/Users/Me",
        &format!("X-Emby-Token: {token}\r\n"),
        b"",
    );
    assert_eq!(code, 401, "the device's earlier token is revoked");

    // Logging out revokes the token.
    let (code, _, _) = http_raw(server.http_port, "POST", "/Sessions/Logout", &auth, b"");
    assert_eq!(code, 204);
    let (code, _, _) = http_raw(server.http_port, "GET", "/Users/Me", &auth, b"");
    assert_eq!(code, 401);
}
