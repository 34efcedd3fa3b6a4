//! `omega user …`: accounts, created through the running node.

use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;

use crate::auth::PASSWORD_MAX_CHARS;
use crate::cli::GlobalArgs;
use crate::control::{ControlRequest, call};

/// `omega user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input (first line).
    Add {
        /// Unique user name.
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (the only way: passwords
        /// never appear in argument lists).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// Runs an `omega user` command.
pub fn run(global: &GlobalArgs, command: UserCommand) -> anyhow::Result<ExitCode> {
    let socket = global.config()?.control_socket();
    match command {
        UserCommand::Add { name, admin, .. } => {
            let mut input = String::new();
            std::io::stdin()
                // A UTF-8 character is at most 4 bytes; 2 more for the line end.
                .take(PASSWORD_MAX_CHARS as u64 * 4 + 2)
                .read_to_string(&mut input)?;
            let password = input.lines().next().unwrap_or_default().to_owned();
            let answer = call(&socket, &ControlRequest::UserAdd { name, password, admin })?;
            println!(
                "created user {} (id {})",
                answer["name"].as_str().unwrap_or_default(),
                answer["id"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
