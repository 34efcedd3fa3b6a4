//! A cluster node process for the multi-node tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ffmpeg, omega};

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    pub dir: PathBuf,
    pub port: u16,
    pub http_port: u16,
    pub child: Option<Child>,
}

impl Node {
    pub fn new(root: &Path, name: &str) -> Node {
        Node {
            dir: root.join(name),
            port: free_port(),
            http_port: std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            child: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts `omega serve`, joining through `via` with `token` when given.
    pub fn start(&mut self, config: &Path, join: Option<(&Node, &str)>) {
        self.start_with(config, join, &[], false);
    }

    /// Starts `omega serve` with `extra` arguments; `admin`: with the
    /// administrator `admin` / `admin-password` from the environment. Waits
    /// for its control socket. Its HTTP port was free when chosen, but
    /// another test may take it before the node binds it (tests run in
    /// parallel, and a restarted node's port was free for a while): then it
    /// starts again on another.
    pub fn start_with(&mut self, config: &Path, join: Option<(&Node, &str)>, extra: &[&str], admin: bool) {
        for attempt in 0..3 {
            self.spawn(config, join, extra, admin);
            let mut child = self.child.take().unwrap();
            let mut exited = false;
            wait_until(
                Duration::from_secs(20),
                || {
                    exited = child.try_wait().unwrap().is_some();
                    exited || self.try_status().is_some()
                },
                || self.log(),
            );
            if !exited {
                self.child = Some(child);
                return;
            }
            let log = self.log();
            assert!(
                attempt < 2 && log.contains("(HTTP): Address already in use"),
                "omega serve exited: {log}"
            );
            self.http_port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
        }
    }

    fn spawn(&mut self, config: &Path, join: Option<(&Node, &str)>, extra: &[&str], admin: bool) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::File::create(self.dir.join("serve.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_omega"));
        command
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["serve", "--cluster-listen", &self.addr()])
            .args(["--listen", &format!("127.0.0.1:{}", self.http_port)])
            .args(extra)
            .env("OMEGA_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        if admin {
            command
                .env("OMEGA_ADMIN_USER", "admin")
                .env("OMEGA_ADMIN_PASSWORD", "admin-password");
        }
        if let Some((via, token)) = join {
            // As the docs advise: from a file, not the command line.
            let token_file = self.dir.with_extension("join-token");
            std::fs::write(&token_file, format!("{token}\n")).unwrap();
            command.args(["--join", &via.addr(), "--token-file"]).arg(&token_file);
        }
        self.child = Some(command.spawn().unwrap());
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    /// Stops the node as a supervisor would (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) with a pid this test spawned and still owns.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            child.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn try_status(&self) -> Option<Value> {
        let output = omega(&self.dir, &["cluster", "status", "--json"]);
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).unwrap())
    }

    pub fn status(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|| panic!("no status from {}: {}", self.dir.display(), self.log()))
    }

    /// `GET path` on the node's HTTP port: status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: omega\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (code, body)
    }

    pub fn token(&self) -> String {
        let output = omega(&self.dir, &["cluster", "token", "--ttl", "10m"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    pub fn add_user(&self, name: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_omega"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["user", "add", name, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "gave up after {within:?}: {}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn http(node: &Node, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Vec<u8>) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut headers = String::from("Content-Type: application/json\r\n");
    if let Some(token) = token {
        headers.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let (code, _, payload) = super::http_raw(node.http_port, method, path, &headers, body.as_bytes());
    (code, payload)
}

pub fn json_of(answer: (u16, Vec<u8>)) -> (u16, Value) {
    (answer.0, serde_json::from_slice(&answer.1).unwrap_or(Value::Null))
}

pub fn node_id(node: &Node) -> u64 {
    node.status()["node_id"].as_u64().unwrap()
}

pub fn login(node: &Node) -> String {
    let (code, login) = json_of(http(
        node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": "admin", "password": "admin-password"})),
    ));
    assert_eq!(code, 200, "{login}");
    login["access_token"].as_str().unwrap().to_owned()
}

/// A film of `seconds` at 640×360 under `root/films`.
pub fn film(root: &Path, seconds: u32) {
    let folder = root.join("films/Job Film (2024)");
    std::fs::create_dir_all(&folder).unwrap();
    let film = folder.join("Job Film (2024).mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=640x360:rate=25:duration={seconds}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=330:duration={seconds}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        film.to_str().unwrap(),
    ]);
}

/// Three nodes: `a` holds the films (with `first_config`), `b` and `c`
/// join with `worker_config`; each also gets `extra[i]` (when given). The
/// admin's token on `a` and the film's id once it is indexed.
pub fn cluster(
    root: &Path,
    first_config: &Path,
    worker_config: &Path,
    extra: &[Vec<String>],
) -> ([Node; 3], String, u64) {
    let mut nodes = [Node::new(root, "a"), Node::new(root, "b"), Node::new(root, "c")];
    let films = root.join("films");
    let extra_of = |index: usize| extra.get(index).cloned().unwrap_or_default();
    let mut first_args = vec!["--media".to_owned(), films.to_str().unwrap().to_owned()];
    first_args.extend(extra_of(0));
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    nodes[0].start_with(first_config, None, &first_args, true);
    wait_until(
        Duration::from_secs(10),
        || nodes[0].status()["state"] == "leader",
        || nodes[0].log(),
    );
    for index in 1..3 {
        let token = nodes[0].token();
        let (first, rest) = nodes.split_at_mut(1);
        let args = extra_of(index);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rest[index - 1].start_with(worker_config, Some((&first[0], &token)), &args, false);
    }
    wait_until(
        Duration::from_secs(20),
        || nodes[0].status()["members"].as_array().map_or(0, Vec::len) == 3,
        || nodes[0].log(),
    );
    let admin = login(&nodes[0]);
    let mut item = 0;
    wait_until(
        Duration::from_secs(30),
        || {
            let (_, page) = json_of(http(&nodes[0], "GET", "/api/v1/items?type=movie", Some(&admin), None));
            item = page["items"][0]["id"].as_u64().unwrap_or(0);
            page["items"][0]["media"][0]["blob"].is_string()
        },
        || nodes[0].log(),
    );
    (nodes, admin, item)
}
