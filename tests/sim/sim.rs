//! The deterministic simulator: members, network and virtual clock in one single-threaded
//! value. `step` jumps to the next moment anything is due (a message delivery, a member's Raft
//! tick or HA iteration), processes everything due then in a fixed order (deliveries in
//! delivery order, then ticks and HA iterations by member id), running each member's Ready loop
//! after every input as the tokio driver does, and checks the invariants.
//!
//! Checked here, with the members' own clocks: at most one member is writable at any virtual
//! time, and an accepted `ExpireLease` is first applied only when its holder no longer considers
//! itself writable. `check.rs` checks the log and the states. A violation panics with the seed,
//! the replay command, each member's status and its last events.

use crate::check::Checker;
use crate::ha::{HaConfig, LeaseClient};
use crate::ha_loop::{DataMember, LoopState, Wait};
use crate::net::{NetConfig, Network};
use crate::node::{NodeClock, SimNode, TICK_US};
use crate::pg_world::{PgConfig, PgWorld};
use crate::rng::{Fnv, Rng};
use pgha::dcs::mem_store::MemLogStore;
use pgha::dcs::node::{decode_state, encode_state, CoreConfig, RaftCore};
use pgha::dcs::state::{CaMaterial, ClusterState, Command, Member, NewMember, Outcome, RaftMembership, Tags};
use pgha::types::{LeaseEpoch, MemberName, NodeId};
use raft::eraftpb::{ConfState, HardState, Message, MessageType, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub struct SimConfig {
    /// The test's name, for the replay command in a failure report.
    pub test_name: &'static str,
    pub seed: u64,
    pub nodes: u64,
    pub ha: HaConfig,
    pub net: NetConfig,
    /// Each member's clock rate is 1 ± up to this many parts per million.
    pub max_skew_ppm: u64,
    pub snapshot_every: u64,
    pub retain_entries: u64,
    /// Chance that a restarted member's HA loop runs once on the state of its snapshot before
    /// its first Ready, as `driver::channels` publishes that state to the HA loop at start.
    pub early_ha_per_mille: u64,
    /// The HA-loop mode: every member a data member with a simulated Postgres, driven by the
    /// real `ha::decide` (`ha_loop.rs`); `None`: the lease client of `ha.rs`.
    pub pg: Option<PgConfig>,
}

impl SimConfig {
    /// The HA-loop mode's configuration (the mode must be on).
    pub fn pg_mut(&mut self) -> &mut PgConfig {
        self.pg.as_mut().expect("the HA-loop mode")
    }

    pub fn new(test_name: &'static str, seed: u64, nodes: u64) -> Self {
        SimConfig {
            test_name,
            seed,
            nodes,
            ha: HaConfig::standard(),
            net: NetConfig::calm(),
            max_skew_ppm: 5_000,
            snapshot_every: 1000,
            retain_entries: 200,
            early_ha_per_mille: 0,
            pg: None,
        }
    }
}

pub struct Sim {
    pub cfg: SimConfig,
    pub rng: Rng,
    /// Virtual time in microseconds.
    pub now: u64,
    pub steps: u64,
    pub nodes: BTreeMap<u64, SimNode>,
    pub net: Network,
    pub checker: Checker,
    pub(crate) trace: Fnv,
    logger: slog::Logger,
    /// (from, to) pairs to report unreachable at the end of the step, as the transport does.
    unreachable: BTreeSet<(u64, u64)>,
    /// Last virtual time each member was writable, with the epoch.
    pub last_writable: BTreeMap<u64, (u64, LeaseEpoch)>,
    /// Lease commands in the order they were first applied: (virtual time, command, outcome).
    pub lease_log: Vec<(u64, Command, Outcome)>,
    /// While a member handles a snapshot: (member, leader), so its reply is reliable too.
    snapshot_reply: Option<(u64, u64)>,
    /// The data plane and its history, in the HA-loop mode.
    pub world: Option<PgWorld>,
}

pub fn name(id: u64) -> MemberName {
    MemberName::new(format!("n{id}")).expect("valid member name")
}

pub fn new_member(id: u64) -> NewMember {
    NewMember {
        name: name(id),
        witness: false,
        api_address: format!("10.0.0.{id}:8008"),
        raft_address: format!("10.0.0.{id}:7000"),
        pg_address: Some(format!("10.0.0.{id}:5432")),
        tags: Tags::default(),
        version: "sim".into(),
    }
}

/// The snapshot every member of an `n`-member cluster starts from: index 1, term 1, all of
/// them voters (so the simulation needs no join path to form the cluster).
fn bootstrap_snapshot(n: u64, pg: Option<&PgConfig>) -> Snapshot {
    let ca = CaMaterial { cert_pem: String::new(), key_pem: String::new() };
    let dynamic = pg.map(|p| p.dynamic.clone()).unwrap_or_default();
    let member = |id: u64| {
        let mut m = new_member(id);
        m.tags.nofailover = pg.is_some_and(|p| p.nofailover.contains(&id));
        m
    };
    let mut state = ClusterState::bootstrap("sim".into(), "sim-1".into(), member(1), ca, dynamic);
    for id in 2..=n {
        let m = member(id);
        state.members.insert(
            m.name.clone(),
            Member {
                name: m.name,
                node_id: NodeId(id),
                witness: false,
                api_address: m.api_address,
                raft_address: m.raft_address,
                pg_address: m.pg_address,
                membership: RaftMembership::Voter,
                tags: m.tags,
                version: m.version,
                status: None,
                removing: false,
                scheduled_restart: None,
            },
        );
    }
    state.next_node_id = n + 1;
    state.check_invariants();
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    let mut cs = ConfState::default();
    cs.set_voters((1..=n).collect());
    meta.set_conf_state(cs);
    snap.data = encode_state(&state).into();
    snap
}

fn is_heartbeat(m: &Message) -> bool {
    matches!(m.get_msg_type(), MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse)
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut sim = Sim {
            rng: Rng::new(cfg.seed),
            net: Network::new(cfg.net.clone()),
            cfg,
            now: 0,
            steps: 0,
            nodes: BTreeMap::new(),
            checker: Checker::default(),
            trace: Fnv::default(),
            logger: crate::raft_log::logger(),
            unreachable: BTreeSet::new(),
            last_writable: BTreeMap::new(),
            lease_log: Vec::new(),
            snapshot_reply: None,
            world: None,
        };
        let snap = bootstrap_snapshot(sim.cfg.nodes, sim.cfg.pg.as_ref());
        if sim.cfg.pg.is_some() {
            let state = decode_state(1, &snap.data).expect("the bootstrap state decodes");
            sim.world = Some(PgWorld::new(state));
        }
        let hs = HardState { term: 1, vote: 0, commit: 1, ..Default::default() };
        for id in 1..=sim.cfg.nodes {
            let store = MemLogStore::bootstrap(snap.clone(), hs.clone()).expect("a valid first snapshot");
            sim.add_member(id, store);
        }
        sim
    }

    /// Adds a member with this store (bootstrapped, or empty for a joiner) and starts it.
    pub fn add_member(&mut self, id: u64, store: MemLogStore) {
        let skew = self.cfg.max_skew_ppm;
        let offset_us = self.rng.range(0, 1_000_000_000);
        let clock = NodeClock::new(offset_us, self.rng.range(0, 2 * skew + 1) as i64 - skew as i64);
        let mut cfg = CoreConfig::new(NodeId(id), name(id), self.cfg.ha.safety_margin);
        cfg.snapshot_every = self.cfg.snapshot_every;
        cfg.retain_entries = self.cfg.retain_entries;
        let local = clock.local_us(self.now);
        let node = SimNode {
            id,
            name: name(id),
            clock,
            core: None,
            disk: Some(store),
            paused: false,
            inbox: Default::default(),
            next_tick_local: local + self.rng.range(0, TICK_US),
            next_ha_local: local + self.rng.range(0, self.cfg.ha.loop_wait.as_micros() as u64),
            ha: LeaseClient { enabled: self.cfg.pg.is_none(), ..LeaseClient::new(self.cfg.ha.clone()) },
            data: self.cfg.pg.as_ref().map(|_| DataMember::new()),
            cfg,
            incarnation: 0,
            was_leader: false,
            checked_applied: 0,
            events: Default::default(),
        };
        self.nodes.insert(id, node);
        self.start(id);
    }

    /// Opens the member's core over its stored state, with an election timeout from the seed.
    pub(crate) fn start(&mut self, id: u64) {
        let et = self.rng.range(10, 20) as usize;
        let node = self.nodes.get_mut(&id).expect("member exists");
        let store = node.disk.take().expect("a stopped member has its store");
        let mut cfg = node.cfg.clone();
        cfg.election_tick = 10;
        cfg.fixed_election_timeout = Some(et);
        // Every start is a new run of the member, as a new process draws a new instance.
        cfg.instance = node.incarnation + 1;
        let core = match RaftCore::new(store, cfg, &self.logger) {
            Ok(core) => core,
            Err(e) => self.fail(&format!("n{id} cannot start: {e}")),
        };
        let node = self.nodes.get_mut(&id).expect("member exists");
        node.core = Some(core);
        node.incarnation += 1;
        node.was_leader = false;
        node.checked_applied = 0;
        node.ha.fenced = None;
        if let Some(d) = node.data.as_mut() {
            // A new pgha process: it stops any postmaster of its data directory left behind.
            d.pg.kill();
            d.lp = LoopState::default();
        }
        let v = self.now;
        node.note(v, format!("started (incarnation {}, election timeout {et} ticks)", node.incarnation));
        self.trace.u64(0x5747).u64(id).u64(et as u64);
        self.checker.restarted(id);
        if let Err(e) = self.check_state(id) {
            self.fail(&e);
        }
    }

    // ---- running ----

    fn next_due(&self) -> Option<u64> {
        let nodes = self.nodes.values().filter_map(|n| n.next_due());
        let world = self.world.as_ref().map(|w| w.next_tick).into_iter().chain(self.next_fence());
        nodes.chain(self.net.next_delivery()).chain(world).min()
    }

    /// Processes everything due up to and including virtual time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(due) = self.next_due().filter(|d| *d <= t) {
            self.step_at(due.max(self.now));
        }
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d.as_micros() as u64);
    }

    /// Runs until `done` holds (checked after every step) or `limit` passes; true if it held.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit.as_micros() as u64;
        loop {
            if done(self) {
                return true;
            }
            match self.next_due() {
                Some(due) if due <= end => self.step_at(due.max(self.now)),
                _ => {
                    self.now = end;
                    return done(self);
                }
            }
        }
    }

    fn step_at(&mut self, v: u64) {
        self.now = v;
        self.steps += 1;
        if self.world.is_some() {
            self.fire_fences();
        }
        for (msg, reliable) in self.net.take_due(v) {
            self.deliver(msg, reliable);
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in &ids {
            let n = &self.nodes[id];
            if n.running() && n.clock.virtual_at(n.next_tick_local) <= v {
                self.tick(*id);
            }
        }
        if self.world.as_ref().is_some_and(|w| w.next_tick <= v) {
            self.pg_tick();
        }
        for id in &ids {
            let n = &self.nodes[id];
            if n.running() && n.data.is_some() {
                self.run_data_member(*id);
            } else if n.running() && n.ha.enabled && n.clock.virtual_at(n.next_ha_local) <= v {
                self.run_ha(*id);
            }
        }
        for (from, to) in std::mem::take(&mut self.unreachable) {
            if let Some(core) = self.nodes.get_mut(&from).filter(|n| !n.paused).and_then(|n| n.core.as_mut())
            {
                core.report_unreachable(NodeId(to));
            }
        }
        self.check_writable();
    }

    pub(crate) fn tick(&mut self, id: u64) {
        let v = self.now;
        let node = self.nodes.get_mut(&id).expect("member exists");
        let local = node.clock.local_us(v);
        // Like tokio's `MissedTickBehavior::Delay`: a late tick does not bunch up.
        node.next_tick_local += TICK_US;
        if node.next_tick_local <= local {
            node.next_tick_local = local + TICK_US;
        }
        let now = node.local_now(v);
        node.core.as_mut().expect("a running member has a core").tick(now);
        self.pump(id);
    }

    pub(crate) fn run_ha(&mut self, id: u64) {
        let v = self.now;
        let node = self.nodes.get_mut(&id).expect("member exists");
        let local = node.clock.local_us(v);
        node.next_ha_local += node.ha.cfg.loop_wait.as_micros() as u64;
        if node.next_ha_local <= local {
            node.next_ha_local = local + node.ha.cfg.loop_wait.as_micros() as u64;
        }
        let now = node.local_now(v);
        let core = node.core.as_mut().expect("a running member has a core");
        let what = node.ha.run(core, now, &mut self.rng);
        self.trace.bytes(what.as_bytes());
        node.note(v, format!("ha: {what}"));
        self.pump(id);
    }

    pub(crate) fn deliver(&mut self, msg: Message, reliable: bool) {
        let (from, to) = (msg.from, msg.to);
        let v = self.now;
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        self.trace.u64(from).u64(to).u64(msg.get_msg_type() as u64).u64(msg.term).u64(msg.index);
        self.trace.u64(msg.commit).u64(msg.entries.len() as u64).u64(u64::from(msg.reject));
        let Some(node) = self.nodes.get_mut(&to).filter(|n| n.core.is_some()) else {
            if reliable && self.nodes.contains_key(&to) {
                self.net.requeue(msg, v + 100 * crate::net::MS, true);
            }
            self.unreachable.insert((from, to));
            return;
        };
        if node.paused {
            node.queue(msg, reliable);
            return;
        }
        if !is_heartbeat(&msg) || std::env::var_os("SIM_TRACE").is_some() {
            let text = format!(
                "recv {:?} from n{from} term {} index {} logterm {} commit {} entries {}{}",
                msg.get_msg_type(),
                msg.term,
                msg.index,
                msg.log_term,
                msg.commit,
                msg.entries.len(),
                if msg.reject { " reject" } else { "" }
            );
            let text = if snapshot {
                let meta = msg.get_snapshot().get_metadata();
                format!("{text} snapshot at {} term {}", meta.index, meta.term)
            } else {
                text
            };
            node.note(v, text);
        }
        match node.core.as_mut().expect("checked above").step(msg) {
            Ok(()) => {}
            Err(e) => self.fail(&format!("n{to} failed to step a message: {e}")),
        }
        if snapshot && self.net.cfg.reliable_snapshots {
            self.snapshot_reply = Some((to, from));
        }
        self.pump(to);
        self.snapshot_reply = None;
    }

    /// Runs the member's Ready loop once and checks what it produced.
    pub fn pump(&mut self, id: u64) {
        if let Err(e) = self.try_pump(id) {
            self.fail(&e);
        }
        if let Some(outcome) =
            self.nodes.get_mut(&id).and_then(|n| n.data.as_mut()).and_then(|d| d.lp.resolved.take())
        {
            self.resolved(id, outcome);
        }
    }

    fn try_pump(&mut self, id: u64) -> Result<(), String> {
        let v = self.now;
        let node = self.nodes.get_mut(&id).expect("member exists");
        let now = node.local_now(v);
        let Some(core) = node.core.as_mut() else { return Ok(()) };
        let out = core.advance(now).map_err(|e| format!("n{id}: the Ready loop failed: {e}"))?;
        let leader = core.is_leader();
        let term = core.status().term;
        if leader != node.was_leader {
            node.was_leader = leader;
            let text = if leader { "became Raft leader" } else { "lost Raft leadership" };
            node.note(v, format!("{text} in term {term}"));
            self.trace.u64(id).u64(term).u64(u64::from(leader));
        }
        let mut snapshot_reports = Vec::new();
        for m in out.messages {
            let (from, to) = (m.from, m.to);
            let reliable = self.net.cfg.reliable_snapshots
                && (m.get_msg_type() == MessageType::MsgSnapshot
                    || (m.get_msg_type() == MessageType::MsgAppendResponse
                        && self.snapshot_reply == Some((from, to))));
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            if !self.net.send(m, v, &mut self.rng, reliable) && self.net.blocked(from, to) {
                self.unreachable.insert((from, to));
            }
            if snapshot {
                // As the real transport does once the frame is written: a crashed receiver
                // refuses the connection (failure); otherwise the write succeeds even if the
                // network loses the message afterwards.
                snapshot_reports.push((to, self.nodes.get(&to).is_some_and(|n| n.core.is_some())));
            }
        }
        if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
            for (to, delivered) in snapshot_reports {
                core.report_snapshot(NodeId(to), delivered);
            }
        }
        let first = self.checker.applied(id, &out.applied)?;
        let node = self.nodes.get_mut(&id).expect("member exists");
        if let Some(d) = node.data.as_mut() {
            if let Some(Wait::Outcome { proposal: Some(p), .. }) = &d.lp.wait {
                d.lp.resolved =
                    out.applied.iter().find(|a| a.proposal == Some(*p)).map(|a| a.outcome.clone());
            }
        }
        for a in &out.applied {
            self.trace.u64(id).u64(a.index).bytes(format!("{:?}{:?}", a.command, a.outcome).as_bytes());
            if !matches!(a.command, Command::RenewLease { .. }) || !a.outcome.is_accepted() {
                node.note(v, format!("applied #{} {:?} -> {:?}", a.index, a.command, a.outcome));
            }
        }
        if out.removed {
            node.note(v, "removed from the cluster: stopping".into());
            node.disk = node.core.take().map(|c| c.crash_copy_of_store());
            return Ok(());
        }
        for f in first {
            self.first_applied(id, f.command, f.outcome)?;
        }
        if out.state_changed && self.world.is_some() {
            self.maybe_wake(id);
        }
        self.check_state(id)
    }

    fn check_state(&mut self, id: u64) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("member exists");
        let Some(core) = node.core.as_ref() else { return Ok(()) };
        let applied = core.applied();
        if applied == node.checked_applied {
            return Ok(());
        }
        node.checked_applied = applied;
        match core.state() {
            Some(state) => self.checker.state(id, applied, state),
            None => Ok(()),
        }
    }

    /// An entry applied for the first time anywhere: it was just committed.
    fn first_applied(&mut self, by: u64, command: Command, outcome: Outcome) -> Result<(), String> {
        let v = self.now;
        self.shadow_apply(&command, &outcome);
        if let (Command::ExpireLease { epoch, .. }, Outcome::Accepted) = (&command, &outcome) {
            let holder = self.checker.holder_of(*epoch).cloned();
            let holder_node = self.nodes.values().find(|n| Some(&n.name) == holder.as_ref());
            if let Some(h) = holder_node.filter(|h| h.id != by) {
                if let Some(core) = &h.core {
                    if h.ha.writable(core, h.local_now(v)) == Some(*epoch) {
                        return Err(format!(
                            "n{by} applied an accepted expiry of epoch {epoch} while its holder {} still considers itself writable for {:?}",
                            h.name,
                            core.lease_view(h.local_now(v)).time_left
                        ));
                    }
                }
            }
        }
        if matches!(
            command,
            Command::AcquireLease { .. } | Command::ExpireLease { .. } | Command::ReleaseLease { .. }
        ) && outcome.is_accepted()
        {
            self.lease_log.push((v, command, outcome));
        }
        Ok(())
    }

    /// Invariant 1: at most one member may accept writes at any virtual time. A paused member
    /// counts (its own clock says whether it may).
    fn check_writable(&mut self) {
        let v = self.now;
        let writable: Vec<(u64, LeaseEpoch)> = self
            .nodes
            .values()
            .filter_map(|n| n.core.as_ref().and_then(|c| n.ha.writable(c, n.local_now(v))).map(|e| (n.id, e)))
            .collect();
        for (id, e) in &writable {
            self.last_writable.insert(*id, (v, *e));
        }
        if writable.len() > 1 {
            let who: Vec<String> = writable.iter().map(|(id, e)| format!("n{id} (epoch {e})")).collect();
            self.fail(&format!("two members are writable at once: {}", who.join(", ")));
        }
        if self.world.is_some() {
            self.check_pg_writable();
        }
    }

    pub fn fail(&self, what: &str) -> ! {
        let mut r = format!(
            "simulation invariant violated: {what}\n  seed {} ({} members), step {}, virtual time {:.3} s\n  replay: SIM_SEED={} cargo test --test sim {}\n",
            self.cfg.seed,
            self.cfg.nodes,
            self.steps,
            self.now as f64 / 1e6,
            self.cfg.seed,
            self.cfg.test_name
        );
        if let Some(p) = &self.cfg.pg {
            let d = &p.dynamic;
            r.push_str(&format!(
                "  ttl {} s, loop_wait {} s, retry_timeout {} s, safety margin {:?}, maximum_lag_on_failover {}, nofailover {:?}\n",
                d.ttl, d.loop_wait, d.retry_timeout, self.cfg.ha.safety_margin, d.maximum_lag_on_failover, p.nofailover
            ));
        }
        for n in self.nodes.values() {
            r.push_str(&format!("  {}\n", n.describe(self.now)));
            for e in &n.events {
                r.push_str(&format!("      {e}\n"));
            }
        }
        panic!("{r}");
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.0
    }
}
