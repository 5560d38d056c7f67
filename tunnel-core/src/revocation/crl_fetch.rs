//! `crl` entries that are `http://` or `https://` URLs (a CA's CRL distribution point): the
//! gateway fetches each at start, on every reload and again before its nextUpdate, and keeps
//! the last good copy in `state_dir`, so that a restart without the network still enforces
//! it. The copy is an ordinary CRL file for the rest of the gateway: loaded, verified and
//! watched like a configured path, so a fresh copy written here triggers a reload. A copy
//! that goes stale because the URL is unreachable follows `crl_expired`.
//!
//! A fetched CRL replaces the copy only when it is newer in its CA's sequence (see
//! [`crate::revocation::crl::rollback`]): a distribution point serving an older list, still valid and
//! validly signed (a replay, a stale mirror), leaves the copy as it is, also after a restart.
//!
//! Fetches go through the crate's one HTTP client ([`crate::http::client`]); HTTPS verifies
//! the server against the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` override
//! it) and the URL's host name.

use crate::config::{ConfigError, ServerConfig};
use crate::http::client::{Client, ClientLimits, HttpError};
use crate::http::{Url, UrlError};
use crate::revocation::crl::rollback::{self, Position, Verdict};
use openssl::x509::{X509Crl, X509};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Deadline of one fetch.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest CRL accepted.
const MAX_BODY: usize = 32 << 20;
/// Retry period after a failed fetch.
const RETRY: Duration = Duration::from_secs(60);
/// Longest time between two fetches of one URL.
const MAX_PERIOD: Duration = Duration::from_secs(6 * 3600);

/// Why a CRL URL could not be fetched into its copy.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL fails the crate's URL rules.
    #[error("CRL URL \"{}\" refused: {}", .0.url, .0.why)]
    BadUrl(UrlError),
    /// The distribution point cannot be reached, or answered with broken HTTP.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The distribution point answered another status than 200.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// What the distribution point served is not a CRL of a client CA.
    #[error("{url}: {why}")]
    Refused {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: CrlRefused,
    },
    /// The CRL cannot be turned into PEM for the copy.
    #[error("{url}: {source}")]
    Encode {
        /// The URL.
        url: String,
        /// The OpenSSL error.
        source: openssl::error::ErrorStack,
    },
    /// The copy cannot be written.
    #[error("{}: {source}", copy.display())]
    Store {
        /// The copy in `state_dir`.
        copy: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `client_ca`, which checks the CRLs, cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A URL failed at start or reload and no earlier copy exists to fall back on.
    #[error("{}: crl: {url}: cannot fetch it and no earlier copy is in state_dir: {source}; make the URL reachable (or copy the CRL to {})", file.display(), copy.display())]
    NoCopy {
        /// The configuration file.
        file: PathBuf,
        /// The URL.
        url: String,
        /// The copy that does not exist.
        copy: PathBuf,
        /// Why the fetch failed.
        source: Box<FetchError>,
    },
}

/// Why a fetched body is not accepted as a CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CrlRefused {
    /// Neither DER nor PEM of a CRL.
    #[error("not a CRL (DER or PEM)")]
    NotCrl,
    /// No CA of `client_ca` signed it.
    #[error("not signed by a CA of client_ca")]
    NotSigned,
}

/// Whether a `crl` entry is a URL rather than a path.
pub(crate) fn is_url(entry: &str) -> bool {
    let l = entry.trim().to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// A CRL URL, checked: [`crate::http::Url`]'s rules, the error naming it a CRL URL.
fn parse_url(url: &str) -> Result<Url, FetchError> {
    Url::parse(url).map_err(FetchError::BadUrl)
}

/// Checks a `crl` URL entry (for config validation).
pub(crate) fn check_url(url: &str) -> Result<(), FetchError> {
    parse_url(url).map(|_| ())
}

/// The file in `state_dir` that holds the last good copy of `url`.
pub(crate) fn cache_path(state_dir: &Path, url: &str) -> PathBuf {
    let d = openssl::sha::sha256(url.as_bytes());
    let name: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    state_dir.join(format!("crl-{name}.pem"))
}

/// GETs `url` through the crate's one HTTP client and returns the body of a 200 answer.
pub(crate) async fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    parse_url(url)?;
    let limits = ClientLimits {
        timeout,
        max_body: MAX_BODY,
    };
    let client = Client::for_signed_objects(limits)?;
    let resp = client.get_as(url, "application/pkix-crl").await?;
    if resp.status != 200 {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: resp.status,
        });
    }
    Ok(resp.body)
}

/// The CRL in `body` (DER, as distribution points serve it, or PEM), after checking that a
/// CA of `cas` signed it.
fn validate(body: &[u8], cas: &[X509]) -> Result<X509Crl, CrlRefused> {
    let crl = X509Crl::from_der(body)
        .or_else(|_| X509Crl::from_pem(body))
        .map_err(|_| CrlRefused::NotCrl)?;
    let signed = cas.iter().any(|ca| {
        ca.subject_name()
            .try_cmp(crl.issuer_name())
            .map(|o| o.is_eq())
            .unwrap_or(false)
            && ca
                .public_key()
                .ok()
                .and_then(|k| crl.verify(&k).ok())
                .unwrap_or(false)
    });
    if !signed {
        return Err(CrlRefused::NotSigned);
    }
    Ok(crl)
}

/// Whether a CA of `cas` signed both `a` and `b` (with the same key).
fn same_signer(a: &X509Crl, b: &X509Crl, cas: &[X509]) -> bool {
    cas.iter().any(|ca| {
        let signed = |c: &X509Crl| {
            crate::revocation::crl::names_equal(ca.subject_name(), c.issuer_name())
                && ca
                    .public_key()
                    .ok()
                    .and_then(|k| c.verify(&k).ok())
                    .unwrap_or(false)
        };
        signed(a) && signed(b)
    })
}

/// When the copy in `cache` is a list of the same CA that `offered` may not replace (older,
/// same number, or `offered` expired; logged): the copy's nextUpdate, to keep it.
fn keep_copy(
    url: &str,
    cache: &Path,
    offered: &X509Crl,
    cas: &[X509],
    now: i64,
) -> Option<Option<i64>> {
    let current = X509Crl::from_pem(&std::fs::read(cache).ok()?).ok()?;
    // A copy of another CA (client_ca changed) or one no CA signed says nothing.
    if !same_signer(&current, offered, cas) {
        return None;
    }
    let (cur, off) = (Position::of(&current), Position::of(offered));
    match rollback::judge(&cur, &off, now) {
        Verdict::Keep(why) => {
            rollback::warn_refused(url, &cur, &off, why);
            Some(cur.next_update)
        }
        Verdict::Same | Verdict::Replace => None,
    }
}

/// Fetches `url` into `cache` when the copy there differs and is older; returns the
/// nextUpdate of the CRL kept.
pub(crate) async fn refresh(
    url: &str,
    cache: &Path,
    cas: &[X509],
) -> Result<Option<i64>, FetchError> {
    let body = get(url, FETCH_TIMEOUT).await?;
    let crl = validate(&body, cas).map_err(|why| FetchError::Refused {
        url: url.to_string(),
        why,
    })?;
    if let Some(next) = keep_copy(url, cache, &crl, cas, crate::util::time::unix_now()) {
        return Ok(next);
    }
    let next = crl.next_update().and_then(crate::util::time::unix_time);
    let pem = crl.to_pem().map_err(|source| FetchError::Encode {
        url: url.to_string(),
        source,
    })?;
    if std::fs::read(cache).ok().as_deref() != Some(&pem[..]) {
        store(cache, &pem).map_err(|source| FetchError::Store {
            copy: cache.to_path_buf(),
            source,
        })?;
        info!(url, copy = %cache.display(), "CRL fetched and stored");
    }
    Ok(next)
}

/// Replaces `cache` with `pem` through a temporary file in the same directory, created
/// exclusively under a random name (O_EXCL: a file or symlink planted in `state_dir` is
/// never written through), then renamed over the copy so readers never see half a CRL.
fn store(cache: &Path, pem: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match cache.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".crl-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(pem)?;
    // A CRL is public, and the copy written as root at start is read again after dropping
    // privileges: 0644, as the copy was before (tempfile creates 0600).
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(cache).map_err(|e| e.error)?;
    Ok(())
}

/// Fetches every URL of `cfg` (at start and on reload). A URL that cannot be fetched keeps
/// its last good copy (logged); with no copy at all it is an error.
pub(crate) async fn prime(cfg: &ServerConfig) -> Result<(), FetchError> {
    if cfg.crl_urls.is_empty() {
        return Ok(());
    }
    let cas = crate::tls::read_certs(&cfg.file, "client_ca", &cfg.client_ca)?;
    for (url, cache) in &cfg.crl_urls {
        if let Err(e) = refresh(url, cache, &cas).await {
            if cache.exists() {
                warn!(url = %url, error = %e, copy = %cache.display(), "cannot fetch the CRL; using the last good copy");
            } else {
                return Err(FetchError::NoCopy {
                    file: cfg.file.clone(),
                    url: url.clone(),
                    copy: cache.clone(),
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(())
}

/// When to fetch again after a fetch that said nextUpdate `next` (None: failed).
pub(crate) fn next_fetch(next: Option<Result<Option<i64>, ()>>, now: i64) -> Duration {
    match next {
        Some(Ok(Some(t))) if t > now => {
            Duration::from_secs(((t - now) / 2) as u64).clamp(RETRY, MAX_PERIOD)
        }
        Some(Ok(_)) => MAX_PERIOD,
        _ => RETRY,
    }
}

/// Keeps every CRL URL of the configuration in force fresh: fetched again halfway to its
/// nextUpdate (between a minute and six hours), every minute after a failure, and at least
/// every `crl_refresh` when set. A fetched copy that differs is written to `state_dir`,
/// which the file watcher turns into a reload (and, with `revoke_established`, the reload
/// closes open tunnels of certificates the new list revokes). Ends when `current` returns
/// `None` (the gateway is gone).
pub(crate) async fn keep_fresh<F>(current: F)
where
    F: Fn() -> Option<std::sync::Arc<ServerConfig>>,
{
    let mut wait = current()
        .and_then(|c| c.crl_refresh)
        .map_or(RETRY, |r| r.min(RETRY));
    loop {
        tokio::time::sleep(wait).await;
        let Some(cfg) = current() else { return };
        if cfg.crl_urls.is_empty() {
            wait = MAX_PERIOD.min(Duration::from_secs(300));
            continue;
        }
        let cas =
            crate::tls::read_certs(&cfg.file, "client_ca", &cfg.client_ca).unwrap_or_default();
        let now = crate::util::time::unix_now();
        wait = MAX_PERIOD;
        for (url, cache) in &cfg.crl_urls {
            let r = refresh(url, cache, &cas).await;
            if let Err(e) = &r {
                warn!(url = %url, error = %e, "cannot refresh the CRL; keeping the last good copy (crl_expired applies once it is stale)");
            }
            wait = wait.min(next_fetch(Some(r.map_err(|_| ())), now));
        }
        if let Some(most) = cfg.crl_refresh {
            wait = wait.min(most);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_refresh_times() {
        let u = parse_url("https://crl.example.org/ca.crl").unwrap();
        assert!(u.tls);
        assert_eq!(u.authority(), "crl.example.org:443");
        assert_eq!(u.path, "/ca.crl");
        let u = parse_url("http://127.0.0.1:8080/a/b.crl").unwrap();
        assert!(!u.tls);
        assert_eq!(u.authority(), "127.0.0.1:8080");
        let u = parse_url("https://[::1]:8443/x").unwrap();
        assert_eq!(u.authority(), "[::1]:8443");
        for bad in [
            "ftp://x/y",
            "https://host/a\r\nX: y",
            "http://user@host/",
            "https://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
        assert!(is_url(" HTTPS://x/y") && !is_url("/etc/tunnel/crl.pem"));
        let a = cache_path(Path::new("/s"), "http://a/crl");
        assert_ne!(a, cache_path(Path::new("/s"), "http://b/crl"));
        assert!(a.starts_with("/s"));
        let now = 1_000_000;
        assert_eq!(
            next_fetch(Some(Ok(Some(now + 7200))), now),
            Duration::from_secs(3600)
        );
        assert_eq!(next_fetch(Some(Ok(Some(now + 10))), now), RETRY);
        assert_eq!(
            next_fetch(Some(Ok(Some(now + 10 * 86_400))), now),
            MAX_PERIOD
        );
        assert_eq!(next_fetch(Some(Err(())), now), RETRY);
    }

    #[test]
    fn only_a_crl_signed_by_a_client_ca_is_kept() {
        let ca = crate::pki::new_ca("CRL CA", 1).unwrap();
        let other = crate::pki::new_ca("Other", 1).unwrap();
        let crl = crate::pki::make_crl(&ca, &[], -1, 7).unwrap();
        let der = crl.to_der().unwrap();
        let got = validate(&der, std::slice::from_ref(&ca.cert)).unwrap();
        assert_eq!(got.to_der().unwrap(), der);
        assert!(validate(&crl.to_pem().unwrap(), std::slice::from_ref(&ca.cert)).is_ok());
        assert_eq!(
            validate(&der, std::slice::from_ref(&other.cert)).err(),
            Some(CrlRefused::NotSigned)
        );
        assert_eq!(
            validate(b"<html>", std::slice::from_ref(&ca.cert)).err(),
            Some(CrlRefused::NotCrl)
        );
    }

    #[test]
    fn an_older_list_does_not_replace_the_copy() {
        let ca = crate::pki::new_ca("CRL CA", 1).unwrap();
        let other = crate::pki::new_ca("Other CA", 1).unwrap();
        let cas = [ca.cert.clone(), other.cert.clone()];
        let crl = || crate::pki::make_crl(&ca, &[], -1, 7).unwrap();
        // make_crl numbers its lists by the millisecond: issue until the number moves on.
        let older = crl();
        let mut newer = crl();
        while newer.to_der().unwrap()[..] == older.to_der().unwrap()[..]
            || Position::of(&newer).number == Position::of(&older).number
        {
            newer = crl();
        }
        let expired = crate::pki::make_crl(&ca, &[], -10, 1).unwrap();
        let others = crate::pki::make_crl(&other, &[], -1, 7).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("copy.pem");
        let now = crate::util::time::unix_now();
        let next = |c: &X509Crl| c.next_update().and_then(crate::util::time::unix_time);
        let cases: Vec<(&str, &X509Crl, &X509Crl, Option<Option<i64>>)> = vec![
            ("older offered", &newer, &older, Some(next(&newer))),
            ("newer offered", &older, &newer, None),
            ("same offered", &newer, &newer, None),
            ("expired offered", &older, &expired, Some(next(&older))),
            ("another CA's copy", &others, &older, None),
        ];
        for (what, copy, offered, want) in cases {
            std::fs::write(&cache, copy.to_pem().unwrap()).unwrap();
            assert_eq!(
                keep_copy("http://x/", &cache, offered, &cas, now),
                want,
                "{what}"
            );
        }
        std::fs::remove_file(&cache).unwrap();
        assert_eq!(
            keep_copy("http://x/", &cache, &older, &cas, now),
            None,
            "no copy"
        );
    }

    #[test]
    fn the_copy_is_written_without_following_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_path(dir.path(), "http://ca.example/ca.crl");
        // A file the gateway may write (as root at start) but must never touch here.
        let target = dir.path().join("victim");
        std::fs::write(&target, b"precious").unwrap();
        // The name the copy used to be written through, planted as a symlink.
        let planted = cache.with_extension("tmp");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        store(&cache, b"the CRL").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert_eq!(std::fs::read(&cache).unwrap(), b"the CRL");
        let meta = std::fs::symlink_metadata(&cache).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the copy is a {:?}",
            meta.file_type()
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    }
}
