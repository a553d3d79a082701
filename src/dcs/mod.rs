//! The consensus store: a Raft member (tikv `raft`) replicating [`state::ClusterState`].
//! Only `node`, `storage`, `transport` and `codec` name `raft::` types; everyone else uses
//! [`handle::Handle`].

pub mod codec;
pub mod lease;
pub mod node;
pub mod state;
pub mod storage;
