//! The faults a seed picks (swarm testing: each seed its own mix and
//! rates), and the nemesis that injects them: crashes, power losses,
//! partitions (an isolated leader among them), pauses, clock jumps,
//! membership changes ([`crate::membership`]), full disks, store disks
//! failing mid-operation and bytes flipped at rest ([`crate::store`]).
//! Torn writes at a crash, the network's loss, duplication and delay and
//! the disks' sync latency are drawn per crash, per message and per sync
//! from the same rates.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::disk::Disk;
use crate::world::{Cluster, locked};

/// How far the nemesis may set a node's clock from true time.
pub const CLOCK_OFF_MAX_MS: i64 = 6_000;

/// A value drawn from `range` with chance `chance`, else zero: a seed
/// turns each kind of fault off as often as it picks its rate.
pub fn sometimes<T>(rng: &mut impl Rng, chance: f64, range: std::ops::Range<T>) -> T
where
    T: rand::distr::uniform::SampleUniform + PartialOrd + Default,
{
    if rng.random_bool(chance) {
        rng.random_range(range)
    } else {
        T::default()
    }
}

/// The faults a run injects, and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Chance a message is lost.
    pub loss: f64,
    /// Chance a request is delivered twice.
    pub duplication: f64,
    /// Longest one-way delay, in microseconds.
    pub delay_max_us: u64,
    /// Longest sync, in milliseconds.
    pub disk_max_ms: u64,
    /// How far apart the nodes' clocks start, at most, in milliseconds.
    pub skew_max_ms: u64,
    /// Chance a crash keeps a prefix of the unsynced writes (a torn
    /// write) rather than none.
    pub torn: f64,
    /// Chance a job worker stalls past its lease just before it records
    /// its result (a long pause of the process).
    pub stall: f64,
    /// Weight of crashing one node.
    pub crash: u32,
    /// Every node loses power at once.
    pub power_loss: u32,
    /// A partition (the leader isolated, or a random cut).
    pub partition: u32,
    /// A node stops answering for a while (a pause).
    pub pause: u32,
    /// A node's clock jumps, forwards or back.
    pub clock_jump: u32,
    /// A node is added, removed or replaced.
    pub membership: u32,
    /// A node's disk fills up for a while.
    pub disk_full: u32,
    /// A node's store disk fails a few operations from now, and the node
    /// goes down (a crash in the middle of a store operation).
    pub store_failure: u32,
    /// A synced byte of a node's store is flipped (a bad sector).
    pub corruption: u32,
    /// Links heal.
    pub heal: u32,
}

impl Faults {
    /// The seed's mix.
    pub fn pick(rng: &mut StdRng) -> Faults {
        let on = |rng: &mut StdRng, weight: u32| if rng.random_bool(0.7) { weight } else { 0 };
        Faults {
            loss: sometimes(rng, 0.5, 0.0..0.15),
            duplication: sometimes(rng, 0.3, 0.0..0.1),
            delay_max_us: rng.random_range(200..30_000),
            disk_max_ms: rng.random_range(1..40),
            skew_max_ms: sometimes(rng, 0.5, 0..3_000),
            torn: sometimes(rng, 0.5, 0.2..1.0),
            stall: sometimes(rng, 0.6, 0.1..0.5),
            crash: on(rng, 3),
            power_loss: on(rng, 1),
            partition: on(rng, 3),
            pause: on(rng, 2),
            clock_jump: on(rng, 2),
            membership: on(rng, 2),
            disk_full: on(rng, 1),
            store_failure: on(rng, 2),
            corruption: on(rng, 1),
            heal: 4,
        }
    }

    /// A healthy network and disk (clocks stay where they are).
    pub fn none(self) -> Faults {
        Faults {
            loss: 0.0,
            duplication: 0.0,
            delay_max_us: 2_000,
            disk_max_ms: self.disk_max_ms.min(5),
            skew_max_ms: self.skew_max_ms,
            torn: 0.0,
            stall: 0.0,
            crash: 0,
            power_loss: 0,
            partition: 0,
            pause: 0,
            clock_jump: 0,
            membership: 0,
            disk_full: 0,
            store_failure: 0,
            corruption: 0,
            heal: 0,
        }
    }

    /// The mix, in words.
    pub fn describe(&self) -> String {
        format!(
            "loss {:.0}%, duplication {:.0}%, delay ≤{} ms, sync ≤{} ms, skew ≤{} ms, torn {:.0}%, stalls {:.0}%, weights crash {} power-loss {} partition {} pause {} clock {} membership {} disk-full {} store-failure {} corruption {}",
            self.loss * 100.0,
            self.duplication * 100.0,
            self.delay_max_us / 1000,
            self.disk_max_ms,
            self.skew_max_ms,
            self.torn * 100.0,
            self.stall * 100.0,
            self.crash,
            self.power_loss,
            self.partition,
            self.pause,
            self.clock_jump,
            self.membership,
            self.disk_full,
            self.store_failure,
            self.corruption
        )
    }
}

/// The nemesis's moves, in the order of [`Faults`]' weights.
#[derive(Debug, Clone, Copy)]
enum Move {
    Crash,
    PowerLoss,
    Partition,
    Pause,
    ClockJump,
    Membership,
    DiskFull,
    StoreFailure,
    Corruption,
    Heal,
}

impl Faults {
    fn draw(&self, rng: &mut StdRng) -> Option<Move> {
        let moves = [
            (self.crash, Move::Crash),
            (self.power_loss, Move::PowerLoss),
            (self.partition, Move::Partition),
            (self.pause, Move::Pause),
            (self.clock_jump, Move::ClockJump),
            (self.membership, Move::Membership),
            (self.disk_full, Move::DiskFull),
            (self.store_failure, Move::StoreFailure),
            (self.corruption, Move::Corruption),
            (self.heal, Move::Heal),
        ];
        let total: u32 = moves.iter().map(|(weight, _)| weight).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rng.random_range(0..total);
        for (weight, chosen) in moves {
            if pick < weight {
                return Some(chosen);
            }
            pick -= weight;
        }
        None
    }
}

impl Cluster {
    /// One move of the nemesis, after bringing back the nodes whose time
    /// down or paused is up.
    pub async fn inject(&mut self, faults: &Faults) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        self.restart_due().await?;
        let (chosen, down_for, ids) = {
            let mut rng = self.shared.rng();
            let chosen = faults.draw(&mut rng);
            let down_for = Duration::from_millis(rng.random_range(100..3000));
            (chosen, down_for, self.shared.node_ids())
        };
        let Some(chosen) = chosen else { return Ok(()) };
        match chosen {
            Move::Crash => {
                let running: Vec<u64> = ids.iter().copied().filter(|id| !self.down.contains_key(id)).collect();
                if running.is_empty() {
                    return Ok(());
                }
                let id = running[self.shared.rng().random_range(0..running.len())];
                self.crash(id, now + down_for).await;
            }
            Move::PowerLoss => {
                for id in ids {
                    if !self.down.contains_key(&id) {
                        self.crash(id, now + down_for).await;
                    }
                }
                self.shared.event(format_args!("power loss"));
            }
            Move::Partition => {
                let leader = self.shared.leader().map(|(id, _)| id);
                let side: BTreeSet<u64> = {
                    let mut rng = self.shared.rng();
                    match leader {
                        Some(leader) if rng.random_bool(0.5) => [leader].into(),
                        _ => ids.iter().copied().filter(|_| rng.random_bool(0.5)).collect(),
                    }
                };
                self.cut_off(&side);
                self.shared.event(format_args!("partition {side:?}"));
            }
            Move::Pause => {
                let id = ids[self.shared.rng().random_range(0..ids.len())];
                self.cut_off(&[id].into());
                self.paused.insert(id, now + down_for);
                self.shared.event(format_args!("pause {id}"));
            }
            Move::ClockJump => {
                let (id, jump) = {
                    let mut rng = self.shared.rng();
                    (
                        ids[rng.random_range(0..ids.len())],
                        rng.random_range(-CLOCK_OFF_MAX_MS..=CLOCK_OFF_MAX_MS),
                    )
                };
                let off = self.shared.jump_clock(id, jump);
                self.shared
                    .event(format_args!("clock of {id} jumps {jump} ms (now {off} ms off)"));
            }
            Move::Membership => {
                if !self.change_membership().await? {
                    return Ok(());
                }
            }
            Move::DiskFull => {
                let id = ids[self.shared.rng().random_range(0..ids.len())];
                let Some(disk) = self.shared.disk(id) else {
                    return Ok(());
                };
                Disk::set_full(&disk, true);
                self.full.insert(id, now + down_for);
                self.shared.event(format_args!("disk of {id} full"));
            }
            Move::StoreFailure => {
                let (id, ops) = {
                    let mut rng = self.shared.rng();
                    (ids[rng.random_range(0..ids.len())], rng.random_range(0..60))
                };
                let (Some(disk), Some(_)) = (self.shared.store_disk(id), self.shared.store(id)) else {
                    return Ok(());
                };
                disk.fail_after(ops);
                self.shared
                    .event(format_args!("store disk of {id} fails in {ops} operations"));
            }
            Move::Corruption => {
                let id = ids[self.shared.rng().random_range(0..ids.len())];
                let Some(disk) = self.shared.store_disk(id) else {
                    return Ok(());
                };
                let Some(place) = disk.damage(&mut *self.shared.rng()) else {
                    return Ok(());
                };
                self.shared.event(format_args!("store of {id}: flipped {place}"));
            }
            Move::Heal => {
                self.heal();
                return Ok(());
            }
        }
        self.faults_injected += 1;
        Ok(())
    }

    /// Brings back the nodes whose time down is up (and whose disk has
    /// room), frees disks whose time full is up, and lets paused nodes
    /// answer again.
    pub async fn restart_due(&mut self) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        for id in crate::world::due(&self.full, now) {
            self.full.remove(&id);
            if let Some(disk) = self.shared.disk(id) {
                Disk::set_full(&disk, false);
            }
            self.shared.event(format_args!("disk of {id} has room"));
        }
        for id in crate::world::due(&self.down, now) {
            // A node cannot start on a full disk (it applies its committed
            // log first): it stays down until there is room.
            if self.full.contains_key(&id) {
                continue;
            }
            self.down.remove(&id);
            self.start_node(id).await?;
        }
        for id in crate::world::due(&self.paused, now) {
            self.paused.remove(&id);
            locked(&self.shared.cut).retain(|(a, b)| *a != id && *b != id);
            self.shared.event(format_args!("resume {id}"));
        }
        Ok(())
    }

    fn cut_off(&self, side: &BTreeSet<u64>) {
        let ids = self.shared.node_ids();
        let mut cut = locked(&self.shared.cut);
        for a in &ids {
            for b in &ids {
                if side.contains(a) != side.contains(b) {
                    cut.insert((*a, *b));
                }
            }
        }
    }

    /// Every full disk has room again.
    pub fn free_disks(&mut self) {
        for (id, _) in std::mem::take(&mut self.full) {
            if let Some(disk) = self.shared.disk(id) {
                Disk::set_full(&disk, false);
            }
        }
    }

    /// Every link heals and paused nodes answer again.
    pub fn heal(&mut self) {
        locked(&self.shared.cut).clear();
        self.paused.clear();
        self.shared.event(format_args!("heal"));
    }
}
