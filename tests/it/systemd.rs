//! `pgha run` as `pgha.service` (Type=notify) sees it, without systemd: the service manager's
//! socket is an abstract unix socket of the test, `WATCHDOG_USEC` asks for pings, and
//! `JOURNAL_STREAM` names the node's log file as the journal. The node must say READY=1,
//! ping the watchdog, keep its Postgres from inheriting the socket, apply a reload (SIGHUP) of
//! what can change at run time and name what needs a restart, survive a broken file on
//! reload, and say STOPPING=1 on SIGTERM.

use crate::harness::{wait_until, Cluster};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The service manager's side: every datagram received so far.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn new(name: &str) -> Manager {
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .expect("bind an abstract notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Manager { socket, seen: Vec::new() }
    }

    /// Waits until a message after position `from` satisfies `want`; returns its position.
    fn wait_for(&mut self, from: usize, what: &str, want: impl Fn(&str) -> bool) -> usize {
        wait_until(Duration::from_secs(60), what, || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = self.socket.recv(&mut buf) {
                self.seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            match self.seen.iter().skip(from).position(|m| want(m)) {
                Some(i) => Ok(from + i),
                None => Err(format!("{:?}", self.seen)),
            }
        })
    }
}

#[test]
fn under_systemd_the_node_notifies_reloads_and_logs_for_the_journal() {
    let mut c = Cluster::empty();
    let n = c.add_node("node1");
    c.init(n);
    let name = format!("pgha-it-notify-{}", std::process::id());
    let mut manager = Manager::new(&name);
    // The log file is the node's stderr: call it the journal.
    std::fs::write(&c.nodes[n].log, b"").unwrap();
    let meta = std::fs::metadata(&c.nodes[n].log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let socket = format!("@{name}");
    let env = [("NOTIFY_SOCKET", socket.as_str()), ("WATCHDOG_USEC", "1000000"), ("JOURNAL_STREAM", &stream)];
    c.start_env(n, &[], &env);

    let ready = manager.wait_for(0, "READY=1", |m| m.starts_with("READY=1"));
    let pings = manager.wait_for(ready, "a watchdog ping", |m| m == "WATCHDOG=1");
    manager.wait_for(pings + 1, "a second watchdog ping", |m| m == "WATCHDOG=1");

    // Postgres runs without systemd's variables (it would send its own READY/STOPPING).
    let pid_file = c.nodes[n].dir.join("pg/data/postmaster.pid");
    let environ = wait_until(Duration::from_secs(60), "the postmaster runs", || {
        let text = std::fs::read_to_string(&pid_file).map_err(|e| e.to_string())?;
        let pid = text.lines().next().unwrap_or("").trim().to_owned();
        std::fs::read(format!("/proc/{pid}/environ")).map_err(|e| format!("pid {pid}: {e}"))
    });
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("NOTIFY_SOCKET"), "the postmaster inherited NOTIFY_SOCKET");
    assert!(!environ.contains("WATCHDOG_USEC"), "the postmaster inherited WATCHDOG_USEC");
    manager.wait_for(ready, "a STATUS with the HA decision", |m| {
        m.starts_with("STATUS=") && m.contains("lease")
    });

    // Journal lines: a syslog priority first, no timestamp (the journal adds its own).
    let log = c.log_text(n);
    let started = log.lines().find(|l| l.contains("running")).unwrap_or_else(|| panic!("{log}"));
    assert!(started.starts_with("<6>"), "{started}");
    assert!(!started[3..].trim_start().starts_with(|c: char| c.is_ascii_digit()), "a timestamp: {started}");

    // A reload: log.level applies, tags.nofailover waits for a restart.
    let config = std::fs::read_to_string(&c.nodes[n].config).unwrap();
    std::fs::write(&c.nodes[n].config, format!("{config}log:\n  level: debug\ntags:\n  nofailover: true\n"))
        .unwrap();
    let before = manager.seen.len();
    c.sighup(n);
    let reloading =
        manager.wait_for(before, "RELOADING=1", |m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="));
    manager.wait_for(reloading, "READY=1 after the reload", |m| {
        m.starts_with("READY=1") && m.contains("waiting for a restart: tags.nofailover")
    });
    let log = c.log_text(n);
    assert!(
        log.lines().any(|l| l.starts_with("<6>") && l.contains("reload: applied") && l.contains("log.level")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("<4>") && l.contains("tags.nofailover") && l.contains("restart")),
        "{log}"
    );

    // A broken file changes nothing and stops nothing.
    std::fs::write(&c.nodes[n].config, format!("{config}bogus_key: 1\n")).unwrap();
    let before = manager.seen.len();
    c.sighup(n);
    manager.wait_for(before, "READY=1 after a failed reload", |m| {
        m.starts_with("READY=1") && m.contains("failed")
    });
    let log = c.log_text(n);
    // Every line of the multi-line error keeps its priority.
    assert!(log.lines().any(|l| l.starts_with("<3>") && l.contains("unknown field `bogus_key`")), "{log}");
    assert!(log.lines().any(|l| l.starts_with("<3>") && l.contains("nothing changed")), "{log}");
    assert!(c.is_running(n), "a bad file on reload must not stop the node");

    // log.file: a reload moves logging there (and a later one reopens it, for logrotate).
    let dir = c.root.join("logs");
    std::fs::create_dir(&dir).unwrap();
    let user = pgha::sys::user::ServiceUser::lookup(&c.user).unwrap();
    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    let file = dir.join("pgha.log");
    std::fs::write(&c.nodes[n].config, format!("{config}log:\n  file: {}\n", file.display())).unwrap();
    let before = manager.seen.len();
    c.sighup(n);
    manager.wait_for(before, "READY=1 after moving the log", |m| m.starts_with("READY=1"));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(text.contains("reload: applied") && text.contains("log.file"), "{text}");
    assert!(text.lines().all(|l| !l.starts_with('<')), "no journal priorities in a file: {text}");

    let before = manager.seen.len();
    assert!(c.stop(n).success(), "{}", c.log_text(n));
    manager.wait_for(before, "STOPPING=1", |m| m.starts_with("STOPPING=1"));
}
