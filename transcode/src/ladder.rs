//! The rendition ladder: which qualities a source is offered in. Rungs at
//! or below the source's height (never upscaled), bit rates capped by the
//! source's own, AAC stereo audio; a source without video gets one
//! audio-only rendition.

use serde::Serialize;

use crate::probe::SourceInfo;

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
}

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
            name: "audio".into(),
            size: None,
            video_bitrate: 0,
            audio_bitrate: AUDIO_ONLY_BITRATE,
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
        });
    }
    rungs
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
    fn audio_sources_get_one_audio_rendition() {
        let mut info = source(1, 1, None);
        info.video = None;
        let ladder = ladder(&info);
        assert_eq!(ladder.len(), 1);
        assert!(ladder[0].audio_only());
    }
}
