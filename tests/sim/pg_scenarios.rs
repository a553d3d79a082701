//! Named scenarios of the HA-loop mode in an operator's words: three data members with
//! simulated Postgres and the real `ha::decide`, on a calm network with Patroni's timing (ttl
//! 10 s, loop_wait 1 s, retry_timeout 3 s, margin 2 s), the invariants checked throughout.

use crate::pg_world::PgConfig;
use crate::sim::{Sim, SimConfig};
use std::time::Duration;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A calm three-member cluster in the HA-loop mode, configured by `tweak` (the cluster's
/// `PgConfig` in `cfg.pg`), run from empty data directories until one primary has two
/// streaming standbys.
pub fn pg_settled(test_name: &'static str, tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut cfg = SimConfig::new(test_name, 1, 3);
    cfg.pg = Some(PgConfig::standard());
    tweak(&mut cfg);
    let dynamic = &cfg.pg.as_ref().expect("HA-loop mode").dynamic;
    cfg.ha.ttl = dynamic.ttl();
    cfg.ha.loop_wait = dynamic.loop_wait();
    let mut sim = Sim::new(cfg);
    if !sim.run_until_true(secs(60), |s| s.pg_converged().is_ok()) {
        let why = sim.pg_converged().unwrap_err();
        sim.fail(&format!("the cluster did not settle: {why}"));
    }
    // The standbys catch up.
    sim.run_for(secs(5));
    sim
}

/// The member whose Postgres accepts writes.
pub fn primary(sim: &Sim) -> Option<u64> {
    sim.nodes.values().find(|n| n.data.as_ref().is_some_and(|d| d.pg.writable())).map(|n| n.id)
}

pub fn others(sim: &Sim, not: u64) -> Vec<u64> {
    sim.nodes.keys().copied().filter(|id| *id != not).collect()
}

/// Runs until the cluster converged again, or fails with why not.
pub fn converges(sim: &mut Sim, within: Duration, what: &str) {
    if !sim.run_until_true(within, |s| s.pg_converged().is_ok()) {
        let why = sim.pg_converged().unwrap_err();
        sim.fail(&format!("{what}: no convergence within {within:?}: {why}"));
    }
}

#[test]
fn a_crashed_primary_fails_over_and_returns_as_a_standby() {
    let mut sim = pg_settled("a_crashed_primary_fails_over_and_returns_as_a_standby", |_| {});
    let old = primary(&sim).expect("a primary");
    sim.crash(old);
    let moved = sim.run_until_true(secs(30), |s| primary(s).is_some_and(|p| p != old));
    assert!(moved, "no failover from the crashed n{old}");
    sim.restart(old);
    converges(&mut sim, secs(30), "the old primary rejoins");
    assert_ne!(primary(&sim), Some(old));
}

#[test]
fn a_paused_primary_is_fenced_and_a_standby_takes_over() {
    let mut sim = pg_settled("a_paused_primary_is_fenced_and_a_standby_takes_over", |_| {});
    let old = primary(&sim).expect("a primary");
    let ttl = sim.pg_ttl();
    sim.pause(old);
    // The fence kills the paused primary's Postgres before anyone else may promote
    // (invariant (a) is checked at every step).
    let moved = sim.run_until_true(ttl * 3, |s| primary(s).is_some_and(|p| p != old));
    assert!(moved, "no standby took over from the paused n{old}");
    assert!(sim.world.as_ref().unwrap().stats.fence_kills >= 1, "the fence killed the old primary");
    sim.resume(old);
    converges(&mut sim, secs(30), "the paused primary rejoins");
}

#[test]
fn a_nofailover_standby_is_never_promoted() {
    let mut sim =
        pg_settled("a_nofailover_standby_is_never_promoted", |c| c.pg_mut().nofailover = [3].into());
    let old = primary(&sim).expect("a primary");
    assert_ne!(old, 3, "n3 may not even bootstrap");
    // The only other candidate is gone too: n3 must wait for one of them.
    let other = others(&sim, old).into_iter().find(|id| *id != 3).expect("a third member");
    sim.crash(old);
    sim.crash(other);
    let ttl = sim.pg_ttl();
    sim.run_until_true(ttl * 4, |s| primary(s).is_some_and(|p| p == 3));
    assert_eq!(primary(&sim), None, "nobody may become primary");
    sim.restart(old);
    sim.restart(other);
    converges(&mut sim, secs(40), "the cluster recovers without n3 as primary");
    assert_ne!(primary(&sim), Some(3));
}

#[test]
fn standbys_too_far_behind_wait_for_the_old_primary() {
    let mut sim = pg_settled("standbys_too_far_behind_wait_for_the_old_primary", |c| {
        let p = c.pg_mut();
        p.dynamic.maximum_lag_on_failover = 64 * 1024;
        p.write_max = 4 * 1024;
        p.stream_per_tick = 16 * 1024;
    });
    let old = primary(&sim).expect("a primary");
    // A bulk load the standbys need seconds to receive; the primary's next renewals record
    // its position; then it crashes.
    assert!(sim.client_write(old, 4 * 1024 * 1024));
    sim.run_for(Duration::from_millis(1500));
    sim.crash(old);
    let ttl = sim.pg_ttl();
    sim.run_for(ttl * 3);
    assert_eq!(primary(&sim), None, "a standby more than maximum_lag_on_failover behind was promoted");
    sim.restart(old);
    converges(&mut sim, secs(40), "the old primary comes back");
    assert_eq!(primary(&sim), Some(old));
}

/// The checker's own test: without the fencer, a paused primary's Postgres stays writable
/// after its lease ran out, and invariant (a) says so once a standby is promoted.
#[test]
#[should_panic(expected = "(a) two writable Postgres at once")]
fn without_the_fence_a_paused_primary_is_caught_by_the_invariants() {
    let mut sim = pg_settled("without_the_fence_a_paused_primary_is_caught_by_the_invariants", |c| {
        c.pg_mut().fence = false
    });
    let old = primary(&sim).expect("a primary");
    let ttl = sim.pg_ttl();
    sim.pause(old);
    sim.run_for(ttl * 3);
}
