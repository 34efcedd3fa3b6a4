//! ffprobe: duration, streams and chapters of video and audio files. A file
//! ffprobe cannot read (truncated, random bytes) is reported, not indexed.
//! Results are reused on rescans while a file's size and mtime hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

/// ffprobe runs at most this long per file.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// Largest ffprobe output read.
const OUTPUT_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Deserialize)]
struct Output {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
    #[serde(default)]
    chapters: Vec<RawChapter>,
}

#[derive(Debug, Deserialize)]
struct RawChapter {
    start_time: Option<String>,
    end_time: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Chapters kept per file.
const CHAPTERS_MAX: usize = 1000;

/// A chapter, as stored (JSON) in the `chapters` metadata entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chapter {
    /// Start, in milliseconds.
    pub start_ms: u64,
    /// End, in milliseconds.
    pub end_ms: u64,
    /// Title (`Chapter N` when the file names none).
    pub title: String,
}

#[derive(Debug, Deserialize)]
struct Stream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    channels: Option<u32>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    disposition: BTreeMap<String, u8>,
}

#[derive(Debug, Deserialize)]
struct Format {
    format_name: Option<String>,
    duration: Option<String>,
    bit_rate: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// The modification time of `path` in nanoseconds, as stored in metadata.
pub fn mtime_ns(path: &Path) -> Option<u128> {
    std::fs::metadata(path)
        .ok()?
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|elapsed| elapsed.as_nanos())
}

/// Runs ffprobe on `path`; metadata entries, or why the file is unusable.
pub fn probe(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut command = Command::new("ffprobe");
    command
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-show_chapters",
        ])
        .arg(path);
    let stdout = super::subprocess::run(command, PROBE_DEADLINE, OUTPUT_MAX_BYTES).map_err(|error| {
        if error.starts_with("cannot run") {
            error
        } else {
            format!("not a playable media file: {}", error.trim_start_matches("ffprobe: "))
        }
    })?;
    let output: Output =
        serde_json::from_slice(&stdout).map_err(|error| format!("unreadable ffprobe output: {error}"))?;
    summarise(&output)
}

fn summarise(output: &Output) -> Result<BTreeMap<String, String>, String> {
    let mut metadata = BTreeMap::new();
    let media_streams: Vec<&Stream> = output
        .streams
        .iter()
        .filter(|stream| matches!(stream.codec_type.as_deref(), Some("video" | "audio")))
        .collect();
    if media_streams.is_empty() {
        return Err("not a playable media file: no audio or video stream".into());
    }
    let picture = output
        .streams
        .iter()
        .filter(|stream| stream.codec_type.as_deref() == Some("video"))
        .find_map(|stream| Some((stream.width?, stream.height?)));
    let format = output.format.as_ref();
    if let Some(reason) = omega_transcode::probe::implausible(
        format.and_then(|format| format.duration.as_deref()?.parse::<f64>().ok()),
        format.and_then(|format| format.bit_rate.as_deref()?.parse::<u64>().ok()),
        picture,
    ) {
        return Err(reason);
    }
    if let Some(format) = &output.format {
        if let Some(duration) = format.duration.as_deref().and_then(|text| text.parse::<f64>().ok()) {
            metadata.insert("duration_ms".into(), ((duration * 1000.0).round() as u64).to_string());
        }
        if let Some(name) = &format.format_name {
            metadata.insert("format".into(), name.clone());
        }
        if let Some(rate) = &format.bit_rate {
            metadata.insert("bit_rate".into(), rate.clone());
        }
        for (tag, key) in [
            ("title", "tag_title"),
            ("artist", "tag_artist"),
            ("album", "tag_album"),
            ("date", "tag_date"),
            ("album_artist", "tag_album_artist"),
            ("track", "tag_track"),
            ("disc", "tag_disc"),
            ("genre", "tag_genre"),
        ] {
            if let Some(value) = format.tags.get(tag).or_else(|| format.tags.get(&tag.to_uppercase())) {
                metadata.insert(key.into(), value.chars().take(512).collect());
            }
        }
    }
    // Cover art is a video stream marked attached_pic; it is not a picture.
    let video = output.streams.iter().find(|stream| {
        stream.codec_type.as_deref() == Some("video") && stream.disposition.get("attached_pic") != Some(&1)
    });
    if let Some(video) = video {
        if let Some(codec) = &video.codec_name {
            metadata.insert("video_codec".into(), codec.clone());
        }
        if let (Some(width), Some(height)) = (video.width, video.height) {
            metadata.insert("width".into(), width.to_string());
            metadata.insert("height".into(), height.to_string());
        }
    }
    let join = |kind: &str, field: &dyn Fn(&Stream) -> Option<String>| -> Option<String> {
        let values: Vec<String> = output
            .streams
            .iter()
            .filter(|stream| stream.codec_type.as_deref() == Some(kind))
            .map(|stream| field(stream).unwrap_or_else(|| "und".into()))
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    if let Some(codecs) = join("audio", &|stream| stream.codec_name.clone()) {
        metadata.insert("audio_codecs".into(), codecs);
    }
    if let Some(languages) = join("audio", &|stream| stream.tags.get("language").cloned()) {
        metadata.insert("audio_languages".into(), languages);
    }
    if let Some(channels) = join("audio", &|stream| stream.channels.map(|channels| channels.to_string())) {
        metadata.insert("audio_channels".into(), channels);
    }
    if let Some(languages) = join("subtitle", &|stream| stream.tags.get("language").cloned()) {
        metadata.insert("subtitle_languages".into(), languages);
    }
    let millis = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map_or(0, |seconds| (seconds * 1000.0).round() as u64)
    };
    let chapters: Vec<Chapter> = output
        .chapters
        .iter()
        .take(CHAPTERS_MAX)
        .enumerate()
        .map(|(index, chapter)| Chapter {
            start_ms: millis(&chapter.start_time),
            end_ms: millis(&chapter.end_time),
            title: chapter
                .tags
                .get("title")
                .map(|title| title.chars().take(256).collect())
                .unwrap_or_else(|| format!("Chapter {}", index + 1)),
        })
        .collect();
    if !chapters.is_empty()
        && let Ok(json) = serde_json::to_string(&chapters)
    {
        metadata.insert("chapters".into(), json);
    }
    if output
        .streams
        .iter()
        .any(|stream| stream.disposition.get("attached_pic") == Some(&1))
    {
        metadata.insert("embedded_art".into(), "1".into());
    }
    Ok(metadata)
}
