//! Omega's node: the `omega` command line, its configuration, and the
//! wiring of the storage crate into user-facing commands.
//!
//! # Layout
//! - [`cli`]: the command tree and the one place errors become exit codes.
//! - [`config`]: configuration from a TOML file, `OMEGA_*` variables and flags.
//! - [`serve`]: `omega serve`, the running node, and its control socket.
//! - [`control`]: the control socket's protocol (client side).
//! - [`http`]: the HTTP server (health and readiness; the API grows here).
//! - [`cluster_cmd`], [`user_cmd`]: commands answered by the running node.
//! - [`api`]: the REST API under `/api/v1`; [`tokens`], [`totp`],
//!   [`ratelimit`]: its credentials.
//! - [`auth`]: password hashing.
//! - [`store_cmd`]: `omega store …`.
//! - [`bench`]: `omega bench …`, each measuring Omega against a peer.
//! - [`units`]: byte sizes and rates for people.
//! - [`text`]: XML escaping and RFC 3339 times for the client protocols.
//! - [`web`]: the embedded web app (built from `node/web`).
//! - [`subsonic`]: the Subsonic API for music apps, at `/rest`.
//! - [`opds`]: OPDS 1.2 catalogs for e-book readers, at `/opds`.
//! - [`jellyfin`]: a Jellyfin-compatible API subset for Jellyfin's apps.

pub mod addresses;
pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client_addr;
pub mod cluster_cmd;
pub mod config;
pub mod control;
pub mod departure;
pub mod events;
pub mod fetch_cmd;
pub mod gossip;
pub mod http;
pub mod jellyfin;
pub mod jobs;
pub mod library;
pub mod listener;
pub mod opds;
pub mod p2p;
pub mod p2p_client;
pub mod play_cmd;
pub mod ratelimit;
pub mod readiness;
pub mod relay;
pub mod remote;
pub mod segment_cache;
pub mod serve;
pub mod source_analysis;
pub mod store_cmd;
pub mod subsonic;
pub mod telemetry;
pub mod text;
pub mod tokens;
pub mod totp;
pub mod transcode_cmd;
pub mod transcoder;
pub mod units;
pub mod user_cmd;
pub mod web;
pub mod zero_copy;
