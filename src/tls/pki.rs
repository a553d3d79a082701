//! The cluster's certificates: the CA made by `pgha init`, node ("member") and `pgha ctl`
//! ("client") certificates, the CSR a joiner sends, and the signing of that CSR by a member.
//! Inputs are a scope, an [`Identity`], host names/addresses and the CA as PEM; outputs are PEM
//! text and parsed identities. Every certificate names its holder and role in exactly one URI SAN,
//! `pgha://<scope>/member/<name>` or `pgha://<scope>/client/<name>`, which is what the transports
//! authorise on (DESIGN.md, "Network and security"). Key generation and serials draw on ring's
//! OS random source and validity starts from `clock::wall_now_ms`; nothing here touches a file
//! or socket. It must never sign what a CSR asks for: only the CSR's public key is taken, every
//! other field is set here (STACK.md item 6), and a CSR naming anything outside policy is refused.

use std::net::IpAddr;
use std::{fmt, str::FromStr};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use crate::types::MemberName;

/// The CA is long-lived: rotating it means re-issuing every certificate of the cluster.
const CA_VALIDITY: Duration = Duration::days(20 * 365);
/// Node and ctl certificates; re-issued by a new `pgha join`, so shorter than the CA.
const LEAF_VALIDITY: Duration = Duration::days(5 * 365);
/// Certificates start this far in the past: a peer whose clock lags ours a little must not see
/// a freshly issued certificate as "not yet valid".
const BACKDATE: Duration = Duration::hours(1);
/// Always in a node certificate, so local tools and `verify-full` via localhost work.
const ALWAYS_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const URI_SCHEME: &str = "pgha://";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "invalid cluster scope {0:?}: use 1 to 63 characters from a-z A-Z 0-9 _ . - that form a \
         valid DNS name (it is also the cluster's service name in certificates)"
    )]
    BadScope(String),
    #[error("{uri:?} is not a pgha identity ({reason}); expected pgha://<scope>/member|client/<name>")]
    BadUri { uri: String, reason: String },
    #[error(
        "host {0:?} is neither an IP address nor a valid DNS name: fix the advertised address \
         (--advertise, connect_address)"
    )]
    BadHost(String),
    #[error("no PEM certificate found in {0}: the file is empty or not a certificate")]
    NoPemCertificate(String),
    #[error("cannot parse the certificate: {0}; re-issue it with `pgha init` or `pgha join`")]
    BadCertificate(String),
    #[error(
        "the cluster CA is unusable: {0}; restore the CA certificate and key of this cluster \
         (they are in the replicated state and in the init node's files)"
    )]
    BadCa(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "the certificate carries no pgha:// URI SAN, so it was not issued by pgha: use the \
         certificates written by `pgha init` or `pgha join`"
    )]
    NoIdentity,
    #[error(
        "the certificate carries several pgha identities ({0:?}); pgha never issues such \
         certificates: re-issue it with `pgha join`"
    )]
    SeveralIdentities(Vec<String>),
    #[error(
        "the certificate belongs to cluster {found:?}, not {expected:?}: it comes from another \
         cluster; use this cluster's certificates or join it with `pgha join`"
    )]
    WrongScope { found: String, expected: String },
    #[error("the certificate signing request is invalid ({0}); re-run `pgha join`")]
    BadCsr(String),
    #[error(
        "the certificate signing request asks for identity {requested:?} but the join admits \
         {expected:?}; re-run `pgha join` with the name the token was meant for"
    )]
    CsrWrongIdentity { requested: String, expected: String },
    #[error(
        "the certificate signing request names no identity (URI SAN {expected:?}); re-run \
         `pgha join` with this version of pgha"
    )]
    CsrMissingIdentity { expected: String },
    #[error(
        "the certificate signing request asks for SAN {0} which is not an address this member \
         advertises; join with that address in --advertise, or drop it from the request"
    )]
    CsrSanRefused(String),
}

/// What a certificate lets its holder do: a member takes part in Raft and serves the API; a
/// client (a `pgha ctl` user) may only call the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Member,
    Client,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a certificate: cluster, role and name, carried as one URI SAN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub scope: String,
    pub role: Role,
    pub name: MemberName,
}

impl Identity {
    pub fn member(scope: &str, name: MemberName) -> Result<Identity, PkiError> {
        validate_scope(scope)?;
        Ok(Identity { scope: scope.to_owned(), role: Role::Member, name })
    }

    pub fn client(scope: &str, name: MemberName) -> Result<Identity, PkiError> {
        validate_scope(scope)?;
        Ok(Identity { scope: scope.to_owned(), role: Role::Client, name })
    }

    /// `pgha://<scope>/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("{URI_SCHEME}{}/{}/{}", self.scope, self.role, self.name)
    }

    pub fn parse_uri(uri: &str) -> Result<Identity, PkiError> {
        let bad = |reason: &str| PkiError::BadUri { uri: uri.to_owned(), reason: reason.to_owned() };
        let rest = uri.strip_prefix(URI_SCHEME).ok_or_else(|| bad("scheme is not pgha://"))?;
        let mut parts = rest.split('/');
        let (Some(scope), Some(role), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it needs exactly three path parts"));
        };
        let role = match role {
            "member" => Role::Member,
            "client" => Role::Client,
            _ => return Err(bad("role is neither member nor client")),
        };
        validate_scope(scope).map_err(|_| bad("invalid scope"))?;
        let name = MemberName::new(name).map_err(|_| bad("invalid name"))?;
        Ok(Identity { scope: scope.to_owned(), role, name })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// A scope is used in URIs and as a DNS SAN, so it must be valid in both.
pub fn validate_scope(scope: &str) -> Result<(), PkiError> {
    let ok = MemberName::new(scope).is_ok()
        && !scope.starts_with(['.', '-'])
        && !scope.ends_with(['.', '-'])
        && DnsName::try_from(scope).is_ok();
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadScope(scope.to_owned()))
    }
}

/// The cluster CA as PEM. The key is a secret: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key as PEM. The key is a secret: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct CertPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem").field("key_pem", &"<secret>").finish_non_exhaustive()
    }
}
impl fmt::Debug for CertPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPem").field("key_pem", &"<secret>").finish_non_exhaustive()
    }
}

/// Makes the cluster CA: ECDSA P-256, CA:TRUE with path length 0 (it signs leaves only),
/// keyCertSign + cRLSign, valid for about 20 years.
pub fn generate_ca(scope: &str) -> Result<CaPem, PkiError> {
    validate_scope(scope)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&format!("pgha {scope} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity_and_serial(&mut params, CA_VALIDITY)?;
    let cert = params.self_signed(&key)?;
    Ok(CaPem { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Hex SHA-256 of the first certificate in `cert_pem` (lowercase, no colons): what a join token
/// carries to pin the CA.
pub fn fingerprint(cert_pem: &str) -> Result<String, PkiError> {
    Ok(fingerprint_der(&first_cert_der(cert_pem, "the PEM text")?))
}

pub fn fingerprint_der(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A node certificate: the member URI SAN, each host (IP or DNS SAN), `localhost`, `127.0.0.1`,
/// `::1` and the scope as the cluster service name; serverAuth + clientAuth.
pub fn issue_member_cert(ca: &CaPem, id: &Identity, hosts: &[String]) -> Result<CertPem, PkiError> {
    if id.role != Role::Member {
        return Err(PkiError::BadUri {
            uri: id.uri(),
            reason: "a node certificate needs the member role".into(),
        });
    }
    issue(ca, id, hosts)
}

/// A `pgha ctl` certificate: the client URI SAN only; clientAuth.
pub fn issue_client_cert(ca: &CaPem, id: &Identity) -> Result<CertPem, PkiError> {
    if id.role != Role::Client {
        return Err(PkiError::BadUri {
            uri: id.uri(),
            reason: "a ctl certificate needs the client role".into(),
        });
    }
    issue(ca, id, &[])
}

fn issue(ca: &CaPem, id: &Identity, hosts: &[String]) -> Result<CertPem, PkiError> {
    let issuer = ca_issuer(ca)?;
    let key = KeyPair::generate()?;
    let params = leaf_params(id, &host_sans(hosts)?)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPem { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The joiner's side of `pgha join`: a fresh key and a CSR asking for the SANs that
/// [`issue_member_cert`] would set (or only the URI for a client). Returns `(csr_pem, key_pem)`.
pub fn make_csr(id: &Identity, hosts: &[String]) -> Result<(String, String), PkiError> {
    validate_scope(&id.scope)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(id.name.as_str());
    params.subject_alt_names = san_list(id, &host_sans(hosts)?)?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// The cluster's side of `pgha join`: signs `csr_pem` for `expected` only. The CSR's signature
/// proves the joiner holds the key; its requested SANs are checked (the URI must be `expected`,
/// each IP/DNS SAN must be in `allowed_hosts` or always allowed, clients get no host SANs) and
/// everything else it asks for (CA:TRUE, key usages, EKUs, subject, validity) is ignored.
pub fn sign_csr(
    ca: &CaPem,
    csr_pem: &str,
    expected: &Identity,
    allowed_hosts: &[String],
) -> Result<String, PkiError> {
    let csr =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
    let allowed = allowed_host_sans(expected, allowed_hosts)?;
    let mut hosts = Vec::new();
    let mut saw_identity = false;
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::URI(uri) if uri.as_str() == expected.uri() => {
                if saw_identity {
                    return Err(PkiError::BadCsr("it names its identity twice".into()));
                }
                saw_identity = true
            }
            SanType::URI(uri) => {
                return Err(PkiError::CsrWrongIdentity {
                    requested: uri.as_str().to_owned(),
                    expected: expected.uri(),
                })
            }
            SanType::IpAddress(ip) if allowed.contains(&HostSan::Ip(*ip)) => hosts.push(HostSan::Ip(*ip)),
            SanType::DnsName(dns) if allowed.contains(&HostSan::Dns(dns.as_str().to_ascii_lowercase())) => {
                hosts.push(HostSan::Dns(dns.as_str().to_ascii_lowercase()))
            }
            SanType::IpAddress(ip) => return Err(PkiError::CsrSanRefused(format!("IP:{ip}"))),
            SanType::DnsName(dns) => return Err(PkiError::CsrSanRefused(format!("DNS:{dns}"))),
            other => return Err(PkiError::CsrSanRefused(format!("{other:?}"))),
        }
    }
    if !saw_identity {
        return Err(PkiError::CsrMissingIdentity { expected: expected.uri() });
    }
    // Built from nothing but `expected` and the checked hosts: no field of the CSR but its
    // public key reaches the certificate.
    let params = leaf_params(expected, &hosts)?;
    let issuer = ca_issuer(ca)?;
    Ok(params.signed_by(&csr.public_key, &issuer)?.pem())
}

/// The identity in a peer's certificate, which must be exactly one pgha URI SAN of `scope`.
pub fn peer_identity(cert_der: &[u8], scope: &str) -> Result<Identity, PkiError> {
    let id = identity_of(cert_der)?;
    if id.scope != scope {
        return Err(PkiError::WrongScope { found: id.scope, expected: scope.to_owned() });
    }
    Ok(id)
}

/// The identity in a certificate whatever its scope (a node reading its own certificate).
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(URI_SCHEME) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(PkiError::NoIdentity),
        [uri] => Identity::parse_uri(uri),
        many => Err(PkiError::SeveralIdentities(many.iter().map(|u| u.to_string()).collect())),
    }
}

/// The DER of the first certificate in a PEM text; `what` names the source in errors.
pub(crate) fn first_cert_der(pem: &str, what: &str) -> Result<Vec<u8>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| der.to_vec())
        .ok_or_else(|| PkiError::NoPemCertificate(what.to_owned()))
}

/// A host SAN after parsing: IPs compare as addresses, DNS names lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostSan {
    Ip(IpAddr),
    Dns(String),
}

impl FromStr for HostSan {
    type Err = PkiError;
    fn from_str(host: &str) -> Result<Self, PkiError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostSan::Ip(ip));
        }
        let lower = host.to_ascii_lowercase();
        match DnsName::try_from(lower.as_str()) {
            Ok(_) if !lower.is_empty() => Ok(HostSan::Dns(lower)),
            _ => Err(PkiError::BadHost(host.to_owned())),
        }
    }
}

fn host_sans(hosts: &[String]) -> Result<Vec<HostSan>, PkiError> {
    hosts.iter().map(|h| h.parse()).collect()
}

/// The hosts a member certificate may name: those given, the always-present ones and the scope.
fn allowed_host_sans(id: &Identity, hosts: &[String]) -> Result<Vec<HostSan>, PkiError> {
    if id.role == Role::Client {
        return Ok(Vec::new());
    }
    let mut all = host_sans(hosts)?;
    for always in ALWAYS_HOSTS.iter().copied().chain([id.scope.as_str()]) {
        all.push(always.parse()?);
    }
    Ok(all)
}

/// The SANs of a certificate for `id`: its URI, then (members only) the hosts, the always-present
/// names and the scope, without duplicates.
fn san_list(id: &Identity, hosts: &[HostSan]) -> Result<Vec<SanType>, PkiError> {
    let uri = id
        .uri()
        .try_into()
        .map_err(|_| PkiError::BadUri { uri: id.uri(), reason: "not an IA5 string".into() })?;
    let mut sans = vec![SanType::URI(uri)];
    if id.role == Role::Client {
        return Ok(sans);
    }
    let mut seen: Vec<HostSan> = Vec::new();
    let always = ALWAYS_HOSTS.iter().copied().chain([id.scope.as_str()]);
    let always: Vec<HostSan> = always.map(str::parse).collect::<Result<_, _>>()?;
    for host in hosts.iter().chain(&always) {
        if seen.contains(host) {
            continue;
        }
        seen.push(host.clone());
        sans.push(match host {
            HostSan::Ip(ip) => SanType::IpAddress(*ip),
            HostSan::Dns(dns) => {
                SanType::DnsName(dns.clone().try_into().map_err(|_| PkiError::BadHost(dns.clone()))?)
            }
        });
    }
    Ok(sans)
}

/// Every field of a leaf certificate, set from the identity alone (the CSR path relies on this).
fn leaf_params(id: &Identity, hosts: &[HostSan]) -> Result<CertificateParams, PkiError> {
    validate_scope(&id.scope)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(id.name.as_str());
    params.subject_alt_names = san_list(id, hosts)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match id.role {
        Role::Member => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity_and_serial(&mut params, LEAF_VALIDITY)?;
    Ok(params)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Validity from an hour ago for `lifetime`, and a random 126-bit serial (rcgen's default serial
/// is derived from the key and its default validity is 1975–4096).
fn set_validity_and_serial(params: &mut CertificateParams, lifetime: Duration) -> Result<(), PkiError> {
    let now_s = (crate::clock::wall_now_ms() / 1000) as i64;
    let now = OffsetDateTime::from_unix_timestamp(now_s)
        .map_err(|e| PkiError::BadCertificate(format!("system clock out of range: {e}")))?;
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::BadCertificate("the OS random source failed".into()))?;
    // Positive (top bit clear: no sign byte) and a non-zero first byte (DER would drop a
    // leading zero byte): always exactly 16 bytes, 126 of its bits random.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

/// The CA as an rcgen issuer, after checking that its key belongs to its certificate (a
/// mismatched pair would issue certificates nobody can verify).
fn ca_issuer(ca: &CaPem) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| PkiError::BadCa(format!("key: {e}")))?;
    let der = first_cert_der(&ca.cert_pem, "the CA certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCa(format!("certificate: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::BadCa("the CA key does not belong to the CA certificate".into()));
    }
    if !cert.is_ca() {
        return Err(PkiError::BadCa("the CA certificate is not a CA".into()));
    }
    Issuer::from_ca_cert_der(&der.into(), key).map_err(|e| PkiError::BadCa(e.to_string()))
}

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;
