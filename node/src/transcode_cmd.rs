//! `omega transcode ITEM --profile P`: queues an offline transcode in the
//! cluster's job queue through the running node; `--wait` follows it to
//! its end.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::GlobalArgs;
use crate::control::{ControlRequest, call};

/// `omega transcode` options.
#[derive(Debug, Args)]
pub struct TranscodeArgs {
    /// The item's id.
    pub item: u64,
    /// The rendition to make: 1080p, 720p, 480p, 360p or audio; H.264
    /// unless it ends in -hevc or -vp9 (e.g. 720p-hevc).
    #[arg(long)]
    pub profile: String,
    /// Split the video into this many chunks, encoded by any nodes and
    /// joined (2 to 64).
    #[arg(long)]
    pub chunks: Option<u32>,
    /// Wait until the job is done or failed (progress on stderr).
    #[arg(long)]
    pub wait: bool,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `omega transcode`.
pub fn run(global: &GlobalArgs, args: TranscodeArgs) -> anyhow::Result<ExitCode> {
    let socket = global.config()?.control_socket();
    let mut job = call(
        &socket,
        &ControlRequest::Transcode {
            item: args.item,
            profile: args.profile.clone(),
            chunks: args.chunks,
        },
    )?;
    let id = job["id"].as_u64().unwrap_or_default();
    if !args.json {
        eprintln!("queued job {id}: item {} as {}", args.item, args.profile);
    }
    if args.wait {
        let mut shown = String::new();
        loop {
            let state = job["state"].as_str().unwrap_or_default().to_owned();
            if state == "done" || state == "failed" {
                break;
            }
            let line = match job["node"].as_u64() {
                Some(node) => format!("job {id}: {state} on node {node} (attempt {})", job["attempts"]),
                None => format!("job {id}: {state}"),
            };
            if line != shown && !args.json {
                eprintln!("{line}");
                shown = line;
            }
            std::thread::sleep(Duration::from_millis(500));
            job = call(&socket, &ControlRequest::Job { id })?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        match job["state"].as_str() {
            Some("done") => println!(
                "job {id} done on node {}: output {}",
                job["node"],
                job["output"].as_str().unwrap_or("-")
            ),
            Some("failed") => println!("job {id} failed: {}", job["error"].as_str().unwrap_or("-")),
            _ => println!("{id}"),
        }
    }
    Ok(if job["state"] == "failed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
