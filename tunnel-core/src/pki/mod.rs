//! A small certificate authority: CA, server and client certificates and CRLs, built with
//! the openssl crate. Used by the demo, by the tests (no keys are checked in) and by
//! `tunnel-server pki`.
//!
//! This module holds the in-memory builders; [`store`] keeps a CA in a directory (keys,
//! certificates, an index of what was issued and revoked, the CRL) for `tunnel-server pki`.

mod build;
mod error;
mod index;
mod names;
mod perms;
mod report;
mod request;
pub mod store;

pub use build::{build, digest_for, SignedBy};
pub use error::PkiError;
pub use index::Entry;
pub use names::normalize_serial;

use openssl::asn1::{Asn1Integer, Asn1IntegerRef, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Crl, X509CrlBuilder, X509RevokedBuilder, X509};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

/// Key algorithm of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    #[default]
    EcP256,
    /// RSA 2048.
    Rsa2048,
    /// Ed25519.
    Ed25519,
}

impl std::str::FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ecdsa-p256" | "p256" | "ec" => Ok(KeyType::EcP256),
            "rsa2048" | "rsa" => Ok(KeyType::Rsa2048),
            "ed25519" => Ok(KeyType::Ed25519),
            _ => Err(format!(
                "{s:?} is not a key type; use ecdsa-p256, rsa2048 or ed25519"
            )),
        }
    }
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Issued")
            .field(
                "subject",
                &crate::authz::identity::one_line_name(self.cert.subject_name()),
            )
            .finish_non_exhaustive()
    }
}

/// What kind of leaf certificate to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (EKU serverAuth).
    Server,
    /// TLS client (EKU clientAuth).
    Client,
    /// Intermediate CA (can sign).
    Ca,
}

/// Attributes of a certificate to issue.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject common name.
    pub cn: String,
    /// Subject organizations.
    pub o: Vec<String>,
    /// Subject organizational units.
    pub ou: Vec<String>,
    /// SAN DNS names.
    pub dns: Vec<String>,
    /// SAN URIs.
    pub uri: Vec<String>,
    /// SAN emails.
    pub email: Vec<String>,
    /// SAN IPs.
    pub ip: Vec<IpAddr>,
    /// Validity starts this many days from now (negative: in the past).
    pub start_days: i64,
    /// Validity length in days from the start.
    pub days: u32,
    /// Server, client or CA.
    pub usage: Usage,
    /// Key algorithm.
    pub key_type: KeyType,
}

impl CertSpec {
    /// A client certificate for `cn`, valid for a year from yesterday.
    pub fn client(cn: &str) -> CertSpec {
        CertSpec {
            cn: cn.to_string(),
            o: vec![],
            ou: vec![],
            dns: vec![],
            uri: vec![],
            email: vec![],
            ip: vec![],
            start_days: -1,
            days: 366,
            usage: Usage::Client,
            key_type: KeyType::EcP256,
        }
    }

    /// A server certificate for DNS name `name` (also its CN), valid for a year.
    pub fn server(name: &str) -> CertSpec {
        let mut s = CertSpec::client(name);
        s.usage = Usage::Server;
        match name.parse::<IpAddr>() {
            Ok(ip) => s.ip.push(ip),
            Err(_) => s.dns.push(name.to_string()),
        }
        s
    }
}

/// Generates a key of the given type.
pub fn new_key(kt: KeyType) -> Result<PKey<Private>, ErrorStack> {
    match kt {
        KeyType::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)
        }
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
        KeyType::Ed25519 => PKey::generate_ed25519(),
    }
}

/// A random positive 128-bit serial.
pub fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.add_word(1)?;
    bn.to_asn1_integer()
}

use crate::util::time::unix_now;

fn days_from_now(days: i64) -> Result<Asn1Time, ErrorStack> {
    Asn1Time::from_unix(unix_now() + days * 86_400)
}

/// A new self-signed CA (ECDSA P-256) named `name`, valid for `days` days.
pub fn new_ca(name: &str, days: u32) -> Result<Issued, ErrorStack> {
    new_ca_with(name, days, KeyType::EcP256)
}

/// A new self-signed CA with the given key type.
pub fn new_ca_with(name: &str, days: u32, kt: KeyType) -> Result<Issued, ErrorStack> {
    let key = new_key(kt)?;
    let mut spec = CertSpec::client(name);
    spec.usage = Usage::Ca;
    let now = unix_now();
    let validity = (now - 86_400, now + i64::from(days) * 86_400);
    let cert = build(&key, &spec, validity, SignedBy::Itself(&key))?;
    Ok(Issued { cert, key })
}

/// Issues a certificate signed by `ca`, for a new key of `spec.key_type`.
pub fn new_leaf(ca: &Issued, spec: &CertSpec) -> Result<Issued, ErrorStack> {
    let key = new_key(spec.key_type)?;
    let start = unix_now() + spec.start_days * 86_400;
    let validity = (start, start + i64::from(spec.days) * 86_400);
    let cert = build(&key, spec, validity, SignedBy::Ca(ca))?;
    Ok(Issued { cert, key })
}

/// A CRL signed by `ca` listing `revoked` certificates, valid from `start_days` (relative to
/// now) for `days` days.
pub fn make_crl(
    ca: &Issued,
    revoked: &[&X509],
    start_days: i64,
    days: u32,
) -> Result<X509Crl, ErrorStack> {
    let serials: Vec<Asn1Integer> = revoked
        .iter()
        .map(|c| c.serial_number().to_bn().and_then(|b| b.to_asn1_integer()))
        .collect::<Result<_, _>>()?;
    make_crl_serials(ca, &serials, start_days, days)
}

/// Like [`make_crl`], from serial numbers.
pub fn make_crl_serials(
    ca: &Issued,
    serials: &[Asn1Integer],
    start_days: i64,
    days: u32,
) -> Result<X509Crl, ErrorStack> {
    let when = unix_now() + start_days.min(0) * 86_400;
    let entries: Vec<(&Asn1IntegerRef, i64)> = serials.iter().map(|s| (&**s, when)).collect();
    make_crl_entries(ca, &entries, start_days, days)
}

/// A CRL signed by `ca` listing each serial with its revocation time (Unix seconds), valid
/// from `start_days` (relative to now) for `days` days.
pub fn make_crl_entries(
    ca: &Issued,
    revoked: &[(&Asn1IntegerRef, i64)],
    start_days: i64,
    days: u32,
) -> Result<X509Crl, ErrorStack> {
    crl_with_extensions(ca, revoked, start_days, days, Vec::new())
}

/// Like [`make_crl`], with `extra` extensions (to test how CRLs the gateway must refuse are
/// handled: delta CRLs, issuing distribution points, unknown critical extensions).
pub fn make_crl_with(
    ca: &Issued,
    revoked: &[&X509],
    start_days: i64,
    days: u32,
    extra: Vec<openssl::x509::X509Extension>,
) -> Result<X509Crl, ErrorStack> {
    let serials: Vec<Asn1Integer> = revoked
        .iter()
        .map(|c| c.serial_number().to_bn().and_then(|b| b.to_asn1_integer()))
        .collect::<Result<_, _>>()?;
    let when = unix_now() + start_days.min(0) * 86_400;
    let entries: Vec<(&Asn1IntegerRef, i64)> = serials.iter().map(|s| (&**s, when)).collect();
    crl_with_extensions(ca, &entries, start_days, days, extra)
}

/// A CRL signed by `ca` listing each serial with its revocation time, valid from
/// `this_update` to `next_update` (Unix seconds), numbered `number` (the signer's CRL, whose
/// numbers come from its store so that every signer sharing it counts up together).
pub fn make_crl_numbered(
    ca: &Issued,
    revoked: &[(&Asn1IntegerRef, i64)],
    (this_update, next_update): (i64, i64),
    number: u64,
) -> Result<X509Crl, ErrorStack> {
    let times = (
        Asn1Time::from_unix(this_update)?,
        Asn1Time::from_unix(next_update)?,
    );
    crl_built(ca, revoked, times, crl_number_of(number)?, Vec::new())
}

fn crl_with_extensions(
    ca: &Issued,
    revoked: &[(&Asn1IntegerRef, i64)],
    start_days: i64,
    days: u32,
    extra: Vec<openssl::x509::X509Extension>,
) -> Result<X509Crl, ErrorStack> {
    let last = days_from_now(start_days)?;
    let next = days_from_now(start_days + days as i64)?;
    crl_built(ca, revoked, (last, next), crl_number_ext()?, extra)
}

fn crl_built(
    ca: &Issued,
    revoked: &[(&Asn1IntegerRef, i64)],
    (last, next): (Asn1Time, Asn1Time),
    number: openssl::x509::X509Extension,
    extra: Vec<openssl::x509::X509Extension>,
) -> Result<X509Crl, ErrorStack> {
    let mut b = X509CrlBuilder::new()?;
    b.set_issuer_name(ca.cert.subject_name())?;
    b.set_last_update(&last)?;
    b.set_next_update(&next)?;
    // RFC 5280 wants both extensions, and rust-openssl refuses a CRL without them.
    b.append_extension(crl_aki(ca)?)?;
    b.append_extension(number)?;
    for e in extra {
        b.append_extension(e)?;
    }
    for (serial, at) in revoked {
        let mut r = X509RevokedBuilder::new()?;
        r.set_serial_number(serial)?;
        let at = Asn1Time::from_unix(*at)?;
        r.set_revocation_date(&at)?;
        b.add_revoked(r.build())?;
    }
    b.sign(&ca.key, digest_for(&ca.key))?;
    b.build()
}

/// Authority Key Identifier extension for a CRL, from the CA's subject key identifier.
fn crl_aki(ca: &Issued) -> Result<openssl::x509::X509Extension, ErrorStack> {
    let keyid: Vec<u8> = match ca.cert.subject_key_id() {
        Some(k) => k.as_slice().to_vec(),
        None => openssl::sha::sha1(&ca.cert.public_key()?.public_key_to_der()?).to_vec(),
    };
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
    let mut inner = vec![0x80, keyid.len() as u8];
    inner.extend_from_slice(&keyid);
    let mut der = vec![0x30, inner.len() as u8];
    der.extend_from_slice(&inner);
    der_extension("2.5.29.35", &der)
}

/// CRL Number extension: the current time in milliseconds, so later CRLs have larger numbers.
fn crl_number_ext() -> Result<openssl::x509::X509Extension, ErrorStack> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    crl_number_of(ms)
}

/// CRL Number extension holding `n`.
fn crl_number_of(n: u64) -> Result<openssl::x509::X509Extension, ErrorStack> {
    let mut bytes = n.to_be_bytes().to_vec();
    while bytes.len() > 1 && bytes[0] == 0 && bytes[1] & 0x80 == 0 {
        bytes.remove(0);
    }
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    let mut der = vec![0x02, bytes.len() as u8];
    der.extend_from_slice(&bytes);
    der_extension("2.5.29.20", &der)
}

fn der_extension(oid: &str, der: &[u8]) -> Result<openssl::x509::X509Extension, ErrorStack> {
    let obj = openssl::asn1::Asn1Object::from_str(oid)?;
    let value = openssl::asn1::Asn1OctetString::new_from_bytes(der)?;
    openssl::x509::X509Extension::new_from_der(&obj, false, &value)
}

/// Writes `data` to `path` with mode 0600 (for keys), replacing any existing file.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Writes a certificate (PEM) to `cert_path` and its key (PEM, mode 0600) to `key_path`.
pub fn write_issued(issued: &Issued, cert_path: &Path, key_path: &Path) -> std::io::Result<()> {
    let pem = issued.cert.to_pem().map_err(std::io::Error::other)?;
    std::fs::write(cert_path, pem)?;
    let key = issued
        .key
        .private_key_to_pem_pkcs8()
        .map_err(std::io::Error::other)?;
    write_private(key_path, &key)
}

#[cfg(test)]
mod tests;
