//! Durable Raft storage: the log entries, the hard state and the latest snapshot.
//!
//! `LogStore` extends raft's read-only `Storage` with the writes the Ready loop makes (see
//! `dcs::node`). Every write that a later message depends on is durable (fsync'd, and the
//! directory fsync'd after renames) before the write returns, because the node sends those
//! messages right after (STYLE.md principle 4; etcd's WAL does the same). A failed write is
//! returned as an error and the node stops: it is never retried and ignored, and the store is
//! not used again until it is reopened. Two implementations: `mem_store::MemLogStore` (the
//! simulation, and the reference model) and `file_store::FileLogStore` (a real member); one
//! contract test suite (`storage::contract`) runs against both so they cannot drift.
//!
//! Restart contract for the node: the state machine restarts from `latest_snapshot()`, so the
//! node must set `raft::Config::applied` to the snapshot's index; raft would otherwise assume
//! `first_index - 1`, which is lower when compaction retained entries before the snapshot.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot write the Raft log at {path}: {source}; if the disk is full, free space and restart pgha (nothing was lost)")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read the Raft log at {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the Raft log at {path} is corrupt ({detail}); restore this member with `pgha ctl remove` + `pgha join`, or recover the cluster from a survivor with `pgha run --force-new-cluster`")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} already holds a Raft store; `pgha init` only creates a new cluster (to start over, stop pgha and remove the directory)")]
    AlreadyInitialized { path: PathBuf },
    #[error("the Raft store at {path} is in use by another process (is pgha already running with this data directory?)")]
    Locked { path: PathBuf },
    /// A write that does not fit the stored log: a bug in the caller, never a disk problem.
    #[error("refused {op}: {detail}; this is a bug in pgha, stop the node and report it")]
    Invalid { op: &'static str, detail: String },
}

/// The writes of the Ready loop, over raft's `Storage` reads.
///
/// Reads follow raft-rs's `MemStorage`, except that `entries` past the last index is
/// `Unavailable` instead of a panic, and `snapshot` never returns an empty or too old snapshot:
/// it answers `SnapshotTemporarilyUnavailable` and raises [`LogStore::snapshot_requested`].
/// The conf state in `initial_state` is the latest snapshot's; the node re-applies the
/// conf-change entries committed after it.
pub trait LogStore: raft::Storage {
    /// Appends consecutive entries, first dropping any existing entries at or after the first
    /// new index (a new leader overwrote them). Durable on return. Entries covered by the
    /// snapshot, or a gap after the last index, are refused as `Invalid`.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Persists the hard state (term, vote, commit). Durable on return.
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError>;
    /// Records a new commit index from a light ready; need not be fsync'd (commit can always
    /// be re-learned from the leader; `FileLogStore` syncs it anyway, see there), but must
    /// not go backwards: a lower value is ignored.
    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError>;
    /// Installs a snapshot received from the leader: drops every stored entry (raft only
    /// hands over a snapshot whose index and term our log does not contain, so whatever
    /// follows came from a deposed leader) and raises the hard state's term and commit to at
    /// least the snapshot's. A snapshot not newer than the stored one is `Invalid`.
    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;
    /// Stores a snapshot of the local state machine at `index` (already applied) and compacts
    /// the log, keeping `retain` entries before `index` for slow followers (entries up to
    /// `index - retain` are dropped). `index` must lie between the stored snapshot's index
    /// and the commit index. Clears [`LogStore::snapshot_requested`].
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
    /// The stored hard state, as `initial_state` reports it.
    fn hard_state(&self) -> HardState;
}

#[cfg(test)]
pub(crate) mod contract;
