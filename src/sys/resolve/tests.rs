//! The resolver against a fake recursive DNS server on 127.0.0.1 (UDP and TCP on one port).

use super::dns::tests::{question, wire_name, Reply};
use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const A: u16 = 1;
const AAAA: u16 = 28;

/// What the fake server knows: (name, type) -> records; names it does not know get NXDOMAIN.
/// `truncate_udp`: every UDP answer is cut and flagged TC (the client must use TCP).
#[derive(Default)]
struct Zone {
    records: BTreeMap<(String, u16), Vec<Vec<u8>>>,
    truncate_udp: bool,
}

impl Zone {
    fn with(mut self, name: &str, ip: &str) -> Zone {
        let (rtype, data) = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => (A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (AAAA, v6.octets().to_vec()),
        };
        self.records.entry((name.to_owned(), rtype)).or_default().push(data);
        self
    }

    fn reply(&self, query: &[u8], over_udp: bool) -> Vec<u8> {
        let (name, rtype) = question(query);
        let known = self.records.keys().any(|(n, _)| n == &name);
        if over_udp && self.truncate_udp {
            return Reply { rcode: 0, truncated: true, records: vec![] }.to(query);
        }
        let records = self
            .records
            .get(&(name, rtype))
            .map(|list| list.iter().map(|d| (None, rtype, d.clone())).collect())
            .unwrap_or_default();
        Reply { rcode: if known { 0 } else { 3 }, truncated: false, records }.to(query)
    }
}

/// Serves `zone` on a free 127.0.0.1 port until the test ends; returns the server address.
async fn serve(zone: Zone) -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let zone = Arc::new(zone);
    let z = zone.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&z.reply(&buf[..n], true), from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let len = s.read_u16().await.unwrap() as usize;
            let mut q = vec![0u8; len];
            s.read_exact(&mut q).await.unwrap();
            let r = zone.reply(&q, false);
            s.write_all(&(r.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&r).await.unwrap();
        }
    });
    addr
}

fn conf(servers: &[SocketAddr], extra: &str) -> ResolvConf {
    let mut c = ResolvConf::parse(extra);
    c.servers = servers.to_vec();
    c.timeout = Duration::from_millis(300);
    c
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A port with nobody answering on it (bound, never read).
async fn silent_server() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[tokio::test]
async fn literals_and_the_hosts_file_come_first() {
    let (_keep, nobody) = silent_server().await;
    let c = conf(&[nobody], "");
    let hosts = "10.0.0.11 node1\n";
    assert_eq!(lookup_with(hosts, &c, "10.1.2.3").await.unwrap(), ips(&["10.1.2.3"]));
    assert_eq!(lookup_with(hosts, &c, "[fd00::1]").await.unwrap(), ips(&["fd00::1"]));
    assert_eq!(lookup_with(hosts, &c, "NODE1").await.unwrap(), ips(&["10.0.0.11"]));
    // localhost without a hosts entry: the loopback addresses, no DNS query.
    assert_eq!(lookup_with("", &c, "localhost").await.unwrap(), ips(&["127.0.0.1", "::1"]));
    assert_eq!(lookup_with("", &c, "api.localhost.").await.unwrap(), ips(&["127.0.0.1", "::1"]));
    let err = lookup_with(hosts, &c, "bad name!").await.unwrap_err();
    assert!(matches!(err, ResolveError::BadName { .. }), "{err}");
}

#[tokio::test]
async fn dns_gives_ipv4_then_ipv6_and_uses_search_domains() {
    let zone = Zone::default()
        .with("db1.corp.example", "fd00::11")
        .with("db1.corp.example", "10.0.0.11")
        .with("db1.corp.example", "10.0.0.12");
    let server = serve(zone).await;
    let c = conf(&[server], "search other.example corp.example\n");
    let want = ips(&["10.0.0.11", "10.0.0.12", "fd00::11"]);
    assert_eq!(lookup_with("", &c, "db1").await.unwrap(), want);
    assert_eq!(lookup_with("", &c, "db1.corp.example").await.unwrap(), want);
    let err = lookup_with("", &c, "db2").await.unwrap_err();
    assert!(matches!(&err, ResolveError::NotFound { host, .. } if host == "db2"), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn a_silent_server_is_skipped_and_a_truncated_answer_retried_over_tcp() {
    let (_keep, nobody) = silent_server().await;
    let server = serve(Zone { truncate_udp: true, ..Zone::default() }.with("big.example", "10.0.0.7")).await;
    let c = conf(&[nobody, server], "");
    assert_eq!(lookup_with("", &c, "big.example").await.unwrap(), ips(&["10.0.0.7"]));
    // Only silence: a timeout that names the server.
    let c = conf(&[nobody], "options attempts:1\n");
    let err = lookup_with("", &c, "big.example").await.unwrap_err();
    assert!(matches!(err, ResolveError::NoAnswer { .. }), "{err}");
    assert!(err.to_string().contains(&nobody.to_string()), "{err}");
}

#[test]
fn host_port_syntax() {
    assert_eq!(split_host_port("db1:5432").unwrap(), ("db1", 5432));
    assert_eq!(split_host_port("[fd00::1]:8008").unwrap(), ("fd00::1", 8008));
    for bad in ["db1", "db1:", ":5432", "fd00::1:5432", "[fd00::1:5432", "db1:99999"] {
        assert!(split_host_port(bad).is_err(), "{bad}");
    }
    assert_eq!(wire_name("a.b").len(), 5);
}

#[tokio::test]
async fn connect_by_name_through_the_system_files() {
    // Every Debian and RHEL /etc/hosts names localhost; without it the RFC 6761 rule answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stream = connect(&format!("localhost:{port}")).await.unwrap();
    assert_eq!(stream.peer_addr().unwrap().port(), port);
    let resolved = Resolver::system().resolve(&format!("localhost:{port}")).await.unwrap();
    assert!(resolved.contains(&SocketAddr::from(([127, 0, 0, 1], port))), "{resolved:?}");
    let err = connect("127.0.0.1:1").await.unwrap_err();
    assert!(err.to_string().starts_with("127.0.0.1:1: "), "{err}");
}
