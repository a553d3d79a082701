//! The dynamic configuration: the part of the configuration that lives in the replicated state
//! and is edited cluster-wide (`pgha ctl edit-config`, `PATCH /config`). Keys and units follow
//! Patroni (seconds, bytes). `validate` checks the keys together, because the lease is only safe
//! when `ttl` leaves room for a renewal round trip and the safety margin (DESIGN.md, lease rules).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Defaults are chosen for fast failover on a LAN without false alarms; the reasoning lives in
/// docs/defaults.md. Patroni's are 30/10/10.
pub const DEFAULT_TTL_S: u64 = 4;
pub const DEFAULT_LOOP_WAIT_S: u64 = 1;
pub const DEFAULT_RETRY_TIMEOUT_S: u64 = 1;
/// Patroni's default: 1 MiB.
pub const DEFAULT_MAX_LAG_ON_FAILOVER: u64 = 1024 * 1024;
/// Patroni's `primary_start_timeout` default.
pub const DEFAULT_PRIMARY_START_TIMEOUT_S: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousMode {
    Off,
    On,
    Quorum,
}

/// Every key is optional (defaults below), as in Patroni's dynamic configuration: a key
/// removed with `PATCH /config` (`null`) falls back to its default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicPostgresql {
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub pg_hba: Vec<String>,
    #[serde(default = "yes")]
    pub use_pg_rewind: bool,
    #[serde(default = "yes")]
    pub use_slots: bool,
}

fn yes() -> bool {
    true
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql {
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            use_pg_rewind: true,
            use_slots: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicConfig {
    /// Seconds a primary lease lasts without renewal.
    pub ttl: u64,
    /// Seconds between HA loop iterations (and lease renewals).
    pub loop_wait: u64,
    /// Seconds a renewal or Postgres call may be retried before the lease is given up.
    pub retry_timeout: u64,
    /// Bytes a replica may lag behind the last known primary position and still be promoted.
    pub maximum_lag_on_failover: u64,
    pub synchronous_mode: SynchronousMode,
    pub synchronous_mode_strict: bool,
    pub synchronous_node_count: u32,
    pub postgresql: DynamicPostgresql,
    /// Pause mode: no automatic action (fencing still applies).
    pub pause: bool,
    /// Seconds a lease holder may fail to get its Postgres running as primary (a crash it
    /// cannot restart from, a full disk) before it hands the lease to a running replica
    /// (Patroni's key and default; 0: at once).
    pub primary_start_timeout: u64,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: DEFAULT_TTL_S,
            loop_wait: DEFAULT_LOOP_WAIT_S,
            retry_timeout: DEFAULT_RETRY_TIMEOUT_S,
            maximum_lag_on_failover: DEFAULT_MAX_LAG_ON_FAILOVER,
            synchronous_mode: SynchronousMode::Off,
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            postgresql: DynamicPostgresql::default(),
            pause: false,
            primary_start_timeout: DEFAULT_PRIMARY_START_TIMEOUT_S,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DynamicConfigError {
    #[error("{key} = {value} is out of range: {fix}")]
    OutOfRange { key: &'static str, value: u64, fix: String },
    #[error(
        "ttl = {ttl} must be larger than loop_wait ({loop_wait}) + retry_timeout ({retry_timeout}) + safety_margin ({margin}): raise ttl or lower the others"
    )]
    TtlTooShort { ttl: u64, loop_wait: u64, retry_timeout: u64, margin: u64 },
}

impl DynamicConfig {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl)
    }
    pub fn loop_wait(&self) -> Duration {
        Duration::from_secs(self.loop_wait)
    }
    pub fn retry_timeout(&self) -> Duration {
        Duration::from_secs(self.retry_timeout)
    }

    /// Checks the keys together. `safety_margin_s` is the local `watchdog.safety_margin` of the
    /// node validating (the largest in the cluster must fit; each node re-checks its own).
    pub fn validate(&self, safety_margin_s: u64) -> Result<(), DynamicConfigError> {
        let range = |key: &'static str, value: u64, lo: u64, hi: u64| {
            if value < lo || value > hi {
                Err(DynamicConfigError::OutOfRange {
                    key,
                    value,
                    fix: format!("use a value from {lo} to {hi}"),
                })
            } else {
                Ok(())
            }
        };
        range("ttl", self.ttl, 2, 3600)?;
        range("loop_wait", self.loop_wait, 1, 600)?;
        range("retry_timeout", self.retry_timeout, 1, 600)?;
        range("synchronous_node_count", self.synchronous_node_count as u64, 1, 64)?;
        range("primary_start_timeout", self.primary_start_timeout, 0, 86_400)?;
        if self.ttl <= self.loop_wait + self.retry_timeout + safety_margin_s {
            return Err(DynamicConfigError::TtlTooShort {
                ttl: self.ttl,
                loop_wait: self.loop_wait,
                retry_timeout: self.retry_timeout,
                margin: safety_margin_s,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_with_default_margin() {
        DynamicConfig::default().validate(crate::config::file::DEFAULT_SAFETY_MARGIN_S).unwrap();
    }

    #[test]
    fn ttl_must_cover_loop_retry_and_margin() {
        let cases = [
            (10, 1, 3, 2, true),
            (6, 1, 3, 2, false),
            (7, 1, 3, 2, true),
            (30, 10, 10, 5, true),
            (30, 10, 10, 10, false),
        ];
        for (ttl, loop_wait, retry_timeout, margin, ok) in cases {
            let c = DynamicConfig { ttl, loop_wait, retry_timeout, ..Default::default() };
            assert_eq!(
                c.validate(margin).is_ok(),
                ok,
                "ttl={ttl} lw={loop_wait} rt={retry_timeout} m={margin}"
            );
        }
    }

    #[test]
    fn missing_keys_take_their_defaults() {
        let c: DynamicConfig =
            serde_json::from_str(r#"{"ttl": 20, "postgresql": {"use_slots": false}}"#).unwrap();
        assert_eq!(c.ttl, 20);
        assert_eq!(c.loop_wait, DEFAULT_LOOP_WAIT_S);
        assert!(c.postgresql.use_pg_rewind && !c.postgresql.use_slots);
        assert!(serde_json::from_str::<DynamicConfig>(r#"{"tll": 20}"#).is_err());
    }

    #[test]
    fn zero_values_name_the_key() {
        let c = DynamicConfig { loop_wait: 0, ..Default::default() };
        let e = c.validate(2).unwrap_err();
        assert!(matches!(e, DynamicConfigError::OutOfRange { key: "loop_wait", .. }));
    }
}
