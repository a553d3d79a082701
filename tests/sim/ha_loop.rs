//! The real HA decision driving a simulated data member, as `ha::run` and `ha::act` do it.
//!
//! Each iteration (every `loop_wait` of the member's own clock, or 50 ms after the applied
//! state changed in a way `run.rs`'s `WakeKey` wakes on) gathers a real `Observation` (the
//! member's applied `ClusterState`, `RaftCore::lease_view` at its own time, the simulated
//! Postgres as `LocalPg`), calls the real `ha::decide::decide` once, and carries out the
//! action against the simulated Postgres and the member's `RaftCore` (`ha_act.rs`):
//!
//! - proposals (acquire and renew carrying the observed LSN, release, initialize, promotion
//!   record) block the loop until their outcome is applied on this member or `retry_timeout`
//!   passes, retrying while no leader is known, as `Handle::propose_with` does; an accepted
//!   acquire or renewal then extends the fence if Postgres runs as primary (`after_lease_outcome`);
//! - jobs (initdb, pg_basebackup, pg_rewind, `postgres --single`) keep the loop busy too;
//! - after the action, the member reports its status when it changed or every 3 s.
//!
//! The fencer is a separate process: it kills Postgres when its own-clock deadline passes,
//! also while pgha is paused, and at once when pgha dies. The lease invariants of the lease
//! client mode still hold: a release marks the epoch as given up (`LeaseClient::fenced`).

use crate::ha_act::Job;
use crate::node::SimNode;
use crate::postgres::{Process, SimPostgres};
use crate::rng::Fnv;
use crate::sim::{name, Sim};
use pgha::dcs::node::ProposeError;
use pgha::dcs::state::{ClusterState, Command, MemberStatus, Outcome, ProposalId};
use pgha::ha::decide::{decide, Action, Decision};
use pgha::ha::observe::{LocalPg, Observation, PgRole};
use pgha::ha::run::status_of;
use pgha::ha::sync::{self, Standby, SyncStep};
use pgha::pg::probe::PgProbe;
use pgha::types::{LeaseEpoch, Lsn, MemberName};
use std::time::Duration;

/// `run.rs`: a status report is repeated at least this often.
const REPORT_EVERY_US: u64 = 3_000_000;
/// `run.rs`: the shortest pause between iterations woken by state changes.
const MIN_PAUSE_US: u64 = 50_000;
/// `Handle::propose_with`: first retry after this while no leader is known, doubling to 500 ms.
const FIRST_BACKOFF_US: u64 = 20_000;

/// A proposal the loop waits for.
#[derive(Clone, Debug)]
pub enum Req {
    Acquire { expected: LeaseEpoch, ttl: Duration, lsn: Option<Lsn> },
    Renew { epoch: LeaseEpoch, ttl: Duration, lsn: Option<Lsn> },
    Release { epoch: LeaseEpoch, checkpoint: Option<Lsn> },
    Command(Command),
}

/// What the loop does once its proposal's outcome is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// `after_lease_outcome`: extend the fence if accepted, else an error.
    ExtendFence,
    Nothing,
    /// Shutdown: the process exits after its release.
    Exit,
    /// A running primary's renewal: extend the fence, then `maintain_sync`.
    MaintainSync,
    /// A synchronous standby set was published: carry on with the planned steps.
    SyncStep,
}

/// What the loop is blocked on. Times are the member's local microseconds.
#[derive(Clone, Debug)]
pub enum Wait {
    Outcome { req: Req, proposal: Option<ProposalId>, deadline: u64, retry_at: u64, backoff: u64, then: Then },
    Job { until: u64, job: Job },
}

/// pgha's in-memory part of the HA loop (lost when the member crashes).
#[derive(Clone, Debug, Default)]
pub struct LoopState {
    pub wait: Option<Wait>,
    /// The fencer's deadline on the member's local clock, while armed.
    pub fence: Option<u64>,
    pub last_decision: Option<Decision>,
    last_report: Option<(MemberStatus, u64)>,
    /// This iteration's status, reported when the iteration ends.
    status: Option<MemberStatus>,
    /// The wake key of the state the last iteration observed.
    wake_key: Option<u64>,
    /// When the last iteration ended (local).
    ended_at: u64,
    /// The outcome of the awaited proposal, applied in this Ready.
    pub resolved: Option<Outcome>,
    pub shutting_down: bool,
    /// `maintain_sync`'s steps not carried out yet, in order.
    sync_steps: Vec<SyncStep>,
    /// `HaLoop::sync_named_at`: the primary's end of WAL when its named standbys were first
    /// all synchronous.
    sync_named_at: Option<Lsn>,
}

/// A data member: its Postgres (the data directory survives crashes) and pgha's loop state.
#[derive(Clone, Debug)]
pub struct DataMember {
    pub pg: SimPostgres,
    pub lp: LoopState,
}

impl LoopState {
    /// A loop told to shut down: no more iterations.
    pub fn shutting_down() -> Self {
        LoopState { shutting_down: true, ..LoopState::default() }
    }
}

impl DataMember {
    pub fn new() -> Self {
        DataMember { pg: SimPostgres::absent(), lp: LoopState::default() }
    }

    /// The local time the loop next needs to run: a wait's deadline or retry, else the next
    /// iteration.
    pub fn next_local(&self, next_iteration: u64) -> u64 {
        if self.lp.shutting_down && self.lp.wait.is_none() {
            return u64::MAX;
        }
        match &self.lp.wait {
            None => next_iteration,
            Some(Wait::Job { until, .. }) => *until,
            Some(Wait::Outcome { deadline, proposal, retry_at, .. }) => {
                if proposal.is_none() {
                    (*deadline).min(*retry_at)
                } else {
                    *deadline
                }
            }
        }
    }

    /// Between the Postgres half of a promotion or start and its fence.
    pub fn in_act_gap(&self) -> bool {
        matches!(&self.lp.wait, Some(Wait::Job { job: Job::AfterPromote { .. } | Job::AfterStart, .. }))
    }

    pub fn describe(&self) -> String {
        let dir = match &self.pg.dir {
            None => "no data".to_string(),
            Some(d) => format!(
                "tl {} end {:X} checkpoint {:X} {:?}{}{}",
                d.wal.timeline(),
                d.wal.end(),
                d.checkpoint,
                d.control,
                if d.backup_label { " backup_label" } else { "" },
                if d.standby_signal { " standby.signal" } else { "" }
            ),
        };
        format!(
            "postgres {:?}, {dir}; fence {:?}; waiting {:?}",
            self.pg.process,
            self.lp.fence.map(|f| f as f64 / 1e6),
            self.lp.wait
        )
    }
}

pub fn id_of(m: &MemberName) -> u64 {
    m.as_str().trim_start_matches('n').parse().expect("simulated members are named n<id>")
}

/// What `PgProbe` a running Postgres answers (for `status_of`).
fn probe_of(pg: &LocalPg) -> Option<PgProbe> {
    let LocalPg::Running { role, system_identifier, timeline, lsn, .. } = pg else { return None };
    let replica = *role == PgRole::Replica;
    Some(PgProbe {
        in_recovery: replica,
        timeline: *timeline,
        wal_lsn: (!replica).then_some(*lsn),
        receive_lsn: replica.then_some(*lsn),
        replay_lsn: replica.then_some(*lsn),
        replay_timestamp: None,
        wal_replay_paused: false,
        pending_restart: Vec::new(),
        server_version: 150_000,
        postmaster_start_time: std::time::UNIX_EPOCH,
        system_identifier: system_identifier.parse().expect("numeric system identifier"),
        replication: Vec::new(),
        wal_receiver: None,
    })
}

/// `run.rs`'s `WakeKey`, hashed.
fn wake_key(s: &ClusterState) -> u64 {
    let members: Vec<_> = s.members.values().map(|m| (&m.name, &m.pg_address, &m.tags, m.witness)).collect();
    let key = format!(
        "{:?}{:?}{}{members:?}{}{}{}{:?}",
        s.initialize.as_ref().map(|i| (&i.bootstrapper, &i.system_identifier)),
        s.lease.as_ref().map(|l| (&l.holder, l.epoch)),
        s.last_epoch,
        s.config_version,
        s.switchover.is_some(),
        s.history.len(),
        s.sync
    );
    Fnv::of(key.as_bytes())
}

pub(crate) fn node_mut(sim: &mut Sim, id: u64) -> &mut SimNode {
    sim.nodes.get_mut(&id).expect("member exists")
}

pub(crate) fn data_mut(sim: &mut Sim, id: u64) -> &mut DataMember {
    node_mut(sim, id).data.as_mut().expect("a data member")
}

impl Sim {
    /// Runs whatever the member's HA loop has due now: a finished job, a proposal to retry, a
    /// wait that timed out, or the next iteration.
    pub(crate) fn run_data_member(&mut self, id: u64) {
        let v = self.now;
        let node = &self.nodes[&id];
        let local = node.clock.local_us(v);
        let Some(data) = &node.data else { return };
        match data.lp.wait.clone() {
            None if data.lp.shutting_down => {}
            None => {
                if local >= node.next_ha_local {
                    self.iterate(id);
                }
            }
            Some(Wait::Job { until, job }) => {
                if local >= until {
                    data_mut(self, id).lp.wait = None;
                    let r = self.finish_job(id, job);
                    self.go_on(id, r);
                }
            }
            Some(Wait::Outcome { deadline, proposal, retry_at, then, .. }) => {
                if local >= deadline {
                    data_mut(self, id).lp.wait = None;
                    let r = Err("the proposal was not applied within retry_timeout".to_string());
                    self.after_outcome(id, then, r);
                } else if proposal.is_none() && local >= retry_at {
                    self.propose_waited(id);
                }
            }
        }
    }

    /// One iteration: gather, decide, act (the end comes now, or when its wait ends).
    fn iterate(&mut self, id: u64) {
        let v = self.now;
        let node = node_mut(self, id);
        let now = node.local_now(v);
        let wall = node.clock.wall_ms(v);
        let core = node.core.as_ref().expect("a running member has a core");
        let Some(cluster) = core.state().cloned() else {
            node.next_ha_local = node.clock.local_us(v) + 1_000_000;
            return;
        };
        let lease = core.lease_view(now);
        let me = node.name.clone();
        let data = node.data.as_mut().expect("a data member");
        if !data.pg.is_up() {
            // Our postmaster exited (and was reaped): the fence forgets it.
            data.lp.fence = None;
        }
        let pg = data.pg.local_pg(name);
        let obs = Observation {
            me: &me,
            cluster: &cluster,
            lease: &lease,
            pg: &pg,
            wall_now_ms: wall,
            watchdog_blocks: false,
            primary_down_ms: None,
        };
        let decision = decide(&obs);
        data.lp.wake_key = Some(wake_key(&cluster));
        data.lp.status = Some(status_of(&pg, probe_of(&pg).as_ref(), wall));
        let changed = data.lp.last_decision.as_ref() != Some(&decision);
        data.lp.last_decision = Some(decision.clone());
        let text = format!("ha: {decision}");
        self.trace.bytes(text.as_bytes());
        if changed || decision.action != Action::None {
            node_mut(self, id).note(v, text);
        }
        let r = self.act(id, &decision.action, &cluster, &pg);
        self.go_on(id, r);
        self.pump(id);
    }

    /// After a step of an action: wait for what it started, or end the iteration.
    fn go_on(&mut self, id: u64, r: Result<Option<Wait>, String>) {
        match r {
            Ok(Some(wait)) => {
                let outcome = matches!(wait, Wait::Outcome { .. });
                data_mut(self, id).lp.wait = Some(wait);
                if outcome {
                    self.propose_waited(id);
                }
            }
            Ok(None) => self.end_iteration(id, Ok(())),
            Err(e) => self.end_iteration(id, Err(e)),
        }
    }

    /// A wait for `command`'s outcome, with the member's `retry_timeout`.
    pub(crate) fn wait_for(&self, id: u64, req: Req, then: Then) -> Wait {
        let node = &self.nodes[&id];
        let local = node.clock.local_us(self.now);
        let retry = node
            .core
            .as_ref()
            .and_then(|c| c.state())
            .map_or(3_000_000, |s| s.config.retry_timeout().as_micros() as u64);
        Wait::Outcome {
            req,
            proposal: None,
            deadline: local + retry,
            retry_at: local,
            backoff: FIRST_BACKOFF_US,
            then,
        }
    }

    /// Proposes the awaited request now (again, after no leader was known).
    pub(crate) fn propose_waited(&mut self, id: u64) {
        let v = self.now;
        let node = node_mut(self, id);
        let now = node.local_now(v);
        let local = node.clock.local_us(v);
        let core = node.core.as_mut().expect("a running member has a core");
        let Some(Wait::Outcome { req, proposal, retry_at, backoff, then, .. }) =
            &mut node.data.as_mut().expect("data").lp.wait
        else {
            return;
        };
        let r = match req.clone() {
            Req::Acquire { expected, ttl, lsn } => core.propose_acquire_at(expected, ttl, now, lsn),
            Req::Renew { epoch, ttl, lsn } => core.propose_renew_at(epoch, ttl, now, lsn),
            Req::Release { epoch, checkpoint } => core.propose_release(epoch, checkpoint),
            Req::Command(c) => core.propose(c),
        };
        match r {
            Ok(p) => *proposal = Some(p),
            Err(ProposeError::NoLeader) => {
                *retry_at = local + *backoff;
                *backoff = (*backoff * 2).min(500_000);
            }
            Err(e) => {
                let then = *then;
                node.data.as_mut().expect("data").lp.wait = None;
                self.after_outcome(id, then, Err(e.to_string()));
            }
        }
    }

    /// The awaited proposal was applied on this member (called by the Ready loop).
    pub(crate) fn resolved(&mut self, id: u64, outcome: Outcome) {
        let Some(Wait::Outcome { then, .. }) = data_mut(self, id).lp.wait.take() else { return };
        self.after_outcome(id, then, Ok(outcome));
    }

    fn after_outcome(&mut self, id: u64, then: Then, r: Result<Outcome, String>) {
        let r = match (then, r) {
            (Then::Exit, r) => {
                let what = format!("shutdown: release {r:?}; exiting");
                self.note(id, what);
                self.crash(id);
                return;
            }
            (Then::ExtendFence | Then::MaintainSync, Ok(Outcome::Rejected { reason })) => {
                Err(format!("lease request rejected: {reason}"))
            }
            (Then::ExtendFence, Ok(_)) => {
                self.extend_fence(id);
                Ok(())
            }
            (Then::MaintainSync, Ok(_)) => {
                self.extend_fence(id);
                let r = self.maintain_sync(id);
                return self.go_on(id, r);
            }
            (Then::SyncStep, Ok(Outcome::Rejected { reason })) => {
                data_mut(self, id).lp.sync_steps.clear();
                Err(format!("the synchronous standbys were not published: {reason}"))
            }
            (Then::SyncStep, Ok(_)) => {
                let r = self.run_sync_steps(id);
                return self.go_on(id, r);
            }
            (Then::Nothing, Ok(Outcome::Rejected { reason })) => Err(format!("rejected: {reason}")),
            (_, r) => r.map(drop),
        };
        self.end_iteration(id, r);
    }

    /// `HaLoop::maintain_sync` on a primary that just renewed: plan with the real
    /// `ha::sync::plan` from the standbys streaming from it, then carry the steps out.
    fn maintain_sync(&mut self, id: u64) -> Result<Option<Wait>, String> {
        let Some(c) = self.nodes[&id].core.as_ref().and_then(|core| core.state()).cloned() else {
            return Ok(None);
        };
        let data = &self.nodes[&id].data.as_ref().expect("data").pg;
        if !data.writable() {
            return Ok(None);
        }
        let names = data.sync_names.clone();
        let my_end = Lsn(data.end().unwrap_or(0));
        let standbys: Vec<Standby> = self
            .nodes
            .values()
            .filter(|n| n.id != id)
            .filter_map(|n| {
                let d = n.data.as_ref()?;
                let Process::Running { primary: false, upstream: Some(u), streaming, .. } = d.pg.process
                else {
                    return None;
                };
                let m = c.members.get(&n.name)?;
                (u == id).then(|| Standby {
                    name: n.name.clone(),
                    streaming,
                    sync: streaming && names.names().is_some_and(|s| s.contains(&n.name)),
                    flush: d.pg.end().map(Lsn),
                    allowed: !m.witness && !m.removing && !m.tags.nosync && !m.tags.nofailover,
                })
            })
            .collect();
        let lp = &mut data_mut(self, id).lp;
        if let Some(named) = names.names() {
            let all_sync = named.iter().all(|n| standbys.iter().any(|s| &s.name == n && s.sync));
            if all_sync && lp.sync_named_at.is_none() {
                lp.sync_named_at = Some(my_end);
            }
        }
        let steps = sync::plan(&sync::Inputs {
            mode: c.config.synchronous_mode,
            strict: c.config.synchronous_mode_strict,
            count: c.config.synchronous_node_count as usize,
            published: &c.sync,
            postgres: &names,
            named_at: lp.sync_named_at,
            standbys: &standbys,
            primary_lsn: my_end,
        });
        lp.sync_steps = steps;
        self.run_sync_steps(id)
    }

    /// The next planned synchronous step: Postgres's setting at once (a reload), a
    /// publication through Raft (the loop waits for it).
    fn run_sync_steps(&mut self, id: u64) -> Result<Option<Wait>, String> {
        let me = name(id);
        loop {
            let data = data_mut(self, id);
            if data.lp.sync_steps.is_empty() {
                return Ok(None);
            }
            match data.lp.sync_steps.remove(0) {
                SyncStep::SetPostgres(names) => {
                    if !data.pg.writable() {
                        data.lp.sync_steps.clear();
                        return Err("cannot reload Postgres: not running as primary".into());
                    }
                    if names != data.pg.sync_names {
                        data.lp.sync_named_at = None;
                    }
                    let text = format!("sync: synchronous_standby_names = {:?}", names.render());
                    data.pg.sync_names = names;
                    self.note(id, text);
                }
                SyncStep::Publish(sync) => {
                    let state = self.nodes[&id].core.as_ref().and_then(|core| core.state());
                    let Some(epoch) =
                        state.and_then(|s| s.lease.as_ref()).filter(|l| l.holder == me).map(|l| l.epoch)
                    else {
                        data_mut(self, id).lp.sync_steps.clear();
                        return Ok(None);
                    };
                    self.note(id, format!("sync: publishing {sync:?}"));
                    let command = Command::SetSync { holder: me.clone(), epoch, sync };
                    return Ok(Some(self.wait_for(id, Req::Command(command), Then::SyncStep)));
                }
            }
        }
    }

    /// The end of an iteration: report the status, schedule the next one.
    fn end_iteration(&mut self, id: u64, r: Result<(), String>) {
        let v = self.now;
        if let Err(e) = r {
            self.note(id, format!("ha: failed: {e}"));
        }
        let node = node_mut(self, id);
        let local = node.clock.local_us(v);
        let core = node.core.as_mut().expect("a running member has a core");
        let Some(state) = core.state() else { return };
        let (loop_wait, key) = (state.config.loop_wait().as_micros() as u64, wake_key(state));
        let data = node.data.as_mut().expect("data");
        if let Some(status) = data.lp.status.take() {
            let same = data.lp.last_report.as_ref().is_some_and(|(last, at)| {
                MemberStatus { updated_at_ms: status.updated_at_ms, ..last.clone() } == status
                    && local.saturating_sub(*at) < REPORT_EVERY_US
            });
            if !same {
                let command = Command::ReportStatus { member: node.name.clone(), status: status.clone() };
                if core.propose(command).is_ok() {
                    data.lp.last_report = Some((status, local));
                }
            }
        }
        data.lp.ended_at = local;
        node.next_ha_local =
            if data.lp.wake_key != Some(key) { local + MIN_PAUSE_US } else { local + loop_wait };
    }

    /// After the member's Ready: an applied change that `run.rs` wakes on brings the next
    /// iteration forward.
    pub(crate) fn maybe_wake(&mut self, id: u64) {
        let v = self.now;
        let node = node_mut(self, id);
        let local = node.clock.local_us(v);
        let Some(state) = node.core.as_ref().and_then(|c| c.state()) else { return };
        let key = wake_key(state);
        let Some(data) = node.data.as_ref() else { return };
        if data.lp.wait.is_none() && data.lp.wake_key.is_some_and(|k| k != key) {
            let at = local.max(data.lp.ended_at + MIN_PAUSE_US);
            node.next_ha_local = node.next_ha_local.min(at);
        }
    }
}
