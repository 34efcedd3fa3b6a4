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

/// ffmpeg's quiet prefix for offline runs, and the input read rate.
fn prefix(read_rate: Option<f64>) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-y"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    if let Some(rate) = read_rate {
        args.extend(["-readrate".into(), format!("{rate}")]);
    }
    args
}

/// The video codec of an offline encode. HLS sessions stay H.264, which
/// every player decodes; HEVC and VP9 are for jobs that ask (smaller files
/// for devices that play them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (libx264, or a hardware encoder).
    H264,
    /// HEVC (libx265), tagged `hvc1` for Apple players.
    Hevc,
    /// VP9 (libvpx-vp9).
    Vp9,
}

impl VideoCodec {
    /// Splits a profile such as `720p-hevc` into its rendition name and
    /// codec (`720p` alone is H.264); `None` for an unknown codec.
    pub fn split_profile(profile: &str) -> Option<(&str, VideoCodec)> {
        match profile.rsplit_once('-') {
            None => Some((profile, VideoCodec::H264)),
            Some((rendition, "h264")) => Some((rendition, VideoCodec::H264)),
            Some((rendition, "hevc")) => Some((rendition, VideoCodec::Hevc)),
            Some((rendition, "vp9")) => Some((rendition, VideoCodec::Vp9)),
            Some(_) => None,
        }
    }

    /// Its share of H.264's bit rate for about the same quality.
    fn bitrate_share(self) -> (u64, u64) {
        match self {
            VideoCodec::H264 => (1, 1),
            VideoCodec::Hevc | VideoCodec::Vp9 => (7, 10),
        }
    }

    /// Encoder and options.
    fn encoder_args(self) -> Vec<String> {
        let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
        match self {
            VideoCodec::H264 => list(&["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high"]),
            VideoCodec::Hevc => list(&[
                "-c:v",
                "libx265",
                "-preset",
                "fast",
                "-x265-params",
                "log-level=error",
                "-tag:v",
                "hvc1",
            ]),
            VideoCodec::Vp9 => list(&[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "good",
                "-cpu-used",
                "5",
                "-row-mt",
                "1",
            ]),
        }
    }
}

/// The video encoder at the rendition's size and rates, with source
/// timestamps through the encoder (no frame dropped or doubled by rounding
/// to a frame-rate grid).
fn video_args(codec: VideoCodec, rendition: &Rendition, width: u32, height: u32) -> Vec<String> {
    let (num, den) = codec.bitrate_share();
    let bitrate = rendition.video_bitrate * num / den;
    let mut args = codec.encoder_args();
    args.extend([
        "-vf".into(),
        format!("scale={width}:{height},format=yuv420p"),
        "-b:v".into(),
        bitrate.to_string(),
        "-maxrate".into(),
        (bitrate * 3 / 2).to_string(),
        "-bufsize".into(),
        (bitrate * 2).to_string(),
        "-fps_mode".into(),
        "passthrough".into(),
        "-enc_time_base:v".into(),
        "-1".into(),
    ]);
    args
}

/// The ffmpeg arguments that write `rendition` of `source` to `out` (MP4).
pub fn file_args(
    source: &Path,
    info: &SourceInfo,
    rendition: &Rendition,
    codec: VideoCodec,
    encoder: &VideoEncoder,
    out: &Path,
    read_rate: Option<f64>,
) -> Vec<String> {
    let mut args = prefix(read_rate);
    args.extend(["-i".into(), source.to_string_lossy().into_owned()]);
    match (&info.video, rendition.size) {
        (Some(video), Some((width, height))) => {
            args.extend(["-map".into(), format!("0:{}", video.index)]);
            let mut encode = video_args(codec, rendition, width, height);
            if codec == VideoCodec::H264 && *encoder != VideoEncoder::Software {
                // The hardware encoder in place of libx264 and its preset.
                encode.splice(0..6, ["-c:v".to_owned(), encoder.codec().into()]);
            }
            args.extend(encode);
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
/// `end_s` (`None`: to the end) as a fragmented MP4, for a chunked job.
/// The chunk holds exactly the frames whose timestamps fall in the range,
/// a keyframe first, with source timestamps kept (`-copyts`,
/// `frag_discont`, passthrough); chunks of one source join by
/// [`append_fragments`] into one stream on one timeline, as HLS segments
/// from different sessions do.
pub fn chunk_args(
    source: &Path,
    info: &SourceInfo,
    rendition: &Rendition,
    codec: VideoCodec,
    range: (f64, Option<f64>),
    out: &Path,
    read_rate: Option<f64>,
) -> Result<Vec<String>> {
    let (Some(video), Some((width, height))) = (&info.video, rendition.size) else {
        return Err(TranscodeError::NotFound("chunked jobs are for video".into()));
    };
    let mut args = prefix(read_rate);
    let (start, end) = range;
    if start > 0.0 {
        args.extend(["-ss".into(), format!("{start:.3}")]);
    }
    if let Some(end) = end {
        args.extend(["-to".into(), format!("{end:.3}")]);
    }
    args.extend(["-i".into(), source.to_string_lossy().into_owned()]);
    args.extend([
        "-map".into(),
        format!("0:{}", video.index),
        "-an".into(),
        "-sn".into(),
        "-dn".into(),
    ]);
    args.extend(video_args(codec, rendition, width, height));
    args.extend([
        "-force_key_frames".into(),
        format!("{start:.3}"),
        "-sc_threshold".into(),
        "0".into(),
        "-copyts".into(),
        "-avoid_negative_ts".into(),
        "disabled".into(),
        "-movflags".into(),
        "+frag_keyframe+empty_moov+default_base_moof+frag_discont".into(),
        "-progress".into(),
        "pipe:1".into(),
        "-f".into(),
        "mp4".into(),
    ]);
    args.push(out.to_string_lossy().into_owned());
    Ok(args)
}

/// Appends a chunk (a fragmented MP4 from [`chunk_args`]) to `joined`: the
/// first chunk whole, later ones without their `ftyp` and `moov` (the same
/// encoder settings wrote the same track description), so the result is
/// one fragmented MP4. Box by box, never the whole chunk in memory.
pub fn append_fragments<R: std::io::Read>(
    joined: &mut impl std::io::Write,
    mut chunk: R,
    first: bool,
) -> std::io::Result<u64> {
    let mut written = 0_u64;
    loop {
        let mut header = [0_u8; 8];
        match chunk.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(written),
            Err(error) => return Err(error),
        }
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let (header_bytes, total) = match size32 {
            1 => {
                let mut large = [0_u8; 8];
                chunk.read_exact(&mut large)?;
                let mut full = header.to_vec();
                full.extend_from_slice(&large);
                (full, u64::from_be_bytes(large))
            }
            // Size 0 runs to the end of the file; ffmpeg writes sizes.
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "an MP4 box without a size",
                ));
            }
            size => (header.to_vec(), u64::from(size)),
        };
        let body = total.checked_sub(header_bytes.len() as u64).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "an MP4 box shorter than its header")
        })?;
        let keep = first || !matches!(&kind, b"ftyp" | b"moov");
        let mut part = <&mut R as std::io::Read>::take(&mut chunk, body);
        if keep {
            joined.write_all(&header_bytes)?;
            let copied = std::io::copy(&mut part, joined)?;
            if copied != body {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a truncated MP4 box",
                ));
            }
            written += header_bytes.len() as u64 + copied;
        } else {
            std::io::copy(&mut part, &mut std::io::sink())?;
        }
    }
}

/// The arguments that join a chunked job: the joined fragmented video,
/// copied, with the source's audio encoded once (no encoder priming at
/// chunk joins), into an MP4 with its index first.
pub fn join_args(
    video: &Path,
    source: &Path,
    info: &SourceInfo,
    rendition: &Rendition,
    out: &Path,
) -> Result<Vec<String>> {
    let mut args = prefix(None);
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
    let _permit = crate::budget::processes().acquire().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut bytes = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(kind);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn profiles_name_a_codec() {
        assert_eq!(VideoCodec::split_profile("720p"), Some(("720p", VideoCodec::H264)));
        assert_eq!(VideoCodec::split_profile("720p-hevc"), Some(("720p", VideoCodec::Hevc)));
        assert_eq!(VideoCodec::split_profile("480p-vp9"), Some(("480p", VideoCodec::Vp9)));
        assert_eq!(VideoCodec::split_profile("480p-av2"), None);
    }

    #[test]
    fn later_chunks_lose_their_header_boxes() {
        let chunk = [
            boxed(b"ftyp", b"iso5"),
            boxed(b"moov", b"track"),
            boxed(b"moof", b"m"),
            boxed(b"mdat", b"data"),
        ]
        .concat();
        let mut joined = Vec::new();
        append_fragments(&mut joined, chunk.as_slice(), true).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(joined, chunk);
        let mut later = Vec::new();
        append_fragments(&mut later, chunk.as_slice(), false).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(later, [boxed(b"moof", b"m"), boxed(b"mdat", b"data")].concat());
        let truncated = &chunk[..chunk.len() - 2];
        assert!(append_fragments(&mut Vec::new(), truncated, true).is_err());
        assert!(
            append_fragments(
                &mut Vec::new(),
                [0_u8, 0, 0, 3, b'b', b'a', b'd', b'!'].as_slice(),
                true
            )
            .is_err()
        );
    }
}
