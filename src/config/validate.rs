//! Validation of the local configuration file: the checks serde's types cannot express (name
//! syntax, `host:port` addresses, one listen address per service, absolute paths, the bootstrap
//! dynamic configuration against this node's safety margin). Input: a parsed [`LocalConfig`]
//! and the file's path for messages; output: the first problem as [`ConfigError::Invalid`] with
//! the dotted key, what is wrong and what to write instead. Pure: it never touches the network
//! or the file system (a connect address is checked for syntax, never resolved).

use crate::config::dynamic::DynamicConfigError;
use crate::config::file::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

impl LocalConfig {
    /// Checks everything serde's types did not; the first problem found is returned.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let v = Check { path };
        v.scope(&self.scope)?;
        v.user(&self.user)?;

        let mut listens = Vec::new();
        let api = v.listen("restapi.listen", &self.restapi.listen)?;
        v.connect("restapi", api, self.restapi.connect_address.as_deref())?;
        listens.push(("restapi.listen", api));
        let raft = v.listen("raft.listen", &self.raft.listen)?;
        v.connect("raft", raft, self.raft.connect_address.as_deref())?;
        listens.push(("raft.listen", raft));
        v.absolute("raft.data_dir", Some(&self.raft.data_dir), DEFAULT_RAFT_DATA_DIR)?;

        for (key, auth) in [
            ("restapi.authentication", &self.restapi.authentication),
            ("ctl.authentication", &self.ctl.authentication),
        ] {
            if let Some(a) = auth {
                if a.username.is_empty() || a.username.contains(':') {
                    return Err(v.invalid(
                        format!("{key}.username"),
                        "is empty or contains ':'",
                        "use a user name without ':' (basic auth separates user and password with it)",
                    ));
                }
                if a.password.as_deref().is_none_or(str::is_empty) {
                    return Err(v.invalid(format!("{key}.password"), "is missing", "set a password"));
                }
            }
        }

        if !self.witness {
            let pg = &self.postgresql;
            let listen = v.listen("postgresql.listen", &pg.listen)?;
            v.connect("postgresql", listen, pg.connect_address.as_deref())?;
            listens.push(("postgresql.listen", listen));
            v.absolute("postgresql.data_dir", Some(&pg.data_dir), DEFAULT_POSTGRESQL_DATA_DIR)?;
            v.absolute("postgresql.bin_dir", pg.bin_dir.as_deref(), "/usr/lib/postgresql/15/bin")?;
            v.authentication(&pg.authentication)?;
            v.parameters(pg)?;
        }

        if let Some(writer) = self.proxy.writer_listen() {
            listens.push(("proxy.listen", v.listen("proxy.listen", writer)?));
        }
        if let Some(readers) = self.proxy.replicas_listen() {
            let key = "proxy.replicas_listen";
            listens.push((key, v.listen(key, readers)?));
        }
        v.distinct(&listens)?;
        if self.proxy.max_connections == 0 {
            return Err(v.invalid("proxy.max_connections", "is 0", "use at least 1 (default 2000)"));
        }
        if self.proxy.connect_timeout == 0 {
            return Err(v.invalid("proxy.connect_timeout", "is 0", "use at least 1 second (default 5)"));
        }

        v.absolute("tls.cafile", Some(&self.tls.cafile), DEFAULT_CA_FILE)?;
        v.absolute("tls.certfile", Some(&self.tls.certfile), DEFAULT_NODE_CERT_FILE)?;
        v.absolute("tls.keyfile", Some(&self.tls.keyfile), DEFAULT_NODE_KEY_FILE)?;
        v.absolute("ctl.certfile", Some(&self.ctl.certfile), DEFAULT_CTL_CERT_FILE)?;
        v.absolute("ctl.keyfile", Some(&self.ctl.keyfile), DEFAULT_CTL_KEY_FILE)?;
        v.absolute("ctl.cacert", Some(&self.ctl.cacert), DEFAULT_CA_FILE)?;
        v.absolute("watchdog.device", Some(&self.watchdog.device), DEFAULT_WATCHDOG_DEVICE)?;
        v.absolute("log.file", self.log.file.as_deref(), "/var/log/pgha/pgha.log")?;
        let cb = &self.callbacks;
        let script = "/etc/pgha/callback.sh";
        v.absolute("callbacks.on_start", cb.on_start.as_deref(), script)?;
        v.absolute("callbacks.on_stop", cb.on_stop.as_deref(), script)?;
        v.absolute("callbacks.on_restart", cb.on_restart.as_deref(), script)?;
        v.absolute("callbacks.on_role_change", cb.on_role_change.as_deref(), script)?;
        let post = self.bootstrap.post_bootstrap.as_deref();
        v.absolute("bootstrap.post_bootstrap", post, "/etc/pgha/post_bootstrap.sh")?;

        if self.tags.failover_priority.is_some_and(|p| p < 0) {
            return Err(v.invalid(
                "tags.failover_priority",
                "is negative",
                "use 0 (never promote) or a positive priority (higher wins)",
            ));
        }
        if self.watchdog.safety_margin == 0 {
            // The margin absorbs renewal latency and clock-rate differences; without it the
            // primary's deadline could end after the Raft side's (DESIGN.md "The lease", rule 1).
            return Err(v.invalid(
                "watchdog.safety_margin",
                "is 0",
                format!("use at least 1 second (default {DEFAULT_SAFETY_MARGIN_S})"),
            ));
        }
        v.dcs(self)
    }
}

/// The file being validated, for error messages.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn invalid(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn scope(&self, scope: &str) -> Result<(), ConfigError> {
        // The scope is part of every certificate's URI SAN and of Postgres's cluster_name.
        if is_name(scope, 63) {
            Ok(())
        } else {
            Err(self.invalid(
                "scope",
                format!("{scope:?} is not a valid cluster name"),
                "use 1 to 63 characters from A-Z a-z 0-9 _ . -",
            ))
        }
    }

    fn user(&self, user: &str) -> Result<(), ConfigError> {
        // 32 is the Linux login name limit; the character set excludes the passwd separator.
        if is_name(user, 32) {
            Ok(())
        } else {
            Err(self.invalid(
                "user",
                format!("{user:?} is not a valid OS user name"),
                "use the name of an existing OS account, like postgres",
            ))
        }
    }

    /// A listen address must be `ip:port`: binding never resolves a host name.
    fn listen(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        let example = listen_example(key);
        let addr: SocketAddr = value.parse().map_err(|_| {
            self.invalid(
                key,
                format!("{value:?} is not ip:port"),
                format!("use an IP address and port like {example} (0.0.0.0 or [::] for all interfaces)"),
            )
        })?;
        if addr.port() == 0 {
            return Err(self.invalid(
                key,
                format!("{value:?} has port 0"),
                format!("use a fixed port, like {example}"),
            ));
        }
        Ok(addr)
    }

    /// `<section>.connect_address`: given, or derived from a listen address that is not a
    /// wildcard.
    fn connect(&self, section: &str, listen: SocketAddr, connect: Option<&str>) -> Result<(), ConfigError> {
        let key = format!("{section}.connect_address");
        let fix = format!("set {key} to an address other nodes can reach, like 10.0.0.11:{}", listen.port());
        match connect {
            None if listen.ip().is_unspecified() => Err(self.invalid(
                &key,
                format!("is not set and {section}.listen ({listen}) listens on all interfaces"),
                fix,
            )),
            None => Ok(()),
            Some(value) => match host_port_problem(value) {
                Some(problem) => Err(self.invalid(&key, format!("{value:?} {problem}"), fix)),
                None => Ok(()),
            },
        }
    }

    /// Two services cannot bind the same port on overlapping addresses.
    fn distinct(&self, listens: &[(&str, SocketAddr)]) -> Result<(), ConfigError> {
        for (i, (key_a, a)) in listens.iter().enumerate() {
            for (key_b, b) in &listens[i + 1..] {
                // A wildcard overlaps every address of the port (and on Linux `[::]` also takes
                // IPv4), so a wildcard and anything else on the same port is a conflict.
                let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                if a.port() == b.port() && overlap {
                    return Err(self.invalid(
                        *key_b,
                        format!("{b} overlaps {key_a} ({a}): both cannot listen there"),
                        format!("give {key_b} or {key_a} another port"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn absolute(&self, key: &str, path: Option<&Path>, example: &str) -> Result<(), ConfigError> {
        match path {
            Some(p) if !p.is_absolute() => Err(self.invalid(
                key,
                format!("{:?} is a relative path", p.display().to_string()),
                format!("use an absolute path, like {example}"),
            )),
            _ => Ok(()),
        }
    }

    fn authentication(&self, auth: &Authentication) -> Result<(), ConfigError> {
        let roles =
            [("superuser", &auth.superuser), ("replication", &auth.replication), ("rewind", &auth.rewind)];
        for (role, credentials) in roles {
            if credentials.username.is_empty() {
                return Err(self.invalid(
                    format!("postgresql.authentication.{role}.username"),
                    "is empty",
                    "name a Postgres role, or remove the section to use the default",
                ));
            }
        }
        Ok(())
    }

    fn parameters(&self, pg: &PostgresqlConfig) -> Result<(), ConfigError> {
        for (name, value) in &pg.parameters {
            let key = format!("postgresql.parameters.{name}");
            // Postgres GUC names: letters, digits, `_`, and `.` for extension prefixes.
            let ok_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !ok_name {
                return Err(self.invalid(
                    key,
                    "is not a Postgres parameter name",
                    "use the name as postgresql.conf spells it, like shared_buffers",
                ));
            }
            if !(value.is_string() || value.is_number() || value.is_boolean()) {
                return Err(self.invalid(
                    key,
                    "is not a single value",
                    "write one string, number or boolean, as in postgresql.conf",
                ));
            }
        }
        Ok(())
    }

    /// `bootstrap.dcs` must be valid with this node's safety margin.
    fn dcs(&self, config: &LocalConfig) -> Result<(), ConfigError> {
        let margin = config.watchdog.safety_margin;
        match config.bootstrap.dcs.validate(margin) {
            Ok(()) => Ok(()),
            Err(DynamicConfigError::OutOfRange { key, value, fix }) => {
                Err(self.invalid(format!("bootstrap.dcs.{key}"), format!("{value} is out of range"), fix))
            }
            Err(DynamicConfigError::TtlTooShort { ttl, loop_wait, retry_timeout, margin }) => Err(self
                .invalid(
                    "bootstrap.dcs.ttl",
                    format!(
                        "{ttl} is not larger than loop_wait ({loop_wait}) + retry_timeout \
                     ({retry_timeout}) + watchdog.safety_margin ({margin})"
                    ),
                    format!(
                        "raise bootstrap.dcs.ttl to at least {} or lower the others",
                        loop_wait + retry_timeout + margin + 1
                    ),
                )),
        }
    }
}

/// The default listen address of a key, used as the example in messages.
fn listen_example(key: &str) -> &'static str {
    match key {
        "restapi.listen" => DEFAULT_RESTAPI_LISTEN,
        "raft.listen" => DEFAULT_RAFT_LISTEN,
        "postgresql.listen" => DEFAULT_POSTGRESQL_LISTEN,
        "proxy.listen" => DEFAULT_PROXY_LISTEN,
        _ => DEFAULT_PROXY_REPLICAS_LISTEN,
    }
}

/// 1..=max characters from `[A-Za-z0-9_.-]`.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What is wrong with a connect address, or `None` when it is `host:port` with a usable host:
/// an IPv4 address, a bracketed IPv6 address or a DNS name.
fn host_port_problem(value: &str) -> Option<&'static str> {
    const WILDCARD: &str = "is a wildcard, not a reachable address";
    if let Some(rest) = value.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return Some("is not host:port ([IPv6]:port needs the port after the bracket)");
        };
        return port_problem(port).or(match v6.parse::<Ipv6Addr>() {
            Ok(ip) if ip.is_unspecified() => Some(WILDCARD),
            Ok(_) => None,
            Err(_) => Some("has an invalid IPv6 address"),
        });
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Some("is not host:port");
    };
    if host.contains(':') {
        return Some("has an IPv6 address without brackets: write [address]:port");
    }
    port_problem(port).or(if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        match host.parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_unspecified() => Some(WILDCARD),
            Ok(_) => None,
            Err(_) => Some("has an invalid IPv4 address"),
        }
    } else if is_dns_name(host) {
        None
    } else {
        Some("has an invalid host name")
    })
}

fn port_problem(port: &str) -> Option<&'static str> {
    match port.parse::<u16>() {
        Ok(1..) => None,
        _ => Some("has no valid port (1 to 65535)"),
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::tests::{parse, MINIMAL_YAML};

    /// What a bad file must produce.
    enum Want {
        /// `ConfigError::Invalid` with this key.
        Invalid(&'static str),
        /// `ConfigError::Parse` whose message contains all these.
        Parse(&'static [&'static str]),
    }

    fn check(name: &str, yaml: &str, want: Want) {
        let err = parse(yaml).expect_err(name);
        let text = err.to_string();
        assert!(text.contains("/etc/pgha/pgha.yml"), "{name}: file not named: {text}");
        match (want, &err) {
            (Want::Invalid(want_key), ConfigError::Invalid { key, .. }) => {
                assert_eq!(key, want_key, "{name}: {text}");
                assert!(text.contains(want_key), "{name}: {text}");
            }
            (Want::Parse(needles), ConfigError::Parse { .. }) => {
                for needle in needles {
                    assert!(text.contains(needle), "{name}: {needle:?} missing in: {text}");
                }
            }
            (_, other) => panic!("{name}: wrong variant: {other:?}"),
        }
    }

    /// The minimal file with `line` appended at the top level.
    fn with(line: &str) -> String {
        format!("{MINIMAL_YAML}{line}\n")
    }

    /// The minimal file with one of its lines replaced.
    fn replacing(old: &str, new: &str) -> String {
        assert!(MINIMAL_YAML.contains(old), "fixture has no {old:?}");
        MINIMAL_YAML.replace(old, new)
    }

    #[test]
    fn bad_files_name_the_key_and_the_file() {
        use Want::*;
        let cases: Vec<(&str, String, Want)> = vec![
            ("unknown top-level key", with("colour: blue"), Parse(&["colour", ":"])),
            (
                "unknown nested key",
                replacing("listen: 0.0.0.0:5010", "lisen: 0.0.0.0:5010"),
                Parse(&["lisen", "listen"]),
            ),
            ("yes is not a boolean", with("witness: yes"), Parse(&["witness: yes"])),
            ("on is not a boolean", with("tags: {nofailover: on}"), Parse(&["nofailover"])),
            ("missing name", replacing("name: node1\n", ""), Parse(&["name"])),
            ("bad member name", replacing("name: node1", "name: node/1"), Parse(&["node/1"])),
            ("duplicate key", with("scope: other"), Parse(&["scope"])),
            ("bad log level", with("log: {level: verbose}"), Parse(&["verbose", "debug"])),
            ("bad scope", replacing("scope: pgha", "scope: 'my cluster'"), Invalid("scope")),
            ("bad user", with("user: 'a:b'"), Invalid("user")),
            ("bad port", replacing("listen: 0.0.0.0:5010", "listen: 0.0.0.0:70000"), Invalid("raft.listen")),
            ("port zero", replacing("listen: 0.0.0.0:5010", "listen: 0.0.0.0:0"), Invalid("raft.listen")),
            (
                "listen must be an IP",
                replacing("listen: 0.0.0.0:5010", "listen: localhost:5010"),
                Invalid("raft.listen"),
            ),
            (
                "bad connect port",
                replacing("10.0.0.11:8008", "10.0.0.11:http"),
                Invalid("restapi.connect_address"),
            ),
            (
                "unbracketed IPv6 connect address",
                replacing("10.0.0.11:8008", "fe80::1:8008"),
                Invalid("restapi.connect_address"),
            ),
            (
                "wildcard connect address",
                replacing("10.0.0.11:8008", "0.0.0.0:8008"),
                Invalid("restapi.connect_address"),
            ),
            (
                "connect address missing with wildcard listen",
                replacing("  connect_address: \"10.0.0.11:5010\"\n", ""),
                Invalid("raft.connect_address"),
            ),
            ("duplicate listen address", with("proxy: {listen: \"0.0.0.0:8008\"}"), Invalid("proxy.listen")),
            (
                "wildcard overlaps a specific address",
                with("proxy: {replicas_listen: \"127.0.0.1:5010\"}"),
                Invalid("proxy.replicas_listen"),
            ),
            ("relative path", with("tls: {keyfile: node.key}"), Invalid("tls.keyfile")),
            (
                "relative data dir",
                replacing("data_dir: /var/lib/pgha/raft", "data_dir: raft"),
                Invalid("raft.data_dir"),
            ),
            (
                "ttl too short in bootstrap.dcs",
                with("bootstrap: {dcs: {ttl: 3}}"),
                Invalid("bootstrap.dcs.ttl"),
            ),
            (
                "loop_wait out of range in bootstrap.dcs",
                with("bootstrap: {dcs: {loop_wait: 0}}"),
                Invalid("bootstrap.dcs.loop_wait"),
            ),
            (
                "a larger safety margin needs a larger ttl",
                with("watchdog: {safety_margin: 6}"),
                Invalid("bootstrap.dcs.ttl"),
            ),
            ("unknown key in bootstrap.dcs", with("bootstrap: {dcs: {tll: 30}}"), Parse(&["tll"])),
            (
                "parameter that is not a scalar",
                replacing("postgresql:\n", "postgresql:\n  parameters: {a: [1]}\n"),
                Invalid("postgresql.parameters.a"),
            ),
            (
                "negative failover priority",
                with("tags: {failover_priority: -1}"),
                Invalid("tags.failover_priority"),
            ),
        ];
        for (name, yaml, want) in cases {
            check(name, &yaml, want);
        }
    }

    #[test]
    fn connect_address_is_derived_from_a_specific_listen_address() {
        let yaml = replacing(
            "  listen: 0.0.0.0:5010\n  connect_address: \"10.0.0.11:5010\"\n",
            "  listen: 10.0.0.11:5010\n",
        );
        let config = parse(&yaml).unwrap();
        assert_eq!(config.raft.connect_address(), "10.0.0.11:5010");
    }

    #[test]
    fn witness_ignores_the_postgresql_section() {
        let yaml = format!("{MINIMAL_YAML}witness: true\n")
            .replace("postgresql:\n  connect_address: \"10.0.0.11:5432\"\n", "");
        let config = parse(&yaml).unwrap();
        assert!(config.witness);
        // On a data node the same file lacks postgresql.connect_address.
        let data_node = yaml.replace("witness: true\n", "");
        check("data node", &data_node, Want::Invalid("postgresql.connect_address"));
    }

    #[test]
    fn proxy_listeners_can_be_turned_off() {
        let config = parse(&with("proxy: {listen: \"off\", replicas_listen: off}")).unwrap();
        assert_eq!(config.proxy.writer_listen(), None);
        assert_eq!(config.proxy.replicas_listen(), None);
        // `off` frees the port for another service.
        parse(&with("proxy: {listen: off, replicas_listen: \"0.0.0.0:5000\"}")).unwrap();
    }

    #[test]
    fn connect_address_syntax() {
        let cases = [
            ("10.0.0.11:8008", true),
            ("db1.example.com:8008", true),
            ("db1:8008", true),
            ("[fe80::1]:8008", true),
            ("[::]:8008", false),
            ("fe80::1", false),
            ("[fe80::1]", false),
            ("10.0.0.300:8008", false),
            ("db_1:8008", false),
            ("-db:8008", false),
            ("db1:", false),
            ("db1:0", false),
            (":8008", false),
            ("db1", false),
        ];
        for (value, ok) in cases {
            assert_eq!(host_port_problem(value).is_none(), ok, "{value}");
        }
    }
}
