//! Music, audiobooks, books and photos through the HTTP API of a real node:
//! tagged albums with cover art, an audiobook with chapters, an EPUB, a PDF
//! and a comic, five photos with EXIF (all generated here: ffmpeg for media,
//! hand-built EXIF, PDF and zip containers). Also shown: artwork served from
//! the store, children in order, scan progress over the events WebSocket,
//! and the file watcher picking up a new photo and a moved one (which keeps
//! its item and watch state).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, ffmpeg};
use serde_json::Value;

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A one-frame JPEG test pattern.
fn jpeg(path: &Path, size: &str) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size={size}:rate=1"),
        "-frames:v",
        "1",
        arg(path),
    ]);
}

/// An MP3 with ID3 tags; with `cover`, that image embedded as its art.
fn tagged_mp3(path: &Path, title: &str, artist: &str, album: &str, cover: Option<&Path>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut args: Vec<String> = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
        .iter()
        .map(|text| (*text).to_owned())
        .collect();
    if let Some(cover) = cover {
        args.extend([
            "-i".into(),
            arg(cover).into(),
            "-map".into(),
            "0:a".into(),
            "-map".into(),
            "1:v".into(),
        ]);
        args.extend([
            "-c:v".into(),
            "copy".into(),
            "-disposition:v".into(),
            "attached_pic".into(),
        ]);
    }
    args.extend(["-c:a".into(), "libmp3lame".into(), "-id3v2_version".into(), "3".into()]);
    for (key, value) in [("title", title), ("artist", artist), ("album", album)] {
        args.extend(["-metadata".into(), format!("{key}={value}")]);
    }
    args.push(arg(path).into());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// An M4B audiobook with three named chapters.
fn audiobook(path: &Path) {
    let chapters = path.with_extension("chapters.txt");
    std::fs::write(
        &chapters,
        ";FFMETADATA1\ntitle=The Long Road\nartist=A. Narrator\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=2000\ntitle=Departure\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=2000\nEND=4000\ntitle=The Crossing\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=4000\nEND=6000\ntitle=Arrival\n",
    )
    .unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:duration=6",
        "-i",
        arg(&chapters),
        "-map",
        "0:a",
        "-map_metadata",
        "1",
        "-map_chapters",
        "1",
        "-c:a",
        "aac",
        "-f",
        "mp4",
        arg(path),
    ]);
    std::fs::remove_file(chapters).unwrap();
}

/// A TIFF image file directory entry: tag, type, count, value bytes.
struct Entry(u16, u16, u32, Vec<u8>);

fn ascii(tag: u16, text: &str) -> Entry {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    Entry(tag, 2, bytes.len() as u32, bytes)
}

fn long(tag: u16, value: u32) -> Entry {
    Entry(tag, 4, 1, value.to_le_bytes().to_vec())
}

fn rationals(tag: u16, values: &[(u32, u32)]) -> Entry {
    let bytes = values
        .iter()
        .flat_map(|(num, den)| num.to_le_bytes().into_iter().chain(den.to_le_bytes()))
        .collect();
    Entry(tag, 5, values.len() as u32, bytes)
}

/// Bytes of an IFD placed at `offset` in the TIFF, with its out-of-line
/// values after it.
fn ifd(entries: &[Entry], offset: u32) -> Vec<u8> {
    let table_len = 2 + 12 * entries.len() as u32 + 4;
    let mut table = (entries.len() as u16).to_le_bytes().to_vec();
    let mut data = Vec::new();
    for Entry(tag, kind, count, bytes) in entries {
        table.extend(tag.to_le_bytes());
        table.extend(kind.to_le_bytes());
        table.extend(count.to_le_bytes());
        if bytes.len() <= 4 {
            let mut inline = bytes.clone();
            inline.resize(4, 0);
            table.extend(inline);
        } else {
            table.extend((offset + table_len + data.len() as u32).to_le_bytes());
            data.extend(bytes);
            if data.len() % 2 == 1 {
                data.push(0);
            }
        }
    }
    table.extend(0_u32.to_le_bytes());
    table.extend(data);
    table
}

/// A JPEG with an EXIF segment: camera, date taken and, if given, GPS.
fn photo_with_exif(path: &Path, make: &str, model: &str, taken: &str, gps: Option<(f64, f64)>) {
    jpeg(path, "160x120");
    // IFD0 at 8; its size is fixed by its entries, so the others follow.
    let ifd0_len = |entries: &[Entry]| ifd(entries, 8).len() as u32;
    let mut ifd0 = vec![
        ascii(0x010f, make),
        ascii(0x0110, model),
        ascii(0x0132, taken),
        long(0x8769, 0),
    ];
    if gps.is_some() {
        ifd0.push(long(0x8825, 0));
    }
    let exif_offset = 8 + ifd0_len(&ifd0);
    let exif = ifd(&[ascii(0x9003, taken)], exif_offset);
    let gps_offset = exif_offset + exif.len() as u32;
    ifd0[3] = long(0x8769, exif_offset);
    let gps_ifd = gps.map(|(lat, lon)| {
        ifd0[4] = long(0x8825, gps_offset);
        let dms = |degrees: f64| {
            let degrees = degrees.abs();
            let whole = degrees.trunc() as u32;
            let minutes = (degrees.fract() * 60.0).trunc() as u32;
            let seconds = ((degrees * 3600.0) % 60.0 * 100.0).round() as u32;
            [(whole, 1), (minutes, 1), (seconds, 100)]
        };
        ifd(
            &[
                ascii(0x0001, if lat < 0.0 { "S" } else { "N" }),
                rationals(0x0002, &dms(lat)),
                ascii(0x0003, if lon < 0.0 { "W" } else { "E" }),
                rationals(0x0004, &dms(lon)),
            ],
            gps_offset,
        )
    });
    let mut tiff = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
    tiff.extend(ifd(&ifd0, 8));
    tiff.extend(exif);
    tiff.extend(gps_ifd.unwrap_or_default());
    let mut segment = vec![0xff, 0xe1];
    segment.extend(((tiff.len() + 8) as u16).to_be_bytes());
    segment.extend(b"Exif\0\0");
    segment.extend(tiff);
    let original = std::fs::read(path).unwrap();
    assert_eq!(&original[..2], b"\xff\xd8");
    let mut bytes = original[..2].to_vec();
    bytes.extend(segment);
    bytes.extend(&original[2..]);
    std::fs::write(path, bytes).unwrap();
}

/// File name, camera make and model, when taken, where.
type Photo = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<(f64, f64)>,
);

const PHOTOS: [Photo; 5] = [
    (
        "beach.jpg",
        "Canon",
        "EOS 5D",
        "2021:07:14 10:00:00",
        Some((43.2965, 5.3698)),
    ),
    (
        "city.jpg",
        "NIKON CORPORATION",
        "D750",
        "2020:01:02 18:30:00",
        Some((-33.8688, 151.2093)),
    ),
    (
        "forest.jpg",
        "FUJIFILM",
        "X-T3",
        "2019:10:05 08:15:30",
        Some((45.5017, -73.5673)),
    ),
    ("party.jpg", "Apple", "iPhone 12", "2022:12:31 23:59:59", None),
    (
        "snow.jpg",
        "SONY",
        "ILCE-7M3",
        "2018:02:20 12:00:00",
        Some((46.5197, 6.6323)),
    ),
];

fn media_tree(root: &Path) {
    let cover = root.join("cover-source.jpg");
    jpeg(&cover, "200x200");
    let first = root.join("music/Nova Quartet/First Light (2019)");
    tagged_mp3(
        &first.join("01 dawn.mp3"),
        "Dawn Chorus",
        "Nova Quartet",
        "First Light",
        None,
    );
    tagged_mp3(
        &first.join("02 noon.mp3"),
        "High Noon",
        "Nova Quartet",
        "First Light",
        None,
    );
    std::fs::copy(&cover, first.join("cover.jpg")).unwrap();
    // Filed in the wrong folder: its tags say where it belongs.
    tagged_mp3(
        &first.join("03 stray.mp3"),
        "Stray Light",
        "Ada Reyes",
        "Night Songs",
        None,
    );
    let second = root.join("music/Ada Reyes/Night Songs");
    tagged_mp3(
        &second.join("01 a.mp3"),
        "Moonrise",
        "Ada Reyes",
        "Night Songs",
        Some(&cover),
    );
    tagged_mp3(
        &second.join("02 b.mp3"),
        "Starfall",
        "Ada Reyes",
        "Night Songs",
        Some(&cover),
    );
    std::fs::remove_file(&cover).unwrap();
    std::fs::create_dir_all(root.join("audiobooks")).unwrap();
    audiobook(&root.join("audiobooks/The Long Road.m4b"));
    common::books::books(&root.join("books"));
    std::fs::create_dir_all(root.join("photos")).unwrap();
    for (name, make, model, taken, gps) in PHOTOS {
        photo_with_exif(&root.join("photos").join(name), make, model, taken, gps);
    }
}

fn items(server: &Server, token: &str, query: &str) -> Value {
    let (code, page) = server.request("GET", &format!("/api/v1/items?{query}"), Some(token), None);
    assert_eq!(code, 200, "{page}");
    page
}

fn by_title<'a>(page: &'a Value, title: &str) -> &'a Value {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["title"] == title)
        .unwrap_or_else(|| panic!("no {title:?} in {page}"))
}

/// A WebSocket client just big enough to read the server's text frames.
struct EventStream(std::net::TcpStream);

impl EventStream {
    fn open(server: &Server, token: &str) -> EventStream {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
        write!(
            stream,
            "GET /api/v1/events?token={token} HTTP/1.1\r\nHost: omega\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0_u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        EventStream(stream)
    }

    /// The next text frame as JSON.
    fn next(&mut self) -> Value {
        loop {
            let mut header = [0_u8; 2];
            self.0.read_exact(&mut header).unwrap();
            let opcode = header[0] & 0x0f;
            let len = match header[1] & 0x7f {
                126 => {
                    let mut bytes = [0_u8; 2];
                    self.0.read_exact(&mut bytes).unwrap();
                    u64::from(u16::from_be_bytes(bytes))
                }
                127 => {
                    let mut bytes = [0_u8; 8];
                    self.0.read_exact(&mut bytes).unwrap();
                    u64::from_be_bytes(bytes)
                }
                short => u64::from(short),
            };
            let mut payload = vec![0_u8; len as usize];
            self.0.read_exact(&mut payload).unwrap();
            if opcode == 1 {
                return serde_json::from_slice(&payload).unwrap();
            }
        }
    }
}

#[test]
fn music_audiobooks_books_and_photos_are_catalogued() {
    let media = tempfile::tempdir().unwrap();
    media_tree(media.path());
    let root = media.path();
    let server = Server::start(&[
        "--media",
        arg(&root.join("music")),
        "--media",
        arg(&root.join("audiobooks")),
        "--media",
        arg(&root.join("books")),
        "--media",
        arg(&root.join("photos")),
    ]);
    let admin = server.login("admin", "admin-password");
    let library = |kind: &str| server.library(&admin, kind);
    let ids = [
        library("music"),
        library("audiobooks"),
        library("books"),
        library("photos"),
    ];
    server.wait_for_scans(&admin, &ids, Duration::from_secs(60));

    // The folder browser behind the setup page's library picker.
    let (code, listing) = server.request(
        "GET",
        &format!("/api/v1/folders?path={}/music/../music", root.display()),
        Some(&admin),
        None,
    );
    assert_eq!(code, 200, "{listing}");
    assert_eq!(listing["path"], arg(&root.join("music")), "resolved: {listing}");
    let names: Vec<&str> = listing["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|folder| folder["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada Reyes", "Nova Quartet"]);
    let (code, _) = server.request("GET", "/api/v1/folders?path=relative", Some(&admin), None);
    assert_eq!(code, 400);

    // Music: artists and albums from folders, titles from tags, art from
    // the folder's cover.jpg or the tracks' embedded covers.
    let albums = items(&server, &admin, "type=album");
    assert_eq!(albums["total"], 2, "{albums}");
    let first_light = by_title(&albums, "First Light");
    assert_eq!(first_light["year"], 2019);
    let night_songs = by_title(&albums, "Night Songs");
    for album in [first_light, night_songs] {
        let image = album["image"].as_str().unwrap_or_else(|| panic!("no art: {album}"));
        let (code, _, _) = common::http_raw(server.http_port, "GET", image, "", b"");
        assert_eq!(code, 200, "a signed image URL needs no headers");
        let (code, head, bytes) = server.get_bytes(image, &admin, "");
        assert_eq!(code, 200, "{head}");
        assert!(head.to_lowercase().contains("content-type: image/jpeg"), "{head}");
        assert!(bytes.starts_with(b"\xff\xd8"), "a JPEG");
        let etag = head
            .lines()
            .find_map(|line| {
                line.to_lowercase()
                    .starts_with("etag:")
                    .then(|| line[5..].trim().to_owned())
            })
            .unwrap();
        let (code, _, _) = server.get_bytes(image, &admin, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!(code, 304);
    }
    let id = night_songs["id"].as_u64().unwrap();
    let (code, tracks) = server.request("GET", &format!("/api/v1/items/{id}/children"), Some(&admin), None);
    assert_eq!(code, 200, "{tracks}");
    let titles: Vec<&str> = tracks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|track| track["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["Moonrise", "Starfall", "Stray Light"],
        "tag titles, in track order; a misfiled track joins its album by its tags"
    );
    assert_eq!(tracks["items"][0]["metadata"]["tag_artist"], "Ada Reyes");
    assert!(tracks["items"][0]["image"].is_string(), "embedded cover: {tracks}");
    let artists = items(&server, &admin, "type=artist");
    assert_eq!(artists["total"], 2, "{artists}");

    // The audiobook and its chapters.
    let books = items(&server, &admin, "type=audiobook");
    let book = by_title(&books, "The Long Road");
    let chapters: Vec<(&str, u64)> = book["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chapter| {
            (
                chapter["title"].as_str().unwrap(),
                chapter["start_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        chapters,
        [("Departure", 0), ("The Crossing", 2000), ("Arrival", 4000)],
        "{book}"
    );
    let duration: u64 = book["metadata"]["duration_ms"].as_str().unwrap().parse().unwrap();
    assert!((5900..=6200).contains(&duration), "{book}");

    // EPUB, PDF and CBZ metadata.
    let shelf = items(&server, &admin, "type=book");
    assert_eq!(shelf["total"], 3, "{shelf}");
    let epub = by_title(&shelf, "Le Petit Prince");
    assert_eq!(epub["metadata"]["author"], "Antoine de Saint-Exupery");
    assert_eq!(epub["metadata"]["language"], "fr");
    assert_eq!(epub["year"], 1943);
    // Signed URLs work without headers (a browser's `<a download>`), for
    // that item only.
    let download = epub["stream_url"].as_str().unwrap();
    let (code, _, bytes) = common::http_raw(server.http_port, "GET", download, "", b"");
    assert_eq!(code, 200);
    assert!(bytes.starts_with(b"PK"), "the EPUB itself");
    let elsewhere = download.replace(&format!("/items/{}/", epub["id"]), "/items/1/");
    let (code, _, _) = common::http_raw(server.http_port, "GET", &elsewhere, "", b"");
    assert!(code == 401 || code == 404, "{code}");
    let pdf = by_title(&shelf, "A Field Guide to Clouds");
    assert_eq!(pdf["metadata"]["author"], "Jo Weather");
    assert_eq!(pdf["metadata"]["pages"], "1");
    assert_eq!(pdf["year"], 2019);
    let comic = by_title(&shelf, "Chapter One");
    assert_eq!(comic["metadata"]["series"], "Saga");
    assert_eq!(comic["metadata"]["pages"], "2");
    assert_eq!(comic["metadata"]["author"], "B. K. Vaughan");

    // Photos: EXIF date, camera and position; a thumbnail each.
    let photos = items(&server, &admin, "type=photo");
    assert_eq!(photos["total"], 5, "{photos}");
    let beach = by_title(&photos, "beach");
    assert_eq!(beach["metadata"]["taken_at"], "2021-07-14T10:00:00");
    assert_eq!(beach["metadata"]["camera_make"], "Canon");
    assert_eq!(beach["metadata"]["camera_model"], "EOS 5D");
    assert_eq!(beach["year"], 2021);
    let latitude: f64 = beach["metadata"]["latitude"].as_str().unwrap().parse().unwrap();
    let longitude: f64 = beach["metadata"]["longitude"].as_str().unwrap().parse().unwrap();
    assert!(
        (latitude - 43.2965).abs() < 0.001 && (longitude - 5.3698).abs() < 0.001,
        "{beach}"
    );
    let forest = by_title(&photos, "forest");
    let longitude: f64 = forest["metadata"]["longitude"].as_str().unwrap().parse().unwrap();
    assert!((longitude + 73.5673).abs() < 0.001, "west is negative: {forest}");
    let party = by_title(&photos, "party");
    assert!(party["metadata"].get("latitude").is_none(), "no GPS: {party}");
    assert_eq!(party["metadata"]["camera_model"], "iPhone 12");
    for photo in photos["items"].as_array().unwrap() {
        assert!(photo["image"].is_string(), "{photo}");
    }

    // Every media file is indexed in place by the store.
    let output = common::omega(&server.data_dir(), &["store", "stats", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stats: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(stats["in_place_bytes"].as_u64().unwrap() > 0, "{stats}");
    let blob = beach["media"][0]["blob"].as_str().unwrap();
    let output = common::omega(&server.data_dir(), &["store", "cat", blob]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.stdout, std::fs::read(root.join("photos/beach.jpg")).unwrap());
    let output = common::omega(&server.data_dir(), &["store", "cat", blob, "--range", "2-5"]);
    assert_eq!(
        output.stdout,
        std::fs::read(root.join("photos/beach.jpg")).unwrap()[2..6]
    );
    // Store settings on the command line of a command the running node
    // carries out are refused, not silently ignored (they were).
    for args in [
        &[
            "store",
            "tier",
            "run",
            "--hot-bytes-max",
            "1MiB",
            "--cold-url",
            "file:///tmp/cold",
        ][..],
        &["cluster", "status", "--cold-url", "file:///tmp/cold"][..],
    ] {
        let output = common::omega(&server.data_dir(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.lines().count() == 1 && stderr.contains("would be ignored"),
            "{args:?}: {stderr}"
        );
    }

    // Events: a rescan's progress and end arrive over the WebSocket.
    let photos_id = library("photos");
    let mut events = EventStream::open(&server, &admin);
    let (code, _) = server.request(
        "POST",
        &format!("/api/v1/libraries/{photos_id}/scan"),
        Some(&admin),
        None,
    );
    assert_eq!(code, 202);
    let mut phases = Vec::new();
    loop {
        let event = events.next();
        if event["library"] != photos_id {
            continue;
        }
        if event["type"] == "scan_finished" {
            assert_eq!(event["error"], Value::Null, "{event}");
            break;
        }
        assert_eq!(event["type"], "scan_progress", "{event}");
        phases.push(event["phase"].as_str().unwrap().to_owned());
    }
    assert!(phases.contains(&"walking".to_owned()), "{phases:?}");
    assert!(phases.contains(&"writing".to_owned()), "{phases:?}");

    // The watcher: a new photo appears without a manual scan; a renamed one
    // keeps its item (and the user's played mark).
    let snow = by_title(&photos, "snow")["id"].as_u64().unwrap();
    let (code, _) = server.request("POST", &format!("/api/v1/items/{snow}/played"), Some(&admin), None);
    assert_eq!(code, 200);
    photo_with_exif(
        &root.join("photos/harbour.jpg"),
        "Canon",
        "EOS R5",
        "2023:05:06 07:08:09",
        None,
    );
    std::fs::rename(root.join("photos/snow.jpg"), root.join("photos/alps.jpg")).unwrap();
    let started = Instant::now();
    loop {
        let photos = items(&server, &admin, "type=photo");
        let titles: Vec<&str> = photos["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|photo| photo["title"].as_str().unwrap())
            .collect();
        if titles.contains(&"harbour") && titles.contains(&"alps") && !titles.contains(&"snow") {
            let alps = by_title(&photos, "alps");
            assert_eq!(alps["id"], snow, "a moved file keeps its item: {photos}");
            assert_eq!(alps["user_data"]["played"], true, "{alps}");
            assert_eq!(photos["total"], 6);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the watcher did not rescan: {titles:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
