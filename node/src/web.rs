//! The web app, embedded at build time from `node/web/dist` (Vite's
//! output): hashed assets are cached for good, `index.html` never, and any
//! other GET that accepts HTML gets `index.html` so that the app's own
//! paths (`/library/3`, `/admin/users`) load it on refresh.

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "web/dist/"]
struct Assets;

/// Paths that are never the web app's: the API and the node's own.
const SERVER_PREFIXES: &[&str] = &["/api/", "/healthz", "/readyz", "/metrics"];

/// Answers a request no route took: an asset, the app's page, or 404.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if (method != Method::GET && method != Method::HEAD)
        || SERVER_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
    {
        return ApiError::not_found("no such route").into_response();
    }
    let name = path.trim_start_matches('/');
    if !name.is_empty()
        && let Some(file) = Assets::get(name)
    {
        // Vite names assets by their content: they never change.
        let cache = if name.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_owned()),
                (header::CACHE_CONTROL, cache.to_owned()),
            ],
            file.data.into_owned(),
        )
            .into_response();
    }
    let wants_page = name.is_empty()
        || headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    if !wants_page {
        return ApiError::not_found("no such file").into_response();
    }
    match Assets::get("index.html") {
        Some(page) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            page.data.into_owned(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this binary was built without its web app: run `npm ci && npm run build` in node/web, then build omega again",
        )
        .into_response(),
    }
}
