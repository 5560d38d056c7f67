//! Loading the agents' own certificate and private key from their configured source
//! ([`KeySource`]: PEM, encrypted PEM, PKCS#12 or a PKCS#11 token through [`super::ffi`]).
//!
//! Everything is read again on every (re)load; a wrong password, a missing token or object is
//! a configuration error naming the file or URI (with any `pin-value` blanked out).

use crate::config::keys::{pkcs11_uri, redact_uri, KeySource};
use crate::config::ConfigError;
use openssl::pkey::{PKey, Private};
use openssl::ssl::SslContextBuilder;
use openssl::x509::X509;
use std::path::{Path, PathBuf};

/// The certificate chain and key, loaded.
pub struct Credentials {
    /// The agent's certificate.
    pub leaf: X509,
    /// The rest of the chain it sends.
    pub chain: Vec<X509>,
    /// Its private key.
    pub key: PKey<Private>,
}

impl KeySource {
    /// The files to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        match self {
            KeySource::Pem {
                cert,
                key,
                password_file,
            } => {
                v.extend([cert.clone(), key.clone()]);
                v.extend(password_file.clone());
            }
            KeySource::Pkcs12 {
                keystore,
                password_file,
            } => {
                v.push(keystore.clone());
                v.extend(password_file.clone());
            }
            KeySource::Pkcs11 { cert, pin_file, .. } => {
                v.push(cert.clone());
                v.extend(pin_file.clone());
            }
        }
        v
    }

    /// The files holding secrets (key, keystore, passwords), whose mode is checked at start.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        match self {
            KeySource::Pem { cert, .. } | KeySource::Pkcs11 { cert, .. } => {
                self.files().into_iter().filter(|f| f != cert).collect()
            }
            KeySource::Pkcs12 { .. } => self.files(),
        }
    }

    /// Reads certificate chain and key.
    pub fn load(&self, file: &Path) -> Result<Credentials, ConfigError> {
        match self {
            KeySource::Pem {
                cert,
                key,
                password_file,
            } => {
                let (leaf, chain) = split_chain(super::read_certs(file, "cert", cert)?);
                let key = load_pem_key(file, key, password_file.as_deref())?;
                Ok(Credentials { leaf, chain, key })
            }
            KeySource::Pkcs12 {
                keystore,
                password_file,
            } => load_pkcs12(file, keystore, password_file.as_deref()),
            KeySource::Pkcs11 {
                cert,
                uri,
                module,
                pin_file,
            } => load_pkcs11(file, cert, uri, module.as_deref(), pin_file.as_deref()),
        }
    }
}

/// The certificate chain from `cert` and the key `uri` from its token. The engine gets the
/// URI without its `pin-value` and the PIN (from the URI or `key_password_file`) through its
/// PIN command: libp11 prints the URI it was given when it finds no key.
fn load_pkcs11(
    file: &Path,
    cert: &Path,
    uri: &str,
    module: Option<&Path>,
    pin_file: Option<&Path>,
) -> Result<Credentials, ConfigError> {
    let (leaf, chain) = split_chain(super::read_certs(file, "cert", cert)?);
    let split = pkcs11_uri::split_pin(uri).map_err(|e| ConfigError::new(file, "key", e))?;
    let pin = match pin_file {
        Some(p) => Some(read_secret(file, "key_password_file", p)?),
        None => split.pin,
    };
    let key = super::ffi::pkcs11_private_key(&split.without_pin, module, pin.as_deref())
        .map_err(|e| {
            ConfigError::new(
                file,
                "key",
                format!(
                    "cannot load the key {} from its PKCS#11 token: {e}; check that the token is present, the URI's token/object names and the PIN (key_password_file or the URI's pin-value)",
                    redact_uri(uri)
                ),
            )
        })?;
    Ok(Credentials { leaf, chain, key })
}

fn split_chain(mut certs: Vec<X509>) -> (X509, Vec<X509>) {
    // read_certs never returns an empty list.
    let leaf = certs.remove(0);
    (leaf, certs)
}

/// A password file's content without its final line break.
fn read_secret(file: &Path, key: &str, p: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut s = std::fs::read(p)
        .map_err(|e| ConfigError::new(file, key, format!("cannot read {}: {e}", p.display())))?;
    while s.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        s.pop();
    }
    Ok(s)
}

fn load_pem_key(
    file: &Path,
    key: &Path,
    password_file: Option<&Path>,
) -> Result<PKey<Private>, ConfigError> {
    let pem = std::fs::read(key).map_err(|e| {
        ConfigError::new(file, "key", format!("cannot read {}: {e}", key.display()))
    })?;
    match password_file {
        None => PKey::private_key_from_pem(&pem).map_err(|e| {
            ConfigError::new(
                file,
                "key",
                format!(
                    "{} is not a readable unencrypted PEM private key: {e}; if it is encrypted, set key_password_file",
                    key.display()
                ),
            )
        }),
        Some(pf) => {
            let pass = read_secret(file, "key_password_file", pf)?;
            PKey::private_key_from_pem_passphrase(&pem, &pass).map_err(|_| {
                ConfigError::new(
                    file,
                    "key_password_file",
                    format!(
                        "{} does not decrypt the PEM key {} (wrong password, or not a PEM private key); fix the password file",
                        pf.display(),
                        key.display()
                    ),
                )
            })
        }
    }
}

fn load_pkcs12(
    file: &Path,
    keystore: &Path,
    password_file: Option<&Path>,
) -> Result<Credentials, ConfigError> {
    let der = std::fs::read(keystore).map_err(|e| {
        ConfigError::new(
            file,
            "keystore",
            format!("cannot read {}: {e}", keystore.display()),
        )
    })?;
    let p12 = openssl::pkcs12::Pkcs12::from_der(&der).map_err(|e| {
        ConfigError::new(
            file,
            "keystore",
            format!("{} is not a PKCS#12 (DER) bundle: {e}", keystore.display()),
        )
    })?;
    let pass = keystore_password(file, password_file)?;
    let parsed = p12.parse2(&pass).map_err(|_| {
        let key = if password_file.is_some() {
            "keystore_password_file"
        } else {
            "keystore"
        };
        ConfigError::new(
            file,
            key,
            format!(
                "cannot open {}: wrong password (or a cipher this OpenSSL does not support); {}",
                keystore.display(),
                if password_file.is_some() {
                    "fix the password file"
                } else {
                    "set keystore_password_file"
                }
            ),
        )
    })?;
    pkcs12_credentials(file, keystore, parsed)
}

/// The keystore's password: the file's text, or empty without one.
fn keystore_password(file: &Path, password_file: Option<&Path>) -> Result<String, ConfigError> {
    let pass = match password_file {
        Some(pf) => read_secret(file, "keystore_password_file", pf)?,
        None => Vec::new(),
    };
    String::from_utf8(pass).map_err(|_| {
        ConfigError::new(
            file,
            "keystore_password_file",
            "the password is not UTF-8 text",
        )
    })
}

/// Certificate, key and chain from an opened keystore; both of the first two must be there.
fn pkcs12_credentials(
    file: &Path,
    keystore: &Path,
    parsed: openssl::pkcs12::ParsedPkcs12_2,
) -> Result<Credentials, ConfigError> {
    let missing = |what: &str| {
        ConfigError::new(
            file,
            "keystore",
            format!(
                "{} holds no {what}; export it with the certificate and its private key",
                keystore.display()
            ),
        )
    };
    let leaf = parsed.cert.ok_or_else(|| missing("certificate"))?;
    let key = parsed.pkey.ok_or_else(|| missing("private key"))?;
    let chain = parsed
        .ca
        .map(|s| s.into_iter().collect())
        .unwrap_or_default();
    Ok(Credentials { leaf, chain, key })
}

/// Puts certificate, chain and key into a context, and checks that they match.
pub(crate) fn install(
    b: &mut SslContextBuilder,
    file: &Path,
    src: &KeySource,
    creds: &Credentials,
) -> Result<(), ConfigError> {
    let tls_err =
        |e: openssl::error::ErrorStack| ConfigError::new(file, "cert", format!("OpenSSL: {e}"));
    b.set_certificate(&creds.leaf).map_err(tls_err)?;
    for c in &creds.chain {
        b.add_extra_chain_cert(c.clone()).map_err(tls_err)?;
    }
    let (key, what) = match src {
        KeySource::Pem { key, cert, .. } => (
            "key",
            format!(
                "{} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
        ),
        KeySource::Pkcs12 { keystore, .. } => (
            "keystore",
            format!(
                "the key in {} does not match its certificate",
                keystore.display()
            ),
        ),
        KeySource::Pkcs11 { uri, cert, .. } => (
            "key",
            format!(
                "{} does not match the certificate in {}",
                redact_uri(uri),
                cert.display()
            ),
        ),
    };
    b.set_private_key(&creds.key)
        .and_then(|()| b.check_private_key())
        .map_err(|_| ConfigError::new(file, key, what))
}

#[cfg(test)]
mod tests;
