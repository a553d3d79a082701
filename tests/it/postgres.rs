//! Postgres under pgha, as an operator sees it through `psql`: a new cluster bootstraps one
//! primary and clones two streaming replicas that receive what is written on the primary; when
//! the primary's machine dies (pgha and its postmaster killed with SIGKILL), a replica is
//! promoted and the other follows it, and the old primary returns as a replica; when the
//! primary's pgha is stopped, it releases its lease and a replica takes over. Every check is a query against a node's Postgres port.

use crate::harness::{wait_until, Cluster, SUPERUSER_PASSWORD};
use std::process::Command;
use std::time::Duration;

/// Bootstrap (initdb), start, two clones and their streaming start: generous on a loaded CI host.
pub(crate) const FORM: Duration = Duration::from_secs(120);
/// A failover: the lease ttl (10 s by default) plus a promotion.
const FAILOVER: Duration = Duration::from_secs(60);
const PSQL: &str = "/usr/bin/psql";

/// `psql -Atc sql` against node `i`'s Postgres over TCP as the superuser; the trimmed output.
pub(crate) fn psql(c: &Cluster, i: usize, sql: &str) -> Result<String, String> {
    psql_at(c.nodes[i].pg_port, sql).map_err(|e| format!("{}: {e}", c.nodes[i].name))
}

/// `psql -Atc sql` as the superuser against any port on 127.0.0.1 (a node's Postgres or proxy).
pub(crate) fn psql_at(port: u16, sql: &str) -> Result<String, String> {
    psql_within(port, sql, 3)
}

/// `psql_at` with libpq's `connect_timeout` in seconds (a proxy may make a client wait).
pub(crate) fn psql_within(port: u16, sql: &str, connect_timeout_s: u32) -> Result<String, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout={connect_timeout_s}"
    );
    crate::harness::psql_result(
        Command::new(PSQL)
            .args([conninfo.as_str(), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env_remove("PGSERVICE")
            .output(),
    )
}

/// What each node's Postgres says it is: "primary", "replica", or the error.
pub(crate) fn roles(c: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| match psql(c, i, "SELECT pg_is_in_recovery()").as_deref() {
            Ok("f") => "primary".to_string(),
            Ok("t") => "replica".to_string(),
            Ok(other) => format!("? {other}"),
            Err(e) => format!("down ({e})"),
        })
        .collect()
}

/// Waits until exactly one of `nodes` is a primary with every other one streaming from it;
/// returns the primary's index.
pub(crate) fn wait_primary_with_streaming_replicas(
    c: &Cluster,
    nodes: &[usize],
    deadline: Duration,
) -> usize {
    wait_until(deadline, "one primary with every other node streaming from it", || {
        let r = roles(c, nodes);
        let primaries: Vec<usize> =
            nodes.iter().zip(&r).filter(|(_, r)| *r == "primary").map(|(&i, _)| i).collect();
        let replicas = r.iter().filter(|r| *r == "replica").count();
        let [p] = primaries.as_slice() else { return Err(format!("roles {r:?}")) };
        // pg_basebackup's WAL stream also shows as `streaming` under the member's name.
        if replicas + 1 != nodes.len() {
            return Err(format!("roles {r:?}"));
        }
        let streaming = psql(c, *p, "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication WHERE state = 'streaming'")?;
        let want: Vec<&str> = nodes.iter().filter(|&&i| i != *p).map(|&i| c.nodes[i].name.as_str()).collect();
        if streaming == want.join(",") {
            // pgha's own view too (health checks, switchover checks): every member running,
            // the replicas streaming.
            for &i in nodes {
                let v = c.api_get(i, "/patroni")?;
                let streams = i == *p || v["replication_state"] == "streaming";
                if v["state"] != "running" || !streams {
                    return Err(format!(
                        "{} reports {} / {}",
                        c.nodes[i].name, v["state"], v["replication_state"]
                    ));
                }
            }
            Ok(*p)
        } else {
            Err(format!(
                "roles {r:?}; {} has streaming replicas [{streaming}], want {want:?}",
                c.nodes[*p].name
            ))
        }
    })
}

pub(crate) fn wait_row(c: &Cluster, i: usize, sql: &str, want: &str) {
    wait_until(FORM, &format!("{} returns {want} for {sql}", c.nodes[i].name), || {
        let got = psql(c, i, sql)?;
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?}"))
        }
    });
}

#[test]
fn three_nodes_bootstrap_one_primary_and_two_streaming_replicas_that_receive_a_new_table() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, p, "CREATE TABLE it_t (x int); INSERT INTO it_t VALUES (42)").expect("write on the primary");
    for i in (0..3).filter(|&i| i != p) {
        wait_row(&c, i, "SELECT x FROM it_t", "42");
        assert!(psql(&c, i, "INSERT INTO it_t VALUES (1)").is_err(), "{} is read-only", c.nodes[i].name);
    }
}

#[test]
fn killing_the_primary_node_promotes_a_replica_the_other_follows_it_and_the_old_one_returns_as_a_replica() {
    let mut c = Cluster::new(3);
    let old = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, old, "CREATE TABLE it_t (x int); INSERT INTO it_t VALUES (7)").expect("write on the primary");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &i in &survivors {
        wait_row(&c, i, "SELECT x FROM it_t", "7");
    }
    // The machine dies: pgha with SIGKILL; its postmaster dies with it (parent-death signal).
    c.kill9(old);
    wait_postgres_gone(&c, old);
    let new = wait_primary_with_streaming_replicas(&c, &survivors, FAILOVER);
    assert_ne!(new, old);
    assert_eq!(psql(&c, new, "SELECT x FROM it_t").unwrap(), "7", "nothing acknowledged was lost");
    psql(&c, new, "INSERT INTO it_t VALUES (8)").expect("the new primary takes writes");
    let other = survivors.iter().copied().find(|&i| i != new).unwrap();
    wait_row(&c, other, "SELECT count(*) FROM it_t", "2");

    // The machine comes back: its Postgres rejoins as a replica of the new primary.
    c.start(old);
    let primary = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    assert_eq!(primary, new, "the returning node does not take the primary role back");
    wait_row(&c, old, "SELECT count(*) FROM it_t", "2");
}

#[test]
fn stopping_the_primary_node_releases_its_lease_and_a_replica_takes_over() {
    let mut c = Cluster::new(3);
    let old = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, old, "CREATE TABLE it_t (x int); INSERT INTO it_t VALUES (1)").expect("write on the primary");
    let status = c.stop(old);
    assert!(status.success(), "{} stops cleanly on SIGTERM: {status}", c.nodes[old].name);
    let log = c.log_text(old);
    assert!(
        log.lines().any(|l| l.contains("released the lease at shutdown") && l.contains("Accepted")),
        "{} released its lease with its shutdown checkpoint",
        c.nodes[old].name
    );
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = wait_primary_with_streaming_replicas(&c, &survivors, FAILOVER);
    assert_eq!(psql(&c, new, "SELECT x FROM it_t").unwrap(), "1", "the switchover lost nothing");
}

/// A primary whose pgha hangs (SIGSTOP) can no longer renew its lease. Its fencer process
/// SIGKILLs its Postgres when the lease deadline passes, and only after that may a replica be
/// promoted: at no moment are two nodes writable. When pgha resumes, its node rejoins as a
/// replica.
#[test]
fn a_hung_primary_is_fenced_before_a_replica_is_promoted() {
    let c = Cluster::new(3);
    let old = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, old, "CREATE TABLE it_t (x int); INSERT INTO it_t VALUES (1)").expect("write on the primary");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &i in &survivors {
        wait_row(&c, i, "SELECT x FROM it_t", "1");
    }
    c.sigstop(old);
    let writable = |i: usize| psql(&c, i, "SELECT pg_is_in_recovery()").as_deref() == Ok("f");
    let mut fenced = false;
    let new = wait_until(FAILOVER, "the hung primary fenced, then a replica promoted", || {
        let old_writable = writable(old);
        let promoted: Vec<usize> = survivors.iter().copied().filter(|&i| writable(i)).collect();
        assert!(
            !old_writable || promoted.is_empty(),
            "two writable primaries: {} (hung) and {:?}",
            c.nodes[old].name,
            promoted
        );
        fenced |= !old_writable;
        match (fenced, promoted.as_slice()) {
            (true, [p]) => Ok(*p),
            _ => Err(format!("old writable: {old_writable}, promoted: {promoted:?}")),
        }
    });
    assert_eq!(psql(&c, new, "SELECT x FROM it_t").unwrap(), "1", "nothing acknowledged was lost");
    c.sigcont(old);
    let primary = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    assert_eq!(primary, new, "the resumed node rejoins as a replica");
}

/// `pgha ctl switchover --candidate` moves the primary role to the named replica: the old
/// primary stops cleanly, the candidate promotes after replaying its shutdown checkpoint, no
/// committed row is lost, and the old primary follows the new one.
#[test]
fn a_switchover_to_a_named_replica_loses_nothing() {
    let c = Cluster::new(3);
    let old = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, old, "CREATE TABLE it_t (x int); INSERT INTO it_t SELECT generate_series(1, 1000)")
        .expect("writes");
    let candidate = (0..3).find(|&i| i != old).unwrap();
    let name = c.nodes[candidate].name.clone();
    // The candidate must be streaming and reporting before a switchover to it is accepted.
    wait_until(FORM, "the candidate reports streaming", || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = crate::config::client(&c, old, false);
        let (_, v) = rt.block_on(client.get::<serde_json::Value>("/cluster")).map_err(|e| e.to_string())?;
        let state = v["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name.as_str()))
            .map(|m| m["state"].clone());
        (state == Some(serde_json::json!("streaming"))).then_some(()).ok_or(format!("{v}"))
    });
    // One request; it answers when the candidate holds the lease (a slow host may make it
    // answer 503 "status unknown" first, so the outcome is judged from the cluster).
    let out = c.ctl(old, &["switchover", "--candidate", &name, "--force"]);
    eprintln!("switchover: {}", crate::harness::show(&out));
    let new = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FAILOVER);
    assert_eq!(new, candidate, "the named replica is the primary");
    assert_eq!(psql(&c, new, "SELECT count(*) FROM it_t").unwrap(), "1000", "no committed row lost");
    let history = crate::harness::stdout(&c.ctl(new, &["history", "--format", "json"]));
    assert!(history.contains(&name), "the history records the promotion: {history}");
}

/// The postmaster of the primary crashes (SIGKILL to it alone) while its pgha keeps renewing
/// the lease: pgha starts it again in place (crash recovery) rather than failing over, and
/// the replicas resume streaming from it.
#[test]
fn a_crashed_postmaster_on_the_primary_is_restarted_in_place() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, p, "CREATE TABLE it_t (x int); INSERT INTO it_t SELECT generate_series(1, 100)")
        .expect("writes");
    let pidfile = c.nodes[p].dir.join("pg/data/postmaster.pid");
    let pid = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
    let pid: i32 = pid.lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let again = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FAILOVER);
    assert_eq!(again, p, "the same node is primary again, without a failover");
    assert_eq!(psql(&c, p, "SELECT count(*) FROM it_t").unwrap(), "100", "crash recovery kept the rows");
    let history = crate::harness::stdout(&c.ctl(p, &["history", "--format", "json"]));
    assert_eq!(history.trim(), "[]", "no promotion happened: {history}");
}

/// After kill -9 of node `i`'s pgha: its postmaster dies with it (parent-death signal).
fn wait_postgres_gone(c: &Cluster, i: usize) {
    wait_until(Duration::from_secs(10), "the killed node's Postgres is gone", || {
        match psql(c, i, "SELECT 1") {
            Err(_) => Ok(()),
            Ok(_) => Err("still answering".into()),
        }
    });
}

/// True when node `i`'s Postgres accepts writes now.
fn writable(c: &Cluster, i: usize) -> bool {
    psql(c, i, "SELECT pg_is_in_recovery()").as_deref() == Ok("f")
}

/// Watches `nodes` for `span`; panics if one of them becomes writable.
pub(crate) fn never_writable(c: &Cluster, nodes: &[usize], span: Duration, why: &str) {
    let start = pgha::clock::boot_now();
    while crate::harness::elapsed(start) < span {
        for &i in nodes {
            assert!(!writable(c, i), "{} was promoted although {why}", c.nodes[i].name);
        }
        crate::harness::pause(Duration::from_millis(500));
    }
}

/// Neither a `nofailover` member nor a replica further behind than `maximum_lag_on_failover`
/// is promoted when the primary dies: the cluster stays without a primary (rather than lose
/// data or break the operator's rule) until the old primary returns and takes its role back.
#[test]
fn neither_a_nofailover_member_nor_a_lagging_replica_is_promoted() {
    let mut c = Cluster::empty();
    c.add_node("node1");
    let nofailover = c.add_node_as("node2", "node2", "tags:\n  nofailover: true\n");
    c.add_node("node3");
    c.form();
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    assert_ne!(p, nofailover, "a nofailover member never takes the lease");
    let lagging = (0..3).find(|&i| i != p && i != nofailover).unwrap();
    assert!(c.stop(lagging).success());
    // Far more than the default maximum_lag_on_failover (1 MiB) of WAL while it is down.
    psql(
        &c,
        p,
        "CREATE TABLE it_big AS SELECT g AS x, repeat('x', 100) AS pad FROM generate_series(1, 100000) g",
    )
    .expect("writes");
    wait_row(&c, nofailover, "SELECT count(*) FROM it_big", "100000");
    c.kill9(p);
    // Its postmaster dies with it; the lagging node must not stream from a dying one.
    wait_postgres_gone(&c, p);
    crate::harness::pause(Duration::from_secs(1));
    c.start(lagging);
    // Three lease ttls (10 s each by default): time enough for any wrong promotion.
    never_writable(&c, &[nofailover, lagging], Duration::from_secs(30), "it is not eligible");
    assert!(
        c.log_text(lagging).contains("behind") || c.log_text(lagging).contains("ahead"),
        "the lagging node says why it does not take over"
    );
    c.start(p);
    let back = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    assert_eq!(back, p, "the old primary, the only eligible member, takes its role back");
    wait_row(&c, lagging, "SELECT count(*) FROM it_big", "100000");
}

/// In pause mode nothing automatic happens, not even a failover; `ctl resume` restores it.
#[test]
fn pause_mode_takes_no_automatic_action_until_resumed() {
    let mut c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let out = c.ctl(p, &["pause", "--wait"]);
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    let other = (0..3).find(|&i| i != p).unwrap();
    let patroni = c.api_get(other, "/patroni").unwrap();
    assert_eq!(patroni["pause"], true, "{patroni}");
    let out = c.ctl(p, &["pause"]);
    assert!(!out.status.success(), "pausing twice is refused: {}", crate::harness::show(&out));
    c.kill9(p);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    never_writable(&c, &survivors, Duration::from_secs(25), "the cluster is paused");
    let out = c.ctl(other, &["resume"]);
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    wait_primary_with_streaming_replicas(&c, &survivors, FAILOVER);
}
