//! Patroni's health checks as a pure function: which path answers 200 or 503 for a member in
//! a given state (`shared/reference/patroni-4.1.5-rest/status_codes.txt`). HAProxy configs and
//! monitoring written for Patroni (`OPTIONS /primary`, `GET /replica?lag=10MB`) keep working.
//! `HEAD` and `OPTIONS` get the same status as `GET` (Patroni's `OPTIONS /liveness` 503 is a
//! quirk not copied). `/primary` is judged from the lease deadline at request time, so it turns
//! 503 the moment the deadline passes even if the HA loop is stuck.

use std::collections::BTreeMap;

/// The health paths, with Patroni's aliases folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `/`, `/primary`, `/master`, `/read-write`
    Primary,
    /// `/leader`: holds the leader lock (pgha has no standby clusters, so: the primary)
    Leader,
    StandbyLeader,
    /// `/replica`
    Replica,
    /// `/read-only`: primary or replica
    ReadOnly,
    /// `/sync`, `/synchronous`
    Sync,
    /// `/async`, `/asynchronous`
    Async,
    /// `/quorum`
    Quorum,
    /// `/read-only-sync`: primary or synchronous standby
    ReadOnlySync,
    /// `/health`: Postgres is up, whatever its role
    Health,
    /// `/liveness`: the HA loop is alive
    Liveness,
    /// `/readiness`: ready to take traffic in its role
    Readiness,
}

impl Check {
    pub fn from_path(path: &str) -> Option<Check> {
        Some(match path.trim_end_matches('/') {
            "" | "/primary" | "/master" | "/read-write" => Check::Primary,
            "/leader" => Check::Leader,
            "/standby-leader" | "/standby_leader" => Check::StandbyLeader,
            "/replica" => Check::Replica,
            "/read-only" => Check::ReadOnly,
            "/sync" | "/synchronous" => Check::Sync,
            "/async" | "/asynchronous" => Check::Async,
            "/quorum" => Check::Quorum,
            "/read-only-sync" => Check::ReadOnlySync,
            "/health" => Check::Health,
            "/liveness" => Check::Liveness,
            "/readiness" => Check::Readiness,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRunState {
    Running,
    Starting,
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaKind {
    Async,
    Sync,
    Quorum,
}

/// What the member looks like at request time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHealth {
    pub pg: PgRunState,
    /// Running as primary (not in recovery).
    pub primary: bool,
    /// Holds the lease with a deadline still in the future by its own clock, now.
    pub lease_valid: bool,
    /// Replica's WAL receiver is streaming.
    pub streaming: bool,
    /// Bytes behind the last known primary position (replicas).
    pub lag: Option<u64>,
    pub kind: ReplicaKind,
    pub noloadbalance: bool,
    /// Other tags as strings, for `?tag_key=value` filters.
    pub tags: BTreeMap<String, String>,
    /// The HA loop completed an iteration within `ttl`.
    pub loop_alive: bool,
}

/// Query parameters Patroni accepts on health checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub lag: Option<u64>,
    pub replication_state: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad query parameter {key}={value}: {why}")]
pub struct QueryError {
    pub key: String,
    pub value: String,
    pub why: &'static str,
}

/// A size as Patroni (and Postgres) write it: `1048576`, `16kB`, `10MB`, `1GB`, `1TB`
/// (1024-based).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Query {
    /// From `key=value` pairs: `lag`, `replication_state`, and `tag_<name>` filters.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Query, QueryError> {
        let mut q = Query::default();
        for (k, v) in pairs {
            let bad = |why| QueryError { key: k.to_string(), value: v.to_string(), why };
            match k {
                "lag" => q.lag = Some(parse_size(v).ok_or_else(|| bad("use bytes or a size like 16MB"))?),
                "replication_state" => q.replication_state = Some(v.to_string()),
                _ if k.starts_with("tag_") => {
                    q.tags.insert(k["tag_".len()..].to_string(), v.to_string());
                }
                _ => {} // Patroni ignores unknown parameters; so do we
            }
        }
        Ok(q)
    }
}

/// 200 (`true`) or 503 (`false`).
pub fn healthy(check: Check, q: &Query, m: &MemberHealth) -> bool {
    let running = m.pg == PgRunState::Running;
    let primary = running && m.primary && m.lease_valid;
    let replica = running && !m.primary;
    let lag_ok = q.lag.is_none_or(|max| m.lag.is_some_and(|lag| lag <= max));
    let state_ok = match q.replication_state.as_deref() {
        None => true,
        Some("streaming") => m.streaming,
        Some(_) => !m.streaming,
    };
    let tags_ok = q.tags.iter().all(|(k, v)| m.tags.get(k) == Some(v));
    let serving_replica = replica && !m.noloadbalance && lag_ok && state_ok && tags_ok;
    match check {
        Check::Primary | Check::Leader => primary,
        Check::StandbyLeader => false,
        Check::Replica => serving_replica,
        Check::ReadOnly => primary || (replica && lag_ok),
        Check::Sync => serving_replica && m.kind == ReplicaKind::Sync,
        Check::Async => serving_replica && m.kind == ReplicaKind::Async,
        Check::Quorum => serving_replica && m.kind == ReplicaKind::Quorum,
        Check::ReadOnlySync => primary || (serving_replica && m.kind == ReplicaKind::Sync),
        Check::Health => running,
        Check::Liveness => m.loop_alive,
        Check::Readiness => primary || (replica && m.streaming && lag_ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> MemberHealth {
        MemberHealth {
            pg: PgRunState::Running,
            primary: true,
            lease_valid: true,
            streaming: false,
            lag: None,
            kind: ReplicaKind::Async,
            noloadbalance: false,
            tags: BTreeMap::new(),
            loop_alive: true,
        }
    }
    fn replica() -> MemberHealth {
        MemberHealth { primary: false, lease_valid: false, streaming: true, lag: Some(0), ..primary() }
    }

    /// Patroni 4.1.5's answers on a healthy leader and replica (reference status_codes.txt).
    #[test]
    fn matches_patroni_on_a_healthy_leader_and_replica() {
        let expected = [
            (Check::Primary, true, false),
            (Check::Replica, false, true),
            (Check::Health, true, true),
            (Check::ReadOnly, true, true),
            (Check::Leader, true, false),
            (Check::Liveness, true, true),
            (Check::Readiness, true, true),
        ];
        for (check, leader, rep) in expected {
            assert_eq!(healthy(check, &Query::default(), &primary()), leader, "leader {check:?}");
            assert_eq!(healthy(check, &Query::default(), &replica()), rep, "replica {check:?}");
        }
        let text = include_str!("../../tests/data/patroni-4.1.5-status-codes.txt");
        for line in text.lines().filter(|l| l.contains(" GET ")) {
            let f: Vec<_> = line.split_whitespace().collect();
            let member = if f[0] == "leader" { primary() } else { replica() };
            let check = Check::from_path(f[2]).expect("a known path");
            assert_eq!(healthy(check, &Query::default(), &member), f[3] == "200", "{line}");
        }
    }

    /// (scenario, check, query, member, 200?)
    #[test]
    fn member_states_and_filters() {
        let q = |pairs: &[(&str, &str)]| Query::parse(pairs.iter().copied()).unwrap();
        let none = Query::default();
        let mut tagged = replica();
        tagged.tags.insert("dc".into(), "east".into());
        let rows: Vec<(&str, Check, Query, MemberHealth, bool)> = vec![
            (
                "primary whose lease deadline passed",
                Check::Primary,
                none.clone(),
                MemberHealth { lease_valid: false, ..primary() },
                false,
            ),
            (
                "primary with Postgres stopped",
                Check::Primary,
                none.clone(),
                MemberHealth { pg: PgRunState::Stopped, ..primary() },
                false,
            ),
            (
                "standby-leader never (no standby clusters)",
                Check::StandbyLeader,
                none.clone(),
                primary(),
                false,
            ),
            (
                "replica within lag",
                Check::Replica,
                q(&[("lag", "1MB")]),
                MemberHealth { lag: Some(1 << 20), ..replica() },
                true,
            ),
            (
                "replica beyond lag",
                Check::Replica,
                q(&[("lag", "1MB")]),
                MemberHealth { lag: Some((1 << 20) + 1), ..replica() },
                false,
            ),
            (
                "replica with unknown lag and a lag filter",
                Check::Replica,
                q(&[("lag", "16384")]),
                MemberHealth { lag: None, ..replica() },
                false,
            ),
            (
                "noloadbalance replica",
                Check::Replica,
                none.clone(),
                MemberHealth { noloadbalance: true, ..replica() },
                false,
            ),
            (
                "noloadbalance replica still read-only",
                Check::ReadOnly,
                none.clone(),
                MemberHealth { noloadbalance: true, ..replica() },
                true,
            ),
            (
                "replica not streaming, streaming wanted",
                Check::Replica,
                q(&[("replication_state", "streaming")]),
                MemberHealth { streaming: false, ..replica() },
                false,
            ),
            ("tag filter matches", Check::Replica, q(&[("tag_dc", "east")]), tagged.clone(), true),
            ("tag filter differs", Check::Replica, q(&[("tag_dc", "west")]), tagged, false),
            ("async replica on /async", Check::Async, none.clone(), replica(), true),
            ("async replica on /sync", Check::Sync, none.clone(), replica(), false),
            (
                "sync standby on /sync",
                Check::Sync,
                none.clone(),
                MemberHealth { kind: ReplicaKind::Sync, ..replica() },
                true,
            ),
            (
                "quorum standby on /quorum",
                Check::Quorum,
                none.clone(),
                MemberHealth { kind: ReplicaKind::Quorum, ..replica() },
                true,
            ),
            ("read-only-sync on the primary", Check::ReadOnlySync, none.clone(), primary(), true),
            ("read-only-sync on an async replica", Check::ReadOnlySync, none.clone(), replica(), false),
            (
                "health of a stopped Postgres",
                Check::Health,
                none.clone(),
                MemberHealth { pg: PgRunState::Stopped, ..replica() },
                false,
            ),
            (
                "health while starting",
                Check::Health,
                none.clone(),
                MemberHealth { pg: PgRunState::Starting, ..replica() },
                false,
            ),
            (
                "liveness with a stuck loop",
                Check::Liveness,
                none.clone(),
                MemberHealth { loop_alive: false, ..primary() },
                false,
            ),
            (
                "readiness of a replica that stopped streaming",
                Check::Readiness,
                none.clone(),
                MemberHealth { streaming: false, ..replica() },
                false,
            ),
        ];
        for (scenario, check, query, member, want) in rows {
            assert_eq!(healthy(check, &query, &member), want, "{scenario}");
        }
    }

    #[test]
    fn sizes_and_queries_parse_like_patroni() {
        for (text, want) in [
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("16kB", Some(16 << 10)),
            ("10MB", Some(10 << 20)),
            ("1GB", Some(1 << 30)),
            ("1 MB", Some(1 << 20)),
            ("10mb", None),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
        let err = Query::parse([("lag", "lots")]).unwrap_err();
        assert_eq!(err.key, "lag");
        assert!(Query::parse([("unknown", "x")]).is_ok());
        assert_eq!(Check::from_path("/master/"), Some(Check::Primary));
        assert_eq!(Check::from_path("/nope"), None);
    }
}
