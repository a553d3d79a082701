//! libpq connection strings (`key='value' ...`): the `primary_conninfo` a standby streams with,
//! and the source given to `pg_basebackup` and `pg_rewind`. Pure. Input: the primary's address,
//! the replication or rewind role, this member's name and the cluster CA file; output: text with
//! every value quoted the libpq way (single quotes around it, `\` and `'` escaped with `\`). It
//! never shows a password: `Debug` and [`Conninfo::redacted`] mask it, and the strings handed to
//! tools on their command line are built without one (tools get it from `PGPASSWORD`).

use crate::types::MemberName;
use std::fmt;
use std::path::Path;

/// An ordered list of libpq keywords and values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Conninfo {
    pairs: Vec<(&'static str, String)>,
}

impl Conninfo {
    pub fn new() -> Conninfo {
        Conninfo::default()
    }

    /// Sets `key` (replacing an earlier value of it).
    pub fn set(mut self, key: &'static str, value: impl Into<String>) -> Conninfo {
        let value = value.into();
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((key, value)),
        }
        self
    }

    /// This conninfo without its password (what goes on a command line).
    pub fn without_password(mut self) -> Conninfo {
        self.pairs.retain(|(k, _)| *k != "password");
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    /// The connection string, secrets included.
    pub fn render(&self) -> String {
        self.render_with(|_, v| quote(v))
    }

    /// The connection string with the password masked, for logs and errors.
    pub fn redacted(&self) -> String {
        self.render_with(|k, v| if k == "password" { "'********'".to_owned() } else { quote(v) })
    }

    fn render_with(&self, value: impl Fn(&str, &str) -> String) -> String {
        self.pairs.iter().map(|(k, v)| format!("{k}={}", value(k, v))).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conninfo({})", self.redacted())
    }
}

/// A libpq value in single quotes: "Single quotes and backslashes within a value must be
/// escaped with a backslash" (libpq docs, 34.1.1.1). Quoting every value also covers empty
/// values and spaces.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Where a member's Postgres accepts connections (`postgresql.connect_address`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or an IP address (IPv6 without brackets: libpq takes it bare).
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port` or `[v6]:port` as `postgresql.connect_address` spells it.
    pub fn parse(address: &str) -> Option<Endpoint> {
        let (host, port) = match address.strip_prefix('[') {
            Some(rest) => {
                let (host, port) = rest.split_once("]:")?;
                (host, port)
            }
            None => address.rsplit_once(':')?,
        };
        let port = port.parse().ok().filter(|p| *p != 0)?;
        (!host.is_empty()).then(|| Endpoint { host: host.to_owned(), port })
    }
}

/// What a standby streams from: the primary's address, the replication role and its password,
/// this member's name and the CA that signed the primary's certificate.
#[derive(Clone, Debug)]
pub struct StreamSource<'a> {
    pub primary: &'a Endpoint,
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub member: &'a MemberName,
    pub ca_file: &'a Path,
}

impl StreamSource<'_> {
    /// `primary_conninfo`: TLS verified against the cluster CA (`verify-ca`: members are
    /// addressed by IP as often as by name, and only the cluster CA signs certificates, so the
    /// chain is what proves the peer), `application_name` = member name (what
    /// `pg_stat_replication` and `synchronous_standby_names` match on), and no GSSAPI attempt.
    pub fn primary_conninfo(&self) -> Conninfo {
        let mut c = Conninfo::new()
            .set("host", self.primary.host.clone())
            .set("port", self.primary.port.to_string())
            .set("user", self.user);
        if let Some(password) = self.password {
            c = c.set("password", password);
        }
        c.set("application_name", self.member.as_str())
            .set("sslmode", "verify-ca")
            .set("sslrootcert", self.ca_file.to_string_lossy())
            .set("gssencmode", "disable")
            // A dead primary must not hold a walreceiver (or a clone) for the kernel's TCP
            // timeout; the HA loop decides what to follow next.
            .set("connect_timeout", "5")
            .set("keepalives_idle", "5")
            .set("keepalives_interval", "2")
            .set("keepalives_count", "3")
    }

    /// The source for `pg_rewind --source-server`: the same address and TLS checks, a normal
    /// database connection (pg_rewind reads files through SQL functions).
    pub fn rewind_source(&self) -> Conninfo {
        self.primary_conninfo().set("dbname", "postgres")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_the_libpq_way() {
        let cases = [
            ("plain", "'plain'"),
            ("", "''"),
            ("two words", "'two words'"),
            ("it's", r"'it\'s'"),
            (r"back\slash", r"'back\\slash'"),
            (r"\'", r"'\\\''"),
            ("a=b c='d'", r"'a=b c=\'d\''"),
        ];
        for (value, want) in cases {
            assert_eq!(quote(value), want, "{value:?}");
        }
    }

    #[test]
    fn primary_conninfo_names_the_member_and_verifies_the_ca() {
        let primary = Endpoint { host: "10.0.0.11".into(), port: 5432 };
        let member = MemberName::new("node-2").unwrap();
        let source = StreamSource {
            primary: &primary,
            user: "replicator",
            password: Some("p'w\\d"),
            member: &member,
            ca_file: Path::new("/etc/pgha/ca.crt"),
        };
        let c = source.primary_conninfo();
        assert_eq!(
            c.render(),
            "host='10.0.0.11' port='5432' user='replicator' password='p\\'w\\\\d' \
             application_name='node-2' sslmode='verify-ca' sslrootcert='/etc/pgha/ca.crt' \
             gssencmode='disable' connect_timeout='5' keepalives_idle='5' \
             keepalives_interval='2' keepalives_count='3'"
        );
        assert!(!c.redacted().contains("p\\'w"), "{}", c.redacted());
        assert!(!format!("{c:?}").contains("p\\'w"));
        assert!(!c.clone().without_password().render().contains("password"));
        assert_eq!(source.rewind_source().get("dbname"), Some("postgres"));
        assert_eq!(c.clone().set("port", "1").get("port"), Some("1"));
    }

    #[test]
    fn endpoints_parse_like_connect_addresses() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(Endpoint::parse(s), Some(Endpoint { host: host.into(), port }), "{s}");
        };
        ok("10.0.0.11:5432", "10.0.0.11", 5432);
        ok("db1.example.com:6432", "db1.example.com", 6432);
        ok("[fd00::11]:5432", "fd00::11", 5432);
        for bad in ["10.0.0.11", ":5432", "host:0", "host:x", "[fd00::11]5432", "[::1]"] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
    }
}
