//! Table tests of the gather mapping (`pg_controldata` / probe -> [`LocalPg`]) and of the
//! status a member reports from it.

use super::local::{from_controldata, from_probe};
use super::observe::{LocalPg, PgRole};
use super::run::status_of;
use crate::config::dynamic::DynamicConfig;
use crate::dcs::state::{CaMaterial, ClusterState, Member, NewMember, RaftMembership, Tags};
use crate::pg::controldata::{ClusterState as DbState, ControlData};
use crate::pg::probe::{PgProbe, WalReceiver};
use crate::types::{Lsn, MemberName, NodeId, Timeline};
use std::time::SystemTime;

fn n(s: &str) -> MemberName {
    MemberName::new(s).unwrap()
}

/// n1 (Postgres at 10.0.0.1:5432), n2 (10.0.0.2:5432), n3 (10.0.0.3:6432).
fn cluster() -> ClusterState {
    let new = |name: &str, pg: &str| NewMember {
        name: n(name),
        witness: false,
        api_address: format!("{name}:8008"),
        raft_address: format!("{name}:5010"),
        pg_address: Some(pg.into()),
        tags: Tags::default(),
        version: "t".into(),
    };
    let ca = CaMaterial { cert_pem: String::new(), key_pem: String::new() };
    let mut s = ClusterState::bootstrap(
        "s".into(),
        "i".into(),
        new("n1", "10.0.0.1:5432"),
        ca,
        DynamicConfig::default(),
    );
    for (i, (name, pg)) in [("n2", "10.0.0.2:5432"), ("n3", "10.0.0.3:6432")].into_iter().enumerate() {
        let m = new(name, pg);
        s.members.insert(
            n(name),
            Member {
                name: m.name,
                node_id: NodeId(i as u64 + 2),
                witness: false,
                api_address: m.api_address,
                raft_address: m.raft_address,
                pg_address: m.pg_address,
                membership: RaftMembership::Voter,
                tags: m.tags,
                version: m.version,
                status: None,
                removing: false,
                scheduled_restart: None,
            },
        );
    }
    s
}

fn control(state: DbState, timeline: u32, checkpoint: u64) -> ControlData {
    ControlData {
        system_identifier: 7,
        state,
        timeline: Timeline(timeline),
        checkpoint_lsn: Lsn(checkpoint),
        redo_lsn: Lsn(checkpoint),
        min_recovery_end_lsn: Lsn(0),
        min_recovery_end_timeline: Timeline(0),
        data_checksums: true,
        wal_log_hints: true,
    }
}

#[test]
fn controldata_maps_to_stopped_with_was_primary() {
    // (control file state, has backup_label, was_primary, clean)
    let cases = [
        (DbState::ShutDown, false, true, true),
        (DbState::InProduction, false, true, false),
        (DbState::InProduction, true, false, false),
        (DbState::ShutDownInRecovery, false, false, true),
        (DbState::InArchiveRecovery, false, false, false),
        (DbState::InCrashRecovery, false, true, false),
        (DbState::StartingUp, false, false, false),
        (DbState::ShuttingDown, false, false, false),
    ];
    for (state, base_backup, was_primary, clean) in cases {
        assert_eq!(
            from_controldata(&control(state, 3, 0x3000028), base_backup),
            LocalPg::Stopped {
                system_identifier: "7".into(),
                timeline: Timeline(3),
                checkpoint: Lsn(0x3000028),
                was_primary,
                clean,
                replayed: None,
            },
            "{state:?} backup_label: {base_backup}"
        );
    }
}

struct Probe(PgProbe);

impl Probe {
    fn primary(wal: u64) -> Probe {
        Probe(PgProbe {
            in_recovery: false,
            timeline: Timeline(2),
            wal_lsn: Some(Lsn(wal)),
            receive_lsn: None,
            replay_lsn: None,
            replay_timestamp: None,
            wal_replay_paused: false,
            pending_restart: Vec::new(),
            server_version: 150000,
            postmaster_start_time: SystemTime::UNIX_EPOCH,
            system_identifier: 7,
            replication: Vec::new(),
            wal_receiver: None,
        })
    }
    fn replica(receive: Option<u64>, replay: Option<u64>) -> Probe {
        let mut p = Probe::primary(0).0;
        p.in_recovery = true;
        p.wal_lsn = None;
        p.receive_lsn = receive.map(Lsn);
        p.replay_lsn = replay.map(Lsn);
        Probe(p)
    }
    fn receiver(mut self, status: &str, host: &str, port: u16) -> Probe {
        self.0.wal_receiver = Some(WalReceiver {
            status: status.into(),
            received_tli: Some(Timeline(2)),
            flushed_lsn: None,
            sender_host: Some(host.into()),
            sender_port: Some(port),
            slot_name: None,
        });
        self
    }
}

fn running(role: PgRole, lsn: u64, upstream: Option<&str>, streaming: bool) -> LocalPg {
    LocalPg::Running {
        role,
        system_identifier: "7".into(),
        timeline: Timeline(2),
        lsn: Lsn(lsn),
        upstream: upstream.map(n),
        streaming,
    }
}

#[test]
fn probe_maps_to_running() {
    use PgRole::*;
    let cases: Vec<(&str, Probe, Option<&str>, LocalPg)> = vec![
        (
            "primary: its WAL position, no upstream",
            Probe::primary(0x500),
            None,
            running(Primary, 0x500, None, false),
        ),
        (
            "replica streaming from n1's address",
            Probe::replica(Some(0x600), Some(0x580)).receiver("streaming", "10.0.0.1", 5432),
            None,
            running(Replica, 0x580, Some("n1"), true),
        ),
        (
            "the port tells members on one host apart",
            Probe::replica(Some(0x600), Some(0x600)).receiver("streaming", "10.0.0.3", 6432),
            None,
            running(Replica, 0x600, Some("n3"), true),
        ),
        (
            "a sender that is no member's Postgres",
            Probe::replica(Some(0x600), Some(0x600)).receiver("streaming", "10.0.0.9", 5432),
            None,
            running(Replica, 0x600, None, true),
        ),
        (
            "the configured upstream wins before the receiver connects",
            Probe::replica(None, Some(0x400)),
            Some("n2"),
            running(Replica, 0x400, Some("n2"), false),
        ),
        (
            "a receiver that is not streaming",
            Probe::replica(Some(0x600), Some(0x600)).receiver("waiting", "10.0.0.1", 5432),
            Some("n1"),
            running(Replica, 0x600, Some("n1"), false),
        ),
        (
            "no replay position yet: the received one",
            Probe::replica(Some(0x700), None),
            Some("n1"),
            running(Replica, 0x700, Some("n1"), false),
        ),
        (
            "a promoted primary ignores the configured upstream",
            Probe::primary(0x800),
            Some("n1"),
            running(Primary, 0x800, None, false),
        ),
    ];
    let c = cluster();
    for (what, probe, configured, want) in cases {
        let configured = configured.map(n);
        assert_eq!(from_probe(&probe.0, configured.as_ref(), &c), want, "{what}");
    }
}

#[test]
fn status_reports_use_patroni_words() {
    let stopped = from_controldata(&control(DbState::ShutDown, 1, 0), false);
    let streaming = running(PgRole::Replica, 1, Some("n1"), true);
    let cases: Vec<(LocalPg, Option<PgProbe>, &str, &str)> = vec![
        (LocalPg::Absent, None, "stopped", "replica"),
        (stopped, None, "stopped", "replica"),
        (LocalPg::Starting, None, "starting", "replica"),
        (running(PgRole::Primary, 5, None, false), Some(Probe::primary(5).0), "running", "primary"),
        (streaming, Some(Probe::replica(Some(9), Some(8)).0), "streaming", "replica"),
        (running(PgRole::Replica, 1, Some("n1"), false), None, "running", "replica"),
    ];
    for (pg, probe, state, role) in cases {
        let s = status_of(&pg, probe.as_ref(), 42);
        assert_eq!((s.state.as_str(), s.role.as_str(), s.updated_at_ms), (state, role, 42), "{pg:?}");
        assert_eq!(s.timeline, pg.timeline());
        assert_eq!(s.wal_lsn, probe.as_ref().and_then(|p| p.wal_lsn));
        assert_eq!(s.replay_lsn, probe.as_ref().and_then(|p| p.replay_lsn));
    }
}
