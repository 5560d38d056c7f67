//! The one certificate builder of the crate: a public key, the names and usage of a
//! [`CertSpec`], a validity window, and who signs (the key itself for a new CA, or a CA).
//! `pki` (CA, server and client certificates), the demo and the signer all build here, so
//! the profile (extensions, serials, digests) is defined once.

use super::{random_serial, CertSpec, Issued, Usage};
use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509Ref, X509};

/// Who signs a certificate being built.
pub enum SignedBy<'a> {
    /// The certificate's own key: a self-signed CA.
    Itself(&'a PKeyRef<Private>),
    /// A CA.
    Ca(&'a Issued),
}

/// The digest to sign with `key`: none for Ed25519 (it hashes internally), else SHA-256.
pub fn digest_for<T: HasPublic>(key: &PKeyRef<T>) -> MessageDigest {
    if key.id() == Id::ED25519 {
        MessageDigest::null()
    } else {
        MessageDigest::sha256()
    }
}

/// Builds and signs a certificate for `public` with `spec`'s names and usage, valid from
/// `not_before` to `not_after` (Unix seconds), signed as `by` says.
pub fn build<T: HasPublic>(
    public: &PKeyRef<T>,
    spec: &CertSpec,
    (not_before, not_after): (i64, i64),
    by: SignedBy<'_>,
) -> Result<X509, ErrorStack> {
    let subject = subject(spec)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&subject)?;
    let ca_cert: Option<&X509Ref> = match &by {
        SignedBy::Itself(_) => None,
        SignedBy::Ca(ca) => Some(&ca.cert),
    };
    b.set_issuer_name(ca_cert.map_or(&subject, |c| c.subject_name()))?;
    b.set_pubkey(public)?;
    let (start, end) = (
        Asn1Time::from_unix(not_before)?,
        Asn1Time::from_unix(not_after)?,
    );
    b.set_not_before(&start)?;
    b.set_not_after(&end)?;
    usage_extensions(&mut b, spec.usage, public.id() == Id::RSA)?;
    if let Some(san) = san(spec) {
        let ext = san.build(&b.x509v3_context(ca_cert, None))?;
        b.append_extension(ext)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(ca_cert, None))?;
    b.append_extension(ski)?;
    match by {
        SignedBy::Itself(key) => b.sign(key, digest_for(key))?,
        SignedBy::Ca(ca) => {
            let aki = AuthorityKeyIdentifier::new()
                .keyid(false)
                .build(&b.x509v3_context(Some(&ca.cert), None))?;
            b.append_extension(aki)?;
            b.sign(&ca.key, digest_for(&ca.key))?;
        }
    }
    Ok(b.build())
}

/// O, then OU, then CN, as the rules and the tests read them.
fn subject(spec: &CertSpec) -> Result<openssl::x509::X509Name, ErrorStack> {
    let mut nb = X509NameBuilder::new()?;
    for o in &spec.o {
        nb.append_entry_by_nid(Nid::ORGANIZATIONNAME, o)?;
    }
    for ou in &spec.ou {
        nb.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, ou)?;
    }
    nb.append_entry_by_nid(Nid::COMMONNAME, &spec.cn)?;
    Ok(nb.build())
}

/// Basic constraints, key usage and extended key usage for `usage`.
fn usage_extensions(b: &mut X509Builder, usage: Usage, rsa: bool) -> Result<(), ErrorStack> {
    if usage == Usage::Ca {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        let ku = KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?;
        return b.append_extension(ku);
    }
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if rsa {
        ku.key_encipherment();
    }
    b.append_extension(ku.build()?)?;
    let mut eku = ExtendedKeyUsage::new();
    match usage {
        Usage::Server => eku.server_auth(),
        _ => eku.client_auth(),
    };
    b.append_extension(eku.build()?)
}

fn san(spec: &CertSpec) -> Option<SubjectAlternativeName> {
    if spec.dns.is_empty() && spec.uri.is_empty() && spec.email.is_empty() && spec.ip.is_empty() {
        return None;
    }
    let mut san = SubjectAlternativeName::new();
    for d in &spec.dns {
        san.dns(d);
    }
    for u in &spec.uri {
        san.uri(u);
    }
    for e in &spec.email {
        san.email(e);
    }
    for ip in &spec.ip {
        san.ip(&ip.to_string());
    }
    Some(san)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{new_ca_with, new_key, KeyType};

    /// OpenSSL's own text dump is the oracle for what the profile put in.
    fn text(cert: &X509) -> String {
        String::from_utf8(cert.to_text().unwrap()).unwrap()
    }

    #[test]
    fn one_profile_for_cas_servers_clients_and_sign_in() {
        for kt in [KeyType::EcP256, KeyType::Rsa2048, KeyType::Ed25519] {
            let ca = new_ca_with("Test CA", 10, kt).unwrap();
            let t = text(&ca.cert);
            assert!(
                t.contains("CA:TRUE") && t.contains("Certificate Sign, CRL Sign"),
                "{t}"
            );
            assert!(!t.contains("Authority Key Identifier"), "self-signed: {t}");
            assert!(ca.cert.verify(&ca.key).unwrap(), "{kt:?} CA signs itself");

            let key = new_key(KeyType::Rsa2048).unwrap();
            let mut spec = CertSpec::client("alice@example.com");
            spec.ou = vec!["dba".into()];
            spec.email = vec!["alice@example.com".into()];
            spec.uri = vec!["https://idp#a".into()];
            let cert = build(
                &key,
                &spec,
                (1_000_000_000, 1_000_003_600),
                SignedBy::Ca(&ca),
            )
            .unwrap();
            let t = text(&cert);
            assert!(cert.verify(&ca.key).unwrap(), "{kt:?} CA signs the client");
            for want in [
                "Subject: OU=dba, CN=alice@example.com",
                "CA:FALSE",
                "Digital Signature, Key Encipherment",
                "TLS Web Client Authentication",
                "URI:https://idp#a",
                "email:alice@example.com",
                "Authority Key Identifier",
                "Not After : Sep  9 02:46:40 2001 GMT",
            ] {
                assert!(t.contains(want), "{kt:?}: no {want:?} in {t}");
            }
        }
        let ca = new_ca_with("Test CA", 10, KeyType::EcP256).unwrap();
        let key = new_key(KeyType::EcP256).unwrap();
        let cert = build(
            &key,
            &CertSpec::server("gw.example.com"),
            (1_000_000_000, 1_000_003_600),
            SignedBy::Ca(&ca),
        )
        .unwrap();
        let t = text(&cert);
        assert!(t.contains("TLS Web Server Authentication") && t.contains("DNS:gw.example.com"));
        assert!(!t.contains("Key Encipherment"), "EC keys only sign: {t}");
    }
}
