//! Omega's node: the `omega` command line, its configuration, and the
//! wiring of the storage crate into user-facing commands.
//!
//! # Layout
//! - [`cli`]: the command tree and the one place errors become exit codes.
//! - [`config`]: configuration from a TOML file, `OMEGA_*` variables and flags.
//! - [`store_cmd`]: `omega store …`.
//! - [`bench`]: `omega bench …`, each measuring Omega against a peer.
//! - [`units`]: byte sizes and rates for people.

pub mod bench;
pub mod cli;
pub mod config;
pub mod store_cmd;
pub mod units;
