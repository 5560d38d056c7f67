//! Configuration: the server and client TOML files, environment overrides, and validation.
//!
//! Files are read with the `config` crate (a TOML file plus environment variables with a
//! prefix), deserialized into `deny_unknown_fields` serde structs with the path of every
//! error kept, and then validated in one place per file. Every error names the file, the
//! key and what is wrong, e.g. `server.toml: backend[1].allow[0]: unknown attribute "cx"`.
//! Relative paths inside a file are resolved against the file's own directory.

mod client;
pub(crate) mod keys;
mod listener;
mod operator;
mod server;
pub(crate) mod tls;
pub(crate) mod values;

pub use client::{ClientConfig, ClientFlags, TunnelConfig, CLIENT_ENV_PREFIX};
pub use listener::ProxyListener;
pub use operator::{admin_socket_of, BackendTarget, ProxyProtocol, ADMIN_SOCKET_NAME};
pub use server::{
    valid_backend_name_bytes, BackendConfig, ServerConfig, StapleSource, DEFAULT_EXPIRY_WARNING,
    SERVER_ENV_PREFIX,
};
pub(crate) use values::valid_host_port;
pub use values::{
    Bounded, CrlCoverage, CrlExpired, HumanDuration, LogFormat, LogLevel, MetricsAddr, TlsVersion,
};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}", file.display(), if key.is_empty() { String::new() } else { format!("{key}: ") }, message)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// Dotted path of the key (`backend[2].allow[0]`), empty when it concerns the whole file.
    pub key: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A value given either as one string or as a list of strings (`listen`, `crl`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list of values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

/// Reads `path` (TOML) with environment overrides under `env_prefix` and deserializes it,
/// keeping the key path of any error.
pub(crate) fn load_raw<T: DeserializeOwned>(
    path: &Path,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    // Read the file ourselves first so that a missing or unreadable file gets a plain message.
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read the config file: {e}")))?;
    load_raw_str(path, &text, env_prefix, None)
}

/// Like [`load_raw`] but from text already read; `env` replaces the process environment
/// (tests use it to stay independent of each other).
pub(crate) fn load_raw_str<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    env_prefix: &str,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<T, ConfigError> {
    let env_source = config::Environment::with_prefix(env_prefix)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("listen")
        .with_list_parse_key("crl")
        .with_list_parse_key("ocsp_responder_allow")
        .with_list_parse_key("server")
        .with_list_parse_key("metrics_allow")
        .source(env);
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(env_source)
        .build()
        .map_err(|e| ConfigError::new(path, "", format!("not valid TOML: {e}")))?;
    serde_path_to_error::deserialize(built).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(path, key, clean_serde_message(&e.inner().to_string()))
    })
}

/// The `config` crate appends its own location to messages; we report the key ourselves.
fn clean_serde_message(msg: &str) -> String {
    let msg = msg.split(" for key `").next().unwrap_or(msg);
    msg.trim().to_string()
}

/// A required file key (`cert`, `key`, CA bundles): present, resolved against the directory
/// of `file`, readable.
pub(crate) fn required_file(
    file: &Path,
    key: &str,
    v: Option<String>,
) -> Result<PathBuf, ConfigError> {
    let v = v.ok_or_else(|| ConfigError::new(file, key, "missing; give the path of a PEM file"))?;
    let p = resolve_path(file, &v);
    check_readable(file, key, &p)?;
    Ok(p)
}

/// `user` and `group`: not empty, and no group without a user (the process would keep uid 0).
pub(crate) fn check_run_as(
    file: &Path,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(), ConfigError> {
    if user.is_some_and(|u| u.trim().is_empty()) {
        let msg = "is empty; name a system user or remove the key";
        return Err(ConfigError::new(file, "user", msg));
    }
    if group.is_some() && user.is_none() {
        let msg = "is set without user: the process would keep uid 0; set user too";
        return Err(ConfigError::new(file, "group", msg));
    }
    if group.is_some_and(|g| g.trim().is_empty()) {
        let msg = "is empty; name a system group or remove the key";
        return Err(ConfigError::new(file, "group", msg));
    }
    Ok(())
}

/// Resolves `p` against the directory of the config file `file`.
pub(crate) fn resolve_path(file: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        return p;
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p,
    }
}

/// Checks that `path` (named by `key`) is a readable file.
pub(crate) fn check_readable(file: &Path, key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(ConfigError::new(
                file,
                key,
                format!("{} is not a regular file", path.display()),
            )),
            Err(e) => Err(ConfigError::new(
                file,
                key,
                format!("{}: {e}", path.display()),
            )),
        },
        Err(e) => Err(ConfigError::new(
            file,
            key,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}
