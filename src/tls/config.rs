//! rustls configurations for pgha's three kinds of TLS: the Raft transport (mutual TLS between
//! members, TLS 1.3 only), the REST API (client certificate optional at TLS level, checked
//! against the cluster CA when presented) and its clients (`pgha ctl`, peers, a joiner who pins
//! the CA by fingerprint). Inputs are the node's PEM files or text; outputs are
//! `Arc<ServerConfig>` / `Arc<ClientConfig>` and the peer [`Identity`] of a finished handshake.
//! Every configuration uses the ring provider explicitly, so none depends on a process-wide
//! default. Nothing here opens sockets, and nothing here ever trusts a certificate that does not
//! verify against the cluster CA (DESIGN.md, "Network and security").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, RootCertStore, ServerConfig, SupportedProtocolVersion,
};

use super::pki::{self, Identity, PkiError, Role};
use super::verify::{MemberClientVerifier, MemberServerVerifier, PinnedCa, PinnedCaVerifier};

/// ALPN of the Raft transport; a version bump here is how a future wire format is refused.
pub const RAFT_ALPN: &[u8] = b"pgha-raft/1";
/// The API server speaks HTTP/1.1 only.
pub const HTTP11_ALPN: &[u8] = b"http/1.1";
/// Members all run pgha, so the Raft transport needs nothing older than TLS 1.3.
const RAFT_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {source}; run `pgha init` (first node) or `pgha join` (other \
         nodes) to create it, or fix the path in the config file"
    )]
    Read { path: String, source: std::io::Error },
    #[error(
        "{source_name} holds no {what}: it is empty or damaged; run `pgha init` or `pgha join` \
         again to rewrite it"
    )]
    Pem { source_name: String, what: &'static str },
    #[error("{certfile} is not a pgha node certificate: {source}")]
    NotNodeCertificate { certfile: String, source: PkiError },
    #[error("{certfile} holds a {role} certificate; the node needs its member certificate from `pgha init`/`pgha join`")]
    WrongRole { certfile: String, role: Role },
    #[error(
        "the key in {keyfile} does not belong to the certificate in {certfile} ({reason}); \
         restore the pair written by `pgha init`/`pgha join`"
    )]
    KeyMismatch { certfile: String, keyfile: String, reason: String },
    #[error(
        "{certfile} does not verify against the CA in {cafile} ({reason}): it is from another \
         cluster, expired, or not yet valid; re-issue it with `pgha join`"
    )]
    NotFromCa { certfile: String, cafile: String, reason: String },
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration failed: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error(
        "invalid CA fingerprint {0:?}: expected the 64 hex digits of a SHA-256 from the join \
         token; copy the token again"
    )]
    BadFingerprint(String),
    #[error(
        "the server's certificates do not include the CA pinned by the join token (SHA-256 \
         {expected}): the token belongs to another cluster or the address reaches another \
         server; create a new token with `pgha ctl token create`"
    )]
    PinMismatch { expected: String },
    #[error("{0:?} is neither an IP address nor a valid DNS name: fix the address")]
    BadServerName(String),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("{0} is not a member certificate: only members may use the Raft transport")]
    NotAMember(String),
    #[error(transparent)]
    Peer(#[from] PkiError),
}

/// What a node proves itself with: the cluster CA, its own chain `[leaf, ca]` (the CA goes along
/// so a joiner can pin it by fingerprint) and key, and the identity in its leaf.
#[derive(Debug)]
pub struct NodeTls {
    pub ca_der: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub identity: Identity,
}

impl NodeTls {
    /// Reads the node's files. Errors name the file and say to run `pgha init`/`pgha join`.
    pub fn load(cafile: &Path, certfile: &Path, keyfile: &Path) -> Result<NodeTls, TlsError> {
        let ca = read(cafile)?;
        let cert = read(certfile)?;
        let key = read(keyfile)?;
        let names = [cafile, certfile, keyfile].map(|p| p.display().to_string());
        NodeTls::build(&ca, &cert, &key, names)
    }

    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeTls, TlsError> {
        let names = ["the CA PEM", "the certificate PEM", "the key PEM"].map(String::from);
        NodeTls::build(ca_pem, cert_pem, key_pem, names)
    }

    /// Checks everything a handshake would only reveal later: the leaf is a member certificate,
    /// the key is its key, and it verifies against the CA now.
    fn build(ca_pem: &str, cert_pem: &str, key_pem: &str, names: [String; 3]) -> Result<NodeTls, TlsError> {
        let [cafile, certfile, keyfile] = names;
        let ca_der = parse_cert(ca_pem, &cafile, "CA certificate")?;
        let leaf = parse_cert(cert_pem, &certfile, "certificate")?;
        let key = parse_key(key_pem, &keyfile)?;
        let identity = pki::identity_of(&leaf)
            .map_err(|source| TlsError::NotNodeCertificate { certfile: certfile.clone(), source })?;
        if identity.role != Role::Member {
            return Err(TlsError::WrongRole { certfile, role: identity.role });
        }
        let chain = vec![leaf, ca_der.clone()];
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(|e| {
            TlsError::KeyMismatch { certfile: certfile.clone(), keyfile, reason: e.to_string() }
        })?;
        // The client verifier checks chain, validity and the clientAuth EKU every member has.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&ca_der)?, provider()).build()?;
        verifier.verify_client_cert(&chain[0], &[], wall_now()).map_err(|e| TlsError::NotFromCa {
            certfile,
            cafile,
            reason: e.to_string(),
        })?;
        Ok(NodeTls { ca_der, chain, key, identity })
    }

    pub fn scope(&self) -> &str {
        &self.identity.scope
    }

    /// The node's chain and key, for calling a peer's API with its member certificate.
    pub fn client_auth(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

/// Raft server: a client certificate is required, must verify against the cluster CA and must be
/// a member of this scope; ALPN `pgha-raft/1`, TLS 1.3. The caller still checks, with
/// [`peer_identity_from_conn`], that the member is in the current configuration.
pub fn raft_server_config(node: &NodeTls) -> Result<Arc<ServerConfig>, TlsError> {
    let webpki = WebPkiClientVerifier::builder_with_provider(roots(&node.ca_der)?, provider()).build()?;
    let verifier = MemberClientVerifier { inner: webpki, scope: node.scope().to_owned() };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(RAFT_VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(node.chain.clone(), node.key.clone_key())?;
    config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Raft client: presents the node certificate, accepts only a member of this scope certified by
/// the cluster CA for the address dialled; ALPN `pgha-raft/1`, TLS 1.3.
pub fn raft_client_config(node: &NodeTls) -> Result<Arc<ClientConfig>, TlsError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(roots(&node.ca_der)?, provider()).build()?;
    let verifier = MemberServerVerifier { inner: webpki, scope: node.scope().to_owned() };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(RAFT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(node.chain.clone(), node.key.clone_key())?;
    config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// API server: anyone may connect (HAProxy `check-ssl`, monitoring), but a client certificate,
/// when presented, must verify against the cluster CA. Which methods need one is the API's rule.
/// TLS 1.2 stays on for such tools; ALPN `http/1.1`.
pub fn api_server_config(node: &NodeTls) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&node.ca_der)?, provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(node.chain.clone(), node.key.clone_key())?;
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// API client (`pgha ctl`, a node calling a peer): verifies the server against the cluster CA,
/// presents `client` (chain and key) when given; ALPN `http/1.1`.
pub fn api_client_config(
    ca_der: &CertificateDer<'_>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_der)?);
    let mut config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// For a joiner who knows only the CA's fingerprint (from the join token): trusts the server if
/// its chain contains that exact CA and its leaf verifies against it. The returned [`PinnedCa`]
/// yields the CA's DER after the handshake, to be saved as `ca.crt`. Accepts the fingerprint
/// with or without colons, in either case.
pub fn pinned_client_config(fingerprint: &str) -> Result<(Arc<ClientConfig>, PinnedCa), TlsError> {
    let normalized: String =
        fingerprint.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if normalized.len() != 64 || !normalized.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::BadFingerprint(fingerprint.to_owned()));
    }
    let found = PinnedCa::default();
    let verifier = PinnedCaVerifier { fingerprint: normalized, provider: provider(), found: found.clone() };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    // A resumed session skips certificate verification, and with it the capture of the CA.
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), found))
}

/// The name to verify a server's certificate for: an IP SAN for an address, else a DNS SAN.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(trimmed.to_owned()).map_err(|_| TlsError::BadServerName(host.to_owned()))
}

/// The identity of the peer of a finished handshake (either side: a `ServerConnection` or
/// `ClientConnection` derefs to `CommonState`), which must belong to `scope`.
pub fn peer_identity_from_conn(conn: &CommonState, scope: &str) -> Result<Identity, TlsError> {
    peer_identity_from_certs(conn.peer_certificates(), scope)
}

/// As [`peer_identity_from_conn`], from the peer's chain (leaf first), e.g. axum-server's
/// `TlsInfo`.
pub fn peer_identity_from_certs(
    certs: Option<&[CertificateDer<'_>]>,
    scope: &str,
) -> Result<Identity, TlsError> {
    let leaf = certs.and_then(|c| c.first()).ok_or(TlsError::NoPeerCertificate)?;
    Ok(pki::peer_identity(leaf, scope)?)
}

/// The text to log or show for a failed handshake (tokio-rustls returns `io::Error`). rustls
/// displays a verifier's own error (`CertificateError::Other`) with `Debug`; this digs it out so
/// the operator reads pgha's message ("... pinned by the join token ...") instead.
pub fn describe_handshake_error(err: &std::io::Error) -> String {
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => err.to_string(),
    }
}

/// The cluster CA from its file, for `pgha ctl` (`ctl.cacert`).
pub fn load_ca(cafile: &Path) -> Result<CertificateDer<'static>, TlsError> {
    parse_cert(&read(cafile)?, &cafile.display().to_string(), "CA certificate")
}

/// A certificate chain and key from files, for `pgha ctl` (`ctl.certfile`, `ctl.keyfile`).
pub fn load_client_auth(
    certfile: &Path,
    keyfile: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_name, key_name) = (certfile.display().to_string(), keyfile.display().to_string());
    let chain = CertificateDer::pem_slice_iter(read(certfile)?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or(TlsError::Pem { source_name: cert_name, what: "certificate" })?;
    Ok((chain, parse_key(&read(keyfile)?, &key_name)?))
}

/// ring, named explicitly (STACK.md item 1: a second provider would panic at run time).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_der: &CertificateDer<'_>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone().into_owned())?;
    Ok(Arc::new(roots))
}

/// The wall clock as rustls wants it, through `clock` (the only module that reads clocks).
fn wall_now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_millis(crate::clock::wall_now_ms()))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path)
        .map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

fn parse_cert(pem: &str, source_name: &str, what: &'static str) -> Result<CertificateDer<'static>, TlsError> {
    pki::first_cert_der(pem, source_name)
        .map(CertificateDer::from)
        .map_err(|_| TlsError::Pem { source_name: source_name.to_owned(), what })
}

fn parse_key(pem: &str, source_name: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| TlsError::Pem { source_name: source_name.to_owned(), what: "private key" })
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
