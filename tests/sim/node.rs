//! One simulated member: its clock, its Raft core (absent while crashed), what survives a
//! crash (the store as the Ready loop left it), its lease client and its recent events.
//!
//! Clocks: node-local time = boot offset + virtual time × (1 + ppm / 10⁶), in microseconds;
//! the rate may change during a run (jitter), the time never jumps.
//! The same local clock feeds `BootInstant`s (lease deadlines, expiry timers) and the 100 ms
//! Raft tick, as the real driver does. A paused member (SIGSTOP) keeps its state and its clock
//! keeps running (`CLOCK_BOOTTIME`), but it neither ticks nor handles messages, which queue.

use crate::ha::LeaseClient;
use crate::ha_loop::DataMember;
use pgha::clock::BootInstant;
use pgha::dcs::mem_store::MemLogStore;
use pgha::dcs::node::{CoreConfig, RaftCore};
use pgha::types::MemberName;
use raft::eraftpb::Message;
use std::collections::VecDeque;
use std::time::Duration;

/// Raft tick of the real driver (`dcs::driver::TICK`).
pub const TICK_US: u64 = 100_000;
/// Events kept per member for a failure report.
const EVENTS_KEPT: usize = 30;
/// Messages a paused member's socket buffers hold before new ones are lost.
const INBOX_LIMIT: usize = 4096;
/// Wall-clock time at virtual time 0 (November 2023).
const WALL_EPOCH_MS: u64 = 1_700_000_000_000;

#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    /// Local time at virtual time 0 (the boot offset).
    pub offset_us: u64,
    pub ppm: i64,
    /// Where the current rate began, (virtual, local): (0, offset) until the rate changes.
    anchor: (u64, u64),
}

impl NodeClock {
    pub fn new(offset_us: u64, ppm: i64) -> Self {
        NodeClock { offset_us, ppm, anchor: (0, offset_us) }
    }

    pub fn local_us(&self, virtual_us: u64) -> u64 {
        let d = i128::from(virtual_us) - i128::from(self.anchor.0);
        let scaled = d * i128::from(1_000_000 + self.ppm) / 1_000_000;
        (i128::from(self.anchor.1) + scaled) as u64
    }

    /// The first virtual time at which the local clock reads at least `local_us`.
    pub fn virtual_at(&self, local_us: u64) -> u64 {
        let Some(d) = local_us.checked_sub(self.anchor.1) else {
            return self.anchor.0.saturating_sub(self.anchor.1 - local_us);
        };
        let rate = (1_000_000 + self.ppm) as u128;
        self.anchor.0 + (u128::from(d) * 1_000_000).div_ceil(rate) as u64
    }

    /// From virtual time `virtual_us` on, the clock runs at 1 + `ppm` / 10⁶ (no jump).
    pub fn set_rate(&mut self, virtual_us: u64, ppm: i64) {
        self.anchor = (virtual_us, self.local_us(virtual_us));
        self.ppm = ppm;
    }

    /// The member's wall clock in milliseconds since the epoch: NTP keeps wall clocks close, so
    /// they share an origin and differ only by the rate.
    pub fn wall_ms(&self, virtual_us: u64) -> u64 {
        WALL_EPOCH_MS + (self.local_us(virtual_us) - self.offset_us) / 1000
    }

    pub fn instant(&self, virtual_us: u64) -> BootInstant {
        BootInstant::from_duration(Duration::from_micros(self.local_us(virtual_us)))
    }
}

pub struct SimNode {
    pub id: u64,
    pub name: MemberName,
    pub clock: NodeClock,
    pub core: Option<RaftCore<MemLogStore>>,
    /// The store as a crash left it, while crashed.
    pub disk: Option<MemLogStore>,
    pub paused: bool,
    /// Messages that arrived while paused.
    pub inbox: VecDeque<(Message, bool)>,
    /// Local times of the next Raft tick and the next HA loop iteration.
    pub next_tick_local: u64,
    pub next_ha_local: u64,
    pub ha: LeaseClient,
    /// In the HA-loop mode: the member's Postgres and the state of its real-decide HA loop.
    pub data: Option<DataMember>,
    pub cfg: CoreConfig,
    pub incarnation: u32,
    pub was_leader: bool,
    /// The applied index last checked, to check the state only when it moved.
    pub checked_applied: u64,
    pub events: VecDeque<Event>,
}

/// An event in a member's recent history, with how often it repeated in a row.
pub struct Event {
    pub first_us: u64,
    pub last_us: u64,
    pub repeats: u32,
    pub text: String,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>9.3}s {}", self.first_us as f64 / 1e6, self.text)?;
        if self.repeats > 1 {
            write!(f, " (x{}, until {:.3}s)", self.repeats, self.last_us as f64 / 1e6)?;
        }
        Ok(())
    }
}

impl SimNode {
    pub fn running(&self) -> bool {
        self.core.is_some() && !self.paused
    }

    pub fn local_now(&self, virtual_us: u64) -> BootInstant {
        self.clock.instant(virtual_us)
    }

    /// Virtual times of this member's next tick and HA iteration, if it runs.
    pub fn next_due(&self) -> Option<u64> {
        if !self.running() {
            return None;
        }
        let tick = self.clock.virtual_at(self.next_tick_local);
        let ha = match &self.data {
            Some(d) => d.next_local(self.next_ha_local),
            None if self.ha.enabled => self.next_ha_local,
            None => u64::MAX,
        };
        let ha = if ha == u64::MAX { ha } else { self.clock.virtual_at(ha) };
        Some(tick.min(ha))
    }

    /// Holds a message (and whether it is reliable) while paused.
    pub fn queue(&mut self, msg: Message, reliable: bool) {
        if reliable || self.inbox.len() < INBOX_LIMIT {
            self.inbox.push_back((msg, reliable));
        }
    }

    /// Records an event; a repeat of the previous one only bumps its count.
    pub fn note(&mut self, virtual_us: u64, text: String) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{:>9.3}s {}: {text}", virtual_us as f64 / 1e6, self.name);
        }
        if let Some(last) = self.events.back_mut().filter(|e| e.text == text) {
            last.repeats += 1;
            last.last_us = virtual_us;
            return;
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event { first_us: virtual_us, last_us: virtual_us, repeats: 1, text });
    }

    /// One line describing the member for a failure report.
    pub fn describe(&self, virtual_us: u64) -> String {
        let now = self.local_now(virtual_us);
        let status = match (&self.core, self.paused) {
            (None, _) => "crashed".to_string(),
            (Some(core), paused) => {
                let s = core.status();
                let v = core.lease_view(now);
                format!(
                    "{}{:?} term {} leader {:?} log {}..={} snapshot {} commit {} applied {}; lease {:?} epoch {} last {} time left {:?}{}",
                    if paused { "PAUSED " } else { "" },
                    s.role,
                    s.term,
                    s.leader_id.map(|l| l.0),
                    s.first_index,
                    s.last_index,
                    s.snapshot_index,
                    s.commit_index,
                    s.applied_index,
                    v.holder.map(|h| h.to_string()),
                    v.epoch,
                    v.last_epoch,
                    v.time_left,
                    self.ha.fenced.map(|e| format!(", fenced epoch {e}")).unwrap_or_default()
                )
            }
        };
        let data = self.data.as_ref().map(|d| format!("\n      {}", d.describe())).unwrap_or_default();
        format!(
            "{} (id {}, clock {:+} ppm, incarnation {}, local {:?}): {status}{data}",
            self.name,
            self.id,
            self.clock.ppm,
            self.incarnation,
            now.as_duration()
        )
    }
}
