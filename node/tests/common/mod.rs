//! A real `omega serve` process and a small HTTP client for the API tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod books;
pub mod cluster;

/// A 20 s H.264/AAC Matroska film (`size`, 25 fps, a keyframe every 2 s)
/// at `path`, from ffmpeg's test sources.
pub fn h264_film(path: &std::path::Path, size: &str) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=25:duration=20"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:duration=20",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "50",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ]);
}

/// "Test Album" by "Test Artist" in `folder`: two 15 s MP3 tracks at
/// 192 kb/s, "First Tone" and "Second Tone", with title, artist, album,
/// genre and track tags.
pub fn tagged_album(folder: &std::path::Path) {
    std::fs::create_dir_all(folder).unwrap();
    for (number, title, frequency) in [(1, "First Tone", 440), (2, "Second Tone", 550)] {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={frequency}:duration=15"),
            "-c:a",
            "libmp3lame",
            "-b:a",
            "192k",
            "-metadata",
            &format!("title={title}"),
            "-metadata",
            "artist=Test Artist",
            "-metadata",
            "album=Test Album",
            "-metadata",
            "genre=Electronic",
            "-metadata",
            &format!("track={number}"),
            folder.join(format!("0{number} - {title}.mp3")).to_str().unwrap(),
        ]);
    }
}

/// Runs ffmpeg quietly; panics if it fails.
pub fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// A one-second 64×48 H.264 clip at `path`: the smallest real video.
pub fn tiny_clip(path: &std::path::Path) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=5",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        path.to_str().unwrap(),
    ]);
}

/// Runs `omega --data-dir DIR ARGS…` to its end.
pub fn omega(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_omega"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("OMEGA_CONFIG")
        .output()
        .unwrap()
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with literal extra header
/// lines; the status, the response head and the body (chunked bodies
/// decoded).
pub fn http_raw(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: omega\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|window| window == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let mut payload = bytes[split + 4..].to_vec();
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    (code, head, payload)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
    out
}

/// A running node with its data directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    child: Child,
    /// What it was started with, for [`Server::restart`].
    extra_args: Vec<String>,
    admin: bool,
    cluster_port: u16,
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts a node of one with an administrator `admin` / `admin-password`.
    pub fn start(extra_args: &[&str]) -> Server {
        Server::start_with(extra_args, true)
    }

    /// Starts a node of one; `admin`: with the administrator from the
    /// environment, else with no user at all (first-run setup).
    pub fn start_with(extra_args: &[&str], admin: bool) -> Server {
        let server = Server::spawn(extra_args, admin);
        server.wait_started();
        server
    }

    /// Starts a node of one as [`Server::start_with`] does, without
    /// waiting for it.
    pub fn spawn(extra_args: &[&str], admin: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_tcp_port();
        let cluster_port = free_udp_port();
        let extra_args: Vec<String> = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
        let child = Server::launch(dir.path(), http_port, cluster_port, &extra_args, admin);
        Server {
            dir,
            http_port,
            child,
            extra_args,
            admin,
            cluster_port,
        }
    }

    /// Stops the node (SIGKILL) and starts it again on the same data and
    /// ports; waits until it has started.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Server::launch(
            self.dir.path(),
            self.http_port,
            self.cluster_port,
            &self.extra_args,
            self.admin,
        );
        self.wait_started();
    }

    fn launch(dir: &std::path::Path, http_port: u16, cluster_port: u16, extra_args: &[String], admin: bool) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_omega"));
        if admin {
            command
                .env("OMEGA_ADMIN_USER", "admin")
                .env("OMEGA_ADMIN_PASSWORD", "admin-password");
        } else {
            command
                .env_remove("OMEGA_ADMIN_USER")
                .env_remove("OMEGA_ADMIN_PASSWORD");
        }
        command
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["serve", "--listen", &format!("127.0.0.1:{http_port}")])
            .args(["--cluster-listen", &format!("127.0.0.1:{cluster_port}")])
            .args(extra_args)
            .env_remove("OMEGA_CONFIG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits until the node is ready and its control socket is open.
    pub fn wait_started(&self) {
        let server = self;
        let started = Instant::now();
        while server.request("GET", "/readyz", None, None).0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not ready: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The administrator is created just before the control socket opens.
        while !server.data_dir().join("omega.sock").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no socket: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// One HTTP/1.1 request; the status and the body as JSON (or a string).
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let mut headers = String::new();
        if let Some(token) = token {
            headers.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        self.raw(method, path, &headers, body.map(|body| body.to_string()).as_deref())
    }

    /// A request with literal extra header lines and a literal body.
    pub fn raw(&self, method: &str, path: &str, headers: &str, body: Option<&str>) -> (u16, Value) {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return (0, Value::Null);
        };
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.unwrap_or("");
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: omega\r\nConnection: close\r\n{headers}{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let payload = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        let value = serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_owned()));
        (code, value)
    }

    /// A GET with extra header lines; status, head and body bytes.
    pub fn get_bytes(&self, path: &str, token: &str, headers: &str) -> (u16, String, Vec<u8>) {
        let headers = format!("Authorization: Bearer {token}\r\n{headers}");
        http_raw(self.http_port, "GET", path, &headers, b"")
    }

    /// The raw response head, for header checks.
    pub fn head(&self, method: &str, path: &str, body: Option<&Value>) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: omega\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    /// The id of the library of `kind` (`movies`, `music`, …).
    pub fn library(&self, token: &str, kind: &str) -> u64 {
        let (code, libraries) = self.request("GET", "/api/v1/libraries", Some(token), None);
        assert_eq!(code, 200, "{libraries}");
        libraries
            .as_array()
            .unwrap()
            .iter()
            .find(|library| library["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} library in {libraries}"))["id"]
            .as_u64()
            .unwrap()
    }

    /// Waits until each of `libraries` has finished a scan, each `within`.
    pub fn wait_for_scans(&self, token: &str, libraries: &[u64], within: Duration) {
        for id in libraries {
            let started = Instant::now();
            loop {
                let (_, status) = self.request("GET", &format!("/api/v1/libraries/{id}/scan"), Some(token), None);
                if status["state"] == "done" {
                    break;
                }
                assert!(status["state"] != "failed", "{status}");
                assert!(started.elapsed() < within, "{status}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The id of the first item of `kind` (`movie`, `track`, …), once a
    /// scan has put one in the catalog (within 20 s).
    pub fn first_item(&self, token: &str, kind: &str) -> u64 {
        let started = Instant::now();
        loop {
            let (_, page) = self.request("GET", &format!("/api/v1/items?type={kind}"), Some(token), None);
            if let Some(id) = page["items"][0]["id"].as_u64() {
                return id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {kind} scanned: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Signs in; the access token.
    pub fn login(&self, username: &str, password: &str) -> String {
        let (code, body) = self.request(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&serde_json::json!({ "username": username, "password": password })),
        );
        assert_eq!(code, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
