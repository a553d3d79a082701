//! The HA loop (STYLE.md principle 2): each iteration gathers one [`Observation`] (the applied
//! cluster state, the lease as this node sees it, the local Postgres), calls [`decide`] once,
//! carries out the one action (`act`), reports the member's status, and waits `loop_wait` or
//! until the applied state changes in a way that matters (not merely another renewal or status
//! report, which would make every renewal trigger the next one). Input: a [`Handle`], the
//! local Postgres, a [`Fence`], a shutdown signal; output: Raft proposals, Postgres actions, and
//! a `watch` of the last decision for the API. Trouble with Postgres or Raft is logged and seen
//! by the next observation; the loop only ends on shutdown, when it stops Postgres (a primary
//! fast, then releasing its lease with the shutdown checkpoint).

use super::callbacks::{CallbackEvent, CallbackRunner};
use super::control::{self, HaControl, LoopSide, NodeView};
use super::decide::{decide, Action, Decision};
use super::local::LocalPostgres;
use super::manual::RestartInProgress;
use super::observe::{LocalPg, Observation, PgRole};
use super::sync::{self, SyncNames, SyncStep};
use crate::clock;
use crate::dcs::handle::Handle;
use crate::dcs::state::{ClusterState, Command, MemberStatus, SyncState, Tags};
use crate::fence::Fence;
use crate::pg::probe::PgProbe;
use crate::pg::process::StopMode;
use crate::types::{LeaseEpoch, MemberName};
use crate::watchdog::Watchdog;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A status report is repeated at least this often even when nothing changed, so that
/// eligibility (which ignores reports older than `STATUS_FRESH_MS`) keeps seeing it.
const REPORT_EVERY: Duration = Duration::from_secs(3);
/// Bound of a status report's proposal.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest pause between iterations woken by state changes (bounds a busy loop).
const MIN_PAUSE: Duration = Duration::from_millis(50);
/// The primary moves Raft leadership away at most this often.
const LEADER_MOVE_EVERY: Duration = Duration::from_secs(10);
/// Bound of the clean stop at shutdown.
const SHUTDOWN_STOP: Duration = Duration::from_secs(60);

/// The status a member reports for its Postgres, from this iteration's observation.
pub fn status_of(pg: &LocalPg, probe: Option<&PgProbe>, now_ms: u64) -> MemberStatus {
    let (state, role) = match pg {
        LocalPg::Absent | LocalPg::Stopped { .. } => ("stopped", "replica"),
        LocalPg::Starting | LocalPg::Recovering { .. } => ("starting", "replica"),
        LocalPg::Running { role: PgRole::Primary, .. } => ("running", "primary"),
        LocalPg::Running { role: PgRole::Replica, streaming: true, .. } => ("streaming", "replica"),
        LocalPg::Running { role: PgRole::Replica, .. } => ("running", "replica"),
    };
    MemberStatus {
        state: state.into(),
        role: role.into(),
        timeline: pg.timeline(),
        receive_lsn: probe.and_then(|p| p.receive_lsn),
        replay_lsn: probe.and_then(|p| p.replay_lsn),
        wal_lsn: probe.and_then(|p| p.wal_lsn),
        pending_restart: probe.is_some_and(PgProbe::needs_restart),
        updated_at_ms: now_ms,
    }
}

/// The parts of the state whose change should wake the loop at once. Renewals, expiry timers'
/// renewal ids and status reports are left out: the loop sees them at its next `loop_wait`.
#[derive(PartialEq)]
struct WakeKey {
    initialized: Option<(MemberName, Option<String>)>,
    lease: Option<(MemberName, LeaseEpoch)>,
    last_epoch: LeaseEpoch,
    members: BTreeMap<MemberName, (Option<String>, Tags, bool)>,
    config_version: u64,
    switchover: bool,
    history: usize,
    /// Published synchronous standbys and, after an expiry, the quorum's final records.
    sync: SyncState,
}

impl WakeKey {
    fn of(s: Option<&ClusterState>) -> Option<WakeKey> {
        let s = s?;
        Some(WakeKey {
            initialized: s.initialize.as_ref().map(|i| (i.bootstrapper.clone(), i.system_identifier.clone())),
            lease: s.lease.as_ref().map(|l| (l.holder.clone(), l.epoch)),
            last_epoch: s.last_epoch,
            members: s
                .members
                .values()
                .map(|m| (m.name.clone(), (m.pg_address.clone(), m.tags.clone(), m.witness)))
                .collect(),
            config_version: s.config_version,
            switchover: s.switchover.is_some(),
            history: s.history.len(),
            sync: s.sync.clone(),
        })
    }
}

/// What the HA loop takes from the local config besides Postgres.
pub struct HaOptions {
    /// `bootstrap.post_bootstrap`.
    pub post_bootstrap: Option<PathBuf>,
    pub watchdog: Watchdog,
    pub callbacks: CallbackRunner,
    pub safety_margin_s: u64,
}

/// The HA loop of one data member. Build with [`HaLoop::new`], run with [`HaLoop::run`].
pub struct HaLoop {
    pub(super) me: MemberName,
    pub(super) handle: Handle,
    pub(super) local: LocalPostgres,
    pub(super) fence: Arc<dyn Fence>,
    /// Whether the fence was told a pid to kill (and not disarmed since).
    pub(super) fence_armed: bool,
    pub(super) post_bootstrap: Option<PathBuf>,
    /// Armed while this node is (becoming) primary, kept alive with each accepted renewal.
    pub(super) watchdog: Watchdog,
    pub(super) callbacks: CallbackRunner,
    /// This node's `watchdog.safety_margin`, seconds (the watchdog timeout derives from it).
    pub(super) safety_margin_s: u64,
    control: LoopSide,
    /// The last published view, for progress updates between iterations.
    last_view: Option<Arc<NodeView>>,
    pub(super) restart_in_progress: Option<RestartInProgress>,
    pub(super) reinitializing: bool,
    /// `watchdog.mode: required` refused the last attempt to become primary.
    pub(super) watchdog_failed: bool,
    /// A promotion whose history record the state has not answered yet (epoch, entry).
    pub(super) unrecorded_promotion: Option<(LeaseEpoch, crate::dcs::state::HistoryEntry)>,
    /// When this primary last handed Raft leadership away.
    last_leader_move: Option<clock::BootInstant>,
    last_report: Option<(MemberStatus, clock::BootInstant)>,
    /// The slot names last ensured on our primary (re-done when the wanted set changes).
    slots: Option<Vec<String>>,
    /// What our Postgres waits for before acknowledging a commit, as last written.
    pub(super) sync_names: SyncNames,
    /// The primary's WAL position when the standbys named in `sync_names` were first seen
    /// synchronous; they are published once they flushed up to it.
    pub(super) sync_named_at: Option<crate::types::Lsn>,
    /// Since when this member has held a valid lease without its Postgres running as primary.
    primary_down_since: Option<clock::BootInstant>,
}

impl HaLoop {
    /// Returns the loop and the API's handle on it.
    pub fn new(
        me: MemberName,
        handle: Handle,
        local: LocalPostgres,
        fence: Arc<dyn Fence>,
        options: HaOptions,
    ) -> (HaLoop, HaControl) {
        let HaOptions { post_bootstrap, watchdog, callbacks, safety_margin_s } = options;
        let (api_side, loop_side) = control::channels();
        let ha = HaLoop {
            me,
            handle,
            local,
            fence,
            fence_armed: false,
            post_bootstrap,
            watchdog,
            callbacks,
            safety_margin_s,
            control: loop_side,
            last_view: None,
            restart_in_progress: None,
            reinitializing: false,
            watchdog_failed: false,
            last_leader_move: None,
            unrecorded_promotion: None,
            last_report: None,
            slots: None,
            sync_names: SyncNames::Async,
            sync_named_at: None,
            primary_down_since: None,
        };
        (ha, api_side)
    }

    /// Runs until `shutdown` turns true (or its sender is dropped), then stops Postgres.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut states = self.handle.watch_state();
        let mut last_decision: Option<Decision> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Gather.
            let Some(cluster) = self.handle.state() else {
                tokio::select! {
                    _ = states.changed() => {}
                    _ = shutdown.changed() => {}
                    _ = clock::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let lease = match self.handle.lease().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the lease; the consensus store stopped?");
                    break;
                }
            };
            let (pg, probe) = self.local.observe(&cluster).await;
            if self.fence_armed && self.local.pid().is_none() {
                // Our postmaster exited by itself (and was reaped): its pid may be reused, so
                // the fence must forget it at once.
                self.disarm_fence();
            }
            let now_ms = clock::wall_now_ms();
            // The state naming me holder is what counts: a holder failing to start its
            // Postgres also lets its own deadline lapse between renewals.
            let holding = cluster.lease.as_ref().is_some_and(|l| l.holder == self.me);
            let now = clock::boot_now();
            self.primary_down_since = match self.primary_down_since {
                _ if !holding || pg.is_running_primary() => None,
                Some(since) => Some(since),
                None => Some(now),
            };
            let obs = Observation {
                me: &self.me,
                cluster: &cluster,
                lease: &lease,
                pg: &pg,
                wall_now_ms: now_ms,
                watchdog_blocks: self.watchdog_blocks(),
                primary_down_ms: self.primary_down_since.map(|t| now.saturating_since(t).as_millis() as u64),
            };
            // Decide.
            let decision = decide(&obs);
            if last_decision.as_ref() != Some(&decision) {
                tracing::info!(member = %self.me, "{decision}");
            } else if decision.action != Action::None {
                tracing::debug!(member = %self.me, "{decision}");
            }
            // Act.
            let acted = self.act(&decision.action, &cluster, &pg).await;
            // A step of a transition (stop, release, acquire, promote, start...) that worked is
            // followed by the next decision at once, not a loop_wait later: a switchover is
            // several such steps in a row. Failures and steady states wait.
            let next_at_once =
                acted.is_ok() && !matches!(decision.action, Action::None | Action::RenewLease { .. });
            match acted {
                Err(e) => tracing::warn!(member = %self.me, action = ?decision.action, "failed: {e}"),
                Ok(()) if matches!(decision.action, Action::RenewLease { .. }) && pg.is_running_primary() => {
                    if let Some(p) = probe.as_ref() {
                        self.maintain_sync(&cluster, p).await;
                    }
                    self.keep_raft_leader_elsewhere().await
                }
                Ok(()) => {}
            }
            if matches!(decision.action, Action::None | Action::RenewLease { .. }) {
                if !pg.is_running_primary() {
                    // A standby keeps what it would wait for as a new primary in its files,
                    // loaded long before a promotion needs it.
                    self.set_sync_names(SyncNames::for_new_primary(&cluster, &self.me));
                }
                // A changed replicated config reaches the running server (after the action:
                // a promotion or a new upstream rewrites the files itself).
                match self.local.refresh_config(&cluster, false).await {
                    Ok(true) => {
                        tracing::info!(member = %self.me, "applied a configuration change (reloaded)")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(member = %self.me, "cannot apply the configuration: {e}"),
                }
            }
            if self.unrecorded_promotion.is_some() && decision.action != Action::Promote {
                self.record_promotion().await;
            }
            self.check_restart(matches!(pg, LocalPg::Running { .. }));
            if matches!(decision.action, Action::None | Action::RenewLease { .. }) {
                self.run_scheduled_restart(&cluster, now_ms).await;
            }
            self.report(&cluster, &pg, probe.as_ref(), now_ms).await;
            self.keep_slots(&cluster, &pg).await;
            self.publish(NodeView {
                pg,
                probe,
                decision: decision.clone(),
                at: clock::boot_now(),
                wall_ms: now_ms,
                restarting: self.restart_in_progress.is_some(),
                reinitializing: false,
                watchdog_failed: self.watchdog_blocks(),
                watchdog_active: self.watchdog.is_active(),
            });
            last_decision = Some(decision);

            // Wait.
            let key = WakeKey::of(Some(&cluster));
            let wait = if next_at_once { Duration::ZERO } else { cluster.config.loop_wait() };
            let deadline = clock::boot_now() + wait;
            clock::sleep(MIN_PAUSE).await;
            loop {
                let left = deadline.saturating_since(clock::boot_now());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    changed = states.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        if WakeKey::of(states.borrow_and_update().as_deref()) != key {
                            break;
                        }
                    }
                    _ = shutdown.changed() => break,
                    _ = clock::sleep(left) => break,
                    request = self.control.requests.recv() => {
                        if let Some((request, reply)) = request {
                            self.handle_request(request, reply).await;
                        }
                        break;
                    }
                }
            }
        }
        if let Some(progress) = self.restart_in_progress.take() {
            let _ =
                progress.reply.send(Err(control::RequestError::Unavailable("pgha is shutting down".into())));
        }
        self.shut_down().await;
    }

    /// Remembers what Postgres should wait for; the next config write carries it.
    pub(super) fn set_sync_names(&mut self, names: SyncNames) {
        if names != self.sync_names {
            self.sync_named_at = None;
        }
        self.local.set_sync_names(names.render());
        self.sync_names = names;
    }

    /// On a primary that just renewed: moves the published synchronous standbys and
    /// Postgres's `synchronous_standby_names` one safe step at a time (see `sync`).
    async fn maintain_sync(&mut self, c: &ClusterState, probe: &PgProbe) {
        let Some(lease) = c.lease.as_ref().filter(|l| l.holder == self.me) else { return };
        let standbys = sync::standbys(c, &self.me, probe);
        if let Some(names) = self.sync_names.names() {
            let all_sync = names.iter().all(|n| standbys.iter().any(|s| &s.name == n && s.sync));
            if all_sync && self.sync_named_at.is_none() {
                // Everything acknowledged so far is at or below this position.
                self.sync_named_at = probe.wal_lsn;
            }
        }
        let steps = sync::plan(&sync::Inputs {
            mode: c.config.synchronous_mode,
            strict: c.config.synchronous_mode_strict,
            count: c.config.synchronous_node_count as usize,
            published: &c.sync,
            postgres: &self.sync_names,
            named_at: self.sync_named_at,
            standbys: &standbys,
            primary_lsn: probe.wal_lsn.unwrap_or(crate::types::Lsn(0)),
        });
        for step in steps {
            tracing::info!(member = %self.me, ?step, "synchronous replication");
            match step {
                SyncStep::Publish(sync) => {
                    let cmd = Command::SetSync { holder: self.me.clone(), epoch: lease.epoch, sync };
                    match self.handle.propose(cmd).await {
                        Ok(crate::dcs::state::Outcome::Rejected { reason }) => {
                            tracing::warn!(member = %self.me, %reason, "the synchronous standbys were not published");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(member = %self.me, "cannot publish the synchronous standbys: {e}");
                            return;
                        }
                        Ok(_) => {}
                    }
                }
                SyncStep::SetPostgres(names) => {
                    self.set_sync_names(names);
                    if let Err(e) = self.local.refresh_config(c, false).await {
                        tracing::warn!(member = %self.me, "cannot apply synchronous_standby_names: {e}");
                        return;
                    }
                }
            }
        }
    }

    /// On the primary, right after an accepted renewal: if this node also leads Raft, hand Raft
    /// leadership to a caught-up voter. A crash of the primary's machine then costs only the
    /// lease's ttl, not a Raft election first (a new Raft leader restarts every expiry timer
    /// with a full ttl). Only to a peer that has the whole log, so the transfer completes at
    /// once and renewals are not held up; at most once per `LEADER_MOVE_EVERY`.
    async fn keep_raft_leader_elsewhere(&mut self) {
        let now = clock::boot_now();
        if self.last_leader_move.is_some_and(|at| now.saturating_since(at) < LEADER_MOVE_EVERY) {
            return;
        }
        let Ok(status) = self.handle.status().await else { return };
        if status.role != crate::dcs::status::RaftRole::Leader {
            return;
        }
        let Some(to) = status
            .progress
            .iter()
            .find(|p| p.id != status.id && !p.learner && p.matched >= status.last_index)
        else {
            return;
        };
        self.last_leader_move = Some(now);
        match self.handle.transfer_leader(to.id).await {
            Ok(()) => tracing::info!(to = %to.id, "moved Raft leadership off the primary"),
            Err(e) => tracing::debug!(error = %e, "cannot move Raft leadership off the primary"),
        }
    }

    /// Required mode and a device that failed to arm, or that is plainly unusable.
    fn watchdog_blocks(&self) -> bool {
        self.watchdog.mode() == crate::config::file::WatchdogMode::Required
            && (self.watchdog_failed
                || !self.watchdog.is_healthy_for(crate::config::file::WatchdogMode::Required))
    }

    fn publish(&mut self, view: NodeView) {
        let view = Arc::new(view);
        self.last_view = Some(view.clone());
        self.control.view.send_replace(Some(view));
    }

    /// Republishes the last view with the current progress flags (a long manual action).
    pub(super) fn publish_progress(&mut self) {
        let Some(last) = self.last_view.as_deref() else { return };
        let view = NodeView {
            restarting: self.restart_in_progress.is_some(),
            reinitializing: self.reinitializing,
            ..last.clone()
        };
        self.publish(view);
    }

    /// Proposes `ReportStatus` when the status changed, or when the last report gets old.
    async fn report(&mut self, cluster: &ClusterState, pg: &LocalPg, probe: Option<&PgProbe>, now_ms: u64) {
        let status = status_of(pg, probe, now_ms);
        let now = clock::boot_now();
        let same = self.last_report.as_ref().is_some_and(|(last, at)| {
            MemberStatus { updated_at_ms: now_ms, ..last.clone() } == status
                && now.saturating_since(*at) < REPORT_EVERY
        });
        if same {
            return;
        }
        let command = Command::ReportStatus { member: self.me.clone(), status: status.clone() };
        // Best effort and short: a member without quorum must not spend its iteration here.
        let timeout = cluster.config.retry_timeout().min(REPORT_TIMEOUT);
        match self.handle.propose_timeout(command, timeout).await {
            Ok(_) => self.last_report = Some((status, now)),
            Err(e) => tracing::debug!(error = %e, "cannot report the member status"),
        }
    }

    /// On our primary with `use_slots`: one physical slot per other data member, and no
    /// other pgha slot (a removed member's slot would keep WAL forever).
    async fn keep_slots(&mut self, cluster: &ClusterState, pg: &LocalPg) {
        if !pg.is_running_primary() || !cluster.config.postgresql.use_slots {
            self.slots = None;
            return;
        }
        let wanted: Vec<String> = cluster
            .members
            .values()
            .filter(|m| m.name != self.me && !m.witness)
            .map(|m| crate::pg::slots::slot_name(&m.name))
            .collect();
        if self.slots.as_ref() == Some(&wanted) {
            return;
        }
        // Credentials from the newest state: this iteration's may predate the secrets that
        // CompleteInitialize just recorded.
        let latest = self.handle.state();
        let result = async {
            let session = self.local.session(Some(latest.as_deref().unwrap_or(cluster))).await?;
            session.ensure_physical_slots(&wanted).await?;
            session.drop_slots_except(&wanted).await
        }
        .await;
        match result {
            Ok(_) => self.slots = Some(wanted),
            Err(e) => tracing::warn!(error = %e, "cannot maintain the replication slots"),
        }
    }

    /// Shutdown: a primary stops fast and releases its lease with the shutdown checkpoint, so
    /// a replica takes over at once; a replica just stops fast.
    async fn shut_down(&mut self) {
        let was_primary = self.local.runs_as_primary();
        match self.local.stop(StopMode::Fast, SHUTDOWN_STOP).await {
            Ok(stopped) => {
                self.disarm_fence();
                if stopped.is_some() {
                    self.callbacks
                        .fire(CallbackEvent::OnStop, if was_primary { "primary" } else { "replica" });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot stop Postgres at shutdown");
                return;
            }
        }
        let Some(cluster) = self.handle.state() else { return };
        let Some(lease) = cluster.lease.as_ref().filter(|l| l.holder == self.me) else { return };
        let checkpoint = if was_primary { self.local.checkpoint().await } else { None };
        match self.handle.release_lease(lease.epoch, checkpoint, cluster.config.retry_timeout()).await {
            Ok(outcome) => tracing::info!(?outcome, epoch = %lease.epoch, "released the lease at shutdown"),
            Err(e) => tracing::warn!(error = %e, "cannot release the lease at shutdown"),
        }
    }
}
