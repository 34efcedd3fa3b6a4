//! The running node's control socket: `<data-dir>/omega.sock`, owner-only.
//! Commands such as `omega cluster status` find the node through its data
//! directory and ask it here, one JSON line each way.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Longest request or answer line accepted.
pub const LINE_MAX_BYTES: u64 = 16 << 20;
/// How long a command waits for the node's answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(120);
/// How long a store command (ingest, scrub, gc of a large store) may run.
const STORE_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// A request to the running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The node's view of the cluster.
    Status,
    /// A join token valid for `ttl_ms`.
    Token {
        /// Validity in milliseconds.
        ttl_ms: u64,
    },
    /// This node leaves the cluster and stops.
    Leave,
    /// Removes another member.
    Remove {
        /// Its node id.
        node: u64,
    },
    /// Runs a store command on the node's store.
    Store {
        /// The command.
        command: crate::store_cmd::StoreCommand,
    },
    /// The size of a blob in the node's store.
    StoreBlobSize {
        /// Blob id (hex).
        blob: String,
    },
    /// Bytes `start..end` of a blob, base64 (at most a few MiB).
    StoreRead {
        /// Blob id (hex).
        blob: String,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// Queues a transcode job.
    Transcode {
        /// The item.
        item: u64,
        /// The profile.
        profile: String,
        /// Chunks to split the encode into.
        chunks: Option<u32>,
    },
    /// A job.
    Job {
        /// Its id.
        id: u64,
    },
    /// Creates a user.
    UserAdd {
        /// Unique name.
        name: String,
        /// Password (hashed with argon2id by the node; never stored).
        password: String,
        /// Make it an administrator.
        admin: bool,
    },
}

/// The node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlResponse {
    /// Done; the result.
    Ok(serde_json::Value),
    /// Failed; why.
    Error(String),
}

/// Sends `request` to the node whose control socket is `socket`.
pub fn call(socket: &Path, request: &ControlRequest) -> anyhow::Result<serde_json::Value> {
    let data_dir = socket.parent().unwrap_or(socket);
    let mut stream = UnixStream::connect(socket).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "no running node at {} (start it with `omega serve --data-dir {}`)",
            data_dir.display(),
            data_dir.display()
        ),
        _ => anyhow::anyhow!("cannot reach the node at {}: {error}", socket.display()),
    })?;
    let deadline = match request {
        ControlRequest::Store { .. } => STORE_DEADLINE,
        _ => ANSWER_DEADLINE,
    };
    stream.set_read_timeout(Some(deadline))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).context("cannot send to the node")?;
    let mut answer = String::new();
    BufReader::new(stream.take(LINE_MAX_BYTES))
        .read_line(&mut answer)
        .context("the node did not answer")?;
    if answer.is_empty() {
        anyhow::bail!("the node closed the connection without answering");
    }
    match serde_json::from_str::<ControlResponse>(&answer).context("the node's answer is not understood")? {
        ControlResponse::Ok(value) => Ok(value),
        ControlResponse::Error(error) => Err(anyhow::anyhow!(error)),
    }
}
