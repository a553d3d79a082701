//! The consensus layer as an operator sees it: a cluster formed with `init` + `join`, the Raft
//! leader killed, the whole cluster restarted in another order, leadership handed over.
//! Every check goes through `pgha ctl` (members, token create, transfer-leadership).

use crate::harness::{self, elapsed, show, wait_until, Cluster, ELECTION, SETTLE};
use pgha::clock;

#[test]
fn three_nodes_formed_with_init_and_join_are_voters_in_step() {
    let c = Cluster::new(3);
    // Cluster::new waited for convergence through node1; every member must tell the same story.
    for via in 0..3 {
        let (rows, _) = c.wait_converged(via, &[0, 1, 2]);
        assert!(rows.iter().all(|r| !r.witness), "no witness was asked for: {}", harness::summary(&rows));
        let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids.len(), 3, "member ids are unique: {}", harness::summary(&rows));
        for (row, node) in rows.iter().zip(&c.nodes) {
            assert_eq!(row.address, node.raft, "members shows the Raft address of {}", row.name);
        }
    }
}

#[test]
fn killing_the_raft_leader_elects_another_and_the_restarted_node_catches_up() {
    let mut c = Cluster::new(3);
    let leader = c.wait_leader(0);
    let dead = c.idx(&leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let killed_at = clock::boot_now();
    c.kill9(dead);

    let new_leader = wait_until(ELECTION, "a new leader among the survivors", || {
        let rows = c.members(survivors[0])?;
        rows.iter()
            .find(|r| r.role == "leader" && r.reachable && r.name != leader)
            .map(|r| r.name.clone())
            .ok_or_else(|| harness::summary(&rows))
    });
    eprintln!("{new_leader} leads {:?} after {leader} was killed", elapsed(killed_at));
    assert_ne!(new_leader, leader);

    // A proposal through a survivor's API succeeds.
    let via = survivors[1];
    let out = c.ctl(via, &["--endpoint", &c.nodes[via].api, "token", "create"]);
    assert!(out.status.success(), "token create on a survivor after failover: {}", show(&out));
    assert!(!harness::stdout(&out).is_empty(), "token printed: {}", show(&out));

    c.start(dead);
    let (rows, _) = c.wait_converged(survivors[0], &[0, 1, 2]);
    let back = rows.iter().find(|r| r.name == leader).expect("the restarted node is listed");
    assert_eq!(back.role, "follower", "the restarted node follows: {}", harness::summary(&rows));
}

#[test]
fn all_three_stopped_and_started_in_another_order_elect_a_leader_and_accept_proposals() {
    let mut c = Cluster::new(3);
    for i in 0..3 {
        let status = c.stop(i);
        assert!(status.success(), "{} stops cleanly on SIGTERM: {status}", c.nodes[i].name);
    }
    // Start node3, node1, node2, each once its API answers.
    for i in [2, 0, 1] {
        c.start(i);
        wait_until(SETTLE, &format!("{}'s API answers", c.nodes[i].name), || c.members(i).map(|_| ()));
    }
    let (_, leader) = c.wait_converged(2, &[0, 1, 2]);
    let via = c.idx(&leader);
    let token = c.token(via);
    assert!(!token.is_empty());
    // The proposal is visible everywhere: every applied index moves to the new commit index.
    c.wait_converged(0, &[0, 1, 2]);
}

#[test]
fn leadership_transfer_to_a_follower_makes_it_the_leader() {
    let c = Cluster::new(3);
    let leader = c.wait_leader(0);
    let via = c.idx(&leader);
    let target = (0..3).find(|&i| i != via).expect("a follower");
    transfer_and_wait(&c, via, &c.nodes[target].name);

    // Without --to, through the new leader: any other voter takes over.
    let out = c.ctl(target, &["transfer-leadership"]);
    assert!(out.status.success(), "transfer-leadership without --to: {}", show(&out));
    let before = c.nodes[target].name.clone();
    wait_until(ELECTION, "another member leads", || {
        let now = leader_seen_by(&c, 0)?;
        (now != before).then_some(()).ok_or_else(|| format!("{now} still leads"))
    });
    c.wait_converged(0, &[0, 1, 2]);
}

/// `pgha ctl` uses the API of the node it runs on, which is usually not the Raft leader: the
/// request must reach the leader from there.
#[test]
fn leadership_transfer_asked_through_a_third_member_reaches_the_leader() {
    let c = Cluster::new(3);
    let leader = c.wait_leader(0);
    let followers: Vec<usize> = (0..3).filter(|&i| c.nodes[i].name != leader).collect();
    let (target, caller) = (followers[0], followers[1]);
    transfer_and_wait(&c, caller, &c.nodes[target].name);
    c.wait_converged(0, &[0, 1, 2]);
}

/// The Raft leader as node `via` sees it.
fn leader_seen_by(c: &Cluster, via: usize) -> Result<String, String> {
    let rows = c.members(via)?;
    rows.iter()
        .find(|r| r.role == "leader" && r.reachable)
        .map(|r| r.name.clone())
        .ok_or_else(|| harness::summary(&rows))
}

/// `ctl transfer-leadership --to target` through node `via`; waits until `target` leads.
fn transfer_and_wait(c: &Cluster, via: usize, target: &str) {
    let out = c.ctl(via, &["transfer-leadership", "--to", target]);
    assert!(out.status.success(), "transfer-leadership --to {target}: {}", show(&out));
    wait_until(ELECTION, &format!("{target} leads"), || {
        let now = leader_seen_by(c, 0)?;
        (now == target).then_some(()).ok_or_else(|| format!("{now} leads"))
    });
}
