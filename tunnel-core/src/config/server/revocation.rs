//! The gateway's revocation keys: `crl` (files or URLs), `ocsp_responder` with
//! `ocsp_responder_allow`, and `ocsp_staple`.

use super::StapleSource;
use crate::config::{check_readable, resolve_path, ConfigError, OneOrMany};
use std::path::{Path, PathBuf};

/// `crl`: files, or `https://` URLs fetched into `state_dir` (each URL's last good copy is
/// the file loaded); returns every file and the (URL, copy) pairs.
#[allow(clippy::type_complexity)]
pub(super) fn crl_sources(
    file: &Path,
    entries: Vec<String>,
    state_dir: Option<&Path>,
) -> Result<(Vec<PathBuf>, Vec<(String, PathBuf)>), ConfigError> {
    let mut crl = Vec::new();
    let mut crl_urls = Vec::new();
    for (i, c) in entries.into_iter().enumerate() {
        let key = format!("crl[{i}]");
        if crate::revocation::crl_fetch::is_url(&c) {
            let url = c.trim().to_string();
            crate::revocation::crl_fetch::check_url(&url)
                .map_err(|e| ConfigError::new(file, &key, e.to_string()))?;
            let dir = state_dir.ok_or_else(|| {
                ConfigError::new(file, &key, "a URL needs state_dir, the directory where the last good copy is kept (e.g. state_dir = \"/var/lib/tunnel\")")
            })?;
            let copy = crate::revocation::crl_fetch::cache_path(dir, &url);
            crl.push(copy.clone());
            crl_urls.push((url, copy));
            continue;
        }
        let p = resolve_path(file, &c);
        check_readable(file, &key, &p)?;
        crl.push(p);
    }
    Ok((crl, crl_urls))
}

/// `ocsp_staple`: `"fetch"` or a DER file.
pub(super) fn staple_source(
    file: &Path,
    value: Option<&str>,
) -> Result<Option<StapleSource>, ConfigError> {
    Ok(match value {
        None => None,
        Some("fetch") => Some(StapleSource::Fetch),
        Some(p) => {
            let p = resolve_path(file, p);
            check_readable(file, "ocsp_staple", &p)?;
            Some(StapleSource::File(p))
        }
    })
}

/// `ocsp_responder` (an http:// URL) and `ocsp_responder_allow` (host names or IPs, lower
/// case); returns the allowed hosts.
pub(super) fn ocsp_responders(
    file: &Path,
    responder: Option<&str>,
    allow: OneOrMany,
) -> Result<Vec<String>, ConfigError> {
    let err = |key: &str, msg: String| ConfigError::new(file, key, msg);
    if let Some(u) = responder {
        if !u.starts_with("http://") {
            return Err(err(
                "ocsp_responder",
                format!("{u:?} must be an http:// URL"),
            ));
        }
        crate::revocation::ocsp::url::parse(u).map_err(|e| err("ocsp_responder", e.to_string()))?;
    }
    let hosts: Vec<String> = allow
        .into_vec()
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        if crate::revocation::ocsp::url::parse(&format!("http://{h}/"))
            .map(|u| u.host != *h)
            .unwrap_or(true)
        {
            return Err(err(
                &format!("ocsp_responder_allow[{i}]"),
                format!("{h:?} is not a host name or IP address, e.g. \"ocsp.example.org\""),
            ));
        }
    }
    Ok(hosts)
}
