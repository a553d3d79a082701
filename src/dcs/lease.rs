//! Lease timing, both sides of DESIGN.md's lease rules 1 and 2, as pure values driven by the
//! caller's clock (so the simulation drives them with virtual time):
//!
//! - [`HolderClock`]: the holder's own deadline. A renewal's send time is remembered; the deadline
//!   becomes `sent + ttl - safety_margin` only when that renewal is applied as accepted.
//! - [`ExpiryTimer`]: the Raft leader's timer. It starts when the leader applies an accepted grant
//!   or renewal (or when it becomes leader: every timer starts afresh), and asks for
//!   `ExpireLease` once `ttl` has passed since then.
//!
//! Because the leader's timer starts no earlier than the holder's send time and runs for the
//! full `ttl`, the Raft side expires a lease only after the holder's own deadline, given clocks
//! that tick at similar rates (the margin covers the rate difference).

use super::state::{Command, Lease};
use crate::clock::BootInstant;
use crate::types::LeaseEpoch;
use std::collections::BTreeMap;
use std::time::Duration;

/// The holder's view of its own lease.
#[derive(Debug, Default, Clone)]
pub struct HolderClock {
    /// Renewal id -> when it was sent. Bounded: only the latest few are kept.
    sent: BTreeMap<u64, BootInstant>,
    /// The lease epoch held and its deadline, if any.
    held: Option<(LeaseEpoch, BootInstant)>,
}

/// At most this many renewals are remembered while unanswered.
const MAX_PENDING_RENEWALS: usize = 16;

impl HolderClock {
    /// Records that a grant or renewal with this id was proposed at `now`.
    pub fn sent(&mut self, renewal: u64, now: BootInstant) {
        self.sent.insert(renewal, now);
        while self.sent.len() > MAX_PENDING_RENEWALS {
            self.sent.pop_first();
        }
    }

    /// Called with the lease after every apply. `me` holds it with a renewal it sent: extend
    /// the deadline from that renewal's send time. Otherwise the lease is not (or no longer) ours.
    pub fn observe(&mut self, me: &str, lease: Option<&Lease>, margin: Duration) {
        match lease {
            Some(l) if l.holder.as_str() == me => {
                if let Some(sent) = self.sent.remove(&l.renewal) {
                    let ttl = Duration::from_millis(l.ttl_ms);
                    let deadline = sent + ttl.saturating_sub(margin);
                    let keep_later = match self.held {
                        Some((e, d)) if e == l.epoch && d > deadline => d,
                        _ => deadline,
                    };
                    self.held = Some((l.epoch, keep_later));
                    // Older unanswered renewals can never be accepted now.
                    self.sent.retain(|id, _| *id > l.renewal);
                } else if self.held.is_none_or(|(e, _)| e != l.epoch) {
                    // Held under an epoch we have no send time for (e.g. after a restart): we
                    // cannot know when it was sent, so we claim no time at all.
                    self.held = None;
                }
            }
            _ => self.held = None,
        }
    }

    /// The epoch and deadline of a lease this node holds and may act on at `now`.
    pub fn valid(&self, now: BootInstant) -> Option<(LeaseEpoch, BootInstant)> {
        self.held.filter(|(_, deadline)| now < *deadline)
    }

    /// Time left on the lease as seen locally (zero if none or passed).
    pub fn time_left(&self, now: BootInstant) -> Duration {
        self.held.map(|(_, d)| d.saturating_since(now)).unwrap_or_default()
    }

    pub fn deadline(&self) -> Option<BootInstant> {
        self.held.map(|(_, d)| d)
    }
}

/// The Raft leader's expiry timer for the current lease.
#[derive(Debug, Default, Clone)]
pub struct ExpiryTimer {
    /// (epoch, renewal) being timed, when the timer started, the stamped ttl, and whether the
    /// expiry was already proposed for it.
    watching: Option<Watch>,
}

#[derive(Debug, Clone, Copy)]
struct Watch {
    epoch: LeaseEpoch,
    renewal: u64,
    started: BootInstant,
    ttl: Duration,
    proposed: bool,
}

impl ExpiryTimer {
    /// On becoming Raft leader: every timer starts afresh with the full ttl (rule 2).
    pub fn restart(&mut self, lease: Option<&Lease>, now: BootInstant) {
        self.watching = lease.map(|l| Watch {
            epoch: l.epoch,
            renewal: l.renewal,
            started: now,
            ttl: Duration::from_millis(l.ttl_ms),
            proposed: false,
        });
    }

    /// After each apply on the leader: a new grant or renewal restarts the timer.
    pub fn observe(&mut self, lease: Option<&Lease>, now: BootInstant) {
        let same = match (&self.watching, lease) {
            (Some(w), Some(l)) => w.epoch == l.epoch && w.renewal == l.renewal,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.restart(lease, now);
        }
    }

    /// On losing leadership: stop timing; the next leader starts afresh.
    pub fn stop(&mut self) {
        self.watching = None;
    }

    /// The `ExpireLease` to propose, once per renewal, when its ttl has run out.
    pub fn poll(&mut self, now: BootInstant) -> Option<Command> {
        let w = self.watching.as_mut()?;
        if w.proposed || now.saturating_since(w.started) < w.ttl {
            return None;
        }
        w.proposed = true;
        Some(Command::ExpireLease { epoch: w.epoch, renewal: w.renewal })
    }

    /// Allows a new proposal for the same renewal (the previous one was dropped, e.g. no
    /// leader at the time); a no-op if the lease changed meanwhile.
    pub fn retry(&mut self) {
        if let Some(w) = self.watching.as_mut() {
            w.proposed = false;
        }
    }

    /// When the current lease expires on the Raft side, if timed.
    pub fn expires_at(&self) -> Option<BootInstant> {
        self.watching.map(|w| w.started + w.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MemberName;

    fn at(ms: u64) -> BootInstant {
        BootInstant::from_duration(Duration::from_millis(ms))
    }
    fn lease(holder: &str, epoch: u64, renewal: u64) -> Lease {
        Lease { holder: MemberName::new(holder).unwrap(), epoch: LeaseEpoch(epoch), ttl_ms: 10_000, renewal }
    }
    const MARGIN: Duration = Duration::from_secs(2);

    #[test]
    fn deadline_counts_from_send_time_and_only_after_acceptance() {
        let mut h = HolderClock::default();
        h.sent(1, at(1_000));
        assert_eq!(h.valid(at(1_000)), None, "nothing held before the grant is applied");
        h.observe("n1", Some(&lease("n1", 1, 1)), MARGIN);
        assert_eq!(h.valid(at(5_000)), Some((LeaseEpoch(1), at(9_000))));
        assert_eq!(h.valid(at(9_000)), None, "deadline = sent + ttl - margin");
        assert_eq!(h.time_left(at(8_500)), Duration::from_millis(500));
    }

    #[test]
    fn a_rejected_renewal_extends_nothing() {
        let mut h = HolderClock::default();
        h.sent(1, at(0));
        h.observe("n1", Some(&lease("n1", 1, 1)), MARGIN);
        h.sent(2, at(5_000));
        // The renewal lost to an expiry: the lease is gone, not extended.
        h.observe("n1", None, MARGIN);
        assert_eq!(h.valid(at(6_000)), None);
        // Someone else holds it now.
        h.observe("n1", Some(&lease("n2", 2, 9)), MARGIN);
        assert_eq!(h.valid(at(6_000)), None);
    }

    #[test]
    fn an_older_renewal_applied_late_never_shortens() {
        let mut h = HolderClock::default();
        h.sent(1, at(0));
        h.sent(2, at(3_000));
        h.observe("n1", Some(&lease("n1", 1, 2)), MARGIN);
        assert_eq!(h.deadline(), Some(at(11_000)));
        // Renewal 1 can no longer be matched: it was dropped when 2 was accepted.
        h.observe("n1", Some(&lease("n1", 1, 1)), MARGIN);
        assert_eq!(h.deadline(), Some(at(11_000)));
    }

    #[test]
    fn a_lease_without_a_known_send_time_gives_no_time() {
        let mut h = HolderClock::default();
        h.observe("n1", Some(&lease("n1", 4, 77)), MARGIN);
        assert_eq!(h.valid(at(0)), None);
    }

    #[test]
    fn leader_timer_expires_after_full_ttl_from_its_own_start() {
        let mut t = ExpiryTimer::default();
        t.restart(Some(&lease("n1", 1, 1)), at(500));
        assert_eq!(t.poll(at(10_499)), None);
        assert_eq!(t.poll(at(10_500)), Some(Command::ExpireLease { epoch: LeaseEpoch(1), renewal: 1 }));
        assert_eq!(t.poll(at(10_600)), None, "proposed once");
        t.retry();
        assert!(t.poll(at(10_700)).is_some());
    }

    #[test]
    fn renewal_restarts_the_leader_timer() {
        let mut t = ExpiryTimer::default();
        t.restart(Some(&lease("n1", 1, 1)), at(0));
        t.observe(Some(&lease("n1", 1, 2)), at(4_000));
        assert_eq!(t.poll(at(10_000)), None);
        assert!(t.poll(at(14_000)).is_some());
        t.observe(None, at(14_100));
        assert_eq!(t.poll(at(99_000)), None, "nothing to expire when free");
    }

    #[test]
    fn raft_side_never_expires_before_holder_deadline() {
        // Holder sends at s; leader applies at s + d (d >= 0) and times from there.
        for d in [0u64, 1, 500, 3_000] {
            let mut h = HolderClock::default();
            let mut t = ExpiryTimer::default();
            h.sent(1, at(1_000));
            let l = lease("n1", 1, 1);
            h.observe("n1", Some(&l), MARGIN);
            t.observe(Some(&l), at(1_000 + d));
            let holder_deadline = h.deadline().unwrap();
            let raft_expiry = t.expires_at().unwrap();
            assert!(raft_expiry >= holder_deadline + MARGIN, "d={d}");
        }
    }
}
