//! HLS playlists (RFC 8216, version 7 for fMP4): the master lists the
//! renditions and subtitle tracks; a variant lists every segment of one
//! rendition up front (a VOD playlist: the plan is known from the source).
//! `query` (e.g. `?t=…`) is appended to every URL inside, so that players
//! that send no headers are authorised by the signed token it carries.

use std::fmt::Write;

use crate::ladder::Rendition;
use crate::segments::SegmentPlan;

/// A subtitle track in the master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtitleTrack {
    /// Its id in URLs.
    pub id: String,
    /// Language tag.
    pub language: String,
    /// Name shown to the viewer.
    pub name: String,
}

fn quoted(text: &str) -> String {
    // Quoted strings may not hold quotes or line breaks.
    text.chars().filter(|c| !matches!(c, '"' | '\r' | '\n')).collect()
}

/// The master playlist. Variant URLs are `{name}/index.m3u8{query}`;
/// subtitle playlists `subtitles/{id}.m3u8{query}`.
pub fn master(renditions: &[Rendition], subtitles: &[SubtitleTrack], query: &str) -> String {
    let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (position, track) in subtitles.iter().enumerate() {
        let _ = writeln!(
            text,
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT=NO,AUTOSELECT={},URI=\"subtitles/{}.m3u8{query}\"",
            quoted(&track.name),
            quoted(&track.language),
            if position == 0 { "YES" } else { "NO" },
            track.id,
        );
    }
    for rendition in renditions {
        let mut attributes = format!("BANDWIDTH={}", rendition.bandwidth());
        if let Some((width, height)) = rendition.size {
            let _ = write!(attributes, ",RESOLUTION={width}x{height}");
        }
        let _ = write!(attributes, ",CODECS=\"{}\"", quoted(&rendition.codecs));
        if !subtitles.is_empty() {
            attributes.push_str(",SUBTITLES=\"subs\"");
        }
        let _ = writeln!(
            text,
            "#EXT-X-STREAM-INF:{attributes}\n{}/index.m3u8{query}",
            rendition.name
        );
    }
    text
}

/// A rendition's playlist: `init.mp4` and every segment `N.m4s`.
pub fn variant(plan: &SegmentPlan, query: &str) -> String {
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4{query}\"\n",
        plan.target_s()
    );
    for index in 0..plan.count() {
        let _ = writeln!(text, "#EXTINF:{:.3},\n{index}.m4s{query}", plan.duration_of(index));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

/// A subtitle track's playlist: one WebVTT file for the whole duration.
pub fn subtitle(duration_s: f64, vtt_url: &str) -> String {
    let target = duration_s.ceil().max(1.0) as u64;
    format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{duration_s:.3},\n{vtt_url}\n#EXT-X-ENDLIST\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_list_every_segment_with_the_token() {
        let text = variant(&SegmentPlan::new(10.0), "?t=abc");
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4?t=abc\""));
        assert!(text.contains("#EXTINF:0.500,\n0.m4s?t=abc\n"));
        assert!(text.contains("#EXTINF:1.000,\n1.m4s?t=abc\n"));
        assert!(text.contains("#EXTINF:4.000,\n3.m4s?t=abc\n"));
        assert!(text.contains("#EXTINF:2.500,\n4.m4s?t=abc\n#EXT-X-ENDLIST"));
    }

    #[test]
    fn masters_list_renditions_and_subtitles() {
        let renditions = vec![Rendition {
            name: "720p".into(),
            size: Some((1280, 720)),
            video_bitrate: 2_800_000,
            audio_bitrate: 128_000,
            copy_video: false,
            codecs: "avc1.640028,mp4a.40.2".into(),
        }];
        let subtitles = vec![SubtitleTrack {
            id: "s2".into(),
            language: "fra".into(),
            name: "Français \"forced\"".into(),
        }];
        let text = master(&renditions, &subtitles, "?t=x");
        assert!(text.contains("RESOLUTION=1280x720,CODECS=\"avc1.640028,mp4a.40.2\""));
        assert!(text.contains("SUBTITLES=\"subs\""));
        assert!(text.contains("NAME=\"Français forced\""));
        assert!(text.contains("720p/index.m3u8?t=x"));
    }
}
