//! Focused reproductions of bugs in `src/` that the simulation exposed, kept as regression
//! tests now that they are fixed. Originally each was `#[ignore]`d
//! with the bug named, and passes once the bug is fixed: run them with
//! `cargo test --test sim bugs -- --ignored`.

use crate::net::NetConfig;
use crate::sim::{Sim, SimConfig};
use pgha::dcs::node::{Proposal, ProposeError};
use pgha::dcs::state::Command;
use pgha::types::LeaseEpoch;
use raft::eraftpb::{Entry, Message, MessageType};
use std::time::Duration;

/// `SIM_EXPOSE_KNOWN_BUGS=1`: the random runs stop steering around the known bugs below.
pub fn expose_known_bugs() -> bool {
    std::env::var("SIM_EXPOSE_KNOWN_BUGS").is_ok_and(|v| v == "1")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A calm cluster whose lease clients are off: the test proposes by hand.
fn manual(test_name: &'static str, members: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(test_name, 1, members));
    for id in 1..=members {
        sim.set_ha(id, false);
    }
    assert!(sim.run_until_true(secs(10), |s| s.led()), "no Raft leader");
    sim
}

fn forwarded_proposal(from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = from;
    m.to = to;
    let proposal = Proposal { id: None, command: Command::PruneTokens { now_ms: 1 } };
    let e = Entry { data: serde_json::to_vec(&proposal).unwrap().into(), ..Default::default() };
    m.set_entries(vec![e].into());
    m
}

/// `RaftCore::step` passes raft-rs's `ProposalDropped` on as `CoreError::Raft`, and
/// `driver::run` stops the member on any `step` error (`core.step(msg)?`). raft-rs returns it
/// for a proposal forwarded by a follower that reaches a leader in the middle of a leadership
/// transfer, or a member that knows no leader (a candidate, or a follower that just lost its
/// leader). So one routine message takes a healthy member down. (Found by the simulation at
/// seed 11 of `three_members_survive_random_faults`: a transfer while a follower renewed.)
#[test]
fn a_forwarded_proposal_reaching_a_member_that_cannot_take_it_is_not_fatal() {
    let mut sim = manual("a_forwarded_proposal_reaching_a_member_that_cannot_take_it_is_not_fatal", 3);
    let leader = sim.leader().unwrap();
    let (a, b) = {
        let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        (others[0], others[1])
    };
    // The transfer to `a` cannot finish while `a` is cut off.
    sim.partition(&[vec![leader, b], vec![a]]);
    sim.with_core(leader, |c, _| c.transfer_leader(pgha::types::NodeId(a)));
    let r = sim.nodes.get_mut(&leader).unwrap().core.as_mut().unwrap().step(forwarded_proposal(b, leader));
    assert!(r.is_ok(), "a leader transferring leadership failed on a forwarded proposal: {r:?}");
    // A member that knows no leader.
    let mut fresh = manual("a_forwarded_proposal_reaching_a_member_that_cannot_take_it_is_not_fatal", 3);
    fresh.crash(1);
    fresh.restart(1);
    let r = fresh.nodes.get_mut(&1).unwrap().core.as_mut().unwrap().step(forwarded_proposal(2, 1));
    assert!(r.is_ok(), "a member without a leader failed on a forwarded proposal: {r:?}");
}

/// Nothing in pgha calls raft-rs's `report_snapshot`. When the leader sends a `MsgSnapshot`,
/// its progress for that follower enters `ProgressState::Snapshot`, where raft-rs sends it only
/// heartbeats until the follower's append response raises `matched` to the snapshot's index or
/// the application reports the snapshot's status. So the follower never receives another entry
/// while this leader lasts if
/// - the snapshot or that one response is lost (a dropped frame, a broken connection, a full
///   peer queue) — this test; found at seeds 327 and 375 of `five_members_survive_random_faults`;
/// - or a stale rejection overtakes the response: the leader, already out of `Snapshot` with
///   `matched` = the snapshot's index, probes back below its compacted log, sends the same
///   snapshot again and re-enters `Snapshot`; the answer (same index) no longer raises
///   `matched`, so raft-rs never leaves `Snapshot` (`Progress::maybe_update` returns false before
///   `is_snapshot_caught_up` is checked). Found at seed 302 of the same test, a follower resuming
///   from a pause with queued appends; `SIM_EXPOSE_KNOWN_BUGS=1` finds such stalls within a few
///   hundred seeds.
///
/// etcd's servers report every snapshot send (`ReportSnapshot` with `SnapshotFinish` or
/// `SnapshotFailure`); pgha's transport should do the same, via a `RaftCore` method.
#[test]
fn a_lost_snapshot_or_its_reply_stalls_the_follower() {
    let mut cfg = SimConfig::new("a_lost_snapshot_or_its_reply_stalls_the_follower", 1, 3);
    cfg.snapshot_every = 5;
    cfg.retain_entries = 0;
    cfg.net = NetConfig::calm();
    let mut sim = Sim::new(cfg);
    assert!(sim.run_until_true(secs(20), |s| s.converged().is_ok()), "{:?}", sim.converged());
    let leader = sim.leader().unwrap();
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    let rest: Vec<u64> = (1..=3).filter(|id| *id != lagging).collect();
    sim.partition(&[vec![lagging], rest]);
    // Renewals go on without it, and the log is compacted past its last entry.
    sim.run_for(secs(8));
    sim.net.lose_snapshots = 1;
    sim.heal();
    let caught_up =
        sim.run_until_true(secs(30), |s| s.applied(lagging) == s.leader().and_then(|l| s.applied(l)));
    assert!(
        caught_up,
        "n{lagging} is still at applied index {:?} while the leader is at {:?}, 30 s after one lost snapshot",
        sim.applied(lagging),
        sim.leader().and_then(|l| sim.applied(l))
    );
}

/// A renewal id is the proposer's `ProposalId::seq`, which starts again at 1 when the member
/// restarts, and `propose_acquire`/`propose_renew` record the send time before Raft even takes
/// the proposal. `HolderClock::observe` runs after every apply and matches the lease's renewal
/// id against those send times, so a restarted member that held a lease under renewal id 1
/// takes the send time of its *new* incarnation's first proposal as the start of its old
/// grant, while the Raft side timed that grant from long before. Here the holder crashes just
/// after its grant, restarts 4 s later (more than the 2 s margin) cut off from the others, and
/// its HA loop, seeing the snapshot's state (nobody holds the lease), asks for the lease once.
#[test]
fn a_restarted_holder_claims_no_time_for_a_grant_from_before_its_crash() {
    let mut sim = manual("a_restarted_holder_claims_no_time_for_a_grant_from_before_its_crash", 3);
    let leader = sim.leader().unwrap();
    let h = (1..=3).find(|id| *id != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != h).collect();
    let ttl = sim.cfg.ha.ttl;
    let id = sim.with_core(h, |c, now| c.propose_acquire(LeaseEpoch(0), ttl, now)).unwrap();
    assert_eq!(id.seq, 1, "the grant is this incarnation's first proposal");
    assert!(sim.run_until_true(secs(1), |s| s.writable() == Some((h, LeaseEpoch(1)))));
    sim.crash(h);
    sim.run_for(secs(4));
    sim.partition(&[vec![h], others.clone()]);
    sim.restart(h);
    let again = sim.with_core(h, |c, now| c.propose_acquire(LeaseEpoch(0), ttl, now));
    assert_eq!(again, Err(ProposeError::NoLeader));
    assert_eq!(
        sim.writable(),
        None,
        "n{h} replayed its old grant (renewal id 1) and timed it from the send of a proposal that never reached Raft"
    );
    // Were it writable, the others would expire the grant ttl after it was applied and grant
    // epoch 2 while n{h} still believes itself writable: the invariants fail below.
    for id in others {
        sim.set_ha(id, true);
    }
    sim.run_for(secs(15));
}

/// The same reused renewal id through the leader's timer: a restarted holder that renews the
/// lease its state says it holds (an HA loop trusting the replicated state would) sends
/// renewal id 1 again. The renewal is accepted but the lease's (epoch, renewal) does not
/// change, so `ExpiryTimer::observe` keeps timing from the original grant, while the holder
/// counts its deadline from this renewal's send: the expiry commits while it still considers
/// itself writable (invariant 4).
#[test]
fn a_renewal_that_reuses_the_renewal_id_restarts_the_leader_timer() {
    let mut sim = manual("a_renewal_that_reuses_the_renewal_id_restarts_the_leader_timer", 3);
    let leader = sim.leader().unwrap();
    let h = (1..=3).find(|id| *id != leader).unwrap();
    let ttl = sim.cfg.ha.ttl;
    sim.with_core(h, |c, now| c.propose_acquire(LeaseEpoch(0), ttl, now)).unwrap();
    assert!(sim.run_until_true(secs(1), |s| s.writable() == Some((h, LeaseEpoch(1)))));
    sim.crash(h);
    sim.run_for(secs(4));
    sim.restart(h);
    assert!(
        sim.run_until_true(secs(3), |s| s.led() && s.lease_in(h).is_some_and(|(_, e)| e == LeaseEpoch(1)))
    );
    assert_eq!(sim.writable(), None, "a restarted holder claims no time by itself");
    let id = sim.with_core(h, |c, now| c.propose_renew(LeaseEpoch(1), ttl, now)).unwrap();
    assert_eq!(id.seq, 1);
    assert!(sim.run_until_true(secs(1), |s| s.writable() == Some((h, LeaseEpoch(1)))));
    // The leader must now time the lease from this renewal; the invariants fail if it does not.
    sim.run_for(secs(12));
    let expired = sim.lease_log.iter().any(|(_, c, _)| matches!(c, Command::ExpireLease { .. }));
    assert!(expired, "the lease, no longer renewed, expires");
}
