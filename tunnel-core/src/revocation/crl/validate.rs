//! What makes a CRL acceptable: no extension we do not handle that is critical, no delta CRL
//! and no issuing distribution point (both limit what the list covers, so a certificate
//! missing from it would pass for not revoked), a thisUpdate not in the future, and an
//! issuer allowed to sign CRLs. rust-openssl exposes no list of a CRL's extensions, so the
//! few DER levels down to them are walked here.

use super::names_equal;
use crate::authz::identity::one_line_name;
use crate::util::der::tlv;
use openssl::x509::{X509Crl, X509Ref, X509};

/// Clock skew tolerated for a thisUpdate ahead of the gateway's clock.
const SKEW_SECS: i64 = 300;

/// DER contents of the OIDs of the extensions handled: cRLNumber and
/// authorityKeyIdentifier.
const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
const AKI: &[u8] = &[0x55, 0x1d, 0x23];
const DELTA_CRL_INDICATOR: &[u8] = &[0x55, 0x1d, 0x1b];
const ISSUING_DISTRIBUTION_POINT: &[u8] = &[0x55, 0x1d, 0x1c];

/// One extension of a CRL.
pub(super) struct Ext {
    oid: Vec<u8>,
    critical: bool,
    value: Vec<u8>,
}

/// Checks `crl` on its own at unix time `now`; returns its authority key identifier.
pub(super) fn crl(crl: &X509Crl, now: i64) -> Result<Option<Vec<u8>>, String> {
    let issuer = one_line_name(crl.issuer_name());
    if let Some(this) = crate::util::time::unix_time(crl.last_update()) {
        if this > now + SKEW_SECS {
            return Err(format!(
                "CRL issued by {issuer} has a thisUpdate in the future ({}); check the CA's clock",
                crl.last_update()
            ));
        }
    }
    let der = crl.to_der().map_err(|e| e.to_string())?;
    let exts = extensions(&der).ok_or_else(|| format!("CRL issued by {issuer}: malformed DER"))?;
    let mut aki = None;
    for e in exts {
        match e.oid.as_slice() {
            DELTA_CRL_INDICATOR => {
                return Err(format!(
                    "CRL issued by {issuer} is a delta CRL; delta CRLs are not supported, give the full CRL"
                ))
            }
            ISSUING_DISTRIBUTION_POINT => {
                return Err(format!(
                    "CRL issued by {issuer} has an issuing distribution point (it covers only part of the CA's certificates); give one complete CRL per CA"
                ))
            }
            AKI => aki = aki_keyid(&e.value),
            CRL_NUMBER => {}
            other if e.critical => {
                return Err(format!(
                    "CRL issued by {issuer} has an unhandled critical extension {}",
                    oid_text(other)
                ))
            }
            _ => {}
        }
    }
    Ok(aki)
}

/// For a CRL naming a CA of `cas` as its issuer: the CA whose key signed it (as the cache
/// of verified keys), or an error when none did or the CA may not sign CRLs. A CRL naming no
/// CA of `cas` belongs to an intermediate CA: nothing is verified yet.
pub(super) fn against_cas(crl: &X509Crl, cas: &[X509]) -> Result<Vec<(Vec<u8>, bool)>, String> {
    let issuer = one_line_name(crl.issuer_name());
    let named: Vec<&X509> = cas
        .iter()
        .filter(|ca| names_equal(ca.subject_name(), crl.issuer_name()))
        .collect();
    if named.is_empty() {
        return Ok(Vec::new());
    }
    for ca in named {
        let Ok(key) = ca.public_key() else { continue };
        if crl.verify(&key).unwrap_or(false) {
            if !may_sign_crls(ca) {
                return Err(format!(
                    "CRL issued by {issuer}: that CA's key usage does not include cRLSign"
                ));
            }
            let der = key.public_key_to_der().map_err(|e| e.to_string())?;
            return Ok(vec![(der, true)]);
        }
    }
    Err(format!(
        "CRL issued by {issuer} is not signed by the CA of that name in client_ca (forged, or signed with another key)"
    ))
}

/// Whether `ca`'s key usage (when it has one) allows signing CRLs.
pub(super) fn may_sign_crls(ca: &X509Ref) -> bool {
    ca.key_usage()
        .map(|ku| ku.contains(openssl::x509::X509KeyUsage::CRL_SIGN))
        .unwrap_or(true)
}

/// Whether a CRL's authority key identifier (if any) names `issuer`'s key (if it says).
pub(super) fn aki_matches(aki: Option<&[u8]>, issuer: &X509Ref) -> bool {
    match (aki, issuer.subject_key_id()) {
        (Some(a), Some(s)) => a == s.as_slice(),
        _ => true,
    }
}

/// The value (a DER INTEGER) of the cRLNumber extension of the DER CRL `der`, if any.
pub(super) fn number(der: &[u8]) -> Option<Vec<u8>> {
    extensions(der)?
        .into_iter()
        .find(|e| e.oid == CRL_NUMBER)
        .map(|e| e.value)
}

/// The crlExtensions of a DER CertificateList.
fn extensions(der: &[u8]) -> Option<Vec<Ext>> {
    let (_, list, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(list)?;
    let mut out = Vec::new();
    while !tbs.is_empty() {
        let (tag, body, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != 0xa0 {
            continue;
        }
        let (_, mut seq, _) = tlv(body)?;
        while !seq.is_empty() {
            let (_, ext, rest) = tlv(seq)?;
            seq = rest;
            let (_, oid, mut ext) = tlv(ext)?;
            let mut critical = false;
            if let Some((0x01, b, rest)) = tlv(ext) {
                critical = b.first().is_some_and(|v| *v != 0);
                ext = rest;
            }
            let (_, value, _) = tlv(ext)?;
            out.push(Ext {
                oid: oid.to_vec(),
                critical,
                value: value.to_vec(),
            });
        }
    }
    Some(out)
}

/// The keyIdentifier of an AuthorityKeyIdentifier value.
fn aki_keyid(value: &[u8]) -> Option<Vec<u8>> {
    let (_, mut seq, _) = tlv(value)?;
    while !seq.is_empty() {
        let (tag, body, rest) = tlv(seq)?;
        if tag == 0x80 {
            return Some(body.to_vec());
        }
        seq = rest;
    }
    None
}

/// Dotted text of a DER OID's contents.
fn oid_text(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut acc: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < oid.len() {
                let first = acc.min(80) / 40;
                parts.push(first.to_string());
                parts.push((acc - first * 40).to_string());
            } else {
                parts.push(acc.to_string());
            }
            acc = 0;
        }
    }
    parts.join(".")
}
