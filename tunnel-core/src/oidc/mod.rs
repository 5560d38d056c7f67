//! OpenID Connect pieces shared by the signer and `tunnel-client login`: the provider's
//! discovery document, base64url, the nonce that binds an ID token to one key, and JWS
//! verification ([`jws`]).

pub mod jws;

use crate::http::client::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::pkey::{HasPublic, PKeyRef};
use openssl::sha::sha256;
use serde::Deserialize;

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding (padding tolerated).
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Decodes base64url only in its one canonical spelling (RFC 7515 section 2): the URL-safe
/// alphabet, no padding, no whitespace, unused low bits of the last character zero. So two
/// different texts never decode to the same bytes, which tokens rely on: a JWS segment has
/// exactly one accepted spelling.
pub fn b64url_decode_canonical(text: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    // The engine already refuses padding, other alphabets and non-zero trailing bits; the
    // round trip makes "canonical" hold by construction, whatever the engine's settings.
    (b64url(&bytes) == text).then_some(bytes)
}

/// The nonce that binds an ID token to `key`: base64url(SHA-256(SubjectPublicKeyInfo DER)).
/// The client sends it in the authorization request; the signer recomputes it from the CSR,
/// so a token obtained for one key cannot certify another.
pub fn nonce_for_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<String, openssl::error::ErrorStack> {
    Ok(b64url(&sha256(&key.public_key_to_der()?)))
}

/// `n` random bytes as base64url (state, PKCE verifier).
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The openssl RNG only fails when it cannot seed, in which case nothing here is safe.
    openssl::rand::rand_bytes(&mut buf).expect("the OpenSSL random generator failed");
    b64url(&buf)
}

/// The PKCE S256 challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    b64url(&sha256(verifier.as_bytes()))
}

/// The parts of the provider's discovery document this product uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where the browser signs in.
    pub authorization_endpoint: Option<String>,
    /// Where codes are exchanged for tokens.
    pub token_endpoint: Option<String>,
    /// Where the device flow starts (RFC 8628), when the provider supports it.
    pub device_authorization_endpoint: Option<String>,
    /// The provider's signing keys.
    pub jwks_uri: String,
}

impl Discovery {
    /// Fetches `ISSUER/.well-known/openid-configuration` and checks its `issuer`.
    pub async fn fetch(http: &Client, issuer: &str) -> Result<Discovery, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let resp = http.get(&url).await.map_err(|e| e.to_string())?;
        if resp.status != 200 {
            return Err(format!("{url}: status {}", resp.status));
        }
        let d: Discovery = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("{url}: not a discovery document: {e}"))?;
        if d.issuer != issuer {
            return Err(format!(
                "{url}: names issuer {:?}, not {issuer:?}; set issuer to exactly the provider's issuer",
                d.issuer
            ));
        }
        Ok(d)
    }
}
