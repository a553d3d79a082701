//! Durable Raft storage: the log entries, the hard state and the latest snapshot.
//!
//! `LogStore` extends raft's read-only `Storage` with the writes the Ready loop makes (see
//! `dcs::node`). Every write that a later message depends on is durable (fsync'd, and the
//! directory fsync'd after renames) before the write returns, because the node sends those
//! messages right after (STYLE.md principle 4; etcd's WAL does the same). A failed write is
//! returned as an error and the node stops: it is never retried and ignored.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot write the Raft log at {path}: {source}; if the disk is full, free space and restart pgha (nothing was lost)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the Raft log at {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Raft log at {path} is corrupt ({detail}); restore this member with `pgha ctl remove` + `pgha join`, or recover the cluster from a survivor with `pgha run --force-new-cluster`")]
    Corrupt { path: PathBuf, detail: String },
}

/// The writes of the Ready loop, over raft's `Storage` reads.
pub trait LogStore: raft::Storage {
    /// Appends entries, first dropping any existing entries at or after the first new index
    /// (a new leader overwrote them). Durable on return.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Persists the hard state (term, vote, commit). Durable on return.
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError>;
    /// Records a new commit index from a light ready; need not be fsync'd (commit can always
    /// be re-learned from the leader), but must not go backwards.
    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError>;
    /// Installs a snapshot received from the leader, replacing the log up to its index.
    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;
    /// Stores a snapshot of the local state machine at `index` (already applied) and compacts
    /// the log, keeping `retain` entries before `index` for slow followers.
    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
        retain: u64,
    ) -> Result<(), StorageError>;
    /// The latest stored snapshot (possibly empty for a joiner that has none yet).
    fn latest_snapshot(&self) -> Snapshot;
    /// Raft asked for a snapshot newer than the stored one (`Storage::snapshot` answered
    /// "temporarily unavailable"): the node should create one now.
    fn snapshot_requested(&self) -> bool;
}
