//! The gateway's own OCSP staple: the response served to clients (`ocsp_staple`), and the
//! refresher that keeps a fetched one fresh.

use openssl::x509::X509;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{info, warn};

/// The gateway's current OCSP staple (DER), shared with the TLS status callback.
#[derive(Debug, Default)]
pub struct Staple {
    /// (SHA-256 of the certificate it is for, DER response).
    der: RwLock<Option<(Vec<u8>, Vec<u8>)>>,
    /// Woken on reload so a refresh follows a certificate or setting change at once.
    pub wake: tokio::sync::Notify,
}

impl Staple {
    /// Replaces the staple with `der`, a response about the certificate whose SHA-256 is `fp`.
    pub fn set(&self, fp: Vec<u8>, der: Vec<u8>) {
        *crate::util::sync::write(&self.der) = Some((fp, der));
    }

    /// The staple for the certificate whose SHA-256 is `fp`; none for another certificate
    /// (after a rotation, no staple is better than a wrong one).
    pub fn get_for(&self, fp: &[u8]) -> Option<Vec<u8>> {
        let g = crate::util::sync::read(&self.der);
        g.as_ref().filter(|(f, _)| f == fp).map(|(_, d)| d.clone())
    }
}

/// What the refresher needs from the configuration in force.
pub struct StapleTarget {
    /// Whether `ocsp_staple = "fetch"`.
    pub fetch: bool,
    /// The gateway's certificate.
    pub cert: X509,
    /// Where its issuer may be: the rest of the certificate file, then `client_ca`.
    pub issuers: Vec<X509>,
    /// `ocsp_responder`, used when the certificate names no responder (AIA).
    pub responder: Option<String>,
    /// `ocsp_timeout`.
    pub timeout: Duration,
}

/// Keeps `staple` fresh while `ocsp_staple = "fetch"`: fetch, then again halfway to its
/// nextUpdate (at most hourly), retrying every minute after a failure, and at once when a
/// reload wakes it. `target` gives the configuration in force; the refresher ends when it
/// gives none (the gateway is gone).
pub(crate) async fn refresh(staple: Arc<Staple>, target: impl Fn() -> Option<StapleTarget>) {
    loop {
        let Some(t) = target() else { return };
        let wait = match t.fetch {
            true => refresh_once(&staple, &t).await,
            false => Duration::from_secs(3600),
        };
        drop(t);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = staple.wake.notified() => {}
        }
    }
}

/// One fetch; returns how long to wait before the next.
async fn refresh_once(staple: &Staple, t: &StapleTarget) -> Duration {
    let issuer = super::find_issuer(&t.cert, t.issuers.iter());
    let url = super::responder_of(&t.cert).or_else(|| t.responder.clone());
    let (Some(issuer), Some(url)) = (issuer, url) else {
        warn!("ocsp_staple = \"fetch\" needs the issuer (in cert or client_ca) and a responder (AIA or ocsp_responder)");
        return Duration::from_secs(300);
    };
    match super::fetch_staple(&t.cert, &issuer, &url, t.timeout).await {
        Ok((der, next)) => {
            staple.set(super::cert_fingerprint(&t.cert), der);
            let now = crate::util::time::unix_now();
            // nextUpdate comes from the responder: saturating, whatever it says.
            let half = next
                .map(|n| n.saturating_sub(now) / 2)
                .unwrap_or(3600)
                .clamp(60, 3600);
            info!(responder = %url, refresh_in_secs = half, "OCSP staple refreshed");
            Duration::from_secs(half as u64)
        }
        Err(e) => {
            warn!(error = %e, "cannot fetch an OCSP staple; retrying in 60s");
            Duration::from_secs(60)
        }
    }
}
