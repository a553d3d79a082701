//! The simulated network between Raft members.
//!
//! A sent message is dropped (with the current drop rate, or because its link is cut) or queued
//! for delivery after a delay of 1-30 ms, sometimes much more (a slow path), so messages are
//! reordered by their delays, also on one link unless `fifo_links`; a few are duplicated. Partitions cut directed links, so both
//! symmetric and one-way partitions are possible; a message whose link is cut at send time or
//! at delivery time is lost. Time is virtual microseconds (see `main.rs`).

use crate::rng::Rng;
use raft::eraftpb::{Message, MessageType};
use std::collections::{BTreeMap, BTreeSet};

pub const MS: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub drop_per_mille: u64,
    pub dup_per_mille: u64,
    /// Chance that a message takes the slow path (up to `slow_max_us`).
    pub slow_per_mille: u64,
    pub min_delay_us: u64,
    pub max_delay_us: u64,
    pub slow_max_us: u64,
    /// Snapshots and their acknowledgements are never lost to drops or partitions (a crashed
    /// receiver gets them when it restarts): isolates other faults from snapshot loss. Off in
    /// the random runs since pgha reports snapshot status to Raft.
    pub reliable_snapshots: bool,
    /// Keep each directed link in send order, as one TCP connection per peer does (the real
    /// transport); otherwise messages on a link are reordered by their delays.
    pub fifo_links: bool,
}

impl NetConfig {
    /// A reliable network with the usual 1-30 ms delays.
    pub fn calm() -> Self {
        NetConfig {
            drop_per_mille: 0,
            dup_per_mille: 0,
            slow_per_mille: 0,
            min_delay_us: MS,
            max_delay_us: 30 * MS,
            slow_max_us: 300 * MS,
            reliable_snapshots: false,
            fifo_links: false,
        }
    }

    /// The fault phase's default: some loss, duplication and slow messages.
    pub fn lossy(drop_per_mille: u64) -> Self {
        NetConfig { drop_per_mille, dup_per_mille: 5, slow_per_mille: 20, ..NetConfig::calm() }
    }
}

pub struct Network {
    /// (delivery time, sequence number) -> message; the sequence number keeps equal delivery
    /// times in send order.
    in_flight: BTreeMap<(u64, u64), (Message, bool)>,
    seq: u64,
    pub cfg: NetConfig,
    /// Directed links (from, to) that lose every message.
    cut: BTreeSet<(u64, u64)>,
    /// Snapshots still to be lost on purpose (for a focused test).
    pub lose_snapshots: u32,
    /// Latest delivery time queued per directed link, for `fifo_links`.
    last_on_link: BTreeMap<(u64, u64), u64>,
}

impl Network {
    pub fn new(cfg: NetConfig) -> Self {
        Network {
            in_flight: BTreeMap::new(),
            seq: 0,
            cfg,
            cut: BTreeSet::new(),
            lose_snapshots: 0,
            last_on_link: BTreeMap::new(),
        }
    }

    pub fn blocked(&self, from: u64, to: u64) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Queues `msg` unless it is lost; returns whether it was queued. A `reliable` message is
    /// never lost (see `NetConfig::reliable_snapshots`).
    pub fn send(&mut self, msg: Message, now: u64, rng: &mut Rng, reliable: bool) -> bool {
        if self.lose_snapshots > 0 && msg.get_msg_type() == MessageType::MsgSnapshot {
            self.lose_snapshots -= 1;
            return false;
        }
        let lost = self.blocked(msg.from, msg.to) || rng.chance(self.cfg.drop_per_mille);
        if lost && !reliable {
            return false;
        }
        let copies = if rng.chance(self.cfg.dup_per_mille) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if rng.chance(self.cfg.slow_per_mille) {
                rng.range(self.cfg.max_delay_us, self.cfg.slow_max_us + 1)
            } else {
                rng.range(self.cfg.min_delay_us, self.cfg.max_delay_us + 1)
            };
            let mut at = now + delay;
            if self.cfg.fifo_links {
                let last = self.last_on_link.entry((msg.from, msg.to)).or_default();
                at = at.max(*last);
                *last = at;
            }
            self.requeue(msg.clone(), at, reliable);
        }
        true
    }

    /// Queues a message for delivery at `at` (also a reliable one whose receiver was down).
    pub fn requeue(&mut self, msg: Message, at: u64, reliable: bool) {
        self.seq += 1;
        self.in_flight.insert((at, self.seq), (msg, reliable));
    }

    pub fn next_delivery(&self) -> Option<u64> {
        self.in_flight.keys().next().map(|(t, _)| *t)
    }

    /// Messages due at or before `now`, in delivery order, with whether they are reliable,
    /// minus those whose link is now cut.
    pub fn take_due(&mut self, now: u64) -> Vec<(Message, bool)> {
        let later = self.in_flight.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.in_flight, later);
        due.into_values().filter(|(m, reliable)| *reliable || !self.blocked(m.from, m.to)).collect()
    }

    /// Splits the nodes into groups; messages between different groups are lost.
    pub fn partition(&mut self, groups: &[Vec<u64>]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a {
                        for y in b {
                            self.cut.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    /// Cuts the link from `from` to `to` only (an asymmetric partition).
    pub fn cut_one_way(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    pub fn cut_both_ways(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
