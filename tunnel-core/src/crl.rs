//! Certificate revocation lists: loading and verifying the configured CRLs, and the
//! revocation status of a client certificate.

use crate::config::ConfigError;
use crate::tls::unix_time;
use openssl::error::ErrorStack;
use openssl::x509::{CrlStatus, X509Crl, X509Ref, X509};
use std::path::Path;

/// The revocation status of one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlCheck {
    /// Not listed (or no CRL for its issuer).
    Good,
    /// Listed as revoked.
    Revoked,
    /// Not listed, but its issuer's CRL is past nextUpdate (unix time given).
    Expired(i64),
}

/// Revocation lists, each verified against the CA bundle when loaded.
#[derive(Default)]
pub struct CrlSet {
    crls: Vec<X509Crl>,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrlSet({} lists)", self.crls.len())
    }
}

impl CrlSet {
    /// Loads PEM CRLs from `paths`; each must be signed by one of `cas`.
    pub fn load(
        file: &Path,
        paths: &[std::path::PathBuf],
        cas: &[X509],
    ) -> Result<CrlSet, ConfigError> {
        let mut crls = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let key = format!("crl[{i}]");
            let pem = std::fs::read(p).map_err(|e| {
                ConfigError::new(file, &key, format!("cannot read {}: {e}", p.display()))
            })?;
            let list = parse_crls(&pem).map_err(|e| {
                ConfigError::new(file, &key, format!("{} is not a PEM CRL: {e}", p.display()))
            })?;
            if list.is_empty() {
                return Err(ConfigError::new(
                    file,
                    &key,
                    format!("{} holds no CRL", p.display()),
                ));
            }
            for crl in list {
                let signed = cas.iter().any(|ca| {
                    names_equal(ca.subject_name(), crl.issuer_name())
                        && ca
                            .public_key()
                            .ok()
                            .and_then(|k| crl.verify(&k).ok())
                            .unwrap_or(false)
                });
                if !signed {
                    return Err(ConfigError::new(
                        file,
                        &key,
                        format!(
                            "{}: CRL issued by {} is not signed by any CA in client_ca",
                            p.display(),
                            crate::identity::one_line_name(crl.issuer_name())
                        ),
                    ));
                }
                crls.push(crl);
            }
        }
        Ok(CrlSet { crls })
    }

    /// Whether `cert` is listed as revoked by a CRL of its issuer.
    pub fn is_revoked(&self, cert: &X509Ref) -> bool {
        self.check(cert, crate::metrics::unix_now()) == CrlCheck::Revoked
    }

    /// Revocation status of `cert` at unix time `now`. A certificate whose issuer has no CRL
    /// configured is [`CrlCheck::Good`].
    pub fn check(&self, cert: &X509Ref, now: i64) -> CrlCheck {
        if self.crls.is_empty() {
            return CrlCheck::Good;
        }
        let owned = cert.to_owned();
        let mut stale = None;
        for crl in self
            .crls
            .iter()
            .filter(|c| names_equal(c.issuer_name(), cert.issuer_name()))
        {
            if matches!(crl.get_by_cert(&owned), CrlStatus::Revoked(_)) {
                return CrlCheck::Revoked;
            }
            if let Some(next) = crl.next_update().and_then(unix_time) {
                if next < now {
                    stale = Some(next);
                }
            }
        }
        match stale {
            Some(t) => CrlCheck::Expired(t),
            None => CrlCheck::Good,
        }
    }

    /// The nextUpdate times (unix) of lists already past them.
    pub fn expired(&self, now: i64) -> Vec<i64> {
        self.crls
            .iter()
            .filter_map(|c| c.next_update().and_then(unix_time))
            .filter(|t| *t < now)
            .collect()
    }

    /// The earliest `nextUpdate` of the loaded lists, as unix time.
    pub fn earliest_next_update(&self) -> Option<i64> {
        self.crls
            .iter()
            .filter_map(|c| c.next_update().and_then(unix_time))
            .min()
    }

    /// Number of lists loaded.
    pub fn len(&self) -> usize {
        self.crls.len()
    }

    /// Whether no list is loaded.
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }
}

fn parse_crls(pem: &[u8]) -> Result<Vec<X509Crl>, ErrorStack> {
    // X509Crl has no stack parser: split the PEM blocks ourselves.
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let begin = "-----BEGIN X509 CRL-----";
    let end = "-----END X509 CRL-----";
    let mut rest = &text[..];
    while let Some(b) = rest.find(begin) {
        let after = &rest[b..];
        let Some(e) = after.find(end) else { break };
        let block = &after[..e + end.len()];
        out.push(X509Crl::from_pem(block.as_bytes())?);
        rest = &after[e + end.len()..];
    }
    if out.is_empty() {
        // Give OpenSSL's own error for a file with no PEM block.
        out.push(X509Crl::from_pem(pem)?);
    }
    Ok(out)
}

fn names_equal(a: &openssl::x509::X509NameRef, b: &openssl::x509::X509NameRef) -> bool {
    a.try_cmp(b)
        .map(|o| o == std::cmp::Ordering::Equal)
        .unwrap_or(false)
}
