//! Real TLS handshakes over loopback (tokio + tokio-rustls) for every configuration in
//! `config`: who gets in, who is refused, and what identity each side sees.

use super::*;
use crate::tls::pki::{generate_ca, issue_client_cert, issue_member_cert, CaPem, CertPem};
use crate::types::MemberName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SCOPE: &str = "batman";
/// Generous: a handshake on loopback takes milliseconds; this only stops a broken test hanging.
const DEADLINE: Duration = Duration::from_secs(10);

fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn member_cert(ca: &CaPem, name: &str) -> CertPem {
    let id = Identity::member(SCOPE, MemberName::new(name).unwrap()).unwrap();
    issue_member_cert(ca, &id, &["127.0.0.1".to_string(), format!("{name}.example.com")]).unwrap()
}

fn node(ca: &CaPem, name: &str) -> NodeTls {
    let cert = member_cert(ca, name);
    NodeTls::from_pem(&ca.cert_pem, &cert.cert_pem, &cert.key_pem).unwrap()
}

fn ca_der(ca: &CaPem) -> CertificateDer<'static> {
    CertificateDer::from(pki::first_cert_der(&ca.cert_pem, "test").unwrap())
}

/// A ctl user's chain and key.
fn ctl_auth(ca: &CaPem, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let id = Identity::client(SCOPE, MemberName::new(name).unwrap()).unwrap();
    let cert = issue_client_cert(ca, &id).unwrap();
    let der = pki::first_cert_der(&cert.cert_pem, "test").unwrap();
    (vec![der.into()], PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap())
}

/// A copy of `config` offering the Raft ALPN, so a refusal can only come from the certificate.
fn with_raft_alpn(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut c = (*config).clone();
    c.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    Arc::new(c)
}

/// The server's view of an accepted client: its identity (an error if it sent no certificate)
/// and the ALPN protocol agreed.
type ServerView = (Result<Identity, String>, Option<Vec<u8>>);

/// What each side of one handshake saw. `Err` holds the error text of a failed handshake.
#[derive(Debug)]
struct Seen {
    server: Result<ServerView, String>,
    /// The client's view: the server's identity, after reading the server's first bytes.
    client: Result<Identity, String>,
}

/// Runs one handshake on a fresh loopback port; the server writes "ok" once it accepted, and
/// the client's result is only `Ok` once it read that (in TLS 1.3 a client finishes its side
/// before the server has judged its certificate).
async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, host: &str) -> Seen {
    install_ring();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls =
            TlsAcceptor::from(server).accept(tcp).await.map_err(|e| describe_handshake_error(&e))?;
        let (_, conn) = tls.get_ref();
        let identity = peer_identity_from_conn(conn, SCOPE).map_err(|e| e.to_string());
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((identity, alpn))
    });
    let name = server_name(host).unwrap();
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls =
            TlsConnector::from(client).connect(name, tcp).await.map_err(|e| describe_handshake_error(&e))?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.map_err(|e| describe_handshake_error(&e))?;
        assert_eq!(&buf, b"ok");
        peer_identity_from_conn(tls.get_ref().1, SCOPE).map_err(|e| e.to_string())
    };
    let client = tokio::time::timeout(DEADLINE, client_side).await.expect("client hung");
    let server = tokio::time::timeout(DEADLINE, server_task).await.expect("server hung").unwrap();
    Seen { server, client }
}

fn member_id(name: &str) -> Identity {
    Identity::member(SCOPE, MemberName::new(name).unwrap()).unwrap()
}

#[tokio::test]
async fn members_complete_the_raft_handshake_and_see_each_other() {
    let ca = generate_ca(SCOPE).unwrap();
    let (n1, n2) = (node(&ca, "n1"), node(&ca, "n2"));
    let seen =
        handshake(raft_server_config(&n1).unwrap(), raft_client_config(&n2).unwrap(), "127.0.0.1").await;
    let (client_id, alpn) = seen.server.expect("server accepts a member");
    assert_eq!(client_id.unwrap(), member_id("n2"));
    assert_eq!(alpn.as_deref(), Some(RAFT_ALPN));
    assert_eq!(seen.client.unwrap(), member_id("n1"));

    // By DNS name too; a name the certificate does not carry is refused by the client.
    let seen =
        handshake(raft_server_config(&n1).unwrap(), raft_client_config(&n2).unwrap(), "n1.example.com").await;
    assert!(seen.client.is_ok(), "{seen:?}");
    let seen =
        handshake(raft_server_config(&n1).unwrap(), raft_client_config(&n2).unwrap(), "n9.example.com").await;
    assert!(seen.client.is_err() && seen.server.is_err(), "{seen:?}");
}

#[tokio::test]
async fn raft_refuses_a_member_of_another_cluster_ca() {
    let ca = generate_ca(SCOPE).unwrap();
    let other_ca = generate_ca(SCOPE).unwrap();
    let n1 = node(&ca, "n1");
    let stranger = node(&other_ca, "n2");
    // A client that trusts our CA but presents a member certificate of another one.
    let foreign = api_client_config(&ca_der(&ca), Some(stranger.client_auth())).unwrap();
    let seen = handshake(raft_server_config(&n1).unwrap(), with_raft_alpn(foreign), "127.0.0.1").await;
    let err = seen.server.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(seen.client.is_err());
    // Two strangers refuse each other whoever speaks first.
    let seen =
        handshake(raft_server_config(&n1).unwrap(), raft_client_config(&stranger).unwrap(), "127.0.0.1")
            .await;
    assert!(seen.client.is_err() && seen.server.is_err(), "{seen:?}");
    // And a member never talks Raft to a server of another CA.
    let seen =
        handshake(raft_server_config(&stranger).unwrap(), raft_client_config(&n1).unwrap(), "127.0.0.1")
            .await;
    assert!(seen.client.is_err() && seen.server.is_err(), "{seen:?}");
}

#[tokio::test]
async fn raft_refuses_clients_without_a_member_certificate() {
    let ca = generate_ca(SCOPE).unwrap();
    let n1 = node(&ca, "n1");
    let anonymous = with_raft_alpn(api_client_config(&ca_der(&ca), None).unwrap());
    let seen = handshake(raft_server_config(&n1).unwrap(), anonymous, "127.0.0.1").await;
    assert!(seen.server.unwrap_err().contains("no certificates"));
    assert!(seen.client.is_err());

    // A ctl certificate of this very CA is still no member certificate.
    let ctl = with_raft_alpn(api_client_config(&ca_der(&ca), Some(ctl_auth(&ca, "ops"))).unwrap());
    let seen = handshake(raft_server_config(&n1).unwrap(), ctl, "127.0.0.1").await;
    let err = seen.server.unwrap_err();
    assert!(err.contains("not a member certificate"), "{err}");
    assert!(seen.client.is_err());
}

#[tokio::test]
async fn api_accepts_anonymous_and_ctl_clients_but_not_foreign_certificates() {
    let ca = generate_ca(SCOPE).unwrap();
    let n1 = node(&ca, "n1");
    let anonymous = api_client_config(&ca_der(&ca), None).unwrap();
    let seen = handshake(api_server_config(&n1).unwrap(), anonymous, "127.0.0.1").await;
    let (client_id, alpn) = seen.server.expect("anonymous API client accepted");
    assert!(client_id.unwrap_err().contains("no certificate"));
    assert_eq!(alpn.as_deref(), Some(HTTP11_ALPN));
    assert_eq!(seen.client.unwrap(), member_id("n1"));

    let ctl = api_client_config(&ca_der(&ca), Some(ctl_auth(&ca, "ops"))).unwrap();
    let seen = handshake(api_server_config(&n1).unwrap(), ctl, "127.0.0.1").await;
    let id = seen.server.unwrap().0.unwrap();
    assert_eq!((id.role, id.name.as_str()), (Role::Client, "ops"));

    // A peer node calling the API with its member certificate.
    let n2 = node(&ca, "n2");
    let peer = api_client_config(&ca_der(&ca), Some(n2.client_auth())).unwrap();
    let seen = handshake(api_server_config(&n1).unwrap(), peer, "127.0.0.1").await;
    assert_eq!(seen.server.unwrap().0.unwrap(), member_id("n2"));

    let other_ca = generate_ca(SCOPE).unwrap();
    let foreign = api_client_config(&ca_der(&ca), Some(ctl_auth(&other_ca, "ops"))).unwrap();
    let seen = handshake(api_server_config(&n1).unwrap(), foreign, "127.0.0.1").await;
    assert!(seen.server.is_err() && seen.client.is_err(), "{seen:?}");
}

#[tokio::test]
async fn a_joiner_pins_the_ca_by_fingerprint() {
    let ca = generate_ca(SCOPE).unwrap();
    let n1 = node(&ca, "n1");
    let fp = pki::fingerprint(&ca.cert_pem).unwrap();

    let (pinned, found) = pinned_client_config(&fp).unwrap();
    let seen = handshake(api_server_config(&n1).unwrap(), pinned, "127.0.0.1").await;
    assert!(seen.server.is_ok() && seen.client.is_ok(), "{seen:?}");
    assert_eq!(found.get().unwrap(), ca_der(&ca));

    // openssl's spelling (upper case, colons) is accepted too.
    let colons: Vec<String> =
        fp.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
    assert!(pinned_client_config(&colons.join(":")).is_ok());

    let other = generate_ca(SCOPE).unwrap();
    let (wrong, found) = pinned_client_config(&pki::fingerprint(&other.cert_pem).unwrap()).unwrap();
    let seen = handshake(api_server_config(&n1).unwrap(), wrong, "127.0.0.1").await;
    let err = seen.client.unwrap_err();
    assert!(err.contains("pinned by the join token"), "{err}");
    assert!(seen.server.is_err());
    assert!(found.get().is_none());

    // The right fingerprint but a server of another cluster that merely sends our CA along.
    let mut impostor = node(&other, "n1");
    impostor.chain[1] = ca_der(&ca);
    let (pinned, _) = pinned_client_config(&fp).unwrap();
    let seen = handshake(api_server_config(&impostor).unwrap(), pinned, "127.0.0.1").await;
    assert!(seen.client.is_err(), "{seen:?}");

    for bad in ["", "abc", &"g".repeat(64), &fp[..62]] {
        assert!(matches!(pinned_client_config(bad), Err(TlsError::BadFingerprint(_))), "{bad:?}");
    }
}

#[test]
fn node_tls_refuses_files_that_do_not_belong_together() {
    let ca = generate_ca(SCOPE).unwrap();
    let n1 = member_cert(&ca, "n1");
    let n2 = member_cert(&ca, "n2");
    let mixed = NodeTls::from_pem(&ca.cert_pem, &n1.cert_pem, &n2.key_pem);
    assert!(matches!(mixed, Err(TlsError::KeyMismatch { .. })), "{mixed:?}");

    let other = generate_ca(SCOPE).unwrap();
    let foreign = NodeTls::from_pem(&other.cert_pem, &n1.cert_pem, &n1.key_pem);
    assert!(matches!(foreign, Err(TlsError::NotFromCa { .. })), "{foreign:?}");

    let id = Identity::client(SCOPE, MemberName::new("ops").unwrap()).unwrap();
    let ctl = issue_client_cert(&ca, &id).unwrap();
    let wrong_role = NodeTls::from_pem(&ca.cert_pem, &ctl.cert_pem, &ctl.key_pem);
    assert!(matches!(wrong_role, Err(TlsError::WrongRole { role: Role::Client, .. })));

    let empty = NodeTls::from_pem(&ca.cert_pem, "", &n1.key_pem);
    assert!(matches!(empty, Err(TlsError::Pem { what: "certificate", .. })));

    let missing = Path::new("/nonexistent/pgha/node.crt");
    let err = NodeTls::load(Path::new("/nonexistent/ca.crt"), missing, missing).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/nonexistent/ca.crt") && text.contains("pgha join"), "{text}");

    let ok = NodeTls::from_pem(&ca.cert_pem, &n1.cert_pem, &n1.key_pem).unwrap();
    assert_eq!(ok.identity, member_id("n1"));
    assert_eq!(ok.chain.len(), 2);
    assert_eq!(ok.chain[1], ok.ca_der);
}

#[test]
fn server_names_are_ips_or_dns_names() {
    use rustls::pki_types::ServerName as S;
    assert!(matches!(server_name("127.0.0.1").unwrap(), S::IpAddress(_)));
    assert!(matches!(server_name("::1").unwrap(), S::IpAddress(_)));
    assert!(matches!(server_name("[::1]").unwrap(), S::IpAddress(_)));
    assert!(matches!(server_name("node1.example.com").unwrap(), S::DnsName(_)));
    assert!(matches!(server_name("bad host"), Err(TlsError::BadServerName(_))));
}
