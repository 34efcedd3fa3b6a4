//! A tiny blocking HTTP/1.0 client for the workload: one connection per
//! request, bounded by a deadline, so that a paused or dead node shows as
//! a timeout and never hangs a client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

/// Largest answer read.
const ANSWER_MAX: u64 = 16 << 20;

/// Sends one request; `None` when there was no complete answer within
/// `deadline` (refused, reset, timed out).
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    deadline: Duration,
) -> Option<Answer> {
    let mut stream = TcpStream::connect_timeout(&address, deadline).ok()?;
    stream.set_read_timeout(Some(deadline)).ok()?;
    stream.set_write_timeout(Some(deadline)).ok()?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: omega\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.take(ANSWER_MAX).read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&raw[..split])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Answer {
        status,
        body: raw[split + 4..].to_vec(),
    })
}
