//! `omega cluster …`: asks the running node (found through `--data-dir`)
//! about and for changes to its cluster.

use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::GlobalArgs;
use crate::control::{ControlRequest, call};
use crate::units::parse_duration;

/// `omega cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print a single-use join token for `omega serve --join ADDR --token T`.
    Token {
        /// How long the token stays valid (e.g. 30m, 1h, 2d; at most 7d).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        ttl: String,
    },
    /// Members, leader, term, commit and applied index, per-member lag.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take this node out of the cluster and stop it.
    Leave,
    /// Take another node out of the cluster.
    Remove {
        /// Its node id (see `omega cluster status`).
        node: u64,
    },
}

/// Runs an `omega cluster` command.
pub fn run(global: &GlobalArgs, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let socket = global.config()?.control_socket();
    match command {
        ClusterCommand::Token { ttl } => {
            let ttl = parse_duration(&ttl).map_err(|error| anyhow::anyhow!("--ttl: {error}"))?;
            let answer = call(
                &socket,
                &ControlRequest::Token {
                    ttl_ms: ttl.as_millis() as u64,
                },
            )?;
            println!("{}", answer["token"].as_str().unwrap_or_default());
        }
        ClusterCommand::Status { json } => {
            let status = call(&socket, &ControlRequest::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        ClusterCommand::Leave => {
            call(&socket, &ControlRequest::Leave)?;
            println!("left the cluster; the node stops");
        }
        ClusterCommand::Remove { node } => {
            call(&socket, &ControlRequest::Remove { node })?;
            println!("removed node {node}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn field(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn print_status(status: &serde_json::Value) {
    println!(
        "node {} ({}), term {}, leader {}",
        field(&status["node_id"]),
        field(&status["state"]),
        field(&status["term"]),
        field(&status["leader"])
    );
    println!(
        "log {}, commit {}, applied {}, snapshot {}",
        field(&status["last_log_index"]),
        field(&status["commit_index"]),
        field(&status["applied_index"]),
        field(&status["snapshot_index"])
    );
    println!(
        "{:<6} {:<8} {:<24} {:>8} {:>6}",
        "ID", "ROLE", "ADDRESS", "MATCHED", "LAG"
    );
    for member in status["members"].as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<8} {:<24} {:>8} {:>6}",
            field(&member["id"]),
            field(&member["role"]),
            field(&member["cluster_addr"]),
            field(&member["matched_index"]),
            field(&member["lag"])
        );
    }
}
