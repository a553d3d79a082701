//! The local configuration file (`/etc/pgha/pgha.yml`): what this node is called, where it
//! listens, where its files live and which OS user it runs as. Input: YAML text (Patroni-like
//! keys, DESIGN.md "User-facing contract"); output: a validated [`LocalConfig`] and, for
//! `pgha init`/`join`, YAML that loads back to the same value. Every default is set once, here,
//! with its reason; every error names the file and the key and says what to write instead. It
//! never reads the dynamic configuration from Raft and never resolves host names (STACK.md item
//! 2: a static binary must not call libc's resolver), so connect addresses are checked for
//! syntax only. Validation rules live in `validate.rs`.

use crate::config::dynamic::DynamicConfig;
use crate::dcs::state::Tags;
use crate::types::MemberName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the package installs the file; `--config` and `PGHA_CONFIG` override it.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgha/pgha.yml";
/// The environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "PGHA_CONFIG";

/// Debian and RHEL packages of PostgreSQL create this account and own its files as it.
pub const DEFAULT_USER: &str = "postgres";
/// Patroni's REST API port, so HAProxy checks and monitoring keep working unchanged.
pub const DEFAULT_RESTAPI_LISTEN: &str = "0.0.0.0:8008";
/// Free of the etcd (2379/2380) and Consul ports an operator may still run during a migration.
pub const DEFAULT_RAFT_LISTEN: &str = "0.0.0.0:5010";
/// Postgres's own port, which clients and tools expect.
pub const DEFAULT_POSTGRESQL_LISTEN: &str = "0.0.0.0:5432";
/// The ports of the HAProxy setup pgha replaces (writer 5000, readers 5001).
pub const DEFAULT_PROXY_LISTEN: &str = "0.0.0.0:5000";
pub const DEFAULT_PROXY_REPLICAS_LISTEN: &str = "0.0.0.0:5001";
/// The value of `proxy.listen` / `proxy.replicas_listen` that turns that listener off.
pub const PROXY_OFF: &str = "off";
/// Package-install locations (FHS: state under /var/lib, configuration and keys under /etc).
pub const DEFAULT_RAFT_DATA_DIR: &str = "/var/lib/pgha/raft";
pub const DEFAULT_POSTGRESQL_DATA_DIR: &str = "/var/lib/pgha/data";
pub const DEFAULT_CA_FILE: &str = "/etc/pgha/ca.crt";
pub const DEFAULT_NODE_CERT_FILE: &str = "/etc/pgha/node.crt";
pub const DEFAULT_NODE_KEY_FILE: &str = "/etc/pgha/node.key";
pub const DEFAULT_CTL_CERT_FILE: &str = "/etc/pgha/ctl.crt";
pub const DEFAULT_CTL_KEY_FILE: &str = "/etc/pgha/ctl.key";
/// The kernel's watchdog device.
pub const DEFAULT_WATCHDOG_DEVICE: &str = "/dev/watchdog";
/// Seconds the primary's own deadline ends before the Raft side may expire its lease, covering
/// renewal latency and clock-rate differences (DESIGN.md "The lease", rule 1). Patroni uses 5
/// with ttl 30; our default ttl is 4 (config::dynamic, docs/defaults.md).
pub const DEFAULT_SAFETY_MARGIN_S: u64 = 1;
/// Role names Patroni's documentation uses, so existing pg_hba rules and habits carry over.
pub const DEFAULT_SUPERUSER: &str = "postgres";
pub const DEFAULT_REPLICATION_USER: &str = "replicator";
pub const DEFAULT_REWIND_USER: &str = "rewind_user";

/// The file to read: `--config`, else `PGHA_CONFIG` (if set and not empty), else
/// [`DEFAULT_CONFIG_PATH`]. The caller passes `std::env::var_os(CONFIG_ENV)`.
pub fn config_path(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Why a config file could not be used. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: no such file: create it with `pgha init` (first node) or `pgha join <TOKEN>` (other \
         nodes), or point --config / PGHA_CONFIG at an existing file",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error(
        "{}: cannot read it ({source}): check that it is a UTF-8 text file readable by the user \
         running pgha",
        path.display()
    )]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// YAML syntax, a type mismatch, an unknown or missing key. `message` is serde-saphyr's,
    /// with line, column and a snippet of the file.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {key}: {problem}; {fix}", path.display())]
    Invalid {
        path: PathBuf,
        /// Dotted key as written in the file, e.g. `raft.listen`.
        key: String,
        problem: String,
        fix: String,
    },
}

/// One node's configuration file with every default filled in. `load`/`from_yaml_str` return
/// it validated; code that builds one (`pgha init`, `join`) calls `validate` before writing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Cluster name; part of every certificate's role URI (`pgha://<scope>/...`).
    pub scope: String,
    pub name: MemberName,
    /// The OS account pgha and Postgres run as.
    #[serde(default = "default_user")]
    pub user: String,
    /// A Raft-only member: votes, holds no Postgres (the `postgresql` section is ignored).
    #[serde(default)]
    pub witness: bool,
    #[serde(default)]
    pub restapi: RestApiConfig,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub postgresql: PostgresqlConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub ctl: CtlConfig,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub callbacks: Callbacks,
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
}

fn default_user() -> String {
    DEFAULT_USER.to_owned()
}

/// The HTTPS REST API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestApiConfig {
    /// IP and port to bind.
    pub listen: String,
    /// `host:port` other nodes, `pgha ctl` and HAProxy use; derived from `listen` when that is
    /// not a wildcard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_address: Option<String>,
    /// Basic auth that changing calls need on top of the client certificate (Patroni's
    /// `restapi.authentication`); health checks and reads never need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Credentials>,
}

impl Default for RestApiConfig {
    fn default() -> Self {
        RestApiConfig {
            listen: DEFAULT_RESTAPI_LISTEN.to_owned(),
            connect_address: None,
            authentication: None,
        }
    }
}

impl RestApiConfig {
    /// The address to advertise: `connect_address`, else `listen` (validation guarantees that
    /// `listen` is then not a wildcard).
    pub fn connect_address(&self) -> &str {
        self.connect_address.as_deref().unwrap_or(&self.listen)
    }
}

/// The Raft peer transport and log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_address: Option<String>,
    /// The durable Raft log and snapshots.
    pub data_dir: PathBuf,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            listen: DEFAULT_RAFT_LISTEN.to_owned(),
            connect_address: None,
            data_dir: PathBuf::from(DEFAULT_RAFT_DATA_DIR),
        }
    }
}

impl RaftConfig {
    /// See [`RestApiConfig::connect_address`].
    pub fn connect_address(&self) -> &str {
        self.connect_address.as_deref().unwrap_or(&self.listen)
    }
}

/// The local Postgres. Ignored on a witness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresqlConfig {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_address: Option<String>,
    pub data_dir: PathBuf,
    /// Where `postgres`, `initdb`, `pg_basebackup`... live. `None`: from the data dir's
    /// `PG_VERSION`, else the newest installed (decided where Postgres is started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    pub authentication: Authentication,
    /// Local Postgres parameters (name -> scalar), applied on top of the dynamic ones.
    pub parameters: BTreeMap<String, serde_json::Value>,
}

impl Default for PostgresqlConfig {
    fn default() -> Self {
        PostgresqlConfig {
            listen: DEFAULT_POSTGRESQL_LISTEN.to_owned(),
            connect_address: None,
            data_dir: PathBuf::from(DEFAULT_POSTGRESQL_DATA_DIR),
            bin_dir: None,
            authentication: Authentication::default(),
            parameters: BTreeMap::new(),
        }
    }
}

impl PostgresqlConfig {
    /// See [`RestApiConfig::connect_address`].
    pub fn connect_address(&self) -> &str {
        self.connect_address.as_deref().unwrap_or(&self.listen)
    }
}

/// Patroni's `postgresql.authentication`. A missing password is generated at bootstrap and
/// kept in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authentication {
    pub superuser: Credentials,
    pub replication: Credentials,
    pub rewind: Credentials,
}

impl Default for Authentication {
    fn default() -> Self {
        let user = |name: &str| Credentials { username: name.to_owned(), password: None };
        Authentication {
            superuser: user(DEFAULT_SUPERUSER),
            replication: user(DEFAULT_REPLICATION_USER),
            rewind: user(DEFAULT_REWIND_USER),
        }
    }
}

/// A Postgres role. `Debug` hides the password so it never reaches a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// The built-in TCP proxy. Each listener is `ip:port`, or `off`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Writer port: always the current primary.
    pub listen: String,
    /// Reader port: healthy replicas.
    pub replicas_listen: String,
    /// A replica further behind the primary than this gets no new reader connections: bytes,
    /// or a size like `16MB`.
    #[serde(with = "byte_size")]
    pub max_replica_lag: u64,
    /// With no eligible replica, reader connections go to the `primary` or are refused
    /// (`refuse`).
    pub replica_fallback: ReplicaFallback,
    /// How long a new writer connection waits for a primary (a failover or switchover in
    /// progress) before it is refused, seconds.
    pub primary_wait: u64,
    /// Client connections accepted at once over both ports; more are refused.
    pub max_connections: usize,
    /// Seconds to connect to a Postgres backend before the client is refused.
    pub connect_timeout: u64,
    /// TCP keepalive idle time on client and backend sockets, seconds (0: off).
    pub keepalive_idle: u64,
}

/// Where the reader port sends a client when no replica qualifies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaFallback {
    #[default]
    Primary,
    Refuse,
}

pub const DEFAULT_PROXY_MAX_REPLICA_LAG: u64 = 16 << 20;
pub const DEFAULT_PROXY_PRIMARY_WAIT_S: u64 = 10;
pub const DEFAULT_PROXY_MAX_CONNECTIONS: usize = 2000;
pub const DEFAULT_PROXY_CONNECT_TIMEOUT_S: u64 = 5;
pub const DEFAULT_PROXY_KEEPALIVE_IDLE_S: u64 = 60;

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: DEFAULT_PROXY_LISTEN.to_owned(),
            replicas_listen: DEFAULT_PROXY_REPLICAS_LISTEN.to_owned(),
            max_replica_lag: DEFAULT_PROXY_MAX_REPLICA_LAG,
            replica_fallback: ReplicaFallback::default(),
            primary_wait: DEFAULT_PROXY_PRIMARY_WAIT_S,
            max_connections: DEFAULT_PROXY_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_PROXY_CONNECT_TIMEOUT_S,
            keepalive_idle: DEFAULT_PROXY_KEEPALIVE_IDLE_S,
        }
    }
}

/// Sizes in the config: a number of bytes, or text like `16MB` (Postgres' units, 1024-based).
mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(u64),
            Text(String),
        }
        match Size::deserialize(d)? {
            Size::Bytes(n) => Ok(n),
            Size::Text(t) => crate::api::health::parse_size(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("{t:?} is not a size: use bytes or e.g. 16MB, 512kB, 1GB"))
            }),
        }
    }
}

impl ProxyConfig {
    /// The writer listener's address, `None` when it is `off`.
    pub fn writer_listen(&self) -> Option<&str> {
        (self.listen != PROXY_OFF).then_some(self.listen.as_str())
    }
    /// The reader listener's address, `None` when it is `off`.
    pub fn replicas_listen(&self) -> Option<&str> {
        (self.replicas_listen != PROXY_OFF).then_some(self.replicas_listen.as_str())
    }
}

/// The node's certificate (API, Raft and Postgres) and the cluster CA; written by init/join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cafile: PathBuf,
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cafile: PathBuf::from(DEFAULT_CA_FILE),
            certfile: PathBuf::from(DEFAULT_NODE_CERT_FILE),
            keyfile: PathBuf::from(DEFAULT_NODE_KEY_FILE),
        }
    }
}

/// The client certificate `pgha ctl` presents for mutating API calls; written by init/join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CtlConfig {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub cacert: PathBuf,
    /// Basic auth `pgha ctl` sends; default: `restapi.authentication` (as patronictl does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Credentials>,
}

impl Default for CtlConfig {
    fn default() -> Self {
        CtlConfig {
            certfile: PathBuf::from(DEFAULT_CTL_CERT_FILE),
            keyfile: PathBuf::from(DEFAULT_CTL_KEY_FILE),
            cacert: PathBuf::from(DEFAULT_CA_FILE),
            authentication: None,
        }
    }
}

/// Patroni's watchdog modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchdogMode {
    /// Never use a watchdog.
    Off,
    /// Use the device when it can be opened, run without it otherwise.
    Automatic,
    /// Refuse to become primary without a working watchdog.
    Required,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    pub mode: WatchdogMode,
    pub device: PathBuf,
    /// Seconds; see [`DEFAULT_SAFETY_MARGIN_S`].
    pub safety_margin: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            // Automatic, as Patroni: protection where the host offers it, no failure where not.
            mode: WatchdogMode::Automatic,
            device: PathBuf::from(DEFAULT_WATCHDOG_DEVICE),
            safety_margin: DEFAULT_SAFETY_MARGIN_S,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The spelling `tracing`'s filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (journald adds the time).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Append to this file instead of writing to stderr (journald under systemd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // One line per HA decision and quiet when healthy (STYLE.md), so info is readable.
            level: LogLevel::Info,
            format: LogFormat::Text,
            file: None,
        }
    }
}

/// Patroni's callbacks: executables run with `<action> <role> <scope>` after the event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Callbacks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_start: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_restart: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_role_change: Option<PathBuf>,
}

/// Used once, by the node that initializes the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// The first dynamic configuration; every key is optional and defaults to
    /// `DynamicConfig::default()`.
    pub dcs: DynamicConfig,
    /// Executable run once after initdb, with a connection string as its argument.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_bootstrap: Option<PathBuf>,
}

impl LocalConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<LocalConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound { path: path.to_owned() }
            } else {
                ConfigError::Unreadable { path: path.to_owned(), source }
            }
        })?;
        LocalConfig::from_yaml_str(&text, path)
    }

    /// Parses and validates YAML text; `path` is only used in messages.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<LocalConfig, ConfigError> {
        // strict_booleans: only true/false are booleans, so `yes`, `on`, `n` are errors where a
        // boolean is expected and stay strings elsewhere (Postgres parameters). Duplicate keys
        // are errors by default.
        let options = serde_saphyr::options! { strict_booleans: true };
        let config: LocalConfig = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let name = path.display().to_string();
            // The user-facing formatter: the default one suggests parser options to the
            // developer ("set DuplicateKeyPolicy in Options").
            let formatter = serde_saphyr::UserMessageFormatter;
            ConfigError::Parse {
                path: path.to_owned(),
                message: e.render_with_options(serde_saphyr::render_options! {
                    formatter: &formatter,
                    source_name: Some(name.as_str()),
                }),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// YAML that [`LocalConfig::from_yaml_str`] reads back to an equal value, defaults
    /// included, so a written file shows every setting.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self)
            .expect("LocalConfig serializes: string keys only, serde_json numbers are finite")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::dynamic::{SynchronousMode, DEFAULT_TTL_S};

    /// The smallest valid file for a data node behind wildcard listeners.
    pub(crate) const MINIMAL_YAML: &str = "\
scope: pgha
name: node1
restapi:
  connect_address: \"10.0.0.11:8008\"
raft:
  listen: 0.0.0.0:5010
  connect_address: \"10.0.0.11:5010\"
  data_dir: /var/lib/pgha/raft
postgresql:
  connect_address: \"10.0.0.11:5432\"
";

    /// Every key set, most away from their defaults.
    const FULL_YAML: &str = r#"
scope: prod-db.eu_1
name: node1
user: pgsvc
witness: false
restapi: { listen: "10.0.0.11:8108", connect_address: "db1.example.com:8108" }
raft: { listen: "[::]:5110", connect_address: "[fd00::11]:5110", data_dir: /srv/pgha/raft }
postgresql:
  listen: "0.0.0.0:6432"
  connect_address: "10.0.0.11:6432"
  data_dir: /srv/pgha/data
  bin_dir: /usr/lib/postgresql/15/bin
  authentication:
    superuser: { username: admin, password: "s3cret: with colon" }
    replication: { username: repl }
    rewind: { username: rew, password: "yes" }
  parameters:
    shared_buffers: 1GB
    max_connections: 200
    jit: off
    random_page_cost: 1.1
    log_statement: "ddl"
    work_mem: "64"
    fsync: true
proxy: { listen: "127.0.0.1:7000", replicas_listen: "off" }
tls: { cafile: /srv/tls/ca.crt, certfile: /srv/tls/n.crt, keyfile: /srv/tls/n.key }
ctl: { certfile: /srv/tls/c.crt, keyfile: /srv/tls/c.key, cacert: /srv/tls/ca.crt }
tags: { nofailover: true, noloadbalance: true, clonefrom: true, nosync: true, failover_priority: 3 }
watchdog: { mode: required, device: /dev/watchdog1, safety_margin: 5 }
log: { level: debug, format: json, file: /var/log/pgha.log }
callbacks:
  on_start: /srv/cb.sh
  on_stop: /srv/cb.sh
  on_restart: /srv/cb.sh
  on_role_change: /srv/role.sh
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    synchronous_mode: "on"
    postgresql:
      parameters: { max_wal_senders: 20, wal_keep_size: 1GB }
      pg_hba: ["host all all 10.0.0.0/8 scram-sha-256"]
      use_slots: false
  post_bootstrap: /srv/post.sh
"#;

    pub(crate) fn parse(yaml: &str) -> Result<LocalConfig, ConfigError> {
        LocalConfig::from_yaml_str(yaml, Path::new("/etc/pgha/pgha.yml"))
    }

    fn round_trip(config: &LocalConfig) {
        let yaml = config.to_yaml();
        let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n--- emitted:\n{yaml}"));
        assert_eq!(&again, config, "emitted:\n{yaml}");
        assert_eq!(again.to_yaml(), yaml, "emitting is stable");
    }

    #[test]
    fn minimal_file_gets_the_defaults() {
        let c = parse(MINIMAL_YAML).unwrap();
        assert_eq!(c.name.as_str(), "node1");
        assert_eq!(c.user, "postgres");
        assert!(!c.witness);
        assert_eq!(c.restapi.listen, "0.0.0.0:8008");
        assert_eq!(c.restapi.connect_address(), "10.0.0.11:8008");
        assert_eq!(c.postgresql.listen, "0.0.0.0:5432");
        assert_eq!(c.postgresql.data_dir, Path::new("/var/lib/pgha/data"));
        assert_eq!(c.postgresql.bin_dir, None);
        assert_eq!(c.postgresql.authentication.replication.username, "replicator");
        assert_eq!(c.postgresql.authentication.superuser.password, None);
        assert_eq!(c.proxy.writer_listen(), Some("0.0.0.0:5000"));
        assert_eq!(c.proxy.replicas_listen(), Some("0.0.0.0:5001"));
        assert_eq!(c.tls.keyfile, Path::new("/etc/pgha/node.key"));
        assert_eq!(c.ctl.cacert, Path::new("/etc/pgha/ca.crt"));
        assert_eq!(c.tags, Tags::default());
        assert_eq!(c.watchdog.mode, WatchdogMode::Automatic);
        assert_eq!(c.watchdog.safety_margin, 1);
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.bootstrap.dcs, DynamicConfig::default());
        round_trip(&c);
    }

    #[test]
    fn full_file_round_trips() {
        let c = parse(FULL_YAML).unwrap();
        assert_eq!(c.raft.connect_address(), "[fd00::11]:5110");
        assert_eq!(c.proxy.replicas_listen(), None);
        assert_eq!(c.watchdog.mode, WatchdogMode::Required);
        assert_eq!(c.tags.failover_priority, Some(3));
        assert_eq!(c.bootstrap.dcs.ttl, 30);
        assert_eq!(c.bootstrap.dcs.retry_timeout, DynamicConfig::default().retry_timeout);
        assert_eq!(c.bootstrap.dcs.synchronous_mode, SynchronousMode::On);
        assert!(!c.bootstrap.dcs.postgresql.use_slots);
        assert!(c.bootstrap.dcs.postgresql.use_pg_rewind);
        let rewind = &c.postgresql.authentication.rewind;
        assert_eq!(rewind.password.as_deref(), Some("yes"));
        // Strict booleans: `off` stays the string Postgres expects, `true` is a boolean.
        let params = &c.postgresql.parameters;
        assert_eq!(params["jit"], serde_json::json!("off"));
        assert_eq!(params["fsync"], serde_json::json!(true));
        assert_eq!(params["max_connections"], serde_json::json!(200));
        assert_eq!(params["work_mem"], serde_json::json!("64"));
        round_trip(&c);
    }

    #[test]
    fn proxy_keys_take_sizes_and_named_fallbacks_and_refuse_nonsense() {
        let with = |proxy: &str| parse(&format!("{MINIMAL_YAML}proxy: {{ {proxy} }}\n"));
        let c = with("max_replica_lag: 1MB, replica_fallback: refuse, primary_wait: 3").unwrap();
        assert_eq!(c.proxy.max_replica_lag, 1 << 20);
        assert_eq!(c.proxy.replica_fallback, ReplicaFallback::Refuse);
        assert_eq!(c.proxy.primary_wait, 3);
        assert_eq!(with("max_replica_lag: 4096").unwrap().proxy.max_replica_lag, 4096);
        round_trip(&c);
        for (bad, needle) in [
            ("max_replica_lag: lots", "not a size"),
            ("replica_fallback: maybe", "replica_fallback"),
            ("max_connections: 0", "proxy.max_connections"),
            ("connect_timeout: 0", "proxy.connect_timeout"),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn watchdog_off_is_a_mode_not_a_boolean() {
        let c = parse(&format!("{MINIMAL_YAML}watchdog: {{mode: off}}\n")).unwrap();
        assert_eq!(c.watchdog.mode, WatchdogMode::Off);
        round_trip(&c);
    }

    #[test]
    fn bootstrap_dcs_keys_are_each_optional() {
        let c = parse(&format!("{MINIMAL_YAML}bootstrap: {{dcs: {{pause: true}}}}\n")).unwrap();
        let want = DynamicConfig { pause: true, ..DynamicConfig::default() };
        assert_eq!(c.bootstrap.dcs, want);
        assert_eq!(c.bootstrap.dcs.ttl, DEFAULT_TTL_S);
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let c = parse(FULL_YAML).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("admin"));
    }

    #[test]
    fn config_path_prefers_flag_then_env_then_default() {
        let flag = Some(PathBuf::from("/a.yml"));
        let env = Some(OsString::from("/b.yml"));
        assert_eq!(config_path(flag.clone(), env.clone()), Path::new("/a.yml"));
        assert_eq!(config_path(None, env), Path::new("/b.yml"));
        assert_eq!(config_path(None, Some(OsString::new())), Path::new(DEFAULT_CONFIG_PATH));
        assert_eq!(config_path(None, None), Path::new(DEFAULT_CONFIG_PATH));
    }

    #[test]
    fn load_reports_missing_and_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("pgha-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.yml");
        let err = LocalConfig::load(&missing).unwrap_err();
        assert!(matches!(&err, ConfigError::NotFound { path } if path == &missing));
        assert!(err.to_string().contains("pgha init"), "{err}");
        // A directory cannot be read as a file.
        let err = LocalConfig::load(&dir).unwrap_err();
        assert!(matches!(err, ConfigError::Unreadable { .. }), "{err:?}");
        let good = dir.join("pgha.yml");
        std::fs::write(&good, MINIMAL_YAML).unwrap();
        assert_eq!(LocalConfig::load(&good).unwrap(), parse(MINIMAL_YAML).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_errors_point_at_the_line() {
        let yaml = format!("{MINIMAL_YAML}raft2: {{}}\n");
        let err = parse(&yaml).unwrap_err();
        let text = err.to_string();
        // serde-saphyr's snippet: file:line:column and the offending line.
        assert!(text.contains("/etc/pgha/pgha.yml:11:"), "{text}");
        assert!(text.contains("raft2"), "{text}");
    }
}
