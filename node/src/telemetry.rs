//! Prometheus metrics: the recorder, per-route HTTP counters and latency
//! histograms, and control-plane gauges refreshed at each scrape.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// Counts requests and their latency by method, route template and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    // The template (`/api/v1/items/{id}`), not the path: bounded labels.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
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
    metrics::gauge!("omega_raft_is_leader").set(if status.state == "leader" { 1.0 } else { 0.0 });
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
