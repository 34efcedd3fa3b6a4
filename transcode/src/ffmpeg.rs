//! ffmpeg command building and hardware encoder detection.
//!
//! Segments are made by ffmpeg's HLS muxer in fMP4 with source timestamps
//! kept (`-copyts`, `frag_discont`) and keyframes forced at every multiple
//! of the target length, so that a session started at segment N writes the
//! same init segment and the same segment timeline as one started at 0:
//! segments from different sessions, or different nodes, play as one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Result, TranscodeError};
use crate::ladder::Rendition;
use crate::probe::SourceInfo;
use crate::segments::SegmentPlan;

/// How long a hardware test encode may take.
const TEST_ENCODE_DEADLINE: Duration = Duration::from_secs(15);
/// The render node VAAPI is tried on.
const VAAPI_DEVICE: &str = "/dev/dri/renderD128";

/// An H.264 encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoEncoder {
    /// libx264 on the CPU.
    Software,
    /// NVIDIA NVENC.
    Nvenc,
    /// Intel Quick Sync.
    Qsv,
    /// VAAPI (Intel, AMD) on a render node.
    Vaapi,
    /// V4L2 memory-to-memory (Raspberry Pi and other SoCs).
    V4l2,
}

impl VideoEncoder {
    /// ffmpeg's name for it.
    pub fn codec(&self) -> &'static str {
        match self {
            VideoEncoder::Software => "libx264",
            VideoEncoder::Nvenc => "h264_nvenc",
            VideoEncoder::Qsv => "h264_qsv",
            VideoEncoder::Vaapi => "h264_vaapi",
            VideoEncoder::V4l2 => "h264_v4l2m2m",
        }
    }

    /// Arguments before `-i` (device set-up).
    fn input_args(&self) -> Vec<String> {
        match self {
            VideoEncoder::Vaapi => vec!["-vaapi_device".into(), VAAPI_DEVICE.into()],
            _ => Vec::new(),
        }
    }

    /// The scaling filter to `width`×`height` and pixel format upload.
    fn filter(&self, width: u32, height: u32) -> String {
        match self {
            VideoEncoder::Vaapi => format!("format=nv12,hwupload,scale_vaapi=w={width}:h={height}"),
            _ => format!("scale={width}:{height},format=yuv420p"),
        }
    }

    /// Encoder options.
    fn options(&self) -> Vec<String> {
        let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
        match self {
            VideoEncoder::Software => list(&["-preset", "veryfast", "-profile:v", "high"]),
            VideoEncoder::Nvenc => list(&["-preset", "p4", "-forced-idr", "1"]),
            VideoEncoder::Qsv => list(&["-preset", "veryfast"]),
            VideoEncoder::Vaapi | VideoEncoder::V4l2 => Vec::new(),
        }
    }
}

/// Checks that `ffmpeg` runs; its version line.
pub async fn version(ffmpeg: &Path) -> Result<String> {
    let output = tokio::process::Command::new(ffmpeg)
        .arg("-version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| TranscodeError::Spawn {
            tool: ffmpeg.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("ffmpeg").trim().to_owned())
}

/// The encoders that work on this machine, by a real test encode of each
/// hardware candidate; software last, always.
pub async fn detect_encoders(ffmpeg: &Path) -> Vec<VideoEncoder> {
    let mut found = Vec::new();
    for candidate in [
        VideoEncoder::Nvenc,
        VideoEncoder::Qsv,
        VideoEncoder::Vaapi,
        VideoEncoder::V4l2,
    ] {
        if candidate == VideoEncoder::Vaapi && !Path::new(VAAPI_DEVICE).exists() {
            continue;
        }
        let mut command = tokio::process::Command::new(ffmpeg);
        command
            .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(candidate.input_args())
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "0.4"])
            .arg("-vf")
            .arg(candidate.filter(320, 240))
            .args(["-c:v", candidate.codec(), "-f", "null", "-"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let works = matches!(
            tokio::time::timeout(TEST_ENCODE_DEADLINE, command.status()).await,
            Ok(Ok(status)) if status.success()
        );
        if works {
            found.push(candidate);
        }
    }
    found.push(VideoEncoder::Software);
    found
}

/// One ffmpeg HLS session: a rendition of a source from segment
/// `start_segment` on, written to `out_dir` as `init.mp4` and pieces
/// `N.m4s` (see [`SegmentPlan::pieces`]).
#[derive(Debug, Clone)]
pub struct SessionSpec<'a> {
    /// The ffmpeg binary.
    pub ffmpeg: &'a Path,
    /// The source file.
    pub source: &'a Path,
    /// What the source holds.
    pub info: &'a SourceInfo,
    /// The rendition.
    pub rendition: &'a Rendition,
    /// The rendition's segments.
    pub plan: &'a SegmentPlan,
    /// The first segment made.
    pub start_segment: u32,
    /// The encoder.
    pub encoder: &'a VideoEncoder,
    /// Where segments are written.
    pub out_dir: &'a Path,
    /// Read the source at most this many times real time (`None`: as fast
    /// as the encoder goes).
    pub read_rate: Option<f64>,
}

/// The file a session writes piece `index` to.
pub fn piece_path(out_dir: &Path, index: u32) -> PathBuf {
    out_dir.join(format!("{index}.m4s"))
}

/// How far past a keyframe's listed time a copy seeks: ffprobe rounds
/// times to microseconds, and the seek must not land on the keyframe
/// before.
const COPY_SEEK_PAST_S: f64 = 0.0005;

/// The file a session writes its init segment to.
pub fn init_path(out_dir: &Path) -> PathBuf {
    out_dir.join("init.mp4")
}

/// The ffmpeg arguments of a session (after the binary).
pub fn hls_args(spec: &SessionSpec<'_>) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    // The muxer cuts at the first keyframe once `cut_after × pieces so far`
    // has passed since its first packet: at every boundary of a grid plan
    // (keyframes are only there), at every keyframe of a copy.
    let copy = spec.rendition.copy_video && spec.info.video.is_some();
    // Without video the muxer may cut at any packet, once `hls_time` times
    // the pieces so far has passed: audio alone has equal segments, and
    // the cut time is their length exactly.
    let audio_alone = spec.rendition.audio_only() || spec.info.video.is_none();
    let cut_after = if audio_alone {
        debug_assert!(!spec.plan.follows_keyframes(), "audio alone is on a grid");
        f64::from(spec.plan.target_s())
    } else {
        spec.plan.cut_after_s()
    };
    let start = match spec.plan.start_s(spec.start_segment) {
        start if copy && start > 0.0 => start + COPY_SEEK_PAST_S,
        start => start,
    };
    let mut input_args = if spec.rendition.audio_only() || copy {
        Vec::new()
    } else {
        spec.encoder.input_args()
    };
    if let Some(rate) = spec.read_rate {
        input_args.extend(["-readrate".into(), format!("{rate}")]);
    }
    args.extend(input(spec.source, start, &input_args));
    match (&spec.info.video, spec.rendition.size) {
        (Some(video), Some(_)) if copy => {
            args.extend([
                "-map".into(),
                format!("0:{}", video.index),
                "-c:v".into(),
                "copy".into(),
            ]);
            if video.codec == "hevc" {
                // Apple's players take HEVC in fMP4 only as `hvc1`.
                args.extend(["-tag:v".into(), "hvc1".into()]);
            }
        }
        (Some(video), Some((width, height))) => {
            let bitrate = spec.rendition.video_bitrate;
            args.extend(["-map".into(), format!("0:{}", video.index)]);
            args.extend(["-c:v".into(), spec.encoder.codec().into()]);
            args.extend(spec.encoder.options());
            args.extend(["-vf".into(), spec.encoder.filter(width, height)]);
            args.extend(["-b:v".into(), bitrate.to_string()]);
            args.extend(["-maxrate".into(), (bitrate * 3 / 2).to_string()]);
            args.extend(["-bufsize".into(), (bitrate * 2).to_string()]);
            // A keyframe at every boundary of the plan (source time), and
            // no scene-cut keyframes elsewhere: the muxer then cuts exactly
            // at the boundaries.
            let boundaries: Vec<String> = spec
                .plan
                .boundaries_from(spec.start_segment)
                .map(|time| format!("{time:.3}"))
                .collect();
            // The encoder's own keyframe interval is longer than any segment.
            let keyint = (video.fps * f64::from(spec.plan.target_s()) * 2.0).ceil() as u64 + 1;
            args.extend([
                "-force_key_frames".into(),
                boundaries.join(","),
                "-sc_threshold".into(),
                "0".into(),
                "-g".into(),
                keyint.to_string(),
                // Frames keep the source's own timestamps (no rounding to a
                // frame-rate grid, no dropped or doubled frames), so that a
                // session started mid-way cuts the same frames as one
                // started at the beginning.
                "-fps_mode".into(),
                "passthrough".into(),
                "-enc_time_base:v".into(),
                "-1".into(),
            ]);
        }
        _ => args.push("-vn".into()),
    }
    if let Some(audio) = spec.info.main_audio() {
        args.extend(["-map".into(), format!("0:{}", audio.index)]);
        args.extend(["-c:a".into(), "aac".into(), "-ac".into(), "2".into()]);
        args.extend(["-b:a".into(), spec.rendition.audio_bitrate.to_string()]);
    }
    args.extend(["-sn".into(), "-dn".into(), "-map_metadata".into(), "-1".into()]);
    // Source timestamps everywhere: the same timeline in every session.
    args.extend(["-copyts".into(), "-avoid_negative_ts".into(), "disabled".into()]);
    args.extend([
        "-f".into(),
        "hls".into(),
        "-hls_time".into(),
        format!("{cut_after:.6}"),
        "-hls_segment_type".into(),
        "fmp4".into(),
        "-hls_fmp4_init_filename".into(),
        "init.mp4".into(),
        "-hls_segment_options".into(),
        "movflags=+frag_discont".into(),
        "-start_number".into(),
        spec.plan.pieces(spec.start_segment).start.to_string(),
        "-hls_list_size".into(),
        "0".into(),
        "-hls_flags".into(),
        "temp_file+independent_segments".into(),
        "-hls_segment_filename".into(),
        spec.out_dir.join("%d.m4s").to_string_lossy().into_owned(),
        spec.out_dir.join("index.m3u8").to_string_lossy().into_owned(),
    ]);
    args
}

/// `-ss START` (when not at the start) and `-i SOURCE`, with `extra` first.
fn input(source: &Path, start: f64, extra: &[String]) -> Vec<String> {
    let mut args = extra.to_vec();
    if start > 0.0 {
        args.extend(["-ss".into(), format!("{start:.3}")]);
    }
    args.extend(["-i".into(), source.to_string_lossy().into_owned()]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::ladder;
    use crate::probe::{AudioStream, VideoStream};

    #[test]
    fn sessions_keep_source_time_and_force_keyframes() {
        let info = SourceInfo {
            container: "matroska".into(),
            duration_s: 60.0,
            bit_rate: None,
            video: Some(VideoStream {
                index: 0,
                codec: "hevc".into(),
                width: 1920,
                height: 1080,
                fps: 25.0,
                pix_fmt: None,
                bit_rate: None,
                frame_rate: None,
                profile: None,
                level: None,
            }),
            audio: vec![AudioStream {
                index: 2,
                codec: "eac3".into(),
                channels: 6,
                language: "eng".into(),
                default: false,
            }],
            subtitles: Vec::new(),
        };
        let renditions = ladder(&info);
        let spec = SessionSpec {
            ffmpeg: Path::new("ffmpeg"),
            source: Path::new("/m/a.mkv"),
            info: &info,
            rendition: &renditions[1],
            plan: &SegmentPlan::new(60.0),
            start_segment: 10,
            encoder: &VideoEncoder::Software,
            out_dir: Path::new("/tmp/s"),
            read_rate: None,
        };
        let args = hls_args(&spec).join(" ");
        assert!(args.contains("-ss 31.500 -i /m/a.mkv"), "{args}");
        assert!(args.contains("-map 0:0") && args.contains("-map 0:2"), "{args}");
        assert!(args.contains("scale=1280:720"), "{args}");
        assert!(args.contains("-force_key_frames 31.500,35.500,"), "{args}");
        assert!(args.contains("-hls_time 0.250000 "), "{args}");
        assert!(args.contains("-g 201 "), "{args}");
        assert!(args.contains("-copyts") && args.contains("frag_discont"), "{args}");
        assert!(args.contains("-start_number 10"), "{args}");
        let first = SessionSpec {
            start_segment: 0,
            ..spec
        };
        assert!(!hls_args(&first).iter().any(|arg| arg == "-ss"));
        // Audio alone: even segments, cut at exactly their length.
        let audio_info = SourceInfo {
            video: None,
            ..info.clone()
        };
        let audio = ladder(&audio_info);
        let plan = SegmentPlan::encoded(60.0, true);
        let audio_spec = SessionSpec {
            info: &audio_info,
            rendition: &audio[0],
            plan: &plan,
            start_segment: 0,
            ..spec
        };
        let args = hls_args(&audio_spec).join(" ");
        assert!(args.contains("-hls_time 4.000000 "), "{args}");
    }
}
