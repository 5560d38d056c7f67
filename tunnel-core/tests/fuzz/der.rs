//! Identity extraction from certificates: arbitrary DER, mutated real certificates, and
//! certificates issued with arbitrary attribute values. The fingerprint is the SHA-256 of the
//! certificate's DER (computed here); what a certificate says comes back unchanged in the
//! identity; what reaches logs holds none of the characters this test's own list says must be
//! escaped, and plain text passes unchanged.

use super::common::{config, edits, fixture, mutate};
use openssl::x509::X509;
use proptest::prelude::*;
use std::net::IpAddr;
use tunnel_core::authz::identity::{printable, Identity};
use tunnel_core::pki::{self, CertSpec};

/// The test's own list of characters that must never reach a log raw (README "Audit log":
/// controls, line/paragraph separators, bidi embeddings, overrides, isolates and marks),
/// written here rather than taken from the product's escaper.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{feff}'
        )
}

/// Characters that need no escape: printable ASCII except the escape character, and letters.
fn plain(c: char) -> bool {
    (c.is_ascii_graphic() && c != '\\') || c == ' ' || (c.is_alphabetic() && !must_escape(c))
}

/// SHA-256 of `der` in lower-case hex, computed here.
fn sha256_hex(der: &[u8]) -> String {
    openssl::sha::sha256(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Everything the gateway derives from a peer certificate, for logs and for rules.
fn extract(cert: &X509) -> Result<(), TestCaseError> {
    if std::env::var_os("FUZZ_COUNT").is_some() {
        eprintln!("MEANINGFUL certificate_parsed");
    }
    let id = Identity::from_cert(cert);
    let shown = id.to_string();
    prop_assert!(
        !shown.chars().any(must_escape),
        "unescaped character in {shown:?}"
    );
    // The fingerprint is of the certificate's own DER, as OpenSSL encodes it.
    prop_assert_eq!(&id.sha256, &sha256_hex(&cert.to_der().unwrap()));
    let _ = tunnel_core::tls::common_name(cert);
    let _ = tunnel_core::revocation::ocsp::responder_of(cert);
    let _ = tunnel_core::revocation::ocsp::cert_fingerprint(cert);
    Ok(())
}

fn parse_and_extract(der: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(cert) = X509::from_der(der) {
        extract(&cert)?;
    }
    if let Ok(certs) = X509::stack_from_pem(der) {
        for c in certs {
            extract(&c)?;
        }
    }
    Ok(())
}

fn real_certs() -> Vec<Vec<u8>> {
    let f = fixture();
    let mut v: Vec<Vec<u8>> = f.clients.iter().map(|c| c.cert.to_der().unwrap()).collect();
    v.push(f.ca.cert.to_der().unwrap());
    v
}

fn attr() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,+=\\-]{1,24}",
        "\\PC{1,16}",
        "[\\x00-\\x1f\\x7f\u{2028}\u{202e}a]{1,8}",
    ]
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        parse_and_extract(&data)?;
    }

    #[test]
    fn mutated_real_certificates_never_panic(which in 0usize..4, e in edits(8)) {
        let certs = real_certs();
        let der = &certs[which % certs.len()];
        parse_and_extract(&mutate(der, &e))?;
    }

    #[test]
    fn mutated_pem_never_panics(which in 0usize..4, e in edits(4)) {
        let f = fixture();
        let pem = f.clients[which % f.clients.len()].cert.to_pem().unwrap();
        parse_and_extract(&mutate(&pem, &e))?;
    }

    #[test]
    fn printable_escapes_what_must_not_reach_a_log_and_keeps_plain_text(
        s in "\\PC{0,20}|[\\x00-\\x1f\\x7f-\\u{9f}\u{2028}\u{2029}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{200e}\u{feff}a\\\\]{0,20}"
    ) {
        let p = printable(&s);
        prop_assert!(!p.chars().any(must_escape), "{:?} -> {:?}", s, p);
        // Each such character became an escape sequence (at least its backslash).
        let escapes = p.matches('\\').count();
        let needed = s.chars().filter(|c| must_escape(*c)).count();
        prop_assert!(escapes >= needed, "{:?} -> {:?}", s, p);
        if s.chars().all(plain) {
            prop_assert_eq!(p, s);
        }
    }
}

proptest! {
    // Each case signs a certificate: fewer cases.
    #![proptest_config(config(24))]

    #[test]
    fn issued_attributes_come_back_unchanged(
        cn in attr(),
        ou in prop::collection::vec(attr(), 0..3),
        dns in prop::collection::vec("[a-z0-9.*\\-]{1,20}", 0..3),
        uri in prop::collection::vec("[a-z]{1,8}://[a-z0-9./]{0,16}", 0..2),
        ip in prop::collection::vec(any::<IpAddr>(), 0..3),
    ) {
        let f = fixture();
        let spec = CertSpec {
            ou: ou.clone(),
            dns: dns.clone(),
            uri: uri.clone(),
            ip: ip.clone(),
            ..CertSpec::client(&cn)
        };
        // OpenSSL refuses some values (length bounds): those cases prove nothing here.
        let issued = pki::new_leaf(&f.ca, &spec);
        prop_assume!(issued.is_ok(), "OpenSSL refused the attributes");
        let issued = issued.unwrap();
        let der = issued.cert.to_der().unwrap();
        let cert = X509::from_der(&der).expect("our own certificate parses");
        extract(&cert)?;
        let id = Identity::from_cert(&cert);
        prop_assert_eq!(id.cn, vec![cn]);
        let mut got_ou = id.ou.clone();
        let mut want_ou = ou;
        got_ou.sort();
        want_ou.sort();
        prop_assert_eq!(got_ou, want_ou);
        prop_assert_eq!(id.dns, dns);
        prop_assert_eq!(id.uri, uri);
        prop_assert_eq!(id.ip, ip);
        prop_assert_eq!(id.sha256, sha256_hex(&der));
    }
}
