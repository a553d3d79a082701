//! The Postgres parameters pgha writes to `pgha.conf`, the file it owns in the data directory
//! and includes from `postgresql.conf` (DESIGN.md, "Postgres management"). Pure: input is this
//! node's addresses and files, whether and whom it follows, and the two layers of
//! `postgresql.parameters`; output is a [`Parameters`] value (every name with its value and
//! where it came from) that renders to the file's text. It never reads or writes a file and
//! never decides between reload and restart: after a reload Postgres reports the parameters that
//! need a restart in `pg_settings.pending_restart`, which the probe reads.
//!
//! Precedence, lowest first: pgha's HA defaults, the dynamic `postgresql.parameters` (cluster
//! wide, `pgha ctl edit-config`), the local `postgresql.parameters` (this node's file). The local
//! layer wins so one node can differ (more memory, another `work_mem`). Parameters pgha itself
//! manages (addresses, TLS files, replication source, ...) are set last and cannot be
//! overridden: setting one is an error naming it and the key to use instead.

use crate::pg::conninfo::Conninfo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// Why pgha cannot write a configuration file from the given settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("{origin}.{name} cannot be set: pgha manages it; {instead}")]
    Owned { name: String, origin: Origin, instead: &'static str },
    #[error("{origin}.{name}: not a Postgres parameter name; use the name as postgresql.conf spells it")]
    BadName { name: String, origin: Origin },
    #[error("{origin}.{name}: {problem}")]
    BadValue { name: String, origin: Origin, problem: String },
    #[error("postgresql.pg_hba rule {index} ({rule:?}): {problem}")]
    BadHbaRule { index: usize, rule: String, problem: &'static str },
    #[error(
        "postgresql.authentication: role name {name:?} cannot be written to pg_hba.conf (it \
         contains a double quote or a control character); choose a plain role name"
    )]
    BadRoleName { name: String },
}

/// Which layer a parameter value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Managed by pgha: cannot be overridden.
    Pgha,
    /// pgha's HA default: may be overridden.
    Default,
    /// The dynamic configuration (`postgresql.parameters` in Raft).
    Dynamic,
    /// This node's configuration file.
    Local,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Pgha => "pgha",
            Origin::Default => "pgha default",
            Origin::Dynamic => "postgresql.parameters (dynamic configuration)",
            Origin::Local => "postgresql.parameters (local configuration file)",
        })
    }
}

/// The parameters pgha manages and what to set instead. Postgres matches names
/// case-insensitively, so the check does too.
const OWNED: &[(&str, &str)] = &[
    ("listen_addresses", "set postgresql.listen"),
    ("port", "set postgresql.listen"),
    ("unix_socket_directories", "pgha connects through its own socket directory"),
    ("cluster_name", "it is the cluster's scope"),
    ("hba_file", "pgha writes pg_hba.conf from postgresql.pg_hba"),
    ("data_directory", "set postgresql.data_dir"),
    ("config_file", "pgha includes pgha.conf from the data directory's postgresql.conf"),
    ("ssl", "TLS is always on with the node certificate"),
    ("ssl_cert_file", "set tls.certfile"),
    ("ssl_key_file", "set tls.keyfile"),
    ("ssl_ca_file", "set tls.cafile"),
    ("hot_standby", "replicas must serve reads and report their state (always on)"),
    ("wal_log_hints", "pg_rewind needs it (always on)"),
    ("logging_collector", "pgha writes the server log to postgres.log (rotate it with copytruncate)"),
    ("primary_conninfo", "pgha points a replica at the primary itself"),
    ("primary_slot_name", "set use_slots in the dynamic configuration"),
    ("synchronous_standby_names", "set synchronous_mode in the dynamic configuration"),
    ("recovery_target", "pgha manages recovery"),
    ("recovery_target_lsn", "pgha manages recovery"),
    ("recovery_target_name", "pgha manages recovery"),
    ("recovery_target_time", "pgha manages recovery"),
    ("recovery_target_xid", "pgha manages recovery"),
    ("recovery_target_inclusive", "pgha manages recovery"),
    ("recovery_target_action", "pgha manages recovery"),
    ("recovery_target_timeline", "a replica always follows the latest timeline"),
];

/// Overridable HA defaults (DESIGN.md): enough senders and slots for a handful of members plus
/// a clone or two in flight, and some WAL kept for a member that is briefly away without a slot.
const HA_DEFAULTS: &[(&str, &str)] = &[
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "128MB"),
    // After a failover a replica's walreceiver retries its new upstream this often (Postgres's
    // default, 5 s, would add up to 5 s before replicas follow the new primary's timeline).
    ("wal_retrieve_retry_interval", "1s"),
    // Postgres releases commits waiting for synchronous replication only when a synchronous
    // standby's reply arrives, and an idle standby replies every `wal_receiver_status_interval`
    // (default 10 s). When pgha names a new synchronous standby (the old one stopped), the
    // waiting commits are not followed by new WAL, so they would hang up to 10 s although the
    // new standby already holds their WAL (the fault suite's rolling restart showed 6–10 s
    // write gaps in strict mode; with 1 s, under 2 s).
    ("wal_receiver_status_interval", "1s"),
];

/// `wal_level` values that keep streaming replication working (`archive` and `hot_standby`
/// are Postgres's old spellings of `replica`).
const STREAMING_WAL_LEVELS: &[&str] = &["replica", "logical", "hot_standby", "archive"];

/// The node's certificate, key and the cluster CA (`tls.*` in the config file).
#[derive(Clone, Copy, Debug)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
}

/// What a replica streams from.
#[derive(Clone, Debug)]
pub struct Follow {
    pub primary_conninfo: Conninfo,
    /// The physical slot on the primary (with `use_slots`).
    pub slot: Option<String>,
}

/// Everything `pgha.conf` is made from.
#[derive(Clone, Debug)]
pub struct ConfInput<'a> {
    /// The cluster's scope: names the processes (`postgres: pgha: checkpointer`).
    pub cluster_name: &'a str,
    /// `postgresql.listen`.
    pub listen: SocketAddr,
    /// pgha's own socket directory, so several nodes can share a host.
    pub socket_dir: &'a Path,
    pub hba_file: &'a Path,
    pub tls: TlsFiles<'a>,
    /// `Some` on a replica (with `standby.signal`), `None` on a primary.
    pub follow: Option<&'a Follow>,
    /// Set by the HA loop in synchronous modes; `None` means asynchronous.
    pub synchronous_standby_names: Option<&'a str>,
    pub dynamic: &'a BTreeMap<String, Value>,
    pub local: &'a BTreeMap<String, Value>,
}

/// The parameters to write, by lowercase name, with their origin.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Parameters(BTreeMap<String, (String, Origin)>);

impl Parameters {
    /// Builds the parameters from `input`; see the module comment for the precedence.
    pub fn build(input: &ConfInput) -> Result<Parameters, ConfError> {
        let mut map = BTreeMap::new();
        for (name, value) in HA_DEFAULTS {
            map.insert(name.to_string(), (value.to_string(), Origin::Default));
        }
        for (layer, origin) in [(input.dynamic, Origin::Dynamic), (input.local, Origin::Local)] {
            for (name, value) in layer {
                let lower = name.to_ascii_lowercase();
                check_name(name, origin)?;
                if let Some((_, instead)) = OWNED.iter().find(|(owned, _)| *owned == lower) {
                    return Err(ConfError::Owned { name: name.clone(), origin, instead });
                }
                let value = scalar(name, value, origin)?;
                if lower == "wal_level"
                    && !STREAMING_WAL_LEVELS.contains(&value.to_ascii_lowercase().as_str())
                {
                    return Err(ConfError::BadValue {
                        name: name.clone(),
                        origin,
                        problem: format!("{value:?} stops streaming replication; use replica or logical"),
                    });
                }
                map.insert(lower, (value, origin));
            }
        }
        let mut own = |name: &str, value: String| map.insert(name.to_owned(), (value, Origin::Pgha));
        own("listen_addresses", input.listen.ip().to_string());
        own("port", input.listen.port().to_string());
        own("unix_socket_directories", path_value(input.socket_dir));
        own("cluster_name", input.cluster_name.to_owned());
        own("hba_file", path_value(input.hba_file));
        own("ssl", "on".into());
        own("ssl_cert_file", path_value(input.tls.cert));
        own("ssl_key_file", path_value(input.tls.key));
        own("ssl_ca_file", path_value(input.tls.ca));
        own("hot_standby", "on".into());
        own("wal_log_hints", "on".into());
        // The postmaster's stderr is pgha's log file, which start failures are explained from.
        own("logging_collector", "off".into());
        // Written for both roles: removing it after a promotion would mark it pending restart.
        own("recovery_target_timeline", "latest".into());
        own("synchronous_standby_names", input.synchronous_standby_names.unwrap_or("").to_owned());
        match input.follow {
            Some(follow) => {
                own("primary_conninfo", follow.primary_conninfo.render());
                own("primary_slot_name", follow.slot.clone().unwrap_or_default());
            }
            None => {
                // Written empty, not left out: a reload then clears what a replica had.
                own("primary_conninfo", String::new());
                own("primary_slot_name", String::new());
            }
        }
        Ok(Parameters(map))
    }

    /// The value pgha writes for `name` (any case), unquoted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(|(v, _)| v.as_str())
    }

    pub fn origin(&self, name: &str) -> Option<Origin> {
        self.0.get(&name.to_ascii_lowercase()).map(|(_, o)| *o)
    }

    /// Names whose value differs between `self` and `previous` (added, removed or changed).
    pub fn changed_since(&self, previous: &Parameters) -> Vec<String> {
        let value = |p: &Parameters, k: &str| p.0.get(k).map(|(v, _)| v.clone());
        let mut names: Vec<String> = self.0.keys().chain(previous.0.keys()).cloned().collect();
        names.sort();
        names.dedup();
        names.retain(|k| value(self, k) != value(previous, k));
        names
    }

    /// The text of `pgha.conf`: a header, then the parameters grouped by origin.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by pgha; do not edit: pgha rewrites this file. Set parameters with\n\
             # `pgha ctl edit-config` (postgresql.parameters, the whole cluster) or in this\n\
             # node's pgha.yml (postgresql.parameters, this node only; it wins).\n",
        );
        for origin in [Origin::Default, Origin::Dynamic, Origin::Local, Origin::Pgha] {
            let mut section: Vec<(&String, &String)> =
                self.0.iter().filter(|(_, (_, o))| *o == origin).map(|(k, (v, _))| (k, v)).collect();
            if section.is_empty() {
                continue;
            }
            section.sort();
            out.push_str(&format!("\n# {origin}\n"));
            for (name, value) in section {
                out.push_str(&format!("{name} = {}\n", quote(value)));
            }
        }
        out
    }
}

/// A value as a quoted postgresql.conf string. Inside quotes the file parser turns `''` into
/// `'` and processes backslash escapes (`\\`, `\n`, ...), so both are escaped; a raw newline
/// would end the line and is written as `\n`. Postgres accepts quoted numbers and booleans,
/// so every value is quoted.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn path_value(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Postgres parameter names: letters, digits, `_`, and `.` for extension prefixes.
fn check_name(name: &str, origin: Origin) -> Result<(), ConfError> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ConfError::BadName { name: name.to_owned(), origin })
    }
}

/// A JSON scalar as the text Postgres reads: booleans as on/off, numbers as written.
fn scalar(name: &str, value: &Value, origin: Origin) -> Result<String, ConfError> {
    let bad =
        |problem: &str| ConfError::BadValue { name: name.to_owned(), origin, problem: problem.to_owned() };
    match value {
        Value::String(s) if s.contains('\0') => Err(bad("contains a NUL character")),
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(if *b { "on" } else { "off" }.to_owned()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(bad("is not a single value; write one string, number or boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Case {
        dynamic: BTreeMap<String, Value>,
        local: BTreeMap<String, Value>,
        follow: Option<Follow>,
        sync: Option<&'static str>,
    }

    impl Case {
        fn new() -> Case {
            Case { dynamic: BTreeMap::new(), local: BTreeMap::new(), follow: None, sync: None }
        }
        fn dynamic(mut self, name: &str, value: Value) -> Case {
            self.dynamic.insert(name.into(), value);
            self
        }
        fn local(mut self, name: &str, value: Value) -> Case {
            self.local.insert(name.into(), value);
            self
        }
        fn following(mut self, slot: Option<&str>) -> Case {
            let conninfo = Conninfo::new().set("host", "10.0.0.11").set("password", "it's");
            self.follow = Some(Follow { primary_conninfo: conninfo, slot: slot.map(str::to_owned) });
            self
        }
        fn build(&self) -> Result<Parameters, ConfError> {
            Parameters::build(&ConfInput {
                cluster_name: "pgha",
                listen: "10.0.0.11:5433".parse().unwrap(),
                socket_dir: Path::new("/var/lib/pgha/run"),
                hba_file: Path::new("/var/lib/pgha/data/pg_hba.conf"),
                tls: TlsFiles {
                    cert: Path::new("/etc/pgha/node.crt"),
                    key: Path::new("/etc/pgha/node.key"),
                    ca: Path::new("/etc/pgha/ca.crt"),
                },
                follow: self.follow.as_ref(),
                synchronous_standby_names: self.sync,
                dynamic: &self.dynamic,
                local: &self.local,
            })
        }
    }

    #[test]
    fn a_primary_gets_addresses_tls_and_ha_defaults() {
        let p = Case::new().build().unwrap();
        let want = [
            ("listen_addresses", "10.0.0.11", Origin::Pgha),
            ("port", "5433", Origin::Pgha),
            ("unix_socket_directories", "/var/lib/pgha/run", Origin::Pgha),
            ("cluster_name", "pgha", Origin::Pgha),
            ("hba_file", "/var/lib/pgha/data/pg_hba.conf", Origin::Pgha),
            ("ssl", "on", Origin::Pgha),
            ("ssl_cert_file", "/etc/pgha/node.crt", Origin::Pgha),
            ("ssl_key_file", "/etc/pgha/node.key", Origin::Pgha),
            ("ssl_ca_file", "/etc/pgha/ca.crt", Origin::Pgha),
            ("hot_standby", "on", Origin::Pgha),
            ("wal_log_hints", "on", Origin::Pgha),
            ("logging_collector", "off", Origin::Pgha),
            ("wal_level", "replica", Origin::Default),
            ("max_wal_senders", "10", Origin::Default),
            ("max_replication_slots", "10", Origin::Default),
            ("wal_keep_size", "128MB", Origin::Default),
            ("wal_receiver_status_interval", "1s", Origin::Default),
            ("primary_conninfo", "", Origin::Pgha),
            ("primary_slot_name", "", Origin::Pgha),
            ("synchronous_standby_names", "", Origin::Pgha),
        ];
        for (name, value, origin) in want {
            assert_eq!(p.get(name), Some(value), "{name}");
            assert_eq!(p.origin(name), Some(origin), "{name}");
        }
        assert_eq!(
            p.get("recovery_target_timeline"),
            Some("latest"),
            "both roles: no pending restart on promotion"
        );
    }

    #[test]
    fn a_replica_gets_its_source_slot_and_latest_timeline() {
        let p = Case::new().following(Some("node2")).build().unwrap();
        assert_eq!(p.get("primary_conninfo"), Some(r"host='10.0.0.11' password='it\'s'"));
        assert_eq!(p.get("primary_slot_name"), Some("node2"));
        assert_eq!(p.get("recovery_target_timeline"), Some("latest"));
        let p = Case::new().following(None).build().unwrap();
        assert_eq!(p.get("primary_slot_name"), Some(""));
        let p = Case { sync: Some("ANY 1 (node2, node3)"), ..Case::new() }.build().unwrap();
        assert_eq!(p.get("synchronous_standby_names"), Some("ANY 1 (node2, node3)"));
    }

    #[test]
    fn local_parameters_win_over_dynamic_over_defaults() {
        let p = Case::new()
            .dynamic("shared_buffers", json!("1GB"))
            .dynamic("work_mem", json!("4MB"))
            .dynamic("max_wal_senders", json!(20))
            .local("work_mem", json!("64MB"))
            .local("jit", json!(false))
            .local("Max_Connections", json!(200))
            .local("wal_level", json!("logical"))
            .build()
            .unwrap();
        let want = [
            ("shared_buffers", "1GB", Origin::Dynamic),
            ("work_mem", "64MB", Origin::Local),
            ("max_wal_senders", "20", Origin::Dynamic),
            ("jit", "off", Origin::Local),
            ("max_connections", "200", Origin::Local),
            ("wal_level", "logical", Origin::Local),
            ("max_replication_slots", "10", Origin::Default),
        ];
        for (name, value, origin) in want {
            assert_eq!((p.get(name), p.origin(name)), (Some(value), Some(origin)), "{name}");
        }
    }

    #[test]
    fn managed_parameters_cannot_be_overridden() {
        for name in ["port", "PORT", "listen_addresses", "primary_conninfo", "hot_standby", "ssl_key_file"] {
            for (case, origin) in [
                (Case::new().dynamic(name, json!("x")), Origin::Dynamic),
                (Case::new().local(name, json!("x")), Origin::Local),
            ] {
                match case.build() {
                    Err(ConfError::Owned { name: n, origin: o, .. }) => {
                        assert_eq!((n.as_str(), o), (name, origin))
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
        }
        let text = Case::new().local("port", json!(1)).build().unwrap_err().to_string();
        assert!(text.contains("postgresql.parameters") && text.contains("port"), "{text}");
        assert!(text.contains("postgresql.listen"), "{text}");
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        let cases = [
            (Case::new().dynamic("bad name", json!(1)), "bad name"),
            (Case::new().local("x=1\nport", json!(1)), "x=1\nport"),
            (Case::new().local("", json!(1)), ""),
            (Case::new().local("work_mem", json!(["1MB"])), "work_mem"),
            (Case::new().local("work_mem", json!(null)), "work_mem"),
            (Case::new().local("work_mem", json!("a\0b")), "work_mem"),
            (Case::new().dynamic("wal_level", json!("minimal")), "wal_level"),
        ];
        for (case, name) in cases {
            match case.build() {
                Err(ConfError::BadName { name: n, .. } | ConfError::BadValue { name: n, .. }) => {
                    assert_eq!(n, name)
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        // Extension parameters have a dotted prefix.
        assert!(Case::new().local("pg_stat_statements.max", json!(1000)).build().is_ok());
    }

    #[test]
    fn values_are_quoted_for_postgresql_conf() {
        let cases = [
            ("plain", "'plain'"),
            ("", "''"),
            ("it's", "'it''s'"),
            (r"C:\dir", r"'C:\\dir'"),
            ("two\nlines", r"'two\nlines'"),
            ("host='h' password='p\\'w'", r"'host=''h'' password=''p\\''w'''"),
        ];
        for (value, want) in cases {
            assert_eq!(quote(value), want, "{value:?}");
        }
    }

    #[test]
    fn rendered_file_groups_by_origin() {
        let p = Case::new().dynamic("work_mem", json!("4MB")).local("jit", json!("off")).build().unwrap();
        let text = p.render();
        let pos = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{text}"));
        assert!(text.starts_with("# Written by pgha"));
        assert!(pos("wal_level = 'replica'") < pos("work_mem = '4MB'"));
        assert!(pos("work_mem = '4MB'") < pos("jit = 'off'"));
        assert!(pos("jit = 'off'") < pos("port = '5433'"));
        assert_eq!(text.matches("port = ").count(), 1, "{text}");
    }

    #[test]
    fn changed_names_are_listed() {
        let before = Case::new().dynamic("work_mem", json!("4MB")).build().unwrap();
        let after = Case::new().dynamic("shared_buffers", json!("1GB")).following(None).build().unwrap();
        assert_eq!(after.changed_since(&before), vec!["primary_conninfo", "shared_buffers", "work_mem"]);
        assert!(after.changed_since(&after).is_empty());
    }
}
