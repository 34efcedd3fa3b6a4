//! Requests for an item whose file lives on another member: the node asked
//! passes them to the holder and streams the answer back, so that any
//! node serves every item's stream, HLS tree and rendition manifests. The
//! caller's token goes along as it came: tokens are signed with the
//! cluster's key, so the holder checks them itself. A request that was
//! passed on once is never passed on again.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use omega_consensus::model::Item;

use super::{ApiError, ApiResult, AppState};

/// Marks a request passed on from another member.
const PROXIED_HEADER: &str = "x-omega-proxied";
/// Request headers passed on.
const REQUEST_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
];
/// Answer headers passed back.
const ANSWER_HEADERS: [HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CACHE_CONTROL,
    header::ETAG,
    header::RETRY_AFTER,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
];

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // Building a client with these options only fails without a TLS
        // backend, which is compiled in; the fallback has no timeouts.
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default()
    })
}

/// The member holding `item`'s file when it is not this node (and this
/// request was not passed on already).
pub(crate) fn remote_holder(state: &AppState, item: &Item, parts: &Parts) -> Option<u64> {
    if super::items::local_media(state, item).is_ok() || parts.headers.contains_key(PROXIED_HEADER) {
        return None;
    }
    item.fields.media.first().map(|media| media.node)
}

/// Passes the request to member `holder` and streams its answer back.
pub(crate) async fn to_holder(state: &AppState, holder: u64, parts: &Parts) -> ApiResult<Response> {
    to_holder_with(state, holder, parts, None).await
}

/// [`to_holder`] for a request with a body (already read, and bounded by
/// the router's body limit).
pub(crate) async fn to_holder_with(
    state: &AppState,
    holder: u64,
    parts: &Parts,
    body: Option<axum::body::Bytes>,
) -> ApiResult<Response> {
    let http_addr = crate::jobs::owner_http(state, holder)
        .map_err(|error| ApiError::new(StatusCode::BAD_GATEWAY, format!("{error:#}")))?;
    // Routes are nested under /api/v1, which the router strips from `uri`.
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let mut request = client()
        .request(parts.method.clone(), format!("http://{http_addr}{path}"))
        .header(PROXIED_HEADER, state.cluster.id().to_string());
    for name in REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(&name) {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.header(header::CONTENT_TYPE, "application/json").body(body);
    }
    let answer = request.send().await.map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("node {holder}, which holds the file, cannot be reached: {error}"),
        )
    })?;
    metrics::counter!("omega_proxied_requests_total").increment(1);
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(name.as_str()) {
            response = response.header(name, value.as_bytes());
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(ApiError::internal)
}
