//! `pgha demo`: a local cluster of N real `pgha run` children on 127.0.0.1 in a temporary
//! directory, formed with the same `init` + `join` an operator runs. Ctrl-C or SIGTERM stops
//! every child (SIGTERM, then SIGKILL after a grace period) and removes the directory. Children
//! also die with the demo (PR_SET_PDEATHSIG) if it is killed outright.

use super::ctl::members_output;
use crate::api::client::ApiClient;
use crate::api::model::{MemberRow, TokenRequest, TokenResponse};
use crate::clock;
use crate::ctl::output::Format;
use crate::sys::user;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of nodes
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: u16,
    /// Directory to use instead of a new temporary one (must not exist)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory after stopping
    #[arg(long)]
    pub keep: bool,
}

struct Node {
    name: String,
    config: PathBuf,
    api: String,
    raft: String,
    /// Postgres `host:port`.
    pg: String,
    /// Proxy writer and reader `host:port`.
    proxy: (String, String),
    log: PathBuf,
    child: Option<Child>,
}

/// Ports a node listens on: API, Raft, Postgres, proxy writer, proxy reader.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("cannot find free ports on 127.0.0.1")?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0)).collect())
}

fn current_user_name() -> Result<String> {
    if user::is_root() {
        return Ok("postgres".into());
    }
    let uid = user::current_uid();
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<_> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .with_context(|| format!("uid {uid} has no entry in /etc/passwd"))
}

fn node_config(root: &Path, name: &str, user: &str, p: &[u16], password: &str) -> String {
    let d = root.join(name);
    let d = d.display();
    format!(
        "scope: demo\nname: {name}\nuser: {user}\n\
restapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
raft:\n  listen: 127.0.0.1:{raft}\n  connect_address: 127.0.0.1:{raft}\n  data_dir: {d}/raft\n\
postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  data_dir: {d}/pg/data\n  authentication:\n    superuser:\n      username: postgres\n      password: {password}\n\
proxy:\n  listen: 127.0.0.1:{w}\n  replicas_listen: 127.0.0.1:{r}\n\
tls:\n  cafile: {d}/tls/ca.crt\n  certfile: {d}/tls/node.crt\n  keyfile: {d}/tls/node.key\n\
ctl:\n  certfile: {d}/tls/ctl.crt\n  keyfile: {d}/tls/ctl.key\n  cacert: {d}/tls/ca.crt\n\
watchdog:\n  mode: off\n",
        api = p[0],
        raft = p[1],
        pg = p[2],
        w = p[3],
        r = p[4]
    )
}

fn pgha(args: &[&str]) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the pgha executable")?;
    let mut c = Command::new(exe);
    c.args(args).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(c)
}

async fn run_once(args: &[&str]) -> Result<String> {
    let out = pgha(args)?.stderr(Stdio::piped()).stdout(Stdio::piped()).output().await?;
    if !out.status.success() {
        bail!("`pgha {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn start(node: &mut Node) -> Result<()> {
    let log =
        std::fs::File::create(&node.log).with_context(|| format!("cannot create {}", node.log.display()))?;
    let config = node.config.display().to_string();
    let child = pgha(&["run", "--config", &config])?.stdout(Stdio::null()).stderr(log).spawn()?;
    node.child = Some(child);
    Ok(())
}

async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = clock::boot_now();
    let mut last = String::from("nothing yet");
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if clock::boot_now().saturating_since(start) > deadline {
            bail!("{what} did not happen within {deadline:?}; last error: {last}");
        }
        clock::sleep(Duration::from_millis(200)).await;
    }
}

fn ctl_client(node: &Node) -> Result<ApiClient> {
    let arg = super::ConfigArg { config: Some(node.config.clone()) };
    super::ctl::client(&arg, Some(&node.api))
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("pgha-demo-{}", std::process::id())),
    };
    if root.exists() {
        bail!("{} already exists; choose another --dir", root.display());
    }
    std::fs::create_dir_all(&root)?;
    let mut nodes = Vec::new();
    let result = demo(&args, &root, &mut nodes).await;
    stop_all(&mut nodes).await;
    if args.keep {
        eprintln!("kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

async fn demo(args: &DemoArgs, root: &Path, nodes: &mut Vec<Node>) -> Result<()> {
    let user = current_user_name()?;
    // One superuser password for the whole demo, so the printed DSNs connect as they are.
    let password = crate::api::token::new_secret();
    use std::os::unix::fs::PermissionsExt;
    // The service user must be able to reach its directories below the root.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    for i in 1..=args.nodes {
        let name = format!("node{i}");
        let ports = free_ports(5)?;
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("pgha.yml");
        std::fs::write(&config, node_config(root, &name, &user, &ports, &password))?;
        nodes.push(Node {
            name,
            config,
            api: format!("127.0.0.1:{}", ports[0]),
            raft: format!("127.0.0.1:{}", ports[1]),
            pg: format!("127.0.0.1:{}", ports[2]),
            proxy: (format!("127.0.0.1:{}", ports[3]), format!("127.0.0.1:{}", ports[4])),
            log: dir.join("pgha.log"),
            child: None,
        });
    }
    eprintln!("pgha demo: {} nodes in {}", args.nodes, root.display());
    let first_cfg = nodes[0].config.display().to_string();
    let mut token = run_once(&["init", "--config", &first_cfg]).await?;
    start(&mut nodes[0])?;
    let first = ctl_client(&nodes[0])?;
    for (i, node) in nodes.iter_mut().enumerate().skip(1) {
        if i > 1 {
            let f = first.clone();
            token = wait_for("a join token", Duration::from_secs(20), async || {
                let (_, t): (_, TokenResponse) = f.post("/token", &TokenRequest { ttl: Some(600) }).await?;
                Ok(Some(t.token))
            })
            .await?;
        }
        let cfg = node.config.display().to_string();
        let t = token.clone();
        wait_for(&format!("{} joining", node.name), Duration::from_secs(30), async || {
            run_once(&["join", &t, "--config", &cfg]).await.map(Some)
        })
        .await?;
        start(node)?;
    }
    let n = nodes.len();
    let rows = wait_for("all members voting and reachable", Duration::from_secs(60), async || {
        let (_, rows): (_, Vec<MemberRow>) = first.get("/members").await?;
        let leader_commit = rows.iter().find(|r| r.role == "leader").and_then(|r| r.commit_index);
        let ok = rows.len() == n
            && rows.iter().all(|r| {
                r.reachable
                    && (r.role == "leader" || r.role == "follower")
                    && r.applied_index
                        .is_some_and(|a| a > 0 && Some(a) >= leader_commit.map(|c| c.saturating_sub(2)))
            });
        Ok(ok.then_some(rows))
    })
    .await?;
    println!("{}", members_output(Format::Table, &rows));
    // Then Postgres: one primary and every other member streaming from it.
    let cluster =
        wait_for("one Postgres primary with streaming replicas", Duration::from_secs(180), async || {
            let (_, c): (_, serde_json::Value) = first.get("/cluster").await?;
            let members = c["members"].as_array().cloned().unwrap_or_default();
            let leaders = members.iter().filter(|m| m["role"] == "leader" && m["state"] == "running").count();
            let streaming =
                members.iter().filter(|m| m["role"] == "replica" && m["state"] == "streaming").count();
            Ok((members.len() == n && leaders == 1 && streaming + 1 == n).then_some(members))
        })
        .await?;
    let dsn = |hostport: &str| format!("postgres://postgres:{password}@{hostport}/postgres");
    let rows: Vec<Vec<String>> = cluster
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap_or_default().to_string();
            let pg = nodes.iter().find(|n| n.name == name).map(|n| n.pg.clone()).unwrap_or_default();
            vec![
                name,
                m["role"].as_str().unwrap_or_default().into(),
                m["state"].as_str().unwrap_or_default().into(),
                dsn(&pg),
            ]
        })
        .collect();
    println!("{}", crate::ctl::output::table(&["Member", "Role", "State", "DSN"], &rows));
    let all: Vec<&str> = nodes.iter().map(|n| n.pg.as_str()).collect();
    println!(
        "Writes, whoever is primary (any node's proxy writer port):\n  {}\n\
         Reads from replicas (any node's proxy reader port):\n  {}\n\
         Writes without the proxy (libpq multi-host):\n  postgres://postgres:{password}@{}/postgres?target_session_attrs=read-write\n",
        dsn(&nodes[0].proxy.0),
        dsn(&nodes[0].proxy.1),
        all.join(",")
    );
    for node in nodes.iter() {
        let pid = node.child.as_ref().and_then(|c| c.id()).unwrap_or(0);
        println!(
            "{}: pid {pid}  REST API https://{}  Raft {}  config {}  log {}",
            node.name,
            node.api,
            node.raft,
            node.config.display(),
            node.log.display()
        );
    }
    println!(
        "\nTry:  pgha ctl --config {} members\n      kill -9 the leader's pgha (see the logs) and watch another take over.\nCtrl-C stops the cluster and removes {}.",
        nodes[0].config.display(),
        root.display()
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("\nstopping…");
    Ok(())
}

async fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.as_ref().and_then(|c| c.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for node in nodes.iter_mut() {
        if let Some(child) = node.child.as_mut() {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}
