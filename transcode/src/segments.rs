//! Segment boundaries, computed from the source alone: segment `i` starts
//! at `i × target` seconds (the encoder is told to put a keyframe there)
//! and the last one ends with the source. Every node that transcodes the
//! same source cuts the same segments, so a segment made on one node can
//! be served by another.

/// Target segment length in seconds: short enough for a quick first
/// segment on two cores, long enough to keep requests few.
pub const TARGET_SECONDS: u32 = 4;

/// The longest tail (seconds) that does not get a segment of its own:
/// containers often run a few audio frames past the last video frame.
pub const SLIVER_S: f64 = 0.25;

/// The segments of one source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentPlan {
    target_s: u32,
    duration_s: f64,
}

impl SegmentPlan {
    /// The plan for a source of `duration_s` seconds.
    pub fn new(duration_s: f64) -> SegmentPlan {
        SegmentPlan::with_target(duration_s, TARGET_SECONDS)
    }

    /// The plan with another target length.
    pub fn with_target(duration_s: f64, target_s: u32) -> SegmentPlan {
        assert!(target_s > 0, "segments have a length");
        SegmentPlan {
            target_s,
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

    /// Number of segments (at least one). A remainder shorter than
    /// [`SLIVER_S`] joins the last segment instead of making its own.
    pub fn count(&self) -> u32 {
        (((self.duration_s - SLIVER_S) / f64::from(self.target_s)).ceil() as u32).max(1)
    }

    /// Where segment `index` starts, in seconds.
    pub fn start_s(&self, index: u32) -> f64 {
        f64::from(index) * f64::from(self.target_s)
    }

    /// How long segment `index` lasts.
    pub fn duration_of(&self, index: u32) -> f64 {
        let end = if index + 1 >= self.count() {
            self.duration_s
        } else {
            self.start_s(index) + f64::from(self.target_s)
        };
        (end - self.start_s(index)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_last_segment_ends_with_the_source() {
        let plan = SegmentPlan::new(10.5);
        assert_eq!(plan.count(), 3);
        assert_eq!(plan.start_s(2), 8.0);
        assert!((plan.duration_of(2) - 2.5).abs() < 1e-9);
        assert_eq!(SegmentPlan::new(0.0).count(), 1);
        let with_sliver = SegmentPlan::new(20.02);
        assert_eq!(with_sliver.count(), 5, "a 20 ms tail joins the last segment");
        assert!((with_sliver.duration_of(4) - 4.02).abs() < 1e-9);
    }

    proptest! {
        /// Segments tile the source: they sum to its duration and none
        /// exceeds the target.
        #[test]
        fn segments_tile_the_source(duration in 0.1_f64..20_000.0, target in 1_u32..20) {
            let plan = SegmentPlan::with_target(duration, target);
            let total: f64 = (0..plan.count()).map(|index| plan.duration_of(index)).sum();
            prop_assert!((total - duration).abs() < 1e-6);
            for index in 0..plan.count() {
                // Rounded, as HLS compares it with the target duration.
                prop_assert!(plan.duration_of(index).round() <= f64::from(target));
                prop_assert!(plan.duration_of(index) > 0.0);
            }
        }
    }
}
