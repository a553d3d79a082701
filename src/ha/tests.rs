//! Table tests of `decide` and `eligibility`, one row per HA rule, built with `Case`.

use super::decide::{decide, Action, Decision, Reason, StopMode};
use super::eligibility::{blocker, Ineligible};
use super::observe::{LocalPg, Observation, PgRole};
use crate::clock::BootInstant;
use crate::config::dynamic::DynamicConfig;
use crate::dcs::state::*;
use crate::dcs::status::LeaseView;
use crate::types::{LeaseEpoch, Lsn, MemberName, NodeId, Timeline};
use std::time::Duration;

const NOW: u64 = 1_000_000;
const MB: u64 = 1024 * 1024;

fn n(s: &str) -> MemberName {
    MemberName::new(s).unwrap()
}

#[derive(Clone)]
struct Case {
    state: ClusterState,
    me: MemberName,
    deadline: bool,
    pg: LocalPg,
    watchdog_blocks: bool,
    primary_down_ms: Option<u64>,
}

fn running(role: PgRole, lsn: u64, upstream: Option<&str>) -> LocalPg {
    LocalPg::Running {
        role,
        system_identifier: "42".into(),
        timeline: Timeline(1),
        lsn: Lsn(lsn),
        upstream: upstream.map(n),
        streaming: upstream.is_some(),
    }
}
fn on_timeline(mut pg: LocalPg, tl: u32) -> LocalPg {
    if let LocalPg::Running { timeline, .. } | LocalPg::Stopped { timeline, .. } = &mut pg {
        *timeline = Timeline(tl);
    }
    pg
}
fn primary(lsn: u64) -> LocalPg {
    running(PgRole::Primary, lsn, None)
}
fn replica_of(up: &str, lsn: u64) -> LocalPg {
    running(PgRole::Replica, lsn, Some(up))
}
fn stopped(timeline: u32, checkpoint: u64, was_primary: bool) -> LocalPg {
    LocalPg::Stopped {
        system_identifier: "42".into(),
        timeline: Timeline(timeline),
        checkpoint: Lsn(checkpoint),
        was_primary,
        clean: true,
        replayed: Option::None,
    }
}
/// A standby's directory that replayed up to `lsn` on `timeline`.
fn standby_replayed(timeline: u32, lsn: u64, clean: bool) -> LocalPg {
    LocalPg::Stopped {
        system_identifier: "42".into(),
        timeline: Timeline(timeline),
        checkpoint: Lsn(lsn.min(200)),
        was_primary: false,
        clean,
        replayed: Some((Timeline(timeline), Lsn(lsn))),
    }
}
/// A former primary stopped without a shutdown checkpoint (killed, crashed).
fn crashed(timeline: u32, checkpoint: u64) -> LocalPg {
    LocalPg::Stopped {
        system_identifier: "42".into(),
        timeline: Timeline(timeline),
        checkpoint: Lsn(checkpoint),
        was_primary: true,
        clean: false,
        replayed: Option::None,
    }
}

impl Case {
    /// Three initialized data members n1..n3, lease free at epoch 0, I am n2 with a stopped replica.
    fn three() -> Case {
        let member = |name: &str, id: u64| Member {
            name: n(name),
            node_id: NodeId(id),
            witness: false,
            api_address: format!("{name}:8008"),
            raft_address: format!("{name}:5010"),
            pg_address: Some(format!("{name}:5432")),
            membership: RaftMembership::Voter,
            tags: Tags::default(),
            version: "t".into(),
            status: None,
            removing: false,
            scheduled_restart: None,
        };
        let mut members = std::collections::BTreeMap::new();
        for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
            members.insert(n(name), member(name, i as u64 + 1));
        }
        let state = ClusterState {
            scope: "s".into(),
            incarnation: "i".into(),
            initialize: Some(Initialize { bootstrapper: n("n1"), system_identifier: Some("42".into()) }),
            lease: None,
            last_epoch: LeaseEpoch(0),
            last_primary_lsn: None,
            release_checkpoint: None,
            members,
            next_node_id: 4,
            config: DynamicConfig::default(),
            config_version: 1,
            switchover: None,
            history: Vec::new(),
            tokens: Default::default(),
            ca: CaMaterial { cert_pem: String::new(), key_pem: String::new() },
            secrets: Default::default(),
            sync: Default::default(),
        };
        Case {
            state,
            me: n("n2"),
            deadline: false,
            pg: replica_of("n1", 100),
            watchdog_blocks: false,
            primary_down_ms: Option::None,
        }
    }
    fn me(mut self, m: &str) -> Self {
        self.me = n(m);
        self
    }
    fn pg(mut self, pg: LocalPg) -> Self {
        self.pg = pg;
        self
    }
    /// `holder` holds epoch `e`; if it is me, `valid` says whether my own clock still counts.
    fn held(mut self, holder: &str, e: u64, valid: bool) -> Self {
        self.state.last_epoch = LeaseEpoch(e);
        self.state.lease =
            Some(Lease { holder: n(holder), epoch: LeaseEpoch(e), ttl_ms: 10_000, renewal: 1 });
        self.deadline = valid && holder == self.me.as_str();
        self
    }
    fn free_after(mut self, e: u64) -> Self {
        self.state.last_epoch = LeaseEpoch(e);
        self.state.lease = None;
        self
    }
    fn status(mut self, m: &str, state: &str, lsn: u64) -> Self {
        self.state.members.get_mut(&n(m)).unwrap().status = Some(MemberStatus {
            state: state.into(),
            role: "replica".into(),
            timeline: Some(Timeline(1)),
            replay_lsn: Some(Lsn(lsn)),
            updated_at_ms: NOW - 1000,
            ..Default::default()
        });
        self
    }
    fn stale_status(mut self, m: &str, lsn: u64) -> Self {
        self = self.status(m, "streaming", lsn);
        self.state.members.get_mut(&n(m)).unwrap().status.as_mut().unwrap().updated_at_ms = NOW - 60_000;
        self
    }
    fn last_primary_lsn(mut self, lsn: u64) -> Self {
        self.state.last_primary_lsn = Some(Lsn(lsn));
        self
    }
    fn tag(mut self, m: &str, f: impl FnOnce(&mut Tags)) -> Self {
        f(&mut self.state.members.get_mut(&n(m)).unwrap().tags);
        self
    }
    fn witness(mut self, m: &str) -> Self {
        self.state.members.get_mut(&n(m)).unwrap().witness = true;
        self
    }
    fn watchdog_broken(mut self) -> Self {
        self.watchdog_blocks = true;
        self
    }
    fn paused(mut self) -> Self {
        self.state.config.pause = true;
        self
    }
    fn uninitialized(mut self, bootstrapper: Option<&str>) -> Self {
        self.state.initialize =
            bootstrapper.map(|b| Initialize { bootstrapper: n(b), system_identifier: None });
        self
    }
    fn switchover(mut self, candidate: Option<&str>, at: Option<u64>) -> Self {
        self.state.switchover =
            Some(SwitchoverRequest { leader: None, candidate: candidate.map(n), scheduled_at_ms: at });
        self
    }
    fn release_checkpoint(mut self, lsn: u64) -> Self {
        self.state.release_checkpoint = Some(Lsn(lsn));
        self
    }
    fn history(mut self, ended: u32, at: u64) -> Self {
        self.state.history.push(HistoryEntry {
            timeline: Timeline(ended),
            switch_lsn: Lsn(at),
            reason: "failover".into(),
            at_ms: 0,
            new_primary: n("n1"),
        });
        self
    }
    /// `synchronous_mode: on` with this published state.
    fn sync(mut self, members: &[&str], degraded: bool, min_lsn: Option<u64>) -> Self {
        self.state.config.synchronous_mode = crate::config::dynamic::SynchronousMode::On;
        self.state.sync = crate::dcs::state::SyncState {
            members: members.iter().map(|m| n(m)).collect(),
            degraded,
            min_lsn: min_lsn.map(Lsn),
            ..Default::default()
        };
        self
    }
    /// `synchronous_mode: quorum`: `ANY k` of `members` published by n1, with these final
    /// records of the expired lease.
    fn quorum(mut self, k: usize, members: &[&str], records: &[(&str, u64)]) -> Self {
        self.state.config.synchronous_mode = crate::config::dynamic::SynchronousMode::Quorum;
        self.state.sync = crate::dcs::state::SyncState {
            leader: Some(n("n1")),
            final_lsns: records.iter().map(|(m, l)| (n(m), Lsn(*l))).collect(),
            ..crate::dcs::state::SyncState::any(k, members.iter().map(|m| n(m)).collect())
        };
        self
    }
    /// I have held the lease this long without my Postgres running as primary.
    fn down_for(mut self, ms: u64) -> Self {
        self.primary_down_ms = Some(ms);
        self
    }
    /// The published synchronous state is of `leader`'s commits.
    fn sync_leader(mut self, leader: &str) -> Self {
        self.state.sync.leader = Some(n(leader));
        self
    }
    fn no_rewind(mut self) -> Self {
        self.state.config.postgresql.use_pg_rewind = false;
        self
    }
    fn decide(&self) -> Decision {
        let lease = LeaseView {
            holder: self.state.lease.as_ref().map(|l| l.holder.clone()),
            epoch: self.state.lease.as_ref().map(|l| l.epoch).unwrap_or_default(),
            last_epoch: self.state.last_epoch,
            time_left: Duration::from_secs(if self.deadline { 5 } else { 0 }),
            deadline: self.deadline.then(|| BootInstant::from_duration(Duration::from_secs(99))),
        };
        decide(&Observation {
            me: &self.me,
            cluster: &self.state,
            lease: &lease,
            pg: &self.pg,
            wall_now_ms: NOW,
            watchdog_blocks: self.watchdog_blocks,
            primary_down_ms: self.primary_down_ms,
        })
    }
}

fn e(x: u64) -> LeaseEpoch {
    LeaseEpoch(x)
}

#[test]
fn decisions() {
    use Action::*;
    let immediate = Stop { mode: StopMode::Immediate };
    let rows: Vec<(&str, Case, Action)> = vec![
        // initialization
        (
            "uninitialized: race for the initialize key",
            Case::three().uninitialized(Option::None).pg(LocalPg::Absent),
            ClaimInitialize,
        ),
        (
            "uninitialized and paused: nothing",
            Case::three().uninitialized(Option::None).paused().pg(LocalPg::Absent),
            None,
        ),
        (
            "uninitialized and nofailover: never bootstrap (it could not take the lease)",
            Case::three().uninitialized(Option::None).tag("n2", |t| t.nofailover = true).pg(LocalPg::Absent),
            None,
        ),
        (
            "uninitialized and the required watchdog does not work: never bootstrap",
            Case::three().uninitialized(Option::None).watchdog_broken().pg(LocalPg::Absent),
            None,
        ),
        (
            "lease free but the required watchdog does not work: do not take it",
            Case::three().pg(replica_of("n1", 100)).watchdog_broken(),
            None,
        ),
        (
            "lease free, but still on a timeline the history says ended: not eligible",
            Case::three().history(1, 50).pg(replica_of("n1", 100)),
            None,
        ),
        (
            "lease free, on the newest timeline: acquire",
            Case::three().history(1, 50).pg(on_timeline(replica_of("n1", 100), 2)),
            AcquireLease { expected_epoch: LeaseEpoch(0) },
        ),
        (
            "another member bootstraps: wait",
            Case::three().uninitialized(Some("n1")).pg(LocalPg::Absent),
            None,
        ),
        (
            "I won the key with no data: initdb",
            Case::three().me("n1").uninitialized(Some("n1")).pg(LocalPg::Absent),
            Bootstrap,
        ),
        (
            "after initdb: take the lease before starting",
            Case::three().me("n1").uninitialized(Some("n1")).pg(stopped(1, 10, true)),
            AcquireLease { expected_epoch: e(0) },
        ),
        (
            "after initdb with the lease: start as primary",
            Case::three().me("n1").uninitialized(Some("n1")).held("n1", 1, true).pg(stopped(1, 10, true)),
            StartPrimary,
        ),
        (
            "bootstrapped primary still starting: keep the lease",
            Case::three().me("n1").uninitialized(Some("n1")).held("n1", 1, true).pg(LocalPg::Starting),
            RenewLease { epoch: e(1) },
        ),
        (
            "bootstrapped primary starting without a valid lease: wait",
            Case::three().me("n1").uninitialized(Some("n1")).pg(LocalPg::Starting),
            None,
        ),
        (
            "bootstrapped primary running: roles and system identifier",
            Case::three().me("n1").uninitialized(Some("n1")).held("n1", 1, true).pg(primary(20)),
            CompleteInitialize,
        ),
        (
            "data dir of another cluster: refuse",
            Case::three().pg(LocalPg::Stopped {
                system_identifier: "7".into(),
                timeline: Timeline(1),
                checkpoint: Lsn(1),
                was_primary: false,
                clean: true,
                replayed: Option::None,
            }),
            None,
        ),
        // holding a valid lease
        (
            "primary with a valid lease: renew",
            Case::three().me("n1").held("n1", 3, true).pg(primary(500)),
            RenewLease { epoch: e(3) },
        ),
        (
            "acquired as a replica: promote",
            Case::three().held("n2", 4, true).pg(replica_of("n1", 400)),
            Promote,
        ),
        (
            "holder whose Postgres keeps failing to start, past primary_start_timeout, a replica runs: hand over",
            Case::three().me("n1").held("n1", 3, true).status("n2", "running", 400).down_for(300_000).pg(crashed(1, 300)),
            ReleaseLease { epoch: e(3), checkpoint: Option::None },
        ),
        (
            "the same while its Postgres is starting again: stop it first",
            Case::three().me("n1").held("n1", 3, true).status("n2", "running", 400).down_for(300_000).pg(LocalPg::Starting),
            Stop { mode: StopMode::Immediate },
        ),
        (
            "the same between renewals (no valid deadline): hand over too",
            Case::three().me("n1").held("n1", 3, false).status("n2", "running", 400).down_for(400_000).pg(crashed(1, 300)),
            ReleaseLease { epoch: e(3), checkpoint: Option::None },
        ),
        (
            "before primary_start_timeout: restart in place",
            Case::three().me("n1").held("n1", 3, true).status("n2", "running", 400).down_for(299_999).pg(crashed(1, 300)),
            StartPrimary,
        ),
        (
            "past primary_start_timeout without a running replica: keep trying",
            Case::three().me("n1").held("n1", 3, true).status("n2", "stopped", 400).down_for(300_000).pg(crashed(1, 300)),
            StartPrimary,
        ),
        (
            "past primary_start_timeout, only an asynchronous replica in synchronous mode: keep trying",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .sync(&["n3"], false, Option::None)
                .status("n2", "running", 400)
                .down_for(300_000)
                .pg(crashed(1, 300)),
            StartPrimary,
        ),
        (
            "holder whose postgres crashed: restart in place",
            Case::three().me("n1").held("n1", 3, true).pg(stopped(1, 500, true)),
            StartPrimary,
        ),
        (
            "holder whose postgres recovers: keep renewing",
            Case::three().me("n1").held("n1", 3, true).pg(LocalPg::Starting),
            RenewLease { epoch: e(3) },
        ),
        (
            "holder without data: give the lease up",
            Case::three().me("n1").held("n1", 3, true).pg(LocalPg::Absent),
            ReleaseLease { epoch: e(3), checkpoint: Option::None },
        ),
        (
            "paused primary still renews",
            Case::three().me("n1").held("n1", 3, true).paused().pg(primary(500)),
            RenewLease { epoch: e(3) },
        ),
        (
            "paused primary whose Postgres stopped: renews, does not start it",
            Case::three().me("n1").held("n1", 3, true).paused().pg(stopped(1, 500, true)),
            RenewLease { epoch: e(3) },
        ),
        (
            "paused holder without data: keeps the lease, nothing automatic",
            Case::three().me("n1").held("n1", 3, true).paused().pg(LocalPg::Absent),
            RenewLease { epoch: e(3) },
        ),
        // losing it
        (
            "primary without a valid lease: stop at once",
            Case::three().me("n1").held("n1", 3, false).pg(primary(500)),
            immediate.clone(),
        ),
        (
            "primary while another holds the lease: stop at once",
            Case::three().me("n1").held("n2", 4, false).pg(primary(500)),
            immediate.clone(),
        ),
        (
            "primary while the lease is free: stop at once",
            Case::three().me("n1").free_after(3).pg(primary(500)),
            immediate.clone(),
        ),
        (
            "fencing is never paused",
            Case::three().me("n1").free_after(3).paused().pg(primary(500)),
            immediate.clone(),
        ),
        (
            "named holder with no deadline (restart): renew to regain",
            Case::three().me("n1").held("n1", 3, false).pg(stopped(1, 500, true)),
            RenewLease { epoch: e(3) },
        ),
        // following
        (
            "replica of the primary: nothing",
            Case::three().held("n1", 3, false).pg(replica_of("n1", 400)),
            None,
        ),
        (
            "replica of the wrong member: follow the primary",
            Case::three().held("n3", 4, false).pg(replica_of("n1", 400)),
            Follow { upstream: n("n3") },
        ),
        (
            "stopped replica: start following",
            Case::three().held("n1", 3, false).pg(stopped(1, 400, false)),
            StartReplica { upstream: n("n1") },
        ),
        (
            "empty data dir: clone from the primary",
            Case::three().held("n1", 3, false).pg(LocalPg::Absent),
            Clone { from: n("n1") },
        ),
        (
            "empty data dir: clone from a streaming clonefrom member",
            Case::three()
                .held("n1", 3, false)
                .tag("n3", |t| t.clonefrom = true)
                .status("n3", "streaming", 400)
                .pg(LocalPg::Absent),
            Clone { from: n("n3") },
        ),
        (
            "paused replica on the wrong upstream: nothing",
            Case::three().held("n3", 4, false).paused().pg(replica_of("n1", 400)),
            None,
        ),
        (
            "old primary past the switch point: rewind",
            Case::three().me("n1").held("n2", 4, false).history(1, 300).pg(stopped(1, 500, true)),
            Rewind { from: n("n2") },
        ),
        (
            "old primary past the switch point without rewind: re-clone",
            Case::three().me("n1").held("n2", 4, false).history(1, 300).no_rewind().pg(stopped(1, 500, true)),
            Clone { from: n("n2") },
        ),
        (
            "old primary stopped cleanly at the switch point: just follow",
            Case::three().me("n1").held("n2", 4, false).history(1, 500).pg(stopped(1, 500, true)),
            StartReplica { upstream: n("n2") },
        ),
        (
            "crashed old primary, even before the switch point: crash recovery first",
            Case::three().me("n1").held("n2", 4, false).history(1, 300).pg(crashed(1, 200)),
            CrashRecover,
        ),
        (
            "crashed old primary without pg_rewind: as before, compared by its checkpoint",
            Case::three().me("n1").held("n2", 4, false).history(1, 300).no_rewind().pg(crashed(1, 200)),
            StartReplica { upstream: n("n2") },
        ),
        (
            "crashed old primary, lease free: crash recovery to learn where its WAL ends",
            Case::three().me("n1").pg(crashed(1, 200)),
            CrashRecover,
        ),
        (
            "crashed old primary while paused: nothing",
            Case::three().me("n1").held("n2", 4, false).history(1, 300).paused().pg(crashed(1, 200)),
            None,
        ),
        (
            "crashed holder with a valid lease: restart in place (Postgres recovers itself)",
            Case::three().me("n1").held("n1", 3, true).pg(crashed(1, 500)),
            StartPrimary,
        ),
        (
            "standby that replayed past where its timeline ended: rewind",
            Case::three().me("n3").held("n2", 4, false).history(1, 300).pg(standby_replayed(1, 400, true)),
            Rewind { from: n("n2") },
        ),
        (
            "crashed standby past where its timeline ended: clone again (pg_rewind needs a clean stop)",
            Case::three().me("n3").held("n2", 4, false).history(1, 300).pg(standby_replayed(1, 400, false)),
            Clone { from: n("n2") },
        ),
        (
            "running standby stuck past where its timeline ended: stop it (then rewind)",
            Case::three().me("n3").held("n2", 4, false).history(1, 300).pg(LocalPg::Running {
                role: PgRole::Replica,
                system_identifier: "42".into(),
                timeline: Timeline(1),
                lsn: Lsn(400),
                upstream: Some(n("n2")),
                streaming: false,
            }),
            Stop { mode: StopMode::Fast },
        ),
        (
            "standby not yet consistent, waiting for WAL from a member that is no longer primary: follow the primary",
            Case::three().me("n3").held("n2", 4, false).pg(LocalPg::Recovering { upstream: Some(n("n1")) }),
            Follow { upstream: n("n2") },
        ),
        (
            "standby not yet consistent, streaming from the primary: wait",
            Case::three().me("n3").held("n2", 4, false).pg(LocalPg::Recovering { upstream: Some(n("n2")) }),
            None,
        ),
        (
            "standby that replayed up to where its timeline ended: follow",
            Case::three().me("n3").held("n2", 4, false).history(1, 300).pg(standby_replayed(1, 300, false)),
            StartReplica { upstream: n("n2") },
        ),
        (
            "old primary on a timeline unknown to the history: rewind",
            Case::three().me("n1").held("n2", 4, false).history(1, 300).pg(stopped(3, 500, true)),
            Rewind { from: n("n2") },
        ),
        // lease free
        (
            "free lease, most advanced replica: acquire",
            Case::three()
                .free_after(3)
                .last_primary_lsn(400)
                .status("n3", "streaming", 350)
                .pg(replica_of("n1", 400)),
            AcquireLease { expected_epoch: e(3) },
        ),
        // synchronous_mode: on
        (
            "sync: the published synchronous standby acquires",
            Case::three().free_after(3).sync(&["n2"], false, Option::None).pg(replica_of("n1", 400)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "sync: an asynchronous standby does not, even when further ahead",
            Case::three()
                .me("n3")
                .free_after(3)
                .sync(&["n2"], false, Option::None)
                .status("n2", "streaming", 300)
                .pg(replica_of("n1", 400)),
            None,
        ),
        (
            "sync: the synchronous standby is not held back by an asynchronous one further ahead",
            Case::three()
                .free_after(3)
                .sync(&["n2"], false, Option::None)
                .status("n3", "streaming", 500)
                .pg(replica_of("n1", 400)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "sync strict, nothing published: nobody may take over",
            Case::three().free_after(3).sync(&[], false, Option::None).pg(replica_of("n1", 400)),
            None,
        ),
        (
            "sync degraded: the asynchronous rules, from where the primary stopped waiting",
            Case::three().me("n3").free_after(3).sync(&[], true, Some(400)).pg(replica_of("n1", 400)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "sync degraded: a standby before that position does not",
            Case::three().me("n3").free_after(3).sync(&[], true, Some(401)).pg(replica_of("n1", 400)),
            None,
        ),
        (
            "sync: after a clean release any caught-up standby may (the checkpoint covers it)",
            Case::three()
                .me("n3")
                .free_after(3)
                .sync(&["n2"], false, Option::None)
                .release_checkpoint(400)
                .pg(replica_of("n1", 400)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "sync strict, nothing published: the primary whose commits they are may take its lease back",
            Case::three()
                .me("n1")
                .free_after(3)
                .sync(&[], false, Option::None)
                .sync_leader("n1")
                .pg(crashed(1, 400)),
            CrashRecover,
        ),
        (
            "sync strict, nothing published: recovered, the last primary acquires",
            Case::three()
                .me("n1")
                .free_after(3)
                .sync(&[], false, Option::None)
                .sync_leader("n1")
                .pg(stopped(1, 400, true)),
            AcquireLease { expected_epoch: e(3) },
        ),
        // synchronous_mode: quorum
        (
            "quorum: after the expiry a quorum standby stops receiving and records its position",
            Case::three().me("n2").free_after(3).quorum(1, &["n2", "n3"], &[]).pg(replica_of("n1", 400)),
            RecordFinalLsn { epoch: e(3) },
        ),
        (
            "quorum: a stopped quorum standby records its position too",
            Case::three().me("n2").free_after(3).quorum(1, &["n2", "n3"], &[]).pg(stopped(1, 400, false)),
            RecordFinalLsn { epoch: e(3) },
        ),
        (
            "quorum: recorded, waiting for enough records",
            Case::three()
                .me("n2")
                .free_after(3)
                .quorum(1, &["n2", "n3"], &[("n2", 400)])
                .pg(replica_of("n1", 400)),
            None,
        ),
        (
            "quorum: enough records, mine the highest: acquire",
            Case::three()
                .me("n2")
                .free_after(3)
                .quorum(1, &["n2", "n3"], &[("n2", 400), ("n3", 300)])
                .pg(running(PgRole::Replica, 400, Option::None)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "quorum: enough records, another one higher: wait",
            Case::three()
                .me("n3")
                .free_after(3)
                .quorum(1, &["n2", "n3"], &[("n2", 400), ("n3", 300)])
                .pg(running(PgRole::Replica, 300, Option::None)),
            None,
        ),
        (
            "quorum: a clean release needs no records (the checkpoint covers it)",
            Case::three()
                .me("n3")
                .free_after(3)
                .quorum(1, &["n2", "n3"], &[])
                .release_checkpoint(400)
                .pg(replica_of("n1", 400)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "quorum: a standby outside the quorum records nothing and may not acquire",
            Case::three().me("n3").free_after(3).quorum(1, &["n2"], &[]).pg(replica_of("n1", 500)),
            None,
        ),
        (
            "free lease, a stopped replica may acquire too",
            Case::three().free_after(3).pg(stopped(1, 400, false)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "free lease while paused: nothing",
            Case::three().free_after(3).paused().pg(replica_of("n1", 400)),
            None,
        ),
        ("free lease, no data: nothing", Case::three().free_after(3).pg(LocalPg::Absent), None),
        ("witness never acts", Case::three().free_after(3).witness("n2").pg(LocalPg::Absent), None),
        // switchover
        (
            "switchover on the primary: clean stop",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .switchover(Some("n2"), Option::None)
                .status("n2", "streaming", 500)
                .pg(primary(500)),
            Stop { mode: StopMode::Fast },
        ),
        (
            "switchover after the clean stop: release with the checkpoint",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .switchover(Some("n2"), Option::None)
                .status("n2", "streaming", 500)
                .pg(stopped(1, 520, true)),
            ReleaseLease { epoch: e(3), checkpoint: Some(Lsn(520)) },
        ),
        (
            "switchover, Postgres crashed instead of stopping cleanly: recover before releasing",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .switchover(Some("n2"), Option::None)
                .status("n2", "streaming", 500)
                .pg(crashed(1, 300)),
            CrashRecover,
        ),
        (
            "switchover while holding a standby directory: its checkpoint is no end of WAL",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .switchover(Some("n2"), Option::None)
                .status("n2", "streaming", 500)
                .pg(stopped(1, 300, false)),
            ReleaseLease { epoch: e(3), checkpoint: Option::None },
        ),
        (
            "switchover after the clean stop, replicas no longer streaming: release anyway",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .switchover(Some("n2"), Option::None)
                .pg(stopped(1, 520, true)),
            ReleaseLease { epoch: e(3), checkpoint: Some(Lsn(520)) },
        ),
        (
            "scheduled switchover not yet due: renew",
            Case::three()
                .me("n1")
                .held("n1", 3, true)
                .switchover(Some("n2"), Some(NOW + 60_000))
                .status("n2", "streaming", 500)
                .pg(primary(500)),
            RenewLease { epoch: e(3) },
        ),
        (
            "switchover with no streaming candidate: keep serving",
            Case::three().me("n1").held("n1", 3, true).switchover(Some("n2"), Option::None).pg(primary(500)),
            RenewLease { epoch: e(3) },
        ),
        (
            "switchover candidate acquires once it replayed the checkpoint",
            Case::three()
                .free_after(3)
                .switchover(Some("n2"), Option::None)
                .release_checkpoint(520)
                .pg(replica_of("n1", 520)),
            AcquireLease { expected_epoch: e(3) },
        ),
        (
            "switchover candidate waits for the checkpoint",
            Case::three()
                .free_after(3)
                .switchover(Some("n2"), Option::None)
                .release_checkpoint(520)
                .pg(replica_of("n1", 510)),
            None,
        ),
        (
            "not the switchover candidate: do not acquire",
            Case::three()
                .me("n3")
                .free_after(3)
                .switchover(Some("n2"), Option::None)
                .pg(replica_of("n1", 600)),
            None,
        ),
    ];
    for (scenario, case, want) in rows {
        let got = case.decide();
        assert_eq!(got.action, want, "{scenario}: {got}");
    }
}

#[test]
fn reasons_read_as_one_sentence() {
    let d = Case::three().me("n1").held("n1", 7, true).pg(primary(500)).decide();
    assert_eq!(d.reason, Reason::Primary { epoch: e(7) });
    assert_eq!(d.to_string(), "RenewLease { epoch: LeaseEpoch(7) }: the primary, holding lease epoch 7");
    let d = Case::three().held("n1", 3, false).pg(replica_of("n1", 1)).decide();
    assert_eq!(d.to_string(), "no action: a replica following n1");
}

/// (scenario, case, my lsn, expected blocker)
#[test]
fn eligibility() {
    let rows: Vec<(&str, Case, Option<u64>, Option<Ineligible>)> = vec![
        ("caught up", Case::three().last_primary_lsn(1000), Some(1000), None),
        ("within maximum_lag_on_failover", Case::three().last_primary_lsn(1000 + MB), Some(1000), None),
        (
            "beyond maximum_lag_on_failover",
            Case::three().last_primary_lsn(1000 + MB + 1),
            Some(1000),
            Some(Ineligible::TooFarBehind { lag: MB + 1, max: MB }),
        ),
        (
            "beyond maximum_lag_on_failover of what a nofailover replica received",
            Case::three().last_primary_lsn(1000).tag("n3", |t| t.nofailover = true).status(
                "n3",
                "streaming",
                1000 + MB + 1,
            ),
            Some(1000),
            Some(Ineligible::TooFarBehind { lag: MB + 1, max: MB }),
        ),
        (
            "what a replica received still counts once its primary died (not streaming)",
            Case::three().last_primary_lsn(1000).tag("n3", |t| t.nofailover = true).status(
                "n3",
                "running",
                1000 + MB + 1,
            ),
            Some(1000),
            Some(Ineligible::TooFarBehind { lag: MB + 1, max: MB }),
        ),
        (
            "a position on an ended timeline does not count",
            Case::three().history(1, 500).last_primary_lsn(1000).tag("n3", |t| t.nofailover = true).status(
                "n3",
                "running",
                1000 + MB + 1,
            ),
            Some(1000),
            None,
        ),
        (
            "nofailover",
            Case::three().tag("n2", |t| t.nofailover = true),
            Some(1000),
            Some(Ineligible::NoFailover),
        ),
        (
            "failover_priority 0 is nofailover",
            Case::three().tag("n2", |t| t.failover_priority = Some(0)),
            Some(1000),
            Some(Ineligible::NoFailover),
        ),
        ("witness", Case::three().witness("n2"), Some(1000), Some(Ineligible::Witness)),
        ("no position", Case::three(), Option::None, Some(Ineligible::NoPosition)),
        (
            "another member further ahead",
            Case::three().status("n3", "streaming", 1100),
            Some(1000),
            Some(Ineligible::OtherAhead { member: n("n3"), lsn: Lsn(1100) }),
        ),
        ("a stale status is no evidence", Case::three().stale_status("n3", 1100), Some(1000), None),
        (
            "a nofailover member ahead does not block",
            Case::three().status("n3", "streaming", 1100).tag("n3", |t| t.nofailover = true),
            Some(1000),
            None,
        ),
        (
            "equal position, higher priority elsewhere",
            Case::three().status("n3", "streaming", 1000).tag("n3", |t| t.failover_priority = Some(5)),
            Some(1000),
            Some(Ineligible::HigherPriority { member: n("n3") }),
        ),
        ("equal position, equal priority", Case::three().status("n3", "streaming", 1000), Some(1000), None),
        (
            "before a released checkpoint",
            Case::three().release_checkpoint(1200),
            Some(1000),
            Some(Ineligible::BeforeCheckpoint { lsn: Lsn(1000), checkpoint: Lsn(1200) }),
        ),
        (
            "switchover names another",
            Case::three().switchover(Some("n3"), Option::None),
            Some(1000),
            Some(Ineligible::NotTheCandidate { candidate: n("n3") }),
        ),
        (
            "the member a switchover moves away from",
            {
                let mut c = Case::three().switchover(Option::None, Option::None);
                c.state.switchover.as_mut().unwrap().leader = Some(n("n2"));
                c
            },
            Some(1000),
            Some(Ineligible::SwitchingAway),
        ),
        (
            "switchover candidate ignores members ahead",
            Case::three().switchover(Some("n2"), Option::None).status("n3", "streaming", 1100),
            Some(1000),
            None,
        ),
    ];
    for (scenario, case, lsn, want) in rows {
        assert_eq!(blocker(&case.state, &case.me, lsn.map(Lsn), NOW), want, "{scenario}");
    }
}
