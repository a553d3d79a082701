//! Randomized runs: one seed picks the lease timing, the network's loss rate, the snapshot
//! cadence and a fault schedule (partitions, one-way cuts, heals, crashes, restarts, pauses
//! longer than the ttl, leadership transfers, drop-rate changes) for `CHAOS` of virtual time;
//! then the liveness phase turns every fault off, restarts and resumes everyone, and requires
//! convergence within `LIVENESS_BOUND`.

use crate::ha::HaConfig;
use crate::net::{NetConfig, MS};
use crate::rng::Rng;
use crate::sim::{Sim, SimConfig};
use std::collections::BTreeMap;
use std::time::Duration;

/// Virtual time under faults per seed.
const CHAOS: Duration = Duration::from_secs(20);
/// After healing, the cluster must have a leader, a writable holder and agreement within this.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);

pub struct RunSummary {
    pub trace: u64,
    pub steps: u64,
    pub faults: u64,
    pub epochs: usize,
    pub virtual_time: Duration,
}

pub fn run_seed(test_name: &'static str, seed: u64, nodes: u64) -> RunSummary {
    let mut dice = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ nodes);
    let mut cfg = SimConfig::new(test_name, seed, nodes);
    cfg.ha = HaConfig::seeded(&mut dice);
    cfg.net = NetConfig::lossy(dice.range(0, 100));
    cfg.snapshot_every = dice.range(5, 200);
    cfg.retain_entries = dice.range(0, 50);
    cfg.early_ha_per_mille = 500;
    // Drawn apart from `dice` so that adding it kept every other draw of the seed.
    cfg.net.fifo_links = Rng::new(seed ^ 0xF1F0).chance(500);
    let mut sim = Sim::new(cfg);
    let end = CHAOS.as_micros() as u64;
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
        inject_fault(&mut sim, &mut dice, &mut later);
        faults += 1;
    }
    sim.note_all("liveness phase: faults off, all healed, restarted and resumed");
    let (reliable_snapshots, fifo_links) = (sim.net.cfg.reliable_snapshots, sim.net.cfg.fifo_links);
    sim.net.cfg = NetConfig { reliable_snapshots, fifo_links, ..NetConfig::calm() };
    sim.heal();
    let ids: Vec<u64> = sim.nodes.keys().copied().collect();
    for id in ids {
        sim.resume(id);
        sim.restart(id);
    }
    if !sim.run_until_true(LIVENESS_BOUND, |s| s.converged().is_ok()) {
        let why = sim.converged().unwrap_err();
        sim.fail(&format!("no convergence within {LIVENESS_BOUND:?} after healing: {why}"));
    }
    RunSummary {
        trace: sim.trace_hash(),
        steps: sim.steps,
        faults,
        epochs: sim.checker.epochs_granted(),
        virtual_time: Duration::from_micros(sim.now),
    }
}

/// Injects one fault; members to resume (if paused) or restart (if crashed) go into `later`.
pub(crate) fn inject_fault(sim: &mut Sim, dice: &mut Rng, later: &mut BTreeMap<u64, u64>) {
    let ids: Vec<u64> = sim.nodes.keys().copied().collect();
    let running: Vec<u64> = ids.iter().copied().filter(|id| sim.nodes[id].running()).collect();
    let crashed: Vec<u64> = ids.iter().copied().filter(|id| sim.nodes[id].core.is_none()).collect();
    let ttl = sim.cfg.ha.ttl.as_micros() as u64;
    match dice.range(0, 100) {
        0..=14 => {
            let mut shuffled = ids.clone();
            dice.shuffle(&mut shuffled);
            let cut = dice.range(1, ids.len() as u64) as usize;
            let (a, b) = shuffled.split_at(cut);
            sim.partition(&[a.to_vec(), b.to_vec()]);
        }
        15..=24 => {
            let lone = *dice.pick(&ids).expect("members");
            let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != lone).collect();
            sim.partition(&[vec![lone], rest]);
        }
        25..=32 => {
            let from = *dice.pick(&ids).expect("members");
            let to = *dice.pick(&ids).expect("members");
            if from != to {
                sim.net.cut_one_way(from, to);
                sim.note_all(&format!("one-way cut n{from} -> n{to}"));
            }
        }
        33..=52 => sim.heal(),
        53..=57 => {
            if let Some(&id) = dice.pick(&running) {
                sim.crash(id);
            }
        }
        58..=62 => {
            // A crash the service manager restarts from, often of the primary.
            let holder = sim.writable().map(|(id, _)| id).filter(|_| dice.chance(600));
            if let Some(id) = holder.or_else(|| dice.pick(&running).copied()) {
                sim.crash(id);
                later.insert(id, sim.now + dice.range(100 * MS, ttl + 2_000 * MS));
            }
        }
        63..=77 => {
            if let Some(&id) = dice.pick(&crashed) {
                sim.restart(id);
            }
        }
        78..=85 => {
            if let Some(&id) = dice.pick(&running) {
                let length = dice.range(500 * MS, 3 * ttl);
                sim.pause(id);
                later.insert(id, sim.now + length);
            }
        }
        86..=93 => {
            let rate = dice.range(0, 300);
            sim.net.cfg.drop_per_mille = rate;
            sim.note_all(&format!("drop rate now {rate}‰"));
        }
        _ => {
            if let Some(&to) = dice.pick(&ids) {
                sim.transfer_leader(to);
            }
        }
    }
}
