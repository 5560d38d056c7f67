//! Where the agents' own certificate and private key come from, as configured, in any of the formats
//! a PKI hands out:
//! PEM certificate + PEM key (optionally encrypted, `key_password_file`), a PKCS#12 bundle
//! (`keystore`, `keystore_password_file`), or a key in a PKCS#11 token
//! (`key = "pkcs11:token=…;object=…"`, through OpenSSL's libp11 engine, see `tls::ffi`).
//! Loading them is [`crate::tls::keys`].

use super::{check_readable, resolve_path, ConfigError};
use std::path::{Path, PathBuf};

/// Where the agent's certificate and key come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// PEM certificate chain and PEM private key, encrypted when a password file is given.
    Pem {
        /// Certificate chain (leaf first).
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// File holding the key's passphrase.
        password_file: Option<PathBuf>,
    },
    /// A PKCS#12 bundle with key, certificate and chain.
    Pkcs12 {
        /// The bundle.
        keystore: PathBuf,
        /// File holding its password (none: empty password).
        password_file: Option<PathBuf>,
    },
    /// PEM certificate chain; the key stays in a PKCS#11 token.
    Pkcs11 {
        /// Certificate chain (leaf first).
        cert: PathBuf,
        /// RFC 7512 URI of the key.
        uri: String,
        /// PKCS#11 module (default: p11-kit's proxy, which loads the system's modules).
        module: Option<PathBuf>,
        /// File holding the token's user PIN.
        pin_file: Option<PathBuf>,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URI may carry a PIN: print it redacted.
        match self {
            KeySource::Pkcs11 { cert, uri, .. } => {
                write!(f, "Pkcs11 {{ cert: {cert:?}, uri: {:?} }}", redact_uri(uri))
            }
            KeySource::Pem { cert, key, .. } => write!(f, "Pem {{ cert: {cert:?}, key: {key:?} }}"),
            KeySource::Pkcs12 { keystore, .. } => write!(f, "Pkcs12 {{ keystore: {keystore:?} }}"),
        }
    }
}

/// The key-related keys of either agent's file, as written.
#[derive(Debug, Default)]
pub(crate) struct RawKeys {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub key_password_file: Option<String>,
    pub keystore: Option<String>,
    pub keystore_password_file: Option<String>,
    pub pkcs11_module: Option<String>,
}

pub(crate) mod pkcs11_uri;

/// `pkcs11:` URI with the value of `pin-value` replaced, for messages and logs.
pub(crate) use pkcs11_uri::redact as redact_uri;

impl RawKeys {
    /// Checks which source is configured and that its files are readable.
    pub(crate) fn validate(self, file: &Path) -> Result<KeySource, ConfigError> {
        let err = |key: &str, msg: &str| ConfigError::new(file, key, msg);
        if self.keystore.is_some() {
            return self.pkcs12_source(file);
        }
        if self.keystore_password_file.is_some() {
            return Err(err(
                "keystore_password_file",
                "is set without keystore; set keystore = \"x.p12\" or remove it",
            ));
        }
        let cert = self.cert.ok_or_else(|| {
            err(
                "cert",
                "missing; give the path of a PEM file (or use keystore = \"x.p12\")",
            )
        })?;
        let cert = readable(file, "cert", &cert)?;
        let key = self.key.ok_or_else(|| {
            err(
                "key",
                "missing; give the path of a PEM file or a \"pkcs11:\" URI",
            )
        })?;
        let password_file = optional_readable(file, "key_password_file", self.key_password_file)?;
        if key.starts_with("pkcs11:") {
            return pkcs11_source(file, cert, key, self.pkcs11_module, password_file);
        }
        if self.pkcs11_module.is_some() {
            return Err(err(
                "pkcs11_module",
                "is set but key is not a \"pkcs11:\" URI; remove it or use key = \"pkcs11:...\"",
            ));
        }
        Ok(KeySource::Pem {
            cert,
            key: readable(file, "key", &key)?,
            password_file,
        })
    }

    /// `keystore`: a PKCS#12 bundle holds certificate and key, so neither may be set too.
    fn pkcs12_source(self, file: &Path) -> Result<KeySource, ConfigError> {
        if self.cert.is_some() || self.key.is_some() || self.key_password_file.is_some() {
            return Err(ConfigError::new(
                file,
                "keystore",
                "is set together with cert/key/key_password_file; a PKCS#12 keystore holds both certificate and key, remove the others",
            ));
        }
        let keystore = self.keystore.unwrap_or_default();
        Ok(KeySource::Pkcs12 {
            keystore: readable(file, "keystore", &keystore)?,
            password_file: optional_readable(
                file,
                "keystore_password_file",
                self.keystore_password_file,
            )?,
        })
    }
}

/// `key = "pkcs11:..."`: the PIN given once, in the URI or in `key_password_file`.
fn pkcs11_source(
    file: &Path,
    cert: PathBuf,
    uri: String,
    module: Option<String>,
    pin_file: Option<PathBuf>,
) -> Result<KeySource, ConfigError> {
    let pin_in_uri = pkcs11_uri::split_pin(&uri)
        .map_err(|e| ConfigError::new(file, "key", e))?
        .pin
        .is_some();
    if pin_in_uri && pin_file.is_some() {
        return Err(ConfigError::new(
            file,
            "key_password_file",
            "is set and the key URI has a pin-value too; give the PIN once (key_password_file keeps it out of the config file)",
        ));
    }
    Ok(KeySource::Pkcs11 {
        cert,
        uri,
        module: optional_readable(file, "pkcs11_module", module)?,
        pin_file,
    })
}

/// A file key's path, resolved against the configuration's directory and readable.
fn readable(file: &Path, key: &str, v: &str) -> Result<PathBuf, ConfigError> {
    let p = resolve_path(file, v);
    check_readable(file, key, &p)?;
    Ok(p)
}

/// [`readable`] for a key that may be absent.
fn optional_readable(
    file: &Path,
    key: &str,
    v: Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    v.map(|v| readable(file, key, &v)).transpose()
}
