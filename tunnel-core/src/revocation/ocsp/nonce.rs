//! The OCSP nonce (RFC 8954): a random value in the request that a responder answering
//! live echoes in its response, so that an old answer cannot be replayed for a new query.
//! A response without a nonce is accepted (pre-signed responses carry none; their age is
//! bounded instead); a response with another nonce is refused.

use super::OcspError;
use crate::util::der;

/// DER of the OID id-pkix-ocsp-nonce, 1.3.6.1.5.5.7.48.1.2.
const NONCE_OID: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02,
];

/// `request` (a DER OCSPRequest without extensions, as the openssl crate makes it) with a
/// fresh nonce added; returns it and the nonce.
pub(super) fn add(request: &[u8]) -> Result<(Vec<u8>, Vec<u8>), OcspError> {
    let mut nonce = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    let (_, outer, _) = der::tlv(request).ok_or(OcspError::MalformedRequest)?;
    let (_, tbs, _) = der::tlv(outer).ok_or(OcspError::MalformedRequest)?;
    let value = der::write(0x04, &der::write(0x04, &nonce));
    let ext = der::write(0x30, &[NONCE_OID, &value].concat());
    let exts = der::write(0xa2, &der::write(0x30, &ext));
    let tbs = der::write(0x30, &[tbs, &exts].concat());
    Ok((der::write(0x30, &tbs), nonce))
}

/// The nonce in a DER OCSPResponse, if it has one.
pub(super) fn of_response(response: &[u8]) -> Option<Vec<u8>> {
    let (_, outer, _) = der::tlv(response)?;
    let bytes = der::elements(outer)?
        .into_iter()
        .find(|(tag, _)| *tag == 0xa0)?
        .1;
    let (_, rb, _) = der::tlv(bytes)?;
    let basic = der::elements(rb)?.into_iter().find(|(t, _)| *t == 0x04)?.1;
    let (_, basic, _) = der::tlv(basic)?;
    let (_, data, _) = der::tlv(basic)?;
    // ResponseData: [0] version?, responderID ([1] or [2]), producedAt, responses,
    // [1] responseExtensions? -- extensions are the [1] after producedAt.
    let elems = der::elements(data)?;
    let after_time = elems.iter().position(|(t, _)| *t == 0x18)?;
    let exts = elems[after_time..].iter().find(|(t, _)| *t == 0xa1)?.1;
    let (_, list, _) = der::tlv(exts)?;
    for (_, ext) in der::elements(list)? {
        let (tag, oid, rest) = der::tlv(ext)?;
        if tag != 0x06 || der::write(0x06, oid) != NONCE_OID {
            continue;
        }
        let mut rest = rest;
        if let Some((0x01, _, r)) = der::tlv(rest) {
            rest = r;
        }
        let (_, value, _) = der::tlv(rest)?;
        // RFC 8954: the value is an OCTET STRING; some responders put the bytes bare.
        return Some(match der::tlv(value) {
            Some((0x04, inner, [])) => inner.to_vec(),
            _ => value.to_vec(),
        });
    }
    None
}

/// Refuses `response` when it echoes a nonce other than `sent`.
pub(super) fn check(response: &[u8], sent: &[u8]) -> Result<(), OcspError> {
    match of_response(response) {
        Some(n) if n != sent => Err(OcspError::NonceMismatch),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, CertSpec};

    #[test]
    fn request_with_nonce_is_a_valid_ocsp_request() {
        let ca = pki::new_ca("CA", 3).unwrap();
        let leaf = pki::new_leaf(&ca, &CertSpec::client("alice")).unwrap().cert;
        let plain = super::super::request_der(&leaf, &ca.cert).unwrap();
        let (der, nonce) = add(&plain).unwrap();
        assert_eq!(nonce.len(), 16);
        openssl::ocsp::OcspRequest::from_der(&der).expect("parses");
        let (_, again) = add(&plain).unwrap();
        assert_ne!(nonce, again, "nonces repeat");
        assert!(of_response(b"garbage").is_none());
        assert!(check(b"garbage", &nonce).is_ok());
    }
}
