//! Segment boundaries, computed from the source alone: the first
//! [`LEAD_SEGMENTS`] segments last [`LEAD_SECONDS`] (a quick first segment
//! on a small machine), the rest [`TARGET_SECONDS`], and the last ends
//! with the source. The encoder is told to put a keyframe at every
//! boundary, so every node that transcodes the same source cuts the same
//! segments, and a segment made on one node can be served by another.

/// Target segment length in seconds (`EXT-X-TARGETDURATION`).
pub const TARGET_SECONDS: u32 = 4;
/// Length of the first segments.
pub const LEAD_SECONDS: u32 = 2;
/// How many segments are short.
pub const LEAD_SEGMENTS: u32 = 2;

/// The longest tail (seconds) that does not get a segment of its own:
/// containers often run a few audio frames past the last video frame.
pub const SLIVER_S: f64 = 0.25;

/// The segments of one source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentPlan {
    target_s: u32,
    lead_s: u32,
    lead_count: u32,
    duration_s: f64,
}

impl SegmentPlan {
    /// The plan for a source of `duration_s` seconds.
    pub fn new(duration_s: f64) -> SegmentPlan {
        SegmentPlan {
            lead_s: LEAD_SECONDS,
            lead_count: LEAD_SEGMENTS,
            ..SegmentPlan::with_target(duration_s, TARGET_SECONDS)
        }
    }

    /// A plan of equal segments of `target_s` seconds.
    pub fn with_target(duration_s: f64, target_s: u32) -> SegmentPlan {
        assert!(target_s > 0, "segments have a length");
        SegmentPlan {
            target_s,
            lead_s: target_s,
            lead_count: 0,
            duration_s: if duration_s.is_finite() {
                duration_s.max(0.0)
            } else {
                0.0
            },
        }
    }

    /// Target length in seconds (the playlist's `EXT-X-TARGETDURATION`).
    pub fn target_s(&self) -> u32 {
        self.target_s
    }

    /// The shortest segment length (but the last): the muxer cuts at every
    /// keyframe once this much has passed.
    pub fn shortest_s(&self) -> u32 {
        if self.lead_count > 0 {
            self.lead_s.min(self.target_s)
        } else {
            self.target_s
        }
    }

    /// Number of segments (at least one). A remainder shorter than
    /// [`SLIVER_S`] joins the last segment instead of making its own.
    pub fn count(&self) -> u32 {
        let usable = self.duration_s - SLIVER_S;
        let lead_total = f64::from(self.lead_count * self.lead_s);
        let count = if usable <= lead_total {
            (usable / f64::from(self.lead_s)).ceil()
        } else {
            f64::from(self.lead_count) + ((usable - lead_total) / f64::from(self.target_s)).ceil()
        };
        (count as u32).max(1)
    }

    /// Where segment `index` starts, in seconds.
    pub fn start_s(&self, index: u32) -> f64 {
        if index <= self.lead_count {
            f64::from(index * self.lead_s)
        } else {
            f64::from(self.lead_count * self.lead_s) + f64::from(index - self.lead_count) * f64::from(self.target_s)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_segments_are_short() {
        let plan = SegmentPlan::new(20.0);
        let starts: Vec<f64> = plan.boundaries_from(0).collect();
        assert_eq!(starts, [0.0, 2.0, 4.0, 8.0, 12.0, 16.0]);
        assert_eq!(plan.shortest_s(), 2);
        assert_eq!(SegmentPlan::new(3.0).count(), 2);
        assert_eq!(SegmentPlan::new(1.0).count(), 1);
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

    proptest! {
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
