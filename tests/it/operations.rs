//! Day-2 operations on a running 3-node cluster, as an operator used to Patroni does them:
//! health checks that HAProxy and monitoring call (`GET`, `HEAD`, `OPTIONS`), `/patroni`,
//! `/metrics`, `pgha ctl list` and `ctl dsn`; a parameter change through the replicated
//! config that reloads every node, one that needs a restart showing as pending until
//! `ctl restart --pending`; a `pg_hba` change enforced by every node; and `ctl reinit` of a
//! replica, which re-clones it and leaves it streaming with all the data.

use crate::harness::{show, stdout, wait_until, Cluster};
use crate::postgres::{psql, wait_primary_with_streaming_replicas, wait_row, FORM};
use std::process::Command;
use std::time::Duration;

/// A reload reaches every node within a few HA iterations.
const APPLY: Duration = Duration::from_secs(30);

/// HTTP status of `method path` on node `i`'s API, without a client certificate.
fn status(c: &Cluster, i: usize, method: &str, path: &str) -> String {
    let ca = c.nodes[i].tls_dir().join("ca.crt");
    let url = format!("https://{}{path}", c.nodes[i].api);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert"]).arg(&ca);
    match method {
        "HEAD" => cmd.arg("-I"),
        other => cmd.args(["-X", other]),
    };
    let out = cmd.arg(&url).output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_status(c: &Cluster, i: usize, path: &str, want: &str) {
    wait_until(FORM, &format!("{} answers {want} on {path}", c.nodes[i].name), || {
        let got = status(c, i, "GET", path);
        (got == want).then_some(()).ok_or(got)
    });
}

#[test]
fn health_checks_patroni_status_metrics_list_and_dsn_answer_like_patroni() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let r = (0..3).find(|&i| i != p).unwrap();
    wait_status(&c, r, "/replica", "200");
    // Patroni 4.1.5's answers on a healthy leader and replica (tests/data), with HEAD and
    // OPTIONS exactly like GET.
    let table = include_str!("../data/patroni-4.1.5-status-codes.txt");
    for line in table.lines().filter(|l| l.contains(" GET ")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let i = if f[0] == "leader" { p } else { r };
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert_eq!(status(&c, i, method, f[2]), f[3], "{} {method} {}", c.nodes[i].name, f[2]);
        }
    }
    assert_eq!(status(&c, r, "GET", "/replica?lag=100MB"), "200");
    assert_eq!(status(&c, r, "GET", "/replica?tag_dc=nowhere"), "503", "tag filters");
    assert_eq!(status(&c, r, "GET", "/replica?lag=ten"), "400", "a bad lag is refused");
    assert_eq!(status(&c, p, "GET", "/standby-leader"), "503");
    assert_eq!(status(&c, p, "POST", "/restart"), "401", "manual actions need a client certificate");

    let leader = c.api_get(p, "/patroni").expect("GET /patroni on the primary");
    assert_eq!(leader["role"], "primary", "{leader}");
    assert_eq!(leader["state"], "running", "{leader}");
    assert!(leader["xlog"]["location"].as_u64().is_some(), "{leader}");
    assert_eq!(leader["patroni"]["scope"], crate::harness::SCOPE, "{leader}");
    assert_eq!(leader["replication"].as_array().map(Vec::len), Some(2), "{leader}");
    let replica = c.api_get(r, "/patroni").expect("GET /patroni on a replica");
    assert_eq!(replica["role"], "replica", "{replica}");
    assert_eq!(replica["replication_state"], "streaming", "{replica}");
    assert!(replica["xlog"]["received_location"].as_u64().is_some(), "{replica}");
    assert_eq!(replica["database_system_identifier"], leader["database_system_identifier"]);

    let metrics = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(c.nodes[p].tls_dir().join("ca.crt"))
        .arg(format!("https://{}/metrics", c.nodes[p].api))
        .output()
        .expect("curl runs");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("\npatroni_primary{scope=\""), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("patroni_primary{") && l.ends_with(" 1")), "{metrics}");
    assert!(metrics.contains("pgha_raft_term{"), "{metrics}");

    // `ctl list` with patronictl's JSON keys.
    let out = c.ctl(p, &["list", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).expect("list JSON");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for key in
        ["Cluster", "Member", "Host", "Role", "State", "TL", "Receive LSN", "Replay Lag", "Pending restart"]
    {
        assert!(rows.iter().all(|row| row.get(key).is_some()), "key {key} in {rows:?}");
    }
    let leaders: Vec<_> = rows.iter().filter(|row| row["Role"] == "Leader").collect();
    assert_eq!(leaders.len(), 1, "{rows:?}");
    assert_eq!(leaders[0]["Member"], c.nodes[p].name.as_str());

    // `ctl version`: the client's and every member's pgha and Postgres versions.
    let out = c.ctl(p, &["version"]);
    let text = stdout(&out);
    assert!(text.starts_with(&format!("pgha ctl version {}", pgha::VERSION)), "{}", show(&out));
    for n in &c.nodes {
        assert!(text.contains(&format!("{}: pgha {} PostgreSQL 15.", n.name, pgha::VERSION)), "{text}");
    }

    // `ctl dsn` connects, to the primary by default and to a replica when asked.
    for (args, want) in [(vec!["dsn"], "f"), (vec!["dsn", "--role", "replica"], "t")] {
        let out = c.ctl(r, &args);
        assert!(out.status.success(), "{}", show(&out));
        let dsn = stdout(&out).trim().to_string();
        let q = Command::new("/usr/bin/psql")
            .args([dsn.as_str(), "-X", "-At", "-c", "SELECT pg_is_in_recovery()"])
            .env_remove("PGPASSWORD")
            .output()
            .expect("psql runs");
        assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), want, "{args:?}: {}", show(&q));
    }
}

#[test]
fn config_changes_reach_every_node_pending_restarts_show_and_restart_applies_them() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    psql(&c, p, "CREATE ROLE it_denied LOGIN PASSWORD 'it-secret'").expect("a role");
    let out = c
        .ctl(p, &["edit-config", "--pg", "work_mem=7MB", "--pg", "max_locks_per_transaction=128", "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    for i in 0..3 {
        wait_row(&c, i, "SHOW work_mem", "7MB");
    }
    // max_locks_per_transaction needs a restart: pending on every member until restarted.
    wait_until(APPLY, "every member shows a pending restart", || {
        let out = c.ctl(p, &["list", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).map_err(|e| e.to_string())?;
        rows.iter().all(|r| r["Pending restart"] == "*").then_some(()).ok_or(format!("{rows:?}"))
    });
    let out = c.ctl(p, &["restart", "--pending", "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    for i in 0..3 {
        wait_row(&c, i, "SHOW max_locks_per_transaction", "128");
    }
    let rows = stdout(&c.ctl(p, &["list", "--format", "json"]));
    assert!(!rows.contains("\"*\""), "no pending restart left: {rows}");

    // pg_hba from the replicated config: every node refuses it_denied once it is applied.
    let connect_as_denied = |i: usize| {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=it_denied password=it-secret dbname=postgres connect_timeout=3",
            c.nodes[i].pg_port
        );
        let out = Command::new("/usr/bin/psql")
            .args([conninfo.as_str(), "-X", "-At", "-c", "SELECT 1"])
            .output()
            .expect("psql runs");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    };
    for i in 0..3 {
        wait_until(APPLY, "it_denied can log in before the change", || connect_as_denied(i));
    }
    let patch = c.root.join("hba.json");
    std::fs::write(
        &patch,
        r#"{"postgresql": {"pg_hba": [
            "host all it_denied 127.0.0.1/32 reject",
            "local all all scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256"]}}"#,
    )
    .unwrap();
    let out = c.ctl(p, &["edit-config", "--apply", patch.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    for i in 0..3 {
        wait_until(APPLY, &format!("{} rejects it_denied", c.nodes[i].name), || match connect_as_denied(i) {
            Err(e) if e.contains("pg_hba.conf rejects") => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }
    // The superuser still connects everywhere (pgha's own rules come first).
    for i in 0..3 {
        psql(&c, i, "SELECT 1").expect("the superuser still connects");
    }
}

#[test]
fn reinit_of_a_replica_reclones_it_and_it_streams_again_with_all_the_data() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let r = (0..3).find(|&i| i != p).unwrap();
    psql(&c, p, "CREATE TABLE it_t (x int); INSERT INTO it_t SELECT generate_series(1, 5000)")
        .expect("writes");
    wait_row(&c, r, "SELECT count(*) FROM it_t", "5000");
    // A file only the old data directory has.
    let marker = c.nodes[r].dir.join("pg/data/it-marker");
    std::fs::write(&marker, "old").unwrap();

    let primary_name = c.nodes[p].name.clone();
    let out = c.ctl(p, &["reinit", &primary_name, "--force"]);
    assert!(!out.status.success(), "the primary cannot be reinitialized: {}", show(&out));
    assert!(stdout(&out).contains("I am the leader"), "{}", show(&out));

    let name = c.nodes[r].name.clone();
    let out = c.ctl(p, &["reinit", &name, "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_until(FORM, "the old data directory is replaced", || {
        (!marker.exists()).then_some(()).ok_or("marker still there".to_string())
    });
    psql(&c, p, "INSERT INTO it_t VALUES (5001)").expect("a write after the reinit");
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    wait_row(&c, r, "SELECT count(*) FROM it_t", "5001");
}

/// Callbacks run with Patroni's arguments (`<action> <role> <scope>`): a replica's start, a
/// manual restart, a promotion and the old primary's stop.
#[test]
fn callbacks_receive_action_role_and_scope() {
    let mut c = Cluster::empty();
    // One log per node: the script is shared, so it writes where its node name says.
    for name in ["node1", "node2", "node3"] {
        let node_script = c.root.join(format!("cb-{name}.sh"));
        std::fs::write(
            &node_script,
            format!("#!/bin/sh\necho \"$@\" >> \"{}/cb-{name}.log\"\n", c.root.display()),
        )
        .unwrap();
        std::fs::set_permissions(&node_script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let s = node_script.display();
        c.add_node_as(
            name,
            name,
            &format!(
                "callbacks:\n  on_start: {s}\n  on_stop: {s}\n  on_restart: {s}\n  on_role_change: {s}\n"
            ),
        );
    }
    // The log files are written by the service user.
    std::fs::set_permissions(&c.root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    c.form();
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let r = (0..3).find(|&i| i != p).unwrap();
    let log = |i: usize| {
        std::fs::read_to_string(c.root.join(format!("cb-{}.log", c.nodes[i].name))).unwrap_or_default()
    };
    let wait_line = |i: usize, line: &str| {
        wait_until(APPLY, &format!("{} runs the callback {line:?}", c.nodes[i].name), || {
            let text = log(i);
            text.lines().any(|l| l == line).then_some(()).ok_or(text)
        })
    };
    let scope = crate::harness::SCOPE;
    wait_line(r, &format!("on_start replica {scope}"));
    assert!(!log(p).contains("on_start"), "no callback for the bootstrap's own start: {}", log(p));
    let name = c.nodes[r].name.clone();
    let out = c.ctl(p, &["restart", &name, "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_line(r, &format!("on_restart replica {scope}"));
    // The restarted replica streams again before it can be a switchover candidate.
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let out = c.ctl(p, &["switchover", "--candidate", &name, "--force"]);
    assert!(out.status.success(), "switchover: {}", show(&out));
    wait_line(r, &format!("on_role_change primary {scope}"));
    wait_line(p, &format!("on_stop primary {scope}"));
}

/// `watchdog.mode: required` with no working device: the member never becomes primary, says
/// why in `/patroni`, and the cluster waits for a member that may.
#[test]
fn a_member_that_requires_a_missing_watchdog_is_never_promoted() {
    let mut c = Cluster::empty();
    c.add_node("node1");
    let strict =
        c.add_node_as("node2", "node2", "watchdog:\n  mode: required\n  device: /nonexistent/watchdog\n");
    c.form();
    c.add_witness("node3");
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1], FORM);
    assert_eq!(p, 0, "node2 cannot bootstrap or take the lease without its watchdog");
    psql(&c, p, "CREATE TABLE it_t (x int); INSERT INTO it_t VALUES (1)").unwrap();
    wait_row(&c, strict, "SELECT count(*) FROM it_t", "1");
    c.kill9(p);
    wait_until(APPLY, "node2 reports the failed watchdog", || {
        let v = c.api_get(strict, "/patroni")?;
        (v["watchdog_failed"] == true).then_some(()).ok_or(v.to_string())
    });
    // Longer than the lease ttl (10 s): time enough for a wrong promotion.
    crate::postgres::never_writable(
        &c,
        &[strict],
        Duration::from_secs(15),
        "its required watchdog does not work",
    );
    c.start(p);
    let back = wait_primary_with_streaming_replicas(&c, &[0, 1], FORM);
    assert_eq!(back, 0);
}

/// `bootstrap.post_bootstrap` runs once on the new primary with a connection string (the seeds
/// create application roles that way); what it creates reaches every replica. It takes longer
/// than the lease's ttl here: the lease is renewed meanwhile, the new primary is not fenced.
#[test]
fn post_bootstrap_runs_once_on_the_new_primary() {
    let mut c = Cluster::empty();
    let script = c.root.join("post-bootstrap.sh");
    // Every node carries the script (whichever wins the initialize race bootstraps); it must
    // run once, on that node.
    let ran = c.root.join("post-bootstrap.ran");
    std::fs::write(&ran, "").unwrap();
    std::fs::set_permissions(&ran, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\n/usr/bin/psql \"$1\" -X -v ON_ERROR_STOP=1 -c 'CREATE ROLE it_app LOGIN'\nsleep 6\necho ran >> {}\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for i in 1..=3 {
        let name = format!("node{i}");
        c.add_node_as(&name, &name, &format!("bootstrap:\n  post_bootstrap: {}\n", script.display()));
    }
    c.form();
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    for i in 0..3 {
        wait_row(&c, i, "SELECT count(*) FROM pg_roles WHERE rolname = 'it_app'", "1");
    }
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n", "post_bootstrap ran exactly once");
    for i in 0..3 {
        assert!(
            !c.log_text(i).contains("Postgres exited"),
            "{} lost its Postgres meanwhile",
            c.nodes[i].name
        );
    }
}
