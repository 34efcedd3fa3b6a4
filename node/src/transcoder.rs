//! The node's transcoder: checks ffmpeg at start (a clear error when it is
//! missing), detects hardware encoders, runs the HLS sessions and stops
//! idle ones, and caches what ffprobe says of each source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use omega_transcode::ffmpeg::{VideoEncoder, detect_encoders, version};
use omega_transcode::probe::{SourceInfo, probe};
use omega_transcode::session::{SessionConfig, Sessions};

use crate::config::TranscodeSettings;

/// Sources whose probe results are kept.
const INFO_CACHE_MAX: usize = 4096;
/// How often idle sessions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(2);

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
    infos: Mutex<HashMap<String, Arc<SourceInfo>>>,
}

impl Transcoder {
    /// Starts transcoding: ffmpeg must run; sessions write under `work_dir`.
    pub async fn start(settings: &TranscodeSettings, work_dir: &Path) -> anyhow::Result<Arc<Transcoder>> {
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
            reuse_ahead: 4,
            encoder,
            read_rate: settings.read_rate,
        })?;
        let transcoder = Arc::new(Transcoder {
            sessions,
            ffmpeg: settings.ffmpeg.clone(),
            ffprobe: settings.ffprobe.clone(),
            version,
            encoders,
            infos: Mutex::new(HashMap::new()),
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
        let info = Arc::new(probe(&self.ffprobe, path).await?);
        let mut infos = self.lock();
        if infos.len() >= INFO_CACHE_MAX {
            infos.clear();
        }
        infos.insert(id.to_owned(), info.clone());
        Ok(info)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SourceInfo>>> {
        self.infos.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}
