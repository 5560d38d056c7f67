//! JSON Web Signatures (RFC 7515, compact form) verified with OpenSSL against JSON Web Keys
//! (RFC 7517). Only asymmetric algorithms are accepted: `none` and the HMAC family are refused
//! before any key is looked at, so a token can never pick a weaker check than the provider's
//! published keys allow.

use super::{b64url_decode, b64url_decode_canonical};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::Value;

/// Signature algorithms accepted for ID tokens.
pub const ALLOWED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

/// Why a token's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` outside the allow-list (`none`, HMAC, unknown).
    #[error("signature algorithm {0:?} is not allowed")]
    Algorithm(String),
    /// The header has `crit` extensions this verifier does not understand.
    #[error("critical header extensions are not supported")]
    Critical,
    /// No key of the provider matches `kid` and the algorithm.
    #[error("no key of the provider matches kid {0:?}")]
    NoKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// A compact JWS split into its parts, not yet verified.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The protected header.
    pub header: Value,
    /// `alg` from the header (already checked against [`ALLOWED_ALGS`]).
    pub alg: String,
    /// `kid` from the header, if any.
    pub kid: Option<String>,
    /// The payload (claims), parsed as JSON.
    pub payload: Value,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    replay_key: [u8; 32],
}

impl Jws {
    /// Splits and decodes `token`, refusing disallowed algorithms and any segment that is not
    /// canonical base64url (padding, another alphabet, non-zero trailing bits): each token
    /// has one accepted spelling.
    pub fn parse(token: &str) -> Result<Jws, JwsError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("not three dot-separated parts"));
        };
        let header_bytes = b64url_decode_canonical(h)
            .ok_or(JwsError::Malformed("header is not canonical base64url"))?;
        let header: Value = serde_json::from_slice(&header_bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or(JwsError::Malformed("header is not a JSON object"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if !ALLOWED_ALGS.contains(&alg) {
            return Err(JwsError::Algorithm(alg.to_string()));
        }
        if header.get("crit").is_some() {
            return Err(JwsError::Critical);
        }
        let payload_bytes = b64url_decode_canonical(p)
            .ok_or(JwsError::Malformed("payload is not canonical base64url"))?;
        let payload: Value = serde_json::from_slice(&payload_bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or(JwsError::Malformed("payload is not a JSON object"))?;
        let signature = b64url_decode_canonical(s)
            .ok_or(JwsError::Malformed("signature is not canonical base64url"))?;
        Ok(Jws {
            alg: alg.to_string(),
            kid: header
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_string),
            header,
            payload,
            signing_input: format!("{h}.{p}").into_bytes(),
            signature,
            replay_key: replay_key(&header_bytes, &payload_bytes),
        })
    }

    /// The key under which a used token is remembered (see [`replay_key`]); meaningful once
    /// [`Jws::verify`] accepted the token.
    pub fn replay_key(&self) -> [u8; 32] {
        self.replay_key
    }

    /// Verifies the signature with the first key of `jwks` (a JWK Set's `keys`) that matches
    /// `kid` (when the token names one) and suits the algorithm.
    pub fn verify(&self, keys: &[Value]) -> Result<(), JwsError> {
        let mut candidates = keys
            .iter()
            .filter(|k| match &self.kid {
                Some(kid) => k.get("kid").and_then(Value::as_str) == Some(kid),
                None => true,
            })
            .filter(|k| k.get("use").and_then(Value::as_str).unwrap_or("sig") == "sig")
            .filter(|k| match k.get("alg").and_then(Value::as_str) {
                Some(a) => a == self.alg,
                None => true,
            })
            .filter_map(|k| jwk_public_key(k, &self.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwsError::NoKey(self.kid.clone().unwrap_or_default()));
        }
        for key in candidates {
            if verify_with(&self.alg, &key, &self.signing_input, &self.signature) {
                return Ok(());
            }
        }
        Err(JwsError::BadSignature)
    }
}

/// What the provider signed, as the identity of a token for "each token is usable once":
/// SHA-256 over the decoded header and payload, the header's length (8 bytes, big endian)
/// first so that no other split of the same bytes gives the same input.
///
/// Every spelling of one token maps to this key, and no spelling changes it:
/// - The signature is left out. It is not what the provider vouched for, and one signed
///   content has many valid signatures the signer cannot reduce to one: ECDSA's (r, n−s)
///   verifies like (r, s), and a provider may sign the same content twice.
/// - The base64url text is left out; the decoded bytes are what any spelling of a segment
///   (padding, another alphabet, trailing bits) decodes to. [`Jws::parse`] also refuses
///   those spellings, so this holds twice over.
/// - Changing the bytes themselves (JSON whitespace, key order, another claim) makes the
///   signature fail: the provider signed only its own bytes.
///
/// Claims (iss, sub, aud, iat, nonce or jti) would not do: two distinct tokens of one person
/// issued within one second without nonce or jti share them, and which claims a provider
/// sets varies; the signed bytes need none.
pub fn replay_key(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    h.update(&(header.len() as u64).to_be_bytes());
    h.update(header);
    h.update(payload);
    h.finish()
}

fn digest_of(alg: &str) -> MessageDigest {
    match &alg[2..] {
        "384" => MessageDigest::sha384(),
        "512" => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    }
}

/// The size of one ECDSA coordinate (r or s) for an `ES*` algorithm (RFC 7518 section 3.4).
fn ec_coordinate_size(alg: &str) -> Option<usize> {
    match alg {
        "ES256" => Some(32),
        "ES384" => Some(48),
        "ES512" => Some(66),
        _ => None,
    }
}

/// Each signature has exactly one accepted length: an RSA signature is as long as the
/// modulus (RFC 8017 section 8), an ECDSA one is r‖s of exactly two coordinate sizes
/// (RFC 7518 section 3.4), Ed25519's is 64 bytes. Leading zero bytes are another spelling.
fn verify_with(alg: &str, key: &PKey<Public>, input: &[u8], sig: &[u8]) -> bool {
    let result = || -> Result<bool, openssl::error::ErrorStack> {
        if alg == "EdDSA" {
            if sig.len() != 64 {
                return Ok(false);
            }
            let mut v = Verifier::new_without_digest(key)?;
            return v.verify_oneshot(sig, input);
        }
        let md = digest_of(alg);
        let mut v = Verifier::new(md, key)?;
        let sig = match &alg[..2] {
            "RS" | "PS" if sig.len() != key.size() => return Ok(false),
            "RS" => {
                v.set_rsa_padding(Padding::PKCS1)?;
                sig.to_vec()
            }
            "PS" => {
                v.set_rsa_padding(Padding::PKCS1_PSS)?;
                v.set_rsa_mgf1_md(md)?;
                v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                sig.to_vec()
            }
            _ => match ec_coordinate_size(alg).and_then(|n| raw_ecdsa_to_der(sig, n)) {
                Some(der) => der,
                None => return Ok(false),
            },
        };
        v.update(input)?;
        v.verify(&sig)
    };
    result().unwrap_or(false)
}

/// JWS carries ECDSA signatures as r‖s, each exactly `size` bytes; OpenSSL wants DER. Any
/// other length is refused: read as numbers, r and s with extra leading zero bytes would
/// be the same signature spelled differently.
fn raw_ecdsa_to_der(sig: &[u8], size: usize) -> Option<Vec<u8>> {
    if sig.len() != 2 * size {
        return None;
    }
    let (r, s) = sig.split_at(size);
    let sig =
        EcdsaSig::from_private_components(BigNum::from_slice(r).ok()?, BigNum::from_slice(s).ok()?)
            .ok()?;
    sig.to_der().ok()
}

/// The public key of a JWK, when its type and parameters suit `alg`.
fn jwk_public_key(jwk: &Value, alg: &str) -> Option<PKey<Public>> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bn = |name: &str| {
        s(name)
            .and_then(b64url_decode)
            .and_then(|b| BigNum::from_slice(&b).ok())
    };
    match (s("kty")?, &alg[..2]) {
        ("RSA", "RS" | "PS") => {
            let rsa = Rsa::from_public_components(bn("n")?, bn("e")?).ok()?;
            // Keys under 2048 bits are not trusted, whatever the provider publishes.
            (rsa.size() >= 256).then_some(())?;
            PKey::from_rsa(rsa).ok()
        }
        ("EC", "ES") => {
            let nid = match (s("crv")?, alg) {
                ("P-256", "ES256") => Nid::X9_62_PRIME256V1,
                ("P-384", "ES384") => Nid::SECP384R1,
                ("P-521", "ES512") => Nid::SECP521R1,
                _ => return None,
            };
            let group = EcGroup::from_curve_name(nid).ok()?;
            let (x, y) = (bn("x")?, bn("y")?);
            let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?;
            key.check_key().ok()?;
            PKey::from_ec_key(key).ok()
        }
        ("OKP", "Ed") if s("crv")? == "Ed25519" => {
            let x = s("x").and_then(b64url_decode)?;
            PKey::public_key_from_raw_bytes(&x, Id::ED25519).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "jws_tests.rs"]
mod tests;
