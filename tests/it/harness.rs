//! The integration harness: real `pgha` processes on 127.0.0.1 in a temporary directory.
//!
//! A [`Cluster`] owns a temp dir (mode 0755, so the service user `pgha run` drops to can reach
//! it), one config file per node with free ports (found by binding them, see [`free_ports`]),
//! and the `pgha run` children it started, which it tracks by PID. Its `Drop` kills every child still running
//! (SIGKILL, then `wait`), prints the tail of each node's log when the test is failing, and
//! removes the directory (kept when `PGHA_IT_KEEP` is set). Waiting is always
//! [`wait_until`]: poll every 100 ms, and on timeout panic with the last state seen; never a
//! bare sleep, never a fixed port. The harness never touches processes it did not start.

use pgha::clock;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The binary under test, built by cargo for this test target.
pub const PGHA: &str = env!("CARGO_BIN_EXE_pgha");
/// The scope of every test cluster (two clusters may share it: only their CAs differ).
pub const SCOPE: &str = "it";
/// For things that should take a few Raft round trips: joins, catch-up, convergence.
pub const SETTLE: Duration = Duration::from_secs(30);
/// For an election after a crash or a transfer (election timeout is 1-2 s).
pub const ELECTION: Duration = Duration::from_secs(10);
/// The Postgres superuser's password in every node's config (`postgresql.authentication`).
pub const SUPERUSER_PASSWORD: &str = "it-superuser-pw";
const POLL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 40;

/// Sleeps one step of a polling loop. The only sleep of the suite (clippy.toml forbids bare
/// sleeps elsewhere): the harness is a driver and waits on real processes.
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d)
}

/// Polls `probe` until it returns `Ok`, at most `deadline`. On timeout, panics naming `what`
/// and the last `Err` the probe gave (the state it saw).
pub fn wait_until<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = clock::boot_now();
    loop {
        let last = match probe() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if clock::boot_now().saturating_since(start) > deadline {
            panic!("{what}: not within {deadline:?}; last seen: {last}");
        }
        pause(POLL);
    }
}

/// Time since `start` on the boot clock.
pub fn elapsed(start: clock::BootInstant) -> Duration {
    clock::boot_now().saturating_since(start)
}

/// One row of `pgha ctl members --format json`, with exactly the keys of the contract in
/// DESIGN.md (checked by [`parse_members`]).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberRow {
    pub name: String,
    pub id: String,
    pub role: String,
    pub witness: bool,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub address: String,
    pub reachable: bool,
}

const MEMBER_KEYS: [&str; 9] =
    ["name", "id", "role", "witness", "term", "commit_index", "applied_index", "address", "reachable"];

/// Parses `ctl members --format json`, insisting that every row has every contract key (serde
/// alone would accept a missing `Option` key).
pub fn parse_members(json: &str) -> Result<Vec<MemberRow>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json}"))?;
    let rows = value.as_array().ok_or_else(|| format!("not a JSON array: {json}"))?;
    for row in rows {
        let keys: BTreeSet<&str> =
            row.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        if keys != MEMBER_KEYS.into_iter().collect() {
            return Err(format!("row keys {keys:?} are not the contract's {MEMBER_KEYS:?}"));
        }
    }
    serde_json::from_value(value).map_err(|e| format!("bad member rows ({e}): {json}"))
}

/// One line describing `rows`, for messages.
pub fn summary(rows: &[MemberRow]) -> String {
    rows.iter()
        .map(|r| {
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            format!(
                "{}:{}{}{} t{} c{} a{}",
                r.name,
                r.role,
                if r.witness { "/witness" } else { "" },
                if r.reachable { "" } else { "/unreachable" },
                opt(r.term),
                opt(r.commit_index),
                opt(r.applied_index)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Ok(leader name)` if `rows` are exactly `names`, all reachable voters with one leader, and
/// every applied index equals the leader's commit index; else `Err` describing the rows.
pub fn converged(rows: &[MemberRow], names: &[&str]) -> Result<String, String> {
    let mut have: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let mut want = names.to_vec();
    have.sort();
    want.sort();
    let leaders: Vec<&MemberRow> = rows.iter().filter(|r| r.role == "leader").collect();
    let ok = have == want
        && leaders.len() == 1
        && rows.iter().all(|r| r.reachable && (r.role == "leader" || r.role == "follower"))
        && rows.iter().all(|r| r.applied_index.is_some() && r.applied_index == leaders[0].commit_index);
    if ok {
        Ok(leaders[0].name.clone())
    } else {
        Err(format!("want voters {want:?} in step; have [{}]", summary(rows)))
    }
}

/// The OS user nodes run as: `postgres` when the tests run as root (pgha drops to it), else
/// whoever runs the tests.
pub fn service_user() -> String {
    if pgha::sys::user::is_root() {
        return "postgres".into();
    }
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| panic!("uid {uid} has no user name"))
}

/// A `pgha` command isolated from the caller's environment.
pub fn pgha() -> Command {
    let mut c = Command::new(PGHA);
    for var in ["PGHA_CONFIG", "PGHA_ENDPOINT", "PGHA_LOG", "JOURNAL_STREAM"] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs `pgha args` to completion.
pub fn run(args: &[&str]) -> Output {
    pgha().args(args).output().unwrap_or_else(|e| panic!("cannot run {PGHA}: {e}"))
}

/// Stdout and stderr of `out`, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// A finished `psql -At` run: its output, or what it printed on stderr (or why it did not run).
pub fn psql_result(run: std::io::Result<Output>) -> Result<String, String> {
    let out = run.map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(stderr(&out))
    }
}

/// Free TCP ports on 127.0.0.1, all distinct (each is held until all are known).
///
/// They are taken below the kernel's ephemeral range when there is room: a port from
/// `bind(0)` lies inside that range, where any outgoing connection (a `ctl` call, a peer link)
/// may take it as its source port before the node binds it, failing the node's start. A
/// per-process counter from a PID-derived offset keeps parallel tests and test binaries apart;
/// each candidate is still checked by binding it.
pub fn free_ports(n: usize) -> Vec<u16> {
    const FLOOR: u32 = 20000;
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let ephemeral_low: u32 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768);
    let bind = |port: u32| std::net::TcpListener::bind(("127.0.0.1", port as u16));
    let mut held = Vec::new();
    if ephemeral_low > FLOOR + 1000 {
        let span = (ephemeral_low - FLOOR) as usize;
        let _ = NEXT.compare_exchange(
            usize::MAX,
            std::process::id() as usize * 7919 % span,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        for _ in 0..span {
            if held.len() == n {
                break;
            }
            let port = FLOOR + (NEXT.fetch_add(1, Ordering::SeqCst) % span) as u32;
            if let Ok(l) = bind(port) {
                held.push(l);
            }
        }
    }
    while held.len() < n {
        held.push(bind(0).expect("a free port on 127.0.0.1"));
    }
    held.iter().map(|l| l.local_addr().expect("bound address").port()).collect()
}

/// One node: its files and, while running, its `pgha run` child.
pub struct Node {
    /// Member name (`name:` in the config).
    pub name: String,
    /// Directory for the node's files (named by its label, which is unique in the cluster).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api: String,
    pub raft: String,
    /// Where the node's Postgres listens on 127.0.0.1.
    pub pg_port: u16,
    /// The node's proxy ports on 127.0.0.1: writer, reader.
    pub proxy: (u16, u16),
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn config_str(&self) -> &str {
        self.config.to_str().expect("temp paths are UTF-8")
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.dir.join("raft")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
}

/// A set of nodes in one temp dir. See the module comment.
pub struct Cluster {
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    pub user: String,
    /// Tokens consumed by successful joins, oldest first.
    pub used_tokens: Vec<String>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// `n` nodes `node1..noden` formed as an operator would: `init` on node1, `pgha run`, then
    /// for each other node a token from node1, `pgha join`, `pgha run`. Returns once all are
    /// reachable voters at the same applied index.
    pub fn new(n: usize) -> Cluster {
        let mut c = Cluster::empty();
        for i in 1..=n {
            c.add_node(&format!("node{i}"));
        }
        c.form();
        c
    }

    /// An empty temp dir named after the running test.
    pub fn empty() -> Cluster {
        // Short: Postgres's socket path (`<root>/<node>/pg/run/.s.PGSQL.<port>`) must stay
        // under 108 bytes.
        let test: String =
            std::thread::current().name().unwrap_or("test").replace("::", "-").chars().take(24).collect();
        let root = std::env::temp_dir().join(format!(
            "pgha-it-{}-{}-{test}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the test's temp dir");
        // The service user must traverse it to reach its own directories below.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
        Cluster { root, nodes: Vec::new(), user: service_user(), used_tokens: Vec::new() }
    }

    /// Writes the config of a new (data) node named `name`; returns its index.
    pub fn add_node(&mut self, name: &str) -> usize {
        self.add_node_as(name, name, "")
    }

    /// Writes the config of a new node: files under `<root>/<label>`, member name `name`,
    /// `extra` YAML appended (e.g. `witness: true\n`).
    pub fn add_node_as(&mut self, label: &str, name: &str, extra: &str) -> usize {
        assert!(self.nodes.iter().all(|n| !n.dir.ends_with(label)), "label {label} used twice");
        let dir = self.root.join(label);
        let config = self.root.join(format!("{label}.yml"));
        let p = free_ports(5);
        let d = dir.display();
        let text = format!(
            "scope: {SCOPE}\nname: {name}\nuser: {user}\n\
restapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
raft:\n  listen: 127.0.0.1:{raft}\n  connect_address: 127.0.0.1:{raft}\n  data_dir: {d}/raft\n\
postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  data_dir: {d}/pg/data\n  \
authentication:\n    superuser:\n      username: postgres\n      password: {SUPERUSER_PASSWORD}\n  \
parameters:\n    shared_buffers: 16MB\n    max_connections: 20\n\
proxy:\n  listen: 127.0.0.1:{w}\n  replicas_listen: 127.0.0.1:{r}\n\
tls:\n  cafile: {d}/tls/ca.crt\n  certfile: {d}/tls/node.crt\n  keyfile: {d}/tls/node.key\n\
ctl:\n  certfile: {d}/tls/ctl.crt\n  keyfile: {d}/tls/ctl.key\n  cacert: {d}/tls/ca.crt\n\
{watchdog}{extra}",
            watchdog = if extra.contains("watchdog:") { "" } else { "watchdog:\n  mode: off\n" },
            user = self.user,
            api = p[0],
            raft = p[1],
            pg = p[2],
            w = p[3],
            r = p[4]
        );
        fs::write(&config, text).expect("write a node config");
        self.nodes.push(Node {
            pg_port: p[2],
            proxy: (p[3], p[4]),
            name: name.to_string(),
            dir,
            config,
            api: format!("127.0.0.1:{}", p[0]),
            raft: format!("127.0.0.1:{}", p[1]),
            log: self.root.join(format!("{label}.log")),
            child: None,
        });
        self.nodes.len() - 1
    }

    /// Adds a witness named `name` to the formed cluster (a token from node 0, `join
    /// --witness`, `run`); returns its index once every member is a voter in step.
    pub fn add_witness(&mut self, name: &str) -> usize {
        let w = self.add_node_as(name, name, "witness: true\n");
        let token = self.token(0);
        let out = self.join(w, &token, &["--witness"]);
        assert!(out.status.success(), "join --witness: {}", show(&out));
        self.start(w);
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.settle(0, &all);
        w
    }

    /// Index of the node whose member name is `name` (the first, if a test made duplicates).
    pub fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// Member names of the given nodes.
    pub fn names(&self, idx: &[usize]) -> Vec<&str> {
        idx.iter().map(|&i| self.nodes[i].name.as_str()).collect()
    }

    /// `pgha init` on node `i`; returns the join token it prints.
    pub fn init(&self, i: usize) -> String {
        let out = run(&["init", "--config", self.nodes[i].config_str()]);
        assert!(out.status.success(), "init {} failed: {}", self.nodes[i].name, show(&out));
        stdout(&out)
    }

    /// Init node 0, start it, join and start every other node, wait until all are voters.
    pub fn form(&mut self) {
        let token = self.init(0);
        self.start(0);
        self.wait_leader(0);
        for i in 1..self.nodes.len() {
            // The token printed by init serves the first joiner, as an operator would use it.
            let token = if i == 1 { token.clone() } else { self.token(0) };
            self.join_ok(i, &token);
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.settle(0, &all);
    }

    /// `pgha join token --config <node i>` plus `extra` arguments.
    pub fn join(&self, i: usize, token: &str, extra: &[&str]) -> Output {
        let mut args = vec!["join", token, "--config", self.nodes[i].config_str()];
        args.extend_from_slice(extra);
        run(&args)
    }

    /// Joins node `i` with `token` (must succeed) and starts it.
    pub fn join_ok(&mut self, i: usize, token: &str) {
        let out = self.join(i, token, &[]);
        assert!(out.status.success(), "join {} failed: {}", self.nodes[i].name, show(&out));
        self.used_tokens.push(token.to_string());
        self.start(i);
    }

    /// Starts `pgha run` for node `i`, appending its stderr and stdout to its log.
    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        self.start_env(i, extra, &[]);
    }

    /// As [`Cluster::start_with`], with extra environment variables (systemd's, say).
    pub fn start_env(&mut self, i: usize, extra: &[&str], env: &[(&str, &str)]) {
        assert!(!self.is_running(i), "{} is already running", self.nodes[i].name);
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("open a node log");
        let log2 = log.try_clone().expect("clone a log handle");
        let mut cmd = pgha();
        cmd.args(["run", "--config", node.config_str()]).args(extra).envs(env.iter().copied());
        cmd.stdout(log2).stderr(log);
        // SAFETY: prctl is async-signal-safe. If the test process dies outright the node dies
        // too (until it drops root, which clears the setting; Drop covers the normal paths).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        node.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", node.name)));
    }

    /// True while node `i`'s child has not exited.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            None => false,
            Some(c) => match c.try_wait().expect("try_wait on a node") {
                None => true,
                Some(_) => {
                    self.nodes[i].child = None;
                    false
                }
            },
        }
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        let child =
            self.nodes[i].child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.nodes[i].name));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
    }

    /// SIGHUP node `i`'s pgha (`systemctl reload`).
    pub fn sighup(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGHUP);
    }

    /// SIGSTOP node `i`'s pgha (a hung process); SIGCONT resumes it.
    pub fn sigstop(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
    }
    pub fn sigcont(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(i, Duration::from_secs(10));
    }

    /// SIGTERM node `i` and wait for it to exit on its own (panics after 15 s).
    pub fn stop(&mut self, i: usize) -> ExitStatus {
        self.signal(i, nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(i, Duration::from_secs(15))
    }

    /// Waits for node `i`'s process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, i: usize, deadline: Duration) -> ExitStatus {
        let name = self.nodes[i].name.clone();
        let child = self.nodes[i].child.as_mut().unwrap_or_else(|| panic!("{name} is not running"));
        let status = wait_until(deadline, &format!("{name} exits"), || {
            child.try_wait().expect("try_wait on a node").ok_or_else(|| "still running".to_string())
        });
        self.nodes[i].child = None;
        status
    }

    /// `pgha ctl --config <node i> args`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        let mut all = vec!["ctl", "--config", self.nodes[i].config_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A join token made through node `via`'s API (waits out a missing leader).
    pub fn token(&self, via: usize) -> String {
        wait_until(SETTLE, &format!("a join token from {}", self.nodes[via].name), || self.try_token(via))
    }

    /// One attempt at `ctl token create` against node `via` (its own config and endpoint).
    pub fn try_token(&self, via: usize) -> Result<String, String> {
        let out = self.ctl(via, &["--endpoint", &self.nodes[via].api, "token", "create"]);
        if out.status.success() && !stdout(&out).is_empty() {
            Ok(stdout(&out))
        } else {
            Err(show(&out))
        }
    }

    /// `ctl members --format json` through node `via`.
    pub fn members(&self, via: usize) -> Result<Vec<MemberRow>, String> {
        let out = self.ctl(via, &["members", "--format", "json"]);
        if !out.status.success() {
            return Err(show(&out));
        }
        parse_members(&stdout(&out))
    }

    /// Waits until node `via` reports exactly one reachable leader; returns its name.
    pub fn wait_leader(&self, via: usize) -> String {
        wait_until(ELECTION, &format!("a leader seen by {}", self.nodes[via].name), || {
            let rows = self.members(via)?;
            let leaders: Vec<_> = rows.iter().filter(|r| r.role == "leader" && r.reachable).collect();
            match leaders.as_slice() {
                [one] => Ok(one.name.clone()),
                _ => Err(summary(&rows)),
            }
        })
    }

    /// Waits until node `via` shows exactly the nodes `idx` as reachable voters in step;
    /// returns the rows and the leader's name.
    pub fn wait_converged(&self, via: usize, idx: &[usize]) -> (Vec<MemberRow>, String) {
        let names = self.names(idx);
        wait_until(SETTLE, &format!("{names:?} converged (seen by {})", self.nodes[via].name), || {
            let rows = self.members(via)?;
            let leader = converged(&rows, &names)?;
            Ok((rows, leader))
        })
    }

    /// `GET path` on node `i`'s API without a client certificate (as monitoring would), the
    /// server verified by the node's CA file.
    pub fn api_get(&self, i: usize, path: &str) -> Result<serde_json::Value, String> {
        let ca = pgha::tls::load_ca(&self.nodes[i].tls_dir().join("ca.crt")).map_err(|e| e.to_string())?;
        let config = pgha::tls::api_client_config(&ca, None).map_err(|e| e.to_string())?;
        let client = pgha::api::client::ApiClient::new(vec![self.nodes[i].api.clone()], config, ELECTION);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        rt.block_on(client.get(path)).map(|(_, v)| v).map_err(|e| e.to_string())
    }

    /// After a membership change: waits until the nodes `idx` are voters in step, commits one
    /// more entry through `via` and waits again. A promotion passes through a joint
    /// configuration whose old half still needs its own majority, and `members` cannot show
    /// it; an entry committed after the change proves the joint configuration was left, so a
    /// test may then kill a member without wedging Raft in the joint state.
    pub fn settle(&self, via: usize, idx: &[usize]) -> (Vec<MemberRow>, String) {
        self.wait_converged(via, idx);
        self.token(via);
        self.wait_converged(via, idx)
    }

    /// The whole log of node `i` so far.
    pub fn log_text(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // Child::kill is SIGKILL to this child's PID only.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                if node.log.exists() {
                    eprintln!(
                        "----- last {LOG_TAIL_LINES} lines of {} ({}) -----\n{}",
                        node.name,
                        node.log.display(),
                        tail(&node.log, LOG_TAIL_LINES)
                    );
                }
            }
        }
        if std::env::var_os("PGHA_IT_KEEP").is_some() {
            eprintln!("kept {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
