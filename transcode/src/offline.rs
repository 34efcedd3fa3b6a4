//! Offline transcodes: one rendition of a whole source into an MP4 file
//! (fast start), with progress read from ffmpeg's `-progress` output. The
//! caller cancels by dropping the future (the process is killed and
//! reaped).

use std::path::Path;

use tokio::io::AsyncBufReadExt;

use crate::error::{Result, TranscodeError};
use crate::ffmpeg::VideoEncoder;
use crate::ladder::Rendition;
use crate::probe::SourceInfo;

/// The ffmpeg arguments that write `rendition` of `source` to `out` (MP4).
pub fn file_args(
    source: &Path,
    info: &SourceInfo,
    rendition: &Rendition,
    encoder: &VideoEncoder,
    out: &Path,
    read_rate: Option<f64>,
) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-y"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    if let Some(rate) = read_rate {
        args.extend(["-readrate".into(), format!("{rate}")]);
    }
    args.extend(["-i".into(), source.to_string_lossy().into_owned()]);
    match (&info.video, rendition.size) {
        (Some(video), Some((width, height))) => {
            args.extend(["-map".into(), format!("0:{}", video.index)]);
            args.extend(["-c:v".into(), encoder.codec().into()]);
            if *encoder == VideoEncoder::Software {
                args.extend(["-preset".into(), "veryfast".into(), "-profile:v".into(), "high".into()]);
            }
            args.extend(["-vf".into(), format!("scale={width}:{height},format=yuv420p")]);
            args.extend(["-b:v".into(), rendition.video_bitrate.to_string()]);
            args.extend(["-maxrate".into(), (rendition.video_bitrate * 3 / 2).to_string()]);
            args.extend(["-bufsize".into(), (rendition.video_bitrate * 2).to_string()]);
            // Source timestamps through the encoder: no frame dropped or
            // doubled by rounding to a frame-rate grid.
            args.extend([
                "-fps_mode".into(),
                "passthrough".into(),
                "-enc_time_base:v".into(),
                "-1".into(),
            ]);
        }
        _ => args.push("-vn".into()),
    }
    if let Some(audio) = info.main_audio() {
        args.extend(["-map".into(), format!("0:{}", audio.index)]);
        args.extend(["-c:a".into(), "aac".into(), "-ac".into(), "2".into()]);
        args.extend(["-b:a".into(), rendition.audio_bitrate.to_string()]);
    }
    args.extend(["-sn".into(), "-dn".into(), "-movflags".into(), "+faststart".into()]);
    args.extend(["-progress".into(), "pipe:1".into(), "-f".into(), "mp4".into()]);
    args.push(out.to_string_lossy().into_owned());
    args
}

/// The arguments that encode the video of `source` from `start_s` to
/// `end_s` (`None`: to the end) as a raw H.264 stream, for a chunked job.
/// The chunk holds exactly the frames whose timestamps fall in the range,
/// a keyframe first; chunks of one source concatenate byte for byte.
pub fn chunk_args(
    source: &Path,
    info: &SourceInfo,
    rendition: &Rendition,
    range: (f64, Option<f64>),
    out: &Path,
    read_rate: Option<f64>,
) -> Result<Vec<String>> {
    let (Some(video), Some((width, height))) = (&info.video, rendition.size) else {
        return Err(TranscodeError::NotFound("chunked jobs are for video".into()));
    };
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-y"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    if let Some(rate) = read_rate {
        args.extend(["-readrate".into(), format!("{rate}")]);
    }
    let (start, end) = range;
    args.extend(["-ss".into(), format!("{start:.3}")]);
    if let Some(end) = end {
        args.extend(["-to".into(), format!("{end:.3}")]);
    }
    args.extend(["-copyts".into(), "-i".into(), source.to_string_lossy().into_owned()]);
    args.extend([
        "-map".into(),
        format!("0:{}", video.index),
        "-an".into(),
        "-sn".into(),
        "-dn".into(),
    ]);
    args.extend(["-c:v".into(), "libx264".into(), "-preset".into(), "veryfast".into()]);
    args.extend(["-profile:v".into(), "high".into()]);
    args.extend(["-vf".into(), format!("scale={width}:{height},format=yuv420p")]);
    args.extend(["-b:v".into(), rendition.video_bitrate.to_string()]);
    args.extend(["-maxrate".into(), (rendition.video_bitrate * 3 / 2).to_string()]);
    args.extend(["-bufsize".into(), (rendition.video_bitrate * 2).to_string()]);
    args.extend([
        "-fps_mode".into(),
        "passthrough".into(),
        "-enc_time_base:v".into(),
        "-1".into(),
        "-progress".into(),
        "pipe:1".into(),
        "-f".into(),
        "h264".into(),
    ]);
    args.push(out.to_string_lossy().into_owned());
    Ok(args)
}

/// The arguments that join a chunked job: the concatenated raw H.264 at
/// the source's exact frame rate, with the source's audio encoded once
/// (so no encoder priming at chunk joins), into an MP4.
pub fn join_args(
    video: &Path,
    source: &Path,
    info: &SourceInfo,
    rendition: &Rendition,
    out: &Path,
) -> Result<Vec<String>> {
    let rate = info
        .video
        .as_ref()
        .and_then(|video| video.frame_rate.clone())
        .ok_or_else(|| TranscodeError::NotFound("the source has no frame rate".into()))?;
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-y"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    args.extend(["-framerate".into(), rate, "-f".into(), "h264".into()]);
    args.extend(["-i".into(), video.to_string_lossy().into_owned()]);
    args.extend(["-i".into(), source.to_string_lossy().into_owned()]);
    args.extend(["-map".into(), "0:v:0".into(), "-c:v".into(), "copy".into()]);
    if let Some(audio) = info.main_audio() {
        args.extend(["-map".into(), format!("1:{}", audio.index)]);
        args.extend(["-c:a".into(), "aac".into(), "-ac".into(), "2".into()]);
        args.extend(["-b:a".into(), rendition.audio_bitrate.to_string()]);
    }
    args.extend([
        "-movflags".into(),
        "+faststart".into(),
        "-progress".into(),
        "pipe:1".into(),
    ]);
    args.extend(["-f".into(), "mp4".into(), out.to_string_lossy().into_owned()]);
    Ok(args)
}

/// Runs ffmpeg with `args`, calling `progress` with the seconds of output
/// written so far. Fails with ffmpeg's first error line.
pub async fn run(ffmpeg: &Path, args: &[String], mut progress: impl FnMut(f64)) -> Result<()> {
    let mut child = tokio::process::Command::new(ffmpeg)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| TranscodeError::Spawn {
            tool: ffmpeg.display().to_string(),
            source,
        })?;
    let stderr = child.stderr.take().map(|pipe| {
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            let mut first = None;
            while let Ok(Some(line)) = lines.next_line().await {
                first.get_or_insert(line);
            }
            first
        })
    });
    if let Some(stdout) = child.stdout.take() {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // `out_time_us=12345678` (`out_time_ms` is microseconds too).
            if let Some(micros) = line
                .strip_prefix("out_time_us=")
                .and_then(|value| value.trim().parse::<u64>().ok())
            {
                progress(micros as f64 / 1e6);
            }
        }
    }
    let status = child.wait().await.map_err(|source| TranscodeError::Spawn {
        tool: ffmpeg.display().to_string(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let first = match stderr {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    Err(TranscodeError::Ffmpeg(
        first.unwrap_or_else(|| format!("ffmpeg exited with {status}")),
    ))
}
