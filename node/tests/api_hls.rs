//! HLS through a real node: ffmpeg as a client decodes every rendition for
//! the full duration, the `m3u8` Python parser accepts the playlists, every
//! segment starts with a keyframe and lasts within the target duration; a
//! cold stream asked for a late segment first serves it quickly and the
//! segments then join without a gap; signed stream tokens authorise
//! players that send no headers; subtitles come as WebVTT; segments are
//! kept in the store; the session bound answers 503 with Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, ffmpeg};
use serde_json::Value;

const SECONDS: u32 = 20;

/// A 20 s 854×480 film with an embedded English subtitle and a French
/// sidecar one.
fn film(root: &Path) {
    let folder = root.join("films/Test Pattern (2024)");
    std::fs::create_dir_all(&folder).unwrap();
    let srt = root.join("embedded.srt");
    std::fs::write(&srt, "1\n00:00:01,000 --> 00:00:03,000\nHello from inside\n").unwrap();
    let path = folder.join("Test Pattern (2024).mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=854x480:rate=25:duration={SECONDS}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:duration={SECONDS}"),
        "-i",
        srt.to_str().unwrap(),
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
        "-g",
        "250",
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        "-metadata:s:s:0",
        "language=eng",
        path.to_str().unwrap(),
    ]);
    std::fs::write(
        folder.join("Test Pattern (2024).fr.srt"),
        "1\n00:00:02,000 --> 00:00:04,000\nBonjour\n",
    )
    .unwrap();
}

/// A node with `config` serving [`film`] from `media`, once scanned: the
/// node, an administrator's token and the film as the API lists it.
fn serve_the_film(media: &Path, config: &str) -> (Server, String, serde_json::Value) {
    film(media);
    let config_file = media.join("omega.toml");
    std::fs::write(&config_file, config).unwrap();
    let server = Server::start(&[
        "--config",
        config_file.to_str().unwrap(),
        "--media",
        media.join("films").to_str().unwrap(),
    ]);
    let admin = server.login("admin", "admin-password");
    let started = Instant::now();
    let film = loop {
        let (_, page) = server.request("GET", "/api/v1/items?type=movie", Some(&admin), None);
        if page["total"] == 1 {
            break page["items"][0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    (server, admin, film)
}

fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let headers = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    common::http_raw(server.http_port, "GET", path, &headers, b"")
}

/// The URIs of a playlist's lines that are not tags.
/// [`get`] without headers, asking again while every slot is busy (503).
fn get_when_free(server: &Server, path: &str) -> (u16, String, Vec<u8>) {
    let started = Instant::now();
    loop {
        let answer = get(server, path, None);
        if answer.0 != 503 || started.elapsed() > Duration::from_secs(60) {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks a playlist with the `m3u8` package; its segment count (variant)
/// or playlist count (master).
fn python_m3u8(text: &str) -> (usize, usize, Option<f64>) {
    let script = "import json,sys,m3u8\np=m3u8.loads(sys.stdin.read())\nprint(json.dumps([len(p.segments),len(p.playlists),p.target_duration]))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "m3u8: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        parsed[0].as_u64().unwrap() as usize,
        parsed[1].as_u64().unwrap() as usize,
        parsed[2].as_f64(),
    )
}

/// Key flag and pts of the first video frame, and the duration, of init +
/// one segment.
fn segment_facts(dir: &Path, init: &[u8], segment: &[u8]) -> (bool, f64, f64) {
    let path = dir.join("probe.mp4");
    std::fs::write(&path, [init, segment].concat()).unwrap();
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame,pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let frames: Vec<(bool, f64)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let key = fields.next()? == "1";
            Some((key, fields.next()?.parse().ok()?))
        })
        .collect();
    let (first_key, first_pts) = frames[0];
    let last_pts = frames.last().unwrap().1;
    (first_key, first_pts, last_pts - first_pts + 0.04)
}

fn metric(server: &Server, name_and_labels: &str) -> f64 {
    let (_, _, body) = get(server, "/metrics", None);
    String::from_utf8_lossy(&body)
        .lines()
        .find(|line| line.starts_with(name_and_labels))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn hls_plays_seeks_and_is_authorised_by_signed_urls() {
    let media = tempfile::tempdir().unwrap();
    let (server, admin, film) = serve_the_film(
        media.path(),
        "[transcode]\nmax_sessions = 1\nidle_secs = 60\nread_rate = 4.0\nsegment_cache_max = \"512MiB\"\n",
    );
    let id = film["id"].as_u64().unwrap();
    let base = format!("/api/v1/items/{id}/hls");

    // The playback decision: an H.264 Matroska file is remuxed into HLS
    // for a browser; a client that cannot play H.264 gets transcodes only.
    let (code, playback) = server.request("POST", &format!("/api/v1/items/{id}/playback"), Some(&admin), None);
    assert_eq!(code, 200, "{playback}");
    assert_eq!(playback["decision"]["method"], "remux", "{playback}");
    assert!(playback["hls_url"].as_str().unwrap().contains("?t=omega_st_"));
    let vp9_only = serde_json::json!({"client": {"video_codecs": ["vp9"], "max_height": 360}});
    let (code, playback) = server.request(
        "POST",
        &format!("/api/v1/items/{id}/playback"),
        Some(&admin),
        Some(&vp9_only),
    );
    assert_eq!(code, 200, "{playback}");
    assert_eq!(playback["decision"]["method"], "transcode", "{playback}");
    let narrow_url = playback["hls_url"].as_str().unwrap().to_owned();
    assert!(narrow_url.contains("&copy=false&max_height=360"), "{narrow_url}");
    let (code, _, narrow) = get(&server, &narrow_url, None);
    assert_eq!(code, 200);
    assert_eq!(uris(&String::from_utf8(narrow).unwrap()).len(), 1, "only 360p");

    // The master playlist, with the bearer token.
    let (code, head, master) = get(&server, &format!("{base}/master.m3u8"), Some(&admin));
    assert_eq!(code, 200, "{head}");
    assert!(head.to_lowercase().contains("application/vnd.apple.mpegurl"), "{head}");
    let master = String::from_utf8(master).unwrap();
    let (_, playlists, _) = python_m3u8(&master);
    assert_eq!(playlists, 3, "the copy, 480p and 360p: {master}");
    assert!(
        master.contains("TYPE=SUBTITLES") && master.contains("LANGUAGE=\"fr\""),
        "{master}"
    );
    let variants = uris(&master);
    assert_eq!(variants.len(), 3);
    assert!(variants[0].starts_with("original/"), "the copy first: {master}");
    assert!(
        master.contains("RESOLUTION=854x480,CODECS=\"avc1.42E01E,mp4a.40.2\""),
        "{master}"
    );
    let token = variants[0].split("?t=").nth(1).unwrap().to_owned();

    // Players without headers: the signed URL alone is enough; nothing
    // without it; a token for another item is refused.
    let (code, _, variant) = get(&server, &format!("{base}/480p/index.m3u8?t={token}"), None);
    assert_eq!(code, 200);
    let variant = String::from_utf8(variant).unwrap();
    let (segments, _, target) = python_m3u8(&variant);
    // Short segments first (0.5 s, doubling), then 4 s ones; the last
    // half second is a segment of its own.
    let starts = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5];
    assert_eq!(segments, starts.len(), "{variant}");
    assert_eq!(target, Some(4.0));
    let (code, _, _) = get(&server, &format!("{base}/480p/index.m3u8"), None);
    assert_eq!(code, 401);
    let (code, _, _) = get(
        &server,
        &format!("/api/v1/items/{}/hls/480p/index.m3u8?t={token}", id + 1000),
        None,
    );
    assert!(code == 401 || code == 404, "{code}");

    // Seeking: a cold stream asked for its last segment first.
    let segment_urls = uris(&variant);
    let last = segment_urls.len() - 1;
    let asked = Instant::now();
    let (code, head, late) = get(&server, &format!("{base}/480p/{}", segment_urls[last]), None);
    assert_eq!(code, 200, "{head}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "a cold late segment took {:?}",
        asked.elapsed()
    );

    // Then every segment from the start: keyframe first, within the target
    // duration, and one continuous stream.
    let (code, _, init) = get(&server, &format!("{base}/480p/init.mp4?t={token}"), None);
    assert_eq!(code, 200);
    let (code, _, first) = get(&server, &format!("{base}/480p/{}", segment_urls[0]), None);
    assert_eq!(code, 200);
    // One encode at a time (max_sessions = 1): while this player's 480p
    // session runs on, another player's rendition waits for the slot (and
    // gets it once the 480p encode is done), or is refused after the wait;
    // this player's own switch to 360p takes its slot over at once.
    let other_player = narrow_url.split("?t=").nth(1).unwrap().split('&').next().unwrap();
    let asked = Instant::now();
    let (code, head, _) = get(&server, &format!("{base}/360p/0.m4s?t={other_player}"), None);
    match code {
        200 => {}
        503 => {
            assert!(head.to_lowercase().contains("retry-after"), "{head}");
            assert!(
                asked.elapsed() >= Duration::from_secs(5),
                "refused without waiting: {head}"
            );
        }
        _ => panic!("{head}"),
    }
    let asked = Instant::now();
    let (code, head, _) = get(&server, &format!("{base}/360p/1.m4s?t={token}"), None);
    assert_eq!(code, 200, "{head}");
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    let mut whole = init.clone();
    for (index, url) in segment_urls.iter().enumerate() {
        let bytes = if index == last {
            late.clone()
        } else if index == 0 {
            first.clone()
        } else {
            let (code, head, bytes) = get(&server, &format!("{base}/480p/{url}"), None);
            assert_eq!(code, 200, "segment {index}: {head}");
            bytes
        };
        let (key, pts, duration) = segment_facts(media.path(), &init, &bytes);
        assert!(key, "segment {index} starts with a keyframe");
        assert!((pts - starts[index]).abs() < 0.1, "segment {index} starts at {pts}");
        assert!(duration <= 4.0 + 0.05, "segment {index} lasts {duration}");
        whole.extend(bytes);
    }
    let joined = media.path().join("joined.mp4");
    std::fs::write(&joined, &whole).unwrap();
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&joined)
        .output()
        .unwrap();
    let frames: u32 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    assert_eq!(frames, SECONDS * 25, "no frame lost or doubled across sessions");
    // Repeat requests come from the store.
    let (code, _, again) = get(&server, &format!("{base}/480p/{}", segment_urls[1]), None);
    assert_eq!(code, 200);
    assert!(metric(&server, "omega_hls_segments_total{origin=\"store\"}") >= 1.0);
    assert!(!again.is_empty());
    // What is kept is counted against its budget.
    let kept = metric(&server, "omega_hls_kept_bytes");
    assert!(kept > 0.0 && kept <= 512.0 * 1024.0 * 1024.0, "{kept}");

    // Subtitles as WebVTT, embedded and sidecar.
    let (code, _, vtt) = get(&server, &format!("{base}/subtitles/e2.vtt?t={token}"), None);
    assert_eq!(code, 200);
    let vtt = String::from_utf8(vtt).unwrap();
    assert!(vtt.starts_with("WEBVTT") && vtt.contains("Hello from inside"), "{vtt}");
    let (code, _, vtt) = get(&server, &format!("{base}/subtitles/x0.vtt?t={token}"), None);
    assert_eq!(code, 200);
    assert!(String::from_utf8(vtt).unwrap().contains("Bonjour"));

    // ffmpeg as a client decodes every rendition for the full duration.
    let (code, _, _) = get(&server, &format!("{base}/nope/index.m3u8?t={token}"), None);
    assert_eq!(code, 404);
    for variant in &variants {
        let url = format!("http://127.0.0.1:{}{base}/{variant}", server.http_port);
        let started = Instant::now();
        loop {
            let output = Command::new("ffmpeg")
                .args(["-hide_banner", "-v", "error", "-i", &url, "-f", "null", "-"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() && stderr.trim().is_empty() {
                break;
            }
            // The single slot frees when the previous session's ffmpeg ends.
            assert!(
                stderr.contains("503") && started.elapsed() < Duration::from_secs(60),
                "{variant}: {stderr}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // The copy: segments at the source's keyframes (every 10 s), every
    // source frame once, the same bytes as the source's video.
    let (code, _, copy) = get(&server, &format!("{base}/original/index.m3u8?t={token}"), None);
    assert_eq!(code, 200);
    let copy = String::from_utf8(copy).unwrap();
    let (segments, _, target) = python_m3u8(&copy);
    assert_eq!((segments, target), (2, Some(10.0)), "{copy}");
    let (code, _, init) = get_when_free(&server, &format!("{base}/original/init.mp4?t={token}"));
    assert_eq!(code, 200);
    let mut whole = init.clone();
    for (index, url) in uris(&copy).iter().enumerate() {
        let (code, head, bytes) = get_when_free(&server, &format!("{base}/original/{url}"));
        assert_eq!(code, 200, "{head}");
        let (key, pts, _) = segment_facts(media.path(), &init, &bytes);
        assert!(
            key && (pts - 10.0 * index as f64).abs() < 0.05,
            "copy segment {index} at {pts}"
        );
        whole.extend(bytes);
    }
    std::fs::write(&joined, &whole).unwrap();
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&joined)
        .output()
        .unwrap();
    let frames: u32 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    assert_eq!(frames, SECONDS * 25, "the copy has every frame");
}

/// Goal: a node whose ffmpeg is missing says so in one line at start and
/// exits non-zero, rather than failing on the first playback.
#[test]
fn serve_refuses_to_start_without_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("omega.toml");
    std::fs::write(&config, "[transcode]\nffmpeg = \"/nonexistent/ffmpeg\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_omega"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .env_remove("OMEGA_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve kept running without ffmpeg"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("omega: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("ffmpeg") && errors[0].contains("/nonexistent/ffmpeg"),
        "{stderr}"
    );
}

/// The ffmpeg and ffprobe processes whose parent is `pid`.
fn media_children(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            // `PID (COMM) STATE PPID …`; COMM may hold spaces, so split after
            // its closing parenthesis.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let comm = head.split_once('(').map_or("", |(_, comm)| comm);
            let parent = rest.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok());
            parent == Some(pid) && (comm == "ffmpeg" || comm == "ffprobe")
        })
        .count()
}

/// Goal (hardening): every ffmpeg and ffprobe process a node runs takes a
/// place in one budget (`[transcode] max_processes`), so 200 concurrent
/// subtitle and playlist requests never run more than it; the rest wait or
/// are told 503 with Retry-After. Failed before the fix: 100 concurrent
/// subtitle requests ran 67 ffmpeg and 89 ffprobe processes at once.
#[test]
fn a_burst_of_subtitle_and_playlist_requests_stays_within_the_process_budget() {
    let media = tempfile::tempdir().unwrap();
    let (server, admin, film) = serve_the_film(media.path(), "[transcode]\nmax_sessions = 1\nmax_processes = 3\n");
    let id = film["id"].as_u64().unwrap();
    let (code, playback) = server.request("POST", &format!("/api/v1/items/{id}/playback"), Some(&admin), None);
    assert_eq!(code, 200, "{playback}");
    let hls_url = playback["hls_url"].as_str().unwrap().to_owned();
    let token = hls_url
        .split_once("?t=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let base = format!("/api/v1/items/{id}/hls");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (peak, answers) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(media_children(server.pid()));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        let requests: Vec<_> = (0..200)
            .map(|n| {
                let path = match n % 4 {
                    0 => format!("{base}/subtitles/e2.vtt?t={token}"),
                    1 => format!("{base}/subtitles/x0.vtt?t={token}"),
                    2 => format!("{base}/master.m3u8?t={token}"),
                    _ => format!("{base}/480p/index.m3u8?t={token}"),
                };
                let server = &server;
                scope.spawn(move || get(server, &path, None))
            })
            .collect();
        let answers: Vec<(u16, String, Vec<u8>)> =
            requests.into_iter().map(|request| request.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (sampler.join().unwrap(), answers)
    });
    assert!(peak <= 3, "{peak} media processes ran at once against a budget of 3");
    let ok = answers.iter().filter(|(code, _, _)| *code == 200).count();
    for (code, head, _) in &answers {
        assert!(
            *code == 200 || (*code == 503 && head.to_ascii_lowercase().contains("retry-after")),
            "{code} {head}"
        );
    }
    assert!(ok >= 100, "only {ok} of 200 answered");
    let (code, _) = server.request("GET", "/healthz", None, None);
    assert_eq!(code, 200);
}

/// Goal (streaming at the machine's limit): ffmpeg reading every variant
/// (`-map 0`), ffprobe and mpv (when installed) open and play a film's HLS
/// master on a node with one transcoding slot, as a 2-core node has. Failed
/// before: libavformat opens the first segment of every variant, and the
/// second encoded one answered 503 at once ("Error when loading first
/// segment").
#[test]
fn players_open_every_variant_of_a_master_with_one_slot() {
    let media = tempfile::tempdir().unwrap();
    let (server, admin, film) = serve_the_film(media.path(), "[transcode]\nmax_sessions = 1\n");
    let id = film["id"].as_u64().unwrap();
    // The scan analysed the film for streaming (probe and keyframes, on
    // disk) before it said done: a player's first master waits for neither.
    let library = server.library(&admin, "movies");
    server.wait_for_scans(&admin, &[library], Duration::from_secs(30));
    let analysed: Vec<String> = std::fs::read_dir(server.data_dir().join("analysis"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        analysed.iter().any(|name| name.ends_with(".probe.json"))
            && analysed.iter().any(|name| name.ends_with(".keyframes")),
        "{analysed:?}"
    );
    let (code, playback) = server.request("POST", &format!("/api/v1/items/{id}/playback"), Some(&admin), None);
    assert_eq!(code, 200, "{playback}");
    let url = format!(
        "http://127.0.0.1:{}{}",
        server.http_port,
        playback["hls_url"].as_str().unwrap()
    );
    let (code, _, master) = get(&server, playback["hls_url"].as_str().unwrap(), None);
    assert_eq!(code, 200);
    assert_eq!(
        uris(&String::from_utf8(master).unwrap()).len(),
        3,
        "the copy and two encodes"
    );
    let run = |program: &str, args: &[&str]| {
        let started = Instant::now();
        let output = std::process::Command::new(program).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{program} {args:?}: {stderr}");
        eprintln!("{program} took {:?}", started.elapsed());
        (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
    };
    let (streams, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            &url,
        ],
    );
    assert!(
        streams.lines().filter(|line| *line == "video").count() >= 3,
        "{streams}"
    );
    let (_, errors) = run("ffmpeg", &["-v", "error", "-i", &url, "-map", "0", "-f", "null", "-"]);
    assert!(!errors.contains("Error when loading"), "{errors}");
    if std::process::Command::new("mpv").arg("--version").output().is_ok() {
        run(
            "mpv",
            &[
                "--no-config",
                "--vo=null",
                "--ao=null",
                "--really-quiet",
                "--length=6",
                &url,
            ],
        );
    } else {
        eprintln!("mpv is not installed: skipped");
    }
    let (code, _, metrics) = get(&server, "/metrics", Some(&admin));
    assert_eq!(code, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("omega_http_requests_total") && line.contains("/hls") && line.contains("status=\"5")
        })
        .collect();
    assert!(refused.is_empty(), "a player was refused: {refused:?}");
}
