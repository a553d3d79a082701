//! The built-in TCP proxy (DESIGN.md "proxy"): on every node a writer port that always leads
//! to the current primary and a reader port spread round-robin over healthy replicas, so
//! applications need no HAProxy. Routing follows the replicated state the moment it changes
//! ([`route`]); no health-check polling.
//!
//! Each client connection is one task that copies bytes both ways and counts them; the
//! Postgres protocol is not parsed (TLS between client and Postgres passes through). When the
//! member a connection leads to stops being the primary (switchover, failover, lease lost) —
//! or, on the reader port, stops streaming or becomes the primary — the connection is closed
//! at once, so no client keeps writing to a former primary. Without a primary, a new writer
//! connection waits up to `proxy.primary_wait`, then is refused with a Postgres error the
//! client shows ([`pgwire`]).

pub mod pgwire;
pub mod route;
pub mod stats;

use crate::config::file::{ProxyConfig, ReplicaFallback};
use crate::dcs::handle::Handle;
use route::{Backend, Routes};
use stats::{Port, ProxyStats};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Copy buffer per direction, allocated when the first bytes arrive (idle connections cost
/// only their sockets and task).
const BUFFER: usize = 32 * 1024;
/// Routes are recomputed at least this often: a replica's report can go stale without any
/// change to the state.
const REFRESH: Duration = Duration::from_secs(1);
/// A primary that refused a connection is tried again after this long if it is still the one.
const RETRY_SAME_PRIMARY: Duration = Duration::from_millis(300);

/// The proxy's listeners, bound by `pgha run` before anything else starts, so a port taken by
/// another program is an error at start-up.
pub struct Listeners {
    pub writer: Option<std::net::TcpListener>,
    pub reader: Option<std::net::TcpListener>,
}

impl Listeners {
    pub fn bind(cfg: &ProxyConfig) -> anyhow::Result<Listeners> {
        let bind = |key: &str, addr: Option<&str>| -> anyhow::Result<Option<std::net::TcpListener>> {
            let Some(addr) = addr else { return Ok(None) };
            let l = std::net::TcpListener::bind(addr).map_err(|e| {
                anyhow::anyhow!(
                    "{key} {addr}: cannot listen ({e}): another program uses the port? choose another \
                     port or set {key}: off"
                )
            })?;
            l.set_nonblocking(true)?;
            Ok(Some(l))
        };
        Ok(Listeners {
            writer: bind("proxy.listen", cfg.writer_listen())?,
            reader: bind("proxy.replicas_listen", cfg.replicas_listen())?,
        })
    }
}

struct Shared {
    cfg: ProxyConfig,
    routes: watch::Receiver<Arc<Routes>>,
    stats: Arc<ProxyStats>,
    /// Client connections open over both ports.
    open: AtomicUsize,
    /// Round-robin position on the reader port.
    next_reader: AtomicUsize,
}

/// Starts the listeners' tasks and the route keeper; they end when `shutdown` turns true.
/// Returns the counters for `/metrics`.
pub fn spawn(
    listeners: Listeners,
    cfg: &ProxyConfig,
    dcs: Handle,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<ProxyStats>> {
    let stats = Arc::new(ProxyStats::default());
    let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::default()));
    tokio::spawn(keep_routes(dcs, cfg.max_replica_lag, routes_tx, shutdown.clone()));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        routes: routes_rx,
        stats: stats.clone(),
        open: AtomicUsize::new(0),
        next_reader: AtomicUsize::new(0),
    });
    // Client connections run on a runtime of their own, one thread: copying is a few
    // syscalls per message, and one thread avoids cross-thread wake-ups and work stealing
    // (measured in scripts/bench-proxy.sh).
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().thread_name("pgha-proxy").build()?;
    let mut loops = Vec::new();
    for (listener, port) in [(listeners.writer, Port::Writer), (listeners.reader, Port::Reader)] {
        if let Some(l) = listener {
            tracing::info!(port = port.as_str(), addr = %l.local_addr()?, "proxy listening");
            loops.push((l, port));
        }
    }
    std::thread::Builder::new().name("pgha-proxy".into()).spawn(move || {
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for (l, port) in loops {
                match TcpListener::from_std(l) {
                    Ok(l) => tasks.push(tokio::spawn(accept_loop(l, port, shared.clone(), shutdown.clone()))),
                    Err(e) => tracing::error!(port = port.as_str(), "proxy cannot use its listener: {e}"),
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    })?;
    Ok(stats)
}

async fn keep_routes(
    dcs: Handle,
    max_lag: u64,
    tx: watch::Sender<Arc<Routes>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut states = dcs.watch_state();
    loop {
        if let Some(st) = states.borrow_and_update().clone() {
            let routes = Routes::from_state(&st, max_lag, crate::clock::wall_now_ms());
            tx.send_if_modified(|current| {
                if **current == routes {
                    return false;
                }
                let writer = |r: &Routes| r.writer.as_ref().map(|b| b.member.to_string());
                if writer(current) != writer(&routes) {
                    tracing::info!(primary = ?writer(&routes), "proxy: writer route changed");
                }
                *current = Arc::new(routes);
                true
            });
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            _ = crate::clock::sleep(REFRESH) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: Port,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(port = port.as_str(), "proxy cannot accept: {e}");
                    crate::clock::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        stats::add(&shared.stats.port(port).accepted, 1);
        let shared = shared.clone();
        tokio::spawn(async move { serve(client, port, shared).await });
    }
}

/// Counts an open client connection for as long as it lives.
struct Open<'a>(&'a Shared, Port);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.port(self.1).active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a client was refused, in words it shows.
struct Refusal {
    sqlstate: &'static str,
    message: String,
}

async fn serve(mut client: TcpStream, port: Port, shared: Arc<Shared>) {
    let sh = &*shared;
    sh.open.fetch_add(1, Ordering::Relaxed);
    stats::add(&sh.stats.port(port).active, 1);
    let _open = Open(sh, port);
    let _ = client.set_nodelay(true);
    keepalive(&client, sh.cfg.keepalive_idle);
    let routed = if sh.open.load(Ordering::Relaxed) > sh.cfg.max_connections {
        Err(Refusal {
            sqlstate: pgwire::TOO_MANY_CONNECTIONS,
            message: format!(
                "pgha proxy: too many connections (proxy.max_connections {})",
                sh.cfg.max_connections
            ),
        })
    } else {
        connect(port, sh).await
    };
    let (target, backend) = match routed {
        Ok(t) => t,
        Err(r) => {
            stats::add(&sh.stats.port(port).refused, 1);
            tracing::debug!(port = port.as_str(), "proxy refused a client: {}", r.message);
            pgwire::refuse(&mut client, r.sqlstate, &r.message).await;
            return;
        }
    };
    let counters = sh.stats.backend(target.backend.member.as_str());
    stats::add(&counters.connections, 1);
    let mut routes = sh.routes.clone();
    let (cr, cw) = client.into_split();
    let (br, bw) = backend.into_split();
    let cut = async {
        loop {
            if !target.still_valid(&routes.borrow_and_update()) {
                return;
            }
            if routes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        _ = pump(cr, bw, &counters.bytes_to_backend) => {}
        _ = pump(br, cw, &counters.bytes_to_client) => {}
        _ = cut => {
            stats::add(&sh.stats.port(port).cut, 1);
            tracing::debug!(backend = %target.backend.member, "proxy closed a connection: its backend changed role");
        }
    }
}

/// Where one client connection leads, and why it may stay there.
struct Target {
    backend: Backend,
    /// It goes to the primary (writer port, or the reader port's fallback).
    primary: bool,
}

impl Target {
    fn still_valid(&self, r: &Routes) -> bool {
        if self.primary {
            r.writer.as_ref() == Some(&self.backend)
        } else {
            r.streaming.contains(&self.backend.member)
                && r.writer.as_ref().map(|w| &w.member) != Some(&self.backend.member)
        }
    }
}

/// Picks the backend for a new client and connects to it. A primary that cannot be reached
/// (its machine just died; the lease has not expired yet) is waited out: the client waits for
/// the next primary, within `proxy.primary_wait` in all, like a client arriving during a
/// failover.
async fn connect(port: Port, sh: &Shared) -> Result<(Target, TcpStream), Refusal> {
    let wait = Duration::from_secs(sh.cfg.primary_wait);
    let started = crate::clock::boot_now();
    let mut unreachable: Option<Backend> = None;
    loop {
        let left = wait.saturating_sub(crate::clock::boot_now().saturating_since(started));
        let target = pick(port, sh, left, unreachable.as_ref()).await?;
        match dial(&target.backend, sh).await {
            Ok(stream) => return Ok((target, stream)),
            Err(why) => {
                let left = wait.saturating_sub(crate::clock::boot_now().saturating_since(started));
                if !target.primary || left.is_zero() {
                    return Err(Refusal {
                        sqlstate: pgwire::CANNOT_CONNECT_NOW,
                        message: format!(
                            "pgha proxy: cannot reach {} at {}: {why}",
                            target.backend.member, target.backend.address
                        ),
                    });
                }
                unreachable = Some(target.backend);
            }
        }
    }
}

/// The backend for a new client. `unreachable`: a primary just found dead; wait for another.
async fn pick(
    port: Port,
    sh: &Shared,
    wait: Duration,
    unreachable: Option<&Backend>,
) -> Result<Target, Refusal> {
    let primary = |sh| async move {
        Ok(Target { backend: wait_for_primary(sh, wait, unreachable).await?, primary: true })
    };
    match port {
        Port::Writer => primary(sh).await,
        Port::Reader => {
            let readers = sh.routes.borrow().readers.clone();
            if !readers.is_empty() {
                let i = sh.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
                return Ok(Target { backend: readers[i].clone(), primary: false });
            }
            match sh.cfg.replica_fallback {
                ReplicaFallback::Primary => primary(sh).await,
                ReplicaFallback::Refuse => Err(Refusal {
                    sqlstate: pgwire::CANNOT_CONNECT_NOW,
                    message: format!(
                        "pgha proxy: no replica is streaming within proxy.max_replica_lag ({} bytes); \
                         reads are refused (proxy.replica_fallback: refuse)",
                        sh.cfg.max_replica_lag
                    ),
                }),
            }
        }
    }
}

/// Connects to `backend` within `proxy.connect_timeout`; failures count and are logged.
async fn dial(backend: &Backend, sh: &Shared) -> Result<TcpStream, String> {
    let timeout = Duration::from_secs(sh.cfg.connect_timeout);
    // A host name is resolved without libc (STACK.md item 2); an IP literal costs nothing.
    let connect = crate::sys::resolve::connect(backend.address.as_str());
    let result = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {} s (proxy.connect_timeout)", sh.cfg.connect_timeout)),
    };
    match result {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            keepalive(&stream, sh.cfg.keepalive_idle);
            Ok(stream)
        }
        Err(why) => {
            stats::add(&sh.stats.backend(backend.member.as_str()).errors, 1);
            tracing::warn!(backend = %backend.member, address = %backend.address, "proxy cannot reach Postgres: {why}");
            Err(why)
        }
    }
}

async fn wait_for_primary(
    sh: &Shared,
    wait: Duration,
    unreachable: Option<&Backend>,
) -> Result<Backend, Refusal> {
    let mut routes = sh.routes.clone();
    let primary = async {
        loop {
            let current = routes.borrow_and_update().writer.clone();
            match current {
                // The primary that just refused us: another one, or the same one again a
                // moment later (a postmaster restarted in place keeps the lease).
                Some(w) if Some(&w) == unreachable => {
                    tokio::select! {
                        changed = routes.changed() => changed.ok()?,
                        _ = crate::clock::sleep(RETRY_SAME_PRIMARY) => return Some(w),
                    }
                }
                Some(w) => return Some(w),
                None => routes.changed().await.ok()?,
            }
        }
    };
    if let Ok(Some(w)) = tokio::time::timeout(wait, primary).await {
        return Ok(w);
    }
    Err(Refusal {
        sqlstate: pgwire::CANNOT_CONNECT_NOW,
        message: format!(
            "pgha proxy: no primary for {} s (proxy.primary_wait): a failover may be in progress, \
             or the cluster has no quorum; `pgha ctl list` shows the members",
            sh.cfg.primary_wait
        ),
    })
}

/// Copies `from` to `to` until either side ends, counting bytes as they pass.
async fn pump(from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: &std::sync::atomic::AtomicU64) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if from.readable().await.is_err() {
            break;
        }
        if buf.is_empty() {
            buf = vec![0u8; BUFFER];
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        stats::add(counter, n as u64);
    }
    let _ = to.shutdown().await;
}

/// TCP keepalive after `idle_s` seconds of silence, then every 10 s, dropped after 3 misses
/// (0: off). A dead client or backend is noticed without any traffic.
fn keepalive(sock: &TcpStream, idle_s: u64) {
    if idle_s == 0 {
        return;
    }
    let fd = sock.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: fd is a live socket owned by `sock`; value is a c_int as these options take.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_s.min(i32::MAX as u64) as libc::c_int);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}
