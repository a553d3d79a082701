//! The consensus store: a Raft member (tikv `raft`) replicating [`state::ClusterState`].
//! Only `node`, `storage`, `transport` and `codec` name `raft::` types; everyone else uses
//! [`handle::Handle`].

pub mod bootstrap;
pub mod codec;
pub mod driver;
pub mod handle;
pub mod lease;
pub mod meta;
pub mod node;
pub mod state;
pub mod storage;
pub mod transport;
