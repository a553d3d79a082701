//! A pgha cluster on the test network ([`Net`]): one node per namespace, each a real `pgha run`
//! child (entered into its namespace before `exec`, so the PID held is pgha's) with its own
//! Postgres 15, at the default ports on its own address. `pgha ctl` and `psql` run in the
//! client namespace, as an application on another machine would.
//!
//! `Drop` kills every `pgha run` still running (SIGKILL to its PID, then `wait`), then any
//! postmaster still named in a node's `postmaster.pid` whose command line names that node's data
//! directory (pgha's fencer should have killed it already; this is the belt to its braces), prints
//! the tail of each node's log when the test is failing, removes the temp dir (kept with
//! `PGHA_FAULT_KEEP=1`) and then the namespaces.

use crate::harness::{self, parse_members, pause, summary, wait_until, MemberRow};
use crate::net::{self, node_addr, Net};
use crate::relay::Relay;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const PG_PORT: u16 = 5432;
pub const PROXY_PORT: u16 = 5000;
const API_PORT: u16 = 8008;
const RAFT_PORT: u16 = 5010;
pub const SUPERUSER_PASSWORD: &str = "fault-superuser-pw";
const PSQL: &str = "/usr/bin/psql";
/// Debian's libfaketime (package `libfaketime`), the thread-safe variant.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const LOG_TAIL_LINES: usize = 30;
/// Raft settling after a join or restart.
pub const SETTLE: Duration = Duration::from_secs(60);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Special settings of the first node (the one that bootstraps, so the first primary).
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstNode {
    /// See [`Node::pg_fs_mb`].
    pub pg_fs_mb: Option<u64>,
    /// See [`Node::raft_fs_mb`].
    pub raft_fs_mb: Option<u64>,
    /// See [`Node::faketime`].
    pub faketime: bool,
    /// Not the first node's alone: every node advertises its relay address (`net::relay_addr`)
    /// as its connect addresses, so all traffic between nodes passes a delay relay
    /// ([`NetCluster::relay`]).
    pub relayed: bool,
}

pub struct Node {
    pub name: String,
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub witness: bool,
    /// The node's `pg` directory is a tmpfs of this many MiB in a mount namespace of the node's
    /// own (made by `unshare` at each start, gone with its last process), so a disk can fill up
    /// without touching the host's filesystems. Its files are reached through
    /// `/proc/<pgha pid>/root` ([`NetCluster::node_path`]); a restart starts from an empty
    /// directory.
    pub pg_fs_mb: Option<u64>,
    /// The node's processes (pgha and its Postgres) run with libfaketime preloaded, reading
    /// their wall-clock offset from this file (e.g. `-5m`, re-read every second); the
    /// monotonic and boot clocks stay real. See [`NetCluster::set_wall_offset`].
    pub faketime: Option<PathBuf>,
    /// The node's Raft directory is a tmpfs of this many MiB (a copy of what `init`/`join`
    /// wrote), in a mount namespace kept by a holder process (`sleep`) that lives across
    /// restarts of pgha, which enters it with `nsenter`; see [`NetCluster::node_path`].
    pub raft_fs_mb: Option<u64>,
    holder: Option<Child>,
    /// Removed from the cluster ([`NetCluster::forget`]): no longer checked.
    pub removed: bool,
    child: Option<Child>,
}

impl Node {
    pub fn config_str(&self) -> &str {
        self.config.to_str().expect("temp paths are UTF-8")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pg/data")
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.dir.join("raft")
    }
}

pub struct NetCluster {
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    user: String,
    /// With [`FirstNode::relayed`]: the relay between the nodes (its delay starts at 0).
    pub relay: Option<Relay>,
    // Last field: dropped after `Drop::drop` has killed every process in the namespaces.
    pub net: Net,
}

impl NetCluster {
    /// `data` data nodes and `witnesses` witnesses, formed as an operator would (init on the
    /// first, join the others one by one), returned once all are voters in step. With
    /// `first_pg_fs_mb`, the first node's `pg` directory (data dir and WAL) is a tmpfs of that
    /// size (see [`Node::pg_fs_mb`]), and so on for the other [`FirstNode`] settings.
    pub fn new(data: usize, witnesses: usize, first: FirstNode) -> NetCluster {
        let net = Net::new(data + witnesses);
        let test: String =
            std::thread::current().name().unwrap_or("test").replace("::", "-").chars().take(20).collect();
        let root = std::env::temp_dir().join(format!(
            "pgha-fault-{}-{}-{test}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the test's temp dir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
        let relay = first.relayed.then(|| {
            let mut routes = Vec::new();
            for i in 0..data + witnesses {
                net.add_switch_addr(&net::relay_addr(i));
                for port in [API_PORT, RAFT_PORT, PG_PORT] {
                    let at = |a: String| format!("{a}:{port}").parse().expect("a socket address");
                    routes.push((at(net::relay_addr(i)), at(node_addr(i))));
                }
            }
            Relay::start(&net.switch(), routes)
        });
        let mut c = NetCluster { root, nodes: Vec::new(), user: harness::service_user(), relay, net };
        for i in 0..data + witnesses {
            c.write_config(i, i >= data);
        }
        c.nodes[0].pg_fs_mb = first.pg_fs_mb;
        c.nodes[0].raft_fs_mb = first.raft_fs_mb;
        if first.faketime {
            c.nodes[0].faketime = Some(c.root.join("node1.faketime"));
        }
        let token = c.init(0);
        c.start(0);
        c.wait_leader();
        for i in 1..c.nodes.len() {
            let token = if i == 1 { token.clone() } else { c.token() };
            c.join(i, &token);
            c.start(i);
            // One at a time: a promotion passes through a joint configuration.
            let names: Vec<String> = c.nodes[..=i].iter().map(|n| n.name.clone()).collect();
            c.wait_voters(&names);
        }
        let all: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
        c.wait_voters(&all);
        c.token();
        c.wait_voters(&all);
        c
    }

    /// A node for a new namespace: config only (see [`NetCluster::add_node`]).
    fn write_config(&mut self, i: usize, witness: bool) {
        let name = if witness { format!("witness{}", i + 1) } else { format!("node{}", i + 1) };
        let dir = self.root.join(&name);
        let config = self.root.join(format!("{name}.yml"));
        let a = node_addr(i);
        // What the other nodes connect to: the node itself, or its relay.
        let r = if self.relay.is_some() { net::relay_addr(i) } else { a.clone() };
        let d = dir.display();
        let text = format!(
            "scope: fault\nname: {name}\nuser: {user}\n\
restapi:\n  listen: {a}:{API_PORT}\n  connect_address: {r}:{API_PORT}\n\
raft:\n  listen: {a}:{RAFT_PORT}\n  connect_address: {r}:{RAFT_PORT}\n  data_dir: {d}/raft\n\
postgresql:\n  listen: {a}:{PG_PORT}\n  connect_address: {r}:{PG_PORT}\n  data_dir: {d}/pg/data\n  \
authentication:\n    superuser:\n      username: postgres\n      password: {SUPERUSER_PASSWORD}\n  \
parameters:\n    shared_buffers: 16MB\n    max_connections: 40\n\
proxy:\n  listen: {a}:{PROXY_PORT}\n  replicas_listen: {a}:5001\n\
tls:\n  cafile: {d}/tls/ca.crt\n  certfile: {d}/tls/node.crt\n  keyfile: {d}/tls/node.key\n\
ctl:\n  certfile: {d}/tls/ctl.crt\n  keyfile: {d}/tls/ctl.key\n  cacert: {d}/tls/ca.crt\n\
watchdog:\n  mode: off\n{w}",
            user = self.user,
            w = if witness { "witness: true\n" } else { "" },
        );
        fs::write(&config, text).expect("write a node config");
        self.nodes.push(Node {
            name: name.clone(),
            addr: a,
            dir,
            config,
            log: self.root.join(format!("{name}.log")),
            witness,
            removed: false,
            pg_fs_mb: None,
            faketime: None,
            raft_fs_mb: None,
            holder: None,
            child: None,
        });
    }

    /// A 4th (5th…) data node: namespace, config, token, join, run.
    pub fn add_node(&mut self) -> usize {
        assert!(self.relay.is_none(), "joining a node behind the delay relay is not built");
        let i = self.net.add_node();
        assert_eq!(i, self.nodes.len());
        self.write_config(i, false);
        let token = self.token();
        self.join(i, &token);
        self.start(i);
        i
    }

    /// Indices of the data nodes (not witnesses).
    pub fn data_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.nodes[i].witness && !self.nodes[i].removed).collect()
    }

    /// Node `i` was removed from the cluster (and stopped): the checks leave it out.
    pub fn forget(&mut self, i: usize) {
        assert!(!self.is_running(i), "stop {} before forgetting it", self.nodes[i].name);
        self.nodes[i].removed = true;
    }

    /// `pgha args` inside node `i`'s namespace, to completion.
    pub fn pgha_in(&self, i: usize, args: &[&str]) -> Output {
        let mut c = Net::command(&self.net.node_ns(i), harness::PGHA);
        clean_env(&mut c);
        c.args(args).output().expect("run pgha")
    }

    fn init(&self, i: usize) -> String {
        let out = self.pgha_in(i, &["init", "--config", self.nodes[i].config_str()]);
        assert!(out.status.success(), "init: {}", harness::show(&out));
        harness::stdout(&out)
    }

    fn join(&self, i: usize, token: &str) {
        let mut args = vec!["join", token, "--config", self.nodes[i].config_str()];
        if self.nodes[i].witness {
            args.push("--witness");
        }
        let out = self.pgha_in(i, &args);
        assert!(out.status.success(), "join {}: {}", self.nodes[i].name, harness::show(&out));
    }

    /// `pgha ctl --config <node via> args` from the client namespace.
    pub fn ctl_via(&self, via: usize, args: &[&str]) -> Output {
        let mut c = Net::command(&self.net.client_ns(), harness::PGHA);
        clean_env(&mut c);
        c.args(["ctl", "--config", self.nodes[via].config_str()]).args(args).output().expect("run pgha ctl")
    }

    /// `ctl args` through the first node whose API answers successfully.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.ctl_from(&all, args)
    }

    /// `ctl args` through the first of the nodes `via` whose API answers successfully (a node
    /// cut off from the majority answers too, from its own view: ask the side you mean).
    pub fn ctl_from(&self, via: &[usize], args: &[&str]) -> Result<String, String> {
        let mut last = String::from("no node to ask");
        for &i in via {
            if self.nodes[i].child.is_none() || self.nodes[i].removed {
                continue;
            }
            let out = self.ctl_via(i, args);
            if out.status.success() {
                return Ok(harness::stdout(&out));
            }
            last = harness::show(&out);
        }
        Err(last)
    }

    pub fn token(&self) -> String {
        wait_until(SETTLE, "a join token", || self.ctl(&["token", "create"]))
    }

    pub fn members(&self) -> Result<Vec<MemberRow>, String> {
        parse_members(&self.ctl(&["members", "--format", "json"])?)
    }

    pub fn wait_leader(&self) -> String {
        wait_until(SETTLE, "a Raft leader", || {
            let rows = self.members()?;
            rows.iter()
                .find(|r| r.role == "leader" && r.reachable)
                .map(|r| r.name.clone())
                .ok_or_else(|| summary(&rows))
        })
    }

    /// Waits until `names` are exactly the voters, all reachable and in step.
    pub fn wait_voters(&self, names: &[String]) -> String {
        let want: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_until(SETTLE, &format!("voters {want:?} in step"), || {
            harness::converged(&self.members()?, &want)
        })
    }

    /// The Raft leader's node index, as the first of `via` that answers sees it.
    pub fn raft_leader_seen_by(&self, via: &[usize]) -> Result<usize, String> {
        let rows = parse_members(&self.ctl_from(via, &["members", "--format", "json"])?)?;
        let name = rows.iter().find(|r| r.role == "leader").map(|r| r.name.clone());
        Ok(self.idx(&name.ok_or_else(|| format!("no Raft leader: {}", summary(&rows)))?))
    }

    pub fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Starts `pgha run` for node `i` inside its namespace.
    pub fn start(&mut self, i: usize) {
        assert!(!self.is_running(i), "{} is already running", self.nodes[i].name);
        let node = &self.nodes[i];
        let log = fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("open a node log");
        if node.raft_fs_mb.is_some() && node.holder.is_none() {
            self.start_holder(i);
        }
        let node = &self.nodes[i];
        let mut cmd = match node.pg_fs_mb {
            None if node.holder.is_some() => {
                let holder = node.holder.as_ref().expect("checked").id();
                // nsenter execs: the PID held is pgha's.
                let mut cmd = Net::command(&self.net.node_ns(i), "/usr/bin/nsenter");
                cmd.arg(format!("--mount=/proc/{holder}/ns/mnt")).args([
                    "--",
                    harness::PGHA,
                    "run",
                    "--config",
                    node.config_str(),
                ]);
                cmd
            }
            None => {
                let mut cmd = Net::command(&self.net.node_ns(i), harness::PGHA);
                cmd.args(["run", "--config", node.config_str()]);
                cmd
            }
            Some(mb) => {
                let pg = node.dir.join("pg");
                fs::create_dir_all(&pg).expect("create the tmpfs mount point");
                let user = nix::unistd::User::from_name(&self.user).ok().flatten().expect("the service user");
                // unshare and sh both exec: the PID held is still pgha's.
                let mut cmd = Net::command(&self.net.node_ns(i), "/usr/bin/unshare");
                cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                    .arg("mount -t tmpfs -o size=\"$1\"m,mode=0755,uid=\"$2\",gid=\"$3\" pgha-fault \"$4\" && shift 4 && exec \"$@\"")
                    .arg("sh")
                    .arg(mb.to_string())
                    .arg(user.uid.to_string())
                    .arg(user.gid.to_string())
                    .arg(&pg)
                    .args([harness::PGHA, "run", "--config", node.config_str()]);
                cmd
            }
        };
        clean_env(&mut cmd);
        if let Some(file) = &node.faketime {
            if !file.exists() {
                fs::write(file, "+0\n").expect("write the faketime offset");
            }
            cmd.env("LD_PRELOAD", FAKETIME_LIB)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("clone a log handle")).stderr(log);
        // SAFETY: prctl is async-signal-safe; the node dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", node.name));
        self.nodes[i].child = Some(child);
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            None => false,
            Some(c) => match c.try_wait().expect("try_wait") {
                None => true,
                Some(_) => {
                    self.nodes[i].child = None;
                    false
                }
            },
        }
    }

    pub fn pgha_pid(&self, i: usize) -> nix::unistd::Pid {
        let c = self.nodes[i].child.as_ref().unwrap_or_else(|| panic!("{} not running", self.nodes[i].name));
        nix::unistd::Pid::from_raw(c.id() as i32)
    }

    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        let pid = self.pgha_pid(i);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
    }

    /// kill -9 of node `i`'s pgha alone; returns once it is reaped.
    pub fn kill9(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(i, Duration::from_secs(10));
    }

    /// SIGTERM and wait (a clean stop, as systemd does).
    pub fn stop(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(i, Duration::from_secs(60));
    }

    pub fn wait_exit(&mut self, i: usize, deadline: Duration) {
        let name = self.nodes[i].name.clone();
        let child = self.nodes[i].child.as_mut().unwrap_or_else(|| panic!("{name} not running"));
        wait_until(deadline, &format!("{name} exits"), || {
            child.try_wait().expect("try_wait").map(|_| ()).ok_or_else(|| "still running".to_string())
        });
        self.nodes[i].child = None;
    }

    /// The postmaster of node `i` if one is alive (from `postmaster.pid`, checked against the
    /// process's command line so a recycled PID is never taken for it).
    pub fn postmaster_pid(&self, i: usize) -> Option<nix::unistd::Pid> {
        let data = self.nodes[i].data_dir();
        let text = fs::read_to_string(self.node_path(i, &data.join("postmaster.pid"))?).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // A zombie is dead for our purposes.
        let zombie = stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
        (cmdline.contains(data.to_str()?) && !zombie).then(|| nix::unistd::Pid::from_raw(pid))
    }

    /// Moves node `i`'s wall clock by `offset` from the real one (libfaketime syntax: `-5m`,
    /// `+300s`, `+0`); the node must have been started with [`Node::faketime`].
    pub fn set_wall_offset(&self, i: usize, offset: &str) {
        let file = self.nodes[i].faketime.as_ref().expect("the node runs under libfaketime");
        fs::write(file, format!("{offset}\n")).expect("write the faketime offset");
    }

    /// Where the test reaches `path` of node `i`: the path itself, or for a node with a private
    /// tmpfs the same path inside its mount namespace (`None` when that node is not running).
    pub fn node_path(&self, i: usize, path: &std::path::Path) -> Option<PathBuf> {
        let node = &self.nodes[i];
        let pid = if let Some(h) = &node.holder {
            h.id()
        } else if node.pg_fs_mb.is_some() {
            node.child.as_ref()?.id()
        } else {
            return Some(path.to_path_buf());
        };
        Some(PathBuf::from(format!("/proc/{pid}/root{}", path.display())))
    }

    /// Starts node `i`'s mount-namespace holder: a tmpfs with a copy of its Raft directory,
    /// bind-mounted over it, then `sleep` until killed.
    fn start_holder(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mb = node.raft_fs_mb.expect("a Raft tmpfs size");
        let raft = node.raft_dir();
        let fs_dir = node.dir.join("raftfs");
        fs::create_dir_all(&fs_dir).expect("create the tmpfs mount point");
        let user = nix::unistd::User::from_name(&self.user).ok().flatten().expect("the service user");
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(
                "mount -t tmpfs -o size=\"$1\"m,mode=0700,uid=\"$2\",gid=\"$3\" pgha-fault \"$4\" \
                 && cp -a \"$5\"/. \"$4\"/ && mount --bind \"$4\" \"$5\" && exec sleep infinity",
            )
            .arg("sh")
            .arg(mb.to_string())
            .arg(user.uid.to_string())
            .arg(user.gid.to_string())
            .arg(&fs_dir)
            .arg(&raft)
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the holder dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut holder = cmd.spawn().expect("start the mount holder");
        let pid = holder.id();
        wait_until(Duration::from_secs(10), "the mount holder is ready", || {
            if let Some(status) = holder.try_wait().map_err(|e| e.to_string())? {
                panic!("the mount holder of {} failed: {status}", node.name);
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
            cmdline.starts_with(b"sleep").then_some(()).ok_or_else(|| "still mounting".to_string())
        });
        self.nodes[i].holder = Some(holder);
    }

    /// kill -9 of node `i`'s postmaster alone.
    pub fn kill9_postgres(&self, i: usize) {
        let pid =
            self.postmaster_pid(i).unwrap_or_else(|| panic!("{} has no postmaster", self.nodes[i].name));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }

    /// kill -9 of the whole node: pgha and its postmaster at the same moment (a machine dying).
    pub fn kill9_node(&mut self, i: usize) {
        let pm = self.postmaster_pid(i);
        self.signal(i, nix::sys::signal::Signal::SIGKILL);
        if let Some(pm) = pm {
            let _ = nix::sys::signal::kill(pm, nix::sys::signal::Signal::SIGKILL);
        }
        self.wait_exit(i, Duration::from_secs(10));
    }

    /// `psql -Atc sql` as the superuser from the client namespace to `addr:port`.
    pub fn psql_at(&self, addr: &str, port: u16, sql: &str) -> Result<String, String> {
        let conninfo = format!("host={addr} port={port} user=postgres dbname=postgres connect_timeout=3");
        harness::psql_result(
            Net::command(&self.net.client_ns(), PSQL)
                .args([conninfo.as_str(), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .env("PGPASSWORD", SUPERUSER_PASSWORD)
                .env("PGOPTIONS", "-c statement_timeout=10000")
                .env_remove("PGSERVICE")
                .output(),
        )
    }

    /// `psql` against node `i`'s Postgres.
    pub fn psql(&self, i: usize, sql: &str) -> Result<String, String> {
        self.psql_at(&self.nodes[i].addr, PG_PORT, sql).map_err(|e| format!("{}: {e}", self.nodes[i].name))
    }

    /// `PGHA_FAULT_KEEP=1` keeps the directory; say where it is.
    pub fn tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_text(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

fn clean_env(c: &mut Command) {
    for var in ["PGHA_CONFIG", "PGHA_ENDPOINT", "PGHA_LOG", "JOURNAL_STREAM", "NOTIFY_SOCKET"] {
        c.env_remove(var);
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                // A stopped process must be continued to die promptly.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for i in 0..self.nodes.len() {
            // The fencer kills Postgres when pgha dies; wait for it, then make sure.
            let start = pgha::clock::boot_now();
            while self.postmaster_pid(i).is_some() && harness::elapsed(start) < Duration::from_secs(5) {
                pause(Duration::from_millis(100));
            }
            if let Some(pid) = self.postmaster_pid(i) {
                eprintln!("{}: postmaster {pid} outlived its pgha; killing it", self.nodes[i].name);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut holder) = node.holder.take() {
                let _ = holder.kill();
                let _ = holder.wait();
            }
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!(
                    "----- last {LOG_TAIL_LINES} lines of {} ({}) -----\n{}",
                    self.nodes[i].name,
                    self.nodes[i].log.display(),
                    self.tail(i, LOG_TAIL_LINES)
                );
            }
        }
        if std::env::var_os("PGHA_FAULT_KEEP").is_some() {
            eprintln!("kept {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
