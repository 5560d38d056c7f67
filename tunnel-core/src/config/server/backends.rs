//! The gateway's `[[backend]]` tables: names, addresses, caps, and the policy compiled
//! from their rules.

use super::{BackendConfig, RawBackend};
use crate::authz::policy::Policy;
use crate::config::{operator, ConfigError};
use std::collections::BTreeMap;
use std::path::Path;

/// The backends (names, addresses, at least one rule each), and the policy compiled from
/// their rules, `[groups]` and `default_backend`.
pub(super) fn backends(
    file: &Path,
    raw: Vec<RawBackend>,
    groups: &BTreeMap<String, Vec<String>>,
    default_backend: Option<String>,
) -> Result<(Vec<BackendConfig>, Policy), ConfigError> {
    let err = |key: &str, msg: String| ConfigError::new(file, key, msg);
    if raw.is_empty() {
        return Err(err(
            "backend",
            "no [[backend]] is configured; add one with name, address and allow".into(),
        ));
    }
    let mut backends: Vec<BackendConfig> = Vec::new();
    let mut rules = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let name = backend_name(file, i, b.name)?;
        if backends.iter().any(|x| x.name == name) {
            let msg = format!("duplicate backend name {name:?}");
            return Err(err(&format!("backend[{i}].name"), msg));
        }
        let address = backend_address(file, i, b.address)?;
        let key = |k: &str| format!("backend[{i}].{k}");
        let target = operator::parse_target(file, &key("address"), &address)?;
        if b.allow.is_empty() {
            return Err(err(
                &format!("backend[{i}].allow"),
                format!("backend {name:?} has no rule, so no client can reach it; add e.g. allow = [\"cn=alice\"] or allow = [\"any\"]"),
            ));
        }
        rules.push((name.clone(), format!("backend[{i}].allow"), b.allow));
        backends.push(BackendConfig {
            name,
            address,
            target,
            proxy_protocol: b.proxy_protocol,
            max_connections: operator::parse_cap(file, &key("max_connections"), b.max_connections)?,
            max_connections_per_identity: operator::parse_cap(
                file,
                &key("max_connections_per_identity"),
                b.max_connections_per_identity,
            )?,
        });
    }
    let default_backend = match default_backend {
        None => None,
        Some(d) => {
            let d = d.trim().to_ascii_lowercase();
            if !backends.iter().any(|b| b.name == d) {
                let msg = format!("{d:?} is not the name of any [[backend]]");
                return Err(err("default_backend", msg));
            }
            Some(d)
        }
    };
    let policy = Policy::compile(groups, rules, default_backend)
        .map_err(|(key, msg)| err(&key, msg.to_string()))?;
    Ok((backends, policy))
}

/// `backend[i].name`: present, a valid SNI name, lower-cased.
fn backend_name(file: &Path, i: usize, name: Option<String>) -> Result<String, ConfigError> {
    let key = format!("backend[{i}].name");
    let name = name
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ConfigError::new(file, &key, "missing; it is the SNI name clients send"))?;
    if !valid_backend_name(&name) {
        return Err(ConfigError::new(
            file,
            &key,
            format!("{name:?} is not a valid SNI host name (letters, digits, '-', '.', '_')"),
        ));
    }
    Ok(name)
}

/// `backend[i].address`: present (its form is checked by [`operator::parse_target`]).
fn backend_address(file: &Path, i: usize, address: Option<String>) -> Result<String, ConfigError> {
    let key = format!("backend[{i}].address");
    let address = address
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ConfigError::new(file, &key, "missing; e.g. \"127.0.0.1:5432\""))?;
    Ok(address)
}

fn valid_backend_name(n: &str) -> bool {
    valid_backend_name_bytes(n.as_bytes())
}

/// Whether `n` can be a backend name (and so a usable SNI): 1..=253 bytes of ASCII letters,
/// digits, `-`, `.`, `_`.
pub fn valid_backend_name_bytes(n: &[u8]) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.' || *c == b'_')
}
