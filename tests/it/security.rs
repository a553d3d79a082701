//! Certificates at the doors of a running cluster A: its Raft port refuses a member certificate
//! of another cluster B (same scope, other CA) and a `pgha ctl` client certificate of its own
//! CA; its API refuses mutating calls with B's certificate or with none (401), and still
//! answers GETs without one. Nothing changes in A.

use crate::harness::{self, show, wait_until, Cluster, SETTLE};
use pgha::api::client::{ApiClient, ClientError};
use pgha::api::model::{MemberRow, TokenRequest, TokenResponse};
use pgha::tls::{self, NodeTls};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Dials `raft_addr` presenting `client`'s certificate while trusting the server by
/// `client.ca_der`. `Ok(())` if the server cut the connection (error or EOF on the first
/// read, TLS 1.3 reports a refused client certificate only there); `Err` if it kept it open.
async fn raft_peer_refused(raft_addr: &str, client: &NodeTls) -> Result<String, String> {
    let config = tls::raft_client_config(client).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(raft_addr).await.map_err(|e| e.to_string())?;
    let name = tls::server_name("127.0.0.1").map_err(|e| e.to_string())?;
    let mut conn = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(c) => c,
        Err(e) => return Ok(format!("handshake failed: {e}")),
    };
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
        Ok(Err(e)) => Ok(format!("first read failed: {e}")),
        Ok(Ok(0)) => Ok("closed".into()),
        Ok(Ok(n)) => Err(format!("the server sent {n} bytes to a foreign peer")),
        Err(_) => Err("the server kept the connection open for 5 s".into()),
    }
}

/// A NodeTls that trusts `ca` but presents `chain`/`key` (the fields are public; `load`
/// would refuse the mix, which is the point: the server must refuse it too).
fn presenting(
    ca: &NodeTls,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    identity_of: &NodeTls,
) -> NodeTls {
    NodeTls { ca_der: ca.ca_der.clone(), chain, key, identity: identity_of.identity.clone() }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

fn member_count(a: &Cluster) -> usize {
    a.members(0).expect("members of A").len()
}

#[test]
fn peers_and_callers_without_the_clusters_certificates_are_refused() {
    let a = Cluster::new(1);
    // Cluster B: initialized, never started; only its certificates and config are used.
    let mut b = Cluster::empty();
    b.add_node("node1");
    b.init(0);
    let members_before = member_count(&a);

    let (an, bn) = (&a.nodes[0], &b.nodes[0]);
    let load = |n: &harness::Node| {
        let d = n.tls_dir();
        NodeTls::load(&d.join("ca.crt"), &d.join("node.crt"), &d.join("node.key")).expect("node TLS files")
    };
    let (a_tls, b_tls) = (load(an), load(bn));
    assert_eq!(a_tls.scope(), b_tls.scope(), "same scope: only the CA differs");
    let rt = runtime();

    // B's member certificate, trusting A's server: A must refuse the client certificate.
    let foreign = presenting(&a_tls, b_tls.chain.clone(), b_tls.key.clone_key(), &b_tls);
    let how = rt.block_on(raft_peer_refused(&an.raft, &foreign)).expect("A refuses B's member cert");
    eprintln!("B's member certificate on A's Raft port: {how}");
    // B's own configuration (trusting B's CA) does not even accept A's server.
    rt.block_on(raft_peer_refused(&an.raft, &b_tls)).expect("B refuses A's server");
    // A's own ctl (client) certificate is not a member certificate.
    let (ctl_chain, ctl_key) =
        tls::load_client_auth(&an.tls_dir().join("ctl.crt"), &an.tls_dir().join("ctl.key"))
            .expect("ctl cert");
    let ctl_as_peer = presenting(&a_tls, ctl_chain, ctl_key, &a_tls);
    let how = rt.block_on(raft_peer_refused(&an.raft, &ctl_as_peer)).expect("A refuses a ctl cert as a peer");
    eprintln!("A's ctl certificate on A's Raft port: {how}");
    wait_until(SETTLE, "A's log says it refused both certificates", || {
        let log = a.log_text(0);
        let refused = |what: &str| log.lines().any(|l| l.contains("raft peer refused") && l.contains(what));
        (refused("invalid peer certificate: BadSignature") && refused("not a member certificate"))
            .then_some(())
            .ok_or_else(|| format!("A's log:\n{log}"))
    });

    // `pgha ctl` with B's config and certificates against A's API.
    let out = harness::run(&["ctl", "--config", bn.config_str(), "--endpoint", &an.api, "token", "create"]);
    assert!(!out.status.success(), "B's ctl must not create a token in A: {}", show(&out));
    assert!(harness::stderr(&out).contains("certificate"), "B's ctl says why: {}", show(&out));

    let post_token = |client: ApiClient| {
        rt.block_on(client.post::<_, TokenResponse>("/token", &TokenRequest { ttl: Some(60) }))
            .map(|(_, t)| t)
            .map_err(Box::new)
    };
    let timeout = Duration::from_secs(10);
    // B's ctl certificate, trusting A's server: A's API refuses the client certificate.
    let (b_chain, b_key) =
        tls::load_client_auth(&bn.tls_dir().join("ctl.crt"), &bn.tls_dir().join("ctl.key")).expect("B ctl");
    let config = tls::api_client_config(&a_tls.ca_der, Some((b_chain, b_key))).expect("client config");
    let r = post_token(ApiClient::new(vec![an.api.clone()], config, timeout));
    match r {
        // TLS 1.3: the server's refusal arrives after the client's side of the handshake, so
        // the client sees it as a broken connection.
        Err(e) => eprintln!("B's ctl certificate on A's API: {e}"),
        Ok(t) => {
            panic!("A's API accepted B's ctl certificate and made a token expiring {}", t.expires_at_ms)
        }
    }

    // No client certificate at all: 401 for a mutating call, GET works.
    let anonymous: Arc<rustls::ClientConfig> = tls::api_client_config(&a_tls.ca_der, None).expect("config");
    let client = ApiClient::new(vec![an.api.clone()], anonymous, timeout);
    match post_token(client.clone()).map_err(|e| *e) {
        Err(ClientError::Refused { status: 401, .. }) => {}
        other => panic!("POST /token without a client certificate: want 401, got {other:?}"),
    }
    let (_, rows): (_, Vec<MemberRow>) =
        rt.block_on(client.get("/members")).expect("GET /members needs no client certificate");
    assert_eq!(rows.len(), members_before);

    assert_eq!(member_count(&a), members_before, "nothing changed in A");
    // A still works for its own operator.
    a.token(0);
}
