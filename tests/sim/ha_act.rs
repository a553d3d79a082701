//! Act: how a data member carries out the one action `decide` chose, as `ha::act` does it,
//! against the simulated Postgres (`postgres.rs`) and the member's `RaftCore`:
//!
//! - `Promote` only with the lease in the observed state: `pg_promote()`, then (a `Handle`
//!   round trip later) the fence, then `RecordPromotion` with the observed timeline and LSN;
//!   `StartPrimary` spawns the postmaster, then arms the fence; `StartReplica` and `Stop`
//!   disarm it; a release is refused while Postgres runs;
//! - initdb, pg_basebackup, pg_rewind and `postgres --single` are jobs that take a while, during
//!   which the loop is busy; a clone needs an empty data directory, as `PgTools::clone_from`;
//! - a graceful shutdown (`HaLoop::shut_down`) stops Postgres fast and releases a held lease
//!   with the shutdown checkpoint before the process exits.
//!
//! The known bugs this mode found are steered around here unless `SIM_EXPOSE_KNOWN_BUGS=1`
//! (see `pg_bugs.rs`).

use crate::ha_loop::{data_mut, id_of, node_mut, LoopState, Req, Then, Wait};
use crate::postgres::{Control, DataDir, Process};
use crate::sim::{name, Sim};
use pgha::dcs::state::{ClusterState, Command, HistoryEntry};
use pgha::ha::decide::{Action, StopMode};
use pgha::ha::observe::LocalPg;
use pgha::ha::sync::SyncNames;
use pgha::types::Lsn;

#[derive(Clone, Debug)]
pub enum Job {
    Bootstrap,
    Clone {
        from: u64,
    },
    Rewind {
        from: u64,
    },
    CrashRecover,
    /// The rest of `Promote` after `pg_promote()` returned: the fence, then the record.
    AfterPromote {
        command: Command,
    },
    /// The rest of `StartPrimary` after the postmaster was spawned: the fence.
    AfterStart,
}

/// How long `act` takes between the Postgres half of a promotion or start and the fence (a
/// `Handle::lease` round trip): a pause can land in between.
const ACT_GAP_US: u64 = 1_000;

impl Sim {
    /// Carries out one action like `HaLoop::act`; `Some(wait)` while it is not done.
    pub(crate) fn act(
        &mut self,
        id: u64,
        action: &Action,
        c: &ClusterState,
        pg: &LocalPg,
    ) -> Result<Option<Wait>, String> {
        let v = self.now;
        let me = name(id);
        let ttl = c.config.ttl();
        let local = self.nodes[&id].clock.local_us(v);
        let wait = |sim: &Sim, req, then| Some(sim.wait_for(id, req, then));
        let job = |sim: &mut Sim, job: Job, lo_ms: u64, hi_ms: u64| {
            let d = sim.rng.range(lo_ms, hi_ms) * 1000;
            Some(Wait::Job { until: local + d, job })
        };
        let w = match action {
            Action::None => None,
            Action::ClaimInitialize => {
                wait(self, Req::Command(Command::ClaimInitialize { member: me }), Then::Nothing)
            }
            Action::Bootstrap => job(self, Job::Bootstrap, 500, 3000),
            Action::CompleteInitialize => {
                let LocalPg::Running { system_identifier, .. } = pg else {
                    return Err("cannot connect to Postgres".into());
                };
                let command = Command::CompleteInitialize {
                    member: me,
                    system_identifier: system_identifier.clone(),
                    secrets: Default::default(),
                };
                wait(self, Req::Command(command), Then::Nothing)
            }
            Action::AcquireLease { expected_epoch } => {
                wait(self, Req::Acquire { expected: *expected_epoch, ttl, lsn: pg.lsn() }, Then::ExtendFence)
            }
            Action::RenewLease { epoch } => {
                // run.rs: a running primary maintains synchronous replication after its renewal.
                let then = if pg.is_running_primary() { Then::MaintainSync } else { Then::ExtendFence };
                wait(self, Req::Renew { epoch: *epoch, ttl, lsn: pg.lsn() }, then)
            }
            Action::RecordFinalLsn { epoch } => {
                let data = data_mut(self, id);
                let end = data.pg.end();
                let lsn = match &mut data.pg.process {
                    // local::stop_receiving: an empty primary_conninfo stops the WAL receiver.
                    Process::Running { primary: false, upstream, streaming, .. } => {
                        *upstream = None;
                        *streaming = false;
                        end
                    }
                    Process::Running { primary: true, .. } => {
                        return Err("Postgres is no longer a standby".into())
                    }
                    _ => pg.lsn().map(|l| l.0),
                };
                let Some(lsn) = lsn else { return Err("no WAL position to record".into()) };
                let command = Command::RecordFinalLsn { member: me, epoch: *epoch, lsn: Lsn(lsn) };
                wait(self, Req::Command(command), Then::Nothing)
            }
            Action::Promote => {
                let Some(lease) = c.lease.as_ref().filter(|l| l.holder == me) else {
                    return Err("not promoting: the lease is not mine".into());
                };
                let (Some(timeline), Some(switch_lsn)) = (pg.timeline(), pg.lsn()) else {
                    return Err("not promoting: Postgres is not running".into());
                };
                if !matches!(data_mut(self, id).pg.process, Process::Running { primary: false, .. }) {
                    return Err("pg_promote: recovery is not in progress".into());
                }
                // act::promote arms the fence before pg_promote().
                let fence = self.cfg.pg.as_ref().is_some_and(|p| p.fence);
                let now_local = self.nodes[&id].local_now(v);
                let deadline =
                    self.nodes[&id].core.as_ref().and_then(|core| core.lease_view(now_local).deadline);
                match deadline {
                    Some(d) if fence => {
                        data_mut(self, id).lp.fence = Some(d.as_duration().as_micros() as u64)
                    }
                    Some(_) => {}
                    None => return Err("not promoting: the lease deadline passed".into()),
                }
                // act::promote: what the new primary waits for, before pg_promote().
                data_mut(self, id).pg.sync_names = SyncNames::for_new_primary(c, &me);
                self.becomes_primary(id, lease.epoch);
                let origin = self.new_origin();
                data_mut(self, id).pg.promote(origin)?;
                let entry = HistoryEntry {
                    timeline,
                    switch_lsn,
                    reason: if c.switchover.is_some() { "switchover" } else { "failover" }.into(),
                    at_ms: self.nodes[&id].clock.wall_ms(v),
                    new_primary: me.clone(),
                };
                let command = Command::RecordPromotion { member: me, epoch: lease.epoch, entry };
                Some(Wait::Job { until: local + ACT_GAP_US, job: Job::AfterPromote { command } })
            }
            Action::StartPrimary => {
                data_mut(self, id).pg.sync_names = SyncNames::for_new_primary(c, &me);
                let expose = self.cfg.pg.as_ref().is_some_and(|p| p.expose_known_bugs);
                let initialized = c.initialize.as_ref().is_some_and(|i| i.system_identifier.is_some());
                if matches!(pg, LocalPg::Stopped { was_primary: false, .. }) && initialized && !expose {
                    // pg_bugs::a_standby_directory_started_as_primary_forks_its_timeline: steer
                    // around it as a fixed pgha would (Patroni too): start as a standby, and
                    // the next iteration promotes it onto a new timeline.
                    self.note(id, "steering around a known bug: starting as a standby to promote it".into());
                    self.world.as_mut().expect("HA-loop mode").stats.steered_starts += 1;
                    self.start_postgres(id, false, None)?;
                    return Ok(None);
                }
                self.start_postgres(id, true, None)?;
                let epoch = c.lease.as_ref().filter(|l| l.holder == me).map(|l| l.epoch);
                if let Some(epoch) = epoch {
                    self.becomes_primary(id, epoch);
                }
                Some(Wait::Job { until: local + ACT_GAP_US, job: Job::AfterStart })
            }
            Action::StartStandby => {
                data_mut(self, id).lp.fence = None;
                self.start_postgres(id, false, None)?;
                None
            }
            Action::StartReplica { upstream } => {
                data_mut(self, id).lp.fence = None;
                self.start_postgres(id, false, Some(id_of(upstream)))?;
                None
            }
            Action::Follow { upstream } => {
                let up = id_of(upstream);
                match &mut data_mut(self, id).pg.process {
                    Process::Running { upstream, streaming, .. } => {
                        *upstream = Some(up);
                        *streaming = false;
                    }
                    _ => return Err("cannot connect to Postgres to reload it".into()),
                }
                None
            }
            Action::Clone { from } => {
                // act::clone_from re-clones over a stopped directory (PgTools::reclone).
                if data_mut(self, id).pg.is_up() {
                    return Err("cannot clone while Postgres runs".into());
                }
                if data_mut(self, id).pg.dir.is_some() {
                    self.confirm_current(id)?;
                }
                job(self, Job::Clone { from: id_of(from) }, 1000, 4000)
            }
            Action::Rewind { from } => {
                self.confirm_current(id)?;
                job(self, Job::Rewind { from: id_of(from) }, 300, 2000)
            }
            Action::CrashRecover => {
                let data = data_mut(self, id);
                if data.pg.dir.as_ref().is_some_and(|d| d.standby_signal) {
                    return Err("not recovering a data directory with standby.signal".into());
                }
                // The single-user server writes "in crash recovery" before it replays: a kill
                // meanwhile leaves that.
                if let Some(dir) = data_mut(self, id).pg.dir.as_mut() {
                    dir.control = Control::InCrashRecovery;
                }
                job(self, Job::CrashRecover, 300, 2000)
            }
            Action::Stop { mode } => {
                match mode {
                    StopMode::Fast => self.stop_postgres_fast(id),
                    StopMode::Immediate => data_mut(self, id).pg.kill(),
                }
                data_mut(self, id).lp.fence = None;
                None
            }
            Action::ReleaseLease { epoch, checkpoint } => {
                if data_mut(self, id).pg.is_up() {
                    return Err("not releasing the lease while our postmaster runs".into());
                }
                node_mut(self, id).ha.fenced = Some(*epoch);
                wait(self, Req::Release { epoch: *epoch, checkpoint: *checkpoint }, Then::Nothing)
            }
        };
        Ok(w)
    }

    /// `act::confirm_current` before discarding WAL: a ReadIndex through a reachable leader,
    /// which holds until everything it had committed is applied here. The iteration observed
    /// its state in this same step, so the state is current iff it applied that much.
    fn confirm_current(&self, id: u64) -> Result<(), String> {
        let reachable = |l: u64| l == id || (!self.net.blocked(id, l) && !self.net.blocked(l, id));
        let Some(leader) = self.leader().filter(|l| reachable(*l)) else {
            return Err("cannot confirm the state is current before discarding WAL: no leader".into());
        };
        let commit = self.nodes[&leader].core.as_ref().map_or(0, |c| c.status().commit_index);
        let applied = self.nodes[&id].core.as_ref().map_or(0, |c| c.applied());
        if applied < commit {
            return Err(format!("the state was not current (applied {applied}, committed {commit}): deciding again before discarding WAL"));
        }
        Ok(())
    }

    pub(crate) fn start_postgres(
        &mut self,
        id: u64,
        primary: bool,
        upstream: Option<u64>,
    ) -> Result<(), String> {
        let v = self.now;
        let data = data_mut(self, id);
        if data.pg.is_up() {
            return Err("a postmaster of ours is already running".into());
        }
        let Some(dir) = &data.pg.dir else { return Err("no data directory".into()) };
        // Crash recovery makes an unclean start slower.
        let clean = matches!(dir.control, Control::ShutDown | Control::ShutDownInRecovery);
        let ms = if clean { self.rng.range(200, 1500) } else { self.rng.range(500, 4000) };
        data_mut(self, id).pg.start(primary, upstream, v + ms * 1000, true);
        Ok(())
    }

    /// `extend_fence`: a Postgres (to be) primary may live until the lease deadline.
    pub(crate) fn extend_fence(&mut self, id: u64) {
        let v = self.now;
        let fence = self.cfg.pg.as_ref().is_some_and(|p| p.fence);
        let node = node_mut(self, id);
        let now = node.local_now(v);
        let deadline = node.core.as_ref().and_then(|c| c.lease_view(now).deadline);
        let data = node.data.as_mut().expect("data");
        if let (true, Some(d), true) = (data.pg.runs_as_primary(), deadline, fence) {
            data.lp.fence = Some(d.as_duration().as_micros() as u64);
        }
    }

    pub(crate) fn finish_job(&mut self, id: u64, job: Job) -> Result<Option<Wait>, String> {
        let reachable = |sim: &Sim, from: u64| {
            let src = sim.nodes[&from].data.as_ref().expect("data");
            let running = matches!(src.pg.process, Process::Running { .. });
            (running && !sim.net.blocked(from, id) && !sim.net.blocked(id, from))
                .then(|| src.pg.dir.clone())
                .flatten()
        };
        match job {
            Job::Bootstrap => {
                let sysid = 7_000_000_000_000_000_000 + self.cfg.seed * 1000 + self.new_origin();
                let origin = self.new_origin();
                data_mut(self, id).pg.dir = Some(DataDir::initdb(sysid, origin));
                Ok(None)
            }
            Job::Clone { from } => {
                let Some(src) = reachable(self, from) else {
                    return Err(format!("pg_basebackup: could not connect to n{from}"));
                };
                data_mut(self, id).pg.dir = Some(DataDir::clone_of(&src));
                self.note(id, format!("cloned from n{from} up to {:X}", src.wal.end()));
                Ok(None)
            }
            Job::Rewind { from } => {
                let Some(src) = reachable(self, from) else {
                    return Err(format!("pg_rewind: could not connect to n{from}"));
                };
                let data = data_mut(self, id);
                if data.pg.is_up() {
                    return Err("pg_rewind: target server must be shut down".into());
                }
                // pg_rewind (Postgres 13+) runs crash recovery itself on an unclean target.
                data.pg.crash_recover();
                let what = data.pg.rewind_from(&src)?;
                self.note(id, format!("pg_rewind from n{from}: {what}"));
                Ok(None)
            }
            Job::CrashRecover => {
                let data = data_mut(self, id);
                if data.pg.is_up() {
                    return Err("postgres --single: the data directory is in use".into());
                }
                data.pg.crash_recover();
                Ok(None)
            }
            Job::AfterPromote { command } => {
                self.extend_fence(id);
                Ok(Some(self.wait_for(id, Req::Command(command), Then::Nothing)))
            }
            Job::AfterStart => {
                self.extend_fence(id);
                Ok(None)
            }
        }
    }

    /// pgha's graceful shutdown (`systemctl stop`): stop Postgres fast, release a held lease
    /// with the shutdown checkpoint, exit.
    pub fn shut_down(&mut self, id: u64) {
        let node = node_mut(self, id);
        if !node.running() || node.data.is_none() {
            return;
        }
        let me = node.name.clone();
        let state = node.core.as_ref().and_then(|c| c.state());
        let epoch = state.and_then(|s| s.lease.clone()).filter(|l| l.holder == me);
        let was_primary = node.data.as_ref().expect("data").pg.runs_as_primary();
        self.stop_postgres_fast(id);
        data_mut(self, id).lp = LoopState::shutting_down();
        self.note(id, "fault: pgha shuts down (stops Postgres fast)".into());
        let Some(lease) = epoch else {
            self.crash(id);
            return;
        };
        // local::checkpoint: only a clean stop's shutdown checkpoint (a postmaster stopped while
        // starting leaves the old one, short of the end of its WAL).
        let clean = |d: &&DataDir| d.control == Control::ShutDown;
        let checkpoint = if was_primary {
            data_mut(self, id).pg.dir.as_ref().filter(clean).map(|d| Lsn(d.checkpoint))
        } else {
            None
        };
        node_mut(self, id).ha.fenced = Some(lease.epoch);
        let release = Req::Release { epoch: lease.epoch, checkpoint };
        data_mut(self, id).lp.wait = Some(self.wait_for(id, release, Then::Exit));
        self.propose_waited(id);
        self.pump(id);
    }
}
