//! Certificate verifiers that add pgha's rules to rustls's WebPKI checks. Inputs are the peer's
//! certificate chain during a handshake; outputs are rustls verdicts (and, for the pinned
//! verifier, the CA certificate it found). The member verifiers refuse any certificate of the
//! cluster CA that is not a *member* of this scope, so a `pgha ctl` certificate can never enter
//! the Raft transport (DESIGN.md, "Network and security"); whether that member is in the current
//! configuration is the transport's question. The pinned verifier lets a joiner who knows only
//! the CA's fingerprint trust it. None of them ever accepts a chain without the full WebPKI
//! check (signature, validity, EKU, host name) against a known CA.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use super::config::TlsError;
use super::pki::{self, Role};

/// Rejects (as a rustls error) any certificate that is not a member of `scope`.
fn require_member(end_entity: &CertificateDer<'_>, scope: &str) -> Result<(), Error> {
    let refuse = |e: TlsError| Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))));
    let id = pki::peer_identity(end_entity, scope).map_err(|e| refuse(TlsError::Peer(e)))?;
    if id.role != Role::Member {
        return Err(refuse(TlsError::NotAMember(id.uri())));
    }
    Ok(())
}

/// Client side of the Raft server: the cluster CA's WebPKI check, then "is a member of this scope".
#[derive(Debug)]
pub(crate) struct MemberClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) scope: String,
}

impl ClientCertVerifier for MemberClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        require_member(end_entity, &self.scope)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server side of a Raft connection: the cluster CA's WebPKI check with the host name we dialled,
/// then "is a member of this scope".
#[derive(Debug)]
pub(crate) struct MemberServerVerifier {
    pub(crate) inner: Arc<WebPkiServerVerifier>,
    pub(crate) scope: String,
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified =
            self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        require_member(end_entity, &self.scope)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The CA certificate a pinned handshake found, for the joiner to save as `ca.crt`. Anything it
/// holds has the pinned fingerprint, but read it only after the handshake succeeded: that is
/// what proves the server holds a key the CA certified.
#[derive(Clone, Debug, Default)]
pub struct PinnedCa(Arc<Mutex<Option<CertificateDer<'static>>>>);

impl PinnedCa {
    pub fn get(&self) -> Option<CertificateDer<'static>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, der: CertificateDer<'static>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(der);
    }
}

/// Trusts the certificate in the server's chain whose SHA-256 is `fingerprint`, and then only
/// if the leaf verifies against it as trust anchor (WebPKI: signature, validity, serverAuth,
/// host name).
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    pub(crate) fingerprint: String,
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) found: PinnedCa,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let ca = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|cert| pki::fingerprint_der(cert) == self.fingerprint)
            .ok_or_else(|| {
                let e = TlsError::PinMismatch { expected: self.fingerprint.clone() };
                Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
            })?
            .clone()
            .into_owned();
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| Error::General(format!("pinned CA unusable as trust anchor: {e}")))?;
        let verified =
            webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.found.set(ca);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
