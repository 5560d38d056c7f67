//! The `[tls]` table of both agents: TLS 1.3 cipher suites, TLS 1.2
//! ciphers, key exchange groups, signature algorithms and session resumption.
//!
//! Every name is tried on its own against the linked OpenSSL when the configuration is read,
//! so that `check` (and a reload) names exactly the values this build does not support
//! instead of OpenSSL's silent "ignore unknown names" or an unspecific "no cipher match".
//! Unset knobs keep the defaults the agents had before (OpenSSL's and Mozilla's intermediate
//! profile on the gateway). Applying them to a context is [`crate::tls::settings`].

use super::ConfigError;
use openssl::ssl::{SslContext, SslContextBuilder, SslMethod};
use serde::Deserialize;
use std::path::Path;

/// The `[tls]` table as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    tls13_ciphersuites: Option<Vec<String>>,
    tls12_ciphers: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    signature_algorithms: Option<Vec<String>>,
    session_resumption: Option<bool>,
}

/// The validated TLS policy of one agent (empty lists: OpenSSL's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    /// TLS 1.3 cipher suites, in preference order.
    pub tls13_ciphersuites: Vec<String>,
    /// TLS 1.2 cipher list entries (OpenSSL names or `!`/`+`/`-` expressions).
    pub tls12_ciphers: Vec<String>,
    /// Key exchange groups, in preference order (the first ones get a key share).
    pub groups: Vec<String>,
    /// Signature algorithms offered and accepted.
    pub signature_algorithms: Vec<String>,
    /// Whether sessions are resumed (default true).
    pub session_resumption: bool,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            tls13_ciphersuites: Vec::new(),
            tls12_ciphers: Vec::new(),
            groups: Vec::new(),
            signature_algorithms: Vec::new(),
            session_resumption: true,
        }
    }
}

/// Key exchange groups that need OpenSSL 3.5 or later (ML-KEM, FIPS 203).
fn is_post_quantum(group: &str) -> bool {
    group.to_ascii_uppercase().contains("MLKEM")
}

/// Names go to OpenSSL inside a `:`-separated C string: keep to the characters its names use.
fn plain_name(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c) || extra.contains(c))
}

impl RawTls {
    /// Checks every name against the linked OpenSSL; errors name the file, the key, the value
    /// and the fix.
    pub(crate) fn validate(self, file: &Path) -> Result<TlsPolicy, ConfigError> {
        let mut scratch = SslContext::builder(SslMethod::tls())
            .map_err(|e| ConfigError::new(file, "tls", format!("OpenSSL: {e}")))?;
        let p = TlsPolicy {
            tls13_ciphersuites: check_each(
                file,
                "tls.tls13_ciphersuites",
                self.tls13_ciphersuites,
                "",
                |n| {
                    openssl::ssl::cipher_name(n) == n
                        && scratch_try(&mut scratch, |b| b.set_ciphersuites(n))
                },
                "use names such as \"TLS_AES_256_GCM_SHA384\", \"TLS_CHACHA20_POLY1305_SHA256\" (`openssl ciphers -s -tls1_3`)",
            )?,
            tls12_ciphers: check_each(
                file,
                "tls.tls12_ciphers",
                self.tls12_ciphers,
                "!+@=",
                // Operators (`!aNULL`, `-RSA`, `@SECLEVEL=2`) match nothing on their own.
                |n| n.starts_with(['!', '-', '+', '@']) || scratch_try(&mut scratch, |b| b.set_cipher_list(n)),
                "use OpenSSL cipher names such as \"ECDHE-ECDSA-AES256-GCM-SHA384\" (`openssl ciphers -tls1_2`)",
            )?,
            groups: check_each(
                file,
                "tls.groups",
                self.groups,
                "",
                |n| scratch_try(&mut scratch, |b| b.set_groups_list(n)),
                "use groups such as \"X25519\", \"P-256\", \"P-384\"",
            )?,
            signature_algorithms: check_each(
                file,
                "tls.signature_algorithms",
                self.signature_algorithms,
                "+",
                |n| scratch_try(&mut scratch, |b| b.set_sigalgs_list(n)),
                "use names such as \"ecdsa_secp256r1_sha256\", \"rsa_pss_rsae_sha256\", \"ed25519\"",
            )?,
            session_resumption: self.session_resumption.unwrap_or(true),
        };
        // Each entry may be valid alone and the whole still match nothing (e.g. only `!` terms).
        if !p.tls12_ciphers.is_empty()
            && scratch.set_cipher_list(&p.tls12_ciphers.join(":")).is_err()
        {
            return Err(ConfigError::new(
                file,
                "tls.tls12_ciphers",
                "selects no cipher; list at least one cipher name",
            ));
        }
        Ok(p)
    }
}

fn scratch_try(
    b: &mut SslContextBuilder,
    f: impl FnOnce(&mut SslContextBuilder) -> Result<(), openssl::error::ErrorStack>,
) -> bool {
    f(b).is_ok()
}

/// Validates one list: shape first, then `supported` per entry.
fn check_each(
    file: &Path,
    key: &str,
    list: Option<Vec<String>>,
    extra_chars: &str,
    mut supported: impl FnMut(&str) -> bool,
    fix: &str,
) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = list
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_string())
        .collect();
    let mut bad = Vec::new();
    for (i, n) in list.iter().enumerate() {
        if !plain_name(n, extra_chars) {
            return Err(ConfigError::new(
                file,
                format!("{key}[{i}]"),
                format!("{n:?} is not a name; {fix}"),
            ));
        }
        if !supported(n) {
            bad.push(n.clone());
        }
    }
    if bad.is_empty() {
        return Ok(list);
    }
    let pq: Vec<&String> = bad.iter().filter(|n| is_post_quantum(n)).collect();
    let message = if !pq.is_empty() && cfg!(not(feature = "vendored-openssl")) {
        format!(
            "{} not supported by the linked {}: post-quantum hybrid groups need OpenSSL 3.5 or later; use the build with cargo feature `vendored-openssl` (see README \"Post-quantum\"), or remove them",
            quote_list(&bad),
            openssl::version::version()
        )
    } else {
        format!(
            "{} not supported by the linked {}; {fix}",
            quote_list(&bad),
            openssl::version::version()
        )
    };
    Err(ConfigError::new(file, key, message))
}

fn quote_list(names: &[String]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match q.len() {
        1 => format!("{} is", q[0]),
        _ => format!("{} are", q.join(", ")),
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
