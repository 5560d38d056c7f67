//! Issuing a user certificate: the CSR's self-signature is checked (its subject and
//! extensions are ignored), then a certificate is built from the verified token alone:
//! CN = email, SAN email, SAN URI = issuer + `#` + sub (stable even when the email changes),
//! one OU per mapped group, EKU clientAuth, notBefore 5 minutes back, and recorded in the
//! store (committed) before it is handed out.

use super::claims::Person;
use super::refusal::Refusal;
use crate::pki::{CertSpec, Issued, SignedBy};
use crate::signin::store::{key_sha256, NewIssuance, Recorded, ReplayKey, Store};
use crate::util::time::{asn1_to_unix, unix_now};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::{X509Req, X509};
use std::sync::Arc;

/// How far notBefore is set back, for clients whose clocks run slow.
pub(crate) const BACKDATE_SECS: i64 = 300;
/// How often to draw a new serial when one is already in the store.
const SERIAL_TRIES: usize = 8;

/// Parses a PEM CSR, checks its self-signature and key, and returns its public key.
pub(crate) fn csr_key(pem: &str) -> Result<PKey<Public>, Refusal> {
    let req = X509Req::from_pem(pem.as_bytes())
        .map_err(|_| Refusal::BadCsr("not a PEM certificate request".into()))?;
    let key = req
        .public_key()
        .map_err(|_| Refusal::BadCsr("unreadable public key".into()))?;
    if !req.verify(&key).unwrap_or(false) {
        return Err(Refusal::BadCsr("its signature does not verify".into()));
    }
    let strong = match key.id() {
        Id::EC => key
            .ec_key()
            .ok()
            .and_then(|k| k.group().curve_name())
            .is_some_and(|n| [Nid::X9_62_PRIME256V1, Nid::SECP384R1].contains(&n)),
        Id::RSA => key.bits() >= 2048,
        Id::ED25519 => true,
        _ => false,
    };
    if !strong {
        return Err(Refusal::BadCsr(
            "key type not accepted; use P-256, P-384, RSA ≥ 2048 or Ed25519".into(),
        ));
    }
    Ok(key)
}

/// A certificate issued by the signer.
#[derive(Debug, Clone)]
pub(crate) struct Issuance {
    /// The certificate.
    pub cert: X509,
    /// Its serial, upper-case hex (as the store and `openssl x509 -serial` write it).
    pub serial: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// What [`mint`] issues with: the user CA, the issuer URL (for the subject URI), the store,
/// and this signer's name in the records.
pub(crate) struct Minter {
    /// The user CA.
    pub ca: Arc<Issued>,
    /// The provider's issuer URL.
    pub issuer: String,
    /// Where issuances are recorded.
    pub store: Arc<Store>,
    /// Who issued, as recorded (`HOST:PID`).
    pub instance: String,
}

/// Builds and signs a certificate for `person` on `key`, valid `lifetime_secs` from now
/// (never past the CA's own end), for the token `token`, and records it in the store:
/// a serial already taken (by any signer) is drawn again; a token that already bought a
/// certificate is refused as a replay.
pub(crate) async fn mint(
    m: &Minter,
    person: &Person,
    key: &PKey<Public>,
    token: ReplayKey,
    lifetime_secs: i64,
) -> Result<Issuance, Refusal> {
    let internal = |e: openssl::error::ErrorStack| Refusal::Internal(format!("signing: {e}"));
    let now = unix_now();
    let ca_end = asn1_to_unix(m.ca.cert.not_after()).map_err(internal)?;
    let not_after = (now + lifetime_secs).min(ca_end);
    let key_sha256 = key_sha256(key).map_err(internal)?;
    for _ in 0..SERIAL_TRIES {
        let (ca, issuer, p, k) = (m.ca.clone(), m.issuer.clone(), person.clone(), key.clone());
        let cert = tokio::task::spawn_blocking(move || build(&ca, &issuer, &p, &k, now, not_after))
            .await
            .map_err(|e| Refusal::Internal(e.to_string()))?
            .map_err(internal)?;
        let bn = cert.serial_number().to_bn().map_err(internal)?;
        let serial = bn.to_hex_str().map_err(internal)?.to_string();
        let new = NewIssuance {
            serial: serial.clone(),
            email: person.email.clone(),
            sub: person.sub.clone(),
            groups: person.ous.clone(),
            key_sha256: key_sha256.clone(),
            not_before: now - BACKDATE_SECS,
            not_after,
            issued_by: m.instance.clone(),
            token,
        };
        let recorded = m
            .store
            .record_issuance(&new)
            .await
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        match recorded {
            Recorded::Stored => {
                return Ok(Issuance {
                    cert,
                    serial,
                    not_after,
                })
            }
            Recorded::TokenUsed => return Err(Refusal::Replayed),
            Recorded::SerialTaken => continue,
        }
    }
    Err(Refusal::Internal(
        "every serial drawn is already in the store".into(),
    ))
}

fn build(
    ca: &Issued,
    issuer: &str,
    person: &Person,
    key: &PKey<Public>,
    now: i64,
    not_after: i64,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut spec = CertSpec::client(&person.email);
    spec.ou = person.ous.clone();
    spec.email = vec![person.email.clone()];
    spec.uri = vec![subject_uri(issuer, &person.sub)];
    crate::pki::build(
        key,
        &spec,
        (now - BACKDATE_SECS, not_after),
        SignedBy::Ca(ca),
    )
}

/// The stable subject id: the issuer URL, `#`, and the provider's `sub` with every byte that
/// is not unreserved percent-encoded (so the result is one valid URI).
pub(crate) fn subject_uri(issuer: &str, sub: &str) -> String {
    let mut out = format!("{}#", issuer.trim_end_matches('/'));
    for b in sub.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_uri_is_one_uri() {
        assert_eq!(
            subject_uri("https://idp/", "a b/ü"),
            "https://idp#a%20b%2F%C3%BC"
        );
    }

    #[test]
    fn csr_signature_is_checked() {
        let key = crate::pki::new_key(crate::pki::KeyType::EcP256).unwrap();
        let other = crate::pki::new_key(crate::pki::KeyType::EcP256).unwrap();
        let mut b = openssl::x509::X509ReqBuilder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&other, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let pem = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
        assert_eq!(csr_key(&pem).unwrap_err().code(), "bad_csr");
        assert_eq!(csr_key("garbage").unwrap_err().code(), "bad_csr");
    }
}
