//! The safety invariants, checked as the simulation runs (the sim calls these after every
//! Ready it processes and after every step; see `main.rs` for the list):
//!
//! - committed entries never change: the first member to apply an index records a hash of
//!   what it applied there (commands and outcomes); every later application must match, on
//!   every member and across restarts;
//! - applied states agree: the encoded `ClusterState` at an applied index is the same on every
//!   member that reaches that index;
//! - per member and per incarnation, the applied index and `last_epoch` never go backwards, and
//!   every epoch has exactly one holder across all members' states.
//!
//! "At most one writable member" and "an accepted expiry finds its holder no longer writable"
//! need the members' clocks, so the simulation checks them (`sim.rs`).

use crate::rng::Fnv;
use pgha::dcs::node::{encode_state, Applied};
use pgha::dcs::state::{ClusterState, Command, Outcome};
use pgha::types::{LeaseEpoch, MemberName};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Checker {
    /// index -> (hash of what was applied there, member that applied it first)
    committed: BTreeMap<u64, (u64, u64)>,
    /// applied index -> (hash of the encoded state there, member that reached it first)
    states: BTreeMap<u64, (u64, u64)>,
    /// epoch -> the member it was granted to
    holders: BTreeMap<LeaseEpoch, MemberName>,
    /// member -> (applied index, last epoch) in its current incarnation
    progress: BTreeMap<u64, (u64, LeaseEpoch)>,
}

/// An entry applied for the first time anywhere (so it was just committed).
pub struct FirstApply {
    pub command: Command,
    pub outcome: Outcome,
}

impl Checker {
    pub fn holder_of(&self, epoch: LeaseEpoch) -> Option<&MemberName> {
        self.holders.get(&epoch)
    }

    pub fn epochs_granted(&self) -> usize {
        self.holders.len()
    }

    /// A restarted member starts again from its snapshot.
    pub fn restarted(&mut self, node: u64) {
        self.progress.remove(&node);
    }

    /// Records what `node` applied in one Ready; returns the entries applied for the first time.
    pub fn applied(&mut self, node: u64, applied: &[Applied]) -> Result<Vec<FirstApply>, String> {
        let mut by_index: BTreeMap<u64, Vec<&Applied>> = BTreeMap::new();
        for a in applied {
            by_index.entry(a.index).or_default().push(a);
        }
        let mut first = Vec::new();
        for (index, items) in by_index {
            let mut h = Fnv::default();
            for a in &items {
                h.bytes(&serde_json::to_vec(&a.command).expect("commands serialize"));
                h.bytes(&serde_json::to_vec(&a.outcome).expect("outcomes serialize"));
            }
            for a in &items {
                if let (Command::AcquireLease { candidate, .. }, Outcome::LeaseGranted { epoch }) =
                    (&a.command, &a.outcome)
                {
                    self.holder_is(*epoch, candidate, node, index)?;
                }
            }
            match self.committed.get(&index) {
                Some((known, by)) if *known != h.0 => {
                    return Err(format!(
                        "committed entry {index} changed: n{node} applied {:?} but n{by} applied something else there",
                        items.iter().map(|a| (&a.command, &a.outcome)).collect::<Vec<_>>()
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, (h.0, node));
                    first.extend(
                        items
                            .iter()
                            .map(|a| FirstApply { command: a.command.clone(), outcome: a.outcome.clone() }),
                    );
                }
            }
        }
        Ok(first)
    }

    /// Checks `node`'s state after it reached `applied`.
    pub fn state(&mut self, node: u64, applied: u64, state: &ClusterState) -> Result<(), String> {
        let h = Fnv::of(&encode_state(state));
        match self.states.get(&applied) {
            Some((known, by)) if *known != h => {
                return Err(format!(
                    "n{node} and n{by} have different states at applied index {applied}; n{node} has lease {:?}, last epoch {}",
                    state.lease, state.last_epoch
                ));
            }
            Some(_) => {}
            None => {
                self.states.insert(applied, (h, node));
            }
        }
        if let Some((prev_index, prev_epoch)) = self.progress.get(&node) {
            if applied < *prev_index {
                return Err(format!("n{node}'s applied index went back from {prev_index} to {applied}"));
            }
            if state.last_epoch < *prev_epoch {
                return Err(format!(
                    "n{node}'s last epoch went back from {prev_epoch} to {} at index {applied}",
                    state.last_epoch
                ));
            }
        }
        self.progress.insert(node, (applied, state.last_epoch));
        match &state.lease {
            Some(l) => self.holder_is(l.epoch, &l.holder, node, applied),
            None => Ok(()),
        }
    }

    fn holder_is(
        &mut self,
        epoch: LeaseEpoch,
        holder: &MemberName,
        node: u64,
        index: u64,
    ) -> Result<(), String> {
        match self.holders.get(&epoch) {
            Some(h) if h != holder => Err(format!(
                "epoch {epoch} has two holders: {h} and {holder} (seen by n{node} at index {index})"
            )),
            Some(_) => Ok(()),
            None => {
                self.holders.insert(epoch, holder.clone());
                Ok(())
            }
        }
    }
}
