//! What a member reports about itself: its Raft status (role, term, indexes, replication
//! progress on the leader) and the lease as it sees it locally. Plain data for the API and ctl.

use crate::clock::BootInstant;
use crate::types::{LeaseEpoch, MemberName, NodeId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A node's Raft role as shown by `pgha ctl members`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    Leader,
    Candidate,
    Follower,
    Learner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    pub id: NodeId,
    pub matched: u64,
    pub learner: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    pub id: NodeId,
    pub name: MemberName,
    pub role: RaftRole,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Replication progress per peer, only on the leader.
    pub progress: Vec<PeerProgress>,
}

/// The lease as this node sees it locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub holder: Option<MemberName>,
    pub epoch: LeaseEpoch,
    pub last_epoch: LeaseEpoch,
    /// Only for the holder: time left before its own deadline (0 if passed or not held).
    pub time_left: Duration,
    /// Only for the holder: the deadline on the boot clock, as long as it is valid.
    pub deadline: Option<BootInstant>,
}
