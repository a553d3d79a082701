//! Table tests of `ClusterState::apply` for the membership, token and lease commands.
use super::*;

fn name(s: &str) -> MemberName {
    MemberName::new(s).unwrap()
}

fn new_member(n: &str, port: u16) -> NewMember {
    NewMember {
        name: name(n),
        witness: false,
        api_address: format!("127.0.0.1:{port}"),
        raft_address: format!("127.0.0.1:{}", port + 1),
        pg_address: Some(format!("127.0.0.1:{}", port + 2)),
        tags: Tags::default(),
        version: "test".into(),
    }
}

/// Builder for states in the tables below.
struct St(ClusterState);

impl St {
    fn one() -> St {
        St(ClusterState::bootstrap(
            "s".into(),
            "inc".into(),
            new_member("n1", 1000),
            CaMaterial { cert_pem: String::new(), key_pem: String::new() },
            DynamicConfig::default(),
        ))
    }
    fn three() -> St {
        St::one().join(&["n2", "n3"], 2000)
    }
    /// These members join with tokens, their ports from `port` on.
    fn join(mut self, names: &[&str], port: u16) -> St {
        for (i, n) in names.iter().enumerate() {
            let h = format!("tok{n}");
            self.0.apply(Command::CreateToken { hash: h.clone(), expires_at_ms: 100 });
            let member = new_member(n, port + 10 * i as u16);
            let out = self.0.apply(Command::Join { token_hash: h, now_ms: 1, member });
            assert!(matches!(out, Outcome::Joined { .. }));
        }
        self
    }
    fn held(mut self, holder: &str, epoch: u64, renewal: u64) -> St {
        self.0.last_epoch = LeaseEpoch(epoch);
        self.0.lease =
            Some(Lease { holder: name(holder), epoch: LeaseEpoch(epoch), ttl_ms: 10_000, renewal });
        self
    }
    fn free_after(mut self, epoch: u64) -> St {
        self.0.last_epoch = LeaseEpoch(epoch);
        self.0.lease = None;
        self
    }
    fn tagged_nofailover(mut self, m: &str) -> St {
        self.0.members.get_mut(&name(m)).unwrap().tags.nofailover = true;
        self
    }
    fn witness(mut self, m: &str) -> St {
        self.0.members.get_mut(&name(m)).unwrap().witness = true;
        self
    }
}

fn acquire(c: &str, expected: u64, renewal: u64) -> Command {
    Command::AcquireLease {
        candidate: name(c),
        expected_epoch: LeaseEpoch(expected),
        ttl_ms: 10_000,
        renewal,
        lsn: None,
    }
}
fn renew(h: &str, epoch: u64, renewal: u64) -> Command {
    Command::RenewLease { holder: name(h), epoch: LeaseEpoch(epoch), ttl_ms: 10_000, renewal, lsn: None }
}
fn release(h: &str, epoch: u64) -> Command {
    Command::ReleaseLease { holder: name(h), epoch: LeaseEpoch(epoch), checkpoint: Some(Lsn(0x3000148)) }
}
fn expire(epoch: u64, renewal: u64) -> Command {
    Command::ExpireLease { epoch: LeaseEpoch(epoch), renewal }
}

/// (scenario, start state, command, expected outcome, expected holder and epoch after)
#[test]
fn lease_commands() {
    use Outcome::*;
    type Row = (&'static str, St, Command, Outcome, Option<(&'static str, u64)>);
    let rows: Vec<Row> = vec![
        (
            "first acquire",
            St::three(),
            acquire("n1", 0, 7),
            LeaseGranted { epoch: LeaseEpoch(1) },
            Some(("n1", 1)),
        ),
        (
            "acquire while held",
            St::three().held("n1", 3, 1),
            acquire("n2", 3, 7),
            Rejected { reason: Rejection::LeaseHeld { holder: name("n1"), epoch: LeaseEpoch(3) } },
            Some(("n1", 3)),
        ),
        (
            "acquire with stale epoch",
            St::three().free_after(4),
            acquire("n2", 3, 7),
            Rejected { reason: Rejection::StaleEpoch { expected: LeaseEpoch(3), actual: LeaseEpoch(4) } },
            None,
        ),
        (
            "acquire after release",
            St::three().free_after(4),
            acquire("n2", 4, 7),
            LeaseGranted { epoch: LeaseEpoch(5) },
            Some(("n2", 5)),
        ),
        (
            "acquire by unknown member",
            St::three(),
            acquire("zz", 0, 7),
            Rejected { reason: Rejection::UnknownMember { member: name("zz") } },
            None,
        ),
        (
            "acquire by nofailover member",
            St::three().tagged_nofailover("n2"),
            acquire("n2", 0, 7),
            Rejected { reason: Rejection::NoFailover { member: name("n2") } },
            None,
        ),
        (
            "acquire by witness",
            St::three().witness("n3"),
            acquire("n3", 0, 7),
            Rejected { reason: Rejection::Witness { member: name("n3") } },
            None,
        ),
        ("renew by holder", St::three().held("n1", 2, 1), renew("n1", 2, 9), Accepted, Some(("n1", 2))),
        (
            "renew by non-holder",
            St::three().held("n1", 2, 1),
            renew("n2", 2, 9),
            Rejected { reason: Rejection::NotHolder { member: name("n2") } },
            Some(("n1", 2)),
        ),
        (
            "renew of an older epoch",
            St::three().held("n1", 2, 1),
            renew("n1", 1, 9),
            Rejected { reason: Rejection::NotHolder { member: name("n1") } },
            Some(("n1", 2)),
        ),
        (
            "renew after expiry",
            St::three().free_after(2),
            renew("n1", 2, 9),
            Rejected { reason: Rejection::NotHolder { member: name("n1") } },
            None,
        ),
        ("release by holder", St::three().held("n1", 2, 1), release("n1", 2), Accepted, None),
        (
            "release by non-holder",
            St::three().held("n1", 2, 1),
            release("n2", 2),
            Rejected { reason: Rejection::NotHolder { member: name("n2") } },
            Some(("n1", 2)),
        ),
        ("expire of the watched renewal", St::three().held("n1", 2, 5), expire(2, 5), Accepted, None),
        (
            "expire after a newer renewal",
            St::three().held("n1", 2, 6),
            expire(2, 5),
            Rejected { reason: Rejection::RenewedMeanwhile },
            Some(("n1", 2)),
        ),
        (
            "expire of an older epoch",
            St::three().held("n1", 3, 5),
            expire(2, 5),
            Rejected { reason: Rejection::StaleEpoch { expected: LeaseEpoch(2), actual: LeaseEpoch(3) } },
            Some(("n1", 3)),
        ),
        (
            "expire when free",
            St::three().free_after(3),
            expire(3, 5),
            Rejected { reason: Rejection::StaleEpoch { expected: LeaseEpoch(3), actual: LeaseEpoch(3) } },
            None,
        ),
    ];
    for (scenario, St(mut state), cmd, want, holder_after) in rows {
        let got = state.apply(cmd);
        assert_eq!(got, want, "{scenario}");
        let after = state.lease.as_ref().map(|l| (l.holder.as_str().to_string(), l.epoch.0));
        assert_eq!(after, holder_after.map(|(h, e)| (h.to_string(), e)), "{scenario}: holder after");
    }
}

#[test]
fn racing_acquires_grant_exactly_one() {
    let mut s = St::three().0;
    let outcomes: Vec<_> = ["n1", "n2", "n3"].iter().map(|c| s.apply(acquire(c, 0, 1))).collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_accepted()).count(), 1);
    assert_eq!(s.lease.unwrap().holder, name("n1"));
}

#[test]
fn renewal_committed_after_expiry_extends_nothing() {
    let mut s = St::three().held("n1", 1, 1).0;
    assert_eq!(s.apply(expire(1, 1)), Outcome::Accepted);
    assert!(!s.apply(renew("n1", 1, 2)).is_accepted());
    assert!(s.lease.is_none());
    // The next acquire must name the expired epoch and gets a new one.
    assert_eq!(s.apply(acquire("n2", 1, 1)), Outcome::LeaseGranted { epoch: LeaseEpoch(2) });
}

#[test]
fn release_records_the_shutdown_checkpoint() {
    let mut s = St::three().held("n1", 1, 1).0;
    s.apply(release("n1", 1));
    assert_eq!(s.release_checkpoint, Some(Lsn(0x3000148)));
}

/// (scenario, token expiry, token used by, join time, name, expected outcome)
#[test]
fn join_commands() {
    type Row = (&'static str, u64, Option<&'static str>, u64, &'static str, Result<u64, Rejection>);
    let rows: Vec<Row> = vec![
        ("valid token", 100, None, 50, "n4", Ok(4)),
        ("expired token", 100, None, 100, "n4", Err(Rejection::TokenExpired)),
        ("used token", 100, Some("n3"), 50, "n4", Err(Rejection::TokenUsed { by: name("n3") })),
        ("duplicate name", 100, None, 50, "n2", Err(Rejection::DuplicateName { name: name("n2") })),
    ];
    for (scenario, expires, used_by, now, n, want) in rows {
        let mut s = St::three().0;
        s.tokens.insert("h".into(), JoinToken { expires_at_ms: expires, used_by: used_by.map(name) });
        let before = s.clone();
        let got = s.apply(Command::Join { token_hash: "h".into(), now_ms: now, member: new_member(n, 5000) });
        match want {
            Ok(id) => {
                assert_eq!(got, Outcome::Joined { node_id: NodeId(id) }, "{scenario}");
                assert_eq!(s.members[&name(n)].membership, RaftMembership::Pending);
                assert_eq!(s.tokens["h"].used_by, Some(name(n)), "{scenario}: token consumed");
            }
            Err(reason) => {
                assert_eq!(got, Outcome::Rejected { reason }, "{scenario}");
                assert_eq!(s, before, "{scenario}: a rejected join changes nothing");
            }
        }
    }
}

#[test]
fn unknown_token_and_reuse_are_refused() {
    let mut s = St::three().0;
    let got = s.apply(Command::Join { token_hash: "nope".into(), now_ms: 1, member: new_member("n4", 5000) });
    assert_eq!(got, Outcome::Rejected { reason: Rejection::UnknownToken });
    s.apply(Command::CreateToken { hash: "t".into(), expires_at_ms: 100 });
    assert!(s
        .apply(Command::Join { token_hash: "t".into(), now_ms: 1, member: new_member("n4", 5000) })
        .is_accepted());
    let again = s.apply(Command::Join { token_hash: "t".into(), now_ms: 2, member: new_member("n5", 6000) });
    assert_eq!(again, Outcome::Rejected { reason: Rejection::TokenUsed { by: name("n4") } });
    assert_eq!(
        s.apply(Command::CreateToken { hash: "t".into(), expires_at_ms: 100 }),
        Outcome::Rejected { reason: Rejection::DuplicateToken }
    );
}

#[test]
fn duplicate_addresses_are_refused() {
    let mut s = St::three().0;
    s.apply(Command::CreateToken { hash: "t".into(), expires_at_ms: 100 });
    let mut m = new_member("n9", 7000);
    m.raft_address = s.members[&name("n2")].raft_address.clone();
    let got = s.apply(Command::Join { token_hash: "t".into(), now_ms: 1, member: m.clone() });
    assert_eq!(
        got,
        Outcome::Rejected {
            reason: Rejection::DuplicateAddress { address: m.raft_address, member: name("n2") }
        }
    );
}

#[test]
fn membership_follows_raft_and_removal_drops_member() {
    let mut s = St::three().0;
    let id = s.members[&name("n2")].node_id;
    s.apply(Command::SetMembership { node_id: id, membership: Some(RaftMembership::Learner) });
    assert_eq!(s.members[&name("n2")].membership, RaftMembership::Learner);
    s.apply(Command::SetMembership { node_id: id, membership: Some(RaftMembership::Voter) });
    assert!(s.raft_node_ids().contains(&id));
    s.apply(Command::SetMembership { node_id: id, membership: None });
    assert!(!s.members.contains_key(&name("n2")));
    // Applying the removal again is harmless; ids are never reused.
    assert_eq!(s.apply(Command::SetMembership { node_id: id, membership: None }), Outcome::Accepted);
    s.apply(Command::CreateToken { hash: "t".into(), expires_at_ms: 100 });
    let out = s.apply(Command::Join { token_hash: "t".into(), now_ms: 1, member: new_member("n2", 8000) });
    assert_eq!(out, Outcome::Joined { node_id: NodeId(4) });
}

#[test]
fn removal_is_refused_for_the_lease_holder_and_the_last_voter() {
    let mut s = St::three().held("n2", 1, 1).0;
    assert_eq!(
        s.apply(Command::RemoveMember { name: name("n2") }),
        Outcome::Rejected { reason: Rejection::HoldsLease { member: name("n2") } }
    );
    assert_eq!(
        s.apply(Command::RemoveMember { name: name("zz") }),
        Outcome::Rejected { reason: Rejection::UnknownMember { member: name("zz") } }
    );
    // n2 and n3 are still Pending (never entered Raft): removing them drops them at once.
    assert_eq!(s.apply(Command::RemoveMember { name: name("n3") }), Outcome::Accepted);
    assert!(!s.members.contains_key(&name("n3")));
    let mut one = St::one().0;
    assert_eq!(
        one.apply(Command::RemoveMember { name: name("n1") }),
        Outcome::Rejected { reason: Rejection::LastVoter { member: name("n1") } }
    );
}

#[test]
fn removal_of_a_voter_marks_it_until_raft_applies_the_change() {
    let mut s = St::three().0;
    let id = s.members[&name("n2")].node_id;
    s.apply(Command::SetMembership { node_id: id, membership: Some(RaftMembership::Voter) });
    assert_eq!(s.apply(Command::RemoveMember { name: name("n2") }), Outcome::Accepted);
    assert!(s.members[&name("n2")].removing);
    s.apply(Command::SetMembership { node_id: id, membership: None });
    assert!(!s.members.contains_key(&name("n2")));
}

#[test]
fn prune_drops_used_and_expired_tokens_only() {
    let mut s = St::three().0;
    s.tokens.insert("fresh".into(), JoinToken { expires_at_ms: 500, used_by: None });
    s.tokens.insert("old".into(), JoinToken { expires_at_ms: 50, used_by: None });
    s.apply(Command::PruneTokens { now_ms: 100 });
    assert_eq!(s.tokens.keys().collect::<Vec<_>>(), vec!["fresh"]);
}

#[test]
fn apply_is_deterministic() {
    let cmds = vec![acquire("n1", 0, 1), renew("n1", 1, 2), expire(1, 2), acquire("n3", 1, 1)];
    let (mut a, mut b) = (St::three().0, St::three().0);
    let oa: Vec<_> = cmds.iter().cloned().map(|c| a.apply(c)).collect();
    let ob: Vec<_> = cmds.into_iter().map(|c| b.apply(c)).collect();
    assert_eq!(oa, ob);
    assert_eq!(serde_json::to_vec(&a).unwrap(), serde_json::to_vec(&b).unwrap());
}

#[test]
fn a_member_has_at_most_one_scheduled_restart() {
    let planned =
        |at_ms| ScheduledRestart { at_ms, restart_pending: false, role: None, postgres_version: None };
    let schedule =
        |m: &str, r: Option<ScheduledRestart>| Command::ScheduleRestart { member: name(m), restart: r };
    // (state before: n2's planned restart, command, outcome kind, n2's planned restart after)
    let cases: Vec<(Option<u64>, Command, &str, Option<u64>)> = vec![
        (None, schedule("n2", Some(planned(5))), "accepted", Some(5)),
        (Some(5), schedule("n2", Some(planned(9))), "restart_scheduled", Some(5)),
        (Some(5), schedule("n2", None), "accepted", None),
        (None, schedule("n2", None), "no_restart_scheduled", None),
        (None, schedule("ghost", Some(planned(5))), "unknown_member", None),
        (None, schedule("n3", Some(planned(5))), "witness", None),
    ];
    for (before, cmd, want, after) in cases {
        let mut s = St::three().witness("n3").0;
        s.members.get_mut(&name("n2")).unwrap().scheduled_restart = before.map(planned);
        let out = s.apply(cmd.clone());
        let kind = match &out {
            Outcome::Accepted => "accepted".to_string(),
            Outcome::Rejected { reason } => {
                serde_json::to_value(reason).unwrap()["reason"].as_str().unwrap().to_string()
            }
            other => format!("{other:?}"),
        };
        assert_eq!(kind, want, "{cmd:?}");
        assert_eq!(s.members[&name("n2")].scheduled_restart.as_ref().map(|r| r.at_ms), after, "{cmd:?}");
    }
}

/// `candidate` at `lsn` acquires the lease that expired at epoch 4: `lease_granted` or the
/// rejection's reason.
fn acquire_kind(s: &mut ClusterState, candidate: &str, lsn: u64) -> String {
    let out = s.apply(Command::AcquireLease {
        candidate: name(candidate),
        expected_epoch: LeaseEpoch(4),
        ttl_ms: 10_000,
        renewal: 1,
        lsn: Some(Lsn(lsn)),
    });
    match &out {
        Outcome::LeaseGranted { .. } => "lease_granted".to_string(),
        Outcome::Rejected { reason } => {
            serde_json::to_value(reason).unwrap()["reason"].as_str().unwrap().to_string()
        }
        other => format!("{other:?}"),
    }
}

#[test]
fn synchronous_standbys_gate_an_acquire_after_expiry() {
    let sync = |members: &[&str], degraded: bool, min_lsn: Option<u64>| SyncState {
        members: members.iter().map(|m| name(m)).collect(),
        degraded,
        min_lsn: min_lsn.map(Lsn),
        ..SyncState::default()
    };
    // (case, published, candidate, lsn, clean release checkpoint, outcome kind)
    type Case = (&'static str, SyncState, &'static str, u64, Option<u64>, &'static str);
    let cases: Vec<Case> = vec![
        ("the synchronous standby", sync(&["n2"], false, None), "n2", 100, None, "lease_granted"),
        ("another standby", sync(&["n2"], false, None), "n3", 100, None, "not_sync_standby"),
        ("strict, none published", sync(&[], false, None), "n3", 100, None, "no_sync_standby"),
        ("degraded, at the position", sync(&[], true, Some(100)), "n3", 100, None, "lease_granted"),
        ("degraded, before it", sync(&[], true, Some(101)), "n3", 100, None, "before_sync_degraded"),
        ("asynchronous cluster", SyncState::default(), "n3", 100, None, "lease_granted"),
        ("after a clean release", sync(&["n2"], false, None), "n3", 100, Some(90), "lease_granted"),
    ];
    for (case, published, candidate, lsn, checkpoint, want) in cases {
        let mut s = St::three().free_after(4).0;
        s.sync = published;
        s.release_checkpoint = checkpoint.map(Lsn);
        assert_eq!(acquire_kind(&mut s, candidate, lsn), want, "{case}");
        if want == "lease_granted" {
            assert!(
                !s.sync.members.contains(&name(candidate)),
                "{case}: the new primary is no standby of itself"
            );
        }
    }
}

#[test]
fn only_the_lease_holder_publishes_synchronous_standbys() {
    let mut s = St::three().held("n1", 2, 1).0;
    let members = |m: &[&str]| SyncState {
        members: m.iter().map(|x| name(x)).collect(),
        degraded: false,
        min_lsn: None,
        ..SyncState::default()
    };
    let publish = |holder: &str, epoch: u64, m: &[&str]| Command::SetSync {
        holder: name(holder),
        epoch: LeaseEpoch(epoch),
        sync: members(m),
    };
    assert!(matches!(s.apply(publish("n2", 2, &["n3"])), Outcome::Rejected { .. }), "not the holder");
    assert!(matches!(s.apply(publish("n1", 1, &["n3"])), Outcome::Rejected { .. }), "an old epoch");
    assert!(matches!(s.apply(publish("n1", 2, &["n1"])), Outcome::Rejected { .. }), "itself");
    assert!(matches!(s.apply(publish("n1", 2, &["ghost"])), Outcome::Rejected { .. }), "not a member");
    assert_eq!(s.apply(publish("n1", 2, &["n3"])), Outcome::Accepted);
    assert_eq!(s.sync, SyncState { leader: Some(name("n1")), ..members(&["n3"]) });
    let quorum = |k: u32| Command::SetSync {
        holder: name("n1"),
        epoch: LeaseEpoch(2),
        sync: SyncState { quorum: Some(k), ..members(&["n2", "n3"]) },
    };
    assert!(matches!(s.apply(quorum(0)), Outcome::Rejected { .. }), "a quorum of none");
    assert!(matches!(s.apply(quorum(3)), Outcome::Rejected { .. }), "more than the set");
    assert_eq!(s.apply(quorum(1)), Outcome::Accepted);
}

/// Five data members n1..n5; n1's lease of epoch 4 expired; it had published `ANY k` of
/// n2..n5.
fn quorum_after_expiry(k: u32) -> St {
    let mut s = St::three().join(&["n4", "n5"], 3000).free_after(4);
    let standbys = ["n2", "n3", "n4", "n5"].iter().map(|m| name(m)).collect();
    s.0.sync = SyncState { leader: Some(name("n1")), ..SyncState::any(k as usize, standbys) };
    s
}

fn record(m: &str, epoch: u64, lsn: u64) -> Command {
    Command::RecordFinalLsn { member: name(m), epoch: LeaseEpoch(epoch), lsn: Lsn(lsn) }
}

#[test]
fn a_quorum_standby_takes_over_only_at_the_highest_of_enough_final_records() {
    // ANY 2 of 4: every acknowledged commit is on 2 of them, so any 3 hold it.
    // (case, records (member, lsn), candidate, outcome kind)
    type Case = (&'static str, Vec<(&'static str, u64)>, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        ("no records yet", vec![], "n2", "quorum_incomplete"),
        ("two of the three needed", vec![("n2", 500), ("n3", 400)], "n2", "quorum_incomplete"),
        (
            "three, the candidate at the highest",
            vec![("n2", 500), ("n3", 400), ("n4", 300)],
            "n2",
            "lease_granted",
        ),
        ("three, the candidate behind", vec![("n2", 500), ("n3", 400), ("n4", 300)], "n3", "behind_quorum"),
        (
            "three, the candidate without a record",
            vec![("n2", 500), ("n3", 400), ("n4", 300)],
            "n5",
            "behind_quorum",
        ),
        ("a tie at the highest", vec![("n2", 500), ("n3", 500), ("n4", 300)], "n3", "lease_granted"),
        ("the last primary itself needs no records", vec![], "n1", "lease_granted"),
    ];
    for (case, records, candidate, want) in cases {
        let mut s = quorum_after_expiry(2).0;
        for (m, lsn) in &records {
            assert_eq!(s.apply(record(m, 4, *lsn)), Outcome::Accepted, "{case}: record of {m}");
        }
        assert_eq!(acquire_kind(&mut s, candidate, 500), want, "{case}");
    }
}

#[test]
fn final_records_are_taken_once_per_expiry_and_only_from_the_quorum() {
    let mut s = quorum_after_expiry(2).0;
    assert!(matches!(s.apply(record("n2", 3, 500)), Outcome::Rejected { .. }), "an older epoch");
    assert!(matches!(s.apply(record("n1", 4, 500)), Outcome::Rejected { .. }), "not in the quorum");
    assert_eq!(s.apply(record("n2", 4, 500)), Outcome::Accepted);
    assert_eq!(s.apply(record("n2", 4, 900)), Outcome::Accepted, "idempotent");
    assert_eq!(s.sync.final_lsns.get(&name("n2")), Some(&Lsn(500)), "the first record stands");
    let mut held = quorum_after_expiry(2).held("n1", 4, 1).0;
    assert!(matches!(held.apply(record("n2", 4, 500)), Outcome::Rejected { .. }), "while the lease is held");

    // A grant clears the records; the quorum loses the new primary: ANY 1 of the other three.
    for (m, lsn) in [("n3", 400), ("n4", 300)] {
        assert_eq!(s.apply(record(m, 4, lsn)), Outcome::Accepted);
    }
    assert!(matches!(s.apply(acquire("n2", 4, 1)), Outcome::LeaseGranted { .. }));
    let rest: BTreeSet<MemberName> = ["n3", "n4", "n5"].iter().map(|m| name(m)).collect();
    assert_eq!(s.sync, SyncState { leader: Some(name("n2")), ..SyncState::any(1, rest) });
    assert!(s.sync.final_lsns.is_empty());
}

#[test]
fn a_grant_keeps_what_the_remaining_standbys_are_known_to_hold() {
    // (case, k of n2..n5, candidate, remaining k: None = all of them, Some(0) = nobody known)
    let cases: Vec<(&str, u32, &str, Option<u32>)> = vec![
        ("ANY 2 of 4, a member promoted: ANY 1 of 3", 2, "n2", Some(1)),
        ("ANY 1 of 4, a member promoted: nothing known of the others", 1, "n2", Some(0)),
        ("ANY 2 of 4, the old primary back: unchanged", 2, "n1", Some(2)),
    ];
    for (case, k, candidate, remaining) in cases {
        let mut s = quorum_after_expiry(k).0;
        for (m, lsn) in [("n2", 500), ("n3", 400), ("n4", 300), ("n5", 200)] {
            s.apply(record(m, 4, lsn));
        }
        assert!(matches!(s.apply(acquire(candidate, 4, 1)), Outcome::LeaseGranted { .. }), "{case}");
        match remaining {
            Some(0) => assert!(s.sync.members.is_empty() && !s.sync.degraded, "{case}: {:?}", s.sync),
            Some(k) => assert_eq!(s.sync.k(), k as usize, "{case}: {:?}", s.sync),
            None => assert_eq!(s.sync.quorum, None, "{case}"),
        }
        assert!(!s.sync.members.contains(&name(candidate)), "{case}");
    }
}
