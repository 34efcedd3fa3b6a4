//! The job worker: offline transcodes from the cluster's Raft job queue.
//!
//! Each node with a worker looks for a job that is queued, or whose lease
//! expired, and claims it; the claim's log index is its fencing token. While
//! ffmpeg runs, the lease is renewed every third of its length (rare Raft
//! writes); progress stays in memory, out of Raft. If a renewal is refused
//! (another node took the job after this one stalled), ffmpeg is stopped and
//! nothing is recorded. The output goes into this node's store, then
//! `FinishJob` records it, and the state machine refuses a completion with a
//! stale token, so a job has exactly one result. A source this node does not
//! hold is fetched from its node and verified chunk by chunk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use omega_consensus::command::{Command, JobOutcome, Response};
use omega_consensus::jobs;
use omega_consensus::model::{Job, JobState, NodeId};
use omega_consensus::state_machine::read;
use omega_transcode::ladder::ladder;
use serde::Serialize;

use crate::api::AppState;

/// How often the queue is looked at without a notice (a notice wakes the
/// worker at once): expired leases are found this way.
const POLL: Duration = Duration::from_secs(2);
/// How long a node leaves a job it gave back to others.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often outputs of jobs the table forgot are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Store references of job outputs start with this; then the job's id.
const OUTPUT_PREFIX: &str = "job:";
/// Output references looked at per sweep.
const SWEEP_MAX: usize = 100_000;

/// What a job asks for, as its profile string says: a whole rendition
/// (`720p`), one chunk of a chunked job (`720p#chunk:1/3`: video only, the
/// second of three time ranges on the segment plan's boundaries), or the
/// join of finished chunks (`720p#join:12,13,14`: their video in order,
/// with the source's audio encoded once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    /// The whole source in one encode.
    Whole {
        /// The rendition.
        rendition: String,
    },
    /// One chunk.
    Chunk {
        /// The rendition.
        rendition: String,
        /// Which chunk (from 0).
        index: u32,
        /// Of how many.
        count: u32,
    },
    /// The join of chunk jobs, in order.
    Join {
        /// The rendition.
        rendition: String,
        /// The chunk jobs.
        chunks: Vec<u64>,
    },
}

/// Chunks a job may be split into.
pub const CHUNKS_MAX: u32 = 64;

impl JobSpec {
    /// Parses a job's profile string.
    pub fn parse(profile: &str) -> Option<JobSpec> {
        let (rendition, part) = match profile.split_once('#') {
            Some((rendition, part)) => (rendition.to_owned(), Some(part)),
            None => (profile.to_owned(), None),
        };
        match part {
            None => Some(JobSpec::Whole { rendition }),
            Some(part) => {
                if let Some(spec) = part.strip_prefix("chunk:") {
                    let (index, count) = spec.split_once('/')?;
                    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
                    (index < count && count <= CHUNKS_MAX).then_some(JobSpec::Chunk {
                        rendition,
                        index,
                        count,
                    })
                } else {
                    let list = part.strip_prefix("join:")?;
                    let chunks: Vec<u64> = list.split(',').map(str::parse).collect::<Result<_, _>>().ok()?;
                    (!chunks.is_empty() && chunks.len() <= CHUNKS_MAX as usize)
                        .then_some(JobSpec::Join { rendition, chunks })
                }
            }
        }
    }

    /// The profile string of this spec.
    pub fn profile(&self) -> String {
        match self {
            JobSpec::Whole { rendition } => rendition.clone(),
            JobSpec::Chunk {
                rendition,
                index,
                count,
            } => format!("{rendition}#chunk:{index}/{count}"),
            JobSpec::Join { rendition, chunks } => {
                let ids: Vec<String> = chunks.iter().map(u64::to_string).collect();
                format!("{rendition}#join:{}", ids.join(","))
            }
        }
    }

    /// The rendition it makes.
    pub fn rendition(&self) -> &str {
        match self {
            JobSpec::Whole { rendition } | JobSpec::Chunk { rendition, .. } | JobSpec::Join { rendition, .. } => {
                rendition
            }
        }
    }
}

/// Whether a join's chunks are all done (`Some(Ok)`), one failed
/// (`Some(Err(why))`), or some still run (`None`).
fn join_readiness(state: &AppState, chunks: &[u64]) -> Option<Result<(), String>> {
    for chunk in chunks {
        match read::job(state.cluster.tables(), *chunk)
            .ok()
            .flatten()
            .map(|job| job.state)
        {
            Some(JobState::Done { output: Some(_), .. }) => {}
            Some(JobState::Failed { reason, .. }) => return Some(Err(format!("chunk job {chunk} failed: {reason}"))),
            None => return Some(Err(format!("chunk job {chunk} is gone"))),
            Some(_) => return None,
        }
    }
    Some(Ok(()))
}

/// How far a job running here has got.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// Seconds of output written.
    pub done_s: f64,
    /// Seconds in all.
    pub total_s: f64,
}

/// Progress of the jobs running on this node.
#[derive(Debug, Default)]
pub struct Progress(Mutex<HashMap<u64, JobProgress>>);

impl Progress {
    /// A job's progress, when it runs here.
    pub fn get(&self, job: u64) -> Option<JobProgress> {
        self.lock().get(&job).copied()
    }

    fn set(&self, job: u64, progress: JobProgress) {
        self.lock().insert(job, progress);
    }

    fn clear(&self, job: u64) {
        self.lock().remove(&job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, JobProgress>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Runs the worker until the process ends.
pub async fn run(state: AppState, lease_ms: u64, work_dir: PathBuf) {
    // Whatever a crash left behind is of no use: jobs start over.
    let _ = std::fs::remove_dir_all(&work_dir);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Jobs this node gave back, and when: left to others for a while.
    let mut released: HashMap<u64, std::time::Instant> = HashMap::new();
    let mut swept: Option<std::time::Instant> = None;
    loop {
        if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            swept = Some(std::time::Instant::now());
            match drop_forgotten_outputs(&state).await {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "outputs of forgotten jobs dropped"),
                Err(error) => tracing::warn!(%error, "outputs of forgotten jobs not dropped"),
            }
        }
        // A job queued anywhere wakes the worker at once (gossip); the
        // poll catches expired leases and notices that were missed.
        tokio::select! {
            _ = tick.tick() => {}
            () = state.job_wake.notified() => {}
        }
        released.retain(|_, at| at.elapsed() < RETRY_AFTER);
        let claimed = match claim_next(&state, lease_ms, &released).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::debug!(%error, "no job claimed");
                None
            }
        };
        if let Some((job, fencing)) = claimed {
            let id = job.id;
            tracing::info!(job = id, fencing, "job claimed");
            if let Err(error) = execute(&state, &job, fencing, lease_ms, &work_dir).await {
                tracing::warn!(job = id, %error, "job not finished here");
                // Bounded: entries expire after RETRY_AFTER.
                released.insert(id, std::time::Instant::now());
            }
            state.job_progress.clear(id);
            let _ = std::fs::remove_dir_all(work_dir.join(format!("job-{id}")));
        }
    }
}

/// Drops this node's outputs of jobs the table no longer holds (it keeps
/// at most `JOBS_MAX` and forgets the oldest finished first), then
/// collects the garbage; how many were dropped. A job is in this node's
/// table before its worker claims it, and leaves it only when forgotten,
/// so an output being made is never taken for a forgotten one.
async fn drop_forgotten_outputs(state: &AppState) -> anyhow::Result<usize> {
    let Some(store) = state.store.clone() else {
        return Ok(0);
    };
    let cluster = state.cluster.clone();
    // Index and table reads, removals and gc: all blocking.
    let dropped = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let outputs = store.references(OUTPUT_PREFIX, SWEEP_MAX)?;
        let forgotten = forgotten_outputs(outputs.into_iter().map(|(reference, _)| reference), |id| {
            read::job(cluster.tables(), id).map(|job| job.is_some())
        })?;
        for reference in &forgotten {
            store.remove_reference(reference)?;
        }
        if !forgotten.is_empty() {
            store.gc()?;
        }
        Ok(forgotten.len())
    })
    .await??;
    Ok(dropped)
}

/// The output references among `references` whose job is not `known`.
fn forgotten_outputs(
    references: impl IntoIterator<Item = String>,
    known: impl Fn(u64) -> std::io::Result<bool>,
) -> std::io::Result<Vec<String>> {
    let mut forgotten = Vec::new();
    for reference in references {
        let id = reference
            .strip_prefix(OUTPUT_PREFIX)
            .and_then(|id| id.parse::<u64>().ok());
        if let Some(id) = id
            && !known(id)?
        {
            forgotten.push(reference);
        }
    }
    Ok(forgotten)
}

/// Claims the oldest job that is queued or whose lease expired.
async fn claim_next(
    state: &AppState,
    lease_ms: u64,
    released: &HashMap<u64, std::time::Instant>,
) -> anyhow::Result<Option<(Job, u64)>> {
    let candidates = jobs::claimable(read::jobs(state.cluster.tables())?, state.clock.now_ms(), |job| {
        released.contains_key(&job.id)
            // A join waits for its chunks (or claims to record their failure).
            || matches!(JobSpec::parse(&job.profile), Some(JobSpec::Join { chunks, .. }) if join_readiness(state, &chunks).is_none())
    });
    for job in candidates {
        let command = Command::ClaimJob {
            job: job.id,
            node: state.cluster.id(),
            now_ms: state.clock.now_ms(),
            lease_ms,
        };
        match state.cluster.write(command).await? {
            Response::Lease { fencing, .. } => {
                let job = read::job(state.cluster.tables(), job.id)?.unwrap_or(job);
                return Ok(Some((job, fencing)));
            }
            // Another node was first; try the next.
            Response::Rejected(_) => {}
            other => bail!("unexpected answer {other:?}"),
        }
    }
    Ok(None)
}

/// Finishes a job with `outcome`; refused when the lease was lost.
async fn finish(state: &AppState, job: u64, fencing: u64, outcome: JobOutcome) -> anyhow::Result<()> {
    let command = Command::FinishJob {
        job,
        fencing,
        outcome,
        now_ms: state.clock.now_ms(),
    };
    match state.cluster.write(command).await? {
        Response::Done => {
            // A join may be waiting for this chunk.
            crate::gossip::announce_job(state);
            Ok(())
        }
        Response::Rejected(rejection) => bail!("the result was refused: {rejection}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

async fn execute(state: &AppState, job: &Job, fencing: u64, lease_ms: u64, work_dir: &Path) -> anyhow::Result<()> {
    if jobs::out_of_attempts(job) {
        let reason = format!("gave up after {} attempts", job.attempts - 1);
        return finish(state, job.id, fencing, JobOutcome::Failed { reason }).await;
    }
    let transcoder = state.transcoder.clone().context("transcoding is off")?;
    let dir = work_dir.join(format!("job-{}", job.id));
    std::fs::create_dir_all(&dir)?;
    let prepared = tokio::select! {
        prepared = prepare(state, job, &dir) => prepared,
        lost = hold_lease(state, job.id, fencing, lease_ms) => return Err(lost),
    };
    let (source, info, rendition) = match prepared {
        Ok(prepared) => prepared,
        Err(Failure::Permanent(reason)) => {
            return finish(state, job.id, fencing, JobOutcome::Failed { reason }).await;
        }
        Err(Failure::Retry(error)) => {
            // Let another node (or a later try) have it.
            finish(state, job.id, fencing, JobOutcome::Released).await?;
            return Err(error);
        }
    };
    let spec = JobSpec::parse(&job.profile).context("unreadable profile")?;
    let (_, codec) = omega_transcode::offline::VideoCodec::split_profile(spec.rendition())
        .context("unknown codec in the profile")?;
    let read_rate = transcoder.sessions.config().read_rate;
    // Chunks are cut on whole target-length segments: no short lead (that
    // is for a player's first request), and whole seconds, which whole
    // frames fall on at common frame rates.
    let plan =
        omega_transcode::segments::SegmentPlan::with_target(info.duration_s, omega_transcode::segments::TARGET_SECONDS);
    let (out, args) = match &spec {
        JobSpec::Whole { .. } => {
            let out = dir.join("out.mp4");
            let args = omega_transcode::offline::file_args(
                &source,
                &info,
                &rendition,
                codec,
                &omega_transcode::ffmpeg::VideoEncoder::Software,
                &out,
                read_rate,
            );
            (out, args)
        }
        JobSpec::Chunk { index, count, .. } => {
            let out = dir.join("chunk.mp4");
            let range = chunk_range(&plan, *index, *count);
            match omega_transcode::offline::chunk_args(&source, &info, &rendition, codec, range, &out, read_rate) {
                Ok(args) => (out, args),
                Err(error) => {
                    let reason = error.to_string();
                    return finish(state, job.id, fencing, JobOutcome::Failed { reason }).await;
                }
            }
        }
        JobSpec::Join { chunks, .. } => {
            if let Some(Err(reason)) = join_readiness(state, chunks) {
                return finish(state, job.id, fencing, JobOutcome::Failed { reason }).await;
            }
            let video = dir.join("video.mp4");
            let gathered = tokio::select! {
                gathered = gather_chunks(state, chunks, &video, &dir) => gathered,
                lost = hold_lease(state, job.id, fencing, lease_ms) => return Err(lost),
            };
            if let Err(error) = gathered {
                finish(state, job.id, fencing, JobOutcome::Released).await?;
                return Err(error);
            }
            let out = dir.join("out.mp4");
            match omega_transcode::offline::join_args(&video, &source, &info, &rendition, &out) {
                Ok(args) => (out, args),
                Err(error) => {
                    let reason = error.to_string();
                    return finish(state, job.id, fencing, JobOutcome::Failed { reason }).await;
                }
            }
        }
    };
    let total_s = match &spec {
        JobSpec::Chunk { index, count, .. } => {
            let (start, end) = chunk_range(&plan, *index, *count);
            end.unwrap_or(info.duration_s) - start
        }
        _ => info.duration_s,
    };
    let progress = &state.job_progress;
    progress.set(job.id, JobProgress { done_s: 0.0, total_s });
    let encoded = tokio::select! {
        encoded = omega_transcode::offline::run(&transcoder.ffmpeg, &args, |done_s| {
            progress.set(job.id, JobProgress { done_s, total_s });
        }) => encoded,
        lost = hold_lease(state, job.id, fencing, lease_ms) => return Err(lost),
    };
    if let Err(error) = encoded {
        let reason = crate::cli::one_line(&anyhow::anyhow!(error));
        return finish(state, job.id, fencing, JobOutcome::Failed { reason }).await;
    }
    let store = state.store.clone().context("no store")?;
    let reference = format!("{OUTPUT_PREFIX}{}", job.id);
    let ingest = {
        let out = out.clone();
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || store.ingest_file_as(&out, &reference, &mut |_| {}))
    };
    let report = tokio::select! {
        report = ingest => report??,
        lost = hold_lease(state, job.id, fencing, lease_ms) => return Err(lost),
    };
    // The output is durable in the store; now record it (once: a stale
    // token is refused by the state machine).
    let finished = finish(
        state,
        job.id,
        fencing,
        JobOutcome::Done {
            output: Some(*report.blob.as_bytes()),
        },
    )
    .await;
    if finished.is_err() {
        // A failed write may still have committed: drop the output only if
        // the job does not record it.
        let recorded = read::job(state.cluster.tables(), job.id).ok().flatten().is_some_and(
            |job| matches!(job.state, JobState::Done { output: Some(blob), .. } if blob == *report.blob.as_bytes()),
        );
        if !recorded && let Some(store) = state.store.clone() {
            let _ = store.remove_reference(&reference);
        }
    }
    finished
}

enum Failure {
    /// The job cannot succeed (no such item, unknown profile).
    Permanent(String),
    /// This node cannot do it now.
    Retry(anyhow::Error),
}

/// The source file (local, or fetched and verified), what it holds, and the
/// rendition the profile names.
async fn prepare(
    state: &AppState,
    job: &Job,
    dir: &Path,
) -> Result<
    (
        PathBuf,
        Arc<omega_transcode::probe::SourceInfo>,
        omega_transcode::ladder::Rendition,
    ),
    Failure,
> {
    let transcoder = state
        .transcoder
        .clone()
        .ok_or_else(|| Failure::Retry(anyhow::anyhow!("transcoding is off")))?;
    let item = read::item(state.cluster.tables(), job.item)
        .map_err(|error| Failure::Retry(error.into()))?
        .ok_or_else(|| Failure::Permanent(format!("item {} is gone", job.item)))?;
    let media = item
        .fields
        .media
        .first()
        .ok_or_else(|| Failure::Permanent("the item has no file".into()))?;
    let (path, source_id) = if media.node == state.cluster.id() {
        let id = media.blob.map(hex::encode).unwrap_or_else(|| media.path.clone());
        (PathBuf::from(&media.path), id)
    } else {
        let blob = media
            .blob
            .map(hex::encode)
            .ok_or_else(|| Failure::Retry(anyhow::anyhow!("the source is not indexed yet")))?;
        let blob_id: omega_storage::BlobId = blob
            .parse()
            .map_err(|_| Failure::Permanent(format!("bad blob id {blob}")))?;
        let dest = dir.join("source");
        let via = crate::relay::fetch(state, blob_id, media.node, &dest)
            .await
            .map_err(Failure::Retry)?;
        tracing::info!(job = job.id, ?via, "source fetched and verified");
        (dest, blob)
    };
    let info = transcoder
        .source_info(&source_id, &path)
        .await
        .map_err(|error| Failure::Permanent(error.to_string()))?;
    let spec = JobSpec::parse(&job.profile)
        .ok_or_else(|| Failure::Permanent(format!("unreadable profile {:?}", job.profile)))?;
    let (rendition_name, _) = omega_transcode::offline::VideoCodec::split_profile(spec.rendition())
        .ok_or_else(|| Failure::Permanent(format!("unknown codec in {:?}", spec.rendition())))?;
    let rendition = ladder(&info)
        .into_iter()
        .find(|rendition| rendition.name == rendition_name)
        .ok_or_else(|| {
            let names: Vec<String> = ladder(&info).into_iter().map(|rendition| rendition.name).collect();
            Failure::Permanent(format!(
                "no profile {:?} for this source: {}",
                spec.rendition(),
                names.join(", ")
            ))
        })?;
    Ok((path, info, rendition))
}

/// The time range of chunk `index` of `count`: on the segment plan's
/// boundaries, the last one open-ended.
pub fn chunk_range(plan: &omega_transcode::segments::SegmentPlan, index: u32, count: u32) -> (f64, Option<f64>) {
    debug_assert!(index < count && count > 0);
    let segments = plan.count();
    let first = segments * index / count;
    let start = plan.start_s(first);
    if index + 1 >= count {
        return (start, None);
    }
    (start, Some(plan.start_s(segments * (index + 1) / count)))
}

/// Joins the outputs of the chunk jobs `chunks`, in order, into `video`
/// (one fragmented MP4): from this node's store, or fetched (verified) from
/// the node that made each.
async fn gather_chunks(state: &AppState, chunks: &[u64], video: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let store = state.store.clone().context("no store")?;
    let mut joined = std::io::BufWriter::new(std::fs::File::create(video)?);
    for (position, chunk) in chunks.iter().enumerate() {
        let job = read::job(state.cluster.tables(), *chunk)?.with_context(|| format!("chunk job {chunk} is gone"))?;
        let JobState::Done {
            node,
            output: Some(blob),
            ..
        } = job.state
        else {
            bail!("chunk job {chunk} is not done");
        };
        let part = dir.join(format!("chunk-{chunk}.mp4"));
        if node == state.cluster.id() {
            let store = store.clone();
            let blob_id = omega_storage::BlobId::from_slice(&blob).context("bad blob id")?;
            let target = part.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let size = store.blob(&blob_id)?.size;
                let mut file = std::io::BufWriter::new(std::fs::File::create(&target)?);
                store.read_range_to(&blob_id, 0, size, &mut file)?;
                file.flush()?;
                Ok(())
            })
            .await??;
        } else {
            let blob_id = omega_storage::BlobId::from_slice(&blob).context("bad blob id")?;
            crate::relay::fetch(state, blob_id, node, &part).await?;
        }
        let reader = std::io::BufReader::new(std::fs::File::open(&part)?);
        omega_transcode::offline::append_fragments(&mut joined, reader, position == 0)
            .with_context(|| format!("chunk job {chunk}'s output is not a fragmented MP4"))?;
        std::fs::remove_file(&part)?;
    }
    joined.flush()?;
    joined.get_ref().sync_all()?;
    Ok(())
}

/// The HTTP address of member `node`.
pub(crate) fn owner_http(state: &AppState, node: NodeId) -> anyhow::Result<String> {
    state
        .cluster
        .status()
        .members
        .into_iter()
        .find(|member| member.id == node)
        .map(|member| member.http_addr)
        .with_context(|| format!("node {node} holds the source but is not a member"))
}

/// Renews the lease every third of its length; returns (an error) only
/// when a renewal is refused or keeps failing past the lease's end.
async fn hold_lease(state: &AppState, job: u64, fencing: u64, lease_ms: u64) -> anyhow::Error {
    let every = jobs::renew_every(lease_ms);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let command = Command::RenewLease {
            job,
            fencing,
            now_ms: state.clock.now_ms(),
            lease_ms,
        };
        match state.cluster.write(command).await {
            Ok(Response::Lease { .. } | Response::Done) => last_renewed = tokio::time::Instant::now(),
            Ok(Response::Rejected(rejection)) => return anyhow::anyhow!("lease lost: {rejection}"),
            Ok(other) => return anyhow::anyhow!("unexpected answer {other:?}"),
            Err(error) => {
                if jobs::lease_lapsed(last_renewed.elapsed(), lease_ms) {
                    return anyhow::anyhow!("lease expired while renewals failed: {error}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outputs_of_forgotten_jobs_are_dropped() {
        let references = ["job:1", "job:2", "job:x", "relay:3", "job:30"].map(String::from);
        let forgotten = super::forgotten_outputs(references, |id| Ok(id == 2)).unwrap();
        assert_eq!(forgotten, ["job:1", "job:30"]);
    }

    #[test]
    fn specs_round_trip_and_refuse_nonsense() {
        for profile in ["720p", "480p#chunk:2/3", "audio#join:4,5,6"] {
            assert_eq!(
                JobSpec::parse(profile).map(|spec| spec.profile()).as_deref(),
                Some(profile)
            );
        }
        for bad in [
            "720p#chunk:3/3",
            "720p#chunk:1/99",
            "720p#join:",
            "720p#join:x",
            "720p#other",
        ] {
            assert_eq!(JobSpec::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn chunks_tile_the_source_on_plan_boundaries() {
        let plan = omega_transcode::segments::SegmentPlan::with_target(20.0, 4);
        let ranges: Vec<(f64, Option<f64>)> = (0..3).map(|index| chunk_range(&plan, index, 3)).collect();
        assert_eq!(ranges, [(0.0, Some(4.0)), (4.0, Some(12.0)), (12.0, None)]);
    }
}
