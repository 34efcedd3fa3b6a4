//! `GET /api/v1/events`: a WebSocket of JSON events (scan progress,
//! playback, jobs, cluster changes). Browsers cannot set headers on a WebSocket,
//! so the access token may also come as `?token=`. Each caller sees scans
//! of the libraries it may see, its own playback, and (administrators) the
//! cluster. The socket closes when its access token expires (code 4001) or
//! its user is deleted (4003); a change of the user's library access applies
//! within [`RECHECK`]. Clients send nothing but pings and close, so messages
//! from them are bounded to [`CLIENT_MESSAGE_MAX`] bytes.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::extract::QueryParams;
use super::libraries::can_see;
use super::{ApiError, ApiResult, AppState, Caller};
use crate::events::Event;

/// `GET /api/v1/events` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// An access token or API key, for clients that cannot send headers.
    pub token: Option<String>,
}

/// Opens the events WebSocket.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])), params(EventsQuery), responses((status = 101, description = "Switching to the WebSocket protocol; then one JSON event per text message"), (status = 401)))]
pub async fn events(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<EventsQuery>,
    parts: Parts,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let presented = query
        .token
        .as_deref()
        .or_else(|| super::auth::bearer(&parts))
        .ok_or_else(|| ApiError::unauthorized("sign in first"))?;
    let caller = Caller::from_token(&state, presented)?;
    // An access token's socket closes when the token expires; an API key's
    // lives on.
    let expires_ms = state
        .tokens
        .check_access(presented, state.clock.now_ms())
        .map(|claims| claims.expires_ms);
    let upgrade =
        upgrade.map_err(|rejection| ApiError::bad_request(format!("not a WebSocket request: {rejection}")))?;
    Ok(upgrade
        .max_message_size(CLIENT_MESSAGE_MAX)
        .max_frame_size(CLIENT_MESSAGE_MAX)
        .on_upgrade(move |socket| forward(state, caller, expires_ms, socket)))
}

/// How often an open socket checks its token's expiry and its user.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// The largest message a client may send (pings and close frames are tiny).
pub const CLIENT_MESSAGE_MAX: usize = 4096;
/// Close code: the access token expired (refresh and reconnect).
const CLOSE_EXPIRED: u16 = 4001;
/// Close code: the user no longer exists.
const CLOSE_GONE: u16 = 4003;

/// Why an open socket must close, if it must: its token expired, or its
/// user is gone. Refreshes the caller's user (library access) otherwise.
fn must_close(state: &AppState, caller: &mut Caller, expires_ms: Option<u64>) -> Option<(u16, &'static str)> {
    if expires_ms.is_some_and(|expiry| state.clock.now_ms() >= expiry) {
        return Some((CLOSE_EXPIRED, "the access token expired"));
    }
    match omega_consensus::state_machine::read::user(state.cluster.tables(), caller.user.id) {
        Ok(Some(user)) => {
            caller.user = user;
            None
        }
        Ok(None) => Some((CLOSE_GONE, "the user no longer exists")),
        Err(_) => None,
    }
}

fn visible(caller: &Caller, event: &Event) -> bool {
    match event {
        Event::Playback { user, .. } => *user == caller.user.id,
        Event::Cluster { .. } | Event::Job { .. } => caller.is_admin(),
        other => other.library().is_none_or(|library| can_see(caller, library)),
    }
}

async fn forward(state: AppState, mut caller: Caller, expires_ms: Option<u64>, mut socket: WebSocket) {
    let mut events = state.events.subscribe();
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if let Some((code, reason)) = must_close(&state, &mut caller, expires_ms) {
                    let frame = axum::extract::ws::CloseFrame { code, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
            received = events.recv() => {
                let text = match received {
                    Ok(event) if visible(&caller, &event) => serde_json::to_string(&event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => serde_json::to_string(&serde_json::json!({"type": "lagged", "missed": missed})),
                    Err(RecvError::Closed) => break,
                };
                let Ok(text) = text else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                // Clients send nothing but pings and close; axum answers pings.
                match incoming {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}
