//! `pgha run`: one node's process. Drops to the service user before any thread exists, starts
//! the Postgres spawner thread (every postmaster is its child, DESIGN.md lease rule 4), then
//! the Raft member, its transport, the REST API and, on a data member, the HA loop on one tokio
//! runtime, and stops them in order on SIGTERM/SIGINT: the HA loop first (it stops Postgres and
//! releases a held lease), then the Raft member (a leader first hands leadership away).
//! Under systemd it reports readiness, status and stops (`service`); SIGHUP re-reads the
//! config file (`reload`).

use super::reload::Reloader;
use super::service::Service;
use super::ConfigArg;
use crate::api::client::ApiClient;
use crate::api::server::{self, ApiContext};
use crate::config::file::LocalConfig;
use crate::dcs::file_store::FileLogStore;
use crate::dcs::meta::MemberMeta;
use crate::dcs::node::{CoreConfig, RaftCore};
use crate::dcs::transport::{self, LocalIdentity, Outbox, RaftAcceptor, Reachability};
use crate::dcs::{bootstrap, driver, raft_log};
use crate::fence::{Fence, FencerHandle};
use crate::ha::callbacks::CallbackRunner;
use crate::ha::control::HaControl;
use crate::ha::local::LocalPostgres;
use crate::ha::run::{HaLoop, HaOptions};
use crate::pg::bin::BinDir;
use crate::pg::ctl::PgTools;
use crate::pg::leftover::{stop_leftover, Leftover};
use crate::pg::spawner::Spawner;
use crate::sys::user::{self, ServiceUser};
use crate::tls::{self, NodeTls};
use crate::watchdog::Watchdog;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Bound of each step of stopping a leftover postmaster at start.
const LEFTOVER_STOP: Duration = Duration::from_secs(30);
/// How long shutdown waits for the HA loop (a clean Postgres stop plus a lease release).
const HA_STOP: Duration = Duration::from_secs(90);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Recover from a permanent loss of the Raft majority: start a new cluster incarnation
    /// from this member's state, with this member as the only voter. Other members must
    /// re-join. Never automatic; see docs/operations.md before using it.
    #[arg(long)]
    pub force_new_cluster: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    // First, while no other thread exists: systemd's variables leave the environment, so
    // Postgres children never talk to systemd themselves.
    let service = Service::from_env();
    let path = args.config.path();
    let cfg = LocalConfig::load(&path)?;
    let log = super::logging::init_reloadable(&cfg.log)?;
    // Before dropping privileges: it moves raft.data_dir aside inside its parent, which
    // `init`/`join` run as root leave owned by root; the new store is handed over below.
    let forced =
        if args.force_new_cluster { Some(bootstrap::force_new_cluster(&cfg.raft.data_dir)?) } else { None };
    become_service_user(&cfg, &path)?;
    raise_open_files_limit();
    // After the privilege drop, before the runtime: the long-lived thread every Postgres
    // child is forked from (its exit is what delivers their parent-death signal).
    // The fencer is forked first, while this process still has a single thread (DESIGN.md
    // lease rule 4): it SIGKILLs the postmaster's group when the lease deadline passes or
    // pgha dies, whatever state pgha is in.
    let fencer = if cfg.witness {
        None
    } else {
        Some(Arc::new(FencerHandle::spawn().context("cannot start the fencer")?))
    };
    let spawner = if cfg.witness {
        None
    } else {
        Some(Spawner::start().context("cannot start the Postgres spawner thread")?)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reloader = Reloader::new(path, cfg.clone(), log);
    rt.block_on(serve(cfg, forced, spawner.zip(fencer), service, reloader))
}

/// The proxy holds two sockets per client: lift the soft limit on open files to the hard one
/// (systemd's LimitNOFILE sets the hard one; the usual soft default of 1024 is far too low).
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!("cannot raise the open files limit from {}", lim.rlim_cur);
            }
        }
    }
}

/// As root: hand our directories to the service user and drop to it (no threads exist yet,
/// so every thread created later runs as that user). As anyone else: run as ourselves, but
/// only if the config names us.
fn become_service_user(cfg: &LocalConfig, path: &Path) -> Result<()> {
    if user::is_root() {
        let u = ServiceUser::lookup(&cfg.user)?;
        std::fs::create_dir_all(&cfg.raft.data_dir)
            .with_context(|| format!("cannot create raft.data_dir {}", cfg.raft.data_dir.display()))?;
        user::chown_tree(&cfg.raft.data_dir, u.uid, u.gid)?;
        if let Some(log_file) = &cfg.log.file {
            // Opened as root above; SIGHUP reopens it as the service user.
            user::chown_tree(log_file, u.uid, u.gid)?;
        }
        if !cfg.witness {
            // The data directory's parent holds pgha's socket directory, the server log and
            // clones in progress: the service user must write there.
            if let Some(parent) = cfg.postgresql.data_dir.parent() {
                create_owned_dirs(parent, &u)?;
            }
        }
        user::drop_privileges(&u)?;
        tracing::debug!(user = %u.name, uid = u.uid, "dropped root privileges");
        return Ok(());
    }
    let me = user::current_uid();
    match ServiceUser::lookup(&cfg.user) {
        Ok(u) if u.uid == me => Ok(()),
        Ok(u) => bail!(
            "{} says `user: {}` (uid {}) but pgha runs as uid {me}: run it as {} (or as root, which switches), or change `user:`",
            path.display(),
            cfg.user,
            u.uid,
            cfg.user
        ),
        Err(e) => bail!("{e} ({} names it in `user:`)", path.display()),
    }
}

/// Creates `dir` and its missing ancestors, giving the ones it created (only those) to `u`.
fn create_owned_dirs(dir: &Path, u: &ServiceUser) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_owned());
        cur = d.parent();
    }
    for d in missing.iter().rev() {
        std::fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
        nix::unistd::chown(d, Some(u.uid.into()), Some(u.gid.into()))
            .with_context(|| format!("cannot give {} to {}", d.display(), u.name))?;
    }
    Ok(())
}

/// The HA loop of a data member, after stopping a postmaster an earlier pgha left behind.
async fn start_ha(
    cfg: &LocalConfig,
    spawner: Spawner,
    handle: crate::dcs::handle::Handle,
    fence: Arc<dyn Fence>,
    shutdown: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, HaControl)> {
    let data_dir = &cfg.postgresql.data_dir;
    match stop_leftover(data_dir, LEFTOVER_STOP).await? {
        Leftover::None => {}
        found => tracing::warn!(?found, data_dir = %data_dir.display(), "stopped a leftover postmaster"),
    }
    let bin = BinDir::resolve(cfg.postgresql.bin_dir.as_deref(), data_dir)?;
    let user = ServiceUser::lookup(&cfg.user)?;
    let tools = PgTools::new(bin, user, spawner);
    let local = LocalPostgres::new(cfg, tools)?;
    let options = HaOptions {
        post_bootstrap: cfg.bootstrap.post_bootstrap.clone(),
        watchdog: Watchdog::new(&cfg.watchdog),
        callbacks: CallbackRunner::new(&cfg.callbacks, &cfg.scope),
        safety_margin_s: cfg.watchdog.safety_margin,
    };
    let (ha, control) = HaLoop::new(cfg.name.clone(), handle, local, fence, options);
    Ok((tokio::spawn(ha.run(shutdown)), control))
}

/// `forced`: the member identity after `--force-new-cluster` (this member is the only voter
/// and campaigns at once).
/// `postgres`: a data member's spawner and fencer (witnesses run no Postgres).
async fn serve(
    cfg: LocalConfig,
    forced: Option<MemberMeta>,
    postgres: Option<(Spawner, Arc<FencerHandle>)>,
    service: Service,
    mut reloader: Reloader,
) -> Result<()> {
    let node_tls = NodeTls::load(&cfg.tls.cafile, &cfg.tls.certfile, &cfg.tls.keyfile)?;
    if node_tls.scope() != cfg.scope {
        bail!(
            "the node certificate {} is for cluster {} but the config says scope: {}",
            cfg.tls.certfile.display(),
            node_tls.scope(),
            cfg.scope
        );
    }
    let dir = &cfg.raft.data_dir;
    let logger = raft_log::logger();
    let force_new_cluster = forced.is_some();
    let meta = match forced {
        Some(meta) => meta,
        None => MemberMeta::load(dir)?,
    };
    if meta.name != cfg.name || meta.scope != cfg.scope {
        bail!(
            "{} belongs to member {} of cluster {}, but the config says name: {}, scope: {}",
            dir.display(),
            meta.name,
            meta.scope,
            cfg.name,
            cfg.scope
        );
    }
    let store = FileLogStore::open(dir)?;
    let margin = Duration::from_secs(cfg.watchdog.safety_margin);
    let mut core_cfg = CoreConfig::new(meta.node_id, meta.name.clone(), margin);
    core_cfg.instance = random_instance();
    let mut core = RaftCore::new(store, core_cfg, &logger)?;
    if force_new_cluster {
        core.campaign()?;
    }
    let reach = Reachability::default();
    let (handle, io, inbox_tx, peer_events) = driver::channels(core.state().cloned(), reach.clone());
    let me = LocalIdentity {
        scope: cfg.scope.clone(),
        incarnation: meta.incarnation.clone(),
        node_id: meta.node_id,
        name: meta.name.clone(),
    };
    let outbox = Outbox::new(me.clone(), &node_tls, peer_events, reach)?;
    let raft_listener = tokio::net::TcpListener::bind(&cfg.raft.listen)
        .await
        .with_context(|| format!("cannot listen on raft.listen {}", cfg.raft.listen))?;
    let api_listener = std::net::TcpListener::bind(&cfg.restapi.listen)
        .with_context(|| format!("cannot listen on restapi.listen {}", cfg.restapi.listen))?;
    api_listener.set_nonblocking(true)?;
    let proxy_listeners = crate::proxy::Listeners::bind(&cfg.proxy)?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let proxy_stats = crate::proxy::spawn(proxy_listeners, &cfg.proxy, handle.clone(), shutdown_rx.clone())?;
    let acceptor = RaftAcceptor::from(tls::raft_server_config(&node_tls)?);
    tokio::spawn(transport::serve(raft_listener, acceptor, me, handle.watch_state(), inbox_tx));
    let (ha_stop_tx, ha_stop_rx) = watch::channel(false);
    let fencer = postgres.as_ref().map(|(_, f)| f.clone());
    let (mut ha, ha_control) = match postgres {
        Some((spawner, fence)) => {
            let (task, control) = start_ha(&cfg, spawner, handle.clone(), fence, ha_stop_rx).await?;
            (Some(task), Some(control))
        }
        None => (None, None),
    };
    let ctx = ApiContext {
        dcs: handle.clone(),
        scope: cfg.scope.clone(),
        me: cfg.name.clone(),
        safety_margin_s: cfg.watchdog.safety_margin,
        ha: ha_control.clone(),
        superuser: cfg.postgresql.authentication.superuser.clone(),
        peers: ApiClient::new(
            Vec::new(),
            tls::api_client_config(&node_tls.ca_der, None)?,
            Duration::from_secs(2),
        ),
        basic_auth: cfg.restapi.authentication.clone(),
        proxy: Some(proxy_stats),
    };
    let api = tokio::spawn(server::serve(
        api_listener,
        tls::api_server_config(&node_tls)?,
        ctx,
        shutdown_rx.clone(),
    ));
    tokio::spawn(crate::api::known::keep_written(
        handle.clone(),
        cfg.raft.data_dir.clone(),
        cfg.name.clone(),
        shutdown_rx.clone(),
    ));
    service.ready(cfg.name.as_str(), handle.clone(), ha_control, shutdown_rx.clone());
    let mut driver = tokio::spawn(driver::run(core, io, outbox, shutdown_rx, meta.seed_peers.clone()));
    tracing::info!(
        member = %cfg.name,
        node = %meta.node_id,
        api = %cfg.restapi.listen,
        raft = %cfg.raft.listen,
        "pgha {} running",
        crate::VERSION
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let fencer_died = async {
        match &fencer {
            Some(f) => f.wait_death().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(fencer_died);
    let result = loop {
        let stop = tokio::select! {
            r = &mut driver => break r,
            // Postgres would no longer be fenced: stop at once, and with us the postmaster (its
            // parent-death signal) — never run a primary unfenced.
            why = &mut fencer_died => bail!("the fencer process died ({why}); stopping so Postgres is never left unfenced"),
            _ = term.recv() => true,
            _ = int.recv() => true,
            _ = hup.recv() => { service.reload(&mut reloader); false }
        };
        if stop {
            service.stopping();
            stop_ha(&ha_stop_tx, ha.take()).await;
            let _ = shutdown_tx.send(true);
            break driver.await;
        }
    };
    stop_ha(&ha_stop_tx, ha.take()).await;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), api).await;
    match result {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("the Raft member stopped")),
        Err(e) => bail!("the Raft member crashed: {e}"),
    }
}

/// Stops the HA loop (it stops Postgres, and a primary releases its lease) and waits for it.
async fn stop_ha(stop: &watch::Sender<bool>, ha: Option<tokio::task::JoinHandle<()>>) {
    let _ = stop.send(true);
    if let Some(task) = ha {
        if tokio::time::timeout(HA_STOP, task).await.is_err() {
            tracing::error!("the HA loop did not stop within {HA_STOP:?}");
        }
    }
}

/// A fresh instance id for this run's proposals (see `CoreConfig::instance`).
fn random_instance() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    u32::from_be_bytes(b)
}
