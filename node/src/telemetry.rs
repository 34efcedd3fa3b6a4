//! Prometheus metrics: the recorder, per-route HTTP counters and latency
//! histograms, and gauges refreshed at each scrape (Raft, the store).
//! Every request runs in a tracing span with a request id, taken from
//! `X-Request-Id` or made here, and echoed in the answer; calls this node
//! makes to other members carry the same id (see [`REQUEST_ID`]), so one
//! id follows a request across nodes in the logs.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::api::{ApiError, AppState};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; `None` if another recorder was
/// installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

tokio::task_local! {
    /// The id of the request being answered, for calls to other members.
    pub static REQUEST_ID: String;
}

/// The request id header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The current request's id, when answering one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A request id from a client: short, printable, or a new one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned)
}

/// Counts requests and their latency by method, route template and status,
/// inside a span that carries the request id.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    // The template (`/api/v1/items/{id}`), not the path: bounded labels.
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || {
            // Jellyfin's routes are answered by a middleware, not a route.
            let first = request
                .uri()
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            if crate::jellyfin::is_jellyfin_root(first) {
                "jellyfin".to_owned()
            } else {
                "unmatched".to_owned()
            }
        },
        |path| path.as_str().to_owned(),
    );
    let id = request_id(&request);
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request).instrument(span)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("omega_http_requests_total", &labels).increment(1);
    metrics::histogram!("omega_http_request_duration_seconds", &labels[..2]).record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = handle() else {
        return ApiError::internal("no metrics recorder").into_response();
    };
    let status = state.cluster.status();
    let gauge = |name: &'static str, value: Option<u64>| {
        metrics::gauge!(name).set(value.map_or(f64::NAN, |value| value as f64));
    };
    gauge("omega_raft_term", Some(status.term));
    gauge("omega_raft_last_log_index", status.last_log_index);
    gauge("omega_raft_commit_index", status.commit_index);
    gauge("omega_raft_applied_index", status.applied_index);
    gauge("omega_raft_snapshot_index", status.snapshot_index);
    gauge("omega_raft_members", Some(status.members.len() as u64));
    gauge(
        "omega_raft_apply_lag",
        status
            .commit_index
            .map(|commit| commit.saturating_sub(status.applied_index.unwrap_or(0))),
    );
    metrics::gauge!("omega_raft_is_leader").set(if status.state == "leader" { 1.0 } else { 0.0 });
    for member in &status.members {
        if let Some(lag) = member.lag {
            metrics::gauge!("omega_raft_replication_lag", "member" => member.id.to_string()).set(lag as f64);
        }
    }
    if let Some(store) = state.store.clone()
        && let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || store.stats()).await
    {
        for (tier, bytes) in [
            ("hot", stats.hot_bytes),
            ("cold", stats.cold_bytes),
            ("in_place", stats.in_place_bytes),
        ] {
            metrics::gauge!("omega_store_bytes", "tier" => tier).set(bytes as f64);
        }
        metrics::gauge!("omega_store_logical_bytes").set(stats.logical_bytes as f64);
        metrics::gauge!("omega_store_stored_bytes").set(stats.stored_bytes as f64);
        metrics::gauge!("omega_store_chunks").set(stats.chunks as f64);
        metrics::gauge!("omega_store_blobs").set(stats.blobs as f64);
        metrics::gauge!("omega_store_quarantined_chunks").set(stats.quarantined_chunks as f64);
        // 1 (nothing saved) while nothing is stored.
        metrics::gauge!("omega_store_dedup_ratio").set(stats.dedup_ratio().unwrap_or(1.0));
    }
    if let Some(transcoder) = &state.transcoder {
        let busy = transcoder
            .sessions
            .config()
            .max_sessions
            .saturating_sub(transcoder.audio_slots.available_permits());
        metrics::gauge!("omega_transcode_audio_streams").set(busy as f64);
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
