//! Certificate revocation lists: loading and validating the configured CRLs, and the
//! revocation status of a verified client chain.
//!
//! Checking fails closed: with `crl` set, every certificate of the chain (except the trust
//! anchor itself) needs a CRL from its issuer ([`CrlCoverage::Chain`], as OpenSSL's
//! CRL_CHECK_ALL), unless `crl_check` opts out. A CRL is matched to an issuer by name *and*
//! by the issuer's key: it counts only once its signature verifies with the public key of
//! the issuing certificate found in the verified chain, so CRLs of intermediate CAs (which
//! are not in `client_ca`) are accepted, and two CAs sharing a name (key rollover) never
//! stand in for each other.
//!
//! A list re-read from the same file (reload, SIGHUP) replaces the one in force only when it
//! is newer in its CA's sequence ([`rollback`]): an older list written back keeps the newer.

use crate::authz::identity::one_line_name;
use crate::config::{ConfigError, CrlCoverage};
use crate::util::time::unix_time;
use openssl::error::ErrorStack;
use openssl::x509::{CrlStatus, X509Crl, X509Ref, X509};
use rollback::{Position, Verdict};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(crate) mod rollback;
mod validate;

/// The revocation status of a certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlCheck {
    /// No certificate is listed, and every CRL required is there and current.
    Good,
    /// A certificate of the chain is listed as revoked.
    Revoked,
    /// Not listed, but a CRL used is past its nextUpdate (unix time given).
    Expired(i64),
    /// No CRL of this CA (one-line name) is configured, and `crl_check` requires one.
    Missing(String),
}

/// One loaded CRL and the issuer keys (DER public keys) its signature was checked against.
struct Loaded {
    crl: X509Crl,
    aki: Option<Vec<u8>>,
    verified: Mutex<Vec<(Vec<u8>, bool)>>,
    /// The file it was read from: the next list of its CA from there must be newer.
    source: PathBuf,
}

/// Revocation lists, validated when loaded; each applies to the CA whose key signed it.
#[derive(Default)]
pub struct CrlSet {
    crls: Vec<Arc<Loaded>>,
    coverage: CrlCoverage,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrlSet({} lists, {:?})", self.crls.len(), self.coverage)
    }
}

impl CrlSet {
    /// Loads PEM CRLs from `paths`. A CRL naming a CA of `cas` as issuer must be signed by
    /// it; any other CRL is an intermediate CA's, verified against the intermediate found in
    /// each client's verified chain. Every CRL is validated (see [`validate`]). With the
    /// `previous` set in force (a reload), a list older than the one it held from the same
    /// file for the same CA is not taken: the one in force stays (see [`rollback`]).
    pub fn load(
        file: &Path,
        paths: &[PathBuf],
        cas: &[X509],
        coverage: CrlCoverage,
        previous: Option<&CrlSet>,
    ) -> Result<CrlSet, ConfigError> {
        let mut crls = Vec::new();
        let now = crate::util::time::unix_now();
        for (i, p) in paths.iter().enumerate() {
            let key = format!("crl[{i}]");
            let fail = |msg: String| ConfigError::new(file, &key, msg);
            let pem =
                std::fs::read(p).map_err(|e| fail(format!("cannot read {}: {e}", p.display())))?;
            let list = parse_crls(&pem)
                .map_err(|e| fail(format!("{} is not a PEM CRL: {e}", p.display())))?;
            if list.is_empty() {
                return Err(fail(format!("{} holds no CRL", p.display())));
            }
            for crl in list {
                let aki =
                    validate::crl(&crl, now).map_err(|e| fail(format!("{}: {e}", p.display())))?;
                let verified = validate::against_cas(&crl, cas)
                    .map_err(|e| fail(format!("{}: {e}", p.display())))?;
                let offered = Loaded {
                    crl,
                    aki,
                    verified: Mutex::new(verified),
                    source: p.clone(),
                };
                crls.push(in_force(previous, offered, cas, now));
            }
        }
        Ok(CrlSet { crls, coverage })
    }

    /// The list this set loaded from `offered`'s file for `offered`'s CA: same issuer name,
    /// same authority key identifier, and (for a CA of client_ca) the same verifying key.
    /// `None` when there is none, or several (unnumbered twins cannot be told apart).
    fn same_series(&self, offered: &Loaded) -> Option<&Arc<Loaded>> {
        let keys = |l: &Loaded| -> Vec<Vec<u8>> {
            let seen = crate::util::sync::lock(&l.verified);
            seen.iter()
                .filter(|(_, ok)| *ok)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let offered_keys = keys(offered);
        let mut found = self.crls.iter().filter(|l| {
            let prev_keys = keys(l);
            l.source == offered.source
                && l.aki == offered.aki
                && names_equal(l.crl.issuer_name(), offered.crl.issuer_name())
                && (prev_keys.is_empty()
                    || offered_keys.is_empty()
                    || prev_keys.iter().any(|k| offered_keys.contains(k)))
        });
        match (found.next(), found.next()) {
            (Some(l), None) => Some(l),
            _ => None,
        }
    }

    /// The CRLs that `issuer` (a CA certificate from a verified chain) signed.
    fn of_issuer<'a>(&'a self, issuer: &X509Ref) -> Vec<&'a X509Crl> {
        let Ok(key) = issuer.public_key() else {
            return Vec::new();
        };
        let key_der = key.public_key_to_der().unwrap_or_default();
        if !validate::may_sign_crls(issuer) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for l in &self.crls {
            if !names_equal(l.crl.issuer_name(), issuer.subject_name())
                || !validate::aki_matches(l.aki.as_deref(), issuer)
            {
                continue;
            }
            let mut seen = crate::util::sync::lock(&l.verified);
            let ok = match seen.iter().find(|(k, _)| *k == key_der) {
                Some((_, ok)) => *ok,
                None => {
                    let ok = l.crl.verify(&key).unwrap_or(false);
                    seen.push((key_der.clone(), ok));
                    ok
                }
            };
            if ok {
                out.push(&l.crl);
            }
        }
        out
    }

    /// Revocation status of a verified `chain` (leaf first, trust anchor last) at unix time
    /// `now`. Without any CRL configured, every chain is [`CrlCheck::Good`].
    pub fn check_chain(&self, chain: &[X509], now: i64) -> CrlCheck {
        if self.crls.is_empty() {
            return CrlCheck::Good;
        }
        let (mut missing, mut stale) = (None, None);
        for (depth, pair) in chain.windows(2).enumerate() {
            let (cert, issuer) = (&pair[0], &pair[1]);
            let crls = self.of_issuer(issuer);
            if crls.is_empty() {
                let required = match self.coverage {
                    CrlCoverage::Chain => true,
                    CrlCoverage::Leaf => depth == 0,
                    CrlCoverage::Available => false,
                };
                if required && missing.is_none() {
                    missing = Some(one_line_name(issuer.subject_name()));
                }
                continue;
            }
            for crl in crls {
                if matches!(crl.get_by_cert(cert), CrlStatus::Revoked(_)) {
                    return CrlCheck::Revoked;
                }
                if let Some(next) = crl.next_update().and_then(unix_time) {
                    if next < now {
                        stale = Some(next);
                    }
                }
            }
        }
        match (missing, stale) {
            (Some(ca), _) => CrlCheck::Missing(ca),
            (None, Some(t)) => CrlCheck::Expired(t),
            (None, None) => CrlCheck::Good,
        }
    }

    /// Whether a certificate of the verified `chain` is listed as revoked.
    pub fn is_revoked(&self, chain: &[X509]) -> bool {
        self.check_chain(chain, crate::util::time::unix_now()) == CrlCheck::Revoked
    }

    /// The CAs of `cas` that signed none of the loaded CRLs (one-line names), when any CRL
    /// is configured: under `crl_check = "chain"` their clients are refused.
    pub fn cas_without_crl(&self, cas: &[X509]) -> Vec<String> {
        if self.crls.is_empty() {
            return Vec::new();
        }
        cas.iter()
            .filter(|ca| self.of_issuer(ca).is_empty())
            .map(|ca| one_line_name(ca.subject_name()))
            .collect()
    }

    /// Logs a warning naming each CA of `cas` without a CRL (at start, on reload, and with
    /// the periodic expiry warnings).
    pub fn warn_missing(&self, cas: &[X509]) {
        for ca in self.cas_without_crl(cas) {
            tracing::warn!(ca = %ca, crl_check = ?self.coverage, "no CRL for this CA of client_ca");
        }
    }

    /// Issuers (one-line names) of the CRLs no CA of `cas` signed: intermediate CAs' lists,
    /// verified against each client's chain.
    pub fn intermediate_issuers(&self, cas: &[X509]) -> Vec<String> {
        self.crls
            .iter()
            .filter(|l| {
                !cas.iter()
                    .any(|ca| names_equal(ca.subject_name(), l.crl.issuer_name()))
            })
            .map(|l| one_line_name(l.crl.issuer_name()))
            .collect()
    }

    /// Which certificates need a CRL of their issuer.
    pub fn coverage(&self) -> CrlCoverage {
        self.coverage
    }

    /// The nextUpdate times (unix) of lists already past them.
    pub fn expired(&self, now: i64) -> Vec<i64> {
        self.crls
            .iter()
            .filter_map(|c| c.crl.next_update().and_then(unix_time))
            .filter(|t| *t < now)
            .collect()
    }

    /// The earliest `nextUpdate` of the loaded lists, as unix time.
    pub fn earliest_next_update(&self) -> Option<i64> {
        self.crls
            .iter()
            .filter_map(|c| c.crl.next_update().and_then(unix_time))
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

/// The list to use for `offered`: the one `previous` loaded from the same file for the same
/// CA when `offered` may not replace it (older, same number, or expired; logged), else
/// `offered`. A kept list must still hold under the new `cas` (a replaced CA starts anew).
fn in_force(previous: Option<&CrlSet>, offered: Loaded, cas: &[X509], now: i64) -> Arc<Loaded> {
    let Some(current) = previous.and_then(|p| p.same_series(&offered)) else {
        return Arc::new(offered);
    };
    if validate::against_cas(&current.crl, cas).is_err() {
        return Arc::new(offered);
    }
    let (cur, off) = (Position::of(&current.crl), Position::of(&offered.crl));
    match rollback::judge(&cur, &off, now) {
        Verdict::Keep(why) => {
            let source = offered.source.display().to_string();
            rollback::warn_refused(&source, &cur, &off, why);
            current.clone()
        }
        Verdict::Same | Verdict::Replace => Arc::new(offered),
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
        // The whole END line goes to OpenSSL, which refuses anything but white space after
        // the marker: cutting at the marker would accept a file OpenSSL does not.
        let line_end = after[e..].find('\n').map_or(after.len(), |i| e + i + 1);
        let block = &after[..line_end];
        out.push(X509Crl::from_pem(block.as_bytes())?);
        rest = &after[line_end..];
    }
    if out.is_empty() {
        // Give OpenSSL's own error for a file with no PEM block.
        out.push(X509Crl::from_pem(pem)?);
    }
    Ok(out)
}

pub(crate) fn names_equal(a: &openssl::x509::X509NameRef, b: &openssl::x509::X509NameRef) -> bool {
    a.try_cmp(b)
        .map(|o| o == std::cmp::Ordering::Equal)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
