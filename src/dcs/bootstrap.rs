//! Creating a Raft store from a cluster state: for `pgha init` (a new cluster) and for
//! `pgha run --force-new-cluster` (a new incarnation from a survivor's state). Both write a
//! snapshot at index 1, term 1, with this node as the only voter.

use super::file_store::FileLogStore;
use super::meta::{MemberMeta, MetaError};
use super::node::{decode_state, encode_state, CoreError, Proposal};
use super::state::{ClusterState, RaftMembership};
use super::storage::{LogStore, StorageError};
use crate::clock;
use crate::types::NodeId;
use raft::eraftpb::{ConfState, EntryType, HardState, Snapshot};
use raft::GetEntriesContext;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot move {from} aside to {to}")]
    MoveAside { from: PathBuf, to: PathBuf, source: std::io::Error },
}

/// Writes a fresh store holding `state` with `node_id` as the single voter.
pub fn create_store(raft_dir: &Path, state: &ClusterState, node_id: NodeId) -> Result<(), BootstrapError> {
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    let mut cs = ConfState::default();
    cs.set_voters(vec![node_id.0]);
    meta.set_conf_state(cs);
    snap.data = encode_state(state).into();
    let hs = HardState { term: 1, vote: 0, commit: 1, ..Default::default() };
    FileLogStore::initialize(raft_dir, snap, hs)?;
    Ok(())
}

/// `--force-new-cluster`: recover service from this survivor after a permanent loss of the
/// majority. Takes everything in the local log (as etcd does), keeps only this member, starts
/// a new incarnation (old members are refused, never merged) and moves the old store aside.
///
/// The old store is only read: if anything fails, the member is exactly as before and can
/// still rejoin its old cluster (raising the old store's commit index, as an earlier version
/// did, made a failed attempt apply entries the cluster never committed).
pub fn force_new_cluster(raft_dir: &Path) -> Result<MemberMeta, BootstrapError> {
    let mut meta = MemberMeta::load(raft_dir)?;
    let mut state = {
        let store = FileLogStore::open(raft_dir)?;
        replay_everything(&store)?
        // the store (and its lock) is released here, before the directory moves
    };
    let new_incarnation = new_incarnation();
    state.incarnation = new_incarnation.clone();
    state.members.retain(|n, _| *n == meta.name);
    if let Some(m) = state.members.get_mut(&meta.name) {
        m.membership = RaftMembership::Voter;
        m.removing = false;
    }
    if state.lease.as_ref().is_some_and(|l| l.holder != meta.name) {
        state.lease = None;
    }
    state.tokens.clear();
    state.switchover = None;
    let aside = raft_dir.with_file_name(format!(
        "{}.before-force-new-cluster-{}",
        raft_dir.file_name().and_then(|n| n.to_str()).unwrap_or("raft"),
        clock::wall_now_ms()
    ));
    std::fs::rename(raft_dir, &aside).map_err(|source| BootstrapError::MoveAside {
        from: raft_dir.to_path_buf(),
        to: aside.clone(),
        source,
    })?;
    create_store(raft_dir, &state, meta.node_id)?;
    meta.incarnation = new_incarnation;
    meta.seed_peers.clear();
    meta.save(raft_dir)?;
    tracing::warn!(old_store = %aside.display(), incarnation = %meta.incarnation, "started a new cluster incarnation from this member's state; other members must re-join");
    Ok(meta)
}

/// The state after the snapshot and every entry in the log, committed or not, without
/// touching the store.
fn replay_everything(store: &FileLogStore) -> Result<ClusterState, BootstrapError> {
    let refused = |e: raft::Error| BootstrapError::Refused(format!("cannot read the Raft log: {e}"));
    let snap = store.latest_snapshot();
    if snap.get_data().is_empty() {
        return Err(BootstrapError::Refused(
            "this member never received the cluster state; it cannot seed a new cluster".into(),
        ));
    }
    let mut state = decode_state(snap.get_metadata().index, snap.get_data())?;
    let first = raft::Storage::first_index(store).map_err(refused)?;
    let last = raft::Storage::last_index(store).map_err(refused)?;
    if first <= last {
        let entries = raft::Storage::entries(store, first, last + 1, None, GetEntriesContext::empty(false))
            .map_err(refused)?;
        for e in entries {
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue; // membership is rebuilt below; only this member remains anyway
            }
            let p: Proposal = serde_json::from_slice(&e.data)
                .map_err(|err| CoreError::BadEntry { index: e.index, detail: err.to_string() })?;
            state.apply(p.command);
        }
    }
    Ok(state)
}

/// A random incarnation id (hex of 8 bytes).
pub fn new_incarnation() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
