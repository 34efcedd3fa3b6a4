//! Audio on the fly, for clients that ask a music file in another format
//! or at a lower bit rate (Subsonic's `stream?format=&maxBitRate=`): ffmpeg
//! reads the file and writes MP3 or Opus to a pipe as it goes.

use std::path::Path;

use tokio::process::{Child, ChildStdout};

use crate::error::{Result, TranscodeError};

/// What a stream is encoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// MP3 (LAME), plays everywhere.
    Mp3,
    /// Opus in Ogg, better at low rates.
    Opus,
}

impl AudioFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Opus => "audio/ogg",
        }
    }

    fn codec_args(self) -> [&'static str; 4] {
        match self {
            AudioFormat::Mp3 => ["-c:a", "libmp3lame", "-f", "mp3"],
            AudioFormat::Opus => ["-c:a", "libopus", "-f", "ogg"],
        }
    }
}

/// The ffmpeg arguments of an audio stream of `source` at `kbps` from
/// `offset_s` seconds.
pub fn args(source: &Path, format: AudioFormat, kbps: u64, offset_s: u64) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    if offset_s > 0 {
        args.extend(["-ss".into(), offset_s.to_string()]);
    }
    args.extend(["-i".into(), source.to_string_lossy().into_owned()]);
    args.extend(["-map".into(), "0:a:0".into(), "-vn".into(), "-sn".into()]);
    args.extend(["-map_metadata".into(), "-1".into()]);
    args.extend(["-b:a".into(), format!("{kbps}k"), "-ac".into(), "2".into()]);
    args.extend(format.codec_args().iter().map(|arg| (*arg).to_owned()));
    args.push("pipe:1".into());
    args
}

/// A running audio stream: read `stdout`; dropping `child` kills ffmpeg.
#[derive(Debug)]
pub struct AudioProcess {
    /// The ffmpeg process (killed on drop).
    pub child: Child,
    /// Its encoded output.
    pub stdout: ChildStdout,
    /// Its place in the media-process budget, held while it runs.
    pub permit: crate::budget::ProcessPermit,
}

/// Starts ffmpeg on `source`.
pub fn spawn(ffmpeg: &Path, source: &Path, format: AudioFormat, kbps: u64, offset_s: u64) -> Result<AudioProcess> {
    let permit = crate::budget::processes().try_acquire()?;
    let mut child = tokio::process::Command::new(ffmpeg)
        .args(args(source, format, kbps, offset_s))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| TranscodeError::Spawn {
            tool: ffmpeg.display().to_string(),
            source,
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| TranscodeError::Ffmpeg("ffmpeg's output pipe is missing".into()))?;
    Ok(AudioProcess { child, stdout, permit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_stereo_at_the_asked_rate() {
        let args = args(Path::new("/m/a.flac"), AudioFormat::Opus, 96, 30).join(" ");
        assert!(args.contains("-ss 30 -i /m/a.flac"), "{args}");
        assert!(args.contains("-b:a 96k -ac 2 -c:a libopus -f ogg pipe:1"), "{args}");
        assert!(!self::args(Path::new("x"), AudioFormat::Mp3, 128, 0).contains(&"-ss".to_owned()));
    }
}
