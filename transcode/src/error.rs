//! Transcoding errors.

use std::path::PathBuf;

/// A transcoding failure.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// A tool (ffmpeg, ffprobe) could not be started.
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// ffprobe could not read the source.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The source.
        path: PathBuf,
        /// What ffprobe said.
        reason: String,
    },
    /// The source has nothing to play.
    #[error("{0}: no audio or video stream")]
    NoStreams(PathBuf),
    /// ffmpeg stopped before producing what was asked.
    #[error("ffmpeg failed: {0}")]
    Ffmpeg(String),
    /// Too many sessions run; try again later.
    #[error("all {0} transcoding slots are busy")]
    Busy(usize),
    /// Every place in the media-process budget stayed taken; try again later.
    #[error("all {0} media processes (ffmpeg, ffprobe) are busy")]
    ProcessesBusy(usize),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Waiting took too long.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    /// File system trouble in the work directory.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Results of this crate.
pub type Result<T, E = TranscodeError> = std::result::Result<T, E>;
