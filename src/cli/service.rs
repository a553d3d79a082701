//! `pgha run` as a systemd service (`packaging/pgha.service`, `Type=notify`): what it tells the
//! service manager and when. READY=1 once the REST API serves (HAProxy and `pgha ctl` can
//! reach it); STATUS= with the HA loop's latest decision, so `systemctl status pgha` shows
//! what the node is doing; WATCHDOG=1 every `WatchdogSec=`/2 while the Raft member answers a
//! status request within that time; STOPPING=1 when a stop begins; RELOADING=1 … READY=1
//! around a SIGHUP reload. Outside systemd it does nothing.
//!
//! The watchdog is fed on the Raft member's answers, not on HA loop iterations: a clone, a
//! rewind or a shutdown checkpoint legitimately hold the HA loop for minutes, and a stuck HA
//! loop is already covered by the lease and the fencer (DESIGN.md lease rule 4) and shown by
//! `/liveness`. A deadlocked runtime or Raft loop stops the pings, and systemd restarts pgha
//! (`Restart=on-failure`); its Postgres dies with it (parent-death signal and fencer).

use super::reload::{Reloaded, Reloader};
use crate::dcs::handle::Handle;
use crate::ha::control::HaControl;
use crate::sys::notify::Notifier;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often STATUS= is refreshed when systemd asks for no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the Raft member's answer before a ping is skipped.
const MAX_HEALTH_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Service {
    notifier: Arc<Notifier>,
}

impl Service {
    /// Takes `NOTIFY_SOCKET` and the watchdog variables out of the environment; call before
    /// any thread or child exists (see `sys::notify`).
    pub fn from_env() -> Service {
        Service { notifier: Arc::new(Notifier::take_from_env()) }
    }

    /// The REST API serves: tell systemd, then keep it informed until `shutdown`.
    pub fn ready(&self, member: &str, dcs: Handle, ha: Option<HaControl>, shutdown: watch::Receiver<bool>) {
        if !self.notifier.is_active() {
            return;
        }
        self.notifier.ready(&format!("member {member} started"));
        if let Some(every) = self.notifier.watchdog_interval() {
            tracing::info!("systemd watchdog: pinging every {every:?} while the Raft member answers");
        }
        tokio::spawn(keep_informed(self.notifier.clone(), dcs, ha, shutdown));
    }

    pub fn stopping(&self) {
        self.notifier.stopping("stopping: Postgres first, then the Raft member");
    }

    /// SIGHUP: re-read the config file (see `reload`).
    pub fn reload(&self, reloader: &mut Reloader) {
        self.notifier.reloading();
        let outcome = reloader.reload();
        let status = match &outcome {
            Reloaded::Failed => "reload failed; see the log".to_owned(),
            Reloaded::Done { need_restart, .. } if !need_restart.is_empty() => {
                format!("reloaded; waiting for a restart: {}", need_restart.join(", "))
            }
            Reloaded::Done { .. } => "reloaded".to_owned(),
        };
        self.notifier.ready(&status);
    }
}

async fn keep_informed(
    notifier: Arc<Notifier>,
    dcs: Handle,
    ha: Option<HaControl>,
    mut shutdown: watch::Receiver<bool>,
) {
    let watchdog = notifier.watchdog_interval();
    let every = watchdog.unwrap_or(STATUS_EVERY);
    let mut last_status = String::new();
    let mut was_healthy = true;
    loop {
        let started = crate::clock::boot_now();
        let answer = tokio::time::timeout(every.min(MAX_HEALTH_WAIT), dcs.status()).await;
        let healthy = matches!(answer, Ok(Ok(_)));
        if watchdog.is_some() {
            if healthy {
                notifier.watchdog();
            } else if was_healthy {
                tracing::warn!(
                    "the Raft member did not answer within {every:?}: not pinging systemd's watchdog"
                );
            }
        }
        was_healthy = healthy;
        let status = match (ha.as_ref().and_then(HaControl::view), answer) {
            (Some(view), _) => view.decision.to_string(),
            (None, Ok(Ok(raft))) => format!("Raft {:?}, term {}", raft.role, raft.term).to_lowercase(),
            (None, _) => "waiting for the Raft member".to_owned(),
        };
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        let spent = crate::clock::boot_now().saturating_since(started);
        tokio::select! {
            _ = crate::clock::sleep(every.saturating_sub(spent)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
