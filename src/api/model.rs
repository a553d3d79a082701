//! Request and response bodies of pgha's own API, shared by the server and `pgha ctl` so the
//! two cannot drift. Patroni-compatible bodies live next to their handlers.

use crate::config::dynamic::DynamicConfig;
use crate::dcs::driver::CommitLatency;
use crate::dcs::node::{LeaseView, RaftStatus};
use crate::dcs::state::NewMember;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};

/// Every refusal carries a machine-readable `code` and an operator-readable `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    pub code: String,
    /// When the call must go to the Raft leader: its API address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_api: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token's secret, base64url.
    pub secret: String,
    pub member: NewMember,
    /// CSR for the node's member certificate.
    pub csr_pem: String,
    /// CSR for the node's `pgha ctl` client certificate.
    pub ctl_csr_pem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub node_id: NodeId,
    pub api_address: String,
    pub raft_address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: NodeId,
    pub scope: String,
    pub incarnation: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub ctl_cert_pem: String,
    pub members: Vec<PeerInfo>,
    pub config: DynamicConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Seconds the token stays valid (default 3600).
    #[serde(default)]
    pub ttl: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub scope: String,
    pub raft: RaftStatus,
    pub commit_latency: CommitLatency,
    pub lease: LeaseView,
    pub version: String,
}

/// One row of `pgha ctl members` (DESIGN.md contract: these exact keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub name: String,
    /// Raft node id as a hex string, as `etcdctl member list` shows ids.
    pub id: String,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    pub witness: bool,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub address: String,
    pub reachable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Member to hand Raft leadership to; default: the most caught-up other voter.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub message: String,
}
