//! Transcode jobs (administrators): queue one, list them, see one, fetch
//! its output. The queue lives in Raft; progress comes from the node that
//! runs the job (held in memory there, not replicated).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use omega_consensus::command::Response as RaftResponse;
use omega_consensus::model::{Job, JobState};
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::extract::{Body, PathParam};
use super::{ApiError, ApiResult, AppState};
use crate::jobs::JobProgress;

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Id.
    pub id: u64,
    /// The item transcoded.
    pub item: u64,
    /// The profile (rendition name, e.g. `720p`).
    pub profile: String,
    /// `queued`, `leased`, `done` or `failed`.
    pub state: &'static str,
    /// The node holding the lease, or that finished it.
    pub node: Option<u64>,
    /// Lease expiry (leased jobs).
    pub lease_expires_ms: Option<u64>,
    /// Claims so far.
    pub attempts: u32,
    /// Output blob (done jobs).
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was queued.
    pub created_ms: u64,
    /// Progress, when the job runs on the node answering.
    pub progress: Option<JobProgress>,
}

/// The API's view of a job.
pub fn view(state: &AppState, job: &Job) -> JobView {
    let (node, lease_expires_ms, output, error) = match &job.state {
        JobState::Queued => (None, None, None, None),
        JobState::Leased { node, expires_ms, .. } => (Some(*node), Some(*expires_ms), None, None),
        JobState::Done { node, output, .. } => (Some(*node), None, output.map(hex::encode), None),
        JobState::Failed { reason, .. } => (None, None, None, Some(reason.clone())),
    };
    JobView {
        id: job.id,
        item: job.item,
        profile: job.profile.clone(),
        state: job.state.name(),
        node,
        lease_expires_ms,
        attempts: job.attempts,
        output,
        error,
        created_ms: job.created_ms,
        progress: state.job_progress.get(job.id),
    }
}

/// `POST /api/v1/jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewJob {
    /// The item (a film, an episode, a track, an audiobook).
    pub item: u64,
    /// The rendition to make: `1080p`, `720p`, `480p`, `360p` or `audio`;
    /// H.264 unless it ends in `-hevc` or `-vp9` (e.g. `720p-hevc`).
    #[schema(pattern = "^((1080p|720p|480p|360p)(-hevc|-vp9)?|audio)$")]
    pub profile: String,
    /// Split the video into this many chunks, encoded by any nodes and then
    /// joined (2 to 64; ignored for `audio`). The answer is the join job.
    #[schema(minimum = 2, maximum = 64)]
    pub chunks: Option<u32>,
}

/// Queues an offline transcode; any node's worker may run it.
#[utoipa::path(post, path = "/api/v1/jobs", tags = ["jobs", "admin"], security(("bearer" = [])), request_body = NewJob, responses((status = 201, body = JobView), (status = 400), (status = 404), (status = 503, description = "The job table is full of unfinished jobs")))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(request): Body<NewJob>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let id = match request.chunks {
        Some(chunks) => enqueue_chunked(&state, request.item, &request.profile, chunks).await?,
        None => enqueue(&state, request.item, &request.profile).await?,
    };
    let job = read::job(state.cluster.tables(), id)?.ok_or_else(|| ApiError::internal("the job vanished"))?;
    Ok((StatusCode::CREATED, Json(view(&state, &job))))
}

/// Profiles a job may name.
const PROFILES: &[&str] = &["1080p", "720p", "480p", "360p", "audio"];

/// Queues a job after checking the item and the profile; its id.
pub async fn enqueue(state: &AppState, item: u64, profile: &str) -> ApiResult<u64> {
    enqueue_spec(state, item, profile, profile).await
}

/// Queues a job whose spec string is `spec` for rendition `profile`.
async fn enqueue_spec(state: &AppState, item: u64, profile: &str, spec: &str) -> ApiResult<u64> {
    let known = omega_transcode::offline::VideoCodec::split_profile(profile).is_some_and(|(rendition, codec)| {
        PROFILES.contains(&rendition) && (rendition != "audio" || codec == omega_transcode::offline::VideoCodec::H264)
    });
    if !known {
        return Err(ApiError::bad_request(format!(
            "profile {profile:?}: use one of {}, optionally with -hevc or -vp9",
            PROFILES.join(", ")
        )));
    }
    let found = read::item(state.cluster.tables(), item)?.ok_or_else(|| ApiError::not_found("no such item"))?;
    if found.fields.media.is_empty() {
        return Err(ApiError::bad_request("this item has no file to transcode"));
    }
    match state
        .write(omega_consensus::command::Command::EnqueueJob {
            item,
            profile: spec.to_owned(),
            now_ms: state.clock.now_ms(),
        })
        .await?
    {
        RaftResponse::Created(id) => {
            crate::gossip::announce_job(state);
            Ok(id)
        }
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// Queues a job split into `chunks` chunk jobs and the join job that
/// waits for them; the join job's id.
pub async fn enqueue_chunked(state: &AppState, item: u64, profile: &str, chunks: u32) -> ApiResult<u64> {
    if !(2..=crate::jobs::CHUNKS_MAX).contains(&chunks) {
        return Err(ApiError::bad_request(format!(
            "chunks: 2 to {}",
            crate::jobs::CHUNKS_MAX
        )));
    }
    if profile.starts_with("audio") {
        // Chunks split video encoding; an audio rendition is one quick job.
        return enqueue(state, item, profile).await;
    }
    // All or nothing, as far as can be told beforehand: chunk jobs without
    // their join would run for nothing.
    let unfinished = read::jobs(state.cluster.tables())?
        .iter()
        .filter(|job| !job.state.is_finished())
        .count();
    if unfinished + chunks as usize + 1 > omega_consensus::model::JOBS_MAX {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{unfinished} jobs are unfinished: {} more would pass the table's {}",
                chunks + 1,
                omega_consensus::model::JOBS_MAX
            ),
        ));
    }
    let mut ids = Vec::new();
    for index in 0..chunks {
        let spec = crate::jobs::JobSpec::Chunk {
            rendition: profile.to_owned(),
            index,
            count: chunks,
        };
        ids.push(enqueue_spec(state, item, profile, &spec.profile()).await?);
    }
    let join = crate::jobs::JobSpec::Join {
        rendition: profile.to_owned(),
        chunks: ids,
    };
    enqueue_spec(state, item, profile, &join.profile()).await
}

/// Every job, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tags = ["jobs", "admin"], security(("bearer" = [])), responses((status = 200, body = Vec<JobView>)))]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Vec<JobView>>> {
    let mut jobs = read::jobs(state.cluster.tables())?;
    jobs.sort_by_key(|job| std::cmp::Reverse(job.id));
    Ok(Json(jobs.iter().map(|job| view(&state, job)).collect()))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tags = ["jobs", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, body = JobView), (status = 404)))]
pub async fn detail(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Json<JobView>> {
    let job = read::job(state.cluster.tables(), id)?.ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok(Json(view(&state, &job)))
}

/// A finished job's output (MP4), from the store of the node that made it.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/output", tags = ["jobs", "admin"], security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 200, description = "The MP4 file", content_type = "video/mp4"), (status = 404), (status = 409, description = "Not done, or held by another node")))]
pub async fn output(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(id): PathParam<u64>,
) -> ApiResult<Response> {
    let job = read::job(state.cluster.tables(), id)?.ok_or_else(|| ApiError::not_found("no such job"))?;
    let JobState::Done {
        node,
        output: Some(blob),
        ..
    } = job.state
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} is {}", job.state.name()),
        ));
    };
    if node != state.cluster.id() {
        return Err(
            ApiError::new(StatusCode::CONFLICT, format!("the output is on node {node}"))
                .with(serde_json::json!({ "node": node })),
        );
    }
    let store = state.store.clone().ok_or_else(|| ApiError::not_found("no store"))?;
    let blob = omega_storage::BlobId::from_slice(&blob).ok_or_else(|| ApiError::internal("bad blob id"))?;
    let size = store
        .blob(&blob)
        .map_err(|error| ApiError::not_found(error.to_string()))?
        .size;
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        super::items::blob_body(store, blob, 0, size),
    )
        .into_response())
}
