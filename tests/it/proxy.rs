//! The built-in proxy, checked with real clients: through the writer port of every node,
//! writes reach the primary; through the reader port, reads reach replicas only, spread over
//! both. During a switchover and a failover, connections to the old primary are closed and
//! every new writer connection lands on the new primary (a failover in progress makes it wait,
//! not fail). With every replica stopped, the reader port follows `proxy.replica_fallback`, and
//! without a primary the writer port refuses after `proxy.primary_wait` with a reason.

use crate::harness::{show, wait_until, Cluster, SUPERUSER_PASSWORD};
use crate::postgres::{psql, psql_at, psql_within, wait_primary_with_streaming_replicas, FORM};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// `pg_is_in_recovery()` and the Postgres port a connection through `port` reached.
fn reached(port: u16) -> Result<(bool, u16), String> {
    // Longer than proxy.primary_wait: the proxy holds a client while a failover runs.
    let out = psql_within(port, "SELECT pg_is_in_recovery(), inet_server_port()", 20)?;
    let (rec, p) = out.split_once('|').ok_or(out.clone())?;
    Ok((rec == "t", p.parse().map_err(|_| out.clone())?))
}

/// A client that stays connected through a proxy port.
struct Session {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Session {
    fn open(port: u16) -> Session {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let conninfo =
            format!("host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres");
        let client = rt.block_on(async {
            let (client, conn) =
                tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            client
        });
        Session { rt, client }
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        self.rt.block_on(async {
            let msgs = self.client.simple_query(sql).await.map_err(|e| e.to_string())?;
            Ok(msgs
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(","))
        })
    }

    /// Waits briefly for the connection to be closed by the proxy: the next query fails.
    fn is_closed(&self) -> bool {
        wait_until(Duration::from_secs(10), "the proxy closes the session", || match self.query("SELECT 1") {
            Err(_) => Ok(true),
            Ok(_) => Err("still open".into()),
        })
    }
}

fn new_primary_everywhere(c: &Cluster, nodes: &[usize], primary_port: u16) {
    for &i in nodes {
        // The first connection after the change, not eventually: every proxy already routes
        // to the new primary (or waits for it).
        let (recovery, port) =
            reached(c.nodes[i].proxy.0).unwrap_or_else(|e| panic!("writer port of {}: {e}", c.nodes[i].name));
        assert_eq!((recovery, port), (false, primary_port), "writer port of {}", c.nodes[i].name);
    }
}

#[test]
fn writer_and_reader_ports_route_to_the_primary_and_replicas_and_follow_a_change_of_primary() {
    let mut c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    psql(&c, p, "CREATE TABLE it_proxy (n int, via text)").unwrap();
    for i in 0..3 {
        let (w, r) = c.nodes[i].proxy;
        assert_eq!(reached(w).unwrap(), (false, c.nodes[p].pg_port), "writer port of {}", c.nodes[i].name);
        psql_at(w, &format!("INSERT INTO it_proxy VALUES ({i}, 'writer')"))
            .expect("a write through the writer port");
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let (recovery, port) = reached(r).unwrap();
            assert!(recovery, "reader port of {} reached a primary", c.nodes[i].name);
            seen.insert(port);
        }
        let want: BTreeSet<u16> = replicas.iter().map(|&j| c.nodes[j].pg_port).collect();
        assert_eq!(seen, want, "reads of {} spread over both replicas", c.nodes[i].name);
    }
    assert_eq!(psql(&c, p, "SELECT count(*) FROM it_proxy").unwrap(), "3");

    // Switchover under connected clients: sessions on the old primary are closed, new ones
    // land on the new primary through every node.
    let writer = Session::open(c.nodes[replicas[0]].proxy.0);
    let reader = Session::open(c.nodes[p].proxy.1);
    assert_eq!(writer.query("SELECT pg_is_in_recovery()").unwrap(), "f");
    let reader_port: u16 = reader.query("SELECT inet_server_port()").unwrap().parse().unwrap();
    let target = replicas[0];
    let out = c.ctl(p, &["switchover", "--candidate", &c.nodes[target].name, "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(writer.is_closed(), "the session on the old primary is closed");
    new_primary_everywhere(&c, &[0, 1, 2], c.nodes[target].pg_port);
    if reader_port == c.nodes[target].pg_port {
        assert!(reader.is_closed(), "a reader session on the promoted replica is closed");
    }
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);

    // Failover: the primary's machine dies; a writer connection opened right away through a
    // survivor waits for the promotion instead of failing.
    let session = Session::open(c.nodes[p].proxy.0);
    assert_eq!(session.query("SELECT inet_server_port()").unwrap(), c.nodes[target].pg_port.to_string());
    c.kill9(target);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != target).collect();
    let (recovery, port) = reached(c.nodes[survivors[0]].proxy.0).expect("waits for the new primary");
    assert!(!recovery && port != c.nodes[target].pg_port, "landed on the new primary ({port})");
    assert!(session.is_closed(), "the session to the dead primary is gone");
    let new_p = survivors.iter().copied().find(|&i| c.nodes[i].pg_port == port).unwrap();
    new_primary_everywhere(&c, &survivors, c.nodes[new_p].pg_port);
    c.start(target);
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
}

#[test]
fn without_replicas_the_reader_port_follows_its_fallback_and_without_a_primary_the_writer_refuses() {
    let mut c = Cluster::empty();
    for i in 1..=3 {
        let n = c.add_node(&format!("node{i}"));
        if i == 3 {
            let path = c.nodes[n].config.clone();
            let text = std::fs::read_to_string(&path).unwrap();
            let text =
                text.replacen("proxy:\n", "proxy:\n  replica_fallback: refuse\n  primary_wait: 2\n", 1);
            std::fs::write(&path, text).unwrap();
        }
    }
    c.form();
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let out = c.ctl(p, &["pause", "--wait"]);
    assert!(out.status.success(), "{}", show(&out));
    let stop_postgres = |i: usize| {
        let pidfile = c.nodes[i].dir.join("pg/data/postmaster.pid");
        let pid = std::fs::read_to_string(pidfile).unwrap().lines().next().unwrap().to_string();
        let out = Command::new("kill").args(["-INT", &pid]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        wait_until(Duration::from_secs(30), "Postgres reported stopped", || {
            let v = c.api_get(i, "/patroni")?;
            (v["state"] == "stopped").then_some(()).ok_or(v.to_string())
        });
    };
    for i in (0..3).filter(|&i| i != p) {
        stop_postgres(i);
    }
    let fallback = (0..2).find(|&i| i != p).unwrap_or(p);
    wait_until(Duration::from_secs(10), "the default fallback sends reads to the primary", || match reached(
        c.nodes[fallback].proxy.1,
    ) {
        Ok((false, port)) if port == c.nodes[p].pg_port => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let refused = psql_at(c.nodes[2].proxy.1, "SELECT 1").expect_err("replica_fallback: refuse");
    assert!(refused.contains("no replica is streaming"), "{refused}");

    // The primary's Postgres stops too: no primary; the writer port waits primary_wait (2 s on
    // node3), then refuses with the reason.
    stop_postgres(p);
    let refused = psql_at(c.nodes[2].proxy.0, "SELECT 1").expect_err("no primary");
    assert!(refused.contains("no primary for 2 s"), "{refused}");
    let metrics = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(c.nodes[2].tls_dir().join("ca.crt"))
        .arg(format!("https://{}/metrics", c.nodes[2].api))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let refusals =
        metrics.lines().find(|l| l.starts_with("pgha_proxy_refused_total{") && l.contains("port=\"writer\""));
    assert!(refusals.is_some_and(|l| !l.ends_with(" 0")), "{metrics}");

    let out = c.ctl(p, &["resume", "--wait"]);
    assert!(out.status.success(), "{}", show(&out));
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    assert_eq!(reached(c.nodes[2].proxy.0).unwrap(), (false, c.nodes[p].pg_port));
}
