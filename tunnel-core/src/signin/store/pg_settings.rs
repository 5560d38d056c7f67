//! PostgreSQL's connection settings, from the `store` URL and `password_file`: the URL is
//! checked (no password in it; `sslmode` as libpq reads it, `prefer`, `allow` or none refused
//! since they fall back to plain text silently), the password is read from its file (refused
//! when every user may read it), and OpenSSL's connector is set up to check the server's
//! chain (against `sslrootcert`, or the system's CAs) and host name as `sslmode` asks.
//! [`without_password`] gives the URL as messages show it.

use super::error::pg_detail as detail;
use super::StoreError;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use postgres_openssl::MakeTlsConnector;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::Config;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndHost,
}

/// `url` without a password (for messages); not a URL at all: a placeholder.
pub(super) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            if u.query_pairs().any(|(k, _)| k == "password") {
                let kept: Vec<(String, String)> = u
                    .query_pairs()
                    .filter(|(k, _)| k != "password")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
            u.to_string()
        }
        Err(_) => "(the `store` setting)".to_string(),
    }
}

/// The connection settings and TLS connector for `url`.
pub(super) fn settings(
    url: &str,
    password_file: Option<&Path>,
    name: &str,
) -> Result<(Config, MakeTlsConnector), StoreError> {
    let bad = |problem: String| StoreError::Config {
        store: name.to_string(),
        problem,
    };
    let mut u = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    if u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password") {
        return Err(bad(
            "the URL holds a password; remove it from the URL (it would show in process lists \
             and logs) and put it in a file named by password_file (mode 0600)"
                .into(),
        ));
    }
    let (mode, root) = take_tls_params(&mut u);
    let (ssl, verify) = ssl_mode(mode.as_deref(), root.is_some()).map_err(bad)?;
    let mut config: Config = u
        .as_str()
        .parse()
        .map_err(|e: tokio_postgres::Error| bad(detail(&e)))?;
    config.ssl_mode(ssl);
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("tunnel-signer");
    if let Some(path) = password_file {
        config.password(read_password(path).map_err(bad)?);
    }
    let tls = connector(verify, root.as_deref())
        .map_err(|e| bad(format!("cannot set up TLS (sslrootcert): {e}")))?;
    Ok((config, tls))
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (tokio-postgres does not read
/// them as libpq does): the mode as written, and the CA file.
fn take_tls_params(u: &mut url::Url) -> (Option<String>, Option<PathBuf>) {
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for (k, v) in u.query_pairs() {
        match &*k {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(PathBuf::from(&*v)),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    (mode, root)
}

/// What `sslmode` (as libpq reads it, with or without an `sslrootcert`) asks of the
/// connection and of the server's certificate; the modes that fall back to plain text
/// silently, unknown ones and a missing one are refused, with how to write it.
fn ssl_mode(mode: Option<&str>, has_root: bool) -> Result<(SslMode, Verify), String> {
    Ok(match mode {
        Some("disable") => (SslMode::Disable, Verify::Nothing),
        Some("require") if has_root => (SslMode::Require, Verify::Chain),
        Some("require") => (SslMode::Require, Verify::Nothing),
        Some("verify-ca") => (SslMode::Require, Verify::Chain),
        Some("verify-full") => (SslMode::Require, Verify::ChainAndHost),
        Some(m @ ("prefer" | "allow")) => {
            return Err(format!(
                "sslmode={m} falls back to plain text without a word; write \
                 sslmode=verify-full (or require, verify-ca; disable for a local socket)"
            ))
        }
        Some(m) => {
            return Err(format!(
                "sslmode={m:?} is unknown; write verify-full, verify-ca, require or disable"
            ))
        }
        None => {
            return Err(
                "the URL has no sslmode; add ?sslmode=verify-full (or require, verify-ca; \
                 disable for a local socket)"
                    .into(),
            )
        }
    })
}

/// The password: the file's first line. Refused when others may read the file.
fn read_password(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("password_file {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(fail)?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "password_file {}: readable or writable by every user; chmod o-rwx it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(fail)?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!(
            "password_file {}: empty; write the database user's password on its first line",
            path.display()
        ));
    }
    Ok(line.to_string())
}

fn connector(
    verify: Verify,
    root: Option<&Path>,
) -> Result<MakeTlsConnector, openssl::error::ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    if let Some(root) = root {
        b.set_ca_file(root)?;
    }
    if verify == Verify::Nothing {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut tls = MakeTlsConnector::new(b.build());
    if verify != Verify::ChainAndHost {
        tls.set_callback(|c, _| {
            c.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(tls)
}
