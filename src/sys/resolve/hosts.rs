//! `/etc/hosts`: the addresses a host name has there, in file order. Input: the file's text and
//! a name; output: every address of every line naming it (as canonical name or alias),
//! compared without regard to case and a trailing dot, as libc's `files` source does. Comments,
//! blank lines and addresses that do not parse (an IPv6 zone such as `fe80::1%eth0`) are
//! skipped. It never reads the file itself: the resolver does, once per lookup, so an edit
//! takes effect at the next connection without a restart.

use std::net::IpAddr;

/// The addresses of `name` in the text of a hosts file, file order, without duplicates.
pub fn lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let wanted = normalize(name);
    let mut found: Vec<IpAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(addr)) = fields.next().map(str::parse::<IpAddr>) else { continue };
        if fields.any(|n| normalize(n) == wanted) && !found.contains(&addr) {
            found.push(addr);
        }
    }
    found
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "\
# comment line
127.0.0.1\tlocalhost
::1     localhost ip6-localhost ip6-loopback
10.0.0.11 node1.example.com node1   # trailing comment
10.0.0.12 node2.example.com node2
fe80::1%eth0 linklocal
not-an-ip bogus
10.0.0.21 NODE1
10.0.0.11 node1
";

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn names_and_aliases_in_file_order() {
        assert_eq!(lookup(HOSTS, "localhost"), ips(&["127.0.0.1", "::1"]));
        assert_eq!(lookup(HOSTS, "ip6-loopback"), ips(&["::1"]));
        assert_eq!(lookup(HOSTS, "node2.example.com"), ips(&["10.0.0.12"]));
        // Every line naming it, once each, case and a trailing dot ignored.
        assert_eq!(lookup(HOSTS, "Node1."), ips(&["10.0.0.11", "10.0.0.21"]));
    }

    #[test]
    fn comments_and_unparsable_lines_are_skipped() {
        assert!(lookup(HOSTS, "comment").is_empty());
        assert!(lookup(HOSTS, "trailing").is_empty());
        assert!(lookup(HOSTS, "bogus").is_empty());
        assert!(lookup(HOSTS, "linklocal").is_empty());
        assert!(lookup(HOSTS, "node3").is_empty());
        assert!(lookup("", "localhost").is_empty());
    }
}
