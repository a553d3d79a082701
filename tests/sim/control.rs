//! Operating the simulated cluster: the faults and operator actions the random runs and the
//! scenarios inject (crash, restart, pause, resume, partition, heal, leadership transfer,
//! proposals by hand), and what they observe (leader, writable member, applied indexes,
//! convergence). Every action is noted in the members' event logs and the trace.

use crate::sim::Sim;
use pgha::clock::BootInstant;
use pgha::dcs::mem_store::MemLogStore;
use pgha::dcs::node::RaftCore;
use pgha::types::{LeaseEpoch, MemberName, NodeId};
use raft::eraftpb::Message;
use std::collections::BTreeSet;

/// Faults and operator actions.
impl Sim {
    pub fn note(&mut self, id: u64, text: String) {
        let v = self.now;
        self.trace.bytes(text.as_bytes());
        if let Some(n) = self.nodes.get_mut(&id) {
            n.note(v, text);
        }
    }

    pub fn note_all(&mut self, text: &str) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.note(id, format!("fault: {text}"));
        }
    }

    /// Kills the member: its Raft core and lease client are gone, its store survives. A data
    /// member's Postgres dies with it (the fencer acts on EOF of its pipe), its data directory
    /// survives.
    pub fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("member exists");
        if let Some(core) = node.core.take() {
            node.disk = Some(core.crash_copy_of_store());
            node.paused = false;
            if let Some(d) = node.data.as_mut() {
                d.pg.kill();
                d.lp = crate::ha_loop::LoopState::default();
            }
            for (m, reliable) in std::mem::take(&mut node.inbox) {
                if reliable {
                    self.net.requeue(m, self.now + 100 * crate::net::MS, true);
                }
            }
            self.note(id, "fault: crashed".into());
        }
    }

    pub fn restart(&mut self, id: u64) {
        if self.nodes[&id].core.is_some() {
            return;
        }
        self.note(id, "fault: restarting".into());
        self.start(id);
        let early = self.rng.chance(self.cfg.early_ha_per_mille);
        let v = self.now;
        let node = self.nodes.get_mut(&id).expect("member exists");
        let local = node.clock.local_us(v);
        node.next_tick_local = local;
        node.next_ha_local = local + self.rng.range(0, node.ha.cfg.loop_wait.as_micros() as u64);
        if early && node.data.is_some() {
            node.next_ha_local = local;
            self.run_data_member(id);
        } else if early && node.ha.enabled {
            node.next_ha_local = local;
            self.run_ha(id);
        }
    }

    pub fn pause(&mut self, id: u64) {
        let steer = self.cfg.pg.as_ref().is_some_and(|p| !p.expose_known_bugs);
        let node = self.nodes.get_mut(&id).expect("member exists");
        if steer && node.data.as_ref().is_some_and(|d| d.in_act_gap()) {
            // pg_bugs::a_pgha_paused_between_promote_and_fence_leaves_postgres_unfenced
            self.note(id, "steering around a known bug: no pause between promotion and fence".into());
            return;
        }
        if node.core.is_some() && !node.paused {
            node.paused = true;
            self.note(id, "fault: paused (SIGSTOP)".into());
        }
    }

    pub fn resume(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("member exists");
        if !node.paused {
            return;
        }
        node.paused = false;
        let local = node.clock.local_us(self.now);
        node.next_tick_local = local;
        node.next_ha_local = local;
        let queued: Vec<(Message, bool)> = node.inbox.drain(..).collect();
        self.note(id, format!("fault: resumed (SIGCONT), {} messages queued", queued.len()));
        // The driver's `select!` picks its first event at random: the overdue tick or the inbox.
        if self.rng.chance(500) {
            self.tick(id);
        }
        for (m, reliable) in queued {
            self.deliver(m, reliable);
        }
    }

    pub fn partition(&mut self, groups: &[Vec<u64>]) {
        self.net.partition(groups);
        self.note_all(&format!("partition {groups:?}"));
    }

    pub fn heal(&mut self) {
        self.net.heal();
        self.note_all("network healed");
    }

    /// Runs `f` on a running member's core with its local time, then its Ready loop.
    pub fn with_core<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut RaftCore<MemLogStore>, BootInstant) -> R,
    ) -> R {
        let v = self.now;
        let node = self.nodes.get_mut(&id).expect("member exists");
        let now = node.local_now(v);
        let r = f(node.core.as_mut().expect("member is running"), now);
        self.pump(id);
        r
    }

    /// Asks the Raft leader to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        if let Some(l) = self.leader() {
            self.note(l, format!("fault: transfer Raft leadership to n{to}"));
            self.with_core(l, |c, _| c.transfer_leader(NodeId(to)));
        }
    }

    /// Clock-rate jitter: from now on the member's clock runs at 1 + `ppm` / 10⁶.
    pub fn set_clock_rate(&mut self, id: u64, ppm: i64) {
        let v = self.now;
        self.nodes.get_mut(&id).expect("member exists").clock.set_rate(v, ppm);
        self.note(id, format!("fault: clock rate now {ppm:+} ppm"));
    }

    pub fn set_ha(&mut self, id: u64, enabled: bool) {
        self.nodes.get_mut(&id).expect("member exists").ha.enabled = enabled;
    }
}

/// Observations.
impl Sim {
    /// The running Raft leader with the highest term.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter(|n| n.running())
            .filter_map(|n| n.core.as_ref().filter(|c| c.is_leader()).map(|c| (c.status().term, n.id)))
            .max()
            .map(|(_, id)| id)
    }

    /// Every member runs and follows the same Raft leader.
    pub fn led(&self) -> bool {
        let leader = self.leader().map(NodeId);
        leader.is_some()
            && self
                .nodes
                .values()
                .all(|n| n.running() && n.core.as_ref().is_some_and(|c| c.leader_id() == leader))
    }

    /// The member writable now, with its epoch.
    pub fn writable(&self) -> Option<(u64, LeaseEpoch)> {
        let v = self.now;
        self.nodes
            .values()
            .find_map(|n| n.core.as_ref().and_then(|c| n.ha.writable(c, n.local_now(v))).map(|e| (n.id, e)))
    }

    /// The lease as member `id`'s applied state has it.
    pub fn lease_in(&self, id: u64) -> Option<(MemberName, LeaseEpoch)> {
        let core = self.nodes[&id].core.as_ref()?;
        core.state()?.lease.as_ref().map(|l| (l.holder.clone(), l.epoch))
    }

    pub fn applied(&self, id: u64) -> Option<u64> {
        self.nodes[&id].core.as_ref().map(|c| c.applied())
    }

    /// Liveness: every member runs, all follow one Raft leader, one member is writable, and all
    /// applied the same index.
    pub fn converged(&self) -> Result<String, String> {
        if let Some(n) = self.nodes.values().find(|n| !n.running()) {
            return Err(format!("{} is not running", n.name));
        }
        let leader = self.leader().ok_or("no Raft leader")?;
        let cores: Vec<_> = self.nodes.values().filter_map(|n| n.core.as_ref()).collect();
        if let Some(c) = cores.iter().find(|c| c.leader_id() != Some(NodeId(leader))) {
            return Err(format!("{} follows {:?}, not n{leader}", c.name(), c.leader_id()));
        }
        let (holder, epoch) = self.writable().ok_or("nobody holds a valid lease")?;
        let applied: BTreeSet<u64> = cores.iter().map(|c| c.applied()).collect();
        if applied.len() != 1 {
            return Err(format!("applied indexes differ: {applied:?}"));
        }
        Ok(format!("leader n{leader}, n{holder} writable under epoch {epoch}, all applied {applied:?}"))
    }
}
