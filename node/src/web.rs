//! The web app, embedded at build time from `node/web/dist` (Vite's
//! output): hashed assets are cached for good, `index.html` never, and any
//! other GET that accepts HTML gets `index.html` so that the app's own
//! paths (`/library/3`, `/admin/users`) load it on refresh. Text assets
//! (scripts, styles, the page) go gzip-compressed to clients that accept
//! it, compressed once per asset and kept (the set is fixed at build).

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
        return asset(name, file.metadata.mimetype(), cache, &file.data, &headers);
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
        Some(page) => asset("index.html", "text/html; charset=utf-8", "no-cache", &page.data, &headers),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this binary was built without its web app: run `npm ci && npm run build` in node/web, then build omega again",
        )
        .into_response(),
    }
}

/// An embedded file as an answer: gzip-compressed when it is text and the
/// client accepts gzip (with `Vary: Accept-Encoding` either way for text).
fn asset(name: &str, mimetype: &str, cache: &str, data: &[u8], headers: &HeaderMap) -> Response {
    let text = compressible(mimetype);
    let gzip = text && accepts_gzip(headers);
    let body = if gzip {
        gzipped(name, data)
    } else {
        axum::body::Bytes::copy_from_slice(data)
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, mimetype.to_owned()),
            (header::CACHE_CONTROL, cache.to_owned()),
        ],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    if gzip {
        headers.insert(header::CONTENT_ENCODING, axum::http::HeaderValue::from_static("gzip"));
    }
    if text {
        headers.insert(header::VARY, axum::http::HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether a file of this media type gains from compression (images and
/// fonts are compressed already).
fn compressible(mimetype: &str) -> bool {
    mimetype.starts_with("text/")
        || ["javascript", "json", "svg", "xml", "wasm"]
            .iter()
            .any(|kind| mimetype.contains(kind))
}

/// Whether the request's `Accept-Encoding` takes gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `data` (the embedded file `name`) gzip-compressed, made once.
fn gzipped(name: &str, data: &[u8]) -> axum::body::Bytes {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    // Bounded by the embedded files, which are fixed at build.
    static GZIPPED: LazyLock<Mutex<HashMap<String, axum::body::Bytes>>> = LazyLock::new(Default::default);
    if let Some(done) = GZIPPED.lock().unwrap_or_else(|poison| poison.into_inner()).get(name) {
        return done.clone();
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Invariant: writing to a Vec cannot fail.
    let compressed = std::io::Write::write_all(&mut encoder, data)
        .and_then(|()| encoder.finish())
        .unwrap_or_else(|error| unreachable!("gzip into memory: {error}"));
    let compressed = axum::body::Bytes::from(compressed);
    GZIPPED
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .insert(name.to_owned(), compressed.clone());
    compressed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_assets_go_gzipped_to_clients_that_take_gzip() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
            map
        };
        assert!(accepts_gzip(&headers("gzip, deflate, br")));
        assert!(accepts_gzip(&headers("br;q=1.0, gzip;q=0.5")));
        assert!(!accepts_gzip(&headers("gzip;q=0, br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(compressible("application/javascript") && compressible("text/css"));
        assert!(!compressible("image/png") && !compressible("font/woff2"));

        let script = "function f() { return 1; }\n".repeat(200);
        let answer = asset(
            "assets/test.js",
            "application/javascript",
            "no-cache",
            script.as_bytes(),
            &headers("gzip"),
        );
        assert_eq!(answer.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(answer.headers()[header::VARY], "accept-encoding");
        let plain = asset(
            "assets/test.js",
            "application/javascript",
            "no-cache",
            script.as_bytes(),
            &HeaderMap::new(),
        );
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let compressed = gzipped("assets/test.js", script.as_bytes());
        assert!(compressed.len() * 10 < script.len(), "{} bytes", compressed.len());
        let mut decoded = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut decoded).unwrap();
        assert_eq!(decoded, script);
    }
}
