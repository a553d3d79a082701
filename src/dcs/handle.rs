//! `Handle`: how the rest of pgha talks to the consensus store, without naming `raft` types.
//! Cheap to clone; every call has a deadline. Proposals with no known leader are retried
//! within the deadline, since an election is expected trouble, not an error.

use super::driver::CommitLatency;
use super::node::{LeaseView, ProposeError, RaftStatus};
use super::state::{ClusterState, Command, Outcome};
use super::transport::Reachability;
use crate::clock;
use crate::types::{LeaseEpoch, Lsn, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Default deadline for a proposal, including waiting out an election.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DcsError {
    #[error("no Raft leader was available within the deadline: is a majority of members up?")]
    NoLeader,
    #[error("this member has not received the cluster state yet (still joining)")]
    NotReady,
    #[error("the proposal was not applied within the deadline: is a majority of members up?")]
    Timeout,
    #[error("the consensus store stopped")]
    Stopped,
    #[error("raft refused: {0}")]
    Refused(String),
}

impl From<ProposeError> for DcsError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NoLeader => DcsError::NoLeader,
            ProposeError::NotReady => DcsError::NotReady,
            ProposeError::Refused(s) => DcsError::Refused(s),
        }
    }
}

pub enum Request {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Outcome, DcsError>>,
    },
    Acquire {
        expected_epoch: LeaseEpoch,
        ttl: Duration,
        lsn: Option<Lsn>,
        reply: oneshot::Sender<Result<Outcome, DcsError>>,
    },
    Renew {
        epoch: LeaseEpoch,
        ttl: Duration,
        lsn: Option<Lsn>,
        reply: oneshot::Sender<Result<Outcome, DcsError>>,
    },
    Release {
        epoch: LeaseEpoch,
        checkpoint: Option<Lsn>,
        reply: oneshot::Sender<Result<Outcome, DcsError>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64, DcsError>>,
    },
    Status {
        reply: oneshot::Sender<(RaftStatus, CommitLatency)>,
    },
    Lease {
        reply: oneshot::Sender<LeaseView>,
    },
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<Option<Arc<ClusterState>>>,
    reach: Reachability,
}

impl Handle {
    pub(super) fn new(
        requests: mpsc::Sender<Request>,
        state: watch::Receiver<Option<Arc<ClusterState>>>,
        reach: Reachability,
    ) -> Self {
        Handle { requests, state, reach }
    }

    /// The locally applied state (may lag the leader; use `read_index` first when a decision
    /// must see every committed write).
    pub fn state(&self) -> Option<Arc<ClusterState>> {
        self.state.borrow().clone()
    }

    /// A receiver that changes whenever the applied state changes.
    pub fn watch_state(&self) -> watch::Receiver<Option<Arc<ClusterState>>> {
        self.state.clone()
    }

    pub fn reachability(&self) -> &Reachability {
        &self.reach
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, DcsError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).await.map_err(|_| DcsError::Stopped)?;
        rx.await.map_err(|_| DcsError::Stopped)
    }

    /// Sends a proposal-like request, retrying while no leader is known, until `deadline`.
    async fn propose_with<F>(&self, timeout: Duration, make: F) -> Result<Outcome, DcsError>
    where
        F: Fn(oneshot::Sender<Result<Outcome, DcsError>>) -> Request,
    {
        let attempt = async {
            let mut backoff = Duration::from_millis(20);
            loop {
                match self.call(&make).await? {
                    Err(DcsError::NoLeader) => {
                        clock::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(DcsError::Timeout),
        }
    }

    /// Proposes a command and waits until this node applied it; the outcome says whether it
    /// was accepted (a lost compare-and-set is `Outcome::Rejected`, not an error).
    ///
    /// A timeout does not prove the command was not applied later: commands are written so
    /// that applying them late is harmless (compare-and-set on epochs, one-time tokens).
    pub async fn propose(&self, command: Command) -> Result<Outcome, DcsError> {
        self.propose_timeout(command, PROPOSE_TIMEOUT).await
    }

    pub async fn propose_timeout(&self, command: Command, timeout: Duration) -> Result<Outcome, DcsError> {
        self.propose_with(timeout, |reply| Request::Propose { command: command.clone(), reply }).await
    }

    /// Tries to take the free lease, expecting `expected_epoch` to be the last one granted.
    /// `lsn` is this member's WAL position, checked inside the compare-and-set (lease rule 3).
    pub async fn acquire_lease(
        &self,
        expected_epoch: LeaseEpoch,
        ttl: Duration,
        timeout: Duration,
        lsn: Option<Lsn>,
    ) -> Result<Outcome, DcsError> {
        self.propose_with(timeout, |reply| Request::Acquire { expected_epoch, ttl, lsn, reply }).await
    }

    /// Renews the lease this node holds; its local deadline moves only if accepted. `lsn` is
    /// the primary's current WAL position, recorded as the last primary position.
    pub async fn renew_lease(
        &self,
        epoch: LeaseEpoch,
        ttl: Duration,
        timeout: Duration,
        lsn: Option<Lsn>,
    ) -> Result<Outcome, DcsError> {
        self.propose_with(timeout, |reply| Request::Renew { epoch, ttl, lsn, reply }).await
    }

    /// Gives the lease up, recording the shutdown checkpoint after a clean stop.
    pub async fn release_lease(
        &self,
        epoch: LeaseEpoch,
        checkpoint: Option<Lsn>,
        timeout: Duration,
    ) -> Result<Outcome, DcsError> {
        self.propose_with(timeout, |reply| Request::Release { epoch, checkpoint, reply }).await
    }

    /// The lease as seen locally: holder, epoch, and for the holder its own time left.
    pub async fn lease(&self) -> Result<LeaseView, DcsError> {
        self.call(|reply| Request::Lease { reply }).await
    }

    /// Waits until the local state reflects everything committed when the call was made
    /// (Raft ReadIndex through the leader). Returns the read index.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, DcsError> {
        match tokio::time::timeout(timeout, self.call(|reply| Request::ReadIndex { reply })).await {
            Ok(r) => r?,
            Err(_) => Err(DcsError::Timeout),
        }
    }

    pub async fn status(&self) -> Result<RaftStatus, DcsError> {
        Ok(self.call(|reply| Request::Status { reply }).await?.0)
    }

    /// Raft status plus this node's recent proposal latencies.
    pub async fn status_with_latency(&self) -> Result<(RaftStatus, CommitLatency), DcsError> {
        self.call(|reply| Request::Status { reply }).await
    }

    /// Asks the Raft leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), DcsError> {
        self.call(|reply| Request::TransferLeader { to, reply }).await
    }
}
