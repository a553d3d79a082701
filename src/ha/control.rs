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

/// A manual action on the local node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Restart Postgres in the role it runs in. `only_pending`: only when a parameter change
    /// waits for a restart; `role`: only when it runs in that role.
    Restart { only_pending: bool, role: Option<RoleFilter> },
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
