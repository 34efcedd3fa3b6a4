//! The command tree. Errors reach the user as one line on stderr and a
//! non-zero exit code; nothing below this module prints errors itself.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// Omega: a self-hosted media server that runs as a cluster.
#[derive(Debug, Parser)]
#[command(name = "omega", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "OMEGA_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data directory [default: $XDG_DATA_HOME/omega].
    #[arg(long, env = "OMEGA_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Hot tier budget of the store, e.g. 500GiB.
    #[arg(long, env = "OMEGA_STORE_HOT_BYTES_MAX", global = true, value_name = "SIZE")]
    pub hot_bytes_max: Option<String>,
    /// Cold tier of the store: file:///path or s3://bucket/prefix.
    #[arg(long, env = "OMEGA_STORE_COLD_URL", global = true, value_name = "URL")]
    pub cold_url: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "OMEGA_LOG_JSON", global = true)]
    pub log_json: bool,
}

impl GlobalArgs {
    /// These flags as overrides of the configuration file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            hot_bytes_max: self.hot_bytes_max.clone(),
            cold_url: self.cold_url.clone(),
            cluster_listen: None,
            listen: None,
            p2p_listen: None,
        }
    }

    /// Refuses the store's flags (`--hot-bytes-max`, `--cold-url`) given on
    /// the command line of a command that a running node carries out: the
    /// node runs with its own settings and would silently ignore them. The
    /// same values in the environment (`OMEGA_STORE_*`, which the node may
    /// share) are not refused.
    pub fn refuse_node_settings(&self) -> anyhow::Result<()> {
        let given = |value: &Option<String>, variable: &str| {
            value.is_some() && std::env::var(variable).ok().as_ref() != value.as_ref()
        };
        let flags: Vec<&str> = [
            (
                "--hot-bytes-max",
                given(&self.hot_bytes_max, "OMEGA_STORE_HOT_BYTES_MAX"),
            ),
            ("--cold-url", given(&self.cold_url, "OMEGA_STORE_COLD_URL")),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if flags.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} would be ignored: the running node uses its own store settings; set them where `omega serve` reads them ([store] in its config file, OMEGA_STORE_* or its own flags) and restart it",
            flags.join(" and ")
        )
    }

    /// Loads the configuration with these flags on top.
    pub fn config(&self) -> anyhow::Result<Config> {
        self.config_with(self.overrides())
    }

    /// Loads the configuration with `overrides` (these flags and a
    /// command's own) on top.
    pub fn config_with(&self, overrides: Overrides) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), &overrides)
    }
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The content-addressed store: ingest, read, verify, collect, tier.
    #[command(subcommand)]
    Store(crate::store_cmd::StoreCommand),
    /// Benchmarks, each measured against a peer in the same run.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Run the node (a first start without --join creates a cluster of one).
    Serve(crate::serve::ServeArgs),
    /// The cluster of the running node: tokens, status, leave, remove.
    #[command(subcommand)]
    Cluster(crate::cluster_cmd::ClusterCommand),
    /// Users, created through the running node.
    #[command(subcommand)]
    User(crate::user_cmd::UserCommand),
    /// Queue an offline transcode of an item in the cluster's job queue.
    Transcode(crate::transcode_cmd::TranscodeArgs),
    /// Download an item's file over the P2P data plane, from several peers
    /// at once, every piece verified.
    Fetch(crate::fetch_cmd::FetchArgs),
    /// Play an item through a local HLS server fed by peers: hands its URL
    /// to a player (or prints it).
    Play(crate::play_cmd::PlayArgs),
}

/// Runs the command line and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    // One TLS provider for the process (HTTP clients, object storage); a
    // second install elsewhere is a no-op.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    init_tracing(cli.global.log_json);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("omega: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Only `serve`, `bench` and the store's commands on a stopped node open
    // a store; every other command talks to the running node.
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_) | Command::Store(_)) {
        cli.global.refuse_node_settings()?;
    }
    match cli.command {
        Command::Store(command) => crate::store_cmd::run(&cli.global, command),
        Command::Bench(command) => crate::bench::run(&cli.global, command),
        Command::Serve(args) => crate::serve::run(&cli.global, args),
        Command::Cluster(command) => crate::cluster_cmd::run(&cli.global, command),
        Command::User(command) => crate::user_cmd::run(&cli.global, command),
        Command::Transcode(args) => crate::transcode_cmd::run(&cli.global, args),
        Command::Fetch(args) => crate::fetch_cmd::run(&cli.global, args),
        Command::Play(args) => crate::play_cmd::run(&cli.global, args),
    }
}

/// Help and version as clap prints them; a usage error (an unknown flag, a
/// missing argument) on one line, as every other error, with exit code 2.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!("omega: error: {} (see --help)", usage_line(&error.render().to_string()));
    ExitCode::from(2)
}

/// clap's rendering of a usage error (the error, tips, then a usage block)
/// as one line: what precedes the usage block, joined.
fn usage_line(rendered: &str) -> String {
    rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Joins an error and its causes on one line, dropping causes that the
/// message already contains.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OMEGA_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
