//! The consensus store: a Raft member (tikv `raft`) replicating [`state::ClusterState`].
//! Only `node`, `storage` (with its implementations `mem_store` and `file_store`, and the
//! on-disk `record` format), `transport` and `codec` name `raft::` types; everyone else uses
//! [`handle::Handle`].

pub mod bootstrap;
pub mod codec;
pub mod driver;
pub mod file_store;
pub mod handle;
pub mod lease;
pub mod mem_store;
pub mod meta;
pub mod node;
#[cfg(test)]
mod node_tests;
pub mod raft_log;
mod record;
pub mod state;
mod state_ha;
pub mod status;
pub mod storage;
pub mod transport;
