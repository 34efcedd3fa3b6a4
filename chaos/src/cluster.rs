//! Real `omega serve` processes, each with its own data directory and
//! addresses (on loopback or in its own network namespace: [`Network`]),
//! and the faults done to the processes: SIGKILL and restart, SIGSTOP and
//! SIGCONT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ChaosError;
use crate::http;
use crate::net::Network;

/// The first administrator of the cluster.
pub const ADMIN: (&str, &str) = ("chaos-admin", "chaos-admin-password");

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Its number in the cluster (0: the founder).
    pub index: usize,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its HTTP API.
    pub http_addr: SocketAddr,
    /// Its Raft (QUIC) endpoint.
    pub raft_addr: SocketAddr,
    /// True when `dir` is a tmpfs of its own (unmounted on drop).
    tmpfs: bool,
    child: Option<Child>,
    paused: bool,
    /// Extra environment of its process.
    env: Vec<(String, String)>,
    /// A `--media PATH:TYPE` it serves (the founder's library).
    pub media: Option<String>,
}

impl Node {
    /// Node `index`, which will keep its data under `root/node-{index}`
    /// (on a tmpfs of its own when `tmpfs`, for disk faults).
    pub fn new(
        root: &Path,
        index: usize,
        env: &[(String, String)],
        network: &Network,
        tmpfs: bool,
    ) -> Result<Node, ChaosError> {
        let (http_addr, raft_addr) = network.addresses(index)?;
        let dir = root.join(format!("node-{index}"));
        if tmpfs {
            crate::disk::mount_tmpfs(&dir, crate::disk::TMPFS_BYTES)?;
        }
        Ok(Node {
            index,
            env: env.to_vec(),
            media: None,
            dir,
            http_addr,
            raft_addr,
            tmpfs,
            child: None,
            paused: false,
        })
    }

    /// Starts it (joining through `join` with a token the first time).
    pub fn start(
        &mut self,
        network: &Network,
        omega: &Path,
        config: &Path,
        join: Option<(&str, &str)>,
        admin: bool,
    ) -> Result<(), ChaosError> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))?;
        let mut command = Command::new(omega);
        command
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["serve", "--cluster-listen", &self.raft_addr.to_string()])
            .args(["--listen", &self.http_addr.to_string()])
            .env_remove("OMEGA_ADMIN_USER")
            .env_remove("OMEGA_ADMIN_PASSWORD")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if admin {
            command
                .env("OMEGA_ADMIN_USER", ADMIN.0)
                .env("OMEGA_ADMIN_PASSWORD", ADMIN.1);
        }
        if let Some((address, token)) = join {
            // The token by environment, never on the command line.
            command.args(["--join", address]).env("OMEGA_JOIN_TOKEN", token);
        }
        if let Some(media) = &self.media {
            command.args(["--media", media]);
        }
        network.enter(self.index, &mut command)?;
        self.child = Some(command.spawn().map_err(|source| ChaosError::Spawn {
            binary: omega.display().to_string(),
            source,
        })?);
        self.paused = false;
        Ok(())
    }

    /// Waits until it answers `/readyz` with 200.
    pub fn wait_ready(&self, within: Duration) -> Result<(), ChaosError> {
        let started = Instant::now();
        loop {
            if http::request(self.http_addr, "GET", "/readyz", None, None, Duration::from_secs(2))
                .is_some_and(|answer| answer.status == 200)
            {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(ChaosError::NotReady {
                    node: self.dir.display().to_string(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A join token from this node (`omega cluster token`), asked again
    /// for a few seconds while its control socket is not up yet.
    pub fn token(&self, omega: &Path) -> Result<String, ChaosError> {
        let started = Instant::now();
        loop {
            let output = Command::new(omega)
                .arg("--data-dir")
                .arg(&self.dir)
                .args(["cluster", "token", "--ttl", "10m"])
                .output()?;
            if output.status.success() {
                return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(ChaosError::Command(
                    String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, and waits for the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                self.signal(&child, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process freezes (sockets open, nothing answered).
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            self.signal(child, libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            self.signal(child, libc::SIGCONT);
        }
        self.paused = false;
    }

    /// True while its process runs (paused or not).
    pub fn is_up(&mut self) -> bool {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                // It exited by itself (a fatal storage error): reaped.
                Ok(Some(_)) | Err(_) => {
                    self.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, child: &Child, signal: i32) {
        // Invariant: a process id fits in pid_t.
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        // SAFETY: kill(2) on a child this harness spawned and still owns
        // (not yet waited for, so its pid cannot have been reused).
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if self.tmpfs {
            // The log outlives the tmpfs, beside it (node-N.log).
            let _ = std::fs::copy(self.dir.join("serve.log"), self.dir.with_extension("log"));
            crate::disk::unmount(&self.dir);
        }
    }
}
