//! Patroni-compatible cluster endpoints that read or change the replicated state directly:
//! `GET /config`, `PATCH /config` (JSON merge patch, `null` restores a default), `PUT /config`
//! (replace), and `GET /history`. A change is validated before it reaches the state (this
//! node's `watchdog.safety_margin` included) and applied as a compare-and-set on the config
//! version, so two concurrent edits never silently overwrite each other.

use super::error::ApiError;
use super::server::ApiContext;
use crate::config::dynamic::DynamicConfig;
use crate::dcs::state::{ClusterState, Command, Outcome, Rejection};
use crate::types::Lsn;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/config", get(get_config).patch(patch_config).put(put_config))
        .route("/history", get(history))
        .route("/cluster", get(cluster))
}

/// `GET /cluster` in Patroni's shape: every data member (witnesses hold no Postgres and are
/// listed by `pgha ctl members` instead) with role, state, addresses, timeline and lag.
async fn cluster(State(ctx): State<ApiContext>) -> Result<Json<Value>, ApiError> {
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    Ok(Json(cluster_view(&st, crate::clock::wall_now_ms())))
}

/// A status older than this is shown as `unknown` (the member stopped reporting).
const STATUS_STALE_MS: u64 = 30_000;

fn lag(primary: Option<Lsn>, lsn: Option<Lsn>) -> Value {
    match (primary, lsn) {
        (Some(p), Some(l)) => Value::from(p.0.saturating_sub(l.0)),
        _ => Value::Null,
    }
}

pub fn cluster_view(st: &ClusterState, now_ms: u64) -> Value {
    let holder = st.lease.as_ref().map(|l| &l.holder);
    let primary_lsn = holder
        .and_then(|h| st.members.get(h))
        .and_then(|m| m.status.as_ref())
        .and_then(|s| s.wal_lsn)
        .or(st.last_primary_lsn);
    let members: Vec<Value> = st
        .members
        .values()
        .filter(|m| !m.witness)
        .map(|m| {
            let (host, port) = m
                .pg_address
                .as_deref()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(h, p)| {
                    (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse::<u16>().ok())
                })
                .unwrap_or_default();
            let status =
                m.status.as_ref().filter(|s| now_ms.saturating_sub(s.updated_at_ms) <= STATUS_STALE_MS);
            let leader = Some(&m.name) == holder;
            let role = if leader {
                "leader"
            } else if st.sync.members.contains(&m.name) && st.quorum_mode() {
                "quorum_standby"
            } else if st.sync.members.contains(&m.name) {
                "sync_standby"
            } else {
                "replica"
            };
            let mut o = serde_json::json!({
                "name": m.name.as_str(),
                "role": role,
                "state": status.map_or("unknown", |s| s.state.as_str()),
                "api_url": format!("https://{}/patroni", m.api_address),
                "host": host,
                "port": port,
            });
            if let Some(s) = status {
                if let Some(tl) = s.timeline {
                    o["timeline"] = tl.0.into();
                }
                if !leader {
                    o["receive_lsn"] = s.receive_lsn.map(|l| l.to_string()).into();
                    o["receive_lag"] = lag(primary_lsn, s.receive_lsn);
                    o["replay_lsn"] = s.replay_lsn.map(|l| l.to_string()).into();
                    o["replay_lag"] = lag(primary_lsn, s.replay_lsn);
                    o["lsn"] = s.replay_lsn.map(|l| l.to_string()).into();
                    o["lag"] = lag(primary_lsn, s.replay_lsn);
                }
                if s.pending_restart {
                    o["pending_restart"] = true.into();
                }
            }
            if let Some(r) = &m.scheduled_restart {
                o["scheduled_restart"] = scheduled_restart_json(r);
            }
            let tags = serde_json::to_value(&m.tags).unwrap_or_default();
            if tags.as_object().is_some_and(|t| t.values().any(|v| v != &Value::Bool(false))) {
                o["tags"] = tags;
            }
            o
        })
        .collect();
    let mut out = serde_json::json!({ "members": members, "scope": st.scope });
    if st.config.synchronous_mode != crate::config::dynamic::SynchronousMode::Off {
        let names: Vec<&str> = st.sync.members.iter().map(|m| m.as_str()).collect();
        out["synchronous_mode"] = serde_json::json!({
            "mode": st.config.synchronous_mode,
            "strict": st.config.synchronous_mode_strict,
            "sync_standbys": names,
            // Commits are acknowledged without a synchronous standby (non-strict, none streams).
            "degraded": names.is_empty() && st.sync.degraded,
        });
        if st.quorum_mode() {
            // Each acknowledged commit is on at least this many of them (`ANY k`).
            out["synchronous_mode"]["quorum"] = st.sync.k().into();
        }
    }
    if let Some(sw) = &st.switchover {
        out["scheduled_switchover"] = serde_json::json!({
            "at": sw.scheduled_at_ms.map(crate::clock::rfc3339_ms),
            "from": sw.leader.as_ref().map(|m| m.as_str()).or(holder.map(|h| h.as_str())),
            "to": sw.candidate.as_ref().map(|m| m.as_str()),
        });
    }
    out
}

/// A member's scheduled restart as Patroni shows it (`schedule` plus the conditions given).
pub fn scheduled_restart_json(r: &crate::dcs::state::ScheduledRestart) -> Value {
    let mut o = serde_json::json!({ "schedule": crate::clock::rfc3339_ms(r.at_ms) });
    if r.restart_pending {
        o["restart_pending"] = true.into();
    }
    if let Some(role) = &r.role {
        o["role"] = role.as_str().into();
    }
    if let Some(v) = &r.postgres_version {
        o["postgres_version"] = v.as_str().into();
    }
    o
}

async fn get_config(State(ctx): State<ApiContext>) -> Result<Json<DynamicConfig>, ApiError> {
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    Ok(Json(st.config.clone()))
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge_patch(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other,
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

/// Validates and stores `config` if the version is still `expected`.
async fn store(ctx: &ApiContext, expected: u64, value: Value) -> Result<Json<DynamicConfig>, ApiError> {
    // The path names the key at fault (`postgresql.use_slots: invalid type …`).
    let config: DynamicConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        ApiError::BadRequest(format!("invalid configuration at {key}: {}", e.into_inner()))
    })?;
    config
        .validate(ctx.safety_margin_s)
        .map_err(|e| ApiError::BadRequest(format!("invalid configuration: {e}")))?;
    match ctx.dcs.propose(Command::SetConfig { expected_version: expected, config: config.clone() }).await? {
        Outcome::Rejected { reason: r @ Rejection::ConfigVersion { .. } } => {
            Err(ApiError::Conflict(r.to_string()))
        }
        Outcome::Rejected { reason } => Err(ApiError::Conflict(reason.to_string())),
        _ => {
            tracing::info!(version = expected + 1, "dynamic configuration changed");
            Ok(Json(config))
        }
    }
}

async fn patch_config(State(ctx): State<ApiContext>, body: Bytes) -> Result<Json<DynamicConfig>, ApiError> {
    let patch = parse_body(&body)?;
    if !patch.is_object() {
        return Err(ApiError::BadRequest("a configuration patch must be a JSON object".into()));
    }
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    let mut value = serde_json::to_value(&st.config).expect("the configuration serializes");
    merge_patch(&mut value, patch);
    store(&ctx, st.config_version, value).await
}

async fn put_config(State(ctx): State<ApiContext>, body: Bytes) -> Result<Json<DynamicConfig>, ApiError> {
    let value = parse_body(&body)?;
    if !value.is_object() {
        return Err(ApiError::BadRequest("a configuration must be a JSON object".into()));
    }
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    store(&ctx, st.config_version, value).await
}

/// Patroni's shape: `[[timeline, lsn, reason, timestamp, new_leader], …]`, the LSN as a byte
/// position and the time in ISO 8601.
async fn history(State(ctx): State<ApiContext>) -> Result<Json<Vec<Value>>, ApiError> {
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    let rows = st
        .history
        .iter()
        .map(|h| {
            serde_json::json!([
                h.timeline.0,
                h.switch_lsn.0,
                h.reason,
                crate::clock::rfc3339_ms(h.at_ms),
                h.new_primary.as_str()
            ])
        })
        .collect();
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let rows = [
            (
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"b": {"c": null, "e": 4}}),
                json!({"a": 1, "b": {"d": 3, "e": 4}}),
            ),
            (json!({"a": 1}), json!({"a": {"x": 1}}), json!({"a": {"x": 1}})),
            (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
            (json!({"a": 1}), json!({"a": null}), json!({})),
        ];
        for (mut target, patch, want) in rows {
            merge_patch(&mut target, patch);
            assert_eq!(target, want);
        }
    }

    #[test]
    fn a_patched_config_restores_defaults_for_removed_keys_and_refuses_unknown_ones() {
        let mut v = serde_json::to_value(DynamicConfig { ttl: 30, ..DynamicConfig::default() }).unwrap();
        merge_patch(&mut v, json!({"ttl": null, "postgresql": {"parameters": {"max_connections": 200}}}));
        let c: DynamicConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c.ttl, DynamicConfig::default().ttl);
        assert_eq!(c.postgresql.parameters["max_connections"], json!(200));
        merge_patch(&mut v, json!({"tll": 5}));
        let e = serde_json::from_value::<DynamicConfig>(v).unwrap_err().to_string();
        assert!(e.contains("tll"), "{e}");
    }

    #[test]
    fn cluster_view_has_patronis_fields() {
        use crate::dcs::state::{CaMaterial, Lease, MemberStatus, NewMember, Tags};
        use crate::types::{LeaseEpoch, MemberName, Timeline};
        let nm = |n: &str, port: u16, witness: bool| NewMember {
            name: MemberName::new(n).unwrap(),
            witness,
            api_address: format!("127.0.0.1:{}", port + 100),
            raft_address: format!("127.0.0.1:{}", port + 200),
            pg_address: (!witness).then(|| format!("127.0.0.1:{port}")),
            tags: Tags::default(),
            version: "t".into(),
        };
        let mut st = ClusterState::bootstrap(
            "pgbase".into(),
            "i".into(),
            nm("node3", 27103, false),
            CaMaterial { cert_pem: String::new(), key_pem: String::new() },
            DynamicConfig::default(),
        );
        for (n, port, w) in [("node1", 27101, false), ("w1", 27109, true)] {
            let mut m = st.members[&MemberName::new("node3").unwrap()].clone();
            let new = nm(n, port, w);
            m.name = new.name.clone();
            m.witness = w;
            m.api_address = new.api_address;
            m.pg_address = new.pg_address;
            m.node_id = crate::types::NodeId(port as u64);
            st.members.insert(new.name, m);
        }
        st.lease = Some(Lease {
            holder: MemberName::new("node3").unwrap(),
            epoch: LeaseEpoch(1),
            ttl_ms: 1,
            renewal: 1,
        });
        st.last_epoch = LeaseEpoch(1);
        let status = |state: &str, wal: Option<u64>, replay: Option<u64>| MemberStatus {
            state: state.into(),
            role: String::new(),
            timeline: Some(Timeline(1)),
            receive_lsn: replay.map(Lsn),
            replay_lsn: replay.map(Lsn),
            wal_lsn: wal.map(Lsn),
            pending_restart: false,
            updated_at_ms: 1_000,
        };
        st.members.get_mut(&MemberName::new("node3").unwrap()).unwrap().status =
            Some(status("running", Some(0x4000060), None));
        st.members.get_mut(&MemberName::new("node1").unwrap()).unwrap().status =
            Some(status("streaming", None, Some(0x4000000)));
        let v = cluster_view(&st, 2_000);
        let members = v["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "witnesses are not database members");
        let node1 = &members[0];
        assert_eq!(node1["role"], "replica");
        assert_eq!(node1["state"], "streaming");
        assert_eq!(node1["replay_lsn"], "0/4000000");
        assert_eq!(node1["lag"], 0x60);
        assert_eq!(node1["host"], "127.0.0.1");
        assert_eq!(node1["port"], 27101);
        assert_eq!(node1["api_url"], "https://127.0.0.1:27201/patroni");
        assert_eq!(members[1]["role"], "leader");
        assert_eq!(members[1]["timeline"], 1);
        assert_eq!(v["scope"], "pgbase");
        // A member that stopped reporting is not shown as healthy.
        let stale = cluster_view(&st, 1_000 + STATUS_STALE_MS + 1);
        assert_eq!(stale["members"][0]["state"], "unknown");
    }

    #[test]
    fn history_times_are_iso_8601() {
        assert_eq!(crate::clock::rfc3339_ms(1_795_626_973_123), "2026-11-25T17:16:13.123Z");
    }
}
