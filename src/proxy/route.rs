//! Where the proxy sends a new connection, decided from the replicated state alone (pure, so
//! every rule has a table test). The writer port goes to the lease holder once it has
//! *published* that it runs as primary (DESIGN.md: never to a member that is still promoting,
//! which would accept the connection read-only). The reader port goes to streaming replicas
//! that are not `noloadbalance` and within `max_replica_lag` of the primary's last position.

use crate::dcs::state::{ClusterState, Member};
use crate::types::MemberName;

/// A Postgres to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub member: MemberName,
    /// `host:port` as the member published it.
    pub address: String,
}

/// The routing table at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// The primary, if one has published that it promoted and still holds the lease.
    pub writer: Option<Backend>,
    /// Replicas that may take new reader connections, in member order.
    pub readers: Vec<Backend>,
    /// Members streaming as replicas now (lag not considered): a reader connection to any
    /// other member is closed.
    pub streaming: Vec<MemberName>,
}

/// How old a member's report may be before the proxy stops trusting it (it stopped
/// reporting: crashed, partitioned).
pub const STALE_REPORT_MS: u64 = 15_000;

impl Routes {
    pub fn from_state(st: &ClusterState, max_replica_lag: u64, now_ms: u64) -> Routes {
        let fresh = |m: &Member| {
            m.status.as_ref().filter(|s| now_ms.saturating_sub(s.updated_at_ms) <= STALE_REPORT_MS).is_some()
        };
        let backend = |m: &Member| {
            m.pg_address.as_ref().map(|a| Backend { member: m.name.clone(), address: a.clone() })
        };
        let holder = st.lease.as_ref().map(|l| &l.holder);
        let writer = holder.and_then(|h| st.members.get(h)).filter(|m| {
            // Only the holder's own report counts, not its age: a primary that stopped
            // reporting loses its lease (expired by the Raft leader), which removes it here.
            m.status.as_ref().is_some_and(|s| s.role == "primary" && s.state == "running")
        });
        let primary_lsn = writer
            .and_then(|m| m.status.as_ref())
            .and_then(|s| s.wal_lsn)
            .into_iter()
            .chain(st.last_primary_lsn)
            .max();
        let streaming: Vec<&Member> = st
            .members
            .values()
            .filter(|m| !m.witness && Some(&m.name) != holder && fresh(m))
            .filter(|m| m.status.as_ref().is_some_and(|s| s.state == "streaming" && s.role == "replica"))
            .collect();
        let readers = streaming
            .iter()
            .filter(|m| !m.tags.noloadbalance)
            .filter(|m| {
                let s = m.status.as_ref().expect("filtered on status above");
                match (primary_lsn, s.replay_lsn.or(s.receive_lsn)) {
                    (Some(p), Some(r)) => p.0.saturating_sub(r.0) <= max_replica_lag,
                    // No primary position known yet: the replica streams, let it serve.
                    (None, _) => true,
                    (Some(_), None) => false,
                }
            })
            .filter_map(|m| backend(m))
            .collect();
        Routes {
            writer: writer.and_then(backend),
            readers,
            streaming: streaming.iter().map(|m| m.name.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dynamic::DynamicConfig;
    use crate::dcs::state::{CaMaterial, Lease, MemberStatus, NewMember, RaftMembership, Tags};
    use crate::types::{LeaseEpoch, Lsn, NodeId};

    const NOW: u64 = 1_000_000;

    fn name(s: &str) -> MemberName {
        MemberName::new(s.to_string()).unwrap()
    }

    /// (member, state, role, lsn, report age ms, noloadbalance)
    type Row = (&'static str, &'static str, &'static str, u64, u64, bool);

    fn cluster(holder: Option<&str>, rows: &[Row]) -> ClusterState {
        let first = NewMember {
            name: name("n1"),
            witness: false,
            api_address: "127.0.0.1:1".into(),
            raft_address: "127.0.0.1:2".into(),
            pg_address: None,
            tags: Tags::default(),
            version: "t".into(),
        };
        let ca = CaMaterial { cert_pem: String::new(), key_pem: String::new() };
        let mut st = ClusterState::bootstrap("s".into(), "i".into(), first, ca, DynamicConfig::default());
        st.members.clear();
        for (i, (n, state, role, lsn, age, nolb)) in rows.iter().enumerate() {
            let primary = *role == "primary";
            st.members.insert(
                name(n),
                Member {
                    name: name(n),
                    node_id: NodeId(i as u64 + 1),
                    witness: *state == "witness",
                    api_address: format!("127.0.0.1:{}", 8000 + i),
                    raft_address: format!("127.0.0.1:{}", 9000 + i),
                    pg_address: Some(format!("127.0.0.1:{}", 5400 + i)),
                    membership: RaftMembership::Voter,
                    tags: Tags { noloadbalance: *nolb, ..Tags::default() },
                    version: "t".into(),
                    status: Some(MemberStatus {
                        state: state.to_string(),
                        role: role.to_string(),
                        timeline: None,
                        receive_lsn: (!primary).then_some(Lsn(*lsn)),
                        replay_lsn: (!primary).then_some(Lsn(*lsn)),
                        wal_lsn: primary.then_some(Lsn(*lsn)),
                        pending_restart: false,
                        updated_at_ms: NOW - age,
                    }),
                    removing: false,
                    scheduled_restart: None,
                },
            );
        }
        st.lease = holder.map(|h| Lease { holder: name(h), epoch: LeaseEpoch(1), ttl_ms: 4000, renewal: 1 });
        st
    }

    #[test]
    fn writers_go_to_a_published_primary_and_readers_to_fresh_close_streaming_replicas() {
        let lag = 1000;
        // (case, lease holder, members, writer, readers, streaming)
        type Case = (
            &'static str,
            Option<&'static str>,
            Vec<Row>,
            Option<&'static str>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "healthy: primary and two streaming replicas",
                Some("a"),
                vec![
                    ("a", "running", "primary", 5000, 0, false),
                    ("b", "streaming", "replica", 4500, 0, false),
                    ("c", "streaming", "replica", 5000, 0, false),
                ],
                Some("a"),
                vec!["b", "c"],
                vec!["b", "c"],
            ),
            (
                "lease holder still promoting (reports replica): no writer yet",
                Some("b"),
                vec![
                    ("a", "stopped", "replica", 0, 0, false),
                    ("b", "running", "replica", 5000, 0, false),
                    ("c", "streaming", "replica", 5000, 0, false),
                ],
                None,
                vec!["c"],
                vec!["c"],
            ),
            (
                "nobody holds the lease: no writer even if a Postgres still reports primary",
                None,
                vec![
                    ("a", "running", "primary", 5000, 0, false),
                    ("b", "streaming", "replica", 5000, 0, false),
                ],
                None,
                vec!["b"],
                vec!["b"],
            ),
            (
                "a lagging replica streams but takes no new readers",
                Some("a"),
                vec![
                    ("a", "running", "primary", 5000, 0, false),
                    ("b", "streaming", "replica", 3999, 0, false),
                    ("c", "streaming", "replica", 4000, 0, false),
                ],
                Some("a"),
                vec!["c"],
                vec!["b", "c"],
            ),
            (
                "noloadbalance, stale, starting and stopped members take no readers",
                Some("a"),
                vec![
                    ("a", "running", "primary", 5000, 0, false),
                    ("b", "streaming", "replica", 5000, 0, true),
                    ("c", "streaming", "replica", 5000, STALE_REPORT_MS + 1, false),
                    ("d", "starting", "replica", 5000, 0, false),
                    ("e", "stopped", "replica", 5000, 0, false),
                    ("f", "running", "replica", 5000, 0, false),
                ],
                Some("a"),
                vec![],
                vec!["b"],
            ),
            (
                "a witness is never a backend",
                Some("a"),
                vec![
                    ("a", "running", "primary", 5000, 0, false),
                    ("w", "witness", "replica", 5000, 0, false),
                ],
                Some("a"),
                vec![],
                vec![],
            ),
        ];
        for (case, holder, rows, writer, readers, streaming) in cases {
            let r = Routes::from_state(&cluster(holder, &rows), lag, NOW);
            assert_eq!(r.writer.as_ref().map(|b| b.member.as_str()), writer, "{case}");
            let got: Vec<&str> = r.readers.iter().map(|b| b.member.as_str()).collect();
            assert_eq!(got, readers, "{case}");
            let got: Vec<&str> = r.streaming.iter().map(|m| m.as_str()).collect();
            assert_eq!(got, streaming, "{case}");
        }
    }

    #[test]
    fn backends_carry_the_published_postgres_address() {
        let st = cluster(
            Some("a"),
            &[("a", "running", "primary", 1, 0, false), ("b", "streaming", "replica", 1, 0, false)],
        );
        let r = Routes::from_state(&st, 0, NOW);
        assert_eq!(r.writer.unwrap().address, "127.0.0.1:5400");
        assert_eq!(r.readers[0].address, "127.0.0.1:5401");
    }
}
