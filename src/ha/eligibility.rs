//! May this member take the primary lease now? DESIGN.md lease rule 5: not a witness, not
//! `nofailover` (or `failover_priority: 0`), WAL within `maximum_lag_on_failover` of the last
//! position the primary recorded, at or past a released primary's shutdown checkpoint
//! (switchover, rule 6), no eligible member further ahead, ties broken by `failover_priority`,
//! and during a switchover only its candidate. Pure; the same checks are repeated in `apply`
//! for the ones the replicated state can judge, so a stale local view can propose but not win.

use crate::dcs::state::{ClusterState, Member, QuorumGap};
use crate::types::{Lsn, MemberName, Timeline};
use std::fmt;

/// A member status older than this is not evidence of anything (the member may be dead).
pub const STATUS_FRESH_MS: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ineligible {
    Witness,
    NoFailover,
    /// No WAL position known for this member (no data or not running).
    NoPosition,
    TooFarBehind {
        lag: u64,
        max: u64,
    },
    BeforeCheckpoint {
        lsn: Lsn,
        checkpoint: Lsn,
    },
    OtherAhead {
        member: MemberName,
        lsn: Lsn,
    },
    HigherPriority {
        member: MemberName,
    },
    NotTheCandidate {
        candidate: MemberName,
    },
    /// The pending switchover moves the primary role away from this member.
    SwitchingAway,
    /// `watchdog.mode: required` and no working watchdog.
    WatchdogRequired,
    /// Synchronous mode: the last primary published other synchronous standbys.
    NotSyncStandby,
    /// Synchronous mode: the last primary's commits waited for a standby it had not
    /// published yet (strict, or a change of standby in progress).
    NoSyncStandby,
    /// Synchronous mode, degraded: before the position where the primary stopped waiting.
    BeforeSyncDegraded {
        lsn: Lsn,
        min_lsn: Lsn,
    },
    /// Quorum mode after an expiry: too few quorum standbys recorded their final position.
    QuorumIncomplete {
        recorded: usize,
        needed: usize,
    },
    /// Quorum mode after an expiry: another quorum standby recorded more WAL.
    BehindQuorum {
        lsn: Option<Lsn>,
        max: Lsn,
    },
    /// This member has not reached the newest timeline in the history yet.
    OldTimeline {
        mine: Timeline,
        current: Timeline,
    },
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::Witness => write!(f, "a witness holds no Postgres"),
            Ineligible::NoFailover => write!(f, "tagged nofailover"),
            Ineligible::OldTimeline { mine, current } => write!(
                f,
                "on timeline {mine}, not yet on the cluster's timeline {current} (promoting would reuse a timeline id)"
            ),
            Ineligible::WatchdogRequired => {
                write!(f, "watchdog.mode is required and the watchdog does not work")
            }
            Ineligible::NoPosition => write!(f, "no WAL position known"),
            Ineligible::NotSyncStandby => {
                write!(f, "not a synchronous standby of the last primary (only those hold every acknowledged commit)")
            }
            Ineligible::BeforeSyncDegraded { lsn, min_lsn } => write!(
                f,
                "at {lsn}, before {min_lsn}, where the last primary stopped waiting for synchronous standbys"
            ),
            Ineligible::QuorumIncomplete { recorded, needed } => write!(
                f,
                "only {recorded} of the {needed} quorum standbys needed recorded their final WAL position"
            ),
            Ineligible::BehindQuorum { lsn: Some(lsn), max } => {
                write!(f, "recorded {lsn}, behind {max}, the highest final WAL position of the quorum")
            }
            Ineligible::BehindQuorum { lsn: None, .. } => {
                write!(f, "has not recorded its final WAL position as a quorum standby")
            }
            Ineligible::NoSyncStandby => write!(
                f,
                "the last primary published no synchronous standby while its commits waited for one (strict)"
            ),
            Ineligible::TooFarBehind { lag, max } => {
                write!(f, "{lag} bytes behind the last primary position (maximum_lag_on_failover {max})")
            }
            Ineligible::BeforeCheckpoint { lsn, checkpoint } => {
                write!(f, "replayed {lsn}, before the released primary's shutdown checkpoint {checkpoint}")
            }
            Ineligible::OtherAhead { member, lsn } => write!(f, "{member} is further ahead at {lsn}"),
            Ineligible::HigherPriority { member } => {
                write!(f, "{member} is as far ahead with a higher failover_priority")
            }
            Ineligible::NotTheCandidate { candidate } => write!(f, "the switchover names {candidate}"),
            Ineligible::SwitchingAway => {
                write!(f, "the pending switchover moves the primary role away from me")
            }
        }
    }
}

fn priority(m: &Member) -> i64 {
    m.tags.failover_priority.unwrap_or(1)
}

fn fresh_lsn(m: &Member, wall_now_ms: u64) -> Option<Lsn> {
    let s = m.status.as_ref()?;
    if wall_now_ms.saturating_sub(s.updated_at_ms) > STATUS_FRESH_MS {
        return None;
    }
    s.replay_lsn.or(s.wal_lsn)
}

/// How far the last primary's WAL is known to go: its last renewal's position, or further if
/// a replica on the current timeline reported receiving more (the primary renews once per
/// `loop_wait`, so a burst of writes just before it died is only visible there; nofailover
/// replicas count too). `maximum_lag_on_failover` is measured against this.
pub fn known_primary_position(cluster: &ClusterState, wall_now_ms: u64) -> Option<Lsn> {
    // Only positions on the current timeline: a member still on an ended one may report WAL
    // the new primary never had.
    let timeline = cluster.history.last().map_or(1, |h| h.timeline.0 + 1);
    let streamed = cluster
        .members
        .values()
        .filter_map(|m| m.status.as_ref())
        .filter(|s| s.role == "replica" && s.timeline.is_some_and(|t| t.0 == timeline))
        .filter(|s| wall_now_ms.saturating_sub(s.updated_at_ms) <= STATUS_FRESH_MS)
        .filter_map(|s| s.receive_lsn.max(s.replay_lsn))
        .max();
    cluster.last_primary_lsn.max(streamed)
}

/// A member still on an older timeline than the newest one the history records must not be
/// promoted: Postgres would pick the id of the timeline it has not seen (the last primary's) for
/// its own, and two different histories under one timeline id defeat pg_rewind and streaming.
/// It happens when a primary dies right after its promotion, before its replicas switched.
pub fn timeline_blocker(cluster: &ClusterState, mine: Option<Timeline>) -> Option<Ineligible> {
    let current = Timeline(cluster.history.last().map_or(1, |h| h.timeline.0 + 1));
    match mine {
        Some(mine) if mine < current => Some(Ineligible::OldTimeline { mine, current }),
        _ => None,
    }
}

/// Synchronous modes, as the acquire's compare-and-set judges them: after an expired lease
/// only a published synchronous standby may take over (in a quorum, the one at the highest of
/// enough final records); a clean release (its checkpoint) lets any caught-up member.
pub fn sync_blocker(cluster: &ClusterState, member: &MemberName, lsn: Option<Lsn>) -> Option<Ineligible> {
    if cluster.release_checkpoint.is_some() || cluster.sync.leader.as_ref() == Some(member) {
        return None;
    }
    if !cluster.sync.members.is_empty() && !cluster.sync.members.contains(member) {
        return Some(Ineligible::NotSyncStandby);
    }
    if cluster.sync.quorum.is_some() {
        return cluster.sync.quorum_gap(member).map(|gap| match gap {
            QuorumGap::Incomplete { recorded, needed } => Ineligible::QuorumIncomplete { recorded, needed },
            QuorumGap::Behind { lsn, max } => Ineligible::BehindQuorum { lsn, max },
        });
    }
    if !cluster.sync.members.is_empty() {
        return None;
    }
    if !cluster.sync.degraded {
        return Some(Ineligible::NoSyncStandby);
    }
    let min_lsn = cluster.sync.min_lsn?;
    let lsn = lsn.unwrap_or(Lsn(0));
    (lsn < min_lsn).then_some(Ineligible::BeforeSyncDegraded { lsn, min_lsn })
}

/// Why `me` must not take the lease, or `None` if it may try.
pub fn blocker(
    cluster: &ClusterState,
    me: &MemberName,
    my_lsn: Option<Lsn>,
    wall_now_ms: u64,
) -> Option<Ineligible> {
    let member = cluster.members.get(me)?;
    if member.witness {
        return Some(Ineligible::Witness);
    }
    if member.tags.nofailover || member.tags.failover_priority == Some(0) {
        return Some(Ineligible::NoFailover);
    }
    if cluster.switchover.as_ref().and_then(|s| s.leader.as_ref()) == Some(me) {
        return Some(Ineligible::SwitchingAway);
    }
    if let Some(candidate) = cluster.switchover.as_ref().and_then(|s| s.candidate.as_ref()) {
        if candidate != me {
            return Some(Ineligible::NotTheCandidate { candidate: candidate.clone() });
        }
    }
    if let Some(why) = sync_blocker(cluster, me, my_lsn) {
        return Some(why);
    }
    let Some(lsn) = my_lsn else { return Some(Ineligible::NoPosition) };
    if let Some(checkpoint) = cluster.release_checkpoint {
        if lsn < checkpoint {
            return Some(Ineligible::BeforeCheckpoint { lsn, checkpoint });
        }
    }
    if let Some(last) = known_primary_position(cluster, wall_now_ms) {
        let lag = last.0.saturating_sub(lsn.0);
        let max = cluster.config.maximum_lag_on_failover;
        if lag > max {
            return Some(Ineligible::TooFarBehind { lag, max });
        }
    }
    let candidate_switchover = cluster.switchover.as_ref().and_then(|s| s.candidate.as_ref()) == Some(me);
    for other in cluster.members.values() {
        if &other.name == me
            || other.witness
            || other.tags.nofailover
            || other.tags.failover_priority == Some(0)
            || sync_blocker(cluster, &other.name, fresh_lsn(other, wall_now_ms)).is_some()
        {
            continue;
        }
        let Some(their) = fresh_lsn(other, wall_now_ms) else { continue };
        if their > lsn && !candidate_switchover {
            return Some(Ineligible::OtherAhead { member: other.name.clone(), lsn: their });
        }
        if their == lsn && priority(other) > priority(member) && !candidate_switchover {
            return Some(Ineligible::HigherPriority { member: other.name.clone() });
        }
    }
    None
}
