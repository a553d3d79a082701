//! Act: carries out the one [`Action`] `decide` chose this iteration, with a deadline on every
//! step. Input: the action, the iteration's applied state and local Postgres; output: the
//! Postgres and Raft side effects, or an error text the loop logs (the next observation shows
//! what happened: this never retries by itself, never panics, never exits the loop). Safety
//! orderings from DESIGN.md "The lease": the fence is extended only after an *accepted* grant
//! or renewal, and a lease is released only once the postmaster's stop was confirmed.

use super::callbacks::CallbackEvent;
use super::decide::{Action, StopMode};
use super::local::{generate_password, RoleOf};
use super::observe::LocalPg;
use super::run::HaLoop;
use crate::clock;
use crate::dcs::state::{ClusterState, Command, HistoryEntry, Outcome};
use crate::pg::process::StopMode as PgStopMode;
use crate::pg::roles::RoleKind;
use crate::types::MemberName;
use crate::watchdog::Permit;
use std::time::Duration;

/// Bound of initdb.
const INITDB_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound of pg_basebackup and pg_rewind (large databases need a configurable one: later).
pub(super) const COPY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Bound of a clean stop before the postmaster's group is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of `pg_promote(wait => true)`.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a reload that changed `synchronous_standby_names` right before a promotion.
const SYNC_RELOAD_SETTLE: Duration = Duration::from_millis(300);
/// Bound of the `bootstrap.post_bootstrap` script.
const POST_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl HaLoop {
    pub(super) async fn act(
        &mut self,
        action: &Action,
        c: &ClusterState,
        pg: &LocalPg,
    ) -> Result<(), String> {
        let dynamic = &c.config;
        match action {
            Action::None => Ok(()),
            Action::ClaimInitialize => {
                self.propose(Command::ClaimInitialize { member: self.me.clone() }).await.map(drop)
            }
            Action::Bootstrap => self.bootstrap(c).await,
            Action::CompleteInitialize => self.complete_initialize(c).await,
            Action::AcquireLease { expected_epoch } => {
                // Armed before the lease can be ours, so Postgres is never primary unwatched.
                self.arm_watchdog(dynamic)?;
                let outcome = self
                    .handle
                    .acquire_lease(*expected_epoch, dynamic.ttl(), dynamic.retry_timeout(), pg.lsn())
                    .await
                    .map_err(err)?;
                self.after_lease_outcome("acquire", &outcome).await
            }
            Action::RenewLease { epoch } => {
                let outcome = self
                    .handle
                    .renew_lease(*epoch, dynamic.ttl(), dynamic.retry_timeout(), pg.lsn())
                    .await
                    .map_err(err)?;
                self.after_lease_outcome("renewal", &outcome).await
            }
            Action::Promote => self.promote(c, pg).await,
            Action::StartPrimary => {
                self.set_sync_names(super::sync::SyncNames::for_new_primary(c, &self.me));
                self.arm_watchdog(dynamic)?;
                self.local.start(c, None).await?;
                // Started under a valid lease (decide): fence it from now on.
                self.extend_fence().await;
                self.fire_unless_bootstrapping(c, CallbackEvent::OnStart, "primary");
                Ok(())
            }
            Action::StartReplica { upstream } => {
                self.disarm_fence();
                self.local.start(c, Some(upstream)).await?;
                self.fire_unless_bootstrapping(c, CallbackEvent::OnStart, "replica");
                Ok(())
            }
            Action::StartStandby => {
                self.disarm_fence();
                self.local.start_standby_of_nobody(c).await
            }
            Action::Follow { upstream } => self.local.follow(c, upstream).await,
            Action::RecordFinalLsn { epoch } => {
                let lsn = match pg {
                    LocalPg::Running { .. } => self.local.stop_receiving(c, dynamic.retry_timeout()).await?,
                    _ => pg.lsn().ok_or("no WAL position to record")?,
                };
                tracing::info!(member = %self.me, %lsn, %epoch, "recording my final WAL position for the quorum");
                let cmd = Command::RecordFinalLsn { member: self.me.clone(), epoch: *epoch, lsn };
                match self.propose(cmd).await? {
                    Outcome::Rejected { reason } => Err(format!("final WAL position not recorded: {reason}")),
                    _ => Ok(()),
                }
            }
            Action::Clone { from } => {
                if !matches!(pg, LocalPg::Absent) {
                    self.confirm_current(c).await?;
                }
                self.clone_from(c, from).await
            }
            Action::Rewind { from } => {
                self.confirm_current(c).await?;
                let source = self.local.source(from, RoleOf::Rewind, c)?;
                let password = self.local.credentials(RoleOf::Rewind, Some(c)).password;
                let rewound = self
                    .local
                    .tools()
                    .rewind(self.local.data(), &source, password.as_deref(), COPY_TIMEOUT)
                    .await
                    .map_err(err);
                match rewound {
                    // The source was not reachable: try again later.
                    Err(e) if e.contains("connection to server") => Err(e),
                    // pg_rewind ran and failed (interrupted half-way, which leaves the target
                    // unusable, or no common ancestor): what it would have discarded is lost
                    // either way, so take a fresh clone (the old directory stays until the
                    // clone is complete).
                    Err(e) => {
                        tracing::warn!(member = %self.me, "pg_rewind failed, cloning instead: {e}");
                        self.clone_from(c, from).await
                    }
                    Ok(()) => Ok(()),
                }
            }
            Action::CrashRecover => {
                let data = self.local.data();
                if data.is_standby() {
                    return Err("not recovering a data directory with standby.signal".into());
                }
                self.local.tools().crash_recover(data.path(), COPY_TIMEOUT).await.map_err(err)
            }
            Action::Stop { mode } => {
                let mode = match mode {
                    StopMode::Fast => PgStopMode::Fast,
                    StopMode::Immediate => PgStopMode::Immediate,
                };
                let role = if self.local.runs_as_primary() { "primary" } else { "replica" };
                let stopped = self.local.stop(mode, STOP_TIMEOUT).await.map_err(err)?;
                // Confirmed gone: nothing left to fence.
                self.disarm_fence();
                if stopped.is_some() {
                    self.callbacks.fire(CallbackEvent::OnStop, role);
                }
                Ok(())
            }
            Action::ReleaseLease { epoch, checkpoint } => {
                if self.local.pid().is_some() {
                    return Err("not releasing the lease while our postmaster runs".into());
                }
                let outcome = self
                    .handle
                    .release_lease(*epoch, *checkpoint, dynamic.retry_timeout())
                    .await
                    .map_err(err)?;
                match outcome {
                    Outcome::Rejected { reason } => Err(format!("release rejected: {reason}")),
                    _ => Ok(()),
                }
            }
        }
    }

    async fn propose(&self, command: Command) -> Result<Outcome, String> {
        let timeout = self.handle.state().map_or(Duration::from_secs(3), |s| s.config.retry_timeout());
        self.handle.propose_timeout(command, timeout).await.map_err(err)
    }

    /// After an acquire or renewal: an accepted one moves our deadline (the driver did), and
    /// the fence follows it while our Postgres is (to be) primary.
    async fn after_lease_outcome(&mut self, what: &str, outcome: &Outcome) -> Result<(), String> {
        if let Outcome::Rejected { reason } = outcome {
            if !self.local.runs_as_primary() {
                // Armed for an acquisition that failed: nothing to watch.
                self.watchdog.disable();
            }
            return Err(format!("lease {what} rejected: {reason}"));
        }
        self.extend_fence().await;
        Ok(())
    }

    /// Before `pg_promote()`: the standby's postmaster may live until the lease deadline.
    async fn arm_fence_for_promotion(&mut self) -> Result<(), String> {
        let pid = self.local.pid().ok_or("not promoting: no postmaster of ours runs")?;
        let view = self.handle.lease().await.map_err(err)?;
        let deadline = view.deadline.ok_or("not promoting: the lease deadline passed")?;
        self.fence.extend(pid as i32, deadline);
        self.fence_armed = true;
        Ok(())
    }

    /// Tells the fence our postmaster may live until the lease deadline, if it runs as a
    /// primary and the deadline is valid.
    pub(super) async fn extend_fence(&mut self) {
        let (Some(pid), true) = (self.local.pid(), self.local.runs_as_primary()) else { return };
        // Only after an accepted grant or renewal (the callers): the watchdog's countdown
        // restarts with the lease's.
        if let Err(e) = self.watchdog.keepalive() {
            tracing::error!(error = %e, "watchdog keepalive failed");
        }
        match self.handle.lease().await {
            Ok(view) => {
                if let Some(deadline) = view.deadline {
                    self.fence.extend(pid as i32, deadline);
                    self.fence_armed = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the lease deadline for the fence"),
        }
    }

    /// Tells the fence there is no primary Postgres to fence any more.
    pub(super) fn disarm_fence(&mut self) {
        self.fence.disarm();
        self.fence_armed = false;
        self.watchdog.disable();
    }

    /// Arms the watchdog for a primary (Patroni's modes: `off` does nothing, `automatic` goes
    /// on without a working device, `required` refuses to become primary without one).
    pub(super) fn arm_watchdog(
        &mut self,
        dynamic: &crate::config::dynamic::DynamicConfig,
    ) -> Result<(), String> {
        let timeout = crate::watchdog::watchdog_timeout(dynamic.ttl, self.safety_margin_s, dynamic.loop_wait);
        let permit = match timeout {
            Ok(t) => self.watchdog.activate_for_primary(t),
            Err(e) => crate::watchdog::may_be_primary(self.watchdog.mode(), Err(e)),
        };
        match permit {
            Permit::Yes | Permit::YesWithWarning(_) => {
                self.watchdog_failed = false;
                Ok(())
            }
            Permit::No(e) => {
                self.watchdog_failed = true;
                Err(format!("watchdog.mode is required and the watchdog does not work: {e}"))
            }
        }
    }

    /// Callbacks are not run for the bootstrap's own start (Patroni neither).
    fn fire_unless_bootstrapping(&self, c: &ClusterState, event: CallbackEvent, role: &str) {
        if c.initialize.as_ref().is_some_and(|i| i.system_identifier.is_some()) {
            self.callbacks.fire(event, role);
        }
    }

    async fn bootstrap(&mut self, c: &ClusterState) -> Result<(), String> {
        // Generated only where the config file names no password; kept in memory until
        // CompleteInitialize records them in the replicated state.
        for role in [RoleOf::Superuser, RoleOf::Replication, RoleOf::Rewind] {
            let key = role.secret_key().to_owned();
            if self.local.has_configured_password(role) {
                self.local.pending_secrets.remove(&key);
            } else {
                self.local.pending_secrets.entry(key).or_insert_with(generate_password);
            }
        }
        let su = self.local.credentials(RoleOf::Superuser, Some(c));
        self.local.clear_partial().map_err(err)?;
        let password = su.password.unwrap_or_default();
        self.local
            .tools()
            .initdb(self.local.data(), &su.username, &password, INITDB_TIMEOUT)
            .await
            .map_err(err)
    }

    async fn complete_initialize(&mut self, c: &ClusterState) -> Result<(), String> {
        // This iteration does not renew otherwise, and the step can take longer than the
        // lease's budget (ttl - safety_margin since the last renewal was sent): under load the
        // fence killed the new primary here (found by the callbacks test).
        self.renew_held(c).await?;
        let session = self.local.session(Some(c)).await.map_err(err)?;
        for (role, kind) in [(RoleOf::Replication, RoleKind::Replication), (RoleOf::Rewind, RoleKind::Rewind)]
        {
            let creds = self.local.credentials(role, Some(c));
            session.create_role(&creds.username, creds.password.as_deref(), kind).await.map_err(err)?;
        }
        let probe = session.probe().await.map_err(err)?;
        drop(session);
        if let Some(script) = self.post_bootstrap.clone() {
            let mut cmd = self.post_bootstrap_command(&script, c);
            let run = async move { tokio::time::timeout(POST_BOOTSTRAP_TIMEOUT, cmd.output()).await };
            let out = self
                .renewing_while(c, run)
                .await?
                .map_err(|_| {
                    format!("{} did not finish within {POST_BOOTSTRAP_TIMEOUT:?}", script.display())
                })?
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}): {}",
                    script.display(),
                    out.status,
                    crate::pg::error::tail(&String::from_utf8_lossy(&out.stderr), 10)
                ));
            }
        }
        let outcome = self
            .propose(Command::CompleteInitialize {
                member: self.me.clone(),
                system_identifier: probe.system_identifier.to_string(),
                secrets: self.local.pending_secrets.clone(),
            })
            .await?;
        if let Outcome::Rejected { reason } = outcome {
            return Err(format!("completing the initialization was rejected: {reason}"));
        }
        self.local.pending_secrets.clear();
        Ok(())
    }

    /// `bootstrap.post_bootstrap` with a connection string to the new primary as its argument
    /// (the password in `PGPASSWORD`, never on the command line); killed if dropped.
    fn post_bootstrap_command(&self, script: &std::path::Path, c: &ClusterState) -> tokio::process::Command {
        let su = self.local.credentials(RoleOf::Superuser, Some(c));
        let conninfo = crate::pg::conninfo::Conninfo::new()
            .set("host", self.local.socket_dir().to_string_lossy())
            .set("port", self.local.port().to_string())
            .set("user", su.username.clone())
            .set("dbname", "postgres")
            .render();
        let mut cmd = tokio::process::Command::new(script);
        cmd.arg(conninfo).stdin(std::process::Stdio::null()).kill_on_drop(true);
        if let Some(pw) = &su.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd
    }

    /// Renews the lease we hold in `c` now, the fence following an accepted renewal.
    async fn renew_held(&mut self, c: &ClusterState) -> Result<(), String> {
        let Some(epoch) = c.lease.as_ref().filter(|l| l.holder == self.me).map(|l| l.epoch) else {
            return Err("the lease is not mine".into());
        };
        let d = &c.config;
        let outcome = self.handle.renew_lease(epoch, d.ttl(), d.retry_timeout(), None).await.map_err(err)?;
        self.after_lease_outcome("renewal", &outcome).await
    }

    /// Waits for `work` while keeping the lease held in `c`: a renewal every `loop_wait`, as
    /// the loop would make, so a long step (a `post_bootstrap` script) is not fenced. A
    /// rejected renewal drops `work` and fails.
    async fn renewing_while<T>(
        &mut self,
        c: &ClusterState,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = clock::sleep(c.config.loop_wait()) => self.renew_held(c).await?,
            }
        }
    }

    async fn promote(&mut self, c: &ClusterState, pg: &LocalPg) -> Result<(), String> {
        let Some(lease) = c.lease.as_ref().filter(|l| l.holder == self.me) else {
            return Err("not promoting: the lease is not mine".into());
        };
        let (Some(timeline), Some(switch_lsn)) = (pg.timeline(), pg.lsn()) else {
            return Err("not promoting: Postgres is not running".into());
        };
        // Synchronous modes: what the new primary waits for is in its files and loaded before
        // it accepts a write (standbys keep it current; a change is reloaded here).
        self.set_sync_names(super::sync::SyncNames::for_new_primary(c, &self.me));
        if self.local.refresh_config(c, false).await? {
            // pg_reload_conf() only signals: give the processes a moment to read the files.
            clock::sleep(SYNC_RELOAD_SETTLE).await;
        }
        let session = self.local.session(Some(c)).await.map_err(err)?;
        // Fenced before it can accept a write: a pgha that hangs right after pg_promote() must
        // not leave a writable, unfenced primary behind.
        self.arm_fence_for_promotion().await?;
        session.promote(PROMOTE_TIMEOUT).await.map_err(err)?;
        self.local.promoted();
        self.extend_fence().await;
        self.callbacks.fire(CallbackEvent::OnRoleChange, "primary");
        let reason = if c.switchover.is_some() { "switchover" } else { "failover" };
        let entry = HistoryEntry {
            timeline,
            switch_lsn,
            reason: reason.into(),
            at_ms: clock::wall_now_ms(),
            new_primary: self.me.clone(),
        };
        // Promoted: from here on the record is retried until the state answers (a returning
        // old primary is compared with the history to know it must rewind).
        self.unrecorded_promotion = Some((lease.epoch, entry));
        self.record_promotion().await;
        Ok(())
    }

    /// Proposes the pending `RecordPromotion` while we still hold the epoch it was made under;
    /// forgets it once the state accepted or refused it, or the epoch is over.
    pub(super) async fn record_promotion(&mut self) {
        let Some((epoch, entry)) = self.unrecorded_promotion.clone() else { return };
        let held = self
            .handle
            .state()
            .is_some_and(|c| c.lease.as_ref().is_some_and(|l| l.holder == self.me && l.epoch == epoch));
        if !held {
            self.unrecorded_promotion = None;
            return;
        }
        match self.propose(Command::RecordPromotion { member: self.me.clone(), epoch, entry }).await {
            Ok(Outcome::Rejected { reason }) => {
                tracing::warn!(%reason, "the promotion was not recorded in the history");
                self.unrecorded_promotion = None;
            }
            Ok(_) => self.unrecorded_promotion = None,
            Err(e) => tracing::warn!(error = %e, "cannot record the promotion yet; retrying"),
        }
    }

    /// Before a step that discards WAL (pg_rewind, a clone over an existing directory): the
    /// decision must rest on the current state, not on what a restarted node applied before
    /// it caught up (its snapshot may predate its own promotion: found by the simulation). A
    /// ReadIndex waits until everything committed is applied here; if the lease or the
    /// history moved meanwhile, the next iteration decides again.
    async fn confirm_current(&self, c: &ClusterState) -> Result<(), String> {
        self.handle
            .read_index(c.config.retry_timeout())
            .await
            .map_err(|e| format!("cannot confirm the state is current before discarding WAL: {e}"))?;
        let fresh = self.handle.state().ok_or("no applied state")?;
        let key = |s: &ClusterState| {
            (s.lease.as_ref().map(|l| (l.holder.clone(), l.epoch)), s.last_epoch, s.history.len())
        };
        if key(&fresh) != key(c) {
            return Err(
                "the lease or the history changed since this decision: deciding again before discarding WAL"
                    .into(),
            );
        }
        Ok(())
    }

    async fn clone_from(&mut self, c: &ClusterState, from: &MemberName) -> Result<(), String> {
        let source = self.local.source(from, RoleOf::Replication, c)?;
        let password = self.local.credentials(RoleOf::Replication, Some(c)).password;
        self.local.clear_partial().map_err(err)?;
        // A diverged old primary without pg_rewind is re-cloned over its stopped directory
        // (kept until the new clone is complete).
        self.local
            .tools()
            .reclone(self.local.data(), &source, password.as_deref(), COPY_TIMEOUT)
            .await
            .map_err(err)
    }
}
