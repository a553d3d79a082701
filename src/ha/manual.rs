//! Manual actions asked over the REST API (`/restart`, `/reload`, `/reinitialize`), carried
//! out by the HA loop between two iterations so they never race an automatic action. Each
//! checks first that it applies (Patroni's refusals: no reinitialize of the primary, no
//! restart when the conditions are not met) and changes nothing when it does not. A restart
//! keeps the role: a primary renews its lease first and is restarted as primary under it (with
//! the fence re-armed on the new postmaster), a standby restarts following the same upstream.

use super::act::COPY_TIMEOUT;
use super::callbacks::CallbackEvent;
use super::control::{self, Reply, Request, RequestError, RestartConditions, RoleFilter};
use super::local::RoleOf;
use super::observe::LocalPg;
use super::run::HaLoop;
use crate::clock::{self, BootInstant};
use crate::dcs::state::ClusterState;
use crate::pg::process::StopMode;
use std::time::Duration;
use tokio::sync::oneshot;

/// Patroni's words for a restart whose condition does not hold (`pgha ctl` skips those).
pub const NOT_SATISFIED: &str = "restart conditions are not satisfied";
/// Bound of the clean stop of a manual restart or reinitialize.
const MANUAL_STOP: Duration = Duration::from_secs(60);
/// How long a restarted Postgres may take to accept connections before the restart is
/// reported as failed (the loop goes on supervising it either way).
pub(super) const RESTART_WAIT: Duration = Duration::from_secs(120);

/// A restart whose postmaster was started: answered once it accepts connections.
pub(super) struct RestartInProgress {
    pub reply: oneshot::Sender<Reply>,
    pub deadline: BootInstant,
}

fn refused(why: impl Into<String>) -> RequestError {
    RequestError::Refused(why.into())
}

fn failed(why: impl std::fmt::Display) -> RequestError {
    RequestError::Failed(why.to_string())
}

impl HaLoop {
    /// Carries out one request; the reply goes out when the outcome is known (a restart: when
    /// the new postmaster answers, see [`HaLoop::check_restart`]).
    pub(super) async fn handle_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        let Some(cluster) = self.handle.state() else {
            let _ = reply.send(Err(RequestError::Unavailable("the cluster state is not known yet".into())));
            return;
        };
        tracing::info!(member = %self.me, ?request, "manual action");
        match request {
            Request::Reload => {
                let result =
                    self.local.refresh_config(&cluster, true).await.map_err(failed).and_then(|done| {
                        if done {
                            Ok("reloaded the configuration".to_string())
                        } else {
                            Err(refused("Postgres is not running: it reads the configuration when it starts"))
                        }
                    });
                let _ = reply.send(result);
            }
            Request::Restart(conditions) => match self.restart(&cluster, &conditions).await {
                Ok(()) => {
                    self.restart_in_progress =
                        Some(RestartInProgress { reply, deadline: clock::boot_now() + RESTART_WAIT });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::Reinitialize => {
                let primary = match self.reinitialize_allowed(&cluster) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                // Patroni answers once the reinitialize started; it runs here, in the loop.
                let _ = reply.send(Ok(format!("reinitialize started: cloning from {primary}")));
                self.reinitializing = true;
                self.publish_progress();
                if let Err(e) = self.reinitialize(&cluster, &primary).await {
                    tracing::error!(member = %self.me, "reinitialize failed: {e}");
                }
                self.reinitializing = false;
            }
        }
    }

    async fn restart(
        &mut self,
        c: &ClusterState,
        conditions: &RestartConditions,
    ) -> Result<(), RequestError> {
        if self.restart_in_progress.is_some() {
            return Err(refused("a restart is already in progress"));
        }
        if self.local.pid().is_none() {
            return self.start_stopped(c, conditions).await;
        }
        let (pg, probe) = self.local.observe(c).await;
        let Some(probe) = probe else {
            return Err(refused("Postgres does not answer yet (starting or in recovery); try again"));
        };
        if conditions.only_pending && !probe.needs_restart() {
            return Err(refused(format!("{NOT_SATISFIED}: no restart is pending")));
        }
        if let Some(version) = conditions.older_than.filter(|v| probe.server_version >= *v) {
            return Err(refused(format!(
                "{NOT_SATISFIED}: Postgres runs version {} already, not older than {}",
                probe.server_version, version
            )));
        }
        let primary = pg.is_running_primary();
        match conditions.role {
            Some(RoleFilter::Primary) if !primary => {
                return Err(refused(format!("{NOT_SATISFIED}: this member is not the primary")))
            }
            Some(RoleFilter::Replica) if primary => {
                return Err(refused(format!("{NOT_SATISFIED}: this member is not a replica")))
            }
            _ => {}
        }
        let upstream = self.local.upstream().cloned();
        if primary {
            // A fresh ttl for the stop and start, and proof the lease is still ours.
            let lease =
                c.lease.as_ref().filter(|l| l.holder == self.me).ok_or_else(|| {
                    refused("this primary does not hold the lease; the HA loop is demoting it")
                })?;
            let outcome = self
                .handle
                .renew_lease(lease.epoch, c.config.ttl(), c.config.retry_timeout(), pg.lsn())
                .await
                .map_err(failed)?;
            if let crate::dcs::state::Outcome::Rejected { reason } = outcome {
                return Err(refused(format!("the lease renewal before the restart was rejected: {reason}")));
            }
        } else if upstream.is_none() {
            return Err(refused("this standby follows no member yet; try again"));
        }
        self.local.stop(StopMode::Fast, MANUAL_STOP).await.map_err(failed)?;
        self.disarm_fence();
        if primary {
            self.arm_watchdog(&c.config).map_err(refused)?;
        }
        self.local.start(c, upstream.as_ref()).await.map_err(failed)?;
        if primary {
            self.extend_fence().await;
        }
        self.callbacks.fire(CallbackEvent::OnRestart, if primary { "primary" } else { "replica" });
        Ok(())
    }

    /// A restart of a stopped Postgres starts it, as Patroni's does. Outside pause mode the HA
    /// loop starts it by itself; in pause mode it is started here in its role: the lease
    /// holder as primary (lease renewed, watchdog and fence armed first), any other member as
    /// a replica following the holder.
    async fn start_stopped(
        &mut self,
        c: &ClusterState,
        conditions: &RestartConditions,
    ) -> Result<(), RequestError> {
        if !c.config.pause {
            return Err(refused("Postgres is not running; pgha starts it by itself when it should run"));
        }
        if conditions.only_pending {
            return Err(refused(format!("{NOT_SATISFIED}: Postgres is stopped, no restart is pending")));
        }
        if conditions.older_than.is_some() {
            return Err(refused(format!("{NOT_SATISFIED}: Postgres is stopped, its version is unknown")));
        }
        let holder = match c.lease.as_ref() {
            Some(l) => l.holder.clone(),
            None => {
                return Err(refused("there is no primary to follow; `pgha ctl resume` lets pgha elect one"))
            }
        };
        if holder == self.me {
            if conditions.role == Some(RoleFilter::Replica) {
                return Err(refused(format!("{NOT_SATISFIED}: this member is the primary")));
            }
            let was_primary =
                matches!(self.local.observe(c).await.0, LocalPg::Stopped { was_primary: true, .. });
            if !was_primary {
                return Err(refused("this member holds the lease but its data directory is a standby's: `pgha ctl resume` lets pgha promote it"));
            }
            // As the HA loop starts a primary: a fresh ttl first, watchdog and fence armed.
            let lease = c.lease.as_ref().expect("holder checked above");
            let outcome = self
                .handle
                .renew_lease(lease.epoch, c.config.ttl(), c.config.retry_timeout(), None)
                .await
                .map_err(failed)?;
            if let crate::dcs::state::Outcome::Rejected { reason } = outcome {
                return Err(refused(format!("the lease renewal before the start was rejected: {reason}")));
            }
            self.arm_watchdog(&c.config).map_err(refused)?;
            self.local.start(c, None).await.map_err(failed)?;
            self.extend_fence().await;
            self.callbacks.fire(CallbackEvent::OnRestart, "primary");
            return Ok(());
        }
        if conditions.role == Some(RoleFilter::Primary) {
            return Err(refused(format!("{NOT_SATISFIED}: this member is not the primary")));
        }
        self.disarm_fence();
        self.local.start(c, Some(&holder)).await.map_err(failed)?;
        self.callbacks.fire(CallbackEvent::OnRestart, "replica");
        Ok(())
    }

    /// Carries out this member's scheduled restart once its time came: it is dropped from the
    /// replicated state first (so it runs once even if pgha dies half-way), then the
    /// conditions are checked as for an immediate restart. The outcome goes to the log.
    pub(super) async fn run_scheduled_restart(&mut self, c: &ClusterState, now_ms: u64) {
        let Some(planned) = c.members.get(&self.me).and_then(|m| m.scheduled_restart.clone()) else {
            return;
        };
        if planned.at_ms > now_ms || self.restart_in_progress.is_some() {
            return;
        }
        let drop = crate::dcs::state::Command::ScheduleRestart { member: self.me.clone(), restart: None };
        if let Err(e) = self.handle.propose(drop).await {
            tracing::warn!(member = %self.me, "cannot clear the scheduled restart, trying again: {e}");
            return;
        }
        let conditions = RestartConditions {
            only_pending: planned.restart_pending,
            role: RoleFilter::parse(planned.role.as_deref()).unwrap_or(None),
            older_than: planned
                .postgres_version
                .as_deref()
                .and_then(|v| control::parse_postgres_version(v).ok()),
        };
        tracing::info!(member = %self.me, ?conditions, "scheduled restart");
        match self.restart(c, &conditions).await {
            Ok(()) => {
                // Nobody waits for the answer; the log has the outcome of the start.
                let (reply, _) = oneshot::channel();
                self.restart_in_progress =
                    Some(RestartInProgress { reply, deadline: clock::boot_now() + RESTART_WAIT });
            }
            Err(e) => tracing::warn!(member = %self.me, "scheduled restart not done: {e}"),
        }
    }

    /// Answers a restart in progress once its postmaster answers, or when it took too long.
    pub(super) fn check_restart(&mut self, running: bool) {
        let Some(progress) = self.restart_in_progress.take() else { return };
        if running {
            let _ = progress.reply.send(Ok("restarted successfully".into()));
        } else if clock::boot_now() >= progress.deadline {
            tracing::warn!(member = %self.me, "the restarted Postgres does not accept connections yet");
            let _ = progress.reply.send(Err(failed(format!(
                "Postgres did not accept connections within {} s of the restart",
                RESTART_WAIT.as_secs()
            ))));
        } else {
            self.restart_in_progress = Some(progress);
        }
    }

    /// Patroni's conditions: not on the primary (or lease holder), and only with a primary
    /// to clone from. Returns that primary.
    fn reinitialize_allowed(&self, c: &ClusterState) -> Result<crate::types::MemberName, RequestError> {
        if self.local.runs_as_primary() || c.lease.as_ref().is_some_and(|l| l.holder == self.me) {
            return Err(refused("I am the leader, can not reinitialize"));
        }
        let Some(lease) = c.lease.as_ref() else {
            return Err(refused("Cluster has no leader, can not reinitialize"));
        };
        if c.members.get(&lease.holder).and_then(|m| m.pg_address.as_ref()).is_none() {
            return Err(refused(format!("the primary {} has no Postgres address yet", lease.holder)));
        }
        Ok(lease.holder.clone())
    }

    /// Stops the standby, replaces its data directory with a fresh clone and starts it.
    async fn reinitialize(
        &mut self,
        c: &ClusterState,
        primary: &crate::types::MemberName,
    ) -> Result<(), String> {
        self.local.stop(StopMode::Fast, MANUAL_STOP).await.map_err(|e| e.to_string())?;
        self.disarm_fence();
        let source = self.local.source(primary, RoleOf::Replication, c)?;
        let password = self.local.credentials(RoleOf::Replication, Some(c)).password;
        self.local
            .tools()
            .reclone(self.local.data(), &source, password.as_deref(), COPY_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(member = %self.me, from = %primary, "reinitialized from a fresh clone");
        // Started here rather than by the next decision, so it also works in pause mode.
        let latest = self.handle.state();
        let c = latest.as_deref().unwrap_or(c);
        match c.lease.as_ref() {
            Some(l) if l.holder != self.me => self.local.start(c, Some(&l.holder)).await,
            _ => Ok(()),
        }
    }
}
