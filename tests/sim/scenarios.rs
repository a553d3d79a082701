//! Named scenarios in an operator's words, each on a calm network with Patroni's timing
//! (ttl 10 s, loop_wait 1 s, margin 2 s) and the invariants checked throughout as in the
//! random runs.

use crate::sim::{name, new_member, Sim, SimConfig};
use pgha::dcs::mem_store::MemLogStore;
use pgha::dcs::node::RaftRole;
use pgha::dcs::state::{Command, RaftMembership};
use pgha::types::{LeaseEpoch, NodeId};
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A calm cluster that has settled: a leader, a writable holder, everyone caught up.
fn settled(test_name: &'static str, members: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(test_name, 1, members));
    if !sim.run_until_true(secs(30), |s| s.converged().is_ok()) {
        let why = sim.converged().unwrap_err();
        sim.fail(&format!("the cluster did not settle: {why}"));
    }
    sim
}

/// Runs for `d`, failing at the first step where `(holder, epoch)` is not the one writable member.
fn run_keeping_holder(sim: &mut Sim, d: Duration, holder: u64, epoch: LeaseEpoch) {
    sim.run_until_true(d, |s| {
        if s.writable() != Some((holder, epoch)) {
            s.fail(&format!("n{holder} lost its lease (epoch {epoch}); writable now: {:?}", s.writable()));
        }
        false
    });
}

fn other_than(sim: &Sim, not: u64) -> u64 {
    *sim.nodes.keys().find(|id| **id != not).expect("another member")
}

#[test]
fn leader_partitioned_from_the_lease_holder_expires_only_after_holder_deadline() {
    let mut sim = settled("leader_partitioned_from_the_lease_holder_expires_only_after_holder_deadline", 3);
    let (holder, epoch) = sim.writable().expect("a holder");
    if sim.leader() == Some(holder) {
        sim.transfer_leader(other_than(&sim, holder));
        assert!(sim.run_until_true(secs(5), |s| s.led() && s.leader() != Some(holder)));
    }
    let leader = sim.leader().expect("a leader");
    sim.net.cut_both_ways(holder, leader);
    sim.note_all(&format!("cut n{holder} <-> n{leader}"));
    let taken = sim.run_until_true(secs(30), |s| s.writable().is_some_and(|(id, _)| id != holder));
    assert!(taken, "nobody took over from n{holder}: {:?}", sim.converged());
    let (_, new_epoch) = sim.writable().expect("a new holder");
    assert!(new_epoch > epoch);
    let expired_at = sim
        .lease_log
        .iter()
        .find_map(|(t, c, _)| matches!(c, Command::ExpireLease { epoch: e, .. } if *e == epoch).then_some(*t))
        .expect("the Raft leader expired the lease");
    let (last_writable, _) = sim.last_writable[&holder];
    assert!(
        expired_at > last_writable,
        "expired at {expired_at} µs, but n{holder} was writable until {last_writable} µs"
    );
}

#[test]
fn paused_primary_resumes_after_its_lease_was_taken() {
    let mut sim = settled("paused_primary_resumes_after_its_lease_was_taken", 3);
    let (holder, epoch) = sim.writable().expect("a holder");
    // The primary leads Raft too, so the pause also costs an election.
    if sim.leader() != Some(holder) {
        sim.transfer_leader(holder);
        assert!(sim.run_until_true(secs(5), |s| s.led() && s.leader() == Some(holder)));
    }
    let ttl = sim.cfg.ha.ttl;
    sim.pause(holder);
    let taken = sim.run_until_true(ttl * 3, |s| s.writable().is_some_and(|(id, _)| id != holder));
    assert!(taken, "nobody took over from the paused n{holder}");
    let (new_holder, new_epoch) = sim.writable().expect("a new holder");
    assert!(new_epoch > epoch);
    sim.run_for(ttl);
    sim.resume(holder);
    assert_eq!(
        sim.writable(),
        Some((new_holder, new_epoch)),
        "the resumed n{holder} knows its lease ran out"
    );
    sim.run_for(secs(5));
    assert_eq!(
        sim.lease_in(holder),
        Some((name(new_holder), new_epoch)),
        "n{holder} follows the new primary"
    );
    assert_eq!(sim.writable(), Some((new_holder, new_epoch)));
}

#[test]
fn raft_leader_change_alone_never_moves_the_lease() {
    let mut sim = settled("raft_leader_change_alone_never_moves_the_lease", 3);
    let (holder, epoch) = sim.writable().expect("a holder");
    let ids: Vec<u64> = sim.nodes.keys().copied().collect();
    for to in ids.iter().chain(ids.iter()) {
        sim.transfer_leader(*to);
        run_keeping_holder(&mut sim, secs(3), holder, epoch);
    }
    // Losing the Raft leader (not the primary) is a leader change too.
    if sim.leader() == Some(holder) {
        sim.transfer_leader(other_than(&sim, holder));
        run_keeping_holder(&mut sim, secs(3), holder, epoch);
    }
    let leader = sim.leader().expect("a leader");
    assert_ne!(leader, holder);
    sim.crash(leader);
    run_keeping_holder(&mut sim, secs(6), holder, epoch);
    sim.restart(leader);
    run_keeping_holder(&mut sim, secs(6), holder, epoch);
    assert_eq!(sim.checker.epochs_granted(), 1, "the lease never changed hands");
    assert!(sim.converged().is_ok(), "{:?}", sim.converged());
}

#[test]
fn restart_all_nodes_in_another_order_comes_back() {
    let mut sim = settled("restart_all_nodes_in_another_order_comes_back", 5);
    let committed = sim.applied(sim.leader().expect("a leader")).expect("leader runs");
    for id in 1..=5 {
        sim.crash(id);
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(secs(3));
    for id in [4, 2, 5, 1, 3] {
        sim.restart(id);
        sim.run_for(Duration::from_millis(700));
    }
    if !sim.run_until_true(secs(30), |s| s.converged().is_ok()) {
        let why = sim.converged().unwrap_err();
        sim.fail(&format!("the cluster did not come back: {why}"));
    }
    for id in 1..=5 {
        assert!(sim.applied(id).expect("running") >= committed, "n{id} lost committed entries");
    }
}

#[test]
fn learner_joins_and_becomes_voter() {
    let mut sim = settled("learner_joins_and_becomes_voter", 3);
    let leader = sim.leader().expect("a leader");
    let token = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string();
    let create = Command::CreateToken { hash: token.clone(), expires_at_ms: u64::MAX };
    sim.with_core(leader, |c, _| c.propose(create)).expect("leader takes proposals");
    let join = Command::Join { token_hash: token, now_ms: 1, member: new_member(4) };
    sim.with_core(leader, |c, _| c.propose(join)).expect("leader takes proposals");
    assert!(
        sim.run_until_true(secs(2), |s| s.nodes[&leader]
            .core
            .as_ref()
            .and_then(|c| c.state())
            .is_some_and(|st| st.members.contains_key(&name(4)))),
        "the join was not applied"
    );
    // The new member starts with an empty store, as `pgha join` leaves it.
    sim.add_member(4, MemLogStore::new());
    let voter_everywhere = |s: &Sim| {
        s.nodes.values().all(|n| {
            n.core
                .as_ref()
                .and_then(|c| c.state())
                .and_then(|st| st.members.get(&name(4)).map(|m| m.membership))
                == Some(RaftMembership::Voter)
        })
    };
    let joined = sim.run_until_true(secs(30), |s| voter_everywhere(s) && s.converged().is_ok());
    assert!(joined, "n4 did not become a voter: {:?}", sim.converged());
    let n4 = sim.nodes[&4].core.as_ref().expect("n4 runs").status();
    assert!(matches!(n4.role, RaftRole::Follower | RaftRole::Leader), "n4 is {:?}", n4.role);
    let leader = sim.leader().expect("a leader");
    let progress = sim.nodes[&leader].core.as_ref().expect("leader runs").status().progress;
    assert!(progress.iter().any(|p| p.id == NodeId(4) && !p.learner), "leader's progress: {progress:?}");
}

/// The checker's own test: without a safety margin, a holder whose clock runs 0.9 % slow
/// outlives the expiry by a Raft leader whose clock runs 0.9 % fast, and invariant 4 says so.
#[test]
#[should_panic(expected = "still considers itself writable")]
fn a_lease_without_safety_margin_is_caught_by_the_invariants() {
    let mut cfg = SimConfig::new("a_lease_without_safety_margin_is_caught_by_the_invariants", 1, 3);
    cfg.ha.safety_margin = Duration::ZERO;
    let mut sim = Sim::new(cfg);
    for (id, ppm) in [(1, 9_000), (2, -9_000), (3, -9_000)] {
        sim.set_ha(id, false);
        sim.nodes.get_mut(&id).expect("member").clock.ppm = ppm; // at time 0: no jump
    }
    assert!(sim.run_until_true(secs(10), |s| s.led()));
    if sim.leader() != Some(1) {
        sim.transfer_leader(1);
        assert!(sim.run_until_true(secs(5), |s| s.led() && s.leader() == Some(1)));
    }
    let ttl = sim.cfg.ha.ttl;
    sim.with_core(2, |c, now| c.propose_acquire(LeaseEpoch(0), ttl, now)).expect("n2 knows the leader");
    sim.run_for(ttl * 2);
}
