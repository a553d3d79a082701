//! The workload: client threads in the client namespace writing uniquely numbered rows, some
//! through a node's proxy writer port, some straight to a node's Postgres, each on one kept
//! connection (reconnecting after any error). For every write the history records its number,
//! the writer, when it started and ended (on the boot clock, from the workload's start), and
//! its outcome: acknowledged (COMMIT returned) with the node that answered (its address, as
//! Postgres saw it) and that node's timeline at the commit, failed with the error, or unknown
//! (no answer within the client's timeout).
//!
//! Each write is `BEGIN; INSERT … RETURNING <timeline>, inet_server_addr(); COMMIT`: the
//! timeline comes from `pg_walfile_name(pg_current_wal_lsn())`, which follows a promotion at
//! once (`pg_control_checkpoint()` lags until the next checkpoint), and the acknowledgement is
//! the `COMMIT`'s reply, which Postgres sends only after the commit is durable (and, in
//! synchronous mode, confirmed by the synchronous standby).

use crate::checker::{Outcome, Write};
use crate::net::enter;
use pgha::clock::{boot_now, BootInstant};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TABLE_DDL: &str =
    "CREATE TABLE IF NOT EXISTS fault_w (id bigint PRIMARY KEY, writer text NOT NULL)";
const INSERT: &str = "INSERT INTO fault_w (id, writer) VALUES ($1, $2) \
     RETURNING substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), host(inet_server_addr())";
/// A write with no answer by then counts as unknown (and the connection is dropped).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Between writes of one client: keeps 6 clients from saturating 2 cores.
const THINK: Duration = Duration::from_millis(20);
/// After an error, before reconnecting.
const BACKOFF: Duration = Duration::from_millis(200);

/// Where one client connects.
#[derive(Clone, Debug)]
pub struct Target {
    /// Shown in the history, e.g. `proxy@node1`, `direct@node2`.
    pub label: String,
    pub addr: String,
    pub port: u16,
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Write>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    t0: BootInstant,
}

impl Workload {
    /// Starts one client per target in namespace `ns`. `addr_names` maps node addresses to
    /// member names (to name the node that acknowledged).
    pub fn start(
        ns: &str,
        targets: &[Target],
        addr_names: Vec<(String, String)>,
        password: &str,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(1));
        let t0 = boot_now();
        let threads = targets
            .iter()
            .cloned()
            .map(|t| {
                let (stop, history, next) = (stop.clone(), history.clone(), next.clone());
                let (ns, names, password) = (ns.to_string(), addr_names.clone(), password.to_string());
                std::thread::Builder::new()
                    .name(format!("writer {}", t.label))
                    .spawn(move || {
                        enter(&ns);
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime for a writer");
                        rt.block_on(client(t, stop, history, next, names, password, t0));
                    })
                    .expect("spawn a writer")
            })
            .collect();
        Workload { stop, history, threads, t0 }
    }

    /// The history so far.
    pub fn history(&self) -> Vec<Write> {
        self.history.lock().unwrap().clone()
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.history.lock().unwrap().iter().filter(|w| matches!(w.outcome, Outcome::Ack { .. })).count()
    }

    /// Time since the workload started (the history's clock).
    pub fn elapsed(&self) -> Duration {
        boot_now().saturating_since(self.t0)
    }

    /// Stops every client (each finishes or times out its current write) and returns the
    /// complete history.
    pub fn stop(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.history()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn client(
    t: Target,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Write>>>,
    next: Arc<AtomicU64>,
    names: Vec<(String, String)>,
    password: String,
    t0: BootInstant,
) {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&t.addr)
        .port(t.port)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(CONNECT_TIMEOUT);
    let mut conn: Option<tokio_postgres::Client> = None;
    let since = |t0: BootInstant| boot_now().saturating_since(t0);
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = conn.as_mut() else {
            match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls)).await {
                Ok(Ok((client, connection))) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    conn = Some(client);
                }
                _ => pause_async(BACKOFF).await,
            }
            continue;
        };
        let id = next.fetch_add(1, Ordering::SeqCst);
        let start = since(t0);
        let result = tokio::time::timeout(WRITE_TIMEOUT, write(c, id, &t.label)).await;
        let end = since(t0);
        let outcome = match result {
            Ok(Ok((timeline, addr))) => {
                let node = names.iter().find(|(a, _)| *a == addr).map(|(_, n)| n.clone()).unwrap_or(addr);
                Outcome::Ack { node, timeline }
            }
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Unknown,
        };
        let failed = !matches!(outcome, Outcome::Ack { .. });
        history.lock().unwrap().push(Write { id, writer: t.label.clone(), start, end, outcome });
        if failed {
            conn = None;
            pause_async(BACKOFF).await;
        } else {
            pause_async(THINK).await;
        }
    }
}

async fn write(c: &mut tokio_postgres::Client, id: u64, writer: &str) -> Result<(u32, String), String> {
    let show = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    let tx = c.transaction().await.map_err(show)?;
    let row = tx.query_one(INSERT, &[&(id as i64), &writer]).await.map_err(show)?;
    tx.commit().await.map_err(show)?;
    let tl: String = row.get(0);
    let addr: String = row.get(1);
    let tl = u32::from_str_radix(&tl, 16).map_err(|e| format!("timeline {tl:?}: {e}"))?;
    Ok((tl, addr))
}

/// The workload is a driver: it waits on real time (clippy.toml allows this one place).
#[allow(clippy::disallowed_methods)]
async fn pause_async(d: Duration) {
    tokio::time::sleep(d).await
}
