//! Host names to addresses without libc: the static binary must never call `getaddrinfo`,
//! which dlopens the host's NSS modules (STACK.md item 2), and tokio's and std's
//! `connect("host:port")` do exactly that for anything but an IP literal. Input: `host:port`
//! (or a bare host), `/etc/hosts`, `/etc/resolv.conf`; output: the addresses to try, or a
//! [`ResolveError`] that names the host and what was asked. Order, as libc's `files dns`:
//! an IP literal as is; else every address `/etc/hosts` gives the name; else `localhost` and
//! `*.localhost` are the loopback addresses (RFC 6761, as systemd's nss-myhostname answers);
//! else A then AAAA records from the DNS servers of `/etc/resolv.conf`, with its search domains
//! (`dns`). IPv4 first because pgha's listeners default to `0.0.0.0`. Both files are read on
//! every lookup, so an edit takes effect at the next connection. Not covered: LDAP/mDNS/other
//! NSS sources, and the machine's own name when it is in neither file nor DNS.
//!
//! [`connect`] is what every outbound TCP connection of pgha to a configured address uses (the
//! Raft transport, the API client); it tries each address in turn.

pub mod dns;
pub mod hosts;
pub mod resolv_conf;

use dns::{Answer, DnsError, RecordType};
use resolv_conf::ResolvConf;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use tokio::net::TcpStream;

pub const HOSTS_PATH: &str = "/etc/hosts";
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{address:?} is not host:port (write an IPv6 address in brackets: [fd00::1]:5432)")]
    BadAddress { address: String },
    #[error("{host:?} is not a valid host name")]
    BadName { host: String },
    #[error(
        "cannot resolve {host:?}: it is not in {HOSTS_PATH} and DNS ({servers}) has no address for \
         it; add it to {HOSTS_PATH} or DNS, or use an IP address"
    )]
    NotFound { host: String, servers: String },
    #[error(
        "cannot resolve {host:?}: it is not in {HOSTS_PATH} and no DNS server answered ({detail}); \
         check the nameserver lines of {RESOLV_CONF_PATH}"
    )]
    NoAnswer { host: String, detail: String },
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Each address tried, with its error.
    #[error("{}", .tried.iter().map(|(a, e)| format!("{a}: {e}")).collect::<Vec<_>>().join("; "))]
    Refused { tried: Vec<(SocketAddr, std::io::Error)> },
}

/// Where the resolver reads its two files (tests point it elsewhere).
#[derive(Clone, Debug)]
pub struct Resolver {
    pub hosts_path: PathBuf,
    pub resolv_conf_path: PathBuf,
}

impl Resolver {
    /// The machine's `/etc/hosts` and `/etc/resolv.conf`.
    pub fn system() -> Resolver {
        Resolver { hosts_path: HOSTS_PATH.into(), resolv_conf_path: RESOLV_CONF_PATH.into() }
    }

    /// The addresses of `host` (a name or an IP literal, IPv6 with or without brackets).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        // A missing or unreadable file is an empty one, as for libc.
        let hosts = std::fs::read_to_string(&self.hosts_path).unwrap_or_default();
        let conf = match std::fs::read_to_string(&self.resolv_conf_path) {
            Ok(text) => ResolvConf::parse(&text),
            Err(_) => ResolvConf::default(),
        };
        lookup_with(&hosts, &conf, host).await
    }

    /// The socket addresses of `host:port`.
    pub async fn resolve(&self, address: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let (host, port) = split_host_port(address)?;
        Ok(self.lookup(host).await?.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

/// Splits `host:port` / `[v6]:port`; a bare IPv6 address without brackets is refused (its
/// last group would read as a port).
pub fn split_host_port(address: &str) -> Result<(&str, u16), ResolveError> {
    let bad = || ResolveError::BadAddress { address: address.to_owned() };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// [`Resolver::lookup`] over the given file contents.
pub async fn lookup_with(hosts: &str, conf: &ResolvConf, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if !valid_name(host) {
        return Err(ResolveError::BadName { host: host.to_owned() });
    }
    let from_file = hosts::lookup(hosts, host);
    if !from_file.is_empty() {
        return Ok(from_file);
    }
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
    dns_lookup(conf, host).await
}

/// A name DNS can carry: labels of letters, digits, `-` and `_`, at most 63 bytes each.
fn valid_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Each search candidate in turn; for each, every server (for `attempts` rounds) until one
/// answers. A name that does not exist moves on to the next candidate; a server that fails
/// or is silent moves on to the next server.
async fn dns_lookup(conf: &ResolvConf, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let mut failures: Vec<DnsError> = Vec::new();
    let mut answered = false;
    for name in conf.candidates(host) {
        'servers: for _ in 0..conf.attempts {
            for &server in &conf.servers {
                let (a, aaaa) = tokio::join!(
                    dns::query(server, &name, RecordType::A, conf.timeout),
                    dns::query(server, &name, RecordType::Aaaa, conf.timeout),
                );
                let mut found = Vec::new();
                let mut definite = 0;
                for answer in [a, aaaa] {
                    match answer {
                        Ok(Answer::Addresses(ips)) => {
                            definite += 1;
                            found.extend(ips);
                        }
                        Ok(Answer::NoSuchName) => definite += 1,
                        Err(e) => failures.push(e),
                    }
                }
                if !found.is_empty() {
                    return Ok(found);
                }
                if definite == 2 {
                    // The server says the name has no address: try the next candidate.
                    answered = true;
                    break 'servers;
                }
            }
        }
    }
    if answered || failures.is_empty() {
        let servers = conf.servers.iter().map(|s| s.ip().to_string()).collect::<Vec<_>>().join(", ");
        return Err(ResolveError::NotFound { host: host.to_owned(), servers });
    }
    failures.dedup();
    let detail = failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    Err(ResolveError::NoAnswer { host: host.to_owned(), detail })
}

/// Connects to `address` (`host:port`), resolving it with the system [`Resolver`] and trying
/// each address in order. The caller bounds the whole call with its own deadline.
pub async fn connect(address: &str) -> Result<TcpStream, ConnectError> {
    let addrs = Resolver::system().resolve(address).await?;
    let mut tried = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => tried.push((addr, e)),
        }
    }
    Err(ConnectError::Refused { tried })
}

#[cfg(test)]
mod tests;
