//! Membership changes as an operator makes them: a fourth node joins and is removed again, a
//! witness joins, and joins that must fail (reused, expired, garbled or wrong token, a
//! duplicate name) change nothing, write nothing and say why on one line.

use crate::harness::{self, pause, show, stderr, wait_until, Cluster, SETTLE};
use pgha::api::token::{self, JoinToken};
use std::time::Duration;

/// Three nodes plus node4 joined as a voter, then `ctl remove node4 --force` through node1.
fn four_nodes_then_remove_node4() -> (Cluster, usize) {
    let mut c = Cluster::new(3);
    let n4 = c.add_node("node4");
    let token = c.token(0);
    c.join_ok(n4, &token);
    c.settle(0, &[0, 1, 2, n4]);
    let out = c.ctl(0, &["remove", "node4", "--force"]);
    assert!(out.status.success(), "ctl remove node4 --force: {}", show(&out));
    (c, n4)
}

#[test]
fn a_fourth_node_joins_as_a_voter_and_is_removed() {
    let (c, _) = four_nodes_then_remove_node4();
    c.wait_converged(0, &[0, 1, 2]);
    // The remaining three still accept proposals, and every one of them has forgotten node4.
    c.token(1);
    for via in 0..3 {
        c.wait_converged(via, &[0, 1, 2]);
    }
}

#[test]
fn a_removed_node_stops_by_itself() {
    let (mut c, n4) = four_nodes_then_remove_node4();
    c.wait_converged(0, &[0, 1, 2]);
    let status = c.wait_exit(n4, SETTLE);
    assert!(status.success(), "node4 stops cleanly once removed: {status}; log:\n{}", c.log_text(n4));
    assert!(c.log_text(n4).contains("removed"), "node4 says it was removed:\n{}", c.log_text(n4));
}

/// Removing node4 from {node1..node4} while another member is down: Raft passes through the
/// joint configuration {1,2,3,4} & {1,2,3}, whose old half needs node4's votes (3 of 4).
#[test]
fn removing_a_member_while_another_is_down_keeps_the_cluster_working() {
    let mut c = Cluster::new(3);
    let n4 = c.add_node("node4");
    let token = c.token(0);
    c.join_ok(n4, &token);
    let (_, leader) = c.settle(0, &[0, 1, 2, n4]);
    let down = (0..3).find(|&i| c.nodes[i].name != leader).expect("a follower among node1..3");
    c.kill9(down);
    let via = c.idx(&leader);
    let out = c.ctl(via, &["remove", "node4", "--force"]);
    assert!(out.status.success(), "ctl remove node4 --force: {}", show(&out));
    wait_until(SETTLE, "node4 gone from members", || {
        let rows = c.members(via)?;
        (rows.len() == 3 && rows.iter().all(|r| r.name != "node4"))
            .then_some(())
            .ok_or_else(|| harness::summary(&rows))
    });
    // The two live voters of {node1, node2, node3} are a majority: proposals must succeed.
    c.token(via);
}

#[test]
fn a_witness_joins_and_votes() {
    let mut c = Cluster::new(2);
    let w = c.add_witness("witness1");
    let (rows, _) = c.wait_converged(0, &[0, 1, w]);
    for r in &rows {
        assert_eq!(
            r.witness,
            r.name == "witness1",
            "only witness1 is a witness: {}",
            harness::summary(&rows)
        );
    }
    // A voter, so the two data nodes plus the witness survive the loss of one data node.
    let leader = c.wait_leader(0);
    let victim = if leader == "node1" { 1 } else { 0 };
    c.kill9(victim);
    let survivor = 1 - victim;
    let t = c.token(survivor);
    assert!(!t.is_empty());
    c.wait_leader(survivor);
}

/// A failed join: non-zero exit, one line on stderr that contains `why`.
fn assert_refused(out: &std::process::Output, why: &str, case: &str) {
    assert!(!out.status.success(), "{case}: join must fail: {}", show(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{case}: one line on stderr: {}", show(out));
    assert!(err.contains(why), "{case}: stderr says {why:?}: {}", show(out));
}

#[test]
fn failed_joins_change_nothing_and_say_why() {
    let mut c = Cluster::new(2);
    let n3 = c.add_node("node3");
    let config_before = std::fs::read(&c.nodes[n3].config).expect("node3 config");
    let unchanged = |c: &Cluster, case: &str| {
        let n = &c.nodes[n3];
        assert!(!n.tls_dir().exists(), "{case}: no certificates written in {}", n.tls_dir().display());
        assert!(!n.raft_dir().exists(), "{case}: no Raft store written in {}", n.raft_dir().display());
        let now = std::fs::read(&n.config).expect("node3 config");
        assert_eq!(now, config_before, "{case}: the config file is untouched");
        let rows = c.members(0).expect("members");
        assert_eq!(rows.len(), 2, "{case}: member count unchanged: {}", harness::summary(&rows));
    };

    let used = c.used_tokens[0].clone();
    assert_refused(&c.join(n3, &used, &[]), "already used", "a reused token");
    unchanged(&c, "a reused token");

    let out = c.ctl(0, &["token", "create", "--ttl", "1"]);
    assert!(out.status.success(), "token create --ttl 1: {}", show(&out));
    let short = harness::stdout(&out);
    // Token expiry is wall-clock time in the replicated state: let two seconds pass.
    pause(Duration::from_secs(2));
    assert_refused(&c.join(n3, &short, &[]), "expired", "an expired token");
    unchanged(&c, "an expired token");

    let fresh = c.token(0);
    let garbled = &fresh[..fresh.len() / 2];
    assert_refused(&c.join(n3, garbled, &[]), "join token", "a truncated token");
    assert_refused(&c.join(n3, "not a token!", &[]), "join token", "a garbled token");
    unchanged(&c, "a garbled token");
    // Without a config file, a bad token is refused before any file is created.
    let missing = c.root.join("nowhere.yml");
    let out = harness::run(&[
        "join",
        "%%%",
        "--config",
        missing.to_str().expect("utf-8"),
        "--name",
        "node9",
        "--advertise",
        "127.0.0.1",
    ]);
    assert_refused(&out, "join token", "a garbled token with flags");
    assert!(!missing.exists(), "no config file written for a garbled token");

    let mut forged = JoinToken::decode(&fresh).expect("a fresh token decodes");
    forged.secret = token::new_secret();
    assert_refused(&c.join(n3, &forged.encode(), &[]), "unknown", "a token with a wrong secret");
    unchanged(&c, "a token with a wrong secret");

    let dup = c.add_node_as("dup", "node2", "");
    assert_refused(&c.join(dup, &fresh, &[]), "already exists", "a duplicate member name");
    assert!(!c.nodes[dup].tls_dir().exists() && !c.nodes[dup].raft_dir().exists(), "nothing written for dup");
    unchanged(&c, "a duplicate member name");

    // None of the refusals consumed the fresh token: node3 joins with it.
    c.join_ok(n3, &fresh);
    c.settle(0, &[0, 1, n3]);
    wait_until(SETTLE, "three members", || {
        let rows = c.members(1)?;
        (rows.len() == 3).then_some(()).ok_or_else(|| harness::summary(&rows))
    });
}
