//! Tests of `RaftCore` driven by hand over the memory store: restarts replay committed entries,
//! and nothing replayed may be mistaken for a new proposal or a new lease renewal.

use super::mem_store::MemLogStore;
use super::node::{encode_state, CoreConfig, RaftCore};
use super::state::{CaMaterial, ClusterState, NewMember, Outcome, Tags};
use crate::clock::BootInstant;
use crate::config::dynamic::DynamicConfig;
use crate::types::{LeaseEpoch, MemberName, NodeId};
use raft::eraftpb::{ConfState, HardState, Snapshot};
use std::time::Duration;

fn at(ms: u64) -> BootInstant {
    BootInstant::from_duration(Duration::from_millis(ms))
}

fn single_node_store() -> MemLogStore {
    let name = MemberName::new("n1").unwrap();
    let state = ClusterState::bootstrap(
        "s".into(),
        "inc".into(),
        NewMember {
            name,
            witness: false,
            api_address: "a:1".into(),
            raft_address: "r:1".into(),
            pg_address: None,
            tags: Tags::default(),
            version: "t".into(),
        },
        CaMaterial { cert_pem: String::new(), key_pem: String::new() },
        DynamicConfig::default(),
    );
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 1;
    snap.mut_metadata().term = 1;
    let mut cs = ConfState::default();
    cs.set_voters(vec![1]);
    snap.mut_metadata().set_conf_state(cs);
    snap.data = encode_state(&state).into();
    MemLogStore::bootstrap(snap, HardState { term: 1, commit: 1, ..Default::default() }).unwrap()
}

fn core(store: MemLogStore, instance: u32) -> RaftCore<MemLogStore> {
    let mut cfg = CoreConfig::new(NodeId(1), MemberName::new("n1").unwrap(), Duration::from_secs(2));
    cfg.instance = instance;
    cfg.fixed_election_timeout = Some(10);
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    RaftCore::new(store, cfg, &logger).unwrap()
}

/// Runs ticks and Ready rounds until `until` holds or 200 rounds pass.
fn drive(
    c: &mut RaftCore<MemLogStore>,
    now: BootInstant,
    mut until: impl FnMut(&RaftCore<MemLogStore>) -> bool,
) -> Vec<super::node::Applied> {
    let mut applied = Vec::new();
    for _ in 0..200 {
        c.tick(now);
        applied.extend(c.advance(now).unwrap().applied);
        if until(c) {
            break;
        }
    }
    applied
}

#[test]
fn a_single_member_elects_itself_and_grants_the_lease() {
    let mut c = core(single_node_store(), 1);
    drive(&mut c, at(0), |c| c.is_leader());
    let id = c.propose_acquire(LeaseEpoch(0), Duration::from_secs(10), at(1_000)).unwrap();
    let applied = drive(&mut c, at(1_000), |c| c.state().unwrap().lease.is_some());
    let a = applied.iter().find(|a| a.proposal == Some(id)).expect("our proposal applied");
    assert_eq!(a.outcome, Outcome::LeaseGranted { epoch: LeaseEpoch(1) });
    assert_eq!(c.lease_view(at(1_500)).deadline, Some(at(9_000)), "sent at 1 s + ttl 10 s - margin 2 s");
}

#[test]
fn after_a_restart_replayed_entries_neither_resolve_new_proposals_nor_extend_the_lease() {
    let mut c = core(single_node_store(), 1);
    drive(&mut c, at(0), |c| c.is_leader());
    let first = c.propose_acquire(LeaseEpoch(0), Duration::from_secs(10), at(1_000)).unwrap();
    drive(&mut c, at(1_000), |c| c.state().unwrap().lease.is_some());
    let store = c.crash_copy_of_store();
    drop(c);

    // The same member starts again (a new run, a new instance) and proposes at once: its first
    // proposal must not be confused with the replayed grant, which had the same sequence number.
    let mut c = core(store, 2);
    let applied = drive(&mut c, at(20_000), |c| c.is_leader());
    let replayed: Vec<_> = applied.iter().filter_map(|a| a.proposal).collect();
    assert!(replayed.contains(&first), "the grant is replayed from the log");
    let renew = c.propose_renew(LeaseEpoch(1), Duration::from_secs(10), at(20_000)).unwrap();
    assert_ne!(renew, first);
    assert_eq!(renew.seq, first.seq, "same sequence number, told apart by the instance");
    // Until the new renewal is applied, the restarted holder has no time at all on the lease,
    // even though the replicated state names it holder.
    assert_eq!(c.state().unwrap().lease.as_ref().map(|l| l.holder.as_str()), Some("n1"));
    assert_eq!(c.lease_view(at(20_000)).deadline, None);
    let applied = drive(&mut c, at(20_100), |c| c.lease_view(at(20_100)).deadline.is_some());
    assert!(applied.iter().any(|a| a.proposal == Some(renew) && a.outcome.is_accepted()));
    assert_eq!(c.lease_view(at(20_100)).deadline, Some(at(28_000)));
}
