//! The behaviour every [`LogStore`] shares, written once as generic tests and instantiated for
//! each implementation with [`log_store_contract!`], so `MemLogStore` and `FileLogStore` cannot
//! drift. A [`Harness`] makes stores and "restarts" them (the node's process dies, only what
//! the store made durable survives). Test-only; it touches no files itself.

use super::{LogStore, StorageError};
use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RawNode, StateRole, Storage};

/// Makes the stores a contract test runs against.
pub(crate) trait Harness {
    type Store: LogStore + std::fmt::Debug;
    /// A store with nothing in it, as a joiner opens.
    fn empty(&mut self) -> Self::Store;
    /// A store created by `pgha init`.
    fn bootstrapped(&mut self, snapshot: Snapshot, hs: HardState) -> Self::Store;
    /// The store a restarted node finds after its process died.
    fn restart(&mut self, store: Self::Store) -> Self::Store;
}

/// Generates one `#[test]` per contract test, each with a fresh harness from `$harness`.
macro_rules! log_store_contract {
    ($harness:expr) => {
        $crate::dcs::storage::contract::log_store_contract!(@tests $harness;
            empty_store_is_a_joiner,
            bootstrap_reports_the_snapshot,
            append_reads_and_overwrites_a_conflicting_suffix,
            refused_appends_change_nothing,
            entries_honour_size_limits_and_bounds,
            hard_state_survives_and_commit_never_goes_back,
            create_snapshot_compacts_and_keeps_retained_entries,
            apply_snapshot_replaces_the_log,
            joiner_installs_the_leaders_snapshot,
            single_node_raft_keeps_its_commits_across_a_restart,
        );
    };
    (@tests $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::dcs::storage::contract::$name($harness);
            }
        )*
    };
}
pub(crate) use log_store_contract;

pub(crate) fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Default::default()
    }
}

pub(crate) fn entries(indices: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indices.map(|i| entry(i, term)).collect()
}

pub(crate) fn snapshot(index: u64, term: u64, voters: &[u64], data: &[u8]) -> Snapshot {
    let mut s = Snapshot { data: data.to_vec().into(), ..Default::default() };
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters.to_vec();
    s
}

pub(crate) fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..Default::default() }
}

fn voters(v: &[u64]) -> ConfState {
    ConfState { voters: v.to_vec(), ..Default::default() }
}

/// Everything a restarted node can observe of a store.
#[derive(Debug, PartialEq)]
pub(crate) struct Observed {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub first: u64,
    pub last: u64,
    pub entries: Vec<Entry>,
    pub snapshot: Snapshot,
}

pub(crate) fn observe(s: &impl LogStore) -> Observed {
    let state = s.initial_state().unwrap();
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    assert_eq!(state.hard_state, s.hard_state());
    Observed {
        hard_state: state.hard_state,
        conf_state: state.conf_state,
        first,
        last,
        entries: s.entries(first, last + 1, None, ctx()).unwrap(),
        snapshot: s.latest_snapshot(),
    }
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn raft_err(e: raft::StorageError) -> raft::Error {
    raft::Error::Store(e)
}

fn terms(s: &impl Storage, indices: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    indices.map(|i| s.term(i).unwrap()).collect()
}

fn assert_invalid(result: Result<(), StorageError>, expected_op: &str) {
    match result {
        Err(StorageError::Invalid { op, .. }) if op == expected_op => {}
        other => panic!("expected Invalid {{ op: {expected_op} }}, got {other:?}"),
    }
}

/// Restarts `s` and checks that nothing observable changed.
fn restart_unchanged<H: Harness>(h: &mut H, s: H::Store) -> H::Store {
    let before = observe(&s);
    let s = h.restart(s);
    assert_eq!(observe(&s), before, "a restart changed the store");
    s
}

/// Index 1, term 1, voters 1-3: what `pgha init` stores.
fn bootstrapped<H: Harness>(h: &mut H) -> H::Store {
    h.bootstrapped(snapshot(1, 1, &[1, 2, 3], b"init"), hard_state(1, 0, 1))
}

pub(crate) fn empty_store_is_a_joiner<H: Harness>(mut h: H) {
    let s = h.empty();
    let state = s.initial_state().unwrap();
    assert!(!state.initialized());
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
    assert_eq!(s.term(0), Ok(0));
    assert_eq!(s.entries(1, 1, None, ctx()), Ok(vec![]));
    assert!(!s.snapshot_requested());
    assert_eq!(s.snapshot(0, 2), Err(raft_err(raft::StorageError::SnapshotTemporarilyUnavailable)));
    assert!(s.snapshot_requested());
    let s = restart_unchanged(&mut h, s);
    assert!(!s.snapshot_requested(), "the request is volatile");
}

pub(crate) fn bootstrap_reports_the_snapshot<H: Harness>(mut h: H) {
    let s = bootstrapped(&mut h);
    let state = s.initial_state().unwrap();
    assert_eq!(state.conf_state, voters(&[1, 2, 3]));
    assert_eq!(state.hard_state, hard_state(1, 0, 1));
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (2, 1));
    assert_eq!(s.term(1), Ok(1));
    assert_eq!(s.term(0), Err(raft_err(raft::StorageError::Compacted)));
    assert_eq!(s.snapshot(0, 2).unwrap().data.as_ref(), b"init");
    assert!(!s.snapshot_requested());
    assert!(s.snapshot(2, 2).is_err());
    assert!(s.snapshot_requested());
    restart_unchanged(&mut h, s);
}

pub(crate) fn append_reads_and_overwrites_a_conflicting_suffix<H: Harness>(mut h: H) {
    let mut s = bootstrapped(&mut h);
    s.append(&entries(2..=5, 1)).unwrap();
    assert_eq!(s.entries(2, 6, None, ctx()), Ok(entries(2..=5, 1)));
    // A new leader of term 2 replaced entries 4 and 5 with a single entry 4.
    s.append(&[entry(4, 2)]).unwrap();
    assert_eq!(s.last_index(), Ok(4));
    assert_eq!(terms(&s, 2..=4), [1, 1, 2]);
    let mut s = restart_unchanged(&mut h, s);
    s.append(&entries(5..=6, 2)).unwrap();
    let mut s = restart_unchanged(&mut h, s);
    // Everything after the snapshot replaced at once.
    s.append(&entries(2..=3, 3)).unwrap();
    assert_eq!(s.last_index(), Ok(3));
    assert_eq!(terms(&s, 1..=3), [1, 3, 3]);
    restart_unchanged(&mut h, s);
}

pub(crate) fn refused_appends_change_nothing<H: Harness>(mut h: H) {
    let mut s = bootstrapped(&mut h);
    s.append(&entries(2..=3, 1)).unwrap();
    let before = observe(&s);
    let gap = vec![entry(5, 1)];
    let covered_by_snapshot = vec![entry(1, 1)];
    let not_consecutive = vec![entry(4, 1), entry(6, 1)];
    for bad in [gap, covered_by_snapshot, not_consecutive] {
        assert_invalid(s.append(&bad), "append");
        assert_eq!(observe(&s), before);
    }
    s.append(&[]).unwrap();
    assert_eq!(observe(&s), before);
    restart_unchanged(&mut h, s);
}

pub(crate) fn entries_honour_size_limits_and_bounds<H: Harness>(mut h: H) {
    let mut s = bootstrapped(&mut h);
    let all = entries(2..=6, 1);
    s.append(&all).unwrap();
    let size = |n: usize| -> u64 { all[..n].iter().map(|e| u64::from(e.compute_size())).sum() };
    let count = |max: Option<u64>| s.entries(2, 7, max, ctx()).unwrap().len();
    assert_eq!(s.entries(2, 7, None, ctx()), Ok(all.clone()));
    assert_eq!(s.entries(3, 5, None, ctx()), Ok(all[1..3].to_vec()));
    assert_eq!(count(Some(0)), 1, "at least one entry, whatever the limit");
    assert_eq!(count(Some(size(1))), 1);
    assert_eq!(count(Some(size(3))), 3);
    assert_eq!(count(Some(size(4) - 1)), 3);
    assert_eq!(count(Some(raft::NO_LIMIT)), 5);
    let compacted = || raft_err(raft::StorageError::Compacted);
    let unavailable = || raft_err(raft::StorageError::Unavailable);
    assert_eq!(s.entries(1, 3, None, ctx()), Err(compacted()));
    assert_eq!(s.entries(2, 8, None, ctx()), Err(unavailable()));
    assert_eq!(s.term(0), Err(compacted()));
    assert_eq!(s.term(7), Err(unavailable()));
    assert_eq!(s.term(1), Ok(1), "the snapshot's term is known");
}

pub(crate) fn hard_state_survives_and_commit_never_goes_back<H: Harness>(mut h: H) {
    let mut s = bootstrapped(&mut h);
    s.append(&entries(2..=5, 3)).unwrap();
    s.set_hard_state(&hard_state(3, 2, 2)).unwrap();
    s.set_commit(4).unwrap();
    s.set_commit(3).unwrap();
    assert_eq!(s.hard_state(), hard_state(3, 2, 4));
    let s = restart_unchanged(&mut h, s);
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(3, 2, 4));
}

pub(crate) fn create_snapshot_compacts_and_keeps_retained_entries<H: Harness>(mut h: H) {
    let mut s = bootstrapped(&mut h);
    s.append(&entries(2..=10, 1)).unwrap();
    s.set_commit(8).unwrap();
    assert!(s.snapshot(5, 2).is_err());
    assert!(s.snapshot_requested());
    s.create_snapshot(8, voters(&[1, 2]), b"state at 8".to_vec(), 3).unwrap();
    assert!(!s.snapshot_requested());
    // Entries up to 8 - 3 = 5 are gone; 6..=8 stay for slow followers.
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 10));
    assert_eq!(s.term(5), Err(raft_err(raft::StorageError::Compacted)));
    let snap = s.snapshot(5, 2).unwrap();
    assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (8, 1));
    assert_eq!(snap.data.as_ref(), b"state at 8");
    assert_eq!(s.initial_state().unwrap().conf_state, voters(&[1, 2]));
    let before = observe(&s);
    assert_invalid(s.create_snapshot(9, voters(&[1]), vec![], 0), "create_snapshot"); // past the commit index
    assert_invalid(s.create_snapshot(7, voters(&[1]), vec![], 0), "create_snapshot"); // older than the stored snapshot
    assert_eq!(observe(&s), before);
    let mut s = restart_unchanged(&mut h, s);

    s.set_commit(10).unwrap();
    s.create_snapshot(10, voters(&[1, 2]), b"state at 10".to_vec(), 0).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (11, 10));
    assert_eq!(s.term(10), Ok(1));
    assert_eq!(s.entries(11, 11, None, ctx()), Ok(vec![]));
    let mut s = restart_unchanged(&mut h, s);
    s.append(&[entry(11, 1)]).unwrap();
    restart_unchanged(&mut h, s);
}

pub(crate) fn apply_snapshot_replaces_the_log<H: Harness>(mut h: H) {
    let mut s = bootstrapped(&mut h);
    s.append(&entries(2..=5, 1)).unwrap();
    s.set_hard_state(&hard_state(1, 1, 3)).unwrap();
    let snap = snapshot(7, 2, &[1, 2, 3, 4], b"leader state");
    s.apply_snapshot(&snap).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (8, 7));
    assert_eq!(s.term(7), Ok(2));
    assert_eq!(s.hard_state(), hard_state(2, 1, 7));
    assert_eq!(s.initial_state().unwrap().conf_state, voters(&[1, 2, 3, 4]));
    assert_eq!(s.latest_snapshot(), snap);
    let before = observe(&s);
    assert_invalid(s.apply_snapshot(&snap), "apply_snapshot");
    assert_invalid(s.apply_snapshot(&snapshot(6, 2, &[1], b"")), "apply_snapshot");
    assert_eq!(observe(&s), before);
    let mut s = restart_unchanged(&mut h, s);
    s.append(&[entry(8, 2)]).unwrap();
    restart_unchanged(&mut h, s);
}

pub(crate) fn joiner_installs_the_leaders_snapshot<H: Harness>(mut h: H) {
    let mut s = h.empty();
    s.apply_snapshot(&snapshot(5, 3, &[1, 2], b"x")).unwrap();
    let state = s.initial_state().unwrap();
    assert!(state.initialized());
    assert_eq!(state.hard_state, hard_state(3, 0, 5));
    assert_eq!(s.first_index(), Ok(6));
    let mut s = restart_unchanged(&mut h, s);
    s.append(&[entry(6, 3)]).unwrap();
    restart_unchanged(&mut h, s);
}

/// Handles every Ready in the documented order: snapshot, persist entries, persist hard
/// state, apply committed entries, advance. A single node has no messages to send.
fn drive<S: LogStore>(node: &mut RawNode<S>, applied: &mut Vec<Entry>) {
    while node.has_ready() {
        let mut rd = node.ready();
        if !rd.snapshot().is_empty() {
            node.mut_store().apply_snapshot(rd.snapshot()).unwrap();
        }
        node.mut_store().append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            node.mut_store().set_hard_state(hs).unwrap();
        }
        applied.extend(rd.take_committed_entries());
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            node.mut_store().set_commit(commit).unwrap();
        }
        applied.extend(light.take_committed_entries());
        node.advance_apply();
    }
}

fn proposals(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.to_vec()).collect()
}

pub(crate) fn single_node_raft_keeps_its_commits_across_a_restart<H: Harness>(mut h: H) {
    let config = raft::Config { id: 1, election_tick: 10, heartbeat_tick: 1, ..Default::default() };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let store = h.bootstrapped(snapshot(1, 1, &[1], b""), hard_state(1, 0, 1));
    let mut node = RawNode::new(&config, store, &logger).unwrap();
    let mut applied = Vec::new();
    node.campaign().unwrap();
    drive(&mut node, &mut applied);
    assert_eq!(node.raft.state, StateRole::Leader);
    for data in ["one", "two", "three"] {
        node.propose(vec![], data.into()).unwrap();
        drive(&mut node, &mut applied);
    }
    let wanted: Vec<Vec<u8>> = ["one", "two", "three"].map(Vec::from).into();
    assert_eq!(proposals(&applied), wanted);
    let commit = node.store().hard_state().commit;
    assert_eq!(commit, applied.last().unwrap().index);

    // The process dies: only the store survives.
    let store = h.restart(node.raft.r.raft_log.store);
    assert_eq!(store.hard_state().commit, commit);
    let stored = store.entries(2, commit + 1, None, ctx()).unwrap();
    assert_eq!(proposals(&stored), wanted);

    let mut node = RawNode::new(&config, store, &logger).unwrap();
    assert_eq!(node.raft.raft_log.committed, commit);
    let mut reapplied = Vec::new();
    node.campaign().unwrap();
    drive(&mut node, &mut reapplied);
    node.propose(vec![], b"four".to_vec()).unwrap();
    drive(&mut node, &mut reapplied);
    let mut wanted = wanted;
    wanted.push(b"four".to_vec());
    assert_eq!(proposals(&reapplied), wanted);
}
