//! HAProxy (Debian's package) in front of a 3-node cluster, configured as the seeds configure it
//! for Patroni (`option httpchk OPTIONS /primary` for writers, `GET /replica` for readers,
//! `http-check expect status 200`), with only `check-ssl verify none` added because pgha's API
//! is HTTPS: writes through the writer port reach the primary before and after a switchover,
//! reads through the reader port reach replicas only, spread over both.

use crate::harness::{free_ports, show, wait_until, Cluster, SUPERUSER_PASSWORD};
use crate::postgres::{wait_primary_with_streaming_replicas, FORM};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HAPROXY: &str = "/usr/sbin/haproxy";

/// The HAProxy child, killed when the test ends (also on failure).
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(c: &Cluster, writer: u16, reader: u16) -> String {
    let mut text = String::from(
        "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5m\n  \
         timeout server 5m\n  timeout check 2s\n",
    );
    for (name, port, check) in [("primary", writer, "OPTIONS /primary"), ("replicas", reader, "GET /replica")]
    {
        text.push_str(&format!(
            "listen {name}\n  bind 127.0.0.1:{port}\n  balance roundrobin\n  option httpchk {check}\n  \
             http-check expect status 200\n  default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions\n"
        ));
        for n in &c.nodes {
            let api_port = n.api.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
            text.push_str(&format!(
                "  server {} 127.0.0.1:{} check port {api_port} check-ssl verify none\n",
                n.name, n.pg_port
            ));
        }
    }
    text
}

/// `(in recovery, server port)` of a new connection through HAProxy's `port`.
fn through(port: u16) -> Result<(String, u16), String> {
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3");
    let out = Command::new("/usr/bin/psql")
        .args([
            conninfo.as_str(),
            "-X",
            "-At",
            "-F",
            " ",
            "-c",
            "SELECT pg_is_in_recovery(), inet_server_port()",
        ])
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (rec, p) = text.split_once(' ').ok_or(text.clone())?;
    Ok((rec.to_string(), p.parse().map_err(|_| text.clone())?))
}

#[test]
fn haproxy_with_patroni_health_checks_sends_writes_to_the_primary_and_reads_to_replicas() {
    let c = Cluster::new(3);
    let p = wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    let ports = free_ports(2);
    let (writer, reader) = (ports[0], ports[1]);
    let cfg = c.root.join("haproxy.cfg");
    std::fs::write(&cfg, config(&c, writer, reader)).unwrap();
    let check = Command::new(HAPROXY).arg("-c").arg("-f").arg(&cfg).output().expect("haproxy runs");
    assert!(check.status.success(), "haproxy accepts the config: {}", show(&check));
    let _haproxy = Haproxy(
        Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );

    let writes_reach = |i: usize| {
        let want = c.nodes[i].pg_port;
        wait_until(FORM, &format!("the writer port reaches {}", c.nodes[i].name), || match through(writer) {
            Ok((rec, port)) if rec == "f" && port == want => Ok(()),
            other => Err(format!("{other:?}")),
        });
    };
    writes_reach(p);
    let replica_ports: BTreeSet<u16> = (0..3).filter(|&i| i != p).map(|i| c.nodes[i].pg_port).collect();
    let mut seen = BTreeSet::new();
    wait_until(FORM, "the reader port reaches both replicas and only them", || {
        let (rec, port) = through(reader)?;
        if rec != "t" || !replica_ports.contains(&port) {
            return Err(format!("a read reached port {port} (in recovery: {rec})"));
        }
        seen.insert(port);
        (seen == replica_ports).then_some(()).ok_or(format!("seen {seen:?}"))
    });

    let candidate = (0..3).find(|&i| i != p).unwrap();
    let name = c.nodes[candidate].name.clone();
    wait_until(FORM, "the candidate reports streaming", || {
        let v = c.api_get(p, "/cluster")?;
        let streaming = v["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == name.as_str() && m["state"] == "streaming"));
        streaming.then_some(()).ok_or(v.to_string())
    });
    let out = c.ctl(p, &["switchover", "--candidate", &name, "--force"]);
    eprintln!("switchover: {}", show(&out));
    wait_primary_with_streaming_replicas(&c, &[0, 1, 2], FORM);
    writes_reach(candidate);
    // Never to the old primary again, which is a replica now.
    for _ in 0..10 {
        let (rec, port) = through(writer).expect("a write connection");
        assert_eq!(
            (rec.as_str(), port),
            ("f", c.nodes[candidate].pg_port),
            "every writer lands on the new primary"
        );
    }
    wait_until(Duration::from_secs(30), "the old primary serves reads", || match through(reader) {
        Ok((_, port)) if port == c.nodes[p].pg_port => Ok(()),
        other => Err(format!("{other:?}")),
    });
}
