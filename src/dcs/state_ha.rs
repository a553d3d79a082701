//! The HA commands of the replicated state: the initialize race, member status reports,
//! promotion history, switchover requests and the versioned dynamic configuration, plus the
//! WAL checks an acquire must pass inside its compare-and-set (DESIGN.md lease rule 3: a stale
//! local view may propose, it cannot win). Deterministic like the rest of `apply`.

use super::state::{
    ClusterState, HistoryEntry, Initialize, MemberStatus, Outcome, QuorumGap, Rejection, ScheduledRestart,
    SwitchoverRequest, SyncState,
};
use crate::config::dynamic::DynamicConfig;
use crate::types::{LeaseEpoch, Lsn, MemberName};
use std::collections::BTreeMap;

impl ClusterState {
    /// Why `candidate` at `lsn` may not take the lease, judged from the replicated state alone:
    /// before a released primary's shutdown checkpoint, or further than
    /// `maximum_lag_on_failover` behind the last recorded primary position. Without a
    /// position the candidate is judged by its last report.
    pub(super) fn wal_blocker(&self, candidate: &MemberName, lsn: Option<Lsn>) -> Option<Rejection> {
        let reported = self.members.get(candidate)?.status.as_ref().and_then(|s| s.replay_lsn.or(s.wal_lsn));
        let lsn = lsn.or(reported)?;
        if let Some(checkpoint) = self.release_checkpoint {
            if lsn < checkpoint {
                return Some(Rejection::BeforeCheckpoint { member: candidate.clone(), lsn, checkpoint });
            }
        }
        let last = self.last_primary_lsn?;
        let lag = last.0.saturating_sub(lsn.0);
        let max = self.config.maximum_lag_on_failover;
        (lag > max).then(|| Rejection::TooFarBehind { member: candidate.clone(), lag, max })
    }

    pub(super) fn claim_initialize(&mut self, member: MemberName) -> Outcome {
        if let Some(init) = &self.initialize {
            return Outcome::Rejected {
                reason: Rejection::AlreadyInitialized { by: init.bootstrapper.clone() },
            };
        }
        match self.members.get(&member) {
            None => Outcome::Rejected { reason: Rejection::UnknownMember { member } },
            Some(m) if m.witness => Outcome::Rejected { reason: Rejection::Witness { member } },
            Some(_) => {
                self.initialize = Some(Initialize { bootstrapper: member, system_identifier: None });
                Outcome::Accepted
            }
        }
    }

    pub(super) fn complete_initialize(
        &mut self,
        member: MemberName,
        system_identifier: String,
        secrets: BTreeMap<String, String>,
    ) -> Outcome {
        match &mut self.initialize {
            Some(init) if init.bootstrapper == member && init.system_identifier.is_none() => {
                init.system_identifier = Some(system_identifier);
                self.secrets.extend(secrets);
                Outcome::Accepted
            }
            Some(init) if init.system_identifier.is_some() => {
                Outcome::Rejected { reason: Rejection::AlreadyInitialized { by: init.bootstrapper.clone() } }
            }
            _ => Outcome::Rejected { reason: Rejection::NotBootstrapper { member } },
        }
    }

    pub(super) fn report_status(&mut self, member: MemberName, status: MemberStatus) -> Outcome {
        match self.members.get_mut(&member) {
            Some(m) => {
                m.status = Some(status);
                Outcome::Accepted
            }
            None => Outcome::Rejected { reason: Rejection::UnknownMember { member } },
        }
    }

    /// Why `candidate` may not take a lease that expired (not one released cleanly: rule 6's
    /// checkpoint covers that): outside the published synchronous standbys, or with none
    /// published while the primary's commits waited for one.
    pub(super) fn sync_blocker(&self, candidate: &MemberName, lsn: Option<Lsn>) -> Option<Rejection> {
        if self.release_checkpoint.is_some() || self.sync.leader.as_ref() == Some(candidate) {
            return None;
        }
        if !self.sync.members.contains(candidate) && !self.sync.members.is_empty() {
            return Some(Rejection::NotSyncStandby { member: candidate.clone() });
        }
        if self.sync.quorum.is_some() {
            return self.quorum_blocker(candidate);
        }
        if !self.sync.members.is_empty() {
            return None;
        }
        if !self.sync.degraded {
            return Some(Rejection::NoSyncStandby);
        }
        let min_lsn = self.sync.min_lsn?;
        let reported = self.members.get(candidate)?.status.as_ref().and_then(|s| s.replay_lsn.or(s.wal_lsn));
        let lsn = lsn.or(reported).unwrap_or(Lsn(0));
        (lsn < min_lsn).then(|| Rejection::BeforeSyncDegraded { member: candidate.clone(), lsn, min_lsn })
    }

    fn quorum_blocker(&self, candidate: &MemberName) -> Option<Rejection> {
        Some(match self.sync.quorum_gap(candidate)? {
            QuorumGap::Incomplete { recorded, needed } => Rejection::QuorumIncomplete { recorded, needed },
            QuorumGap::Behind { lsn, max } => Rejection::BehindQuorum { member: candidate.clone(), lsn, max },
        })
    }

    /// A member of the published quorum records its final LSN after the lease of `epoch`
    /// expired. The first record stands: its WAL receiver is stopped, it cannot grow.
    pub(super) fn record_final_lsn(&mut self, member: MemberName, epoch: LeaseEpoch, lsn: Lsn) -> Outcome {
        if let Some(l) = &self.lease {
            return Outcome::Rejected {
                reason: Rejection::LeaseHeld { holder: l.holder.clone(), epoch: l.epoch },
            };
        }
        if epoch != self.last_epoch {
            return Outcome::Rejected {
                reason: Rejection::StaleEpoch { expected: epoch, actual: self.last_epoch },
            };
        }
        if self.sync.quorum.is_none() || !self.sync.members.contains(&member) {
            return Outcome::Rejected { reason: Rejection::NotSyncStandby { member } };
        }
        self.sync.final_lsns.entry(member).or_insert(lsn);
        Outcome::Accepted
    }

    /// The holder of `epoch` publishes its synchronous standbys: existing data members other
    /// than itself, with a quorum between 1 and their number.
    pub(super) fn set_sync(&mut self, holder: MemberName, epoch: LeaseEpoch, sync: SyncState) -> Outcome {
        if !self.lease.as_ref().is_some_and(|l| l.holder == holder && l.epoch == epoch) {
            return Outcome::Rejected { reason: Rejection::NotHolder { member: holder } };
        }
        if let Some(m) =
            sync.members.iter().find(|m| **m == holder || self.members.get(*m).is_none_or(|x| x.witness))
        {
            return Outcome::Rejected { reason: Rejection::UnknownMember { member: m.clone() } };
        }
        if let Some(k) = sync.quorum {
            if k == 0 || k as usize > sync.members.len() {
                return Outcome::Rejected {
                    reason: Rejection::InvalidQuorum { quorum: k, members: sync.members.len() },
                };
            }
        }
        self.sync = SyncState { final_lsns: BTreeMap::new(), leader: Some(holder), ..sync };
        Outcome::Accepted
    }

    pub(super) fn schedule_restart(
        &mut self,
        member: MemberName,
        restart: Option<ScheduledRestart>,
    ) -> Outcome {
        let Some(m) = self.members.get_mut(&member) else {
            return Outcome::Rejected { reason: Rejection::UnknownMember { member } };
        };
        if m.witness {
            return Outcome::Rejected { reason: Rejection::Witness { member } };
        }
        match (&m.scheduled_restart, restart) {
            (Some(planned), Some(_)) => Outcome::Rejected {
                reason: Rejection::RestartScheduled { at: crate::clock::rfc3339_ms(planned.at_ms), member },
            },
            (None, None) => Outcome::Rejected { reason: Rejection::NoRestartScheduled { member } },
            (_, new) => {
                m.scheduled_restart = new;
                Outcome::Accepted
            }
        }
    }

    /// Appends to the history when the lease holder of `epoch` promoted, once per timeline;
    /// the switchover that led here (if any) is done, and so is its checkpoint.
    pub(super) fn record_promotion(
        &mut self,
        member: MemberName,
        epoch: LeaseEpoch,
        entry: HistoryEntry,
    ) -> Outcome {
        if !self.lease.as_ref().is_some_and(|l| l.holder == member && l.epoch == epoch) {
            return Outcome::Rejected { reason: Rejection::NotHolder { member } };
        }
        if self.history.last().is_some_and(|h| h.timeline >= entry.timeline) {
            return Outcome::Rejected { reason: Rejection::TimelineRecorded { timeline: entry.timeline } };
        }
        self.history.push(entry);
        self.switchover = None;
        self.release_checkpoint = None;
        Outcome::Accepted
    }

    /// Accepts a request whose named members exist and can play their part; whether the
    /// candidate is healthy enough is checked by the API (it knows the live status) and again
    /// by the candidate's own eligibility when it acquires.
    pub(super) fn request_switchover(&mut self, request: SwitchoverRequest) -> Outcome {
        let refuse = |why: String| Outcome::Rejected { reason: Rejection::Switchover { why } };
        if let Some(leader) = &request.leader {
            if self.lease.as_ref().map(|l| &l.holder) != Some(leader) {
                return refuse(format!("{leader} is not the primary"));
            }
        }
        if let Some(candidate) = &request.candidate {
            let Some(m) = self.members.get(candidate) else {
                return refuse(format!("{candidate} is not a member"));
            };
            if m.witness || m.tags.nofailover || m.tags.failover_priority == Some(0) {
                return refuse(format!("{candidate} may not become primary (witness or nofailover)"));
            }
            if self.lease.as_ref().is_some_and(|l| &l.holder == candidate) {
                return refuse(format!("{candidate} is already the primary"));
            }
        } else if self.lease.is_none() {
            return refuse("there is no primary to switch over from; name a candidate for a failover".into());
        }
        if self.switchover.is_some() {
            return refuse("a switchover is already pending; cancel it first".into());
        }
        // Record whom the role moves away from, so that member does not take it back.
        let mut request = request;
        if request.leader.is_none() {
            request.leader = self.lease.as_ref().map(|l| l.holder.clone());
        }
        self.switchover = Some(request);
        Outcome::Accepted
    }

    pub(super) fn set_config(&mut self, expected_version: u64, config: DynamicConfig) -> Outcome {
        if expected_version != self.config_version {
            return Outcome::Rejected {
                reason: Rejection::ConfigVersion { expected: expected_version, actual: self.config_version },
            };
        }
        self.config = config;
        self.config_version += 1;
        Outcome::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::state::{CaMaterial, Command, Lease, NewMember, RaftMembership, Tags};
    use crate::types::{NodeId, Timeline};

    fn n(s: &str) -> MemberName {
        MemberName::new(s).unwrap()
    }

    /// n1 (bootstrap member), n2, n3 voters; n4 a witness.
    fn state() -> ClusterState {
        let nm = |name: &str, witness: bool| NewMember {
            name: n(name),
            witness,
            api_address: format!("{name}:8008"),
            raft_address: format!("{name}:5010"),
            pg_address: Some(format!("{name}:5432")),
            tags: Tags::default(),
            version: "t".into(),
        };
        let mut s = ClusterState::bootstrap(
            "s".into(),
            "i".into(),
            nm("n1", false),
            CaMaterial { cert_pem: String::new(), key_pem: String::new() },
            DynamicConfig::default(),
        );
        for (i, (name, w)) in [("n2", false), ("n3", false), ("n4", true)].into_iter().enumerate() {
            let mut m = s.members[&n("n1")].clone();
            let new = nm(name, w);
            m.name = new.name;
            m.node_id = NodeId(i as u64 + 2);
            m.witness = w;
            m.api_address = new.api_address;
            m.raft_address = new.raft_address;
            m.membership = RaftMembership::Voter;
            s.members.insert(n(name), m);
        }
        s.next_node_id = 5;
        s
    }

    fn held(mut s: ClusterState, holder: &str, epoch: u64) -> ClusterState {
        s.last_epoch = LeaseEpoch(epoch);
        s.lease = Some(Lease { holder: n(holder), epoch: LeaseEpoch(epoch), ttl_ms: 10_000, renewal: 1 });
        s
    }

    fn acquire(c: &str, expected: u64, lsn: Option<u64>) -> Command {
        Command::AcquireLease {
            candidate: n(c),
            expected_epoch: LeaseEpoch(expected),
            ttl_ms: 10_000,
            renewal: 1,
            lsn: lsn.map(Lsn),
        }
    }

    const MB: u64 = 1024 * 1024;

    /// (scenario, last primary lsn, released checkpoint, candidate lsn, accepted)
    #[test]
    fn an_acquire_re_checks_wal_inside_the_compare_and_set() {
        let rows = [
            ("no position recorded anywhere", None, None, None, true),
            ("caught up", Some(5 * MB), None, Some(5 * MB), true),
            ("within maximum_lag_on_failover", Some(5 * MB), None, Some(4 * MB), true),
            ("beyond maximum_lag_on_failover", Some(5 * MB), None, Some(4 * MB - 1), false),
            ("at the released checkpoint", None, Some(7 * MB), Some(7 * MB), true),
            ("before the released checkpoint", None, Some(7 * MB), Some(7 * MB - 1), false),
        ];
        for (scenario, last, checkpoint, lsn, ok) in rows {
            let mut s = state();
            s.last_primary_lsn = last.map(Lsn);
            s.release_checkpoint = checkpoint.map(Lsn);
            let out = s.apply(acquire("n2", 0, lsn));
            assert_eq!(out.is_accepted(), ok, "{scenario}: {out:?}");
            assert_eq!(s.lease.is_some(), ok, "{scenario}");
        }
        // Without a position in the command, the candidate's last report counts.
        let mut s = state();
        s.last_primary_lsn = Some(Lsn(9 * MB));
        s.apply(Command::ReportStatus {
            member: n("n2"),
            status: MemberStatus { replay_lsn: Some(Lsn(MB)), ..Default::default() },
        });
        assert!(!s.apply(acquire("n2", 0, None)).is_accepted());
    }

    #[test]
    fn renewals_record_the_primary_position() {
        let mut s = held(state(), "n1", 1);
        let renew = |lsn| Command::RenewLease {
            holder: n("n1"),
            epoch: LeaseEpoch(1),
            ttl_ms: 10_000,
            renewal: 2,
            lsn,
        };
        s.apply(renew(Some(Lsn(42))));
        assert_eq!(s.last_primary_lsn, Some(Lsn(42)));
        s.apply(renew(None));
        assert_eq!(s.last_primary_lsn, Some(Lsn(42)), "a renewal without a position keeps the last one");
    }

    #[test]
    fn exactly_one_member_wins_the_initialize_race() {
        let mut s = state();
        assert_eq!(
            s.apply(Command::ClaimInitialize { member: n("n4") }),
            Outcome::Rejected { reason: Rejection::Witness { member: n("n4") } }
        );
        assert!(s.apply(Command::ClaimInitialize { member: n("n2") }).is_accepted());
        assert_eq!(
            s.apply(Command::ClaimInitialize { member: n("n1") }),
            Outcome::Rejected { reason: Rejection::AlreadyInitialized { by: n("n2") } }
        );
        let secrets: BTreeMap<_, _> = [("replication".to_string(), "pw".to_string())].into();
        let complete = |m: &str| Command::CompleteInitialize {
            member: n(m),
            system_identifier: "7712".into(),
            secrets: secrets.clone(),
        };
        assert!(!s.apply(complete("n1")).is_accepted(), "only the winner completes");
        assert!(s.apply(complete("n2")).is_accepted());
        assert_eq!(s.initialize.as_ref().unwrap().system_identifier.as_deref(), Some("7712"));
        assert_eq!(s.secrets["replication"], "pw");
        assert!(!s.apply(complete("n2")).is_accepted(), "once");
    }

    #[test]
    fn promotions_enter_the_history_once_per_timeline_from_the_holder() {
        let entry = |tl: u32| HistoryEntry {
            timeline: Timeline(tl),
            switch_lsn: Lsn(100),
            reason: "failover".into(),
            at_ms: 1,
            new_primary: n("n2"),
        };
        let mut s = held(state(), "n2", 3);
        s.switchover =
            Some(SwitchoverRequest { leader: None, candidate: Some(n("n2")), scheduled_at_ms: None });
        s.release_checkpoint = Some(Lsn(100));
        let record = |m: &str, e: u64, tl: u32| Command::RecordPromotion {
            member: n(m),
            epoch: LeaseEpoch(e),
            entry: entry(tl),
        };
        assert!(!s.apply(record("n1", 3, 1)).is_accepted(), "not the holder");
        assert!(!s.apply(record("n2", 2, 1)).is_accepted(), "an older epoch");
        assert!(s.apply(record("n2", 3, 1)).is_accepted());
        assert!(s.switchover.is_none() && s.release_checkpoint.is_none(), "the switchover is done");
        assert_eq!(
            s.apply(record("n2", 3, 1)),
            Outcome::Rejected { reason: Rejection::TimelineRecorded { timeline: Timeline(1) } }
        );
        s.check_invariants();
    }

    /// (scenario, holder, leader, candidate, accepted)
    type SwitchoverRow =
        (&'static str, Option<&'static str>, Option<&'static str>, Option<&'static str>, bool);

    #[test]
    fn switchover_requests_name_members_that_can_play_their_part() {
        let rows: [SwitchoverRow; 8] = [
            ("to a named replica", Some("n1"), Some("n1"), Some("n2"), true),
            ("to any replica", Some("n1"), None, None, true),
            ("from a member that is not the primary", Some("n1"), Some("n3"), Some("n2"), false),
            ("to an unknown member", Some("n1"), None, Some("zz"), false),
            ("to a witness", Some("n1"), None, Some("n4"), false),
            ("to the primary itself", Some("n1"), None, Some("n1"), false),
            ("failover to a named member without primary", None, None, Some("n2"), true),
            ("failover without a candidate", None, None, None, false),
        ];
        for (scenario, holder, leader, candidate, ok) in rows {
            let mut s = match holder {
                Some(h) => held(state(), h, 1),
                None => state(),
            };
            let req = SwitchoverRequest {
                leader: leader.map(n),
                candidate: candidate.map(n),
                scheduled_at_ms: None,
            };
            let out = s.apply(Command::RequestSwitchover { request: req.clone() });
            assert_eq!(out.is_accepted(), ok, "{scenario}: {out:?}");
            assert_eq!(s.switchover.is_some(), ok, "{scenario}");
            if ok {
                assert!(
                    !s.apply(Command::RequestSwitchover { request: req }).is_accepted(),
                    "{scenario}: one at a time"
                );
                s.apply(Command::CancelSwitchover);
                assert!(s.switchover.is_none());
            }
        }
    }

    #[test]
    fn a_switchover_is_done_when_another_member_takes_the_lease() {
        let mut s = held(state(), "n1", 1);
        let req = SwitchoverRequest { leader: None, candidate: None, scheduled_at_ms: None };
        assert!(s.apply(Command::RequestSwitchover { request: req }).is_accepted());
        assert_eq!(s.switchover.as_ref().unwrap().leader, Some(n("n1")), "records whom it moves away from");
        s.apply(Command::ReleaseLease { holder: n("n1"), epoch: LeaseEpoch(1), checkpoint: Some(Lsn(10)) });
        assert!(s.apply(acquire("n3", 1, Some(10))).is_accepted());
        assert!(s.switchover.is_none() && s.release_checkpoint.is_none(), "done once n3 holds the lease");
    }

    #[test]
    fn config_changes_are_a_compare_and_set_on_the_version() {
        let mut s = state();
        let v = s.config_version;
        let changed = DynamicConfig { ttl: 20, ..DynamicConfig::default() };
        assert!(s.apply(Command::SetConfig { expected_version: v, config: changed.clone() }).is_accepted());
        assert_eq!((s.config.ttl, s.config_version), (20, v + 1));
        assert_eq!(
            s.apply(Command::SetConfig { expected_version: v, config: DynamicConfig::default() }),
            Outcome::Rejected { reason: Rejection::ConfigVersion { expected: v, actual: v + 1 } }
        );
        assert_eq!(s.config, changed);
    }
}
