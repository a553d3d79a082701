//! The HA decision: `decide(&Observation) -> Decision`, pure, one action per iteration, in the
//! order of Patroni's questions (initialized? lease mine? lease someone else's? free?). Its
//! `Display` is the one INFO line of each loop ("no action: I am n1, the primary holding lease
//! epoch 7"). Safety rules from DESIGN.md: a Postgres may run as primary only while this node
//! holds a valid lease by its own clock (otherwise it is stopped immediately, before anyone else
//! can be promoted); promotion only after an accepted acquire; a returning old primary is
//! rewound or re-cloned before it follows. Pause stops automatic actions, never fencing.

use super::eligibility::{self, Ineligible};
use super::observe::{LocalPg, Observation, PgRole};
use crate::dcs::state::ClusterState;
use crate::types::{LeaseEpoch, Lsn, MemberName, Timeline};
use std::fmt;

/// How Postgres is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Clean shutdown with a checkpoint (switchover: the candidate then has every WAL record).
    Fast,
    /// SIGQUIT-like: no new commit can be acknowledged a moment later (fencing).
    Immediate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Race for the `initialize` key (compare-and-set in the state).
    ClaimInitialize,
    /// `initdb` into the empty data directory.
    Bootstrap,
    /// Create the roles, then record the system identifier and secrets in the state.
    CompleteInitialize,
    AcquireLease {
        expected_epoch: LeaseEpoch,
    },
    RenewLease {
        epoch: LeaseEpoch,
    },
    /// `pg_promote()`: only after our acquire was applied as accepted.
    Promote,
    StartPrimary,
    StartReplica {
        upstream: MemberName,
    },
    /// Start a standby's data directory as a standby of nobody, for the lease holder: the next
    /// step promotes it onto a new timeline. Started as a primary it would stay on the old
    /// timeline and write over LSNs the old primary had already used.
    StartStandby,
    /// Point a running standby at another upstream.
    Follow {
        upstream: MemberName,
    },
    Clone {
        from: MemberName,
    },
    Rewind {
        from: MemberName,
    },
    /// Crash recovery of a stopped data directory without serving (single-user mode): a
    /// crashed former primary, before it is compared with the history and rewound.
    CrashRecover,
    Stop {
        mode: StopMode,
    },
    /// Quorum mode, the lease of `epoch` expired: stop the WAL receiver and record the final
    /// position, so the member at the highest of enough records may take over.
    RecordFinalLsn {
        epoch: LeaseEpoch,
    },
    /// Give the lease up; after a clean stop with its shutdown checkpoint (switchover).
    ReleaseLease {
        epoch: LeaseEpoch,
        checkpoint: Option<Lsn>,
    },
}

/// Why: one sentence an operator reads in the log and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    NoClusterState,
    NotAMember,
    Witness,
    Uninitialized,
    WaitingForBootstrap { by: MemberName },
    Bootstrapping,
    ForeignDataDirectory { ours: String, cluster: String },
    Primary { epoch: LeaseEpoch },
    PrimaryStarting { epoch: LeaseEpoch },
    PromotingAfterAcquire { epoch: LeaseEpoch },
    NoDataWithLease { epoch: LeaseEpoch },
    RegainingLease { epoch: LeaseEpoch },
    WritableWithoutLease,
    SwitchingOver { candidate: Option<MemberName> },
    SwitchoverWaitsForCandidate,
    Following { upstream: MemberName },
    WrongUpstream { upstream: MemberName },
    Diverged { timeline: Timeline, primary_timeline: Timeline },
    NeedsClone { from: MemberName },
    CrashedPrimary,
    CrashedNoLease,
    Starting,
    LeaseFree,
    Ineligible(Ineligible),
    NothingToFollow,
    Paused,
    RecordingFinalLsn { epoch: LeaseEpoch },
    PrimaryStartTimedOut { seconds: u64 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason::*;
        match self {
            NoClusterState => write!(f, "waiting for the cluster state"),
            NotAMember => write!(f, "this node is not a member of the cluster"),
            Witness => write!(f, "witness: consensus only"),
            Uninitialized => write!(f, "the cluster has no Postgres yet"),
            WaitingForBootstrap { by } => write!(f, "waiting for {by} to bootstrap the cluster"),
            Bootstrapping => write!(f, "bootstrapping the cluster"),
            ForeignDataDirectory { ours, cluster } => write!(
                f,
                "the data directory belongs to another cluster (system identifier {ours}, the cluster's is {cluster}): run `pgha ctl reinit`"
            ),
            Primary { epoch } => write!(f, "the primary, holding lease epoch {epoch}"),
            PrimaryStarting { epoch } => write!(f, "holding lease epoch {epoch}, Postgres is starting"),
            PromotingAfterAcquire { epoch } => write!(f, "acquired lease epoch {epoch}: promoting"),
            NoDataWithLease { epoch } => write!(f, "holding lease epoch {epoch} without a data directory: giving it up"),
            RegainingLease { epoch } => write!(f, "the state names me holder of epoch {epoch} but I have no valid deadline: renewing"),
            WritableWithoutLease => write!(f, "Postgres is writable without a valid lease: stopping it at once"),
            SwitchingOver { candidate: Some(c) } => write!(f, "switching over to {c}"),
            SwitchingOver { candidate: None } => write!(f, "switching over"),
            SwitchoverWaitsForCandidate => write!(f, "a switchover is requested but no healthy candidate streams"),
            Following { upstream } => write!(f, "a replica following {upstream}"),
            WrongUpstream { upstream } => write!(f, "the primary is {upstream}: following it"),
            Diverged { timeline, primary_timeline } => write!(
                f,
                "my timeline {timeline} diverged from the primary's timeline {primary_timeline}"
            ),
            NeedsClone { from } => write!(f, "no data directory: cloning from {from}"),
            CrashedPrimary => write!(
                f,
                "my Postgres crashed as a primary: recovering it before comparing it with the new primary's history"
            ),
            CrashedNoLease => write!(
                f,
                "my Postgres crashed as a primary and the lease is free: recovering it to learn where its WAL ends"
            ),
            Starting => write!(f, "Postgres is starting"),
            LeaseFree => write!(f, "the lease is free and I am eligible: acquiring it"),
            Ineligible(why) => write!(f, "the lease is free but I may not take it: {why}"),
            NothingToFollow => write!(f, "no primary to follow"),
            Paused => write!(f, "paused: no automatic action"),
            PrimaryStartTimedOut { seconds } => write!(
                f,
                "my Postgres has not run as primary for primary_start_timeout ({seconds} s) while a replica runs: handing the lease over"
            ),
            RecordingFinalLsn { epoch } => write!(
                f,
                "lease epoch {epoch} expired and I am a quorum standby: stopping my WAL receiver to record my final position"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            Action::None => write!(f, "no action: {}", self.reason),
            a => write!(f, "{a:?}: {}", self.reason),
        }
    }
}

fn d(action: Action, reason: Reason) -> Decision {
    Decision { action, reason }
}

/// The member to clone from: a streaming `clonefrom` member if any, else the primary.
fn clone_source(c: &ClusterState, me: &MemberName, holder: &MemberName) -> MemberName {
    c.members
        .values()
        .find(|m| {
            m.tags.clonefrom && &m.name != me && m.status.as_ref().is_some_and(|s| s.state == "streaming")
        })
        .map(|m| m.name.clone())
        .unwrap_or_else(|| holder.clone())
}

/// Whether a stopped former primary on `timeline` ending at `checkpoint` diverged from the
/// current history: it did unless the history says its timeline ended at or after that point.
fn diverged(c: &ClusterState, timeline: Timeline, checkpoint: Lsn) -> bool {
    match c.history.iter().find(|h| h.timeline == timeline) {
        Some(h) => checkpoint > h.switch_lsn,
        // Not in the history: only the current timeline (one past the last ended) is safe.
        None => timeline.0 != c.history.last().map_or(1, |h| h.timeline.0 + 1),
    }
}

/// `Reason::Diverged` for a member on `timeline`, naming the primary's reported timeline.
fn diverged_from(c: &ClusterState, primary: &MemberName, timeline: Timeline) -> Reason {
    let primary_timeline =
        c.members.get(primary).and_then(|m| m.status.as_ref()).and_then(|s| s.timeline).unwrap_or(timeline);
    Reason::Diverged { timeline, primary_timeline }
}

/// pg_rewind from the primary when allowed and the directory was shut down cleanly (pg_rewind
/// refuses others), else a fresh clone.
fn rewind_or_clone(c: &ClusterState, me: &MemberName, primary: &MemberName, clean: bool) -> Action {
    if c.config.postgresql.use_pg_rewind && clean {
        Action::Rewind { from: primary.clone() }
    } else {
        Action::Clone { from: clone_source(c, me, primary) }
    }
}

/// Whether a standby at `lsn` on `timeline` went past the point where the history records
/// that timeline's end. Only a recorded end counts: a standby that followed a promotion not
/// recorded yet is on the newest history there is.
fn past_recorded_end(c: &ClusterState, timeline: Timeline, lsn: Lsn) -> bool {
    c.history.iter().find(|h| h.timeline == timeline).is_some_and(|h| lsn > h.switch_lsn)
}

pub fn decide(obs: &Observation) -> Decision {
    let c = obs.cluster;
    let Some(member) = c.members.get(obs.me) else { return d(Action::None, Reason::NotAMember) };
    if member.witness {
        return d(Action::None, Reason::Witness);
    }
    let paused = c.config.pause;
    let pg = obs.pg;

    // Initialization.
    match &c.initialize {
        None if paused => return d(Action::None, Reason::Paused),
        // A member that may never hold the lease must not bootstrap: it could not start the
        // Postgres it created, and the cluster would wait for it forever.
        None if member.tags.nofailover || member.tags.failover_priority == Some(0) => {
            return d(Action::None, Reason::Ineligible(Ineligible::NoFailover))
        }
        None if obs.watchdog_blocks => {
            return d(Action::None, Reason::Ineligible(Ineligible::WatchdogRequired))
        }
        None => return d(Action::ClaimInitialize, Reason::Uninitialized),
        Some(init) if init.system_identifier.is_none() => {
            if &init.bootstrapper != obs.me {
                return d(Action::None, Reason::WaitingForBootstrap { by: init.bootstrapper.clone() });
            }
            return match (pg, obs.lease.deadline) {
                (LocalPg::Absent, _) => d(Action::Bootstrap, Reason::Bootstrapping),
                (LocalPg::Stopped { .. }, None) => {
                    d(Action::AcquireLease { expected_epoch: c.last_epoch }, Reason::Bootstrapping)
                }
                (LocalPg::Stopped { .. }, Some(_)) => d(Action::StartPrimary, Reason::Bootstrapping),
                // The new primary may take longer than `ttl` to accept connections: keep the lease.
                (LocalPg::Starting, Some(_)) => match c.lease.as_ref().filter(|l| &l.holder == obs.me) {
                    Some(l) => d(Action::RenewLease { epoch: l.epoch }, Reason::Bootstrapping),
                    None => d(Action::None, Reason::Starting),
                },
                (LocalPg::Running { role: PgRole::Primary, .. }, Some(_)) => {
                    d(Action::CompleteInitialize, Reason::Bootstrapping)
                }
                (LocalPg::Running { role: PgRole::Primary, .. }, None) => {
                    d(Action::Stop { mode: StopMode::Immediate }, Reason::WritableWithoutLease)
                }
                _ => d(Action::None, Reason::Starting),
            };
        }
        Some(init) => {
            if let (Some(ours), Some(cluster)) = (pg.system_identifier(), init.system_identifier.as_deref()) {
                if ours != cluster {
                    let stop = pg.is_running_primary();
                    let action = if stop { Action::Stop { mode: StopMode::Immediate } } else { Action::None };
                    return d(
                        action,
                        Reason::ForeignDataDirectory { ours: ours.into(), cluster: cluster.into() },
                    );
                }
            }
        }
    }

    let holder = c.lease.as_ref().map(|l| &l.holder);
    // 1. I hold a valid lease by my own clock.
    if let (Some(_), Some(l)) = (obs.lease.deadline, c.lease.as_ref().filter(|l| &l.holder == obs.me)) {
        let epoch = l.epoch;
        if let Some(sw) = &c.switchover {
            let due = sw.scheduled_at_ms.is_none_or(|t| t <= obs.wall_now_ms);
            let for_me = sw.leader.as_ref().is_none_or(|leader| leader == obs.me);
            if due && for_me && !paused {
                let reason = Reason::SwitchingOver { candidate: sw.candidate.clone() };
                // The candidate check gates only the stop: once Postgres is down for the
                // switchover, the replicas stop streaming by construction, and waiting for them
                // would restart the primary and stop it again forever.
                return match pg {
                    LocalPg::Running { .. } | LocalPg::Starting | LocalPg::Recovering { .. }
                        if !has_switchover_candidate(c, obs.me, sw.candidate.as_ref(), obs.wall_now_ms) =>
                    {
                        renew_or_start(pg, epoch, Reason::SwitchoverWaitsForCandidate)
                    }
                    LocalPg::Running { .. } | LocalPg::Starting | LocalPg::Recovering { .. } => {
                        d(Action::Stop { mode: StopMode::Fast }, reason)
                    }
                    // Only a clean stop's checkpoint is the end of the WAL; after a crash,
                    // recover first (the next iteration releases with the real end).
                    LocalPg::Stopped { checkpoint, was_primary: true, clean: true, .. } => {
                        d(Action::ReleaseLease { epoch, checkpoint: Some(*checkpoint) }, reason)
                    }
                    LocalPg::Stopped { was_primary: true, clean: false, .. } => {
                        d(Action::CrashRecover, reason)
                    }
                    LocalPg::Stopped { .. } | LocalPg::Absent => {
                        d(Action::ReleaseLease { epoch, checkpoint: None }, reason)
                    }
                };
            }
        }
        // Paused: a stopped primary stays stopped (Patroni does not start Postgres in
        // maintenance mode; `ctl restart` does), and keeps its lease so nobody takes over.
        if paused && matches!(pg, LocalPg::Stopped { .. } | LocalPg::Absent) {
            return d(Action::RenewLease { epoch }, Reason::Paused);
        }
        if let Some(give_up) = start_timed_out(obs, epoch) {
            return give_up;
        }
        return renew_or_start(pg, epoch, Reason::Primary { epoch });
    }

    // Not writable without a valid lease, whatever else holds (fencing is never paused).
    if pg.is_running_primary() {
        return d(Action::Stop { mode: StopMode::Immediate }, Reason::WritableWithoutLease);
    }

    match (holder, c.lease.as_ref()) {
        // 2. The state names me but my clock gives me nothing (restart, failing renewals):
        //    try to renew; Postgres stays down or standby until the renewal is accepted.
        (Some(h), Some(l)) if h == obs.me => start_timed_out(obs, l.epoch).unwrap_or_else(|| {
            d(Action::RenewLease { epoch: l.epoch }, Reason::RegainingLease { epoch: l.epoch })
        }),
        // 3. Someone else is primary: follow it.
        (Some(h), _) => follow(c, obs.me, h, pg, paused),
        // 4. Free.
        _ => {
            if paused {
                return d(Action::None, Reason::Paused);
            }
            match pg {
                LocalPg::Absent => d(Action::None, Reason::NothingToFollow),
                LocalPg::Starting | LocalPg::Recovering { .. } => d(Action::None, Reason::Starting),
                // After a crash the last checkpoint is far behind the end of the WAL, and only
                // the end says whether this member is eligible: recover first.
                LocalPg::Stopped { was_primary: true, clean: false, .. } => {
                    d(Action::CrashRecover, Reason::CrashedNoLease)
                }
                // Whoever may take over, the quorum's records decide it: give ours first.
                LocalPg::Running { .. } | LocalPg::Stopped { .. } if owes_final_lsn(c, obs.me) => d(
                    Action::RecordFinalLsn { epoch: c.last_epoch },
                    Reason::RecordingFinalLsn { epoch: c.last_epoch },
                ),
                _ if obs.watchdog_blocks => d(Action::None, Reason::Ineligible(Ineligible::WatchdogRequired)),
                _ if eligibility::timeline_blocker(c, pg.timeline()).is_some() => d(
                    Action::None,
                    Reason::Ineligible(eligibility::timeline_blocker(c, pg.timeline()).expect("checked")),
                ),
                _ => match eligibility::blocker(c, obs.me, pg.lsn(), obs.wall_now_ms) {
                    None => d(Action::AcquireLease { expected_epoch: c.last_epoch }, Reason::LeaseFree),
                    Some(why) => d(Action::None, Reason::Ineligible(why)),
                },
            }
        }
    }
}

/// Quorum mode after an expiry (not a clean release): a published quorum standby that has
/// not recorded its final position yet.
fn owes_final_lsn(c: &ClusterState, me: &MemberName) -> bool {
    c.sync.quorum.is_some()
        && c.release_checkpoint.is_none()
        && c.sync.members.contains(me)
        && !c.sync.final_lsns.contains_key(me)
}

fn renew_or_start(pg: &LocalPg, epoch: LeaseEpoch, reason: Reason) -> Decision {
    match pg {
        LocalPg::Running { role: PgRole::Primary, .. } => d(Action::RenewLease { epoch }, reason),
        LocalPg::Running { role: PgRole::Replica, .. } => {
            d(Action::Promote, Reason::PromotingAfterAcquire { epoch })
        }
        LocalPg::Stopped { was_primary: false, .. } => {
            d(Action::StartStandby, Reason::PrimaryStarting { epoch })
        }
        LocalPg::Stopped { .. } => d(Action::StartPrimary, Reason::PrimaryStarting { epoch }),
        LocalPg::Starting | LocalPg::Recovering { .. } => {
            d(Action::RenewLease { epoch }, Reason::PrimaryStarting { epoch })
        }
        LocalPg::Absent => {
            d(Action::ReleaseLease { epoch, checkpoint: None }, Reason::NoDataWithLease { epoch })
        }
    }
}

/// A holder of `epoch` that cannot get its Postgres up as primary (a crash it cannot recover
/// from, a full disk) would keep the cluster without a primary for as long as that lasts:
/// after `primary_start_timeout`, with a running replica to take over, it stops trying and
/// hands the lease over (Postgres stopped first; no checkpoint, so the expiry rules choose).
fn start_timed_out(obs: &Observation, epoch: LeaseEpoch) -> Option<Decision> {
    let (c, pg) = (obs.cluster, obs.pg);
    let timeout_ms = c.config.primary_start_timeout.saturating_mul(1000);
    let due = !c.config.pause
        && !pg.is_running_primary()
        && obs.primary_down_ms.is_some_and(|down| down >= timeout_ms)
        && has_failover_candidate(c, obs.me, obs.wall_now_ms);
    if !due {
        return None;
    }
    let reason = Reason::PrimaryStartTimedOut { seconds: c.config.primary_start_timeout };
    Some(match pg {
        LocalPg::Starting | LocalPg::Recovering { .. } | LocalPg::Running { .. } => {
            d(Action::Stop { mode: StopMode::Immediate }, reason)
        }
        LocalPg::Stopped { .. } | LocalPg::Absent => {
            d(Action::ReleaseLease { epoch, checkpoint: None }, reason)
        }
    })
}

/// Another data member that may take over after a release without checkpoint: its Postgres
/// runs as a replica (streaming or not: the primary is down), it is not `nofailover`, and the
/// synchronous rules let it.
fn has_failover_candidate(c: &ClusterState, me: &MemberName, now: u64) -> bool {
    c.members.values().any(|m| {
        &m.name != me
            && !m.witness
            && !m.tags.nofailover
            && m.tags.failover_priority != Some(0)
            && m.status.as_ref().is_some_and(|s| {
                matches!(s.state.as_str(), "streaming" | "running")
                    && s.role == "replica"
                    && now.saturating_sub(s.updated_at_ms) <= eligibility::STATUS_FRESH_MS
                    && eligibility::sync_blocker(c, &m.name, s.replay_lsn.or(s.receive_lsn)).is_none()
            })
    })
}

fn has_switchover_candidate(
    c: &ClusterState,
    me: &MemberName,
    candidate: Option<&MemberName>,
    now: u64,
) -> bool {
    c.members.values().any(|m| {
        &m.name != me
            && !m.witness
            && !m.tags.nofailover
            && candidate.is_none_or(|cand| cand == &m.name)
            && m.status.as_ref().is_some_and(|s| {
                s.state == "streaming" && now.saturating_sub(s.updated_at_ms) <= eligibility::STATUS_FRESH_MS
            })
    })
}

fn follow(c: &ClusterState, me: &MemberName, primary: &MemberName, pg: &LocalPg, paused: bool) -> Decision {
    let auto = |action: Action, reason: Reason| {
        if paused {
            d(Action::None, Reason::Paused)
        } else {
            d(action, reason)
        }
    };
    match pg {
        LocalPg::Absent => {
            let from = clone_source(c, me, primary);
            auto(Action::Clone { from: from.clone() }, Reason::NeedsClone { from })
        }
        LocalPg::Starting => d(Action::None, Reason::Starting),
        // A standby not yet consistent that waits for WAL from a member that is no longer
        // the primary would wait for ever: point it at the primary (a reload by signal).
        LocalPg::Recovering { upstream } if upstream.as_ref() != Some(primary) => auto(
            Action::Follow { upstream: primary.clone() },
            Reason::WrongUpstream { upstream: primary.clone() },
        ),
        LocalPg::Recovering { .. } => d(Action::None, Reason::Starting),
        // pg_rewind refuses a data directory that was not shut down cleanly, and only a clean
        // one's last checkpoint is the end of its WAL: recover first, then decide.
        LocalPg::Stopped { was_primary: true, clean: false, .. } if c.config.postgresql.use_pg_rewind => {
            auto(Action::CrashRecover, Reason::CrashedPrimary)
        }
        // A standby that replayed past the point where its timeline ended can never follow
        // the new timeline: rewind it (pg_rewind needs a clean shutdown) or clone it again.
        LocalPg::Stopped { was_primary: false, replayed: Some((tl, lsn)), clean, .. }
            if past_recorded_end(c, *tl, *lsn) =>
        {
            let reason = diverged_from(c, primary, *tl);
            auto(rewind_or_clone(c, me, primary, *clean), reason)
        }
        LocalPg::Stopped { timeline, checkpoint, was_primary, .. } => {
            if *was_primary && diverged(c, *timeline, *checkpoint) {
                auto(rewind_or_clone(c, me, primary, true), diverged_from(c, primary, *timeline))
            } else {
                auto(
                    Action::StartReplica { upstream: primary.clone() },
                    Reason::WrongUpstream { upstream: primary.clone() },
                )
            }
        }
        // A standby stuck on an ended timeline past its end cannot stream from the new
        // primary (Postgres retries for ever): stop it; the stopped directory is then rewound
        // or cloned (above).
        LocalPg::Running { role: PgRole::Replica, timeline, lsn, streaming: false, .. }
            if past_recorded_end(c, *timeline, *lsn) =>
        {
            auto(Action::Stop { mode: StopMode::Fast }, diverged_from(c, primary, *timeline))
        }
        LocalPg::Running { upstream, .. } => {
            if upstream.as_ref() == Some(primary) {
                d(Action::None, Reason::Following { upstream: primary.clone() })
            } else {
                auto(
                    Action::Follow { upstream: primary.clone() },
                    Reason::WrongUpstream { upstream: primary.clone() },
                )
            }
        }
    }
}
