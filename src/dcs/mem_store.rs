//! In-memory Raft storage: the deterministic simulation's store and the reference model.
//!
//! `MemLogStore` keeps the hard state, the latest snapshot and the log entries in memory and
//! implements raft's `Storage` (reads) and [`LogStore`] (the Ready loop's writes). The
//! simulation "crashes" a node by dropping its `RawNode` and building a new one over a clone of
//! this store, so whatever a write call stored counts as durable once the call returns.
//! `FileLogStore` serves its reads from a `MemLogStore` and checks every write with the same
//! methods before touching the disk, and one contract suite (`storage::contract`) runs against
//! both. It never does I/O and never panics on a write that does not fit the log: that is
//! `StorageError::Invalid`, exactly as on disk.

use super::storage::{LogStore, StorageError};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};
use std::sync::atomic::{AtomicBool, Ordering};

/// Raft storage held in memory. `Clone` copies the whole store (a crash-and-restart point).
#[derive(Debug, Default)]
pub struct MemLogStore {
    hard_state: HardState,
    /// The latest snapshot; `Snapshot::default()` (index 0) for a joiner that has none yet.
    snapshot: Snapshot,
    /// Consecutive entries. They start at or before `snapshot.index + 1`: compaction may
    /// retain some entries the snapshot covers, for slow followers.
    entries: Vec<Entry>,
    /// Set by `Storage::snapshot` (which only gets `&self`), cleared by `create_snapshot`.
    snapshot_requested: AtomicBool,
}

impl Clone for MemLogStore {
    fn clone(&self) -> Self {
        Self {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            snapshot_requested: AtomicBool::new(self.snapshot_requested()),
        }
    }
}

impl MemLogStore {
    /// An empty store, as a joiner has before the leader sends it a snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store bootstrapped by `pgha init`: the cluster's first snapshot (index ≥ 1, with at
    /// least one voter) and no entries. The hard state is raised to the snapshot's term and
    /// index, which the snapshot proves committed.
    pub fn bootstrap(snapshot: Snapshot, hard_state: HardState) -> Result<Self, StorageError> {
        let meta = snapshot.get_metadata();
        if meta.index == 0 || meta.get_conf_state().voters.is_empty() {
            return Err(StorageError::Invalid {
                op: "bootstrap",
                detail: format!(
                    "the first snapshot needs an index above 0 and a voter (got index {}, voters {:?})",
                    meta.index,
                    meta.get_conf_state().voters
                ),
            });
        }
        let mut hs = hard_state;
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        Ok(Self::restore(hs, snapshot, Vec::new()))
    }

    /// Rebuilds a store from recovered parts; the caller has checked that they fit together.
    pub(crate) fn restore(hard_state: HardState, snapshot: Snapshot, entries: Vec<Entry>) -> Self {
        Self { hard_state, snapshot, entries, snapshot_requested: AtomicBool::new(false) }
    }

    pub(crate) fn stored_entries(&self) -> &[Entry] {
        &self.entries
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.entries.first().map_or(self.snapshot_index() + 1, |e| e.index)
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    /// How many stored entries survive appending `entries` (those before its first index), or
    /// why the append does not fit.
    pub(crate) fn check_append(&self, entries: &[Entry]) -> Result<usize, StorageError> {
        let Some(first_new) = entries.first().map(|e| e.index) else {
            return Ok(self.entries.len());
        };
        let refuse = |detail: String| Err(StorageError::Invalid { op: "append", detail });
        if let Some((i, e)) = (0u64..).zip(entries).find(|(i, e)| e.index != first_new + i) {
            return refuse(format!("entry {} at position {i} of a batch starting at {first_new}", e.index));
        }
        // Entries up to the snapshot are committed: raft never overwrites them.
        if first_new <= self.snapshot_index() {
            return refuse(format!(
                "entry {first_new} is covered by the snapshot at {}",
                self.snapshot_index()
            ));
        }
        if first_new > self.last() + 1 {
            return refuse(format!(
                "entry {first_new} would leave a gap after the last index {}",
                self.last()
            ));
        }
        Ok((first_new - self.first()) as usize)
    }

    pub(crate) fn truncate_entries(&mut self, keep: usize) {
        self.entries.truncate(keep);
    }

    pub(crate) fn extend_entries(&mut self, entries: &[Entry]) {
        self.entries.extend_from_slice(entries);
    }
}

impl LogStore for MemLogStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let keep = self.check_append(entries)?;
        self.truncate_entries(keep);
        self.extend_entries(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.hard_state = hs.clone();
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        self.hard_state.commit = self.hard_state.commit.max(commit);
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        if meta.index <= self.snapshot_index() {
            return Err(StorageError::Invalid {
                op: "apply_snapshot",
                detail: format!(
                    "snapshot at {} is not newer than the stored one at {}",
                    meta.index,
                    self.snapshot_index()
                ),
            });
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.snapshot = snapshot.clone();
        Ok(())
    }

    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
        retain: u64,
    ) -> Result<(), StorageError> {
        let (low, commit) = (self.snapshot_index(), self.hard_state.commit);
        if index == 0 || index < low || index > commit || index > self.last() {
            return Err(StorageError::Invalid {
                op: "create_snapshot",
                detail: format!("index {index} is outside [{low}, {commit}] (stored snapshot, commit index)"),
            });
        }
        let term = self.term(index).map_err(|e| StorageError::Invalid {
            op: "create_snapshot",
            detail: format!("no term for index {index}: {e}"),
        })?;
        let mut snapshot = Snapshot { data: data.into(), ..Default::default() };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        let compact_to = index.saturating_sub(retain);
        let dropped = self.entries.iter().take_while(|e| e.index <= compact_to).count();
        self.entries.drain(..dropped);
        self.snapshot = snapshot;
        self.snapshot_requested.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn latest_snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }

    fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    fn snapshot_requested(&self) -> bool {
        self.snapshot_requested.load(Ordering::Relaxed)
    }
}

impl Storage for MemLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.snapshot.get_metadata().get_conf_state().clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let offset = self.first();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot_index();
        // An empty snapshot would make raft panic ("need non-empty snapshot"); an old one
        // would not be what the follower asked for. Either way the node must make a new one.
        if index == 0 || index < request_index {
            self.snapshot_requested.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::storage::contract::{self, Harness};

    struct Mem;

    impl Harness for Mem {
        type Store = MemLogStore;
        fn empty(&mut self) -> MemLogStore {
            MemLogStore::new()
        }
        fn bootstrapped(&mut self, snapshot: Snapshot, hs: HardState) -> MemLogStore {
            MemLogStore::bootstrap(snapshot, hs).unwrap()
        }
        /// A crash keeps what the writes stored and loses the volatile snapshot request.
        fn restart(&mut self, store: MemLogStore) -> MemLogStore {
            let entries = store.stored_entries().to_vec();
            MemLogStore::restore(store.hard_state(), store.latest_snapshot(), entries)
        }
    }

    contract::log_store_contract!(Mem);

    #[test]
    fn bootstrap_refuses_a_snapshot_without_index_or_voters() {
        let mut no_voters = Snapshot::default();
        no_voters.mut_metadata().index = 1;
        for snapshot in [Snapshot::default(), no_voters] {
            let err = MemLogStore::bootstrap(snapshot, HardState::default()).unwrap_err();
            assert!(matches!(err, StorageError::Invalid { op: "bootstrap", .. }));
        }
    }

    #[test]
    fn clone_is_a_deep_copy() {
        let mut a =
            MemLogStore::bootstrap(contract::snapshot(1, 1, &[1], b""), HardState::default()).unwrap();
        let b = a.clone();
        a.append(&[contract::entry(2, 1)]).unwrap();
        assert_eq!(b.last_index().unwrap(), 1);
        assert_eq!(a.last_index().unwrap(), 2);
    }
}
