//! Randomized runs of the HA-loop mode: data members with simulated Postgres, the real
//! `ha::decide`, from an empty cluster (the initialize race, initdb, clones) through `CHAOS` of
//! faults: those of the lease-client runs (partitions, one-way cuts, loss, crashes, restarts,
//! pauses longer than the ttl, leadership transfers) plus clock-rate changes, Postgres killed
//! alone and pgha shut down cleanly (then started again). Then the liveness phase turns every
//! fault off, restarts and resumes everyone, and requires one primary with every other member
//! streaming from it within `LIVENESS_BOUND`.

use crate::chaos::inject_fault;
use crate::ha::HaConfig;
use crate::net::{NetConfig, MS};
use crate::pg_world::{PgConfig, PgStats};
use crate::rng::Rng;
use crate::sim::{Sim, SimConfig};
use pgha::config::dynamic::{DynamicConfig, SynchronousMode};
use pgha::dcs::state::Command;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Virtual time under faults per seed.
const CHAOS: Duration = Duration::from_secs(40);
/// Synchronous runs: from empty to a published synchronous standby, without faults.
const WARM_UP: Duration = Duration::from_secs(120);
/// After healing, one primary and everyone streaming from it within this.
const LIVENESS_BOUND: Duration = Duration::from_secs(90);

pub struct PgRunSummary {
    pub trace: u64,
    pub steps: u64,
    pub faults: u64,
    pub epochs: usize,
    pub virtual_time: Duration,
    pub stats: PgStats,
}

/// The seed's configuration: timing, lag limit, load, and sometimes a nofailover member.
pub fn seeded_config(test_name: &'static str, seed: u64, nodes: u64, dice: &mut Rng) -> SimConfig {
    let mut cfg = SimConfig::new(test_name, seed, nodes);
    let loop_wait = if dice.chance(700) { 1 } else { 2 };
    let retry_timeout = dice.range(1, 4);
    let margin = dice.range(1, 4);
    let min_ttl = loop_wait + retry_timeout + margin + 1;
    let ttl = dice.range(min_ttl, 16);
    // pg_bugs::a_holder_restarting_postgres_skips_a_renewal_and_its_fence_kills_the_start
    let ttl = if crate::bugs::expose_known_bugs() { ttl } else { ttl.max(min_ttl + loop_wait) };
    let mut dynamic = DynamicConfig { ttl, loop_wait, retry_timeout, ..DynamicConfig::default() };
    dynamic.maximum_lag_on_failover =
        *dice.pick(&[64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024]).expect("sizes");
    dynamic.validate(margin).expect("a valid seeded configuration");
    // pg_bugs::a_diverged_old_primary_without_pg_rewind_is_never_recloned: only when exposing
    // (drawn apart from `dice` so that every other draw of the seed stays).
    dynamic.postgresql.use_pg_rewind = !Rng::new(seed ^ 0x5EED).chance(300);
    let nofailover: BTreeSet<u64> =
        if dice.chance(400) { [dice.range(1, nodes + 1)].into() } else { BTreeSet::new() };
    cfg.ha = HaConfig {
        ttl: dynamic.ttl(),
        loop_wait: dynamic.loop_wait(),
        safety_margin: Duration::from_secs(margin),
        ..HaConfig::standard()
    };
    let write_max = dice.range(1, 33) * 1024;
    cfg.pg = Some(PgConfig {
        dynamic,
        nofailover,
        write_per_mille: dice.range(100, 1000),
        write_max,
        burst_per_mille: dice.range(0, 10),
        burst_max: dice.range(1, 9) * 1024 * 1024,
        stream_per_tick: write_max * dice.range(2, 20),
        checkpoint_every_us: dice.range(1, 6) * 1_000_000,
        expose_known_bugs: crate::bugs::expose_known_bugs(),
        fence: true,
    });
    cfg
}

pub fn run_seed(test_name: &'static str, seed: u64, nodes: u64) -> PgRunSummary {
    run_seed_with(test_name, seed, nodes, None)
}

/// A run with synchronous replication in `mode` (strict or not) from the start;
/// `synchronous_node_count` drawn from 1 to the number of standbys.
pub fn run_seed_with(
    test_name: &'static str,
    seed: u64,
    nodes: u64,
    sync: Option<(SynchronousMode, bool)>,
) -> PgRunSummary {
    let mut dice = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (nodes << 32) ^ 0x5057);
    let mut cfg = seeded_config(test_name, seed, nodes, &mut dice);
    if let (Some((mode, strict)), Some(pg)) = (sync, cfg.pg.as_mut()) {
        // Drawn apart from `dice`, so that the rest of the seed's run stays comparable.
        let count = Rng::new(seed ^ 0x5C4C).range(1, nodes);
        pg.dynamic.synchronous_mode = mode;
        pg.dynamic.synchronous_mode_strict = strict;
        pg.dynamic.synchronous_node_count = count as u32;
    }
    cfg.net = NetConfig::lossy(dice.range(0, 100));
    cfg.snapshot_every = dice.range(5, 200);
    cfg.retain_entries = dice.range(0, 50);
    cfg.early_ha_per_mille = 500;
    cfg.net.fifo_links = dice.chance(500);
    let mut sim = Sim::new(cfg);
    if sync.is_some() {
        // Faults from the first second often keep the cluster from bootstrapping until the
        // liveness phase; a synchronous run first reaches a published synchronous standby.
        let published = |s: &Sim| {
            s.pg_converged().is_ok() && s.world.as_ref().is_some_and(|w| !w.shadow.sync.members.is_empty())
        };
        if !sim.run_until_true(WARM_UP, published) {
            sim.fail(&format!("no synchronous standby published within {WARM_UP:?} without faults"));
        }
    }
    let end = sim.now + CHAOS.as_micros() as u64;
    // Members to resume or restart, and when.
    let mut later: BTreeMap<u64, u64> = BTreeMap::new();
    let mut faults = 0;
    while sim.now < end {
        let next = sim.now + dice.range(100, 2_500) * MS;
        while let Some((&id, &at)) = later.iter().min_by_key(|(_, at)| **at).filter(|(_, at)| **at <= next) {
            sim.run_until(at);
            sim.resume(id);
            sim.restart(id);
            later.remove(&id);
        }
        sim.run_until(next);
        if sync.is_some() && dice.chance(80) {
            change_sync_mode(&mut sim, &mut dice);
        } else {
            inject(&mut sim, &mut dice, &mut later);
        }
        faults += 1;
    }
    sim.note_all("liveness phase: faults off, all healed, restarted and resumed");
    let (reliable_snapshots, fifo_links) = (sim.net.cfg.reliable_snapshots, sim.net.cfg.fifo_links);
    sim.net.cfg = NetConfig { reliable_snapshots, fifo_links, ..NetConfig::calm() };
    sim.heal();
    let ids: Vec<u64> = sim.nodes.keys().copied().collect();
    for id in &ids {
        sim.resume(*id);
    }
    // A member shutting down exits once its release is through (within retry_timeout).
    let shutting_down =
        |s: &Sim| s.nodes.values().any(|n| n.data.as_ref().is_some_and(|d| d.lp.shutting_down));
    sim.run_until_true(Duration::from_secs(5), |s| !shutting_down(s));
    for id in ids {
        sim.restart(id);
    }
    if !sim.run_until_true(LIVENESS_BOUND, |s| s.pg_converged().is_ok()) {
        let why = sim.pg_converged().unwrap_err();
        sim.fail(&format!(
            "no primary with every member streaming from it within {LIVENESS_BOUND:?} after healing: {why}"
        ));
    }
    sim.check_final_primary();
    PgRunSummary {
        trace: sim.trace_hash(),
        steps: sim.steps,
        faults,
        epochs: sim.checker.epochs_granted(),
        virtual_time: Duration::from_micros(sim.now),
        stats: PgStats {
            stuck_standbys: sim.stuck_standbys() as u64,
            ..sim.world.as_ref().expect("HA-loop mode").stats.clone()
        },
    }
}

/// `pgha ctl edit-config` of the synchronous keys at run time, under whatever faults are on:
/// the order of publishing and of setting Postgres must keep every acknowledged commit.
fn change_sync_mode(sim: &mut Sim, dice: &mut Rng) {
    let Some(leader) = sim.leader() else { return };
    let Some(state) = sim.nodes[&leader].core.as_ref().and_then(|c| c.state()).cloned() else { return };
    let mut config = state.config.clone();
    config.synchronous_mode =
        *dice.pick(&[SynchronousMode::Off, SynchronousMode::On, SynchronousMode::Quorum]).expect("modes");
    config.synchronous_mode_strict = dice.chance(500);
    config.synchronous_node_count = dice.range(1, sim.nodes.len() as u64) as u32;
    let text = format!(
        "edit-config: synchronous_mode {:?}, strict {}, synchronous_node_count {}",
        config.synchronous_mode, config.synchronous_mode_strict, config.synchronous_node_count
    );
    let command = Command::SetConfig { expected_version: state.config_version, config };
    if let Some(core) = sim.nodes.get_mut(&leader).and_then(|n| n.core.as_mut()) {
        if core.propose(command).is_ok() {
            sim.note_all(&text);
            sim.pump(leader);
        }
    }
}

/// One fault: mostly those of the lease-client runs, else one of Postgres or of pgha's service.
fn inject(sim: &mut Sim, dice: &mut Rng, later: &mut BTreeMap<u64, u64>) {
    let ids: Vec<u64> = sim.nodes.keys().copied().collect();
    let primary = ids.iter().copied().find(|id| sim.nodes[id].data.as_ref().is_some_and(|d| d.pg.writable()));
    match dice.range(0, 100) {
        0..=74 => inject_fault(sim, dice, later),
        75..=79 => {
            // Clock-rate jitter: a member's clock speeds up or slows down (within the skew).
            let skew = sim.cfg.max_skew_ppm;
            if let Some(&id) = dice.pick(&ids) {
                sim.set_clock_rate(id, dice.range(0, 2 * skew + 1) as i64 - skew as i64);
            }
        }
        80..=91 => {
            // Postgres dies alone, more often the primary's.
            let id = primary.filter(|_| dice.chance(600)).or_else(|| dice.pick(&ids).copied());
            if let Some(id) = id {
                sim.crash_postgres(id);
            }
        }
        _ => {
            // systemctl restart pgha: a clean shutdown (releasing a held lease), started again.
            let id = primary.filter(|_| dice.chance(500)).or_else(|| dice.pick(&ids).copied());
            if let Some(id) = id.filter(|id| sim.nodes[id].running()) {
                sim.shut_down(id);
                later.insert(id, sim.now + dice.range(200 * MS, 5_000 * MS));
            }
        }
    }
}
