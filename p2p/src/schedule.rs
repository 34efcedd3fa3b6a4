//! Which provider sends which piece, with no sockets: fetch workers ask
//! [`Schedule::next`] for a batch, report each piece's outcome, and the
//! schedule re-queues what failed.
//!
//! Rules:
//! - Pieces go out in order (a player can start on the first ones) to
//!   whichever worker asks, so faster peers carry more.
//! - The origin (the node that holds the item's file, and usually made it)
//!   is spared: while another healthy provider exists it is given at most
//!   `origin_share` of the bytes to fetch, plus any piece no one else can
//!   give.
//! - A batch is at most an equal share of what is left among the healthy
//!   providers, so that the first worker to ask does not take everything.
//! - A peer that sends bytes that fail their hash is banned at once: QUIC
//!   already protects bytes in flight, so a bad piece is never an
//!   accident. Its piece goes back to the queue for someone else.
//! - A peer that lacks a piece is not asked for it again; a peer that
//!   vanished has its pieces re-queued.

use std::collections::HashSet;

/// A provider's slot in the schedule.
pub type Slot = usize;

/// What a worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask for these pieces (indexes into the manifest).
    Batch(Vec<usize>),
    /// Nothing for this peer now; ask again after [`Schedule`] changes.
    Wait,
    /// This peer can give nothing more (banned, gone, or lacks the rest).
    Stop,
    /// Every piece is here.
    Done,
}

/// What came of one requested piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its bytes matched its hash (and were written).
    Verified,
    /// Its bytes did not match its hash.
    Corrupt,
    /// The peer does not have it, or refused it.
    Missing,
    /// The peer is busy: ask someone else for now.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    InFlight(Slot),
    /// From a peer, or (None) already on disk when the fetch began.
    Done(Option<Slot>),
}

#[derive(Debug, Default)]
struct Peer {
    origin: bool,
    banned: bool,
    gone: bool,
    /// Bytes verified from it.
    bytes: u64,
    /// Bytes handed to it (in flight or done).
    assigned: u64,
    /// Pieces it cannot give.
    lacks: HashSet<usize>,
    /// Pieces it sent that failed verification.
    verify_failures: u64,
}

impl Peer {
    fn healthy(&self) -> bool {
        !self.banned && !self.gone
    }
}

/// The state of one fetch.
#[derive(Debug)]
pub struct Schedule {
    lens: Vec<u32>,
    states: Vec<State>,
    peers: Vec<Peer>,
    /// Share of the bytes to fetch the origin may carry while others can.
    origin_share: f64,
    /// Pieces not yet done.
    remaining: usize,
    /// Bytes of the pieces not on disk at the start.
    to_fetch: u64,
    /// Bytes of pieces neither done nor in flight.
    missing_bytes: u64,
}

impl Schedule {
    /// A schedule for pieces of these lengths.
    pub fn new(lens: Vec<u32>, origin_share: f64) -> Schedule {
        debug_assert!((0.0..=1.0).contains(&origin_share));
        let total = lens.iter().map(|len| u64::from(*len)).sum();
        Schedule {
            states: vec![State::Missing; lens.len()],
            remaining: lens.len(),
            lens,
            peers: Vec::new(),
            origin_share,
            to_fetch: total,
            missing_bytes: total,
        }
    }

    /// Adds a provider.
    pub fn add_peer(&mut self, origin: bool) -> Slot {
        self.peers.push(Peer {
            origin,
            ..Peer::default()
        });
        self.peers.len() - 1
    }

    /// Marks a piece found already on disk (a resumed fetch).
    pub fn have(&mut self, piece: usize) {
        if self.states[piece] != State::Done(None) {
            debug_assert_eq!(self.states[piece], State::Missing, "only before any batch");
            self.states[piece] = State::Done(None);
            self.remaining -= 1;
            self.to_fetch -= u64::from(self.lens[piece]);
            self.missing_bytes -= u64::from(self.lens[piece]);
        }
    }

    /// The next batch for `slot`: pieces in order, up to `max_bytes` and
    /// `max_pieces` (at least one piece when any is due).
    pub fn next(&mut self, slot: Slot, max_bytes: u64, max_pieces: usize) -> Next {
        if self.remaining == 0 {
            return Next::Done;
        }
        let peer = &self.peers[slot];
        if !peer.healthy() {
            return Next::Stop;
        }
        let can_give = |piece: usize| !peer.lacks.contains(&piece);
        let outstanding =
            (0..self.states.len()).any(|piece| !matches!(self.states[piece], State::Done(_)) && can_give(piece));
        if !outstanding {
            return Next::Stop;
        }
        let spared = peer.origin && self.others_can_serve(slot);
        let origin_budget = (self.origin_share * self.to_fetch as f64) as u64;
        let healthy = self.peers.iter().filter(|peer| peer.healthy()).count().max(1) as u64;
        let max_bytes = max_bytes.min(self.missing_bytes.div_ceil(healthy));
        let mut batch = Vec::new();
        let mut bytes = 0_u64;
        for piece in 0..self.states.len() {
            if self.states[piece] != State::Missing || !can_give(piece) {
                continue;
            }
            let len = u64::from(self.lens[piece]);
            if spared
                && self.peers[slot].assigned + bytes + len > origin_budget
                && self.someone_else_can_give(slot, piece)
            {
                continue;
            }
            if !batch.is_empty() && (bytes + len > max_bytes || batch.len() >= max_pieces) {
                break;
            }
            batch.push(piece);
            bytes += len;
        }
        if batch.is_empty() {
            return Next::Wait;
        }
        for piece in &batch {
            self.states[*piece] = State::InFlight(slot);
        }
        self.peers[slot].assigned += bytes;
        self.missing_bytes -= bytes;
        Next::Batch(batch)
    }

    /// Up to `room` batches for `slot` (see [`Schedule::next`]), to keep a
    /// stream's pipeline full; and whether the peer has finished (nothing
    /// more will come for it: every piece is here, or it can give none).
    pub fn next_batches(
        &mut self,
        slot: Slot,
        room: usize,
        max_bytes: u64,
        max_pieces: usize,
    ) -> (Vec<Vec<usize>>, bool) {
        let mut batches = Vec::new();
        while batches.len() < room {
            match self.next(slot, max_bytes, max_pieces) {
                Next::Batch(batch) => batches.push(batch),
                Next::Wait => break,
                Next::Stop | Next::Done => return (batches, true),
            }
        }
        (batches, false)
    }

    /// Records what came of `piece`, requested from `slot`.
    pub fn outcome(&mut self, slot: Slot, piece: usize, outcome: Outcome) {
        let len = u64::from(self.lens[piece]);
        // A piece no longer in flight to this peer was re-queued under it
        // (a ban or loss seen by another stream to the same peer): its late
        // answer is ignored, unless it was verified and written, which
        // counts whoever else was asked for it since.
        if self.states[piece] != State::InFlight(slot) {
            if outcome == Outcome::Verified {
                match self.states[piece] {
                    State::Done(_) => return,
                    State::Missing => self.missing_bytes -= len,
                    State::InFlight(other) => self.peers[other].assigned -= len,
                }
                self.states[piece] = State::Done(Some(slot));
                self.remaining -= 1;
                self.peers[slot].bytes += len;
            }
            return;
        }
        match outcome {
            Outcome::Verified => {
                self.states[piece] = State::Done(Some(slot));
                self.remaining -= 1;
                self.peers[slot].bytes += len;
            }
            Outcome::Corrupt => {
                let peer = &mut self.peers[slot];
                peer.verify_failures += 1;
                peer.banned = true;
                self.requeue_all(slot);
            }
            Outcome::Missing => {
                self.peers[slot].lacks.insert(piece);
                self.release(slot, piece);
            }
            Outcome::Busy => self.release(slot, piece),
        }
    }

    /// The peer vanished (stream or connection lost): its pieces go back.
    pub fn lost(&mut self, slot: Slot) {
        self.peers[slot].gone = true;
        self.requeue_all(slot);
    }

    /// True when every piece is here.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Pieces not yet here.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Bytes verified from `slot`.
    pub fn bytes_from(&self, slot: Slot) -> u64 {
        self.peers[slot].bytes
    }

    /// Pieces `slot` sent that failed verification.
    pub fn verify_failures(&self, slot: Slot) -> u64 {
        self.peers[slot].verify_failures
    }

    /// True when `slot` was banned for bad bytes.
    pub fn is_banned(&self, slot: Slot) -> bool {
        self.peers[slot].banned
    }

    /// Who delivered `piece` (`Some(None)`: it was on disk already).
    pub fn delivered_by(&self, piece: usize) -> Option<Option<Slot>> {
        match self.states[piece] {
            State::Done(slot) => Some(slot),
            _ => None,
        }
    }

    fn release(&mut self, slot: Slot, piece: usize) {
        let len = u64::from(self.lens[piece]);
        self.states[piece] = State::Missing;
        self.peers[slot].assigned -= len;
        self.missing_bytes += len;
    }

    fn requeue_all(&mut self, slot: Slot) {
        for piece in 0..self.states.len() {
            if self.states[piece] == State::InFlight(slot) {
                self.release(slot, piece);
            }
        }
    }

    fn others_can_serve(&self, slot: Slot) -> bool {
        self.peers
            .iter()
            .enumerate()
            .any(|(other, peer)| other != slot && peer.healthy() && !peer.origin)
    }

    fn someone_else_can_give(&self, slot: Slot, piece: usize) -> bool {
        self.peers
            .iter()
            .enumerate()
            .any(|(other, peer)| other != slot && peer.healthy() && !peer.lacks.contains(&piece))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    /// How a simulated provider behaves.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Honest,
        /// Sends bad bytes for every piece.
        Corrupt,
        /// Has only the pieces whose index is even.
        Partial,
        /// Vanishes after this many batches.
        Vanishes(u8),
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Honest),
            Just(Kind::Corrupt),
            Just(Kind::Partial),
            (0_u8..4).prop_map(Kind::Vanishes),
        ]
    }

    proptest! {
        /// Whatever the other providers do, one honest provider is enough to
        /// finish; no piece is ever taken from a corrupt peer, which is
        /// banned at its first bad piece; the bytes add up.
        #[test]
        fn one_honest_provider_is_enough_and_bad_bytes_are_never_kept(
            lens in proptest::collection::vec(1_u32..5000, 1..60),
            kinds in proptest::collection::vec(kind(), 0..5),
            honest_is_origin in any::<bool>(),
            local in proptest::collection::vec(any::<bool>(), 60),
            turns in proptest::collection::vec(0_usize..8, 200),
        ) {
            let mut schedule = Schedule::new(lens.clone(), 0.2);
            let mut peers = vec![(schedule.add_peer(honest_is_origin), Kind::Honest)];
            for kind in &kinds {
                peers.push((schedule.add_peer(false), *kind));
            }
            for (piece, on_disk) in local.iter().take(lens.len()).enumerate() {
                if *on_disk {
                    schedule.have(piece);
                }
            }
            let mut batches = vec![0_u8; peers.len()];
            let mut stopped = vec![false; peers.len()];
            let mut turn = turns.into_iter().cycle();
            let mut rounds = 0;
            while !schedule.is_done() {
                rounds += 1;
                prop_assert!(rounds < 100_000, "the fetch made no progress");
                let who = turn.next().unwrap() % peers.len();
                let (slot, kind) = peers[who];
                if stopped[who] {
                    // A stopped worker is gone for good; make sure someone runs.
                    if stopped.iter().all(|stopped| *stopped) {
                        prop_assert!(false, "every worker stopped before the end");
                    }
                    continue;
                }
                match schedule.next(slot, 20_000, 16) {
                    Next::Batch(batch) => {
                        if let Kind::Vanishes(after) = kind
                            && batches[who] >= after
                        {
                            schedule.lost(slot);
                            stopped[who] = true;
                            continue;
                        }
                        batches[who] += 1;
                        for piece in batch {
                            let outcome = match kind {
                                Kind::Corrupt => Outcome::Corrupt,
                                Kind::Partial if piece % 2 == 1 => Outcome::Missing,
                                _ => Outcome::Verified,
                            };
                            if schedule.delivered_by(piece).is_some() {
                                continue;
                            }
                            // A ban re-queues the rest of the batch.
                            if schedule.is_banned(slot) {
                                break;
                            }
                            schedule.outcome(slot, piece, outcome);
                        }
                    }
                    Next::Stop => stopped[who] = true,
                    Next::Wait | Next::Done => {}
                }
            }
            for piece in 0..lens.len() {
                if let Some(Some(slot)) = schedule.delivered_by(piece) {
                    prop_assert!(!matches!(peers[slot].1, Kind::Corrupt), "piece {piece} kept from a corrupt peer");
                }
            }
            for (slot, kind) in &peers {
                if matches!(kind, Kind::Corrupt) {
                    prop_assert_eq!(schedule.bytes_from(*slot), 0);
                    prop_assert!(schedule.verify_failures(*slot) <= 1);
                }
            }
            let fetched: u64 = peers.iter().map(|(slot, _)| schedule.bytes_from(*slot)).sum();
            let wanted: u64 = (0..lens.len()).filter(|piece| !local[*piece]).map(|piece| u64::from(lens[piece])).sum();
            prop_assert_eq!(fetched, wanted);
        }
    }

    #[test]
    fn a_piece_written_after_its_peer_was_lost_still_counts() {
        let mut schedule = Schedule::new(vec![1000; 4], 1.0);
        let first = schedule.add_peer(true);
        let Next::Batch(batch) = schedule.next(first, 4000, 16) else {
            panic!("a batch")
        };
        assert_eq!(batch, [0, 1, 2, 3]);
        // The stream broke while the writer still held pieces 0 and 1.
        schedule.lost(first);
        let second = schedule.add_peer(false);
        let Next::Batch(again) = schedule.next(second, 1000, 1) else {
            panic!("a batch")
        };
        assert_eq!(again, [0]);
        schedule.outcome(first, 0, Outcome::Verified);
        schedule.outcome(first, 1, Outcome::Verified);
        schedule.outcome(second, 0, Outcome::Verified);
        assert_eq!(schedule.remaining(), 2);
        assert_eq!(schedule.bytes_from(first), 2000);
        while let Next::Batch(batch) = schedule.next(second, 4000, 16) {
            for piece in batch {
                schedule.outcome(second, piece, Outcome::Verified);
            }
        }
        assert!(schedule.is_done());
    }

    #[test]
    fn the_origin_carries_at_most_its_share_while_others_serve() {
        let lens = vec![1000; 100];
        let mut schedule = Schedule::new(lens, 0.2);
        let origin = schedule.add_peer(true);
        let others = [schedule.add_peer(false), schedule.add_peer(false)];
        while !schedule.is_done() {
            for slot in [origin, others[0], others[1]] {
                if let Next::Batch(batch) = schedule.next(slot, 4000, 16) {
                    for piece in batch {
                        schedule.outcome(slot, piece, Outcome::Verified);
                    }
                }
            }
        }
        let from_origin = schedule.bytes_from(origin);
        assert!(from_origin > 0, "the origin still helps");
        assert!(from_origin <= 25_000, "origin carried {from_origin} of 100000");
    }

    #[test]
    fn the_origin_serves_everything_alone_and_what_no_one_else_has() {
        let mut schedule = Schedule::new(vec![10; 4], 0.2);
        let origin = schedule.add_peer(true);
        assert_eq!(schedule.next(origin, 1000, 16), Next::Batch(vec![0, 1, 2, 3]));
        let mut schedule = Schedule::new(vec![10; 4], 0.0);
        let origin = schedule.add_peer(true);
        let partial = schedule.add_peer(false);
        // An equal share of what is left: two of four pieces.
        assert_eq!(schedule.next(partial, 1000, 16), Next::Batch(vec![0, 1]));
        schedule.outcome(partial, 0, Outcome::Verified);
        schedule.outcome(partial, 1, Outcome::Verified);
        assert_eq!(schedule.next(partial, 1000, 16), Next::Batch(vec![2]));
        schedule.outcome(partial, 2, Outcome::Missing);
        // The origin has no budget, but no one else has piece 2.
        assert_eq!(schedule.next(origin, 1000, 16), Next::Batch(vec![2]));
        assert_eq!(schedule.next(partial, 1000, 16), Next::Batch(vec![3]));
        schedule.outcome(partial, 3, Outcome::Verified);
        assert_eq!(schedule.next(partial, 1000, 16), Next::Stop);
    }
}
