//! The rendition ladder: which qualities a source is offered in. Rungs at
//! or below the source's height (never upscaled), bit rates capped by the
//! source's own, AAC stereo audio; a source without video gets one
//! audio-only rendition. A source whose video any HLS player decodes
//! (8-bit H.264, HEVC) is also offered as it is: the `original` rendition
//! copies its video (a remux) and only re-encodes the audio.

use serde::Serialize;

use crate::probe::{SourceInfo, VideoStream};

/// Video rungs: height and video bit rate (bits per second).
const RUNGS: [(u32, u64); 4] = [(1080, 5_000_000), (720, 2_800_000), (480, 1_400_000), (360, 800_000)];
/// Audio bit rate of video renditions.
const AUDIO_BITRATE: u64 = 128_000;
/// Audio bit rate of audio-only renditions.
const AUDIO_ONLY_BITRATE: u64 = 192_000;

/// One quality a source is offered in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendition {
    /// Its name in URLs: `1080p`, `720p`, …, `audio`.
    pub name: String,
    /// Output size; `None` for audio only.
    pub size: Option<(u32, u32)>,
    /// Video bit rate, bits per second (0 for audio only).
    pub video_bitrate: u64,
    /// Audio bit rate, bits per second.
    pub audio_bitrate: u64,
    /// The source's video is copied, not encoded (the `original`).
    pub copy_video: bool,
    /// The HLS `CODECS` attribute.
    pub codecs: String,
}

/// The name of the rendition that copies the source's video.
pub const ORIGINAL: &str = "original";
/// The name of the rendition of a source without video.
pub const AUDIO: &str = "audio";
/// `CODECS` of encoded renditions: H.264 High 4.0 and AAC-LC.
const ENCODED_CODECS: &str = "avc1.640028,mp4a.40.2";
/// `CODECS` of audio-only renditions: AAC-LC.
const AUDIO_CODECS: &str = "mp4a.40.2";

impl Rendition {
    /// Peak bandwidth to advertise (video + audio + 10% container).
    pub fn bandwidth(&self) -> u64 {
        (self.video_bitrate + self.audio_bitrate) * 11 / 10
    }

    /// True for audio-only renditions.
    pub fn audio_only(&self) -> bool {
        self.size.is_none()
    }
}

/// An even number near `value` (H.264 wants even dimensions).
fn even(value: f64) -> u32 {
    let rounded = value.round() as u32;
    rounded.max(2) & !1
}

/// The renditions of a source, best first.
pub fn ladder(info: &SourceInfo) -> Vec<Rendition> {
    let Some(video) = &info.video else {
        return vec![Rendition {
            name: AUDIO.into(),
            size: None,
            video_bitrate: 0,
            audio_bitrate: AUDIO_ONLY_BITRATE,
            copy_video: false,
            codecs: AUDIO_CODECS.into(),
        }];
    };
    let source_bitrate = video.bit_rate.or(info.bit_rate);
    let aspect = f64::from(video.width.max(1)) / f64::from(video.height.max(1));
    let cap = |bitrate: u64| source_bitrate.map_or(bitrate, |source| bitrate.min(source.max(200_000)));
    let mut rungs: Vec<Rendition> = RUNGS
        .iter()
        .filter(|(height, _)| *height <= video.height)
        .map(|(height, bitrate)| Rendition {
            name: format!("{height}p"),
            size: Some((even(f64::from(*height) * aspect), *height)),
            video_bitrate: cap(*bitrate),
            audio_bitrate: AUDIO_BITRATE,
            copy_video: false,
            codecs: ENCODED_CODECS.into(),
        })
        .collect();
    if rungs.is_empty() {
        // Smaller than every rung: one rendition at the source's size.
        let height = even(f64::from(video.height));
        rungs.push(Rendition {
            name: format!("{height}p"),
            size: Some((even(f64::from(video.width)), height)),
            video_bitrate: cap(RUNGS[RUNGS.len() - 1].1),
            audio_bitrate: AUDIO_BITRATE,
            copy_video: false,
            codecs: ENCODED_CODECS.into(),
        });
    }
    rungs
}

/// The rendition that copies the source's video, when HLS players decode
/// it: 8-bit H.264 or HEVC. Whether its keyframes allow segments is for
/// [`crate::segments::SegmentPlan::from_keyframes`] to say.
pub fn copy_rendition(info: &SourceInfo) -> Option<Rendition> {
    let video = info.video.as_ref()?;
    let codec = video_codecs_attribute(video)?;
    // Without a stated rate, a generous guess: players only use it to
    // choose, and a copy cannot be made smaller anyway.
    let video_bitrate = video
        .bit_rate
        .or(info.bit_rate)
        .unwrap_or(u64::from(video.width) * u64::from(video.height) * 4);
    Some(Rendition {
        name: ORIGINAL.into(),
        size: Some((video.width, video.height)),
        video_bitrate,
        audio_bitrate: AUDIO_BITRATE,
        copy_video: true,
        codecs: if info.audio.is_empty() {
            codec
        } else {
            format!("{codec},{AUDIO_CODECS}")
        },
    })
}

/// RFC 6381 codec string of a video stream HLS players decode, from
/// ffprobe's profile and level; `None` for anything else.
fn video_codecs_attribute(video: &VideoStream) -> Option<String> {
    let profile = video.profile.as_deref().unwrap_or_default();
    let level = u8::try_from(video.level?).ok()?;
    match video.codec.as_str() {
        "h264" => {
            let eight_bit = matches!(video.pix_fmt.as_deref(), None | Some("yuv420p" | "yuvj420p"));
            // profile_idc and constraint flags (ISO 14496-10 A.2).
            let (idc, constraints) = match profile {
                "Constrained Baseline" => (0x42, 0xE0),
                "Baseline" => (0x42, 0x00),
                "Main" => (0x4D, 0x40),
                "High" => (0x64, 0x00),
                _ => return None,
            };
            eight_bit.then(|| format!("avc1.{idc:02X}{constraints:02X}{level:02X}"))
        }
        "hevc" => {
            // general_profile_idc and compatibility flags; main tier.
            let (idc, compatibility) = match profile {
                "Main" => (1, 6),
                "Main 10" => (2, 4),
                _ => return None,
            };
            Some(format!("hvc1.{idc}.{compatibility}.L{level}.B0"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::VideoStream;

    fn source(width: u32, height: u32, bit_rate: Option<u64>) -> SourceInfo {
        SourceInfo {
            container: "matroska".into(),
            duration_s: 60.0,
            bit_rate,
            video: Some(VideoStream {
                index: 0,
                codec: "h264".into(),
                width,
                height,
                fps: 25.0,
                pix_fmt: None,
                bit_rate: None,
                frame_rate: None,
                profile: None,
                level: None,
            }),
            audio: Vec::new(),
            subtitles: Vec::new(),
        }
    }

    #[test]
    fn rungs_never_upscale_and_keep_the_aspect() {
        let names: Vec<String> = ladder(&source(1920, 1080, None)).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["1080p", "720p", "480p", "360p"]);
        let wide = ladder(&source(1920, 800, None));
        assert_eq!(wide[0].name, "720p");
        assert_eq!(wide[0].size, Some((1728, 720)));
        let tiny = ladder(&source(64, 48, Some(100_000)));
        assert_eq!(tiny.len(), 1);
        assert_eq!(tiny[0].size, Some((64, 48)));
        assert_eq!(tiny[0].video_bitrate, 200_000, "capped near the source's own rate");
    }

    #[test]
    fn copies_are_offered_for_what_players_decode() {
        let mut info = source(1920, 1080, Some(6_000_000));
        assert!(copy_rendition(&info).is_none(), "no profile or level known");
        if let Some(video) = info.video.as_mut() {
            video.profile = Some("High".into());
            video.level = Some(41);
        }
        let copy = copy_rendition(&info).unwrap_or_else(|| panic!("High 4.1 is copied"));
        assert_eq!((copy.name.as_str(), copy.codecs.as_str()), (ORIGINAL, "avc1.640029"));
        assert_eq!(copy.video_bitrate, 6_000_000);
        if let Some(video) = info.video.as_mut() {
            video.pix_fmt = Some("yuv420p10le".into());
        }
        assert!(copy_rendition(&info).is_none(), "10-bit H.264 plays in no browser");
        if let Some(video) = info.video.as_mut() {
            video.codec = "hevc".into();
            video.profile = Some("Main 10".into());
            video.level = Some(153);
        }
        let copy = copy_rendition(&info).unwrap_or_else(|| panic!("HEVC is copied"));
        assert_eq!(copy.codecs, "hvc1.2.4.L153.B0");
    }

    #[test]
    fn audio_sources_get_one_audio_rendition() {
        let mut info = source(1, 1, None);
        info.video = None;
        let ladder = ladder(&info);
        assert_eq!(ladder.len(), 1);
        assert!(ladder[0].audio_only());
    }
}
