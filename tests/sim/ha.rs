//! A model of the HA loop's lease client, run on every member every `loop_wait` of its own
//! clock (DESIGN.md "The lease"):
//!
//! - holding a valid lease by its own clock (`lease_view(now).deadline` is `Some`): renew it
//!   for its epoch, or now and then release it: Postgres is stopped first (rule 4), so from
//!   the moment it decides to release the member no longer counts as writable for that epoch;
//! - no holder in its locally applied state: propose an acquire naming the last epoch it saw;
//! - holder in its state but no deadline (it restarted while holding, so it knows no send
//!   time): wait for the Raft side to expire it, or, with `StaleHolder::Renew`, renew it as an
//!   HA loop that trusts the replicated state would ("I hold the lease, keep it").
//!
//! Proposals may fail (no leader, transfer in progress): the next iteration tries again.

use crate::rng::Rng;
use pgha::clock::BootInstant;
use pgha::dcs::mem_store::MemLogStore;
use pgha::dcs::node::RaftCore;
use pgha::types::LeaseEpoch;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleHolder {
    Wait,
    Renew,
}

#[derive(Clone, Debug)]
pub struct HaConfig {
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub safety_margin: Duration,
    /// Chance per iteration that a holder releases its lease (a switchover or a shutdown).
    pub release_per_mille: u64,
    pub stale_holder: StaleHolder,
}

impl HaConfig {
    /// Patroni's defaults with pgha's margin: ttl 10 s, loop_wait 1 s, margin 2 s.
    pub fn standard() -> Self {
        HaConfig {
            ttl: Duration::from_secs(10),
            loop_wait: Duration::from_secs(1),
            safety_margin: Duration::from_secs(2),
            release_per_mille: 0,
            stale_holder: StaleHolder::Wait,
        }
    }

    /// A seeded variation with `ttl > loop_wait + margin`: short ttls churn the lease more.
    pub fn seeded(rng: &mut Rng) -> Self {
        let loop_wait = Duration::from_millis(rng.range(3, 11) * 100);
        let safety_margin = Duration::from_millis(rng.range(5, 21) * 100);
        let min_ttl = (loop_wait + safety_margin).as_millis() as u64 + 500;
        let ttl = Duration::from_millis(rng.range(min_ttl / 100 + 1, 101) * 100);
        HaConfig {
            ttl,
            loop_wait,
            safety_margin,
            release_per_mille: rng.range(0, 40),
            stale_holder: if rng.chance(500) { StaleHolder::Renew } else { StaleHolder::Wait },
        }
    }
}

/// The lease client of one member (its in-memory part is lost in a crash, like the process).
#[derive(Clone, Debug)]
pub struct LeaseClient {
    pub cfg: HaConfig,
    /// The epoch whose lease this member gave up after stopping its Postgres.
    pub fenced: Option<LeaseEpoch>,
    /// Off in scenarios that drive proposals by hand.
    pub enabled: bool,
}

impl LeaseClient {
    pub fn new(cfg: HaConfig) -> Self {
        LeaseClient { cfg, fenced: None, enabled: true }
    }

    /// The epoch under which this member may accept writes at `now`, if any.
    pub fn writable(&self, core: &RaftCore<MemLogStore>, now: BootInstant) -> Option<LeaseEpoch> {
        let view = core.lease_view(now);
        view.deadline.map(|_| view.epoch).filter(|e| Some(*e) != self.fenced)
    }

    /// One iteration; returns what it did, for the event log.
    pub fn run(&mut self, core: &mut RaftCore<MemLogStore>, now: BootInstant, rng: &mut Rng) -> String {
        let view = core.lease_view(now);
        let me = core.name().clone();
        let ttl = self.cfg.ttl;
        let fmt =
            |what: String, r: Result<pgha::dcs::state::ProposalId, pgha::dcs::node::ProposeError>| match r {
                Ok(id) => format!("{what} proposed as #{}", id.seq),
                Err(e) => format!("{what} not proposed: {e}"),
            };
        let mine = view.holder.as_ref() == Some(&me);
        if mine && self.fenced == Some(view.epoch) {
            return fmt(format!("re-release epoch {}", view.epoch), core.propose_release(view.epoch, None));
        }
        if view.deadline.is_some() {
            if rng.chance(self.cfg.release_per_mille) {
                self.fenced = Some(view.epoch);
                return fmt(
                    format!("stop postgres, release epoch {}", view.epoch),
                    core.propose_release(view.epoch, None),
                );
            }
            return fmt(format!("renew epoch {}", view.epoch), core.propose_renew(view.epoch, ttl, now));
        }
        match view.holder {
            None => fmt(
                format!("acquire after epoch {}", view.last_epoch),
                core.propose_acquire(view.last_epoch, ttl, now),
            ),
            Some(_) if mine && self.cfg.stale_holder == StaleHolder::Renew => fmt(
                format!("renew epoch {} held before a restart", view.epoch),
                core.propose_renew(view.epoch, ttl, now),
            ),
            Some(h) => format!("no action: {h} holds epoch {}", view.epoch),
        }
    }
}
