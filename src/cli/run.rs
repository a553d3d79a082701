//! `pgha run`: one node's process. Drops to the service user before any thread exists, then
//! starts the Raft member, its transport and the REST API on one tokio runtime, and stops them
//! in order on SIGTERM/SIGINT (a Raft leader first hands leadership to another voter).

use super::ConfigArg;
use crate::api::client::ApiClient;
use crate::api::server::{self, ApiContext};
use crate::config::file::LocalConfig;
use crate::dcs::file_store::FileLogStore;
use crate::dcs::meta::MemberMeta;
use crate::dcs::node::{CoreConfig, RaftCore};
use crate::dcs::transport::{self, LocalIdentity, Outbox, RaftAcceptor, Reachability};
use crate::dcs::{bootstrap, driver, raft_log};
use crate::sys::user::{self, ServiceUser};
use crate::tls::{self, NodeTls};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

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
    let path = args.config.path();
    let cfg = LocalConfig::load(&path)?;
    super::logging::init(Some(&cfg.log));
    // Before dropping privileges: it moves raft.data_dir aside inside its parent, which
    // `init`/`join` run as root leave owned by root; the new store is handed over below.
    let forced =
        if args.force_new_cluster { Some(bootstrap::force_new_cluster(&cfg.raft.data_dir)?) } else { None };
    become_service_user(&cfg, &path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(cfg, forced))
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

/// `forced`: the member identity after `--force-new-cluster` (this member is the only voter
/// and campaigns at once).
async fn serve(cfg: LocalConfig, forced: Option<MemberMeta>) -> Result<()> {
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

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let acceptor = RaftAcceptor::from(tls::raft_server_config(&node_tls)?);
    tokio::spawn(transport::serve(raft_listener, acceptor, me, handle.watch_state(), inbox_tx));
    let ctx = ApiContext {
        dcs: handle.clone(),
        scope: cfg.scope.clone(),
        me: cfg.name.clone(),
        safety_margin_s: cfg.watchdog.safety_margin,
        peers: ApiClient::new(
            Vec::new(),
            tls::api_client_config(&node_tls.ca_der, None)?,
            Duration::from_secs(2),
        ),
    };
    let api = tokio::spawn(server::serve(
        api_listener,
        tls::api_server_config(&node_tls)?,
        ctx,
        shutdown_rx.clone(),
    ));
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
    let result = tokio::select! {
        r = &mut driver => r,
        _ = term.recv() => { let _ = shutdown_tx.send(true); driver.await }
        _ = int.recv() => { let _ = shutdown_tx.send(true); driver.await }
    };
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

/// A fresh instance id for this run's proposals (see `CoreConfig::instance`).
fn random_instance() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    u32::from_be_bytes(b)
}
