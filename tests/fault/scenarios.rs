//! The scenarios, one `#[test]` each, named as an operator would say them (those about disks
//! and the Raft log are in `storage`). Plain `#[test]`s are the fast subset CI runs;
//! `#[ignore]`d ones run with `scripts/fault-suite.sh`.
//! docs/faults.md says what each one does and asserts.

use crate::cluster::FirstNode;
use crate::harness::{pause, wait_until};
use crate::net::{node_addr, Filter};
use crate::scenario::{Opts, Scenario, CONVERGE, FAILOVER};
use nix::sys::signal::Signal;
use std::time::Duration;

/// The default lease ttl (docs/defaults.md).
pub(crate) const TTL: Duration = Duration::from_secs(4);
/// Steady writes before a fault, so the history has something to lose.
pub(crate) const STEADY: Duration = Duration::from_secs(3);
/// How long a partition is held after the majority side has a primary: clients keep trying
/// the cut-off node meanwhile.
pub(crate) const HOLD: Duration = Duration::from_secs(10);

pub(crate) fn others(s: &Scenario, of: usize) -> Vec<usize> {
    (0..s.c.nodes.len()).filter(|&i| i != of).collect()
}

// ---------------------------------------------------------------- fast subset (CI)

/// The primary's machine dies (pgha and Postgres, kill -9) in strict synchronous mode: a
/// replica takes over with no acknowledged write lost; the old primary comes back, is rewound
/// and streams.
#[test]
fn kill9_of_the_primary_node() {
    let Some(mut s) = Scenario::new("kill9_of_the_primary_node", Opts::synchronous()) else { return };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    s.mark("kill -9 of the primary's node");
    s.c.kill9_node(p);
    s.wait_new_primary(p, FAILOVER);
    s.c.start(p);
    s.fault_over();
    s.finish(CONVERGE);
}

/// The primary is cut off from the other nodes (clients still reach it) in asynchronous mode:
/// it must stop acknowledging before the majority's new primary does; after the heal it is
/// demoted, rewound and streams from the new primary.
#[test]
fn partition_isolating_the_primary_then_heal() {
    let Some(mut s) = Scenario::new("partition_isolating_the_primary_then_heal", Opts::asynchronous()) else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    s.c.net.partition(&[p], &others(&s, p));
    s.wait_new_primary(p, FAILOVER);
    pause(HOLD);
    s.c.net.heal();
    s.fault_over();
    s.finish(CONVERGE);
}

/// The primary's pgha hangs (SIGSTOP) for three ttls, then resumes: its fencer kills Postgres
/// at the lease deadline, before a replica is promoted; the resumed pgha finds itself a
/// former primary and follows.
#[test]
fn sigstop_of_pgha_on_the_primary_past_ttl() {
    let Some(mut s) = Scenario::new("sigstop_of_pgha_on_the_primary_past_ttl", Opts::asynchronous()) else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    s.c.signal(p, Signal::SIGSTOP);
    let n = s.wait_new_primary(p, FAILOVER);
    assert!(
        s.c.postmaster_pid(p).is_none(),
        "{} was promoted while the stopped primary's postmaster still runs",
        s.c.nodes[n].name
    );
    pause((TTL * 3).saturating_sub(TTL));
    s.c.signal(p, Signal::SIGCONT);
    s.fault_over();
    s.finish(CONVERGE);
}

// ---------------------------------------------------------------- the whole suite

/// kill -9 of the primary's pgha alone: its fencer (pipe EOF) and the parent-death signal kill
/// Postgres at once; a replica is promoted only after that.
#[test]
#[ignore]
fn kill9_of_pgha_alone_on_the_primary() {
    let Some(mut s) = Scenario::new("kill9_of_pgha_alone_on_the_primary", Opts::synchronous()) else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    s.c.kill9(p);
    let n = s.wait_new_primary(p, FAILOVER);
    assert!(
        s.c.postmaster_pid(p).is_none(),
        "{} was promoted while the old primary's postmaster still runs without its pgha",
        s.c.nodes[n].name
    );
    s.c.start(p);
    s.fault_over();
    s.finish(CONVERGE);
}

/// kill -9 of the primary's postmaster alone: pgha restarts it in place (or fails over);
/// nothing acknowledged is lost.
#[test]
#[ignore]
fn kill9_of_postgres_alone_on_the_primary() {
    let Some(mut s) = Scenario::new("kill9_of_postgres_alone_on_the_primary", Opts::synchronous()) else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    s.c.kill9_postgres(p);
    s.fault_over();
    s.finish(CONVERGE);
}

/// A replica is cut off from the other nodes for a while: the primary stays the primary (no
/// needless failover); after the heal the replica streams again.
#[test]
#[ignore]
fn partition_isolating_a_replica() {
    let Some(mut s) = Scenario::new("partition_isolating_a_replica", Opts::asynchronous()) else { return };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    let r = others(&s, p)[0];
    s.c.net.partition(&[r], &others(&s, r));
    pause(HOLD + TTL * 2);
    assert_eq!(s.primaries(), vec![p], "the primary must not change when a replica is cut off");
    s.c.net.heal();
    s.fault_over();
    let report = s.finish(CONVERGE);
    assert_eq!(report.groups.len(), 1, "no failover happened: {:?}", report.groups);
}

/// The Raft leader, a replica (leadership moved there first), is cut off: the others elect a
/// new leader; the primary keeps or regains its lease; after the heal all converge.
#[test]
#[ignore]
fn partition_of_the_raft_leader_that_is_not_the_primary() {
    let Some(mut s) =
        Scenario::new("partition_of_the_raft_leader_that_is_not_the_primary", Opts::synchronous())
    else {
        return;
    };
    let p = s.primary();
    let r = others(&s, p)[0];
    let to = s.c.nodes[r].name.clone();
    wait_until(FAILOVER, "Raft leadership on a replica", || {
        if s.c.raft_leader_seen_by(&[p])? == r {
            return Ok(());
        }
        s.c.ctl(&["transfer-leadership", "--to", &to])?;
        Err("transfer requested".to_string())
    });
    s.start_writes();
    pause(STEADY);
    s.c.net.partition(&[r], &others(&s, r));
    wait_until(FAILOVER, "a new Raft leader on the majority side", || {
        let l = s.c.raft_leader_seen_by(&others(&s, r))?;
        (l != r).then_some(()).ok_or_else(|| "still the cut-off node".to_string())
    });
    s.wait_writes(20, FAILOVER, "writes continue while the Raft leader is cut off");
    pause(HOLD);
    s.c.net.heal();
    s.fault_over();
    s.finish(CONVERGE);
}

/// Two of three nodes die (kill -9 of pgha and Postgres): the primary loses its lease and
/// Postgres stops accepting writes (fenced) within about a ttl; both come back and the
/// cluster converges with nothing acknowledged lost (strict synchronous mode).
#[test]
#[ignore]
fn loss_of_raft_quorum_and_recovery() {
    let Some(mut s) = Scenario::new("loss_of_raft_quorum_and_recovery", Opts::synchronous()) else { return };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    let lost = others(&s, p);
    for &i in &lost {
        s.c.kill9_node(i);
    }
    wait_until(FAILOVER, "the primary without quorum stops being a writable primary", || {
        match s.primaries().as_slice() {
            [] => Ok(()),
            other => Err(format!("primaries {other:?}")),
        }
    });
    pause(HOLD);
    for &i in &lost {
        s.c.start(i);
    }
    s.fault_over();
    s.finish(CONVERGE);
}

/// 3 data nodes + 2 witnesses survive two failures: a witness dies, then the primary's node;
/// a replica is promoted by the remaining 3 of 5 voters.
#[test]
#[ignore]
fn a_witness_lost_in_the_3_plus_2_layout() {
    let opts = Opts { data: 3, witnesses: 2, ..Opts::synchronous() };
    let Some(mut s) = Scenario::new("a_witness_lost_in_the_3_plus_2_layout", opts) else { return };
    s.start_writes();
    pause(STEADY);
    let w = s.c.idx("witness4");
    s.c.kill9(w);
    let p = s.primary();
    s.c.kill9_node(p);
    s.wait_new_primary(p, FAILOVER);
    s.c.start(w);
    s.c.start(p);
    s.fault_over();
    s.finish(CONVERGE);
}

/// A replica that lags by more than `maximum_lag_on_failover` (its WAL stream cut, Raft
/// still connected) is never promoted when the primary dies; the other replica is.
#[test]
#[ignore]
fn a_replica_lagging_beyond_maximum_lag_on_failover_when_the_primary_dies() {
    let Some(mut s) = Scenario::new(
        "a_replica_lagging_beyond_maximum_lag_on_failover_when_the_primary_dies",
        Opts::asynchronous(),
    ) else {
        return;
    };
    let p = s.primary();
    let o = others(&s, p);
    let (lagging, good) = (o[0], o[1]);
    s.start_writes();
    pause(STEADY);
    // Cut only Postgres traffic between the primary and the lagging replica.
    s.c.net.filter(lagging, &Filter { cut_tcp: vec![(node_addr(p), 5432)], ..Filter::default() });
    s.c.psql(p, "CREATE TABLE IF NOT EXISTS fault_filler (x text); INSERT INTO fault_filler SELECT repeat('x', 1000) FROM generate_series(1, 4000)")
        .expect("write 4 MB of WAL on the primary");
    // The lag must be visible in the replicated state before the primary dies.
    wait_until(FAILOVER, "pgha reports the replica's lag", || {
        let list = s.c.ctl(&["list", "--format", "json"])?;
        let rows: serde_json::Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
        let lag = rows
            .as_array()
            .and_then(|a| a.iter().find(|r| r["Member"] == s.c.nodes[lagging].name.as_str()))
            .map(|r| r["Receive Lag"].clone());
        match lag.as_ref().and_then(|l| l.as_f64()) {
            Some(mb) if mb >= 2.0 => Ok(()),
            _ => Err(format!("lag {lag:?}")),
        }
    });
    s.c.kill9_node(p);
    let n = s.wait_new_primary(p, FAILOVER);
    assert_eq!(n, good, "the lagging replica {} must not be promoted", s.c.nodes[lagging].name);
    s.c.net.heal();
    s.c.start(p);
    s.fault_over();
    // The old primary's pg_rewind took 63 s in one run here (docs/faults.md): twice the bound.
    s.finish(CONVERGE * 2);
}

/// A switchover, then a failover (`ctl failover --candidate`) to the third node, under write
/// load in strict synchronous mode: nothing acknowledged lost.
#[test]
#[ignore]
fn switchover_and_failover_under_write_load() {
    let Some(mut s) = Scenario::new("switchover_and_failover_under_write_load", Opts::synchronous()) else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    let to = s.c.nodes[others(&s, p)[0]].name.clone();
    wait_until(FAILOVER, "switchover accepted", || s.c.ctl(&["switchover", "--candidate", &to, "--force"]));
    let n = s.wait_new_primary(p, FAILOVER);
    s.wait_converged(CONVERGE);
    s.wait_writes(20, FAILOVER, "writes after the switchover");
    let third = s.c.nodes[(0..3).find(|&i| i != p && i != n).unwrap()].name.clone();
    wait_until(FAILOVER, "failover accepted", || s.c.ctl(&["failover", "--candidate", &third, "--force"]));
    s.wait_new_primary(n, FAILOVER);
    s.fault_over();
    s.finish(CONVERGE);
}

/// Every node restarted in turn (SIGTERM, start, streaming again), the primary last, in
/// strict synchronous mode.
#[test]
#[ignore]
fn rolling_restart_of_all_nodes() {
    let Some(mut s) = Scenario::new("rolling_restart_of_all_nodes", Opts::synchronous()) else { return };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    let mut order = others(&s, p);
    order.push(p);
    for i in order {
        s.mark(&format!("restarting {}", s.c.nodes[i].name));
        s.c.stop(i);
        s.c.start(i);
        s.wait_converged(CONVERGE);
        s.wait_writes(10, FAILOVER, "writes after a restart");
    }
    s.fault_over();
    s.finish(CONVERGE);
}

/// A 4th node joins under load and streams; then a replica is stopped and removed.
#[test]
#[ignore]
fn a_4th_node_joining_and_a_node_removed_under_load() {
    let Some(mut s) = Scenario::new("a_4th_node_joining_and_a_node_removed_under_load", Opts::synchronous())
    else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let n4 = s.c.add_node();
    let all: Vec<String> = s.c.nodes.iter().map(|n| n.name.clone()).collect();
    s.c.wait_voters(&all);
    s.wait_converged(CONVERGE);
    let p = s.primary();
    let r = others(&s, p).into_iter().find(|&i| i != n4).unwrap();
    let name = s.c.nodes[r].name.clone();
    s.c.stop(r);
    wait_until(FAILOVER, "remove accepted", || s.c.ctl(&["remove", &name, "--force"]));
    let left: Vec<String> = all.into_iter().filter(|n| *n != name).collect();
    s.c.wait_voters(&left);
    s.c.forget(r);
    s.fault_over();
    s.finish(CONVERGE);
}

/// The whole cluster stops at once (kill -9 of every node) and starts again in another order.
#[test]
#[ignore]
fn cold_restart_of_the_whole_cluster() {
    let Some(mut s) = Scenario::new("cold_restart_of_the_whole_cluster", Opts::synchronous()) else { return };
    s.start_writes();
    pause(STEADY);
    for i in 0..3 {
        s.c.kill9_node(i);
    }
    pause(TTL);
    for i in [2, 0, 1] {
        s.c.start(i);
    }
    s.fault_over();
    s.finish(CONVERGE);
}

/// The primary can send but not receive (its input from the other nodes dropped): it loses
/// its lease and is fenced; a replica takes over; after the heal it follows.
#[test]
#[ignore]
fn asymmetric_partition_primary_sends_but_does_not_receive() {
    let Some(mut s) =
        Scenario::new("asymmetric_partition_primary_sends_but_does_not_receive", Opts::asynchronous())
    else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let p = s.primary();
    let from: Vec<String> = others(&s, p).into_iter().map(node_addr).collect();
    s.c.net.filter(p, &Filter { drop_from: from, ..Filter::default() });
    s.wait_new_primary(p, FAILOVER);
    pause(HOLD);
    s.c.net.heal();
    s.fault_over();
    s.finish(CONVERGE);
}

/// 100 ms between nodes (each way, so a round trip between two nodes takes 200 ms more) for
/// 30 s under write load in strict synchronous mode: every connection between nodes passes a
/// userspace delay relay (this kernel has no sch_netem; see `relay`). The lease must hold
/// through it: no failover, writes go on (slower).
#[test]
#[ignore]
fn a_100ms_delay_between_nodes() {
    let opts = Opts { first: FirstNode { relayed: true, ..FirstNode::default() }, ..Opts::synchronous() };
    let Some(mut s) = Scenario::new("a_100ms_delay_between_nodes", opts) else { return };
    s.start_writes();
    pause(STEADY);
    let before = s.primaries();
    s.c.relay.as_ref().expect("relayed").set_delay(Duration::from_millis(100));
    eprintln!("fault {}: 100 ms each way between the nodes for 30 s", s.name);
    pause(Duration::from_secs(30));
    let during = s.primaries();
    s.c.relay.as_ref().expect("relayed").set_delay(Duration::ZERO);
    s.fault_over();
    assert_eq!(during, before, "the primary changed under a 100 ms delay");
    s.finish(CONVERGE);
}

/// 5 % packet loss on every node's link for 30 s under write load.
#[test]
#[ignore]
fn packet_loss_between_nodes() {
    let Some(mut s) = Scenario::new("packet_loss_between_nodes", Opts::synchronous()) else { return };
    s.start_writes();
    pause(STEADY);
    for i in 0..3 {
        s.c.net.filter(i, &Filter { loss_percent: 5, ..Filter::default() });
    }
    pause(Duration::from_secs(30));
    s.c.net.heal();
    s.fault_over();
    s.finish(CONVERGE);
}

/// Jepsen's partition shapes against Patroni, one after another under write load: one node
/// cut off (each in turn), a majorities ring (with 3 nodes: one link cut, so two nodes each
/// see a different majority), and random halves; each held 15 s, then healed for 10 s.
#[test]
#[ignore]
fn jepsen_partition_shapes_under_write_load() {
    let Some(mut s) = Scenario::new("jepsen_partition_shapes_under_write_load", Opts::asynchronous()) else {
        return;
    };
    s.start_writes();
    pause(STEADY);
    let mut seed = std::process::id() as u64;
    let mut rand = move |n: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) % n as u64) as usize
    };
    let mut shapes: Vec<(String, Vec<usize>, Vec<usize>)> = Vec::new();
    for i in 0..3 {
        shapes.push((format!("node{} cut off", i + 1), vec![i], others(&s, i)));
    }
    let a = rand(3);
    let b = (a + 1 + rand(2)) % 3;
    shapes.push((format!("ring: link node{}-node{} cut", a + 1, b + 1), vec![a], vec![b]));
    let lone = rand(3);
    shapes.push((format!("random halves: node{} | rest", lone + 1), vec![lone], others(&s, lone)));
    for (what, x, y) in shapes {
        eprintln!("fault {}: partition {what}", s.name);
        s.c.net.partition(&x, &y);
        pause(Duration::from_secs(15));
        s.c.net.heal();
        s.wait_converged(CONVERGE);
        s.wait_writes(10, FAILOVER, &format!("writes after healing {what}"));
    }
    s.fault_over();
    s.finish(CONVERGE);
}

/// The wall clock of the primary's node (pgha and its Postgres, through libfaketime) jumps 5
/// minutes back, then 5 minutes ahead of real time, 20 s each, then returns. Lease clocks are
/// CLOCK_BOOTTIME (DESIGN.md rule 1), so nothing may happen: no failover, no lost write.
#[test]
#[ignore]
fn the_wall_clock_of_the_primary_jumps_back_and_forward() {
    if !std::path::Path::new(crate::cluster::FAKETIME_LIB).exists() {
        eprintln!("fault the_wall_clock_of_the_primary_jumps_back_and_forward: SKIPPED: libfaketime is missing (scripts/install-deps.sh)");
        return;
    }
    let opts = Opts { first: FirstNode { faketime: true, ..FirstNode::default() }, ..Opts::synchronous() };
    let Some(mut s) = Scenario::new("the_wall_clock_of_the_primary_jumps_back_and_forward", opts) else {
        return;
    };
    s.make_primary(0);
    s.start_writes();
    pause(STEADY);
    for offset in ["-5m", "+5m", "+0"] {
        s.c.set_wall_offset(0, offset);
        eprintln!(
            "fault {}: node1's wall clock at {offset}; its Postgres says {:?}",
            s.name,
            s.c.psql(0, "SELECT now()")
        );
        pause(Duration::from_secs(20));
        s.wait_writes(10, FAILOVER, &format!("writes with node1's wall clock at {offset}"));
    }
    s.fault_over();
    let report = s.finish(CONVERGE);
    assert_eq!(report.groups.len(), 1, "no failover when only the wall clock moves: {:?}", report.groups);
}
