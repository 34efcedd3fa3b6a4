//! The node's transcoder: checks ffmpeg at start (a clear error when it is
//! missing), detects hardware encoders, runs the HLS sessions and stops
//! idle ones, and caches what ffprobe says of each source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Shared};
use omega_transcode::ffmpeg::{VideoEncoder, detect_encoders, version};
use omega_transcode::ladder::copy_rendition;
use omega_transcode::probe::{SourceInfo, keyframes, probe_json};
use omega_transcode::segments::SegmentPlan;
use omega_transcode::session::{SessionConfig, Sessions};

use crate::api::{ApiError, ApiResult};
use crate::config::TranscodeSettings;
use crate::segment_cache::SegmentCache;

/// What `read` finds kept for source `id` in `analysis` (a file read, on a
/// blocking thread).
async fn read_kept<T: Send + 'static>(
    analysis: Option<Arc<crate::source_analysis::SourceAnalysis>>,
    id: &str,
    read: fn(&crate::source_analysis::SourceAnalysis, &str) -> Option<T>,
) -> Option<T> {
    let analysis = analysis?;
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || read(&analysis, &id))
        .await
        .ok()
        .flatten()
}

/// Segments waiting to be stored; past this, new ones are not kept (they
/// are made again when asked for).
const KEEP_QUEUE: usize = 16;

/// Sources whose probe results are kept.
const INFO_CACHE_MAX: usize = 4096;
/// Sources whose copy plans are kept.
const PLAN_CACHE_MAX: usize = 256;
/// How long a request waits for a copy plan: listing a large file's
/// keyframes reads all of it, and until it is done the source is offered
/// transcoded only.
const PLAN_WAIT: Duration = Duration::from_secs(2);
/// How often idle sessions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(2);

/// A copy plan being made, or made (`None`: the video cannot be copied).
type CopyPlan = Shared<BoxFuture<'static, Option<SegmentPlan>>>;

/// Transcoding on this node.
#[derive(Debug)]
pub struct Transcoder {
    /// The HLS sessions.
    pub sessions: Sessions,
    /// The ffmpeg binary.
    pub ffmpeg: PathBuf,
    ffprobe: PathBuf,
    /// ffmpeg's version line.
    pub version: String,
    /// Encoders that worked in a test encode, best first.
    pub encoders: Vec<VideoEncoder>,
    /// Audio streams re-encoded on the fly, bounded like sessions.
    pub audio_slots: Arc<tokio::sync::Semaphore>,
    infos: Mutex<HashMap<String, Arc<SourceInfo>>>,
    /// One probe at a time per source: callers who come while it runs wait
    /// for its result instead of starting ffprobe again. An entry lives
    /// while a probe of its source runs.
    probing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    copy_plans: Mutex<HashMap<String, CopyPlan>>,
    /// Probes and keyframes kept on disk, across restarts.
    analysis: Option<Arc<crate::source_analysis::SourceAnalysis>>,
    keeper: Option<Keeper>,
    /// The budget of segments kept in the store.
    segment_cache: Arc<SegmentCache>,
    /// Kept segments' places in pack files, for zero-copy answers.
    pub kept_spans: crate::segment_cache::KeptSpans,
}

impl Transcoder {
    /// Starts transcoding: ffmpeg must run; sessions write under `work_dir`;
    /// what ffprobe says of sources is kept under `analysis_dir`; segments
    /// made are kept in `store`.
    pub async fn start(
        settings: &TranscodeSettings,
        work_dir: &Path,
        analysis_dir: Option<&Path>,
        store: Option<Arc<omega_storage::Store>>,
    ) -> anyhow::Result<Arc<Transcoder>> {
        let version = version(&settings.ffmpeg).await.with_context(|| {
            format!(
                "transcoding needs ffmpeg (install it, set [transcode] ffmpeg, or set [transcode] enabled = false); {}",
                settings.ffmpeg.display()
            )
        })?;
        omega_transcode::ffmpeg::version(&settings.ffprobe)
            .await
            .with_context(|| format!("transcoding needs ffprobe ({})", settings.ffprobe.display()))?;
        let encoders = if settings.hardware {
            detect_encoders(&settings.ffmpeg).await
        } else {
            vec![VideoEncoder::Software]
        };
        let encoder = encoders.first().cloned().unwrap_or(VideoEncoder::Software);
        tracing::info!(%version, ?encoders, "transcoding ready");
        let sessions = Sessions::new(SessionConfig {
            ffmpeg: settings.ffmpeg.clone(),
            work_dir: work_dir.to_path_buf(),
            max_sessions: settings.max_sessions,
            idle: settings.idle,
            segment_wait: Duration::from_secs(90),
            // Under hls.js's 10 s wait for a first byte; a player's own
            // slot is taken over at once, so this only covers another
            // viewer's session ending.
            slot_wait: Duration::from_secs(5),
            reuse_ahead: 4,
            encoder,
            read_rate: settings.read_rate,
        })?;
        let segment_cache = Arc::new(SegmentCache::new(settings.segment_cache_max));
        let keeper = match store {
            Some(store) if segment_cache.keeps() => Some(spawn_keeper(store, segment_cache.clone())?),
            _ => None,
        };
        let analysis = match analysis_dir {
            Some(dir) => Some(Arc::new(
                crate::source_analysis::SourceAnalysis::open(dir)
                    .with_context(|| format!("cannot open {}", dir.display()))?,
            )),
            None => None,
        };
        let transcoder = Arc::new(Transcoder {
            probing: Mutex::new(HashMap::new()),
            analysis,
            keeper,
            segment_cache,
            kept_spans: crate::segment_cache::KeptSpans::default(),
            sessions,
            ffmpeg: settings.ffmpeg.clone(),
            ffprobe: settings.ffprobe.clone(),
            version,
            encoders,
            audio_slots: Arc::new(tokio::sync::Semaphore::new(settings.max_sessions)),
            infos: Mutex::new(HashMap::new()),
            copy_plans: Mutex::new(HashMap::new()),
        });
        let reaper = Arc::downgrade(&transcoder);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(transcoder) = reaper.upgrade() else { break };
                transcoder.sessions.reap();
                metrics::gauge!("omega_transcode_sessions").set(transcoder.sessions.running() as f64);
            }
        });
        Ok(transcoder)
    }

    /// What ffprobe says of the source `id` at `path` (cached by id: ids
    /// name content, so a changed file has a new id).
    pub async fn source_info(&self, id: &str, path: &Path) -> omega_transcode::Result<Arc<SourceInfo>> {
        if let Some(info) = self.lock().get(id) {
            return Ok(info.clone());
        }
        let gate = self
            .probing
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        // A probe that ran while this caller waited answers it too.
        if let Some(info) = self.lock().get(id) {
            return Ok(info.clone());
        }
        let probed = self.probe(id, path).await.map(Arc::new);
        if let Ok(info) = &probed {
            let mut infos = self.lock();
            if infos.len() >= INFO_CACHE_MAX {
                infos.clear();
            }
            infos.insert(id.to_owned(), info.clone());
        }
        self.probing
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(id);
        probed
    }

    /// What ffprobe says of `path`: as kept on disk for `id`, or probed now
    /// (and kept).
    async fn probe(&self, id: &str, path: &Path) -> omega_transcode::Result<SourceInfo> {
        let kept = read_kept(self.analysis.clone(), id, |analysis, id| analysis.probe(id)).await;
        if let Some(info) = kept.and_then(|json| SourceInfo::from_ffprobe_json(path, &json).ok()) {
            return Ok(info);
        }
        let json = probe_json(&self.ffprobe, path).await?;
        let info = SourceInfo::from_ffprobe_json(path, &json)?;
        if let Some(analysis) = self.analysis.clone() {
            let id = id.to_owned();
            // A small file write, off the async threads.
            tokio::task::spawn_blocking(move || analysis.keep_probe(&id, &json));
        }
        Ok(info)
    }

    /// Probes source `id` and lists its keyframes, to the end, keeping both
    /// on disk: after a scan, so that a player's first request finds them.
    /// One source at a time per caller, so that it holds at most one of the
    /// processes' budget and playback keeps the rest.
    pub async fn analyse(&self, id: &str, path: &Path) -> omega_transcode::Result<()> {
        let info = self.source_info(id, path).await?;
        if let Some(plan) = self.copy_plan_listing(id, path, &info) {
            plan.await;
        }
        Ok(())
    }

    /// The segments of a copy of source `id`'s video, when its codec and
    /// keyframes allow one. Its keyframes are listed once, in the
    /// background; a caller waits at most [`PLAN_WAIT`] for them.
    pub async fn copy_plan(&self, id: &str, path: &Path, info: &SourceInfo) -> Option<SegmentPlan> {
        let plan = self.copy_plan_listing(id, path, info)?;
        tokio::time::timeout(PLAN_WAIT, plan).await.ok().flatten()
    }

    /// The copy plan of source `id`, listed or being listed; `None` when
    /// its video cannot be copied whatever its keyframes.
    fn copy_plan_listing(&self, id: &str, path: &Path, info: &SourceInfo) -> Option<CopyPlan> {
        let video = info.video.as_ref()?;
        copy_rendition(info)?;
        let plan = {
            let mut plans = self.copy_plans.lock().unwrap_or_else(|poison| poison.into_inner());
            if plans.len() >= PLAN_CACHE_MAX && !plans.contains_key(id) {
                plans.clear();
            }
            plans
                .entry(id.to_owned())
                .or_insert_with(|| {
                    let (ffprobe, path, stream, duration) =
                        (self.ffprobe.clone(), path.to_path_buf(), video.index, info.duration_s);
                    let (analysis, id) = (self.analysis.clone(), id.to_owned());
                    tokio::spawn(async move {
                        let kept = read_kept(analysis.clone(), &id, |analysis, id| analysis.keyframes(id)).await;
                        let listed = match kept {
                            Some(kept) => Ok(kept),
                            None => keyframes(&ffprobe, &path, stream).await.inspect(|listed| {
                                if let Some(analysis) = analysis {
                                    let listed = listed.clone();
                                    tokio::task::spawn_blocking(move || analysis.keep_keyframes(&id, &listed));
                                }
                            }),
                        };
                        match listed {
                            Ok(keyframes) => SegmentPlan::from_keyframes(&keyframes, duration),
                            Err(error) => {
                                tracing::warn!(path = %path.display(), %error, "cannot list keyframes; offering transcodes only");
                                None
                            }
                        }
                    })
                    .map(|joined| joined.ok().flatten())
                    .boxed()
                    .shared()
                })
                .clone()
        };
        Some(plan)
    }

    /// Audio of `source` re-encoded on the fly to `format` at `kbps` from
    /// `offset_s` seconds, as a response body (Subsonic's and Jellyfin's
    /// transcoded streams). Bounded by [`Transcoder::audio_slots`]: 503 when
    /// every slot is taken. The ffmpeg process and the slot live as long as
    /// the body: a client that goes away kills ffmpeg and frees the slot.
    pub fn audio_body(
        &self,
        source: &Path,
        format: omega_transcode::audio::AudioFormat,
        kbps: u64,
        offset_s: u64,
    ) -> ApiResult<axum::body::Body> {
        let slot = self
            .audio_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::busy("every transcoding slot is busy: try again shortly", 2000))?;
        let process = omega_transcode::audio::spawn(&self.ffmpeg, source, format, kbps, offset_s)?;
        let (child, permit) = (process.child, process.permit);
        let chunks = tokio_util::io::ReaderStream::with_capacity(process.stdout, 64 * 1024).map(move |chunk| {
            let _alive = (&child, &slot, &permit);
            chunk
        });
        Ok(axum::body::Body::from_stream(chunks))
    }

    /// Keeps a segment in the store under `reference`, in the background;
    /// dropped (to be made again if asked for) when the queue is full.
    pub fn keep_segment(&self, reference: String, bytes: Vec<u8>) {
        if let Some(keeper) = &self.keeper
            && keeper
                .queue
                .as_ref()
                .is_none_or(|queue| queue.try_send((reference, bytes)).is_err())
        {
            metrics::counter!("omega_hls_segments_unkept_total").increment(1);
        }
    }

    /// Notes that the kept segment under `reference` was read.
    pub fn segment_read(&self, reference: &str) {
        self.segment_cache.touch(reference);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SourceInfo>>> {
        self.infos.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The thread that stores made segments: one at a time, at the lowest CPU
/// priority, so that storing never slows the ffmpeg sessions that make
/// them (measured: storing alongside cost 5-12% of a session's time on two
/// cores). It keeps them within their budget too: a trim at start learns
/// what is kept, and another runs whenever the budget may be exceeded.
/// The thread that keeps segments in the store, and its queue.
#[derive(Debug)]
struct Keeper {
    /// `None` once the transcoder is dropped.
    queue: Option<std::sync::mpsc::SyncSender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keeper {
    /// Closes the queue and waits for the thread: it holds the store, whose
    /// RocksDB must be closed before the process exits (a thread still in
    /// it while the process tore down aborted it: SIGABRT, "pthread lock:
    /// Invalid argument", on one `serve` stop in four).
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the segment keeper panicked");
        }
    }
}

fn spawn_keeper(store: Arc<omega_storage::Store>, cache: Arc<SegmentCache>) -> anyhow::Result<Keeper> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(KEEP_QUEUE);
    let thread = std::thread::Builder::new()
        .name("omega-segment-keeper".into())
        .spawn(move || {
            // SAFETY: setpriority has no memory-safety preconditions; on
            // Linux, PRIO_PROCESS with who = 0 names the calling thread.
            let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            let trim = || {
                if let Err(error) = cache.trim(&store) {
                    tracing::warn!(%error, "cannot trim the kept segments");
                }
            };
            trim();
            for (reference, bytes) in receiver {
                if let Err(error) = store.ingest_bytes(&bytes, &reference) {
                    tracing::warn!(%reference, %error, "cannot keep a segment in the store");
                    continue;
                }
                cache.touch(&reference);
                if cache.added(bytes.len() as u64) {
                    trim();
                }
            }
        })
        .context("cannot start the segment keeper")?;
    Ok(Keeper {
        queue: Some(sender),
        thread: Some(thread),
    })
}
