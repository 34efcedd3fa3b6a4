//! A Jellyfin-compatible API subset, so that Jellyfin's apps (Findroid,
//! Swiftfin, Finamp, Jellyfin Media Player) and its client libraries can
//! sign in, browse, play, resume and report against Omega's catalog, watch
//! state and streams.
//!
//! As Jellyfin does: paths and query keys are case-insensitive, JSON is
//! PascalCase with nulls left out, ids are 32 hex digits, times are ticks
//! of 100 ns, lists are `{Items, TotalRecordCount, StartIndex}`, and the
//! token comes from `Authorization: MediaBrowser … Token="…"`,
//! `X-Emby-Authorization`, `X-Emby-Token`, `X-MediaBrowser-Token`,
//! `?ApiKey=` or `?api_key=`. A sign-in creates an API key (a long-lived,
//! revocable credential, as Jellyfin clients never refresh); `/Sessions/Logout`
//! revokes it. Images are private: each `ImageTags` value is a signature of
//! the item and its image, and an image is served without a token only for
//! the right tag.
//!
//! The routes sit at the root beside the web app, so a middleware
//! ([`intercept`]) takes requests whose first path segment is one of
//! Jellyfin's and answers them here; everything else goes on.

mod dto;
mod routes;

pub(crate) use routes::SESSION_LABEL;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{ApiError, AppState, Caller};

/// First path segments (lower case) that are Jellyfin's. `library`,
/// `search` and `playlists` are left out: the web app's pages use them
/// (and Jellyfin's own routes there are not implemented).
const ROOTS: &[&str] = &[
    "system",
    "users",
    "userviews",
    "items",
    "useritems",
    "videos",
    "audio",
    "sessions",
    "userplayeditems",
    "userfavoriteitems",
    "branding",
    "displaypreferences",
    "shows",
    "artists",
    "genres",
    "persons",
    "studios",
    "livetv",
    "plugins",
    "startup",
    "quickconnect",
    "syncplay",
    "localization",
];

/// True when `segment` (a path's first) is one of Jellyfin's.
pub fn is_jellyfin_root(segment: &str) -> bool {
    ROOTS.contains(&segment.to_ascii_lowercase().as_str())
}

/// Largest request body read.
const BODY_MAX: usize = 1024 * 1024;

/// Answers Jellyfin's requests; passes the rest on.
pub async fn intercept(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let first = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !is_jellyfin_root(&first) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_MAX).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a request body is at most {BODY_MAX} bytes"),
        )
        .into_response();
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address);
    let zero_copy = parts.extensions.get::<crate::zero_copy::ZeroCopy>().cloned();
    let mut request = JfRequest::new(
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        parts.headers,
        body,
        peer,
    );
    request.zero_copy = zero_copy;
    metrics::counter!("omega_jellyfin_requests_total").increment(1);
    match routes::dispatch(&state, &request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A request as the Jellyfin routes see it.
#[derive(Debug)]
pub(crate) struct JfRequest {
    method: Method,
    /// Path segments, lower case, percent-decoded.
    segments: Vec<String>,
    /// Query parameters by lower-case name (the first of repeats).
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    peer: Option<SocketAddr>,
    /// The connection's zero-copy queue, for file answers.
    zero_copy: Option<crate::zero_copy::ZeroCopy>,
}

impl JfRequest {
    fn new(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
        peer: Option<SocketAddr>,
    ) -> JfRequest {
        let segments = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(|segment| {
                url::form_urlencoded::parse(segment.replace('+', "%2B").as_bytes())
                    .next()
                    .map(|(decoded, _)| decoded.into_owned())
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            })
            .collect();
        let mut parameters = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).take(256) {
            parameters
                .entry(key.to_ascii_lowercase())
                .or_insert_with(|| value.into_owned());
        }
        JfRequest {
            method,
            segments,
            query: parameters,
            headers,
            body,
            peer,
            zero_copy: None,
        }
    }

    /// A query parameter, by any case of its name.
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// A number parameter; 400 when malformed.
    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.param(name)
            .map(|text| {
                text.parse()
                    .map_err(|_| ApiError::bad_request(format!("{name} is not a number: {text:?}")))
            })
            .transpose()
    }

    /// A boolean parameter.
    fn flag(&self, name: &str) -> Option<bool> {
        self.param(name).map(|value| value.eq_ignore_ascii_case("true"))
    }

    /// The JSON body, or an empty object.
    fn json(&self) -> Result<Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
    }

    /// The fields of `Authorization: MediaBrowser k="v", …` (or
    /// `X-Emby-Authorization`), by lower-case key.
    fn authorization(&self) -> HashMap<String, String> {
        let header = [header::AUTHORIZATION.as_str(), "x-emby-authorization"]
            .iter()
            .filter_map(|name| self.headers.get(*name)?.to_str().ok())
            .find_map(|value| {
                let value = value.trim();
                value
                    .strip_prefix("MediaBrowser")
                    .or_else(|| value.strip_prefix("Emby"))
                    .map(str::to_owned)
            });
        let mut fields = HashMap::new();
        for pair in header.unwrap_or_default().split(',') {
            if let Some((key, value)) = pair.split_once('=') {
                let value = value.trim().trim_matches('"');
                let value = url::form_urlencoded::parse(value.as_bytes())
                    .next()
                    .map_or_else(String::new, |(key, _)| key.into_owned());
                fields.insert(key.trim().to_ascii_lowercase(), value);
            }
        }
        fields
    }

    /// The token, wherever the client put it.
    fn token(&self) -> Option<String> {
        if let Some(token) = self.authorization().remove("token").filter(|token| !token.is_empty()) {
            return Some(token);
        }
        for name in ["x-emby-token", "x-mediabrowser-token"] {
            if let Some(token) = self.headers.get(name).and_then(|value| value.to_str().ok()) {
                return Some(token.trim().to_owned());
            }
        }
        if let Some(bearer) = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        {
            return Some(bearer.trim().to_owned());
        }
        self.param("apikey")
            .or_else(|| self.param("api_key"))
            .map(str::to_owned)
    }

    /// The signed-in caller, or 401.
    fn caller(&self, state: &AppState) -> Result<Caller, ApiError> {
        let token = self
            .token()
            .ok_or_else(|| ApiError::unauthorized("sign in first (AuthenticateByName)"))?;
        Caller::from_token(state, &token)
    }
}

/// A JSON answer, nulls left out.
fn json_response(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(dto::without_nulls(value))).into_response()
}

/// An empty 204.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A body streamed from `chunks`.
fn streamed(content_type: &'static str, body: Body) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
