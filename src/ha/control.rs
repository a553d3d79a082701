//! What the REST API sees of, and asks from, the local HA loop. The loop publishes a
//! [`NodeView`] after every iteration (for `/patroni` and the health checks) and carries out
//! [`Request`]s (`/restart`, `/reload`, `/reinitialize`) between iterations, so a manual action
//! never runs concurrently with an automatic one. The API holds an [`HaControl`]; a witness has
//! none.

use super::decide::Decision;
use super::observe::LocalPg;
use crate::clock::{self, BootInstant};
use crate::pg::probe::PgProbe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How many requests may wait for the loop; more are refused as busy.
const QUEUE: usize = 4;

/// The local node after one HA loop iteration.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub pg: LocalPg,
    /// The probe of a running Postgres that answered.
    pub probe: Option<PgProbe>,
    pub decision: Decision,
    /// When the iteration ended, on the boot clock (liveness).
    pub at: BootInstant,
    /// Wall clock of the iteration, milliseconds since the epoch (`dcs_last_seen`).
    pub wall_ms: u64,
    /// A restart is running (Patroni's `state: restarting`).
    pub restarting: bool,
    /// A reinitialize is running (Patroni's `state: creating replica`).
    pub reinitializing: bool,
    /// `watchdog.mode: required` and no working watchdog: this node may not become primary.
    pub watchdog_failed: bool,
    /// The watchdog device is armed (this node runs, or is about to run, as primary).
    pub watchdog_active: bool,
}

impl NodeView {
    /// The iteration is at most `within` old.
    pub fn alive_within(&self, within: Duration) -> bool {
        clock::boot_now().saturating_since(self.at) <= within
    }
}

/// Role filter of `POST /restart` (Patroni's `role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleFilter {
    Primary,
    Replica,
}

impl RoleFilter {
    /// Patroni's `role` values; `any` or none: no filter.
    pub fn parse(role: Option<&str>) -> Result<Option<RoleFilter>, String> {
        match role {
            None | Some("any") => Ok(None),
            Some("primary" | "master" | "leader") => Ok(Some(RoleFilter::Primary)),
            Some("replica") => Ok(Some(RoleFilter::Replica)),
            Some(other) => Err(format!("role {other:?}: use primary, replica or any")),
        }
    }
}

/// When a restart may go ahead (Patroni's conditions of `POST /restart`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartConditions {
    /// Only when a parameter change waits for a restart.
    pub only_pending: bool,
    /// Only when Postgres runs in this role.
    pub role: Option<RoleFilter>,
    /// Only while the running server is older than this `server_version_num` (a minor
    /// upgrade: restart the members still on the old binaries).
    pub older_than: Option<u32>,
}

/// `15.4` (or `9.6.3`, or `15`) as a `server_version_num` (150004, 90603, 150000), as
/// Patroni reads the `postgres_version` condition.
pub fn parse_postgres_version(text: &str) -> Result<u32, String> {
    let bad = || format!("postgres_version {text:?}: use a PostgreSQL version like 15.4");
    let parts: Vec<u32> =
        text.trim().split('.').map(|p| p.parse::<u32>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    match parts[..] {
        [major] if major >= 10 => Ok(major * 10000),
        [major, minor] if major >= 10 => Ok(major * 10000 + minor),
        [major, minor, patch] if major < 10 && minor < 100 && patch < 100 => {
            Ok(major * 10000 + minor * 100 + patch)
        }
        _ => Err(bad()),
    }
}

/// A manual action on the local node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Restart Postgres in the role it runs in, if the conditions hold.
    Restart(RestartConditions),
    /// Rewrite the configuration files from the replicated config and reload Postgres.
    Reload,
    /// Replace a replica's data directory with a fresh clone of the primary.
    Reinitialize,
}

/// Why a request was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request does not apply to the node as it is (Patroni answers 503).
    #[error("{0}")]
    Refused(String),
    /// It was tried and failed.
    #[error("{0}")]
    Failed(String),
    /// The HA loop is not running or is busy.
    #[error("{0}")]
    Unavailable(String),
}

pub type Reply = Result<String, RequestError>;

pub(super) type Envelope = (Request, oneshot::Sender<Reply>);

/// The API's side.
#[derive(Clone)]
pub struct HaControl {
    view: watch::Receiver<Option<Arc<NodeView>>>,
    requests: mpsc::Sender<Envelope>,
}

/// The loop's side.
pub(super) struct LoopSide {
    pub view: watch::Sender<Option<Arc<NodeView>>>,
    pub requests: mpsc::Receiver<Envelope>,
}

pub(super) fn channels() -> (HaControl, LoopSide) {
    let (view_tx, view_rx) = watch::channel(None);
    let (req_tx, req_rx) = mpsc::channel(QUEUE);
    (HaControl { view: view_rx, requests: req_tx }, LoopSide { view: view_tx, requests: req_rx })
}

impl HaControl {
    /// The last iteration's view (`None` before the first one).
    pub fn view(&self) -> Option<Arc<NodeView>> {
        self.view.borrow().clone()
    }

    /// Hands `request` to the loop and waits up to `timeout` for its answer.
    pub async fn request(&self, request: Request, timeout: Duration) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send((request, tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                RequestError::Unavailable("another manual action is waiting; try again later".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                RequestError::Unavailable("the HA loop is not running".into())
            }
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(RequestError::Unavailable("the HA loop stopped before answering".into())),
            Err(_) => Err(RequestError::Unavailable(format!(
                "no answer within {} s; the action may still complete (check GET /patroni)",
                timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_versions_read_like_patroni() {
        let cases = [
            ("15.4", Ok(150004)),
            ("15", Ok(150000)),
            ("17.10", Ok(170010)),
            ("9.6.3", Ok(90603)),
            ("9.6", Err(())),
            ("15.4.1", Err(())),
            ("fifteen", Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(parse_postgres_version(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn roles_read_like_patroni() {
        assert_eq!(RoleFilter::parse(None), Ok(None));
        assert_eq!(RoleFilter::parse(Some("any")), Ok(None));
        assert_eq!(RoleFilter::parse(Some("master")), Ok(Some(RoleFilter::Primary)));
        assert_eq!(RoleFilter::parse(Some("replica")), Ok(Some(RoleFilter::Replica)));
        assert!(RoleFilter::parse(Some("standby")).is_err());
    }
}
