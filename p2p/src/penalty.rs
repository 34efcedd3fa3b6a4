//! Peers that sent bytes failing their hash, avoided by later fetches for
//! a while (within one fetch the schedule bans them at once). Bounded: a
//! full table forgets the penalty nearest its end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a peer that lied is left out of fetches.
pub const PENALTY: Duration = Duration::from_secs(600);

/// The table.
#[derive(Debug)]
pub(crate) struct Penalties {
    until: HashMap<PeerId, Instant>,
    capacity: usize,
}

impl Penalties {
    /// An empty table of at most `capacity` peers.
    pub(crate) fn new(capacity: usize) -> Penalties {
        assert!(capacity > 0, "room for one penalty at least");
        Penalties {
            until: HashMap::new(),
            capacity,
        }
    }

    /// Leaves `peer` out until [`PENALTY`] after `now`.
    pub(crate) fn penalise(&mut self, peer: PeerId, now: Instant) {
        if self.until.len() >= self.capacity && !self.until.contains_key(&peer) {
            self.until.retain(|_, until| *until > now);
            if self.until.len() >= self.capacity {
                let nearest = self
                    .until
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(peer, _)| *peer);
                if let Some(nearest) = nearest {
                    self.until.remove(&nearest);
                }
            }
        }
        self.until.insert(peer, now + PENALTY);
        debug_assert!(self.until.len() <= self.capacity);
    }

    /// True while `peer`'s penalty lasts.
    pub(crate) fn is_penalised(&self, peer: &PeerId, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_penalty_lasts_its_time_and_the_table_stays_bounded() {
        let start = Instant::now();
        let mut penalties = Penalties::new(4);
        let liar = PeerId::random();
        penalties.penalise(liar, start);
        assert!(penalties.is_penalised(&liar, start + PENALTY / 2));
        assert!(!penalties.is_penalised(&liar, start + PENALTY));
        assert!(!penalties.is_penalised(&PeerId::random(), start));
        let later: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        for (step, peer) in later.iter().enumerate() {
            penalties.penalise(*peer, start + Duration::from_secs(step as u64 + 1));
        }
        assert_eq!(penalties.until.len(), 4);
        assert!(penalties.is_penalised(&later[9], start + Duration::from_secs(10)));
        assert!(
            !penalties.is_penalised(&later[0], start + Duration::from_secs(10)),
            "the nearest end goes first"
        );
    }
}
