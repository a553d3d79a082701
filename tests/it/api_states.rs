//! The REST API on members that are not simply healthy, and the manual actions' edges: every
//! endpoint on a paused cluster and on a member whose Postgres is stopped (against
//! `tests/data/patroni-documented-states.txt`), `POST /restart` starting a stopped replica in
//! pause mode, scheduled restarts (`schedule`, `DELETE /restart`, `ctl flush`), the
//! `postgres_version` condition, and `restapi.authentication` (basic auth on top of the client
//! certificate).

use crate::harness::{show, stdout, wait_until, Cluster};
use crate::postgres::{psql, wait_primary_with_streaming_replicas, wait_row, FORM};
use std::process::Command;
use std::time::Duration;

const APPLY: Duration = Duration::from_secs(30);
const HEALTH_PATHS: [&str; 13] = [
    "/",
    "/primary",
    "/read-write",
    "/leader",
    "/standby-leader",
    "/replica",
    "/read-only",
    "/sync",
    "/async",
    "/quorum",
    "/health",
    "/liveness",
    "/readiness",
];

/// `curl` against node `i`'s API: the HTTP status and the body. `auth`: present the ctl
/// client certificate and these `-u user:password` (if any).
fn curl(
    c: &Cluster,
    i: usize,
    method: &str,
    path: &str,
    cert: bool,
    basic: Option<&str>,
) -> (String, String) {
    let tls = c.nodes[i].tls_dir();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "10", "--cacert"]).arg(tls.join("ca.crt"));
    if cert {
        cmd.arg("--cert").arg(tls.join("ctl.crt")).arg("--key").arg(tls.join("ctl.key"));
    }
    if let Some(b) = basic {
        cmd.args(["-u", b]);
    }
    match method {
        "HEAD" => cmd.arg("-I"),
        other => cmd.args(["-X", other]),
    };
    let out = cmd.arg(format!("https://{}{path}", c.nodes[i].api)).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

fn status(c: &Cluster, i: usize, method: &str, path: &str) -> String {
    curl(c, i, method, path, false, None).0
}

/// Checks node `i` against the table rows of `condition`: health paths with GET, HEAD and
/// OPTIONS, the others with GET.
fn check_table(c: &Cluster, i: usize, condition: &str) {
    let table = include_str!("../data/patroni-documented-states.txt");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&condition))
        .collect();
    assert!(!rows.is_empty(), "no rows for {condition}");
    for f in rows {
        let methods: &[&str] =
            if HEALTH_PATHS.contains(&f[1]) { &["GET", "HEAD", "OPTIONS"] } else { &["GET"] };
        for method in methods {
            assert_eq!(
                status(c, i, method, f[1]),
                f[2],
                "{condition}: {} {method} {}",
                c.nodes[i].name,
                f[1]
            );
        }
    }
}

fn postmaster_pid(c: &Cluster, i: usize) -> Option<String> {
    let pidfile = c.nodes[i].dir.join("pg/data/postmaster.pid");
    std::fs::read_to_string(pidfile).ok().and_then(|t| t.lines().next().map(str::to_string))
}

fn start_time(c: &Cluster, i: usize) -> serde_json::Value {
    c.api_get(i, "/patroni").map(|v| v["postmaster_start_time"].clone()).unwrap_or_default()
}

#[test]
fn a_paused_cluster_and_a_stopped_member_answer_like_patroni_and_restart_starts_it() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let r = (0..3).find(|&i| i != p).unwrap();
    let out = c.ctl(p, &["pause", "--wait"]);
    assert!(out.status.success(), "{}", show(&out));
    check_table(&c, p, "paused-leader");
    check_table(&c, r, "paused-replica");
    let v = c.api_get(r, "/patroni").unwrap();
    assert_eq!(v["pause"], true, "{v}");
    let (_, metrics) = curl(&c, p, "GET", "/metrics", false, None);
    assert!(
        metrics.contains("\npatroni_is_paused{") && metrics.contains("pgha_lease_seconds_left{"),
        "{metrics}"
    );
    assert!(metrics.contains("pgha_watchdog_active{"), "{metrics}");

    // Stop the replica's Postgres behind pgha's back: paused, nothing starts it again.
    let pid = postmaster_pid(&c, r).expect("the replica's postmaster.pid");
    let kill = Command::new("kill").args(["-INT", &pid]).output().expect("kill runs");
    assert!(kill.status.success(), "{}", show(&kill));
    wait_until(APPLY, "the replica reports its Postgres stopped", || {
        let v = c.api_get(r, "/patroni")?;
        (v["state"] == "stopped").then_some(()).ok_or(v.to_string())
    });
    check_table(&c, r, "stopped");
    let v = c.api_get(r, "/patroni").unwrap();
    assert_eq!((v["role"].as_str(), v["pause"].as_bool()), (Some("replica"), Some(true)), "{v}");
    assert!(v.get("xlog").is_none() && v.get("server_version").is_none(), "no Postgres facts: {v}");
    let cluster = c.api_get(p, "/cluster").unwrap();
    let row = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == c.nodes[r].name.as_str())
        .cloned();
    assert_eq!(row.as_ref().map(|m| m["state"].clone()), Some("stopped".into()), "{cluster}");

    // Actions on the stopped member: a reload has nothing to reload, a restart on a replica
    // in pause mode starts it (Patroni's restart does), a reinit of the primary is refused.
    let (code, body) = curl(&c, r, "POST", "/reload", true, None);
    assert_eq!(code, "503", "reload of a stopped Postgres: {body}");
    let (code, body) = curl(&c, p, "POST", "/reinitialize", true, None);
    assert_eq!(code, "503", "reinitialize of the primary: {body}");
    let out = c.ctl(p, &["restart", &c.nodes[r].name, "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    psql(&c, p, "CREATE TABLE it_paused (x int); INSERT INTO it_paused VALUES (7)").unwrap();
    wait_row(&c, r, "SELECT x FROM it_paused", "7");
    let out = c.ctl(p, &["resume", "--wait"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
}

#[test]
fn scheduled_restarts_version_conditions_and_basic_auth() {
    let mut c = Cluster::empty();
    for i in 1..=3 {
        let n = c.add_node(&format!("node{i}"));
        let path = c.nodes[n].config.clone();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replacen(
            "restapi:\n",
            "restapi:\n  authentication:\n    username: admin\n    password: pw1\n",
            1,
        );
        std::fs::write(&path, text).unwrap();
    }
    c.form();
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let r = (0..3).find(|&i| i != p).unwrap();
    let name = c.nodes[r].name.clone();

    // Basic auth: a changing call needs the certificate and the password; reads need neither.
    assert_eq!(curl(&c, r, "POST", "/reload", true, None).0, "401", "no basic auth");
    assert_eq!(curl(&c, r, "POST", "/reload", true, Some("admin:wrong")).0, "401", "wrong password");
    assert_eq!(curl(&c, r, "POST", "/reload", false, Some("admin:pw1")).0, "401", "no certificate");
    assert_eq!(curl(&c, r, "POST", "/reload", true, Some("admin:pw1")).0, "202");
    wait_until(APPLY, "the replica's health check without any credentials", || {
        let got = status(&c, r, "GET", "/replica");
        (got == "200").then_some(()).ok_or(got)
    });
    assert!(c.log_text(r).contains("basic auth missing or wrong"), "refusals are logged");

    // postgres_version: only members older than the given version restart.
    let out = c.ctl(p, &["restart", &name, "--pg-version", "15.0", "--force"]);
    assert!(out.status.success() && stdout(&out).contains("Skipped"), "{}", show(&out));
    let before = start_time(&c, r);
    let out = c.ctl(p, &["restart", &name, "--pg-version", "99.0", "--force"]);
    assert!(out.status.success() && stdout(&out).contains("Success"), "{}", show(&out));
    assert_ne!(start_time(&c, r), before, "restarted");
    let (code, body) = {
        let tls = c.nodes[r].tls_dir();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(tls.join("ca.crt"))
            .arg("--cert")
            .arg(tls.join("ctl.crt"))
            .arg("--key")
            .arg(tls.join("ctl.key"))
            .args(["-u", "admin:pw1", "-X", "POST", "-d", r#"{"postgres_version": "fifteen"}"#])
            .arg(format!("https://{}/restart", c.nodes[r].api))
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        let (b, code) = t.rsplit_once('\n').map(|(b, c)| (b.to_string(), c.to_string())).unwrap_or_default();
        (code, b)
    };
    assert_eq!(code, "400", "a bad version is refused: {body}");
    assert!(body.contains("postgres_version"), "{body}");

    // A restart scheduled a few seconds ahead: shown, exclusive, then carried out and cleared.
    let before = start_time(&c, r);
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let at = at.format(&time::format_description::well_known::Rfc3339).unwrap();
    let out = c.ctl(p, &["restart", &name, "--scheduled", &at, "--force"]);
    assert!(out.status.success() && stdout(&out).contains("Restart scheduled"), "{}", show(&out));
    let v = c.api_get(r, "/patroni").unwrap();
    assert!(v["scheduled_restart"]["schedule"].is_string(), "{v}");
    let out = c.ctl(p, &["list"]);
    assert!(stdout(&out).contains("Scheduled restart"), "{}", show(&out));
    let out = c.ctl(p, &["restart", &name, "--scheduled", &at, "--force"]);
    assert!(
        !out.status.success() && stdout(&out).contains("already has a restart scheduled"),
        "{}",
        show(&out)
    );
    wait_until(APPLY, "the scheduled restart ran", || {
        let v = c.api_get(r, "/patroni")?;
        let done = v.get("scheduled_restart").is_none()
            && v["state"] == "running"
            && v["postmaster_start_time"] != before;
        done.then_some(()).ok_or(v.to_string())
    });

    // In the past: refused; far ahead: cancelled with `ctl flush`; nothing left: 404.
    let past = "2020-01-01T00:00:00+00:00";
    let out = c.ctl(p, &["restart", &name, "--scheduled", past, "--force"]);
    assert!(!out.status.success() && stdout(&out).contains("in the past"), "{}", show(&out));
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later.format(&time::format_description::well_known::Rfc3339).unwrap();
    let out = c.ctl(p, &["restart", &name, "--scheduled", &later, "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = c.ctl(p, &["flush", &name, "restart", "--force"]);
    assert!(out.status.success() && stdout(&out).contains("scheduled restart deleted"), "{}", show(&out));
    assert!(c.api_get(r, "/patroni").unwrap().get("scheduled_restart").is_none());
    assert_eq!(curl(&c, r, "DELETE", "/restart", true, Some("admin:pw1")).0, "404");
}

/// `pgha ctl` as an operator uses it: `topology` and `list` as tables, through another member
/// when its own node is down, and a `failover` to a named replica recorded in `history`
/// (table and JSON).
#[test]
fn ctl_reaches_another_member_when_its_node_is_down_and_fails_over_on_request() {
    let mut c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let mut replicas = (0..3).filter(|&i| i != p);
    let (r, q) = (replicas.next().unwrap(), replicas.next().unwrap());

    let out = c.ctl(p, &["topology"]);
    let text = stdout(&out);
    assert!(
        out.status.success() && text.contains(&format!("Cluster: {}", crate::harness::SCOPE)),
        "{}",
        show(&out)
    );
    for i in [r, q] {
        assert!(text.contains(&format!("+ {}", c.nodes[i].name)), "replicas under the leader: {text}");
    }

    // q's own API is gone: ctl with q's config still answers, through a member it knows.
    c.stop(q);
    let out = c.ctl(q, &["list", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).expect("list JSON");
    assert_eq!(rows.len(), 3, "{rows:?}");

    let out = c.ctl(q, &["failover", "--candidate", &c.nodes[r].name, "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_primary_with_streaming_replicas(&c, &[p, r], FORM);
    assert_eq!(crate::postgres::roles(&c, &[r]), vec!["primary".to_string()], "the named candidate leads");
    let out = c.ctl(p, &["history", "--format", "json"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).expect("history JSON");
    assert_eq!(history.last().map(|h| h[4].clone()), Some(c.nodes[r].name.as_str().into()), "{history:?}");
    let out = c.ctl(p, &["history"]);
    assert!(stdout(&out).contains("New Leader") && stdout(&out).contains(&c.nodes[r].name), "{}", show(&out));
    c.start(q);
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
}
