//! SIGHUP in `pgha run` (`systemctl reload pgha`): re-read the local config file and apply
//! what can change while running — today the `log` section (level, format, file, which is
//! reopened for logrotate). Every other changed key is named in one warning and keeps its old
//! value until pgha restarts; it is reported again at the next reload while it differs. A file
//! that does not load (syntax, unknown key, bad value) is logged with its error and changes
//! nothing. The replicated (dynamic) configuration is not touched: `pgha ctl edit-config`
//! changes that. Input: the file and the configuration the process runs with; output: log lines
//! and the log section in effect.

use super::logging::{self, LogHandle};
use crate::config::file::LocalConfig;
use serde_json::Value;
use std::path::PathBuf;

/// Keys (dotted, as in the file) that a reload applies; everything else needs a restart.
const RUNTIME_PREFIXES: [&str; 1] = ["log."];

/// What a reload did, for the caller's notification and for tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file did not load or the new log setup could not be made; nothing changed.
    Failed,
    /// Applied these keys; these others wait for a restart.
    Done { applied: Vec<String>, need_restart: Vec<String> },
}

pub struct Reloader {
    path: PathBuf,
    /// The configuration in effect: the start-up one with the applied keys updated.
    current: LocalConfig,
    log: LogHandle,
}

impl Reloader {
    pub fn new(path: PathBuf, current: LocalConfig, log: LogHandle) -> Reloader {
        Reloader { path, current, log }
    }

    pub fn reload(&mut self) -> Reloaded {
        let file = self.path.display().to_string();
        let new = match LocalConfig::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload: {e}; nothing changed, pgha keeps the configuration it runs with");
                return Reloaded::Failed;
            }
        };
        let changed = changed_keys(&self.current, &new);
        let (applied, need_restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| RUNTIME_PREFIXES.iter().any(|p| k.starts_with(p)));
        if !applied.is_empty() {
            if let Err(e) = self.log.apply(&new.log) {
                tracing::error!("reload: {e}; nothing changed");
                return Reloaded::Failed;
            }
            self.current.log = new.log.clone();
            if applied.iter().any(|k| k == "log.level") && logging::level_from_env() {
                tracing::warn!("reload: log.level changed but {} is set and wins over it", logging::LOG_ENV);
            }
            tracing::info!(file, keys = %applied.join(", "), "reload: applied");
        }
        if !need_restart.is_empty() {
            tracing::warn!(
                file,
                keys = %need_restart.join(", "),
                "reload: these keys changed and take effect only when pgha restarts \
                 (systemctl restart pgha); running with their old values until then"
            );
        }
        if applied.is_empty() && need_restart.is_empty() {
            tracing::info!(file, "reload: no change");
        }
        Reloaded::Done { applied, need_restart }
    }
}

/// The dotted keys whose values differ between two configurations (leaves only; a key
/// present in one file only counts as changed). Values are never shown: passwords are keys too.
pub fn changed_keys(old: &LocalConfig, new: &LocalConfig) -> Vec<String> {
    let old = serde_json::to_value(old).expect("LocalConfig serializes");
    let new = serde_json::to_value(new).expect("LocalConfig serializes");
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

fn diff(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::tests::{parse, MINIMAL_YAML};

    #[test]
    fn changed_keys_are_dotted_leaves() {
        let old = parse(MINIMAL_YAML).unwrap();
        assert!(changed_keys(&old, &old).is_empty());
        let new = parse(&format!(
            "{MINIMAL_YAML}log: {{level: debug, file: /var/log/pgha.log}}\ntags: {{nofailover: true}}\n\
             proxy: {{listen: 'off'}}\n"
        ))
        .unwrap();
        assert_eq!(changed_keys(&old, &new), ["log.file", "log.level", "proxy.listen", "tags.nofailover"]);
        let secret = parse(&MINIMAL_YAML.replace(
            "postgresql:\n",
            "postgresql:\n  authentication: {superuser: {username: postgres, password: s3cret}}\n",
        ))
        .unwrap();
        let keys = changed_keys(&old, &secret);
        assert_eq!(keys, ["postgresql.authentication.superuser.password"]);
    }
}
