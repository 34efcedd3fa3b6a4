//! Segment boundaries, computed from the source alone, so that every node
//! cuts the same segments and a segment made on one node can be served by
//! another.
//!
//! Two layouts:
//! - a **grid** for transcoded renditions: the first segment lasts
//!   [`FIRST_MS`] (a quick first segment on a small machine), each next
//!   one twice as long until they reach [`TARGET_SECONDS`] (so that the
//!   encoder stays ahead of the player), the rest [`TARGET_SECONDS`], and
//!   the last ends with the source. The encoder is told to put a keyframe at every boundary. A
//!   grid has a [`SegmentPlan::layout_tag`], which stored segments are
//!   kept under, so that a change of the grid never serves a segment cut
//!   on another one.
//! - **keyframes** for stream copies (remux), where the source's keyframes
//!   are the only places a segment can start. The muxer cuts a *piece* at
//!   every keyframe, wherever the session started; a segment is a run of
//!   whole pieces, about [`TARGET_SECONDS`] long.

use std::ops::Range;
use std::sync::Arc;

/// Target segment length in seconds (`EXT-X-TARGETDURATION`).
pub const TARGET_SECONDS: u32 = 4;
/// Length of the first segment, in milliseconds: libx264 at `veryfast`
/// makes the first half second of 1080p → 720p in about 0.33 s on two
/// cores, a second in 0.45 s, two in 0.7 s (ffmpeg's start included).
pub const FIRST_MS: u32 = 500;

/// The longest tail (seconds) that does not get a segment of its own:
/// containers often run a few audio frames past the last video frame.
pub const SLIVER_S: f64 = 0.25;

/// A stream copy needs keyframes at least this far apart: pieces are cut at
/// every keyframe once half of this has passed since the session's first
/// packet, which may be audio a little ahead of the first keyframe.
pub const MIN_KEYFRAME_GAP_S: f64 = 0.25;
/// A stream copy whose segments would be longer than this is not offered
/// (seeking and the first segment would be too slow).
pub const MAX_COPY_SEGMENT_S: f64 = 12.0;

/// The segments of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentPlan {
    layout: Layout,
    duration_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Layout {
    Grid {
        target_s: u32,
        /// The first segment's length; each next one doubles it until the
        /// target.
        first_ms: u32,
    },
    Keyframes(Arc<KeyframeLayout>),
}

#[derive(Debug, PartialEq)]
struct KeyframeLayout {
    /// Where each piece starts: the source's keyframes.
    keyframes: Vec<f64>,
    /// The first piece of each segment (ascending; the first is 0).
    first_piece: Vec<u32>,
    /// The longest segment, rounded.
    target_s: u32,
}

fn finite_duration(duration_s: f64) -> f64 {
    if duration_s.is_finite() {
        duration_s.max(0.0)
    } else {
        0.0
    }
}

impl SegmentPlan {
    /// The grid plan for a source of `duration_s` seconds.
    pub fn new(duration_s: f64) -> SegmentPlan {
        SegmentPlan {
            layout: Layout::Grid {
                target_s: TARGET_SECONDS,
                first_ms: FIRST_MS,
            },
            duration_s: finite_duration(duration_s),
        }
    }

    /// The grid of an encoded rendition: [`SegmentPlan::new`] for video
    /// (the encoder puts a keyframe at each boundary, the muxer cuts there);
    /// equal segments of [`TARGET_SECONDS`] for audio alone, which the HLS
    /// muxer cuts by elapsed time only (at every `hls_time`).
    pub fn encoded(duration_s: f64, audio_only: bool) -> SegmentPlan {
        if audio_only {
            SegmentPlan::with_target(duration_s, TARGET_SECONDS)
        } else {
            SegmentPlan::new(duration_s)
        }
    }

    /// A grid plan of equal segments of `target_s` seconds.
    pub fn with_target(duration_s: f64, target_s: u32) -> SegmentPlan {
        assert!(target_s > 0, "segments have a length");
        SegmentPlan {
            layout: Layout::Grid {
                target_s,
                first_ms: target_s.saturating_mul(1000),
            },
            duration_s: finite_duration(duration_s),
        }
    }

    /// The plan of a stream copy whose video has `keyframes` (seconds,
    /// ascending, distinct): segments of whole GOPs, each as close to
    /// [`TARGET_SECONDS`] as the keyframes allow. `None` when the keyframes
    /// do not allow one: none at all, some closer than
    /// [`MIN_KEYFRAME_GAP_S`], or a segment longer than
    /// [`MAX_COPY_SEGMENT_S`].
    pub fn from_keyframes(keyframes: &[f64], duration_s: f64) -> Option<SegmentPlan> {
        let duration_s = finite_duration(duration_s);
        let first = *keyframes.first()?;
        // Piece 0 is the session's first packets up to the second keyframe;
        // a file must start with (about) a keyframe for it to be whole.
        if first > 1.0 || keyframes.windows(2).any(|pair| pair[1] - pair[0] < MIN_KEYFRAME_GAP_S) {
            return None;
        }
        let target = f64::from(TARGET_SECONDS);
        let mut first_piece = vec![0_u32];
        let mut start = 0.0_f64;
        for (piece, &time) in keyframes.iter().enumerate().skip(1) {
            if time >= duration_s - SLIVER_S {
                break;
            }
            let length = time - start;
            let next_length = keyframes
                .get(piece + 1)
                .filter(|next| **next < duration_s - SLIVER_S)
                .map_or(duration_s - start, |next| next - start);
            // Cut here when the next keyframe would overshoot the target by
            // more than this one falls short of it.
            if length >= target || next_length - target > target - length {
                let piece = u32::try_from(piece).ok()?;
                first_piece.push(piece);
                start = time;
            }
        }
        let starts: Vec<f64> = first_piece
            .iter()
            .enumerate()
            .map(|(segment, piece)| if segment == 0 { 0.0 } else { keyframes[*piece as usize] })
            .collect();
        let longest = starts
            .iter()
            .zip(starts.iter().skip(1).chain([&duration_s]))
            .map(|(start, end)| end - start)
            .fold(0.0_f64, f64::max);
        if longest > MAX_COPY_SEGMENT_S {
            return None;
        }
        Some(SegmentPlan {
            layout: Layout::Keyframes(Arc::new(KeyframeLayout {
                keyframes: keyframes.to_vec(),
                first_piece,
                // HLS compares segment lengths, as written (milliseconds)
                // and rounded half up, with the target.
                target_s: ((((longest * 1000.0).round() / 1000.0) + 0.5).floor() as u32).max(1),
            })),
            duration_s,
        })
    }

    /// True for a stream copy's plan (segments at the source's keyframes).
    pub fn follows_keyframes(&self) -> bool {
        matches!(self.layout, Layout::Keyframes(_))
    }

    /// Names a grid's layout (`g500t4`: a first segment of 500 ms, then
    /// doubling up to 4 s), for the names segments are kept and shared
    /// under: a segment cut on one grid is not a segment of another. `None`
    /// for a stream copy, whose segments follow the source's keyframes,
    /// which the source's content address already names.
    pub fn layout_tag(&self) -> Option<String> {
        match &self.layout {
            Layout::Grid { target_s, first_ms } => Some(format!("g{first_ms}t{target_s}")),
            Layout::Keyframes(_) => None,
        }
    }

    /// A grid's lead: how many segments are shorter than the target, and
    /// how long they last together (seconds).
    fn lead(target_s: u32, first_ms: u32) -> (u32, f64) {
        let target_ms = u64::from(target_s) * 1000;
        let (mut count, mut total_ms, mut length_ms) = (0_u32, 0_u64, u64::from(first_ms.max(1)));
        while length_ms < target_ms {
            count += 1;
            total_ms += length_ms;
            length_ms *= 2;
        }
        (count, total_ms as f64 / 1000.0)
    }

    /// Target length in seconds (the playlist's `EXT-X-TARGETDURATION`).
    pub fn target_s(&self) -> u32 {
        match &self.layout {
            Layout::Grid { target_s, .. } => *target_s,
            Layout::Keyframes(layout) => layout.target_s,
        }
    }

    /// How much time the muxer lets pass before it cuts at the next
    /// keyframe: half a second less than the shortest grid segment (its
    /// first packet may come a frame after the boundary), at least half of
    /// it, or half the closest keyframes' gap for a copy, so that it cuts at
    /// every keyframe.
    pub fn cut_after_s(&self) -> f64 {
        match &self.layout {
            Layout::Grid { target_s, first_ms } => {
                let shortest = (f64::from(*first_ms) / 1000.0).min(f64::from(*target_s));
                (shortest - 0.5).max(shortest / 2.0)
            }
            Layout::Keyframes(layout) => {
                let closest = layout
                    .keyframes
                    .windows(2)
                    .map(|pair| pair[1] - pair[0])
                    .fold(f64::from(TARGET_SECONDS), f64::min);
                closest / 2.0
            }
        }
    }

    /// Number of segments (at least one). A remainder shorter than
    /// [`SLIVER_S`] joins the last segment instead of making its own.
    pub fn count(&self) -> u32 {
        match &self.layout {
            Layout::Grid { target_s, first_ms } => {
                let usable = self.duration_s - SLIVER_S;
                let (lead_count, lead_total) = SegmentPlan::lead(*target_s, *first_ms);
                if usable <= lead_total {
                    // The lead segments that reach past the usable length.
                    (1..=lead_count)
                        .find(|index| self.start_s(*index) >= usable)
                        .unwrap_or(1)
                } else {
                    let count = f64::from(lead_count) + ((usable - lead_total) / f64::from(*target_s)).ceil();
                    (count as u32).max(1)
                }
            }
            // At most u32::MAX entries: built from u32 piece numbers.
            Layout::Keyframes(layout) => layout.first_piece.len() as u32,
        }
    }

    /// Where segment `index` starts, in seconds (the source's end for
    /// `count()` and past it, on a keyframe plan).
    pub fn start_s(&self, index: u32) -> f64 {
        match &self.layout {
            Layout::Grid { target_s, first_ms } => {
                let (lead_count, lead_total) = SegmentPlan::lead(*target_s, *first_ms);
                if index <= lead_count {
                    // Lead segments double: together, first × (2^index - 1).
                    f64::from(*first_ms) * ((1_u64 << index) - 1) as f64 / 1000.0
                } else {
                    lead_total + f64::from(index - lead_count) * f64::from(*target_s)
                }
            }
            Layout::Keyframes(layout) => match layout.first_piece.get(index as usize) {
                Some(_) if index == 0 => 0.0,
                Some(piece) => layout.keyframes[*piece as usize],
                None => self.duration_s,
            },
        }
    }

    /// How long segment `index` lasts.
    pub fn duration_of(&self, index: u32) -> f64 {
        let end = if index + 1 >= self.count() {
            self.duration_s
        } else {
            self.start_s(index + 1)
        };
        (end - self.start_s(index)).max(0.0)
    }

    /// The boundaries from segment `first` to the last, where keyframes go.
    pub fn boundaries_from(&self, first: u32) -> impl Iterator<Item = f64> + '_ {
        (first..self.count()).map(|index| self.start_s(index))
    }

    /// The pieces the muxer writes for segment `index`: one per segment on
    /// a grid, one per GOP on a keyframe plan.
    pub fn pieces(&self, index: u32) -> Range<u32> {
        match &self.layout {
            Layout::Grid { .. } => index..index + 1,
            Layout::Keyframes(layout) => {
                let first = layout.first_piece.get(index as usize).copied();
                let end = layout
                    .first_piece
                    .get(index as usize + 1)
                    .copied()
                    .unwrap_or(layout.keyframes.len() as u32);
                first.map_or(end..end, |first| first..end)
            }
        }
    }

    /// The last segment all of whose pieces are among `0..=piece`.
    pub fn complete_through(&self, piece: u32) -> Option<u32> {
        match &self.layout {
            Layout::Grid { .. } => Some(piece),
            Layout::Keyframes(layout) => {
                // Segments starting at or before the piece after this one.
                let started = layout.first_piece.partition_point(|first| *first <= piece + 1);
                let complete =
                    if layout.first_piece.get(started).is_none() && piece + 1 >= layout.keyframes.len() as u32 {
                        started
                    } else {
                        started.saturating_sub(1)
                    };
                u32::try_from(complete).ok()?.checked_sub(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_segments_are_short() {
        let plan = SegmentPlan::new(20.0);
        let starts: Vec<f64> = plan.boundaries_from(0).collect();
        assert_eq!(starts, [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]);
        assert_eq!(plan.count(), 8, "the last half second is a segment of its own");
        assert_eq!(plan.cut_after_s(), 0.25);
        assert_eq!(plan.layout_tag().as_deref(), Some("g500t4"));
        assert_eq!(SegmentPlan::new(1.0).count(), 2);
        assert_eq!(SegmentPlan::new(0.7).count(), 1);
        assert_eq!(SegmentPlan::new(2.0).count(), 3);
        assert_eq!(
            SegmentPlan::with_target(20.0, 4).layout_tag().as_deref(),
            Some("g4000t4")
        );
    }

    #[test]
    fn the_last_segment_ends_with_the_source() {
        let plan = SegmentPlan::with_target(10.5, 4);
        assert_eq!(plan.count(), 3);
        assert_eq!(plan.start_s(2), 8.0);
        assert!((plan.duration_of(2) - 2.5).abs() < 1e-9);
        assert_eq!(SegmentPlan::new(0.0).count(), 1);
        let with_sliver = SegmentPlan::with_target(20.02, 4);
        assert_eq!(with_sliver.count(), 5, "a 20 ms tail joins the last segment");
        assert!((with_sliver.duration_of(4) - 4.02).abs() < 1e-9);
    }

    #[test]
    fn copies_cut_whole_gops_near_the_target() {
        let keyframes = [
            0.021, 1.521, 2.021, 4.229, 5.021, 9.729, 10.104, 13.021, 17.521, 18.021, 22.021, 26.313, 29.021,
        ];
        let plan = SegmentPlan::from_keyframes(&keyframes, 30.0).unwrap_or_else(|| panic!("a plan"));
        let starts: Vec<f64> = plan.boundaries_from(0).collect();
        assert_eq!(starts, [0.0, 4.229, 9.729, 13.021, 17.521, 22.021, 26.313]);
        assert_eq!(plan.pieces(0), 0..3);
        assert_eq!(plan.pieces(6), 11..13);
        assert_eq!(plan.target_s(), 6);
        assert_eq!(plan.complete_through(1), None);
        assert_eq!(plan.complete_through(2), Some(0));
        assert_eq!(plan.complete_through(10), Some(5));
        assert_eq!(plan.complete_through(12), Some(6));
        assert!((plan.cut_after_s() - 0.1875).abs() < 1e-9);
        assert!(SegmentPlan::from_keyframes(&[0.0, 0.1], 10.0).is_none(), "too close");
        assert!(SegmentPlan::from_keyframes(&[0.0, 20.0], 30.0).is_none(), "too far");
        assert!(SegmentPlan::from_keyframes(&[], 30.0).is_none());
    }

    proptest! {
        /// A keyframe plan tiles the source with whole pieces.
        #[test]
        fn keyframe_plans_tile_pieces(gaps in proptest::collection::vec(0.25_f64..6.0, 1..200), tail in 0.0_f64..6.0) {
            let mut keyframes = vec![0.0];
            for gap in &gaps {
                let last = keyframes[keyframes.len() - 1];
                keyframes.push(last + gap);
            }
            let duration = keyframes[keyframes.len() - 1] + tail;
            let Some(plan) = SegmentPlan::from_keyframes(&keyframes, duration) else {
                return Ok(());
            };
            let mut next_piece = 0;
            for index in 0..plan.count() {
                let pieces = plan.pieces(index);
                prop_assert_eq!(pieces.start, next_piece);
                prop_assert!(pieces.end > pieces.start);
                next_piece = pieces.end;
                prop_assert!(plan.duration_of(index) > 0.0);
                prop_assert!(plan.duration_of(index).round() <= f64::from(plan.target_s()));
                prop_assert_eq!(plan.complete_through(pieces.end - 1), Some(index));
            }
            prop_assert_eq!(next_piece as usize, keyframes.len());
            let total: f64 = (0..plan.count()).map(|index| plan.duration_of(index)).sum();
            prop_assert!((total - duration).abs() < 1e-6);
        }


        /// Segments tile the source: they sum to its duration and none
        /// exceeds the target.
        #[test]
        fn segments_tile_the_source(duration in 0.1_f64..20_000.0, target in 1_u32..20, lead in any::<bool>()) {
            let plan = if lead { SegmentPlan::new(duration) } else { SegmentPlan::with_target(duration, target) };
            let target = plan.target_s();
            let total: f64 = (0..plan.count()).map(|index| plan.duration_of(index)).sum();
            prop_assert!((total - duration).abs() < 1e-6);
            for index in 0..plan.count() {
                // Rounded, as HLS compares it with the target duration.
                prop_assert!(plan.duration_of(index).round() <= f64::from(target));
                prop_assert!(plan.duration_of(index) > 0.0);
                prop_assert!(plan.start_s(index) < plan.start_s(index + 1));
            }
        }
    }
}
