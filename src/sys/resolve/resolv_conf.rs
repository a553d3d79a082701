//! `/etc/resolv.conf`: which DNS servers to ask, which search domains to try and how long to
//! wait. Input: the file's text; output: a [`ResolvConf`] with libc's defaults where the file is
//! silent (no `nameserver`: the local one, 127.0.0.1; `ndots:1`; `attempts:2`), except the
//! per-query timeout: 1 s instead of libc's 5 s, because every caller in pgha has a deadline of
//! a few seconds and a dead first server must leave time for the next one. An explicit
//! `options timeout:N` is kept. Unknown lines and options are ignored, as libc does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The standard DNS port.
pub const DNS_PORT: u16 = 53;
/// libc's limit on servers used (MAXNS).
const MAX_SERVERS: usize = 3;
/// libc's caps on `timeout:` and `attempts:` (RES_MAXRETRANS, RES_MAXRETRY).
const MAX_TIMEOUT_S: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    pub servers: Vec<SocketAddr>,
    /// Domains appended to a relative name (`search`, or the last `domain`).
    pub search: Vec<String>,
    /// A name with at least this many dots is tried as is before the search domains.
    pub ndots: usize,
    /// How long to wait for one server's answer to one query.
    pub timeout: Duration,
    /// Rounds over the server list.
    pub attempts: u32,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            servers: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT)],
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(1),
            attempts: 2,
        }
    }
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf { servers: Vec::new(), ..ResolvConf::default() };
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => {
                    // An IPv6 zone (`fe80::1%eth0`) does not parse and is skipped.
                    if let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) {
                        if conf.servers.len() < MAX_SERVERS {
                            conf.servers.push(SocketAddr::new(ip, DNS_PORT));
                        }
                    }
                }
                // The last of `domain` and `search` wins, as in libc.
                Some("domain") => conf.search = fields.next().map(|d| vec![domain(d)]).unwrap_or_default(),
                Some("search") => conf.search = fields.map(domain).collect(),
                Some("options") => {
                    for option in fields {
                        let (key, value) = option.split_once(':').unwrap_or((option, ""));
                        let Ok(n) = value.parse::<u64>() else { continue };
                        match key {
                            "ndots" => conf.ndots = n.min(15) as usize,
                            "timeout" => conf.timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT_S)),
                            "attempts" => conf.attempts = (n as u32).clamp(1, MAX_ATTEMPTS),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.servers.is_empty() {
            conf.servers = ResolvConf::default().servers;
        }
        conf
    }

    /// The fully qualified names to query for `name`, in order (libc's `res_search`): an
    /// absolute name (trailing dot) as is; a name with at least `ndots` dots as is, then with
    /// each search domain; a shorter one with each search domain first, then as is.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let with_search = self.search.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_owned()).chain(with_search).collect()
        } else {
            with_search.chain(std::iter::once(name.to_owned())).collect()
        }
    }
}

fn domain(d: &str) -> String {
    d.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_servers_search_and_options() {
        let c = ResolvConf::parse(
            "# generated\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver ::1 ; comment\n\
             domain ignored.example\nsearch corp.example. example.com\n\
             options ndots:2 timeout:3 attempts:9 rotate edns0\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
        );
        let servers: Vec<SocketAddr> =
            ["10.0.0.2:53", "[::1]:53", "10.0.0.3:53"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.servers, servers);
        assert_eq!(c.search, ["corp.example", "example.com"]);
        assert_eq!(c.ndots, 2);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.attempts, MAX_ATTEMPTS);
    }

    #[test]
    fn an_empty_file_means_the_local_server_and_short_timeouts() {
        let c = ResolvConf::parse("");
        assert_eq!(c, ResolvConf::default());
        assert_eq!(c.servers, ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.timeout, Duration::from_secs(1));
    }

    #[test]
    fn search_order_follows_ndots() {
        let c = ResolvConf::parse("search corp.example\n");
        assert_eq!(c.candidates("db1"), ["db1.corp.example", "db1"]);
        assert_eq!(c.candidates("db1.eu"), ["db1.eu", "db1.eu.corp.example"]);
        assert_eq!(c.candidates("db1.eu."), ["db1.eu"]);
        let c = ResolvConf::parse("search a.example b.example\noptions ndots:3\n");
        assert_eq!(c.candidates("x.y"), ["x.y.a.example", "x.y.b.example", "x.y"]);
        // The last of domain/search wins.
        let c = ResolvConf::parse("search a.example\ndomain d.example\n");
        assert_eq!(c.search, ["d.example"]);
    }
}
