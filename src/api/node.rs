//! The local member's Patroni endpoints: `GET /patroni`, the health checks (`/primary`,
//! `/replica?lag=…`, `/health`, … with `HEAD` and `OPTIONS` answering like `GET`), `/metrics`
//! (Prometheus text), and the manual actions `POST /restart`, `/reload`, `/reinitialize`, which
//! the HA loop carries out (`ha::control`). `/primary` and `/leader` are judged from the lease
//! deadline at request time, so they turn 503 the moment the deadline passes even if the HA
//! loop is stuck; `/liveness` turns 503 when the loop has not finished an iteration within
//! `ttl`.

use super::error::ApiError;
use super::health::{self, Check, MemberHealth, PgRunState, Query, ReplicaKind};
use super::server::ApiContext;
use crate::dcs::state::ClusterState;
use crate::dcs::state::Tags;
use crate::dcs::state::{Command, Outcome, Rejection, ScheduledRestart};
use crate::ha::control::{
    parse_postgres_version, NodeView, Request, RequestError, RestartConditions, RoleFilter,
};
use crate::ha::observe::{LocalPg, PgRole};
use crate::types::{Lsn, MemberName};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Every path Patroni answers with a health check.
const HEALTH_PATHS: [&str; 18] = [
    "/",
    "/primary",
    "/master",
    "/read-write",
    "/leader",
    "/standby-leader",
    "/standby_leader",
    "/replica",
    "/read-only",
    "/sync",
    "/synchronous",
    "/async",
    "/asynchronous",
    "/quorum",
    "/read-only-sync",
    "/health",
    "/liveness",
    "/readiness",
];

/// How long `POST /restart` waits for the loop: the clean stop, then the start.
const RESTART_REPLY: Duration = Duration::from_secs(200);
/// `POST /reload` and `POST /reinitialize` answer once the loop took the request.
const QUICK_REPLY: Duration = Duration::from_secs(70);

pub fn routes() -> Router<ApiContext> {
    let mut r = Router::new()
        .route("/patroni", get(patroni).options(patroni))
        .route("/metrics", get(metrics))
        .route("/restart", post(restart).delete(cancel_restart))
        .route("/reload", post(reload))
        .route("/reinitialize", post(reinitialize))
        .route("/dsn", get(dsn));
    for path in HEALTH_PATHS {
        r = r.route(path, get(health_check).options(health_check));
    }
    r
}

/// What the API knows of the local member at request time.
struct Snapshot {
    me: MemberName,
    view: Option<Arc<NodeView>>,
    cluster: Option<Arc<ClusterState>>,
    lease_valid: bool,
    /// Time left on this member's own lease deadline (zero unless it holds a valid lease).
    lease_left: Duration,
}

impl Snapshot {
    /// Published as a synchronous standby by the primary (mode `on`).
    fn is_sync_standby(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.sync.members.contains(&self.me) && !c.quorum_mode())
    }

    /// Published as a member of the primary's `ANY k` quorum (mode `quorum`).
    fn is_quorum_standby(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.sync.members.contains(&self.me) && c.quorum_mode())
    }

    fn tags(&self) -> Tags {
        self.cluster
            .as_ref()
            .and_then(|c| c.members.get(&self.me))
            .map(|m| m.tags.clone())
            .unwrap_or_default()
    }
}

async fn snapshot(ctx: &ApiContext) -> Snapshot {
    let (lease_valid, lease_left) = match ctx.dcs.lease().await {
        Ok(l) if l.deadline.is_some() && l.holder.as_ref() == Some(&ctx.me) => (true, l.time_left),
        _ => (false, Duration::ZERO),
    };
    Snapshot {
        me: ctx.me.clone(),
        view: ctx.ha.as_ref().and_then(|h| h.view()),
        cluster: ctx.dcs.state(),
        lease_valid,
        lease_left,
    }
}

async fn patroni(State(ctx): State<ApiContext>, method: Method) -> Response {
    let snap = snapshot(&ctx).await;
    let body = member_json(&ctx.scope, &snap, crate::clock::wall_now_ms());
    respond(&method, StatusCode::OK, body)
}

/// `GET`'s status and body; `HEAD` (axum drops the body) and `OPTIONS` the same status.
fn respond(method: &Method, status: StatusCode, body: Value) -> Response {
    if method == Method::OPTIONS {
        return status.into_response();
    }
    (status, Json(body)).into_response()
}

async fn health_check(
    State(ctx): State<ApiContext>,
    method: Method,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(check) = Check::from_path(uri.path()) else {
        return ApiError::NotFound(format!("no health check at {}", uri.path())).into_response();
    };
    let pairs = parse_query(raw.as_deref().unwrap_or(""));
    let query = match Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(q) => q,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    let snap = snapshot(&ctx).await;
    let ok = member_health(&snap).is_some_and(|m| health::healthy(check, &query, &m));
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = member_json(&ctx.scope, &snap, crate::clock::wall_now_ms());
    respond(&method, status, body)
}

/// `a=1&b=x%20y` into pairs (percent-decoding, `+` as space).
fn parse_query(raw: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = (b[i] == b'%' && i + 2 < b.len())
                .then(|| s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .flatten();
            match (b[i], hex) {
                (_, Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (b'+', None) => {
                    out.push(b' ');
                    i += 1;
                }
                (c, None) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The primary's WAL position as last known to the cluster: what replica lag is measured
/// against.
fn primary_lsn(c: &ClusterState) -> Option<Lsn> {
    c.lease
        .as_ref()
        .and_then(|l| c.members.get(&l.holder))
        .and_then(|m| m.status.as_ref())
        .and_then(|s| s.wal_lsn)
        .or(c.last_primary_lsn)
}

/// The member as the health table sees it; `None` for a witness or before the first HA
/// iteration (every check fails).
fn member_health(snap: &Snapshot) -> Option<MemberHealth> {
    let view = snap.view.as_deref()?;
    let ttl = snap.cluster.as_ref().map_or(Duration::from_secs(10), |c| c.config.ttl());
    let (pg, primary, streaming) = match &view.pg {
        LocalPg::Running { role, streaming, .. } => {
            (PgRunState::Running, *role == PgRole::Primary, *streaming)
        }
        LocalPg::Starting | LocalPg::Recovering { .. } => (PgRunState::Starting, false, false),
        LocalPg::Absent | LocalPg::Stopped { .. } => (PgRunState::Stopped, false, false),
    };
    let position = view.probe.as_ref().and_then(|p| p.receive_lsn.max(p.replay_lsn));
    let lag = match (snap.cluster.as_deref().and_then(primary_lsn), position) {
        (Some(p), Some(l)) => Some(p.0.saturating_sub(l.0)),
        _ => None,
    };
    let tags = snap.tags();
    let mut tag_map = BTreeMap::new();
    if let Ok(Value::Object(o)) = serde_json::to_value(&tags) {
        for (k, v) in o {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            tag_map.insert(k, v);
        }
    }
    Some(MemberHealth {
        pg,
        primary,
        lease_valid: snap.lease_valid,
        streaming,
        lag,
        kind: if snap.is_sync_standby() {
            ReplicaKind::Sync
        } else if snap.is_quorum_standby() {
            ReplicaKind::Quorum
        } else {
            ReplicaKind::Async
        },
        noloadbalance: tags.noloadbalance,
        tags: tag_map,
        loop_alive: view.alive_within(ttl),
    })
}

/// Patroni's timestamp format: `2026-11-25 17:15:52.930888+00:00`.
fn pg_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// `GET /patroni`: the member in Patroni's shape (`shared/reference/…/leader_patroni.json`).
fn member_json(scope: &str, snap: &Snapshot, now_ms: u64) -> Value {
    let mut o = json!({
        "patroni": { "version": crate::VERSION, "scope": scope, "name": snap.me.as_str() },
    });
    let Some(view) = snap.view.as_deref() else {
        o["state"] =
            if snap.cluster.as_ref().and_then(|c| c.members.get(&snap.me)).is_some_and(|m| m.witness) {
                "witness (no postgres)"
            } else {
                "unknown"
            }
            .into();
        o["role"] = Value::Null;
        return o;
    };
    let state = if view.reinitializing {
        "creating replica"
    } else if view.restarting {
        "restarting"
    } else {
        match view.pg {
            LocalPg::Running { .. } => "running",
            LocalPg::Starting | LocalPg::Recovering { .. } => "starting",
            LocalPg::Absent | LocalPg::Stopped { .. } => "stopped",
        }
    };
    o["state"] = state.into();
    o["role"] = match view.pg {
        LocalPg::Running { role: PgRole::Primary, .. } => "primary",
        _ => "replica",
    }
    .into();
    o["dcs_last_seen"] = (view.wall_ms / 1000).into();
    if let Some(tl) = view.pg.timeline() {
        o["timeline"] = tl.0.into();
    }
    if let Some(sysid) = view.pg.system_identifier() {
        o["database_system_identifier"] = sysid.into();
    }
    if let Some(p) = &view.probe {
        o["postmaster_start_time"] = pg_time(p.postmaster_start_time).into();
        o["server_version"] = p.server_version.into();
        if p.in_recovery {
            o["xlog"] = json!({
                "received_location": p.receive_lsn.map(|l| l.0),
                "replayed_location": p.replay_lsn.map(|l| l.0),
                "replayed_timestamp": p.replay_timestamp.map(pg_time),
                "paused": p.wal_replay_paused,
            });
            let streaming = matches!(view.pg, LocalPg::Running { streaming: true, .. });
            if snap.is_sync_standby() {
                o["sync_standby"] = true.into();
            }
            if snap.is_quorum_standby() {
                o["quorum_standby"] = true.into();
            }
            o["replication_state"] = if streaming {
                "streaming".to_string()
            } else {
                p.wal_receiver.as_ref().map_or("in archive recovery".to_string(), |w| w.status.clone())
            }
            .into();
        } else {
            o["xlog"] = json!({ "location": p.wal_lsn.map(|l| l.0) });
            o["replication"] = p
                .replication
                .iter()
                .map(|r| {
                    json!({
                        "usename": r.usename,
                        "application_name": r.application_name,
                        "client_addr": r.client_addr,
                        "state": r.state,
                        "sync_state": r.sync_state,
                        "sync_priority": r.sync_priority,
                    })
                })
                .collect::<Vec<_>>()
                .into();
        }
        if p.needs_restart() {
            o["pending_restart"] = true.into();
            o["pending_restart_reason"] = p
                .pending_restart
                .iter()
                .map(|n| (n.clone(), Value::from("changed")))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
    }
    if let Some(c) = snap.cluster.as_deref() {
        if c.config.pause {
            o["pause"] = true.into();
        }
        if c.lease.is_none() {
            o["cluster_unlocked"] = true.into();
        }
        if let Some(r) = c.members.get(&snap.me).and_then(|m| m.scheduled_restart.as_ref()) {
            o["scheduled_restart"] = super::patroni::scheduled_restart_json(r);
        }
    }
    let tags = serde_json::to_value(snap.tags()).unwrap_or_default();
    if tags.as_object().is_some_and(|t| t.values().any(|v| v != &Value::Bool(false))) {
        o["tags"] = tags;
    }
    if view.watchdog_failed {
        o["watchdog_failed"] = true.into();
    }
    o["pgha"] = json!({
        "decision": view.decision.to_string(),
        "last_iteration_ms_ago": crate::clock::boot_now().saturating_since(view.at).as_millis() as u64,
        "now_ms": now_ms,
    });
    o
}

/// `GET /metrics`: Patroni's metric names (so dashboards keep working) and pgha's Raft and
/// lease figures, in the Prometheus text format.
async fn metrics(State(ctx): State<ApiContext>) -> Response {
    let snap = snapshot(&ctx).await;
    let raft = ctx.dcs.status_with_latency().await.ok();
    let mut text = render_metrics(&ctx.scope, &snap, raft.as_ref());
    if let Some(p) = &ctx.proxy {
        text.push_str(&render_proxy_metrics(&ctx.scope, ctx.me.as_str(), p));
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

fn render_metrics(
    scope: &str,
    snap: &Snapshot,
    raft: Option<&(crate::dcs::status::RaftStatus, crate::dcs::driver::CommitLatency)>,
) -> String {
    use std::fmt::Write;
    let labels = format!("scope=\"{}\",name=\"{}\"", escape(scope), escape(snap.me.as_str()));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}");
    };
    let view = snap.view.as_deref();
    let probe = view.and_then(|v| v.probe.as_ref());
    let running = view.is_some_and(|v| matches!(v.pg, LocalPg::Running { .. }));
    let primary = view.is_some_and(|v| v.pg.is_running_primary());
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    gauge("patroni_version", "pgha version as a Patroni-style number", version_number(crate::VERSION) as f64);
    gauge("patroni_postgres_running", "Postgres is running", b(running));
    gauge(
        "patroni_postmaster_start_time",
        "Epoch seconds of the postmaster start",
        probe.map_or(0.0, |p| {
            p.postmaster_start_time.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
        }),
    );
    gauge("patroni_primary", "This member is the primary", b(primary && snap.lease_valid));
    gauge(
        "patroni_xlog_location",
        "Current WAL position of the primary",
        probe.and_then(|p| p.wal_lsn).map_or(0.0, |l| l.0 as f64),
    );
    gauge("patroni_standby_leader", "Always 0: pgha has no standby clusters", 0.0);
    gauge("patroni_replica", "This member is a running replica", b(running && !primary));
    gauge(
        "patroni_sync_standby",
        "This member is a synchronous standby",
        b(running && !primary && snap.is_sync_standby()),
    );
    let sync_on = snap
        .cluster
        .as_ref()
        .is_some_and(|c| c.config.synchronous_mode != crate::config::dynamic::SynchronousMode::Off);
    gauge(
        "pgha_sync_degraded",
        "synchronous_mode is on but the primary acknowledges commits without a synchronous standby",
        b(sync_on && snap.cluster.as_ref().is_some_and(|c| c.sync.members.is_empty() && c.sync.degraded)),
    );
    gauge(
        "patroni_quorum_standby",
        "This member is a quorum standby",
        b(running && !primary && snap.is_quorum_standby()),
    );
    gauge(
        "patroni_xlog_received_location",
        "WAL received and flushed by this replica",
        probe.and_then(|p| p.receive_lsn).map_or(0.0, |l| l.0 as f64),
    );
    gauge(
        "patroni_xlog_replayed_location",
        "WAL replayed by this replica",
        probe.and_then(|p| p.replay_lsn).map_or(0.0, |l| l.0 as f64),
    );
    gauge(
        "patroni_xlog_replayed_timestamp",
        "Commit time of the last replayed transaction",
        probe
            .and_then(|p| p.replay_timestamp)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    gauge("patroni_xlog_paused", "WAL replay is paused", b(probe.is_some_and(|p| p.wal_replay_paused)));
    gauge(
        "patroni_postgres_server_version",
        "server_version_num",
        probe.map_or(0.0, |p| p.server_version as f64),
    );
    gauge(
        "patroni_cluster_unlocked",
        "No member holds the lease",
        b(snap.cluster.as_ref().is_some_and(|c| c.lease.is_none())),
    );
    gauge(
        "patroni_postgres_timeline",
        "Timeline of Postgres",
        view.and_then(|v| v.pg.timeline()).map_or(0.0, |t| t.0 as f64),
    );
    gauge(
        "patroni_dcs_last_seen",
        "Epoch seconds of the last HA iteration",
        view.map_or(0.0, |v| (v.wall_ms / 1000) as f64),
    );
    gauge(
        "patroni_pending_restart",
        "A parameter change waits for a restart",
        b(probe.is_some_and(|p| p.needs_restart())),
    );
    gauge(
        "patroni_is_paused",
        "Automatic failover is paused",
        b(snap.cluster.as_ref().is_some_and(|c| c.config.pause)),
    );
    if let Some((status, latency)) = raft {
        gauge("pgha_raft_term", "Raft term", status.term as f64);
        gauge("pgha_raft_commit_index", "Raft commit index", status.commit_index as f64);
        gauge("pgha_raft_applied_index", "Raft applied index", status.applied_index as f64);
        gauge(
            "pgha_raft_leader",
            "This member is the Raft leader",
            b(status.role == crate::dcs::status::RaftRole::Leader),
        );
        if let (Some(p50), Some(p99)) = (latency.p50_us, latency.p99_us) {
            let p50 = p50 as f64 / 1e6;
            let p99 = p99 as f64 / 1e6;
            gauge("pgha_raft_commit_latency_p50_seconds", "Median commit latency of recent proposals", p50);
            gauge(
                "pgha_raft_commit_latency_p99_seconds",
                "99th percentile commit latency of recent proposals",
                p99,
            );
        }
    }
    gauge("pgha_lease_valid", "This member holds a valid lease by its own clock", b(snap.lease_valid));
    gauge(
        "pgha_lease_seconds_left",
        "Seconds before this member's own lease deadline (0 when it holds none)",
        snap.lease_left.as_secs_f64(),
    );
    gauge("pgha_watchdog_active", "The watchdog device is armed", b(view.is_some_and(|v| v.watchdog_active)));
    gauge(
        "pgha_watchdog_failed",
        "watchdog.mode is required and no watchdog works: this member may not become primary",
        b(view.is_some_and(|v| v.watchdog_failed)),
    );
    out
}

/// The proxy's counters: per port (`writer`, `reader`) and per backend member.
fn render_proxy_metrics(scope: &str, me: &str, p: &crate::proxy::stats::ProxyStats) -> String {
    use crate::proxy::stats::{get, Port};
    use std::fmt::Write;
    let labels = format!("scope=\"{}\",name=\"{}\"", escape(scope), escape(me));
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (extra, v) in samples {
            let _ = writeln!(out, "{name}{{{labels},{extra}}} {v}");
        }
    };
    let ports = [Port::Writer, Port::Reader];
    let per_port = |f: &dyn Fn(&crate::proxy::stats::PortStats) -> u64| {
        ports.iter().map(|&port| (format!("port=\"{}\"", port.as_str()), f(p.port(port)))).collect::<Vec<_>>()
    };
    family("pgha_proxy_connections", "gauge", "Client connections open", per_port(&|s| get(&s.active)));
    family(
        "pgha_proxy_connections_total",
        "counter",
        "Client connections accepted",
        per_port(&|s| get(&s.accepted)),
    );
    family(
        "pgha_proxy_refused_total",
        "counter",
        "Client connections refused (no primary or replica, too many, backend unreachable)",
        per_port(&|s| get(&s.refused)),
    );
    family(
        "pgha_proxy_cut_total",
        "counter",
        "Connections closed because their backend stopped being the primary (or a replica)",
        per_port(&|s| get(&s.cut)),
    );
    let backends = p.backends();
    let per_backend = |f: &dyn Fn(&crate::proxy::stats::BackendStats) -> u64| {
        backends.iter().map(|(m, s)| (format!("backend=\"{}\"", escape(m)), f(s))).collect::<Vec<_>>()
    };
    family(
        "pgha_proxy_backend_connections_total",
        "counter",
        "Connections made to each backend",
        per_backend(&|s| get(&s.connections)),
    );
    family(
        "pgha_proxy_backend_errors_total",
        "counter",
        "Failed connection attempts to each backend",
        per_backend(&|s| get(&s.errors)),
    );
    let mut bytes = Vec::new();
    for (m, s) in &backends {
        bytes.push((format!("backend=\"{}\",direction=\"to_backend\"", escape(m)), get(&s.bytes_to_backend)));
        bytes.push((format!("backend=\"{}\",direction=\"to_client\"", escape(m)), get(&s.bytes_to_client)));
    }
    family("pgha_proxy_backend_bytes_total", "counter", "Bytes copied to and from each backend", bytes);
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `1.2.3` as Patroni's metric encodes versions: 10203.
fn version_number(v: &str) -> u64 {
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b, c) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    a * 10000 + b * 100 + c
}

/// Body of `POST /restart` (Patroni's keys).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartBody {
    #[serde(default)]
    restart_pending: bool,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    postgres_version: Option<String>,
    #[serde(default)]
    timeout: Option<Value>,
}

/// Body of `POST /reinitialize`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReinitializeBody {
    /// Patroni: cancel a running task first. pgha runs manual actions one at a time in the HA
    /// loop, so there is nothing to cancel; accepted for compatibility.
    #[serde(default)]
    #[allow(dead_code)]
    force: bool,
    #[serde(default, rename = "from-leader")]
    #[allow(dead_code)]
    from_leader: bool,
}

fn body_or_default<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest(format!("bad request body at {path}: {}", e.inner()))
    })
}

fn control(ctx: &ApiContext) -> Result<&crate::ha::control::HaControl, ApiError> {
    ctx.ha
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this member is a witness: it runs no Postgres".into()))
}

/// Patroni answers manual actions in plain text: 200 (or 202) on success, 503 otherwise.
fn outcome(ok: StatusCode, reply: Result<String, RequestError>) -> Response {
    match reply {
        Ok(text) => (ok, text).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn restart(State(ctx): State<ApiContext>, body: Bytes) -> Result<Response, ApiError> {
    let b: RestartBody = body_or_default(&body)?;
    let role = RoleFilter::parse(b.role.as_deref()).map_err(ApiError::BadRequest)?;
    let older_than = b
        .postgres_version
        .as_deref()
        .map(parse_postgres_version)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let wait = match b.timeout {
        None => RESTART_REPLY,
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            Duration::from_secs(n.as_u64().unwrap_or(0)).max(Duration::from_secs(1))
        }
        Some(Value::String(s)) if s.trim_end_matches('s').parse::<u64>().is_ok() => {
            Duration::from_secs(s.trim_end_matches('s').parse().unwrap_or(0)).max(Duration::from_secs(1))
        }
        Some(other) => return Err(ApiError::BadRequest(format!("timeout {other}: use seconds, like 60"))),
    };
    let control = control(&ctx)?;
    if let Some(schedule) = b.schedule.as_deref() {
        let at_ms = crate::clock::parse_rfc3339_ms(schedule)
            .map_err(|e| ApiError::BadRequest(format!("schedule {e}")))?;
        if at_ms < crate::clock::wall_now_ms() {
            return Err(ApiError::Unprocessable(format!(
                "cannot schedule a restart in the past ({schedule})"
            )));
        }
        let planned = ScheduledRestart {
            at_ms,
            restart_pending: b.restart_pending,
            role: role.map(|r| if r == RoleFilter::Primary { "primary" } else { "replica" }.to_string()),
            postgres_version: b.postgres_version,
        };
        let outcome = ctx
            .dcs
            .propose(Command::ScheduleRestart { member: ctx.me.clone(), restart: Some(planned) })
            .await?;
        return match outcome {
            Outcome::Rejected { reason } => Err(ApiError::Conflict(reason.to_string())),
            _ => Ok((StatusCode::ACCEPTED, "Restart scheduled").into_response()),
        };
    }
    let conditions = RestartConditions { only_pending: b.restart_pending, role, older_than };
    Ok(outcome(StatusCode::OK, control.request(Request::Restart(conditions), wait).await))
}

/// `DELETE /restart`: drops this member's scheduled restart (Patroni: 200, or 404 if none).
async fn cancel_restart(State(ctx): State<ApiContext>) -> Result<Response, ApiError> {
    control(&ctx)?;
    let outcome = ctx.dcs.propose(Command::ScheduleRestart { member: ctx.me.clone(), restart: None }).await?;
    match outcome {
        Outcome::Rejected { reason: r @ Rejection::NoRestartScheduled { .. } } => {
            Err(ApiError::NotFound(r.to_string()))
        }
        Outcome::Rejected { reason } => Err(ApiError::Conflict(reason.to_string())),
        _ => Ok((StatusCode::OK, "scheduled restart deleted").into_response()),
    }
}

async fn reload(State(ctx): State<ApiContext>) -> Result<Response, ApiError> {
    let reply = control(&ctx)?.request(Request::Reload, QUICK_REPLY).await;
    Ok(outcome(StatusCode::ACCEPTED, reply))
}

async fn reinitialize(State(ctx): State<ApiContext>, body: Bytes) -> Result<Response, ApiError> {
    let _: ReinitializeBody = body_or_default(&body)?;
    let reply = control(&ctx)?.request(Request::Reinitialize, QUICK_REPLY).await;
    Ok(outcome(StatusCode::OK, reply))
}

/// `GET /dsn?role=primary|replica|any&member=NAME` (client certificate required, it holds
/// the superuser password): a libpq connection string that connects to that member's
/// Postgres as the superuser.
async fn dsn(State(ctx): State<ApiContext>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let c = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    let pairs = parse_query(raw.as_deref().unwrap_or(""));
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let target = pick_member(&c, get("member"), get("role").unwrap_or("primary"))?;
    let address = c.members.get(&target).and_then(|m| m.pg_address.as_deref()).ok_or_else(|| {
        ApiError::Unavailable(format!("{target} has not published its Postgres address yet"))
    })?;
    let endpoint = crate::pg::conninfo::Endpoint::parse(address)
        .ok_or_else(|| ApiError::Internal(format!("{target} published a bad address {address}")))?;
    let password = ctx
        .superuser
        .password
        .clone()
        .or_else(|| c.secrets.get(crate::ha::local::SECRET_SUPERUSER).cloned())
        .ok_or_else(|| {
            ApiError::Unavailable("the superuser password is not known yet (bootstrap running?)".into())
        })?;
    let dsn = crate::pg::conninfo::Conninfo::new()
        .set("host", endpoint.host.clone())
        .set("port", endpoint.port.to_string())
        .set("user", ctx.superuser.username.clone())
        .set("password", password)
        .set("dbname", "postgres")
        .render();
    Ok(Json(json!({ "member": target.as_str(), "dsn": dsn })))
}

/// The member `GET /dsn` describes: the named one, else by role.
fn pick_member(c: &ClusterState, member: Option<&str>, role: &str) -> Result<MemberName, ApiError> {
    if let Some(name) = member {
        return c
            .members
            .values()
            .find(|m| m.name.as_str() == name && !m.witness)
            .map(|m| m.name.clone())
            .ok_or_else(|| ApiError::NotFound(format!("no data member named {name}")));
    }
    let holder = c.lease.as_ref().map(|l| l.holder.clone());
    match role {
        "primary" | "leader" | "master" | "any" => {
            let fallback = || {
                (role == "any")
                    .then(|| c.members.values().find(|m| !m.witness).map(|m| m.name.clone()))
                    .flatten()
            };
            holder
                .or_else(fallback)
                .ok_or_else(|| ApiError::Unavailable("the cluster has no primary right now".into()))
        }
        "replica" => c
            .members
            .values()
            .filter(|m| !m.witness && Some(&m.name) != holder.as_ref())
            .find(|m| m.status.as_ref().is_some_and(|s| s.state == "streaming"))
            .map(|m| m.name.clone())
            .ok_or_else(|| ApiError::Unavailable("no replica is streaming right now".into())),
        other => Err(ApiError::BadRequest(format!("role={other}: use primary, replica or any"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            parse_query("lag=10MB&tag_dc=east%20one&x+y=a+b&flag&bad=%zz&end=%4"),
            vec![
                ("lag".to_string(), "10MB".to_string()),
                ("tag_dc".into(), "east one".into()),
                ("x y".into(), "a b".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn versions_are_numbered_like_patroni() {
        assert_eq!(version_number("4.1.5"), 40105);
        assert_eq!(version_number("0.3.0-dev"), 300);
    }

    #[test]
    fn patroni_times_have_microseconds_and_offset() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_626_952_930_888);
        assert_eq!(pg_time(t), "2026-11-25 17:15:52.930888+00:00");
    }

    #[test]
    fn openapi_document_lists_every_route() {
        let doc: Value = serde_saphyr::from_str(include_str!("../../docs/openapi.yaml"))
            .expect("docs/openapi.yaml parses");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().expect("a paths object");
        let others = [
            "/patroni",
            "/cluster",
            "/history",
            "/config",
            "/metrics",
            "/switchover",
            "/failover",
            "/restart",
            "/reload",
            "/reinitialize",
            "/dsn",
            "/members",
            "/members/{name}",
            "/raft/status",
            "/raft/transfer",
            "/token",
            "/join",
        ];
        for path in HEALTH_PATHS.iter().chain(others.iter()) {
            assert!(paths.contains_key(*path), "docs/openapi.yaml lacks {path}");
        }
        assert_eq!(paths.len(), HEALTH_PATHS.len() + others.len(), "docs/openapi.yaml has unknown paths");
    }
}
