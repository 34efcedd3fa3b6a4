//! ffprobe's JSON as typed structs: what a transcoder needs to know of a
//! source (duration, the video stream, audio and subtitle streams).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TranscodeError};

/// ffprobe runs at most this long.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// Listing keyframes reads the whole file: it gets longer.
const KEYFRAME_DEADLINE: Duration = Duration::from_secs(300);

/// A source's video stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoStream {
    /// Index among all streams.
    pub index: u32,
    /// Codec name (`h264`, `hevc`, `vp9`, …).
    pub codec: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
    /// Pixel format.
    pub pix_fmt: Option<String>,
    /// Bit rate, bits per second, when known.
    pub bit_rate: Option<u64>,
    /// The exact frame rate as ffprobe gives it (`24000/1001`).
    pub frame_rate: Option<String>,
    /// Codec profile (`High`, `Main 10`), for the HLS `CODECS` of a copy.
    #[serde(default)]
    pub profile: Option<String>,
    /// Codec level as ffprobe gives it (H.264: 41 for 4.1; HEVC: 120 for 4).
    #[serde(default)]
    pub level: Option<i64>,
}

/// A source's audio stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioStream {
    /// Index among all streams.
    pub index: u32,
    /// Codec name.
    pub codec: String,
    /// Channels.
    pub channels: u32,
    /// Language tag (`und` when unknown).
    pub language: String,
    /// Marked default.
    pub default: bool,
}

/// A source's subtitle stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtitleStream {
    /// Index among all streams.
    pub index: u32,
    /// Codec name.
    pub codec: String,
    /// Language tag (`und` when unknown).
    pub language: String,
    /// Text (convertible to WebVTT), not pictures.
    pub text: bool,
}

/// What a transcoder knows of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Container names, as ffprobe lists them (`matroska,webm`).
    pub container: String,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Overall bit rate.
    pub bit_rate: Option<u64>,
    /// The first video stream that is not cover art.
    pub video: Option<VideoStream>,
    /// Audio streams.
    pub audio: Vec<AudioStream>,
    /// Subtitle streams.
    pub subtitles: Vec<SubtitleStream>,
}

#[derive(Debug, Deserialize)]
struct RawOutput {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Debug, Deserialize)]
struct RawStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    bit_rate: Option<String>,
    channels: Option<u32>,
    profile: Option<String>,
    level: Option<i64>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    disposition: std::collections::BTreeMap<String, u8>,
}

#[derive(Debug, Deserialize)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
    bit_rate: Option<String>,
}

/// `30000/1001` as 29.97; `None` for `0/0` and nonsense.
fn rate(text: Option<&str>) -> Option<f64> {
    let (num, den) = text?.split_once('/')?;
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    let fps = num / den;
    (fps.is_finite() && fps > 0.0 && fps <= 1000.0).then_some(fps)
}

/// The longest duration a real media file has: a week (the longest
/// audiobooks run about 150 hours). A container that claims more is crafted
/// or broken, and planning segments for it would allocate without bound.
pub const DURATION_MAX_S: f64 = 7.0 * 86_400.0;
/// The highest overall bit rate a real file has (10 Gb/s: above raw 8K).
pub const BIT_RATE_MAX: u64 = 10_000_000_000;
/// The largest picture side a real video has (the largest H.265 and AV1
/// levels stay below it).
pub const DIMENSION_MAX: u32 = 16_384;
/// Keyframes read per file at most: one every 0.25 s over the longest
/// plausible duration, and far more than any real file has.
pub const KEYFRAMES_MAX: usize = (DURATION_MAX_S * 4.0) as usize;

/// Why what ffprobe says of a file cannot be true of a real one, if so.
pub fn implausible(duration_s: Option<f64>, bit_rate: Option<u64>, size: Option<(u32, u32)>) -> Option<String> {
    if let Some(duration) = duration_s.filter(|duration| !duration.is_finite() || *duration > DURATION_MAX_S) {
        return Some(format!(
            "implausible duration of {duration:.0} s (at most {DURATION_MAX_S:.0} s): the file is crafted or broken"
        ));
    }
    if let Some(rate) = bit_rate.filter(|rate| *rate > BIT_RATE_MAX) {
        return Some(format!(
            "implausible bit rate of {rate} b/s: the file is crafted or broken"
        ));
    }
    if let Some((width, height)) = size.filter(|(width, height)| *width > DIMENSION_MAX || *height > DIMENSION_MAX) {
        return Some(format!(
            "implausible picture size {width}×{height}: the file is crafted or broken"
        ));
    }
    None
}

/// Text subtitle codecs ffmpeg can write as WebVTT.
const TEXT_SUBTITLES: &[&str] = &["subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"];

impl SourceInfo {
    /// Parses ffprobe's `-show_format -show_streams` JSON.
    pub fn from_ffprobe_json(path: &Path, json: &[u8]) -> Result<SourceInfo> {
        let raw: RawOutput = serde_json::from_slice(json).map_err(|error| TranscodeError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("unreadable ffprobe output: {error}"),
        })?;
        let format = raw.format.as_ref();
        let duration_s = format
            .and_then(|format| format.duration.as_deref()?.parse::<f64>().ok())
            .filter(|duration| duration.is_finite() && *duration > 0.0)
            .unwrap_or(0.0);
        let language = |stream: &RawStream| stream.tags.get("language").cloned().unwrap_or_else(|| "und".into());
        let mut info = SourceInfo {
            container: format.and_then(|format| format.format_name.clone()).unwrap_or_default(),
            duration_s,
            bit_rate: format.and_then(|format| format.bit_rate.as_deref()?.parse().ok()),
            video: None,
            audio: Vec::new(),
            subtitles: Vec::new(),
        };
        for stream in &raw.streams {
            let codec = stream.codec_name.clone().unwrap_or_default();
            match stream.codec_type.as_deref() {
                Some("video") if info.video.is_none() && stream.disposition.get("attached_pic") != Some(&1) => {
                    let (Some(width), Some(height)) = (stream.width, stream.height) else {
                        continue;
                    };
                    info.video = Some(VideoStream {
                        index: stream.index,
                        codec,
                        width,
                        height,
                        fps: rate(stream.avg_frame_rate.as_deref())
                            .or_else(|| rate(stream.r_frame_rate.as_deref()))
                            .unwrap_or(25.0),
                        pix_fmt: stream.pix_fmt.clone(),
                        bit_rate: stream.bit_rate.as_deref().and_then(|rate| rate.parse().ok()),
                        frame_rate: [&stream.avg_frame_rate, &stream.r_frame_rate]
                            .into_iter()
                            .flatten()
                            .find(|text| rate(Some(text)).is_some())
                            .cloned(),
                        profile: stream.profile.clone(),
                        level: stream.level.filter(|level| *level > 0),
                    });
                }
                Some("audio") => info.audio.push(AudioStream {
                    index: stream.index,
                    codec,
                    channels: stream.channels.unwrap_or(2),
                    language: language(stream),
                    default: stream.disposition.get("default") == Some(&1),
                }),
                Some("subtitle") => info.subtitles.push(SubtitleStream {
                    index: stream.index,
                    text: TEXT_SUBTITLES.contains(&codec.as_str()),
                    codec,
                    language: language(stream),
                }),
                _ => {}
            }
        }
        if info.video.is_none() && info.audio.is_empty() {
            return Err(TranscodeError::NoStreams(path.to_path_buf()));
        }
        let claimed_duration = format.and_then(|format| format.duration.as_deref()?.parse::<f64>().ok());
        let size = info.video.as_ref().map(|video| (video.width, video.height));
        if let Some(reason) = implausible(claimed_duration, info.bit_rate, size) {
            return Err(TranscodeError::Unreadable {
                path: path.to_path_buf(),
                reason,
            });
        }
        Ok(info)
    }

    /// The audio stream to play: the default one, else the first.
    pub fn main_audio(&self) -> Option<&AudioStream> {
        self.audio
            .iter()
            .find(|audio| audio.default)
            .or_else(|| self.audio.first())
    }
}

/// Runs ffprobe (`ffprobe` names the binary) on `path`.
pub async fn probe(ffprobe: &Path, path: &Path) -> Result<SourceInfo> {
    let output = probe_json(ffprobe, path).await?;
    SourceInfo::from_ffprobe_json(path, &output)
}

/// What ffprobe prints of `path` (JSON, for
/// [`SourceInfo::from_ffprobe_json`]), to be kept and read again later.
pub async fn probe_json(ffprobe: &Path, path: &Path) -> Result<Vec<u8>> {
    let args = ["-v", "error", "-print_format", "json", "-show_format", "-show_streams"];
    run_ffprobe(ffprobe, &args, path, PROBE_DEADLINE).await
}

/// Keyframe times (seconds, ascending) of stream `index`, from its packets'
/// flags: no decoding, but every packet of the file is read.
pub async fn keyframes(ffprobe: &Path, path: &Path, index: u32) -> Result<Vec<f64>> {
    let stream = index.to_string();
    let args = [
        "-v",
        "error",
        "-select_streams",
        stream.as_str(),
        "-show_entries",
        "packet=pts_time,flags",
        "-of",
        "csv=p=0",
    ];
    let output = run_ffprobe(ffprobe, &args, path, KEYFRAME_DEADLINE).await?;
    Ok(parse_keyframes(&String::from_utf8_lossy(&output)))
}

/// `pts_time,flags` lines to the sorted, distinct times of keyframes.
fn parse_keyframes(csv: &str) -> Vec<f64> {
    let mut times: Vec<f64> = csv
        .lines()
        .filter_map(|line| {
            let (time, flags) = line.split_once(',')?;
            flags.starts_with('K').then(|| time.parse::<f64>().ok()).flatten()
        })
        .filter(|time| time.is_finite() && *time >= 0.0)
        .take(KEYFRAMES_MAX)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    times
}

/// ffprobe's standard output for `args` then `path`, within `deadline`.
async fn run_ffprobe(ffprobe: &Path, args: &[&str], path: &Path, deadline: Duration) -> Result<Vec<u8>> {
    let _permit = crate::budget::processes().acquire().await?;
    let mut command = tokio::process::Command::new(ffprobe);
    command
        .args(args)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .map_err(|_| TranscodeError::Timeout(deadline, format!("ffprobe {}", path.display())))?
        .map_err(|source| TranscodeError::Spawn {
            tool: ffprobe.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(TranscodeError::Unreadable {
            path: path.to_path_buf(),
            reason: stderr.lines().next().unwrap_or("ffprobe failed").trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_streams_and_skips_cover_art() {
        let json = br#"{"streams":[
            {"index":0,"codec_type":"video","codec_name":"mjpeg","width":300,"height":300,"disposition":{"attached_pic":1}},
            {"index":1,"codec_type":"video","codec_name":"hevc","width":3840,"height":2160,"avg_frame_rate":"24000/1001","pix_fmt":"yuv420p10le"},
            {"index":2,"codec_type":"audio","codec_name":"eac3","channels":6,"tags":{"language":"eng"}},
            {"index":3,"codec_type":"audio","codec_name":"aac","channels":2,"disposition":{"default":1}},
            {"index":4,"codec_type":"subtitle","codec_name":"subrip","tags":{"language":"fra"}},
            {"index":5,"codec_type":"subtitle","codec_name":"hdmv_pgs_subtitle"}],
            "format":{"format_name":"matroska,webm","duration":"5400.5","bit_rate":"20000000"}}"#;
        let info = SourceInfo::from_ffprobe_json(Path::new("x.mkv"), json).unwrap_or_else(|error| panic!("{error}"));
        let video = info.video.clone().unwrap_or_else(|| panic!("no video"));
        assert_eq!((video.index, video.codec.as_str(), video.height), (1, "hevc", 2160));
        assert!((video.fps - 23.976).abs() < 0.001);
        assert_eq!(info.main_audio().map(|audio| audio.index), Some(3));
        assert_eq!(info.subtitles.iter().filter(|sub| sub.text).count(), 1);
        assert_eq!(info.duration_s, 5400.5);
    }

    #[test]
    fn keyframes_come_from_packet_flags() {
        let csv = "0.021000,K_\n0.063000,__\n1.521000,K_\nN/A,K_\n1.521000,K_\n0.5,KD\n";
        assert_eq!(parse_keyframes(csv), [0.021, 0.5, 1.521]);
    }

    #[test]
    fn refuses_what_no_real_file_has() {
        let crafted = br#"{"streams":[{"index":0,"codec_type":"audio","codec_name":"pcm_u8","channels":1}],
            "format":{"format_name":"wav","duration":"1000000000000.0","bit_rate":"8"}}"#;
        let error = SourceInfo::from_ffprobe_json(Path::new("/x.wav"), crafted).unwrap_err();
        assert!(error.to_string().contains("implausible duration"), "{error}");
        let huge = br#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":100000,"height":10}],
            "format":{"duration":"10"}}"#;
        assert!(SourceInfo::from_ffprobe_json(Path::new("/x.mkv"), huge).is_err());
        assert_eq!(implausible(Some(5400.0), Some(20_000_000), Some((1920, 1080))), None);
        assert!(implausible(Some(f64::INFINITY), None, None).is_some());
    }

    #[test]
    fn refuses_files_without_streams() {
        let json = br#"{"streams":[],"format":{"duration":"1"}}"#;
        assert!(matches!(
            SourceInfo::from_ffprobe_json(Path::new("x"), json),
            Err(TranscodeError::NoStreams(_))
        ));
        assert!(SourceInfo::from_ffprobe_json(Path::new("x"), b"garbage").is_err());
    }
}
