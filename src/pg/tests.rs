//! The `pg` building blocks against real PostgreSQL 15, in the order the HA loop uses them:
//! bootstrap, roles, probe, clone, stream, promote, rewind and follow, stop and kill, a
//! leftover postmaster, and the spawner's parent-death signal. Each test builds its own
//! [`Lab`] on free ports under /tmp; every Postgres is stopped by pid (or SIGKILLed by its
//! owner's drop when a test fails).

use crate::pg::child::{group_alive, ProcStat};
use crate::pg::controldata::ClusterState;
use crate::pg::leftover::{stop_leftover, Leftover};
use crate::pg::process::{Postmaster, StopMode};
use crate::pg::roles::RoleKind;
use crate::pg::session::Session;
use crate::pg::slots::slot_name;
use crate::pg::spawner::{self, Spawner};
use crate::pg::testkit::*;
use crate::pg::PgError;
use crate::types::{Lsn, Timeline};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// initdb, pgha's configuration, start: a primary with pgha's roles.
async fn bootstrap(lab: &Lab, name: &str) -> Node {
    let mut node = lab.node(name);
    let su = &node.superuser;
    lab.tools.initdb(&node.data, &su.username, su.password.as_deref().unwrap(), TOOL).await.unwrap();
    node.write_config(None);
    node.start().await;
    let s = node.session().await;
    for (role, kind) in [(&node.replication, RoleKind::Replication), (&node.rewind, RoleKind::Rewind)] {
        s.create_role(&role.username, role.password.as_deref(), kind).await.unwrap();
    }
    node
}

async fn count(s: &Session, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    s.client().query_one(sql.as_str(), &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_bootstrapped_primary_reports_itself_and_its_roles_log_in() {
    let lab = Lab::new("primary");
    let mut n1 = bootstrap(&lab, "n1").await;
    assert!(n1.data.is_initialized());
    let s = n1.session().await;

    let p = s.probe().await.unwrap();
    assert!(!p.in_recovery, "{p:?}");
    assert_eq!(p.timeline, Timeline(1));
    assert!(p.wal_lsn.unwrap() > Lsn(0), "{p:?}");
    assert_eq!(p.wal_position(), p.wal_lsn);
    assert_eq!((p.receive_lsn, p.replay_lsn, p.wal_receiver.as_ref()), (None, None, None), "{p:?}");
    assert!((150000..160000).contains(&p.server_version), "{p:?}");
    assert!(p.replication.is_empty() && !p.needs_restart() && !p.wal_replay_paused, "{p:?}");
    for (name, want) in
        [("data_checksums", "on"), ("ssl", "on"), ("wal_log_hints", "on"), ("cluster_name", SCOPE)]
    {
        assert_eq!(s.show(name).await.unwrap(), want, "{name}");
    }
    assert_eq!(s.show("port").await.unwrap(), n1.port.to_string());
    let control = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap();
    assert_eq!(control.system_identifier, p.system_identifier);
    assert_eq!(control.state, ClusterState::InProduction);

    // Roles are idempotent, and scram logins work with the (quote-laden) passwords.
    let su = &n1.superuser;
    s.create_role(&su.username, su.password.as_deref(), RoleKind::Superuser).await.unwrap();
    s.create_role(&n1.rewind.username, n1.rewind.password.as_deref(), RoleKind::Rewind).await.unwrap();
    let repl = n1.connect.as_user(&n1.replication).connect().await.unwrap();
    assert_eq!(repl.show("is_superuser").await.unwrap(), "off");
    let rewind = n1.connect.as_user(&n1.rewind).connect().await.unwrap();
    assert_eq!(rewind.show("is_superuser").await.unwrap(), "off");
    let mut wrong = n1.replication.clone();
    wrong.password = Some("wrong".into());
    let err = n1.connect.as_user(&wrong).connect().await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
    // With every statement logged, the one carrying a password still is not.
    s.execute("log all", "ALTER SYSTEM SET log_statement = 'all'").await.unwrap();
    s.reload().await.unwrap();
    let other = n1.session().await;
    wait_until("log_statement = all", Duration::from_secs(10), || async {
        let value = other.show("log_statement").await.unwrap();
        if value == "all" {
            Ok(())
        } else {
            Err(value)
        }
    })
    .await;
    other.create_role("app", Some("marker-secret-42"), RoleKind::Rewind).await.unwrap();
    // create_role quieted `other` for good; a new session is logged again.
    n1.session().await.execute("marker", "SELECT 'marker-logged-42'").await.unwrap();
    let log = wait_until("statements logged", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&n1.log_file).unwrap();
        if log.contains("marker-logged-42") {
            Ok(log)
        } else {
            Err(log.len())
        }
    })
    .await;
    assert!(!log.contains("marker-secret-42") && !log.contains("rep'l"), "{log}");
    s.execute("log default", "ALTER SYSTEM RESET log_statement").await.unwrap();
    drop(other);

    // Slots: created once, dropped when no longer wanted.
    let wanted = vec!["n2".to_owned(), "n3".to_owned()];
    assert_eq!(s.ensure_physical_slots(&wanted).await.unwrap(), wanted);
    assert!(s.ensure_physical_slots(&wanted).await.unwrap().is_empty());
    assert!(s.ensure_physical_slots(&["Bad-Name".to_owned()]).await.is_err());
    assert_eq!(s.drop_slots_except(&wanted[..1]).await.unwrap(), vec!["n3".to_owned()]);
    assert_eq!(s.drop_slots_except(&[]).await.unwrap(), vec!["n2".to_owned()]);

    // A query error carries Postgres's own message and SQLSTATE (not just "db error").
    let err = s.promote(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("55000"), "{err}");
    assert!(err.to_string().contains("recovery is not in progress"), "{err}");

    // A parameter that needs a restart shows as pending after a reload.
    let mut local = std::fs::read_to_string(n1.data.file("pgha.conf")).unwrap();
    local = local.replace("shared_buffers = '16MB'", "shared_buffers = '24MB'");
    n1.data.write_file("pgha.conf", &local).unwrap();
    s.reload().await.unwrap();
    let pending = wait_until("pending restart", Duration::from_secs(10), || async {
        let p = s.probe().await.unwrap();
        if p.needs_restart() {
            Ok(p.pending_restart)
        } else {
            Err(p.pending_restart)
        }
    })
    .await;
    assert_eq!(pending, vec!["shared_buffers".to_owned()]);

    drop((s, repl, rewind));
    let stopped = n1.stop(StopMode::Fast).await;
    assert!(stopped.status.success() && !stopped.killed, "{stopped:?}");
    let control = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap();
    assert_eq!(control.state, ClusterState::ShutDown);
    assert_eq!(control.timeline, Timeline(1));
    assert!(control.data_checksums && control.wal_log_hints, "{control:?}");
    assert!(control.checkpoint_lsn >= p.wal_lsn.unwrap());
}

#[tokio::test]
async fn a_clone_streams_is_promoted_and_the_old_primary_is_rewound_to_follow_it() {
    let lab = Lab::new("failover");
    let mut n1 = bootstrap(&lab, "n1").await;
    let mut n2 = lab.node("n2");
    let s1 = n1.session().await;
    s1.ensure_physical_slots(&[slot_name(&n2.name)]).await.unwrap();
    s1.execute("setup", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();

    // Clone over TLS as the replication role, start as a standby of n1 through its slot.
    let source = n2.primary_conninfo(&n1);
    lab.tools.clone_from(&n2.data, &source, n2.replication.password.as_deref(), TOOL).await.unwrap();
    assert!(!lab.dir.join("n2/.pgha-clone.data").exists());
    n2.write_config(Some(&n1));
    n2.start().await;
    let s2 = n2.session().await;
    let p2 = wait_until("n2 streams", Duration::from_secs(20), || async {
        let p = s2.probe().await.unwrap();
        match &p.wal_receiver {
            Some(r) if r.status == "streaming" && p.receive_lsn.is_some() => Ok(p),
            _ => Err(p),
        }
    })
    .await;
    assert!(p2.in_recovery && p2.wal_lsn.is_none() && p2.replay_lsn.is_some(), "{p2:?}");
    assert_eq!(p2.timeline, Timeline(1));
    let receiver = p2.wal_receiver.as_ref().unwrap();
    assert_eq!((receiver.sender_port, receiver.slot_name.as_deref()), (Some(n1.port), Some("n2")), "{p2:?}");
    let p1 = wait_until("n1 sees n2", Duration::from_secs(10), || async {
        let p = s1.probe().await.unwrap();
        match p.replication.iter().find(|r| r.application_name == "n2") {
            Some(r) if r.state.as_deref() == Some("streaming") => Ok(p),
            _ => Err(p),
        }
    })
    .await;
    let row = &p1.replication[0];
    assert_eq!(row.usename.as_deref(), Some("replicator"));
    assert_eq!(row.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.sync_state.as_deref(), Some("async"));
    assert_eq!(p1.system_identifier, p2.system_identifier);
    s1.execute("streamed rows", "INSERT INTO t SELECT generate_series(1, 50)").await.unwrap();
    wait_until("rows reach n2", Duration::from_secs(10), || async {
        let n = count(&s2, "t").await;
        if n == 150 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    let p2 = s2.probe().await.unwrap();
    assert!(p2.replay_timestamp.is_some() && !p2.wal_replay_paused, "{p2:?}");
    assert!(p2.wal_position() >= p2.replay_lsn, "{p2:?}");
    s2.execute("pause", "SELECT pg_wal_replay_pause()").await.unwrap();
    wait_until("replay paused", Duration::from_secs(10), || async {
        let p = s2.probe().await.unwrap();
        if p.wal_replay_paused {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    s2.execute("resume", "SELECT pg_wal_replay_resume()").await.unwrap();

    // Failover: n2 is promoted to timeline 2 while n1 still writes on timeline 1 (diverges).
    s2.promote(Duration::from_secs(20)).await.unwrap();
    let p2 = s2.probe().await.unwrap();
    assert!(!p2.in_recovery && p2.wal_receiver.is_none(), "{p2:?}");
    assert_eq!(p2.timeline, Timeline(2));
    s2.execute("write on n2", "INSERT INTO t VALUES (200)").await.unwrap();
    s1.execute("write on n1", "INSERT INTO t VALUES (-1)").await.unwrap();
    drop(s1);
    n1.stop(StopMode::Fast).await;

    // Rewind n1 from n2 (as the rewind role, over TLS) and let it follow n2. pg_rewind reads
    // the source's timeline from its control file, which names timeline 2 only after the
    // first checkpoint since the promotion; Postgres requests one when it promotes but runs
    // it in the background, so an explicit CHECKPOINT removes the race.
    s2.checkpoint(Duration::from_secs(30)).await.unwrap();
    s2.ensure_physical_slots(&[slot_name(&n1.name)]).await.unwrap();
    let source = n1.rewind_conninfo(&n2);
    lab.tools.rewind(&n1.data, &source, n1.rewind.password.as_deref(), TOOL).await.unwrap();
    n1.write_config(Some(&n2));
    n1.start().await;
    let s1 = n1.session().await;
    let p1 = wait_until("n1 follows n2", Duration::from_secs(20), || async {
        let p = s1.probe().await.unwrap();
        match &p.wal_receiver {
            Some(r) if r.status == "streaming" && p.timeline == Timeline(2) => Ok(p),
            _ => Err(p),
        }
    })
    .await;
    assert!(p1.in_recovery, "{p1:?}");
    wait_until("n2 sees n1", Duration::from_secs(10), || async {
        let p = s2.probe().await.unwrap();
        match p
            .replication
            .iter()
            .any(|r| r.application_name == "n1" && r.state.as_deref() == Some("streaming"))
        {
            true => Ok(()),
            false => Err(p.replication),
        }
    })
    .await;
    // n1 lost its diverged write and has n2's.
    s2.execute("write on n2", "INSERT INTO t VALUES (201)").await.unwrap();
    let rows = wait_until("n2's rows reach n1", Duration::from_secs(10), || async {
        let rows =
            s1.client().query("SELECT id FROM t WHERE id < 1 OR id > 100 ORDER BY id", &[]).await.unwrap();
        let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        if ids.len() == 2 {
            Ok(ids)
        } else {
            Err(ids)
        }
    })
    .await;
    assert_eq!(rows, vec![200, 201]);

    drop((s1, s2));
    n1.stop(StopMode::Fast).await;
    n2.stop(StopMode::Fast).await;
    let control = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap();
    assert_eq!((control.state, control.timeline), (ClusterState::ShutDownInRecovery, Timeline(2)));
}

#[tokio::test]
async fn stops_are_confirmed_by_waitpid_and_escalate_to_sigkill() {
    let lab = Lab::new("stop");
    let mut n1 = lab.node("n1");
    let su = n1.superuser.clone();
    lab.tools.initdb(&n1.data, &su.username, su.password.as_deref().unwrap(), TOOL).await.unwrap();
    n1.write_config(None);

    // A taken port: the start fails with the server's own words and a hint.
    let taken = std::net::TcpListener::bind(("127.0.0.1", n1.port)).unwrap();
    let err =
        Postmaster::start(&lab.tools, n1.data.path(), &n1.log_file, &n1.connect, START).await.unwrap_err();
    assert!(matches!(err, PgError::StartFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("Address already in use") && text.contains("is taken"), "{text}");
    drop(taken);

    // Smart waits for clients: with one connected it is escalated to SIGKILL of the group.
    n1.start().await;
    let pid = n1.postmaster.as_ref().unwrap().pid();
    assert_eq!(ProcStat::read(pid as i32).unwrap().pgrp, pid as i32, "the postmaster leads its group");
    let s = n1.session().await;
    let mut pm = n1.postmaster.take().unwrap();
    let stopped = pm.stop(StopMode::Smart, Duration::from_secs(1)).await.unwrap();
    assert!(stopped.killed && stopped.status.signal() == Some(9), "{stopped:?}");
    assert!(!group_alive(pid as i32));
    drop(s);

    // Fast disconnects clients and exits cleanly.
    n1.start().await;
    let pid = n1.postmaster.as_ref().unwrap().pid();
    let s = n1.session().await;
    let stopped = n1.stop(StopMode::Fast).await;
    assert!(stopped.status.success() && !stopped.killed, "{stopped:?}");
    assert!(!group_alive(pid as i32));
    assert!(s.probe().await.is_err());

    // Immediate leaves a data directory that needs crash recovery.
    n1.start().await;
    let stopped = n1.stop(StopMode::Immediate).await;
    assert!(!stopped.killed, "{stopped:?}");
    let control = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap();
    assert_eq!(control.state, ClusterState::InProduction);
    assert!(!control.state.is_clean_shutdown());

    // A crash is noticed by try_wait; stop then only confirms that the backends are gone.
    n1.start().await;
    let mut pm = n1.postmaster.take().unwrap();
    let pid = pm.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let status = wait_until("crash noticed", Duration::from_secs(5), || {
        let found = pm.try_wait().unwrap();
        async move { found.ok_or("running") }
    })
    .await;
    assert_eq!(status.signal(), Some(9));
    let stopped = pm.stop(StopMode::Fast, STOP).await.unwrap();
    assert_eq!(stopped.status, status);
    assert!(!group_alive(pid as i32));

    // kill() is the fencer's way: the whole group at once.
    n1.start().await;
    let mut pm = n1.postmaster.take().unwrap();
    let pid = pm.pid();
    let stopped = pm.kill().await.unwrap();
    assert!(stopped.killed && stopped.status.signal() == Some(9), "{stopped:?}");
    assert!(!group_alive(pid as i32));
}

#[tokio::test]
async fn a_killed_primary_is_crash_recovered_to_a_clean_shutdown_at_the_end_of_its_wal() {
    let lab = Lab::new("recover");
    let mut n1 = bootstrap(&lab, "n1").await;
    let s = n1.session().await;
    s.execute("a write", "CREATE TABLE t AS SELECT generate_series(1, 1000) AS x").await.unwrap();
    let written = s.probe().await.unwrap().wal_lsn.unwrap();
    drop(s);
    n1.postmaster.take().unwrap().kill().await.unwrap();
    let before = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap();
    assert_eq!(before.state, ClusterState::InProduction);
    assert!(before.checkpoint_lsn < written, "the last checkpoint precedes the write");

    lab.tools.crash_recover(n1.data.path(), TOOL).await.unwrap();
    let after = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap();
    assert_eq!(after.state, ClusterState::ShutDown, "{after:?}");
    assert!(after.checkpoint_lsn >= written, "{} is at or past {written}", after.checkpoint_lsn);
    n1.start().await;
    assert_eq!(count(&n1.session().await, "t").await, 1000);
    n1.stop(StopMode::Fast).await;
}

#[tokio::test]
async fn a_postmaster_left_by_an_earlier_pgha_is_found_and_stopped() {
    let lab = Lab::new("leftover");
    let mut n1 = lab.node("n1");
    let su = n1.superuser.clone();
    lab.tools.initdb(&n1.data, &su.username, su.password.as_deref().unwrap(), TOOL).await.unwrap();
    n1.write_config(None);
    assert_eq!(stop_leftover(n1.data.path(), STOP).await.unwrap(), Leftover::None);

    n1.start().await;
    let pid = n1.postmaster.take().unwrap().abandon();
    let found = stop_leftover(n1.data.path(), STOP).await.unwrap();
    assert_eq!(found, Leftover::Stopped { pid, mode: Some(StopMode::Fast) });
    assert!(!group_alive(pid as i32));
    // It was our own child in this test: reap it.
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
    assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "{status:?}");
    assert_eq!(stop_leftover(n1.data.path(), STOP).await.unwrap(), Leftover::None);

    // A postmaster.pid naming a live process that is not our postmaster is stale.
    let me = std::process::id();
    let text = format!("{me}\n{}\n1764090000\n{}\n", n1.data.path().display(), n1.port);
    n1.data.write_file("postmaster.pid", &text).unwrap();
    assert_eq!(stop_leftover(n1.data.path(), STOP).await.unwrap(), Leftover::StaleRemoved { pid: me });
    assert!(!n1.data.file("postmaster.pid").exists());
    // One naming a process that is gone is left to Postgres, which ignores it.
    n1.data.write_file("postmaster.pid", &text.replacen(&me.to_string(), "4194304", 1)).unwrap();
    assert_eq!(stop_leftover(n1.data.path(), STOP).await.unwrap(), Leftover::None);
    n1.start().await;
    n1.stop(StopMode::Fast).await;
}

/// The parent-death signal is set after the switch to the service user (which would clear
/// it) and follows the spawner *thread*: when the thread ends, its children are SIGKILLed.
/// That is exactly what protects a postmaster if pgha dies, and why spawns must come from a
/// thread that lives as long as pgha.
#[tokio::test]
async fn children_die_with_the_spawner_thread_and_run_as_the_service_user() {
    let user = service_user();
    let spawner = Spawner::start().unwrap();
    let mut command = spawner::command("sleep");
    command.arg("60");
    let mut child = spawner.spawn(command, &user, "sleep 60".into()).await.unwrap();
    let pid = child.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_owned();
    assert_eq!(uid_line.split_whitespace().nth(1), Some(user.uid.to_string().as_str()), "{status}");
    assert_eq!(ProcStat::read(pid as i32).unwrap().pgrp, pid as i32, "its own process group");
    assert_eq!(child.wait_for(Duration::from_millis(200)).await.unwrap(), None, "it runs");

    drop(spawner);
    let status = child.wait_for(Duration::from_secs(5)).await.unwrap().expect("killed with the thread");
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

#[tokio::test]
async fn tool_failures_and_timeouts_carry_the_command_and_its_output() {
    let lab = Lab::new("tools");
    let n1 = lab.node("n1");
    n1.data.create_private().unwrap();
    let err = lab.tools.controldata(n1.data.path(), TOOL).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PgError::ToolFailed { .. }), "{text}");
    assert!(text.contains("pg_controldata -D") && text.contains("global/pg_control"), "{text}");

    // A server that accepts and never answers: the deadline kills pg_basebackup.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let n2 = lab.node("n2");
    let mut source = n2.primary_conninfo(&n1);
    source = source.set("port", port.to_string());
    let err = lab.tools.clone_from(&n2.data, &source, Some("pw"), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, PgError::ToolTimedOut { .. }), "{err}");
    assert!(!lab.dir.join("n2/.pgha-clone.data").exists());
    hold.abort();
    let _ = hold.await;

    // Refused: pg_basebackup's own words, and no password on the command line.
    let err = lab.tools.clone_from(&n2.data, &source, Some("pw"), TOOL).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PgError::ToolFailed { .. }), "{text}");
    assert!(text.contains("pg_basebackup") && text.contains("Connection refused"), "{text}");
    assert!(!text.contains("password="), "{text}");
    let err = lab.tools.initdb(&n1.data, "postgres", "pw", TOOL).await;
    assert!(err.is_ok(), "an empty private directory is fine for initdb: {err:?}");
    let err = lab.tools.initdb(&n1.data, "postgres", "pw", TOOL).await.unwrap_err();
    assert!(matches!(err, PgError::DataDirNotEmpty { .. }), "{err}");
}
