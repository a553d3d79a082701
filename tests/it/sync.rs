//! Synchronous replication with real Postgres (`synchronous_mode: on`): a client commits
//! numbered rows while the primary's node is killed with `kill -9` at random moments; after
//! every failover every acknowledged row is on the new primary. With the synchronous standby
//! gone, non-strict mode degrades (writes go on, `ctl list` and the metrics say so) and strict
//! mode blocks commits until a standby is back.

use crate::harness::{show, stdout, wait_until, Cluster, SUPERUSER_PASSWORD};
use crate::postgres::{psql, wait_primary_with_streaming_replicas, FORM};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FAILOVER: Duration = Duration::from_secs(60);

fn set_config(c: &Cluster, via: usize, settings: &[&str]) {
    let mut args = vec!["edit-config"];
    for s in settings {
        args.push("--set");
        args.push(s);
    }
    args.push("--force");
    let out = c.ctl(via, &args);
    assert!(out.status.success(), "{}", show(&out));
}

/// `/cluster`'s `synchronous_mode` from the first of `via` that answers: the published
/// standbys, whether degraded, and the quorum's `k`.
fn published(c: &Cluster, via: &[usize]) -> Result<(Vec<String>, bool, Option<u64>), String> {
    let mut last = String::new();
    for &i in via {
        match c.api_get(i, "/cluster") {
            Ok(v) => {
                let s = &v["synchronous_mode"];
                let names = s["sync_standbys"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                return Ok((names, s["degraded"] == true, s["quorum"].as_u64()));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The published synchronous standbys, as `/cluster` shows them.
fn sync_standbys(c: &Cluster, via: &[usize]) -> Result<(Vec<String>, bool), String> {
    published(c, via).map(|(names, degraded, _)| (names, degraded))
}

fn wait_sync_published(c: &Cluster, via: &[usize]) -> Vec<String> {
    wait_until(FORM, "a synchronous standby is published", || match sync_standbys(c, via)? {
        (names, _) if !names.is_empty() => Ok(names),
        other => Err(format!("{other:?}")),
    })
}

/// `INSERT` of `n` through the libpq multi-host string of `ports` (the primary, whoever it is).
fn insert(ports: &[u16], n: u64, timeout_s: u32) -> bool {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dsn = format!(
        "postgresql://postgres@{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        hosts.join(",")
    );
    Command::new("timeout")
        .arg(timeout_s.to_string())
        .args(["/usr/bin/psql", &dsn, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("INSERT INTO it_sync VALUES ({n})"))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A client inserting numbered rows in a thread; `acked` holds those whose commit returned.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(ports: Vec<u16>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                if insert(&ports, n, 10) {
                    a.lock().unwrap().push(n);
                } else {
                    crate::harness::pause(Duration::from_millis(50));
                }
            }
        });
        Writer { stop, acked, thread: Some(thread) }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The rows on node `i` (retried: a just-promoted primary under load may refuse a connection
/// for a moment).
fn present(c: &Cluster, i: usize) -> BTreeSet<u64> {
    let what = format!("the rows on {}", c.nodes[i].name);
    wait_until(Duration::from_secs(20), &what, || psql(c, i, "SELECT string_agg(n::text, ',') FROM it_sync"))
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[test]
fn in_synchronous_mode_no_acknowledged_row_is_lost_when_the_primary_node_is_killed() {
    let mut c = Cluster::new(3);
    let all = [0, 1, 2];
    let p = wait_primary_with_streaming_replicas(&c, &all, FORM);
    set_config(&c, p, &["synchronous_mode=on"]);
    wait_sync_published(&c, &all);
    psql(&c, p, "CREATE TABLE it_sync (n bigint PRIMARY KEY)").unwrap();
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
    let writer = Writer::start(ports);
    let rounds: u64 = std::env::var("PGHA_SYNC_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let mut seed = std::process::id() as u64;
    for round in 1..=rounds {
        let p = wait_primary_with_streaming_replicas(&c, &all, FAILOVER);
        let sync = wait_sync_published(&c, &all);
        // A pseudo-random moment within the next 0.3–2.3 s of steady writes.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        crate::harness::pause(Duration::from_millis(300 + (seed >> 33) % 2000));
        kill_primary_and_check(&mut c, &writer, p, &sync, &format!("round {round}"));
    }
    assert!(writer.acked().len() as u64 > rounds * 10, "the writer made progress");
}

#[test]
fn without_its_synchronous_standby_non_strict_degrades_and_strict_blocks() {
    let mut c = Cluster::empty();
    c.add_node("node1");
    c.add_node("node2");
    c.form();
    c.add_witness("node3");
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1], FORM);
    let r = 1 - p;
    set_config(&c, p, &["synchronous_mode=on"]);
    let sync = wait_sync_published(&c, &[p]);
    assert_eq!(sync, vec![c.nodes[r].name.clone()]);
    let health = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(c.nodes[r].tls_dir().join("ca.crt"))
            .arg(format!("https://{}{path}", c.nodes[r].api))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!((health("/sync").as_str(), health("/async").as_str()), ("200", "503"));
    let out = c.ctl(p, &["list", "--format", "json"]);
    assert!(stdout(&out).contains("Sync Standby"), "{}", show(&out));
    psql(&c, p, "CREATE TABLE it_sync (n bigint PRIMARY KEY)").unwrap();
    let ports = [c.nodes[p].pg_port];

    // Non-strict: the standby dies, commits go on asynchronously, and pgha says so.
    c.kill9(r);
    wait_until(FAILOVER, "degraded", || match sync_standbys(&c, &[p])? {
        (names, true) if names.is_empty() => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(insert(&ports, 1, 10), "a commit while degraded");
    let out = c.ctl(p, &["list"]);
    assert!(stdout(&out).contains("DEGRADED"), "{}", show(&out));
    let metrics = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(c.nodes[p].tls_dir().join("ca.crt"))
        .arg(format!("https://{}/metrics", c.nodes[p].api))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(metrics.lines().any(|l| l.starts_with("pgha_sync_degraded{") && l.ends_with(" 1")), "{metrics}");
    c.start(r);
    wait_until(FORM, "synchronous again", || match sync_standbys(&c, &[p])? {
        (names, false) if !names.is_empty() => Ok(()),
        other => Err(format!("{other:?}")),
    });

    // Strict: the standby dies, commits wait for it.
    set_config(&c, p, &["synchronous_mode_strict=true"]);
    c.kill9(r);
    wait_until(FAILOVER, "strict: nothing published, not degraded", || match sync_standbys(&c, &[p])? {
        (names, false) if names.is_empty() => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let blocked = {
        let ports = ports.to_vec();
        std::thread::spawn(move || insert(&ports, 2, 60))
    };
    crate::harness::pause(Duration::from_secs(5));
    assert!(!blocked.is_finished(), "a commit returned without a synchronous standby in strict mode");
    c.start(r);
    assert!(blocked.join().unwrap(), "the commit completes once the standby is back");
    assert_eq!(psql(&c, p, "SELECT count(*) FROM it_sync").unwrap(), "2");
}

/// Both standbys of a three-node cluster published as `ANY 1` of them.
fn wait_quorum_of_two(c: &Cluster, via: &[usize]) -> Vec<String> {
    wait_until(FORM, "a quorum of two standbys is published", || match published(c, via)? {
        (names, _, Some(1)) if names.len() == 2 => Ok(names),
        other => Err(format!("{other:?}")),
    })
}

/// HTTP status of `GET path` on node `i`'s API.
fn status_of(c: &Cluster, i: usize, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(c.nodes[i].tls_dir().join("ca.crt"))
        .arg(format!("https://{}{path}", c.nodes[i].api))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Kills the primary's node, waits for a survivor to be primary and for writes to resume,
/// and checks every acknowledged row is on it. Returns the new primary.
fn kill_primary_and_check(
    c: &mut Cluster,
    writer: &Writer,
    p: usize,
    allowed: &[String],
    what: &str,
) -> usize {
    let before = writer.acked().len();
    c.kill9(p);
    let survivors: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != p).collect();
    let new_p = wait_until(FAILOVER, "a survivor is primary", || {
        survivors
            .iter()
            .copied()
            .find(|&i| psql(c, i, "SELECT pg_is_in_recovery()").as_deref() == Ok("f"))
            .ok_or_else(|| "no primary yet".to_string())
    });
    assert!(
        allowed.contains(&c.nodes[new_p].name),
        "{what}: promoted {} outside {allowed:?}",
        c.nodes[new_p].name
    );
    wait_until(FAILOVER, "writes resume", || {
        (writer.acked().len() > before + 3).then_some(()).ok_or("no new writes".to_string())
    });
    let acked = writer.acked();
    let rows = present(c, new_p);
    let lost: Vec<&u64> = acked.iter().filter(|n| !rows.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged rows lost after the failover to {}: {lost:?}",
        c.nodes[new_p].name
    );
    c.start(p);
    new_p
}

#[test]
fn in_quorum_mode_and_across_mode_changes_under_load_no_acknowledged_row_is_lost() {
    let mut c = Cluster::new(3);
    let all = [0, 1, 2];
    let p = wait_primary_with_streaming_replicas(&c, &all, FORM);
    psql(&c, p, "CREATE TABLE it_sync (n bigint PRIMARY KEY)").unwrap();
    let writer = Writer::start(c.nodes.iter().map(|n| n.pg_port).collect());

    // on, then quorum, while the client writes.
    set_config(&c, p, &["synchronous_mode=on"]);
    wait_sync_published(&c, &all);
    set_config(&c, p, &["synchronous_mode=quorum"]);
    let quorum = wait_quorum_of_two(&c, &all);
    let r = (0..3).find(|&i| i != p).unwrap();
    assert_eq!((status_of(&c, r, "/quorum"), status_of(&c, r, "/sync")), ("200".into(), "503".into()));
    let out = c.ctl(p, &["list"]);
    assert!(stdout(&out).contains("Quorum Standby"), "{}", show(&out));
    let ssn = psql(&c, p, "SHOW synchronous_standby_names").unwrap();
    assert!(ssn.starts_with("ANY 1 ("), "{ssn}");

    let rounds: u64 = std::env::var("PGHA_SYNC_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let mut seed = std::process::id() as u64;
    let mut p = p;
    let mut quorum = quorum;
    for round in 1..=rounds {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        crate::harness::pause(Duration::from_millis(300 + (seed >> 33) % 2000));
        let new_p = kill_primary_and_check(&mut c, &writer, p, &quorum, &format!("quorum round {round}"));
        p = wait_primary_with_streaming_replicas(&c, &all, FAILOVER);
        assert_eq!(p, new_p);
        quorum = wait_quorum_of_two(&c, &all);
    }

    // quorum, off, on again under load; then a failover in mode on.
    set_config(&c, p, &["synchronous_mode=off"]);
    wait_until(FAILOVER, "asynchronous", || match psql(&c, p, "SHOW synchronous_standby_names")? {
        ssn if ssn.is_empty() => Ok(()),
        ssn => Err(ssn),
    });
    set_config(&c, p, &["synchronous_mode=on"]);
    let sync = wait_sync_published(&c, &all);
    kill_primary_and_check(&mut c, &writer, p, &sync, "mode on after the changes");
    assert!(writer.acked().len() as u64 > rounds * 10, "the writer made progress");
}
