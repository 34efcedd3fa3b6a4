//! The REST API under `/api/v1`.
//!
//! - [`auth`]: login, refresh, logout, API keys, TOTP; the [`Caller`]
//!   extractor that every protected route takes.
//! - [`users`]: accounts and library access (administrators only).
//! - [`libraries`]: libraries and their scans.
//! - [`items`]: the catalog and direct streams.
//! - [`error`]: JSON errors.

pub mod app_passwords;
pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod folders;
pub mod hls;
pub mod internal;
pub mod items;
pub mod jobs;
pub mod libraries;
pub mod manifest;
pub mod openapi;
pub mod playlists;
pub mod proxy;
pub mod segments;
pub mod sessions;
pub mod setup;
pub mod signed;
pub mod status;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};
use omega_consensus::Cluster;
use omega_consensus::clock::Clock;
use omega_consensus::command::{Command, Response};
use omega_consensus::quic::QuicTransport;

pub use auth::Caller;
pub use error::{ApiError, ApiResult};

use crate::ratelimit::LoginLimiter;
use crate::tokens::TokenKey;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This node's Raft member.
    pub cluster: Arc<Cluster<QuicTransport>>,
    /// Signs access tokens.
    pub tokens: TokenKey,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Failed-login counts.
    pub limiter: Arc<LoginLimiter>,
    /// Scans of this node's libraries.
    pub scans: Arc<libraries::Scans>,
    /// Run ffprobe and ffmpeg while scanning.
    pub probe_media: bool,
    /// The node's content-addressed store (art, in-place index).
    pub store: Option<Arc<omega_storage::Store>>,
    /// Events for WebSocket clients.
    pub events: crate::events::Events,
    /// Transcoding (`None` when `[transcode] enabled = false`).
    pub transcoder: Option<Arc<crate::transcoder::Transcoder>>,
    /// Progress of the jobs running on this node.
    pub job_progress: Arc<crate::jobs::Progress>,
    /// The P2P data plane (`None` when `[p2p] enabled = false`).
    pub p2p: Option<crate::p2p::NodeP2p>,
    /// What clients ask for, to replicate what is popular.
    pub popularity: Arc<crate::gossip::Popularity>,
    /// Wakes this node's job worker (a job was queued, here or elsewhere).
    pub job_wake: Arc<tokio::sync::Notify>,
    /// Account passwords verified lately (HTTP Basic and Subsonic's `p=`).
    pub passwords: Arc<crate::auth::PasswordCache>,
    /// Set once start-up is over: the unattended administrator exists, the
    /// `--media` libraries are registered and the control socket is open.
    /// Until then `/healthz` and `/readyz` answer 503.
    pub started: Arc<std::sync::atomic::AtomicBool>,
    /// Whether a quorum stands behind this member now (`/readyz`).
    pub readiness: Arc<crate::readiness::Readiness>,
    /// The first administrator comes from `OMEGA_ADMIN_USER` and
    /// `OMEGA_ADMIN_PASSWORD`: `/api/v1/setup` stays closed, so no one can
    /// become an administrator beside it while it is being created.
    pub unattended_admin: bool,
    /// `[http] trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl AppState {
    /// The address a request comes from, as rate limits see it.
    pub fn client_ip(&self, peer: std::net::SocketAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        crate::client_addr::client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Replicates `command`; a refusal of the state machine becomes its API
    /// error.
    pub async fn write(&self, command: Command) -> ApiResult<Response> {
        // Long without a quorum: answered at once, not after the write's
        // deadline (a client would otherwise hold a connection for it).
        if self.readiness.lost_contact_for(self.readiness.write_refusal_after()) {
            return Err(omega_consensus::ClusterError::NoLeader("no quorum contact".into()).into());
        }
        match self.cluster.write(command).await? {
            Response::Rejected(rejection) => Err(rejection.into()),
            other => Ok(other),
        }
    }
}

/// The `/api/v1` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/setup", get(setup::state).post(setup::create_admin))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/auth/keys", post(auth::create_key))
        .route("/auth/keys/revoke", post(auth::revoke_key))
        .route("/auth/totp/enroll", post(auth::totp_enroll))
        .route("/auth/totp/confirm", post(auth::totp_confirm))
        .route("/auth/totp/disable", post(auth::totp_disable))
        .route("/auth/password", post(sessions::change_password))
        .route("/auth/sign-out-everywhere", post(sessions::sign_out_everywhere))
        .route(
            "/auth/app-passwords",
            get(app_passwords::list).post(app_passwords::create),
        )
        .route("/auth/app-passwords/{id}", delete(app_passwords::revoke))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", delete(users::remove))
        .route("/users/{id}/access", put(users::set_access))
        .route("/users/{id}/password", put(sessions::reset_password))
        .route("/folders", get(folders::list))
        .route("/libraries", get(libraries::list).post(libraries::create))
        .route("/libraries/{id}", delete(libraries::remove))
        .route(
            "/libraries/{id}/scan",
            get(libraries::scan_status).post(libraries::scan),
        )
        .route("/items", get(items::list))
        .route("/items/resume", get(items::resume))
        .route("/items/{id}", get(items::detail))
        .route("/items/{id}/stream", get(items::stream))
        .route("/items/{id}/manifest", get(manifest::manifest))
        .route("/items/{id}/fetch-report", post(manifest::fetch_report))
        .route("/items/{id}/children", get(items::children))
        .route("/items/{id}/playback", post(hls::playback))
        .route("/items/{id}/hls/master.m3u8", get(hls::master))
        .route("/items/{id}/hls/{rendition}/{file}", get(hls::file))
        .route("/items/{id}/segments/{rendition}/{hash}", get(segments::by_hash))
        .route("/items/{id}/images/{kind}", get(items::image))
        .route("/events", get(events::events))
        .route("/playlists", get(playlists::list).post(playlists::create))
        .route(
            "/playlists/{id}",
            get(playlists::detail).put(playlists::update).delete(playlists::remove),
        )
        .route("/cluster", get(status::cluster))
        .route("/store", get(status::store))
        .route("/p2p", get(status::p2p))
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/{id}", get(jobs::detail))
        .route("/jobs/{id}/output", get(jobs::output))
        .route("/internal/blobs/{blob}", get(internal::bytes))
        .route("/internal/blobs/{blob}/manifest", get(internal::manifest))
        .route("/internal/items/{id}/sets/{rendition}", get(internal::set_manifest))
        .route("/items/{id}/progress", post(items::progress))
        .route(
            "/items/{id}/played",
            post(items::mark_played).delete(items::mark_unplayed),
        )
        .route(
            "/items/{id}/favorite",
            post(items::mark_favorite).delete(items::unmark_favorite),
        )
}
