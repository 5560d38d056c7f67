//! OpenID Connect pieces shared by the signer and `tunnel-client login`: the provider's
//! discovery document, base64url, the nonce that binds an ID token to one key, and JWS
//! verification ([`jws`]).

pub mod jws;

use crate::http::client::{Client, HttpError};
use crate::http::UrlError;
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

/// Why the provider's discovery document, or a URL it gives for the browser, is refused.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The provider cannot be reached (or answered with broken HTTP).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The discovery URL answered another status than 200.
    #[error("{url}: status {status}")]
    Status {
        /// The discovery URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The answer is not a discovery document.
    #[error("{url}: not a discovery document: {source}")]
    NotDiscovery {
        /// The discovery URL.
        url: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// The document names another issuer than the configured one.
    #[error("{url}: names issuer {named:?}, not {expected:?}; set issuer to exactly the provider's issuer")]
    OtherIssuer {
        /// The discovery URL.
        url: String,
        /// The issuer the document names.
        named: String,
        /// The issuer configured.
        expected: String,
    },
    /// A URL for the browser is plain http to a host that is not loopback.
    #[error("the provider's {what} {url} is plain http to another host; only https:// (or http:// on loopback) is opened")]
    PlainHttp {
        /// Which URL of the provider's.
        what: &'static str,
        /// The URL.
        url: String,
    },
    /// A URL for the browser fails the crate's URL checks.
    #[error("the provider's {what}: {source}")]
    BadUrl {
        /// Which URL of the provider's.
        what: &'static str,
        /// What is wrong with it.
        source: UrlError,
    },
}

impl Discovery {
    /// Fetches `ISSUER/.well-known/openid-configuration` and checks its `issuer`.
    pub async fn fetch(http: &Client, issuer: &str) -> Result<Discovery, DiscoveryError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let resp = http.get(&url).await?;
        if resp.status != 200 {
            return Err(DiscoveryError::Status {
                url,
                status: resp.status,
            });
        }
        let d: Discovery = match serde_json::from_slice(&resp.body) {
            Ok(d) => d,
            Err(source) => return Err(DiscoveryError::NotDiscovery { url, source }),
        };
        if d.issuer != issuer {
            return Err(DiscoveryError::OtherIssuer {
                url,
                named: d.issuer,
                expected: issuer.to_string(),
            });
        }
        if let Some(a) = &d.authorization_endpoint {
            browser_url(a, "authorization_endpoint")?;
        }
        Ok(d)
    }
}

/// Checks a URL the provider gives us for the person's browser (the authorization endpoint,
/// the device flow's verification URI): it must pass [`crate::http::Url`]'s checks and be
/// `https://`, or `http://` on loopback. A `javascript:`, `file:` or plain-http link from a
/// misconfigured or hostile discovery document is never printed or opened.
pub fn browser_url(url: &str, what: &'static str) -> Result<(), DiscoveryError> {
    match crate::http::Url::parse(url) {
        Ok(u) if u.tls || u.is_loopback() => Ok(()),
        Ok(u) => Err(DiscoveryError::PlainHttp {
            what,
            url: u.to_string(),
        }),
        Err(source) => Err(DiscoveryError::BadUrl { what, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::serve::{reply, Request, Server};
    use std::sync::Arc;

    /// Known answer: the P-256 key whose private scalar is 1 has the generator as its public
    /// key; base64url(SHA-256(its SubjectPublicKeyInfo)) computed outside this code (Python's
    /// hashlib and `openssl dgst` over the DER written out by hand agree).
    #[test]
    fn the_nonce_of_a_known_key_is_the_known_answer() {
        use openssl::bn::{BigNum, BigNumContext};
        use openssl::ec::{EcGroup, EcKey, EcPoint};
        use openssl::nid::Nid;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let one = BigNum::from_u32(1).unwrap();
        let mut g = EcPoint::new(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        g.mul_generator2(&group, &one, &mut ctx).unwrap();
        let key = EcKey::from_private_components(&group, &one, &g).unwrap();
        let key = openssl::pkey::PKey::from_ec_key(key).unwrap();
        assert_eq!(
            nonce_for_key(&key).unwrap(),
            "XNJS-wzokyQ2-vjM0QQJgbie5K1rn-niorfnGqyyfNM"
        );
    }

    #[test]
    fn browser_urls_are_https_or_loopback_http() {
        let cases = [
            ("https://idp.example.com/auth", true),
            ("http://127.0.0.1:8080/auth", true),
            ("http://localhost/auth", true),
            ("http://[::1]/auth", true),
            ("http://idp.example.com/auth", false),
            ("javascript:alert(1)", false),
            ("file:///etc/passwd", false),
            ("https://idp.example.com/a\u{1b}[2J", false),
            ("", false),
        ];
        for (url, ok) in cases {
            assert_eq!(browser_url(url, "x").is_ok(), ok, "{url:?}");
        }
    }

    /// A provider on loopback whose discovery names `auth` as its authorization endpoint.
    async fn provider(auth: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", l.local_addr().unwrap());
        let iss = issuer.clone();
        let handler = move |_: Request| {
            let body = serde_json::json!({
                "issuer": iss, "authorization_endpoint": auth,
                "token_endpoint": format!("{iss}/token"), "jwks_uri": format!("{iss}/jwks"),
            });
            async move { reply(200, "application/json", body.to_string()) }
        };
        let server = Server::new(l, None, crate::signin::signer::LIMITS);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server.run(Arc::new(handler), stop, std::time::Duration::ZERO));
        issuer
    }

    #[tokio::test]
    async fn a_discovery_naming_a_plain_http_or_script_login_page_is_refused() {
        let http = Client::new(None).unwrap();
        for auth in ["http://idp.example.com/auth", "javascript:alert(1)"] {
            let issuer = provider(auth).await;
            let e = Discovery::fetch(&http, &issuer).await.unwrap_err();
            assert!(
                e.to_string().contains("authorization_endpoint"),
                "{auth}: {e}"
            );
        }
        let issuer = provider("http://127.0.0.1:9/auth").await;
        let d = Discovery::fetch(&http, &issuer)
            .await
            .expect("positive control");
        assert_eq!(
            d.authorization_endpoint.as_deref(),
            Some("http://127.0.0.1:9/auth")
        );
    }
}
