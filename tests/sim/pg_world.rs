//! The data plane of the HA-loop mode and its invariants. Every `PG_TICK` of virtual time:
//! starting postmasters become ready, clients write to every writable primary (acknowledged at
//! once when asynchronous, else once the synchronous standbys flushed them), standbys stream from their upstream when both run and can
//! reach each other, and primaries checkpoint now and then. Fences fire at their exact time.
//!
//! Invariants (see `main.rs` for their statement): (a) at most one writable Postgres, judged
//! from the simulated Postgres processes; (b) every promotion is of an eligible member, judged
//! against the committed state at its grant; (c) no two origins acknowledge writes at the same
//! LSN of the same timeline; (d) a standby never continues WAL that differs from its own; (e)
//! every write acknowledged while the published synchronous state was not degraded is in the
//! WAL of every later primary (synchronous modes: a primary acknowledges a write only once the
//! standbys its `synchronous_standby_names` counts flushed it).

use crate::ha_loop::id_of;
use crate::ha_loop::DataMember;
use crate::postgres::{Origin, Process, Stream, Wal};
use crate::sim::{name, Sim};
use pgha::config::dynamic::DynamicConfig;
use pgha::dcs::state::{ClusterState, Command, Outcome};
use pgha::ha::eligibility;
use pgha::ha::sync::SyncNames;
use pgha::types::{LeaseEpoch, Lsn, MemberName};
use std::collections::{BTreeMap, BTreeSet};

/// How often the data plane moves (writes, streaming, starts).
pub const PG_TICK_US: u64 = 25_000;
/// Concurrent clients: writes waiting for synchronous standbys at most.
const CLIENTS: usize = 8;

#[derive(Clone, Debug)]
pub struct PgConfig {
    /// The cluster's dynamic configuration (ttl, loop_wait, retry_timeout in whole seconds).
    pub dynamic: DynamicConfig,
    pub nofailover: BTreeSet<u64>,
    /// Chance per tick that a writable primary acknowledges a write of 1..`write_max` bytes.
    pub write_per_mille: u64,
    pub write_max: u64,
    /// Chance per tick of a bulk write of up to `burst_max` bytes (replicas fall behind).
    pub burst_per_mille: u64,
    pub burst_max: u64,
    /// Bytes a standby receives per tick at most.
    pub stream_per_tick: u64,
    pub checkpoint_every_us: u64,
    /// Fail on the known bugs of `pg_bugs.rs` instead of steering around them.
    pub expose_known_bugs: bool,
    /// The fencer works (off only to show that the invariants catch its absence).
    pub fence: bool,
}

impl PgConfig {
    /// Patroni's timing, 1 MB `maximum_lag_on_failover`, a steady write load.
    pub fn standard() -> Self {
        PgConfig {
            dynamic: DynamicConfig::default(),
            nofailover: BTreeSet::new(),
            write_per_mille: 600,
            write_max: 16 * 1024,
            burst_per_mille: 0,
            burst_max: 0,
            stream_per_tick: 256 * 1024,
            checkpoint_every_us: 3_000_000,
            expose_known_bugs: crate::bugs::expose_known_bugs(),
            fence: true,
        }
    }
}

/// A stretch of acknowledged WAL of one origin on one timeline.
#[derive(Clone, Debug)]
struct Acked {
    to: u64,
    origin: Origin,
    member: u64,
    first_us: u64,
    last_us: u64,
}

/// The committed state just before a lease was granted, and when, with the WAL behind the
/// positions it records.
#[derive(Clone, Debug)]
pub struct Grant {
    pub holder: MemberName,
    pub at_us: u64,
    pub before: ClusterState,
    /// `before.last_primary_lsn` and the WAL of the primary that recorded it, up to there.
    pub last_primary: Option<(u64, Wal)>,
    /// `before.release_checkpoint` and the WAL of the primary that released, up to there.
    pub released: Option<(u64, Wal)>,
}

#[derive(Clone, Debug, Default)]
pub struct PgStats {
    pub writes: u64,
    pub promotions: u64,
    pub fence_kills: u64,
    /// Promotions that `eligibility::blocker` on the committed state at the grant would have
    /// refused (the acquire's compare-and-set checks fewer rules; not a violation).
    pub stale_view_promotions: u64,
    /// Runs that converged with standbys stuck by a known bug.
    pub stuck_standbys: u64,
    /// Starts as primary that the runs replaced by start-and-promote (a known bug).
    pub steered_starts: u64,
    /// Writes acknowledged while the published synchronous state was not degraded: each
    /// must be on every later primary (invariant (e)).
    pub protected_writes: u64,
}

/// A stretch of WAL acknowledged while the published synchronous state promised it.
#[derive(Clone, Debug)]
struct Protected {
    origin: Origin,
    from: u64,
    to: u64,
    timeline: u32,
    member: u64,
    at_us: u64,
}

#[derive(Clone, Debug)]
pub struct PgWorld {
    pub next_tick: u64,
    origins: u64,
    /// The committed state, replayed from the first application of every entry.
    pub shadow: ClusterState,
    /// timeline -> first lsn -> acknowledged stretch
    acked: BTreeMap<u32, BTreeMap<u64, Acked>>,
    /// Acknowledged under a synchronous promise, in order (contiguous ones merged).
    protected: Vec<Protected>,
    pub grants: BTreeMap<LeaseEpoch, Grant>,
    promoted: BTreeSet<LeaseEpoch>,
    /// The WAL behind the last recorded primary position and the last released checkpoint.
    last_primary: Option<(u64, Wal)>,
    released: Option<(u64, Wal)>,
    pub stats: PgStats,
}

impl PgWorld {
    pub fn new(shadow: ClusterState) -> Self {
        PgWorld {
            next_tick: PG_TICK_US,
            origins: 0,
            shadow,
            acked: BTreeMap::new(),
            protected: Vec::new(),
            grants: BTreeMap::new(),
            promoted: BTreeSet::new(),
            last_primary: None,
            released: None,
            stats: PgStats::default(),
        }
    }
}

fn world(sim: &mut Sim) -> &mut PgWorld {
    sim.world.as_mut().expect("the HA-loop mode")
}

fn data(sim: &Sim, id: u64) -> &DataMember {
    sim.nodes[&id].data.as_ref().expect("a data member")
}

fn data_mut(sim: &mut Sim, id: u64) -> &mut DataMember {
    sim.nodes.get_mut(&id).and_then(|n| n.data.as_mut()).expect("a data member")
}

impl Sim {
    pub(crate) fn new_origin(&mut self) -> Origin {
        let w = world(self);
        w.origins += 1;
        w.origins
    }

    /// The first virtual time a fence fires.
    pub(crate) fn next_fence(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.data.as_ref().and_then(|d| d.lp.fence).map(|f| n.clock.virtual_at(f)))
            .min()
    }

    /// The fencer kills Postgres when its deadline passes, whatever pgha is doing.
    pub(crate) fn fire_fences(&mut self) {
        let v = self.now;
        let due: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.data.as_ref().and_then(|d| d.lp.fence).is_some_and(|f| n.clock.virtual_at(f) <= v))
            .map(|n| n.id)
            .collect();
        for id in due {
            let d = data_mut(self, id);
            d.lp.fence = None;
            if d.pg.is_up() {
                d.pg.kill();
                world(self).stats.fence_kills += 1;
                self.note(id, "fence: lease deadline passed, Postgres killed".into());
            }
        }
    }

    /// One tick of the data plane.
    pub(crate) fn pg_tick(&mut self) {
        let v = self.now;
        let cfg = self.cfg.pg.clone().expect("the HA-loop mode");
        world(self).next_tick = v + PG_TICK_US;
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in &ids {
            if matches!(data(self, *id).pg.process, Process::Starting { ready_at, .. } if ready_at <= v) {
                let origin = self.new_origin();
                data_mut(self, *id).pg.become_ready(v, origin);
                let what = if data(self, *id).pg.writable() { "primary" } else { "standby" };
                self.note(*id, format!("postgres: accepting connections as {what}"));
            }
        }
        // Streaming first: what the primaries write this tick reaches the standbys at the next
        // one at the earliest.
        for id in &ids {
            let Process::Running { primary: false, upstream, .. } = data(self, *id).pg.process else {
                continue;
            };
            let source =
                upstream.filter(|u| *u != *id && !self.net.blocked(*u, *id) && !self.net.blocked(*id, *u));
            let source = source.and_then(|u| {
                let up = &data(self, u).pg;
                let running = matches!(up.process, Process::Running { .. });
                up.dir.clone().filter(|_| running).map(|d| (u, d))
            });
            let Some((u, dir)) = source else {
                data_mut(self, *id).pg.not_streaming();
                continue;
            };
            let before = &data(self, *id).pg;
            let (was_streaming, was_refused) =
                (matches!(before.process, Process::Running { streaming: true, .. }), before.refused);
            match data_mut(self, *id).pg.stream_from(&dir, cfg.stream_per_tick) {
                Stream::Received(_) if !was_streaming => {
                    self.note(*id, format!("postgres: streaming from n{u}"))
                }
                Stream::Received(_) => {}
                Stream::Refused if !was_refused => self.note(
                    *id,
                    format!("postgres: n{u}'s timeline history does not contain my position: not streaming"),
                ),
                Stream::Refused => {}
                Stream::Ahead if was_streaming => {
                    self.note(*id, format!("postgres: ahead of n{u}'s end of WAL: not streaming"))
                }
                Stream::Ahead => {}
                Stream::SilentlyDiverged(lsn) => self.fail(&format!(
                    "(d) n{id} streams from n{u}: the timelines allow it but their WAL differs at {:?}, below n{id}'s position {:?} (silent divergence)",
                    Lsn(lsn),
                    Lsn(data(self, *id).pg.end().unwrap_or(0))
                )),
            }
        }
        for id in &ids {
            if data(self, *id).pg.writable() {
                self.acknowledge(*id);
            }
        }
        for id in &ids {
            // Clients wait for their commits: a primary whose synchronous standbys lag has at
            // most `CLIENTS` writes in flight.
            if !data(self, *id).pg.writable() || data(self, *id).pg.pending.len() >= CLIENTS {
                continue;
            }
            if v.saturating_sub(data(self, *id).pg.checkpointed_at) >= cfg.checkpoint_every_us {
                data_mut(self, *id).pg.checkpoint(v);
            }
            let bytes = if self.rng.chance(cfg.burst_per_mille) {
                self.rng.range(1, cfg.burst_max + 1)
            } else if self.rng.chance(cfg.write_per_mille) {
                self.rng.range(1, cfg.write_max + 1)
            } else {
                continue;
            };
            let (tl, origin, from, to) = data_mut(self, *id).pg.write(bytes).expect("writable");
            self.written(*id, tl, origin, from, to);
        }
    }

    /// A write reached the primary's WAL: acknowledged at once when asynchronous, else once
    /// its synchronous standbys flushed it.
    fn written(&mut self, id: u64, tl: u32, origin: Origin, from: u64, to: u64) {
        if data(self, id).pg.sync_names == SyncNames::Async && data(self, id).pg.pending.is_empty() {
            self.ack(id, tl, origin, from, to);
        } else {
            data_mut(self, id).pg.pending.push((tl, origin, from, to));
        }
    }

    /// Postgres's synchronous commit on primary `id`: how far the standbys that
    /// `synchronous_standby_names` counts flushed its WAL (`FIRST n`: all named; `ANY k`: the
    /// k-th furthest named; `*`: any standby).
    fn synchronous_flush(&self, id: u64) -> u64 {
        let flushed: BTreeMap<MemberName, u64> = self
            .nodes
            .values()
            .filter(|n| n.id != id)
            .filter_map(|n| {
                let d = n.data.as_ref()?;
                matches!(d.pg.process, Process::Running { primary: false, upstream: Some(u), streaming: true, .. } if u == id)
                    .then(|| (n.name.clone(), d.pg.end().unwrap_or(0)))
            })
            .collect();
        let of = |names: &BTreeSet<MemberName>| -> Vec<u64> {
            let mut v: Vec<u64> = names.iter().map(|m| flushed.get(m).copied().unwrap_or(0)).collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            v
        };
        match &data(self, id).pg.sync_names {
            SyncNames::Async => u64::MAX,
            SyncNames::AnyStandby => flushed.values().copied().max().unwrap_or(0),
            SyncNames::Named(names) => of(names).last().copied().unwrap_or(0),
            SyncNames::Quorum { k, names } => of(names).get(k.saturating_sub(1)).copied().unwrap_or(0),
        }
    }

    /// Acknowledges the pending writes of primary `id` that its synchronous standbys hold.
    fn acknowledge(&mut self, id: u64) {
        if data(self, id).pg.pending.is_empty() {
            return;
        }
        let upto = self.synchronous_flush(id);
        let pending = std::mem::take(&mut data_mut(self, id).pg.pending);
        let (done, wait): (Vec<_>, Vec<_>) = pending.into_iter().partition(|w| w.3 <= upto);
        data_mut(self, id).pg.pending = wait;
        for (tl, origin, from, to) in done {
            self.ack(id, tl, origin, from, to);
        }
    }

    /// A client got its commit acknowledged; under a synchronous promise (the published
    /// state not degraded) it joins the writes every later primary must hold.
    fn ack(&mut self, id: u64, tl: u32, origin: Origin, from: u64, to: u64) {
        self.record_write(id, tl, origin, from, to);
        let v = self.now;
        let w = world(self);
        if w.shadow.sync.degraded {
            return;
        }
        w.stats.protected_writes += 1;
        match w.protected.last_mut() {
            Some(p) if p.origin == origin && p.to == from => p.to = to,
            _ => w.protected.push(Protected { origin, from, to, timeline: tl, member: id, at_us: v }),
        }
    }

    /// Invariant (c): acknowledged writes of different origins never share an LSN of one
    /// timeline.
    fn record_write(&mut self, member: u64, tl: u32, origin: Origin, from: u64, to: u64) {
        let v = self.now;
        self.trace.u64(member).u64(to);
        let w = world(self);
        w.stats.writes += 1;
        let stretches = w.acked.entry(tl).or_default();
        let mut extend = None;
        for (start, a) in stretches.range(..to).rev() {
            if a.to <= from {
                break;
            }
            if a.origin != origin {
                let text = format!(
                    "(c) split brain on timeline {tl}: n{member} acknowledged a write at {:?}..{:?}, where n{} acknowledged other writes ({:?}..{:?}, {:.3}s to {:.3}s)",
                    Lsn(from),
                    Lsn(to),
                    a.member,
                    Lsn(*start),
                    Lsn(a.to),
                    a.first_us as f64 / 1e6,
                    a.last_us as f64 / 1e6
                );
                self.fail(&text);
            }
            extend = Some(*start);
        }
        match extend.and_then(|s| stretches.get_mut(&s)) {
            Some(a) => {
                a.to = a.to.max(to);
                a.last_us = v;
            }
            None => {
                stretches.insert(from, Acked { to, origin, member, first_us: v, last_us: v });
            }
        }
    }

    /// Invariant (a): at most one Postgres is writable.
    pub(crate) fn check_pg_writable(&mut self) {
        let writable: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.data.as_ref().is_some_and(|d| d.pg.writable()))
            .map(|n| n.id)
            .collect();
        if writable.len() > 1 {
            let who: Vec<String> =
                writable.iter().map(|id| format!("n{id}: {}", data(self, *id).describe())).collect();
            self.fail(&format!("(a) two writable Postgres at once: {}", who.join("; ")));
        }
    }

    /// A committed entry, first applied: replayed into the shadow state; a granted acquire
    /// remembers the state it was judged against.
    pub(crate) fn shadow_apply(&mut self, command: &Command, outcome: &Outcome) {
        let v = self.now;
        if self.world.is_none() {
            return;
        }
        // The WAL a recorded position stands for: the recording primary's, up to there (it
        // only grows while it is primary; unknown if it was cut back meanwhile).
        let wal_of = |sim: &Sim, holder: &MemberName, lsn: Option<Lsn>| {
            let lsn = lsn?.0;
            let dir = sim.nodes[&id_of(holder)].data.as_ref()?.pg.dir.as_ref()?;
            (dir.wal.end() >= lsn).then(|| (lsn, dir.wal.truncated(lsn)))
        };
        let recorded = match (command, outcome.is_accepted()) {
            (Command::RenewLease { holder, lsn: Some(lsn), .. }, true) => {
                Some((true, wal_of(self, holder, Some(*lsn))))
            }
            (Command::ReleaseLease { holder, checkpoint, .. }, true) => {
                Some((false, wal_of(self, holder, *checkpoint)))
            }
            _ => None,
        };
        let w = self.world.as_mut().expect("checked");
        match recorded {
            Some((true, wal)) => w.last_primary = wal,
            Some((false, wal)) => w.released = wal,
            None => {}
        }
        let before = matches!(outcome, Outcome::LeaseGranted { .. }).then(|| w.shadow.clone());
        let replayed = w.shadow.apply(command.clone());
        if &replayed != outcome {
            let text =
                format!("the replayed state gives {replayed:?} for {command:?}, the members {outcome:?}");
            self.fail(&text);
        }
        if let (Some(before), Outcome::LeaseGranted { epoch }, Command::AcquireLease { candidate, .. }) =
            (before, outcome, command)
        {
            let matching =
                |rec: &Option<(u64, Wal)>, lsn: Option<Lsn>| rec.clone().filter(|r| Some(Lsn(r.0)) == lsn);
            let last_primary = matching(&w.last_primary, before.last_primary_lsn);
            let released = matching(&w.released, before.release_checkpoint);
            w.grants.insert(
                *epoch,
                Grant { holder: candidate.clone(), at_us: v, before, last_primary, released },
            );
        }
    }

    /// Invariant (b), when member `id` is about to become writable under `epoch` for the
    /// first time (promotion, or start as primary after an acquire): it holds `epoch`, it is
    /// not tagged nofailover (nor failover_priority 0, nor a witness), and, with the committed
    /// state just before the grant: its actual end of WAL is within `maximum_lag_on_failover`
    /// of the last primary position and at or past a released primary's checkpoint, and its
    /// WAL *is* that primary's up to there (positions on another timeline do not count).
    pub(crate) fn becomes_primary(&mut self, id: u64, epoch: LeaseEpoch) {
        let v = self.now;
        let me = name(id);
        let end = data(self, id).pg.end().unwrap_or(0);
        let wall = self.nodes[&id].clock.wall_ms(v);
        let w = world(self);
        if !w.promoted.insert(epoch) {
            return;
        }
        w.stats.promotions += 1;
        let Some(g) = w.grants.get(&epoch).cloned() else {
            self.fail(&format!("(b) n{id} becomes primary under epoch {epoch}, which was never granted"));
        };
        let s = &g.before;
        let why = if g.holder != me {
            Some(format!("epoch {epoch} was granted to {}", g.holder))
        } else if let Some(m) = s
            .members
            .get(&me)
            .filter(|m| m.tags.nofailover || m.tags.failover_priority == Some(0) || m.witness)
        {
            Some(format!("tagged {:?}, witness {}", m.tags, m.witness))
        } else if let Some(cp) = s.release_checkpoint.filter(|cp| end < cp.0) {
            Some(format!("its WAL ends at {:?}, before the released primary's checkpoint {cp:?}", Lsn(end)))
        } else if let Some(last) =
            s.last_primary_lsn.filter(|last| last.0.saturating_sub(end) > s.config.maximum_lag_on_failover)
        {
            let max = s.config.maximum_lag_on_failover;
            Some(format!(
                "its WAL ends at {:?}, {} bytes behind the last primary position {last:?} (maximum_lag_on_failover {max})",
                Lsn(end),
                last.0 - end
            ))
        } else {
            let mine = &data(self, id).pg.dir.as_ref().expect("a primary has data").wal;
            fn need(r: &Option<(u64, Wal)>, lag: u64) -> Option<(u64, &Wal)> {
                r.as_ref().map(|(at, wal)| (at.saturating_sub(lag), wal))
            }
            let max = s.config.maximum_lag_on_failover;
            [
                ("the last primary position", need(&g.last_primary, max)),
                ("the released checkpoint", need(&g.released, 0)),
            ]
            .into_iter()
            .find_map(|(what, n)| {
                let (upto, wal) = n?;
                let at = mine.content_differs_before(wal, upto)?;
                Some(format!(
                    "its WAL (timeline {}, end {:?}) differs from the WAL behind {what} at {:?}, before {:?}",
                    mine.timeline(),
                    Lsn(end),
                    Lsn(at),
                    Lsn(upto)
                ))
            })
        };
        if let Some(why) = why {
            let at = g.at_us as f64 / 1e6;
            self.fail(&format!("(b) n{id} becomes primary under epoch {epoch} (granted at {at:.3}s) but is ineligible: {why}"));
        }
        self.check_protected(id, &format!("becomes primary under epoch {epoch}"));
        if let Some(why) = eligibility::blocker(s, &me, Some(Lsn(end)), wall) {
            world(self).stats.stale_view_promotions += 1;
            self.note(
                id,
                format!("note: the committed state at the grant would have refused this promotion: {why}"),
            );
        }
        self.note(id, format!("becomes primary under epoch {epoch} at {:?}", Lsn(end)));
    }

    /// Invariant (e): every write acknowledged under a synchronous promise is in the WAL of
    /// `id`, a (new) primary.
    fn check_protected(&mut self, id: u64, when: &str) {
        let Some(mine) = data(self, id).pg.dir.as_ref().map(|d| d.wal.clone()) else { return };
        if let Some(p) = world(self).protected.iter().find(|p| !mine.holds(p.origin, p.from, p.to)).cloned() {
            self.fail(&format!(
                "(e) n{id} {when} without writes acknowledged synchronously: {:?}..{:?} on timeline {}, acknowledged by n{} from {:.3}s on",
                Lsn(p.from),
                Lsn(p.to),
                p.timeline,
                p.member,
                p.at_us as f64 / 1e6
            ));
        }
    }

    /// After the liveness phase: the converged primary holds every protected write.
    pub fn check_final_primary(&mut self) {
        let primary =
            self.nodes.values().find(|n| n.data.as_ref().is_some_and(|d| d.pg.writable())).map(|n| n.id);
        if let Some(id) = primary {
            self.check_protected(id, "is the primary at the end");
        }
    }

    /// A fast shutdown: the WAL senders first send everything to the standbys streaming from
    /// it, as Postgres does before it exits.
    pub(crate) fn stop_postgres_fast(&mut self, id: u64) {
        if let Some(dir) = data(self, id).pg.dir.clone().filter(|_| data(self, id).pg.writable()) {
            let ids: Vec<u64> = self.nodes.keys().copied().filter(|o| *o != id).collect();
            for o in ids {
                let streaming = matches!(
                    data(self, o).pg.process,
                    Process::Running { primary: false, upstream: Some(u), streaming: true, .. } if u == id
                );
                if streaming && !self.net.blocked(id, o) && !self.net.blocked(o, id) {
                    if let Stream::SilentlyDiverged(at) = data_mut(self, o).pg.stream_from(&dir, u64::MAX) {
                        self.fail(&format!(
                            "(d) n{o} streams from n{id} but their WAL differs at {:?}",
                            Lsn(at)
                        ));
                    }
                }
            }
        }
        data_mut(self, id).pg.stop_fast();
    }

    /// A client's bulk write on `id`'s Postgres, acknowledged if it is writable.
    pub fn client_write(&mut self, id: u64, bytes: u64) -> bool {
        let Some((tl, origin, from, to)) = data_mut(self, id).pg.write(bytes) else { return false };
        self.written(id, tl, origin, from, to);
        self.note(id, format!("client: bulk write of {bytes} bytes up to {:?}", Lsn(to)));
        true
    }

    /// Fault: the postmaster alone dies (kill -9, OOM killer).
    pub fn crash_postgres(&mut self, id: u64) {
        let Some(d) = self.nodes.get_mut(&id).and_then(|n| n.data.as_mut()) else { return };
        if d.pg.is_up() {
            d.pg.kill();
            self.note(id, "fault: Postgres killed (kill -9)".into());
        }
    }

    /// Liveness of the HA-loop mode: every member runs, one Raft leader, exactly one writable
    /// Postgres whose member holds the lease by its own clock, and every other member's
    /// Postgres a standby streaming from it.
    pub fn pg_converged(&self) -> Result<String, String> {
        if let Some(n) = self.nodes.values().find(|n| !n.running()) {
            return Err(format!("{} is not running", n.name));
        }
        let leader = self.leader().ok_or("no Raft leader")?;
        let primaries: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.data.as_ref().is_some_and(|d| d.pg.writable()))
            .map(|n| n.id)
            .collect();
        let [p] = primaries[..] else { return Err(format!("writable Postgres: {primaries:?}")) };
        let holder = &self.nodes[&p];
        let core = holder.core.as_ref().expect("running");
        if core.lease_view(holder.local_now(self.now)).deadline.is_none() {
            return Err(format!("n{p}'s Postgres is writable but n{p} has no valid lease"));
        }
        let expose = self.cfg.pg.as_ref().is_some_and(|c| c.expose_known_bugs);
        let mut stuck = Vec::new();
        for n in self.nodes.values().filter(|n| n.id != p) {
            let d = n.data.as_ref().expect("data member");
            match d.pg.process {
                Process::Running { primary: false, upstream: Some(u), streaming: true, .. } if u == p => {}
                // A standby refused by the primary's timeline history: the symptom of
                // pg_bugs::a_promotion_not_recorded_misleads_the_old_primary (a switch the
                // history does not record), tolerated unless exposed.
                Process::Running { primary: false, upstream: Some(u), .. }
                    if u == p && d.pg.refused && !expose =>
                {
                    stuck.push(n.id)
                }
                ref other => {
                    return Err(format!("{}'s Postgres is {other:?}, not streaming from n{p}", n.name))
                }
            }
        }
        if !stuck.is_empty() {
            return Ok(format!(
                "n{p} primary; standbys {stuck:?} cannot follow it (known bug), the others stream from it"
            ));
        }
        Ok(format!("Raft leader n{leader}, n{p} primary, the others stream from it"))
    }

    pub fn pg_ttl(&self) -> std::time::Duration {
        self.cfg.pg.as_ref().map_or(self.cfg.ha.ttl, |p| p.dynamic.ttl())
    }

    /// Standbys that cannot follow the primary because of a known bug (see `pg_converged`).
    pub fn stuck_standbys(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.data.as_ref().is_some_and(|d| d.pg.refused && !d.pg.writable()))
            .count()
    }
}
