//! OCSP: checking client certificates against a responder (cached until the response's
//! nextUpdate, bounded by a timeout, run in the connection's task so the accept loop never
//! waits), stapling the gateway's own status, and verifying that staple on the client.

use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509Ref, X509};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

mod error;
mod nonce;
pub(crate) mod staple;
pub mod url;

pub use error::OcspError;
pub use staple::Staple;

/// Answers being fetched, per certificate: concurrent connections of one client wait for
/// the same query.
type InFlight = Mutex<HashMap<Vec<u8>, std::sync::Arc<tokio::sync::OnceCell<Verdict>>>>;

/// How the gateway uses OCSP for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OcspMode {
    /// No OCSP checks (the default).
    #[default]
    Off,
    /// Refuse revoked certificates; let clients through (logged) when no answer can be had.
    Prefer,
    /// Refuse unless the responder says the certificate is good.
    Require,
}

/// What OCSP said about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not revoked.
    Good,
    /// Revoked.
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
    /// No usable answer (no responder, unreachable, bad response).
    Unavailable(String),
}

/// Longest a response without nextUpdate is cached.
const MAX_CACHE: i64 = 3600;
/// How long a responder that could not be reached is not asked again, so a dead responder
/// does not add its timeout to every connection. Failed verifications are never cached.
const NEGATIVE_CACHE: i64 = 10;
/// Clock skew allowed when checking thisUpdate/nextUpdate.
const SKEW_SECS: u32 = 300;
/// Oldest thisUpdate accepted: a responder may answer without echoing the nonce (pre-signed
/// responses), so an old "good" answer must not be replayable for ever.
const MAX_AGE_SECS: u32 = 7 * 86_400;
/// Largest OCSP HTTP response read.
const MAX_RESPONSE: usize = 256 * 1024;

/// Checks client certificates with OCSP, caching answers.
pub struct OcspChecker {
    responder: Option<String>,
    timeout: Duration,
    store: X509Store,
    cache: Mutex<HashMap<Vec<u8>, (Verdict, i64)>>,
    /// Responders that could not be reached: URL -> (error, until when).
    down: Mutex<HashMap<String, (OcspError, i64)>>,
    inflight: InFlight,
    /// `ocsp_responder_allow`: hosts an AIA URL may name (empty: any).
    allow: Vec<String>,
}

impl std::fmt::Debug for OcspChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspChecker")
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

/// A trust store of `cas`.
pub fn store_of(cas: &[X509]) -> Result<X509Store, openssl::error::ErrorStack> {
    let mut b = X509StoreBuilder::new()?;
    for ca in cas {
        b.add_cert(ca.clone())?;
    }
    Ok(b.build())
}

impl OcspChecker {
    /// A checker trusting `cas` (responses must be signed by them or a responder they
    /// delegated to); `responder` overrides the certificates' AIA URL.
    pub fn new(
        cas: Vec<X509>,
        responder: Option<String>,
        timeout: Duration,
    ) -> Result<Self, openssl::error::ErrorStack> {
        Ok(OcspChecker {
            responder,
            timeout,
            store: store_of(&cas)?,
            cache: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            allow: Vec::new(),
        })
    }

    /// Restricts the hosts of AIA responder URLs to `hosts` (`ocsp_responder_allow`).
    pub fn with_allow(mut self, hosts: Vec<String>) -> Self {
        self.allow = hosts;
        self
    }

    /// The status of the leaf of `chain`, a chain OpenSSL verified (leaf first): the issuer
    /// named in the request is the certificate above the leaf in it, never one the client
    /// merely sent. Only verified answers are cached (until their nextUpdate, at most
    /// [`MAX_CACHE`]); a responder that cannot be reached is not asked again for
    /// [`NEGATIVE_CACHE`] seconds.
    pub async fn check(&self, chain: &[X509]) -> Verdict {
        let (Some(cert), Some(issuer)) = (chain.first(), chain.get(1)) else {
            return Verdict::Unavailable(
                "no issuer above the client certificate in its verified chain".into(),
            );
        };
        let key = [cert_fingerprint(cert), cert_fingerprint(issuer)].concat();
        if let Some(v) = self.cached(&key, crate::util::time::unix_now()) {
            return v;
        }
        let cell = crate::util::sync::lock(&self.inflight)
            .entry(key.clone())
            .or_default()
            .clone();
        let v = cell
            .get_or_init(|| self.query_and_cache(&key, cert, issuer, chain))
            .await
            .clone();
        let mut m = crate::util::sync::lock(&self.inflight);
        if m.get(&key)
            .is_some_and(|c| std::sync::Arc::ptr_eq(c, &cell))
        {
            m.remove(&key);
        }
        drop(m);
        v
    }

    async fn query_and_cache(
        &self,
        key: &[u8],
        cert: &X509,
        issuer: &X509,
        chain: &[X509],
    ) -> Verdict {
        let now = crate::util::time::unix_now();
        if let Some(v) = self.cached(key, now) {
            return v;
        }
        match self.query(cert, issuer, chain, now).await {
            Ok((v, next)) => {
                let until = next.unwrap_or(now + MAX_CACHE).min(now + MAX_CACHE);
                let mut c = crate::util::sync::lock(&self.cache);
                if c.len() > 100_000 {
                    c.retain(|_, (_, until)| *until > now);
                }
                c.insert(key.to_vec(), (v.clone(), until));
                v
            }
            Err(e) => Verdict::Unavailable(e.to_string()),
        }
    }

    fn cached(&self, key: &[u8], now: i64) -> Option<Verdict> {
        let c = crate::util::sync::lock(&self.cache);
        c.get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v.clone())
    }

    async fn query(
        &self,
        cert: &X509,
        issuer: &X509,
        chain: &[X509],
        now: i64,
    ) -> Result<(Verdict, Option<i64>), OcspError> {
        let url = match &self.responder {
            Some(u) => u.clone(),
            None => {
                let aia = responder_of(cert).ok_or(OcspError::NoResponder)?;
                let parsed = url::parse(&aia)?;
                if !url::allowed(&parsed, &self.allow) {
                    return Err(OcspError::NotAllowed { host: parsed.host });
                }
                aia
            }
        };
        let down = crate::util::sync::lock(&self.down)
            .get(&url)
            .filter(|(_, until)| *until > now)
            .map(|(e, _)| e.clone());
        if let Some(e) = down {
            return Err(e);
        }
        let body = request_der(cert, issuer).map_err(OcspError::Request)?;
        let (body, sent_nonce) = nonce::add(&body)?;
        let resp = match http_post(&url, &body, self.timeout).await {
            Ok(r) => r,
            Err(e) => {
                crate::util::sync::lock(&self.down).insert(url, (e.clone(), now + NEGATIVE_CACHE));
                return Err(e);
            }
        };
        nonce::check(&resp, &sent_nonce)?;
        parse_response(&resp, cert, issuer, &self.store, chain)
    }
}

/// The first OCSP URL of `cert`'s Authority Information Access.
pub fn responder_of(cert: &X509Ref) -> Option<String> {
    cert.ocsp_responders()
        .ok()
        .and_then(|s| s.iter().next().map(|u| u.to_string()))
}

/// The certificate among `candidates` that issued and signed `cert`.
pub fn find_issuer<'a>(cert: &X509Ref, candidates: impl Iterator<Item = &'a X509>) -> Option<X509> {
    for c in candidates {
        let same = c
            .subject_name()
            .try_cmp(cert.issuer_name())
            .map(|o| o.is_eq())
            .unwrap_or(false);
        if same
            && c.public_key()
                .ok()
                .and_then(|k| cert.verify(&k).ok())
                .unwrap_or(false)
        {
            return Some(c.clone());
        }
    }
    None
}

fn request_der(cert: &X509Ref, issuer: &X509Ref) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)?;
    let mut req = OcspRequest::new()?;
    req.add_id(id)?;
    req.to_der()
}

/// Verifies an OCSP response (signature chain to `store`, time window) and returns the
/// status of `cert` with the response's nextUpdate.
pub fn parse_response(
    der: &[u8],
    cert: &X509Ref,
    issuer: &X509Ref,
    store: &X509Store,
    extra: &[X509],
) -> Result<(Verdict, Option<i64>), OcspError> {
    let resp = OcspResponse::from_der(der).map_err(OcspError::NotOcsp)?;
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(OcspError::ResponseStatus(resp.status().as_raw()));
    }
    let basic = resp.basic().map_err(OcspError::NoBasic)?;
    let mut certs = Stack::new()?;
    for c in extra {
        certs.push(c.clone())?;
    }
    basic
        .verify(&certs, store, OcspFlag::empty())
        .map_err(OcspError::Untrusted)?;
    let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)?;
    let st = basic.find_status(&id).ok_or(OcspError::NotCovered)?;
    st.check_validity(SKEW_SECS, Some(MAX_AGE_SECS))
        .map_err(OcspError::OutsideValidity)?;
    let next = st
        .next_update()
        .and_then(|t| printed_time_to_unix(&t.to_string()));
    let v = if st.status == OcspCertStatus::GOOD {
        Verdict::Good
    } else if st.status == OcspCertStatus::REVOKED {
        Verdict::Revoked
    } else {
        Verdict::Unknown
    };
    Ok((v, next))
}

/// POSTs an OCSP request (RFC 6960 appendix A: plain HTTP) through the crate's one HTTP
/// client and returns the body of a 200 answer.
pub async fn http_post(url: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, OcspError> {
    url::parse(url)?;
    let limits = crate::http::client::ClientLimits {
        timeout,
        max_body: MAX_RESPONSE,
    };
    let client =
        crate::http::client::Client::for_signed_objects(limits).map_err(|e| OcspError::Client {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    let resp = client
        .post_as(
            url,
            "application/ocsp-request",
            "application/ocsp-response",
            body,
        )
        .await
        .map_err(|e| match e {
            crate::http::client::HttpError::Timeout { .. } => OcspError::Timeout {
                url: url.to_string(),
                timeout,
            },
            e => OcspError::Unreachable(e.to_string()),
        })?;
    if resp.status != 200 {
        return Err(OcspError::Status {
            url: url.to_string(),
            status: resp.status,
        });
    }
    Ok(resp.body)
}

/// SHA-256 of a certificate's DER, as staples are keyed.
pub fn cert_fingerprint(cert: &X509Ref) -> Vec<u8> {
    cert.digest(MessageDigest::sha256())
        .map(|d| d.to_vec())
        .unwrap_or_default()
}

/// Fetches a fresh staple for `cert` (issued by `issuer`) from `url`, verified like any
/// response; returns it with its nextUpdate.
pub async fn fetch_staple(
    cert: &X509,
    issuer: &X509,
    url: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<i64>), OcspError> {
    let body = request_der(cert, issuer)?;
    let der = http_post(url, &body, timeout).await?;
    // The issuer alone is the trust anchor here, even when it is an intermediate.
    let mut b = X509StoreBuilder::new()?;
    b.add_cert(issuer.clone())?;
    b.set_flags(openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN)?;
    let store = b.build();
    let (v, next) = parse_response(&der, cert, issuer, &store, std::slice::from_ref(issuer))?;
    if v != Verdict::Good {
        return Err(OcspError::OwnNotGood(v));
    }
    Ok((der, next))
}

/// Parses OpenSSL's printed time (`Dec  2 11:48:48 2026 GMT`) into unix seconds; rust-openssl
/// offers no arithmetic on GeneralizedTime.
fn printed_time_to_unix(s: &str) -> Option<i64> {
    let mut it = s.split_whitespace();
    let mon = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let day: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.split('.').next()?.parse().ok()?;
    let year: i64 = it.next()?.parse().ok()?;
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if mon <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mon + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_printed_times() {
        let cases = [
            ("Jan  1 00:00:00 1970 GMT", Some(0)),
            ("Dec  2 11:48:48 2026 GMT", Some(1_796_212_128)),
            ("Feb 29 12:00:00 2028 GMT", Some(1_835_438_400)),
            ("Foo 29 12:00:00 2028 GMT", None),
        ];
        for (text, want) in cases {
            assert_eq!(printed_time_to_unix(text), want, "{text}");
        }
    }

    #[tokio::test]
    async fn http_post_refuses_non_http_and_times_out() {
        let e = http_post("https://example.invalid/", b"x", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, OcspError::UrlRefused { .. }), "{e}");
        assert!(e.to_string().contains("only http://"), "{e}");
        // A listener that never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let e = http_post(&url, b"x", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, OcspError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("did not answer"), "{e}");
    }
}
