//! Patroni-compatible cluster endpoints that read or change the replicated state directly:
//! `GET /config`, `PATCH /config` (JSON merge patch, `null` restores a default), `PUT /config`
//! (replace), and `GET /history`. A change is validated before it reaches the state (this
//! node's `watchdog.safety_margin` included) and applied as a compare-and-set on the config
//! version, so two concurrent edits never silently overwrite each other.

use super::error::ApiError;
use super::server::ApiContext;
use crate::config::dynamic::DynamicConfig;
use crate::dcs::state::{Command, Outcome, Rejection};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/config", get(get_config).patch(patch_config).put(put_config))
        .route("/history", get(history))
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
                iso8601(h.at_ms),
                h.new_primary.as_str()
            ])
        })
        .collect();
    Ok(Json(rows))
}

fn iso8601(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
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
    fn history_times_are_iso_8601() {
        assert_eq!(iso8601(1_795_626_973_123), "2026-11-25T17:16:13.123Z");
    }
}
