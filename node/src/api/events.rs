//! `GET /api/v1/events`: a WebSocket of JSON events (scan progress,
//! playback, jobs, cluster changes). Browsers cannot set headers on a WebSocket,
//! so the access token may also come as `?token=`. Each caller sees scans
//! of the libraries it may see, its own playback, and (administrators) the
//! cluster.

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
    let caller = match query.token.as_deref() {
        Some(token) => Caller::from_token(&state, token)?,
        None => Caller::from_parts(&parts, &state)?,
    };
    let upgrade =
        upgrade.map_err(|rejection| ApiError::bad_request(format!("not a WebSocket request: {rejection}")))?;
    Ok(upgrade.on_upgrade(move |socket| forward(state, caller, socket)))
}

fn visible(caller: &Caller, event: &Event) -> bool {
    match event {
        Event::Playback { user, .. } => *user == caller.user.id,
        Event::Cluster { .. } | Event::Job { .. } => caller.is_admin(),
        other => other.library().is_none_or(|library| can_see(caller, library)),
    }
}

async fn forward(state: AppState, caller: Caller, mut socket: WebSocket) {
    let mut events = state.events.subscribe();
    loop {
        tokio::select! {
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
