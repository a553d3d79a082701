//! Tests of `pki`: what the issued certificates contain (parsed back with x509-parser, never
//! compared as text), and that a CSR cannot widen what the cluster signs.

use super::*;
use x509_parser::certificate::X509Certificate;

const DAY: i64 = 86_400;

fn name(s: &str) -> MemberName {
    MemberName::new(s).unwrap()
}

fn member(scope: &str, n: &str) -> Identity {
    Identity::member(scope, name(n)).unwrap()
}

fn client(scope: &str, n: &str) -> Identity {
    Identity::client(scope, name(n)).unwrap()
}

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|h| h.to_string()).collect()
}

fn der_of(pem: &str) -> Vec<u8> {
    first_cert_der(pem, "test").unwrap()
}

/// Parses `der` and hands it to `check` (x509-parser borrows the DER).
fn with_cert<T>(der: &[u8], check: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    check(&cert)
}

fn now_s() -> i64 {
    (crate::clock::wall_now_ms() / 1000) as i64
}

/// (uris, dns names, ips) of a certificate.
fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>, Vec<IpAddr>) {
    let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    for gn in &ext.value.general_names {
        match gn {
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) => ips.push(match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (uris, dns, ips)
}

/// Asserts a leaf: not a CA, exactly the EKUs of `role`, no keyCertSign, CN = name, validity
/// from about an hour ago for about five years, 16-byte serial.
fn assert_leaf(cert: &X509Certificate<'_>, role: Role, cn: &str) {
    assert!(!cert.is_ca(), "leaf must not be a CA");
    let bc = cert.basic_constraints().unwrap().map(|b| b.value.ca);
    assert_ne!(bc, Some(true));
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    assert_eq!(eku.server_auth, role == Role::Member);
    assert!(!eku.any && !eku.code_signing && !eku.ocsp_signing && eku.other.is_empty());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let got_cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
    assert_eq!(got_cn, cn);
    let (nb, na) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
    let now = now_s();
    assert!((now - 3700..=now - 3500).contains(&nb), "not_before {nb} vs now {now}");
    assert!((now + 5 * 365 * DAY - 100..=now + 5 * 365 * DAY + 100).contains(&na));
    assert_eq!(cert.raw_serial().len(), 16);
}

#[test]
fn identity_uri_round_trips_and_bad_uris_are_refused() {
    for id in [member("batman", "node1"), client("db.prod", "ops-1")] {
        assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id);
    }
    assert_eq!(member("batman", "n1").uri(), "pgha://batman/member/n1");
    for bad in [
        "https://batman/member/n1",
        "pgha://batman/member",
        "pgha://batman/member/n1/x",
        "pgha://batman/admin/n1",
        "pgha://bat man/member/n1",
        "pgha://batman/member/n 1",
        "pgha:///member/n1",
        "pgha://-x/member/n1",
    ] {
        assert!(Identity::parse_uri(bad).is_err(), "{bad:?} accepted");
    }
    assert!(Identity::member("a/b", name("n1")).is_err());
}

#[test]
fn ca_is_a_constrained_long_lived_ca() {
    let ca = generate_ca("batman").unwrap();
    with_cert(&der_of(&ca.cert_pem), |cert| {
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "pgha batman CA");
        let na = cert.validity().not_after.timestamp();
        assert!((now_s() + 20 * 365 * DAY - 100..=now_s() + 20 * 365 * DAY + 100).contains(&na));
    });
    assert!(!format!("{ca:?}").contains("PRIVATE"), "Debug must hide the key");
    assert!(matches!(generate_ca("bad scope"), Err(PkiError::BadScope(_))));
    // Random serials: two CAs never share one.
    let other = generate_ca("batman").unwrap();
    let serial = |pem: &str| with_cert(&der_of(pem), |c| c.raw_serial().to_vec());
    assert_ne!(serial(&ca.cert_pem), serial(&other.cert_pem));
}

#[test]
fn fingerprint_is_lowercase_hex_sha256_of_the_der() {
    let ca = generate_ca("batman").unwrap();
    let fp = fingerprint(&ca.cert_pem).unwrap();
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(fp, fingerprint_der(&der_of(&ca.cert_pem)));
    assert_eq!(fingerprint_der(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert!(matches!(fingerprint("not pem"), Err(PkiError::NoPemCertificate(_))));
}

#[test]
fn member_cert_names_its_hosts_localhost_and_the_scope() {
    let ca = generate_ca("batman").unwrap();
    let id = member("batman", "node1");
    let cert = issue_member_cert(&ca, &id, &hosts(&["10.0.0.11", "Node1.Example.com", "localhost"])).unwrap();
    let der = der_of(&cert.cert_pem);
    with_cert(&der, |c| {
        assert_leaf(c, Role::Member, "node1");
        let (uris, dns, ips) = sans(c);
        assert_eq!(uris, vec![id.uri()]);
        assert_eq!(dns, vec!["node1.example.com", "localhost", "batman"]);
        let want: Vec<IpAddr> = ["10.0.0.11", "127.0.0.1", "::1"].map(|i| i.parse().unwrap()).into();
        assert_eq!(ips, want);
    });
    assert_eq!(peer_identity(&der, "batman").unwrap(), id);
    assert!(matches!(peer_identity(&der, "robin"), Err(PkiError::WrongScope { .. })));
    assert!(matches!(
        issue_member_cert(&ca, &id, &hosts(&["bad host"])),
        Err(PkiError::BadHost(h)) if h == "bad host"
    ));
    assert!(issue_member_cert(&ca, &client("batman", "ops"), &[]).is_err());
}

#[test]
fn client_cert_carries_only_its_uri_and_client_auth() {
    let ca = generate_ca("batman").unwrap();
    let id = client("batman", "ops");
    let cert = issue_client_cert(&ca, &id).unwrap();
    let der = der_of(&cert.cert_pem);
    with_cert(&der, |c| {
        assert_leaf(c, Role::Client, "ops");
        assert_eq!(sans(c), (vec![id.uri()], vec![], vec![]));
    });
    let got = peer_identity(&der, "batman").unwrap();
    assert_eq!(got.role, Role::Client);
    assert_ne!(got, member("batman", "ops"));
    assert!(issue_client_cert(&ca, &member("batman", "ops")).is_err());
}

#[test]
fn certificates_without_or_with_several_identities_are_refused() {
    let key = KeyPair::generate().unwrap();
    let plain = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let der = plain.self_signed(&key).unwrap().der().to_vec();
    assert!(matches!(peer_identity(&der, "batman"), Err(PkiError::NoIdentity)));

    let mut two = CertificateParams::default();
    for n in ["a", "b"] {
        let uri = member("batman", n).uri().try_into().unwrap();
        two.subject_alt_names.push(SanType::URI(uri));
    }
    let der = two.self_signed(&key).unwrap().der().to_vec();
    assert!(matches!(peer_identity(&der, "batman"), Err(PkiError::SeveralIdentities(u)) if u.len() == 2));
    assert!(matches!(peer_identity(b"junk", "batman"), Err(PkiError::BadCertificate(_))));
}

#[test]
fn csr_from_make_csr_is_signed_with_the_policy_fields() {
    let ca = generate_ca("batman").unwrap();
    let id = member("batman", "node2");
    let (csr, key_pem) = make_csr(&id, &hosts(&["10.0.0.12", "node2.example.com"])).unwrap();
    let cert_pem = sign_csr(&ca, &csr, &id, &hosts(&["10.0.0.12", "node2.example.com"])).unwrap();
    let der = der_of(&cert_pem);
    with_cert(&der, |c| {
        assert_leaf(c, Role::Member, "node2");
        let (uris, dns, ips) = sans(c);
        assert_eq!(uris, vec![id.uri()]);
        assert_eq!(dns, vec!["node2.example.com", "localhost", "batman"]);
        assert_eq!(ips.len(), 3);
        // The certificate carries the joiner's public key, so its key_pem works with it.
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(c.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    });
    assert_eq!(peer_identity(&der, "batman").unwrap(), id);

    let ops = client("batman", "ops");
    let (csr, _) = make_csr(&ops, &[]).unwrap();
    let der = der_of(&sign_csr(&ca, &csr, &ops, &hosts(&["10.0.0.12"])).unwrap());
    with_cert(&der, |c| assert_leaf(c, Role::Client, "ops"));
}

/// A CSR built by hand that asks for everything it should not get.
fn greedy_csr(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("evil");
    params.subject_alt_names = sans;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any, ExtendedKeyUsagePurpose::CodeSigning];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri_san(id: &Identity) -> SanType {
    SanType::URI(id.uri().try_into().unwrap())
}

fn dns_san(d: &str) -> SanType {
    SanType::DnsName(d.try_into().unwrap())
}

#[test]
fn csr_asking_for_ca_and_other_usages_is_neutralised() {
    let ca = generate_ca("batman").unwrap();
    let id = member("batman", "node2");
    let csr = greedy_csr(vec![uri_san(&id), dns_san("node2.example.com")]);
    // The request really asks for CA:TRUE (so the assertions below mean something).
    let asked = CertificateSigningRequestParams::from_pem(&csr).unwrap().params;
    assert!(matches!(asked.is_ca, IsCa::Ca(_)));
    assert!(asked.key_usages.contains(&KeyUsagePurpose::KeyCertSign));
    let pem = sign_csr(&ca, &csr, &id, &hosts(&["node2.example.com"])).unwrap();
    with_cert(&der_of(&pem), |c| assert_leaf(c, Role::Member, "node2"));
}

#[test]
fn csr_outside_policy_is_refused_naming_the_san() {
    let ca = generate_ca("batman").unwrap();
    let id = member("batman", "node2");
    let allowed = hosts(&["10.0.0.12"]);
    let sign = |sans: Vec<SanType>, expected: &Identity| sign_csr(&ca, &greedy_csr(sans), expected, &allowed);

    let foreign = sign(vec![uri_san(&id), dns_san("bank.example.com")], &id);
    assert!(matches!(&foreign, Err(PkiError::CsrSanRefused(s)) if s.contains("bank.example.com")));
    assert!(foreign.unwrap_err().to_string().contains("bank.example.com"));
    let ip = sign(vec![uri_san(&id), SanType::IpAddress("10.9.9.9".parse().unwrap())], &id);
    assert!(matches!(ip, Err(PkiError::CsrSanRefused(s)) if s.contains("10.9.9.9")));

    let other_member = sign(vec![uri_san(&member("batman", "node1"))], &id);
    assert!(
        matches!(other_member, Err(PkiError::CsrWrongIdentity { requested, .. }) if requested.ends_with("/node1"))
    );
    let other_scope = sign(vec![uri_san(&member("robin", "node2"))], &id);
    assert!(matches!(other_scope, Err(PkiError::CsrWrongIdentity { .. })));
    let as_client = sign(vec![uri_san(&client("batman", "node2"))], &id);
    assert!(matches!(as_client, Err(PkiError::CsrWrongIdentity { .. })));
    let two = sign(vec![uri_san(&id), uri_san(&member("batman", "node3"))], &id);
    assert!(matches!(two, Err(PkiError::CsrWrongIdentity { .. })));
    let twice = sign(vec![uri_san(&id), uri_san(&id)], &id);
    assert!(matches!(twice, Err(PkiError::BadCsr(_))));
    let none = sign(vec![dns_san("localhost")], &id);
    assert!(matches!(none, Err(PkiError::CsrMissingIdentity { .. })));

    // A ctl user gets no host names at all, not even the always-allowed ones.
    let ops = client("batman", "ops");
    let client_dns = sign(vec![uri_san(&ops), dns_san("localhost")], &ops);
    assert!(matches!(client_dns, Err(PkiError::CsrSanRefused(s)) if s.contains("localhost")));

    assert!(matches!(sign_csr(&ca, "garbage", &id, &allowed), Err(PkiError::BadCsr(_))));
}

#[test]
fn a_ca_whose_key_does_not_match_is_refused() {
    let ca = generate_ca("batman").unwrap();
    let other = generate_ca("batman").unwrap();
    let mixed = CaPem { cert_pem: ca.cert_pem.clone(), key_pem: other.key_pem };
    let got = issue_member_cert(&mixed, &member("batman", "n1"), &[]);
    assert!(matches!(got, Err(PkiError::BadCa(_))));
    let leaf = issue_member_cert(&ca, &member("batman", "n1"), &[]).unwrap();
    let not_ca = CaPem { cert_pem: leaf.cert_pem, key_pem: leaf.key_pem };
    assert!(matches!(issue_member_cert(&not_ca, &member("batman", "n2"), &[]), Err(PkiError::BadCa(_))));
}

/// Serials are always 16 DER bytes: a random first byte of zero used to be dropped by DER's
/// minimal encoding about once in 256 certificates (a flaky test found it).
#[test]
fn serials_never_lose_a_leading_byte() {
    let ca = generate_ca("batman").unwrap();
    let id = client("batman", "ops");
    for _ in 0..400 {
        let pem = issue_client_cert(&ca, &id).unwrap();
        with_cert(&der_of(&pem.cert_pem), |c| assert_eq!(c.raw_serial().len(), 16));
    }
}
