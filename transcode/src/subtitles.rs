//! Text subtitles as WebVTT, converted by ffmpeg from an embedded stream or
//! a sidecar file (SRT, ASS, VTT).

use std::path::Path;
use std::time::Duration;

use crate::error::{Result, TranscodeError};

/// Conversion runs at most this long.
const DEADLINE: Duration = Duration::from_secs(60);
/// Largest WebVTT kept.
const VTT_MAX_BYTES: usize = 16 << 20;

/// Where the subtitles come from.
#[derive(Debug, Clone, Copy)]
pub enum SubtitleSource<'a> {
    /// Stream `index` (among all streams) of the media file.
    Embedded(&'a Path, u32),
    /// A sidecar subtitle file.
    Sidecar(&'a Path),
}

/// The subtitles as WebVTT text.
pub async fn webvtt(ffmpeg: &Path, source: SubtitleSource<'_>) -> Result<Vec<u8>> {
    let _permit = crate::budget::processes().acquire().await?;
    let mut command = tokio::process::Command::new(ffmpeg);
    command.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    match source {
        SubtitleSource::Embedded(path, index) => {
            command.arg("-i").arg(path).args(["-map", &format!("0:{index}")]);
        }
        SubtitleSource::Sidecar(path) => {
            command.arg("-i").arg(path).args(["-map", "0:s:0"]);
        }
    }
    command
        .args(["-c:s", "webvtt", "-f", "webvtt", "pipe:1"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .map_err(|_| TranscodeError::Timeout(DEADLINE, "subtitle conversion".into()))?
        .map_err(|source| TranscodeError::Spawn {
            tool: ffmpeg.display().to_string(),
            source,
        })?;
    if !output.status.success() || !output.stdout.starts_with(b"WEBVTT") {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(TranscodeError::Ffmpeg(
            stderr.lines().next().unwrap_or("no WebVTT produced").trim().to_owned(),
        ));
    }
    if output.stdout.len() > VTT_MAX_BYTES {
        return Err(TranscodeError::Ffmpeg("the subtitles are too large".into()));
    }
    Ok(output.stdout)
}
