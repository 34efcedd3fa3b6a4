//! The playback decision for one client: play the file as it is, remux it
//! (its video copied into HLS, when only the container or the audio is in
//! the way), or transcode it to HLS, and why.

use serde::{Deserialize, Serialize};

use crate::probe::SourceInfo;

/// What a client can play, as it tells the server. Fields it leaves out
/// take a current browser's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientProfile {
    /// Containers it plays directly (`mp4`, `webm`, `mkv`, `mp3`, …).
    pub containers: Vec<String>,
    /// Video codecs (`h264`, `hevc`, `vp9`, `av1`).
    pub video_codecs: Vec<String>,
    /// Audio codecs (`aac`, `mp3`, `opus`, `flac`, …).
    pub audio_codecs: Vec<String>,
    /// Tallest video it wants.
    pub max_height: Option<u32>,
    /// Highest bit rate its connection carries, bits per second.
    pub max_bitrate: Option<u64>,
}

impl Default for ClientProfile {
    fn default() -> ClientProfile {
        ClientProfile::browser()
    }
}

impl ClientProfile {
    /// What every current browser plays.
    pub fn browser() -> ClientProfile {
        let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
        ClientProfile {
            containers: list(&["mp4", "m4v", "m4a", "webm", "mp3", "ogg", "flac", "wav"]),
            video_codecs: list(&["h264", "vp9", "av1"]),
            audio_codecs: list(&["aac", "mp3", "opus", "vorbis", "flac"]),
            max_height: None,
            max_bitrate: None,
        }
    }
}

/// How the client will play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Decision {
    /// The file as it is (the item's stream URL).
    DirectPlay,
    /// HLS whose video is the source's own, copied (the `original`
    /// rendition); the audio is re-encoded when the client lacks its codec.
    Remux {
        /// Why the file itself will not do.
        reasons: Vec<String>,
    },
    /// Transcoded HLS (the item's master playlist).
    Transcode {
        /// Why the file itself will not do.
        reasons: Vec<String>,
    },
}

/// Decides for a source whose file has `extension` (lowercase, no dot);
/// `can_copy` says whether its video can be copied into HLS segments.
pub fn decide(info: &SourceInfo, extension: &str, client: &ClientProfile, can_copy: bool) -> Decision {
    let has = |list: &[String], name: &str| list.iter().any(|item| item.eq_ignore_ascii_case(name));
    // What a remux fixes (the container, the audio), and what it cannot.
    let mut remuxable = Vec::new();
    let mut video_reasons = Vec::new();
    if !has(&client.containers, extension) {
        remuxable.push(format!("container {extension} is not supported"));
    }
    if let Some(video) = &info.video {
        if !has(&client.video_codecs, &video.codec) {
            video_reasons.push(format!("video codec {} is not supported", video.codec));
        }
        if client.max_height.is_some_and(|max| video.height > max) {
            video_reasons.push(format!("{} lines is above the client's limit", video.height));
        }
    }
    if let Some(audio) = info.main_audio()
        && !has(&client.audio_codecs, &audio.codec)
    {
        remuxable.push(format!("audio codec {} is not supported", audio.codec));
    }
    if let (Some(max), Some(rate)) = (client.max_bitrate, info.bit_rate)
        && rate > max
    {
        video_reasons.push(format!("{rate} b/s is above the client's {max} b/s"));
    }
    match (remuxable.is_empty(), video_reasons.is_empty()) {
        (true, true) => Decision::DirectPlay,
        (false, true) if can_copy && info.video.is_some() => Decision::Remux { reasons: remuxable },
        _ => Decision::Transcode {
            reasons: remuxable.into_iter().chain(video_reasons).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{AudioStream, VideoStream};

    fn source(video: &str, audio: &str) -> SourceInfo {
        SourceInfo {
            container: "mov,mp4".into(),
            duration_s: 10.0,
            bit_rate: Some(4_000_000),
            video: Some(VideoStream {
                index: 0,
                codec: video.into(),
                width: 1920,
                height: 1080,
                fps: 24.0,
                pix_fmt: None,
                bit_rate: None,
                frame_rate: None,
                profile: None,
                level: None,
            }),
            audio: vec![AudioStream {
                index: 1,
                codec: audio.into(),
                channels: 2,
                language: "und".into(),
                default: true,
            }],
            subtitles: Vec::new(),
        }
    }

    #[test]
    fn missing_fields_mean_a_browser() {
        let partial: ClientProfile =
            serde_json::from_str(r#"{"max_height": 720}"#).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(partial.max_height, Some(720));
        assert_eq!(partial.video_codecs, ClientProfile::browser().video_codecs);
    }

    #[test]
    fn browsers_play_h264_mp4_and_not_hevc_mkv() {
        let browser = ClientProfile::browser();
        assert_eq!(
            decide(&source("h264", "aac"), "mp4", &browser, true),
            Decision::DirectPlay
        );
        let Decision::Transcode { reasons } = decide(&source("hevc", "dts"), "mkv", &browser, true) else {
            panic!("hevc in mkv plays in no browser");
        };
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        let small = ClientProfile {
            max_height: Some(720),
            max_bitrate: Some(1_000_000),
            ..browser
        };
        assert!(matches!(
            decide(&source("h264", "aac"), "mp4", &small, true),
            Decision::Transcode { .. }
        ));
    }

    #[test]
    fn a_foreign_container_or_audio_is_remuxed() {
        let browser = ClientProfile::browser();
        let Decision::Remux { reasons } = decide(&source("h264", "dts"), "mkv", &browser, true) else {
            panic!("h264 in mkv is remuxed");
        };
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(matches!(
            decide(&source("h264", "aac"), "mkv", &browser, false),
            Decision::Transcode { .. }
        ));
    }
}
